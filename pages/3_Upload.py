"""Read the digit (or the number) in one or many image files."""

import re
import unicodedata

import pandas as pd
import streamlit as st

from core.report.charts import boxed_digits, probability_bar
from core.reading.segment import read_number
from core.reading.preprocess import decode_image
from ui.corrections import correction_form
from ui.models import require_model, require_predictor
from ui.page import start_page
from ui.views import (
    answer_metrics, digit_tiles, framed, not_a_digit_warning, seen_image, why_caption, why_image,
)

TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"]
MAX_DETAILED = 30  # per-file cards drawn; the table covers every file
THUMB_PX = 220
BOXED_PX = 420  # the image with the digits boxed (several digits)
SEEN_PX = 112


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


entry = require_model(start_page("Upload", ":material/upload:", layout="wide"))
st.session_state.setdefault("upload_multi", False)

st.title("Read digits in images")
st.caption("Upload photos or scans with one digit each — or a number, like 2026, with **Several digits** on: "
           "dark on light or light on dark, any size. Each digit is cropped to its ink, scaled into 20×20 "
           "and centred in 28×28, as MNIST was made.")
files = st.file_uploader("Images, one digit each (or a number)", type=TYPES, accept_multiple_files=True,
                         key="upload_files", help="PNG, JPEG, BMP, GIF, WebP or TIFF; several at once are fine.")
multi = st.toggle("Several digits", key="upload_multi",
                  help="Read a number written side by side in each image: every digit is found, boxed and read.")
if not files:
    st.info("Upload one or more images to read the digits in them.", icon=":material/upload:")
    st.stop()

predictor = require_predictor(entry)

names = [display_name(f.name) for f in files]
images = []
for f in files:
    try:
        images.append(decode_image(f.getvalue()))
    except (ValueError, OSError) as exc:  # ImageReadError: the file is not a readable image
        images.append(exc)
with st.spinner("Reading…"):
    if multi:
        results = []
        for im in images:
            try:
                results.append(im if isinstance(im, Exception) else read_number(predictor, im))
            except (ValueError, OSError) as exc:
                results.append(exc)
    else:
        answers = iter(predictor.read_many([im for im in images if not isinstance(im, Exception)]))
        results = [im if isinstance(im, Exception) else next(answers) for im in images]


def sentence(message: str) -> str:
    """A reading's message as a sentence: its first letter capitalised, the rest as written."""
    return message[:1].upper() + message[1:]


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


rows = []
for name, res in zip(names, results):
    if isinstance(res, Exception):
        note, digit, confidence, is_digit = f"Cannot be read. {res}", None, None, None
    elif multi:
        found = bool(res.digits)
        note, digit = sentence(res.message), res.number or None
        confidence = min(d.confidence for d in res.digits) if found else None
        is_digit = yes_no(res.is_digit) if found else None
    elif res.digit is None:
        note, digit, confidence, is_digit = sentence(res.message), None, None, None
    else:
        note, digit, confidence, is_digit = "", res.digit, res.confidence, yes_no(res.is_digit)
    rows.append({"file": name, "number" if multi else "digit": digit, "confidence": confidence,
                 "Digit?": is_digit, "note": note})
table = pd.DataFrame(rows).astype({"number": "string"} if multi else {"digit": "Int64"}).astype(
    {"confidence": "Float64", "Digit?": "string"})

if len(files) > 1:
    read = int(table["number" if multi else "digit"].notna().sum())
    st.subheader(f"{read} of {len(files)} images read")
    st.dataframe(table, hide_index=True, column_config={
        "confidence": st.column_config.ProgressColumn(
            "lowest confidence" if multi else "confidence", format="percent", min_value=0.0, max_value=1.0,
            help="Of the digits in the image, the one the model is least sure of." if multi else None),
        "Digit?": st.column_config.TextColumn("Digit?", help="'no': probably not a digit."),
    })
    csv = table.assign(file=table["file"].map(csv_cell), confidence=table["confidence"].round(4))
    st.download_button("Download as CSV", data=csv.to_csv(index=False).encode("utf-8"), file_name="digits.csv",
                       mime="text/csv", key="upload_csv", on_click="ignore", icon=":material/download:")


