"""Around a prediction: what the model saw, why it answered (saliency), and "not a digit"."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image, ImageOps

from core.serving.saliency import overlay, saliency
from ui.page import light_theme


NOT_A_DIGIT = ("This is probably not a digit. The model must still answer 0–9, so the digit shown is only "
               "its nearest guess, and the confidence only says how sure it is among the ten digits, not that "
               "this is one.")


def not_a_digit_warning(container=None) -> None:
    """Say in words that the "not a digit" detector flagged the image (the metrics stay)."""
    (container or st).warning(NOT_A_DIGIT, icon=":material/help:")


def answer_metrics(digit_container, confidence_container, prediction) -> None:
    """The "Predicted digit" and "Confidence" metrics. When the detector flagged the image, grey notes
    under them say "nearest guess" and "among digits": the model must answer 0-9 even for a dot or
    a drawing, so a high confidence alone misleads."""
    flagged = not prediction.is_digit
    digit_container.metric("Predicted digit", str(prediction.digit), delta="nearest guess" if flagged else None,
                           delta_color="off", delta_arrow="off")
    confidence_container.metric("Confidence", f"{prediction.confidence:.1%}",
                                delta="among digits" if flagged else None, delta_color="off",
                                delta_arrow="off")


def model_view(x28, size_px: int = 168):
    """The (28, 28) float image in [0, 1] the model saw, upscaled with nearest-neighbour (crisp pixels):
    light ink on black as the model sees it in the dark theme, dark ink on white in the light theme."""
    pixels = np.clip(np.rint(np.asarray(x28, np.float32).reshape(28, 28) * 255), 0, 255).astype(np.uint8)
    if light_theme():
        pixels = 255 - pixels
    return _framed(Image.fromarray(pixels).resize((size_px, size_px), Image.Resampling.NEAREST))


def seen_image(container, x28, size_px: int, caption: str = "What the model sees (28×28)") -> None:
    """`model_view` shown at its own size: without a width, Streamlit stretches an image to a caption
    wider than it, and "What the model sees" would stand larger than the "Why this digit" beside it."""
    view = model_view(x28, size_px)
    container.image(view, caption=caption, width=view.width)


FRAME_RGB = (209, 213, 219)  # a thin grey frame: the 28x28's edge on a white page


def framed(view: Image.Image) -> Image.Image:
    """``view`` with a 1-pixel grey frame (RGB, or RGBA where it has transparency)."""
    view = view if view.mode == "RGBA" else view.convert("RGB")
    return ImageOps.expand(view, border=1, fill=FRAME_RGB + ((255,) if view.mode == "RGBA" else ()))


def _framed(view: Image.Image) -> Image.Image:
    """``view`` framed in the light theme (its white background meets the page's)."""
    return framed(view) if light_theme() else view


WHY_CAPTION = "Why this digit"
WHY_COLOURS = ("red marks the ink that pushed the model towards {digit}, blue the ink that spoke against it; "
               "the stronger the colour, the more it mattered (grey ink hardly did).")


def why_view(predictor, x28, digit: int, size_px: int = 112):
    """The saliency heatmap of ``digit`` over the 28x28 input (``core.serving.saliency``), with crisp pixels.

    Raises:
        ValueError: an input that is not a (28, 28) image in [0, 1].
    """
    heat = saliency(predictor, x28, digit)
    view = Image.fromarray(overlay(x28, heat, scale=max(1, size_px // 28), light=light_theme()))
    return _framed(view if view.size == (size_px, size_px) else view.resize((size_px, size_px), Image.Resampling.NEAREST))


def why_image(predictor, x28, digit: int, container=None, size_px: int = 112) -> None:
    """Show which pixels drove the prediction (beside "What the model sees")."""
    container = container or st
    try:
        view = why_view(predictor, x28, digit, size_px)
        container.image(view, caption=WHY_CAPTION, width=view.width)
    except ValueError as exc:
        container.warning(f"No heatmap for this image: {exc}", icon=":material/warning:")


def why_caption(digit: int) -> None:
    """One line on the heatmap's colours."""
    st.caption(f"**{WHY_CAPTION}:** " + WHY_COLOURS.format(digit=digit))


def digit_tiles(predictor, digits, size_px: int = 84) -> None:
    """Per digit of a number: what the model saw, and the heatmap of why it read that digit."""
    st.image([model_view(d.image, size_px) for d in digits],
             caption=[f"{n}. sees {d.digit}" for n, d in enumerate(digits, start=1)], width=size_px)
    try:
        views = [why_view(predictor, d.image, d.digit, size_px) for d in digits]
    except ValueError as exc:
        st.warning(f"No heatmaps for these digits: {exc}", icon=":material/warning:")
        return
    st.image(views, caption=[f"{n}. why {d.digit}" for n, d in enumerate(digits, start=1)], width=size_px)
    st.caption("**Why:** " + WHY_COLOURS.format(digit="the digit read"))
