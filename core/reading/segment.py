"""Read several digits written side by side in one image ("2026" on a sheet of paper).

    source --preprocess.to_ink--> ink map --segment--> glyphs --preprocess.digit_input--> (K, 28, 28)
        --one batched model call--> digits, left to right

Boxes are reported in the pixel coordinates of the image as supplied (upright, before any
downscaling `preprocess.to_ink` applies to large images), as ``(x, y, width, height)`` with
x = column and y = row.

No Streamlit; TensorFlow only through the ``Predictor`` passed in.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from core.reading import preprocess

Box = tuple[int, int, int, int]

NO_DIGIT_MESSAGE = ("no digit found: no strokes stand out from the background (a blank page, or an even "
                    "texture such as noise). Write or draw some digits.")
# EXIF orientations 5-8 turn the picture a quarter: the upright width is the stored height.
_QUARTER_TURNS = (5, 6, 7, 8)
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DigitReading:
    """One digit of a number.

    Attributes:
        digit: 0..9.
        confidence: probability of ``digit`` in [0, 1].
        box: ``(x, y, width, height)`` of the digit's ink in the original image's pixels.
        probabilities: float32 (10,) summing to 1.
        image: float32 (28, 28) in [0, 1], the input the model saw.
        is_digit: False when the "not a digit" detector flags this glyph (see `core.serving.novelty`).
    """

    digit: int
    confidence: float
    box: Box
    probabilities: np.ndarray
    image: np.ndarray
    is_digit: bool = True

    def to_json(self) -> dict:
        return {"digit": self.digit, "confidence": round(float(self.confidence), 6),
                "box": [int(v) for v in self.box], "is_digit": bool(self.is_digit)}


@dataclass(frozen=True)
class NumberReading:
    """All the digits found in an image, left to right.

    Attributes:
        number: the digits as a string ("2026"); "" when none was found.
        digits: one `DigitReading` per digit, left to right.
        message: why nothing was read (e.g. "no digit found: ..."), else "".
    """

    number: str
    digits: list[DigitReading] = field(default_factory=list)
    message: str = ""

    @property
    def is_digit(self) -> bool:
        """True when digits were found and none of them was flagged as "not a digit"."""
        return bool(self.digits) and all(d.is_digit for d in self.digits)

    def to_json(self) -> dict:
        out: dict = {"number": self.number, "digits": [d.to_json() for d in self.digits],
                     "is_digit": self.is_digit}
        if self.message:
            out["message"] = self.message
        return out


def source_size(source: object) -> tuple[int, int] | None:
    """The upright ``(width, height)`` of an image source, in Pillow order, without decoding pixels.

    Args:
        source: encoded bytes, a PIL image, or a numpy array ``(rows, cols[, channels])``.

    Returns:
        ``(width, height)`` as `preprocess.to_ink` sees the image before any downscaling
        (EXIF quarter turns applied for bytes), or None when it cannot be told.
    """
    if isinstance(source, Image.Image):
        return source.size
    if isinstance(source, np.ndarray):
        return (int(source.shape[1]), int(source.shape[0])) if source.ndim >= 2 else None
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(source))) as image:
                width, height = image.size
                try:
                    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
                except Exception:  # broken EXIF: decode_image leaves such images as stored
                    orientation = 1
        except Exception:
            return None
        return (height, width) if orientation in _QUARTER_TURNS else (width, height)
    return None


def map_box(box: Box, ink_shape: tuple[int, int], size: tuple[int, int] | None) -> Box:
    """Map a box from ink-map pixels back to the original image's pixels.

    Args:
        box: ``(x, y, width, height)`` in the ink map.
        ink_shape: the ink map's ``(rows, cols)``.
        size: the original image's ``(width, height)``; None or equal to the map's size: unchanged.

    Returns:
        ``(x, y, width, height)`` in original pixels, covering the ink's pixels there and clipped
        to the image.
    """
    rows, cols = ink_shape
    if size is None or (size[0] == cols and size[1] == rows) or rows == 0 or cols == 0:
        return tuple(int(v) for v in box)  # type: ignore[return-value]
    width, height = size
    sx, sy = width / cols, height / rows
    x, y, w, h = box
    x0, y0 = int(math.floor(x * sx)), int(math.floor(y * sy))
    x1 = min(width, int(math.ceil((x + w) * sx)))
    y1 = min(height, int(math.ceil((y + h) * sy)))
    return (x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def read_number(predictor, source: object) -> NumberReading:
    """Read all the digits in an image, left to right, with one batched model call.

    Args:
        predictor: a `core.serving.predict.Predictor`.
        source: the bytes of an image file, a PIL image, or a numpy array as accepted by
            `preprocess.to_ink` (e.g. the drawing canvas' (H, W, 4) uint8 RGBA array).

    Returns:
        `NumberReading`; with ``number=""``, no digits and a "no digit found" message when the
        image holds no ink.

    Raises:
        preprocess.ImageReadError: bytes that cannot be read as an image.
        ValueError: an array of unsupported shape, dtype or value range.
    """
    ink = preprocess.to_ink(source)
    min_mass = max(preprocess.MIN_INK_MASS, preprocess.MIN_INK_FRACTION * ink.size)
    if ink.size == 0 or float(ink.sum(dtype=np.float64)) < min_mass:
        return NumberReading("", [], NO_DIGIT_MESSAGE)
    layout = _Layout(ink)
    if not layout.majors:
        return NumberReading("", [], NO_DIGIT_MESSAGE)
    # Every glyph any candidate reading needs, classified in one batched call.
    readings = layout.readings()
    keys = list(dict.fromkeys(key for reading in readings for key in reading.keys))
    images = np.stack([layout.glyph_image(key) for key in keys])
    predictions = dict(zip(keys, predictor.predict_inputs(images)))
    best = max(readings, key=lambda reading: layout.score(reading, predictions)).keys
    size = source_size(source)
    digits = []
    for key in sorted(best, key=lambda k: layout.center(k)):
        p = predictions[key]
        box = map_box(layout.box(key), ink.shape, size)
        digits.append(DigitReading(p.digit, p.confidence, box, p.probabilities, p.image, p.is_digit))
    return NumberReading("".join(str(d.digit) for d in digits), digits, "")


def segment(ink: np.ndarray) -> list[Box]:
    """Find the digits written side by side on one line of an ink map, without a model.

    The grouping `read_number` starts from (each small piece with its nearest digit); where a
    small piece could belong to either of two digits, `read_number` also tries the other one
    and keeps the reading the model is surer of.

    Args:
        ink: float32 (rows, cols) ink map in [0, 1] (from `preprocess.to_ink`).

    Returns:
        ``(x, y, width, height)`` boxes tight around each digit's ink (pixels above
        `SEGMENT_THRESHOLD`) in the map's pixels, left to right; empty when there is no ink.

    Raises:
        ValueError: `ink` is not a 2-D numeric array.
    """
    layout = _Layout(ink)
    if not layout.majors:
        return []
    default = layout.readings()[0].keys
    return [layout.box(key) for key in sorted(default, key=lambda k: layout.center(k))]


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------

# Pieces of ink are grouped by where they sit on the line of digits (no dilation, which would
# join digits written a few pixels apart; fragments of a faint stroke stay with their digit).
SEGMENT_THRESHOLD = preprocess.CROP_THRESHOLD  # ink above this is in a piece (as in a crop box)
MAJOR_HEIGHT = 0.45  # a piece at least this share of the line height can be a digit on its own
X_OVERLAP = 0.5  # large pieces overlapping this much in x (of the narrower) may be one digit...
SAME_ROWS = 0.5  # ...when they share at most this much of the shorter one's rows (stacked parts)
SIMILAR_HEIGHT = 0.85  # ...or the shorter is at most this share of the taller (the strokes of a 4)
CHAIN_REACH = 0.06  # small pieces this close (in line heights) are one dotted stroke
ATTACH_REACH = 0.35  # a small piece joins a digit at most this many line heights away
AMBIGUOUS = 2.0  # a small piece about as near (within this factor) to two digits is ambiguous
ALONE_HEIGHT = 0.25  # a small piece this tall (of the line)...
ALONE_MASS = 0.25  # ...with this share of a typical digit's ink may be a small digit of its own
ALONE_PENALTY = math.log(0.3)  # log-prior against reading a small piece as a digit of its own
SPECK_SHARE = 0.06  # a small piece far from any digit with less ink than this share is dropped
WIDE_RATIO = 1.25  # a digit this much wider than tall is two touching digits...
WIDE_LINE = 1.0  # ...and than this share of the line height
MAX_AMBIGUOUS = 4  # at most this many small pieces get a choice of digit...
MAX_READINGS_LOG2 = 8  # ...and choices stop at about 2**8 readings
JOIN_GAP = 0.12  # two digit candidates this close (in line heights)...
JOIN_WIDTH = 1.1  # ...and together at most this wide (in line heights) may be one digit
BRIDGE = 0.3  # a small piece under this share of two digits' widths may join them
JOIN_PENALTY = math.log(0.5)  # log-prior against joining digit candidates
NOT_DIGIT_PENALTY = math.log(0.05)  # a glyph the "not a digit" detector flags is unlikely
OWNER_REACH = 2  # faint ink up to this many pixels from a digit's strokes belongs to it

# A part of a glyph: the pixels of connected component `label` in columns [col0, col1).
Part = tuple[int, int, int]
GlyphKey = tuple[Part, ...]


@dataclass
class _Piece:
    """Connected pieces of ink taken together: their box (above the threshold) and ink mass."""

    x0: int
    x1: int
    y0: int
    y1: int
    mass: float
    parts: list[Part]

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def merged(self, other: "_Piece") -> "_Piece":
        return _Piece(min(self.x0, other.x0), max(self.x1, other.x1), min(self.y0, other.y0),
                      max(self.y1, other.y1), self.mass + other.mass, self.parts + other.parts)


def _merge_until_stable(pieces: list[_Piece], same, *, by_x: bool = False) -> list[_Piece]:
    """Merge the first pair of pieces for which ``same(a, b)`` holds, again and again until no pair
    does. With ``by_x`` the pieces are kept sorted by left edge and only pairs whose columns
    overlap are tried."""
    merged = True
    while merged:
        merged = False
        if by_x:
            pieces.sort(key=lambda p: p.x0)
        for i, a in enumerate(pieces):
            for j in range(i + 1, len(pieces)):
                b = pieces[j]
                if by_x and b.x0 >= a.x1:
                    break
                if same(a, b):
                    pieces[i] = a.merged(b)
                    del pieces[j]
                    merged = True
                    break
            if merged:
                break
    return pieces


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return min(a1, b1) - max(a0, b0)


def _gap(a: _Piece, b: _Piece) -> int:
    """Horizontal distance between two pieces' boxes (0 when they overlap in x)."""
    return max(0, max(a.x0, b.x0) - min(a.x1, b.x1))


