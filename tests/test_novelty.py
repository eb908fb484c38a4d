""""Not a digit": Fashion-MNIST flagged, MNIST digits kept, letters/scribbles/blank flagged.

Fashion-MNIST is only a test here: the detector never sees it (see core/novelty.py).
"""

from __future__ import annotations

import gzip
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from core import novelty
from core.novelty import NoveltyDetector, NoveltyError, ink_statistics, shape_descriptor, sidecar_path

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
MIN_FASHION_FLAGGED = 0.90
MIN_MNIST_KEPT = 0.99


def idx_images(path: Path) -> np.ndarray:
    """uint8 (N, rows, cols) images from a gzipped IDX file (magic 0x00000803)."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    if int.from_bytes(data[:4], "big") != 0x803:
        raise ValueError(f"{path} is not an IDX image file.")
    count, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, count * rows * cols, offset=16).reshape(count, rows, cols)


@pytest.fixture(scope="module")
def fashion() -> np.ndarray:
    path = FASHION_DIR / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip(f"{path} is missing: install Debian's dataset-fashion-mnist (tests/run.sh does).")
    return idx_images(path)


@pytest.fixture(scope="module")
def mnist_test() -> np.ndarray:
    from core.data import cached_mnist

    return cached_mnist().x_test


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A Predictor with its detector: the store's default model (its shipped NAME.novelty.npz
    when there is one, else fitted into a scratch folder), or a small CNN trained here."""
    from core.predict import Predictor
    from core.store import ModelStore

    scratch = tmp_path_factory.mktemp("novelty")
    store = ModelStore()
    name = store.active_name()
    if name is not None:
        model = store.load(name)
        shipped = sidecar_path(store.keras_path(name))
        path = shipped if shipped.is_file() else scratch / f"{name}{novelty.SIDECAR_SUFFIX}"
    else:
        from core.train import RECIPES, train

        name = "test-cnn"
        model = train(replace(RECIPES["fast"], train_size=30000)).model
        path = scratch / f"{name}{novelty.SIDECAR_SUFFIX}"
    predictor = Predictor(model, name=name, novelty_path=path)
    t0 = time.perf_counter()
    assert predictor.novelty() is not None
    print(f"\ndetector for {name}: ready in {time.perf_counter() - t0:.1f} s")
    return predictor


# --- the acceptance figures ----------------------------------------------------------------------


@pytest.mark.slow
def test_fashion_flagged_and_mnist_kept_as_model_input(served, fashion, mnist_test):
    """(b) Each 28x28 image given directly as the model input (Predictor.predict_inputs)."""
    flagged = np.mean([not p.is_digit for p in served.predict_inputs(fashion.astype(np.float32) / 255)])
    kept = np.mean([p.is_digit for p in served.predict_inputs(mnist_test.astype(np.float32) / 255)])
    print(f"\nmodel input: Fashion-MNIST flagged {flagged:.2%}, MNIST test digits kept {kept:.2%}")
    assert flagged >= MIN_FASHION_FLAGGED
    assert kept >= MIN_MNIST_KEPT


@pytest.mark.slow
def test_fashion_flagged_and_mnist_kept_through_the_read_path(served, fashion, mnist_test):
    """(a) Each 28x28 image given as a picture (Predictor.read_many: preprocessing included).
    A picture in which no ink is found reads as no digit, is_digit False: it counts as flagged."""
    answers = served.read_many(list(fashion))
    flagged = np.mean([not p.is_digit for p in answers])
    no_ink = sum(p.digit is None for p in answers)
    kept = np.mean([p.is_digit for p in served.read_many(list(mnist_test))])
    print(f"\nread path: Fashion-MNIST flagged {flagged:.2%} ({no_ink} without ink), MNIST test digits kept {kept:.2%}")
    assert flagged >= MIN_FASHION_FLAGGED
    assert kept >= MIN_MNIST_KEPT


def _glyph(char: str, font: str, size: int = 200) -> np.ndarray:
    """Dark text on white paper, as a photo of a written letter would be after decoding."""
    image = Image.new("L", (size, size), 235)
    ImageDraw.Draw(image).text((40, 20), char, fill=30, font=ImageFont.truetype(font, int(size * 0.6)))
    return np.asarray(image)


