"""Training with a UI-agnostic progress hook and a stop request.

``train`` is a plain function: it builds the model, fits it on MNIST with a one-cycle schedule,
reports progress per batch and per epoch to a hook, honours a stop request after the current
batch, and evaluates on the 10,000 test images. Runs in the app and the CLI go through a Dask
worker (`core.learning.tasks`, submitted by `core.learning.runs`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

import numpy as np

from core.data import Split, cached_mnist, training_split
from core.learning.model import ModelSpec, build_model

Schedule = Literal["onecycle", "constant"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run.

    Attributes:
        spec: the architecture.
        epochs: passes over the training images, 1..100.
        batch_size: images per step, 8..4096.
        learning_rate: the peak learning rate (one-cycle) or the constant one.
        schedule: "onecycle" (linear warm-up for 25% of the steps, then linear decay to ~0) or "constant".
        train_size: training images used, validation included (None: all 60,000).
        val_fraction: share of ``train_size`` held out for validation.
        augment: random small affine distortions (rotation, scale, shear, shift) of training images.
        label_smoothing: cross-entropy label smoothing in [0, 0.5).
        seed: seeds the split, the shuffling, the augmentation and the initial weights.
    """

    spec: ModelSpec = field(default_factory=ModelSpec)
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-2
    schedule: Schedule = "onecycle"
    train_size: int | None = None
    val_fraction: float = 0.1
    augment: bool = False
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= int(self.epochs) <= 100:
            raise ValueError(f"epochs must be between 1 and 100, got {self.epochs}.")
        if not 8 <= int(self.batch_size) <= 4096:
            raise ValueError(f"batch_size must be between 8 and 4096, got {self.batch_size}.")
        if not 0 < float(self.learning_rate) <= 1.0:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}.")
        if self.schedule not in ("onecycle", "constant"):
            raise ValueError(f"schedule must be 'onecycle' or 'constant', got {self.schedule!r}.")
        if self.train_size is not None and not 0 <= int(self.train_size) <= 60000:
            raise ValueError(f"train_size must be between 0 and 60,000 images, got {self.train_size}.")
        if not 0 <= float(self.val_fraction) <= 0.5:
            raise ValueError(f"val_fraction must be between 0 and 0.5, got {self.val_fraction}.")
        if not 0 <= float(self.label_smoothing) < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}.")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        data["spec"] = ModelSpec.from_dict(data.get("spec", {}))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# Named recipes. "fast": the quickest way to 99% on a 2-core CPU (bench/train_speed.py times it
# against the keras-io reference convnet): one epoch, the whole one-cycle schedule in it, at a peak
# rate of 0.02 with label smoothing (99.04-99.13% over seeds 0-2 in 12-17 s here; the earlier
# 24/32-filter recipe needed two epochs, ~20 s). "default": the shipped model's recipe (see README).
RECIPES: dict[str, TrainConfig] = {
    "fast": TrainConfig(spec=ModelSpec(family="cnn", filters=(32, 48), hidden=(256,), dropout=0.0),
                        epochs=1, batch_size=256, learning_rate=2e-2, val_fraction=0.0, label_smoothing=0.1),
    "default": TrainConfig(spec=ModelSpec(family="cnn", filters=(32, 64, 128), hidden=(256,), dropout=0.2),
                           epochs=30, batch_size=256, learning_rate=1e-2, val_fraction=0.05, augment=True,
                           label_smoothing=0.1),
}


@dataclass(frozen=True)
class Progress:
    """One progress report. ``kind`` is "batch" (training metrics are running means over the epoch so
    far) or "epoch" (with validation metrics). Times in seconds; ``eta`` is the estimated time left."""

    kind: Literal["batch", "epoch"]
    epoch: int  # 1-based
    epochs: int
    batch: int  # 1-based, within the epoch
    batches: int
    loss: float
    accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    elapsed: float
    eta: float
    learning_rate: float

    @property
    def fraction(self) -> float:
        """Share of all steps done, in [0, 1]."""
        return min(1.0, ((self.epoch - 1) * self.batches + self.batch) / max(1, self.epochs * self.batches))


