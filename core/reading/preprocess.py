"""Turn any image a person supplies into model input, the way MNIST was made.

MNIST digits are white ink (1.0) on black (0.0); each was fitted into a 20x20 box keeping its
aspect ratio, antialiased, and pasted into 28x28 so that its centre of mass sits at the centre.
This module repeats those steps, one small function each:

    source --grey_image--> grey in [0, 1] --to_ink--> ink map (bright ink, background 0)
        --digit_input: crop_to_ink --> fit_in_box (LANCZOS) --> center_by_mass--> (28, 28) float32

Thresholds only find where the ink is (the crop box, "is there ink at all"); the image the model
sees is always the antialiased ink map itself, so soft, grey and thin strokes keep their shape.
`to_mnist` runs the whole chain; `core.reading.segment` cuts an ink map into digits and calls `digit_input`
on each.

Conventions: numpy arrays are indexed ``(rows, cols)``; Pillow sizes are ``(width, height)``.
An "ink map" is a float32 ``(rows, cols)`` array in [0, 1] with ink bright and background 0.
Centre of mass is measured in pixel-index coordinates; MNIST puts it at ``(14.0, 14.0)`` +- 0.5
(measured on its 10,000 test digits: mean 13.99 and 14.01), and so does `center_by_mass`.

numpy, Pillow and scipy only: no model runtime, no Streamlit.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from core.config import IMAGE_SIZE

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# 8000 x 8000 is the largest square we accept; Pillow's own bomb limit (89 MP) is looser.
MAX_PIXELS = 64_000_000
DEFAULT_MAX_SIDE = 2048
FIT_BOX = 20  # MNIST fitted each digit into 20x20 before centring it in 28x28.

# Ink detection. Intensities are fractions of full scale (0..1).
MIN_CONTRAST = 0.08  # ink must differ from the background by at least ~20 grey levels...
NOISE_FACTOR = 5.0  # ...and by this many noise standard deviations
NOISE_FLOOR = 4.0  # levels within this many noise sigmas of the background count as background
LEVEL_LOW, LEVEL_SPAN = 0.1, 0.5  # levels stretch: ink / peak -> clip((v - low) / span, 0, 1)
FLAT_SPREAD = 0.06  # border brightness spread up to which the background counts as flat
BACKGROUND_WINDOW = 0.3  # background filter size, as a fraction of the image's longer side
WORK_SIDE = 96  # longer side of the copy on which the background is estimated
CROP_THRESHOLD = 0.2  # pixels above this define the crop box (only the box, never the image)

# "No digit" limits: total ink below MIN_INK_MASS pixels' worth, or below MIN_INK_FRACTION of
# the image area, is a speck, not a digit (the lightest MNIST test digit holds 22).
MIN_INK_MASS = 6.0
MIN_INK_FRACTION = 1e-4

_FORMATS_HINT = "Upload a PNG, JPEG, BMP, GIF, WebP or TIFF."
_BLANK_HINT = ("no digit found: no strokes stand out from the background (a blank page, or an even texture "
               "such as noise). Draw or photograph a single digit.")


class ImageReadError(ValueError):
    """The input cannot be read as an image; the message is meant for the person who sent it."""


class NoDigitError(ValueError):
    """The image is readable but holds no ink that could be a digit."""


# --------------------------------------------------------------------------------------------
# Decoding bytes
# --------------------------------------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The image format named by the file's magic bytes (never by its name).

    Args:
        data: the file's first bytes (16 are enough) or the whole file.

    Returns:
        One of `SUPPORTED_FORMATS`, or None when the bytes are not one of them.
    """
    head = bytes(data[:16])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    return None


def _describe_unknown(data: bytes) -> str:
    """A short guess at what non-image bytes are, for the error message."""
    head = bytes(data[:1024])
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    low = text.lower()
    if text.startswith(b"%PDF"):
        return "a PDF document"
    if b"<svg" in low:
        return "an SVG drawing, which is not supported"
    if low.startswith((b"<!doctype html", b"<html")) or any(t in low for t in (b"<head", b"<body", b"<script")):
        return "HTML/text"
    if text.startswith(b"<"):
        return "XML/text"
    if head[4:8] == b"ftyp":
        return "a HEIC/AVIF photo or a video, which is not supported"
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive or an office document"
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "a PostScript/EPS file, which is not supported"
    if head.startswith(b"8BPS"):
        return "a Photoshop file, which is not supported"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "an icon file, which is not supported"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "a JPEG 2000 image, which is not supported"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown kind"
    return "text"


