"""Temperature scaling (core/serving/calibrate.py): shown confidences that match how often the model is right."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.serving import calibrate


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_apply_keeps_the_answer_and_sums_to_one():
    rng = np.random.default_rng(0)
    probs = _softmax(rng.normal(size=(200, 10)) * 3).astype(np.float32)
    for t in (0.2, 0.5, 2.0):
        out = calibrate.apply_temperature(probs, t)
        assert out.dtype == np.float32 and out.shape == probs.shape
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
        assert (out.argmax(axis=1) == probs.argmax(axis=1)).all()
        sharper = out.max(axis=1) > probs.max(axis=1)
        assert sharper.all() if t < 1 else (~sharper).all()
    assert np.array_equal(calibrate.apply_temperature(probs, 1.0), probs)


def test_apply_survives_zeros_and_one_hot():
    probs = np.eye(10, dtype=np.float32)[[3, 7]]
    out = calibrate.apply_temperature(probs, 0.5)
    assert np.isfinite(out).all() and list(out.argmax(axis=1)) == [3, 7]


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.0])
def test_fit_recovers_a_known_temperature(true_t):
    # Labels drawn from softmax(z / T): the probabilities softmax(z) are miscalibrated by exactly T.
    rng = np.random.default_rng(1)
    z = rng.normal(size=(20000, 10)) * 2.0
    target = _softmax(z / true_t)
    labels = np.array([rng.choice(10, p=p) for p in target])
    fitted = calibrate.fit_temperature(_softmax(z), labels)
    assert fitted == pytest.approx(true_t, rel=0.08)
    assert calibrate.nll(_softmax(z), labels, fitted) <= calibrate.nll(_softmax(z), labels, 1.0) + 1e-9


@pytest.mark.parametrize("probs, labels", [(np.zeros((0, 10)), []), (np.full((3, 10), 0.1), [0, 1]),
                                           (np.full((2, 10), 0.1), [0, 10])])
def test_fit_refuses_bad_input(probs, labels):
    with pytest.raises(ValueError):
        calibrate.fit_temperature(probs, np.asarray(labels))


@pytest.mark.parametrize("meta, expected", [({}, 1.0), ({"temperature": 0.6}, 0.6), ({"temperature": 2}, 2.0),
                                            ({"temperature": "x"}, 1.0), ({"temperature": float("nan")}, 1.0),
                                            ({"temperature": True}, 1.0),
                                            ({"temperature": 0.0}, 1.0), ({"temperature": 1e9}, 1.0)])
def test_stored_temperature_is_read_only_when_usable(meta, expected):
    from core.storage.info import ModelInfo

    assert ModelInfo.from_json(meta).temperature == expected


def test_shipped_model_confidence_is_calibrated():
    """The default model (label smoothing caps its raw top probability near 0.9): with its stored
    temperature, the confidence shown on the test set tracks accuracy (expected calibration error
    under 1 point) and a clear digit shows more than 97%."""
    from core.data import cached_mnist
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    store = ModelStore()
    temperature = store.info("default-cnn").temperature
    assert 0.2 < temperature < 1.0
    predictor = Predictor.load("default-cnn", store)
    assert predictor.temperature == temperature
    mnist = cached_mnist()
    answers = predictor.predict_inputs(mnist.x_test[:5000].astype(np.float32) / 255)
    conf = np.array([a.confidence for a in answers])
    right = np.array([a.digit for a in answers]) == mnist.y_test[:5000]
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs(conf[bins == b].mean() - right[bins == b].mean()) * np.mean(bins == b)
              for b in range(10) if (bins == b).any())
    print(f"\nshipped model, 5000 test digits: accuracy {right.mean():.4f}, mean confidence {conf.mean():.4f}, ECE {ece:.4f}")
    assert ece < 0.01
    assert np.median(conf[right]) > 0.97
    raw = predictor.probabilities(mnist.x_test[:5000].astype(np.float32) / 255).max(axis=1)
    assert np.median(raw[right]) < 0.95  # the raw output really was under-confident


@pytest.mark.slow
def test_training_stores_a_fitted_temperature(trained_store):
    meta = json.loads((trained_store / "test-mlp.json").read_text())
    assert calibrate.T_MIN <= meta["temperature"] <= calibrate.T_MAX and meta["temperature"] != 1.0
