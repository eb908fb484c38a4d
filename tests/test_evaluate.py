"""Evaluation on the MNIST test images: metrics on tiny arrays, on a small trained model, the figures,
and the Evaluate page (AppTest)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.report.evaluate import (
    Evaluation, confusion_heatmap, confusion_matrix, evaluate, evaluation_from_probabilities, per_class_bars,
    precision_recall_f1,
)
from tests.test_pages import run_fresh_interpreter

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "pages" / "4_Evaluate.py")
TIMEOUT = 120


# --- pure metrics on tiny arrays -----------------------------------------------------------------

def test_confusion_matrix_counts_rows_true_columns_predicted():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]))
    assert cm.shape == (10, 10) and cm.dtype == np.int64
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 1 and cm[2, 2] == 2 and cm[2, 0] == 1
    assert cm.sum() == 6


@pytest.mark.parametrize("y_true, y_pred, match", [
    ([0, 1], [0], "2 true labels but 1 predictions"),
    ([0, 10], [0, 1], r"true labels must be in 0\.\.9"),
    ([0, 1], [-1, 1], r"predictions must be in 0\.\.9"),
])
def test_confusion_matrix_rejects_bad_labels(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(np.array(y_true), np.array(y_pred))


def test_precision_recall_f1_by_hand():
    # digit 0: 2 images, both read as 0; digit 1: 2 images, one read as 0; digit 2 never appears or is predicted.
    cm = confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]))
    precision, recall, f1 = precision_recall_f1(cm)
    assert precision[:2] == pytest.approx([2 / 3, 1.0])
    assert recall[:2] == pytest.approx([1.0, 0.5])
    assert f1[:2] == pytest.approx([0.8, 2 / 3])
    assert precision[2] == recall[2] == f1[2] == 0.0  # no images, never predicted: 0, not NaN


def test_evaluation_from_probabilities_orders_mistakes_by_confidence():
    probs = np.full((4, 10), 0.0, np.float32)
    probs[0, 3] = 1.0   # true 3, right
    probs[1, 5] = 0.6   # true 3, read 5 at 60%
    probs[1, 3] = 0.4
    probs[2, 5] = 0.9   # true 3, read 5 at 90%
    probs[2, 3] = 0.1
    probs[3, 1] = 1.0   # true 7, read 1 at 100%
    ev = evaluation_from_probabilities(probs, np.array([3, 3, 3, 7]))
    assert ev.accuracy == pytest.approx(0.25)
    assert ev.mistakes.tolist() == [3, 2, 1]
    assert ev.misclassified(true=3) == [
        {"index": 2, "true": 3, "predicted": 5, "confidence": pytest.approx(0.9)},
        {"index": 1, "true": 3, "predicted": 5, "confidence": pytest.approx(0.6)},
    ]
    assert ev.misclassified(predicted=1) == [{"index": 3, "true": 7, "predicted": 1, "confidence": 1.0}]
    assert ev.misclassified(true=3, predicted=1) == []
    assert ev.top_confusions() == [(3, 5, 2), (7, 1, 1)]


# --- a small trained model -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def test_set():
    from core.data import cached_mnist

    mnist = cached_mnist()
    return mnist.x_test, mnist.y_test


@pytest.fixture(scope="module")
def small_eval(trained_store, test_set) -> Evaluation:
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    return evaluate(Predictor.load("test-mlp", ModelStore(trained_store)), *test_set)


def test_evaluate_small_model_is_consistent(small_eval, test_set, trained_store):
    from core.storage.store import ModelStore

    ev, (_, y) = small_eval, test_set
    n = len(y)
    assert ev.count == n == 10000
    assert ev.confusion.shape == (10, 10) and int(ev.confusion.sum()) == n
    assert np.trace(ev.confusion) / n == pytest.approx(ev.accuracy)
    assert ev.support.tolist() == np.bincount(y, minlength=10).tolist()
    # The same figure the store recorded when the model was trained (same images, same model).
    assert ev.accuracy == pytest.approx(ModelStore(trained_store).info("test-mlp").test_accuracy, abs=1e-4)
    assert 0.9 <= ev.accuracy < 1.0
    for values in (ev.precision, ev.recall, ev.f1):
        assert values.shape == (10,) and np.all((values >= 0) & (values <= 1))
    assert ev.recall == pytest.approx(np.diag(ev.confusion) / ev.support)

    wrong = ev.misclassified()
    assert len(wrong) == len(ev.mistakes) == n - np.trace(ev.confusion)
    assert all(m["true"] != m["predicted"] and m["true"] == y[m["index"]] for m in wrong)
    assert all(0.0 < m["confidence"] <= 1.0 for m in wrong)
    confidences = [m["confidence"] for m in wrong]
    assert confidences == sorted(confidences, reverse=True)
    for t, p, count in ev.top_confusions(3):
        assert len(ev.misclassified(true=t, predicted=p)) == count == ev.confusion[t, p]


def test_evaluate_accepts_float_inputs_and_matches_the_keras_model(small_eval, test_set, trained_store):
    from core.data import to_model_input
    from core.learning.persist import load_model
    from core.learning.train import probabilities
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    x, y = test_set
    store = ModelStore(trained_store)
    predictor = Predictor.load("test-mlp", store)
    ev = evaluate(predictor, to_model_input(x[:500]), y[:500])
    assert ev.count == 500
    assert ev.predicted.tolist() == small_eval.predicted[:500].tolist()
    # The exported file reads as the Keras model it was exported from.
    keras_probs = probabilities(load_model(store, "test-mlp"), to_model_input(x[:500]))
    assert ev.predicted.tolist() == keras_probs.argmax(axis=1).tolist()
    with pytest.raises(ValueError, match="500 images but 499 labels"):
        evaluate(predictor, x[:500], y[:499])


def test_evaluate_shows_calibrated_confidences(test_set, trained_store):
    """The mistakes gallery's confidences match the reading pages': same temperature, same digits."""
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    x, y = test_set
    store = ModelStore(trained_store)
    loaded = Predictor.load("test-mlp", store)
    raw = evaluate(Predictor(loaded.runtime), x[:500], y[:500])
    sharp = Predictor(loaded.runtime, temperature=0.5)
    ev = evaluate(sharp, x[:500], y[:500])
    assert ev.predicted.tolist() == raw.predicted.tolist() and ev.accuracy == raw.accuracy
    assert (ev.confidence >= raw.confidence - 1e-6).all() and (ev.confidence > raw.confidence).any()
    shown = [p.confidence for p in sharp.predict_inputs(x[:20].astype(np.float32) / 255)]
    np.testing.assert_allclose(ev.confidence[:20], shown, rtol=1e-5)


# --- figures ---------------------------------------------------------------------------------------

def test_confusion_heatmap_labels_every_cell_with_its_count(small_eval):
    fig = confusion_heatmap(small_eval.confusion)
    assert len(fig.data) == 1
    heat = fig.data[0]
    assert heat.type == "heatmap"
    assert list(heat.x) == list(heat.y) == [str(d) for d in range(10)]
    cells = np.array(heat.customdata)
    assert cells.shape == (10, 10, 2)
    assert cells[..., 0].astype(int).tolist() == small_eval.confusion.tolist()
    assert cells[..., 1].sum(axis=1) == pytest.approx(np.ones(10))
    assert [list(row) for row in heat.text] == [
        [str(v) if v else "" for v in row] for row in small_eval.confusion.tolist()]
    assert fig.layout.yaxis.autorange == "reversed"  # digit 0 at the top, like a table
    assert heat.colorscale[-1][1] == "#4F46E5"
    bar = heat.colorbar  # counts on a log scale, from 1 (0 beside it overlapped it)
    assert list(bar.ticktext)[0] == "1" and "0" not in bar.ticktext
    assert np.allclose(bar.tickvals, [np.log10(1 + int(t.replace(",", ""))) for t in bar.ticktext])


@pytest.mark.parametrize("bad", [np.zeros((9, 10)), -np.ones((10, 10))])
def test_confusion_heatmap_rejects_bad_matrices(bad):
    with pytest.raises(ValueError, match="10x10"):
        confusion_heatmap(bad)


def test_per_class_bars_two_traces_and_a_zoomed_axis(small_eval):
    fig = per_class_bars(small_eval.precision, small_eval.recall)
    assert [t.name for t in fig.data] == ["Precision", "Recall"]
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert list(fig.data[0].y) == pytest.approx(small_eval.precision.tolist())
    assert list(fig.data[1].y) == pytest.approx(small_eval.recall.tolist())
    assert fig.data[0].marker.color == "#4F46E5"
    low, high = fig.layout.yaxis.range
    assert 0 <= low <= min(small_eval.precision.min(), small_eval.recall.min()) and high > 1


def test_per_class_bars_rejects_values_out_of_range():
    with pytest.raises(ValueError, match="precision values in"):
        per_class_bars([1.2] * 10, [1.0] * 10)
    with pytest.raises(ValueError, match="10 recall values"):
        per_class_bars([1.0] * 10, [1.0] * 9)


# --- the page --------------------------------------------------------------------------------------

def test_evaluate_page_shows_accuracy_filters_and_models(app_env, small_eval):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    assert [t.value for t in at.title] == ["Evaluate a model"]
    accuracy = next(m.value for m in at.metric if m.label == "Test accuracy")
    assert accuracy == f"{small_eval.accuracy:.2%}"
    assert at.selectbox(key="eval_true").value == "Any"
    assert at.selectbox(key="eval_pred").value == "Any"
    assert at.selectbox(key="eval_true").options == ["Any", *map(str, range(10))]
    models = at.dataframe[-1].value
    assert set(models["model"]) == {"test-mlp (yours)", "test-mlp-copy"}
    # The most frequent mistakes, each made more than once (a single slip is no pattern).
    repeated = [(t, p, n) for t, p, n in small_eval.top_confusions(5) if n > 1]
    mistakes = [c.value for c in at.caption if c.value.startswith("Most frequent mistakes: ")]
    assert mistakes == ["Most frequent mistakes: " + " · ".join(f"{t} read as {p} ({n}×)" for t, p, n in repeated)]
    assert repeated, "the small test model makes some mistake more than once"

    # Filter on the most frequent confusion: the page lists exactly those mistakes.
    t, p, count = small_eval.top_confusions(1)[0]
    at.selectbox(key="eval_true").set_value(t)
    at.selectbox(key="eval_pred").set_value(p).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(re.match(rf"{count:,} mistakes?", c.value) for c in at.caption), [c.value for c in at.caption]

    at.selectbox(key="eval_true").set_value(p)
    at.selectbox(key="eval_pred").set_value(p).run()  # a digit read as itself is never a mistake
    assert any("No test digit was misread that way" in i.value for i in at.info)


def test_evaluate_page_measures_a_model_once(app_env, monkeypatch):
    import streamlit as st

    import core.report.evaluate

    calls = []
    real = core.report.evaluate.evaluate
    monkeypatch.setattr(core.report.evaluate, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    st.cache_data.clear()
    first = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    second = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()  # another visit, another session
    second.selectbox(key="eval_true").set_value(3).run()  # and a filter change
    assert not first.exception and not second.exception
    assert len(calls) == 1
    assert [m.value for m in first.metric if m.label == "Test accuracy"] == \
        [m.value for m in second.metric if m.label == "Test accuracy"]


def test_evaluating_the_test_set_keeps_the_server_small():
    # A server that opens Evaluate keeps what the evaluation left behind for its whole life:
    # ONNX Runtime's arena holds the peak of its largest call. Read in chunks, the 10,000 test
    # images cost a few MB; in one call of 1,000 they cost ~70 MB more (bench/README.md).
    code = (
        "import numpy as np\n"
        "from core.data import cached_test_set\n"
        "from core.report.evaluate import evaluate\n"
        "from core.serving.predict import Predictor\n"
        "from core.storage.store import ModelStore\n"
        "from core.config import ROOT\n"
        "rss = lambda: int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024\n"
        "x, y = cached_test_set()\n"
        "p = Predictor.load('default-cnn', ModelStore(ROOT / 'models'))\n"
        "p.read(np.zeros((280, 280, 4), np.uint8))\n"
        "before = rss()\n"
        "ev = evaluate(p, x, y)\n"
        "print(f'GROWTH={rss() - before:.1f} ACC={ev.accuracy}')\n"
    )
    figures = dict(kv.split("=") for kv in run_fresh_interpreter(code, timeout=120).split())
    assert float(figures["ACC"]) >= 0.99
    assert float(figures["GROWTH"]) < 30, figures
