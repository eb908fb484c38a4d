"""Reading accuracy by input style: the project's reading path against a minimal MNIST recipe.

Both columns use the SAME served model; only the way an image becomes the 28x28 input differs.
The minimal recipe (`minimal_recipe`, about 20 lines) is the reference every row must match:
grayscale; ink bright; subtract the border's median and scale to the ink's peak; stretch the levels
so a soft stroke reaches full ink (``clip((v - 0.1) / 0.5, 0, 1)``); crop to the pixels above 0.2;
fit into 20x20 with LANCZOS keeping the aspect ratio; centre by mass in 28x28.

Rows are split BEFORE any tuning (held-out discipline):

- TUNING rows (MNIST test digits drawn with seed 1; one renderer per row): the rows that
  preprocessing and augmentation choices may be judged on.
- HELD-OUT rows (seed 7, other renderers and other parameters): checked only at the end. They
  include the low-resolution table of issue 15 exactly as it was specified there (500 digits,
  seed 7, NxN LANCZOS, up to 64x64 BICUBIC, optional GaussianBlur(2), pasted dark at (24, 24) on
  a 112x112 white page), MNIST via 112-px PNGs, and Fashion-MNIST via the same 112-px PNGs (the
  "not a digit" detector must flag those; it never sees Fashion-MNIST when it is fitted).

For every digit row the table gives accuracy (project, recipe, difference) and the share of real
digits the project flags "not a digit" (at most 0.5% is the goal). Then, read after the detector was chosen
and moving nothing, what flagging 90, 95 and 97% of Fashion-MNIST would cost: the share of each digit row
the detector's own score would flag at those thresholds (`tradeoff`). Ends with one JSON line.

    python bench/reading_accuracy.py [--model NAME] [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import common  # noqa: E402  (sets the path and TF log level)
import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402
from scipy import ndimage  # noqa: E402

from tests.helpers_images import (  # noqa: E402
    as_canvas, as_lowres_page, as_paper_photo_jpeg, as_small_off_center, as_stroke_width, as_upscaled_png, encode,
    mnist_sample, paper, place,
)

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
TUNING_SEED, HELD_OUT_SEED = 1, 7
# Goals from issue 15 (held-out low-resolution table): accuracy floors, in percent.
LOWRES_GOALS = {"8px": 93.0, "8px+blur": 90.0, "12px": 99.0, "12px+blur": 98.0, "16px+blur": 99.3,
                "28px+blur": 99.6}
MAX_FLAGGED_PCT = 0.5
MIN_FASHION_FLAGGED_PCT = 97.0


# --- the reference ---------------------------------------------------------------------------------

def minimal_recipe(source) -> np.ndarray | None:
    """The minimal MNIST-style recipe: an image (bytes or uint8 array) -> float32 (28, 28), or None."""
    image = Image.open(io.BytesIO(source)) if isinstance(source, bytes) else Image.fromarray(source)
    if image.mode in ("RGBA", "LA", "P"):
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    v = np.asarray(image.convert("L"), np.float32) / 255.0
    border = np.concatenate([v[0], v[-1], v[:, 0], v[:, -1]])
    if np.median(border) > 0.5:  # ink bright
        v, border = 1.0 - v, 1.0 - border
    v = v - np.median(border)
    if v.max() <= 0:
        return None
    v = np.clip((v / v.max() - 0.1) / 0.5, 0.0, 1.0)
    rows, cols = np.nonzero(v > 0.2)
    if rows.size == 0:
        return None
    crop = v[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = 20.0 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    fitted = np.clip(np.asarray(Image.fromarray(crop, "F").resize(size, Image.Resampling.LANCZOS)), 0, 1)
    out = np.zeros((28, 28), np.float32)
    top, left = (28 - fitted.shape[0]) // 2, (28 - fitted.shape[1]) // 2
    out[top:top + fitted.shape[0], left:left + fitted.shape[1]] = fitted
    cy, cx = ndimage.center_of_mass(out)
    return ndimage.shift(out, (round(14.0 - cy), round(14.0 - cx)), order=0, mode="constant")


# --- renderers -------------------------------------------------------------------------------------

def soft_grey(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """TUNING: a soft grey stroke (the MNIST digit upscaled as it is, not re-thresholded) on paper."""
    size = int(rng.integers(80, 140))
    cover = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32) / 255
    sheet = np.full((size + 60, size + 60), rng.uniform(225, 245), np.float32)
    return encode(place(sheet, np.clip(cover, 0, 1), 30, 30, rng.uniform(110, 160)), "PNG")


def pencil(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """HELD-OUT: a light, thin pencil line on grainy paper, as a JPEG (another renderer, other levels)."""
    size = int(rng.integers(60, 160))
    cover = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.LANCZOS), np.float32) / 255
    cover = np.clip(cover, 0, 1) ** rng.uniform(1.0, 2.0)  # thinner, softer edges
    if rng.random() < 0.5:
        cover = ndimage.grey_erosion(cover, size=(2, 2))
    rows, cols = size + int(rng.integers(30, 120)), size + int(rng.integers(30, 120))
    sheet = paper(rows, cols, rng, base=rng.uniform(215, 245), gradient=rng.uniform(0, 25), noise=rng.uniform(1, 4))
    top, left = int(rng.integers(5, rows - size - 5)), int(rng.integers(5, cols - size - 5))
    photo = place(sheet, cover, top, left, rng.uniform(120, 190))
    return encode(photo, "JPEG", quality=int(rng.integers(70, 95)))


def _styled(count: int, seed: int, render) -> tuple[list, np.ndarray]:
    digits, labels = mnist_sample(count, seed=seed)
    rng = np.random.default_rng(seed)
    return [render(d, rng) for d in digits], labels


def rows(quick: bool) -> list[tuple[str, str, list, np.ndarray | None]]:
    """(kind, name, sources, labels): kind "tuning" or "held-out"; labels None = not digits."""
    n, n_low = (100, 200) if quick else (300, 500)
    out = []
    for name, render in [
        ("canvas black", lambda d, rng: as_canvas(d, rng, transparent=False)),
        ("paper photo jpeg", as_paper_photo_jpeg),
        ("thin strokes", lambda d, rng: as_stroke_width(d, -2)),
        ("10px+blur1", lambda d, rng: _lowres_tuning(d)),
        ("soft grey", soft_grey),
    ]:
        out.append(("tuning", name, *_styled(n, TUNING_SEED, render)))
    digits, labels = mnist_sample(n_low, seed=HELD_OUT_SEED)
    for label in LOWRES_GOALS:
        pixels, blur = int(label.split("px")[0]), label.endswith("+blur")
        out.append(("held-out", label, [as_lowres_page(d, pixels, blur) for d in digits], labels))
    digits, labels = mnist_sample(n, seed=HELD_OUT_SEED)
    out.append(("held-out", "mnist 112px png", [as_upscaled_png(d) for d in digits], labels))
    for name, render in [
        ("canvas transparent", lambda d, rng: as_canvas(d, rng, transparent=True)),
        ("thick strokes", lambda d, rng: as_stroke_width(d, int(rng.integers(3, 6)))),
        ("small off-centre", lambda d, rng: as_small_off_center(d, rng, size=(900, 700))),
        ("pencil jpeg", pencil),
    ]:
        out.append(("held-out", name, *_styled(n, HELD_OUT_SEED, render)))
    if FASHION.is_file():
        with gzip.open(FASHION) as f:
            fashion = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        pick = np.random.default_rng(HELD_OUT_SEED).permutation(len(fashion))[:n]
        out.append(("held-out", "fashion 112px png", [as_upscaled_png(f) for f in fashion[pick]], None))
    return out


def _lowres_tuning(digit: np.ndarray) -> bytes:
    """TUNING low-res: 10x10, up to 48x48 BILINEAR, GaussianBlur(1), dark on a 96 page at (20, 20)."""
    small = Image.fromarray(digit).resize((10, 10), Image.Resampling.BOX)
    big = small.resize((48, 48), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(1))
    page = Image.new("L", (96, 96), 250)
    page.paste(Image.eval(big, lambda p: 250 - p), (20, 20))
    return encode(page, "PNG")


# --- measuring -------------------------------------------------------------------------------------

def project_read(predictor, sources: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(digits, is_digit, inputs) of the project's reading path: -1 / False where no digit was found;
    ``inputs`` the (M, 28, 28) images the model saw, for the M sources where one was found."""
    digits, flags, inputs = [], [], []
    for source in sources:
        p = predictor.read(source)
        digits.append(-1 if p.digit is None else p.digit)
        flags.append(bool(p.is_digit))
        if p.image is not None:
            inputs.append(p.image)
    return np.array(digits), np.array(flags), np.array(inputs, np.float32).reshape(-1, 28, 28)