def decode_image(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE) -> Image.Image:
    """Decode an uploaded file into an upright Pillow image, safely.

    Only the six `SUPPORTED_FORMATS` are opened, chosen by magic bytes. The pixel count is checked
    from the header before any pixel data is decoded; large but legal images are downscaled while
    decoding (JPEG) or right after. Animated GIFs and multi-page TIFFs give their first frame.
    EXIF orientation is applied.

    Args:
        data: the file's bytes.
        max_side: the longest side, in pixels, of the returned image; larger images are
            downscaled (keeping aspect ratio). At least 28.

    Returns:
        A loaded `PIL.Image.Image` in mode "L", "LA", "RGB" or "RGBA", 8 bits per channel
        (16-bit and float images are scaled, not clipped, to 0..255), whose width and height are
        at most `max_side`.

    Raises:
        ImageReadError: the bytes are empty, not one of the six formats, damaged or truncated,
            or the image is larger than 64 megapixels.
        ValueError: `max_side` is below 28.
    """
    if int(max_side) < IMAGE_SIZE:
        raise ValueError(f"max_side must be at least {IMAGE_SIZE} pixels, got {max_side}.")
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ImageReadError(f"Expected the image file's bytes, got {type(data).__name__}. {_FORMATS_HINT}")
    if not data:
        raise ImageReadError(f"This file is empty (0 bytes). {_FORMATS_HINT}")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageReadError(
            f"This file is not an image we can read (looks like {_describe_unknown(data)}). {_FORMATS_HINT}"
        )
    try:
        # Turning the bomb warning into an error makes Pillow refuse at open time. The filter is
        # process-wide while the block runs, so a concurrent decode might miss it; our own
        # MAX_PIXELS check below is stricter than Pillow's warning limit, so safety holds anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            _check_pixel_count(width, height)
            image.seek(0)  # first frame of an animation or first page of a TIFF; no frame scan
            longest = max(width, height)
            if fmt == "JPEG" and longest > max_side:
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: no full-size buffer.
                image.draft(None, (math.ceil(width * max_side / longest), math.ceil(height * max_side / longest)))
            image.load()  # decode everything now, so damaged data fails here
            image = _standard_mode(image)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(_too_large_message(exc)) from exc
    except Image.DecompressionBombWarning as exc:
        raise ImageReadError(_too_large_message(exc)) from exc
    except Exception as exc:  # Pillow's plugins raise OSError, ValueError, SyntaxError, struct.error...
        raise ImageReadError(_damaged_message(fmt, exc)) from exc
    image = _exif_upright(image)
    return _limit_side(image, max_side)


def _check_pixel_count(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ImageReadError(f"This image has no pixels ({width}x{height}). {_FORMATS_HINT}")
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f"This image is {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); the limit is "
            f"{MAX_PIXELS // 1_000_000} megapixels. Downscale it first."
        )


def _too_large_message(exc: BaseException) -> str:
    return (
        f"This image declares more than {Image.MAX_IMAGE_PIXELS // 1_000_000} megapixels, too many to open "
        f"safely (it may be a decompression bomb). Upload an image of at most {MAX_PIXELS // 1_000_000} megapixels."
    )


def _damaged_message(fmt: str, exc: BaseException) -> str:
    detail = str(exc).strip() or type(exc).__name__
    if len(detail) > 160:
        detail = detail[:157] + "..."
    if "truncated" in detail.lower():
        return f"This {fmt} file is truncated: its pixel data ends early ({detail}). Upload the complete file."
    return f"This file looks like a {fmt} image but cannot be decoded ({detail}). It may be damaged. {_FORMATS_HINT}"


def _exif_upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; broken EXIF leaves the pixels as stored rather than failing."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF must not make a readable image unreadable
        return image
    return upright if upright is not None else image


