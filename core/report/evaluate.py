"""How well a model reads the MNIST test images: accuracy, confusion matrix, per-class precision,
recall and F1, and the mistakes; plus the Plotly figures that show them.

``evaluate`` makes one batched pass over the images (a compiled call per chunk, never
``model.predict``); everything after that is pure numpy on the predictions, so the metric functions
can be tested on tiny hand-made arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from core.serving.calibrate import apply_temperature
from core.report.charts import FONT, GRID, MARGIN, PRIMARY, VALIDATION
from core.config import NUM_CLASSES

# Heatmap colours from nothing (no image: the page shows through, light or dark) to the app's indigo
# (the most images in a cell).
HEATMAP_SCALE = [[0.0, "rgba(79, 70, 229, 0.0)"], [0.25, "rgba(79, 70, 229, 0.25)"],
                 [0.5, "rgba(79, 70, 229, 0.5)"], [0.75, "rgba(79, 70, 229, 0.8)"], [1.0, PRIMARY]]
RECALL_COLOR = VALIDATION  # amber beside the indigo precision bars


@dataclass(frozen=True)
class Evaluation:
    """A model's results on a labelled image set.

    Attributes:
        accuracy: share of images classified right, in [0, 1].
        confusion: int64 (10, 10); ``confusion[t, p]`` counts images of digit ``t`` read as ``p``
            (rows: true digit, columns: prediction).
        precision: float64 (10,); of the images read as digit d, the share that are d (0 when the
            model never predicts d).
        recall: float64 (10,); of the images of digit d, the share read as d (0 when there are none).
        f1: float64 (10,); harmonic mean of precision and recall (0 when both are 0).
        support: int64 (10,); images of each digit.
        true: int64 (N,); the label of every image.
        predicted: int64 (N,); the prediction for every image.
        confidence: float32 (N,); the probability of each prediction, in [0, 1].
        mistakes: int64 (M,); indices of the misclassified images, most confident mistake first.
    """

    accuracy: float
    confusion: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    true: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    mistakes: np.ndarray

    @property
    def count(self) -> int:
        """Images evaluated."""
        return int(len(self.predicted))

    def misclassified(self, true: int | None = None, predicted: int | None = None) -> list[dict]:
        """The mistakes, most confident first, optionally only those of one true digit and/or one
        prediction.

        Returns:
            One dict per mistake: ``{"index", "true", "predicted", "confidence"}`` (index into the
            evaluated images; confidence of the wrong prediction, in [0, 1]).
        """
        idx = self.mistakes
        if true is not None:
            idx = idx[self.true[idx] == int(true)]
        if predicted is not None:
            idx = idx[self.predicted[idx] == int(predicted)]
        return [{"index": int(i), "true": int(self.true[i]), "predicted": int(self.predicted[i]),
                 "confidence": float(self.confidence[i])} for i in idx]

    def top_confusions(self, limit: int = 10) -> list[tuple[int, int, int]]:
        """The most frequent (true, predicted, count) mistakes, largest count first."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        pairs = [(int(t), int(p), int(off[t, p])) for t, p in zip(*np.nonzero(off))]
        return sorted(pairs, key=lambda tpc: (-tpc[2], tpc[0], tpc[1]))[:limit]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """int64 (C, C) counts; rows are true classes, columns predictions.

    Raises:
        ValueError: different lengths, or labels outside 0..C-1.
    """
    t = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = np.asarray(y_pred).reshape(-1).astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"Got {len(t)} true labels but {len(p)} predictions.")
    for name, v in (("true labels", t), ("predictions", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} must be in 0..{num_classes - 1}, got values {v.min()}..{v.max()}.")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 from a confusion matrix (rows true, columns predicted).

    A class never predicted has precision 0; one with no images has recall 0 (as scikit-learn's
    ``zero_division=0``).

    Returns:
        (precision, recall, f1), each float64 (C,) in [0, 1].
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"Expected a square confusion matrix, got shape {cm.shape}.")
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return precision, recall, f1


