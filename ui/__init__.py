"""The Streamlit glue the pages share, one module per concern."""
