"""Take a model home: in a model's details on Home, its ``.keras`` file, its exported ``.onnx``
inference file (checked against its checksum, so an altered file is never sent) and a short
program that reads a digit with the ``.onnx`` file alone (`core.serving.snippet`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core.serving.snippet import SNIPPET_IMAGE, onnx_snippet, onnx_snippet_mnist
from core.storage.store import KERAS_SUFFIX, ONNX_SUFFIX, Entry, ModelStore, StoreError, read_matching

SNIPPET_CAPTION = (
    "A short version of the app's reading, for one digit on plain, evenly lit paper or a drawing; the "
    "app's own reading does more (uneven paper and lighting, photos, transparency, several digits, a "
    "\"not a digit\" check). The file gives the model's raw probabilities: the app's confidence is "
    "calibrated, the digit is the same."
)


def checked_bytes(path: Path, sha256: str) -> Callable[[], bytes]:
    """A function that reads the file at ``path`` when called (a download button's deferred data)
    and returns its bytes only if they still match the checksum the store recorded.

    Args:
        path: the model file, as `ModelStore.verify` returned it.
        sha256: its recorded SHA-256 (``ModelInfo.files``), hex.

    Returns:
        A callable without arguments returning the file's bytes; it raises `StoreError` when the
        file was altered since (or replaced by a newer save of the model: its old files are gone)
        and `OSError` when it cannot be read, so Streamlit sends no file.
    """
    def read() -> bytes:
        try:
            return read_matching(path, sha256)
        except StoreError as exc:
            raise StoreError(f"{exc}; it is not sent.") from None

    return read


def model_downloads(entry: Entry, store: ModelStore) -> None:
    """The download buttons of one stored model (``NAME.keras``, ``NAME.onnx``) and the program
    that reads a digit with ``NAME.onnx``; a model whose served files fail `ModelStore.verify`
    gets a warning saying why instead of its ``.onnx`` button and program.

    Keys: ``home_download_NAME`` (.keras), ``home_download_onnx_NAME`` (.onnx).
    """
    name = entry.name
    keras_col, onnx_col = st.columns(2)
    keras_sha256 = entry.info.files.get(KERAS_SUFFIX)
    keras_col.download_button(
        f"Download {name}.keras", file_name=f"{name}.keras",
        data=checked_bytes(entry.path, keras_sha256) if keras_sha256 else entry.path.read_bytes,
        mime="application/octet-stream", on_click="ignore", icon=":material/download:",
        key=f"home_download_{name}", help="The Keras model, to train further or load in Keras.",
    )
    try:
        info, files = store.verify(name)
    except (StoreError, OSError) as exc:
        hint = "" if "core export" in str(exc) else f" Export it again with `python -m core export {name}`."
        st.warning(f"The inference file of {name!r} is not offered for download: {exc}.{hint}",
                   icon=":material/warning:")
        return
    onnx_col.download_button(
        f"Download {name}.onnx", data=checked_bytes(files["onnx"], info.files[ONNX_SUFFIX]),
        file_name=f"{name}.onnx", mime="application/octet-stream", on_click="ignore",
        icon=":material/download:", key=f"home_download_onnx_{name}",
        help="The exported inference file the app serves: ONNX Runtime reads it, no TensorFlow needed.",
    )
    st.caption(f"Read a digit with `{name}.onnx` and `pip install numpy pillow onnxruntime` only: save the "
               f"image as `{SNIPPET_IMAGE}` beside it and run")
    mnist_tab, any_tab = st.tabs(["An MNIST-style image (5 lines)", "A photo or a drawing of any size"])
    with mnist_tab:
        st.code(onnx_snippet_mnist(f"{name}.onnx"), language="python", wrap_lines=True)
        st.caption("For a 28×28 white digit on black, centred as MNIST's are.")
    with any_tab:
        st.code(onnx_snippet(f"{name}.onnx"), language="python", wrap_lines=True)
        st.caption(SNIPPET_CAPTION)