@dataclass
class TrainResult:
    """What a run produced. ``history`` holds per-epoch and per-batch lists; ``model`` is the trained
    Keras model (None if it was stopped before finishing the first batch)."""

    config: TrainConfig
    model: object | None
    history: dict
    test_accuracy: float | None
    train_seconds: float
    stopped: bool
    param_count: int
    data_sha256: str
    temperature: float = 1.0  # fitted on the held-out validation images (core.calibrate); 1.0 without them


ProgressHook = Callable[[Progress], None]


def one_cycle_lr(step: int, total_steps: int, peak: float, warmup: float = 0.25) -> float:
    """Linear one-cycle learning rate at ``step`` (0-based): peak/10 -> peak over ``warmup`` of the
    steps, then down to peak/1000."""
    total_steps = max(1, total_steps)
    up = max(1, int(total_steps * warmup))
    if step < up:
        return peak * (0.1 + 0.9 * step / up)
    frac = min(1.0, (step - up) / max(1, total_steps - up))
    return peak * (1.0 - frac) + peak * 1e-3 * frac


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
    (``core.preprocess``), so a faded or blurred digit reaches full ink again."""
    import tensorflow as tf

    peak = tf.maximum(tf.reduce_max(x, axis=[1, 2, 3], keepdims=True), 1e-3)
    return tf.clip_by_value((x / peak - 0.1) / 0.5, 0.0, 1.0)


def _augment_fn(seed: int, *, thickness: bool = True):
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


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: bool):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        ds = ds.map(_augment_fn(seed), num_parallel_calls=1)
    return ds.prefetch(2)


def _make_callback(hook: ProgressHook | None, stop: threading.Event | None, cfg: TrainConfig,
                   batches: int, lr_of_step: Callable[[int], float], history: dict):
    import keras

    class _Progress(keras.callbacks.Callback):
        """Feeds the hook, records history, applies the schedule and honours stop requests."""

        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()
            self.step = 0

        def on_train_batch_begin(self, batch, logs=None):
            self.model.optimizer.learning_rate.assign(lr_of_step(self.step))

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            logs = logs or {}
            elapsed = time.perf_counter() - self.t0
            total = cfg.epochs * batches
            eta = elapsed / self.step * (total - self.step)
            loss, acc = float(logs.get("loss", math.nan)), float(logs.get("accuracy", math.nan))
            lr = lr_of_step(self.step - 1)
            history["batch"].append({"step": self.step, "epoch": self.epoch, "loss": loss, "accuracy": acc,
                                     "elapsed": elapsed, "learning_rate": lr})
            if hook is not None:
                hook(Progress("batch", self.epoch, cfg.epochs, batch + 1, batches, loss, acc, None, None,
                              elapsed, eta, lr))
            if stop is not None and stop.is_set():
                self.model.stop_training = True

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / max(1, self.step) * (cfg.epochs * batches - self.step)
            row = {
                "epoch": epoch + 1, "step": self.step, "elapsed": elapsed,
                "loss": float(logs.get("loss", math.nan)), "accuracy": float(logs.get("accuracy", math.nan)),
                "val_loss": float(logs["val_loss"]) if "val_loss" in logs else None,
                "val_accuracy": float(logs["val_accuracy"]) if "val_accuracy" in logs else None,
            }
            history["epoch"].append(row)
            if hook is not None:
                hook(Progress("epoch", epoch + 1, cfg.epochs, batches, batches, row["loss"], row["accuracy"],
                              row["val_loss"], row["val_accuracy"], elapsed, eta, lr_of_step(self.step - 1)))

    return _Progress()


def compile_model(model, cfg: TrainConfig) -> None:
    """Compile with Adam (beta 0.9/0.99) and sparse cross-entropy; the schedule sets the rate per batch."""
    import keras

    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
            if cfg.label_smoothing else keras.losses.SparseCategoricalCrossentropy())
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate, beta_1=0.9, beta_2=0.99),
        loss=loss, metrics=["accuracy"],
    )


def fit(model, split: Split, cfg: TrainConfig, *, hook: ProgressHook | None = None,
        stop: threading.Event | None = None, epoch_end: Callable[[int, object], None] | None = None) -> dict:
    """Fit a compiled-or-not ``model`` on ``split`` following ``cfg``; returns the history dict.

    ``epoch_end(epoch, model)`` runs after each epoch (benchmarks evaluate there, off the clock)."""
    import keras
    import tensorflow as tf

    compile_model(model, cfg)
    batches = math.ceil(len(split.x_train) / cfg.batch_size)
    total = cfg.epochs * batches
    if cfg.schedule == "onecycle":
        lr_of_step = lambda s: one_cycle_lr(s, total, cfg.learning_rate)  # noqa: E731
    else:
        lr_of_step = lambda s: cfg.learning_rate  # noqa: E731
    y_train, y_val = split.y_train, split.y_val
    if cfg.label_smoothing:
        y_train = np.eye(10, dtype=np.float32)[y_train]
        y_val = np.eye(10, dtype=np.float32)[y_val]
    history: dict = {"epoch": [], "batch": []}
    callbacks = [_make_callback(hook, stop, cfg, batches, lr_of_step, history)]
    if epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epoch_end(e + 1, model)))
    train_ds = _dataset(split.x_train, y_train, cfg.batch_size, cfg.seed, cfg.augment)
    val = (split.x_val, y_val) if len(split.x_val) else None
    tf.random.set_seed(cfg.seed)
    model.fit(train_ds, epochs=cfg.epochs, shuffle=False, validation_data=val, validation_batch_size=1000,
              callbacks=callbacks, verbose=0)
    return history


def probabilities(model, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """float32 (N, 10) probabilities of a Keras model for (N, 28, 28[, 1]) inputs in [0, 1]."""
    x = np.asarray(x, np.float32).reshape(-1, 28, 28, 1)
    if len(x) == 0:
        return np.zeros((0, 10), np.float32)
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), np.float32)


def test_accuracy(model, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Share of test images classified right, in [0, 1]."""
    return float(np.mean(np.argmax(probabilities(model, x_test), axis=1) == y_test))


