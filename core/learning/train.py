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
from typing import Callable, Iterable, Literal

import numpy as np

from core.data import Split, cached_mnist, training_split
from core.learning.model import ModelSpec, build_model
from core.storage.info import ModelInfo

Schedule = Literal["onecycle", "constant"]
MIN_LEARNING_RATE = 1e-6
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run.

    Attributes:
        spec: the architecture.
        epochs: passes over the training images, 1..100.
        batch_size: images per step, 8..4096.
        learning_rate: the peak learning rate (one-cycle) or the constant one, 1e-6..1.
        schedule: "onecycle" (linear warm-up for 25% of the steps, then linear decay to ~0) or "constant".
        train_size: training images used, validation included (None: all 60,000).
        val_fraction: share of ``train_size`` held out for validation.
        augment: random small affine distortions (rotation, scale, shear, shift) of training images.
        label_smoothing: cross-entropy label smoothing in [0, 0.5).
        seed: seeds the split, the shuffling, the augmentation and the initial weights, 0..2**31-1.

    Raises:
        ValueError: a value outside these limits (the message names it).
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
        if not MIN_LEARNING_RATE <= float(self.learning_rate) <= 1.0:
            raise ValueError(f"learning_rate must be between {MIN_LEARNING_RATE:g} and 1, got {self.learning_rate}.")
        if self.schedule not in ("onecycle", "constant"):
            raise ValueError(f"schedule must be 'onecycle' or 'constant', got {self.schedule!r}.")
        if self.train_size is not None and not 0 <= int(self.train_size) <= 60000:
            raise ValueError(f"train_size must be between 0 and 60,000 images, got {self.train_size}.")
        if self.train_size is not None and int(self.train_size) == 60000:
            object.__setattr__(self, "train_size", None)  # all of them: one way to say it
        if not 0 <= float(self.val_fraction) <= 0.5:
            raise ValueError(f"val_fraction must be between 0 and 0.5, got {self.val_fraction}.")
        if not 0 <= float(self.label_smoothing) < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}.")
        if not 0 <= int(self.seed) <= MAX_SEED:
            raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}.")
        if self.spec.family == "custom":  # the memory a stack needs grows with the batch
            from core.learning.architecture import check_stack

            check_stack(self.spec.layers, int(self.batch_size))

    def to_dict(self) -> dict:
        """The settings as plain JSON values (stored in a model's metadata, sent to a Dask task)."""
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Settings from `to_dict`'s output; unknown keys are ignored.

        Raises:
            TypeError, ValueError: values outside the limits (see the class).
        """
        data = dict(data)
        data["spec"] = ModelSpec.from_dict(data.get("spec", {}))
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# Named recipes. "fast": the quickest way to 99% on a 2-core CPU (bench/train_speed.py times it
# against the keras-io reference convnet; figures in bench/README.md): one epoch, the whole
# one-cycle schedule in it, at a peak rate of 0.02 with label smoothing. "default": the shipped
# model's recipe (see README).
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
    temperature: float = 1.0  # fitted on the held-out validation images (core.serving.calibrate); 1.0 without them


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


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: bool):
    import tensorflow as tf

    from core.learning.augment import augment_fn

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        ds = ds.map(augment_fn(seed), num_parallel_calls=1)
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
        from core.serving.calibrate import fit_temperature

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


def result_info(result: TrainResult, *, command: str | None = None, shipped: bool = False) -> ModelInfo:
    """Store metadata for a finished run: family, hyperparameters, metrics, curves, data hash."""
    from core.learning.model import layer_summary

    return ModelInfo(
        family=result.config.spec.family,
        hyperparameters=result.config.to_dict(),
        params=result.param_count,
        test_accuracy=result.test_accuracy,
        train_seconds=round(result.train_seconds, 2),
        data_sha256=result.data_sha256,
        history={"epoch": result.history["epoch"], "batch": _thin(result.history["batch"])},
        layers=layer_summary(result.model),
        # Shown confidences are softmax(logits / temperature) (core.serving.calibrate); the digit never changes.
        temperature=result.temperature,
        command=command or None,
        stopped_early=result.stopped,  # its owner stopped it: the model as it was then
        shipped=shipped,
    )


def save_result(result: TrainResult, store=None, *, name: str | None = None, command: str | None = None,
                shipped: bool = False) -> str:
    """Save a finished run's model, its "not a digit" detector and its metadata to the store
    (atomically); returns its name."""
    if result.model is None or not result.history["batch"]:
        raise ValueError("This run was stopped before its first batch; there is no model to save.")
    return save_with_served_files(result.model, result_info(result, command=command, shipped=shipped), store,
                                  name=name)


def save_with_served_files(model, info: ModelInfo, store=None, *, name: str | None = None,
                           overwrite: bool = False) -> str:
    """Save the model to the store (`core.learning.persist.save_model`) with the files the web tier
    serves it from (`served_files`: its exported inference file and its "not a digit" detector).

    Returns:
        The stored name.

    Raises:
        core.storage.store.StoreError: a bad or taken name (checked before the files are made).
    """
    from core.learning.persist import save_model
    from core.storage.store import ModelStore

    store = store or ModelStore()
    if name is not None:
        store.name_for_save(name, info.family, overwrite=overwrite)
    return save_model(store, model, info, name=name, overwrite=overwrite, files=served_files(model))


def served_files(model, only: Iterable[str] | None = None) -> dict[str, bytes]:
    """What the web tier serves a model from, by store suffix: its exported inference file
    (`core.learning.export.export_onnx`), its "not a digit" detector (`core.learning.detector.fit_detector`)
    and its layers file for the Inside page (`core.learning.export.export_layers_onnx`).

    Args:
        model: a trained Keras model from `core.learning.model.build_model`.
        only: the store suffixes to make (an iterable of `core.storage.store.ONNX_SUFFIX`,
            ``NOVELTY_SUFFIX``, ``LAYERS_SUFFIX``); None makes them all. What is not asked for is not
            made (fitting the detector takes seconds).

    Returns:
        Suffix -> the file's bytes.

    Raises:
        ValueError: a suffix in ``only`` that is none of these, or a model the exports cannot take
            (no ``relu_*`` layer, no convolution or dense layer).
    """
    from core.learning.detector import fit_detector
    from core.learning.export import export_layers_onnx, export_onnx
    from core.storage.store import LAYERS_SUFFIX, NOVELTY_SUFFIX, ONNX_SUFFIX

    makers = {ONNX_SUFFIX: export_onnx, NOVELTY_SUFFIX: lambda m: fit_detector(m).to_bytes(),
              LAYERS_SUFFIX: export_layers_onnx}
    wanted = list(makers) if only is None else list(dict.fromkeys(only))
    unknown = [suffix for suffix in wanted if suffix not in makers]
    if unknown:
        raise ValueError(f"Cannot make a served file with suffix {unknown[0]!r}: expected one of {', '.join(makers)}.")
    return {suffix: makers[suffix](model) for suffix in wanted}
