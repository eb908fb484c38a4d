"""Several digits in one image: segmentation, one batched model call, boxes in the image's pixels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from core.reading import segment
from tests import helpers_images as hi

# Four-digit numbers read exactly right, out of NUMBERS (measured 95-96% with the "fast" recipe's CNN).
MIN_EXACT = 0.90
NUMBERS = 200


@pytest.fixture(scope="module")
def served():
    """The store's default model when there is one, else a small CNN trained here (~1 min).

    """
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    store = ModelStore()
    name = store.active_name()
    if name is not None:
        return Predictor.load(name, store)
    from core.learning.train import RECIPES, train

    result = train(replace(RECIPES["fast"], train_size=30000))
    assert result.test_accuracy >= 0.98, f"fallback model too weak: {result.test_accuracy:.4f}"
    from core.learning.export import export_onnx
    from core.serving.runtime import Runtime

    return Predictor(Runtime(export_onnx(result.model)))


@pytest.fixture(scope="module")
def mnist_test():
    from core.data import cached_mnist

    mnist = cached_mnist()
    return mnist.x_test, mnist.y_test


# --- synthetic numbers --------------------------------------------------------------------------


def _crop(coverage: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero((coverage > 0.05).any(axis=1))
    cols = np.flatnonzero((coverage > 0.05).any(axis=0))
    return coverage[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def number_on_paper(glyphs: list[np.ndarray], rng: np.random.Generator,
                    gaps: list[int] | None = None) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Dark MNIST digits written left to right on light, unevenly lit, grainy paper.

    Digits are 50-120 px tall (each +-15% around the number's size), a little up or down the
    line; the gaps between their ink are 2-4, 5-14 or 15-49 px (a third each) unless given.

    Returns:
        (picture, boxes): uint8 (rows, cols) grey image, and each digit's ink box (x, y, w, h).
    """
    size = int(rng.integers(50, 120))
    inks = [_crop(hi.render_strokes(g, int(size * rng.uniform(0.85, 1.15) * 28 / 20))) for g in glyphs]
    if gaps is None:
        gaps = [int(rng.choice([rng.integers(2, 5), rng.integers(5, 15), rng.integers(15, 50)]))
                for _ in glyphs[:-1]]
    tallest = max(c.shape[0] for c in inks)
    jitter = int(0.08 * size)
    rows = tallest + 2 * jitter + int(rng.integers(30, 90))
    margin = int(rng.integers(15, 50))
    cols = sum(c.shape[1] for c in inks) + sum(gaps) + 2 * margin
    sheet = hi.paper(rows, cols, rng, base=rng.uniform(185, 235), gradient=rng.uniform(10, 50),
                     noise=rng.uniform(2, 6))
    line_top = (rows - tallest) // 2
    level = rng.uniform(20, 80)
    x, boxes = margin, []
    for i, ink in enumerate(inks):
        top = line_top + (tallest - ink.shape[0]) // 2 + int(rng.integers(-jitter, jitter + 1))
        sheet = hi.place(sheet, ndimage.gaussian_filter(ink, 0.6), top, x, level)
        boxes.append((x, top, ink.shape[1], ink.shape[0]))
        x += ink.shape[1] + (gaps[i] if i < len(gaps) else 0)
    return np.clip(sheet, 0, 255).astype(np.uint8), boxes


def canvas_42() -> np.ndarray:
    """"42" drawn on the app's canvas: white strokes on opaque black RGBA with a thick brush; the
    4 in two strokes (an L, then the stem crossing its bar)."""
    image = Image.new("RGBA", (420, 280), (0, 0, 0, 255))
    draw = ImageDraw.Draw(image)
    white, width = (255, 255, 255, 255), 20
    draw.line([(95, 50), (60, 165), (150, 165)], fill=white, width=width, joint="curve")
    draw.line([(140, 70), (140, 240)], fill=white, width=width)
    draw.line([(235, 95), (255, 65), (295, 52), (335, 70), (345, 110), (320, 155), (280, 195), (240, 235),
               (370, 235)], fill=white, width=width, joint="curve")
    return np.asarray(image)