def thumbnail(container, image) -> None:
    """The uploaded image, at most THUMB_PX a side, framed so that a white page shows on a white card."""
    thumb = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    thumb.thumbnail((THUMB_PX, THUMB_PX))
    container.image(framed(thumb), caption=f"Uploaded ({image.width}×{image.height})")


@st.fragment
def digit_card(i: int, name: str, image, res) -> None:
    # A fragment: picking or saving a correction reruns this card only, not every file's reading.
    st.markdown(f"**{md(name)}**")
    if res.digit is None:  # the message takes the card's width beside the thumbnail
        shown, note = st.columns([1.1, 4.5], gap="medium")
        thumbnail(shown, image)
        note.info(sentence(res.message) or "No digit found.")
        return
    shown, seen, why, numbers, chart = st.columns([1.1, 0.8, 0.8, 0.9, 2.0], gap="medium")
    thumbnail(shown, image)
    seen_image(seen, res.image, SEEN_PX, "What the model sees")
    why_image(predictor, res.image, res.digit, why, SEEN_PX)
    answer_metrics(numbers, numbers, res)
    with chart:
        st.plotly_chart(probability_bar(res.probabilities, title=None, height=220), width="stretch",
                        key=f"upload_probabilities_{i}")
    if not res.is_digit:
        not_a_digit_warning()
    why_caption(res.digit)
    correction_form([("", res.image, res.digit)], source="upload", model_name=entry.name,
                              label_key=f"upload_correct_label_{i}", save_key=f"upload_correct_save_{i}")


@st.fragment
def number_card(i: int, name: str, image, reading) -> None:
    st.markdown(f"**{md(name)}**")
    if not reading.digits:
        shown, note = st.columns([1, 3])
        thumbnail(shown, image)
        note.info(sentence(reading.message) or "No digit found.")
        return
    shown, numbers = st.columns([1.7, 1], gap="medium")
    labels = [str(d.digit) for d in reading.digits]
    with shown:
        st.image(boxed_digits(image, [d.box for d in reading.digits], labels, side=BOXED_PX),
                 caption=f"The digits found, boxed ({image.width}×{image.height})")
        digit_tiles(predictor, reading.digits)
    numbers.metric("Number read", reading.number)
    numbers.metric("Lowest confidence", f"{min(d.confidence for d in reading.digits):.1%}",
                   help="The confidence of the digit the model is least sure of.")
    numbers.dataframe(pd.DataFrame({
        "digit": labels, "confidence": [d.confidence for d in reading.digits],
        "Digit?": [yes_no(d.is_digit) for d in reading.digits],
    }), hide_index=True, column_config={
        "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0.0, max_value=1.0),
    })
    if not reading.is_digit:
        not_a_digit_warning()
    targets = [(f"{n}. read as {d.digit}", d.image, d.digit) for n, d in enumerate(reading.digits, start=1)]
    correction_form(targets, source="upload", model_name=entry.name,
                              label_key=f"upload_correct_label_{i}", save_key=f"upload_correct_save_{i}",
                              which_key=f"upload_correct_which_{i}")


for i, (name, image, res) in enumerate(zip(names[:MAX_DETAILED], images, results)):
    with st.container(border=True):
        if isinstance(res, Exception):
            st.error(f"**{md(name)}** cannot be read. {md(str(res))}", icon=":material/broken_image:")
        elif multi:
            number_card(i, name, image, res)
        else:
            digit_card(i, name, image, res)
if len(files) > MAX_DETAILED:
    st.caption(f"Details are shown for the first {MAX_DETAILED} images; the table above lists all {len(files)}.")
