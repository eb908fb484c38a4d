"""The bundled MNIST: checksum, layout, label counts, clear errors, training arrays."""


import numpy as np
import pytest

from core import config
from core.data import DataError, load_mnist, to_model_input, training_split


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_bundled_file_matches_recorded_checksum_and_mnist_facts(mnist):
    assert mnist.sha256 == config.BUNDLED_MNIST_SHA256
    assert np.bincount(mnist.y_train).tolist() == list(config.MNIST_TRAIN_COUNTS)
    assert np.bincount(mnist.y_test).tolist() == list(config.MNIST_TEST_COUNTS)
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert round(float(mnist.x_train.mean()), 3) == 33.318


def test_corrupt_bundled_file_gives_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "mnist.npz"
    data = bytearray(config.BUNDLED_MNIST.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(config, "BUNDLED_MNIST", bad)
    with pytest.raises(DataError, match="corrupt.*git checkout data/mnist.npz"):
        load_mnist(bad)


def test_missing_file_gives_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_mnist(tmp_path / "nope.npz")


def test_env_override_checked_by_layout_not_checksum(tmp_path, monkeypatch, mnist):
    # Same arrays, different bytes (uncompressed), as with the Keras cache.
    other = tmp_path / "keras-cache-mnist.npz"
    np.savez(other, x_train=mnist.x_train, y_train=mnist.y_train, x_test=mnist.x_test, y_test=mnist.y_test)
    monkeypatch.setenv(config.MNIST_PATH_ENV, str(other))
    loaded = load_mnist()
    assert loaded.path == other and loaded.sha256 != config.BUNDLED_MNIST_SHA256
    # Wrong label counts are refused.
    y = mnist.y_train.copy()
    y[:100] = 0
    np.savez(other, x_train=mnist.x_train, y_train=y, x_test=mnist.x_test, y_test=mnist.y_test)
    with pytest.raises(DataError, match="label counts"):
        load_mnist()
    np.savez(other, x_train=mnist.x_train.astype(np.float32), y_train=mnist.y_train, x_test=mnist.x_test, y_test=mnist.y_test)
    with pytest.raises(DataError, match="expected uint8"):
        load_mnist()


def test_npz_holding_pickles_is_not_unpickled(tmp_path, monkeypatch):
    evil = tmp_path / "evil.npz"
    np.savez(evil, x_train=np.array([{"a": 1}], dtype=object))
    monkeypatch.setenv(config.MNIST_PATH_ENV, str(evil))
    with pytest.raises(DataError, match="Cannot read"):
        load_mnist()


def test_training_arrays_reshaped_and_normalized(mnist):
    split = training_split(mnist, train_size=1000, val_fraction=0.2, seed=1)
    assert split.x_train.shape == (800, 28, 28, 1) and split.x_val.shape == (200, 28, 28, 1)
    assert split.x_train.dtype == np.float32
    assert 0.0 <= split.x_train.min() and split.x_train.max() == 1.0
    assert split.x_test.shape == (10000, 28, 28, 1)
    again = training_split(mnist, train_size=1000, val_fraction=0.2, seed=1)
    assert np.array_equal(split.y_train, again.y_train)
    with pytest.raises(ValueError, match="train_size"):
        training_split(mnist, train_size=10)
    with pytest.raises(ValueError, match="Expected images of shape"):
        to_model_input(np.zeros((3, 27, 28), np.uint8))
