"""Review the corrections visitors saved on Draw and Upload, delete bad ones, export them, and
fine-tune a model on them (queued on the training workers like any run)."""

import sqlite3

import numpy as np
import pandas as pd
import streamlit as st

from core.learning.finetune import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LEARNING_RATE, DEFAULT_MNIST_MIX
from core.learning.model import recorded_spec
from core.learning.runs import RunError
from core.learning.train import TrainConfig
from core.report.charts import class_distribution
from core.storage.corrections import CorrectionStore
from core.storage.store import StoreError
from ui import runs
from ui.messages import show_error
from ui.models import store
from ui.page import start_page
from ui.views import model_view

entry = start_page("Corrections", ":material/rate_review:", layout="wide")
owner = runs.owner_token()
st.session_state.setdefault("train_corrections_selected", [])


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
    """Queue a fine-tuning of ``base_name`` on a snapshot of the corrections (those saved later wait
    for the next run)."""
    try:
        board = runs.board()
        runs.refuse_if_too_many(board.runs(), owner)
        x, y = corrections.arrays()
        if len(y) == 0:
            raise ValueError("There are no corrections to learn from yet. Correct a few predictions on the "
                             "Draw or Upload page first.")
        spec = recorded_spec(store().info(base_name))
        cfg = TrainConfig(spec=spec, epochs=DEFAULT_EPOCHS, batch_size=DEFAULT_BATCH_SIZE,
                          learning_rate=DEFAULT_LEARNING_RATE, train_size=DEFAULT_MNIST_MIX, val_fraction=0.0,
                          augment=True)
        board.submit(cfg, owner, kind=runs.FINETUNE, base_model=base_name, corrections=(x, y),
                     models_dir=str(store().root),
                     command=f"streamlit: Corrections page, fine-tuned {base_name}",
                     info={"base_model": base_name, "corrections": int(len(y))})
    except (ValueError, RunError, StoreError, OSError, sqlite3.Error) as exc:
        show_error(exc, "Fine-tuning cannot start")
    else:
        st.rerun()


st.title("Corrections")
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
    show_error(exc, f"The corrections in {corrections.path} cannot be read")
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
    st.image([model_view(c.image_float, REVIEW_TILE_PX) for c in recent],
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
    st.caption("There is no model to fine-tune yet: train one on the Train page first.")
else:
    st.caption(f"Continues training a copy of **{entry.name}** (your model, picked in the sidebar) on the "
               "corrections mixed with 10,000 MNIST images, so it learns them without forgetting the rest. "
               "It is queued on the training workers like any run and saved as a new model; yours is not changed.")
fine_tune = st.button("Fine-tune the current model on them", key="train_finetune", type="primary",
                      icon=":material/tune:", disabled=count == 0 or entry is None,
                      help="Needs at least one correction." if count == 0 else None)
if fine_tune and entry is not None:
    _start_finetune(entry.name)
try:
    runs.show_run(runs.FINETUNE, owner, "train_finetune")
except RunError as exc:
    show_error(exc, "Fine-tuning is not available")
