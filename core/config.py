"""Paths and constants, anchored at the repository root and overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Bundled MNIST (Keras' mnist.npz layout) and its recorded checksum.
BUNDLED_MNIST = ROOT / "data" / "mnist.npz"
BUNDLED_MNIST_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
# Point at another mnist.npz in the same layout, e.g. the Keras cache (~/.keras/datasets/mnist.npz).
MNIST_PATH_ENV = "DIGITS_MNIST_PATH"

MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

# Model store: the shipped default lives here; user-trained models land beside it (not committed).
MODELS_DIR_ENV = "DIGITS_MODELS_DIR"
ACTIVE_MODEL_ENV = "DIGITS_ACTIVE_MODEL"
DEFAULT_MODEL_NAME = "default-cnn"
# User-trained models kept at most; the oldest non-default ones are removed first.
MAX_USER_MODELS_ENV = "DIGITS_MAX_USER_MODELS"
MAX_USER_MODELS_DEFAULT = 20

# App data (corrections database and the like).
APP_DATA_DIR_ENV = "DIGITS_DATA_DIR"

IMAGE_SIZE = 28
NUM_CLASSES = 10

# How long the Draw page's canvas waits after a stroke before it sends the drawing (ms). The canvas
# component as shipped waits a fixed 200 ms (to merge events that end one gesture); "shipped" (or
# any non-number) keeps it. The effect on stroke-to-answer time: bench/README.md (app_latency.py).
CANVAS_SEND_MS_ENV = "DIGITS_CANVAS_SEND_MS"
CANVAS_SEND_MS_DEFAULT = 5  # ms after a stroke


def models_dir() -> Path:
    """The model store's folder (``$DIGITS_MODELS_DIR`` or ``<repo>/models``)."""
    return Path(os.environ.get(MODELS_DIR_ENV) or ROOT / "models")


def app_data_dir() -> Path:
    """Folder for data the app writes at run time (``$DIGITS_DATA_DIR`` or ``<repo>/data/app``)."""
    return Path(os.environ.get(APP_DATA_DIR_ENV) or ROOT / "data" / "app")


def canvas_send_ms() -> int | None:
    """The Draw canvas's delay after a stroke (ms), or None for the component's shipped delay."""
    raw = os.environ.get(CANVAS_SEND_MS_ENV, "").strip()
    if not raw:
        return CANVAS_SEND_MS_DEFAULT
    try:
        return min(max(0, int(raw)), 5000)
    except ValueError:
        return None


def max_user_models() -> int:
    """Cap on user-trained models in the store."""
    try:
        return max(1, int(os.environ.get(MAX_USER_MODELS_ENV, MAX_USER_MODELS_DEFAULT)))
    except ValueError:
        return MAX_USER_MODELS_DEFAULT


# Training runs (core.learning.runs): an external Dask scheduler, or an embedded LocalCluster's size.
DASK_SCHEDULER_ENV = "DIGITS_DASK_SCHEDULER"  # tcp://host:8786; unset: an embedded LocalCluster
WORKERS_ENV = "DIGITS_WORKERS"  # LocalCluster worker processes (one run each at a time)
WORKERS_DEFAULT = 1  # one run at a time: on 2 cores a second would only halve both
WORKER_MEMORY_ENV = "DIGITS_WORKER_MEMORY"  # per worker: a number of bytes or "4GiB"
WORKER_MEMORY_DEFAULT = "4GiB"


def dask_workers() -> int:
    """Worker processes of the embedded cluster (1..64).

    Raises:
        ValueError: not a whole number in that range.
    """
    raw = os.environ.get(WORKERS_ENV, "").strip()
    workers = int(raw) if raw.isdigit() else (WORKERS_DEFAULT if not raw else -1)
    if not 1 <= workers <= 64:
        raise ValueError(f"{WORKERS_ENV}={raw!r}: use a whole number of workers from 1 to 64.")
    return workers


def worker_memory() -> str:
    """Memory limit of each embedded worker (Dask's format: bytes or "4GiB")."""
    return os.environ.get(WORKER_MEMORY_ENV, "").strip() or WORKER_MEMORY_DEFAULT