def evaluation_from_probabilities(probs: np.ndarray, y_true: np.ndarray) -> Evaluation:
    """Build an ``Evaluation`` from class probabilities.

    Args:
        probs: float (N, 10) probabilities (rows sum to 1).
        y_true: int (N,) true labels in 0..9.

    Raises:
        ValueError: shapes that do not match, or labels outside 0..9.
    """
    probs = np.asarray(probs, dtype=np.float32)
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES or len(probs) != len(y):
        raise ValueError(f"Expected probabilities of shape ({len(y)}, {NUM_CLASSES}), got {probs.shape}.")
    pred = np.argmax(probs, axis=1).astype(np.int64) if len(probs) else np.zeros(0, np.int64)
    conf = probs[np.arange(len(pred)), pred] if len(pred) else np.zeros(0, np.float32)
    cm = confusion_matrix(y, pred)
    precision, recall, f1 = precision_recall_f1(cm)
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
    return Evaluation(
        accuracy=float(np.trace(cm) / max(1, len(y))), confusion=cm, precision=precision, recall=recall,
        f1=f1, support=cm.sum(axis=1), true=y, predicted=pred, confidence=conf.astype(np.float32), mistakes=wrong,
    )


def evaluate(predictor, x_test: np.ndarray, y_test: np.ndarray) -> Evaluation:
    """Evaluate a model on labelled images, `core.serving.runtime.BATCH` images per model call.

    Args:
        predictor: a `core.serving.predict.Predictor`.
        x_test: uint8 (N, 28, 28) in 0..255 (as MNIST is stored), or float (N, 28, 28[, 1]) in [0, 1].
        y_test: int (N,) labels in 0..9.

    Returns:
        ``Evaluation`` with accuracy, confusion matrix, per-class metrics and the mistakes (their
        confidences calibrated as on the reading pages).

    Raises:
        ValueError: images of the wrong shape, or labels that do not match them.
    """
    from core.data import to_model_input
    from core.serving.runtime import BATCH
    x = np.asarray(x_test)
    if len(x) != len(np.asarray(y_test).reshape(-1)):
        raise ValueError(f"Got {len(x)} images but {np.asarray(y_test).size} labels.")
    # uint8 images become floats a chunk at a time: a server that evaluates never holds the float
    # copy of the whole test set (31 MB).
    chunks = [x[i:i + BATCH] for i in range(0, len(x), BATCH)] or [x]
    probs = np.concatenate([predictor.probabilities(to_model_input(c) if c.dtype == np.uint8 else c)
                            for c in chunks])
    # Confidences as the Draw and Upload pages show them: calibrated by the model's temperature
    # (core.serving.calibrate). The digits, and so every count, are the network's own.
    probs = apply_temperature(probs, predictor.temperature)
    return evaluation_from_probabilities(probs, y_test)


# --- figures ---------------------------------------------------------------------------------------

