"""Turn any image a person supplies into model input, the way MNIST was made.

MNIST digits are white ink (1.0) on black (0.0); each was fitted into a 20x20 box keeping its
aspect ratio, antialiased, and pasted into 28x28 so that its centre of mass sits at the centre.
This module repeats those steps for a drawing, an upload or a photo:

    bytes --decode_image--> PIL image --to_ink--> ink map --crop_to_ink--> cropped
        --fit_in_box (or fit_strokes)--> 20x20 --center_by_mass--> (28, 28) float32

`to_mnist` runs the whole chain; `segment_digits` and `digit_inputs` (or `to_mnist_digits`) do
the same for several digits side by side.

Conventions: numpy arrays are indexed ``(rows, cols)``; Pillow sizes are ``(width, height)``
and are kept under those names. An "ink map" is a float32 ``(rows, cols)`` array in [0, 1] with
ink bright and background 0. Centre of mass is measured in pixel-index coordinates (pixel
``(i, j)`` sits at ``(i, j)``); MNIST puts it at ``(14.0, 14.0)`` +- 0.5 in those coordinates
(measured on its 10,000 test digits: mean 13.99 and 14.01), and so does `center_by_mass`.

No TensorFlow, no Streamlit: this module is imported by the fast pages.
"""

from __future__ import annotations

import io
import math
import sys
import warnings
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from core import kernels
from core.config import IMAGE_SIZE

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# 8000 x 8000 is the largest square we accept; Pillow's own bomb limit (89 MP) is looser.
MAX_PIXELS = 64_000_000
DEFAULT_MAX_SIDE = 2048
FIT_BOX = 20  # MNIST fitted each digit into 20x20 before centring it in 28x28.

# Ink detection. Intensities are fractions of full scale (0..1).
MIN_CONTRAST = 0.08  # ink must differ from the background by at least ~20 grey levels
NOISE_FACTOR = 5.0  # ...and by this many noise standard deviations
NOISE_THRESHOLD = 4.0  # pixels within this many noise sigmas of the background are background
RELATIVE_THRESHOLD = 0.2  # pixels below this fraction of the ink contrast are background
SPECK_FRACTION = 0.03  # components with less ink than this fraction of the largest are specks
FLAT_SPREAD = 0.06  # border brightness spread up to which the background counts as flat
BACKGROUND_WINDOW = 0.3  # background filter size, as a fraction of the image's longer side
WORK_SIDE = 96  # longer side of the copy on which the background is estimated

# "No digit" limits: total ink below MIN_INK_MASS pixels' worth, or below MIN_INK_FRACTION of
# the image area, is a speck, not a digit (the lightest MNIST test digit holds 22).
MIN_INK_MASS = 6.0
MIN_INK_FRACTION = 1e-4
CROP_THRESHOLD = 0.1

# Stroke widths (see `stroke_width`) outside this range are brought back into it by `fit_strokes`;
# MNIST's 5th and 95th percentiles are 1.4 and 3.1 pixels. Measured with a small CNN: digits
# re-drawn ~2x thicker or thinner went from ~96% to ~98% correct; MNIST's own digits within noise.
MIN_STROKE = 1.5
MAX_STROKE = 3.4
STROKE_TARGET_THIN = 2.0
STROKE_TARGET_THICK = 2.8
_STROKE_SCALE = 4

# Segmentation of several digits.
SEGMENT_THRESHOLD = 0.2
MERGE_OVERLAP = 0.5  # pieces overlapping this much in x (of the narrower) are one digit
MERGE_MAX_HEIGHT = 0.85  # ...unless both are nearly full height (two digits side by side)
WIDE_RATIO = 1.25  # a component this much wider than the line is tall is split (touching digits)

_LITTLE_ENDIAN = sys.byteorder == "little"
_FORMATS_HINT = "Upload a PNG, JPEG, BMP, GIF, WebP or TIFF."
_BLANK_HINT = "no digit found: the image is blank. Draw or photograph a single digit."


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


