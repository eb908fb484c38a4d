"""Train a network on MNIST in the background and watch its loss and accuracy live; review the
corrections visitors saved and fine-tune a model on them."""

import sqlite3
import time

import numpy as np
import pandas as pd
import streamlit as st

import app_state
from core.charts import class_distribution, digit_grid, history_figure
from core.corrections import CorrectionStore
from core.data import DataError, cached_mnist, to_model_input
from core.learning.model import DEFAULT_CNN_FILTERS, DEFAULT_MLP_HIDDEN, ModelSpec, default_spec
from core.learning.train import TrainConfig

QUICK_SIZE, QUICK_EPOCHS = 6000, 1
DEFAULT_HIDDEN = {"cnn": "256", "mlp": ",".join(map(str, DEFAULT_MLP_HIDDEN))}
TRAIN_SIZES = [1000, 3000, 6000, 10000, 20000, 30000, 45000, 60000]
BATCH_SIZES = [32, 64, 128, 256, 512, 1024]
ACTIVE_STATES = ("running", "stopping")
LIVE_REFRESH_S = 2.0  # seconds between redraws of the live progress panel
LIVE_MAX_POINTS = 300  # per-batch points drawn per curve while training
# The live curves are redrawn every third refresh (~6 s) and whenever an epoch ends; in between the
# unchanged figure is sent again, which the browser does not redraw. A Plotly redraw costs the
# visitor's browser ~0.3 CPU-s whatever the number of points; the progress bar and metrics
# cost ~0.1 (bench/app_latency.py, train_page_browser_cpu_s).
LIVE_CHART_REFRESH_S = 6.0
LIVE_FIGURE = "train_live_figure"  # session key: {"run", "epochs", "at", "figure"}

entry = app_state.page("Train", ":material/model_training:", layout="wide")
owner = app_state.init_session()
manager = app_state.training_manager()

st.session_state.setdefault("train_family", "cnn")
st.session_state.setdefault("train_hidden", DEFAULT_HIDDEN["cnn"])
st.session_state.setdefault("train_filters", ",".join(map(str, DEFAULT_CNN_FILTERS)))
st.session_state.setdefault("train_epochs", 3)
st.session_state.setdefault("train_batch_size", 128)
st.session_state.setdefault("train_lr", 1e-2)
st.session_state.setdefault("train_size", 60000)
st.session_state.setdefault("train_val_fraction", 0.1)
st.session_state.setdefault("train_augment", False)
st.session_state.setdefault("train_corrections_selected", [])

st.title("Train a model")
st.caption("Choose an architecture and its settings; training runs in the background on this server, "
           "one run at a time, while you watch the curves or use the other pages.")


# --- 1. The data -------------------------------------------------------------------------------

@st.cache_data(show_spinner="Loading MNIST…")
def data_overview(samples: int = 30, seed: int = 0) -> dict:
    mnist = cached_mnist()
    idx = np.random.default_rng(seed).choice(len(mnist.y_train), samples, replace=False)
    sample_in = to_model_input(mnist.x_train[idx])
    return {
        "images": mnist.x_train[idx].copy(), "labels": mnist.y_train[idx].copy(),
        "train_counts": np.bincount(mnist.y_train, minlength=10),
        "n_train": len(mnist.y_train), "n_test": len(mnist.y_test),
        "raw": (mnist.x_train.dtype.name, int(mnist.x_train.min()), int(mnist.x_train.max())),
        "model_input": (sample_in.dtype.name, sample_in.shape[1:], float(sample_in.min()), float(sample_in.max())),
    }


st.header("1 · The data", divider="gray")
try:
    data = data_overview()
except DataError as exc:
    app_state.show_error(exc, "MNIST cannot be loaded")
    st.stop()

grid_col, dist_col = st.columns([3, 2], gap="large")
with grid_col:
    st.markdown(f"**Random training images with their labels** (of {data['n_train']:,})")
    st.plotly_chart(digit_grid(data["images"], data["labels"], tile_px=78), width="stretch", key="train_sample_grid")
with dist_col:
    st.markdown("**Training images per digit**")
    st.plotly_chart(class_distribution(data["train_counts"], title=None), width="stretch",
                    key="train_class_distribution")

