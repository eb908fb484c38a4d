""""Not a digit": flag a blank, a letter, a scribble or a photo of a shoe instead of reading it.

A classifier trained on MNIST gives one of ten answers for anything, often with high confidence.
This detector scores each input with a small learned head (one hidden layer of 32 ReLUs) whose
inputs are:

1. the served model's penultimate-layer features (the input of its final "probabilities" layer),
   their Mahalanobis distance to the nearest class mean (class-conditional Gaussians with a
   shared covariance, fitted on MNIST training digits) and the model's top probability;
2. a model-independent shape descriptor of the 28x28 input (histograms of stroke orientations in
   a 4x4 grid + a 7x7 thumbnail) and its likelihood under per-class Gaussians fitted on MNIST
   (through each class's `SHAPE_RANK` lowest-variance directions, where non-digits stand out);
3. simple ink statistics (how much of the ink is solid, solid inside, mid-grey; stroke width).

The head is trained to tell MNIST training digits (as stored, and through
`preprocess.to_mnist` as the read path sees them) from synthetic non-digits generated on the fly
(`synthetic_non_digits`: letters rendered from the machine's fonts, scribbles, random strokes,
geometric shapes, filled and shaded blobs, textures), each both preprocessed as the read path
does and as a raw 28x28 input. Its decision threshold is a high quantile (`HELD_OUT_QUANTILE`)
of its scores on held-out MNIST training digits, given both directly and through
`preprocess.to_mnist`: by construction about 0.5% of real digits are flagged. Nothing here was
fitted or tuned on Fashion-MNIST or any other real non-digit data set.

The fitted statistics are plain numpy arrays (`NoveltyDetector.to_arrays`), stored next to the
model in the store as ``NAME.novelty.npz`` (`sidecar_path`) and tied to the model's weights by a
fingerprint; `load_or_fit` fits them when missing or stale (seconds to tens of seconds on two
cores: ~21,000 model inputs, 3,000 preprocessed digits and 2,400 synthetic pictures), and
`ensure` does it ahead of time.
"""

from __future__ import annotations

import glob
import hashlib
import io
import logging
import math
import os
import time
import zipfile
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from core import kernels
from core.store import NOVELTY_SUFFIX, _atomic_write_bytes

log = logging.getLogger(__name__)

# 2: the shape likelihood uses each class's SHAPE_RANK strongest precision directions (1: all).
FORMAT_VERSION = 2
SIDECAR_SUFFIX = NOVELTY_SUFFIX  # the store owns the file layout

# Fitting. Sizes keep a lazy fit to seconds on two CPU cores.
N_FIT = 10_000  # MNIST training digits for the Gaussians and the head's positive examples
N_HELD = 2_000  # held-out MNIST training digits (not used to fit anything) for the threshold...
N_HELD_READ = 1_000  # ...and 1,000 through preprocess.to_mnist (the read path)
N_FIT_READ = 2_000  # more training digits through preprocess.to_mnist, as positives for the head
N_NEGATIVE = 2_400  # synthetic pictures, each preprocessed and raw: the head's negatives
HELD_OUT_QUANTILE = 0.995  # share of held-out digits below the threshold
COVARIANCE_SHRINK = 1e-2  # ridge, as a share of the mean variance, for the feature covariance
SHAPE_SHRINK = 0.05  # the same for the per-class shape covariances
SHAPE_RANK = 48  # directions of each class's shape precision the shape likelihood uses
HEAD_HIDDEN = 32
INPUT_CLIP = 10.0  # standardized head inputs are clipped here (features never active on digits)
HEAD_EPOCHS = 10
HEAD_BATCH = 256
HEAD_LEARNING_RATE = 3e-3
HEAD_WEIGHT_DECAY = 1e-4
SEED = 0
NUMPY_BATCH = 32  # batches up to this size run in numpy (no TensorFlow call overhead)

# Shape descriptor: orientation histograms over a CELLS x CELLS grid plus a THUMB x THUMB thumbnail.
ORIENTATIONS = 8
CELLS = 4
THUMB = 7
SHAPE_DIM = CELLS * CELLS * ORIENTATIONS + THUMB * THUMB


class NoveltyError(RuntimeError):
    """The detector cannot be built for this model (e.g. no dense layer before the output)."""


# --------------------------------------------------------------------------------------------
# Descriptors
# --------------------------------------------------------------------------------------------


