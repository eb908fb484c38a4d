"""How well the model reads the 10,000 MNIST test images: accuracy, confusions, per-digit precision
and recall, the mistakes themselves, and the store's models side by side."""

import pandas as pd
import streamlit as st

from core.data import DataError, cached_test_set
from core.report.evaluate import Evaluation, confusion_heatmap, evaluate, per_class_bars
from ui.messages import show_error
from ui.models import created_utc, family_label, listing, require_model, require_predictor
from ui.page import start_page
from ui.views import model_view

ANY = "Any"
GALLERY_MAX = 48
TILE_PX = 84

entry = require_model(start_page("Evaluate", ":material/analytics:", layout="wide"))
st.session_state.setdefault("eval_true", ANY)
st.session_state.setdefault("eval_pred", ANY)

st.title("Evaluate a model")
st.caption("Every MNIST test image (10,000 digits the model never saw in training) is read by the model "
           "you picked in the sidebar and compared with its label.")


@st.cache_data(max_entries=8, show_spinner=False)
def evaluation(root: str, name: str, mtime_ns: int, _predictor) -> Evaluation:
    # Keyed by store folder, name and file mtime: a model replaced on disk is measured afresh.
    x_test, y_test = cached_test_set()
    return evaluate(_predictor, x_test, y_test)


predictor = require_predictor(entry)
try:
    with st.spinner("Reading the 10,000 test images…"):
        ev = evaluation(str(entry.path.parent), entry.name, entry.path.stat().st_mtime_ns, predictor)
    x_test, _ = cached_test_set()
except (DataError, OSError, ValueError) as exc:
    show_error(exc, f"The model {entry.name!r} cannot be evaluated")
    st.stop()

# --- summary ---------------------------------------------------------------------------------------
acc_col, wrong_col, family_col, params_col = st.columns(4)
acc_col.metric("Test accuracy", f"{ev.accuracy:.2%}", help="Share of the 10,000 MNIST test images read correctly.")
wrong_col.metric(f"Mistakes of {ev.count:,}", f"{len(ev.mistakes):,}")
family_col.metric("Architecture", family_label(entry.info))
params_col.metric("Parameters", f"{entry.info.params:,}" if entry.info.params is not None else "?")
top = [(t, p, n) for t, p, n in ev.top_confusions(5) if n > 1]  # a single slip is no pattern
if top:
    st.caption("Most frequent mistakes: " + " · ".join(f"{t} read as {p} ({n}×)" for t, p, n in top))

# --- confusion matrix and per-digit metrics -------------------------------------------------------
matrix_col, classes_col = st.columns([1, 1], gap="large")
with matrix_col:
    st.plotly_chart(confusion_heatmap(ev.confusion), width="stretch", key="eval_confusion")
    st.caption("Rows: the true digit; columns: what the model read. Off the diagonal are the mistakes.")
with classes_col:
    st.plotly_chart(per_class_bars(ev.precision, ev.recall), width="stretch", key="eval_per_class")
    st.dataframe(pd.DataFrame({
        "digit": range(10), "test images": ev.support,
        "precision": ev.precision * 100, "recall": ev.recall * 100, "F1": ev.f1 * 100,
    }), hide_index=True, column_config={
        "test images": st.column_config.NumberColumn(format="localized"),  # 1,135 as the heatmap writes it
        "precision": st.column_config.NumberColumn(
            format="%.2f%%", help="Of the images read as this digit, the share that are it."),
        "recall": st.column_config.NumberColumn(
            format="%.2f%%", help="Of the images of this digit, the share read as it."),
        "F1": st.column_config.NumberColumn(format="%.2f%%", help="Harmonic mean of precision and recall."),
    })

# --- the mistakes ----------------------------------------------------------------------------------
st.subheader("Misclassified test digits")
choices = [ANY, *range(10)]
true_col, pred_col = st.columns(2)
true_digit = true_col.selectbox("True digit", choices, key="eval_true")
pred_digit = pred_col.selectbox("Predicted digit", choices, key="eval_pred")
shown = ev.misclassified(None if true_digit == ANY else true_digit, None if pred_digit == ANY else pred_digit)
if not shown:
    st.info("No test digit was misread that way.", icon=":material/check_circle:")
else:
    st.caption(f"{len(shown):,} {'mistake' if len(shown) == 1 else 'mistakes'}, the most confident first"
               + (f"; showing the first {GALLERY_MAX}." if len(shown) > GALLERY_MAX else "."))
    picked = shown[:GALLERY_MAX]
    st.image([model_view(x_test[m["index"]] / 255.0, TILE_PX) for m in picked],
             caption=[f"{m['true']} read as {m['predicted']} ({m['confidence']:.0%})" for m in picked], width=TILE_PX)

# --- the store's models side by side ---------------------------------------------------------------
st.subheader("Models in the store")
rows = []
for e in listing().entries:
    rows.append({
        "model": e.name + (" (yours)" if e.name == entry.name else ""),
        "architecture": family_label(e.info),
        "parameters": e.info.params,
        "test accuracy": e.info.test_accuracy,
        "training time (s)": e.info.train_seconds,
        "created": created_utc(e.info),
        "fine-tuned from": e.info.base_model or "",
    })
models = pd.DataFrame(rows)
if "fine-tuned from" in models and not models["fine-tuned from"].astype(bool).any():
    models = models.drop(columns="fine-tuned from")
st.dataframe(models, hide_index=True, column_config={
    "parameters": st.column_config.NumberColumn(format="localized"),
    "test accuracy": st.column_config.NumberColumn(format="percent", help="As measured when the model was saved."),
    "training time (s)": st.column_config.NumberColumn(format="%.1f"),
})
st.caption("Test accuracy in this table is the figure recorded when each model was saved; the one at the top "
           "of the page is measured now.")
