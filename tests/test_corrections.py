"""Corrections: the SQLite store (round trips, persistence, concurrency, validation, export) and
fine-tuning a copy of a model on them."""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from core import config
from core.storage.info import ModelInfo
from core.storage.corrections import DB_NAME, PIXELS, STORED_NOTE, CorrectionStore

ROOT = Path(__file__).resolve().parent.parent
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))


@pytest.fixture
def store(tmp_path) -> CorrectionStore:
    return CorrectionStore(tmp_path / "data" / DB_NAME)


def image(seed: int) -> np.ndarray:
    """A float32 (28, 28) image in [0, 1] (random: every pixel value matters in the round trip)."""
    return np.random.default_rng(seed).random((28, 28), dtype=np.float32)


def as_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint(x.astype(np.float64) * 255).astype(np.uint8)


# --- the store -------------------------------------------------------------------------------------

def test_add_and_list_round_trip(store):
    first = store.add(image(1), 3, 5, "draw", "default-cnn")
    second = store.add(as_uint8(image(2)), 7, None, "upload", "cnn-20260101-000000")
    assert second > first
    assert store.count() == 2
    newest, oldest = store.list()
    assert (newest.id, oldest.id) == (second, first)
    assert oldest.image.dtype == np.uint8 and oldest.image.shape == (28, 28)
    assert np.array_equal(oldest.image, as_uint8(image(1)))
    assert np.abs(oldest.image_float - image(1)).max() <= 0.5 / 255 + 1e-6
    assert (oldest.label, oldest.predicted, oldest.source, oldest.model) == (3, 5, "draw", "default-cnn")
    assert (newest.label, newest.predicted, newest.source) == (7, None, "upload")
    assert datetime.fromisoformat(oldest.created).utcoffset().total_seconds() == 0
    assert [c.id for c in store.list(newest_first=False)] == [first, second]
    assert [c.id for c in store.list(limit=1)] == [second]
    assert store.label_counts().tolist() == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]

    x, y = store.arrays()
    assert x.dtype == np.uint8 and x.shape == (2, 28, 28) and y.dtype == np.uint8
    assert y.tolist() == [3, 7] and np.array_equal(x[0], as_uint8(image(1)))


def test_an_image_is_stored_as_784_bytes_and_nothing_else(store):
    store.add(image(1), 3, 5, "draw", "default-cnn")
    with sqlite3.connect(store.path) as con:
        columns = [row[1] for row in con.execute("PRAGMA table_info(corrections)")]
        blob = con.execute("SELECT image FROM corrections").fetchone()[0]
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    assert columns == ["id", "created", "label", "predicted", "source", "model", "image"]
    assert len(blob) == PIXELS == 784
    assert mode == "wal"
    assert "28×28" in STORED_NOTE and "IP address" in STORED_NOTE


def test_reading_an_empty_store_creates_nothing(store):
    assert store.count() == 0 and store.list() == [] and store.delete([1]) == 0
    x, y = store.arrays()
    assert x.shape == (0, 28, 28) and y.shape == (0,)
    assert not store.path.exists() and not store.path.parent.exists()


def test_default_location_is_created_on_demand(tmp_path, monkeypatch):
    monkeypatch.setenv(config.APP_DATA_DIR_ENV, str(tmp_path / "app-data"))
    default = CorrectionStore()
    assert default.path == tmp_path / "app-data" / "corrections.sqlite3"
    default.add(image(0), 1, 7, "draw", "m")
    assert default.path.is_file()


def test_delete(store):
    ids = [store.add(image(i), i % 10, None, "draw", "m") for i in range(5)]
    assert store.delete([ids[1], ids[3], 999_999]) == 2
    assert [c.id for c in store.list(newest_first=False)] == [ids[0], ids[2], ids[4]]
    assert store.delete([]) == 0
    assert store.count() == 3


