"""Training time to 99% test accuracy: the project's "fast" recipe against the keras-io convnet.

In one run, on the full real MNIST (``core.data.cached_mnist()``):

1. the project's recipe ``core.learning.train.RECIPES["fast"]`` (``build_model`` + ``core.learning.train.fit``);
2. the reference, keras-io ``examples/vision/mnist_convnet.py``: Conv32-3 -> MaxPool -> Conv64-3 ->
   MaxPool -> Flatten -> Dropout 0.5 -> Dense 10 softmax, Adam (defaults), categorical
   cross-entropy on one-hot labels, batch 128, ``validation_split=0.1`` (54,000 training images
   per epoch), at most ``--reference-max-epochs`` epochs.

After every epoch both are evaluated on the 10,000 test images OFF the clock; a run stops at the
first epoch with test accuracy >= 0.990, and its training time up to that epoch is the figure.
Then the shipped default model is evaluated (no retraining) and its recorded training time read.

Run: ``python bench/train_speed.py`` (several minutes) or ``--quick`` (a smoke run in about a
minute). The last line of output is JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Clock, emit_json, load_1min, machine_line, say  # noqa: E402

TARGET = 0.990
REFERENCE_BATCH = 128
QUICK_TRAIN = 2000  # images per run in --quick
QUICK_TEST = 2000  # test images per evaluation in --quick

# core.learning.train.fit passes a shuffled tf.data.Dataset; Keras warns that its own shuffle flag is moot.
warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")


class Run:
    """Per-epoch bookkeeping of one timed training run: clock, evaluation off the clock, stop at target."""

    def __init__(self, label: str, x_test, y_test, target: float):
        self.label, self.x_test, self.y_test, self.target = label, x_test, y_test, target
        self.clock = Clock()
        self.curve: list[dict] = []  # epoch, train_s, cpu_s, test_accuracy
        self.reached_at: dict | None = None
        self.excluded_s = 0.0  # validation passes inside fit (reference), also off the clock
        self.epochs_planned = 0
        self.load_start = load_1min()

    def epoch_done(self, epoch: int, model) -> None:
        from core.learning.train import test_accuracy

        wall, cpu = self.clock.pause()
        acc = test_accuracy(model, self.x_test, self.y_test)
        row = {"epoch": epoch, "train_s": wall, "cpu_s": cpu, "test_accuracy": acc}
        self.curve.append(row)
        hit = acc >= self.target and self.reached_at is None
        if hit:
            self.reached_at = row
            model.stop_training = True
        say(f"  {self.label:9s} epoch {epoch:2d}   train {wall:7.2f} s   cpu {cpu:7.2f} s   "
            f"test accuracy {acc:.4f}{'   <- reached %.3f' % self.target if hit else ''}   (load {load_1min()})")
        self.clock.resume()

    @property
    def last(self) -> dict:
        return self.curve[-1] if self.curve else {"epoch": 0, "train_s": None, "cpu_s": None, "test_accuracy": None}


def run_project(mnist, x_test, y_test, quick: bool) -> Run:
    from core.data import training_split
    from core.learning.model import build_model
    from core.learning.train import RECIPES, fit

    cfg = RECIPES["fast"]
    if quick:
        cfg = replace(cfg, epochs=1, train_size=QUICK_TRAIN)
    split = training_split(mnist, train_size=cfg.train_size, val_fraction=cfg.val_fraction, seed=cfg.seed)
    model = build_model(cfg.spec, seed=cfg.seed)
    say(f"project: RECIPES['fast'] {cfg.spec.family} filters={cfg.spec.filters} hidden={cfg.spec.hidden}, "
        f"{model.count_params():,} params; {cfg.epochs} epoch(s), batch {cfg.batch_size}, peak lr {cfg.learning_rate} "
        f"{cfg.schedule}, {len(split.x_train):,} training images")
    run = Run("project", x_test, y_test, TARGET)
    run.clock.start()
    fit(model, split, cfg, epoch_end=run.epoch_done)
    run.clock.pause()
    run.epochs_planned = cfg.epochs
    return run


def reference_model():
    """keras-io examples/vision/mnist_convnet.py, layer for layer."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ])


def run_reference(mnist, x_test, y_test, max_epochs: int, quick: bool) -> Run:
    import keras

    from core.data import to_model_input

    n = QUICK_TRAIN if quick else len(mnist.y_train)
    x_train = to_model_input(mnist.x_train[:n])
    y_train = keras.utils.to_categorical(mnist.y_train[:n], 10)
    keras.utils.set_random_seed(0)
    model = reference_model()
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    say(f"reference: keras-io mnist_convnet, {model.count_params():,} params; up to {max_epochs} epoch(s), "
        f"batch {REFERENCE_BATCH}, Adam defaults, validation_split 0.1 ({n - int(n * 0.1):,} training images)")
    run = Run("reference", x_test, y_test, TARGET)

    class OffClock(keras.callbacks.Callback):
        """fit's own validation pass and the test evaluation after each epoch stay off the clock."""

        def on_test_begin(self, logs=None):
            self._t0 = time.perf_counter()
            run.clock.pause()

        def on_test_end(self, logs=None):
            run.excluded_s += time.perf_counter() - self._t0
            run.clock.resume()

        def on_epoch_end(self, epoch, logs=None):
            run.epoch_done(epoch + 1, self.model)

    run.clock.start()
    model.fit(x_train, y_train, batch_size=REFERENCE_BATCH, epochs=max_epochs, validation_split=0.1,
              callbacks=[OffClock()], verbose=0)
    run.clock.pause()
    run.epochs_planned = max_epochs
    return run


