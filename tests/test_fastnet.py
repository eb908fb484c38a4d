"""The numpy inference path agrees with Keras for every architecture the app builds."""

import numpy as np
import pytest

from core.data import cached_mnist
from core.fastnet import compile_numpy
from core.model import ModelSpec, build_model
from core.predict import Predictor

SPECS = [
    ModelSpec(family="mlp", hidden=(64, 32), filters=(), dropout=0.2, batch_norm=True),
    ModelSpec(family="mlp", hidden=(16,), filters=(), dropout=0.0, batch_norm=False),
    ModelSpec(family="cnn", filters=(8, 16), hidden=(32,), dropout=0.1, batch_norm=True),
    ModelSpec(family="cnn", filters=(4, 8, 16), hidden=(16,), batch_norm=False),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.family}-{s.filters}-{s.hidden}-bn{s.batch_norm}")
def test_numpy_path_matches_keras(spec):
    import keras

    model = build_model(spec, seed=3)
    # Non-trivial batch-norm statistics, as after training.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(1)
            layer.moving_mean.assign(rng.normal(0, 0.5, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    fn = compile_numpy(model)
    assert fn is not None
    x = cached_mnist().x_test[:20].astype(np.float32)[..., None] / 255.0
    np.testing.assert_allclose(fn(x), np.asarray(model(x, training=False)), atol=1e-5)


@pytest.mark.parametrize("padding,strides", [("same", 2), ("same", 1), ("valid", 1)])
def test_hand_built_convs_match_keras(padding, strides):
    # Layouts the app's builder does not use (padding "same", odd kernels, pooling): the gathered
    # im2col must place every pixel, and every zero of the padding, where Keras does.
    import keras

    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(6, (5, 3), strides=strides, padding=padding, activation="relu")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(5, 3, strides=strides, padding=padding)(x)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inp, out)
    fn = compile_numpy(model)
    assert fn is not None
    x = cached_mnist().x_test[:5].astype(np.float32)[..., None] / 255.0
    np.testing.assert_allclose(fn(x), np.asarray(model(x, training=False)), atol=1e-5)
    np.testing.assert_allclose(fn(x[:1]), np.asarray(model(x[:1], training=False)), atol=1e-5)


def test_unsupported_layers_fall_back_to_tensorflow():
    import keras

    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, dilation_rate=2)(inp)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inp, out)
    assert compile_numpy(model) is None
    pred = Predictor(model)
    assert pred._numpy_call is None
    assert pred.probabilities(np.zeros((2, 28, 28), np.float32)).shape == (2, 10)


def test_predictor_small_and_large_batches_agree():
    model = build_model(SPECS[2], seed=0)
    pred = Predictor(model)
    x = cached_mnist().x_test[:64].astype(np.float32) / 255.0
    small = np.concatenate([pred.probabilities(x[i:i + 8]) for i in range(0, 64, 8)])
    np.testing.assert_allclose(small, pred.probabilities(x), atol=1e-5)
