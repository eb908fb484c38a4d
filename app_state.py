"""The Streamlit glue the pages share: session setup, the sidebar model picker, cached predictors,
the drawing canvas, the training-job manager, and turning exceptions into messages.

This is the only module besides the pages that imports Streamlit. Models are served through their
exported files (``core.serving``, ONNX Runtime): only a training run on the Train page imports
TensorFlow (until training moves to Dask workers).
"""

from __future__ import annotations

import functools
import gc
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
FINETUNE = "finetune"  # TrainingJob.info["kind"] of a fine-tuning run


# --- Streamlit's Keras reset ------------------------------------------------------------------------

def _keep_keras_state() -> None:
    """Stop Streamlit from calling ``keras.backend.clear_session()`` after every script run.

    Streamlit (``script_runner._clean_problem_modules``, 1.x) does that whenever Keras is imported.
    Here it is harmful: it resets Keras' global state under a running training thread, drops
    TensorFlow's kernel cache (the next prediction is ~15x slower) and runs a full garbage
    collection, holding the GIL for ~0.5 s per rerun. With a 1 s progress fragment that starves
    the training thread: its first step (graph tracing) took 80-200 s instead of 3 s. Models here
    live in ``st.cache_resource`` and never need that reset. Matplotlib's clean-up is kept.
    """
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:  # a future Streamlit without the hook: nothing to undo
        return
    if getattr(getattr(script_runner, "_clean_problem_modules", None), "keeps_keras", False):
        return

    def clean_problem_modules() -> None:
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")

    clean_problem_modules.keeps_keras = True
    if hasattr(script_runner, "_clean_problem_modules"):
        script_runner._clean_problem_modules = clean_problem_modules


_keep_keras_state()


def _skip_bare_mode_check() -> None:
    """Spare the first page of a new server Streamlit's one-time "are we in a REPL?" check.

    On the first element a process sends, Streamlit (``delta_generator._maybe_print_use_warning``,
    1.x) calls ``inspect.stack()`` to warn people who run a script with plain ``python`` instead of
    ``streamlit run``. With TensorFlow-sized ``sys.modules`` that walk takes 100-150 ms here, on the
    critical path of the first Home visit (bench/app_latency.py, home_s; py-spy). Under a running
    server the warning can never apply, so it is marked as done; without a runtime nothing changes.
    """
    from streamlit import delta_generator
    from streamlit.runtime import Runtime

    if Runtime.exists() and hasattr(delta_generator, "_use_warning_has_been_displayed"):
        delta_generator._use_warning_has_been_displayed = True


_skip_bare_mode_check()

_frozen: set[str] = set()
_frozen_lock = threading.Lock()


def _freeze_heap_once(reason: str) -> None:
    """Move every object alive now (TensorFlow's and Keras' modules, mostly) out of the cyclic
    garbage collector's reach, once per ``reason``.

    Streamlit runs a full ``gc.collect()`` after every script run (``runner.postScriptGC``). With
    TensorFlow loaded that scans ~350k objects and holds the GIL for ~0.5 s; with the 1 s progress
    fragment it starves the training thread (an MLP's test evaluation took 10 s instead of 1 s).
    Frozen objects are still freed by reference counting; only cycles among them are never
    collected, which suits modules that stay loaded for the life of the server.
    """
    with _frozen_lock:
        if reason in _frozen:
            return
        _frozen.add(reason)
    gc.freeze()


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


# --- training jobs ------------------------------------------------------------------------------

class TrainingBusy(RuntimeError):
    """A training run is already going on this server."""


@dataclass
class _Slot:
    job: object | None = None  # core.learning.train.TrainingJob
    serial: int = 0


