"""Command line: ``python -m core train | export | evaluate | activate | predict | list | delete``.

stdout carries only results (JSON with ``--json``); logs and progress go to stderr. Exit codes: 0
done; 1 a file or a model that cannot be used; 2 a usage error. ``evaluate``, ``predict``, ``list``
and ``activate`` read models through their exported files (ONNX Runtime) and never import
TensorFlow; ``train`` and ``export`` are the learning tier's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _ints(text: str) -> tuple[int, ...]:
    from core.learning.settings import parse_sizes  # only when a train option is given: `predict` stays light

    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="MNIST digit recognizer: train, evaluate, predict.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on MNIST and save it to the store")
    t.add_argument("--recipe", choices=["fast", "default"],
                   help="start from a named recipe (core.learning.train.RECIPES); the options below override it")
    t.add_argument("--family", choices=["mlp", "cnn"])
    t.add_argument("--layers", help="a custom stack instead of a family, as in a Train page link, e.g. "
                                    "conv32k3s1,pool2,bn,dense128,drop0.2 (see core/learning/architecture.py)")
    t.add_argument("--hidden", type=_ints, help="hidden (MLP) or dense (CNN) layer sizes, e.g. 256,128")
    t.add_argument("--filters", type=_ints, help="CNN conv widths, e.g. 32,64")
    t.add_argument("--dropout", type=float)
    t.add_argument("--no-batch-norm", action="store_true")
    t.add_argument("--epochs", type=int, help="default 3")
    t.add_argument("--batch-size", type=int, help="default 128")
    t.add_argument("--lr", type=float, help="peak learning rate (one-cycle) or constant rate; default 0.01")
    t.add_argument("--schedule", choices=["onecycle", "constant"])
    t.add_argument("--train-size", type=int, help="training images used (default: all 60,000)")
    t.add_argument("--val-fraction", type=float, help="default 0.1")
    t.add_argument("--augment", action="store_true", help="random small rotations, scalings, shears and shifts")
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--name", help="store name (default: FAMILY-TIMESTAMP)")
    t.add_argument("--shipped", action="store_true", help="mark as the shipped default model")
    t.add_argument("--activate", action="store_true", help="make it the server's default model")

    e = sub.add_parser("evaluate", help="test accuracy on the 10,000 MNIST test images")
    e.add_argument("--model")
    e.add_argument("--json", action="store_true")

    a = sub.add_parser("activate", help="set the server's default model (only a model that loads)")
    a.add_argument("name")

    x = sub.add_parser("export", help="write the served files a stored model lacks: its inference file, "
                                      "detector and layers file (older models)")
    x.add_argument("name")
    x.add_argument("--all", action="store_true", help="write every served file again, intact ones included")

    pr = sub.add_parser("predict", help="read the digit in image files")
    pr.add_argument("files", nargs="+")
    pr.add_argument("--model")
    pr.add_argument("--json", action="store_true")
    pr.add_argument("--multi", action="store_true", help="read several digits per image, left to right")

    ls = sub.add_parser("list", help="list the models in the store")
    ls.add_argument("--json", action="store_true")

    d = sub.add_parser("delete", help="delete a model from the store (operator action)")
    d.add_argument("name")
    return p


def train_config(args):
    """The run's configuration: a recipe (or the family's defaults) with the given options on top."""
    from dataclasses import replace

    from core.learning.model import default_spec
    from core.learning.train import RECIPES, TrainConfig

    if args.recipe:
        base = RECIPES[args.recipe]
        if args.family and args.family != base.spec.family:
            base = replace(base, spec=default_spec(args.family))
    else:
        base = TrainConfig(spec=default_spec(args.family or "cnn"))
    spec_changes = {k: v for k, v in {"family": args.family, "hidden": args.hidden, "filters": args.filters,
                                      "dropout": args.dropout}.items() if v is not None}
    if args.no_batch_norm:
        spec_changes["batch_norm"] = False
    changes = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr,
                                 "schedule": args.schedule, "train_size": args.train_size,
                                 "val_fraction": args.val_fraction, "label_smoothing": args.label_smoothing,
                                 "seed": args.seed}.items() if v is not None}
    if args.augment:
        changes["augment"] = True
    if args.layers:
        from core.learning.model import ModelSpec

        return replace(base, spec=ModelSpec(family="custom", layers=args.layers), **changes)
    return replace(base, spec=replace(base.spec, **spec_changes), **changes)


def cmd_train(args) -> int:
    """Train on the configured Dask cluster (`core.learning.runs`): an embedded LocalCluster by default."""
    import secrets

    from core.learning.runs import RunBoard, RunError
    from core.storage.store import ModelStore, StoreError

    cfg = train_config(args)
    store = ModelStore()
    if args.name is not None:  # before training, not after: a bad or taken name is a usage error
        try:
            store.name_for_save(args.name, "model")
        except StoreError as exc:
            raise ValueError(str(exc)) from exc
    owner = secrets.token_urlsafe(18)
    board = RunBoard.connect(models_dir=str(store.root))
    try:
        run_id = board.submit(cfg, owner, name=args.name, shipped=args.shipped,
                              command="python -m core " + shlex.join(sys.argv[1:]))
        try:
            snap = _follow(board, run_id)
        except KeyboardInterrupt:
            _log("cancelling: nothing will be saved")
            board.cancel(run_id, owner)
            snap = board.wait(run_id, timeout=60)
    finally:
        board.close()
    if snap.state != "finished" or not snap.model_name:
        raise RunError(f"The run {snap.state}: {snap.error or 'no model was saved'}")
    _log(f"test accuracy {snap.test_accuracy:.4f} in {snap.train_seconds:.1f}s of training")
    if args.activate:
        store.set_active(snap.model_name)
    print(json.dumps({"model": snap.model_name, "test_accuracy": snap.test_accuracy,
                      "train_seconds": round(snap.train_seconds, 2)}))
    return 0


def _follow(board, run_id: str):
    """Log a run's progress on stderr until it ends; returns its last snapshot."""
    import time

    epochs_shown, batches_shown, last_log, phase = 0, 0, -float("inf"), None
    while True:
        snap = board.get(run_id)
        # The newest batch at most every 2 s (always the first), then the epochs that ended.
        if len(snap.batches) > batches_shown and time.monotonic() - last_log >= 2.0:
            b, last_log = snap.batches[-1], time.monotonic()
            _log(f"  epoch {b['epoch']}/{snap.config.epochs} batch {b['batch']}/{b['batches']} loss {b['loss']:.4f} "
                 f"acc {b['accuracy']:.4f} eta {b['eta']:.0f}s")
        batches_shown = len(snap.batches)
        for e in snap.epochs[epochs_shown:]:
            val = f" val_loss {e['val_loss']:.4f} val_acc {e['val_accuracy']:.4f}" if e["val_loss"] is not None else ""
            _log(f"epoch {e['epoch']}/{snap.config.epochs} loss {e['loss']:.4f} acc {e['accuracy']:.4f}{val}")
        epochs_shown = len(snap.epochs)
        if snap.phase and snap.phase != phase:
            _log(snap.phase)
        phase = snap.phase
        if not snap.active:
            return snap
        time.sleep(0.25)


