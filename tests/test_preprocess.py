"""Any image -> MNIST-style 28x28: decoding hostile bytes, ink detection, fitting, centring.

Inputs are real MNIST test digits re-rendered the way people supply them (tests/helpers_images.py)
plus drawn shapes. Centre of mass is in pixel-index coordinates, where MNIST's own digits sit at
(14.0, 14.0) +- 0.5 (i.e. within 1 px of the geometric centre 13.5). Cutting an image into several
digits is core.reading.segment's job (tests/test_multi.py).
"""

from __future__ import annotations

import io
import time
import timeit

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.reading import preprocess as pp
from core.reading.preprocess import ImageReadError, NoDigitError
from tests import helpers_images as hi

INDEX = np.arange(28)


@pytest.fixture(scope="module")
def digits():
    """Twelve fixed MNIST test digits (uint8, white on black) and their labels."""
    return hi.mnist_sample(12, seed=3)


@pytest.fixture(scope="module")
def seven():
    """One upright MNIST 7 (asymmetric, so rotations and flips show)."""
    x, y = hi.mnist_sample(200, seed=1)
    return x[int(np.flatnonzero(y == 7)[0])]


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    mass = image.sum()
    return float(image.sum(axis=1) @ INDEX / mass), float(image.sum(axis=0) @ INDEX / mass)


