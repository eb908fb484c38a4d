"""Train a network on MNIST and watch its loss and accuracy live. Runs are queued on the Dask
training workers (`core.learning.runs`); this page only submits them and shows their progress."""

import numpy as np
import pandas as pd
import streamlit as st

from core.data import DataError, load_mnist, to_model_input
from core.learning.model import DEFAULT_CNN_FILTERS, DEFAULT_MLP_HIDDEN, ModelSpec, default_spec
from core.learning.runs import RunError
from core.learning.train import TrainConfig
from core.report.charts import class_distribution, digit_grid
from ui import runs
from ui.messages import show_error
from ui.models import store
from ui.page import start_page

QUICK_SIZE, QUICK_EPOCHS = 6000, 1
DEFAULT_HIDDEN = {"cnn": "256", "mlp": ",".join(map(str, DEFAULT_MLP_HIDDEN))}
TRAIN_SIZES = [1000, 3000, 6000, 10000, 20000, 30000, 45000, 60000]
BATCH_SIZES = [32, 64, 128, 256, 512, 1024]

entry = start_page("Train", ":material/model_training:", layout="wide")
owner = runs.owner_token()

st.session_state.setdefault("train_family", "cnn")
st.session_state.setdefault("train_hidden", DEFAULT_HIDDEN["cnn"])
st.session_state.setdefault("train_filters", ",".join(map(str, DEFAULT_CNN_FILTERS)))
st.session_state.setdefault("train_epochs", 3)
st.session_state.setdefault("train_batch_size", 128)
st.session_state.setdefault("train_lr", 1e-2)
st.session_state.setdefault("train_size", 60000)
st.session_state.setdefault("train_val_fraction", 0.1)
st.session_state.setdefault("train_augment", False)

st.title("Train a model")
st.caption("Choose an architecture and its settings. Runs queue on the training workers, one run per worker; "
           "watch the curves here, use the other pages meanwhile, or come back later: this page's address "
           "(with its `owner` token) shows your runs again, in any tab.")


# --- 1. The data -------------------------------------------------------------------------------

@st.cache_data(show_spinner="Loading MNIST…")
def data_overview(samples: int = 30, seed: int = 0) -> dict:
    mnist = load_mnist()  # not memoized: only the small overview below stays in memory (st.cache_data)
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
    show_error(exc, "MNIST cannot be loaded")
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


st.header("2 · Train", divider="gray")
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
                                                 width="stretch")
        quick = quick_col.form_submit_button("Quick run", key="train_quick", width="stretch",
                                             help=f"{QUICK_SIZE:,} images, {QUICK_EPOCHS} epoch, the other settings "
                                                  "as above: a result in seconds.")
    if submitted or quick:
        try:
            cfg = _config(quick)
            board = runs.board()
            runs.refuse_if_too_many(board.runs(), owner)
            board.submit(cfg, owner, command="streamlit: Train page", models_dir=str(store().root))
        except (ValueError, RunError) as exc:
            show_error(exc, "Check the settings" if isinstance(exc, ValueError) else "The run was not queued")
        else:
            st.rerun()

with status_col:
    try:
        shown = runs.show_run("train", owner, "train")
    except RunError as exc:
        show_error(exc, "Training is not available")
        st.stop()
    if shown is None:
        st.info("No training run yet. Choose the settings and press **Start training**; the loss and accuracy "
                "curves will appear here as the network learns.", icon=":material/insights:")


# --- 3. The queue ------------------------------------------------------------------------------------

st.header("3 · The training queue", divider="gray")
runs.queue_panel(owner)
