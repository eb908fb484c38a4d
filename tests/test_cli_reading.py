"""The CLI's reading contracts (``predict --json``, ``predict --multi --json``) and ``delete``.

``predict`` runs on a store holding only the shipped default model (``models/default-cnn``, copied:
fixed weights, so a picture it flags stays flagged); ``delete`` on a copy of the ``trained_store``
fixture. Every command runs as ``python -m core`` in a fresh interpreter, as an operator runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import config

ROOT = config.ROOT
SHIPPED = "default-cnn"
TEST_MODEL = "test-mlp"  # the trained_store fixture's model, set active (tests/conftest.py)
COPY = "test-mlp-copy"
FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")  # Debian's dataset-fashion-mnist
# Fashion-MNIST test items the shipped model's detector flags far above its threshold (scores 3.9,
# 3.5; 0 is the threshold): a coat and a bag. The model still names a digit for each.
FASHION_ITEMS = (25, 53)
NUMBER = [2, 0, 2, 6]
HEIGHT = 120  # each digit's height on the sheet (tests/test_pages.py number_on_paper_png)


def run_cli(args: list[str], store: Path, tmp_path: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, config.MODELS_DIR_ENV: str(store), config.APP_DATA_DIR_ENV: str(tmp_path / "data"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(config.ACTIVE_MODEL_ENV, None)
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def json_lines(stdout: str) -> list[dict]:
    """stdout as one JSON object per line (fails on anything else on stdout)."""
    lines = stdout.splitlines()
    assert lines, "nothing on stdout"
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def shipped_store(tmp_path_factory) -> Path:
    """A store with only the shipped default model (its served files and metadata, copied)."""
    store = tmp_path_factory.mktemp("shipped-models")
    files = sorted((ROOT / "models").glob(f"{SHIPPED}.*"))
    assert {f.suffix for f in files} >= {".json", ".onnx", ".npz"}, files
    for f in files:
        shutil.copyfile(f, store / f.name)
    return store


@pytest.fixture
def store_copy(trained_store, tmp_path) -> Path:
    """A copy of the trained store (test-mlp active, test-mlp-copy), for commands that change it."""
    store = tmp_path / "models"
    shutil.copytree(trained_store, store)
    return store


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- predict --json: is_digit ------------------------------------------------------------------------

def test_predict_json_says_a_fashion_item_is_not_a_digit_and_a_digit_is(shipped_store, tmp_path):
    from core.data import cached_mnist
    from tests.test_novelty import idx_images, png_112

    assert FASHION.is_file(), f"{FASHION} is missing: install Debian's dataset-fashion-mnist (tests/run.sh does)"
    fashion = idx_images(FASHION)
    paths = []
    for i in FASHION_ITEMS:
        paths.append(tmp_path / f"fashion-{i}.png")
        paths[-1].write_bytes(png_112(fashion[i]))
    mnist = cached_mnist()
    index = int(np.flatnonzero(mnist.y_test == 7)[0])
    paths.append(tmp_path / "seven.png")
    paths[-1].write_bytes(png_112(mnist.x_test[index]))

    proc = run_cli(["predict", *map(str, paths), "--json"], shipped_store, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json_lines(proc.stdout)
    assert [a["file"] for a in answers] == [str(p) for p in paths]
    for a in answers:
        assert set(a) == {"file", "digit", "confidence", "probabilities", "is_digit"}, a
        assert isinstance(a["digit"], int) and 0 <= a["digit"] <= 9  # read as a digit, yet flagged
        assert len(a["probabilities"]) == 10 and a["probabilities"][a["digit"]] == a["confidence"]
    assert [a["is_digit"] for a in answers] == [False, False, True]
    assert answers[-1]["digit"] == 7


# --- predict --multi --json ------------------------------------------------------------------------

def test_predict_multi_json_reads_each_sheet_with_boxes_left_to_right(shipped_store, tmp_path):
    from tests.test_pages import number_on_paper_png

    sheets = {"2026.png": NUMBER, "1984.png": [1, 9, 8, 4]}
    paths = []
    for name, labels in sheets.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(number_on_paper_png(labels, height=HEIGHT))

    proc = run_cli(["predict", *map(str, paths), "--multi", "--json"], shipped_store, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json_lines(proc.stdout)  # one object per file, in order
    assert [a["file"] for a in answers] == [str(p) for p in paths]
    for path, labels, answer in zip(paths, sheets.values(), answers):
        assert answer["number"] == "".join(map(str, labels)), answer
        assert answer["is_digit"] is True
        digits = answer["digits"]
        assert [d["digit"] for d in digits] == labels
        width, height = Image.open(path).size
        gap = HEIGHT // 6  # number_on_paper_png's margin: digit i was pasted in [gap + i*H, gap + (i+1)*H)
        for i, d in enumerate(digits):
            assert set(d) == {"digit", "confidence", "box", "is_digit"}, d
            assert 0 < d["confidence"] <= 1 and d["is_digit"] is True
            x, y, w, h = d["box"]
            assert all(isinstance(v, int) for v in d["box"]), d["box"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width and y + h <= height, (d["box"], width,
                                                                                                 height)
            centre_x = x + w / 2
            assert gap + i * HEIGHT <= centre_x < gap + (i + 1) * HEIGHT, (i, d["box"])  # the i-th digit's place
            assert h >= HEIGHT // 3, d["box"]  # a digit's ink, not a speck
        assert all(a["box"][0] + a["box"][2] <= b["box"][0] for a, b in zip(digits, digits[1:])), digits


# --- delete ---------------------------------------------------------------------------------------

def test_delete_removes_the_models_files_and_metadata(store_copy, tmp_path):
    before = snapshot(store_copy)
    assert {f"{COPY}{s}" for s in (".json", ".keras", ".onnx", ".novelty.npz")} <= set(before)
    proc = run_cli(["delete", COPY], store_copy, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == ""  # results only on stdout; the log line goes to stderr
    assert f"deleted {COPY}" in proc.stderr
    after = snapshot(store_copy)
    assert not [n for n in after if n.startswith(COPY)], after.keys()
    # Everything else, the default model and the server's choice of it included, is untouched.
    assert after == {n: b for n, b in before.items() if not n.startswith(COPY)}
    listing = run_cli(["list", "--json"], store_copy, tmp_path)
    assert listing.returncode == 0, listing.stderr[-3000:]
    assert [(r["name"], r["active"]) for r in json.loads(listing.stdout)] == [(TEST_MODEL, True)]


def delete_refused(name: str, store: Path, tmp_path: Path) -> str:
    """Run ``delete name``, check it exits 1 with the reason on stderr and changes nothing; its stderr."""
    before = snapshot(store)
    proc = run_cli(["delete", name], store, tmp_path)
    assert proc.returncode == 1, (name, proc.returncode, proc.stderr[-3000:])
    assert proc.stdout == "" and "error" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert snapshot(store) == before
    return proc.stderr


def test_delete_an_unknown_name_exits_1_and_changes_nothing(store_copy, tmp_path):
    err = delete_refused("nope", store_copy, tmp_path)
    assert "'nope'" in err and "deleted" not in err, err


def test_delete_an_invalid_name_exits_1_and_changes_nothing(store_copy, tmp_path):
    for name in ("../test-mlp", ""):
        err = delete_refused(name, store_copy, tmp_path)
        assert f"Invalid model name {name!r}" in err, err


def test_delete_the_active_model_clears_the_default_and_the_next_model_serves(store_copy, tmp_path):
    # `ModelStore.delete`: deleting the server's default removes it and clears active.json; the
    # store then falls back to its newest remaining model, which serves predict.
    proc = run_cli(["delete", TEST_MODEL], store_copy, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"deleted {TEST_MODEL}" in proc.stderr
    left = set(snapshot(store_copy))
    assert not [n for n in left if n.startswith(f"{TEST_MODEL}.") or n.startswith(f"{TEST_MODEL}~")], left
    assert "active.json" not in left  # the default the operator chose is cleared, not left dangling
    assert {f"{COPY}{s}" for s in (".json", ".keras", ".onnx", ".novelty.npz")} <= left
    listing = run_cli(["list", "--json"], store_copy, tmp_path)
    assert [(r["name"], r["active"]) for r in json.loads(listing.stdout)] == [(COPY, True)]
    seven = tmp_path / "seven.png"
    from tests.test_pages import ink_on_paper_png, mnist_test_digit

    seven.write_bytes(ink_on_paper_png(mnist_test_digit(7)))
    answer = run_cli(["predict", str(seven), "--json"], store_copy, tmp_path)
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert json_lines(answer.stdout)[0]["digit"] == 7
