"""The floor under Home (bench/app_latency.py): a bare Streamlit page with a title and one metric.

Whatever this page takes from a cold server to its metric is Streamlit's own start and frontend,
which no app on Streamlit can go under on the same machine.
"""

import streamlit as st

st.title("Handwritten digit recognizer")
st.metric("Test accuracy", "99.72%")
