"""Inside the network: draw a digit and see what every layer of the model makes of it."""

import streamlit as st

from core.storage.store import MissingFileError, StoreError
from ui.canvas import canvas_colours, drawing_canvas
from ui.inside import layers_runtime, show_first_weights, show_layers
from ui.messages import show_error
from ui.models import require_model, require_predictor
from ui.page import light_theme, start_page
from ui.views import answer_metrics, seen_image

CANVAS_PX = 280
CANVAS_KEY = "inside_canvas"
SEEN_PX = 112

entry = start_page("Inside", ":material/layers:", layout="wide")
st.session_state.setdefault("inside_clears", 0)

st.title("Inside the network")
st.caption("Draw a digit and follow it through the model, layer by layer: what each convolution finds in "
           "your strokes, what each dense layer makes of that, and the ten probabilities at the end.")
entry = require_model(entry)
try:
    layers = layers_runtime(entry)
except MissingFileError as exc:
    st.info(f"{exc} Then reload this page, or pick another model in the sidebar.", icon=":material/layers:")
    st.stop()
except (StoreError, OSError) as exc:
    st.error(f"The layers of {entry.name!r} cannot be shown: {exc} Pick another model in the sidebar.",
             icon=":material/error:")
    st.stop()


def _clear() -> None:
    # A new initial drawing makes the canvas reload empty (as on Draw).
    st.session_state["inside_clears"] += 1
    st.session_state.pop(CANVAS_KEY, None)


@st.fragment
def draw_and_look() -> None:
    draw_col, answer_col = st.columns([2, 3], gap="large")
    with draw_col:
        st.space("small")  # room for the canvas toolbar, which floats above the drawing
        pen_px, colour, background = canvas_colours("Marker", light_theme())  # the Draw page's marker
        canvas = drawing_canvas(
            stroke_width=pen_px, stroke_color=colour, background_color=background, width=CANVAS_PX,
            height=CANVAS_PX, drawing_mode="freedraw", return_image_data=True,
            initial_drawing={"objects": [], "clears": st.session_state["inside_clears"]}, key=CANVAS_KEY,
        )
        st.button("Clear", key="inside_clear", on_click=_clear, icon=":material/delete:")

    strokes = (canvas.json_data or {}).get("objects") or []
    image = canvas.image_data if strokes else None
    if image is None:
        answer_col.info("Draw a digit on the canvas to see what each layer of the model makes of it.",
                        icon=":material/draw:")
        return
    predictor = require_predictor(entry)
    try:
        prediction = predictor.read(image)
    except ValueError as exc:
        with answer_col:
            show_error(exc, "This drawing cannot be read")
        return
    if prediction.digit is None:
        answer_col.info(f"Nothing to read yet ({prediction.message}). Draw a digit on the canvas.",
                        icon=":material/draw:")
        return
    outputs = layers.run(prediction.image)
    with answer_col:
        digit_col, conf_col, seen_col = st.columns(3)
        answer_metrics(digit_col, conf_col, prediction)
        seen_image(seen_col, prediction.image, SEEN_PX)
        show_first_weights(layers.first, outputs)

    st.subheader("Layer by layer")
    calibrated = (" The confidence above is calibrated (the model's temperature); the digit is the same."
                  if entry.info.temperature != 1.0 else "")
    st.caption(f"Each layer of `{entry.name}` that computes something, from the input to the answer "
               "(batch normalization, dropout and flattening are left out); the last one gives the model's "
               "probabilities." + calibrated)
    show_layers(outputs)


draw_and_look()
st.caption(f"Model: `{entry.name}` · change it in the sidebar.")
