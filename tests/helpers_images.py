"""Image generators for preprocessing and accuracy tests.

Each ``as_*`` function re-renders a real MNIST digit (uint8 (28, 28), white ink on black) the way
a person would supply it: a phone photo of dark ink on uneven paper, a small digit far off-centre
in a large picture, thicker or thinner strokes, an EXIF-rotated JPEG, a drawing-canvas array.
All randomness comes from the ``rng`` argument, so a fixed seed gives fixed images.

A plain module (not a conftest): import what you need,
``from tests.helpers_images import as_paper_photo_jpeg``.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

# Pixel transforms that undo what ImageOps.exif_transpose applies for each EXIF orientation:
# storing `upright.transpose(STORE_FOR_ORIENTATION[o])` with tag o displays `upright`.
STORE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
EXIF_ORIENTATION_TAG = 0x0112


def mnist_sample(count: int, seed: int = 0, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """A fixed random sample of MNIST digits.

    Returns:
        (digits, labels): uint8 (count, 28, 28) white on black, and uint8 (count,).
    """
    from core.data import load_mnist

    mnist = load_mnist()
    x, y = (mnist.x_test, mnist.y_test) if split == "test" else (mnist.x_train, mnist.y_train)
    order = np.random.default_rng(seed).permutation(len(x))[:count]
    return x[order], y[order]


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def render_strokes(digit: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Re-draw a 28x28 MNIST digit as crisp pen strokes at a larger size.

    Args:
        digit: uint8 (28, 28) MNIST digit, white on black.
        height: rows of the result; width defaults to the same.

    Returns:
        float32 (height, width) ink coverage in [0, 1] with a ~1 px antialiased edge.
    """
    width = height if width is None else width
    up = np.asarray(Image.fromarray(digit).resize((width, height), Image.Resampling.BICUBIC), np.float32) / 255
    # MNIST's edges ramp over ~2 px; upscaled by s they ramp over 2s px. Re-threshold at mid-grey
    # with a ramp of ~1.5 output pixels, like a pen stroke photographed or drawn antialiased.
    ramp = min(1.0, 0.75 * 28.0 / max(height, width))
    return np.clip((up - 0.45) / ramp + 0.5, 0.0, 1.0).astype(np.float32)


def disk(radius: int) -> np.ndarray:
    """Boolean disk footprint of the given radius (diameter 2 * radius + 1)."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2 + radius * 0.5


def paper(rows: int, cols: int, rng: np.random.Generator, *, base: float = 215.0,
          gradient: float = 50.0, noise: float = 6.0) -> np.ndarray:
    """Unevenly lit paper: a linear gradient in a random direction, a soft shadow and noise.

    Returns:
        float32 (rows, cols) grey levels around `base` (0..255 scale).
    """
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (xx / cols - 0.5) + np.sin(angle) * (yy / rows - 0.5)) * gradient
    cy, cx = rng.uniform(0, rows), rng.uniform(0, cols)
    shadow = -0.4 * gradient * np.exp(-(((yy - cy) / rows) ** 2 + ((xx - cx) / cols) ** 2) * 4)
    grain = ndimage.gaussian_filter(rng.normal(0, noise, (rows, cols)).astype(np.float32), 0.7) * 1.5
    return (base + ramp + shadow + grain).astype(np.float32)


def place(background: np.ndarray, coverage: np.ndarray, top: int, left: int, ink_level: float) -> np.ndarray:
    """Lay ink of brightness `ink_level` over `background` where `coverage` (0..1) says."""
    out = background.copy()
    rows, cols = coverage.shape
    window = out[top : top + rows, left : left + cols]
    window[...] = window * (1 - coverage) + ink_level * coverage
    return out


def encode(pixels: np.ndarray | Image.Image, fmt: str, **save_args) -> bytes:
    """Encode a uint8 array (or an image) as bytes in `fmt` ("PNG", "JPEG", ...)."""
    if isinstance(pixels, Image.Image):
        image = pixels
    else:
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# "As a person would supply it"
# --------------------------------------------------------------------------------------------


def as_paper_photo_jpeg(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark ink on light, unevenly lit, grainy paper, saved as a JPEG (quality 60-90)."""
    rows, cols = int(rng.integers(260, 420)), int(rng.integers(260, 420))
    height = int(min(rows, cols) * rng.uniform(0.45, 0.8))
    coverage = ndimage.gaussian_filter(render_strokes(digit, height), 0.8)
    top = int(rng.integers(5, rows - height - 5))
    left = int(rng.integers(5, cols - height - 5))
    sheet = paper(rows, cols, rng, base=rng.uniform(180, 235), gradient=rng.uniform(20, 70), noise=rng.uniform(2, 7))
    photo = place(sheet, coverage, top, left, rng.uniform(20, 90))
    return encode(photo, "JPEG", quality=int(rng.integers(60, 91)))