raw_dtype, raw_min, raw_max = data["raw"]
in_dtype, in_shape, in_min, in_max = data["model_input"]
n = data["n_train"]
st.markdown("**Preprocessing applied before training**")
st.dataframe(pd.DataFrame([
    {"step": "as stored (mnist.npz)", "shape": f"({n}, 28, 28)", "dtype": raw_dtype, "values": f"{raw_min} … {raw_max}"},
    {"step": "reshape: add a channel axis", "shape": f"({n}, 28, 28, 1)", "dtype": raw_dtype, "values": f"{raw_min} … {raw_max}"},
    {"step": "normalize: divide by 255", "shape": f"({n}, {', '.join(map(str, in_shape))})", "dtype": in_dtype,
     "values": f"{in_min:.1f} … {in_max:.1f}"},
]), hide_index=True)
st.caption(f"Labels are digits 0–9 (uint8). A share of the training images is held out for validation "
           f"(curves below); the {data['n_test']:,} test images are only used for the final test accuracy. "
           "Augmentation, if on, randomly rotates, scales, shears and shifts training images a little.")


# --- 2. Train ----------------------------------------------------------------------------------

def _on_family_change() -> None:
    st.session_state["train_hidden"] = DEFAULT_HIDDEN[st.session_state["train_family"]]


def _sizes(text: str, what: str) -> tuple[int, ...]:
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a list of whole numbers. Write sizes separated by commas, "
                         "like 256,128.") from None
    if not sizes:
        raise ValueError(f"{what}: enter at least one size, like 256.")
    return sizes


def _config(quick: bool) -> TrainConfig:
    """The form's values as a TrainConfig. Raises ValueError with a message for the visitor."""
    s = st.session_state
    family = s["train_family"]
    base = default_spec(family)
    spec = ModelSpec(
        family=family, hidden=_sizes(s["train_hidden"], "Dense layers"),
        filters=_sizes(s["train_filters"], "Conv filters") if family == "cnn" else (),
        dropout=base.dropout, batch_norm=base.batch_norm,
    )
    size = QUICK_SIZE if quick else int(s["train_size"])
    cfg = TrainConfig(
        spec=spec, epochs=QUICK_EPOCHS if quick else int(s["train_epochs"]), batch_size=int(s["train_batch_size"]),
        learning_rate=float(s["train_lr"]), train_size=size, val_fraction=float(s["train_val_fraction"]),
        augment=bool(s["train_augment"]),
    )
    n_fit = size - round(size * cfg.val_fraction)
    if n_fit < cfg.batch_size:
        raise ValueError(f"Only {n_fit:,} images are left for training after validation, fewer than one batch of "
                         f"{cfg.batch_size}. Use more images or a smaller batch.")
    return cfg


def _describe(cfg: TrainConfig) -> str:
    spec = cfg.spec
    arch = (f"CNN, conv {'-'.join(map(str, spec.filters))}, dense {'-'.join(map(str, spec.hidden))}"
            if spec.family == "cnn" else f"MLP, hidden {'-'.join(map(str, spec.hidden))}")
    size = cfg.train_size or 60000
    return (f"{arch} · {size:,} images ({cfg.val_fraction:.0%} for validation) · {cfg.epochs} epoch"
            f"{'s' if cfg.epochs != 1 else ''} · batch {cfg.batch_size} · learning rate {cfg.learning_rate:g}"
            + (" · augmented" if cfg.augment else ""))