def _predictor(name: str | None):
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore, StoreError

    store = ModelStore()
    name = name or store.active_name()
    if name is None:
        raise StoreError(f"The model store {store.root} has no usable model; train one with `python -m core train`.")
    return Predictor.load(name, store)


def cmd_evaluate(args) -> int:
    """``evaluate``: the model's accuracy on the 10,000 MNIST test images; returns the exit code."""
    from core.data import cached_mnist

    pred = _predictor(args.model)
    m = cached_mnist()
    acc = float((pred.probabilities(m.x_test.astype("float32") / 255.0).argmax(axis=1) == m.y_test).mean())
    if args.json:
        print(json.dumps({"model": pred.name, "test_accuracy": round(acc, 6)}))
    else:
        print(f"{pred.name}: test accuracy {acc:.4%} on {len(m.y_test)} MNIST test images")
    return 0


def cmd_predict(args) -> int:
    """``predict``: read each file (one digit, or a number with ``--multi``); returns 1 when a file
    could not be read, else 0."""

    pred = _predictor(args.model)
    failed = False
    for file in args.files:
        obj: dict = {"file": file}
        try:
            data = Path(file).read_bytes()
            if args.multi:
                from core.reading.segment import read_number
                obj.update(read_number(pred, data).to_json())
            else:
                obj.update(pred.read(data).to_json())
        except (OSError, ValueError) as exc:  # unreadable path or image
            failed = True
            msg = str(exc) if isinstance(exc, ValueError) else f"cannot open the file: {exc.strerror or exc}"
            obj["error"] = msg
        if args.json:
            print(json.dumps(obj), flush=True)
        elif "error" in obj:
            print(f"{file}: error: {obj['error']}")
        elif obj.get("digit") is None and "number" not in obj:
            print(f"{file}: {obj.get('message', 'no digit found')}")
        elif "number" in obj:
            print(f"{file}: {obj['number']}")
        else:
            print(f"{file}: {obj['digit']} ({obj['confidence']:.1%})")
    return 1 if failed else 0


