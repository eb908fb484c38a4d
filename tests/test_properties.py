"""Property tests (Hypothesis) for the preprocessing contract.

Whatever it is given, ``core.reading.preprocess.to_mnist`` either returns a float32 (28, 28) array with
finite values in [0, 1], or raises ``ValueError`` (``ImageReadError`` and ``NoDigitError`` are
ValueErrors) with a non-empty message; ``decode_image`` raises only ``ImageReadError``. Nothing
else escapes, and every call finishes within a few seconds.

Inputs: numpy arrays of any shape (0-4 dims, sides 0..300) and dtype (bool, ints, uints, floats
with NaN/inf, complex, object, byte-swapped); drawn "digit-like" arrays that reach the whole chain;
Pillow images of every mode; and a bounded fuzz loop over mutated valid PNG, JPEG, GIF, TIFF, BMP
and WebP files (bit flips, byte overwrites, truncations, header field changes, insertions,
splices). The whole file runs in well under a minute.
"""

from __future__ import annotations

import io
import math
import struct
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from core.reading import preprocess as pp
from core.reading.preprocess import ImageReadError, NoDigitError

CALL_LIMIT_S = 5.0  # per call, on a shared 2-core machine
MAX_ELEMENTS = 300 * 300 * 4
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.filter_too_much])


def check_to_mnist(source) -> np.ndarray | ValueError:
    """Run to_mnist and check the contract; returns the output, or the ValueError it raised."""
    start = time.perf_counter()
    try:
        out = pp.to_mnist(source)
    except ValueError as exc:  # ImageReadError and NoDigitError included
        assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
        out = exc
    elapsed = time.perf_counter() - start
    assert elapsed < CALL_LIMIT_S, f"to_mnist took {elapsed:.1f} s"
    if not isinstance(out, ValueError):
        assert isinstance(out, np.ndarray) and out.shape == (28, 28) and out.dtype == np.float32
        assert np.isfinite(out).all() and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    return out


# --------------------------------------------------------------------------------------------
# Arrays of any shape and dtype
# --------------------------------------------------------------------------------------------

NUMERIC_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                  np.float16, np.float32, np.float64, np.complex64, np.complex128,
                  np.dtype(">u2"), np.dtype(">i4"), np.dtype(">f4"), np.dtype("<f8")]
OBJECTS = st.one_of(st.none(), st.integers(-300, 70000), st.floats(allow_nan=True), st.text(max_size=3),
                    st.binary(max_size=3))


@st.composite
def shapes(draw) -> tuple[int, ...]:
    """0 to 4 dimensions, each side 0..300, at most MAX_ELEMENTS elements in all."""
    ndim = draw(st.integers(0, 4))
    shape, budget = [], MAX_ELEMENTS
    for _ in range(ndim):
        side = draw(st.integers(0, min(300, max(1, budget))))
        shape.append(side)
        budget = budget // max(side, 1)
    return tuple(shape)


@st.composite
def any_arrays(draw) -> np.ndarray:
    shape = draw(shapes())
    if draw(st.integers(0, 9)) == 0:
        return draw(hnp.arrays(object, shape, elements=OBJECTS, fill=OBJECTS))
    dtype = np.dtype(draw(st.sampled_from(NUMERIC_DTYPES)))
    return draw(hnp.arrays(dtype, shape))  # sparse random values over one random fill value


@settings(max_examples=200, **COMMON)
@given(any_arrays())
def test_any_array_gives_a_valid_input_or_a_value_error(array):
    check_to_mnist(array)


