"""Fast inference: a compiled call on a loaded model, never ``model.predict`` (tens of ms a call).

A ``Predictor`` wraps one model read-only; it is safe to share between threads (sessions).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.calibrate import apply_temperature, temperature_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """The answer for one image.

    Attributes:
        digit: 0..9, or None when no digit was found.
        confidence: probability of ``digit`` in [0, 1] (0 when no digit).
        probabilities: float32 (10,) summing to 1, or None when no digit.
        image: the float32 (28, 28) input in [0, 1] the model saw, or None.
        message: why there is no digit (e.g. "no digit found: ..."), else "".
        is_digit: False when the "not a digit" detector (`core.novelty`) says the image is
            probably not a digit (a letter, a scribble, a photo of a shoe) or when no digit was
            found; True otherwise, including when no detector is available.
    """

    digit: int | None
    confidence: float
    probabilities: np.ndarray | None = None
    image: np.ndarray | None = None
    message: str = ""
    is_digit: bool = True

    def to_json(self) -> dict:
        if self.digit is None:
            return {"digit": None, "message": self.message, "is_digit": False}
        return {"digit": self.digit, "confidence": round(float(self.confidence), 6),
                "probabilities": [round(float(p), 6) for p in self.probabilities],
                "is_digit": bool(self.is_digit)}


def _as_batch(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
        raise ValueError(f"Expected (28, 28), (N, 28, 28) or (N, 28, 28, 1) inputs, got {x.shape}.")
    return x


def batch_probabilities(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Probabilities (N, 10) for many images with a compiled call per chunk (no ``predict`` overhead)."""
    return Predictor(model, novelty=False).probabilities(x, batch_size=batch_size)


class Predictor:
    """Compiled, read-only inference on one Keras model: probabilities and the "not a digit"
    detector's features from one forward pass.

    Args:
        model: a Keras model mapping (N, 28, 28, 1) float32 in [0, 1] to (N, 10) probabilities.
        name: the store name, for display (and to find the model's detector file).
        meta: the model's store metadata (its calibration temperature).
        novelty: True to read the detector saved beside the model (``NAME.novelty.npz``, or
            `novelty_path`); False to switch it off; or a fitted `core.novelty.NoveltyDetector`.
            Without a detector every ``is_digit`` is True (a warning is logged once).
        novelty_path: the detector file to use instead of the store's.
    """

    def __init__(self, model, name: str = "", meta: dict | None = None, *, novelty=True,
                 novelty_path: str | Path | None = None):
        import tensorflow as tf

        from core.model import feature_model

        self.model = model
        self.name = name
        self.meta = meta or {}
        # Confidence calibration fitted at training time (core.calibrate); 1.0 leaves them as they are.
        self.temperature = temperature_of(self.meta)
        self.detector = self._detector(novelty, novelty_path)
        both = feature_model(model)[0] if self.detector is not None else None
        forward = both if both is not None else model
        self._call = tf.function(
            lambda t: forward(t, training=False),
            input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
            reduce_retracing=True,
        )
        self._call(np.zeros((1, 28, 28, 1), np.float32))  # trace once, up front

    def _detector(self, setting, path):
        from core.novelty import NoveltyDetector, NoveltyError, sidecar_path

        if setting is False or setting is None:
            return None
        if isinstance(setting, NoveltyDetector):
            return setting
        if path is None and self.name:
            from core.store import ModelStore, StoreError

            try:
                path = sidecar_path(ModelStore().keras_path(self.name))
            except StoreError:
                path = None
        if path is None:
            return None
        try:
            return NoveltyDetector.load(path)
        except NoveltyError as exc:
            log.warning("No \"not a digit\" detector for model %r (%s); every input counts as a digit.",
                        self.name or "(unnamed)", exc)
            return None

    def _forward(self, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N, 10), features (N, D) or None without a detector) for a (N, 28, 28, 1) batch."""
        chunks = [self._call(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        if self.detector is None:
            probs = [c.numpy() for c in chunks]
            return (np.concatenate(probs) if probs else np.zeros((0, 10), np.float32)), None
        if not chunks:
            return np.zeros((0, 10), np.float32), np.zeros((0, self.detector.means.shape[1]), np.float32)
        return (np.concatenate([c[0].numpy() for c in chunks]), np.concatenate([c[1].numpy() for c in chunks]))

    def probabilities(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """float32 (N, 10) probabilities for (N, 28, 28[, 1]) inputs in [0, 1]."""
        return self._forward(_as_batch(x), batch_size)[0]

    def _classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, 10), is_digit bool (N,)) for a (N, 28, 28, 1) batch, one model call."""
        probs, features = self._forward(batch)
        if features is None:
            return probs, np.ones(len(batch), bool)
        return probs, self.detector.is_digit(features)

    # --- predictions ----------------------------------------------------------------------------

    def predict_input(self, x28: np.ndarray) -> Prediction:
        """Classify one preprocessed (28, 28) float32 image."""
        return self.predict_inputs(np.asarray(x28, np.float32).reshape(1, 28, 28))[0]

    def predict_inputs(self, x: np.ndarray) -> list[Prediction]:
        """Classify several preprocessed images with one batched model call.

        Args:
            x: float32 (N, 28, 28) or (N, 28, 28, 1) inputs in [0, 1].

        Returns:
            One `Prediction` per input, in order, with ``is_digit`` from the detector and the
            probabilities calibrated by the model's ``temperature`` (`core.calibrate`).

        Raises:
            ValueError: inputs of another shape.
        """
        batch = _as_batch(x)
        probs, is_digit = self._classify(batch)
        if self.temperature != 1.0:
            probs = apply_temperature(probs, self.temperature)
        out = []
        for x28, p, ok in zip(batch[..., 0], probs, is_digit):
            d = int(np.argmax(p))
            out.append(Prediction(d, float(p[d]), p, x28, is_digit=bool(ok)))
        return out

    def read(self, source) -> Prediction:
        """Preprocess any image (PIL image, encoded bytes, or array) and classify it.

        Returns a Prediction with ``digit=None`` and a message when there is no ink.

        Raises:
            preprocess.ImageReadError: the bytes are not a readable image.
            ValueError: an array of unusable shape or dtype.
        """
        from core import preprocess

        try:
            x28 = preprocess.to_mnist(source)
        except preprocess.NoDigitError as exc:
            return Prediction(None, 0.0, message=str(exc), is_digit=False)
        return self.predict_input(x28)

    def read_many(self, sources: list) -> list[Prediction | Exception]:
        """Read several images with one batched model call; an unreadable one yields its exception."""
        from core import preprocess

        inputs, results = [], []
        for src in sources:
            try:
                inputs.append(preprocess.to_mnist(src))
                results.append(None)
            except preprocess.NoDigitError as exc:
                results.append(Prediction(None, 0.0, message=str(exc), is_digit=False))
            except ValueError as exc:  # ImageReadError included
                results.append(exc)
        if inputs:
            it = iter(self.predict_inputs(np.stack(inputs)))
            for i, r in enumerate(results):
                if r is None:
                    results[i] = next(it)
        return results
