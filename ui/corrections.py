"""Corrections: "Wrong? The right digit is ..." under a prediction, stored for review and fine-tuning."""

from __future__ import annotations

import streamlit as st


def _save_correction(image28, predicted: int | None, source: str, model_name: str, label_key: str,
                     flash_key: str) -> None:
    # A button callback: runs before the rerun, so the digit picker can be reset here.
    import sqlite3

    from core.storage.corrections import CorrectionStore

    label = st.session_state.get(label_key)
    if label is None:
        st.session_state[flash_key] = ("error", "Pick the right digit first, then save.")
        return
    try:
        new_id = CorrectionStore().add(image28, int(label), predicted, source, model_name)
    except (ValueError, OSError, sqlite3.Error) as exc:
        st.session_state[flash_key] = ("error", f"The correction could not be saved: {exc}")
        return
    st.session_state[label_key] = None
    st.session_state[flash_key] = ("success", f"Saved correction #{new_id}: this is a {int(label)}. "
                                              "It can be reviewed and used for fine-tuning on the Corrections page.")


def correction_form(targets: list[tuple[str, object, int | None]], *, source: str, model_name: str,
                    label_key: str, save_key: str, which_key: str | None = None) -> None:
    """"Wrong? The right digit is …": a digit picker and a save button storing a correction.

    Args:
        targets: ``(title, image28, predicted)`` per digit that can be corrected: the float (28, 28)
            input the model saw and its answer. With several (a number), a picker asks which one.
        source: "draw" or "upload".
        model_name: the store name of the model that answered.
        label_key, save_key, which_key: the page-scoped widget keys.
    """
    from core.storage.corrections import STORED_NOTE

    flash_key = f"{save_key}_flash"
    if len(targets) > 1:
        # Two pickers side by side and the button under them: it fits a narrow column too.
        which_col, label_col = st.columns(2, vertical_alignment="bottom")
        which = which_col.selectbox("Which digit", range(len(targets)), format_func=lambda i: targets[i][0],
                                    key=which_key or f"{save_key}_which")
        which = which if which is not None and which < len(targets) else 0
        save_col = st.container()
    else:
        label_col, save_col = st.columns(2, vertical_alignment="bottom")
        which = 0
    _, image28, predicted = targets[which]
    label = label_col.selectbox("Wrong? The right digit is", range(10), index=None, placeholder="pick a digit",
                                key=label_key)
    save_col.button("Save correction", key=save_key, disabled=label is None, icon=":material/save:",
                    on_click=_save_correction, args=(image28, predicted, source, model_name, label_key, flash_key))
    flash = st.session_state.pop(flash_key, None)
    if flash is not None:
        kind, message = flash
        if kind == "success":
            st.success(message, icon=":material/check_circle:")
            st.toast(message, icon=":material/check_circle:")
        else:
            st.error(message, icon=":material/error:")
    st.caption(STORED_NOTE)