class TrainingManager:
    """At most one ``TrainingJob`` per server (two would only thrash two cores).

    Shared by every session through ``training_manager()``; all methods are thread-safe. The last
    job is kept after it ends, so its curves and result stay visible.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slot = _Slot()

    @property
    def job(self):
        with self._lock:
            return self._slot.job

    @property
    def serial(self) -> int:
        """Counts started jobs; a page notices a new job when this changes."""
        with self._lock:
            return self._slot.serial

    def running(self) -> bool:
        job = self.job
        return job is not None and not job.done

    def start(self, cfg, owner: str):
        """Start training ``cfg`` in the background for session ``owner``.

        Raises:
            TrainingBusy: a job is already running.
        """
        from core.learning.train import TrainingJob, save_result

        import keras  # noqa: F401 - loaded here, not on the job's thread, so the heap can be frozen after it

        _freeze_heap_once("tensorflow")
        root = config.models_dir()  # captured now: the job saves where the visitor was looking

        def on_done(result) -> dict | None:
            if result.stopped or result.model is None:
                return None
            name = save_result(result, ModelStore(root), command="streamlit: Train page")
            result.model = None  # saved; free the memory while the job is kept for display
            return {"model_name": name, "models_dir": str(root)}

        return self._start(lambda: TrainingJob(cfg, owner=owner, on_done=on_done))

    def start_finetune(self, base_name: str, owner: str, corrections=None):
        """Fine-tune a copy of the store's model ``base_name`` on the stored corrections, in the
        same one-job slot as training, for session ``owner``. The result is saved as a new model.

        Args:
            base_name: the model to start from (it is never modified).
            owner: the session that may stop the run.
            corrections: a ``core.corrections.CorrectionStore``; default: the app's.

        Raises:
            TrainingBusy: a job is already running.
            ValueError: there are no corrections yet.
            StoreError: the base model cannot be found or loaded.
        """
        from core.corrections import CorrectionStore
        from core.learning.finetune import (DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LEARNING_RATE,
                                            DEFAULT_MNIST_MIX, finetune, save_finetuned)
        from core.learning.model import ModelSpec, default_spec
        from core.learning.persist import load_model
        from core.learning.train import TrainConfig, TrainingJob

        import keras  # noqa: F401 - as in start()

        _freeze_heap_once("tensorflow")
        root = config.models_dir()
        models = ModelStore(root)
        # A snapshot: corrections saved while it runs wait for the next run.
        x, y = (CorrectionStore() if corrections is None else corrections).arrays()
        if len(y) == 0:
            raise ValueError("There are no corrections to learn from yet. Correct a few predictions on the "
                             "Draw or Upload page first.")
        self._raise_if_busy()  # before the (slower) model load
        base_meta = models.meta(base_name)
        base_model = load_model(models, base_name)  # a private copy: the served one stays untouched
        try:
            spec = ModelSpec.from_dict(base_meta["hyperparameters"]["spec"])
        except (KeyError, TypeError, ValueError):
            family = str(base_meta.get("family"))
            spec = default_spec(family if family in ("mlp", "cnn") else "cnn")
        # Describes the run for the progress panel; ``finetune`` builds the same settings itself.
        cfg = TrainConfig(spec=spec, epochs=DEFAULT_EPOCHS, batch_size=DEFAULT_BATCH_SIZE,
                          learning_rate=DEFAULT_LEARNING_RATE, train_size=DEFAULT_MNIST_MIX, val_fraction=0.0,
                          augment=True)

        def run(hook, stop):
            return finetune(base_model, x, y, base_name=base_name, base_meta=base_meta, hook=hook, stop=stop)

        def on_done(result) -> dict | None:
            if result.stopped or result.model is None:
                return None
            name = save_finetuned(result, ModelStore(root), command=f"streamlit: Train page, fine-tuned {base_name}")
            result.model = None
            return {"model_name": name, "models_dir": str(root),
                    "corrections_accuracy_before": result.corrections_accuracy_before,
                    "corrections_accuracy_after": result.corrections_accuracy_after,
                    "base_test_accuracy": result.base_test_accuracy}

        def make_job():
            job = TrainingJob(cfg, owner=owner, on_done=on_done, run=run)
            job.info.update(kind=FINETUNE, base_model=base_name, corrections=int(len(y)), mnist_mix=DEFAULT_MNIST_MIX)
            return job

        return self._start(make_job)

    def _busy_message(self, current) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(current.started_at))
        what = "fine-tuning run" if current.info.get("kind") == FINETUNE else "training run"
        return (f"A {what} started at {since} is still going (one run at a time on this server). "
                "Its progress is shown below; start yours when it has finished.")

    def _raise_if_busy(self) -> None:
        with self._lock:
            current = self._slot.job
            if current is not None and not current.done:
                raise TrainingBusy(self._busy_message(current))

    def _start(self, make_job):
        """Put ``make_job()`` in the slot and start it, unless a job is running (TrainingBusy)."""
        with self._lock:
            current = self._slot.job
            if current is not None and not current.done:
                raise TrainingBusy(self._busy_message(current))
            job = make_job()
            self._slot = _Slot(job, self._slot.serial + 1)
        return job.start()

    def stop(self, owner: str) -> bool:
        """Ask the running job to stop; only its owner may. Returns whether a stop was requested."""
        job = self.job
        if job is None or job.done or job.owner != owner:
            return False
        job.request_stop()
        return True

    def snapshot(self) -> dict | None:
        """The current (or last) job's snapshot, or None if no job has run since the server started."""
        job = self.job
        return job.snapshot() if job is not None else None


@st.cache_resource
def training_manager() -> TrainingManager:
    """The server's one training manager."""
    return TrainingManager()


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
