"""The start every page shares (page config and the sidebar model picker), and page links."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.storage.store import Entry
from ui.models import model_picker

ROOT = Path(__file__).resolve().parent.parent


def start_page(title: str, icon: str, *, layout: str = "centered") -> Entry | None:
    """Common page start: page config and the sidebar model picker.

    Returns:
        The store entry of the model this visitor uses, or None when the store is empty.
    """
    st.set_page_config(page_title=f"{title} · Digit recognizer", page_icon=icon, layout=layout)
    return model_picker()


def page_exists(path: str) -> bool:
    """Whether a page file exists (pages added by others are linked only once they exist)."""
    return (ROOT / path).is_file()


def light_theme() -> bool:
    """Whether the visitor's page shows the light theme (``st.context.theme``; light when unknown,
    as before the browser has said)."""
    return st.context.theme.type != "dark"