def as_small_off_center(digit: np.ndarray, rng: np.random.Generator, *, size: tuple[int, int] = (1500, 1200),
                        fmt: str = "JPEG") -> bytes:
    """A small dark digit far from the centre of a large, slightly grainy light picture.

    Args:
        size: the picture's (width, height), Pillow order.
    """
    width, height = size
    digit_rows = int(rng.integers(70, 160))
    coverage = ndimage.gaussian_filter(render_strokes(digit, digit_rows), 0.8)
    top = _far_from_center(height, digit_rows, rng)
    left = _far_from_center(width, digit_rows, rng)
    sheet = np.full((height, width), rng.uniform(200, 240), np.float32)
    sheet += rng.normal(0, 3, sheet.shape).astype(np.float32)
    photo = place(sheet, coverage, top, left, rng.uniform(20, 80))
    return encode(photo, fmt, **({"quality": 85} if fmt == "JPEG" else {}))


def _far_from_center(length: int, extent: int, rng: np.random.Generator) -> int:
    """A start position putting `extent` pixels in the outer quarter on one side of `length`."""
    margin = min(20, max(0, (length - extent) // 8))
    near = int(rng.integers(margin, max(margin + 1, length // 4 - extent // 2)))
    return near if rng.integers(0, 2) else length - extent - near


def as_stroke_width(digit: np.ndarray, radius: int, *, scale: int = 4) -> np.ndarray:
    """The digit drawn with thicker (radius > 0) or thinner (radius < 0) strokes.

    Strokes are dilated or eroded by ``abs(radius)`` pixels at `scale` times the MNIST size.

    Returns:
        uint8 (28 * scale, 28 * scale) white ink on black.
    """
    coverage = render_strokes(digit, 28 * scale)
    if radius > 0:
        coverage = ndimage.grey_dilation(coverage, footprint=disk(radius))
    elif radius < 0:
        coverage = ndimage.grey_erosion(coverage, footprint=disk(-radius))
    return np.clip(np.rint(coverage * 255), 0, 255).astype(np.uint8)


def as_exif_rotated_jpeg(digit: np.ndarray, orientation: int, rng: np.random.Generator | None = None) -> bytes:
    """Dark ink on white stored rotated/flipped, with the EXIF orientation that makes it upright.

    A viewer honouring EXIF (and `decode_image`) shows the digit upright; one ignoring it shows
    it turned.
    """
    rng = rng or np.random.default_rng(0)
    rows, cols = 300, 240
    coverage = render_strokes(digit, 200)
    sheet = np.full((rows, cols), 235, np.float32) + rng.normal(0, 2, (rows, cols)).astype(np.float32)
    upright = Image.fromarray(np.clip(place(sheet, coverage, 50, 20, 30), 0, 255).astype(np.uint8))
    stored = upright.transpose(STORE_FOR_ORIENTATION[orientation]) if orientation != 1 else upright
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return encode(stored, "JPEG", quality=90, exif=exif.tobytes())


def as_canvas(digit: np.ndarray, rng: np.random.Generator, *, transparent: bool = True,
              size: int = 280) -> np.ndarray:
    """What streamlit-drawable-canvas returns for this digit drawn with a thick brush.

    Args:
        transparent: True for the canvas default (black strokes on a transparent background, the
            digit only in the alpha channel); False for white strokes on an opaque black background.

    Returns:
        uint8 (size, size, 4) RGBA array.
    """
    height = int(size * rng.uniform(0.5, 0.8))
    coverage = render_strokes(digit, height)
    top = int(rng.integers(5, size - height - 5))
    left = int(rng.integers(5, size - height - 5))
    full = np.zeros((size, size), np.float32)
    full[top : top + height, left : left + height] = coverage
    alpha8 = np.clip(np.rint(full * 255), 0, 255).astype(np.uint8)
    canvas = np.zeros((size, size, 4), np.uint8)
    if transparent:
        canvas[..., 3] = alpha8  # stroke colour black; antialiased edges are partly transparent
    else:
        canvas[..., :3] = alpha8[..., None]
        canvas[..., 3] = 255
    return canvas


def as_lowres_page(digit: np.ndarray, pixels: int, blur: bool) -> bytes:
    """Issue 15's low-resolution style: the digit reduced to ``pixels`` x ``pixels`` (LANCZOS),
    scaled up to 64x64 (BICUBIC), optionally blurred (GaussianBlur(2)), pasted dark at (24, 24)
    on a 112x112 white page; PNG bytes."""
    small = Image.fromarray(digit).resize((pixels, pixels), Image.Resampling.LANCZOS)
    big = small.resize((64, 64), Image.Resampling.BICUBIC)
    if blur:
        big = big.filter(ImageFilter.GaussianBlur(2))
    page = Image.new("L", (112, 112), 255)
    page.paste(Image.eval(big, lambda p: 255 - p), (24, 24))
    return encode(page, "PNG")


def as_upscaled_png(image28: np.ndarray, size: int = 112) -> bytes:
    """A 28x28 image as a ``size`` x ``size`` PNG (BICUBIC), as it comes: white on black."""
    return encode(Image.fromarray(image28).resize((size, size), Image.Resampling.BICUBIC), "PNG")


STYLES: dict[str, Callable[[np.ndarray, np.random.Generator], object]] = {
    "paper_photo_jpeg": as_paper_photo_jpeg,
    "small_off_center_1500x1200": as_small_off_center,
    "thick_strokes": lambda d, rng: as_stroke_width(d, int(rng.integers(3, 6))),
    "thin_strokes": lambda d, rng: as_stroke_width(d, -2),
    "exif_rotated_jpeg": lambda d, rng: as_exif_rotated_jpeg(d, int(rng.choice([3, 6, 8])), rng),
    "canvas_transparent": lambda d, rng: as_canvas(d, rng, transparent=True),
    "canvas_black": lambda d, rng: as_canvas(d, rng, transparent=False),
}
"""Style name -> ``f(digit, rng)`` returning what to pass to `core.reading.preprocess.to_mnist`."""


# --------------------------------------------------------------------------------------------
# Hostile files
# --------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of width x height that compresses to a few kilobytes.

    Built row by row with zlib, so making it never allocates the full image.
    """
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = []
    chunk_rows = max(1, (1 << 20) // len(row))
    block = row * chunk_rows
    remaining = height
    while remaining > 0:
        take = min(chunk_rows, remaining)
        parts.append(compressor.compress(block if take == chunk_rows else row * take))
        remaining -= take
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (its pixel data is far too short)."""
    data = bytearray(encode(np.zeros((8, 8), np.uint8), "PNG"))
    ihdr = bytes(data[12:29])  # type + 13-byte payload
    payload = struct.pack(">II", width, height) + ihdr[12:17]
    data[8:33] = _png_chunk(b"IHDR", payload)
    return bytes(data)