def test_export_npz_round_trip(store, tmp_path):
    ids = [store.add(image(i), i % 10, (i + 1) % 10, "upload", "m") for i in range(4)]
    store.delete([ids[0]])
    path = tmp_path / "corrections.npz"
    assert store.export_npz(path) == 3
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["ids", "x", "y"]
        x, y = store.arrays()
        assert np.array_equal(npz["x"], x) and np.array_equal(npz["y"], y)
        assert npz["ids"].tolist() == ids[1:]
        assert npz["x"].dtype == np.uint8 and npz["y"].dtype == np.uint8
    with np.load(io.BytesIO(store.npz_bytes()), allow_pickle=False) as npz:
        assert npz["ids"].tolist() == ids[1:]


def test_export_csv_round_trip(store, tmp_path):
    ids = [store.add(image(i), i, None if i == 0 else 9 - i, "draw", "default-cnn") for i in range(3)]
    path = tmp_path / "corrections.csv"
    assert store.export_csv(path) == 3
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    assert header[:6] == ["id", "label", "predicted", "source", "model", "created"]
    assert header[6:] == [f"pixel{i}" for i in range(784)]
    assert [int(r[0]) for r in body] == ids
    assert [r[2] for r in body] == ["", "8", "7"]
    stored = {c.id: c for c in store.list()}
    for r in body:
        pixels = np.array([int(v) for v in r[6:]], np.uint8).reshape(28, 28)
        assert np.array_equal(pixels, stored[int(r[0])].image)
        assert r[5] == stored[int(r[0])].created
    text = io.StringIO()
    store.export_csv(text)
    assert store.csv_bytes().decode("utf-8") == text.getvalue() == path.read_text(encoding="utf-8")