def _block_mean(values: np.ndarray, factor: int, pad: str | None = "edge") -> np.ndarray:
    """Average ``factor x factor`` blocks of a (rows, cols[, c]) array.

    Partial blocks at the bottom and right are padded with `np.pad` mode `pad` ("edge" for
    images, "constant" (zeros) for ink maps), or dropped when `pad` is None and the array holds
    at least one whole block (for statistics, where the last few pixels do not matter).
    """
    if factor <= 1:
        return values
    rows, cols = values.shape[:2]
    if pad is None and rows >= factor and cols >= factor:
        values = values[: rows - rows % factor, : cols - cols % factor]
        rows, cols = values.shape[:2]
    pad_rows, pad_cols = (-rows) % factor, (-cols) % factor
    if pad_rows or pad_cols:
        if pad == "constant":  # np.pad does the same in ~5x the time
            padded = np.zeros((rows + pad_rows, cols + pad_cols, *values.shape[2:]), values.dtype)
            padded[:rows, :cols] = values
            values = padded
        else:
            widths = [(0, pad_rows), (0, pad_cols)] + [(0, 0)] * (values.ndim - 2)
            values = np.pad(values, widths, mode=pad or "edge")
    rows, cols = values.shape[:2]
    if factor <= 4:  # a few strided sums beat numpy's reduction over short inner axes
        total = values[::factor, ::factor].astype(np.float32)
        for i in range(factor):
            for j in range(factor):
                if i or j:
                    total += values[i::factor, j::factor]
    else:
        rest = values.shape[2:]
        total = values.reshape(rows // factor, factor, cols, *rest).sum(axis=1, dtype=np.float32)
        total = total.reshape(rows // factor, cols // factor, factor, *rest).sum(axis=2)
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


def _rgba8_planes(pixels: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | None]:
    """`_planes` for uint8 RGBA, skipping work for one-colour strokes and opaque images (the canvas).

    Args:
        pixels: uint8 (rows, cols, 4) RGBA.
        keys: the same pixels viewed as little-endian uint32 (alpha in the top byte).

    Returns:
        (grey, alpha) as `_planes`, except that grey is a float when all pixels share one colour.
    """
    inv = np.float32(1.0 / 255.0)
    alpha = None if bool((keys >= 0xFF000000).all()) else pixels[:, :, 3].astype(np.float32) * inv
    colour = keys & 0xFFFFFF
    first = int(colour.flat[0])
    if bool((colour == first).all()):  # one stroke colour, ink only in alpha (canvas default)
        red, green, blue = first & 0xFF, (first >> 8) & 0xFF, first >> 16
        return (0.299 * red + 0.587 * green + 0.114 * blue) / 255.0, alpha
    red = colour & 0xFF
    if bool((colour == red * 0x010101).all()):  # R == G == B: grey is any channel
        return red.astype(np.float32) * inv, alpha
    return _planes(pixels[:, :, :3], 255.0)[0], alpha


def _backdrop(weighted_grey: float, alpha_sum: float) -> float | None:
    """Backdrop for transparent areas that contrasts with the opaque content (None: all transparent)."""
    if alpha_sum <= 0.0:
        return None
    return 0.0 if weighted_grey / alpha_sum > 0.5 else 1.0


# --------------------------------------------------------------------------------------------
# Ink maps
# --------------------------------------------------------------------------------------------


def to_ink(image: object, *, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Turn an image into an ink map: ink bright, background 0, whatever the paper looked like.

    Transparency is flattened onto a backdrop that contrasts with the opaque pixels (so dark ink
    and white strokes on a transparent background both show); polarity is detected from the
    background (light paper is inverted); uneven lighting is subtracted and noise, JPEG artefacts
    and specks are dropped. Images whose border is one exact colour (the drawing canvas, clean
    PNGs) take a fast path.

    Args:
        image: a PIL image; a numpy array of shape (rows, cols), (rows, cols, 1), (rows, cols, 2)
            (grey + alpha), (rows, cols, 3) (RGB) or (rows, cols, 4) (RGBA, e.g. the drawing
            canvas' uint8 array), of dtype bool, any integer (0..255, or 0..65535 for 16-bit) or
            float (in [0, 1] or [0, 255]); or the bytes of an image file.
        max_side: larger images are downscaled to this longest side first.

    Returns:
        float32 array (rows, cols) in [0, 1] (rows, cols after any downscaling); all zeros when
        there is no ink (blank, fully transparent, or noise only).

    Raises:
        ImageReadError: bytes that cannot be decoded (see `decode_image`).
        ValueError: an array of unsupported shape, dtype or value range, or with NaN/inf.
    """
    region, (top, left), shape = _ink_region(image, max_side)
    if region.shape == shape:
        return region
    ink = np.zeros(shape, np.float32)
    ink[top : top + region.shape[0], left : left + region.shape[1]] = region
    return ink


def _ink_region(source: object, max_side: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """The ink map restricted to a region that holds all the ink.

    Returns:
        (region, (top, left), (rows, cols)): the ink outside ``region`` is zero.
    """
    pixels, scale = _as_pixels(source, max_side)
    shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    fast = _flat_border_ink(pixels, scale)
    if fast is not None:
        return fast[0], fast[1], shape
    grey, alpha = _planes(pixels, scale)
    if alpha is not None and float(alpha.min()) < 1.0:
        backdrop = _backdrop(float((grey * alpha).sum()), float(alpha.sum()))
        if backdrop is None:
            return np.zeros(shape, np.float32), (0, 0), shape
        grey = grey * alpha + np.float32(backdrop) * (1.0 - alpha)
    return _uneven_ink(grey), (0, 0), shape


def _pixel_keys(pixels: np.ndarray) -> np.ndarray | None:
    """A (rows, cols) array whose equal entries mean equal pixels, when cheap to build."""
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[2] == 4 and pixels.dtype == np.uint8 and pixels.flags.c_contiguous:
        return pixels.view(np.uint32)[:, :, 0]
    return None


def _flat_border_ink(pixels: np.ndarray, scale: float) -> tuple[np.ndarray, tuple[int, int]] | None:
    """Fast path for images whose border pixels are all exactly one value (canvas, clean PNG).

    Everything that differs from the border value is ink; only the bounding box of those pixels
    is converted to floating point. Returns None when the border is not uniform.
    """
    keys = _pixel_keys(pixels)
    box = _uniform_border_box(pixels, keys)
    if box is None:
        return None
    top, bottom, left, right = box
    if top == bottom:
        return np.zeros((0, 0), np.float32), (0, 0)
    if keys is not None and keys.ndim == 2 and pixels.ndim == 3 and _LITTLE_ENDIAN:
        ink = _opaque_grey_ink(keys, (top, bottom, left, right))
        if ink is not None:
            return ink, ((top, left) if ink.size else (0, 0))
        grey, alpha = _rgba8_planes(pixels[top:bottom, left:right], keys[top:bottom, left:right])
    else:
        grey, alpha = _planes(pixels[top:bottom, left:right], scale)
    bg_grey, bg_alpha = _planes(pixels[:1, :1], scale)
    bg_value = float(bg_grey[0, 0])
    bg_a = 1.0 if bg_alpha is None else float(bg_alpha[0, 0])
    if alpha is not None or bg_a < 1.0:
        if alpha is None:
            alpha = np.ones(np.shape(grey), np.float32)
        # The pixels outside the box all equal the border pixel: add them in analytically.
        outside = pixels.shape[0] * pixels.shape[1] - alpha.size
        alpha_sum = float(alpha.sum())
        weighted = grey * alpha_sum if isinstance(grey, float) else float((grey * alpha).sum())
        backdrop = _backdrop(weighted + outside * bg_value * bg_a, alpha_sum + outside * bg_a)
        if backdrop is None:
            return np.zeros((0, 0), np.float32), (0, 0)
        # composite - background = alpha * (grey - backdrop) + (backdrop - composited background)
        offset = np.float32(backdrop - (bg_value * bg_a + backdrop * (1.0 - bg_a)))
        if isinstance(grey, float):
            # A box of one colour and one opacity gives scalars: make it the box's array again.
            diff = np.array(np.broadcast_to(np.asarray(alpha, np.float32) * np.float32(grey - backdrop),
                                            (bottom - top, right - left)), np.float32)
        else:
            diff = (grey - np.float32(backdrop)) * alpha
        if offset:
            diff += offset
    elif isinstance(grey, float):  # opaque and one colour: only the box's edge could differ
        diff = np.full((bottom - top, right - left), np.float32(grey - bg_value))
    else:
        diff = grey - np.float32(bg_value)
    ink = _scaled_by_contrast(diff, -float(diff.min()), float(diff.max()))
    return ink, ((top, left) if ink.size else (0, 0))


def _uniform_border_box(pixels: np.ndarray, keys: np.ndarray | None) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the pixels that differ from the border pixel (top == bottom
    when none do), or None when the border pixels are not all one value."""
    jit = kernels.get()
    if jit is not None and keys is not None and keys.dtype in (np.uint8, np.uint32):
        uniform, top, bottom, left, right = jit.border_box(keys)
        return (top, bottom, left, right) if uniform else None
    if keys is None:  # compare whole pixels instead
        keys, bg = pixels, pixels[0, 0]
    else:
        bg = keys[0, 0]
    border = np.concatenate([keys[0], keys[-1], keys[:, 0], keys[:, -1]])
    if (border != bg).any():
        return None
    differs = keys != bg
    if differs.ndim == 3:
        differs = differs.any(axis=2)
    rows_hit = np.flatnonzero(differs.any(axis=1))
    if rows_hit.size == 0:
        return 0, 0, 0, 0
    top, bottom = int(rows_hit[0]), int(rows_hit[-1]) + 1
    cols_hit = np.flatnonzero(differs[top:bottom].any(axis=0))
    return top, bottom, int(cols_hit[0]), int(cols_hit[-1]) + 1


def _contrast_factor(darker: float, lighter: float) -> np.float32 | None:
    """The factor that turns "pixel minus background" into ink (the stronger side of the contrast
    becomes 1.0, the other side negative), or None when the contrast is below MIN_CONTRAST.

    Args:
        darker, lighter: ``-diff.min()`` and ``diff.max()`` of the pixel-minus-background values.
    """
    contrast = max(darker, lighter)
    if contrast < MIN_CONTRAST:
        return None
    return np.float32((-1.0 if darker > lighter else 1.0) / contrast)


def _scaled_by_contrast(diff: np.ndarray, darker: float, lighter: float) -> np.ndarray:
    """Ink from "pixel minus background" (float32, scaled in place): the stronger side of the
    contrast becomes 1.0, the other side 0; an empty map when the contrast is below MIN_CONTRAST.

    Args:
        diff: float32 pixel minus background values.
        darker, lighter: ``-diff.min()`` and ``diff.max()``.
    """
    factor = _contrast_factor(darker, lighter)
    return np.zeros((0, 0), np.float32) if factor is None else _clipped_scale(diff, factor)


def _clipped_scale(diff: np.ndarray, factor: np.float32) -> np.ndarray:
    """``clip(diff * factor, 0, 1)``, in place."""
    diff *= factor
    np.maximum(diff, np.float32(0.0), out=diff)
    return np.minimum(diff, np.float32(1.0), out=diff)


def _opaque_grey_ink(keys: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The ink map of an opaque grey uint8 RGBA box on an opaque grey background (the canvas).

    The same values, bit for bit, as the general path of `_flat_border_ink` (grey = R / 255 minus
    the background, scaled by `_scaled_by_contrast`), with the extremes taken on the integer
    channel: in one compiled pass (`core.kernels`), or a few numpy passes over one contiguous copy
    instead of ~11 over a strided view.

    Args:
        keys: the pixels' uint32 keys (``_pixel_keys``; alpha in the top byte); the border pixel
            ``keys[0, 0]`` is the background.
        box: (top, bottom, left, right) of the ink.

    Returns:
        float32 ink map of the box (empty when the contrast is too low), or None when the
        background or a pixel in the box is not opaque grey (R == G == B, alpha 255).
    """
    background = int(keys[0, 0])
    if background != 0xFF000000 | (background & 0xFF) * 0x010101:
        return None
    inv = np.float32(1.0 / 255.0)
    bg_value = np.float32(background & 0xFF) * inv
    jit = kernels.get() if keys.flags.c_contiguous else None  # the kernels take the whole array
    if jit is not None:
        grey, low, high = jit.opaque_grey_extremes(keys, *box)
        if not grey:
            return None
    else:
        top, bottom, left, right = box
        pixels = np.ascontiguousarray(keys[top:bottom, left:right])
        red = pixels & np.uint32(0xFF)
        if not bool((((red * np.uint32(0x010101)) | np.uint32(0xFF000000)) == pixels).all()):
            return None
        low, high = red.min(), red.max()
    lowest, highest = np.array([low, high], np.float32) * inv - bg_value
    factor = _contrast_factor(-float(lowest), float(highest))
    if factor is None:
        return np.zeros((0, 0), np.float32)
    if jit is not None:
        return jit.grey_ink(keys, *box, inv, bg_value, factor)
    diff = red.astype(np.float32)
    diff *= inv
    diff -= bg_value
    return _clipped_scale(diff, factor)


def _border_ring(values: np.ndarray) -> np.ndarray:
    rows, cols = values.shape
    if rows <= 2 or cols <= 2:
        return values.ravel()
    return np.concatenate([values[0], values[-1], values[1:-1, 0], values[1:-1, -1]])


def _half(values: np.ndarray) -> np.ndarray:
    """2x2 block means (suppress single-pixel noise before taking extremes); tiny arrays as they are."""
    return values if min(values.shape) < 2 else _block_mean(values, 2, pad=None)


def _uneven_ink(grey: np.ndarray) -> np.ndarray:
    """Ink map of a grey image whose background may be textured, noisy or unevenly lit.

    Args:
        grey: float32 (rows, cols) in [0, 1], transparency already flattened.

    Returns:
        float32 (rows, cols) ink map in [0, 1].
    """
    rows, cols = grey.shape
    factor = max(1, math.ceil(max(rows, cols) / WORK_SIDE))
    small = _block_mean(grey, factor, pad=None)
    ring = _border_ring(small)
    bg_level = float(np.median(ring))
    low_q, high_q = np.percentile(ring, [10, 90])
    smooth = _half(grey)
    dark_ink = bg_level - float(smooth.min()) > float(smooth.max()) - bg_level  # on light paper
    if high_q - low_q <= FLAT_SPREAD or min(small.shape) < 8:
        background: np.ndarray | np.float32 = np.float32(bg_level)
    else:
        background = _background_map(1.0 - small if dark_ink else small, (rows, cols))
        if dark_ink:
            background = 1.0 - background
    # Ink is the (oriented) difference from the background.
    diff = np.subtract(background, grey) if dark_ink else np.subtract(grey, background)
    diff = diff.astype(np.float32, copy=False)
    step = max(1, int(math.sqrt(diff.size / 40_000)))
    sample = diff[::step, ::step]
    sigma = 1.4826 * float(np.median(np.abs(sample - np.median(sample))))
    contrast = float(_half(diff).max())
    if contrast < MIN_CONTRAST or contrast < NOISE_FACTOR * sigma:
        return np.zeros((rows, cols), np.float32)
    threshold = max(NOISE_THRESHOLD * sigma, RELATIVE_THRESHOLD * contrast)
    diff[diff <= threshold] = 0.0
    diff *= np.float32(1.0 / contrast)
    np.minimum(diff, np.float32(1.0), out=diff)
    return _drop_specks(diff)


def _background_map(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Background brightness of bright-ink image, from its small copy, at full size.

    A grey opening (minimum then maximum filter) wider than any stroke removes the ink and keeps
    the slowly varying paper/lighting; linear gradients pass through it exactly.
    """
    size = max(3, int(round(max(small.shape) * BACKGROUND_WINDOW)))
    opened = ndimage.grey_opening(small, size=(size, size), mode="nearest")
    opened = ndimage.uniform_filter(opened, size=max(1, size // 2), mode="nearest")
    rows, cols = shape
    full = Image.fromarray(opened.astype(np.float32), mode="F").resize((cols, rows), Image.Resampling.BILINEAR)
    return np.asarray(full, dtype=np.float32)


def _drop_specks(ink: np.ndarray) -> np.ndarray:
    """Zero (in place) the connected components holding much less ink than the largest one."""
    mask = ink > 0
    rows_hit = np.flatnonzero(mask.any(axis=1))
    if rows_hit.size == 0:
        return ink
    top, bottom = int(rows_hit[0]), int(rows_hit[-1]) + 1
    cols_hit = np.flatnonzero(mask[top:bottom].any(axis=0))
    left, right = int(cols_hit[0]), int(cols_hit[-1]) + 1
    window = (slice(top, bottom), slice(left, right))  # label only where there is ink
    labels, count = ndimage.label(mask[window], structure=np.ones((3, 3), bool))
    if count <= 1:
        return ink
    masses = ndimage.sum_labels(ink[window], labels, index=np.arange(1, count + 1))
    drop = np.concatenate([[False], masses < SPECK_FRACTION * masses.max()])
    if drop.any():
        ink[window][drop[labels]] = 0.0
    return ink


# --------------------------------------------------------------------------------------------
# Crop, fit, centre
# --------------------------------------------------------------------------------------------


def _as_ink_map(ink: np.ndarray, name: str = "ink") -> np.ndarray:
    ink = np.asarray(ink)
    if ink.ndim != 2 or ink.dtype.kind not in "biuf":
        raise ValueError(f"Expected {name} as a 2-D (rows, cols) array of numbers, got {ink.dtype} {ink.shape}.")
    return ink.astype(np.float32, copy=False)


def crop_to_ink(
    ink: np.ndarray, threshold: float = CROP_THRESHOLD, *, min_mass: float | None = None
) -> np.ndarray:
    """Crop an ink map to the bounding box of its ink.

    Args:
        ink: float32 (rows, cols) ink map in [0, 1].
        threshold: pixels above this value define the bounding box.
        min_mass: total ink (sum of the map) below which the ink is a speck, not a digit;
            default ``max(MIN_INK_MASS, MIN_INK_FRACTION * rows * cols)``.

    Returns:
        float32 (box_rows, box_cols) copy of the map inside the box (fainter pixels kept).

    Raises:
        NoDigitError: no pixel above `threshold`, or too little ink in total.
        ValueError: `ink` is not a 2-D numeric array.
    """
    ink = _as_ink_map(ink)
    if min_mass is None:
        min_mass = max(MIN_INK_MASS, MIN_INK_FRACTION * ink.size)
    top, bottom, left, right, mass = _ink_bounds(ink, threshold)
    if top == bottom:
        raise NoDigitError(_BLANK_HINT)
    if mass < min_mass:
        raise NoDigitError(
            f"no digit found: only a speck of ink ({mass:.1f} pixels' worth). "
            "Draw or photograph a single digit, large enough to read."
        )
    return ink[top:bottom, left:right].copy()


def _ink_bounds(ink: np.ndarray, threshold: float) -> tuple[int, int, int, int, float]:
    """(top, bottom, left, right) of the float32 map's pixels above `threshold` (top == bottom
    when there are none) and the map's total ink."""
    jit = kernels.get()
    if jit is not None:
        top, bottom, left, right, mass = jit.ink_bounds(ink, np.float32(threshold))
        return top, bottom, left, right, float(mass)
    mask = ink > threshold
    rows_hit = np.flatnonzero(mask.any(axis=1))
    mass = float(ink.sum(dtype=np.float64))
    if rows_hit.size == 0:
        return 0, 0, 0, 0, mass
    top, bottom = int(rows_hit[0]), int(rows_hit[-1]) + 1
    cols_hit = np.flatnonzero(mask[top:bottom].any(axis=0))
    return top, bottom, int(cols_hit[0]), int(cols_hit[-1]) + 1, mass


@lru_cache(maxsize=512)
def _resample_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Antialiased linear resampling from `size_in` to `size_out` samples, as Pillow's BILINEAR.

    When shrinking, the triangle kernel is widened by the reduction factor, so every input pixel
    contributes (area-like averaging): thin strokes fade instead of disappearing.

    Returns:
        (indices, weights): int (size_out, taps) input positions and float32 (size_out, taps)
        weights (rows sum to 1) for each output sample.
    """
    scale = size_in / size_out
    support = max(scale, 1.0)
    centers = (np.arange(size_out) + 0.5) * scale
    first = np.clip(np.floor(centers - support + 0.5).astype(int), 0, size_in - 1)
    taps = int(math.ceil(2 * support)) + 1
    indices = np.minimum(first[:, None] + np.arange(taps)[None, :], size_in - 1)
    weights = np.clip(1.0 - np.abs(indices + 0.5 - centers[:, None]) / support, 0.0, None)
    weights[first[:, None] + np.arange(taps)[None, :] > size_in - 1] = 0.0  # clamped repeats
    weights /= weights.sum(axis=1, keepdims=True)
    indices.setflags(write=False)
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return indices, weights


def _resample_rows(values: np.ndarray, size_out: int) -> np.ndarray:
    """Resample axis 0 of a (rows, cols) float32 array to `size_out` rows.

    A gather and a weighted sum rather than a matrix product: BLAS would spread this small
    product over threads, which costs milliseconds on a busy machine.
    """
    indices, weights = _resample_taps(values.shape[0], size_out)
    return np.einsum("okc,ok->oc", values[indices], weights, optimize=False)


def fit_in_box(ink: np.ndarray, box: int = FIT_BOX) -> np.ndarray:
    """Resize a cropped ink map so its longer side is `box` pixels, keeping the aspect ratio.

    Args:
        ink: float32 (rows, cols) cropped ink map in [0, 1], not empty.
        box: the longer side of the result, in pixels.

    Returns:
        float32 (box, cols * box / rows) or (rows * box / cols, box) array (shorter side at least
        1), antialiased, with its maximum scaled to 1.0 (thin strokes that faded while shrinking
        come back to full brightness).

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
    longest = max(rows, cols)
    out_rows = max(1, int(math.floor(rows * box / longest + 0.5)))
    out_cols = max(1, int(math.floor(cols * box / longest + 0.5)))
    factor = int(longest // (4 * box))
    jit = kernels.get()
    if factor > 1:  # shrink by whole blocks first (area average), so the kernel stays short
        ink = jit.block_mean_zero(ink, factor) if jit is not None else _block_mean(ink, factor, pad="constant")
    if jit is None:
        return _normalize_max(_resample_rows(_resample_rows(ink, out_rows).T, out_cols).T)
    fitted, peak = jit.resample(ink, *_resample_taps(ink.shape[0], out_rows), *_resample_taps(ink.shape[1], out_cols))
    if peak <= 0.0:
        raise NoDigitError(_BLANK_HINT)
    return fitted


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width of an ink map, in pixels: twice the ink mass over its total variation.

    For a long stroke of width w and length L the mass is about w * L and the total variation
    (summed absolute differences between neighbours) about 2 * L. MNIST's digits measure 2.0 at
    the median (5th-95th percentile 1.4-3.1).

    Args:
        ink: float32 (rows, cols) ink map in [0, 1].

    Returns:
        The width in pixels of that map; 0.0 for an empty map.
    """
    ink = _as_ink_map(ink)
    if ink.size == 0:
        return 0.0
    # Differences between neighbours, plus the steps from the frame's zero surround into the map.
    jit = kernels.get()
    if jit is not None:
        mass, variation = jit.stroke_sums(ink)
    else:
        mass = float(ink.sum())
        variation = float(
            np.abs(ink[1:] - ink[:-1]).sum() + np.abs(ink[:, 1:] - ink[:, :-1]).sum()
            + np.abs(ink[0]).sum() + np.abs(ink[-1]).sum() + np.abs(ink[:, 0]).sum() + np.abs(ink[:, -1]).sum()
        )
    return 0.0 if variation <= 0.0 else 2.0 * mass / variation


def fit_strokes(cropped: np.ndarray, box: int = FIT_BOX) -> np.ndarray:
    """`fit_in_box`, then bring strokes far thicker or thinner than MNIST's back into its range.

    A digit drawn with a marker (or a hairline pen) fitted into 20x20 has strokes unlike any in
    MNIST, and models trained on MNIST misread it. When the fitted stroke width is outside
    [`MIN_STROKE`, `MAX_STROKE`], the crop is fitted at 4x, eroded (or dilated) by the missing
    amount, and fitted again. Widths inside the range are left exactly as they are.

    Args:
        cropped: float32 (rows, cols) cropped ink map in [0, 1] (from `crop_to_ink`).
        box: the longer side of the result, in pixels.

    Returns:
        float32 array as from `fit_in_box`: longer side `box`, maximum 1.0.

    Raises:
        ValueError, NoDigitError: as for `fit_in_box`.
    """
    fitted = fit_in_box(cropped, box)
    width = stroke_width(fitted)
    if MIN_STROKE <= width <= MAX_STROKE:
        return fitted
    target = STROKE_TARGET_THICK if width > MAX_STROKE else STROKE_TARGET_THIN
    radius = int(math.ceil(abs(width - target) / 2 * _STROKE_SCALE))
    if radius < 1:
        return fitted
    big = fit_in_box(cropped, box * _STROKE_SCALE)
    footprint = _disk(radius)
    if width > MAX_STROKE:
        changed = ndimage.grey_erosion(big, footprint=footprint, mode="constant", cval=0.0)
    else:
        changed = ndimage.grey_dilation(np.pad(big, radius), footprint=footprint, mode="constant", cval=0.0)
    try:
        return fit_in_box(crop_to_ink(changed, min_mass=0.0), box)
    except NoDigitError:  # eroded away entirely: keep the digit as it was
        return fitted


@lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1)
    footprint = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius + radius * 0.5
    footprint.setflags(write=False)
    return footprint


def _normalize_max(values: np.ndarray) -> np.ndarray:
    """Scale a freshly computed float32 array in place so its maximum is 1 (negatives to 0)."""
    peak = float(values.max())
    if peak <= 0.0:
        raise NoDigitError(_BLANK_HINT)
    values *= np.float32(1.0 / peak)
    np.maximum(values, np.float32(0.0), out=values)
    return np.minimum(values, np.float32(1.0), out=values)


def center_by_mass(fitted: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Paste a fitted digit into a `size` x `size` frame with its centre of mass at the centre.

    As MNIST did: the shift is the centre-of-mass offset rounded to whole pixels (so nothing is
    resampled again), and clamped so the whole glyph stays inside the frame. The centre of mass
    ends up within 0.5 px of ``(size / 2, size / 2)`` = (14.0, 14.0) in pixel-index coordinates,
    unless clamping was needed.

    Args:
        fitted: float32 (rows, cols) array with rows, cols <= size (from `fit_in_box`).
        size: side of the square output.

    Returns:
        float32 (size, size) array; values are those of `fitted`, zero elsewhere.

    Raises:
        ValueError: `fitted` is not 2-D or larger than the frame.
        NoDigitError: `fitted` holds no ink.
    """
    fitted = _as_ink_map(fitted, "fitted")
    rows, cols = fitted.shape
    if rows > size or cols > size or rows == 0 or cols == 0:
        raise ValueError(f"Expected a non-empty digit of at most {size}x{size} pixels, got {rows}x{cols}.")
    mass, row_com, col_com = _mass_centre(fitted)
    if mass <= 0.0:
        raise NoDigitError(_BLANK_HINT)
    half = size / 2.0
    top = min(max(int(math.floor(half - row_com + 0.5)), 0), size - rows)
    left = min(max(int(math.floor(half - col_com + 0.5)), 0), size - cols)
    out = np.zeros((size, size), np.float32)
    out[top : top + rows, left : left + cols] = fitted
    return out


def _mass_centre(fitted: np.ndarray) -> tuple[float, float, float]:
    """(mass, row centre, column centre) of the non-negative part of a float32 map (centres 0
    when the mass is 0)."""
    jit = kernels.get()
    if jit is not None:
        return jit.mass_centre(fitted)
    weights = np.maximum(fitted, np.float32(0.0))
    row_mass, col_mass = weights.sum(axis=1, dtype=np.float64), weights.sum(axis=0, dtype=np.float64)
    mass = float(row_mass.sum())
    if mass <= 0.0:
        return 0.0, 0.0, 0.0
    rows, cols = fitted.shape
    return (mass, float(np.dot(row_mass, np.arange(rows, dtype=np.float64))) / mass,
            float(np.dot(col_mass, np.arange(cols, dtype=np.float64))) / mass)


def to_mnist(
    source: object, *, max_side: int = DEFAULT_MAX_SIDE, normalize_strokes: bool = True
) -> np.ndarray:
    """Turn an image of one digit into a 28x28 MNIST-style model input.

    Args:
        source: the bytes of a PNG, JPEG, BMP, GIF, WebP or TIFF file; a PIL image; or a numpy
            array as accepted by `to_ink` (e.g. the drawing canvas' (H, W, 4) uint8 RGBA array).
        max_side: larger images are downscaled to this longest side before processing.
        normalize_strokes: bring strokes far thicker or thinner than MNIST's into its range
            (`fit_strokes`); False fits exactly as MNIST did (`fit_in_box`).

    Returns:
        float32 (28, 28) array in [0, 1], ink bright on black like MNIST / 255: the digit fitted
        into 20x20 keeping its aspect ratio, centred by centre of mass, maximum exactly 1.0.

    Raises:
        ImageReadError: bytes that cannot be read as an image.
        NoDigitError: a readable image without ink (blank, fully transparent, a speck, noise).
        ValueError: an array of unsupported shape, dtype or value range, or with NaN/inf.
    """
    region, _, shape = _ink_region(source, max_side)
    min_mass = max(MIN_INK_MASS, MIN_INK_FRACTION * shape[0] * shape[1])
    cropped = crop_to_ink(region, min_mass=min_mass)
    fitted = fit_strokes(cropped) if normalize_strokes else fit_in_box(cropped)
    return center_by_mass(fitted, IMAGE_SIZE)


# --------------------------------------------------------------------------------------------
# Several digits
# --------------------------------------------------------------------------------------------


def segment_digits(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Find the digits written side by side in an ink map, left to right.

    Connected components of the thresholded (slightly dilated) ink; pieces that overlap strongly
    in x and are not both full height are merged (the two strokes of a 4, the flag of a 5);
    specks are dropped; a component much wider than tall (touching digits) is split at the column
    of least ink in its middle part.

    Args:
        ink: float32 (rows, cols) ink map in [0, 1] (from `to_ink`).

    Returns:
        Boxes ``(x, y, width, height)`` in the ink map's pixel coordinates (x = column, y = row),
        tight around each digit's ink, sorted left to right; empty when there is no ink.

    Raises:
        ValueError: `ink` is not a 2-D numeric array.
    """
    ink = _as_ink_map(ink)
    mask = ink > SEGMENT_THRESHOLD
    rows_hit = np.flatnonzero(mask.any(axis=1))
    if rows_hit.size == 0:
        return []
    ink_height = int(rows_hit[-1] - rows_hit[0] + 1)
    reach = max(1, int(round(ink_height * 0.02)))
    joined = ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=reach)
    labels, count = ndimage.label(joined, structure=np.ones((3, 3), bool))
    labels = np.where(mask, labels, 0)
    masses = ndimage.sum_labels(np.where(mask, ink, 0), labels, index=np.arange(1, count + 1))
    slices = ndimage.find_objects(labels, max_label=count)
    pieces = []  # [x0, x1, y0, y1, mass, {labels}]
    for label, (found, mass) in enumerate(zip(slices, masses), start=1):
        if found is not None and mass > 0:
            pieces.append([found[1].start, found[1].stop, found[0].start, found[0].stop, float(mass), {label}])
    if not pieces:
        return []
    heaviest = max(p[4] for p in pieces)
    pieces = [p for p in pieces if p[4] >= SPECK_FRACTION * 2 * heaviest]
    pieces = _merge_overlapping(pieces)
    # Digits written in one line share a height; a short, wide 2 or 5 is not two digits.
    heaviest = max(p[4] for p in pieces)
    line_height = float(np.median([p[3] - p[2] for p in pieces if p[4] >= 0.25 * heaviest]))
    boxes: list[tuple[int, int, int, int]] = []
    for piece in pieces:
        member = np.isin(labels[piece[2] : piece[3], piece[0] : piece[1]], list(piece[5]))
        local = np.where(member, ink[piece[2] : piece[3], piece[0] : piece[1]], 0)
        boxes.extend(_split_wide(local, piece[0], piece[2], line_height, depth=3))
    boxes.sort(key=lambda b: b[0] + b[2] / 2)
    return boxes


def _merge_overlapping(pieces: list[list]) -> list[list]:
    merged = True
    while merged:
        merged = False
        pieces.sort(key=lambda p: p[0])
        for i in range(len(pieces)):
            for j in range(i + 1, len(pieces)):
                a, b = pieces[i], pieces[j]
                overlap = min(a[1], b[1]) - max(a[0], b[0])
                narrower = min(a[1] - a[0], b[1] - b[0])
                heights = sorted((a[3] - a[2], b[3] - b[2]))
                if overlap >= MERGE_OVERLAP * narrower and heights[0] <= MERGE_MAX_HEIGHT * heights[1]:
                    pieces[i] = [min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]),
                                 a[4] + b[4], a[5] | b[5]]
                    del pieces[j]
                    merged = True
                    break
            if merged:
                break
    return pieces


def _split_wide(
    local: np.ndarray, x0: int, y0: int, line_height: float, depth: int
) -> list[tuple[int, int, int, int]]:
    """Tight box(es) of the ink in `local` (placed at x0, y0), split where much wider than the line is tall."""
    rows_hit = np.flatnonzero((local > SEGMENT_THRESHOLD).any(axis=1))
    cols_hit = np.flatnonzero((local > SEGMENT_THRESHOLD).any(axis=0))
    if rows_hit.size == 0:
        return []
    top, bottom = int(rows_hit[0]), int(rows_hit[-1]) + 1
    left, right = int(cols_hit[0]), int(cols_hit[-1]) + 1
    width, height = right - left, bottom - top
    if depth > 0 and width > WIDE_RATIO * max(height, line_height) and width >= 4:
        profile = local[top:bottom, left:right].sum(axis=0)
        lo, hi = int(width * 0.3), int(math.ceil(width * 0.7))
        cut = left + lo + int(np.argmin(profile[lo:hi]))
        return _split_wide(local[:, :cut], x0, y0, line_height, depth - 1) + _split_wide(
            local[:, cut:], x0 + cut, y0, line_height, depth - 1
        )
    return [(x0 + left, y0 + top, width, height)]


def digit_inputs(ink: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Turn each box of an ink map into a 28x28 MNIST-style input.

    Args:
        ink: float32 (rows, cols) ink map in [0, 1] (from `to_ink`).
        boxes: ``(x, y, width, height)`` boxes in the map's coordinates (from `segment_digits`).

    Returns:
        float32 (len(boxes), 28, 28) array in [0, 1], each digit fitted into 20x20 and centred by
        centre of mass.

    Raises:
        NoDigitError: a box holds no ink.
        ValueError: `ink` is not 2-D, or a box is empty or outside the map.
    """
    ink = _as_ink_map(ink)
    out = np.zeros((len(boxes), IMAGE_SIZE, IMAGE_SIZE), np.float32)
    rows, cols = ink.shape
    for i, box in enumerate(boxes):
        x, y, width, height = (int(v) for v in box)
        if width < 1 or height < 1 or x < 0 or y < 0 or x + width > cols or y + height > rows:
            raise ValueError(f"Box {tuple(box)} is empty or outside the {cols}x{rows} ink map.")
        cropped = crop_to_ink(ink[y : y + height, x : x + width], min_mass=0.0)
        out[i] = center_by_mass(fit_strokes(cropped), IMAGE_SIZE)
    return out


def to_mnist_digits(
    source: object, *, max_side: int = DEFAULT_MAX_SIDE
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Read several digits written side by side: `to_ink`, `segment_digits`, `digit_inputs`.

    Args:
        source: as for `to_mnist`.
        max_side: larger images are downscaled to this longest side first; boxes refer to the
            downscaled image.

    Returns:
        (inputs, boxes): float32 (K, 28, 28) inputs in [0, 1], left to right, and their
        ``(x, y, width, height)`` boxes.

    Raises:
        ImageReadError, NoDigitError, ValueError: as for `to_mnist`.
    """
    ink = to_ink(source, max_side=max_side)
    min_mass = max(MIN_INK_MASS, MIN_INK_FRACTION * ink.size)
    if float(ink.sum(dtype=np.float64)) < min_mass:
        crop_to_ink(ink, min_mass=min_mass)  # raises the right NoDigitError
    boxes = segment_digits(ink)
    if not boxes:
        raise NoDigitError(_BLANK_HINT)
    return digit_inputs(ink, boxes), boxes
