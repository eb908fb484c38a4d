"""Why this digit: which ink of the 28x28 input pushed the model towards its answer.

Method: occlusion, from forward passes alone. For every pixel with ink, the 3x3 patch around it is
hidden (set to black, no ink) and the drop in the log-probability of the digit is that pixel's
score: positive where hiding the ink weakens the answer (evidence for the digit), negative where
it strengthens it (evidence against). All the occluded copies go through the exported model in one
batched call (one to two hundred images, a few milliseconds). The map is zero off the ink: it says
which ink mattered, not which missing stroke would have changed the answer.
"""

from __future__ import annotations

import numpy as np

INK = 0.05  # pixels above this are ink to explain
PATCH = 1  # the hidden patch reaches this many pixels around the pixel (3x3)

# Positive evidence for the digit in red, evidence against it in blue (diverging, colour-blind safe).
POSITIVE_RGB = (228, 26, 28)
NEGATIVE_RGB = (33, 113, 181)
DIGIT_GREY = 0.55  # ink brightness of the digit under the colours (background black)


def _as_image(x28: np.ndarray) -> np.ndarray:
    x = np.asarray(x28)
    if x.size != 28 * 28 or x.dtype.kind not in "biuf":
        raise ValueError(f"Expected a (28, 28) image of numbers in [0, 1], got {x.dtype} {x.shape}.")
    x = x.astype(np.float32).reshape(28, 28)
    if not np.isfinite(x).all():
        raise ValueError("Expected a (28, 28) image with values in [0, 1]; it contains NaN or infinite values.")
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError("Expected a (28, 28) image with values in [0, 1] (as the model sees it); "
                         f"got values from {x.min():g} to {x.max():g}.")
    return x


def saliency(predictor, x28: np.ndarray, digit: int | None = None) -> np.ndarray:
    """Occlusion map of how much each pixel's ink pushed the model towards ``digit``.

    Args:
        predictor: anything with ``probabilities(x)`` mapping (N, 28, 28) inputs in [0, 1] to
            (N, 10) probabilities, such as a `core.serving.predict.Predictor`.
        x28: float (28, 28) (or (28, 28, 1)) model input in [0, 1], ink bright on black.
        digit: the class to explain, 0..9; None for the model's answer.

    Returns:
        float32 (28, 28) in [-1, 1]: positive where hiding the pixel's ink lowers the digit's
        probability, negative where it raises it, scaled so the largest magnitude is 1; 0 off the
        ink, and all zeros for a blank input. The same input gives the same map.

    Raises:
        ValueError: an input that is not a (28, 28) image in [0, 1], or a digit outside 0..9.
    """
    x = _as_image(x28)
    if digit is not None and (isinstance(digit, bool) or not 0 <= int(digit) <= 9):
        raise ValueError(f"Expected a digit from 0 to 9 to explain, got {digit!r}.")
    rows, cols = np.nonzero(x > INK)
    if rows.size == 0:
        return np.zeros((28, 28), np.float32)
    hidden = np.repeat(x[None], rows.size + 1, axis=0)  # the last copy is the input itself
    for i, (r, c) in enumerate(zip(rows, cols)):
        hidden[i, max(0, r - PATCH):r + PATCH + 1, max(0, c - PATCH):c + PATCH + 1] = 0.0
    log_probs = np.log(np.maximum(predictor.probabilities(hidden), 1e-12))
    digit = int(np.argmax(log_probs[-1])) if digit is None else int(digit)
    heat = np.zeros((28, 28), np.float32)
    heat[rows, cols] = log_probs[-1, digit] - log_probs[:-1, digit]
    peak = float(np.abs(heat).max())
    if peak <= 0.0 or not np.isfinite(peak):
        return np.zeros((28, 28), np.float32)
    return np.clip(heat / np.float32(peak), -1.0, 1.0).astype(np.float32)


def overlay(x28: np.ndarray, heat: np.ndarray, scale: int = 10, *, light: bool = False) -> np.ndarray:
    """Draw a saliency map over the digit: grey ink on black (``light``: on white), red for evidence
    for, blue against.

    Args:
        x28: float (28, 28) model input in [0, 1].
        heat: float (28, 28) map in [-1, 1] (from `saliency`); a map in [0, 1] shows only red.
        scale: each input pixel becomes a ``scale`` x ``scale`` block (crisp pixels).

    Returns:
        uint8 (28 * scale, 28 * scale, 3) RGB image; a pixel's colour strength is ``|heat|``, so
        where there is no colour the pixel hardly mattered.

    Raises:
        ValueError: inputs of the wrong shape or range, or ``scale`` below 1.
    """
    x = _as_image(x28)
    h = np.asarray(heat, np.float32)
    if h.shape not in ((28, 28), (28, 28, 1)) or not np.isfinite(h).all():
        raise ValueError(f"Expected a finite (28, 28) heatmap in [-1, 1], got {h.dtype} {h.shape}.")
    h = np.clip(h.reshape(28, 28), -1.0, 1.0)
    if int(scale) < 1:
        raise ValueError(f"scale must be at least 1, got {scale}.")
    grey = x * np.float32(DIGIT_GREY * 255.0)
    base = np.repeat((np.float32(255.0) - grey if light else grey)[:, :, None], 3, axis=2)
    colour = np.where(h[:, :, None] >= 0, np.float32(POSITIVE_RGB), np.float32(NEGATIVE_RGB))
    # A gentle power curve keeps weak but real evidence visible next to the strongest pixels.
    alpha = np.abs(h)[:, :, None] ** np.float32(0.7)
    rgb = np.clip(np.rint(base * (1 - alpha) + colour * alpha), 0, 255).astype(np.uint8)
    scale = int(scale)
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
