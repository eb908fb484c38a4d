"""Draw a digit and see what the model reads, after every stroke."""

import streamlit as st
from streamlit_drawable_canvas import st_canvas

import app_state
from core.charts import probability_bar

CANVAS_PX = 280
# At 280 px a digit drawn ~200 px tall is shrunk ~10x to MNIST's 20 px box: a 20 px brush becomes
# MNIST's 2-3 px stroke.
STROKE_PX = 20
CANVAS_KEY = "draw_canvas"

entry = app_state.page("Draw", ":material/draw:", layout="wide")
st.session_state.setdefault("draw_clears", 0)

st.title("Draw a digit")
st.caption("Draw one digit, 0 to 9, with your mouse or finger. The prediction updates after every stroke.")
entry = app_state.require_model(entry)


def _clear() -> None:
    # A new initial drawing makes the canvas reload empty; dropping the old value avoids showing
    # the previous prediction until the canvas reports back.
    st.session_state["draw_clears"] += 1
    st.session_state.pop(CANVAS_KEY, None)


@st.fragment
def draw_and_read() -> None:
    draw_col, result_col = st.columns([2, 3], gap="large")
    with draw_col:
        st.space("small")  # room for the canvas toolbar, which floats above the drawing
        canvas = st_canvas(
            stroke_width=STROKE_PX, stroke_color="#FFFFFF", background_color="#000000",
            width=CANVAS_PX, height=CANVAS_PX, drawing_mode="freedraw", return_image_data=True,
            initial_drawing={"objects": [], "clears": st.session_state["draw_clears"]}, key=CANVAS_KEY,
        )
        st.button("Clear", key="draw_clear", on_click=_clear, icon=":material/delete:")
        st.caption("Undo and redo are in the toolbar above the canvas.")

    with result_col:
        strokes = (canvas.json_data or {}).get("objects") or []
        image = canvas.image_data if strokes else None
        if image is None:
            st.info("Draw a digit on the black canvas to see what the model reads.", icon=":material/draw:")
            return
        predictor = app_state.require_predictor(entry)
        try:
            prediction = predictor.read(image)
        except ValueError as exc:
            app_state.show_error(exc, "This drawing cannot be read")
            return
        if prediction.digit is None:
            st.info(f"Nothing to read yet ({prediction.message}). Draw a digit on the canvas.",
                    icon=":material/draw:")
            return
        digit_col, conf_col, seen_col = st.columns([1, 1, 1])
        digit_col.metric("Predicted digit", str(prediction.digit))
        conf_col.metric("Confidence", f"{prediction.confidence:.1%}")
        seen_col.image(app_state.model_view(prediction.image, 112), caption="What the model sees (28×28)")
        if prediction.confidence < 0.6:
            st.caption("The model is unsure. Try a larger, single, centred digit.")
        st.plotly_chart(probability_bar(prediction.probabilities), width="stretch", key="draw_probabilities")


draw_and_read()
st.caption(f"Model: `{entry.name}` · change it in the sidebar.")
