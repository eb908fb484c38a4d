"""Load the bundled MNIST and turn it into training arrays.

The bundled ``data/mnist.npz`` is verified by its SHA-256; a file named by ``$DIGITS_MNIST_PATH``
(for example the Keras cache, whose bytes differ) is verified by shapes, dtypes and label counts.
Files are read with ``allow_pickle=False``: nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from core import config


class DataError(RuntimeError):
    """The MNIST file is missing, corrupt or not in the expected layout."""


@dataclass(frozen=True)
class Mnist:
    """MNIST as uint8 arrays: x (N, 28, 28) in 0..255, y (N,) in 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    sha256: str
    path: Path


def mnist_path() -> Path:
    """The MNIST file in use: ``$DIGITS_MNIST_PATH`` if set, else the bundled one."""
    override = os.environ.get(config.MNIST_PATH_ENV)
    return Path(override).expanduser() if override else config.BUNDLED_MNIST


def _check_layout(arrays: dict[str, np.ndarray], path: Path) -> None:
    expected = {
        "x_train": ((60000, 28, 28), np.uint8),
        "y_train": ((60000,), np.uint8),
        "x_test": ((10000, 28, 28), np.uint8),
        "y_test": ((10000,), np.uint8),
    }
    for key, (shape, dtype) in expected.items():
        if key not in arrays:
            raise DataError(f"{path} has no array {key!r}; expected Keras' mnist.npz layout {sorted(expected)}.")
        arr = arrays[key]
        if arr.shape != shape or arr.dtype != dtype:
            raise DataError(
                f"{path}: {key} is {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {shape} (Keras' mnist.npz layout)."
            )
    for key, counts in (("y_train", config.MNIST_TRAIN_COUNTS), ("y_test", config.MNIST_TEST_COUNTS)):
        got = np.bincount(arrays[key], minlength=10).tolist()
        if got != list(counts):
            raise DataError(f"{path}: label counts of {key} are {got}, expected MNIST's {list(counts)}.")


def load_mnist(path: Path | None = None) -> Mnist:
    """Load MNIST and verify it.

    Args:
        path: an mnist.npz to read; defaults to ``mnist_path()``.

    Returns:
        ``Mnist`` with uint8 arrays in Keras' layout.

    Raises:
        DataError: the file is missing, corrupt, or not MNIST in Keras' layout.
    """
    path = Path(path) if path is not None else mnist_path()
    bundled = path.resolve() == config.BUNDLED_MNIST.resolve()
    if not path.is_file():
        hint = ("Restore it from the repository (git checkout data/mnist.npz)." if bundled
                else f"Unset {config.MNIST_PATH_ENV} to use the bundled copy.")
        raise DataError(f"MNIST file not found: {path}. {hint}")
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if bundled and digest != config.BUNDLED_MNIST_SHA256:
        raise DataError(
            f"The bundled MNIST file {path} is corrupt: its SHA-256 is {digest}, expected "
            f"{config.BUNDLED_MNIST_SHA256}. Restore it with `git checkout data/mnist.npz`."
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"Cannot read {path} as an .npz file ({exc}).") from exc
    _check_layout(arrays, path)
    return Mnist(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], digest, path)


@lru_cache(maxsize=2)
def cached_mnist(path: str | None = None) -> Mnist:
    """``load_mnist`` memoized per path, for repeated callers in one process (read-only arrays)."""
    mnist = load_mnist(Path(path) if path else None)
    for arr in (mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test):
        arr.setflags(write=False)
    return mnist


@lru_cache(maxsize=2)
def cached_test_set(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's 10,000 test images (uint8 (N, 28, 28)) and labels alone, memoized per path (read-only):
    a server that evaluates models keeps 8 MB of test set in memory, not the 55 MB of the whole file.

    Raises:
        DataError: as ``load_mnist``.
    """
    mnist = load_mnist(Path(path) if path else None)
    for arr in (mnist.x_test, mnist.y_test):
        arr.setflags(write=False)
    return mnist.x_test, mnist.y_test


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, 28, 28) in 0..255 -> float32 (N, 28, 28, 1) in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"Expected images of shape (N, 28, 28), got {images.shape}.")
    return (images.astype(np.float32) / 255.0)[..., None]


@dataclass(frozen=True)
class Split:
    """Training arrays ready for a model: x float32 (N, 28, 28, 1) in [0, 1], y uint8 (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def training_split(
    mnist: Mnist, *, train_size: int | None = None, val_fraction: float = 0.1, seed: int = 0
) -> Split:
    """Shuffle the training set, keep ``train_size`` images, hold out ``val_fraction`` for validation.

    Args:
        mnist: the loaded data set.
        train_size: how many training images to use (validation included); None for all 60,000.
        val_fraction: share held out for validation, in [0, 0.5].
        seed: shuffling seed.

    Raises:
        ValueError: a size or fraction out of range.
    """
    n = len(mnist.y_train)
    train_size = n if train_size is None else int(train_size)
    if not 100 <= train_size <= n:
        raise ValueError(f"train_size must be between 100 and {n}, got {train_size}.")
    if not 0.0 <= val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be between 0 and 0.5, got {val_fraction}.")
    order = np.random.default_rng(seed).permutation(n)[:train_size]
    n_val = int(round(train_size * val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Split(
        to_model_input(mnist.x_train[train_idx]), mnist.y_train[train_idx],
        to_model_input(mnist.x_train[val_idx]), mnist.y_train[val_idx],
        to_model_input(mnist.x_test), mnist.y_test,
    )
