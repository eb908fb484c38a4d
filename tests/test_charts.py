"""Chart functions: pure Plotly figures, checked through ``fig.data`` (no Streamlit involved)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from PIL import Image

from core.report.charts import (BOX_ON_DARK, BOX_ON_LIGHT, MUTED, PRIMARY, VALIDATION, boxed_digits, class_distribution,
                         digit_grid, history_figure, probability_bar)


def _probs(winner: int) -> np.ndarray:
    p = np.full(10, 0.02)
    p[winner] = 0.82
    return p


@pytest.mark.parametrize("winner", [0, 3, 9])
def test_probability_bar_highlights_the_most_probable_digit(winner):
    fig = probability_bar(_probs(winner))
    (bar,) = fig.data
    assert isinstance(bar, go.Bar)
    assert list(bar.x) == [str(d) for d in range(10)]
    assert np.allclose(bar.y, _probs(winner))
    colors = list(bar.marker.color)
    assert colors[winner] == PRIMARY
    assert colors.count(PRIMARY) == 1 and colors.count(MUTED) == 9
    assert bar.text[winner] == "82.0%"  # as the Confidence metric beside it shows it
    assert [t for d, t in enumerate(bar.text) if d != winner and t] == ["2%"] * 9
    assert fig.layout.yaxis.range == (0, 1.12)


def test_probability_bar_highlight_can_be_chosen():
    colors = list(probability_bar(_probs(3), highlight=5).data[0].marker.color)
    assert colors[5] == PRIMARY and colors[3] == MUTED


@pytest.mark.parametrize("bad", [np.ones(9) / 9, np.ones((2, 10)), [0.1] * 9 + [float("nan")]])
def test_probability_bar_rejects_anything_but_ten_probabilities(bad):
    with pytest.raises(ValueError, match="10 finite probabilities"):
        probability_bar(bad)


def _history(epochs: int = 3, batches: int = 50):
    batch_rows, epoch_rows = [], []
    for e in range(1, epochs + 1):
        for b in range(1, batches + 1):
            step = (e - 1) * batches + b
            batch_rows.append({"step": step, "epoch": e, "loss": 2.0 / step ** 0.5, "accuracy": 1 - 0.9 / step ** 0.5})
        epoch_rows.append({"epoch": e, "step": e * batches, "loss": 0.3 / e, "accuracy": 0.9 + e / 100,
                           "val_loss": 0.35 / e, "val_accuracy": 0.89 + e / 100})
    return batch_rows, epoch_rows


def test_history_figure_draws_training_per_batch_and_validation_per_epoch():
    batches, epochs = _history()
    fig = history_figure(batches, epochs)
    assert [t.name for t in fig.data] == ["Training (per batch)", "Validation (per epoch)"] * 2
    train_loss, val_loss, train_acc, val_acc = fig.data
    assert train_loss.mode == "lines" and val_loss.mode == "lines+markers"
    assert list(train_loss.x) == list(range(1, 151)) and train_loss.y[0] == pytest.approx(2.0)
    assert list(val_loss.x) == [50, 100, 150] and list(val_acc.y) == pytest.approx([0.90, 0.91, 0.92])
    assert train_loss.line.color == PRIMARY and val_loss.line.color == VALIDATION
    assert (train_loss.xaxis, train_acc.xaxis) == ("x", "x2")  # loss left, accuracy right
    assert [a.text for a in fig.layout.annotations] == ["Loss", "Accuracy"]
    # Epoch boundaries inside the run (not the last one), on both subplots.
    assert sorted(s.x0 for s in fig.layout.shapes) == [50, 50, 100, 100]


def test_history_figure_of_a_long_run_has_no_epoch_lines_and_small_markers():
    # 30 epochs (the shipped model): 29 lines would hatch both plots, big markers hide the training line.
    fig = history_figure(*_history(epochs=30, batches=20))
    assert not fig.layout.shapes
    assert fig.data[1].marker.size < history_figure(*_history()).data[1].marker.size


def test_history_figure_thins_long_runs_but_keeps_the_last_step():
    batches, epochs = _history(epochs=2, batches=2000)
    fig = history_figure(batches, epochs, max_points=500)
    xs = list(fig.data[0].x)
    assert len(xs) <= 501 and xs[0] == 1 and xs[-1] == 4000


def test_history_figure_during_the_first_epoch_has_no_validation_yet():
    batches, _ = _history(epochs=1, batches=10)
    fig = history_figure(batches, [])
    assert [t.name for t in fig.data] == ["Training (per batch)", "Training (per batch)"]
    assert not fig.layout.shapes
    empty = history_figure([], [])
    assert len(empty.data) == 2 and len(empty.data[0].x or ()) == 0


def test_class_distribution_of_a_few_images_has_whole_ticks():
    assert class_distribution([0, 2, 0, 0, 0, 1, 0, 0, 0, 0]).layout.yaxis.dtick == 1
    assert class_distribution([5923] * 10).layout.yaxis.dtick is None


def test_history_figure_shows_tenths_of_a_percent_on_a_narrow_accuracy_range():
    assert history_figure(*_history()).layout.yaxis2.tickformat == ".0%"  # 10% .. 99%: whole percents
    fine_tune = [{"step": s, "epoch": 1, "loss": 0.5, "accuracy": 0.98 + s / 10000} for s in range(1, 101)]
    assert history_figure(fine_tune, []).layout.yaxis2.tickformat == ".1%"  # 98% .. 99%: no repeated labels


def test_class_distribution_has_one_bar_per_digit():
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    (bar,) = class_distribution(counts).data
    assert list(bar.x) == [str(d) for d in range(10)] and list(bar.y) == counts
    assert bar.marker.color == PRIMARY and bar.text[1] == "6,742"
    with pytest.raises(ValueError, match="10 counts"):
        class_distribution(counts[:9])


def test_digit_grid_shows_each_image_with_its_label():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12) % 10
    fig = digit_grid(images, labels, columns=5)
    assert len(fig.data) == 12 and all(isinstance(t, go.Image) for t in fig.data)
    assert [a.text for a in fig.layout.annotations] == [str(v) for v in labels]
    z = np.asarray(fig.data[4].z)
    assert z.shape == (28, 28, 3) and np.array_equal(z[..., 0], images[4])
    # float input in [0, 1] is scaled to 0..255
    floats = digit_grid(images[:2] / 255.0, labels[:2])
    assert np.array_equal(np.asarray(floats.data[1].z)[..., 0], images[1])
    with pytest.raises(ValueError, match="labels"):
        digit_grid(images, labels[:3])



def _hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def test_boxed_digits_draws_a_box_per_digit_on_a_scaled_copy():
    paper = Image.new("L", (400, 100), 250)
    out = boxed_digits(paper, [(20, 20, 60, 60), (220, 20, 60, 60)], ["2", "7"], side=200)
    assert out.mode == "RGB" and out.size == (200, 50)
    assert paper.getpixel((10, 10)) == 250  # the input is untouched
    pixels = np.asarray(out)
    box = np.all(pixels == _hex_rgb(BOX_ON_LIGHT), axis=2)
    # Each box's left edge sits at its x / 2 (scaled), two digits apart, in indigo on paper.
    assert box[:, 8:12].any() and box[:, 108:112].any() and not box[:, 60:100].any()


def test_boxed_digits_uses_amber_on_the_black_canvas_and_composites_transparency():
    canvas = np.zeros((280, 280, 4), np.uint8)  # fully transparent: the canvas' black shows through
    out = boxed_digits(canvas, [(100, 100, 50, 80)], ["4"], side=280, background="black")
    pixels = np.asarray(out)
    assert pixels[5, 5].tolist() == [0, 0, 0]
    assert np.all(pixels == _hex_rgb(BOX_ON_DARK), axis=2).any()


@pytest.mark.parametrize("boxes, labels", [([(0, 0, 5, 5)], []), ([], ["1"])])
def test_boxed_digits_wants_one_label_per_box(boxes, labels):
    with pytest.raises(ValueError, match="one label per box"):
        boxed_digits(Image.new("RGB", (10, 10)), boxes, labels)
