"""The floor under Draw (bench/app_latency.py): a bare Streamlit page with the drawing canvas alone.

streamlit-drawable-canvas as shipped, no model, no reading: the time from a cold server to the
canvas shown, and the server's memory then, are what Streamlit and the component cost by themselves.
"""

import streamlit as st
from streamlit_drawable_canvas import st_canvas

st.title("Draw a digit")
st_canvas(height=280, width=280, stroke_width=20, stroke_color="#fff", background_color="#000", key="floor")