def _one_digit(a: _Piece, b: _Piece) -> bool:
    """Two large pieces that overlap in x are one digit when stacked or of unlike heights."""
    if _overlap(a.x0, a.x1, b.x0, b.x1) < X_OVERLAP * min(a.width, b.width):
        return False
    shorter, taller = sorted((a.height, b.height))
    stacked = _overlap(a.y0, a.y1, b.y0, b.y1) <= SAME_ROWS * shorter
    return stacked or shorter <= SIMILAR_HEIGHT * taller


class _Layout:
    """The pieces of ink on a line of digits and the ways of grouping them into digits.

    ``majors`` are digit candidates (large pieces, joined where they are parts of one digit and
    split where touching digits make one piece); ``fixed`` maps each small piece's chain to the
    major it surely belongs to; ``choices`` lists, per ambiguous chain, the majors it may belong
    to (-1: a digit of its own), nearest first.
    """

    def __init__(self, ink: np.ndarray):
        ink = np.asarray(ink)
        if ink.ndim != 2 or ink.dtype.kind not in "biuf":
            raise ValueError(f"Expected ink as a 2-D (rows, cols) array of numbers, got {ink.dtype} {ink.shape}.")
        self.ink = ink.astype(np.float32, copy=False)
        self.labels, count = ndimage.label(self.ink > SEGMENT_THRESHOLD, structure=np.ones((3, 3), bool))
        self.majors: list[_Piece] = []
        self.chains: list[_Piece] = []
        self.fixed: dict[int, int] = {}
        self.choices: dict[int, list[int]] = {}
        self.joins: list[tuple[int, int]] = []
        self._boxes: dict[GlyphKey, Box] = {}
        if count == 0:
            return
        masses = ndimage.sum_labels(self.ink, self.labels, index=np.arange(1, count + 1))
        self.slices = ndimage.find_objects(self.labels)
        pieces = [
            _Piece(found[1].start, found[1].stop, found[0].start, found[0].stop, float(mass),
                   [(label, found[1].start, found[1].stop)])
            for label, (found, mass) in enumerate(zip(self.slices, masses), start=1)
            if found is not None
        ]
        heaviest = max(p.mass for p in pieces)
        self.line = line = max(p.height for p in pieces if p.mass >= 0.15 * heaviest)
        majors = self._join([p for p in pieces if p.height >= MAJOR_HEIGHT * line])
        self.majors = [part for m in majors for part in self._split_wide(m)]
        self.chains = self._chain([p for p in pieces if p.height < MAJOR_HEIGHT * line])
        typical = float(np.median([m.mass for m in self.majors]))
        ambiguous, lonely = [], []
        for c, chain in enumerate(self.chains):
            options = self._options(chain, typical, self.majors)
            if options == [-1]:
                lonely.append(c)
            elif len(options) == 1:
                self.fixed[c] = options[0]
            else:
                ambiguous.append((chain.mass, c, options))
        # A piece out of reach of every digit may still reach a piece that surely belongs to one
        # (the far end of a stroke broken twice): measure again from the digits grown by those.
        grown = list(self.majors)
        for c, target in self.fixed.items():
            grown[target] = grown[target].merged(self.chains[c])
        for c in lonely:
            options = self._options(self.chains[c], typical, grown)
            if options != [-1]:
                self.fixed[c] = options[0]
            elif self.chains[c].mass >= SPECK_SHARE * heaviest:
                self.fixed[c] = -1  # a small digit of its own; lighter ones are specks, dropped
        ambiguous.sort(reverse=True)
        for _, c, options in ambiguous[:MAX_AMBIGUOUS]:
            self.choices[c] = options
        for _, c, options in ambiguous[MAX_AMBIGUOUS:]:
            self.fixed[c] = options[0]
        self.joins = self._join_candidates()[: max(0, MAX_READINGS_LOG2 - len(self.choices) * 2)]

    # --- grouping -----------------------------------------------------------------------------

    @staticmethod
    def _join(majors: list[_Piece]) -> list[_Piece]:
        return _merge_until_stable(majors, _one_digit, by_x=True)

    def _join_candidates(self) -> list[tuple[int, int]]:
        """Neighbouring digit candidates that may be the strokes of one digit: close, of unlike
        heights and together no wider than a digit (a 4 whose bar stops short of its stem), or
        bridged by a small piece lying under both (a 4 whose bar was broken off its arms)."""
        order = sorted(range(len(self.majors)), key=lambda i: self.majors[i].x0)
        pairs = []
        for a, b in zip(order, order[1:]):
            first, second = self.majors[a], self.majors[b]
            shorter, taller = sorted((first.height, second.height))
            width = max(first.x1, second.x1) - min(first.x0, second.x0)
            close = (_gap(first, second) <= JOIN_GAP * self.line and shorter <= SIMILAR_HEIGHT * taller
                     and width <= JOIN_WIDTH * self.line)
            bridged = any(
                _overlap(c.x0, c.x1, first.x0, first.x1) >= BRIDGE * first.width
                and _overlap(c.x0, c.x1, second.x0, second.x1) >= BRIDGE * second.width
                for c in self.chains
            )
            if close or bridged:
                pairs.append((a, b))
        return pairs

    def _chain(self, minor: list[_Piece]) -> list[_Piece]:
        """Join small pieces lying within `CHAIN_REACH` line heights of each other (a dotted stroke)."""
        reach = max(2, int(round(CHAIN_REACH * self.line)))

        def near(a: _Piece, b: _Piece) -> bool:
            return (_gap(a, b) <= reach and max(0, max(a.y0, b.y0) - min(a.y1, b.y1)) <= reach
                    and self._distance(a, b, reach) <= reach)

        return _merge_until_stable(minor, near)

    def _options(self, chain: _Piece, typical: float, majors: list[_Piece]) -> list[int]:
        """Digits (indices into `majors`) a chain may belong to, likeliest first; -1 stands for
        "a digit of its own"."""
        overlaps = [_overlap(chain.x0, chain.x1, m.x0, m.x1) for m in majors]
        best = int(np.argmax(overlaps))
        if overlaps[best] >= 0.5 * chain.width:
            return [best]
        reach = ATTACH_REACH * self.line
        near = sorted(
            (d, i) for i, m in enumerate(majors)
            if _gap(chain, m) <= reach and (d := self._distance(chain, m, reach)) <= reach
        )
        options = [i for d, i in near if d <= AMBIGUOUS * near[0][0] + 2][:2]
        could_be_digit = chain.height >= ALONE_HEIGHT * self.line and chain.mass >= ALONE_MASS * typical
        if not options or could_be_digit:
            options.append(-1)
        return options

    def _member(self, parts: list[Part] | GlyphKey, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Boolean (y1 - y0, x1 - x0) window: which pixels belong to `parts`."""
        window = self.labels[y0:y1, x0:x1]
        member = np.zeros(window.shape, bool)
        for label, c0, c1 in parts:
            lo, hi = max(c0, x0) - x0, min(c1, x1) - x0
            if hi > lo:
                member[:, lo:hi] |= window[:, lo:hi] == label
        return member

    def _distance(self, a: _Piece, b: _Piece, limit: float) -> float:
        """Smallest pixel distance between the ink of two pieces (inf when out of reach)."""
        pad = int(math.ceil(limit)) + 1
        rows, cols = self.labels.shape
        x0, y0 = max(0, min(a.x0, b.x0) - pad), max(0, min(a.y0, b.y0) - pad)
        x1, y1 = min(cols, max(a.x1, b.x1) + pad), min(rows, max(a.y1, b.y1) + pad)
        in_a, in_b = self._member(a.parts, y0, y1, x0, x1), self._member(b.parts, y0, y1, x0, x1)
        if not in_a.any() or not in_b.any():
            return math.inf
        return float(ndimage.distance_transform_edt(~in_a)[in_b].min())

    def _split_wide(self, piece: _Piece) -> list[_Piece]:
        """The piece, or its parts where it is much wider than tall (touching digits)."""
        member = self._member(piece.parts, piece.y0, piece.y1, piece.x0, piece.x1)
        local = np.where(member, self.ink[piece.y0 : piece.y1, piece.x0 : piece.x1], np.float32(0.0))
        boxes = _split_box(local, piece.x0, piece.y0, WIDE_LINE * self.line, depth=3)
        if len(boxes) <= 1:
            return [piece]
        out = []
        for x, y, w, h in boxes:
            parts = [(label, max(c0, x), min(c1, x + w)) for label, c0, c1 in piece.parts
                     if min(c1, x + w) > max(c0, x)]
            mass = float(local[:, x - piece.x0 : x - piece.x0 + w].sum())
            out.append(_Piece(x, x + w, y, y + h, mass, parts))
        return out

    # --- readings -------------------------------------------------------------------------------

    def readings(self) -> list[_Reading]:
        """Every way of assigning the ambiguous chains and of joining the candidate pairs of
        digits; the first is the default (nearest digit, nothing joined)."""
        ambiguous = sorted(self.choices)
        options = [self.choices[c] for c in ambiguous] + [[False, True]] * len(self.joins)
        readings = []
        for pick in _product(options):
            target = dict(self.fixed)
            target.update(zip(ambiguous, pick[: len(ambiguous)]))
            glyphs = [list(m.parts) for m in self.majors]
            alone = []
            for c, t in target.items():
                if t == -1:
                    alone.append(list(self.chains[c].parts))
                else:
                    glyphs[t] = glyphs[t] + self.chains[c].parts
            root = list(range(len(self.majors)))
            joined = pick[len(ambiguous):]
            for (a, b), join in zip(self.joins, joined):
                if join:
                    root[_find(root, b)] = _find(root, a)
            groups: dict[int, list[Part]] = {}
            for i, parts in enumerate(glyphs):
                groups.setdefault(_find(root, i), []).extend(parts)
            keys = [tuple(sorted(g)) for g in list(groups.values()) + alone]
            readings.append(_Reading(keys, len(alone), sum(joined)))
        return readings

    @staticmethod
    def score(reading: "_Reading", predictions: dict) -> float:
        """Log-likelihood of a reading: the model's confidence in each glyph, priors against
        small pieces read as digits and against joining, and a penalty per glyph the "not a
        digit" detector flags."""
        total = 0.0
        for key in reading.keys:
            p = predictions[key]
            total += math.log(max(float(p.confidence), 1e-9))
            if not getattr(p, "is_digit", True):
                total += NOT_DIGIT_PENALTY
        return total + ALONE_PENALTY * reading.alone + JOIN_PENALTY * reading.joined

    def box(self, key: GlyphKey) -> Box:
        """Tight ``(x, y, width, height)`` box of a glyph's pixels above the threshold."""
        if key not in self._boxes:
            slices = self.slices
            x0 = min(max(c0, slices[l - 1][1].start) for l, c0, _ in key)
            x1 = max(min(c1, slices[l - 1][1].stop) for l, _, c1 in key)
            y0 = min(slices[l - 1][0].start for l, _, _ in key)
            y1 = max(slices[l - 1][0].stop for l, _, _ in key)
            member = self._member(key, y0, y1, x0, x1)
            rows, cols = np.flatnonzero(member.any(axis=1)), np.flatnonzero(member.any(axis=0))
            self._boxes[key] = (x0 + int(cols[0]), y0 + int(rows[0]),
                                int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        return self._boxes[key]

    def center(self, key: GlyphKey) -> float:
        x, _, w, _ = self.box(key)
        return x + w / 2

    def glyph_image(self, key: GlyphKey) -> np.ndarray:
        """float32 (28, 28) MNIST-style input of one glyph, other glyphs' ink masked out."""
        x, y, w, h = self.box(key)
        rows, cols = self.ink.shape
        # Faint edges (below the threshold, so in no component) just outside the strokes belong too.
        x0, y0 = max(0, x - OWNER_REACH), max(0, y - OWNER_REACH)
        x1, y1 = min(cols, x + w + OWNER_REACH), min(rows, y + h + OWNER_REACH)
        core = self._member(key, y0, y1, x0, x1)
        grown = ndimage.binary_dilation(core, iterations=OWNER_REACH) & (self.labels[y0:y1, x0:x1] == 0)
        local = np.where(core | grown, self.ink[y0:y1, x0:x1], np.float32(0.0))
        return preprocess.digit_input(local, min_mass=0.0)


@dataclass(frozen=True)
class _Reading:
    """One way of grouping the pieces: its glyphs, how many small pieces stand alone, joins made."""

    keys: list[GlyphKey]
    alone: int
    joined: int


def _find(root: list[int], i: int) -> int:
    while root[i] != i:
        i = root[i]
    return i


def _product(options: list[list]) -> list[tuple]:
    """All picks, one option per list, the all-first pick first."""
    picks: list[tuple[int, ...]] = [()]
    for choice in options:
        picks = [p + (o,) for p in picks for o in choice]
    return picks


def _split_box(local: np.ndarray, x0: int, y0: int, line: float, depth: int) -> list[Box]:
    """Tight box(es) of the ink in `local` (placed at x0, y0), split at the thinnest column where
    much wider than both its own height and `line` (a short, wide digit like a flat 2 stays whole)."""
    hit = local > SEGMENT_THRESHOLD
    rows_hit, cols_hit = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    if rows_hit.size == 0:
        return []
    top, bottom = int(rows_hit[0]), int(rows_hit[-1]) + 1
    left, right = int(cols_hit[0]), int(cols_hit[-1]) + 1
    width, height = right - left, bottom - top
    if depth > 0 and width > WIDE_RATIO * max(height, line) and width >= 4:
        profile = local[top:bottom, left:right].sum(axis=0)
        lo, hi = int(width * 0.3), int(math.ceil(width * 0.7))
        cut = left + lo + int(np.argmin(profile[lo:hi]))
        return (_split_box(local[:, :cut], x0, y0, line, depth - 1)
                + _split_box(local[:, cut:], x0 + cut, y0, line, depth - 1))
    return [(x0 + left, y0 + top, width, height)]
