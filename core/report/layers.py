"""Inside the network, drawn: each layer's output for one input as pictures (feature maps as grids of
tiles, vectors as bar charts) and the first layer's learned weights as tiles.

Pure functions: arrays in (`core.serving.inside` outputs), a Pillow image or a Plotly figure out. The
Inside page (`ui.inside`) puts them on screen.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from core.report.charts import FONT, GRID, MARGIN, MUTED, PRIMARY, probability_bar
from core.serving.inside import LayerOutput
from core.serving.saliency import NEGATIVE_RGB, POSITIVE_RGB

MAX_CHANNELS = 32  # feature maps shown per layer; a note says how many more there are
GRID_COLUMNS = 8
TILE_PX = 48  # about this many pixels per tile side (a whole multiple of the map's side: crisp pixels)
GAP_PX = 2
GAP_RGB = (64, 64, 64)
KINDS = {"Conv2D": "convolution", "Dense": "dense", "MaxPooling2D": "max pooling",
         "AveragePooling2D": "average pooling", "GlobalAveragePooling2D": "global average pooling",
         "GlobalMaxPooling2D": "global max pooling", "ReLU": "ReLU"}
ACTIVATIONS = {"relu": "ReLU", "softmax": "softmax", "sigmoid": "sigmoid", "tanh": "tanh"}


def tile_colours(tiles: np.ndarray) -> np.ndarray:
    """Colours for a stack of 2-D arrays drawn on one scale (so tiles compare with each other).

    Args:
        tiles: float (n, h, w), any range.

    Returns:
        uint8 (n, h, w, 3): without negative values, grey from black (0) to white (the largest
        value); with negative values, red for positive and blue for negative on black, brighter with
        the magnitude (the largest magnitude at full colour). All black when every value is 0.

    Raises:
        ValueError: not a 3-D array of finite numbers.
    """
    t = np.asarray(tiles, np.float32)
    if t.ndim != 3 or not np.isfinite(t).all():
        raise ValueError(f"Expected finite values of shape (n, h, w), got {t.dtype} {t.shape}.")
    scale = float(np.abs(t).max()) if t.size else 0.0
    if scale == 0.0:
        return np.zeros((*t.shape, 3), np.uint8)
    if t.min() >= 0:
        grey = t / scale
        rgb = np.repeat(grey[..., None], 3, axis=-1) * 255
    else:
        magnitude = (np.abs(t) / scale)[..., None]
        colour = np.where((t >= 0)[..., None], np.float32(POSITIVE_RGB), np.float32(NEGATIVE_RGB))
        rgb = magnitude * colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def tile_grid(tiles: np.ndarray, *, columns: int = GRID_COLUMNS, tile_px: int = TILE_PX) -> Image.Image:
    """A stack of 2-D arrays as one image: tiles left to right, top to bottom, on one colour scale
    (`tile_colours`), each upscaled with nearest-neighbour by the whole factor nearest ``tile_px``.

    Args:
        tiles: float (n, h, w), n >= 1.
        columns: tiles per row (fewer when there are fewer tiles).
        tile_px: about how many pixels a tile's side takes.

    Returns:
        An RGB image of ``min(n, columns)`` x ``ceil(n / columns)`` tiles, ``GAP_PX`` apart.

    Raises:
        ValueError: no tiles, or not a 3-D array of finite numbers.
    """
    rgb = tile_colours(tiles)
    n, h, w = rgb.shape[:3]
    if n == 0:
        raise ValueError("Expected at least one tile, got none.")
    scale = max(1, round(tile_px / max(h, w)))
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    th, tw = h * scale, w * scale
    sheet = np.empty((rows * th + (rows - 1) * GAP_PX, cols * tw + (cols - 1) * GAP_PX, 3), np.uint8)
    sheet[...] = GAP_RGB
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = r * (th + GAP_PX), c * (tw + GAP_PX)
        sheet[top:top + th, left:left + tw] = rgb[i].repeat(scale, axis=0).repeat(scale, axis=1)
    return Image.fromarray(sheet)


def feature_grid(out: LayerOutput, max_channels: int = MAX_CHANNELS) -> Image.Image:
    """The first ``max_channels`` feature maps of a (H, W, C) layer output as one grid of tiles.

    Raises:
        ValueError: an output that is not a stack of feature maps.
    """
    if not out.is_map:
        raise ValueError(f"Expected feature maps (H, W, C) from {out.name!r}, got shape {out.shape}.")
    return tile_grid(out.values.transpose(2, 0, 1)[:max_channels])


def activation_bars(out: LayerOutput, *, height: int = 220) -> go.Figure:
    """Bar chart of a vector layer output: one bar per unit; the ten probabilities of the output
    layer as `core.report.charts.probability_bar` draws them (digits on the x axis).

    Returns:
        A figure with one ``go.Bar`` trace: x = unit index (or "0".."9"), y = the output's values.

    Raises:
        ValueError: an output that is a stack of feature maps.
    """
    if out.is_map:
        raise ValueError(f"Expected a vector output from {out.name!r}, got shape {out.shape}.")
    v = out.values.astype(np.float64)
    if out.activation == "softmax" and v.shape == (10,):
        return probability_bar(v, title=None, height=height)
    colours = [PRIMARY if x > 0 else MUTED for x in v]
    return go.Figure(data=[dict(
        type="bar", x=list(range(len(v))), y=v.tolist(), marker=dict(color=colours, line=dict(width=0)),
        hovertemplate="unit %{x}: %{y:.3f}<extra></extra>",
    )], layout=dict(
        height=height, margin=MARGIN, font=FONT, showlegend=False, bargap=0.1,
        xaxis=dict(title=dict(text="Unit"), showgrid=False), yaxis=dict(title=dict(text="Output"), gridcolor=GRID),
    ))


def describe(out: LayerOutput) -> str:
    """The layer's kind in words: "convolution", "ReLU", "dense, softmax"."""
    if out.kind == "Activation":
        return ACTIVATIONS.get(out.activation, out.activation or "activation")
    kind = KINDS.get(out.kind, out.kind)
    return f"{kind}, {ACTIVATIONS.get(out.activation, out.activation)}" if out.activation else kind


def panel_caption(out: LayerOutput, max_channels: int = MAX_CHANNELS) -> str:
    """One line over a layer's panel: name, kind, output shape (as Keras gives it, without the
    batch axis) and, for more feature maps than shown, how many are."""
    text = f"**{out.name}** · {describe(out)} · output shape {out.shape}"
    if out.is_map and out.shape[-1] > max_channels:
        text += f" · showing the first {max_channels} of {out.shape[-1]} channels"
    return text
