"""Reading digits with a stored model's exported file: one ONNX Runtime call per batch.

A ``Predictor`` wraps one model read-only (its `core.serving.runtime.Runtime`, its "not a digit"
detector and its calibration); it is safe to share between threads (sessions). No TensorFlow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from core.serving.calibrate import apply_temperature

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
        is_digit: False when the "not a digit" detector (`core.serving.novelty`) says the image is
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


class Predictor:
    """Inference on one exported model: probabilities and the "not a digit" verdict from one pass.

    Args:
        runtime: the model's `core.serving.runtime.Runtime`.
        name: the store name, for display.
        temperature: the model's calibration temperature (`core.storage.info.ModelInfo.temperature`).
        detector: the model's `core.serving.novelty.NoveltyDetector`; None: every ``is_digit`` is True.
    """

    def __init__(self, runtime, name: str = "", temperature: float = 1.0, detector=None):
        self.runtime = runtime
        self.name = name
        # Confidence calibration fitted at training time (core.serving.calibrate); 1.0 leaves them as they are.
        self.temperature = float(temperature)
        if detector is not None and detector.means.shape[1] != runtime.feature_count:
            log.warning("The \"not a digit\" detector of %r does not fit its exported model; it is off.",
                        name or "(unnamed)")
            detector = None
        self.detector = detector

    @classmethod
    def load(cls, name: str, store=None) -> "Predictor":
        """The stored model ``name``, served from its exported file after checking its checksums.

        Raises:
            core.storage.store.StoreError: unknown name, or files that are missing, altered or unloadable.
        """
        from core.serving.novelty import NoveltyDetector, NoveltyError
        from core.serving.runtime import Runtime, RuntimeError_
        from core.storage.store import ModelStore, StoreError

        store = store or ModelStore()
        info, files = store.verify(name)
        try:
            runtime = Runtime(files["onnx"])
            detector = NoveltyDetector.load(files["novelty"])
        except (RuntimeError_, NoveltyError) as exc:
            raise StoreError(f"Model {name!r} cannot be served: {exc}.") from exc
        return cls(runtime, name=name, temperature=info.temperature, detector=detector)

    def _classify(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, 10), is_digit bool (N,)) for a (N, 28, 28, 1) batch, one model call."""
        probs, features = self.runtime.run(batch)
        if self.detector is None:
            return probs, np.ones(len(batch), bool)
        return probs, self.detector.is_digit(features)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, 10) uncalibrated probabilities for (N, 28, 28[, 1]) inputs in [0, 1]."""
        return self.runtime.run(_as_batch(x))[0]

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
            probabilities calibrated by the model's ``temperature`` (`core.serving.calibrate`).

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
        from core.reading import preprocess

        try:
            x28 = preprocess.to_mnist(source)
        except preprocess.NoDigitError as exc:
            return Prediction(None, 0.0, message=str(exc), is_digit=False)
        return self.predict_input(x28)

    def read_many(self, sources: list) -> list[Prediction | Exception]:
        """Read several images with one batched model call; an unreadable one yields its exception."""
        from core.reading import preprocess

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
