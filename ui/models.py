"""The visitor's model: the sidebar picker (a choice per session), the server's default, the
model's one-line summaries, and the shared predictors served from its exported file.

Predictors run on ONNX Runtime (`core.serving`): the server never imports TensorFlow.
"""

from __future__ import annotations

import streamlit as st

from core.storage.info import ModelInfo
from core.storage.store import Entry, Listing, ModelStore, StoreError


MODEL_NAME = "model_name"
PICKER_KEY = "sidebar_model"
FAMILY_LABELS = {"cnn": "CNN", "mlp": "MLP", "custom": "Custom"}


def store() -> ModelStore:
    """The model store (its folder is read from the environment on every call)."""
    return ModelStore()


def listing() -> Listing:
    """The store's models; a store that cannot be read lists nothing, with the reason as a problem."""
    try:
        return store().list()
    except OSError as exc:
        out = Listing()
        out.problems["store"] = f"The model store {store().root} cannot be read: {exc}"
        return out


def default_name(models: Listing) -> str | None:
    """The server's default model among ``models`` (None for an empty store)."""
    try:
        name = store().active_name()
    except OSError:
        name = None
    if name and models.get(name):
        return name
    return models.entries[0].name if models.entries else None


def select_model(name: str) -> None:
    """Make ``name`` this visitor's model (for this session only)."""
    st.session_state[MODEL_NAME] = name
    st.session_state[PICKER_KEY] = name


def _on_pick() -> None:
    st.session_state[MODEL_NAME] = st.session_state.get(PICKER_KEY)


def _fmt_accuracy(info: ModelInfo) -> str:
    return f"{info.test_accuracy:.2%}" if info.test_accuracy is not None else "not measured"


def model_label(entry: Entry, default: str | None) -> str:
    """A short picker label: name and test accuracy (a star marks the server's default)."""
    star = " ★" if entry.name == default else ""
    return f"{entry.name} · {_fmt_accuracy(entry.info)}{star}"


def current_entry(models: Listing | None = None) -> Entry | None:
    """The model this visitor uses: their pick if it still exists, else the server's default."""
    models = models if models is not None else listing()
    chosen = st.session_state.get(MODEL_NAME)
    if chosen and models.get(chosen):
        return models.get(chosen)
    name = default_name(models)
    return models.get(name) if name else None


def model_picker() -> Entry | None:
    """Sidebar: pick a model for this session, and a short card about it."""
    models = listing()
    default = default_name(models)
    with st.sidebar:
        st.markdown("#### Model")
        if not models.entries:
            st.warning("No trained model yet. Train one on the **Train** page.")
            return None
        chosen = st.session_state.get(MODEL_NAME)
        if chosen and not models.get(chosen):
            st.warning(f"The model {chosen!r} is no longer in the store; using {default!r} instead.")
            st.session_state[MODEL_NAME] = None
        configured = store().configured_active()
        if configured and not models.get(configured):
            reason = models.problems.get(configured, "it is not in the store")
            st.warning(f"The server's default model {configured!r} cannot be used ({reason}); "
                       f"serving {default!r} instead.")
        entry = current_entry(models)
        labels = {e.name: model_label(e, default) for e in models.entries}
        # The plain key is the truth; the widget is re-seeded from it before it is drawn, on every
        # run, because widget state does not carry over when the visitor switches pages.
        st.session_state[PICKER_KEY] = entry.name
        st.selectbox("Model used on every page", models.names(), key=PICKER_KEY, on_change=_on_pick,
                     format_func=labels.get, label_visibility="collapsed",
                     help="Your choice applies to your session only; other visitors keep theirs.")
        model_card(entry, container=st.sidebar)
        if default and entry.name == default:
            st.caption("★ the server's default model")
    return entry


def family_label(info: ModelInfo) -> str:
    """The architecture's display name ("CNN", "MLP")."""
    return FAMILY_LABELS.get(info.family, info.family)


def created_utc(info: ModelInfo) -> str:
    """When the model was saved, as ``YYYY-MM-DD HH:MM`` (UTC); empty when unknown."""
    return info.created[:16].replace("T", " ")


def model_summary(info: ModelInfo) -> str:
    """One line about a model: family, parameters, test accuracy, training date."""
    parts = [f"**{family_label(info)}**"]
    if info.params is not None:
        parts.append(f"{info.params:,} parameters")
    parts.append(f"test accuracy **{_fmt_accuracy(info)}**")
    if info.created:
        parts.append(f"trained {created_utc(info)} UTC")
    return " · ".join(parts)


def training_summary(info: ModelInfo) -> str:
    """When and how a model was trained, as one sentence."""
    hp = info.hyperparameters
    parts = [f"Trained {created_utc(info)} UTC" if info.created else "Trained"]
    if info.train_seconds is not None:
        parts.append(f"in {info.train_seconds:.0f} s")
    if hp.get("epochs"):
        size = hp.get("train_size") or 60000
        parts.append(f"on {size:,} images, {hp['epochs']} epoch{'s' if hp['epochs'] != 1 else ''}")
    return " ".join(parts) + "."


def model_card(entry: Entry, *, container=None) -> None:
    """Family, parameters, test accuracy and training date of one model, as a caption."""
    (container or st).caption(model_summary(entry.info))


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def _load_predictor(root: str, name: str, onnx_sha256: str):
    # Keyed by the exported file's checksum, so a model saved again under its name loads afresh.
    # ONNX Runtime only: no TensorFlow in the server (core.serving).
    from core.serving.predict import Predictor

    return Predictor.load(name, ModelStore(root))


def predictor(entry: Entry):
    """A shared, read-only ``core.serving.predict.Predictor`` for a store entry.

    Raises:
        StoreError: the model's files are gone, altered or cannot be loaded.
    """
    checksum = str(entry.info.files.get(".onnx", ""))
    return _load_predictor(str(entry.path.parent), entry.name, checksum)


def require_model(entry: Entry | None) -> Entry:
    """The visitor's model entry, or a message pointing to the Train page and ``st.stop()``."""
    if entry is None:
        st.info("There is no trained model yet. Train one on the **Train** page, then come back.")
        st.page_link("pages/1_Train.py", label="Train a model", icon=":material/model_training:")
        st.stop()
    return entry


def require_predictor(entry: Entry | None):
    """The visitor's predictor, or a clear message and ``st.stop()``."""
    entry = require_model(entry)
    try:
        return predictor(entry)
    except (StoreError, OSError, ValueError) as exc:
        st.error(f"The model {entry.name!r} cannot be used: {exc} Pick another model in the sidebar.")
        st.stop()


def use_model_button(name: str | None, key: str) -> None:
    """"Use this model": make the stored model ``name`` this visitor's (disabled while it already is)."""
    in_use = st.session_state.get(MODEL_NAME) == name
    st.button("Use this model", key=key, type="primary", disabled=not name or in_use,
              on_click=select_model, args=(name,), icon=":material/check:",
              help="Select it for your session: the Draw and Upload pages will use it.")
    if in_use:
        st.caption("You are using this model.")
