"""Fast inference: a compiled call on a loaded model, never ``model.predict`` (tens of ms a call).

A ``Predictor`` wraps one model read-only; it is safe to share between threads (sessions).
"""

from __future__ import annotations

import logging
import threading
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


# Up to this many images per call use the numpy path (see Predictor.__init__).
SMALL_BATCH = 32


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
    return Predictor(model).probabilities(x, batch_size=batch_size)


class Predictor:
    """Compiled, read-only inference on one Keras model.

    Args:
        model: a Keras model mapping (N, 28, 28, 1) float32 in [0, 1] to (N, 10) probabilities.
        name: the store name, for display (and to find the model's "not a digit" detector file).
        meta: the model's store metadata, for display.
        novelty: the "not a digit" detector (`core.novelty`): True to load ``NAME.novelty.npz``
            from the configured store or fit it on first use (seconds; saved for next time),
            False to switch it off (every ``is_digit`` is True), or a fitted ``NoveltyDetector``.
        novelty_path: the detector file to use instead of the store's ``NAME.novelty.npz``.
    """

    def __init__(self, model, name: str = "", meta: dict | None = None, *, novelty=True,
                 novelty_path: str | Path | None = None):
        import tensorflow as tf

        self.model = model
        self.name = name
        self.meta = meta or {}
        # Confidence calibration fitted at training time (core.calibrate); 1.0 leaves them as they are.
        self.temperature = temperature_of(self.meta)
        # "Not a digit" detector (core.novelty), built on first use: True (load NAME.novelty.npz
        # from the configured store, else fit and save it), False (off: is_digit stays True), or
        # a ready NoveltyDetector. `novelty_path` names the sidecar file explicitly.
        self._novelty_setting = novelty
        self._novelty_path = novelty_path
        self._novelty_lock = threading.Lock()
        self._novelty_parts: tuple | None = None
        self._novelty_failed = novelty is False or novelty is None
        self._call = tf.function(
            lambda t: model(t, training=False),
            input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],
            reduce_retracing=True,
        )
        self._call(np.zeros((1, 28, 28, 1), np.float32))  # trace once, up front
        # Small batches (a drawing, a few uploads) go through a numpy copy of the network: no
        # TensorFlow call overhead (~0.25 ms instead of ~1 ms). Big batches stay on TensorFlow,
        # whose kernels use both cores (bench/predict_latency.py measures both).
        from core.fastnet import compile_numpy

        self._numpy_call = compile_numpy(model)

    def probabilities(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """float32 (N, 10) probabilities for (N, 28, 28[, 1]) inputs in [0, 1]."""
        x = _as_batch(x)
        if self._numpy_call is not None and len(x) <= SMALL_BATCH:
            return self._numpy_call(x)
        out = [self._call(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)

    # --- "not a digit" ------------------------------------------------------------------------

    def novelty(self):
        """The "not a digit" detector and the feature runner it needs, built on first use.

        Returns:
            ``(runner, detector)`` (`core.novelty.FeatureRunner`, `core.novelty.NoveltyDetector`),
            or None when the detector is off or cannot be built (a warning is logged once).
        """
        if self._novelty_parts is not None or self._novelty_failed:
            return self._novelty_parts
        with self._novelty_lock:
            if self._novelty_parts is None and not self._novelty_failed:
                try:
                    self._novelty_parts = self._build_novelty()
                except Exception as exc:  # noqa: BLE001 - a missing detector must never break reading
                    self._novelty_failed = True
                    log.warning("No \"not a digit\" detector for model %r (%s: %s); every input counts as a digit.",
                                self.name or "(unnamed)", type(exc).__name__, exc)
        return self._novelty_parts

    def _build_novelty(self) -> tuple:
        from core import novelty

        runner = novelty.FeatureRunner(self.model)
        if isinstance(self._novelty_setting, novelty.NoveltyDetector):
            return runner, self._novelty_setting
        path = self._novelty_path if self._novelty_path is not None else self._default_novelty_path()
        return runner, novelty.load_or_fit(self.model, runner, path=path)

    def _default_novelty_path(self) -> Path | None:
        """``NAME.novelty.npz`` beside ``NAME.keras`` in the configured store, when that file exists."""
        if not self.name:
            return None
        from core.novelty import sidecar_path
        from core.store import ModelStore, StoreError

        try:
            keras_path = ModelStore().keras_path(self.name)
        except StoreError:
            return None
        return sidecar_path(keras_path) if keras_path.is_file() else None

    def _classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, 10), is_digit bool (N,)) for a (N, 28, 28, 1) batch, one model call."""
        parts = self.novelty() if len(batch) else None
        if parts is None:
            return self.probabilities(batch), np.ones(len(batch), bool)
        runner, detector = parts
        features, probs = runner(batch)
        try:
            return probs, np.asarray(detector.is_digit(features, probs, batch), bool)
        except Exception as exc:  # noqa: BLE001 - e.g. a detector file for another architecture
            log.warning("The \"not a digit\" detector failed (%s: %s); treating the input as a digit.",
                        type(exc).__name__, exc)
            return probs, np.ones(len(batch), bool)

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