@st.composite
def digit_like_arrays(draw) -> np.ndarray:
    """A background with a few strokes of ink: reaches cropping, fitting and centring."""
    rows, cols = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    background = draw(st.floats(0, 1))
    ink = draw(st.floats(0, 1))
    image = np.full((rows, cols), background, np.float64)
    for _ in range(draw(st.integers(0, 4))):
        top, left = draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))
        height, width = draw(st.integers(1, rows)), draw(st.integers(1, cols))
        image[top:top + height, left:left + width] = ink
    if draw(st.booleans()):
        noise = draw(st.floats(0, 0.3))
        seed = draw(st.integers(0, 2**32 - 1))
        image = np.clip(image + np.random.default_rng(seed).normal(0, noise, image.shape), 0, 1)
    layout = draw(st.sampled_from(["grey", "grey1", "la", "rgb", "rgba_alpha_ink", "rgba_opaque"]))
    if layout == "grey1":
        image = image[..., None]
    elif layout == "la":
        image = np.stack([image, np.full_like(image, draw(st.floats(0, 1)))], axis=-1)
    elif layout == "rgb":
        image = np.repeat(image[..., None], 3, axis=-1)
    elif layout == "rgba_alpha_ink":  # the drawing canvas: one colour, the digit in alpha
        colour = draw(st.floats(0, 1))
        image = np.concatenate([np.full(image.shape + (3,), colour), image[..., None]], axis=-1)
    elif layout == "rgba_opaque":
        image = np.concatenate([np.repeat(image[..., None], 3, axis=-1), np.ones(image.shape + (1,))], axis=-1)
    kind = draw(st.sampled_from(["uint8", "uint16", "float32_01", "float64_0255", "bool", "int32"]))
    if kind == "uint8":
        return np.rint(image * 255).astype(np.uint8)
    if kind == "uint16":
        return np.rint(image * 65535).astype(np.uint16)
    if kind == "float32_01":
        return image.astype(np.float32)
    if kind == "float64_0255":
        return image * 255.0
    if kind == "bool":
        return image > 0.5
    return np.rint(image * 255).astype(np.int32)


@settings(max_examples=150, **COMMON)
@given(digit_like_arrays())
def test_digit_like_arrays_give_a_valid_input_or_no_digit(array):
    out = check_to_mnist(array)
    # A well-formed array is never refused as malformed: it is a digit or "no digit".
    assert not isinstance(out, ValueError) or isinstance(out, NoDigitError), repr(out)
    if not isinstance(out, ValueError):
        # A digit always holds ink; fitting averages it without rescaling the maximum, so a thin
        # or tiny stroke may peak below 1 (the [0, 1] range is checked above).
        assert out.max() > 0.0 and out.sum() > 0.0


# --------------------------------------------------------------------------------------------
# Pillow images of every mode
# --------------------------------------------------------------------------------------------

MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
         "I", "I;16", "I;16B", "I;16L", "F"]


@settings(max_examples=120, **COMMON)
@given(mode=st.sampled_from(MODES), width=st.integers(1, 120), height=st.integers(1, 120),
       seed=st.integers(0, 2**32 - 1), blank=st.booleans())
def test_pillow_images_of_any_mode(mode, width, height, seed, blank):
    rng = np.random.default_rng(seed)
    grey = np.zeros((height, width), np.uint8) if blank else rng.integers(0, 256, (height, width), dtype=np.uint8)
    base = Image.fromarray(grey, mode="L")
    try:
        image = base.convert(mode)
    except ValueError:
        image = Image.new(mode, (width, height))
    if mode == "P" and not blank:
        image.info["transparency"] = int(rng.integers(0, 256))
    check_to_mnist(image)


# --------------------------------------------------------------------------------------------
# Bytes: a bounded fuzz loop over mutated valid files
# --------------------------------------------------------------------------------------------


