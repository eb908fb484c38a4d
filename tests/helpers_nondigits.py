"""Pictures that are not digits, for testing the "not a digit" detector (`core.serving.novelty`).

The detector is fitted on digits only, so every kind here is one it never saw: letters rendered
from the machine's fonts (characters that do not resemble digits), scribbles, random strokes,
geometric shapes, filled and shaded blobs, textures. Moved here from the detector of issue 14,
which was fitted on them; now they only test it.
"""

from __future__ import annotations

import glob
import os
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

SEED = 0
NON_DIGIT_CHARS = "ACEFHKMNPRUVWXYacdefhkmnprtuvwxy#@%&*+=<>{}"
FAMILIES = ("letter", "scribble", "strokes", "shape", "blob", "texture")
_CANVAS = 64


@lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """TrueType/OpenType fonts installed on this machine (sorted, so runs repeat)."""
    found = set()
    for root in ("/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts")):
        for pattern in ("**/*.ttf", "**/*.otf"):
            found.update(glob.glob(os.path.join(root, pattern), recursive=True))
    return tuple(sorted(found))


@lru_cache(maxsize=256)
def _font(path: str, size: int):
    return ImageFont.truetype(path, size)


def _letter(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    char = NON_DIGIT_CHARS[int(rng.integers(len(NON_DIGIT_CHARS)))]
    fonts = font_files()
    size = int(rng.integers(24, 44))
    font = _font(fonts[int(rng.integers(len(fonts)))], size) if fonts else ImageFont.load_default()
    draw.text((int(rng.integers(4, 16)), int(rng.integers(0, 10))), char, fill=255, font=font)
    return np.asarray(image)


def _scribble(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    position, angle, points = rng.uniform(20, 44, 2), rng.uniform(0, 2 * np.pi), []
    for _ in range(int(rng.integers(15, 60))):
        angle += rng.normal(0, 0.8)
        position = np.clip(position + 4 * np.array([np.cos(angle), np.sin(angle)]), 5, _CANVAS - 5)
        points.append(tuple(position))
    ImageDraw.Draw(image).line(points, fill=255, width=int(rng.integers(2, 6)), joint="curve")
    return np.asarray(image)


def _strokes(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        draw.line([tuple(rng.uniform(5, _CANVAS - 5, 2)), tuple(rng.uniform(5, _CANVAS - 5, 2))],
                  fill=255, width=int(rng.integers(2, 6)))
    return np.asarray(image)


def _shape(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    kind, width = int(rng.integers(5)), int(rng.integers(2, 6))
    fill = 255 if rng.random() < 0.5 else None
    x0, y0 = rng.uniform(4, 30, 2)
    box = [x0, y0, x0 + rng.uniform(14, _CANVAS - 4 - x0), y0 + rng.uniform(14, _CANVAS - 4 - y0)]
    if kind == 0:
        draw.rectangle(box, outline=255, fill=fill, width=width)
    elif kind == 1:
        draw.ellipse(box, outline=255, fill=fill, width=width)
    else:
        corners = (3, 5, 6)[kind - 2]
        star = kind == 3 and rng.random() < 0.5
        count = corners * (2 if star else 1)
        centre, radius, turn = rng.uniform(24, 40, 2), rng.uniform(14, 27), rng.uniform(0, 1)
        points = [(centre[0] + radius * (0.45 if star and i % 2 else 1) * np.cos(2 * np.pi * i / count + turn),
                   centre[1] + radius * (0.45 if star and i % 2 else 1) * np.sin(2 * np.pi * i / count + turn))
                  for i in range(count)]
        draw.polygon(points, outline=255, fill=fill, width=width)
    return np.asarray(image)


def _blob(rng: np.random.Generator) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.normal(size=(32, 32)), rng.uniform(3, 7))
    yy, xx = np.mgrid[0:32, 0:32]
    values = noise / (noise.std() + 1e-9) + 2.5 * np.exp(-(((yy - 15.5) / 11) ** 2 + ((xx - 15.5) / 11) ** 2))
    mask = values > np.percentile(values, rng.uniform(60, 85))
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum_labels(mask, labels, np.arange(1, count + 1))))
    out = mask * rng.uniform(120, 255)
    if rng.random() < 0.5:  # shaded, like a photo of an object
        out = out * np.clip(0.6 + 2.0 * ndimage.gaussian_filter(rng.normal(size=(32, 32)), 2), 0.2, 1.0)
    big = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).resize((_CANVAS, _CANVAS), Image.Resampling.BILINEAR)
    return np.asarray(big)


def _texture(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
        values = (np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * freq) > 0) * 255.0
    elif kind == 1:
        step = int(rng.integers(3, 13))
        values = (((xx // step) + (yy // step)) % 2) * 255.0
    elif kind == 2:
        values = np.clip(ndimage.gaussian_filter(rng.normal(size=(_CANVAS, _CANVAS)), rng.uniform(0.5, 1.5)) * 400 + 128, 0, 255)
    else:
        values = rng.uniform(0, 255, (_CANVAS, _CANVAS))
    mask = np.zeros((_CANVAS, _CANVAS), np.float32)
    (r0, c0), (r1, c1) = rng.integers(3, 20, 2), rng.integers(44, 61, 2)
    mask[r0:r1, c0:c1] = 1
    return (values * mask).astype(np.uint8)


_GENERATORS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "letter": _letter, "scribble": _scribble, "strokes": _strokes, "shape": _shape, "blob": _blob,
    "texture": _texture,
}


def synthetic_image(family: str, rng: np.random.Generator) -> np.ndarray:
    """One synthetic non-digit picture: uint8 (64, 64), bright on black.

    Args:
        family: one of `FAMILIES`.
        rng: the randomness.

    Raises:
        ValueError: an unknown family.
    """
    if family not in _GENERATORS:
        raise ValueError(f"Unknown family {family!r}; expected one of {FAMILIES}.")
    return _GENERATORS[family](rng)


def synthetic_non_digits(count: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic non-digits as model inputs: `count` pictures, the families in turn, each given twice.

    Once preprocessed exactly as the read path does (`preprocess.to_mnist`: cropped, fitted into
    20x20, strokes normalized, centred; skipped when it finds no ink) and once as the whole
    picture shrunk to 28x28 (a raw model input).

    Args:
        count: how many pictures to make.
        seed: seeds the generator; the same seed gives the same images.

    Returns:
        (x, families): float32 (M, 28, 28) in [0, 1], M <= 2 * count, and str (M,) family names.
    """
    from core.reading import preprocess

    rng = np.random.default_rng(seed)
    images, families = [], []
    for i in range(int(count)):
        family = FAMILIES[i % len(FAMILIES)]
        picture = synthetic_image(family, rng)
        try:
            images.append(preprocess.to_mnist(picture))
            families.append(family)
        except preprocess.NoDigitError:
            pass
        shrunk = Image.fromarray(picture).resize((28, 28), Image.Resampling.BOX)
        images.append(np.asarray(shrunk, np.float32) / np.float32(255.0))
        families.append(family)
    if not images:
        return np.zeros((0, 28, 28), np.float32), np.zeros((0,), str)
    return np.stack(images).astype(np.float32), np.asarray(families)


