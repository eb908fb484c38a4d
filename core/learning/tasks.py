"""The learning tier's Dask task: one training or fine-tuning run, in a worker process.

`run` is what `core.learning.runs` submits. It reports through Dask's own primitives, named after the run's
id (`channel_names`): progress goes into a `distributed.Queue` in small batches (at most every
`FLUSH_S`, and at every epoch's end), and the run's owner stops it (keep the model so far) or
cancels it (no model) by setting a `distributed.Event`. The model, its exported inference file and
its detector are written to the model store by the worker, atomically, at the end; a run that dies
on the way leaves no model.

This module imports no Keras or TensorFlow at import time (the web tier imports it to name the
task); the work imports them in the worker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

FLUSH_S = 0.25  # progress is sent at most this often (each send is one round trip to the scheduler)


@dataclass(frozen=True)
class Channels:
    """The names of one run's Dask primitives."""

    progress: str  # Queue of lists of progress events
    stop: str  # Event: end after the current batch and save the model so far
    cancel: str  # Event: end after the current batch and save nothing
    started: str  # Event: set when a worker starts the run (a second start means the first worker died)


def channel_names(run_id: str) -> Channels:
    """The names of a run's Dask Queue (progress) and Events (stop, cancel, started)."""
    prefix = f"digits-run-{run_id}"
    return Channels(f"{prefix}-progress", f"{prefix}-stop", f"{prefix}-cancel", f"{prefix}-started")


class WorkerLost(RuntimeError):
    """The run was started before on a worker that died (killed, or past its memory limit)."""


class _Reporter:
    """Sends progress events to the run's Queue and watches its stop and cancel Events."""

    def __init__(self, channels: Channels):
        from distributed import Event, Queue

        self.queue = Queue(channels.progress)
        self.stop_event, self.cancel_event = Event(channels.stop), Event(channels.cancel)
        self.stop = threading.Event()  # what the training loop watches
        self.cancelled = False
        self._pending: list[dict] = []
        self._last = 0.0

    def send(self, event: dict, *, now: bool = False) -> None:
        self._pending.append(event)
        if now or time.monotonic() - self._last >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if self._pending:
            self.queue.put(self._pending)
            self._pending = []
        if not self.stop.is_set():
            if self.cancel_event.is_set():
                self.cancelled = True
                self.stop.set()
            elif self.stop_event.is_set():
                self.stop.set()

    def hook(self, p) -> None:
        """A `core.learning.train.ProgressHook`."""
        self.send({"kind": p.kind, "epoch": p.epoch, "epochs": p.epochs, "batch": p.batch, "batches": p.batches,
                   "loss": p.loss, "accuracy": p.accuracy, "val_loss": p.val_loss, "val_accuracy": p.val_accuracy,
                   "elapsed": p.elapsed, "eta": p.eta}, now=p.kind == "epoch")


def run(run_id: str, request: dict, models_dir: str) -> dict:
    """Train (``request["kind"] == "train"``) or fine-tune (``"finetune"``) and save the model.

    Args:
        run_id: names the run's Dask primitives (`channel_names`).
        request: ``{"kind", "config": TrainConfig.to_dict(), "name": str | None, "command": str,
            "shipped": bool}``;
            fine-tuning adds ``"base_model"`` and ``"corrections": (x uint8 (N, 28, 28), y (N,))``.
        models_dir: the model store's folder, as the worker sees it.

    Returns:
        ``{"state": "finished" | "stopped" | "cancelled", "model_name", "test_accuracy",
        "train_seconds", "info": {...}}``; a stopped run's model is saved, a cancelled one's is not.

    Raises:
        WorkerLost: this run already started on a worker that died; it is not run twice.
        core.storage.store.StoreError, ValueError: the model cannot be saved, or bad settings.
    """
    from distributed import Event, get_worker

    channels = channel_names(run_id)
    started = Event(channels.started)
    if not started.is_set():
        started.set()
    else:
        raise WorkerLost("The worker running it stopped in the middle (it was killed, or it went past its memory "
                         "limit); the run was not restarted.")
    reporter = _Reporter(channels)
    reporter.send({"kind": "started", "worker": get_worker().address, "at": time.time()}, now=True)
    if reporter.cancelled:
        return {"state": "cancelled", "model_name": None, "test_accuracy": None, "train_seconds": 0.0, "info": {}}
    work = _finetune if request["kind"] == "finetune" else _train
    return work(request, models_dir, reporter)


def _phase(reporter: _Reporter, text: str) -> None:
    reporter.send({"kind": "phase", "text": text}, now=True)


def _outcome(reporter: _Reporter, result) -> str:
    if reporter.cancelled:
        return "cancelled"
    return "stopped" if result.stopped else "finished"


def _train(request: dict, models_dir: str, reporter: _Reporter) -> dict:
    from core.learning.train import TrainConfig, save_result, train
    from core.storage.store import ModelStore

    cfg = TrainConfig.from_dict(request["config"])
    store = ModelStore(models_dir)
    if request.get("name"):
        store.name_for_save(request["name"], "model")  # a bad or taken name fails before training
    _phase(reporter, "Loading MNIST and building the model…")
    result = train(cfg, hook=reporter.hook, stop=reporter.stop)
    state, name = _outcome(reporter, result), None
    if state != "cancelled" and result.history["batch"]:
        _phase(reporter, "Saving the model, its inference file and its not-a-digit detector…")
        name = save_result(result, store, name=request.get("name"), command=request.get("command"),
                           shipped=bool(request.get("shipped")))
    reporter.flush()
    return {"state": state, "model_name": name, "test_accuracy": result.test_accuracy,
            "train_seconds": result.train_seconds, "info": {}}


def _finetune(request: dict, models_dir: str, reporter: _Reporter) -> dict:
    from core.learning.finetune import finetune, save_finetuned
    from core.learning.persist import load_model
    from core.storage.store import ModelStore

    store = ModelStore(models_dir)
    base_name = request["base_model"]
    _phase(reporter, f"Loading {base_name} and the corrections…")
    base_info, base_model = store.info(base_name), load_model(store, base_name)
    x, y = request["corrections"]
    result = finetune(base_model, x, y, base_name=base_name, base_info=base_info, hook=reporter.hook,
                      stop=reporter.stop)
    state, name = _outcome(reporter, result), None
    if state != "cancelled" and result.history["batch"]:
        _phase(reporter, "Saving the model, its inference file and its not-a-digit detector…")
        name = save_finetuned(result, store, name=request.get("name"), command=request.get("command"))
    reporter.flush()
    info = {"corrections_accuracy_before": result.corrections_accuracy_before,
            "corrections_accuracy_after": result.corrections_accuracy_after,
            "base_test_accuracy": result.base_test_accuracy}
    return {"state": state, "model_name": name, "test_accuracy": result.test_accuracy,
            "train_seconds": result.train_seconds, "info": info}
