"""The Train page's form: its settings in the session, in the page's address (a share link) and as a
`TrainConfig`.

The settings live in the URL's query parameters (`core.learning.settings`): opening a link with
them fills the form, and the form's settings are written back to the address after every change,
beside the visitor's owner token. The link shown to share carries the settings only.

The architecture choice sits above the form: "Custom" opens the layer editor (`ui.architecture`),
which answers live, outside the form.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from core.learning.architecture import check_stack
from core.learning.augment import DEGRADE_SHARE, LOWRES_SIDES
from core.learning.model import DEFAULT_CNN_FILTERS, DEFAULT_MLP_HIDDEN, FAMILIES, ModelSpec, default_spec
from core.learning.settings import PARAMS, from_query, has_settings, parse_sizes, to_query
from core.learning.train import MAX_SEED, MIN_LEARNING_RATE, TrainConfig
from core.storage.info import ModelInfo
from ui import architecture as layer_editor

QUICK_SIZE, QUICK_EPOCHS = 6000, 1
DEFAULT_HIDDEN = {"cnn": "256", "mlp": ",".join(map(str, DEFAULT_MLP_HIDDEN))}
TRAIN_SIZES = [1000, 3000, 6000, 10000, 20000, 30000, 45000, 60000]
BATCH_SIZES = [32, 64, 128, 256, 512, 1024]
APPLIED = "train_link_applied"  # the query parameters last applied to (or written from) the form
FAMILY_LABELS = {"cnn": "CNN (convolutional)", "mlp": "MLP (dense layers)", "custom": "Custom (your layers)"}


def _state(cfg: TrainConfig) -> dict:
    """The form's session-state values for ``cfg`` (a custom stack's layers: `ui.architecture.set_layers`;
    the presets' inputs keep their values then)."""
    spec = cfg.spec
    preset = {} if spec.family == "custom" else {
        "train_filters": ",".join(map(str, spec.filters or DEFAULT_CNN_FILTERS)),
        "train_hidden": ",".join(map(str, spec.hidden)),
        "train_dropout": float(spec.dropout),
        "train_batch_norm": bool(spec.batch_norm),
    }
    return {
        "train_family": spec.family, **preset,
        "train_epochs": int(cfg.epochs),
        "train_batch_size": int(cfg.batch_size),
        "train_lr": float(cfg.learning_rate),
        "train_schedule": cfg.schedule,
        "train_size": int(cfg.train_size if cfg.train_size is not None else 60000),
        "train_val_fraction": float(cfg.val_fraction),
        "train_augment": bool(cfg.augment),
        "train_smoothing": float(cfg.label_smoothing),
        "train_seed": int(cfg.seed),
    }


def _link_params() -> dict[str, str]:
    return {key: str(value) for key, value in st.query_params.to_dict().items() if key != "owner"}


def init_state() -> None:
    """Declare the form's values once; a link with settings (``?arch=cnn&epochs=5...``) fills them.
    A link whose settings cannot be used shows a warning and leaves the form as it was."""
    for key, value in _state(TrainConfig(spec=default_spec("cnn"))).items():
        st.session_state.setdefault(key, value)
    layer_editor.init_state()
    params = _link_params()
    if not has_settings(params) or params == st.session_state.get(APPLIED):
        return
    st.session_state[APPLIED] = params
    try:
        cfg = from_query(params)
    except (ValueError, TypeError) as exc:
        st.warning(f"The settings in this page's address were not used: {exc}", icon=":material/link_off:")
        return
    st.session_state.update(_state(cfg))
    if cfg.spec.family == "custom":
        layer_editor.set_layers(cfg.spec.layers)
    st.toast("The form has the settings from the link.", icon=":material/link:")


