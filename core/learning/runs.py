"""Training runs on a Dask cluster, seen from the web tier and the CLI: the client side of the
learning tier (it never imports Keras or TensorFlow; the work does, in the workers).

`RunBoard` submits runs (`core.learning.tasks.run`) to a dask.distributed cluster and keeps each
run's state for anyone who asks: queued runs wait on the cluster's workers (one run per worker
thread), progress arrives through the run's `distributed.Queue`, and only the run's owner (the
token given at submit) may stop it (its model so far is saved) or cancel it (nothing is saved);
`stop` and `cancel` check the token, not the page.

`connect` gives the cluster: ``$DIGITS_DASK_SCHEDULER`` (``tcp://host:8786``) if set, else a local
one of ``$DIGITS_WORKERS`` worker processes (default 1), one thread each, each with a memory limit
(``$DIGITS_WORKER_MEMORY``, default 4 GiB) and the training preload `core.learning.worker`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Literal

from core import config
from core.learning.tasks import WorkerLost, channel_names
from core.learning.train import TrainConfig

_LOG = logging.getLogger(__name__)

RunState = Literal["queued", "running", "stopping", "cancelling", "finished", "stopped", "cancelled", "failed"]
ACTIVE: tuple[RunState, ...] = ("queued", "running", "stopping", "cancelling")
POLL_S = 0.3  # how often the board reads progress and the runs' states
KEEP_ENDED = 20  # ended runs the board remembers (their models stay in the store)
# Seconds per training image and epoch when no run has measured it yet (a 2-core CPU, batch 128),
# plus what a run spends outside its epochs (data, building, testing, exporting and saving).
SECONDS_PER_IMAGE = {"cnn": 1.2e-4, "mlp": 2.5e-5}
RUN_OVERHEAD_S = 8.0


class RunError(RuntimeError):
    """A run cannot be submitted, stopped or cancelled; the message says why."""


class NotOwner(RunError):
    """Only the visitor who started a run may stop or cancel it."""


def connect():
    """A ``distributed.Client`` of the configured cluster and the local cluster started for it
    (None for an external scheduler). The caller closes both.

    The local cluster is Dask's ``SubprocessCluster``: its scheduler and its workers are
    ``python -m dask spec`` processes, so nothing of the caller is re-imported in them (a
    multiprocessing-spawned worker would re-run the caller's ``__main__``, which under Streamlit is
    the page script). Workers import this project from the current folder.

    Raises:
        RunError: the scheduler cannot be reached or started, or the worker settings are invalid.
    """
    from distributed import Client
    from distributed.deploy.subprocess import SubprocessCluster

    address = os.environ.get(config.DASK_SCHEDULER_ENV, "").strip()
    try:
        if address:
            return Client(address, timeout="10s"), None
        _importable_from_workers()
        cluster = SubprocessCluster(
            n_workers=config.dask_workers(), threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR,
            # A run whose worker dies fails at once instead of being retried on another worker.
            # Its scheduler ends the cluster when no client is left (a killed CLI or server).
            scheduler_kwargs={"allowed_failures": 0, "preload": [__name__]},
            worker_kwargs={"memory_limit": config.worker_memory(), "preload": ["core.learning.worker"]})
        return Client(cluster), cluster
    except (OSError, TimeoutError, ValueError, RuntimeError) as exc:
        where = f"the Dask scheduler at {address}" if address else "the local training workers"
        raise RunError(f"Cannot start or reach {where}: {exc}") from exc


ORPHAN_GRACE_S = 2.0  # how long the local cluster outlives its last client


def dask_setup(scheduler) -> None:
    """Scheduler preload of `connect`'s local cluster: close the scheduler, and with it its workers
    and their nannies, `ORPHAN_GRACE_S` after its last client left. The processes of a local
    cluster are children of the client's process, but nothing ends them when that process is
    killed (SIGKILL, or a SIGTERM it does not handle): without this they would stay, a worker
    holding TensorFlow's memory, and its run would go on and save a model nobody waits for."""
    import asyncio

    from distributed.diagnostics.plugin import SchedulerPlugin

    def clients() -> list:
        # Not the scheduler's own placeholder, nor the clients that running tasks open in the workers
        # (`distributed.Worker._get_client` names them "worker": ids "Client-worker-...").
        return [c for c in scheduler.clients if c != "fire-and-forget" and not c.startswith("Client-worker-")]

    class CloseWithItsClients(SchedulerPlugin):
        name = "digits-close-with-its-clients"

        def remove_client(self, scheduler, client) -> None:
            asyncio.get_running_loop().call_later(ORPHAN_GRACE_S, self._check)

        def _check(self) -> None:
            if not clients() and scheduler.status.name == "running":
                _LOG.warning("the local training cluster's last client left: closing it")
                asyncio.ensure_future(scheduler.close(reason="the local cluster's last client left"))

    scheduler.add_plugin(CloseWithItsClients())


