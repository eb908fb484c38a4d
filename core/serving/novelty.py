""""Not a digit": how far an input's features lie from every digit the model learned.

A classifier trained on MNIST gives one of ten answers for anything. This detector looks at the
network's own features at every depth (`core.learning.model.feature_model`: each ReLU layer's output,
averaged over positions for convolution layers) and measures, layer by layer, the Mahalanobis
distance to the nearest digit class (class means with one shared covariance per layer, the
method of Lee et al., 2018, "A simple unified framework for detecting out-of-distribution
samples"). Early layers see strokes and texture (a shoe's solid leather, a sweater's knit), late
ones the digit's shape. The score adds the layers' log distances, each relative to its median on
digits; an input is "probably not a digit" when its score exceeds a high quantile
(`core.learning.detector.FIT_QUANTILE`) of the scores of held-out MNIST training digits, given clean and with the
training augmentation (low resolution, blur: the variation real inputs show).

Fitting sees digits only: no non-digit data set, real or generated, is used to fit or tune it.
It runs once, when a model is saved (`core.learning.detector.fit_detector`); the arrays are stored beside the
model as ``NAME.novelty.npz``. Serving only scores: numpy, a few small matrix products.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np


FORMAT_VERSION = 3  # 3: per-layer Mahalanobis distances over `core.learning.model.feature_model`'s features


class NoveltyError(ValueError):
    """A detector file that cannot be used (missing arrays, wrong shapes, another format)."""


@dataclass(frozen=True)
class NoveltyDetector:
    """A fitted "not a digit" detector; every field is a plain numpy array.

    Attributes:
        sizes: int (L,) feature count of each layer, in the order of the feature vector.
        means: float32 (10, D) class means, D = sizes.sum().
        whiten: float32 (D, D) block-diagonal: per layer, W with W W^T = inverse covariance.
        medians: float64 (L,) median squared distance of each layer on fitting digits.
        threshold: float64 () score above which an input is flagged.
    """

    sizes: np.ndarray
    means: np.ndarray
    whiten: np.ndarray
    medians: np.ndarray
    threshold: np.ndarray

    @cached_property
    def _layers(self) -> list[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
        """Per layer: its slice of the features, its whitening, and the whitened class means and
        their squared norms (computed once, not on every reading)."""
        layers, start = [], 0
        for size in self.sizes:
            block = slice(start, start + int(size))
            w = self.whiten[block, block]
            centres = self.means[:, block] @ w
            layers.append((block, w, centres.T.copy(), (centres * centres).sum(1)))
            start += int(size)
        return layers

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each input to the nearest class mean, layer by layer.

        Args:
            features: float32 (N, D) features of `core.learning.model.feature_model` for N inputs.

        Returns:
            float32 (N, L), at least 1e-9.

        Raises:
            ValueError: features of another width than the detector was fitted on.
        """
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.means.shape[1]:
            raise ValueError(f"Expected (N, {self.means.shape[1]}) features, got {features.shape}.")
        out = np.empty((len(features), len(self.sizes)), np.float32)
        for i, (block, w, centres_t, norms) in enumerate(self._layers):
            z = features[:, block] @ w
            nearest = ((z * z).sum(1)[:, None] - 2.0 * z @ centres_t + norms[None, :]).min(axis=1)
            out[:, i] = np.maximum(nearest, 1e-9)
        return out

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Novelty scores: above 0 means "probably not a digit".

        Args:
            features: float32 (N, D) features of `core.learning.model.feature_model` for N inputs.

        Returns:
            float64 (N,) sum over layers of log(distance / median), minus the threshold.

        Raises:
            ValueError: features of another width than the detector was fitted on.
        """
        return np.log(self.distances(features) / self.medians).sum(axis=1) - float(self.threshold)

    def is_digit(self, features: np.ndarray) -> np.ndarray:
        """bool (N,): True where the input looks like a digit (score at most 0)."""
        return self.scores(features) <= 0.0

    def to_bytes(self) -> bytes:
        """The detector as an ``.npz`` file's bytes (no pickled objects)."""
        buffer = io.BytesIO()
        np.savez(buffer, format=np.int64(FORMAT_VERSION), sizes=self.sizes, means=self.means,
                 whiten=self.whiten, medians=self.medians, threshold=self.threshold)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "NoveltyDetector":
        """Read a detector written by `to_bytes`.

        Raises:
            NoveltyError: not such a file, another format version, or inconsistent shapes.
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                if int(npz["format"]) != FORMAT_VERSION:
                    raise NoveltyError(f"detector format {int(npz['format'])}, expected {FORMAT_VERSION}")
                detector = cls(npz["sizes"].astype(np.int64), npz["means"].astype(np.float32),
                               npz["whiten"].astype(np.float32), npz["medians"].astype(np.float64),
                               npz["threshold"].astype(np.float64))
        except NoveltyError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip, key and dtype errors of a damaged file
            raise NoveltyError(f"not a detector file ({type(exc).__name__}: {exc})") from exc
        dim = int(detector.sizes.sum())
        if (detector.means.shape != (10, dim) or detector.whiten.shape != (dim, dim)
                or detector.medians.shape != detector.sizes.shape or detector.threshold.shape != ()):
            raise NoveltyError("the detector's arrays do not fit together")
        return detector

    @classmethod
    def load(cls, path: Path | str) -> "NoveltyDetector":
        """Read a detector file.

        Raises:
            NoveltyError: unreadable or inconsistent file.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise NoveltyError(f"cannot read {path}: {exc.strerror or exc}") from exc
        return cls.from_bytes(data)
