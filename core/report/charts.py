"""Plotly figures for the app: pure functions from arrays or rows to a ``go.Figure``.

No Streamlit here; pages call ``st.plotly_chart(fig, width="stretch")`` and tests assert on
``fig.data``. Colours are shared so every page looks alike: the theme's indigo for the thing that
matters (the predicted digit, training curves), a muted grey for the rest.

One picture is a Pillow image rather than a figure: ``boxed_digits`` draws labelled boxes over
the visitor's own image (``st.image`` shows it crisp, at its size, with nothing to pan or zoom).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont
from plotly.subplots import make_subplots

from core.config import IMAGE_SIZE, NUM_CLASSES

PRIMARY = "#4F46E5"  # .streamlit/config.toml primaryColor
MUTED = "#CBD5E1"
VALIDATION = "#F59E0B"
# Grid lines, boundaries and text work on a light and on a dark page: grey with transparency, and
# no text colour (st.plotly_chart's Streamlit theme gives the page's own).
GRID = "rgba(128, 128, 128, 0.25)"
BOUNDARY = "rgba(128, 128, 128, 0.6)"
FONT = dict(family="sans-serif", size=13)
MARGIN = dict(l=8, r=8, t=36, b=8)
LONG_RUN_EPOCHS = 12  # more epochs than this: `history_figure` draws no epoch lines and small validation markers


def _base_layout(fig: go.Figure, *, height: int, title: str | None = None) -> go.Figure:
    fig.update_layout(
        height=height, margin=MARGIN, font=FONT,
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)) if title else None,
        showlegend=False, hoverlabel=dict(font_size=12),
    )
    return fig


def probability_bar(probs: Sequence[float] | np.ndarray, highlight: int | None = None, *,
                    title: str | None = "Probability of each digit", height: int = 260) -> go.Figure:
    """Bar chart of the ten class probabilities with one digit highlighted.

    Args:
        probs: 10 probabilities in [0, 1] (digit 0 first).
        highlight: the digit drawn in the primary colour; defaults to the most probable one.
        title: figure title, or None for none.
        height: figure height in pixels.

    Returns:
        A figure with one ``go.Bar`` trace: x = "0".."9", y = probabilities, per-bar colours.

    Raises:
        ValueError: ``probs`` does not hold exactly 10 finite values.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.shape != (NUM_CLASSES,) or not np.all(np.isfinite(p)):
        raise ValueError(f"Expected {NUM_CLASSES} finite probabilities, got shape {np.shape(probs)}.")
    winner = int(np.argmax(p)) if highlight is None else int(highlight)
    if not 0 <= winner < NUM_CLASSES:
        raise ValueError(f"highlight must be a digit 0..9, got {highlight}.")
    colors = [PRIMARY if d == winner else MUTED for d in range(NUM_CLASSES)]
    # One constructor call (validated once): this chart is redrawn after every stroke on Draw.
    return go.Figure(data=[dict(
        type="bar", x=[str(d) for d in range(NUM_CLASSES)], y=p.tolist(), marker=dict(color=colors),
        # The highlighted bar as the "Confidence" metric beside the chart shows it (99.9%, not 100%); labels
        # keep their size (constraintext) rather than shrink to a narrow bar's width.
        text=[f"{v:.1%}" if d == winner else f"{v:.0%}" if v >= 0.005 else "" for d, v in enumerate(p)],
        textposition="outside", cliponaxis=False, constraintext="none",
        hovertemplate="digit %{x}: %{y:.2%}<extra></extra>",
    )], layout=dict(
        height=height, margin=MARGIN, font=FONT, showlegend=False, hoverlabel=dict(font_size=12),
        title=dict(text=title, x=0, xanchor="left", font=dict(size=15)) if title else None,
        xaxis=dict(title=dict(text="Digit"), type="category", showgrid=False),
        yaxis=dict(title=dict(text="Probability"), range=[0, 1.12], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1],
                   gridcolor=GRID),
    ))


def _thin(rows: list[dict], limit: int) -> list[dict]:
    """At most ``limit`` evenly spaced rows, always keeping the last one."""
    if limit <= 1 or len(rows) <= limit:
        return list(rows)
    stride = math.ceil(len(rows) / limit)
    picked = rows[::stride]
    return picked if picked[-1] is rows[-1] else picked + [rows[-1]]


