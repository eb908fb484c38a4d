"""The Train page's architecture editor ("Custom"): a stack of layers that the visitor adds, removes,
edits and reorders, with each layer's output shape and parameter count, the total and the training
memory estimate updated on every change. Cheap arithmetic (`core.learning.architecture`, no
TensorFlow), so it lives outside the form and answers live.

The stack lives in ``st.session_state[LAYERS]`` as ``[(row id, layer), ...]``; each row's inputs are
keyed by its id (``train_layer_<id>_filters``), so a value follows its layer when rows move. The
buttons are keyed by position: ``train_layer_up_2`` moves the second layer up.
"""

from __future__ import annotations

import streamlit as st

from core.learning import architecture as arch
from core.learning.architecture import Layer

LAYERS = "train_layers"  # [(row id, layer), ...], in order
NEXT_ID = "train_layer_next_id"
ADD_KIND = "train_layer_kind"
KIND_LABELS = {"conv": "Convolution", "pool": "Max pooling", "dense": "Dense", "dropout": "Dropout",
               "bn": "Batch normalization"}
# Per kind, its inputs: (field, label, min, max, step).
INPUTS: dict[str, tuple[tuple[str, str, float, float, float], ...]] = {
    "conv": (("filters", "Filters", 1, arch.MAX_FILTERS, 1), ("kernel", "Kernel", 1, arch.MAX_KERNEL, 1),
             ("stride", "Stride", 1, arch.MAX_STRIDE, 1)),
    "pool": (("size", "Window", 2, arch.MAX_POOL, 1),),
    "dense": (("units", "Units", 1, arch.MAX_UNITS, 1),),
    "dropout": (("rate", "Rate", 0.0, 0.89, 0.05),),  # below architecture.MAX_DROPOUT (0.9, exclusive)
    "bn": (),
}
WIDTHS = [0.35, 1.5, 1, 1, 1, 1.4, 1.1, 0.45, 0.45, 0.45]  # #, layer, 3 inputs, shape, parameters, 3 buttons


def init_state() -> None:
    """Declare the stack once: `core.learning.architecture.DEFAULT_STACK` to start from."""
    if LAYERS not in st.session_state:
        set_layers(arch.DEFAULT_STACK)
    st.session_state.setdefault(ADD_KIND, "conv")


def set_layers(layers: tuple[Layer, ...]) -> None:
    """Replace the stack (a share link's): new row ids, so no input keeps a value of the old rows."""
    start = int(st.session_state.get(NEXT_ID, 0))
    st.session_state[LAYERS] = [(start + i, layer) for i, layer in enumerate(layers)]
    st.session_state[NEXT_ID] = start + len(layers)


def _key(row_id: int, name: str) -> str:
    return f"train_layer_{row_id}_{name}"


def _sync() -> list[tuple[int, Layer]]:
    """The stack with the values the rows' inputs hold now (they change before the script reruns)."""
    rows = []
    for row_id, layer in st.session_state[LAYERS]:
        for name, *_ in INPUTS[layer.kind]:
            value = st.session_state.get(_key(row_id, name))
            if value is not None:
                layer = arch.with_value(layer, name, round(value, 4) if isinstance(value, float) else int(value))
        rows.append((row_id, layer))
    st.session_state[LAYERS] = rows
    return rows


def layers() -> tuple[Layer, ...]:
    """The stack being edited, in order."""
    return tuple(layer for _, layer in _sync())


def _move(row_id: int, step: int) -> None:
    rows = _sync()
    i = [r for r, _ in rows].index(row_id)
    j = i + step
    if 0 <= j < len(rows):
        rows[i], rows[j] = rows[j], rows[i]
    st.session_state[LAYERS] = rows


def _remove(row_id: int) -> None:
    st.session_state[LAYERS] = [row for row in _sync() if row[0] != row_id]


def _add() -> None:
    rows = _sync()
    row_id = int(st.session_state.get(NEXT_ID, 0))
    st.session_state[NEXT_ID] = row_id + 1
    st.session_state[LAYERS] = [*rows, (row_id, arch.DEFAULTS[st.session_state[ADD_KIND]])]


