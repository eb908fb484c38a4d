"""Read the digit in one or many image files."""

import re
import unicodedata

import pandas as pd
import streamlit as st

import app_state
from core.charts import probability_bar
from core.preprocess import decode_image

TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"]
MAX_DETAILED = 30  # per-file cards drawn; the table covers every file
THUMB_PX = 220


def display_name(raw: str) -> str:
    """A file's base name, safe to show as text: no folders, no control characters, at most 80 chars."""
    text = unicodedata.normalize("NFC", str(raw)).replace("\\", "/").rstrip("/")
    base = text.rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if not unicodedata.category(ch).startswith("C")).strip()
    if len(base) > 80:
        base = base[:38] + "…" + base[-38:]
    return base or "unnamed file"


def md(text: str) -> str:
    """Escape text for Streamlit markdown (punctuation, and ':' so it is never read as an icon or colour)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text)


def csv_cell(text: str) -> str:
    """Keep spreadsheet programs from reading a file name as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


entry = app_state.require_model(app_state.page("Upload", ":material/upload:", layout="wide"))

st.title("Read digits in images")
st.caption("Upload photos or scans with one digit each: dark on light or light on dark, any size. "
           "Each image is cropped to its ink, scaled into 20×20 and centred in 28×28, as MNIST was made.")
files = st.file_uploader("Images, one digit each", type=TYPES, accept_multiple_files=True, key="upload_files",
                         help="PNG, JPEG, BMP, GIF, WebP or TIFF; several at once are fine.")
if not files:
    st.info("Upload one or more images to read the digits in them.", icon=":material/upload:")
    st.stop()

predictor = app_state.require_predictor(entry)

names = [display_name(f.name) for f in files]
images = []
for f in files:
    try:
        images.append(decode_image(f.getvalue()))
    except (ValueError, OSError) as exc:  # ImageReadError: the file is not a readable image
        images.append(exc)
with st.spinner("Reading…"):
    answers = iter(predictor.read_many([im for im in images if not isinstance(im, Exception)]))
results = [im if isinstance(im, Exception) else next(answers) for im in images]

rows = []
for name, res in zip(names, results):
    if isinstance(res, Exception):
        rows.append({"file": name, "digit": None, "confidence": None, "note": f"cannot be read: {res}"})
    elif res.digit is None:
        rows.append({"file": name, "digit": None, "confidence": None, "note": res.message})
    else:
        rows.append({"file": name, "digit": res.digit, "confidence": res.confidence, "note": ""})
table = pd.DataFrame(rows).astype({"digit": "Int64", "confidence": "Float64"})

if len(files) > 1:
    read = int(table["digit"].notna().sum())
    st.subheader(f"{read} of {len(files)} images read")
    st.dataframe(table, hide_index=True, column_config={
        "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0.0, max_value=1.0),
    })
    csv = table.assign(file=table["file"].map(csv_cell), confidence=table["confidence"].round(4))
    st.download_button("Download as CSV", data=csv.to_csv(index=False).encode("utf-8"), file_name="digits.csv",
                       mime="text/csv", key="upload_csv", on_click="ignore", icon=":material/download:")

for i, (name, image, res) in enumerate(zip(names[:MAX_DETAILED], images, results)):
    with st.container(border=True):
        if isinstance(res, Exception):
            st.error(f"**{md(name)}** cannot be read. {md(str(res))}", icon=":material/broken_image:")
            continue
        st.markdown(f"**{md(name)}**")
        shown, seen, numbers, chart = st.columns([1.1, 0.8, 0.9, 2.2], gap="medium")
        thumb = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        thumb.thumbnail((THUMB_PX, THUMB_PX))
        shown.image(thumb, caption=f"Uploaded ({image.width}×{image.height})")
        if res.digit is None:
            numbers.info(res.message.capitalize() if res.message else "No digit found.")
            continue
        seen.image(app_state.model_view(res.image, 112), caption="What the model sees")
        numbers.metric("Predicted digit", str(res.digit))
        numbers.metric("Confidence", f"{res.confidence:.1%}")
        with chart:
            st.plotly_chart(probability_bar(res.probabilities, title=None, height=220), width="stretch",
                            key=f"upload_probabilities_{i}")
if len(files) > MAX_DETAILED:
    st.caption(f"Details are shown for the first {MAX_DETAILED} images; the table above lists all {len(files)}.")
