"""Landing page: what the app does, the model in use, links to the pages, the models in the store."""

import streamlit as st

from ui.downloads import model_downloads
from ui.messages import show_table
from ui.models import default_name, family_label, listing, model_summary, store, training_summary
from ui.page import page_exists, start_page
from ui.train_form import train_again_link


entry = start_page("Home", ":material/draw:")

st.title("Handwritten digit recognizer")
st.markdown(
    "Draw a digit or upload a photo of one, and a neural network trained on MNIST reads it — several "
    "digits side by side too, with a heatmap of the pixels that decided the answer.  \n"
    "Train your own network on the 60,000 MNIST images and watch it learn, live; when the model is wrong, "
    "tell it the right digit and fine-tune it on those corrections."
)

with st.container(border=True):
    if entry is None:
        st.markdown("#### No model yet")
        st.info("The model store is empty. Train a model on the **Train** page to start reading digits.")
    else:
        info = entry.info
        st.markdown(f"#### Model in use: `{entry.name}`")
        family, params, acc = st.columns(3)
        family.metric("Architecture", family_label(info))
        params.metric("Parameters", f"{info.params:,}" if info.params is not None else "?")
        acc.metric("Test accuracy", f"{info.test_accuracy:.2%}" if info.test_accuracy is not None else "?",
                   help="Share of the 10,000 MNIST test images read correctly.")
        st.caption(training_summary(info)
                   + " Pick another model in the sidebar; the choice applies to your session only.")

links = [("pages/1_Train.py", "Train", ":material/model_training:",
          "Train a network on the shared workers, live curves"),
         ("pages/2_Draw.py", "Draw", ":material/draw:", "Draw a digit or a number with mouse or finger"),
         ("pages/3_Upload.py", "Upload", ":material/upload:", "Read digits and numbers in image files"),
         ("pages/4_Evaluate.py", "Evaluate", ":material/analytics:", "Confusion matrix and mistakes"),
         ("pages/5_Corrections.py", "Corrections", ":material/rate_review:", "Review corrections, fine-tune on them"),
         ("pages/6_Compare.py", "Compare", ":material/compare_arrows:", "Training curves and settings side by side"),
         ("pages/7_Inside.py", "Inside", ":material/layers:", "Every layer's response to your drawing")]
links = [link for link in links if page_exists(link[0])]
LINKS_PER_ROW = 4  # wide enough for each page's name on a laptop; a phone stacks them
for row in range(0, len(links), LINKS_PER_ROW):
    for col, (path, label, icon, help_text) in zip(st.columns(LINKS_PER_ROW), links[row:row + LINKS_PER_ROW]):
        with col.container(border=True):
            st.page_link(path, label=f"**{label}**", icon=icon)
            st.caption(help_text)

st.subheader("Models in the store")
models = listing()
for problem in models.problems.values():
    st.warning(problem, icon=":material/warning:")
if not models.entries:
    st.info("No models yet.")
    st.stop()

# A Markdown table, not st.dataframe: the data grid's JavaScript and importing pandas (which holds
# the GIL while the browser's first requests wait) would delay the whole page for a list of a few
# models (bench/app_latency.py, home_s).
default = default_name(models)
show_table(
    [{"model": f"**{e.name}**",
      "type": family_label(e.info),
      "params": e.info.params,
      "accuracy": e.info.test_accuracy,
      "train s": e.info.train_seconds,
      "trained": e.info.created[:10],
      "status": " ".join(mark for mark, on in (("✓ in use", entry is not None and e.name == entry.name),
                                               ("★", e.name == default)) if on)} for e in models.entries],
    {"model": "Model", "type": "Type", "params": "Parameters", "accuracy": "Test acc.", "train s": "Training",
     "trained": "Trained", "status": ""},
    formats={"params": "{:,}", "accuracy": "{:.2%}", "train s": "{:.0f} s"},
    right=("params", "accuracy", "train s"),
)
st.caption("Test accuracy: on the 10,000 MNIST test images. ✓ in use: the model your pages use (sidebar); "
           "★ the server's default model.")


@st.cache_data(max_entries=64, show_spinner=False)
def _curves(root: str, name: str, created: str, _history: dict):
    # Keyed by model identity, not by the (large) history itself. Plotly is imported only here:
    # Home's first render waits for nothing it does not show.
    from core.report.charts import history_figure

    return history_figure(_history.get("batch", []), _history.get("epoch", []), height=280)


for e in models.entries:
    with st.expander(f"{e.name} — details"):
        st.caption(model_summary(e.info))
        layers = e.info.layers
        if layers:
            st.markdown("**Layers**")
            show_table(
                layers, {key: key.capitalize() for key in layers[0]}, formats={"parameters": "{:,}"},
                right=("parameters",))
        history = e.info.history
        # Drawn on request: a Plotly chart per model, even in a closed expander, delays the whole
        # Home page (bench/app_latency.py, home_s).
        if history.get("batch") and st.toggle("Show the training curves", key=f"home_show_curves_{e.name}"):
            st.plotly_chart(_curves(str(e.path.parent), e.name, e.info.created, history),
                            width="stretch", key=f"home_curves_{e.name}")
        if e.info.command:
            st.caption(f"Trained with: `{e.info.command}`")
        train_again_link(e.info)
        model_downloads(e, store())  # NAME.keras, NAME.onnx (checked) and a program that reads a digit with it
