"""Learning from corrections: continue training a copy of a model on the digits visitors corrected,
mixed with MNIST training images so it keeps what it knew.

The served model is never touched: ``finetune`` trains a clone (``keras.models.clone_model`` +
``set_weights``). Training reuses ``core.learning.train.fit`` (its Adam set-up, one-cycle schedule, progress
hook and stop request), with a small peak learning rate. Each correction is repeated so that the
corrections make up about ``CORRECTION_SHARE`` of the training mix; the random small affine
distortions of ``core.learning.train`` turn the repeats into variants instead of copies.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from core.config import IMAGE_SIZE, NUM_CLASSES
from core.data import Split, cached_mnist, to_model_input
from core.learning.model import recorded_spec
from core.storage.info import ModelInfo
from core.learning.train import (ProgressHook, TrainConfig, TrainResult, fit, result_info, save_with_served_files,
                                 test_accuracy)

DEFAULT_MNIST_MIX = 10_000
DEFAULT_EPOCHS = 3
DEFAULT_LEARNING_RATE = 1e-3  # a tenth of the recipes' peak: adjust the model, do not retrain it
DEFAULT_BATCH_SIZE = 128
CORRECTION_SHARE = 0.15  # corrections' share of the training mix after repetition
MAX_REPEATS = 50
MIN_CORRECTIONS = 1


@dataclass
class FinetuneResult(TrainResult):
    """A ``TrainResult`` (so ``core.learning.train.save_result`` accepts it) plus what the
    fine-tuning started from and what it achieved on the corrections.

    Attributes:
        base_model: the store name of the base model ("" if not given).
        corrections: how many corrections were used.
        repeats: how often each correction appeared per epoch.
        mnist_mix: MNIST training images mixed in.
        corrections_accuracy_before: the base model's accuracy on the corrections, in [0, 1].
        corrections_accuracy_after: the fine-tuned model's accuracy on them (None if stopped before the first batch).
        base_test_accuracy: the base model's MNIST test accuracy from its metadata, if known.
    """

    base_model: str = ""
    corrections: int = 0
    repeats: int = 1
    mnist_mix: int = 0
    corrections_accuracy_before: float | None = None
    corrections_accuracy_after: float | None = None
    base_test_accuracy: float | None = None
    settings: dict = field(default_factory=dict)


def _as_inputs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y).reshape(-1)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"Expected corrections of shape (N, 28, 28), got {x.shape}.")
    if len(x) < MIN_CORRECTIONS:
        raise ValueError("There are no corrections to learn from yet. Correct a few predictions on the "
                         "Draw or Upload page first.")
    if len(y) != len(x):
        raise ValueError(f"Got {len(x)} correction images but {len(y)} labels.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ValueError(f"Correction labels must be digits 0..9, got {np.unique(y).tolist()}.")
    if x.dtype == np.uint8:
        return to_model_input(x), y.astype(np.uint8)
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise ValueError("Correction images must be uint8 in 0..255 or floats in [0, 1].")
    return x[..., None], y.astype(np.uint8)


def repeats_for(corrections: int, mnist_mix: int, share: float = CORRECTION_SHARE) -> int:
    """How often to repeat each correction so that they make up about ``share`` of the mix
    (at least once, at most ``MAX_REPEATS`` times)."""
    if corrections <= 0:
        return 1
    want = share / (1.0 - share) * mnist_mix
    return int(min(MAX_REPEATS, max(1, math.ceil(want / corrections))))


def _label_smoothing(base: ModelInfo) -> float:
    """The base model's label smoothing: keep the loss it was trained with, and so its calibration."""
    try:
        value = float(base.hyperparameters.get("label_smoothing") or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return value if 0.0 <= value < 0.5 else 0.0


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    from core.learning.train import probabilities

    return float(np.mean(np.argmax(probabilities(model, x), axis=1) == y))


def copy_model(model):
    """A new Keras model with the same architecture and weights; the original is left as it was."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def finetune(
    base_model,
    corrections_x: np.ndarray,
    corrections_y: np.ndarray,
    *,
    mnist_mix: int = DEFAULT_MNIST_MIX,
    epochs: int = DEFAULT_EPOCHS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    repeats: int | None = None,
    augment: bool = True,
    seed: int = 0,
    base_name: str = "",
    base_info: ModelInfo | None = None,
    hook: ProgressHook | None = None,
    stop: threading.Event | None = None,
) -> FinetuneResult:
    """Continue training a copy of ``base_model`` on corrections mixed with MNIST training images,
    then measure it on the 10,000 MNIST test images.

    Args:
        base_model: the Keras model to start from; never modified.
        corrections_x: uint8 (N, 28, 28) in 0..255 (``CorrectionStore.arrays()``) or float in [0, 1].
        corrections_y: int (N,) right digits, 0..9.
        mnist_mix: MNIST training images mixed in (a fixed random sample), 0..60,000.
        epochs: passes over the mix.
        learning_rate: peak of the one-cycle schedule (warm-up from a tenth, decay to ~0).
        batch_size: images per step.
        repeats: copies of each correction per epoch; None picks enough for them to make up
            about ``CORRECTION_SHARE`` of the mix (``repeats_for``).
        augment: random small rotations, scalings, shears and shifts of every training image.
        seed: seeds the MNIST sample, the shuffling and the augmentation.
        base_name: the base model's store name, recorded in the result.
        base_info: the base model's store metadata: its label smoothing is kept; its architecture
            and test accuracy go into the record.
        hook: called with a ``core.learning.train.Progress`` after every batch and epoch.
        stop: when set, training ends after the current batch; the result has ``stopped=True`` and
            the model as it is then, measured like a finished one.

    Returns:
        ``FinetuneResult``; ``train_seconds`` excludes sampling and the evaluations.

    Raises:
        ValueError: no corrections, images or labels of the wrong shape or range, or settings out of range.
    """
    x_fix, y_fix = _as_inputs(corrections_x, corrections_y)
    mnist = cached_mnist()
    if not 0 <= int(mnist_mix) <= len(mnist.y_train):
        raise ValueError(f"mnist_mix must be between 0 and {len(mnist.y_train)}, got {mnist_mix}.")
    repeats = repeats_for(len(y_fix), int(mnist_mix)) if repeats is None else int(repeats)
    if not 1 <= repeats <= 1000:
        raise ValueError(f"repeats must be between 1 and 1000, got {repeats}.")
    base_info = base_info or ModelInfo()
    spec = recorded_spec(base_info, family=str(getattr(base_model, "name", "")))
    cfg = TrainConfig(spec=spec, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                      schedule="onecycle", train_size=int(mnist_mix), val_fraction=0.0, augment=augment,
                      label_smoothing=_label_smoothing(base_info), seed=seed)

    pick = np.random.default_rng(seed).permutation(len(mnist.y_train))[:int(mnist_mix)]
    x_train = np.concatenate([to_model_input(mnist.x_train[pick]), np.repeat(x_fix, repeats, axis=0)])
    y_train = np.concatenate([mnist.y_train[pick], np.repeat(y_fix, repeats)])
    empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
    split = Split(x_train, y_train, empty, np.zeros(0, np.uint8), to_model_input(mnist.x_test), mnist.y_test)

    before = _accuracy(base_model, x_fix, y_fix)
    model = copy_model(base_model)
    t0 = time.perf_counter()
    history = fit(model, split, cfg, hook=hook, stop=stop)
    seconds = time.perf_counter() - t0
    stopped = bool(stop is not None and stop.is_set())
    trained = bool(history["batch"])
    after = _accuracy(model, x_fix, y_fix) if trained else None
    test_acc = test_accuracy(model, split.x_test, split.y_test) if trained else None
    settings = {"base_model": base_name, "corrections": int(len(y_fix)), "repeats": repeats,
                "mnist_mix": int(mnist_mix), "correction_share": round(len(y_fix) * repeats / max(1, len(y_train)), 4)}
    return FinetuneResult(
        cfg, model, history, test_acc, seconds, stopped, int(model.count_params()), mnist.sha256,
        # Same network, same label smoothing, a few epochs more: the base model's calibration still holds.
        temperature=base_info.temperature,
        base_model=base_name, corrections=int(len(y_fix)), repeats=repeats, mnist_mix=int(mnist_mix),
        corrections_accuracy_before=before, corrections_accuracy_after=after,
        base_test_accuracy=base_info.test_accuracy, settings=settings,
    )


def finetune_info(result: FinetuneResult, *, command: str | None = None) -> ModelInfo:
    """Store metadata for a fine-tuned model: ``core.learning.train.result_info`` (family, hyperparameters,
    test accuracy, training seconds, history, layers) plus the base model and the corrections."""
    info = result_info(result, command=command)
    finetuning = {
        **result.settings,
        "corrections_accuracy_before": result.corrections_accuracy_before,
        "corrections_accuracy_after": result.corrections_accuracy_after,
        "base_test_accuracy": result.base_test_accuracy,
    }
    return info.replace(hyperparameters={**info.hyperparameters, "finetune": finetuning},
                        base_model=result.base_model, corrections=result.corrections)


def save_finetuned(result: FinetuneResult, store=None, *, name: str | None = None,
                   command: str | None = None) -> str:
    """Save a fine-tuned model and its metadata to the store as a new model; returns its name
    (default: ``<family>-finetuned-<UTC time>``).

    Raises:
        ValueError: the run was stopped before its first batch (a later stop saves the model so far).
        core.storage.store.StoreError: a bad or taken name.
    """
    from core.storage.store import ModelStore

    if result.model is None or not result.history["batch"]:
        raise ValueError("This fine-tuning was stopped before its first batch; there is no model to save.")
    store = store or ModelStore()
    name = name or store.new_name(f"{result.config.spec.family}-finetuned")
    return save_with_served_files(result.model, finetune_info(result, command=command), store, name=name)