@pytest.mark.slow
def test_letters_scribbles_and_blank_are_flagged(served):
    fonts = [f for f in novelty.font_files() if "Mono" not in f][:6]
    if not fonts:
        pytest.skip("no TrueType fonts on this machine")
    letters = [_glyph(c, f) for c in "AKMWXHR#&" for f in fonts]
    letter_flags = [not p.is_digit for p in served.read_many(letters)]
    rng = np.random.default_rng(2024)
    scribbles = [novelty.synthetic_image("scribble", rng) for _ in range(60)]
    scribble_flags = [not p.is_digit for p in served.read_many(scribbles)]
    blank = served.read(np.full((100, 100), 240, np.uint8))
    print(f"\nflagged: letters {np.mean(letter_flags):.0%} of {len(letters)}, "
          f"scribbles {np.mean(scribble_flags):.0%} of {len(scribbles)}")
    assert np.mean(letter_flags) >= 0.8
    assert np.mean(scribble_flags) >= 0.6
    assert blank.digit is None and not blank.is_digit and blank.to_json()["is_digit"] is False


@pytest.mark.slow
def test_real_digits_drawn_or_photographed_stay_digits(served, mnist_test):
    from tests import helpers_images as hi

    rng = np.random.default_rng(5)
    pictures = [hi.STYLES[style](digit, rng) for style in ("paper_photo_jpeg", "canvas_transparent", "canvas_black")
                for digit in mnist_test[:100]]
    kept = np.mean([p.is_digit for p in served.read_many(pictures)])
    assert kept >= 0.97


@pytest.mark.slow
def test_prediction_with_the_detector_stays_fast(served, mnist_test):
    x = mnist_test[0].astype(np.float32) / 255
    served.predict_input(x)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        served.predict_input(x)
        times.append(time.perf_counter() - t0)
    # ~1 ms on an idle 2-core machine; slack for a busy shared one.
    assert float(np.median(times)) < 0.02


@pytest.mark.slow
def test_json_carries_is_digit(served, fashion, mnist_test):
    digit = served.predict_input(mnist_test[0].astype(np.float32) / 255).to_json()
    assert digit["is_digit"] is True and set(digit) == {"digit", "confidence", "probabilities", "is_digit"}
    flagged = [served.predict_input(x.astype(np.float32) / 255).to_json() for x in fashion[:5]]
    assert all(obj["is_digit"] is False for obj in flagged)


# --- the detector file -----------------------------------------------------------------------------


@pytest.mark.slow
def test_detector_file_beside_the_model_is_reused_and_not_listed(trained_store, tmp_path, monkeypatch):
    from core import config
    from core.predict import Predictor
    from core.store import ModelStore

    root = tmp_path / "models"
    shutil.copytree(trained_store, root)
    for sidecar in root.glob("*" + novelty.SIDECAR_SUFFIX):  # saved there by tests run earlier (app pages)
        sidecar.unlink()
    monkeypatch.setenv(config.MODELS_DIR_ENV, str(root))
    store = ModelStore(root)
    names = store.list().names()
    model = store.load("test-mlp")
    fits = []
    real_fit = novelty.fit_detector

    def counting_fit(runner, fingerprint="", **kw):
        fits.append(fingerprint)
        return real_fit(runner, fingerprint, **kw)

    monkeypatch.setattr(novelty, "fit_detector", counting_fit)
    Predictor(model, name="test-mlp").read(np.eye(28, dtype=np.float32))
    path = root / "test-mlp.novelty.npz"
    assert path.is_file() and len(fits) == 1
    assert store.list().names() == names and not store.list().problems
    with np.load(path, allow_pickle=False) as npz:
        assert str(npz["fingerprint"]) == novelty.weights_fingerprint(model)
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no temporary file left"
    Predictor(model, name="test-mlp").read(np.eye(28, dtype=np.float32))
    assert len(fits) == 1, "the saved detector was not reused"
    store.delete("test-mlp")
    assert not path.exists(), "deleting a model leaves its detector behind"


def test_broken_detector_never_breaks_reading(trained_store, tmp_path, monkeypatch, caplog):
    from core.predict import Predictor
    from core.store import ModelStore

    bad = tmp_path / "x.novelty.npz"
    bad.write_bytes(b"not an npz")

    def failing_fit(*args, **kw):
        raise RuntimeError("no memory left")

    monkeypatch.setattr(novelty, "fit_detector", failing_fit)
    predictor = Predictor(ModelStore(trained_store).load("test-mlp"), novelty_path=bad)
    with caplog.at_level(logging.WARNING):
        answer = predictor.read(np.eye(28, dtype=np.float32))
    assert answer.digit is not None and answer.is_digit is True
    assert "not a digit" in caplog.text
    assert predictor.novelty() is None


