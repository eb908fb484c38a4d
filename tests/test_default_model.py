"""The shipped default model: accuracy floor, metadata, and the command the README gives."""


import numpy as np
import pytest

from core import config
from core.data import cached_mnist
from core.serving.predict import Predictor
from core.storage.store import ModelStore

SHIPPED = ModelStore(config.ROOT / "models")


def test_default_model_is_listed_and_marked_shipped():
    entry = SHIPPED.list().get(config.DEFAULT_MODEL_NAME)
    assert entry is not None, "models/default-cnn.keras + .json must ship with the project"
    info = entry.info
    assert info.shipped is True and info.family == "cnn"
    for key in ("hyperparameters", "params", "test_accuracy", "train_seconds", "created", "data_sha256", "history", "layers"):
        assert getattr(info, key), key
    assert info.data_sha256 == config.BUNDLED_MNIST_SHA256


def test_default_model_scores_at_least_99_4_percent_on_the_test_set():
    predictor = Predictor.load(config.DEFAULT_MODEL_NAME, SHIPPED)
    m = cached_mnist()
    probs = predictor.probabilities(m.x_test.astype(np.float32) / 255.0)
    accuracy = float(np.mean(probs.argmax(axis=1) == m.y_test))
    assert accuracy >= 0.994, accuracy
    assert SHIPPED.info(config.DEFAULT_MODEL_NAME).test_accuracy == pytest.approx(accuracy, abs=5e-4)


def test_readme_gives_the_command_recorded_in_the_metadata():
    command = SHIPPED.info(config.DEFAULT_MODEL_NAME).command
    assert command.startswith("python -m core train ") and "--name default-cnn" in command
    readme = (config.ROOT / "README.md").read_text(encoding="utf-8")
    assert command in readme
