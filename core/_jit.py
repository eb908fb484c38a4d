"""Compiled (numba) twins of the small loops on the reading path; import through `core.kernels`.

Each function here does what a few numpy calls in `core.preprocess` or `core.novelty` do, in one
pass over the pixels and without numpy's per-call overhead (a few microseconds each, and ~170
calls per reading). The numpy code stays the reference: `tests/test_kernels.py` checks every
kernel against it. float32 arithmetic is kept in float32, in the same order where the numpy code
defines one, so most results are bit-identical; sums may differ in the last bits.

Compiled on first use and cached beside this file (``cache=True``), so later processes load them
in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_jit = njit(cache=True, nogil=True)
# Sums may be reordered (and so vectorized): results then differ from numpy's pairwise sums in
# the last bits, as numpy's own do from a plain loop's.
_sums = njit(cache=True, nogil=True, fastmath={"reassoc"})


# Loops are written the way LLVM vectorizes them: inner loops run over ``range(len(row))`` of a
# 1-D slice (or index the 2-D array directly), reductions use ``a if a < b else b``, and there is
# no early exit inside a scan.


@_jit
def _span(flags):
    """(first, last + 1) of the non-zero entries of a 1-D array that has some."""
    first, end = 0, len(flags)
    while not flags[first]:
        first += 1
    while not flags[end - 1]:
        end -= 1
    return first, end


@_jit
def border_box(keys):
    """For a 2-D array whose border entries all equal ``keys[0, 0]``: the box of the entries that
    differ from it, as (True, top, bottom, left, right) (empty: top == bottom == 0); (False, ...)
    when the border is not uniform."""
    rows, cols = keys.shape
    bg = keys[0, 0]
    for c in range(cols):
        if keys[0, c] != bg or keys[rows - 1, c] != bg:
            return False, 0, 0, 0, 0
    for r in range(rows):
        if keys[r, 0] != bg or keys[r, cols - 1] != bg:
            return False, 0, 0, 0, 0
    top, bottom = rows, 0
    columns = np.zeros(cols, keys.dtype)  # per column: OR of (key ^ background) over the rows
    for r in range(rows):
        differs = keys[r, 0] ^ bg
        for c in range(cols):
            x = keys[r, c] ^ bg
            differs |= x
            columns[c] |= x
        if differs:
            top = r if top == rows else top
            bottom = r + 1
    if top == rows:
        return True, 0, 0, 0, 0
    left, right = _span(columns)
    return True, top, bottom, left, right


@_jit
def opaque_grey_extremes(keys, top, bottom, left, right):
    """(True, lowest, highest red) when every uint32 RGBA key in ``keys[top:bottom, left:right]``
    is opaque grey (R == G == B, alpha 255); (False, 0, 0) otherwise."""
    bad = np.uint32(0)
    lo, hi = np.uint32(255), np.uint32(0)
    for r in range(top, bottom):
        row = keys[r, left:right]
        for c in range(row.shape[0]):
            k = row[c]
            red = k & np.uint32(0xFF)
            bad |= ((red * np.uint32(0x010101)) | np.uint32(0xFF000000)) ^ k
            lo = red if red < lo else lo
            hi = red if red > hi else hi
    if bad:
        return False, 0, 0
    return True, int(lo), int(hi)


@_jit
def grey_ink(keys, top, bottom, left, right, inv, background, factor):
    """Ink of the opaque grey keys in ``keys[top:bottom, left:right]``:
    ``clip((red * inv - background) * factor, 0, 1)`` in float32, the steps of
    `preprocess._opaque_grey_ink`'s numpy path."""
    out = np.empty((bottom - top, right - left), np.float32)
    zero, one = np.float32(0.0), np.float32(1.0)
    for r in range(top, bottom):
        row = keys[r, left:right]
        dst = out[r - top]
        for c in range(row.shape[0]):
            v = (np.float32(row[c] & np.uint32(0xFF)) * inv - background) * factor
            v = v if v > zero else zero
            dst[c] = v if v < one else one
    return out


@_sums
def ink_bounds(ink, threshold):
    """(top, bottom, left, right, mass): the box of the pixels above `threshold` (empty:
    top == bottom == 0) and the float64 sum of all pixels."""
    rows, cols = ink.shape
    top, bottom = rows, 0
    mass = 0.0
    columns = np.zeros(cols, np.uint8)  # per column: any pixel above the threshold
    for r in range(rows):
        row = ink[r]
        row_mass = np.float32(0.0)
        above = np.uint8(0)
        for c in range(cols):
            row_mass += row[c]
            hit = np.uint8(row[c] > threshold)
            above |= hit
            columns[c] |= hit
        mass += row_mass
        if above:
            top = r if top == rows else top
            bottom = r + 1
    if top == rows:
        return 0, 0, 0, 0, mass
    left, right = _span(columns)
    return top, bottom, left, right, mass