def train(cfg: TrainConfig, *, hook: ProgressHook | None = None, stop: threading.Event | None = None) -> TrainResult:
    """Train a model on MNIST and evaluate it on the 10,000 test images.

    Args:
        cfg: hyperparameters.
        hook: called with a ``Progress`` after every batch and every epoch (on the training thread).
        stop: when set, training ends cleanly after the current batch; the result has ``stopped=True``
            and the model as it is then, measured like a finished one (no test accuracy before the first batch).

    Returns:
        ``TrainResult``; ``train_seconds`` excludes data loading and the test evaluation.
    """
    mnist = cached_mnist()
    split = training_split(mnist, train_size=cfg.train_size, val_fraction=cfg.val_fraction, seed=cfg.seed)
    model = build_model(cfg.spec, seed=cfg.seed)
    t0 = time.perf_counter()
    history = fit(model, split, cfg, hook=hook, stop=stop)
    seconds = time.perf_counter() - t0
    stopped = bool(stop is not None and stop.is_set())
    trained = bool(history["batch"])
    acc = test_accuracy(model, split.x_test, split.y_test) if trained else None
    temperature = 1.0
    if trained and len(split.y_val):
        from core.calibrate import fit_temperature

        temperature = fit_temperature(probabilities(model, split.x_val), split.y_val)
    return TrainResult(cfg, model, history, acc, seconds, stopped, int(model.count_params()), mnist.sha256,
                       temperature)


# --- from a run to the store -----------------------------------------------------------------------

