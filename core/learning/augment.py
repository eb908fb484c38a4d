"""The training augmentation: what real inputs do to a digit, done to MNIST on the fly (tf.data).

Small affine distortions of every image; on a random share of images, thicker or thinner strokes,
low resolution (down to 8-28 px and back) and blur, each degraded image's levels restored as the
reading path (`core.reading.preprocess`) restores them. Used by training (`core.learning.train`) and
by the detector's fitting (`core.learning.detector`), which sees the same variation as digits.
"""

from __future__ import annotations

import math


# Augmentation: what real inputs do to a digit, each applied to a random share of every batch.
AFFINE = {"rotation_deg": 10.0, "scale": 0.1, "shear": 0.15, "shift_px": 2.0}
DEGRADE_SHARE = 0.25  # share of images that get each degradation below (independently)
LOWRES_SIDES = (8, 28)  # down to a random side in this range (pixels of the 28x28 frame), then back up
BLUR_SIGMA = (0.5, 1.5)  # Gaussian blur, pixels
THICKNESS = 1.0  # strokes thickened or thinned by up to one 3x3 dilation / erosion (blended)


def _affine(x, rng):
    """Random small affine maps of a (B, 28, 28, 1) batch: rotation, scale, shear, shift (one fused op)."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    angle = rng.uniform([b], -AFFINE["rotation_deg"], AFFINE["rotation_deg"]) * (math.pi / 180.0)
    scale = rng.uniform([b], 1.0 - AFFINE["scale"], 1.0 + AFFINE["scale"])
    shear = rng.uniform([b], -AFFINE["shear"], AFFINE["shear"])
    tx = rng.uniform([b], -AFFINE["shift_px"], AFFINE["shift_px"])
    ty = rng.uniform([b], -AFFINE["shift_px"], AFFINE["shift_px"])
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # Output->input map about the image centre (13.5, 13.5).
    a0, a1 = cos, -sin + shear * cos
    b0, b1 = sin, cos + shear * sin
    c = 13.5
    a2 = c - a0 * c - a1 * c - tx
    b2 = c - b0 * c - b1 * c - ty
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.constant([28, 28]),
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )


def _some(x, changed, rng):
    """``changed`` for a random DEGRADE_SHARE of the batch's images, ``x`` for the others."""
    import tensorflow as tf

    pick = rng.uniform([tf.shape(x)[0], 1, 1, 1]) < DEGRADE_SHARE
    return tf.where(pick, changed, x)


def _thickness(x, rng):
    """Strokes thickened (3x3 dilation) or thinned (3x3 erosion), blended by a random amount."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    dilated = tf.nn.max_pool2d(x, 3, 1, "SAME")
    eroded = -tf.nn.max_pool2d(-x, 3, 1, "SAME")
    amount = rng.uniform([b, 1, 1, 1], -THICKNESS, THICKNESS)
    return x + tf.maximum(amount, 0.0) * (dilated - x) + tf.maximum(-amount, 0.0) * (eroded - x)


def _low_resolution(x, rng):
    """The whole batch shrunk to one random side (antialiased) and scaled back up (bicubic)."""
    import tensorflow as tf

    side = tf.cast(rng.uniform([], LOWRES_SIDES[0], LOWRES_SIDES[1] + 1), tf.int32)
    small = tf.image.resize(x, tf.stack([side, side]), method="area", antialias=True)
    return tf.clip_by_value(tf.image.resize(small, [28, 28], method="bicubic"), 0.0, 1.0)


def _blur(x, rng):
    """The whole batch blurred by one random Gaussian (separable 7-tap kernel)."""
    import tensorflow as tf

    sigma = rng.uniform([], *BLUR_SIGMA)
    taps = tf.exp(-0.5 * (tf.range(-3.0, 4.0) / sigma) ** 2)
    taps = taps / tf.reduce_sum(taps)
    x = tf.nn.conv2d(x, tf.reshape(taps, [7, 1, 1, 1]), 1, "SAME")
    return tf.nn.conv2d(x, tf.reshape(taps, [1, 7, 1, 1]), 1, "SAME")


def _as_read(x):
    """What the reading path does to any image: ink scaled to its peak, levels stretched
    (``core.reading.preprocess``), so a faded or blurred digit reaches full ink again."""
    import tensorflow as tf

    peak = tf.maximum(tf.reduce_max(x, axis=[1, 2, 3], keepdims=True), 1e-3)
    return tf.clip_by_value((x / peak - 0.1) / 0.5, 0.0, 1.0)


def augment_fn(seed: int, *, thickness: bool = True):
    """A tf.data map over (B, 28, 28, 1) batches: small affine distortions of every image, then
    (each on a random DEGRADE_SHARE of the images) thicker or thinner strokes (unless
    ``thickness`` is False), low resolution and blur, each degraded image's levels restored as the
    reading path restores them."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(seed)

    def augment(x, y):
        x = _affine(x, rng)
        degraded = _some(x, _thickness(x, rng), rng) if thickness else x
        degraded = _some(degraded, _low_resolution(degraded, rng), rng)
        degraded = _some(degraded, _blur(degraded, rng), rng)
        changed = tf.reduce_any(tf.not_equal(degraded, x), axis=[1, 2, 3], keepdims=True)
        return tf.where(changed, _as_read(degraded), x), y

    return augment