def _shape(row: arch.Row) -> str:
    return f"`{row.shape}`" if row.shape is not None else "—"


def _params(row: arch.Row) -> str:
    return f"{row.params:,}" if row.shape is not None else "—"


def _implied_row(row: arch.Row) -> None:
    cols = st.columns(WIDTHS, vertical_alignment="center")
    cols[1].markdown(f"*{row.label}*")
    cols[5].markdown(_shape(row))
    if row.keras:  # not the input
        cols[6].markdown(_params(row))


def _layer_row(row: arch.Row, row_id: int, layer: Layer, count: int) -> None:
    position = row.position
    cols = st.columns(WIDTHS, vertical_alignment="bottom")
    cols[0].markdown(f"**{position}**")
    cols[1].markdown(KIND_LABELS[layer.kind] + (" + ReLU" if layer.kind in ("conv", "dense") else ""))
    for col, (name, label, low, high, step) in zip(cols[2:5], INPUTS[layer.kind]):
        key = _key(row_id, name)
        st.session_state.setdefault(key, getattr(layer, name))
        col.number_input(label, min_value=low, max_value=high, step=step, key=key,
                         format="%.2f" if isinstance(step, float) else "%d")
    cols[5].markdown(_shape(row))
    cols[6].markdown(_params(row))
    cols[7].button("", icon=":material/arrow_upward:", key=f"train_layer_up_{position}", help="Move up",
                   on_click=_move, args=(row_id, -1), disabled=position == 1)
    cols[8].button("", icon=":material/arrow_downward:", key=f"train_layer_down_{position}", help="Move down",
                   on_click=_move, args=(row_id, 1), disabled=position == count)
    cols[9].button("", icon=":material/close:", key=f"train_layer_remove_{position}", help="Remove",
                   on_click=_remove, args=(row_id,))


def editor(batch_size: int) -> arch.Summary:
    """Draw the stack: one row per layer (its inputs, output shape, parameters and up / down / remove
    buttons), the implied input, flatten and output rows, the totals and the memory estimate at
    ``batch_size``, why the stack cannot be trained (if so), and the controls to add a layer.

    Returns:
        The stack's summary (`core.learning.architecture.summarize`).
    """
    rows = _sync()
    summary = arch.summarize(tuple(layer for _, layer in rows))
    head = st.columns(WIDTHS)
    for i, title in {0: "#", 1: "Layer", 2: "Settings", 5: "Output shape", 6: "Parameters"}.items():
        head[i].caption(title)
    for row in summary.rows:
        if row.implied:
            _implied_row(row)
        else:
            _layer_row(row, *rows[row.position - 1], len(rows))
    limit = arch.memory_limit()
    if summary.params is None:
        st.markdown("**Total: —** (the stack cannot be built as it is)")
    else:
        memory = arch.human_bytes(summary.memory(batch_size))
        of = f" of the worker's {arch.human_bytes(limit)}" if limit else ""
        st.markdown(f"**Total: {summary.params:,} parameters** · training memory at batch {batch_size}: "
                    f"about {memory}{of}")
    problem = summary.problem or arch.memory_problem(summary, batch_size, limit)
    if problem:
        st.error(problem, icon=":material/block:")
    kind_col, add_col = st.columns([3, 1], vertical_alignment="bottom")
    kind_col.selectbox("Layer to add", list(KIND_LABELS), format_func=KIND_LABELS.get, key=ADD_KIND)
    add_col.button("Add layer", key="train_layer_add", icon=":material/add:", on_click=_add, width="stretch",
                   disabled=len(rows) >= arch.MAX_LAYERS,
                   help=f"Adds it at the end; move it with the arrows. At most {arch.MAX_LAYERS} layers.")
    st.caption("Each convolution and dense layer is followed by a ReLU; convolutions and poolings use no "
               "padding. A Flatten before the first dense layer and the 10-way softmax output are added for you.")
    return summary