def cmd_activate(args) -> int:
    """Make a model the server's default, but only one that loads and answers."""
    import numpy as np

    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    store = ModelStore()
    Predictor.load(args.name, store).probabilities(np.zeros((1, 28, 28), np.float32))
    store.set_active(args.name)
    _log(f"{args.name} is now the server's default model")
    return 0


def cmd_export(args) -> int:
    """``export``: write the served files (inference file, "not a digit" detector, layers file) that
    a stored model lacks, or whose checksum fails, and record their checksums; with ``--all``, every
    one of them. Files that are present and intact are kept byte for byte: an export is not
    reproducible to the byte (tf2onnx numbers its nodes in varying order; the detector's fit differs
    in the last bits), and the files served must not change under a model. Learning tier: imports Keras.

    Returns:
        0 (also when there was nothing to write).

    Raises:
        StoreError: no such model, or its ``.keras`` cannot be loaded.
    """
    from core.learning.persist import load_model
    from core.learning.train import served_files
    from core.storage.store import LAYERS_SUFFIX, NOVELTY_SUFFIX, ONNX_SUFFIX, ModelStore

    store = ModelStore()
    wanted = [ONNX_SUFFIX, NOVELTY_SUFFIX, LAYERS_SUFFIX] if args.all else store.unusable_files(args.name)
    if not wanted:
        _log(f"nothing to export: every served file of {args.name} is there and matches its checksum "
             "(--all writes them again)")
        return 0
    model = load_model(store, args.name)
    store.attach(args.name, served_files(model, only=wanted))
    _log(f"exported {args.name}: wrote {', '.join(args.name + suffix for suffix in wanted)}, checksums recorded")
    return 0


def cmd_list(args) -> int:
    """``list``: the store's usable models (``*`` marks the default) and the problems found; returns 0."""
    from core.storage.store import ModelStore

    store = ModelStore()
    listing = store.list()
    active = store.active_name()
    rows = [{"name": e.name, "family": e.info.family, "params": e.info.params,
             "test_accuracy": e.info.test_accuracy, "created": e.info.created,
             "active": e.name == active} for e in listing.entries]
    for problem in listing.problems.values():
        _log(problem)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            acc = f"{r['test_accuracy']:.2%}" if r["test_accuracy"] is not None else "?"
            print(f"{'*' if r['active'] else ' '} {r['name']:32s} {r['family']:4s} {r['params']:>9,} params  {acc}  {r['created']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: the command line); returns the exit code: 0 done, 1 an
    unusable file or model (the message on stderr), 2 a usage error (argparse's own)."""
    args = _parser().parse_args(argv)
    from core.data import DataError
    from core.learning.runs import RunError
    from core.storage.store import ModelStore, StoreError

    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "activate":
            return cmd_activate(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "list":
            return cmd_list(args)
        if args.command == "delete":
            ModelStore().delete(args.name)
            _log(f"deleted {args.name}")
            return 0
    except (StoreError, DataError, RunError) as exc:  # a model, data or run that cannot be used
        _log(f"error: {exc}")
        return 1
    except ValueError as exc:  # settings that make no sense
        _log(f"error: {exc}")
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