def ink_box(image: np.ndarray, level: float = 0.1) -> tuple[int, int]:
    rows = np.flatnonzero((image > level).any(axis=1))
    cols = np.flatnonzero((image > level).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def assert_mnist_like(out: np.ndarray) -> None:
    """Shape, dtype, range, centring and size as MNIST's digits have them.

    Fitting does not rescale the result's maximum, so the peak is only near 1: strokes a few
    pixels wide keep full ink in their middle after the fit.
    """
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert out.max() >= 0.95
    row, col = center_of_mass(out)
    for c in (row, col):
        assert abs(c - 14.0) <= 0.5 + 1e-4  # MNIST's convention: the rounded centre-of-mass shift
        assert abs(c - 13.5) <= 1.0  # the brief's: within 1 px of the geometric centre
    rows, cols = ink_box(out)
    assert rows <= 20 and cols <= 20 and max(rows, cols) >= 17


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 28x28 inputs, the best over relative shifts of at most 1 px.

    Centring rounds the centre-of-mass shift to whole pixels (MNIST's +-0.5 px), so two
    renderings of one digit can land a pixel apart; that is the same reading, not a worse one.
    """
    return max(
        float(np.corrcoef(np.roll(a, (dy, dx), axis=(0, 1)).ravel(), b.ravel())[0, 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def rgba_white_ink_on_transparent(digit: np.ndarray) -> np.ndarray:
    coverage = hi.render_strokes(digit, 200)
    out = np.full((260, 240, 4), 255, np.uint8)  # transparent pixels are white: naive "L" shows nothing
    out[..., 3] = 0
    out[30:230, 20:220, 3] = np.rint(coverage * 255).astype(np.uint8)
    return out


def shifted(digit: np.ndarray) -> np.ndarray:
    out = np.zeros((60, 50), np.uint8)
    out[2:30, 19:47] = digit
    return out


def scaled(digit: np.ndarray, side: int, frame: int) -> np.ndarray:
    up = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    out = np.zeros((frame, frame), np.uint8)
    out[frame - side - 3 : frame - 3, 3 : 3 + side] = up
    return out


RENDERINGS = {
    "as_is": lambda d, rng: d,
    "shifted": lambda d, rng: shifted(d),
    "scaled_up_5x": lambda d, rng: scaled(d, 140, 180),
    "scaled_down": lambda d, rng: scaled(d, 16, 40),
    "inverted_dark_on_light": lambda d, rng: 255 - d,
    "thin_strokes": lambda d, rng: hi.as_stroke_width(d, -2),
    "thick_strokes": lambda d, rng: hi.as_stroke_width(d, 4),
    "rgba_transparent_dark_ink": lambda d, rng: hi.as_canvas(d, rng, transparent=True),
    "rgba_transparent_white_ink": lambda d, rng: rgba_white_ink_on_transparent(d),
    "canvas_white_on_black": lambda d, rng: hi.as_canvas(d, rng, transparent=False),
    "far_off_center_1500x1200_jpeg": lambda d, rng: hi.as_small_off_center(d, rng),
    "uneven_paper_jpeg": lambda d, rng: hi.as_paper_photo_jpeg(d, rng),
    "exif_rotated_jpeg": lambda d, rng: hi.as_exif_rotated_jpeg(d, 6, rng),
    "pil_image_rgb": lambda d, rng: Image.fromarray(255 - d).convert("RGB"),
    "float_0_1": lambda d, rng: d.astype(np.float64) / 255,
    "float_0_255": lambda d, rng: d.astype(np.float32),
    "bool": lambda d, rng: d > 127,
    "int64": lambda d, rng: d.astype(np.int64),
    "uint16": lambda d, rng: d.astype(np.uint16) * 257,
    "uint16_big_endian_dark": lambda d, rng: (d.astype(np.uint16) * 50).astype(">u2"),
    "grey_alpha_2_channels": lambda d, rng: np.stack([np.zeros_like(d), d], axis=-1),
}
# How close each rendering must come to the digit itself through the same chain. Stroke width is
# read as it is (not normalised), so thin and thick strokes differ; a digit shrunk to 16 px has
# lost detail (a faint stroke can move its crop box by a row).
MIN_SIMILARITY = {"thin_strokes": 0.6, "thick_strokes": 0.6, "bool": 0.75, "scaled_down": 0.8}


@pytest.mark.parametrize("rendering", list(RENDERINGS))
def test_renderings_become_mnist_like_and_keep_the_digit(rendering, digits):
    rng = np.random.default_rng(11)
    for digit in digits[0][:4]:
        out = pp.to_mnist(RENDERINGS[rendering](digit, rng))
        assert_mnist_like(out)
        assert similarity(out, pp.to_mnist(digit)) >= MIN_SIMILARITY.get(rendering, 0.85), rendering


def test_mnist_digit_passes_through_in_place(digits):
    """A digit already in MNIST form is read as the minimal MNIST recipe reads it: levels
    stretched (``clip((v - 0.1) / 0.5, 0, 1)``), same place, same size, nothing resampled away."""
    for digit in digits[0]:
        out = pp.to_mnist(digit)
        expected = np.clip((digit / 255.0 - pp.LEVEL_LOW) / pp.LEVEL_SPAN, 0.0, 1.0)
        np.testing.assert_allclose(out, expected, atol=0.1)  # faint edge pixels outside the crop go
        assert (out[expected >= 0.5] >= 0.5).all()  # the strokes stay where they were


@pytest.mark.parametrize("transparent", [True, False])
def test_canvas_background_is_flat_and_quick(transparent, digits, monkeypatch):
    """The canvas' background is one exact colour: no uneven-background estimate is made."""
    canvas = hi.as_canvas(digits[0][0], np.random.default_rng(0), transparent=transparent)

    def uneven_path(small, shape):
        raise AssertionError("the canvas went through the uneven-background path")

    monkeypatch.setattr(pp, "_background_map", uneven_path)
    pp.to_mnist(canvas)
    median = float(np.median(timeit.repeat(lambda: pp.to_mnist(canvas), number=1, repeat=30)))
    # About 2 ms here; this only catches gross regressions (e.g. BLAS thread contention, bench/).
    assert median < 0.010, f"canvas preprocessing took {median * 1e3:.2f} ms"


def test_output_is_deterministic_and_polarity_free(digits):
    digit = digits[0][1]
    light_on_dark = pp.to_mnist(digit)
    assert np.array_equal(light_on_dark, pp.to_mnist(digit.copy()))
    np.testing.assert_allclose(pp.to_mnist(255 - digit), light_on_dark, atol=1e-5)


# --------------------------------------------------------------------------------------------
# No digit
# --------------------------------------------------------------------------------------------


def single_speck() -> np.ndarray:
    out = np.zeros((28, 28), np.uint8)
    out[9, 17] = 255
    return out


def speck_on_paper() -> np.ndarray:
    out = np.full((400, 300), 240, np.uint8)
    out[100:103, 50:53] = 20
    return out


def blank_paper_jpeg() -> bytes:
    return hi.encode(hi.paper(300, 400, np.random.default_rng(5)), "JPEG", quality=70)


def fully_transparent() -> np.ndarray:
    out = np.random.default_rng(2).integers(0, 256, (280, 280, 4)).astype(np.uint8)
    out[..., 3] = 0
    return out


NO_DIGIT = {
    "zeros": lambda: np.zeros((28, 28), np.uint8),
    "all_white": lambda: np.full((100, 80), 255, np.uint8),
    "all_black_rgb": lambda: np.zeros((50, 50, 3), np.uint8),
    "empty_canvas": lambda: np.zeros((280, 280, 4), np.uint8),
    "fully_transparent_rgba": fully_transparent,
    "single_pixel_speck": single_speck,
    "speck_on_paper": speck_on_paper,
    "one_by_one": lambda: np.full((1, 1), 255, np.uint8),
    "blank_paper_jpeg": blank_paper_jpeg,
    "blank_png_bytes": lambda: hi.encode(np.full((64, 64), 200, np.uint8), "PNG"),
}


@pytest.mark.parametrize("case", list(NO_DIGIT))
def test_no_ink_is_no_digit(case):
    with pytest.raises(NoDigitError, match="no digit found"):
        pp.to_mnist(NO_DIGIT[case]())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(28, 28), (97, 61, 3), (200, 200, 4)])