@_jit
def block_mean_zero(values, factor):
    """Means of ``factor x factor`` blocks of a 2-D float32 array, partial blocks zero-padded."""
    rows, cols = values.shape
    out_rows, out_cols = -(-rows // factor), -(-cols // factor)
    out = np.zeros((out_rows, out_cols), np.float32)
    band = np.zeros(out_cols * factor, np.float32)  # one block row, summed; zeros past the last column
    scale = np.float32(1.0 / (factor * factor))
    for o in range(out_rows):
        band[:cols] = values[o * factor]
        for r in range(o * factor + 1, min(o * factor + factor, rows)):
            src = values[r]
            for c in range(cols):
                band[c] += src[c]
        dst = out[o]
        for j in range(factor):
            for c in range(out_cols):
                dst[c] += band[c * factor + j]
        for c in range(out_cols):
            dst[c] *= scale
    return out


@_jit
def resample(values, row_index, row_weights, col_index, col_weights):
    """Separable resampling of a 2-D float32 array (rows, then columns) with precomputed taps
    (`preprocess._resample_taps`), its maximum scaled to 1 and negatives set to 0.

    Returns (out, peak): out is all zeros when peak <= 0 (no ink)."""
    out_rows, taps_r = row_index.shape
    out_cols, taps_c = col_index.shape
    cols = values.shape[1]
    tmp = np.zeros((out_rows, cols), np.float32)
    for o in range(out_rows):
        for k in range(taps_r):
            w = row_weights[o, k]
            src = values[row_index[o, k]]
            for c in range(cols):
                tmp[o, c] += src[c] * w
    out = np.zeros((out_rows, out_cols), np.float32)
    peak = np.float32(-np.inf)
    for o in range(out_rows):
        for p in range(out_cols):
            acc = np.float32(0.0)
            for k in range(taps_c):
                acc += tmp[o, col_index[p, k]] * col_weights[p, k]
            out[o, p] = acc
            peak = max(peak, acc)
    if peak > 0.0:
        scale = np.float32(1.0 / peak)
        for o in range(out_rows):
            for p in range(out_cols):
                out[o, p] = min(max(out[o, p] * scale, np.float32(0.0)), np.float32(1.0))
    return out, peak


@_sums
def stroke_sums(ink):
    """(mass, total variation) of an ink map, the frame's zero surround included."""
    rows, cols = ink.shape
    mass = 0.0
    variation = 0.0
    for r in range(rows):
        for c in range(cols):
            v = ink[r, c]
            mass += v
            up = ink[r - 1, c] if r > 0 else np.float32(0.0)
            lft = ink[r, c - 1] if c > 0 else np.float32(0.0)
            variation += abs(v - up) + abs(v - lft)
        variation += abs(ink[r, cols - 1])
    for c in range(cols):
        variation += abs(ink[rows - 1, c])
    return mass, variation


@_sums
def mass_centre(fitted):
    """(mass, row centre, column centre) of the non-negative part of a 2-D float32 array."""
    rows, cols = fitted.shape
    mass = 0.0
    row_moment = 0.0
    col_moment = 0.0
    for r in range(rows):
        row_mass = 0.0
        for c in range(cols):
            v = max(fitted[r, c], np.float32(0.0))
            row_mass += v
            col_moment += v * c
        mass += row_mass
        row_moment += row_mass * r
    if mass <= 0.0:
        return 0.0, 0.0, 0.0
    return mass, row_moment / mass, col_moment / mass


@_jit
def shape_descriptors(x, cells, orientations, thumb, bins_per_radian):
    """`novelty.shape_descriptor` for float32 (N, 28, 28): orientation histograms of the
    gradient in cells x cells cells, Hellinger-normalized, then the thumb x thumb block means."""
    n, size = x.shape[0], x.shape[1]
    cell = size // cells
    step = size // thumb
    per_image = cells * cells * orientations
    out = np.empty((n, per_image + thumb * thumb), np.float32)
    hist = np.empty(per_image, np.float64)
    mask = orientations - 1
    for i in range(n):
        img = x[i]
        hist[:] = 0.0
        for r in range(size):
            for c in range(size):
                gx = img[r, c + 1] - img[r, c - 1] if 0 < c < size - 1 else np.float32(0.0)
                gy = img[r + 1, c] - img[r - 1, c] if 0 < r < size - 1 else np.float32(0.0)
                magnitude = np.float32(math.sqrt(gx * gx + gy * gy))
                position = np.float32(math.atan2(gy, gx)) * bins_per_radian
                low = math.floor(position)
                upper = (position - np.float32(low)) * magnitude
                base = ((r // cell) * cells + c // cell) * orientations
                hist[base + (low & mask)] += magnitude - upper
                hist[base + ((low + 1) & mask)] += upper
        total = np.float32(0.0)
        for b in range(per_image):
            total += np.float32(hist[b])
        denominator = total + np.float32(1e-6)
        for b in range(per_image):
            out[i, b] = math.sqrt(np.float32(hist[b]) / denominator)
        for br in range(thumb):
            for bc in range(thumb):
                acc = np.float32(0.0)
                for r in range(br * step, br * step + step):
                    for c in range(bc * step, bc * step + step):
                        acc += img[r, c]
                out[i, per_image + br * thumb + bc] = acc / np.float32(step * step)
    return out


@_sums
def ink_statistics(x):
    """`novelty.ink_statistics` for float32 (N, 28, 28)."""
    n, rows, cols = x.shape
    out = np.empty((n, 6), np.float32)
    for i in range(n):
        img = x[i]
        inked = 0
        solid = 0
        inside = 0
        grey = 0
        mass = np.float32(0.0)
        variation = np.float32(0.0)
        for r in range(rows):
            for c in range(cols):
                v = img[r, c]
                mass += v
                if r > 0:
                    variation += abs(v - img[r - 1, c])
                if c > 0:
                    variation += abs(v - img[r, c - 1])
                if v > 0.15:
                    inked += 1
                    if v < 0.85:
                        grey += 1
                if v > 0.5:
                    solid += 1
                    if (0 < r < rows - 1 and 0 < c < cols - 1 and img[r - 1, c] > 0.5 and img[r + 1, c] > 0.5
                            and img[r, c - 1] > 0.5 and img[r, c + 1] > 0.5):
                        inside += 1
        count = np.float32(max(inked, 1))
        out[i, 0] = math.log(mass + np.float32(1.0))
        out[i, 1] = solid / count
        out[i, 2] = inside / count
        out[i, 3] = grey / count
        out[i, 4] = math.log(2.0 * mass / max(variation, np.float32(1e-3)) + 0.1)
        out[i, 5] = count / (rows * cols)
    return out