def recipe_read(predictor, sources: list) -> np.ndarray:
    inputs = [minimal_recipe(s) for s in sources]
    ok = [i for i, x in enumerate(inputs) if x is not None]
    digits = np.full(len(sources), -1)
    if ok:
        probs = predictor.probabilities(np.stack([inputs[i] for i in ok]))
        digits[ok] = np.argmax(probs, axis=1)
    return digits


def tradeoff(predictor, fashion: np.ndarray, digits: dict[str, np.ndarray], targets=(90.0, 95.0, 97.0)) -> dict:
    """What flagging more Fashion would cost: for each target share of Fashion-MNIST flagged, the
    threshold on the detector's own score that reaches it, and the share of each digit row flagged at that
    threshold. A report of the held-out rows, read after the detector was chosen; it moves no threshold.

    Args:
        fashion: the (N, 28, 28) inputs the model saw for the Fashion row (`project_read`).
        digits: each digit row's inputs, by row name.
    """
    if predictor.detector is None or not len(fashion):
        return {}

    def scores(inputs: np.ndarray) -> np.ndarray:
        return predictor.detector.scores(predictor.runtime.run(inputs[..., None])[1])

    fashion_scores = scores(fashion)
    digit_scores = {name: scores(inputs) for name, inputs in digits.items()}
    out = {}
    for target in targets:
        threshold = np.quantile(fashion_scores, 1.0 - target / 100.0)
        flagged = {name: 100.0 * float(np.mean(s > threshold)) for name, s in digit_scores.items()}
        worst = max(flagged, key=flagged.get)
        median = float(np.median(list(flagged.values())))
        out[f"{target:g}"] = {"max_pct": flagged[worst], "median_pct": median, "worst_row": worst}
        common.say(f"Fashion flagged {target:4.1f}%: digits flagged {flagged[worst]:5.1f}% in the worst row "
                   f"({worst}), {median:.1f}% in the median row")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="stored model name (default: the active model)")
    parser.add_argument("--quick", action="store_true", help="100 digits a row (200 for low-res) instead of 300/500")
    args = parser.parse_args()
    from core.__main__ import _predictor

    predictor = _predictor(args.model)
    common.say(f"model: {predictor.name}")
    t0 = time.perf_counter()
    table, figures = [], {"model": predictor.name, "rows": {}}
    seen, fashion = {}, np.zeros((0, 28, 28), np.float32)  # the inputs the model saw, for `tradeoff`
    for kind, name, sources, labels in rows(args.quick):
        digits, flags, inputs = project_read(predictor, sources)
        if labels is None:
            fashion = inputs
            flagged = 100.0 * float(np.mean(~flags))
            table.append(f"{kind:9s} {name:20s} {'':>8s} {'':>8s} {'':>7s} {flagged:8.1f}  (goal >= {MIN_FASHION_FLAGGED_PCT})")
            figures["rows"][name] = {"kind": kind, "n": len(sources), "flagged_pct": flagged}
            continue
        seen[name] = inputs
        ours = 100.0 * float(np.mean(digits == labels))
        ref = 100.0 * float(np.mean(recipe_read(predictor, sources) == labels))
        flagged = 100.0 * float(np.mean(~flags & (digits >= 0)))
        goal = LOWRES_GOALS.get(name)
        note = f"  (goal >= {goal})" if goal else ""
        table.append(f"{kind:9s} {name:20s} {ours:8.1f} {ref:8.1f} {ours - ref:+7.1f} {flagged:8.1f}{note}")
        figures["rows"][name] = {"kind": kind, "n": len(sources), "project_pct": ours, "recipe_pct": ref,
                                 "flagged_pct": flagged}
        common.say(table[-1])
    common.say("")
    common.say(f"{'rows':9s} {'style':20s} {'project':>8s} {'recipe':>8s} {'diff':>7s} {'flagged%':>8s}")
    for line in table:
        common.say(line)
    common.say("")
    figures["fashion_tradeoff"] = tradeoff(predictor, fashion, seen)
    digit_rows = [r for r in figures["rows"].values() if "project_pct" in r]
    figures["worst_diff_vs_recipe"] = min(r["project_pct"] - r["recipe_pct"] for r in digit_rows)
    figures["max_flagged_pct"] = max(r["flagged_pct"] for r in digit_rows)
    figures["seconds"] = time.perf_counter() - t0
    common.emit_json(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