def test_pure_noise_never_crashes(seed, shape):
    noise = np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
    try:
        out = pp.to_mnist(noise)
    except NoDigitError:
        return
    assert out.shape == (28, 28) and out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1


def test_to_ink_of_fully_transparent_image_is_all_zero():
    ink = pp.to_ink(fully_transparent())
    assert ink.shape == (280, 280) and ink.dtype == np.float32 and not ink.any()


# --------------------------------------------------------------------------------------------
# Bad arrays
# --------------------------------------------------------------------------------------------

BAD_ARRAYS = {
    "4d": np.zeros((2, 28, 28, 1), np.uint8),
    "five_channels": np.zeros((28, 28, 5), np.uint8),
    "one_d": np.zeros(28, np.uint8),
    "empty": np.zeros((0, 0), np.uint8),
    "empty_rows": np.zeros((0, 5, 3), np.uint8),
    "nan": np.full((28, 28), np.nan, np.float32),
    "inf": np.where(np.eye(28) > 0, np.inf, 0.0),
    "negative_float": np.full((28, 28), -1.0),
    "float_above_255": np.full((28, 28), 300.0),
    "negative_int": np.full((28, 28), -5, np.int32),
    "huge_int": np.full((28, 28), 70000, np.int64),
    "object": np.full((28, 28), None, object),
    "string": np.full((28, 28), "a"),
    "complex": np.zeros((28, 28), np.complex64),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_arrays_raise_value_error_with_what_was_expected(case):
    with pytest.raises(ValueError, match="Expected|expected") as info:
        pp.to_mnist(BAD_ARRAYS[case])
    assert not isinstance(info.value, NoDigitError)


def test_unsupported_source_type_is_value_error():
    with pytest.raises(ValueError, match="bytes, a PIL image or a numpy array"):
        pp.to_mnist([[0, 255], [255, 0]])


# --------------------------------------------------------------------------------------------
# decode_image
# --------------------------------------------------------------------------------------------


def digit_on_paper(digit: np.ndarray) -> Image.Image:
    return Image.fromarray(255 - np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.BICUBIC)))


@pytest.mark.parametrize("fmt", pp.SUPPORTED_FORMATS)
def test_each_supported_format_decodes(fmt, digits):
    image = digit_on_paper(digits[0][0])
    data = hi.encode(image.convert("RGB"), fmt)
    assert pp.sniff_format(data) == fmt
    decoded = pp.decode_image(data)
    assert decoded.size == (84, 84) and decoded.mode in ("L", "LA", "RGB", "RGBA")
    assert similarity(pp.to_mnist(data), pp.to_mnist(digits[0][0])) > 0.9


def html_bytes() -> bytes:
    return b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"


def svg_bytes() -> bytes:
    return b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><text>7</text></svg>'


NOT_IMAGES = {
    "zero_bytes": (b"", "empty"),
    "html_renamed_png": (html_bytes(), "HTML"),
    "svg": (svg_bytes(), "SVG"),
    "pdf": (b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "PDF"),
    "text": (b"hello, this is not a picture\n", "text"),
    "random_binary": (bytes(np.random.default_rng(0).integers(128, 256, 64, dtype=np.uint8)), "unknown"),
    "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n", "EPS"),
}


@pytest.mark.parametrize("case", list(NOT_IMAGES))
def test_non_images_are_refused_with_a_clear_message(case):
    data, what = NOT_IMAGES[case]
    with pytest.raises(ImageReadError, match=what) as info:
        pp.decode_image(data)
    assert "PNG, JPEG, BMP, GIF, WebP or TIFF" in str(info.value)
    with pytest.raises(ImageReadError):
        pp.to_mnist(data)