def _standard_mode(image: Image.Image) -> Image.Image:
    """The image in mode "L", "LA", "RGB" or "RGBA", 8 bits per channel.

    Palette images with transparency become RGBA (plain `convert("L")` would ignore it); 16-bit,
    32-bit integer and float images are scaled into 0..255 (`convert("L")` would clip them).
    """
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if transparent else "RGB")
    if mode == "La":
        return image.convert("LA")
    if mode == "RGBa":
        return image.convert("RGBA")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_high_depth_to_uint8(np.asarray(image), mode), mode="L")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float grey image into uint8 0..255."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mode.startswith("I;16"):
        full_scale = 65535.0
    else:
        low, high = float(values.min()), float(values.max())
        if mode == "F" and low >= 0.0 and high <= 1.0:
            full_scale = 1.0
        elif low >= 0.0 and high <= 255.0:
            full_scale = 255.0
        elif low >= 0.0 and high <= 65535.0:
            full_scale = 65535.0
        else:  # an unusual range: stretch it
            values = values - low
            full_scale = max(high - low, 1e-12)
    return np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def _limit_side(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink by an integer factor (box filter, so thin strokes fade instead of vanishing)."""
    longest = max(image.size)
    if longest <= max_side:
        return image
    return image.reduce(math.ceil(longest / max_side))


# --------------------------------------------------------------------------------------------
# Any input -> pixel planes
# --------------------------------------------------------------------------------------------


def _as_pixels(source: object, max_side: int) -> tuple[np.ndarray, float]:
    """Raw pixels ``(rows, cols[, channels])`` of any supported source, and their full scale."""
    if int(max_side) < IMAGE_SIZE:
        raise ValueError(f"max_side must be at least {IMAGE_SIZE} pixels, got {max_side}.")
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = decode_image(source, max_side=max_side)
    if isinstance(source, Image.Image):
        try:
            image = _limit_side(_standard_mode(source), max_side)
            if image.mode in ("RGB", "RGBA"):  # Pillow's luma (ITU-R 601) in C, as `_planes` computes
                image = image.convert("L" if image.mode == "RGB" else "LA")
            pixels = np.asarray(image)
        except Exception as exc:
            raise ImageReadError(f"This image cannot be read ({exc}). {_FORMATS_HINT}") from exc
        return pixels, 255.0
    if isinstance(source, np.ndarray):
        pixels = _validate_array(source)
        scale = _full_scale(pixels)
        if max(pixels.shape[:2]) > max_side:
            factor = math.ceil(max(pixels.shape[:2]) / max_side)
            pixels = _block_mean(pixels.astype(np.float32) / np.float32(scale), factor)
            scale = 1.0
        return pixels, scale
    raise ValueError(
        f"Expected an image as bytes, a PIL image or a numpy array, got {type(source).__name__}."
    )


def _validate_array(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"Expected an image array of numbers (bool, integer or float), got dtype {array.dtype}."
        )
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 2, 3, 4))
    if not shape_ok:
        raise ValueError(
            "Expected an image array of shape (rows, cols) for grey, or (rows, cols, C) with C = 1, 2 "
            f"(grey + alpha), 3 (RGB) or 4 (RGBA), got shape {array.shape}."
        )
    if array.size == 0:
        raise ValueError(f"Expected an image array with pixels, got an empty array of shape {array.shape}.")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("The image array contains NaN or infinite values; expected finite pixel values.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return array


def _full_scale(pixels: np.ndarray) -> float:
    """The value that means "full brightness" for this array's dtype and range."""
    kind = pixels.dtype.kind
    if kind == "b":
        return 1.0
    if kind == "u" and pixels.dtype.itemsize == 1:
        return 255.0
    if kind == "u" and pixels.dtype.itemsize == 2:  # 16-bit, whatever its byte order
        return 65535.0
    low, high = float(pixels.min()), float(pixels.max())
    if kind == "f":
        if low >= 0.0 and high <= 1.0:
            return 1.0
        if low >= 0.0 and high <= 255.0:
            return 255.0
        raise ValueError(
            f"Expected float pixel values in [0, 1] or [0, 255], got values from {low:g} to {high:g}."
        )
    if low >= 0 and high <= 255:
        return 255.0
    if low >= 0 and high <= 65535:
        return 65535.0
    raise ValueError(
        f"Expected integer pixel values in 0..255 (or 0..65535 for 16-bit), got values from {low:g} to {high:g}."
    )

def _block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """float32 means of ``factor x factor`` blocks of a (rows, cols[, c]) array (edges repeated)."""
    if factor <= 1:
        return values.astype(np.float32, copy=False)
    rows, cols = values.shape[:2]
    pad = [(0, (-rows) % factor), (0, (-cols) % factor)] + [(0, 0)] * (values.ndim - 2)
    values = np.pad(values, pad, mode="edge") if pad[0][1] or pad[1][1] else values
    rows, cols = values.shape[:2]
    if factor <= 8:  # factor**2 strided sums: faster than numpy's reduction over short axes
        total = values[::factor, ::factor].astype(np.float32)
        for i in range(factor):
            for j in range(factor):
                if i or j:
                    total += values[i::factor, j::factor]
    else:
        blocks = values.reshape(rows // factor, factor, cols // factor, factor, *values.shape[2:])
        total = blocks.sum(axis=3, dtype=np.float32).sum(axis=1)
    total *= np.float32(1.0 / (factor * factor))
    return total


def _planes(pixels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 grey (ITU-R 601 luma) and alpha (or None) in [0, 1] from raw pixels."""
    inv = np.float32(1.0 / scale)
    if pixels.ndim == 2:
        return pixels.astype(np.float32) * inv, None
    channels = pixels.shape[2]
    if channels == 2:
        return pixels[:, :, 0].astype(np.float32) * inv, pixels[:, :, 1].astype(np.float32) * inv
    red, green, blue = (pixels[:, :, i].astype(np.float32) for i in range(3))
    grey = (red * np.float32(0.299) + green * np.float32(0.587) + blue * np.float32(0.114)) * inv
    alpha = pixels[:, :, 3].astype(np.float32) * inv if channels == 4 else None
    return grey, alpha


# --------------------------------------------------------------------------------------------
# Ink maps
# --------------------------------------------------------------------------------------------


def grey_image(source: object, *, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Any supported source as one float32 grey plane in [0, 1], transparency flattened.

    Transparent areas are laid on a backdrop that contrasts with the opaque pixels (white on
    average dark content, black on light), so dark strokes on a transparent canvas and white
    strokes on a transparent PNG both show.

    Args:
        source: the bytes of an image file, a PIL image, or a numpy array (see `to_ink`).
        max_side: larger images are downscaled to this longest side first.

    Returns:
        float32 (rows, cols) array in [0, 1] (uniform when every pixel is fully transparent).

    Raises:
        ImageReadError, ValueError: as for `to_ink`.
    """
    pixels, scale = _as_pixels(source, max_side)
    grey, alpha = _planes(pixels, scale)
    if alpha is None or float(alpha.min()) >= 1.0:
        return grey
    alpha_sum = float(alpha.sum(dtype=np.float64))
    mean_grey = float((grey * alpha).sum(dtype=np.float64)) / alpha_sum if alpha_sum > 0.0 else 0.0
    backdrop = np.float32(0.0 if mean_grey > 0.5 else 1.0)
    return grey * alpha + backdrop * (np.float32(1.0) - alpha)


def to_ink(image: object, *, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Turn an image into an ink map: ink bright, background 0, whatever the paper looked like.

    Polarity comes from the background (light paper is inverted); uneven paper or lighting is
    estimated by a grey opening wider than any stroke and subtracted; the ink is scaled to its
    peak and its levels stretched as the minimal MNIST recipe does
    (``clip((v - 0.1) / 0.5, 0, 1)``, the 0.1 raised to the noise floor of grainy photos) so that
    a soft pencil line reaches full ink while its antialiased edges stay soft.

    Args:
        image: a PIL image; a numpy array of shape (rows, cols), (rows, cols, 1), (rows, cols, 2)
            (grey + alpha), (rows, cols, 3) (RGB) or (rows, cols, 4) (RGBA, e.g. the drawing
            canvas' uint8 array), of dtype bool, any integer (0..255, or 0..65535 for 16-bit) or
            float (in [0, 1] or [0, 255]); or the bytes of an image file.
        max_side: larger images are downscaled to this longest side first.

    Returns:
        float32 array (rows, cols) in [0, 1] (after any downscaling); all zeros when there is no
        ink (blank, fully transparent, too little contrast, or noise only).

    Raises:
        ImageReadError: bytes that cannot be decoded (see `decode_image`).
        ValueError: an array of unsupported shape, dtype or value range, or with NaN/inf.
    """
    return _stretch_levels(_minus_background(grey_image(image, max_side=max_side)))


def _minus_background(grey: np.ndarray) -> np.ndarray:
    """float32 "ink minus paper": the difference from the (flat or uneven) background, ink positive."""
    rows, cols = grey.shape
    small = _block_mean(grey, max(1, math.ceil(max(rows, cols) / WORK_SIDE)))
    ring = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    level = float(np.median(ring))
    low_q, high_q = np.percentile(ring, [10, 90])
    dark_ink = level - float(small.min()) > float(small.max()) - level  # dark ink on light paper
    if dark_ink:
        grey, small, level = 1.0 - grey, 1.0 - small, 1.0 - level
    if high_q - low_q <= FLAT_SPREAD or min(small.shape) < 8:
        return grey - np.float32(level)
    return grey - _background_map(small, (rows, cols))


def _background_map(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The paper's brightness under bright ink, from a small copy, at full size.

    A grey opening (minimum then maximum filter) wider than any stroke removes the ink and keeps
    the slowly varying paper and lighting; linear gradients pass through it exactly.
    """
    size = max(3, int(round(max(small.shape) * BACKGROUND_WINDOW)))
    opened = ndimage.grey_opening(small, size=(size, size), mode="nearest")
    opened = ndimage.uniform_filter(opened, size=max(1, size // 2), mode="nearest")
    rows, cols = shape
    full = Image.fromarray(opened.astype(np.float32), mode="F").resize((cols, rows), Image.Resampling.BILINEAR)
    return np.asarray(full, dtype=np.float32)


def _stretch_levels(diff: np.ndarray) -> np.ndarray:
    """Scale "ink minus paper" to its peak and stretch the levels; zeros when there is no ink.

    The peak is taken on 2x2 block means (one hot pixel of noise is not the ink's peak); noise is
    the median absolute deviation of the border pixels, where the paper is (a bold digit may
    cover most of the image, so the whole image would measure the ink).
    """
    peak = float(_block_mean(diff, 2).max()) if min(diff.shape) >= 2 else float(diff.max())
    ring = np.concatenate([diff[0], diff[-1], diff[:, 0], diff[:, -1]])
    sigma = 1.4826 * float(np.median(np.abs(ring - np.median(ring))))
    if peak < MIN_CONTRAST or peak < NOISE_FACTOR * sigma:
        return np.zeros(diff.shape, np.float32)
    low = max(LEVEL_LOW, NOISE_FLOOR * sigma / peak)
    ink = diff * np.float32(1.0 / (peak * LEVEL_SPAN))
    ink -= np.float32(low / LEVEL_SPAN)
    return np.clip(ink, 0.0, 1.0, out=ink)


# --------------------------------------------------------------------------------------------
# Crop, fit, centre
# --------------------------------------------------------------------------------------------


def _as_ink_map(ink: np.ndarray, name: str = "ink") -> np.ndarray:
    ink = np.asarray(ink)
    if ink.ndim != 2 or ink.dtype.kind not in "biuf":
        raise ValueError(f"Expected {name} as a 2-D (rows, cols) array of numbers, got {ink.dtype} {ink.shape}.")
    return ink.astype(np.float32, copy=False)


def crop_to_ink(ink: np.ndarray, threshold: float = CROP_THRESHOLD, *, min_mass: float | None = None) -> np.ndarray:
    """Crop an ink map to the bounding box of its pixels above `threshold` (fainter ones kept).

    Args:
        ink: float32 (rows, cols) ink map in [0, 1].
        threshold: pixels above this value define the box.
        min_mass: total ink (sum of the map) below which the ink is a speck, not a digit;
            default ``max(MIN_INK_MASS, MIN_INK_FRACTION * rows * cols)``.

    Returns:
        float32 (box_rows, box_cols) copy of the map inside the box.

    Raises:
        NoDigitError: no pixel above `threshold`, or too little ink in total.
        ValueError: `ink` is not a 2-D numeric array.
    """
    ink = _as_ink_map(ink)
    if min_mass is None:
        min_mass = max(MIN_INK_MASS, MIN_INK_FRACTION * ink.size)
    rows, cols = np.nonzero(ink > threshold)
    if rows.size == 0:
        raise NoDigitError(_BLANK_HINT)
    mass = float(ink.sum(dtype=np.float64))
    if mass < min_mass:
        raise NoDigitError(
            f"no digit found: only a speck of ink ({mass:.1f} pixels' worth). "
            "Draw or photograph a single digit, large enough to read."
        )
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].copy()


def fit_in_box(ink: np.ndarray, box: int = FIT_BOX) -> np.ndarray:
    """Resize a cropped ink map so its longer side is `box` pixels, keeping the aspect ratio.

    Pillow's LANCZOS filter, widened by the reduction factor, averages every input pixel into
    the result: thin strokes fade a little instead of vanishing or thickening.

    Args:
        ink: float32 (rows, cols) cropped ink map in [0, 1], not empty.
        box: the longer side of the result, in pixels.

    Returns:
        float32 array whose longer side is `box` (shorter side at least 1), values in [0, 1].

    Raises:
        ValueError: `ink` is empty or not 2-D, or `box` is below 1.
        NoDigitError: `ink` holds no ink.
    """
    ink = _as_ink_map(ink)
    if ink.size == 0:
        raise ValueError(f"Expected a non-empty cropped ink map, got shape {ink.shape}.")
    if int(box) < 1:
        raise ValueError(f"box must be at least 1 pixel, got {box}.")
    rows, cols = ink.shape
    scale = box / max(rows, cols)
    size = (max(1, int(math.floor(cols * scale + 0.5))), max(1, int(math.floor(rows * scale + 0.5))))
    fitted = Image.fromarray(ink, mode="F").resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    fitted = np.clip(np.asarray(fitted, dtype=np.float32), 0.0, 1.0)
    if float(fitted.max()) <= 0.0:
        raise NoDigitError(_BLANK_HINT)
    return fitted


def center_by_mass(fitted: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Paste a fitted digit into a `size` x `size` frame with its centre of mass at the centre.

    As MNIST did: the shift is the centre-of-mass offset rounded to whole pixels (so nothing is
    resampled again), clamped so the whole glyph stays inside the frame.

    Args:
        fitted: float32 (rows, cols) array with rows, cols <= size (from `fit_in_box`).
        size: side of the square output.

    Returns:
        float32 (size, size) array; values are those of `fitted`, zero elsewhere.

    Raises:
        ValueError: `fitted` is not 2-D, empty or larger than the frame.
        NoDigitError: `fitted` holds no ink.
    """
    fitted = _as_ink_map(fitted, "fitted")
    rows, cols = fitted.shape
    if rows > size or cols > size or rows == 0 or cols == 0:
        raise ValueError(f"Expected a non-empty digit of at most {size}x{size} pixels, got {rows}x{cols}.")
    weights = np.maximum(fitted, 0.0)
    mass = float(weights.sum(dtype=np.float64))
    if mass <= 0.0:
        raise NoDigitError(_BLANK_HINT)
    row_com = float(weights.sum(axis=1, dtype=np.float64) @ np.arange(rows)) / mass
    col_com = float(weights.sum(axis=0, dtype=np.float64) @ np.arange(cols)) / mass
    half = size / 2.0
    top = min(max(int(math.floor(half - row_com + 0.5)), 0), size - rows)
    left = min(max(int(math.floor(half - col_com + 0.5)), 0), size - cols)
    out = np.zeros((size, size), np.float32)
    out[top : top + rows, left : left + cols] = fitted
    return out


def digit_input(ink: np.ndarray, *, min_mass: float | None = None) -> np.ndarray:
    """The 28x28 model input for the one digit in an ink map: crop, fit 20x20, centre by mass.

    Args:
        ink: float32 (rows, cols) ink map in [0, 1] holding one digit.
        min_mass: as for `crop_to_ink`.

    Returns:
        float32 (28, 28) array in [0, 1].

    Raises:
        NoDigitError: the map holds no ink, or only a speck.
        ValueError: `ink` is not a 2-D numeric array.
    """
    return center_by_mass(fit_in_box(crop_to_ink(ink, min_mass=min_mass)), IMAGE_SIZE)


def to_mnist(source: object, *, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Turn an image of one digit into a 28x28 MNIST-style model input.

    Args:
        source: the bytes of a PNG, JPEG, BMP, GIF, WebP or TIFF file; a PIL image; or a numpy
            array as accepted by `to_ink` (e.g. the drawing canvas' (H, W, 4) uint8 RGBA array).
        max_side: larger images are downscaled to this longest side before processing.

    Returns:
        float32 (28, 28) array in [0, 1], ink bright on black like MNIST / 255: the digit fitted
        into 20x20 keeping its aspect ratio and centred by centre of mass.

    Raises:
        ImageReadError: bytes that cannot be read as an image.
        NoDigitError: a readable image without ink (blank, fully transparent, a speck, noise).
        ValueError: an array of unsupported shape, dtype or value range, or with NaN/inf.
    """
    return digit_input(to_ink(source, max_side=max_side))