def _on_family_change() -> None:
    """A new preset starts from its own defaults: layer sizes, dropout and batch normalization."""
    family = st.session_state["train_family"]
    if family in DEFAULT_HIDDEN:
        spec = default_spec(family)
        st.session_state["train_hidden"] = DEFAULT_HIDDEN[family]
        st.session_state["train_dropout"] = float(spec.dropout)
        st.session_state["train_batch_norm"] = bool(spec.batch_norm)


def _sizes(text: str, what: str) -> tuple[int, ...]:
    try:
        sizes = parse_sizes(str(text).replace(";", ","))
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if not sizes:
        raise ValueError(f"{what}: enter at least one size, like 256.")
    return sizes


def config(quick: bool = False) -> TrainConfig:
    """The form's values as a TrainConfig (``quick``: `QUICK_SIZE` images, `QUICK_EPOCHS` epoch).

    Raises:
        ValueError: values the run would refuse, with a message for the visitor (a custom stack's
            names the layer and why: `ModelSpec`, `TrainConfig`).
    """
    s = st.session_state
    family = s["train_family"]
    if family == "custom":
        layers = layer_editor.layers()
        check_stack(layers, int(s["train_batch_size"]))  # first: its message names the form's batch size
        spec = ModelSpec(family="custom", layers=layers)
    else:
        spec = ModelSpec(
            family=family, hidden=_sizes(s["train_hidden"], "Dense layers"),
            filters=_sizes(s["train_filters"], "Conv filters") if family == "cnn" else (),
            dropout=float(s["train_dropout"]), batch_norm=bool(s["train_batch_norm"]),
        )
    size = QUICK_SIZE if quick else int(s["train_size"])
    cfg = TrainConfig(
        spec=spec, epochs=QUICK_EPOCHS if quick else int(s["train_epochs"]), batch_size=int(s["train_batch_size"]),
        learning_rate=float(s["train_lr"]), schedule=s["train_schedule"], train_size=size,
        val_fraction=float(s["train_val_fraction"]), augment=bool(s["train_augment"]),
        label_smoothing=float(s["train_smoothing"]), seed=int(s["train_seed"]),
    )
    n_fit = size - round(size * cfg.val_fraction)
    if n_fit < cfg.batch_size:
        raise ValueError(f"Only {n_fit:,} images are left for training after validation, fewer than one batch of "
                         f"{cfg.batch_size}. Use more images or a smaller batch.")
    return cfg


def _with(options: list[int], value: int) -> list[int]:
    """``options`` with ``value`` among them (a link may carry a value between the usual ones)."""
    return sorted({*options, int(value)})


def architecture() -> None:
    """Draw the architecture choice and, for "Custom", the layer editor (live, outside the form)."""
    st.radio("Architecture", list(FAMILIES), key="train_family", horizontal=True, on_change=_on_family_change,
             format_func=FAMILY_LABELS.get,
             help="The CNN reads strokes with convolutions (about 99% accuracy); the MLP is a plain "
                  "stack of dense layers (about 98%); Custom is the stack of layers you build below.")
    if st.session_state["train_family"] == "custom":
        layer_editor.editor(int(st.session_state["train_batch_size"]))