def test_corrections_persist_across_a_restart(store):
    kept = store.add(image(5), 4, 9, "upload", "default-cnn")
    again = CorrectionStore(store.path)
    assert [c.id for c in again.list()] == [kept]
    assert np.array_equal(again.list()[0].image, as_uint8(image(5)))

    # A fresh interpreter (a restarted server) sees it, and what it adds is seen here.
    code = (
        "import sys, numpy as np\n"
        "from core.storage.corrections import CorrectionStore\n"
        "s = CorrectionStore(sys.argv[1])\n"
        "print([c.id for c in s.list(newest_first=False)], s.list()[0].label)\n"
        "print(s.add(np.zeros((28, 28), np.float32), 2, 8, 'draw', 'other'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(store.path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    seen, added = out.stdout.strip().splitlines()
    assert seen == f"[{kept}] 4"
    assert [c.id for c in store.list()] == [int(added), kept]


def test_concurrent_adds_from_threads(store):
    store.add(image(0), 0, None, "draw", "m")  # the file exists; the threads race on rows only
    threads, per_thread = 8, 25
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(k: int) -> None:
        try:
            start.wait()
            for j in range(per_thread):
                new = store.add(image(k * 100 + j), (k + j) % 10, k % 10, "upload" if j % 2 else "draw", f"m{k}")
                store.count()  # readers alongside the writers
                with lock:
                    ids.append(new)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not errors, errors
    assert len(set(ids)) == threads * per_thread
    assert store.count() == threads * per_thread + 1
    by_id = {c.id: c for c in store.list()}
    assert all(np.array_equal(by_id[i].image.shape, (28, 28)) for i in ids)


def test_concurrent_first_use_from_threads(tmp_path):
    # Several sessions adding the very first correction at once: the schema is made once.
    path = tmp_path / "fresh" / DB_NAME
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            CorrectionStore(path).add(image(k), k, None, "draw", "m")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not errors, errors
    assert CorrectionStore(path).count() == 6


@pytest.mark.parametrize("label, match", [
    (10, r"label must be a digit 0\.\.9, got 10"),
    (-1, r"label must be a digit 0\.\.9, got -1"),
    (3.0, r"label must be an integer digit 0\.\.9, got 3\.0 \(float\)"),
    ("3", r"label must be an integer digit"),
    (True, r"label must be an integer digit 0\.\.9, got True \(bool\)"),
    (None, r"label must be an integer digit"),
])
def test_bad_label_is_a_value_error(store, label, match):
    with pytest.raises(ValueError, match=match):
        store.add(image(0), label, None, "draw", "m")
    assert store.count() == 0


@pytest.mark.parametrize("pixels, match", [
    (np.zeros((28, 27), np.float32), r"Expected a 28x28 image .*got shape \(28, 27\)"),
    (np.zeros((280, 280, 4), np.uint8), r"got shape \(280, 280, 4\)\. Pass the preprocessed image"),
    (np.zeros((2, 28, 28), np.float32), r"got shape \(2, 28, 28\)"),
    (np.full((28, 28), 255.0, np.float32), r"Expected float pixel values in \[0, 1\], got 255\.\.255"),
    (np.full((28, 28), -0.5, np.float32), r"in \[0, 1\], got -0\.5"),
    (np.full((28, 28), np.nan, np.float32), "NaN or infinite"),
    (np.zeros((28, 28), np.int64), "dtype int64"),
])
def test_bad_image_is_a_value_error(store, pixels, match):
    with pytest.raises(ValueError, match=match):
        store.add(pixels, 1, None, "draw", "m")


def test_bad_prediction_source_or_model_is_a_value_error(store):
    with pytest.raises(ValueError, match=r"predicted must be a digit 0\.\.9, got 11"):
        store.add(image(0), 1, 11, "draw", "m")
    with pytest.raises(ValueError, match="source must be one of 'draw', 'upload', got 'email'"):
        store.add(image(0), 1, 2, "email", "m")
    with pytest.raises(ValueError, match="model must be the model's store name"):
        store.add(image(0), 1, 2, "draw", "")
    assert store.count() == 0
    store.add(image(0)[..., None], np.int64(4), np.uint8(2), "draw", "m")  # numpy ints, (28, 28, 1)
    assert store.list()[0].label == 4


# --- fine-tuning: plumbing on a tiny untrained model --------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    from core.learning.model import ModelSpec, build_model

    return build_model(ModelSpec(family="mlp", hidden=(32,), filters=(), dropout=0.0), seed=0)


def test_finetune_reports_progress_and_never_touches_the_base(tiny_model, tmp_path):
    from core.learning.finetune import finetune, save_finetuned
    from core.storage.store import ModelStore

    before = [w.copy() for w in tiny_model.get_weights()]
    rng = np.random.default_rng(0)
    x = (rng.random((10, 28, 28)) * 255).astype(np.uint8)
    y = np.arange(10, dtype=np.uint8)
    seen = []
    result = finetune(tiny_model, x, y, mnist_mix=300, epochs=1, batch_size=64, augment=False, hook=seen.append,
                      base_name="tiny", base_info=ModelInfo(family="mlp", test_accuracy=0.1, temperature=0.6))
    assert result.repeats == 6 and result.settings["correction_share"] == pytest.approx(60 / 360, abs=1e-4)
    assert [p.kind for p in seen].count("epoch") == 1 and seen[-1].fraction == 1.0
    assert result.test_accuracy is not None and 0 <= result.corrections_accuracy_after <= 1
    assert all(np.array_equal(a, b) for a, b in zip(before, tiny_model.get_weights()))
    assert result.model is not tiny_model

    name = save_finetuned(result, ModelStore(tmp_path / "models"), command="pytest")
    assert name.startswith("mlp-finetuned-")
    meta = ModelStore(tmp_path / "models").info(name)
    assert meta.base_model == "tiny" and meta.corrections == 10 and meta.finetuned is True
    assert meta.temperature == 0.6  # the base model's calibration is carried over
    assert meta.hyperparameters["finetune"]["repeats"] == 6
    assert meta.hyperparameters["finetune"]["base_test_accuracy"] == 0.1
    assert meta.test_accuracy == result.test_accuracy and meta.history["epoch"]


def test_finetune_stops_on_request_and_keeps_the_model_so_far(tiny_model, tmp_path):
    """A stop is read after each batch: the fine-tuned copy so far is measured and can be saved,
    marked as stopped early."""
    from core.learning.finetune import finetune, save_finetuned
    from core.storage.store import ModelStore

    stop = threading.Event()
    stop.set()
    result = finetune(tiny_model, np.zeros((3, 28, 28), np.uint8), [1, 2, 3], mnist_mix=500, epochs=2, stop=stop,
                      base_name="tiny", base_info=ModelInfo(family="mlp"))
    assert result.stopped and len(result.history["batch"]) == 1
    assert result.test_accuracy is not None and 0 <= result.test_accuracy <= 1
    assert result.corrections_accuracy_after is not None
    store = ModelStore(tmp_path / "models")
    name = save_finetuned(result, store, command="pytest")
    meta = store.info(name)
    assert meta.stopped_early is True and meta.finetuned is True and meta.base_model == "tiny"
    assert store.list().names() == [name]


def test_finetune_without_a_batch_is_not_saved(tiny_model, tmp_path):
    from dataclasses import replace

    from core.learning.finetune import finetune, save_finetuned
    from core.storage.store import ModelStore

    result = finetune(tiny_model, np.zeros((3, 28, 28), np.uint8), [1, 2, 3], mnist_mix=100, epochs=1)
    empty = replace(result, history={"epoch": [], "batch": []}, stopped=True)
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ValueError, match="before its first batch"):
        save_finetuned(empty, store)
    assert store.list().names() == []


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((0, 28, 28), np.uint8), [], "no corrections to learn from"),
    (np.zeros((2, 28, 28), np.uint8), [1], "2 correction images but 1 labels"),
    (np.zeros((2, 28, 28), np.uint8), [1, 12], r"digits 0\.\.9"),
    (np.zeros((2, 32, 32), np.uint8), [1, 2], r"shape \(N, 28, 28\)"),
])
def test_finetune_rejects_bad_corrections(tiny_model, x, y, match):
    from core.learning.finetune import finetune

    with pytest.raises(ValueError, match=match):
        finetune(tiny_model, x, np.array(y, np.int64), mnist_mix=100)