def _values(rows: list[dict], key: str) -> list[float | None]:
    out = []
    for row in rows:
        v = row.get(key)
        out.append(None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
    return out


def _loss_accuracy_layout(x_axis: dict, narrow: bool, height: int) -> dict:
    """The layout of a loss plot (left) beside an accuracy plot (right), both over ``x_axis``; whole
    percents unless ``narrow`` (accuracies within 5 points), for `history_figure` and `compare_figure`."""
    titles = [dict(text=text, x=x, xref="paper", y=1.0, yref="paper", xanchor="center", yanchor="bottom",
                   showarrow=False, font=dict(size=14)) for text, x in (("Loss", 0.22), ("Accuracy", 0.78))]
    return dict(
        height=height, font=FONT, hoverlabel=dict(font_size=12), annotations=titles, showlegend=True,
        margin=dict(l=8, r=8, t=56, b=8),
        legend=dict(orientation="h", yanchor="bottom", y=1.1, x=1, xanchor="right", font=dict(size=12)),
        xaxis=dict(x_axis, domain=[0.0, 0.44], anchor="y"), xaxis2=dict(x_axis, domain=[0.56, 1.0], anchor="y2"),
        yaxis=dict(title=dict(text="Cross-entropy"), gridcolor=GRID, rangemode="tozero", anchor="x"),
        # No axis title on the right: the subplot's own title names it, and an axis title there
        # would sit inside the loss plot (the gap between the two is narrow on a phone).
        yaxis2=dict(gridcolor=GRID, tickformat=".1%" if narrow else ".0%", anchor="x2"),
    )


def history_figure(batches: list[dict], epochs: list[dict], *, max_points: int = 600,
                   height: int = 320) -> go.Figure:
    """Loss and accuracy curves of a training run, side by side.

    Args:
        batches: per-batch rows ``{"step", "epoch", "loss", "accuracy"}`` (running means over the
            epoch so far, as ``core.learning.train`` records them); thinned to ``max_points`` for drawing.
        epochs: per-epoch rows ``{"epoch", "step", "loss", "accuracy", "val_loss", "val_accuracy"}``;
            ``step`` is the last training step of that epoch.
        max_points: most per-batch points drawn per curve.
        height: figure height in pixels.

    Returns:
        A two-column figure ("Loss", "Accuracy"); x is the training step. Traces, in order:
        training loss, validation loss, training accuracy, validation accuracy (validation traces
        only when there are validation values). Dotted vertical lines mark epoch ends (runs of up to
        `LONG_RUN_EPOCHS` epochs).
    """
    # Built as one plain specification and validated once: plotly's make_subplots/update_* calls
    # validate at every step, and the live Train page redraws this figure every second.
    rows = _thin(sorted(batches, key=lambda r: r["step"]), max_points)
    steps = [int(r["step"]) for r in rows]
    val_rows = [r for r in epochs if r.get("val_loss") is not None]
    # A long run (the shipped model's 30 epochs): small validation markers, so the training line
    # stays visible between them, and no epoch lines, which would hatch the whole plot.
    long_run = len(epochs) > LONG_RUN_EPOCHS
    traces = []
    for col, key, fmt in ((1, "loss", ".4f"), (2, "accuracy", ".2%")):
        axes = dict(xaxis="x" if col == 1 else "x2", yaxis="y" if col == 1 else "y2")
        traces.append(dict(
            type="scatter", x=steps, y=_values(rows, key), mode="lines", name="Training (per batch)",
            line=dict(color=PRIMARY, width=2), legendgroup="train", showlegend=col == 1,
            hovertemplate=f"step %{{x}}<br>training {key} %{{y:{fmt}}}<extra></extra>", **axes,
        ))
        if val_rows:
            traces.append(dict(
                type="scatter", x=[int(r["step"]) for r in val_rows], y=_values(val_rows, f"val_{key}"),
                mode="lines+markers", name="Validation (per epoch)", line=dict(color=VALIDATION, width=2, dash="dot"),
                marker=dict(size=5 if long_run else 9, color=VALIDATION, line=dict(color="white", width=1.5)),
                legendgroup="val", showlegend=col == 1,
                hovertemplate=f"epoch %{{customdata}}<br>validation {key} %{{y:{fmt}}}<extra></extra>",
                customdata=[int(r["epoch"]) for r in val_rows], **axes,
            ))
    last_step = steps[-1] if steps else 0
    # Epoch ends inside the run, dotted, on both subplots.
    boundary = dict(type="line", y0=0, y1=1, line=dict(color=BOUNDARY, width=1, dash="dot"))
    shapes = [boundary | dict(x0=int(r["step"]), x1=int(r["step"]), xref=xref, yref=f"{yref} domain")
              for r in epochs if 0 < int(r["step"]) < last_step and not long_run
              for xref, yref in (("x", "y"), ("x2", "y2"))]
    accuracies = [v for v in _values(rows, "accuracy") + _values(val_rows, "val_accuracy") if v is not None]
    # Whole percents repeat on a narrow range (a fine-tuning run moves between 98% and 100%).
    narrow = bool(accuracies) and max(accuracies) - min(accuracies) < 0.05
    x_axis = dict(title=dict(text="Training step (batch)"), gridcolor=GRID, rangemode="tozero")
    return go.Figure(data=traces, layout=_loss_accuracy_layout(x_axis, narrow, height) | dict(shapes=shapes))


def class_distribution(counts: Sequence[int] | np.ndarray, *, title: str | None = "Images per digit",
                       height: int = 280) -> go.Figure:
    """Bar chart of how many images there are of each digit.

    Args:
        counts: 10 non-negative counts (digit 0 first).

    Raises:
        ValueError: not exactly 10 counts.
    """
    c = np.asarray(counts).reshape(-1)
    if c.shape != (NUM_CLASSES,):
        raise ValueError(f"Expected {NUM_CLASSES} counts, got shape {np.shape(counts)}.")
    total = max(1, int(c.sum()))
    fig = go.Figure(go.Bar(
        x=[str(d) for d in range(NUM_CLASSES)], y=c.astype(int).tolist(), marker_color=PRIMARY,
        text=[f"{int(v):,}" for v in c], textposition="outside", cliponaxis=False,
        customdata=[v / total for v in c],
        hovertemplate="digit %{x}: %{y:,} images (%{customdata:.1%})<extra></extra>",
    ))
    _base_layout(fig, height=height, title=title)
    fig.update_xaxes(title_text="Digit", type="category", showgrid=False)
    fig.update_yaxes(title_text="Images", gridcolor=GRID, range=[0, float(c.max()) * 1.15 if c.max() else 1],
                     dtick=1 if c.max() <= 10 else None)  # a few corrections: whole images, no "0.5"
    return fig


def digit_grid(images: np.ndarray, labels: Sequence[int] | np.ndarray, *, columns: int = 10,
               tile_px: int = 64) -> go.Figure:
    """A grid of MNIST digits, each titled with its label.

    Args:
        images: uint8 (N, 28, 28) in 0..255 or float (N, 28, 28) in [0, 1], white ink on black.
        labels: N labels, shown above the tiles.
        columns: tiles per row.
        tile_px: approximate height of one tile row, in pixels.

    Returns:
        A figure with one ``go.Image`` trace per digit, subplot titles "label".

    Raises:
        ValueError: images are not (N, 28, 28), or the label count differs.
    """
    x = np.asarray(images)
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"Expected images of shape (N, 28, 28), got {x.shape}.")
    y = [int(v) for v in np.asarray(labels).reshape(-1)]
    if len(y) != len(x):
        raise ValueError(f"Got {len(x)} images but {len(y)} labels.")
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    n = len(x)
    columns = max(1, min(columns, n)) if n else 1
    rows = max(1, math.ceil(n / columns))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[str(v) for v in y],
                        horizontal_spacing=0.012, vertical_spacing=0.08 / rows if rows > 1 else 0.0)
    for i, (img, label) in enumerate(zip(x, y)):
        rgb = np.repeat(img[..., None], 3, axis=2)
        fig.add_trace(go.Image(z=rgb, hovertemplate=f"label {label}<extra></extra>"),
                      row=i // columns + 1, col=i % columns + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font=dict(size=13), yshift=-4)
    _base_layout(fig, height=rows * tile_px + 40)
    fig.update_layout(margin=dict(l=4, r=4, t=24, b=4))
    return fig


BOX_ON_DARK = VALIDATION  # amber reads well on the black drawing canvas
BOX_ON_LIGHT = PRIMARY  # indigo on paper


def boxed_digits(image: Image.Image | np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                 labels: Sequence[str], *, side: int = 360, background: str = "white") -> Image.Image:
    """A copy of an image, scaled to ``side`` pixels on its longer side, with a labelled
    rectangle around each digit.

    Args:
        image: a PIL image of any mode, or a uint8 array ``(rows, cols)`` / ``(rows, cols, 3|4)``
            (e.g. the drawing canvas' RGBA array).
        boxes: ``(x, y, width, height)`` per digit in the image's pixels (x = column), as
            ``core.reading.segment.DigitReading.box`` gives them.
        labels: the text drawn on each box (the digit read), one per box.
        side: the longer side of the result, in pixels (the image is scaled up or down to it, so
            lines and labels keep one size whatever the image's size).
        background: colour under transparent pixels ("white" for paper, "black" for the canvas).

    Returns:
        A new RGB ``Image.Image``; the input is not modified. Boxes are amber on a dark image and
        indigo on a light one.

    Raises:
        ValueError: a different number of boxes and labels, or an array that is not an image.
    """
    if len(boxes) != len(labels):
        raise ValueError(f"Got {len(boxes)} boxes but {len(labels)} labels; pass one label per box.")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"Expected a uint8 (rows, cols[, 3|4]) image array, got {image.dtype} {image.shape}.")
        image = Image.fromarray(image)
    rgba = image.convert("RGBA")
    picture = Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba).convert("RGB")
    width, height = picture.size
    scale = side / max(1, width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    picture = picture.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    dark = float(np.asarray(picture.convert("L"), np.float32).mean()) < 128
    color = BOX_ON_DARK if dark else BOX_ON_LIGHT
    draw = ImageDraw.Draw(picture)
    line = max(2, round(side / 180))
    font = ImageFont.load_default(size=max(12, round(side / 20)))
    for (x, y, w, h), text in zip(boxes, labels):
        x0, y0 = x * scale - line, y * scale - line
        x1, y1 = (x + w) * scale + line, (y + h) * scale + line
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), str(text), font=font)
        pad = 3
        tag_h = bottom - top + 2 * pad
        tag_y = y0 - tag_h if y0 - tag_h >= 0 else y1  # above the box, or below it at the top edge
        tag_y = min(tag_y, size[1] - tag_h)
        draw.rectangle((x0, tag_y, x0 + right - left + 2 * pad, tag_y + tag_h), fill=color)
        draw.text((x0 + pad - left, tag_y + pad - top), str(text), fill="white" if not dark else "black", font=font)
    return picture


