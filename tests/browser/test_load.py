"""Load test in a real browser: 4 sessions draw digits on /Draw while 2 visitors queue training runs.

Runs ``bench/load_test.py``'s ``run_load_test`` (the benchmark runs 20 sessions and 6 training
visitors; CI runs this with 4 and 2, for 2 cores) against the browser tests' shared server
(conftest.py's ``app_server``: ``streamlit run Home.py`` on 127.0.0.1, a private copy of the model
store, its own local Dask cluster for the runs) with its own Debian Chromium, one browser context
per session. It asserts that every drawing, in the idle phase and under load, got the right digit
from the served model, with no error on any page and no traceback in the server log; that a run
was training all through the load phase while the second visitor's run waited "queued" with its
position; that the second visitor saw no Stop or Cancel for the first visitor's run; and that each
owner's Cancel ended their run with nothing saved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.common import emit_json
from bench.load_test import CHROMIUM, LOAD_DIGITS, MODEL, render_digit, run_load_test

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
SESSIONS, REQUESTS = 4, 5
IDLE_SESSIONS, IDLE_REQUESTS = 2, 3
TRAINERS = 2


def test_drawn_digits_are_read_right_by_the_shipped_model():
    """The strokes the load test draws are digits the served model reads (else 'wrong digit' would
    blame the app for the test's handwriting)."""
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

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
def test_four_sessions_draw_while_two_visitors_queue_runs(app_server, models_dir):
    from core.storage.store import ModelStore

    served = ModelStore(models_dir).active_name()
    assert served == MODEL, f"the test server serves {served!r}; the drawn digits are checked on {MODEL!r}"
    log_start = len(app_server.log())
    out = run_load_test(sessions=SESSIONS, requests=REQUESTS, url=app_server.url, model=served,
                        idle_sessions=IDLE_SESSIONS, idle_requests=IDLE_REQUESTS, trainers=TRAINERS,
                        deadline_s=600.0, artifacts=ARTIFACTS, server_pid=app_server.pid, models_dir=models_dir,
                        log=print)
    details = out["details"] + out["idle_details"]
    failures = [d for d in details if d["error"]]
    new_log = app_server.log()[log_start:]
    summary = {k: v for k, v in out.items() if k not in ("details", "idle_details", "visitors")}
    emit_json(summary)  # the benchmark's figures, in the test's output (pytest -s)
    assert out["requests"] == SESSIONS * REQUESTS and out["idle_requests"] == IDLE_SESSIONS * IDLE_REQUESTS
    assert out["errors"] == 0 and out["idle_errors"] == 0, (failures, new_log[-3000:])
    # Every answer is the served model's, for the digit drawn in that session.
    assert all(d["got"] == str(d["digit"]) for d in details)
    assert out["idle_p50_ms"] is not None and out["p50_ms"] is not None and out["p95_ms"] >= out["p50_ms"]
    # Both visitors' runs were taken (each its own owner token); the second one waited in the queue
    # with its position shown, and one run trained all through the load phase.
    assert out["runs_queued"] == TRAINERS and out["owners_distinct"], summary
    assert out["later_runs_queued_with_position"], summary
    assert all(isinstance(p, int) and p >= 1 for p in out["queued_positions_seen"][1:]), summary
    assert out["runs_training_during_load"] >= 1, summary
    # (Sampled every 3 s from the visitors' pages: a sample may miss a heading while the page redraws.)
    assert out["training_at_load_start"] and out["training_at_load_end"], summary
    assert out["samples"] and out["samples_with_training"] >= 0.8 * out["samples"], summary
    # The second visitor saw the first one's run without its Stop and Cancel, and was told why.
    assert out["others_saw_a_run"] >= 1, summary
    assert out["others_see_controls"] is False and out["others_see_note"] is True, summary
    # Each owner's Cancel ended their run; nothing was saved.
    assert out["runs_cancelled"] == TRAINERS, out["run_outcomes"]
    assert out["models_saved"] == [], out["models_saved"]
    assert "Traceback (most recent call last)" not in new_log, new_log[-3000:]