def confusion_heatmap(cm: np.ndarray | Sequence[Sequence[int]], *, title: str | None = "Confusion matrix",
                      height: int = 460) -> go.Figure:
    """Heatmap of a 10x10 confusion matrix, each cell labelled with its count.

    Colour follows log10(1 + count), so a handful of mistakes still shows beside a diagonal of
    ~1,000 right answers; the colour bar is labelled in counts.

    Args:
        cm: int (10, 10) counts, rows true digit, columns prediction.
        title: figure title, or None.
        height: figure height in pixels.

    Returns:
        A figure with one ``go.Heatmap``: x = predicted "0".."9", y = true "0".."9" (0 at the top),
        ``text`` the counts as labels ("" for empty cells), ``customdata[t][p]`` = [count, share of
        row t] (the share of true digit t's images read as p).

    Raises:
        ValueError: not a 10x10 matrix of non-negative counts.
    """
    counts = np.asarray(cm)
    if counts.shape != (NUM_CLASSES, NUM_CLASSES) or (counts.size and counts.min() < 0):
        raise ValueError(f"Expected a {NUM_CLASSES}x{NUM_CLASSES} matrix of non-negative counts, "
                         f"got shape {counts.shape}.")
    counts = counts.astype(np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    labels = [str(d) for d in range(NUM_CLASSES)]
    top = max(1, int(counts.max()))
    ticks = [v for v in (1, 10, 100, 1000, 10000) if v <= top]  # no 0: beside 1 on a log bar, the two overlap
    fig = go.Figure(go.Heatmap(
        z=np.log10(1 + counts).tolist(), x=labels, y=labels,
        # Empty cells stay blank so the few mistakes stand out.
        text=[[str(v) if v else "" for v in row] for row in counts.tolist()],
        customdata=np.stack([counts, share], axis=-1).tolist(),
        texttemplate="%{text}", textfont=dict(size=11), colorscale=HEATMAP_SCALE, zmin=0, zmax=math.log10(1 + top),
        xgap=1, ygap=1,
        # The colour bar lies under the matrix, leaving its width to the cells (four-digit counts fit).
        colorbar=dict(title=dict(text="Images", side="top"), tickvals=[math.log10(1 + v) for v in ticks],
                      ticktext=[f"{v:,}" for v in ticks], thickness=10, orientation="h", y=-0.28, yanchor="top",
                      len=0.6),
        hovertemplate=("true %{y}, predicted %{x}: %{customdata[0]:,} images "
                       "(%{customdata[1]:.1%} of the %{y}s)<extra></extra>"),
    ))
    fig.update_layout(
        height=height, margin=dict(MARGIN, t=40 if title else 8, b=70), font=FONT,
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)) if title else None,
    )
    fig.update_xaxes(title_text="Predicted digit", type="category", side="bottom", showgrid=False)
    fig.update_yaxes(title_text="True digit", type="category", autorange="reversed", showgrid=False)
    return fig


def per_class_bars(precision: Sequence[float] | np.ndarray, recall: Sequence[float] | np.ndarray, *,
                   title: str | None = "Precision and recall per digit", height: int = 320) -> go.Figure:
    """Grouped bars of per-digit precision (indigo) and recall (amber).

    The y axis starts just below the lowest value (never below 0), so the differences between
    digits of a good model (97-100%) stay visible.

    Args:
        precision: 10 values in [0, 1].
        recall: 10 values in [0, 1].

    Returns:
        A figure with two ``go.Bar`` traces named "Precision" and "Recall"; x = "0".."9".

    Raises:
        ValueError: not 10 finite values in [0, 1] each.
    """
    p = np.asarray(precision, dtype=np.float64).reshape(-1)
    r = np.asarray(recall, dtype=np.float64).reshape(-1)
    for name, v in (("precision", p), ("recall", r)):
        if v.shape != (NUM_CLASSES,) or not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 1:
            raise ValueError(f"Expected {NUM_CLASSES} {name} values in [0, 1], got {np.round(v, 4).tolist()}.")
    digits = [str(d) for d in range(NUM_CLASSES)]
    fig = go.Figure()
    for name, values, color in (("Precision", p, PRIMARY), ("Recall", r, RECALL_COLOR)):
        fig.add_trace(go.Bar(
            x=digits, y=values.tolist(), name=name, marker_color=color,
            hovertemplate=f"digit %{{x}}: {name.lower()} %{{y:.2%}}<extra></extra>",
        ))
    low = float(min(p.min(), r.min()))
    floor = max(0.0, math.floor((low - 0.02) * 50) / 50)  # a step of 2 points below the lowest bar
    fig.update_layout(
        height=height, margin=dict(MARGIN, t=56 if title else 30), font=FONT,
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)) if title else None,
        barmode="group", bargap=0.25, showlegend=True,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"),
    )
    fig.update_xaxes(title_text="Digit", type="category", showgrid=False)
    fig.update_yaxes(range=[floor, 1.0 + (1.0 - floor) * 0.02], tickformat=".0%", gridcolor=GRID)
    return fig