def form() -> tuple[bool, bool]:
    """Draw the form (the architecture's own inputs for the presets); returns (start pressed, quick run pressed)."""
    s = st.session_state
    with st.form("train_form", border=True):
        family = s["train_family"]
        cnn = family == "cnn"
        a, b = st.columns(2)
        if cnn:
            a.text_input("Conv filters", key="train_filters", help="Filters per conv block, 1 to 3 blocks, e.g. 32,64.")
        if family == "custom":
            a.caption("Layers: the custom stack above.")
        else:
            a.text_input("Dense layers" if cnn else "Hidden layers", key="train_hidden",
                         help="Units per dense layer before the output, e.g. 256 or 256,128.")
        b.number_input("Epochs", min_value=1, max_value=100, step=1, key="train_epochs")
        b.select_slider("Batch size", options=_with(BATCH_SIZES, s["train_batch_size"]), key="train_batch_size")
        a.number_input("Peak learning rate", min_value=MIN_LEARNING_RATE, max_value=1.0, step=5e-4, format="%.4f",
                       key="train_lr", help="One-cycle schedule: warms up to this rate, then decays.")
        b.number_input("Validation share", min_value=0.0, max_value=0.5, step=0.05, format="%.2f",
                       key="train_val_fraction")
        st.select_slider("Training images", options=_with(TRAIN_SIZES, s["train_size"]), key="train_size",
                         format_func=lambda v: f"{v:,}", help="Fewer images train faster and score a little lower.")
        st.checkbox("Augment like real inputs", key="train_augment",
                    help=f"Every image slightly rotated, scaled, sheared and shifted; {DEGRADE_SHARE:.0%} of them "
                         "each also get thicker or thinner strokes, a lower resolution "
                         f"({LOWRES_SIDES[0]}-{LOWRES_SIDES[1]} px and back) or a blur. What drawings and photos "
                         "do to a digit: the shipped model learned with it.")
        with st.expander("More settings"):
            c, d = st.columns(2)
            if family != "custom":  # a custom stack has its own dropout and batch normalization layers
                c.number_input("Dropout", min_value=0.0, max_value=0.85, step=0.05, format="%.2f",
                               key="train_dropout")
            d.number_input("Label smoothing", min_value=0.0, max_value=0.45, step=0.05, format="%.2f",
                           key="train_smoothing")
            c.selectbox("Learning-rate schedule", ["onecycle", "constant"], key="train_schedule",
                        format_func={"onecycle": "one-cycle", "constant": "constant"}.get)
            d.number_input("Seed", min_value=0, max_value=MAX_SEED, step=1, key="train_seed",
                           help="Seeds the split, the shuffling, the augmentation and the first weights.")
            if family != "custom":
                c.checkbox("Batch normalization", key="train_batch_norm")
        start_col, quick_col = st.columns(2)
        submitted = start_col.form_submit_button("Start training", type="primary", key="train_submit",
                                                 width="stretch")
        quick = quick_col.form_submit_button("Quick run", key="train_quick", width="stretch",
                                             help=f"{QUICK_SIZE:,} images, {QUICK_EPOCHS} epoch, the other settings "
                                                  "as above: a result in seconds.")
    return submitted, quick


def share(cfg: TrainConfig | None) -> None:
    """Write ``cfg`` into the page's address (beside the owner token) and show the link that shares
    it: the settings only. None (the form holds settings a run would refuse): the last usable ones."""
    if cfg is not None:
        params = to_query(cfg)
        if _link_params() != params:
            for key in PARAMS.keys() - params.keys():  # the other architecture's parameters (a preset's or custom)
                if key in st.query_params:
                    del st.query_params[key]
            st.query_params.update(params)
        st.session_state[APPLIED] = params
    params = st.session_state.get(APPLIED) or to_query(TrainConfig(spec=default_spec("cnn")))
    base = (st.context.url or "").split("?")[0].rstrip("/")
    # st.context.url is the address in the browser: the app's, or this page's when it was opened directly.
    base = base if base.endswith("/Train") else base + "/Train"
    st.caption("Share these settings (the link fills this form for whoever opens it; it holds no owner token):")
    st.code(f"{base}?{urlencode(params, safe=',')}", language=None, wrap_lines=True)


def train_again_link(info: ModelInfo) -> None:
    """"Train again with these settings": a link to the Train page whose address carries the
    settings that made the stored model (its recorded hyperparameters); a caption when they were not
    recorded or are no longer accepted."""
    try:
        cfg = TrainConfig.from_dict(info.hyperparameters)
    except (TypeError, ValueError, AttributeError):
        st.caption("The settings that made this model were not recorded, or are no longer accepted.")
        return
    st.page_link("pages/1_Train.py", label="Train again with these settings", icon=":material/replay:",
                 query_params=to_query(cfg), help="Opens the Train page with this model's settings in the form.")
