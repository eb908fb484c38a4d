"""The Streamlit glue the pages share: session setup, the sidebar model picker, cached predictors,
the drawing canvas, and turning exceptions into messages (training runs: `ui.runs`).

Models are served through their exported files (``core.serving``, ONNX Runtime) and trained on
Dask workers (``core.learning.runs``): the server never imports TensorFlow.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from core import config
from core.store import Entry, Listing, ModelStore, StoreError

ROOT = Path(__file__).resolve().parent
_LOG = logging.getLogger(__name__)

# Session-state keys (plain keys, not widget keys, so they survive page switches).
SESSION_ID = "session_id"
MODEL_NAME = "model_name"
PICKER_KEY = "sidebar_model"

FAMILY_LABELS = {"cnn": "CNN", "mlp": "MLP"}


# --- session ------------------------------------------------------------------------------------

def init_session() -> str:
    """Declare this visitor's session state once; returns the session's owner id."""
    st.session_state.setdefault(SESSION_ID, uuid.uuid4().hex)
    st.session_state.setdefault(MODEL_NAME, None)
    return st.session_state[SESSION_ID]


def page(title: str, icon: str, *, layout: str = "centered") -> Entry | None:
    """Common page start: page config, session state, the sidebar model picker.

    Returns:
        The store entry of the model this visitor uses, or None when the store is empty.
    """
    st.set_page_config(page_title=f"{title} · Digit recognizer", page_icon=icon, layout=layout)
    init_session()
    return model_picker()


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


# --- model picker -------------------------------------------------------------------------------

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


def _fmt_accuracy(meta: dict) -> str:
    acc = meta.get("test_accuracy")
    return f"{acc:.2%}" if isinstance(acc, (int, float)) else "not measured"


def model_label(entry: Entry, default: str | None) -> str:
    """A short picker label: name and test accuracy (a star marks the server's default)."""
    star = " ★" if entry.name == default else ""
    return f"{entry.name} · {_fmt_accuracy(entry.meta)}{star}"


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


def model_summary(meta: dict) -> str:
    """One line about a model: family, parameters, test accuracy, training date."""
    family = FAMILY_LABELS.get(str(meta.get("family")), str(meta.get("family", "?")))
    parts = [f"**{family}**"]
    params = meta.get("params", meta.get("param_count"))
    if isinstance(params, int):
        parts.append(f"{params:,} parameters")
    parts.append(f"test accuracy **{_fmt_accuracy(meta)}**")
    created = str(meta.get("created", ""))[:16].replace("T", " ")
    if created:
        parts.append(f"trained {created} UTC")
    return " · ".join(parts)


def training_summary(meta: dict) -> str:
    """When and how a model was trained, as one sentence."""
    created = str(meta.get("created", ""))[:16].replace("T", " ")
    hp = meta.get("hyperparameters") or {}
    parts = [f"Trained {created} UTC" if created else "Trained"]
    if isinstance(meta.get("train_seconds"), (int, float)):
        parts.append(f"in {meta['train_seconds']:.0f} s")
    if hp.get("epochs"):
        size = hp.get("train_size") or 60000
        parts.append(f"on {size:,} images, {hp['epochs']} epoch{'s' if hp['epochs'] != 1 else ''}")
    return " ".join(parts) + "."


def model_card(entry: Entry, *, container=None) -> None:
    """Family, parameters, test accuracy and training date of one model, as a caption."""
    (container or st).caption(model_summary(entry.meta))


# --- predictors ---------------------------------------------------------------------------------

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
    checksum = str((entry.meta.get("files") or {}).get(".onnx", ""))
    return _load_predictor(str(entry.path.parent), entry.name, checksum)


def require_model(entry: Entry | None) -> Entry:
    """The visitor's model entry, or a message pointing to the Train page and ``st.stop()``."""
    if entry is None:
        st.info("There is no trained model yet. Train one on the **Train** page, then come back.")
        if page_exists("pages/1_Train.py"):
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


def model_view(x28, size_px: int = 168):
    """The (28, 28) float image in [0, 1] the model saw, upscaled with nearest-neighbour (crisp pixels)."""
    import numpy as np
    from PIL import Image

    pixels = np.clip(np.rint(np.asarray(x28, np.float32).reshape(28, 28) * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((size_px, size_px), Image.Resampling.NEAREST)


# --- the drawing canvas -----------------------------------------------------------------------------

_CANVAS_COMPONENT = "streamlit-drawable-canvas.streamlit_drawable_canvas"  # the package's own component
_FAST_CANVAS_COMPONENT = "digits.drawing_canvas"
# In the component's bundle the sender is built as ``h.sender = Nh((c) => Ic(h, c), Bc)``: its last
# argument names the delay constant, defined once as ``Bc = 200`` (names change with each build).
_SENDER_RE = re.compile(r"\.sender\s*=\s*[\w$]+\(\s*\(?\s*[\w$]+\s*\)?\s*=>\s*[\w$]+\([^()]*\)\s*,\s*([\w$]+)\s*\)")
# Loads the package's own bundle, served by Streamlit from the package, with its delay constant
# replaced, and hands every mount to it.
_CANVAS_LOADER_JS = """
const PATH = %(path)s, FALLBACK = %(url)s, FIND = %(find)s, REPLACE = %(replace)s;
let canvasModule = null, loading = null;
// Where the bundle is: first on the server's address as the app itself found it (its last health
// check: right behind a proxy too), then on the address the Python side computed.
const candidates = () => {
  const checks = performance.getEntriesByType("resource").map((e) => e.name)
    .filter((name) => /\\/_stcore\\/(health|host-config)(\\?|$)/.test(name));
  const last = checks[checks.length - 1];
  const urls = [new URL(FALLBACK, window.location.href).href];
  if (last) urls.unshift(last.slice(0, last.lastIndexOf("/_stcore/")) + PATH);
  return [...new Set(urls)];
};
const load = async () => {
  let problem = "no address";
  for (const url of candidates()) {
    try {
      const response = await fetch(url);
      if (!response.ok || !/javascript/.test(response.headers.get("content-type") || "")) {
        problem = `HTTP ${response.status} from ${url}`;
        continue;
      }
      const source = (await response.text()).replace(FIND, REPLACE);
      return (canvasModule = await import(URL.createObjectURL(new Blob([source], {type: "text/javascript"}))));
    } catch (error) {
      problem = String(error);
    }
  }
  throw new Error(`The drawing canvas could not be loaded (${problem}).`);
};
export default function (component) {
  if (canvasModule) return canvasModule.default(component);
  loading ??= load().catch((error) => { loading = null; throw error; });
  return loading.then((module) => module.default(component));
}
"""
_canvas_lock = threading.Lock()
_canvas_problem_logged = False


def canvas_send_patch(source: str, delay_ms: int) -> tuple[str, str]:
    """The edit of streamlit-drawable-canvas's JavaScript bundle that sets its delay after a stroke.

    Returns:
        ``(find, replace)``: the constant's definition as it appears (once) in ``source``, and the
        same definition with ``delay_ms``.

    Raises:
        ValueError: the bundle does not have the expected sender (another version of the component).
    """
    senders = _SENDER_RE.findall(source)
    if len(senders) != 1:
        raise ValueError(f"expected one debounced sender in the canvas bundle, found {len(senders)}")
    name = re.escape(senders[0])
    found = re.findall(rf"(?<![\w$.]){name}\s*=\s*\d+(?![\w$.])", source)
    if len(found) != 1 or source.count(found[0]) != 1:
        raise ValueError(f"expected one definition of the canvas's send delay {senders[0]!r}, found {len(found)}")
    return found[0], f"{senders[0]} = {int(delay_ms)}"


@functools.lru_cache(maxsize=4)
def _fast_canvas(delay_ms: int, base_url_path: str):
    """The canvas component, sending ``delay_ms`` after a stroke instead of the shipped 200 ms."""
    import json

    import streamlit_drawable_canvas

    build = Path(streamlit_drawable_canvas.__file__).resolve().parent / "frontend" / "build"
    scripts, styles = sorted(build.glob("index-*.js")), sorted(build.glob("index-*.css"))
    if len(scripts) != 1 or len(styles) != 1:
        raise ValueError(f"expected one script and one stylesheet in {build}")
    find, replace = canvas_send_patch(scripts[0].read_text(encoding="utf-8"), delay_ms)
    path = f"/_stcore/bidi-components/{_CANVAS_COMPONENT}/{scripts[0].name}"
    url = f"/{base_url_path}{path}" if base_url_path else path
    js = _CANVAS_LOADER_JS % {"path": json.dumps(path), "url": json.dumps(url), "find": json.dumps(find),
                              "replace": json.dumps(replace)}
    return st.components.v2.component(_FAST_CANVAS_COMPONENT, js=js, css=styles[0].read_text(encoding="utf-8"),
                                      html='<div class="canvas-root"></div>', isolate_styles=True)


def drawing_canvas(**kwargs):
    """streamlit-drawable-canvas's ``st_canvas(**kwargs)``, sending each stroke sooner.

    As shipped, the component (0.13) waits a fixed 200 ms after a stroke before it sends the
    drawing, two thirds of the 300 ms a reading may take (bench/app_latency.py). Here the same
    component, served from the installed package, runs with ``config.canvas_send_ms()`` instead
    (5 ms; ``DIGITS_CANVAS_SEND_MS=shipped`` keeps 200). Another version of the component that
    cannot be patched runs unchanged, with a warning in the server log.
    """
    global _canvas_problem_logged
    import streamlit_drawable_canvas

    with _canvas_lock:
        shipped = vars(streamlit_drawable_canvas).setdefault("_digits_shipped_out", streamlit_drawable_canvas.out)
        renderer, delay_ms = shipped, config.canvas_send_ms()
        if delay_ms is not None:
            base = str(st.get_option("server.baseUrlPath") or "").strip("/")
            try:
                renderer = _fast_canvas(delay_ms, base)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                if not _canvas_problem_logged:
                    _canvas_problem_logged = True
                    _LOG.warning("The drawing canvas keeps its own 200 ms delay after a stroke: %s", exc)
        streamlit_drawable_canvas.out = renderer
    return streamlit_drawable_canvas.st_canvas(**kwargs)


# --- around a prediction: "not a digit", corrections --------------------------------------------

NOT_A_DIGIT = ("This is probably not a digit — not sure. The model must still answer 0–9, so the digit "
               "shown is only its nearest guess.")


def not_a_digit_warning(container=None) -> None:
    """Say in words that the "not a digit" detector flagged the image (the metrics stay)."""
    (container or st).warning(NOT_A_DIGIT, icon=":material/help:")


def _save_correction(image28, predicted: int | None, source: str, model_name: str, label_key: str,
                     flash_key: str) -> None:
    # A button callback: runs before the rerun, so the digit picker can be reset here.
    import sqlite3

    from core.corrections import CorrectionStore

    label = st.session_state.get(label_key)
    if label is None:
        st.session_state[flash_key] = ("error", "Pick the right digit first, then save.")
        return
    try:
        new_id = CorrectionStore().add(image28, int(label), predicted, source, model_name)
    except (ValueError, OSError, sqlite3.Error) as exc:
        st.session_state[flash_key] = ("error", f"The correction could not be saved: {exc}")
        return
    st.session_state[label_key] = None
    st.session_state[flash_key] = ("success", f"Saved correction #{new_id}: this is a {int(label)}. "
                                              "It can be reviewed and used for fine-tuning on the Train page.")


def correction_form(targets: list[tuple[str, object, int | None]], *, source: str, model_name: str,
                    label_key: str, save_key: str, which_key: str | None = None) -> None:
    """"Wrong? The right digit is …": a digit picker and a save button storing a correction.

    Args:
        targets: ``(title, image28, predicted)`` per digit that can be corrected: the float (28, 28)
            input the model saw and its answer. With several (a number), a picker asks which one.
        source: "draw" or "upload".
        model_name: the store name of the model that answered.
        label_key, save_key, which_key: the page-scoped widget keys.
    """
    from core.corrections import STORED_NOTE

    flash_key = f"{save_key}_flash"
    if len(targets) > 1:
        # Two pickers side by side and the button under them: it fits a narrow column too.
        which_col, label_col = st.columns(2, vertical_alignment="bottom")
        which = which_col.selectbox("Which digit", range(len(targets)), format_func=lambda i: targets[i][0],
                                    key=which_key or f"{save_key}_which")
        which = which if which is not None and which < len(targets) else 0
        save_col = st.container()
    else:
        label_col, save_col = st.columns(2, vertical_alignment="bottom")
        which = 0
    _, image28, predicted = targets[which]
    label = label_col.selectbox("Wrong? The right digit is", range(10), index=None, placeholder="pick a digit",
                                key=label_key)
    save_col.button("Save correction", key=save_key, disabled=label is None, icon=":material/save:",
                    on_click=_save_correction, args=(image28, predicted, source, model_name, label_key, flash_key))
    flash = st.session_state.pop(flash_key, None)
    if flash is not None:
        kind, message = flash
        if kind == "success":
            st.success(message, icon=":material/check_circle:")
            st.toast(message, icon=":material/check_circle:")
        else:
            st.error(message, icon=":material/error:")
    st.caption(STORED_NOTE)


# --- why this digit ---------------------------------------------------------------------------------

WHY_CAPTION = "Why this digit"
WHY_COLOURS = ("red marks the ink that pushed the model towards {digit}, blue the ink that spoke against it; "
               "the stronger the colour, the more it mattered (grey ink hardly did).")


def why_view(predictor, x28, digit: int, size_px: int = 112):
    """The saliency heatmap of ``digit`` over the 28x28 input (``core.serving.saliency``), with crisp pixels.

    Raises:
        ValueError: an input that is not a (28, 28) image in [0, 1].
    """
    from PIL import Image

    from core.serving.saliency import overlay, saliency

    heat = saliency(predictor, x28, digit)
    view = Image.fromarray(overlay(x28, heat, scale=max(1, size_px // 28)))
    return view if view.size == (size_px, size_px) else view.resize((size_px, size_px), Image.Resampling.NEAREST)


def why_image(predictor, x28, digit: int, container=None, size_px: int = 112) -> None:
    """Show which pixels drove the prediction (beside "What the model sees")."""
    container = container or st
    try:
        container.image(why_view(predictor, x28, digit, size_px), caption=WHY_CAPTION)
    except ValueError as exc:
        container.warning(f"No heatmap for this image: {exc}", icon=":material/warning:")


def why_caption(digit: int) -> None:
    """One line on the heatmap's colours."""
    st.caption(f"**{WHY_CAPTION}:** " + WHY_COLOURS.format(digit=digit))


def digit_tiles(predictor, digits, size_px: int = 84) -> None:
    """Per digit of a number: what the model saw, and the heatmap of why it read that digit."""
    st.image([model_view(d.image, size_px) for d in digits],
             caption=[f"{n}. sees {d.digit}" for n, d in enumerate(digits, start=1)], width=size_px)
    try:
        views = [why_view(predictor, d.image, d.digit, size_px) for d in digits]
    except ValueError as exc:
        st.warning(f"No heatmaps for these digits: {exc}", icon=":material/warning:")
        return
    st.image(views, caption=[f"{n}. why {d.digit}" for n, d in enumerate(digits, start=1)], width=size_px)
    st.caption("**Why:** " + WHY_COLOURS.format(digit="the digit read"))


# --- messages -----------------------------------------------------------------------------------

def show_error(exc: BaseException, what: str = "") -> None:
    """An exception as a clear ``st.error`` (never a traceback)."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{exc}", icon=":material/error:")


@contextmanager
def errors_shown(what: str = "", *, expected: tuple[type[BaseException], ...] = (ValueError, StoreError, OSError)
                 ) -> Iterator[None]:
    """Show expected errors raised inside the block as ``st.error`` and continue after it."""
    try:
        yield
    except expected as exc:
        show_error(exc, what)


def markdown_table(rows: list[dict], columns: dict[str, str], *, formats: dict[str, str] | None = None,
                   right: tuple[str, ...] = (), center: tuple[str, ...] = ()) -> str:
    """A GitHub-flavoured Markdown table: light to render, where a few rows need no data grid.

    Args:
        rows: one dict per row; a missing key or None shows as an empty cell.
        columns: row key -> column header, in display order.
        formats: row key -> ``str.format`` pattern for its values (a value it cannot format is
            shown as it is).
        right, center: keys of the columns aligned right or centred (others: left).

    Returns:
        The table's Markdown (``|`` and line breaks in cells are escaped).
    """
    formats = formats or {}

    def cell(key: str, value) -> str:
        if value is None:
            return ""
        text = str(value)
        if key in formats:
            try:
                text = formats[key].format(value)
            except (TypeError, ValueError):
                pass
        return text.replace("|", "\\|").replace("\n", " ")

    align = {key: "---:" if key in right else ":---:" if key in center else "---" for key in columns}
    lines = ["| " + " | ".join(header.replace("|", "\\|") for header in columns.values()) + " |",
             "| " + " | ".join(align[key] for key in columns) + " |"]
    lines += ["| " + " | ".join(cell(key, row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def page_exists(path: str) -> bool:
    """Whether a page file exists (pages added by others are linked only once they exist)."""
    return (ROOT / path).is_file()