# One colour per compared model, in the order picked: the theme's indigo first, then hues that stay
# apart on a light or dark background. A validation curve takes its model's colour, dotted.
COMPARE_COLORS = ("#4F46E5", "#F59E0B", "#10B981", "#EF4444", "#0EA5E9", "#A855F7", "#64748B", "#EC4899")
COMPARE_X = {"epoch": "Epoch", "time": "Training time (s)"}


def _number(value: object) -> float | None:
    """A finite number as float, anything else (None, NaN, text, a bool) as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def compare_points(history: dict, x: str = "epoch") -> list[dict]:
    """The epoch rows of a run's history that can be drawn against ``x``, in order.

    Args:
        history: a stored model's ``{"epoch": [...], "batch": [...]}`` (``ModelInfo.history``); only
            the per-epoch rows are used.
        x: "epoch" (the row's ``epoch``) or "time" (its ``elapsed``, seconds since training started).

    Returns:
        The rows with a number for ``x`` and a training loss or accuracy, sorted by ``x``; empty
        when none were recorded (e.g. a run stopped in its first epoch, or older metadata without
        ``elapsed`` when ``x`` is "time").

    Raises:
        ValueError: ``x`` is neither "epoch" nor "time".
    """
    if x not in COMPARE_X:
        raise ValueError(f"x must be 'epoch' or 'time', got {x!r}.")
    key = "epoch" if x == "epoch" else "elapsed"
    rows = history.get("epoch") if isinstance(history, dict) else None
    rows = [r for r in rows or [] if isinstance(r, dict) and _number(r.get(key)) is not None
            and (_number(r.get("loss")) is not None or _number(r.get("accuracy")) is not None)]
    return sorted(rows, key=lambda r: float(r[key]))


def compare_figure(runs: Sequence[tuple[str, dict]], x: str = "epoch", *, height: int = 360) -> go.Figure:
    """Several runs' loss and accuracy per epoch overlaid, one colour per run, side by side.

    Args:
        runs: ``(name, history)`` per run, in display order; ``history`` as ``ModelInfo.history``
            (``{"epoch": [rows], ...}``, rows with ``epoch``, ``elapsed``, ``loss``, ``accuracy``,
            ``val_loss``, ``val_accuracy``). Colours follow ``COMPARE_COLORS`` by position (cycling
            after eight runs).
        x: "epoch" for x = the epoch number, "time" for x = ``elapsed``, seconds since training started.
        height: figure height in pixels.

    Returns:
        A two-column figure ("Loss", "Accuracy"). Per run with drawable rows (``compare_points``),
        traces in this order: training loss (solid, named ``name``), validation loss (dotted, named
        ``"name (validation)"``, only when validation values were recorded), training accuracy,
        validation accuracy. A run with nothing to draw adds no traces. The legend shows one entry
        per run; clicking it hides all of that run's curves.

    Raises:
        ValueError: ``x`` is neither "epoch" nor "time".
    """
    if x not in COMPARE_X:
        raise ValueError(f"x must be 'epoch' or 'time', got {x!r}.")
    key = "epoch" if x == "epoch" else "elapsed"
    where = "epoch %{x}" if x == "epoch" else "epoch %{customdata}, %{x:.1f} s"
    traces: list[dict] = []
    accuracies: list[float] = []
    for i, (name, history) in enumerate(runs):
        rows = compare_points(history, x)
        if not rows:
            continue
        color = COMPARE_COLORS[i % len(COMPARE_COLORS)]
        val_rows = [r for r in rows if _number(r.get("val_loss")) is not None
                    or _number(r.get("val_accuracy")) is not None]
        for col, metric, fmt in ((1, "loss", ".4f"), (2, "accuracy", ".2%")):
            axes = dict(xaxis="x" if col == 1 else "x2", yaxis="y" if col == 1 else "y2")
            for kind, picked, prefix in (("training", rows, ""), ("validation", val_rows, "val_")):
                if not picked:
                    continue
                ys = [_number(r.get(prefix + metric)) for r in picked]
                if metric == "accuracy":
                    accuracies += [v for v in ys if v is not None]
                training = kind == "training"
                traces.append(dict(
                    type="scatter", x=[_number(r[key]) if x == "time" else int(r[key]) for r in picked], y=ys,
                    mode="lines+markers", name=name if training else f"{name} (validation)", legendgroup=name,
                    showlegend=training and col == 1,
                    line=dict(color=color, width=2, dash="solid" if training else "dot"),
                    marker=dict(size=6, color=color, symbol="circle" if training else "circle-open"),
                    customdata=[r.get("epoch") for r in picked],
                    hovertemplate=f"{name}<br>{where}<br>{kind} {metric} %{{y:{fmt}}}<extra></extra>", **axes,
                ))
    narrow = bool(accuracies) and max(accuracies) - min(accuracies) < 0.05
    # One tick per epoch on a short run: Plotly would otherwise put ticks at 0.5, 1.5.
    short = x == "epoch" and all(t["x"][-1] <= 12 for t in traces)
    x_axis = dict(title=dict(text=COMPARE_X[x]), gridcolor=GRID, rangemode="tozero", **(dict(dtick=1) if short else {}))
    return go.Figure(data=traces, layout=_loss_accuracy_layout(x_axis, narrow, height))