def _digit(size: int = 48) -> np.ndarray:
    """A synthetic '7'-like glyph, dark on light, uint8 (size, size)."""
    out = np.full((size, size), 235, np.uint8)
    s = size // 8
    out[s:2 * s, s:size - s] = 20
    for i in range(size - 3 * s):
        col = size - s - 1 - i // 2
        out[2 * s + i, max(0, col - s // 2):col + 1] = 20
    return out


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _seeds() -> dict[str, bytes]:
    grey = Image.fromarray(_digit())
    rgb = grey.convert("RGB")
    rgba = Image.merge("RGBA", [Image.new("L", grey.size, 0)] * 3 + [Image.eval(grey, lambda v: 255 - v)])
    other = Image.fromarray(np.rot90(_digit()).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    palette = grey.convert("P")
    seeds = {
        "png_l": _save(grey, "PNG"),
        "png_rgba": _save(rgba, "PNG"),
        "png_p_trns": _save(palette, "PNG", transparency=0),
        "png_i16": _save(Image.fromarray(_digit().astype(np.uint16) * 257), "PNG"),
        "png_interlaced": _save(rgb, "PNG", interlace=1) if _png_interlace_supported() else _save(rgb, "PNG"),
        "apng": _save(grey, "PNG", save_all=True, append_images=[other]),
        "jpeg": _save(rgb, "JPEG", quality=80),
        "jpeg_progressive": _save(grey, "JPEG", quality=80, progressive=True),
        "jpeg_cmyk": _save(rgb.convert("CMYK"), "JPEG"),
        "jpeg_exif": _save(rgb, "JPEG", exif=exif.tobytes()),
        "gif_animated": _save(grey, "GIF", save_all=True, append_images=[other], duration=100),
        "tiff_multipage": _save(grey, "TIFF", save_all=True, append_images=[other]),
        "tiff_lzw_rgb": _save(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_i16": _save(Image.fromarray(_digit().astype(np.uint16) * 257), "TIFF"),
        "bmp_rgb": _save(rgb, "BMP"),
        "bmp_palette": _save(palette, "BMP"),
        "webp_lossy": _save(rgb, "WEBP", quality=70),
        "webp_lossless": _save(rgba, "WEBP", lossless=True),
        "webp_animated": _save(grey, "WEBP", save_all=True, append_images=[other], lossless=True),
    }
    for name, data in seeds.items():  # every seed is valid to start with
        assert pp.sniff_format(data) is not None, name
        check_to_mnist(data)
    return seeds


def _png_interlace_supported() -> bool:
    try:
        _save(Image.new("L", (4, 4)), "PNG", interlace=1)
        return True
    except Exception:  # noqa: BLE001 - an older Pillow without interlaced PNG writing
        return False


SEEDS = _seeds()
BOUNDARY = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def header_fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, width in bytes, byte order) of size/depth/count fields worth corrupting."""
    fmt = pp.sniff_format(data)
    fields: list[tuple[int, int, str]] = []
    if fmt == "PNG":
        fields += [(16, 4, ">"), (20, 4, ">"), (24, 1, ">"), (25, 1, ">"), (28, 1, ">"), (8, 4, ">")]
    elif fmt == "JPEG":
        for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc4", b"\xff\xda", b"\xff\xdb", b"\xff\xe1"):
            at = data.find(marker)
            if at >= 0:
                fields += [(at + 2, 2, ">"), (at + 4, 1, ">"), (at + 5, 2, ">"), (at + 7, 2, ">"), (at + 9, 1, ">")]
    elif fmt == "GIF":
        fields += [(6, 2, "<"), (8, 2, "<"), (10, 1, "<")]
        at = data.find(b"\x2c", 13)
        if at >= 0:
            fields += [(at + 1, 2, "<"), (at + 3, 2, "<"), (at + 5, 2, "<"), (at + 7, 2, "<"), (at + 9, 1, "<")]
    elif fmt == "BMP":
        fields += [(2, 4, "<"), (10, 4, "<"), (14, 4, "<"), (18, 4, "<"), (22, 4, "<"), (26, 2, "<"), (28, 2, "<"),
                   (30, 4, "<"), (46, 4, "<")]
    elif fmt == "TIFF":
        order = "<" if data[:2] == b"II" else ">"
        fields += [(4, 4, order)]
        # A file truncated by an earlier mutation may end inside the header.
        (ifd,) = struct.unpack(order + "I", data[4:8]) if len(data) >= 8 else (len(data),)
        if ifd + 2 <= len(data):
            (count,) = struct.unpack(order + "H", data[ifd:ifd + 2])
            for i in range(min(count, 20)):
                entry = ifd + 2 + 12 * i
                fields += [(entry + 2, 2, order), (entry + 4, 4, order), (entry + 8, 4, order)]
    elif fmt == "WEBP":
        fields += [(4, 4, "<"), (16, 4, "<")]
        at = data.find(b"\x9d\x01\x2a")  # VP8 key frame start code, then 14-bit width and height
        if at >= 0:
            fields += [(at + 3, 2, "<"), (at + 5, 2, "<")]
        at = data.find(b"VP8L")
        if at >= 0:
            fields += [(at + 9, 4, "<")]
        at = data.find(b"VP8X")
        if at >= 0:
            fields += [(at + 12, 3, "<"), (at + 15, 3, "<")]
    return [f for f in fields if f[0] + f[1] <= len(data)]


def _fix_png_crcs(data: bytearray) -> None:
    """Recompute PNG chunk CRCs, so a changed header field is read instead of refused as damaged."""
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        end = pos + 8 + length
        if end + 4 > len(data):
            return
        data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:end])) & 0xFFFFFFFF)
        pos = end + 4


@st.composite
def mutated_files(draw) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "byte", "truncate", "field", "insert", "delete", "splice", "repeat"]))
        if not data:
            break
        if op == "flip":
            for _ in range(draw(st.integers(1, 8))):
                i = draw(st.integers(0, len(data) - 1))
                data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]))
        elif op == "truncate":
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif op == "field":
            fields = header_fields(bytes(data))
            if fields:
                offset, width, order = draw(st.sampled_from(fields))
                value = draw(st.sampled_from(BOUNDARY)) & ((1 << (8 * width)) - 1)
                data[offset:offset + width] = value.to_bytes(width, "big" if order == ">" else "little")
                if pp.sniff_format(bytes(data)) == "PNG" and draw(st.booleans()):
                    _fix_png_crcs(data)
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            i = draw(st.integers(0, len(data) - 1))
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "splice":
            other = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
            cut = draw(st.integers(0, len(data)))
            data = data[:cut] + other[draw(st.integers(0, len(other) - 1)):]
        elif op == "repeat":  # duplicate a slice (e.g. a chunk or a frame)
            i = draw(st.integers(0, len(data) - 1))
            piece = data[i:i + draw(st.integers(1, 256))]
            data[i:i] = piece * draw(st.integers(1, 4))
    return bytes(data)


def check_upload_bytes(data: bytes) -> None:
    """The Upload page's path: decode_image, then to_mnist on the decoded image."""
    start = time.perf_counter()
    try:
        image = pp.decode_image(data)
    except ImageReadError as exc:
        assert str(exc).strip()
        assert "Traceback" not in str(exc)
        image = None
    elapsed = time.perf_counter() - start
    assert elapsed < CALL_LIMIT_S, f"decode_image took {elapsed:.1f} s"
    if image is not None:
        assert image.mode in ("L", "LA", "RGB", "RGBA") and max(image.size) <= pp.DEFAULT_MAX_SIDE
        out = check_to_mnist(image)
        # A decoded image is either a digit or "no digit", never malformed.
        assert not isinstance(out, ValueError) or isinstance(out, NoDigitError), repr(out)


@settings(max_examples=300, **COMMON)
@given(mutated_files())
def test_mutated_image_files_are_read_or_refused_cleanly(data):
    check_upload_bytes(data)


@settings(max_examples=60, **COMMON)
@given(st.binary(max_size=2048), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a",
                                                   b"II*\x00", b"MM\x00*", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]))
def test_random_bytes_behind_a_magic_number_are_refused_cleanly(tail, magic):
    data = magic + tail
    check_upload_bytes(data)
    try:
        pp.to_mnist(data)
    except (ImageReadError, NoDigitError):
        pass


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_truncated_at_each_tenth_is_refused_or_read(name):
    data = SEEDS[name]
    for tenth in range(10):
        check_upload_bytes(data[: math.floor(len(data) * tenth / 10)])

