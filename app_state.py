"""The Streamlit glue the pages share: session setup, the sidebar model picker, cached predictors,
the training-job manager, and turning exceptions into messages.

This is the only module besides the pages that imports Streamlit. It never imports TensorFlow at
import time: Keras loads in ``predictor()`` (first Draw, Upload or Evaluate visit) and when a
training run starts, so the Home page opens without it.
"""

from __future__ import annotations

import gc
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

# Session-state keys (plain keys, not widget keys, so they survive page switches).
SESSION_ID = "session_id"
MODEL_NAME = "model_name"
PICKER_KEY = "sidebar_model"

FAMILY_LABELS = {"cnn": "CNN", "mlp": "MLP"}


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
def _load_predictor(root: str, name: str, mtime_ns: int):
    # Keyed by the file's mtime, so a model replaced on disk is loaded afresh. Imports TensorFlow.
    from core.predict import Predictor

    models = ModelStore(root)
    loaded = Predictor(models.load(name), name=name, meta=models.meta(name))
    _freeze_heap_once("tensorflow")
    return loaded


def predictor(entry: Entry):
    """A compiled, shared, read-only ``Predictor`` for a store entry.

    Raises:
        StoreError: the model file is gone or cannot be loaded.
    """
    try:
        mtime = entry.path.stat().st_mtime_ns
    except OSError as exc:
        raise StoreError(f"The model file of {entry.name!r} is missing ({exc.strerror}).") from exc
    return _load_predictor(str(entry.path.parent), entry.name, mtime)


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


# --- training jobs ------------------------------------------------------------------------------

class TrainingBusy(RuntimeError):
    """A training run is already going on this server."""


@dataclass
class _Slot:
    job: object | None = None  # core.train.TrainingJob
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
        from core.train import TrainingJob, save_result

        import keras  # noqa: F401 - loaded here, not on the job's thread, so the heap can be frozen after it

        _freeze_heap_once("tensorflow")
        root = config.models_dir()  # captured now: the job saves where the visitor was looking

        def on_done(result) -> dict | None:
            if result.stopped or result.model is None:
                return None
            name = save_result(result, ModelStore(root), command="streamlit: Train page")
            result.model = None  # saved; free the memory while the job is kept for display
            return {"model_name": name, "models_dir": str(root)}

        with self._lock:
            current = self._slot.job
            if current is not None and not current.done:
                since = time.strftime("%H:%M:%S", time.localtime(current.started_at))
                raise TrainingBusy(
                    f"A training run started at {since} is still going (one run at a time on this server). "
                    "Its progress is shown below; start yours when it has finished."
                )
            job = TrainingJob(cfg, owner=owner, on_done=on_done)
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


def page_exists(path: str) -> bool:
    """Whether a page file exists (pages added by others are linked only once they exist)."""
    return (ROOT / path).is_file()