def _importable_from_workers() -> None:
    """Put the project's folder on ``PYTHONPATH`` (inherited by the local cluster's processes)."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(config.ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(config.ROOT), *paths])


@dataclass(frozen=True)
class RunSnapshot:
    """A run as the board sees it now.

    ``progress`` is the last batch or epoch event (epoch, epochs, batch, batches, loss, accuracy,
    val_loss, val_accuracy, elapsed, eta); ``batches`` and ``epochs`` are the curves so far;
    ``position`` is the place in the queue (1 = next) and ``wait_s`` the estimated time until a
    queued run starts (None when it is not queued).
    """

    id: str
    owner: str
    kind: str  # "train" or "finetune"
    config: TrainConfig
    info: dict
    state: RunState
    submitted_at: float
    started_at: float | None = None
    ended_at: float | None = None
    phase: str | None = None
    progress: dict | None = None
    batches: tuple = ()
    epochs: tuple = ()
    model_name: str | None = None
    test_accuracy: float | None = None
    train_seconds: float | None = None
    error: str | None = None
    position: int | None = None
    wait_s: float | None = None

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.state in ACTIVE

    def owned_by(self, token: str) -> bool:
        """Whether ``token`` is this run's owner token (an empty token owns nothing)."""
        return bool(token) and token == self.owner


@dataclass
class _Run:
    snap: RunSnapshot
    future: object
    batches: list = field(default_factory=list)
    epochs: list = field(default_factory=list)


def estimate_seconds(cfg: TrainConfig, seconds_per_image: float | None = None) -> float:
    """A run's expected length: its images times epochs at the measured (or default) rate."""
    images = (cfg.train_size or 60000) * (1 - cfg.val_fraction) * cfg.epochs
    rate = seconds_per_image or SECONDS_PER_IMAGE.get(cfg.spec.family, SECONDS_PER_IMAGE["cnn"])
    return RUN_OVERHEAD_S + images * rate


