"""The Inside page's panels: each layer's output for the visitor's drawing and the first layer's
learned weights, drawn by `core.report.layers`, from the model's layers file through ONNX Runtime
(`core.serving.inside`): no TensorFlow.
"""

from __future__ import annotations

import streamlit as st

from core.report.layers import activation_bars, feature_grid, panel_caption, tile_grid
from core.serving.inside import FirstWeights, LayerOutput, LayersError, LayersRuntime, strongest_units
from core.storage.store import LAYERS_SUFFIX, Entry, ModelStore

MLP_UNITS = 8  # units of an MLP's first layer whose weights are shown


# --- on the page -------------------------------------------------------------------------------------

def show_layers(outputs: list[LayerOutput], *, key: str = "inside") -> None:
    """One bordered panel per layer, two per row, in the model's order: feature maps as a grid of
    tiles, vectors as a bar chart, each under `panel_caption`; the key to the tiles' colours first."""
    st.caption("Feature maps: one tile per channel, all on the layer's own scale; grey from nothing (black) "
               "to the layer's strongest response (white); where a layer has negative outputs (before its "
               "ReLU), red is positive and blue negative.")
    for start in range(0, len(outputs), 2):
        for col, out in zip(st.columns(2), outputs[start:start + 2]):
            with col.container(border=True):
                st.caption(panel_caption(out))
                if out.is_map:
                    st.image(feature_grid(out))
                else:
                    st.plotly_chart(activation_bars(out), width="stretch", key=f"{key}_{out.name}")


def show_first_weights(first: FirstWeights, outputs: list[LayerOutput]) -> None:
    """The first layer's learned weights: a convolution's filters as one grid of tiles; for an MLP,
    the 28x28 weights of the units of its first dense layer that respond most to this drawing."""
    try:
        tiles = first.tiles()
    except LayersError as exc:
        st.caption(f"The weights of `{first.layer}` cannot be drawn as images: {exc}")
        return
    if first.kind == "Conv2D":
        h, w = tiles.shape[1:]
        st.markdown(f"**What `{first.layer}` looks for**")
        st.image(tile_grid(tiles[:64], tile_px=40))
        st.caption(f"Its {len(tiles)} learned {h}×{w} filters"
                   + (", the first 64 shown" if len(tiles) > 64 else "")
                   + ": each slides over the image; red weights add the ink under them, blue ones subtract it. "
                   f"The `{first.layer}` maps below are where each filter found its pattern.")
        return
    units = strongest_units(first, outputs, MLP_UNITS)
    views = tile_grid(tiles[units], columns=len(units), tile_px=56)
    st.markdown(f"**What `{first.layer}` looks for**")
    st.image(views)
    st.caption(f"The weights of the {len(units)} units of `{first.layer}` (of {len(tiles)}) that respond most "
               f"to your drawing, strongest first (units {', '.join(map(str, units))}): each "
               f"{tiles.shape[1]}×{tiles.shape[2]} image is what the unit weighs each pixel by, red adding, "
               "blue subtracting.")


@st.cache_resource(max_entries=4, show_spinner="Loading the model's layers…")
def _load_layers(root: str, name: str, layers_sha256: str) -> LayersRuntime:
    # Keyed by the layers file's recorded checksum: a model saved or exported again loads afresh.
    return LayersRuntime.load(name, ModelStore(root))


def layers_runtime(entry: Entry) -> LayersRuntime:
    """The shared, read-only `core.serving.inside.LayersRuntime` of a store entry, checked against
    its recorded checksum when it is loaded.

    Raises:
        core.storage.store.MissingFileError: the model has no layers file (the message says how to
            write one).
        core.storage.store.StoreError: a layers file that is missing, altered or cannot be used.
    """
    checksum = str(entry.info.files.get(LAYERS_SUFFIX, ""))
    return _load_layers(str(entry.path.parent), entry.name, checksum)