def _duration(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def _stop() -> None:
    manager.stop(owner)


def _is_finetune(snap: dict | None) -> bool:
    return bool(snap) and snap["info"].get("kind") == app_state.FINETUNE


def _describe_run(snap: dict) -> str:
    if not _is_finetune(snap):
        return _describe(snap["config"])
    info, cfg = snap["info"], snap["config"]
    n = info.get("corrections", 0)
    return (f"Fine-tuning **{info.get('base_model', '?')}** on {n:,} correction{'s' if n != 1 else ''} mixed with "
            f"{info.get('mnist_mix', cfg.train_size or 0):,} MNIST images · {cfg.epochs} epochs · batch "
            f"{cfg.batch_size} · learning rate {cfg.learning_rate:g} · augmented")


st.header("2 · Train", divider="gray")
snapshot = manager.snapshot()
running = snapshot is not None and snapshot["state"] in ACTIVE_STATES
finetuning = _is_finetune(snapshot)
form_col, status_col = st.columns([2, 3], gap="large")

with form_col:
    st.radio("Architecture", ["cnn", "mlp"], key="train_family", horizontal=True, on_change=_on_family_change,
             format_func={"cnn": "CNN (convolutional)", "mlp": "MLP (dense layers)"}.get,
             help="The CNN reads strokes with convolutions (about 99% accuracy); the MLP is a plain "
                  "stack of dense layers (about 98%).")
    with st.form("train_form", border=True):
        cnn = st.session_state["train_family"] == "cnn"
        a, b = st.columns(2)
        if cnn:
            a.text_input("Conv filters", key="train_filters", help="Filters per conv block, 1 to 3 blocks, e.g. 32,64.")
        a.text_input("Dense layers" if cnn else "Hidden layers", key="train_hidden",
                     help="Units per dense layer before the output, e.g. 256 or 256,128.")
        b.number_input("Epochs", min_value=1, max_value=30, step=1, key="train_epochs")
        b.select_slider("Batch size", options=BATCH_SIZES, key="train_batch_size")
        a.number_input("Peak learning rate", min_value=1e-4, max_value=0.1, step=5e-4, format="%.4f", key="train_lr",
                       help="One-cycle schedule: warms up to this rate, then decays.")
        b.number_input("Validation share", min_value=0.0, max_value=0.5, step=0.05, format="%.2f",
                       key="train_val_fraction")
        st.select_slider("Training images", options=TRAIN_SIZES, key="train_size",
                         format_func=lambda v: f"{v:,}",
                         help="Fewer images train faster and score a little lower.")
        st.checkbox("Augment (small random rotations, scalings, shifts)", key="train_augment")
        start_col, quick_col = st.columns(2)
        submitted = start_col.form_submit_button("Start training", type="primary", key="train_submit",
                                                 disabled=running, width="stretch")
        quick = quick_col.form_submit_button("Quick run", key="train_quick", disabled=running, width="stretch",
                                             help=f"{QUICK_SIZE:,} images, {QUICK_EPOCHS} epoch, the other settings "
                                                  "as above: a result in seconds.")
    if running:
        st.caption("A run is in progress; the form unlocks when it ends.")

    if submitted or quick:
        try:
            cfg = _config(quick)
            with st.spinner("Starting the run…"):
                manager.start(cfg, owner)
        except app_state.TrainingBusy as exc:
            st.warning(str(exc), icon=":material/hourglass_top:")
        except ValueError as exc:
            app_state.show_error(exc, "Check the settings")
        else:
            st.rerun()


# --- Progress and result ----------------------------------------------------------------------------

def _live_figure(snap: dict, key: str):
    """The running job's curves, rebuilt at most every LIVE_CHART_REFRESH_S or at an epoch's end."""
    run, now = (snap["started_at"], snap["owner"], key), time.monotonic()
    last = st.session_state.get(LIVE_FIGURE)
    # Half a refresh of slack: the fragment's ticks are not exactly LIVE_REFRESH_S apart.
    if (last is None or last["run"] != run or last["epochs"] != len(snap["epochs"])
            or now - last["at"] >= LIVE_CHART_REFRESH_S - LIVE_REFRESH_S / 2):
        last = {"run": run, "epochs": len(snap["epochs"]), "at": now,
                "figure": history_figure(snap["batches"], snap["epochs"], max_points=LIVE_MAX_POINTS)}
        st.session_state[LIVE_FIGURE] = last
    return last["figure"]


def _curves(snap: dict, key: str, *, live: bool = False) -> None:
    if snap["batches"]:
        figure = (_live_figure(snap, key) if live
                  else history_figure(snap["batches"], snap["epochs"], max_points=LIVE_MAX_POINTS))
        st.plotly_chart(figure, width="stretch", key=key)
        st.caption("Training values are running means over the current epoch; validation is measured "
                   "at the end of each epoch." + (" Fine-tuning holds no images out for validation."
                                                  if _is_finetune(snap) else ""))


def _who(snap: dict) -> str:
    return "you" if snap["owner"] == owner else "another visitor"


def _prefix(snap: dict) -> str:
    """Widget-key prefix of a run's panel: training and fine-tuning runs have their own keys."""
    return "train_finetune" if _is_finetune(snap) else "train"


# Every 2 s: live enough for a progress bar and curves, and half the redraw work of 1 s (on a
# 2-core server each redraw takes CPU from the training thread; bench/app_latency.py measures it).
@st.fragment(run_every=LIVE_REFRESH_S)
def live_panel() -> None:
    snap = manager.snapshot()
    if snap is None or snap["state"] not in ACTIVE_STATES:
        st.rerun()  # it ended since the page was drawn: redraw the whole page with the result
    p = snap["progress"]
    prefix = _prefix(snap)
    st.subheader("Fine-tuning in progress" if _is_finetune(snap) else "Training in progress")
    st.caption(f"Started by {_who(snap)} · {_describe_run(snap)}")
    if p is None:
        st.progress(0.0, text="Preparing the data and building the model…")
    elif p.kind == "epoch" and p.epoch == p.epochs:
        st.progress(1.0, text=f"Epoch {p.epochs}/{p.epochs} done · measuring accuracy on the 10,000 test images…")
    else:
        st.progress(p.fraction, text=f"Epoch {p.epoch}/{p.epochs} · batch {p.batch}/{p.batches} · "
                                     f"{_duration(p.elapsed)} elapsed · about {_duration(p.eta)} left")
    if snap["state"] == "stopping":
        st.info("Stopping after the current batch…", icon=":material/hourglass_top:")
    elif snap["owner"] == owner:
        st.button("Stop fine-tuning" if _is_finetune(snap) else "Stop training", key=f"{prefix}_stop",
                  on_click=_stop, icon=":material/stop_circle:")
    else:
        st.caption("Only the visitor who started this run can stop it.")
    if p is not None:
        m1, m2, m3 = st.columns(3)
        m1.metric("Training loss", f"{p.loss:.4f}")
        m2.metric("Training accuracy", f"{p.accuracy:.2%}")
        last_val = next((e["val_accuracy"] for e in reversed(snap["epochs"]) if e["val_accuracy"] is not None), None)
        m3.metric("Validation accuracy", f"{last_val:.2%}" if last_val is not None else "–",
                  help="Measured on the held-out images at the end of each epoch.")
    _curves(snap, f"{prefix}_curves", live=True)


@st.fragment(run_every=5.0)
def watch_for_new_job(serial: int) -> None:
    # Another visitor may start a run while this page is open: redraw when that happens.
    if manager.serial != serial:
        st.rerun()


def _use_button(name: str | None, key: str) -> None:
    in_use = st.session_state.get(app_state.MODEL_NAME) == name
    st.button("Use this model", key=key, type="primary", disabled=not name or in_use,
              on_click=app_state.select_model, args=(name,), icon=":material/check:",
              help="Select it for your session: the Draw and Upload pages will use it.")
    if in_use:
        st.caption("You are using this model.")


def _points(after: float | None, before: float | None, digits: int) -> str | None:
    if after is None or before is None:
        return None
    return f"{(after - before) * 100:+.{digits}f} points"


def _finetune_result(snap: dict) -> None:
    info = snap["info"]
    name = info.get("model_name")
    st.success(f"Fine-tuning finished. The model was saved as **{name}**.", icon=":material/check_circle:")
    before, after = info.get("corrections_accuracy_before"), info.get("corrections_accuracy_after")
    acc, base_acc = snap["test_accuracy"], info.get("base_test_accuracy")
    m1, m2, m3 = st.columns(3)
    m1.metric("Corrections read right, before", f"{before:.0%}" if before is not None else "–",
              help=f"Share of the corrections {info.get('base_model')} read as their right digit.")
    m2.metric("Corrections read right, after", f"{after:.0%}" if after is not None else "–",
              delta=_points(after, before, 0), help="The same corrections, read by the fine-tuned model.")
    m3.metric("MNIST test accuracy", f"{acc:.2%}" if acc is not None else "–",
              delta=_points(acc, base_acc, 2),
              help=f"On the 10,000 MNIST test images; the change is against {info.get('base_model')}"
                   + (f" ({base_acc:.2%})." if base_acc is not None else " (its accuracy was not recorded)."))
    st.caption("The corrections are the images it was fine-tuned on, so the second figure shows they were "
               "learned, not how well new drawings will be read; MNIST test accuracy shows whether it still "
               "reads ordinary digits as well as before.")
    _use_button(name, "train_finetune_use_model")


def final_panel(snap: dict) -> None:
    state, info = snap["state"], snap["info"]
    finetune = _is_finetune(snap)
    st.subheader("Last fine-tuning run" if finetune else "Last training run")
    st.caption(f"Started by {_who(snap)} · {_describe_run(snap)}")
    if state == "finished" and finetune:
        _finetune_result(snap)
    elif state == "finished":
        name = info.get("model_name")
        st.success(f"Training finished. The model was saved as **{name}**.", icon=":material/check_circle:")
        m1, m2, m3 = st.columns(3)
        acc = snap["test_accuracy"]
        m1.metric("Test accuracy", f"{acc:.2%}" if acc is not None else "–",
                  help="Share of the 10,000 MNIST test images read correctly.")
        val = next((e["val_accuracy"] for e in reversed(snap["epochs"]) if e["val_accuracy"] is not None), None)
        m2.metric("Validation accuracy", f"{val:.2%}" if val is not None else "–")
        m3.metric("Training time", _duration(snap["train_seconds"]))
        _use_button(name, "train_use_model")
    elif state == "stopped":
        p = snap["progress"]
        where = f" during epoch {p.epoch}, batch {p.batch}" if p else ""
        what = "Fine-tuning" if finetune else "Training"
        st.warning(f"{what} was stopped{where}. No model was saved.", icon=":material/stop_circle:")
    else:
        st.error(f"{'Fine-tuning' if finetune else 'Training'} failed: {snap['error']}", icon=":material/error:")
    _curves(snap, f"{_prefix(snap)}_curves")


with status_col:
    if finetuning:
        where = "**3 · Corrections** below"
        if running:
            st.info(f"A fine-tuning run is in progress; its progress is shown in {where}. "
                    "The form unlocks when it ends.", icon=":material/hourglass_top:")
        else:
            st.info(f"The last run on this server fine-tuned a model on corrections; its result is in {where}.",
                    icon=":material/insights:")
    elif running:
        live_panel()
    elif snapshot is None:
        st.info("No training run on this server yet. Choose the settings and press **Start training**; "
                "the loss and accuracy curves will appear here as the network learns.",
                icon=":material/insights:")
    else:
        final_panel(snapshot)


# --- 3. Corrections ----------------------------------------------------------------------------------

REVIEW_MAX = 60
REVIEW_TILE_PX = 84
SOURCES = {"draw": "drawn", "upload": "uploaded"}


def _when(created: str) -> str:
    return created[:16].replace("T", " ")


def _tile_caption(c) -> str:
    """"#12: 5 (read 3)": id, the right digit, and what the model had said."""
    return f"#{c.id}: {c.label}" + (f" (read {c.predicted})" if c.predicted is not None else "")


def _delete_selected() -> None:
    ids = st.session_state.get("train_corrections_selected") or []
    try:
        removed = CorrectionStore().delete(ids)
    except (OSError, sqlite3.Error) as exc:
        st.session_state["train_corrections_flash"] = ("error", f"The corrections could not be deleted: {exc}")
        return
    st.session_state["train_corrections_selected"] = []
    st.session_state["train_corrections_flash"] = (
        "success", f"Deleted {removed} correction{'s' if removed != 1 else ''}.")


def _start_finetune(base_name: str) -> None:
    try:
        with st.spinner("Loading the model and the corrections…"):
            manager.start_finetune(base_name, owner)
    except app_state.TrainingBusy as exc:
        st.warning(str(exc), icon=":material/hourglass_top:")
    except (ValueError, app_state.StoreError, OSError, sqlite3.Error) as exc:
        app_state.show_error(exc, "Fine-tuning cannot start")
    else:
        st.rerun()


st.header("3 · Corrections", divider="gray")
st.caption("When a visitor tells the Draw or Upload page the right digit (\"Wrong? The right digit is …\"), "
           "the 28×28 image the model saw is kept here with that label. Review them, delete bad ones, export "
           "them, or fine-tune a model on them.")
corrections = CorrectionStore()
try:
    count = corrections.count()
    label_counts = corrections.label_counts()
    recent = corrections.list(limit=REVIEW_MAX)
    ids = [c.id for c in recent]  # only what is shown can be selected
except (OSError, sqlite3.Error) as exc:
    app_state.show_error(exc, f"The corrections in {corrections.path} cannot be read")
    count, label_counts, recent, ids = 0, np.zeros(10, int), [], []

flash = st.session_state.pop("train_corrections_flash", None)
if flash is not None:
    (st.success if flash[0] == "success" else st.error)(flash[1])
    if flash[0] == "success":
        st.toast(flash[1], icon=":material/delete:")

if count == 0:
    st.info("No corrections yet. On the **Draw** and **Upload** pages, pick the right digit under a wrong "
            "answer and press **Save correction**.", icon=":material/rate_review:")
else:
    summary_col, chart_col = st.columns([1, 2], gap="large")
    with summary_col:
        st.metric("Corrections", f"{count:,}")
        sources = pd.Series([c.source for c in recent]).value_counts()
        st.caption(" · ".join(f"{n} {SOURCES.get(src, src)}" for src, n in sources.items())
                   + (f" (of the newest {len(recent)})" if count > len(recent) else ""))
        st.caption("Per digit: " + ", ".join(f"{d}: {n}" for d, n in enumerate(label_counts) if n))
    with chart_col:
        st.plotly_chart(class_distribution(label_counts, title="Corrections per right digit", height=220),
                        width="stretch", key="train_corrections_counts")

    st.markdown("**Review**" + (f" — the newest {len(recent)} of {count:,}" if count > len(recent) else ""))
    st.image([app_state.model_view(c.image_float, REVIEW_TILE_PX) for c in recent],
             caption=[_tile_caption(c) for c in recent], width=REVIEW_TILE_PX)
    st.dataframe(pd.DataFrame([{
        "id": c.id, "right digit": c.label, "model read": c.predicted, "source": SOURCES.get(c.source, c.source),
        "model": c.model, "saved (UTC)": _when(c.created),
    } for c in recent]).astype({"model read": "Int64"}), hide_index=True)

    by_id = {c.id: c for c in recent}
    # Drop ids deleted meanwhile (by this visitor or another) before the picker is drawn.
    st.session_state["train_corrections_selected"] = [
        i for i in st.session_state["train_corrections_selected"] if i in by_id]
    pick_col, delete_col = st.columns([3, 1], vertical_alignment="bottom")
    pick_col.multiselect(
        "Select corrections to delete", ids, key="train_corrections_selected",
        format_func=lambda i: _tile_caption(by_id[i]) if i in by_id else f"#{i}",
        placeholder="Pick by id (see the labels under the images)",
    )
    delete_col.button("Delete selected", key="train_corrections_delete", icon=":material/delete:",
                      disabled=not st.session_state["train_corrections_selected"], on_click=_delete_selected)

    npz_col, csv_col, _ = st.columns([1, 1, 2])
    npz_col.download_button("Export as .npz", data=corrections.npz_bytes, file_name="corrections.npz",
                            mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                            key="train_corrections_npz", help="x: uint8 (N, 28, 28); y: labels; ids.")
    csv_col.download_button("Export as CSV", data=corrections.csv_bytes, file_name="corrections.csv",
                            mime="text/csv", on_click="ignore", icon=":material/download:",
                            key="train_corrections_csv",
                            help="id, label, predicted, source, model, created, then pixel0 … pixel783.")

st.subheader("Fine-tune the current model on them")
if entry is None:
    st.caption("There is no model to fine-tune yet: train one above first.")
else:
    st.caption(f"Continues training a copy of **{entry.name}** (your model, picked in the sidebar) on the "
               "corrections mixed with 10,000 MNIST images, so it learns them without forgetting the rest. "
               "It runs in the background like training (one run at a time on this server) and is saved as "
               "a new model; yours is not changed.")
fine_tune = st.button("Fine-tune the current model on them", key="train_finetune", type="primary",
                      icon=":material/tune:", disabled=running or count == 0 or entry is None,
                      help="Needs at least one correction." if count == 0 else None)
if fine_tune and entry is not None:
    _start_finetune(entry.name)

if finetuning:
    if running:
        live_panel()
    else:
        final_panel(snapshot)

if not running:
    watch_for_new_job(manager.serial)