def test_detector_off(trained_store):
    from core.predict import Predictor
    from core.store import ModelStore

    predictor = Predictor(ModelStore(trained_store).load("test-mlp"), novelty=False)
    assert predictor.novelty() is None
    assert all(p.is_digit for p in predictor.predict_inputs(np.random.default_rng(0).random((3, 28, 28))))


# --- pure parts ----------------------------------------------------------------------------------


def _tiny_detector(dim: int = 4, hidden: int = 3) -> NoveltyDetector:
    rng = np.random.default_rng(0)
    inputs = dim + 3 + novelty.SHAPE_DIM + 6
    return NoveltyDetector(
        rng.random((10, dim)), np.eye(dim), rng.random((10, novelty.SHAPE_DIM)),
        np.stack([np.eye(novelty.SHAPE_DIM)] * 10), np.zeros(10), np.zeros(inputs, np.float32),
        np.ones(inputs, np.float32), rng.normal(size=(inputs, hidden)).astype(np.float32),
        np.zeros(hidden, np.float32), rng.normal(size=hidden).astype(np.float32), np.zeros((), np.float32),
        np.asarray(0.5), np.asarray("abc"), np.asarray(0.005))


def test_detector_file_round_trip_without_pickle(tmp_path):
    detector = _tiny_detector()
    path = tmp_path / "m.novelty.npz"
    detector.save(path)
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz["format_version"]) == novelty.FORMAT_VERSION
    again = NoveltyDetector.load(path)
    rng = np.random.default_rng(1)
    f, p, x = rng.random((5, 4)), rng.dirichlet(np.ones(10), 5), rng.random((5, 28, 28)).astype(np.float32)
    assert np.array_equal(detector.scores(f, p, x), again.scores(f, p, x))
    assert str(again.fingerprint) == "abc"
    assert [q.name for q in tmp_path.iterdir()] == ["m.novelty.npz"]


def test_detector_file_errors_are_novelty_errors(tmp_path):
    with pytest.raises(NoveltyError):
        NoveltyDetector.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(NoveltyError):
        NoveltyDetector.load(tmp_path / "bad.npz")
    arrays = _tiny_detector().to_arrays()
    del arrays["w1"]
    with pytest.raises(NoveltyError, match="w1"):
        NoveltyDetector.from_arrays(arrays)


def test_scores_refuse_features_of_another_model():
    detector = _tiny_detector()
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError):
        detector.scores(rng.random((2, 4)), rng.dirichlet(np.ones(10), 2), np.zeros((2, 28, 28), np.float32)[:, :, :27])
    with pytest.raises(ValueError, match="another model"):
        NoveltyDetector.scores(replace(detector, input_mean=np.zeros(5, np.float32)), rng.random((2, 4)),
                               rng.dirichlet(np.ones(10), 2), np.zeros((2, 28, 28), np.float32))


def test_sidecar_path():
    assert sidecar_path(Path("/m/default-cnn.keras")) == Path("/m/default-cnn.novelty.npz")


def test_shape_descriptor_and_ink_statistics():
    bar = np.zeros((1, 28, 28), np.float32)
    bar[0, 4:24, 13:15] = 1.0  # a "1": a thin vertical stroke
    block = np.zeros((1, 28, 28), np.float32)
    block[0, 4:24, 4:24] = 1.0  # a filled square
    d = shape_descriptor(np.concatenate([bar, block]))
    assert d.shape == (2, novelty.SHAPE_DIM) and d.dtype == np.float32 and np.isfinite(d).all()
    assert not shape_descriptor(np.zeros((1, 28, 28), np.float32))[:, :128].any()
    s = ink_statistics(np.concatenate([bar, block]))
    assert s.shape == (2, 6)
    assert s[1, 2] > 0.8 > 0.2 > s[0, 2]  # solid inside: the square, not the stroke
    assert s[1, 4] > s[0, 4]  # wider "stroke"


def test_synthetic_non_digits_are_repeatable():
    x1, f1 = novelty.synthetic_non_digits(24, seed=3)
    x2, f2 = novelty.synthetic_non_digits(24, seed=3)
    assert np.array_equal(x1, x2) and list(f1) == list(f2)
    assert x1.dtype == np.float32 and x1.shape[1:] == (28, 28) and 24 <= len(x1) <= 48
    assert 0.0 <= x1.min() and x1.max() <= 1.0
    assert set(f1) == set(novelty.FAMILIES)
    with pytest.raises(ValueError, match="Unknown family"):
        novelty.synthetic_image("shoe", np.random.default_rng(0))