class RunBoard:
    """The runs of one client of a Dask cluster; thread-safe, shared by every session of a server.

    Args:
        client: a connected ``distributed.Client``.
        models_dir: the model store's folder as the workers see it (default: ``config.models_dir()``).
    """

    def __init__(self, client, models_dir: str | None = None, *, cluster=None):
        self.client, self.cluster = client, cluster
        self.models_dir = str(models_dir or config.models_dir())
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._serial = 0
        self._rate: dict[str, float] = {}  # measured seconds per image, by family
        self._workers = 1
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="digits-run-board", daemon=True)
        self._thread.start()

    @classmethod
    def connect(cls, models_dir: str | None = None) -> "RunBoard":
        """A board over `connect`'s cluster (closed with the board)."""
        client, cluster = connect()
        return cls(client, models_dir, cluster=cluster)

    # --- submitting and controlling -------------------------------------------------------------

    def submit(self, cfg: TrainConfig, owner: str, *, kind: str = "train", name: str | None = None,
               command: str = "", info: dict | None = None, base_model: str | None = None,
               corrections=None, shipped: bool = False, models_dir: str | None = None) -> str:
        """Queue a run on the cluster; returns its id.

        Args:
            cfg: the settings (validated when it was made; see `TrainConfig`).
            owner: the token that may stop or cancel it.
            kind: "train" or "finetune" (then ``base_model`` and ``corrections`` = (x, y)).
            name: the model's store name (default: made when it is saved).
            command: recorded in the model's metadata.
            info: shown with the run (e.g. the number of corrections).
            shipped: mark the model as the shipped default (``python -m core train --shipped``).
            models_dir: the store the model goes to, as the workers see it (default: the board's).

        Raises:
            RunError: an empty owner, a bad or taken name, a fine-tuning without its base or
                corrections, or a closed board.
        """
        from core.learning.tasks import run
        from core.storage.store import ModelStore, StoreError

        if not owner:
            raise RunError("A run needs an owner token.")
        if not isinstance(cfg, TrainConfig):
            raise RunError("A run needs a TrainConfig.")
        models_dir = str(models_dir or self.models_dir)
        if name is not None:
            try:
                ModelStore(models_dir).name_for_save(name, "model")
            except StoreError as exc:
                raise RunError(str(exc)) from exc
        request = {"kind": kind, "config": cfg.to_dict(), "name": name, "command": command, "shipped": shipped}
        if kind == "finetune":
            if not base_model or corrections is None or not len(corrections[1]):
                raise RunError("Fine-tuning needs a base model and at least one correction.")
            request.update(base_model=base_model, corrections=corrections)
        elif kind != "train":
            raise RunError(f"Unknown kind of run {kind!r}.")
        if self._closed.is_set():
            raise RunError("The training service is shut down.")
        run_id = uuid.uuid4().hex[:12]
        future = self.client.submit(run, run_id, request, models_dir, key=f"digits-{kind}-{run_id}",
                                    pure=False, retries=0)
        snap = RunSnapshot(id=run_id, owner=owner, kind=kind, config=cfg, info=dict(info or {}), state="queued",
                           submitted_at=time.time())
        with self._lock:
            self._runs[run_id] = _Run(snap, future)
            self._serial += 1
        return run_id

    def stop(self, run_id: str, owner: str) -> None:
        """End the run after its current batch and save the model so far (a queued run is dropped).

        Raises:
            RunError: no such run, or it has ended. NotOwner: ``owner`` did not start it.
        """
        self._control(run_id, owner, cancel=False)

    def cancel(self, run_id: str, owner: str) -> None:
        """End the run after its current batch and save nothing (a queued run is dropped).

        Raises:
            RunError: no such run, or it has ended. NotOwner: ``owner`` did not start it.
        """
        self._control(run_id, owner, cancel=True)

    def _control(self, run_id: str, owner: str, *, cancel: bool) -> None:
        from distributed import Event

        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunError(f"No run {run_id!r}.")
            if not run.snap.owned_by(owner):
                raise NotOwner("Only the visitor who started this run can stop or cancel it.")
            if not run.snap.active:
                raise RunError("This run has already ended.")
            queued, future = run.snap.state == "queued", run.future
            run.snap = replace(run.snap, state="cancelling" if cancel else "stopping")
            self._serial += 1
        names = channel_names(run_id)
        Event(names.cancel if cancel else names.stop, client=self.client).set()
        if queued and future is not None:
            self.client.cancel(future)  # not started: nothing runs; if it just started, the Event ends it

    # --- reading ----------------------------------------------------------------------------------

    @property
    def serial(self) -> int:
        """Changes whenever a run is submitted, controlled or ends."""
        with self._lock:
            return self._serial

    def get(self, run_id: str) -> RunSnapshot | None:
        """The run ``run_id`` as it is now; None for a run the board does not know (or forgot)."""
        with self._lock:
            run = self._runs.get(run_id)
            return None if run is None else self._snapshot(run)

    def runs(self) -> list[RunSnapshot]:
        """Every run the board knows, newest first, with queue positions and waits."""
        with self._lock:
            return sorted((self._snapshot(r) for r in self._runs.values()), key=lambda s: s.submitted_at,
                          reverse=True)

    @property
    def workers(self) -> int:
        """How many workers the cluster had when the board connected (runs that can train at once)."""
        return self._workers

    def _snapshot(self, run: _Run) -> RunSnapshot:
        snap = replace(run.snap, batches=tuple(run.batches), epochs=tuple(run.epochs))
        if snap.state != "queued":
            return snap
        position, wait = self._queue_place(run.snap.id)
        return replace(snap, position=position, wait_s=wait)

    def _queue_place(self, run_id: str) -> tuple[int, float]:
        """Place in the queue (1 = next) and estimated wait: runs go to the first free worker in order."""
        free = []
        queued = []
        for run in sorted(self._runs.values(), key=lambda r: r.snap.submitted_at):
            s = run.snap
            if s.state in ("running", "stopping", "cancelling") and s.started_at is not None:
                eta = (s.progress or {}).get("eta")
                free.append(eta if eta is not None else self._estimate(s.config))
            elif s.state == "queued":
                queued.append(run)
        free += [0.0] * max(0, self._workers - len(free))
        free.sort()
        for position, run in enumerate(queued, start=1):
            start = free.pop(0) if free else 0.0
            if run.snap.id == run_id:
                return position, start
            free.append(start + self._estimate(run.snap.config))
            free.sort()
        return len(queued), 0.0

    def _estimate(self, cfg: TrainConfig) -> float:
        return estimate_seconds(cfg, self._rate.get(cfg.spec.family))

    # --- following the cluster --------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._closed.wait(POLL_S):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the board must outlive a bad poll (e.g. a lost scheduler)
                _LOG.exception("reading the runs' progress failed")

    def poll(self) -> None:
        """Read every active run's progress and state once (the board's thread does this every POLL_S)."""
        from distributed import Queue

        with self._lock:
            active = [r for r in self._runs.values() if r.snap.active]
        if not active:
            return
        self._workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        for run in active:
            future = run.future
            if future is None:  # ended by a concurrent poll
                continue
            queue = Queue(channel_names(run.snap.id).progress, client=self.client)
            events = [e for batch in queue.get(batch=True) for e in batch]
            done = future.done()
            outcome = None
            if done:  # what the run sent just before it ended, and its end (read outside the lock)
                events += [e for batch in queue.get(batch=True) for e in batch]
                outcome = _outcome(future)
            with self._lock:
                for event in events:
                    self._apply(run, event)
                if done:
                    self._finish(run, outcome)
                    self._serial += 1
            if done:
                self._release(run)
        self._forget_old()

    def _apply(self, run: _Run, event: dict) -> None:
        kind, snap = event.get("kind"), run.snap
        if kind == "started":
            state = snap.state if snap.state in ("stopping", "cancelling") else "running"
            run.snap = replace(snap, state=state, started_at=event["at"])
            self._serial += 1
        elif kind == "phase":
            run.snap = replace(snap, phase=event["text"])
        elif kind == "batch":
            run.batches.append({"step": (event["epoch"] - 1) * event["batches"] + event["batch"],
                                "epoch": event["epoch"], "batch": event["batch"], "batches": event["batches"],
                                "loss": event["loss"], "accuracy": event["accuracy"], "eta": event["eta"]})
            run.snap = replace(snap, progress=event, phase=None)
            steps = run.batches[-1]["step"]
            if event["elapsed"] > 5 and steps:
                per_image = event["elapsed"] / (steps * snap.config.batch_size)
                self._rate[snap.config.spec.family] = per_image
        elif kind == "epoch":
            run.epochs.append({"epoch": event["epoch"], "step": event["epoch"] * event["batches"],
                               "loss": event["loss"], "accuracy": event["accuracy"], "val_loss": event["val_loss"],
                               "val_accuracy": event["val_accuracy"]})
            run.snap = replace(snap, progress=event)

    def _finish(self, run: _Run, outcome: dict) -> None:
        """Record an ended run's outcome (`_outcome`); under the lock."""
        outcome = dict(outcome)
        info = {**run.snap.info, **outcome.pop("info", {})}
        run.snap = replace(run.snap, ended_at=time.time(), phase=None, info=info, **outcome)

    def _release(self, run: _Run) -> None:
        """Drop the run's future and its Dask primitives from the scheduler.

        The snapshot holds all of the result; a future kept after it would keep the result on its
        worker, and when that worker dies the scheduler recomputes lost results: the run would
        train and save its model again."""
        from distributed import Event, Queue

        future, run.future = run.future, None
        if future is not None:
            future.release()
        names = channel_names(run.snap.id)
        try:
            Queue(names.progress, client=self.client).close()
            for name in (names.started, names.stop, names.cancel):
                Event(name, client=self.client).clear()  # a cleared Event nobody waits on is deleted
        except Exception:  # noqa: BLE001 - best effort: a lost scheduler took them with it
            pass

    def _forget_old(self) -> None:
        with self._lock:
            ended = sorted((r for r in self._runs.values() if not r.snap.active),
                           key=lambda r: r.snap.submitted_at, reverse=True)
            for run in ended[KEEP_ENDED:]:
                del self._runs[run.snap.id]

    def wait(self, run_id: str, timeout: float | None = None) -> RunSnapshot:
        """Block until the run ends (or ``timeout`` seconds pass); returns its snapshot."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            snap = self.get(run_id)
            if snap is None or not snap.active or (deadline is not None and time.monotonic() > deadline):
                return snap
            time.sleep(POLL_S / 2)

    def close(self) -> None:
        """Stop following the runs and close the client (and the embedded cluster)."""
        self._closed.set()
        self._thread.join(timeout=5)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _outcome(future) -> dict:
    """An ended run's fields from its future: its result, its error or its cancellation.

    Reading a result or an error is a round trip to the cluster; the board does it outside its lock,
    so that readers of the runs never wait on the network."""
    if future.cancelled():
        return {"state": "cancelled"}
    try:
        if future.status == "error":
            return {"state": "failed", "error": _failure(future.exception())}
        result = future.result()
    except Exception as exc:  # noqa: BLE001 - e.g. the result was lost with its worker: the run failed
        return {"state": "failed", "error": _failure(exc)}
    return {"state": result["state"], "model_name": result["model_name"], "test_accuracy": result["test_accuracy"],
            "train_seconds": result["train_seconds"], "info": result.get("info", {})}


def _failure(error: BaseException) -> str:
    """A failed run's message for people."""
    from distributed.scheduler import KilledWorker

    if isinstance(error, (KilledWorker, WorkerLost)):
        return ("The worker running it stopped in the middle (it was killed, or it went past its memory limit); "
                "no model was saved. The other runs go on.")
    return f"{type(error).__name__}: {error}"
