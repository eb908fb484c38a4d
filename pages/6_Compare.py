"""Compare stored models: their training curves overlaid (by epoch or by training time) and their
settings and results side by side."""

import streamlit as st

from core.report.charts import COMPARE_X, compare_figure, compare_points
from core.storage.info import ModelInfo
from core.storage.store import Entry
from ui.messages import show_table
from ui.models import family_label, listing, require_model
from ui.page import start_page

MAX_MODELS = 8  # COMPARE_COLORS holds eight colours; more curves would not tell apart

entry = require_model(start_page("Compare", ":material/compare_arrows:", layout="wide"))
models = listing()
names = models.names()
# The visitor's model and the newest other one (the listing is newest first).
st.session_state.setdefault("compare_models", [entry.name, *[n for n in names if n != entry.name][:1]])
st.session_state.setdefault("compare_x", "epoch")
# A model deleted since it was picked is no longer an option: drop it before the widget is drawn.
st.session_state["compare_models"] = [n for n in st.session_state["compare_models"] if n in names][:MAX_MODELS]

st.title("Compare models")
st.caption("Pick stored models to see how their training went, curve against curve, and how they were trained.")
for problem in models.problems.values():
    st.warning(problem, icon=":material/warning:")

picked_col, x_col = st.columns([4, 1])
picked = picked_col.multiselect(
    "Models", names, key="compare_models", max_selections=MAX_MODELS,
    help=f"Up to {MAX_MODELS} models of the store, newest first.")
x = x_col.segmented_control("X axis", list(COMPARE_X), key="compare_x", required=True,
                            format_func={"epoch": "Epoch", "time": "Time (s)"}.get,
                            help="Epochs, or seconds since each run's training started.")
if not picked:
    st.info("Pick at least two models to compare.", icon=":material/compare_arrows:")
    st.stop()
if len(picked) < 2:
    st.info("Pick at least two models to compare; here is the one you picked.", icon=":material/compare_arrows:")
entries: list[Entry] = [e for e in (models.get(n) for n in picked) if e is not None]


def architecture(info: ModelInfo) -> str:
    """The family label with its layer widths from ``hyperparameters["spec"]``: "CNN conv 32-64 · dense 256"."""
    spec = info.hyperparameters.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    layers = (("filters", "conv"), ("hidden", "dense")) if info.family == "cnn" else (("hidden", "dense"),)
    widths = [f"{label} {'-'.join(str(w) for w in spec[key])}" for key, label in layers
              if isinstance(spec.get(key), list) and spec[key]]
    return f"{family_label(info)} {' · '.join(widths)}".strip()


def epochs_cell(info: ModelInfo) -> str:
    """Epochs trained: recorded rows, "of N" when fewer than planned, "no curves recorded" when none."""
    planned = info.hyperparameters.get("epochs")
    done = len(compare_points(info.history, "epoch"))
    if not done:
        return "no curves recorded" + (f" ({planned} planned)" if planned else "")
    return f"{done} of {planned}" if isinstance(planned, int) and done < planned else str(done)


def images_cell(hp: dict) -> str | None:
    """Training images (all 60,000 when the run did not limit them), with the share held out for validation."""
    if "epochs" not in hp:
        return None  # no settings recorded: do not claim all 60,000
    size = hp.get("train_size") or 60000
    held_out = hp.get("val_fraction") or 0
    return f"{size:,}" + (f" ({held_out:.0%} validation)" if held_out else "")


def learning_rate_cell(hp: dict) -> str | None:
    """The (peak) learning rate and its schedule."""
    rate = hp.get("learning_rate")
    if not isinstance(rate, (int, float)):
        return None
    return f"{rate:g}" + (f" ({hp['schedule']})" if hp.get("schedule") else "")


# --- the curves ------------------------------------------------------------------------------------
runs = [(e.name, e.info.history) for e in entries]
st.plotly_chart(compare_figure(runs, x), width="stretch", key="compare_curves")
smoothed = [e.name for e in entries if e.info.hyperparameters.get("label_smoothing")]
st.caption("Solid: training; dotted: validation (where the run held images out). Loss is the cross-entropy"
           + (f"; {', '.join(smoothed)} trained with label smoothing, which keeps its loss well above 0 even "
              "when it reads almost every image right, so compare accuracy across runs" if smoothed else "")
           + ". Click a model in the legend to hide its curves.")
missing = [name for name, history in runs if not compare_points(history, x)]
if missing:
    what = "no curves recorded" if x == "epoch" else "no training times recorded"
    st.info(f"{', '.join(missing)}: {what}; shown in the table only.", icon=":material/info:")

# --- the table -------------------------------------------------------------------------------------
st.subheader("Settings and results")
rows = []
for e in entries:
    info, hp = e.info, e.info.hyperparameters
    rows.append({
        "model": f"**{e.name}**" + (" (yours)" if e.name == entry.name else ""),
        "architecture": architecture(info),
        "params": info.params,
        "accuracy": info.test_accuracy,
        "seconds": info.train_seconds,
        "epochs": epochs_cell(info),
        "batch": hp.get("batch_size"),
        "rate": learning_rate_cell(hp),
        "images": images_cell(hp),
        "augment": ("yes" if hp["augment"] else "no") if "augment" in hp else None,
        "base": info.base_model or "",
    })
columns = {"model": "Model", "architecture": "Architecture", "params": "Parameters", "accuracy": "Test acc.",
           "seconds": "Training time", "epochs": "Epochs", "batch": "Batch size", "rate": "Learning rate",
           "images": "Training images", "augment": "Augmentation", "base": "Fine-tuned from"}
if not any(row["base"] for row in rows):
    del columns["base"]  # no fine-tuned model picked: the table stays narrow enough for the page
show_table(
    rows, columns,
    formats={"params": "{:,}", "accuracy": "{:.2%}", "seconds": "{:.0f} s", "batch": "{:,}"},
    right=("params", "accuracy", "seconds", "batch"),
)
st.caption("Test accuracy: on the 10,000 MNIST test images, as recorded when each model was saved. "
           "Training images include the share held out for validation.")
