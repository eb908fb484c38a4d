"""The compiled kernels (core._jit) give what the numpy code gives, on every reading path."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from core import kernels, novelty
from core import preprocess as pp
from helpers_images import STYLES, as_canvas, mnist_sample


@contextmanager
def numpy_only():
    """Inside: the kernels are off, every step takes the numpy path (the reference)."""
    assert kernels.ENABLED
    kernels.ENABLED = False
    try:
        yield
    finally:
        kernels.ENABLED = True


def both(fn, *args, **kwargs):
    """``fn(*args)`` with the compiled kernels, then with plain numpy (the reference)."""
    compiled = fn(*args, **kwargs)
    with numpy_only():
        reference = fn(*args, **kwargs)
    return compiled, reference


def test_kernels_are_in_use():
    # numba is a requirement: a broken install must not fall back to numpy unnoticed.
    assert kernels.warm()
    assert kernels.get() is not None and kernels.ready()


def test_readings_take_numpy_until_the_background_warm_up_is_done(monkeypatch):
    monkeypatch.setattr(kernels, "_ready", None)
    monkeypatch.setattr(kernels, "_background", None)
    assert kernels.get() is None  # never compiles on a reading's time
    digits, _ = mnist_sample(3, seed=5)
    source = as_canvas(digits[0], np.random.default_rng(0))
    reference = pp.to_mnist(source)
    with kernels._lock:  # as if another thread were compiling: starting must not wait for it
        thread = kernels.warm_in_background()
        assert thread is not None and kernels.warm_in_background() is thread  # once per process
    during = [pp.to_mnist(source) for _ in range(5)]  # either path, same answer
    thread.join(timeout=120)
    assert not thread.is_alive() and kernels.ready()
    assert kernels.warm_in_background() is None
    for out in during + [pp.to_mnist(source)]:
        np.testing.assert_allclose(out, reference, atol=1e-5)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_to_mnist_matches_numpy_for_every_input_style(style):
    digits, _ = mnist_sample(12, seed=3)
    rng = np.random.default_rng(11)
    for digit in digits:
        source = STYLES[style](digit, rng)
        compiled, reference = both(pp.to_mnist, source)
        assert compiled.dtype == np.float32 and compiled.shape == (28, 28)
        np.testing.assert_allclose(compiled, reference, atol=1e-5)


def test_canvas_reading_is_bit_identical():
    # The opaque canvas path keeps numpy's float32 steps in the same order.
    digits, _ = mnist_sample(40, seed=5)
    rng = np.random.default_rng(5)
    for digit in digits:
        canvas = as_canvas(digit, rng, transparent=False)
        compiled, reference = both(pp._ink_region, canvas, pp.DEFAULT_MAX_SIDE)
        assert compiled[1:] == reference[1:]
        np.testing.assert_array_equal(compiled[0], reference[0])


def test_grey_canvas_on_other_backgrounds_and_colours():
    rng = np.random.default_rng(2)
    digit = mnist_sample(1, seed=2)[0][0]
    coverage = pp.fit_in_box(digit.astype(np.float32) / 255, 200)
    for background, ink in [(0, 255), (255, 0), (200, 30), (90, 140)]:
        grey = np.full((260, 240), background, np.float32)
        grey[20:20 + coverage.shape[0], 30:30 + coverage.shape[1]] += (ink - background) * coverage
        canvas = np.empty((260, 240, 4), np.uint8)
        canvas[..., :3] = np.rint(grey)[..., None]
        canvas[..., 3] = 255
        compiled, reference = both(pp.to_mnist, canvas)
        np.testing.assert_array_equal(compiled, reference)
    # Coloured strokes and partial transparency leave the grey fast path: same answer still.
    canvas = as_canvas(digit, rng, transparent=False)
    canvas[..., 0] //= 2
    compiled, reference = both(pp.to_mnist, canvas)
    np.testing.assert_allclose(compiled, reference, atol=1e-5)


def test_blank_speck_and_faint_inputs_fail_alike():
    blank = np.zeros((280, 280, 4), np.uint8)
    blank[..., 3] = 255
    speck = blank.copy()
    speck[100:102, 100:102, :3] = 255
    faint = blank.copy()
    faint[50:200, 60:80, :3] = 10  # below MIN_CONTRAST
    for source in (blank, speck, faint, blank[..., 0], np.zeros((40, 30), np.float32)):
        with pytest.raises(pp.NoDigitError) as compiled:
            pp.to_mnist(source)
        with numpy_only(), pytest.raises(pp.NoDigitError) as reference:
            pp.to_mnist(source)
        assert str(compiled.value) == str(reference.value)


def test_border_box_finds_the_ink_or_a_non_uniform_border():
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.uint32):
        for _ in range(30):
            rows, cols = rng.integers(3, 60, size=2)
            keys = np.full((rows, cols), 7, dtype)
            if rng.random() < 0.8:
                top, left = rng.integers(1, rows - 1), rng.integers(1, cols - 1)
                bottom, right = rng.integers(top + 1, rows), rng.integers(left + 1, cols)
                keys[top, left] = keys[bottom - 1, right - 1] = 9
            if rng.random() < 0.2:
                keys[rng.integers(rows), 0] = 1  # the border is not uniform
            compiled, reference = both(pp._uniform_border_box, keys, keys)
            assert compiled == reference


def test_block_mean_and_fit_match_numpy_on_odd_sizes():
    rng = np.random.default_rng(1)
    jit = kernels.get()
    for rows, cols, factor in [(199, 157, 2), (81, 80, 3), (403, 95, 5), (9, 30, 7), (7, 7, 2)]:
        values = rng.random((rows, cols), dtype=np.float32)
        np.testing.assert_allclose(jit.block_mean_zero(values, factor),
                                   pp._block_mean(values, factor, pad="constant"), atol=1e-6)
        for box in (20, 80):
            compiled, reference = both(pp.fit_in_box, values, box)
            np.testing.assert_allclose(compiled, reference, atol=1e-5)
        compiled, reference = both(pp.stroke_width, values)
        assert compiled == pytest.approx(reference, rel=1e-5)
    sparse = np.zeros((50, 40), np.float32)
    sparse[10:30, 12:14] = rng.random((20, 2), dtype=np.float32)
    compiled, reference = both(pp.crop_to_ink, sparse)
    np.testing.assert_array_equal(compiled, reference)
    compiled, reference = both(pp.center_by_mass, pp.fit_in_box(sparse))
    np.testing.assert_array_equal(compiled, reference)


def test_detector_inputs_and_decisions_match_numpy():
    digits, _ = mnist_sample(200, seed=7)
    others, _ = novelty.synthetic_non_digits(60, seed=7)
    x = np.concatenate([digits.astype(np.float32) / 255, others.reshape(-1, 28, 28)])
    compiled, reference = both(novelty.shape_descriptor, x)
    np.testing.assert_allclose(compiled, reference, atol=2e-4)
    compiled, reference = both(novelty.ink_statistics, x)
    np.testing.assert_allclose(compiled, reference, rtol=1e-4, atol=1e-5)