def default_figures(mnist) -> dict:
    """Test accuracy and recorded training time of the shipped model, without retraining."""
    from core import config
    from core.data import to_model_input
    from core.learning.persist import load_model
    from core.learning.train import test_accuracy
    from core.storage.store import ModelStore

    store = ModelStore()
    listing = store.list()
    name = config.DEFAULT_MODEL_NAME if listing.get(config.DEFAULT_MODEL_NAME) else store.active_name()
    if not name:
        say(f"default model: none in the store ({store.root}) yet; default_test_accuracy and "
            "default_train_s are null. Ship one (python -m core train ... --name default-cnn --shipped) and rerun.")
        return {"default_model": None, "default_test_accuracy": None, "default_train_s": None}
    model = load_model(store, name)
    meta = store.info(name)
    acc = test_accuracy(model, to_model_input(mnist.x_test), mnist.y_test)
    train_s = meta.train_seconds
    say(f"default model: {name} ({model.count_params():,} params): test accuracy {acc:.4f} on 10,000 images "
        f"(recorded {meta.test_accuracy}); recorded training time {train_s} s "
        f"(from its metadata, measured when it was trained, not in this run)")
    return {"default_model": name, "default_test_accuracy": acc,
            "default_train_s": float(train_s) if train_s is not None else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-max-epochs", type=int, default=15,
                        help="cap on the reference's epochs (default 15); capped runs use the time to the cap")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_TRAIN} training and {QUICK_TEST} test images, 1 epoch each")
    args = parser.parse_args(argv)
    max_epochs = 1 if args.quick else max(1, args.reference_max_epochs)

    from core.data import cached_mnist, to_model_input

    say(machine_line())
    if args.quick:
        say(f"QUICK smoke run: {QUICK_TRAIN} training images, {QUICK_TEST} test images, 1 epoch each; "
            "the figures mean nothing")
    mnist = cached_mnist()
    n_test = QUICK_TEST if args.quick else len(mnist.y_test)
    x_test, y_test = to_model_input(mnist.x_test[:n_test]), mnist.y_test[:n_test]
    say(f"target: test accuracy >= {TARGET} on {n_test:,} test images, evaluated after each epoch off the clock")

    project = run_project(mnist, x_test, y_test, args.quick)
    reference = run_reference(mnist, x_test, y_test, max_epochs, args.quick)
    default = default_figures(mnist)

    p_hit, r_hit = project.reached_at, reference.reached_at
    r_row = r_hit or reference.last
    reference_s, reference_cpu = r_row["train_s"], r_row["cpu_s"]
    project_s = p_hit["train_s"] if p_hit else None
    project_cpu = p_hit["cpu_s"] if p_hit else None
    speedup = reference_s / project_s if project_s else None
    speedup_cpu = reference_cpu / project_cpu if project_cpu else None
    capped = r_hit is None

    say("")
    if p_hit:
        say(f"project   reached {TARGET} at epoch {p_hit['epoch']}: {project_s:.2f} s wall, {project_cpu:.2f} s cpu")
    else:
        last = project.last
        say(f"project   did NOT reach {TARGET} in its {project.epochs_planned} epoch(s): best test accuracy "
            f"{max((r['test_accuracy'] for r in project.curve), default=0):.4f}, {last['train_s']:.2f} s wall "
            f"-> project_reached false, no speedup")
    if capped:
        say(f"reference did NOT reach {TARGET} in {max_epochs} epoch(s) (capped): {reference_s:.2f} s wall, "
            f"{reference_cpu:.2f} s cpu to the cap, last test accuracy {r_row['test_accuracy']:.4f}")
    else:
        say(f"reference reached {TARGET} at epoch {r_hit['epoch']}: {reference_s:.2f} s wall, {reference_cpu:.2f} s cpu")
    say(f"reference validation passes (inside fit, excluded like the test evaluations): {reference.excluded_s:.2f} s")
    if speedup:
        say(f"speedup (reference s / project s): {speedup:.1f}x wall, {speedup_cpu:.1f}x cpu"
            + ("   (a lower bound: the reference was capped)" if capped else ""))
    say(f"load average 1 min: {project.load_start} at start, {reference.load_start} before the reference, "
        f"{load_1min()} now (2 CPUs; above ~2 the wall times are inflated, the cpu seconds less so)")

    def curve(run: Run) -> list[list]:
        return [[r["epoch"], r["train_s"], r["test_accuracy"]] for r in run.curve]

    emit_json({
        "reference_s_to_99": reference_s, "project_s_to_99": project_s, "speedup": speedup,
        "reference_capped": capped, **{k: default[k] for k in ("default_test_accuracy", "default_train_s")},
        "project_reached": p_hit is not None,
        "project_test_accuracy": (p_hit or project.last)["test_accuracy"],
        "reference_test_accuracy": r_row["test_accuracy"],
        "project_epochs": (p_hit or project.last)["epoch"], "reference_epochs": r_row["epoch"],
        "project_cpu_s": project_cpu, "reference_cpu_s": reference_cpu, "speedup_cpu": speedup_cpu,
        "project_total_s": project.last["train_s"],
        "reference_val_s_excluded": reference.excluded_s,
        "project_curve": curve(project), "reference_curve": curve(reference),
        "default_model": default["default_model"], "target": TARGET, "quick": bool(args.quick),
        "load_1min": [project.load_start, reference.load_start, load_1min()],
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
