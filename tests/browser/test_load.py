"""Load test in a real browser: 4 sessions draw digits on /Draw while a training run goes on.

Runs ``bench/load_test.py``'s ``run_load_test`` (the benchmark runs 20 sessions; CI runs this with
4) against the browser tests' shared server (conftest.py's ``app_server``: ``streamlit run
Home.py`` on 127.0.0.1, a private copy of the model store) with its own Debian Chromium, one
browser context per session. It asserts that every drawing got the right digit from the served
model, with no error on any page and no traceback in the server log, while the training job kept
running; that a second visitor on /Train got the busy answer and no Stop button; and that the
owner's Stop button ended the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.load_test import CHROMIUM, LOAD_DIGITS, MODEL, render_digit, run_load_test

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SESSIONS, REQUESTS = 4, 5


def test_drawn_digits_are_read_right_by_the_shipped_model():
    """The strokes the load test draws are digits the served model reads (else 'wrong digit' would
    blame the app for the test's handwriting)."""
    from core.serving.predict import Predictor
    from core.store import ModelStore

    assert len(LOAD_DIGITS) >= 8
    store = ModelStore(ROOT / "models")
    predictor = Predictor.load(MODEL, store)
    for digit in LOAD_DIGITS:
        canvas = render_digit(digit)
        assert canvas.shape == (280, 280, 4) and canvas.dtype == np.uint8
        prediction = predictor.read(canvas)
        assert prediction.digit == digit and prediction.confidence > 0.6, (digit, prediction.digit,
                                                                           prediction.confidence)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_four_sessions_draw_while_a_training_run_goes_on(app_server, models_dir):
    from core.store import ModelStore

    served = ModelStore(models_dir).active_name()
    assert served == MODEL, f"the test server serves {served!r}; the drawn digits are checked on {MODEL!r}"
    log_start = len(app_server.log())
    out = run_load_test(sessions=SESSIONS, requests=REQUESTS, url=app_server.url, model=served, train=True,
                        deadline_s=600.0, artifacts=ARTIFACTS, server_pid=app_server.pid, log=print)
    failures = [d for d in out["details"] if d["error"]]
    new_log = app_server.log()[log_start:]
    assert out["requests"] == SESSIONS * REQUESTS
    assert out["errors"] == 0, (failures, new_log[-3000:])
    # Every answer is the served model's, for the digit drawn in that session.
    assert all(d["got"] == str(d["digit"]) for d in out["details"])
    assert out["p50_ms"] is not None and out["p95_ms"] >= out["p50_ms"]
    assert out["training_running"], (out["training_before"], out["training_after"])
    # A second visitor cannot start another run, is told why, and cannot stop the first one.
    assert out["second_visitor_can_start"] is False
    assert out["busy_answer"], out
    assert out["second_visitor_can_stop"] is False
    if out["training_owner"]:
        assert out["training_stopped"] is True  # the owner's Stop button ended the run
    assert "Traceback (most recent call last)" not in new_log, new_log[-3000:]