# --- reading ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reads_four_digit_numbers(served, mnist_test):
    x, y = mnist_test
    rng = np.random.default_rng(2026)
    exact, found_four, failures = 0, 0, []
    for i in range(NUMBERS):
        pick = rng.integers(0, len(y), 4)
        truth = "".join(str(int(y[j])) for j in pick)
        picture, _ = number_on_paper([x[j] for j in pick], rng)
        source = hi.encode(picture, "JPEG", quality=85) if i % 2 else hi.encode(picture, "PNG")
        reading = segment.read_number(served, source)
        exact += reading.number == truth
        found_four += len(reading.digits) == 4
        if reading.number != truth:
            failures.append((truth, reading.number))
    rate = exact / NUMBERS
    print(f"\nfour-digit numbers read exactly: {exact}/{NUMBERS} = {rate:.1%}; "
          f"four digits found in {found_four}/{NUMBERS}")
    assert rate >= MIN_EXACT, f"only {rate:.1%} read exactly; misread: {failures[:20]}"


def test_boxes_are_tight_and_in_the_pictures_pixels(served, mnist_test):
    x, y = mnist_test
    rng = np.random.default_rng(7)
    picture, boxes = number_on_paper([x[0], x[1], x[2], x[3]], rng, gaps=[30, 30, 30])
    reading = segment.read_number(served, picture)
    assert len(reading.digits) == 4
    for digit, (bx, by, bw, bh) in zip(reading.digits, boxes):
        x0, y0, w, h = digit.box
        assert abs(x0 - bx) <= 3 and abs(y0 - by) <= 3 and abs(x0 + w - bx - bw) <= 3 and abs(y0 + h - by - bh) <= 3


def test_boxes_of_a_downscaled_picture_map_back(served, mnist_test):
    # A 4100-px-wide picture is read at 1/3 scale (max side 2048): boxes must still be in its pixels.
    x, _ = mnist_test
    rng = np.random.default_rng(8)
    picture, boxes = number_on_paper([x[4], x[5]], rng, gaps=[60])
    big = np.asarray(Image.fromarray(picture).resize((picture.shape[1] * 9, picture.shape[0] * 9),
                                                     Image.Resampling.BILINEAR))
    canvas = np.full((big.shape[0], 4100), int(np.median(big)), np.uint8)
    canvas[:, 100 : 100 + big.shape[1]] = big
    reading = segment.read_number(served, hi.encode(canvas, "PNG"))
    assert len(reading.digits) == 2
    for digit, (bx, by, bw, bh) in zip(reading.digits, boxes):
        x0, y0, w, h = digit.box
        expect = (100 + bx * 9, by * 9, bw * 9, bh * 9)
        assert abs(x0 - expect[0]) <= 20 and abs(y0 - expect[1]) <= 20
        assert abs(w - expect[2]) <= 30 and abs(h - expect[3]) <= 30


def test_exif_rotated_photo_gives_upright_boxes(served, mnist_test):
    x, _ = mnist_test
    picture, _ = number_on_paper([x[6], x[7]], np.random.default_rng(9), gaps=[40])
    upright = Image.fromarray(picture)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # shown upright with EXIF orientation 6
    exif = Image.Exif()
    exif[hi.EXIF_ORIENTATION_TAG] = 6
    reading = segment.read_number(served, hi.encode(stored, "JPEG", quality=90, exif=exif.tobytes()))
    assert segment.source_size(hi.encode(stored, "JPEG", exif=exif.tobytes())) == upright.size
    assert len(reading.digits) == 2
    for digit in reading.digits:
        x0, y0, w, h = digit.box
        assert x0 + w <= upright.width and y0 + h <= upright.height


def test_canvas_42(served):
    reading = segment.read_number(served, canvas_42())
    assert reading.number == "42"
    (x4, y4, w4, h4), (x2, _, _, _) = (d.box for d in reading.digits)
    assert 45 <= x4 <= 60 and 40 <= y4 <= 55 and h4 >= 185 and x4 + w4 < x2  # the 4 is both strokes


