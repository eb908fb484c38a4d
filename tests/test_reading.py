"""Reading digits it was never tuned on: issue 15's low-resolution table, 200 digits a row.

Each row is MNIST test digits (seed 7) reduced to NxN pixels, scaled up, optionally blurred and
pasted dark on a 112x112 white page, read as PNG bytes by the shipped model through
`Predictor.read` (the path of ``python -m core predict``). The full table, with the minimal
recipe beside it, is `bench/reading_accuracy.py`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers_images import as_lowres_page, mnist_sample

# Issue 15's goals (percent); the floors are the goals less ~1.5 standard errors at n = 200
# (1.8 pt at 93%, 0.7 pt at 99%), and at most 2% of the digits may be flagged "not a digit"
# (goal 0.5%; measured 0-1% on 500 a row).
GOALS = {"8px": 93.0, "8px+blur": 90.0, "12px": 99.0, "12px+blur": 98.0, "16px+blur": 99.3, "28px+blur": 99.6}
MARGIN = {"8px": 2.5, "8px+blur": 3.0, "12px": 1.0, "12px+blur": 1.5, "16px+blur": 1.3, "28px+blur": 1.1}
MAX_FLAGGED = 2.0
N = 200


@pytest.fixture(scope="module")
def shipped():
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    return Predictor.load("default-cnn", ModelStore(Path(__file__).resolve().parent.parent / "models"))


@pytest.mark.parametrize("row", list(GOALS))
def test_low_resolution_digits_are_read(shipped, row):
    pixels, blur = int(row.split("px")[0]), row.endswith("+blur")
    digits, labels = mnist_sample(N, seed=7)
    answers = [shipped.read(as_lowres_page(d, pixels, blur)) for d in digits]
    accuracy = 100.0 * np.mean([a.digit == y for a, y in zip(answers, labels)])
    flagged = 100.0 * np.mean([a.digit is not None and not a.is_digit for a in answers])
    print(f"\n{row}: {accuracy:.1f}% read right, {flagged:.1f}% flagged not a digit")
    assert accuracy >= GOALS[row] - MARGIN[row]
    assert flagged <= MAX_FLAGGED
