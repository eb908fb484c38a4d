"""Temperature scaling: confidences that mean what they say.

A model trained with label smoothing (the default recipe) never puts much more than ~90% on any
digit, however clear; other models can be over-confident. Temperature scaling (Guo et al., 2017,
"On Calibration of Modern Neural Networks") divides the logits by one number T fitted on held-out
images to minimize the negative log-likelihood. It never changes which digit wins, only how sure
the model says it is. The model outputs probabilities, and softmax(log p / T) = softmax(logits / T).
"""

from __future__ import annotations

import math

import numpy as np

from core.storage.info import T_MAX, T_MIN  # the range a stored temperature is trusted in


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (N, 10) rescaled by temperature T (T < 1 sharpens, T > 1 softens); T = 1 is a no-op."""
    probs = np.asarray(probs, np.float32)
    if temperature == 1.0 or probs.size == 0:
        return probs
    logp = np.log(np.clip(probs, 1e-30, 1.0)) / np.float32(temperature)
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def nll(probs: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels after temperature scaling."""
    p = apply_temperature(probs, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-30, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in [T_MIN, T_MAX] minimizing `nll` on held-out (probabilities, labels).

    A log-spaced grid, then a golden-section search around the best grid point.

    Raises:
        ValueError: no images, or labels that do not match the probabilities.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if probs.ndim != 2 or len(probs) == 0 or len(labels) != len(probs):
        raise ValueError("fit_temperature needs (N, classes) probabilities and N labels, N > 0.")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError("Labels out of range for these probabilities.")
    grid = np.exp(np.linspace(math.log(T_MIN), math.log(T_MAX), 41))
    losses = [nll(probs, labels, t) for t in grid]
    i = int(np.argmin(losses))
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = nll(probs, labels, math.exp(a)), nll(probs, labels, math.exp(b))
    for _ in range(30):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = nll(probs, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = nll(probs, labels, math.exp(b))
    return float(round(math.exp((lo + hi) / 2), 4))