def test_decode_refuses_non_bytes():
    with pytest.raises(ImageReadError, match="bytes"):
        pp.decode_image("digit.png")


@pytest.mark.parametrize("fmt,keep", [("PNG", 0.5), ("PNG", 0.9), ("JPEG", 0.6), ("GIF", 0.5), ("WEBP", 0.5),
                                      ("TIFF", 0.5), ("BMP", 0.5)])
def test_truncated_files_are_refused(fmt, keep, digits):
    noisy = np.random.default_rng(1).integers(0, 256, (120, 120), dtype=np.uint8)
    data = hi.encode(np.maximum(noisy, np.asarray(digit_on_paper(digits[0][0]).resize((120, 120)))), fmt)
    with pytest.raises(ImageReadError):
        pp.decode_image(data[: int(len(data) * keep)])


def test_damaged_png_is_refused(digits):
    data = bytearray(hi.encode(digit_on_paper(digits[0][0]), "PNG"))
    data[40:60] = b"\x00" * 20
    with pytest.raises(ImageReadError, match="PNG"):
        pp.decode_image(bytes(data))


def test_decompression_bomb_is_refused_quickly():
    start = time.perf_counter()
    bomb = hi.png_bomb(9000, 9000)  # 81 megapixels of real, valid pixel data
    assert len(bomb) < 50_000 and time.perf_counter() - start < 2.0
    cases = {
        "bomb_81mp": bomb,
        "header_72mp": hi.png_with_header_size(8500, 8500),  # under Pillow's limit, over ours
        "header_100mp": hi.png_with_header_size(10_000, 10_000),  # Pillow warns: must be an error
        "header_1600mp": hi.png_with_header_size(40_000, 40_000),  # Pillow raises
    }
    for name, data in cases.items():
        start = time.perf_counter()
        with pytest.raises(ImageReadError, match="megapixels"):
            pp.decode_image(data)
        assert time.perf_counter() - start < 0.5, name


def test_large_legal_jpeg_is_downscaled_while_decoding(digits):
    sheet = Image.new("L", (8000, 8000), 235)
    sheet.paste(digit_on_paper(digits[0][0]).resize((1600, 1600)), (5000, 1000))
    data = hi.encode(sheet, "JPEG", quality=75)
    decoded = pp.decode_image(data, max_side=1024)
    assert max(decoded.size) <= 1024 and decoded.size[0] == decoded.size[1]
    assert similarity(pp.to_mnist(data), pp.to_mnist(digits[0][0])) > 0.9


def test_large_png_is_downscaled(digits):
    sheet = Image.new("L", (6000, 1000), 0)
    sheet.paste(Image.fromarray(digits[0][0]).resize((600, 600)), (300, 200))
    decoded = pp.decode_image(hi.encode(sheet, "PNG"), max_side=2048)
    assert decoded.size == (2000, 334)


def frames_with_square_at(lefts: list[int]) -> list[Image.Image]:
    frames = []
    for left in lefts:
        frame = np.zeros((40, 80), np.uint8)
        frame[10:30, left : left + 20] = 255
        frames.append(Image.fromarray(frame))
    return frames


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP", "PNG"])
def test_animations_and_multipage_files_give_the_first_frame(fmt):
    first, *rest = frames_with_square_at([5, 55, 30])
    buffer = io.BytesIO()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    first.save(buffer, fmt, save_all=True, append_images=rest, **extra)
    decoded = np.asarray(pp.decode_image(buffer.getvalue()).convert("L"), np.float32)
    assert decoded[:, :40].mean() > 50 > decoded[:, 40:].mean()


