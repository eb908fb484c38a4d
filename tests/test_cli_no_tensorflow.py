"""The CLI's serving commands answer without TensorFlow or Keras, each in a fresh interpreter.

``predict``, ``predict --multi``, ``evaluate``, ``list`` and ``activate`` read models through their
exported files (ONNX Runtime); this test process imported TensorFlow for the fixture model, so
each command runs ``core.__main__.main`` in a new Python and reports which of the two it loaded.
Also: ``activate`` refuses a model whose served file was altered or that does not exist (exit 1,
the default unchanged), and ``train`` checks ``--name`` before training (exit 2 at once).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import config

ROOT = config.ROOT
TEST_MODEL = "test-mlp"  # the trained_store fixture's model, set active (tests/conftest.py)
COPY = "test-mlp-copy"
NUMBER = [2, 0, 2, 6]  # MNIST test digits on one sheet, for predict --multi
DIGIT = 7  # one MNIST test digit on paper, for predict


@pytest.fixture
def cli_env(trained_store, tmp_path) -> tuple[dict, Path]:
    """(environment, store): a copy of the trained store (activate writes to it) and a scratch data dir."""
    store = tmp_path / "models"
    shutil.copytree(trained_store, store)
    env = {**os.environ, config.MODELS_DIR_ENV: str(store), config.APP_DATA_DIR_ENV: str(tmp_path / "data"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(config.ACTIVE_MODEL_ENV, None)
    return env, store


def run_main(args: list[str], env: dict, timeout: float = 180) -> tuple[int, str, str, str]:
    """``core.__main__.main(args)`` in a fresh interpreter at the repository root.

    Returns:
        (exit code, stdout without the last line, stderr, the modules of TensorFlow and Keras
        that were loaded, comma-separated: "" when neither).
    """
    code = ("import sys; from core.__main__ import main; "
            f"rc = main({args!r}); "
            "print('HEAVY=' + ','.join(m for m in ('tensorflow','keras') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    lines = proc.stdout.splitlines()
    assert lines and lines[-1].startswith("HEAVY="), (proc.stdout, proc.stderr[-3000:])
    return proc.returncode, "\n".join(lines[:-1]), proc.stderr, lines[-1][len("HEAVY="):]


@pytest.fixture(scope="module")
def pictures(trained_store, tmp_path_factory) -> dict[str, Path]:
    """A photographed-style digit and a number on paper, which the fixture model reads right in
    this process (so the subprocess must give the same real answer)."""
    from core.reading.segment import read_number
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore
    from tests.test_pages import ink_on_paper_png, mnist_test_digit, number_on_paper_png

    folder = tmp_path_factory.mktemp("cli-pictures")
    digit, number = folder / f"{DIGIT}.png", folder / "number.png"
    digit.write_bytes(ink_on_paper_png(mnist_test_digit(DIGIT)))
    number.write_bytes(number_on_paper_png(NUMBER))
    predictor = Predictor.load(TEST_MODEL, ModelStore(trained_store))
    assert predictor.read(digit.read_bytes()).digit == DIGIT
    assert read_number(predictor, number.read_bytes()).number == "".join(map(str, NUMBER))
    return {"digit": digit, "number": number}


def test_predict_json_without_tensorflow(cli_env, pictures):
    env, _ = cli_env
    rc, out, err, heavy = run_main(["predict", str(pictures["digit"]), "--json"], env)
    assert rc == 0, err[-3000:]
    answer = json.loads(out)
    assert answer["file"] == str(pictures["digit"]) and answer["digit"] == DIGIT and answer["is_digit"] is True
    assert heavy == "", f"predict imported {heavy}"


def test_predict_multi_json_without_tensorflow(cli_env, pictures):
    env, _ = cli_env
    rc, out, err, heavy = run_main(["predict", str(pictures["number"]), "--multi", "--json"], env)
    assert rc == 0, err[-3000:]
    answer = json.loads(out)
    assert answer["number"] == "".join(map(str, NUMBER)) and [d["digit"] for d in answer["digits"]] == NUMBER
    assert heavy == "", f"predict --multi imported {heavy}"


def test_evaluate_json_without_tensorflow(cli_env, trained_store):
    from core.storage.store import ModelStore

    env, _ = cli_env
    rc, out, err, heavy = run_main(["evaluate", "--json"], env)
    assert rc == 0, err[-3000:]
    answer = json.loads(out)
    assert answer["model"] == TEST_MODEL
    # The figure recorded at training time (Keras, same 10,000 test images): the export reads alike.
    recorded = ModelStore(trained_store).info(TEST_MODEL).test_accuracy
    assert answer["test_accuracy"] == pytest.approx(recorded, abs=1e-3) and 0.9 <= answer["test_accuracy"] < 1
    assert heavy == "", f"evaluate imported {heavy}"


def test_list_without_tensorflow(cli_env):
    env, _ = cli_env
    rc, out, err, heavy = run_main(["list"], env)
    assert rc == 0, err[-3000:]
    rows = {line[2:].split()[0]: line for line in out.splitlines()}
    assert set(rows) == {TEST_MODEL, COPY}, out
    assert rows[TEST_MODEL].startswith("* ") and rows[COPY].startswith("  ")  # the default is starred
    assert heavy == "", f"list imported {heavy}"


def test_activate_without_tensorflow(cli_env):
    from core.storage.store import ModelStore

    env, store = cli_env
    rc, _, err, heavy = run_main(["activate", COPY], env)
    assert rc == 0, err[-3000:]
    assert f"{COPY} is now the server's default model" in err
    assert ModelStore(store).active_name(fallback=False) == COPY
    assert heavy == "", f"activate imported {heavy}"


def test_activate_refuses_a_model_whose_served_file_was_altered(cli_env):
    from core.storage.store import ModelStore

    env, store = cli_env
    onnx = store / f"{COPY}.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte flipped
    onnx.write_bytes(bytes(data))
    rc, out, err, heavy = run_main(["activate", COPY], env)
    assert rc == 1, (out, err)
    assert f"{COPY}.onnx" in err and "checksum" in err, err
    assert "Traceback" not in err
    assert ModelStore(store).active_name(fallback=False) == TEST_MODEL  # the previous default stays
    assert heavy == ""


def test_activate_refuses_an_unknown_model(cli_env):
    from core.storage.store import ModelStore

    env, store = cli_env
    rc, out, err, _ = run_main(["activate", "nope"], env)
    assert rc == 1, (out, err)
    assert "No model named 'nope'" in err and "Traceback" not in err
    assert ModelStore(store).active_name(fallback=False) == TEST_MODEL


def test_train_checks_the_name_before_training(cli_env):
    env, store = cli_env
    before = sorted(p.name for p in store.iterdir())
    start = time.monotonic()
    rc, out, err, _ = run_main(["train", "--family", "mlp", "--epochs", "1", "--name", "bad name!"], env,
                               timeout=10)
    assert time.monotonic() - start < 10
    assert rc == 2, (out, err)
    assert "Invalid model name 'bad name!'" in err
    assert "epoch" not in err, err  # no training progress: it never started
    assert sorted(p.name for p in store.iterdir()) == before