def _thin(rows: list[dict], limit: int = 400) -> list[dict]:
    """Keep at most ``limit`` evenly spaced rows (always the last one)."""
    if len(rows) <= limit:
        return list(rows)
    step = len(rows) / limit
    picked = [rows[int(i * step)] for i in range(limit - 1)]
    return picked + [rows[-1]]


def result_meta(result: TrainResult, *, command: str | None = None, shipped: bool = False) -> dict:
    """Store metadata for a finished run: family, hyperparameters, metrics, curves, data hash."""
    from core.learning.model import layer_summary

    meta = {
        "family": result.config.spec.family,
        "hyperparameters": result.config.to_dict(),
        "param_count": result.param_count,
        "test_accuracy": result.test_accuracy,
        "train_seconds": round(result.train_seconds, 2),
        "data_sha256": result.data_sha256,
        "history": {"epoch": result.history["epoch"], "batch": _thin(result.history["batch"])},
        "layers": layer_summary(result.model),
        # Shown confidences are softmax(logits / temperature) (core.calibrate); the digit never changes.
        "temperature": result.temperature,
    }
    if command:
        meta["command"] = command
    if result.stopped:
        meta["stopped_early"] = True  # its owner stopped it: the model as it was then
    if shipped:
        meta["shipped"] = True
    return meta


def save_result(result: TrainResult, store=None, *, name: str | None = None, command: str | None = None,
                shipped: bool = False) -> str:
    """Save a finished run's model, its "not a digit" detector and its metadata to the store
    (atomically); returns its name."""
    if result.model is None or not result.history["batch"]:
        raise ValueError("This run was stopped before its first batch; there is no model to save.")
    return save_with_served_files(result.model, result_meta(result, command=command, shipped=shipped), store,
                                  name=name)


def save_with_served_files(model, meta: dict, store=None, *, name: str | None = None,
                           overwrite: bool = False) -> str:
    """Save the model to the store (`core.learning.persist.save_model`) with the files the web tier
    serves it from (`served_files`: its exported inference file and its "not a digit" detector).

    Returns:
        The stored name.

    Raises:
        core.store.StoreError: a bad or taken name (checked before the files are made).
    """
    from core.learning.persist import save_model
    from core.store import ModelStore

    store = store or ModelStore()
    if name is not None:
        store.name_for_save(name, meta, overwrite=overwrite)
    return save_model(store, model, meta, name=name, overwrite=overwrite, files=served_files(model))


def served_files(model) -> dict[str, bytes]:
    """What the web tier serves a model from: its exported inference file (`core.learning.export`)
    and its "not a digit" detector (`fit_detector`), by store suffix."""
    from core.learning.export import export_onnx
    from core.store import NOVELTY_SUFFIX, ONNX_SUFFIX

    return {ONNX_SUFFIX: export_onnx(model), NOVELTY_SUFFIX: fit_detector(model).to_bytes()}


# Digits the detector is fitted on (each given clean and augmented) and held out for its threshold.
DETECTOR_FIT, DETECTOR_HELD = 20_000, 5_000


def fit_detector(model, *, seed: int = 0):
    """Fit the "not a digit" detector (`core.novelty`) of a trained model on MNIST training digits.

    The digits are given as stored and through the training augmentation (`_augment_fn`) without
    its stroke thickening, so low-resolution and blurred digits count as digits while solid blobs
    do not (with it, 43% of generated non-digits were flagged instead of 62%, and no more real
    digits kept: bench/reading_accuracy.py's tuning rows). Seconds on two cores.

    Returns:
        A `core.novelty.NoveltyDetector`.
    """
    import tensorflow as tf

    from core import novelty
    from core.learning.model import feature_model

    mnist = cached_mnist()
    order = np.random.default_rng(seed).permutation(len(mnist.y_train))
    augment = _augment_fn(seed + 1, thickness=False)
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
    return novelty.fit(fit_features, labels, held_features, sizes)