def test_16_bit_greyscale_png_is_scaled_not_clipped(digits):
    digit = digits[0][2]
    data = hi.encode(Image.fromarray(digit.astype(np.uint16) * 257), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    assert pp.decode_image(data).mode == "L"
    np.testing.assert_allclose(pp.to_mnist(data), pp.to_mnist(digit), atol=0.01)


@pytest.mark.parametrize("kind", ["I;16B", "I", "F_0_1", "F_0_255"])
def test_high_depth_tiffs_match_8_bit(kind, digits):
    digit = digits[0][3]
    values = {
        "I;16B": (digit.astype(np.uint16) * 257).astype(">u2"),
        "I": digit.astype(np.int32) * 257,
        "F_0_1": digit.astype(np.float32) / 255,
        "F_0_255": digit.astype(np.float32),
    }[kind]
    data = hi.encode(Image.fromarray(values), "TIFF")
    np.testing.assert_allclose(pp.to_mnist(data), pp.to_mnist(digit), atol=0.01)


def test_palette_png_with_transparency(digits):
    digit = digits[0][4]
    coverage = digit > 127
    index = np.where(coverage, 1, 0).astype(np.uint8)
    image = Image.fromarray(index, mode="L").convert("P")
    image.putpalette([0, 0, 0, 20, 20, 90] + [0, 0, 0] * 254)  # background black but transparent, ink navy
    data = hi.encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert similarity(pp.to_mnist(data), pp.to_mnist(coverage)) > 0.95


def test_grey_alpha_png_with_dark_ink(digits):
    digit = digits[0][5]
    image = Image.fromarray(np.stack([np.zeros_like(digit), digit], axis=-1), mode="LA")
    assert similarity(pp.to_mnist(hi.encode(image, "PNG")), pp.to_mnist(digit)) > 0.95


@pytest.mark.parametrize("ink", [(0, 0, 0, 255), (20, 20, 90, 200)])
def test_one_solid_shape_on_a_transparent_canvas(ink):
    """A box of a single colour and a single opacity (a solid bar, no anti-aliasing) on a
    transparent background: the canvas path and a PNG upload both read it, no TypeError."""
    canvas = np.zeros((280, 280, 4), np.uint8)
    canvas[60:220, 130:150] = ink
    x = pp.to_mnist(canvas)
    assert x.shape == (28, 28) and x.dtype == np.float32 and x.max() == pytest.approx(1.0)
    assert x[:, 12:16].sum() > 0.9 * x.sum()  # an upright bar in the middle
    data = hi.encode(Image.fromarray(canvas, mode="RGBA"), "PNG")
    assert similarity(pp.to_mnist(data), x) > 0.95


def test_one_bit_png(digits):
    digit = digits[0][6]
    data = hi.encode(Image.fromarray(digit < 128).convert("1"), "PNG")
    assert similarity(pp.to_mnist(data), pp.to_mnist(digit > 127)) > 0.95


def test_cmyk_jpeg_matches_rgb(digits):
    paper = digit_on_paper(digits[0][7]).convert("RGB")
    from_cmyk = pp.to_mnist(hi.encode(paper.convert("CMYK"), "JPEG", quality=95))
    from_rgb = pp.to_mnist(hi.encode(paper, "JPEG", quality=95))
    assert Image.open(io.BytesIO(hi.encode(paper.convert("CMYK"), "JPEG"))).mode == "CMYK"
    assert similarity(from_cmyk, from_rgb) > 0.97


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_comes_out_upright(orientation, seven):
    data = hi.as_exif_rotated_jpeg(seven, orientation)
    upright = pp.to_mnist(seven)
    assert similarity(pp.to_mnist(data), upright) > 0.9
    stored_pixels = np.asarray(Image.open(io.BytesIO(data)))  # what a reader ignoring EXIF sees
    assert similarity(pp.to_mnist(stored_pixels), upright) < 0.6


def test_too_small_max_side_is_refused():
    with pytest.raises(ValueError, match="max_side"):
        pp.decode_image(hi.encode(np.zeros((8, 8), np.uint8), "PNG"), max_side=10)
    with pytest.raises(ValueError, match="max_side"):
        pp.to_mnist(np.zeros((8, 8), np.uint8), max_side=10)


# --------------------------------------------------------------------------------------------
# The chain's pieces
# --------------------------------------------------------------------------------------------


def test_crop_fit_center_chain():
    ink = np.zeros((100, 60), np.float32)
    ink[10:90, 20:32] = 1.0  # a tall bar, 80x12
    cropped = pp.crop_to_ink(ink)
    assert cropped.shape == (80, 12)
    fitted = pp.fit_in_box(cropped)
    assert fitted.shape == (20, 3) and fitted.dtype == np.float32
    assert fitted.min() >= 0.0 and fitted.max() <= 1.0 and fitted[2:-2, 1] == pytest.approx(1.0, abs=0.02)
    centered = pp.center_by_mass(fitted)
    assert centered.shape == (28, 28)
    assert center_of_mass(centered) == pytest.approx((14.0, 14.0), abs=0.5 + 1e-6)


def test_fit_keeps_a_hairline_visible():
    """A 1-px line shrunk 40x fades (its ink is averaged, not dropped) but is still all there."""
    ink = np.zeros((1000, 800), np.float32)
    ink[100:900, 400] = 1.0  # one pixel wide, 40x reduction
    ink[100, 100:700] = 1.0
    cropped = pp.crop_to_ink(ink)
    fitted = pp.fit_in_box(cropped)
    assert fitted.shape == (20, 15) and 0.0 <= fitted.min() and fitted.max() <= 1.0
    scale = fitted.size / cropped.size
    assert fitted.sum() == pytest.approx(cropped.sum() * scale, rel=0.1)  # area-averaged: ink kept
    column = fitted[:, fitted.sum(axis=0).argmax()]
    assert (column[1:] > 0.01).all()  # the vertical stroke shows along its whole length


def test_crop_refuses_a_speck():
    ink = np.zeros((50, 50), np.float32)
    ink[20:22, 20:22] = 1.0
    with pytest.raises(NoDigitError, match="no digit found"):
        pp.crop_to_ink(ink)


def test_center_by_mass_keeps_a_lopsided_glyph_inside():
    fitted = np.zeros((20, 20), np.float32)
    fitted[0, :] = 1.0  # all mass on the top row
    out = pp.center_by_mass(fitted)
    assert out.sum() == pytest.approx(20.0)


# --------------------------------------------------------------------------------------------
# Soft, thin and absent ink: the image the model sees is the antialiased ink map itself
# --------------------------------------------------------------------------------------------


def soft_grey_digit(digit: np.ndarray, side: int = 200, ink: float = 150.0, paper: float = 235.0) -> np.ndarray:
    """A digit upscaled with BICUBIC and not re-thresholded: grey ink with wide soft edges."""
    up = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255
    return np.clip(np.rint(paper - (paper - ink) * up), 0, 255).astype(np.uint8)


def test_soft_grey_stroke_reaches_full_ink_and_keeps_soft_edges(digits):
    for digit in digits[0][:4]:
        image = soft_grey_digit(digit)
        ink = pp.to_ink(image)
        edge_share = ((ink > 0.05) & (ink < 0.95)).sum() / (ink > 0.05).sum()
        assert edge_share > 0.2, f"the ink map's edges are hard ({edge_share:.0%} fractional)"
        out = pp.to_mnist(image)
        assert out.max() == pytest.approx(1.0, abs=1e-4)  # grey ink 85 levels deep is full ink
        soft = int(((out > 0.05) & (out < 0.95)).sum())
        assert soft >= 30, f"only {soft} fractional pixels: the edges were thresholded away"
        assert similarity(out, pp.to_mnist(digit)) >= 0.85


def line_image(width: int) -> np.ndarray:
    """A white diagonal line `width` px wide on a black 200x200 image, same ends for any width."""
    image = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(image).line([(30, 20), (170, 180)], fill=255, width=width)
    return np.asarray(image)


@pytest.mark.parametrize("dark_on_light", [False, True])
def test_thin_line_is_not_thickened(dark_on_light):
    thin, thick = line_image(1), line_image(6)
    if dark_on_light:
        thin, thick = 255 - thin, 255 - thick
    thin_out, thick_out = pp.to_mnist(thin), pp.to_mnist(thick)
    assert 0.05 < thin_out.max() < thick_out.max() <= 1.0  # faded, still visible
    # Ink mass grows with stroke width (about 1:6 here); a normalised stroke width would make
    # the two about equal.
    assert thin_out.sum() < 0.3 * thick_out.sum(), (thin_out.sum(), thick_out.sum())


@pytest.mark.parametrize("level", [0, 1, 37, 128, 200, 235, 254, 255])
def test_to_ink_of_a_uniform_image_is_all_zero(level):
    for image in (np.full((120, 90), level, np.uint8), np.full((40, 60, 3), level, np.uint8),
                  np.full((50, 50), level / 255.0, np.float32)):
        ink = pp.to_ink(image)
        assert ink.shape == image.shape[:2] and ink.dtype == np.float32 and not ink.any(), level


@pytest.mark.parametrize("level", [40, 128, 235])
@pytest.mark.parametrize("seed", range(3))
def test_to_ink_of_gaussian_noise_alone_is_all_zero(level, seed):
    rng = np.random.default_rng(seed)
    noisy = np.clip(level / 255.0 + rng.normal(0.0, 3.0 / 255.0, (240, 320)), 0.0, 1.0)
    assert not pp.to_ink(noisy).any()  # float, unquantised
    assert not pp.to_ink(np.rint(noisy * 255).astype(np.uint8)).any()  # as 8-bit pixels