# Per-pixel offsets of its cell's histogram in an image's descriptor.
_CELL_OFFSET = (((np.arange(28) // (28 // CELLS))[:, None] * CELLS + (np.arange(28) // (28 // CELLS))[None, :])
                .reshape(1, 784).astype(np.intp) * ORIENTATIONS)
_BINS_PER_RADIAN = np.float32(ORIENTATIONS / np.pi)


def shape_descriptor(x: np.ndarray) -> np.ndarray:
    """A model-independent shape descriptor of MNIST-style inputs.

    Histograms of gradient orientation (8 unsigned orientations, magnitude-weighted, linearly
    interpolated between neighbouring bins) in a 4x4 grid of 7x7-pixel cells, normalized to sum
    1 and square-rooted (Hellinger), followed by the 7x7 thumbnail (4x4 block means).

    Args:
        x: float32 (N, 28, 28) or (N, 28, 28, 1) inputs in [0, 1].

    Returns:
        float32 (N, 177) descriptors.
    """
    x = np.asarray(x, np.float32).reshape(-1, 28, 28)
    jit = kernels.get()
    if jit is not None:
        return jit.shape_descriptors(x, CELLS, ORIENTATIONS, THUMB, _BINS_PER_RADIAN)
    n = len(x)
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    np.subtract(x[:, :, 2:], x[:, :, :-2], out=gx[:, :, 1:-1])
    np.subtract(x[:, 2:], x[:, :-2], out=gy[:, 1:-1])
    magnitude = np.sqrt(gx * gx + gy * gy).reshape(n, 784)
    # The angle in bins, in [-8, 8]: the bin indices are taken modulo 8 (``& 7``) below, which
    # folds the half turn (unsigned orientation) without a float modulo (the slowest step).
    position = (np.arctan2(gy, gx) * _BINS_PER_RADIAN).reshape(n, 784)
    low = np.floor(position)
    upper = position - low  # share of the upper bin
    upper *= magnitude
    magnitude -= upper  # now the lower bin's share of the magnitude
    low = low.astype(np.intp)
    per_image = CELLS * CELLS * ORIENTATIONS
    base = np.arange(n, dtype=np.intp)[:, None] * per_image + _CELL_OFFSET
    size = n * per_image
    hist = np.bincount((base + (low & (ORIENTATIONS - 1))).ravel(), magnitude.ravel(), size)
    hist += np.bincount((base + ((low + 1) & (ORIENTATIONS - 1))).ravel(), upper.ravel(), size)
    hist = hist.reshape(n, -1).astype(np.float32)
    out = np.empty((n, SHAPE_DIM), np.float32)
    np.sqrt(hist / (hist.sum(axis=1, keepdims=True) + np.float32(1e-6)), out=out[:, : hist.shape[1]])
    step = 28 // THUMB
    out[:, hist.shape[1]:] = x.reshape(n, THUMB, step, THUMB, step).mean(axis=(2, 4)).reshape(n, -1)
    return out


def ink_statistics(x: np.ndarray) -> np.ndarray:
    """Simple statistics of the ink that tell strokes from filled or shaded areas.

    Args:
        x: float32 (N, 28, 28) or (N, 28, 28, 1) inputs in [0, 1].

    Returns:
        float32 (N, 6): log total ink, share of the inked pixels (> 0.15) that are solid (> 0.5),
        share that are solid inside (solid with four solid neighbours), share that are mid-grey
        (0.15-0.85), log mean stroke width (twice the ink over its total variation), and share of
        the frame inked.
    """
    x = np.asarray(x, np.float32).reshape(-1, 28, 28)
    jit = kernels.get()
    if jit is not None:
        return jit.ink_statistics(x)
    inked = x > 0.15
    solid = x > 0.5
    count = np.maximum(np.count_nonzero(inked, axis=(1, 2)), 1).astype(np.float32)
    inside = solid[:, 1:-1, 1:-1] & solid[:, :-2, 1:-1]
    inside &= solid[:, 2:, 1:-1]
    inside &= solid[:, 1:-1, :-2]
    inside &= solid[:, 1:-1, 2:]
    inked &= x < 0.85  # now: mid-grey
    mass = x.sum(axis=(1, 2))
    variation = np.abs(x[:, 1:] - x[:, :-1]).sum(axis=(1, 2)) + np.abs(x[:, :, 1:] - x[:, :, :-1]).sum(axis=(1, 2))
    out = np.empty((len(x), 6), np.float32)
    out[:, 0] = np.log(mass + 1.0)
    out[:, 1] = np.count_nonzero(solid, axis=(1, 2)) / count
    out[:, 2] = np.count_nonzero(inside, axis=(1, 2)) / count
    out[:, 3] = np.count_nonzero(inked, axis=(1, 2)) / count
    out[:, 4] = np.log(2.0 * mass / np.maximum(variation, 1e-3) + 0.1)
    out[:, 5] = count / (28 * 28)
    return out


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoveltyDetector:
    """Fitted "not a digit" detector; every field is a plain numpy array (see `to_arrays`).

    Attributes:
        class_means: float64 (10, D) class means of the penultimate features.
        whiten: float64 (D, D) matrix W with W W^T = inverse shared covariance.
        shape_means: float64 (10, 177) per-class means of `shape_descriptor`.
        shape_precisions: float64 (10, 177, 177) per-class inverse covariances.
        shape_logdets: float64 (10,) per-class log-determinants of the covariances.
        input_mean, input_scale: float32 (H,) standardization of the head's inputs.
        w1, b1, w2, b2: the head: logit = relu(z @ w1 + b1) @ w2 + b2 (higher: less digit-like).
        threshold: float64 () logit above which an input is flagged.
        fingerprint: str () the model weights' fingerprint (`weights_fingerprint`).
        held_out_flagged: float64 () share of held-out MNIST digits flagged at fit time.
    """

    class_means: np.ndarray
    whiten: np.ndarray
    shape_means: np.ndarray
    shape_precisions: np.ndarray
    shape_logdets: np.ndarray
    input_mean: np.ndarray
    input_scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    threshold: np.ndarray
    fingerprint: np.ndarray
    held_out_flagged: np.ndarray

    def head_inputs(self, features: np.ndarray, probs: np.ndarray, x28: np.ndarray) -> np.ndarray:
        """The head's raw inputs, float32 (N, D + 186): features (D), log feature distance,
        log(1 - top probability), shape NLL, the shape descriptor (177) and the ink statistics (6)."""
        features = np.asarray(features, np.float32)
        n, dim = features.shape
        descriptor = shape_descriptor(x28)
        z = np.empty((n, dim + 3 + SHAPE_DIM + 6), np.float32)
        z[:, :dim] = features
        z[:, dim] = np.log(self._min_distance(features) + np.float32(1e-6))
        z[:, dim + 1] = np.log(np.clip(1.0 - np.asarray(probs, np.float32).max(axis=1), 0.0, 1.0) + np.float32(1e-6))
        z[:, dim + 2] = np.clip(self._shape_nll(descriptor), -2000.0, 5000.0)
        z[:, dim + 3:dim + 3 + SHAPE_DIM] = descriptor
        z[:, dim + 3 + SHAPE_DIM:] = ink_statistics(x28)
        return z

    def scores(self, features: np.ndarray, probs: np.ndarray, x28: np.ndarray) -> np.ndarray:
        """Novelty scores (head logits minus the threshold): above 0 means "probably not a digit".

        Args:
            features: float32 (N, D) penultimate-layer features of the served model.
            probs: float32 (N, 10) the model's probabilities.
            x28: float32 (N, 28, 28[, 1]) the model inputs in [0, 1].

        Returns:
            float64 (N,) scores.

        Raises:
            ValueError: inputs whose sizes do not match the fitted detector.
        """
        z = self.head_inputs(features, probs, x28)
        if z.shape[1] != self.input_mean.shape[0]:
            raise ValueError(f"Expected {self.input_mean.shape[0]} detector inputs per image, got {z.shape[1]}; "
                             "the detector was fitted for another model.")
        z = np.clip((z - self.input_mean) / self.input_scale, -INPUT_CLIP, INPUT_CLIP)
        hidden = np.maximum(z @ self.w1 + self.b1, 0.0)
        return (hidden @ self.w2 + self.b2).astype(np.float64) - float(self.threshold)

    @cached_property
    def _shape_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Each class's precision P_k through its SHAPE_RANK strongest directions, G_k G_k^T ~ P_k
        (the eigenvectors of the largest eigenvalues, scaled by their square roots), side by side
        (177, 10 * SHAPE_RANK), and the means through them: one float32 product scores all ten
        classes. These are the directions in which a class's digits vary least, where a non-digit
        stands out most; the rest adds little and would be 3.7x the memory, which every reading
        streams through the cache."""
        factors, offsets = [], []
        for mean, precision in zip(self.shape_means, self.shape_precisions):
            values, vectors = np.linalg.eigh(np.asarray(precision, np.float64))  # ascending
            top = vectors[:, -SHAPE_RANK:] * np.sqrt(np.maximum(values[-SHAPE_RANK:], 0.0))[None, :]
            factors.append(top)
            offsets.append(np.asarray(mean, np.float64) @ top)
        return np.concatenate(factors, axis=1).astype(np.float32), np.concatenate(offsets).astype(np.float32)

    def _shape_nll(self, descriptor: np.ndarray) -> np.ndarray:
        """Smallest over classes of (z - mean_k)^T P_k (z - mean_k) + log det(covariance_k)."""
        factors, offsets = self._shape_factors
        u = np.asarray(descriptor, np.float32) @ factors - offsets
        per_class = (u * u).reshape(len(u), len(self.shape_logdets), -1).sum(axis=2, dtype=np.float64)
        return (per_class + np.asarray(self.shape_logdets, np.float64)).min(axis=1)

    @cached_property
    def _distance_projection(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 [W | -2 W M^T] (D, D + 10) and the squared norms of the whitened means M W (10,):
        one product gives the whitened features and their cross terms with every class mean."""
        whiten = np.asarray(self.whiten, np.float64)
        whitened_means = np.asarray(self.class_means, np.float64) @ whiten
        projection = np.concatenate([whiten, -2.0 * whiten @ whitened_means.T], axis=1)
        return projection.astype(np.float32), (whitened_means**2).sum(axis=1).astype(np.float32)

    def _min_distance(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each feature vector to the nearest class mean (shared covariance)."""
        projection, mean_norms = self._distance_projection
        dim = projection.shape[0]
        y = np.asarray(features, np.float32) @ projection
        whitened = y[:, :dim]
        distances = (whitened * whitened).sum(axis=1, keepdims=True) + y[:, dim:] + mean_norms
        return np.maximum(distances.min(axis=1), 0.0)

    def is_digit(self, features: np.ndarray, probs: np.ndarray, x28: np.ndarray) -> np.ndarray:
        """bool (N,): True where the input looks like a digit (score <= 0); see `scores`."""
        return self.scores(features, probs, x28) <= 0.0

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {name: np.asarray(getattr(self, name)) for name in self.__dataclass_fields__}
        arrays["format_version"] = np.asarray(FORMAT_VERSION)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "NoveltyDetector":
        """Rebuild from `to_arrays` output.

        Raises:
            NoveltyError: missing arrays or another format version.
        """
        version = int(arrays.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise NoveltyError(f"Detector file format {version}, expected {FORMAT_VERSION}.")
        missing = [name for name in cls.__dataclass_fields__ if name not in arrays]
        if missing:
            raise NoveltyError(f"Detector file lacks {missing}.")
        return cls(**{name: np.asarray(arrays[name]) for name in cls.__dataclass_fields__})

    def save(self, path: Path | str) -> None:
        """Write atomically (temporary file in the same folder, then ``os.replace``)."""
        buffer = io.BytesIO()
        np.savez(buffer, **self.to_arrays())
        _atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: Path | str) -> "NoveltyDetector":
        """Read a saved detector (``allow_pickle=False``).

        Raises:
            NoveltyError: the file is missing, corrupt or of another format.
        """
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise NoveltyError(f"Cannot read the detector file {path}: {exc}") from exc
        return cls.from_arrays(arrays)


# --------------------------------------------------------------------------------------------
# The served model's features
# --------------------------------------------------------------------------------------------


class FeatureRunner:
    """The model's penultimate-layer features and its probabilities, in one call.

    Small batches go through a numpy copy of the layers up to the features (`core.fastnet`, when
    it supports the model) and the final softmax layer in numpy: about as fast as the predictor's
    own numpy path. Larger batches (and models fastnet does not handle) go through one compiled
    TensorFlow call.

    Args:
        model: a Keras model whose output layer (named "probabilities" by `core.model`) takes a
            flat feature vector.

    Raises:
        NoveltyError: the model's output layer does not take a flat feature vector.
    """

    def __init__(self, model):
        import keras
        import tensorflow as tf

        try:
            head = model.get_layer("probabilities")
        except ValueError:
            head = model.layers[-1]
        features = head.input
        if isinstance(features, (list, tuple)) or len(features.shape) != 2:
            raise NoveltyError(f"Cannot take features from the input of layer {head.name!r}.")
        fm = keras.Model(model.inputs[0], [features, model.outputs[0]], name="novelty_features")
        self._call = tf.function(
            lambda t: fm(t, training=False),
            input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
            reduce_retracing=True,
        )
        self._call(np.zeros((1, 28, 28, 1), np.float32))  # trace once, up front
        self._numpy = None
        if isinstance(head, keras.layers.Dense) and getattr(head.activation, "__name__", "") == "softmax":
            from core.fastnet import compile_numpy

            trunk = compile_numpy(keras.Model(model.inputs[0], features))
            if trunk is not None:
                kernel = np.asarray(head.kernel, np.float32)
                bias = np.asarray(head.bias, np.float32) if head.bias is not None else np.zeros(kernel.shape[1], np.float32)
                self._numpy = (trunk, kernel, bias)

    def __call__(self, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(features float32 (N, D), probabilities float32 (N, 10)) for (N, 28, 28[, 1]) inputs in [0, 1]."""
        x = np.asarray(x, np.float32).reshape(-1, 28, 28, 1)
        if self._numpy is not None and len(x) <= NUMPY_BATCH:
            trunk, kernel, bias = self._numpy
            features = np.asarray(trunk(x), np.float32)
            logits = features @ kernel + bias
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            return features, (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        chunks = [[t.numpy() for t in self._call(x[i:i + batch_size])] for i in range(0, len(x), batch_size)]
        if not chunks:
            return np.zeros((0, 0), np.float32), np.zeros((0, 10), np.float32)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def weights_fingerprint(model) -> str:
    """SHA-256 over the model's weights (shapes and bytes): ties a detector file to its model."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        w = np.ascontiguousarray(w)
        digest.update(str(w.shape).encode())
        digest.update(w.tobytes())
    return digest.hexdigest()


def sidecar_path(keras_path: Path | str) -> Path:
    """``NAME.novelty.npz`` next to ``NAME.keras`` (not listed by the store: it lists .json/.keras)."""
    keras_path = Path(keras_path)
    return keras_path.with_name(keras_path.stem + SIDECAR_SUFFIX)


# --------------------------------------------------------------------------------------------
# Synthetic non-digits
# --------------------------------------------------------------------------------------------

# Characters that do not look like a digit (no O, o, I, l, S, s, Z, z, B, G, b, g, q, T...).
NON_DIGIT_CHARS = "ACEFHKMNPRUVWXYacdefhkmnprtuvwxy#@%&*+=<>{}"
FAMILIES = ("letter", "scribble", "strokes", "shape", "blob", "texture")
_CANVAS = 64


@lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """TrueType/OpenType fonts installed on this machine (sorted, so runs repeat)."""
    found = set()
    for root in ("/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts")):
        for pattern in ("**/*.ttf", "**/*.otf"):
            found.update(glob.glob(os.path.join(root, pattern), recursive=True))
    return tuple(sorted(found))


@lru_cache(maxsize=256)
def _font(path: str, size: int):
    return ImageFont.truetype(path, size)


def _letter(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    char = NON_DIGIT_CHARS[int(rng.integers(len(NON_DIGIT_CHARS)))]
    fonts = font_files()
    size = int(rng.integers(24, 44))
    font = _font(fonts[int(rng.integers(len(fonts)))], size) if fonts else ImageFont.load_default()
    draw.text((int(rng.integers(4, 16)), int(rng.integers(0, 10))), char, fill=255, font=font)
    return np.asarray(image)


def _scribble(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    position, angle, points = rng.uniform(20, 44, 2), rng.uniform(0, 2 * np.pi), []
    for _ in range(int(rng.integers(15, 60))):
        angle += rng.normal(0, 0.8)
        position = np.clip(position + 4 * np.array([np.cos(angle), np.sin(angle)]), 5, _CANVAS - 5)
        points.append(tuple(position))
    ImageDraw.Draw(image).line(points, fill=255, width=int(rng.integers(2, 6)), joint="curve")
    return np.asarray(image)


def _strokes(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        draw.line([tuple(rng.uniform(5, _CANVAS - 5, 2)), tuple(rng.uniform(5, _CANVAS - 5, 2))],
                  fill=255, width=int(rng.integers(2, 6)))
    return np.asarray(image)


def _shape(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    kind, width = int(rng.integers(5)), int(rng.integers(2, 6))
    fill = 255 if rng.random() < 0.5 else None
    x0, y0 = rng.uniform(4, 30, 2)
    box = [x0, y0, x0 + rng.uniform(14, _CANVAS - 4 - x0), y0 + rng.uniform(14, _CANVAS - 4 - y0)]
    if kind == 0:
        draw.rectangle(box, outline=255, fill=fill, width=width)
    elif kind == 1:
        draw.ellipse(box, outline=255, fill=fill, width=width)
    else:
        corners = (3, 5, 6)[kind - 2]
        star = kind == 3 and rng.random() < 0.5
        count = corners * (2 if star else 1)
        centre, radius, turn = rng.uniform(24, 40, 2), rng.uniform(14, 27), rng.uniform(0, 1)
        points = [(centre[0] + radius * (0.45 if star and i % 2 else 1) * np.cos(2 * np.pi * i / count + turn),
                   centre[1] + radius * (0.45 if star and i % 2 else 1) * np.sin(2 * np.pi * i / count + turn))
                  for i in range(count)]
        draw.polygon(points, outline=255, fill=fill, width=width)
    return np.asarray(image)


def _blob(rng: np.random.Generator) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.normal(size=(32, 32)), rng.uniform(3, 7))
    yy, xx = np.mgrid[0:32, 0:32]
    values = noise / (noise.std() + 1e-9) + 2.5 * np.exp(-(((yy - 15.5) / 11) ** 2 + ((xx - 15.5) / 11) ** 2))
    mask = values > np.percentile(values, rng.uniform(60, 85))
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum_labels(mask, labels, np.arange(1, count + 1))))
    out = mask * rng.uniform(120, 255)
    if rng.random() < 0.5:  # shaded, like a photo of an object
        out = out * np.clip(0.6 + 2.0 * ndimage.gaussian_filter(rng.normal(size=(32, 32)), 2), 0.2, 1.0)
    big = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).resize((_CANVAS, _CANVAS), Image.Resampling.BILINEAR)
    return np.asarray(big)


def _texture(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
        values = (np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * freq) > 0) * 255.0
    elif kind == 1:
        step = int(rng.integers(3, 13))
        values = (((xx // step) + (yy // step)) % 2) * 255.0
    elif kind == 2:
        values = np.clip(ndimage.gaussian_filter(rng.normal(size=(_CANVAS, _CANVAS)), rng.uniform(0.5, 1.5)) * 400 + 128, 0, 255)
    else:
        values = rng.uniform(0, 255, (_CANVAS, _CANVAS))
    mask = np.zeros((_CANVAS, _CANVAS), np.float32)
    (r0, c0), (r1, c1) = rng.integers(3, 20, 2), rng.integers(44, 61, 2)
    mask[r0:r1, c0:c1] = 1
    return (values * mask).astype(np.uint8)


_GENERATORS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "letter": _letter, "scribble": _scribble, "strokes": _strokes, "shape": _shape, "blob": _blob,
    "texture": _texture,
}


def synthetic_image(family: str, rng: np.random.Generator) -> np.ndarray:
    """One synthetic non-digit picture: uint8 (64, 64), bright on black.

    Args:
        family: one of `FAMILIES`.
        rng: the randomness.

    Raises:
        ValueError: an unknown family.
    """
    if family not in _GENERATORS:
        raise ValueError(f"Unknown family {family!r}; expected one of {FAMILIES}.")
    return _GENERATORS[family](rng)


def synthetic_non_digits(count: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic non-digits as model inputs: `count` pictures, the families in turn, each given twice.

    Once preprocessed exactly as the read path does (`preprocess.to_mnist`: cropped, fitted into
    20x20, strokes normalized, centred; skipped when it finds no ink) and once as the whole
    picture shrunk to 28x28 (a raw model input).

    Args:
        count: how many pictures to make.
        seed: seeds the generator; the same seed gives the same images.

    Returns:
        (x, families): float32 (M, 28, 28) in [0, 1], M <= 2 * count, and str (M,) family names.
    """
    from core import preprocess

    rng = np.random.default_rng(seed)
    images, families = [], []
    for i in range(int(count)):
        family = FAMILIES[i % len(FAMILIES)]
        picture = synthetic_image(family, rng)
        try:
            images.append(preprocess.to_mnist(picture))
            families.append(family)
        except preprocess.NoDigitError:
            pass
        shrunk = Image.fromarray(picture).resize((28, 28), Image.Resampling.BOX)
        images.append(np.asarray(shrunk, np.float32) / np.float32(255.0))
        families.append(family)
    if not images:
        return np.zeros((0, 28, 28), np.float32), np.zeros((0,), str)
    return np.stack(images).astype(np.float32), np.asarray(families)


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def _class_gaussians(z: np.ndarray, y: np.ndarray, shrink: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    means, precisions, logdets = [], [], []
    for k in range(10):
        zk = z[y == k]
        cov = np.cov(zk.T)
        cov += shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
        means.append(zk.mean(axis=0))
        precisions.append(np.linalg.inv(cov))
        logdets.append(np.linalg.slogdet(cov)[1])
    return np.stack(means), np.stack(precisions), np.asarray(logdets)


def _shared_gaussian(f: np.ndarray, y: np.ndarray, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    means = np.stack([f[y == k].mean(axis=0) for k in range(10)])
    centred = f - means[y]
    cov = centred.T @ centred / len(f)
    cov += shrink * max(np.trace(cov) / len(cov), 1e-12) * np.eye(len(cov))
    # W W^T = cov^-1 via the eigendecomposition (cov is symmetric positive definite).
    values, vectors = np.linalg.eigh(cov)
    return means, vectors / np.sqrt(values)[None, :]


def _train_head(z: np.ndarray, target: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """One-hidden-layer ReLU net by Adam on class-balanced logistic loss (numpy, deterministic)."""
    rng = np.random.default_rng(seed)
    weight = np.where(target == 1, 0.5 / max(1, int(target.sum())), 0.5 / max(1, int((1 - target).sum())))
    weight = (weight * len(z)).astype(np.float32)
    dim = z.shape[1]
    params = [rng.normal(0, 1 / math.sqrt(dim), (dim, HEAD_HIDDEN)).astype(np.float32),
              np.zeros(HEAD_HIDDEN, np.float32),
              rng.normal(0, 1 / math.sqrt(HEAD_HIDDEN), HEAD_HIDDEN).astype(np.float32),
              np.zeros((), np.float32)]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    step = 0
    for _ in range(HEAD_EPOCHS):
        for batch in np.array_split(rng.permutation(len(z)), max(1, len(z) // HEAD_BATCH)):
            x, t, w = z[batch], target[batch], weight[batch]
            hidden = np.maximum(x @ params[0] + params[1], 0)
            logit = hidden @ params[2] + params[3]
            g = (1 / (1 + np.exp(-logit)) - t) * w / len(batch)
            g_hidden = np.outer(g, params[2]) * (hidden > 0)
            grads = [x.T @ g_hidden + HEAD_WEIGHT_DECAY * params[0], g_hidden.sum(axis=0),
                     hidden.T @ g + HEAD_WEIGHT_DECAY * params[2], g.sum()]
            step += 1
            for i, grad in enumerate(grads):
                first[i] = 0.9 * first[i] + 0.1 * grad
                second[i] = 0.999 * second[i] + 0.001 * grad * grad
                update = (first[i] / (1 - 0.9**step)) / (np.sqrt(second[i] / (1 - 0.999**step)) + 1e-8)
                params[i] = (params[i] - HEAD_LEARNING_RATE * update).astype(np.float32)
    return tuple(params)


def fit_detector(runner: Callable, fingerprint: str = "", *, seed: int = SEED) -> NoveltyDetector:
    """Fit the detector for one model on MNIST training digits and synthetic non-digits.

    Args:
        runner: ``runner(x) -> (features, probs)`` for float32 (N, 28, 28, 1)
            inputs in [0, 1], e.g. a `FeatureRunner`.
        fingerprint: the model's `weights_fingerprint`, stored with the detector.
        seed: seeds the choice of digits and the synthetic images.

    Returns:
        The fitted `NoveltyDetector`.
    """
    from core import preprocess
    from core.data import cached_mnist

    t0 = time.perf_counter()
    mnist = cached_mnist()
    order = np.random.default_rng(seed).permutation(len(mnist.y_train))
    fit_idx = order[:N_FIT]
    held_idx = order[N_FIT:N_FIT + N_HELD]
    read_idx = order[N_FIT + N_HELD:N_FIT + N_HELD + N_HELD_READ]
    x_fit = mnist.x_train[fit_idx].astype(np.float32) / np.float32(255.0)
    y_fit = mnist.y_train[fit_idx].astype(np.int64)
    x_held = mnist.x_train[held_idx].astype(np.float32) / np.float32(255.0)
    pos_read_idx = order[N_FIT + N_HELD + N_HELD_READ:N_FIT + N_HELD + N_HELD_READ + N_FIT_READ]
    x_read = np.stack([preprocess.to_mnist(img) for img in mnist.x_train[read_idx]])
    x_pos_read = np.stack([preprocess.to_mnist(img) for img in mnist.x_train[pos_read_idx]])
    x_neg, _ = synthetic_non_digits(N_NEGATIVE, seed=seed + 1)

    f_fit, prob_fit = runner(x_fit)
    means, whiten = _shared_gaussian(f_fit.astype(np.float64), y_fit, COVARIANCE_SHRINK)
    shape_means, shape_precisions, shape_logdets = _class_gaussians(
        shape_descriptor(x_fit).astype(np.float64), y_fit, SHAPE_SHRINK)
    empty = np.zeros(0)
    partial = NoveltyDetector(means, whiten, shape_means, shape_precisions, shape_logdets, empty, empty,
                              empty, empty, empty, empty, np.asarray(0.0), np.asarray(fingerprint), np.asarray(0.0))
    z_fit = partial.head_inputs(f_fit, prob_fit, x_fit)
    z_pos = np.concatenate([z_fit, partial.head_inputs(*runner(x_pos_read), x_pos_read)])
    z_neg = partial.head_inputs(*runner(x_neg), x_neg)
    mean, scale = z_fit.mean(axis=0), z_fit.std(axis=0) + np.float32(1e-3)
    z = np.clip((np.concatenate([z_pos, z_neg]) - mean) / scale, -INPUT_CLIP, INPUT_CLIP)
    target = np.concatenate([np.zeros(len(z_pos)), np.ones(len(z_neg))]).astype(np.float32)
    w1, b1, w2, b2 = _train_head(z.astype(np.float32), target, seed)
    detector = NoveltyDetector(means, whiten, shape_means, shape_precisions, shape_logdets, mean, scale,
                               w1, b1, w2, b2, np.asarray(0.0), np.asarray(fingerprint), np.asarray(0.0))
    held = np.concatenate([detector.scores(*runner(x_held), x_held), detector.scores(*runner(x_read), x_read)])
    threshold = float(np.quantile(held, HELD_OUT_QUANTILE))
    flagged = float(np.mean(held > threshold))
    log.info("Fitted the not-a-digit detector in %.1f s (threshold %.3f, %.2f%% of held-out digits flagged).",
             time.perf_counter() - t0, threshold, 100 * flagged)
    return NoveltyDetector(means, whiten, shape_means, shape_precisions, shape_logdets, mean, scale,
                           w1, b1, w2, b2, np.asarray(threshold), np.asarray(fingerprint), np.asarray(flagged))


def load_or_fit(model, runner: Callable | None = None, *, path: Path | str | None = None,
                save: bool = True) -> NoveltyDetector:
    """The model's detector: read from ``path`` when it was fitted for these weights, else fitted.

    A freshly fitted detector is written to ``path`` (atomically) when there is no file there, or
    when the file there is older than the model file beside it (a model saved again under the same
    name). A newer file for other weights is left alone: it belongs to another model of that name.

    Args:
        model: the Keras model.
        runner: its `FeatureRunner` (built when None).
        path: the sidecar file (``NAME.novelty.npz``); None: fit in memory only.
        save: allow writing the file; a failed write is logged, not raised.

    Returns:
        The `NoveltyDetector`.

    Raises:
        NoveltyError: the model has no usable feature layer.
    """
    fingerprint = weights_fingerprint(model)
    path = Path(path) if path is not None else None
    writable = path is not None and save
    if path is not None and path.is_file():
        try:
            detector = NoveltyDetector.load(path)
        except NoveltyError as exc:
            log.warning("%s Fitting it again.", exc)  # corrupt or old format: replace it
        else:
            if str(detector.fingerprint) == fingerprint:
                return detector
            log.info("The detector file %s was fitted for other weights.", path)
            model_file = path.with_name(path.name[: -len(SIDECAR_SUFFIX)] + ".keras")
            try:
                writable = writable and model_file.stat().st_mtime_ns >= path.stat().st_mtime_ns
            except OSError:
                writable = False
    runner = runner or FeatureRunner(model)
    detector = fit_detector(runner, fingerprint)
    if writable:
        try:
            detector.save(path)
        except OSError as exc:
            log.warning("Could not save the detector to %s (%s); it stays in memory.", path, exc)
    return detector


def ensure(name: str, store=None) -> Path:
    """Fit and save the detector of a stored model now (e.g. right after training or for the
    shipped model), so the first prediction does not wait for it.

    Args:
        name: the model's name in the store.
        store: a `core.store.ModelStore` (default: the configured one).

    Returns:
        The sidecar file's path.

    Raises:
        core.store.StoreError: unknown or unloadable model.
    """
    from core.store import ModelStore

    store = store or ModelStore()
    path = sidecar_path(store.keras_path(name))
    load_or_fit(store.load(name), path=path)
    return path
