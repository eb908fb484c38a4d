"""Draw a digit (or a number) and see what the model reads, after every stroke."""

import streamlit as st

from core.report.charts import boxed_digits, probability_bar
from core.reading.segment import read_number
from ui.canvas import PENS, canvas_colours, drawing_canvas
from ui.corrections import correction_form
from ui.messages import show_error
from ui.models import require_model, require_predictor
from ui.page import light_theme, start_page
from ui.views import answer_metrics, digit_tiles, not_a_digit_warning, seen_image, why_caption, why_image

CANVAS_PX = 280
# Room for a few digits side by side when "Several digits" is on (same height, same brush); the
# drawing column widens to hold it.
CANVAS_WIDE_PX = 360
CANVAS_KEY = "draw_canvas"
SEEN_PX = 112

entry = start_page("Draw", ":material/draw:", layout="wide")
st.session_state.setdefault("draw_clears", 0)
st.session_state.setdefault("draw_multi", False)
st.session_state.setdefault("draw_pen", "Marker")

st.title("Draw a digit")
st.caption("Draw one digit, 0 to 9, with your mouse or finger — or several side by side with "
           "**Several digits** on. The prediction updates after every stroke.")
entry = require_model(entry)


def _clear() -> None:
    # A new initial drawing makes the canvas reload empty; dropping the old value avoids showing
    # the previous prediction until the canvas reports back.
    st.session_state["draw_clears"] += 1
    st.session_state.pop(CANVAS_KEY, None)


def show_digit(predictor, image, answer) -> None:
    """One digit: the answer (in ``answer``, right under the canvas, so that a phone shows it without
    scrolling), what the model saw, why, the probabilities, and a correction."""
    try:
        prediction = predictor.read(image)
    except ValueError as exc:
        show_error(exc, "This drawing cannot be read")
        return
    if prediction.digit is None:
        st.info(f"Nothing to read yet ({prediction.message}). Draw a digit on the canvas.", icon=":material/draw:")
        return
    digit_col, conf_col = answer.columns(2)
    answer_metrics(digit_col, conf_col, prediction)
    seen_col, why_col = st.columns(2)
    seen_image(seen_col, prediction.image, SEEN_PX)
    why_image(predictor, prediction.image, prediction.digit, why_col, SEEN_PX)
    if not prediction.is_digit:
        not_a_digit_warning()
    elif prediction.confidence < 0.6:
        st.caption("The model is unsure. Try a larger, single, centred digit.")
    why_caption(prediction.digit)
    st.plotly_chart(probability_bar(prediction.probabilities), width="stretch", key="draw_probabilities")
    correction_form([("", prediction.image, prediction.digit)], source="draw", model_name=entry.name,
                              label_key="draw_correct_label", save_key="draw_correct_save")


def show_number(predictor, image, answer) -> None:
    """Several digits: the number and the least confidence (in ``answer``, under the canvas), each
    digit with its confidence, the boxes, and a correction."""
    try:
        reading = read_number(predictor, image)
    except ValueError as exc:
        show_error(exc, "This drawing cannot be read")
        return
    if not reading.digits:
        st.info(f"Nothing to read yet ({reading.message}) Draw digits side by side on the canvas.",
                icon=":material/draw:")
        return
    number_col, sure_col = answer.columns(2)
    number_col.metric("Number read", reading.number)
    sure_col.metric("Least sure", f"{min(d.confidence for d in reading.digits):.1%}",
                      help="The confidence of the digit the model is least sure of.")
    labels = [str(d.digit) for d in reading.digits]
    st.image(boxed_digits(image, [d.box for d in reading.digits], labels, side=320,
                          background="white" if light_theme() else "black"),
             caption="The digits found, boxed left to right")
    if not reading.is_digit:
        not_a_digit_warning()
    import pandas as pd  # only for this table: a one-digit reading never loads pandas

    st.dataframe(pd.DataFrame({
        "position": range(1, len(reading.digits) + 1), "digit": labels,
        "confidence": [d.confidence for d in reading.digits],
        "Digit?": ["yes" if d.is_digit else "no" for d in reading.digits],
    }), hide_index=True, column_config={
        "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0.0, max_value=1.0),
        "Digit?": st.column_config.TextColumn("Digit?", help="'no': probably not a digit."),
    })
    digit_tiles(predictor, reading.digits)
    targets = [(f"{i}. read as {d.digit}", d.image, d.digit) for i, d in enumerate(reading.digits, start=1)]
    correction_form(targets, source="draw", model_name=entry.name, label_key="draw_correct_label",
                              save_key="draw_correct_save", which_key="draw_correct_which")


@st.fragment
def draw_and_read() -> None:
    multi = bool(st.session_state["draw_multi"])
    draw_col, result_col = st.columns([1, 1] if multi else [2, 3], gap="large")
    with draw_col:
        st.space("small")  # room for the canvas toolbar, which floats above the drawing
        stroke_px, colour, background = canvas_colours(st.session_state["draw_pen"], light_theme())
        canvas = drawing_canvas(
            stroke_width=stroke_px, stroke_color=colour, background_color=background,
            width=CANVAS_WIDE_PX if multi else CANVAS_PX, height=CANVAS_PX, drawing_mode="freedraw",
            return_image_data=True, initial_drawing={"objects": [], "clears": st.session_state["draw_clears"]},
            key=CANVAS_KEY,
        )
        answer = st.container()
        clear_col, multi_col = st.columns([2, 3], vertical_alignment="center")
        clear_col.button("Clear", key="draw_clear", on_click=_clear, icon=":material/delete:")
        multi_col.toggle("Several digits", key="draw_multi",
                         help="Read a number written side by side, like 42: each digit is found, boxed and read.")
        st.segmented_control("Pen", list(PENS), key="draw_pen", required=True,
                             help="A thick marker, a fine pen or a soft grey pencil: the reader copes with all three.")
        st.caption("Undo and redo are in the toolbar above the canvas.")

    with result_col:
        strokes = (canvas.json_data or {}).get("objects") or []
        image = canvas.image_data if strokes else None
        if image is None:
            what = "some digits side by side" if multi else "a digit"
            st.info(f"Draw {what} on the canvas to see what the model reads.", icon=":material/draw:")
            return
        predictor = require_predictor(entry)
        if multi:
            show_number(predictor, image, answer)
        else:
            show_digit(predictor, image, answer)


draw_and_read()
st.caption(f"Model: `{entry.name}` · change it in the sidebar.")
