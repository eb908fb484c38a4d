"""Train a network on MNIST and watch its loss and accuracy live. Runs are queued on the Dask
training workers (`core.learning.runs`); this page only submits them and shows their progress."""

import numpy as np
import pandas as pd
import streamlit as st

from core.data import DataError, load_mnist, to_model_input
from core.learning.runs import RunError
from core.report.charts import class_distribution, digit_grid
from ui import runs, train_form
from ui.messages import show_error
from ui.models import store
from ui.page import start_page

entry = start_page("Train", ":material/model_training:", layout="wide")
owner = runs.owner_token()

train_form.init_state()

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

st.header("2 · Train", divider="gray")
train_form.architecture()  # the choice and, for Custom, the layer editor: live, full width, above the form
form_col, status_col = st.columns([2, 3], gap="large")

with form_col:
    submitted, quick = train_form.form()
    if submitted or quick:
        try:
            cfg = train_form.config(quick)
            board = runs.board()
            runs.refuse_if_too_many(board.runs(), owner)
            board.submit(cfg, owner, command="streamlit: Train page", models_dir=str(store().root))
        except (ValueError, RunError) as exc:
            show_error(exc, "Check the settings" if isinstance(exc, ValueError) else "The run was not queued")
        else:
            st.rerun()
    try:
        settings = train_form.config()
    except ValueError:
        settings = None  # settings a run would refuse: the address keeps the last usable ones
    train_form.share(settings)

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
