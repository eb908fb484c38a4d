"""Fitting the "not a digit" detector of a trained model (`core.serving.novelty` scores with it).

`fit` is numpy alone: class means and one shrunk covariance per layer of the network's features
(Lee et al., 2018), and a threshold at `FIT_QUANTILE` of held-out digits' scores. `fit_detector`
gathers those features from MNIST training digits with Keras; it runs once, when a model is saved.
"""

from __future__ import annotations

import numpy as np

from core.data import cached_mnist
from core.serving.novelty import NoveltyDetector

FIT_QUANTILE = 0.99  # share of held-out digits (clean and augmented) scored below the threshold
COVARIANCE_SHRINK = 0.01  # ridge, as a share of the mean variance, added to each layer's covariance


def _class_gaussian(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means (10, d) and W (d, d) with W W^T = the inverse of the shrunk shared covariance."""
    features = features.astype(np.float64)
    means = np.stack([features[labels == k].mean(axis=0) for k in range(10)])
    centred = features - means[labels]
    cov = centred.T @ centred / len(centred)
    cov += COVARIANCE_SHRINK * np.trace(cov) / len(cov) * np.eye(len(cov))
    return means, np.linalg.cholesky(np.linalg.inv(cov))


def fit(features: np.ndarray, labels: np.ndarray, held_out: np.ndarray, sizes: list[int]) -> NoveltyDetector:
    """Fit the detector on digits' features.

    Args:
        features: float32 (N, D) features of MNIST training digits (`core.learning.model.feature_model`).
        labels: int (N,) their digits.
        held_out: float32 (M, D) features of other training digits, for the threshold.
        sizes: each layer's feature count, summing to D.

    Returns:
        The fitted `NoveltyDetector`; `FIT_QUANTILE` of ``held_out`` scores at most 0.

    Raises:
        ValueError: sizes that do not sum to D, or a class without examples.
    """
    features, labels = np.asarray(features, np.float32), np.asarray(labels, np.int64)
    dim = features.shape[1]
    if sum(sizes) != dim:
        raise ValueError(f"Layer sizes {sizes} do not add up to the {dim} features.")
    if set(np.unique(labels)) != set(range(10)):
        raise ValueError("Fitting needs examples of all ten digits.")
    means = np.zeros((10, dim), np.float32)
    whiten = np.zeros((dim, dim), np.float32)
    start = 0
    for size in sizes:
        block = slice(start, start + size)
        means[:, block], whiten[block, block] = _class_gaussian(features[:, block], labels)
        start += size
    partial = NoveltyDetector(np.asarray(sizes, np.int64), means, whiten, np.ones(len(sizes)), np.asarray(0.0))
    medians = np.median(partial.distances(features), axis=0).astype(np.float64)
    detector = NoveltyDetector(partial.sizes, means, whiten, medians, np.asarray(0.0))
    threshold = float(np.quantile(detector.scores(held_out), FIT_QUANTILE))
    return NoveltyDetector(partial.sizes, means, whiten, medians, np.asarray(threshold))


# Digits the detector is fitted on (each given clean and augmented) and held out for its threshold.
DETECTOR_FIT, DETECTOR_HELD = 20_000, 5_000


def fit_detector(model, *, seed: int = 0):
    """Fit the "not a digit" detector (`core.serving.novelty`) of a trained model on MNIST training digits.

    The digits are given as stored and through the training augmentation (`augment_fn`) without
    its stroke thickening, so low-resolution and blurred digits count as digits while solid blobs
    do not (thickening made it flag fewer non-digits and keep no more real digits:
    bench/reading_accuracy.py's tuning rows).

    Returns:
        A `core.serving.novelty.NoveltyDetector`.
    """
    import tensorflow as tf

    from core.learning.model import feature_model
    from core.learning.augment import augment_fn

    mnist = cached_mnist()
    order = np.random.default_rng(seed).permutation(len(mnist.y_train))
    augment = augment_fn(seed + 1, thickness=False)
    features_of, sizes = feature_model(model)

    def features(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = mnist.x_train[indices].astype(np.float32)[..., None] / np.float32(255.0)
        y = mnist.y_train[indices].astype(np.int64)
        degraded = np.concatenate([augment(tf.constant(x[i:i + 1000]), None)[0].numpy()
                                   for i in range(0, len(x), 1000)])
        _, f = features_of.predict(np.concatenate([x, degraded]), batch_size=1000, verbose=0)
        return f, np.concatenate([y, y])

    fit_features, labels = features(order[:DETECTOR_FIT])
    held_features, _ = features(order[DETECTOR_FIT:DETECTOR_FIT + DETECTOR_HELD])
    return fit(fit_features, labels, held_features, sizes)