def test_broken_strokes_of_one_digit_are_not_split(served, mnist_test):
    """Digits with their strokes broken in two places (a pen lifted, a faint spot) stay one digit."""
    x, y = mnist_test
    rng = np.random.default_rng(11)
    hole = hi.disk(4)
    checked = 0
    for label in range(10):
        for index in np.flatnonzero(y == label)[:5]:
            coverage = _crop(hi.render_strokes(x[index], 140))
            rows, cols = np.nonzero(coverage > 0.5)
            for k in rng.choice(len(rows), 2, replace=False):  # two 9-px breaks on the strokes
                r, c = rows[k], cols[k]
                window = coverage[max(r - 4, 0) : r + 5, max(c - 4, 0) : c + 5]
                window[hole[max(4 - r, 0) : 9 - max(r + 5 - coverage.shape[0], 0),
                            max(4 - c, 0) : 9 - max(c + 5 - coverage.shape[1], 0)]] = 0.0
            sheet = hi.place(np.full((coverage.shape[0] + 60, coverage.shape[1] + 60), 225.0, np.float32),
                             coverage, 30, 30, 40.0)
            reading = segment.read_number(served, sheet.astype(np.uint8))
            assert len(reading.digits) == 1, f"a broken {label} (test image {index}) became {reading.number!r}"
            checked += 1
    assert checked == 50


def test_segment_keeps_dotted_strokes_with_their_digit():
    ink = np.zeros((120, 260), np.float32)
    ink[20:100, 40:46] = 1.0  # a 1 ...
    for x0 in range(60, 100, 8):  # ... and a dotted bar to its right, nearer to it than to the next digit
        ink[20:25, x0 : x0 + 5] = 1.0
    ink[20:100, 150:156] = 1.0  # another 1
    ink[40:80, 170:210] = 1.0  # a block as the third digit
    ink[110:112, 250:252] = 1.0  # a speck
    boxes = segment.segment(ink)
    assert [b[0] for b in boxes] == [40, 150, 170]
    assert boxes[0][2] == 97 - 40  # the 1 and its dotted bar: columns 40..96


def test_digits_two_pixels_apart_are_two_digits(served, mnist_test):
    x, y = mnist_test
    zeros = np.flatnonzero(y == 0)[:2]
    picture, _ = number_on_paper([x[zeros[0]], x[zeros[1]]], np.random.default_rng(12), gaps=[2])
    assert len(segment.read_number(served, picture).digits) == 2


def test_blank_image_reads_no_number(served):
    blank = np.full((200, 400), 230, np.uint8)
    reading = segment.read_number(served, blank)
    assert reading.number == "" and reading.digits == []
    assert "no digit found" in reading.message
    assert reading.to_json() == {"number": "", "digits": [], "is_digit": False, "message": reading.message}


def test_json_shape(served, mnist_test):
    x, y = mnist_test
    picture, _ = number_on_paper([x[0], x[1]], np.random.default_rng(13), gaps=[30])
    obj = segment.read_number(served, hi.encode(picture, "PNG")).to_json()
    assert set(obj) == {"number", "digits", "is_digit"}
    assert obj["number"] == "".join(str(d["digit"]) for d in obj["digits"])
    for d in obj["digits"]:
        assert set(d) == {"digit", "confidence", "box", "is_digit"}
        assert isinstance(d["digit"], int) and 0 <= d["confidence"] <= 1
        assert len(d["box"]) == 4 and all(isinstance(v, int) for v in d["box"])
    assert isinstance(obj["is_digit"], bool)


def test_all_digits_go_through_one_model_call(served, mnist_test, monkeypatch):
    x, _ = mnist_test
    picture, _ = number_on_paper([x[20], x[21], x[22], x[23]], np.random.default_rng(14))
    calls = []
    original = type(served).predict_inputs

    def counting(self, batch):
        calls.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(type(served), "predict_inputs", counting)
    reading = segment.read_number(served, picture)
    assert len(calls) == 1 and calls[0] >= len(reading.digits) == 4


def test_unreadable_bytes_raise_image_read_error(served):
    from core.reading.preprocess import ImageReadError

    with pytest.raises(ImageReadError):
        segment.read_number(served, b"not an image")


def test_map_box_scales_back():
    assert segment.map_box((10, 20, 5, 6), (100, 200), None) == (10, 20, 5, 6)
    assert segment.map_box((10, 20, 5, 6), (100, 200), (200, 100)) == (10, 20, 5, 6)
    assert segment.map_box((10, 20, 5, 6), (100, 200), (600, 300)) == (30, 60, 15, 18)
    assert segment.map_box((199, 99, 1, 1), (100, 200), (599, 299)) == (596, 296, 3, 3)  # clipped to the image
