"""Reading accuracy, not just geometry: MNIST test digits re-rendered as people supply them
(photos of dark ink on uneven paper, small and off-centre in large pictures, thick and thin strokes,
EXIF-rotated JPEGs, canvas drawings) are read through the full path by the shipped model."""

import numpy as np
import pytest

from core import config
from core.serving.predict import Predictor
from core.storage.store import ModelStore
from tests.helpers_images import STYLES, mnist_sample

pytestmark = pytest.mark.slow
PER_STYLE = 60  # 7 styles x 60 = 420 images


@pytest.fixture(scope="module")
def predictor():
    store = ModelStore(config.ROOT / "models")
    return Predictor.load(config.DEFAULT_MODEL_NAME, store)


@pytest.fixture(scope="module")
def results(predictor):
    digits, labels = mnist_sample(PER_STYLE * len(STYLES), seed=2026)
    rng = np.random.default_rng(7)
    out = {}
    for s, (name, render) in enumerate(STYLES.items()):
        chunk = slice(s * PER_STYLE, (s + 1) * PER_STYLE)
        sources = [render(d, rng) for d in digits[chunk]]
        preds = predictor.read_many(sources)
        out[name] = [(p.digit if hasattr(p, "digit") else None, int(y)) for p, y in zip(preds, labels[chunk])]
    return out


def test_full_path_reads_at_least_97_percent_overall(results):
    pairs = [pair for rows in results.values() for pair in rows]
    accuracy = np.mean([d == y for d, y in pairs])
    per_style = {k: round(float(np.mean([d == y for d, y in v])), 3) for k, v in results.items()}
    assert len(pairs) >= 400
    assert accuracy >= 0.97, per_style


@pytest.mark.parametrize("style", list(STYLES))
def test_each_style_reads_at_least_93_percent(results, style):
    rows = results[style]
    assert np.mean([d == y for d, y in rows]) >= 0.93, rows