# --- fine-tuning: a decent model learns digits it misread ----------------------------------------

def font_files() -> list[Path]:
    fonts = [p for d in FONT_DIRS if d.is_dir() for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf")]
    # Symbol and math fonts draw digits oddly or not at all.
    return sorted(p for p in fonts if not any(w in p.name.lower() for w in ("math", "symbol", "emoji")))


def render_digit(font: Path, digit: int, *, angle: float = 0.0, shear: float = 0.0, side: int = 128) -> np.ndarray:
    """A digit typed in ``font``, black on white, sheared and rotated, then normalized the way a
    visitor's upload is (``core.reading.preprocess.to_mnist``): float32 (28, 28) in [0, 1]."""
    from PIL import Image, ImageDraw, ImageFont

    from core.reading.preprocess import to_mnist

    page = Image.new("L", (side, side), 255)
    ImageDraw.Draw(page).text((side / 2, side / 2), str(digit), font=ImageFont.truetype(str(font), side * 5 // 8),
                              fill=0, anchor="mm")
    if shear:
        page = page.transform(page.size, Image.Transform.AFFINE, (1, shear, -shear * side / 2, 0, 1, 0),
                              resample=Image.Resampling.BICUBIC, fillcolor=255)
    if angle:
        page = page.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    return to_mnist(page)


def hard_digits_pool() -> tuple[np.ndarray, np.ndarray]:
    """Slanted typed digits (font x digit x slant): float32 (N, 28, 28), uint8 (N,). With too few
    fonts on the machine, strongly rotated MNIST *training* digits instead."""
    fonts = font_files()
    if len(fonts) >= 8:
        slants = [(30, 0.0), (-30, 0.0), (40, 0.0), (-40, 0.0), (45, 0.0), (-45, 0.0), (0, -0.5)]
        x = [render_digit(f, d, angle=a, shear=s) for f in fonts for d in range(10) for a, s in slants]
        y = [d for _ in fonts for d in range(10) for _ in slants]
        return np.stack(x), np.array(y, np.uint8)
    from scipy import ndimage

    from core.data import cached_mnist

    mnist = cached_mnist()
    pick = np.random.default_rng(1).permutation(len(mnist.y_train))[:1500]
    angles = np.random.default_rng(2).choice([-50, -40, 40, 50], len(pick))
    x = [np.clip(ndimage.rotate(mnist.x_train[i].astype(np.float32) / 255, a, reshape=False, order=1), 0, 1)
         for i, a in zip(pick, angles)]
    return np.stack(x).astype(np.float32), mnist.y_train[pick]


@pytest.fixture(scope="module")
def decent_base():
    """The shipped default model if present, else core.learning.train.RECIPES["fast"] trained once (~99%)."""
    from core.learning.persist import load_model
    from core.learning.train import RECIPES, result_info, train
    from core.storage.store import ModelStore

    shipped, name = ModelStore(config.ROOT / "models"), config.DEFAULT_MODEL_NAME
    if shipped.list().get(name):
        return name, load_model(shipped, name), shipped.info(name)
    result = train(RECIPES["fast"])
    return "fast-recipe", result.model, result_info(result)


@pytest.mark.slow
def test_finetuning_learns_misread_digits_and_keeps_mnist(decent_base, tmp_path):
    from core.data import cached_mnist, to_model_input
    from core.learning.finetune import finetune, save_finetuned
    from core.learning.persist import load_model
    from core.learning.train import probabilities, test_accuracy
    from core.storage.store import ModelStore

    base_name, base, base_info = decent_base
    mnist = cached_mnist()
    x_test, y_test = to_model_input(mnist.x_test), mnist.y_test
    base_test = test_accuracy(base, x_test, y_test)
    assert base_test >= 0.985, f"base model too weak for a 0.2-point check: {base_test:.4f}"

    pool_x, pool_y = hard_digits_pool()
    probs = probabilities(base, pool_x)
    pred = probs.argmax(axis=1)
    # Read poorly: the least probability given to the right digit (a confidence threshold would
    # not do: a model trained with label smoothing is never much more than 90% sure).
    p_true = probs[np.arange(len(pool_y)), pool_y]
    poorly = np.argsort(p_true, kind="stable")[:max(300, int(np.sum(p_true < 0.5)))]
    pick = np.random.default_rng(0).permutation(poorly)
    fix, held_out = pick[:150], pick[150:]

    # The corrections go through the store, as in the app.
    corrections = CorrectionStore(tmp_path / DB_NAME)
    for i in fix:
        corrections.add(pool_x[i], int(pool_y[i]), int(pred[i]), "upload", base_name)
    cx, cy = corrections.arrays()
    before = float(np.mean(pred[fix] == pool_y[fix]))

    result = finetune(base, cx, cy, base_name=base_name, base_info=base_info)
    after = float(np.mean(probabilities(result.model, cx.astype(np.float32) / 255).argmax(axis=1) == cy))
    held_before = float(np.mean(pred[held_out] == pool_y[held_out]))
    held_after = float(np.mean(probabilities(result.model, pool_x[held_out]).argmax(axis=1) == pool_y[held_out]))
    report = (f"\nbase {base_name}: MNIST test {base_test:.4f}; pool of {len(pool_y)} slanted typed digits "
              f"{np.mean(pred == pool_y):.3f}; {len(fix)} corrections {before:.3f} -> {after:.3f}; "
              f"{len(held_out)} other poorly read (not used) {held_before:.3f} -> {held_after:.3f}; "
              f"MNIST test -> {result.test_accuracy:.4f}; {result.train_seconds:.1f} s, repeats {result.repeats}")
    print(report)

    assert result.corrections_accuracy_before == pytest.approx(before)
    assert before <= 0.7, report
    assert after >= 0.95 and result.corrections_accuracy_after == pytest.approx(after), report
    assert result.test_accuracy >= base_test - 0.002, report
    assert held_after > held_before, report
    assert test_accuracy(base, x_test, y_test) == base_test  # the served model is untouched

    store = ModelStore(tmp_path / "models")
    name = save_finetuned(result, store, command="pytest")
    meta = store.info(name)
    assert meta.base_model == base_name and meta.corrections == 150
    assert meta.test_accuracy == pytest.approx(result.test_accuracy)
    assert meta.hyperparameters["finetune"]["corrections_accuracy_after"] == pytest.approx(after)
    assert test_accuracy(load_model(store, name), x_test[:2000], y_test[:2000]) == pytest.approx(
        test_accuracy(result.model, x_test[:2000], y_test[:2000]))
    # The saved model is served from its exported file, with the same answers.
    from core.serving.predict import Predictor

    served = Predictor.load(name, store).probabilities(x_test[:2000]).argmax(axis=1)
    assert np.array_equal(served, probabilities(result.model, x_test[:2000]).argmax(axis=1))
