"""The exported inference file answers as the Keras model it came from (learning tier: imports Keras)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    from core.data import cached_mnist, to_model_input

    return to_model_input(cached_mnist().x_test[:1000])


@pytest.mark.parametrize("store_dir, name", [("shipped", "default-cnn"), ("fixture", "test-mlp")])
def test_exported_outputs_match_keras_on_1000_test_images(store_dir, name, trained_store, test_images):
    from core.learning.model import feature_model
    from core.learning.persist import load_model
    from core.serving.runtime import Runtime
    from core.storage.store import ModelStore

    store = ModelStore(ROOT / "models" if store_dir == "shipped" else trained_store)
    keras_probs, keras_features = feature_model(load_model(store, name))[0].predict(test_images, batch_size=500,
                                                                                     verbose=0)
    _, files = store.verify(name)
    probs, features = Runtime(files["onnx"]).run(test_images)
    assert probs.shape == (1000, 10) and features.shape == keras_features.shape
    np.testing.assert_allclose(probs, keras_probs, atol=1e-5)
    np.testing.assert_allclose(features, keras_features, atol=1e-5 * max(1.0, float(np.abs(keras_features).max())))


def test_export_of_a_fresh_model_round_trips(trained_store):
    from core.learning.export import export_onnx
    from core.learning.persist import load_model
    from core.serving.runtime import Runtime, RuntimeError_
    from core.storage.store import ModelStore

    model = load_model(ModelStore(trained_store), "test-mlp")
    runtime = Runtime(export_onnx(model))
    assert runtime.feature_count == 256 + 128  # the MLP's two ReLU layers
    with pytest.raises(RuntimeError_, match="cannot be loaded"):
        Runtime(b"not an onnx file")
