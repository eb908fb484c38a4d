"""Training runs through the run API (`core.learning.runs.RunBoard`) on a real Dask cluster: progress,
stop (the model so far is kept) and cancel (nothing is saved), owner-only control, the queue, values
refused before anything is queued, a killed worker, a worker past its memory limit.

The runs go to the session's cluster (``dask_cluster``: one ``dask scheduler`` and one ``dask
worker`` process, see tests/dask_cluster.py), except the memory-limit test, which starts its own.
Runs are tiny (an MLP of 32 units on a few thousand images); a run that must last (to be stopped,
cancelled, queued behind or killed) is the same MLP for 100 epochs of 60,000 images by batches of 8,
and every test ends it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from core import config
from core.learning.model import MAX_HIDDEN_LAYERS, ModelSpec
from core.learning.runs import NotOwner, RunBoard, RunError, RunSnapshot
from core.learning.train import TrainConfig
from core.storage.store import ModelStore

ROOT = config.ROOT
pytestmark = pytest.mark.slow

TINY_SPEC = ModelSpec(family="mlp", hidden=(32,), filters=(), dropout=0.0, batch_norm=False)
TINY = TrainConfig(spec=TINY_SPEC, epochs=1, batch_size=128, train_size=3000, val_fraction=0.1, seed=0)
# Hours of work at batch 8: it runs until the test stops, cancels or kills it.
LASTING = TrainConfig(spec=TINY_SPEC, epochs=100, batch_size=8, train_size=60000, val_fraction=0.1, seed=0)
WORKER_GONE = "The worker running it stopped in the middle"
UNREACHABLE = "tcp://127.0.0.1:9"  # nothing listens there: a CLI that tried to connect would fail (exit 1)


@pytest.fixture
def board(cluster_env, tmp_path):
    """A run board over the session's cluster (through `RunBoard.connect` and its
    ``$DIGITS_DASK_SCHEDULER``), saving to an empty store; every run still going at the end is
    cancelled, so the next test finds the worker free."""
    b = RunBoard.connect(models_dir=str(tmp_path / "models"))
    yield b
    try:
        for snap in b.runs():
            if snap.active:
                try:
                    b.cancel(snap.id, snap.owner)
                except RunError:
                    pass
        for snap in b.runs():
            b.wait(snap.id, timeout=60)
    finally:
        b.close()


def store_of(board: RunBoard) -> ModelStore:
    return ModelStore(board.models_dir)


def wait_for(board: RunBoard, run_id: str, check, timeout: float = 60.0, what: str = "") -> RunSnapshot:
    """Poll the run's snapshot until ``check(snap)`` holds; fail with the last snapshot after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        snap = board.get(run_id)
        if check(snap):
            return snap
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} never got {what or check}: {brief(snap)}")
        time.sleep(0.05)


def brief(snap: RunSnapshot | None) -> str:
    """A snapshot for a failure message, without its curves."""
    if snap is None:
        return "no such run"
    return (f"state={snap.state} batches={len(snap.batches)} epochs={len(snap.epochs)} phase={snap.phase!r} "
            f"model={snap.model_name!r} error={snap.error!r} position={snap.position} wait_s={snap.wait_s}")


def running_with_batches(board: RunBoard, run_id: str, batches: int = 3) -> RunSnapshot:
    return wait_for(board, run_id, lambda s: s.state == "running" and len(s.batches) >= batches, 90,
                    f"running with {batches} batches")


def model_files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir()) if store.root.exists() else []


# --- a run from start to end -----------------------------------------------------------------------

CLIENT_SCRIPT = r"""
import json, sys, time
from core.learning.model import ModelSpec
from core.learning.runs import RunBoard
from core.learning.train import TrainConfig

board = RunBoard.connect(models_dir=sys.argv[1])
cfg = TrainConfig(spec=ModelSpec(family="mlp", hidden=(32,), filters=(), dropout=0.0, batch_norm=False),
                  epochs=1, batch_size=128, train_size=3000, val_fraction=0.1, seed=0)
run_id = board.submit(cfg, "owner-token", command="test_runs")
states, deadline = [], time.monotonic() + 180
while True:
    snap = board.get(run_id)
    if not states or states[-1] != snap.state:
        states.append(snap.state)
    if not snap.active or time.monotonic() > deadline:
        break
    time.sleep(0.02)
board.close()
print(json.dumps({
    "states": states, "model_name": snap.model_name, "test_accuracy": snap.test_accuracy, "error": snap.error,
    "batches": list(snap.batches), "epochs": list(snap.epochs), "progress": snap.progress,
    "times": [snap.submitted_at, snap.started_at, snap.ended_at], "train_seconds": snap.train_seconds,
    "heavy_modules": sorted(m for m in ("tensorflow", "keras", "onnxruntime") if m in sys.modules),
}))
"""


def test_a_run_reports_its_progress_and_saves_its_model_and_the_client_never_imports_tensorflow(
        cluster_env, tmp_path):
    """The client side runs in a fresh Python (this test process has TensorFlow from other tests)."""
    models = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, str(models)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy_modules"] == [], "the client imported " + ", ".join(out["heavy_modules"])
    assert out["states"] == ["queued", "running", "finished"], out["states"]
    assert out["error"] is None
    submitted, started, ended = out["times"]
    assert submitted <= started <= ended

    batches = math.ceil(2700 / 128)  # 3,000 images less the 10% held out for validation
    assert [b["step"] for b in out["batches"]] == list(range(1, batches + 1))
    assert all(math.isfinite(b["loss"]) and 0 <= b["accuracy"] <= 1 for b in out["batches"])
    (epoch,) = out["epochs"]
    assert epoch["epoch"] == 1 and epoch["step"] == batches and 0.5 < epoch["val_accuracy"] <= 1
    assert out["progress"]["kind"] == "epoch"

    store = ModelStore(models)
    name = out["model_name"]
    assert store.list().names() == [name] and not store.list().problems
    for suffix in (".keras", ".onnx", ".novelty.npz", ".json"):
        assert (models / f"{name}{suffix}").stat().st_size > 0, suffix
    meta = store.info(name)
    assert meta.test_accuracy == out["test_accuracy"] and 0.5 < out["test_accuracy"] <= 1
    assert meta.command == "test_runs" and meta.stopped_early is False
    assert meta.hyperparameters["train_size"] == 3000 and len(meta.history["batch"]) == batches
    assert set(meta.files) == {".keras", ".onnx", ".novelty.npz", ".layers.onnx"}
    from core.serving.predict import Predictor  # served from its exported file, checksums verified

    assert Predictor.load(name, store).probabilities(np.zeros((1, 28, 28), np.float32)).shape == (1, 10)


# --- stop and cancel ---------------------------------------------------------------------------------

def test_stop_keeps_the_model_so_far_and_cancel_saves_nothing(board):
    store = store_of(board)
    stopped = board.submit(LASTING, "alice")
    running_with_batches(board, stopped)
    board.stop(stopped, "alice")
    assert board.get(stopped).state == "stopping"
    snap = board.wait(stopped, timeout=90)
    assert snap.state == "stopped", brief(snap)
    assert snap.model_name and snap.test_accuracy is not None and 0 <= snap.test_accuracy <= 1
    assert store.list().names() == [snap.model_name]
    meta = store.info(snap.model_name)
    assert meta.stopped_early is True and meta.test_accuracy == snap.test_accuracy
    assert 3 <= meta.history["batch"][-1]["step"] < 6750 and not meta.history["epoch"][1:]  # in epoch 1
    files_after_stop = model_files(store)

    cancelled = board.submit(LASTING, "alice")
    running_with_batches(board, cancelled)
    board.cancel(cancelled, "alice")
    assert board.get(cancelled).state == "cancelling"
    snap = board.wait(cancelled, timeout=90)
    assert snap.state == "cancelled" and snap.model_name is None and snap.error is None, brief(snap)
    assert model_files(store) == files_after_stop  # nothing written, not even a temporary file

    for run_id in (stopped, cancelled):  # ended runs cannot be controlled
        with pytest.raises(RunError, match="already ended"):
            board.stop(run_id, "alice")
    with pytest.raises(RunError, match="No run"):
        board.cancel("no-such-run", "alice")


def test_only_the_owner_can_stop_or_cancel_a_run(board):
    for owner in ("", None):
        with pytest.raises(RunError, match="owner"):
            board.submit(TINY, owner)
    assert board.runs() == []  # nothing was queued

    run_id = board.submit(LASTING, "alice")
    snap = running_with_batches(board, run_id)
    for token in ("bob", "", "ALICE", "alice "):
        with pytest.raises(NotOwner):
            board.stop(run_id, token)
        with pytest.raises(NotOwner):
            board.cancel(run_id, token)
    assert board.get(run_id).state == "running"
    seen = len(board.get(run_id).batches)
    wait_for(board, run_id, lambda s: s.state == "running" and len(s.batches) > seen + 2, 30, "more batches")
    assert board.get(run_id).owned_by("alice") and not snap.owned_by("bob") and not snap.owned_by("")
    board.cancel(run_id, "alice")
    assert board.wait(run_id, timeout=90).state == "cancelled"
    assert store_of(board).list().names() == []


# --- the queue ---------------------------------------------------------------------------------------

def test_queue_positions_and_waits_and_a_cancelled_queued_run_never_starts(board):
    assert len(board.client.scheduler_info()["workers"]) == 1  # one run at a time
    first = board.submit(LASTING, "alice")
    second = board.submit(TINY, "bob")
    third = board.submit(TINY, "carol")
    wait_for(board, first, lambda s: s.state == "running", 60, "running")
    wait_for(board, second, lambda s: s.position is not None and s.wait_s is not None and s.wait_s > 0, 10,
             "a wait estimate")
    a, b, c = board.get(first), board.get(second), board.get(third)
    assert (a.state, a.position, a.wait_s) == ("running", None, None)
    assert (b.state, b.position) == ("queued", 1) and b.wait_s > 0
    assert (c.state, c.position) == ("queued", 2) and c.wait_s > b.wait_s
    listed = {s.id: s.position for s in board.runs()}
    assert listed == {first: None, second: 1, third: 2}
    assert [s.id for s in board.runs()] == [third, second, first]  # newest first

    board.cancel(third, "carol")  # queued: dropped at once, while the first run still holds the worker
    c = wait_for(board, third, lambda s: not s.active, 10, "ended")
    assert c.state == "cancelled" and c.started_at is None and not c.batches
    assert board.get(first).state == "running"
    assert board.get(second).position == 1

    board.cancel(first, "alice")
    b = board.wait(second, timeout=120)
    assert b.state == "finished" and b.model_name, brief(b)
    assert board.get(first).state == "cancelled"
    c = board.get(third)
    assert c.state == "cancelled" and c.started_at is None and not c.batches and c.model_name is None
    assert store_of(board).list().names() == [b.model_name]


# --- values refused before anything is queued -----------------------------------------------------

HIDDEN_LIMIT = (4096,) * MAX_HIDDEN_LAYERS

ACCEPTED = {
    "epochs 1": dict(epochs=1), "epochs 100": dict(epochs=100),
    "batch 8": dict(batch_size=8), "batch 4096": dict(batch_size=4096),
    "train_size 0": dict(train_size=0), "train_size 60000": dict(train_size=60000),
    "val_fraction 0.5": dict(val_fraction=0.5),
    "4096 units": dict(spec=ModelSpec(family="mlp", hidden=(4096,), filters=())),
    f"{MAX_HIDDEN_LAYERS} dense layers of 4096": dict(spec=ModelSpec(family="mlp", hidden=HIDDEN_LIMIT, filters=())),
}
REFUSED = {
    "epochs 0": (dict(epochs=0), "epochs"), "epochs 101": (dict(epochs=101), "epochs"),
    "epochs 1,000,000": (dict(epochs=1_000_000), "epochs"),
    "batch 0": (dict(batch_size=0), "batch_size"), "batch 7": (dict(batch_size=7), "batch_size"),
    "batch 4097": (dict(batch_size=4097), "batch_size"),
    "train_size -1": (dict(train_size=-1), "train_size"), "train_size 60001": (dict(train_size=60001), "train_size"),
    "val_fraction 0.51": (dict(val_fraction=0.51), "val_fraction"),
    "val_fraction -0.1": (dict(val_fraction=-0.1), "val_fraction"),
}
REFUSED_SPECS = {
    "0 units": (dict(hidden=(0,)), "between 1 and 4096"),
    "4097 units": (dict(hidden=(4097,)), "between 1 and 4096"),
    "10,000 units": (dict(hidden=(10_000,)), "between 1 and 4096"),
    "one dense layer too many": (dict(hidden=(8,) * (MAX_HIDDEN_LAYERS + 1)), f"at most {MAX_HIDDEN_LAYERS}"),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_settings_at_the_limits_are_accepted(case):
    cfg = TrainConfig(**ACCEPTED[case])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # as the worker reads it back


@pytest.mark.parametrize("case", list(REFUSED))
def test_settings_past_the_limits_are_refused(case):
    changes, match = REFUSED[case]
    with pytest.raises(ValueError, match=match):
        TrainConfig(spec=TINY_SPEC, **changes)
    with pytest.raises(ValueError, match=match):  # nor does a worker take them from a request
        TrainConfig.from_dict({**TINY.to_dict(), **changes})


@pytest.mark.parametrize("case", list(REFUSED_SPECS))
def test_architectures_past_the_limits_are_refused(case):
    changes, match = REFUSED_SPECS[case]
    with pytest.raises(ValueError, match=match):
        ModelSpec(family="mlp", filters=(), **changes)
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict({**TINY.to_dict(), "spec": {**TINY_SPEC.to_dict(), **changes}})


def run_cli(args: list[str], models, **env) -> subprocess.Popen:
    """``python -m core`` with a scheduler address nothing listens on: a command that tried to
    connect would fail with exit 1 ("Cannot start or reach"), so exit 2 shows it stopped before."""
    e = {**os.environ, config.MODELS_DIR_ENV: str(models), config.DASK_SCHEDULER_ENV: UNREACHABLE, **env}
    e.pop(config.ACTIVE_MODEL_ENV, None)
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


CLI_REFUSED = {
    "--epochs 1000000": (["--epochs", "1000000"], "epochs must be between 1 and 100"),
    "--batch-size 0": (["--batch-size", "0"], "batch_size must be between 8 and 4096"),
    "--hidden 10000": (["--hidden", "10000"], "between 1 and 4096"),
    "too many layers": (["--hidden", ",".join(["8"] * (MAX_HIDDEN_LAYERS + 1))], f"at most {MAX_HIDDEN_LAYERS}"),
}


def test_the_cli_refuses_absurd_settings_before_connecting(tmp_path):
    models = tmp_path / "models"
    procs = {case: run_cli(["train", "--family", "mlp", *args], models) for case, (args, _) in CLI_REFUSED.items()}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (case, proc.returncode, err[-2000:])
        assert CLI_REFUSED[case][1] in err and "Cannot start or reach" not in err, (case, err[-2000:])
        assert out == ""
    assert not models.exists() or not list(models.iterdir())


def test_a_taken_name_is_refused_before_training_and_the_old_model_stays(board):
    store = store_of(board)
    first = board.wait(board.submit(TINY, "alice", name="same"), timeout=120)
    assert (first.state, first.model_name) == ("finished", "same"), brief(first)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in store.root.iterdir()}

    with pytest.raises(RunError, match="already exists"):
        board.submit(TINY, "alice", name="same")
    with pytest.raises(RunError, match="name"):
        board.submit(TINY, "alice", name="../same")
    assert [s.id for s in board.runs()] == [first.id]  # nothing else was queued

    proc = run_cli(["train", "--family", "mlp", "--epochs", "1", "--train-size", "3000", "--name", "same"], store.root)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "already exists" in err and "Cannot start or reach" not in err, err[-2000:]
    assert out == ""
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in store.root.iterdir()} == before
    assert store.list().names() == ["same"]


# --- a worker that dies --------------------------------------------------------------------------------

def test_a_killed_worker_fails_its_run_clearly_and_the_next_run_finishes(board, dask_cluster):
    store = store_of(board)
    earlier = board.wait(board.submit(TINY, "alice"), timeout=120)
    assert earlier.state == "finished", brief(earlier)

    run_id = board.submit(LASTING, "alice")
    running_with_batches(board, run_id)
    (pid,) = dask_cluster.worker_pids()
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    snap = wait_for(board, run_id, lambda s: not s.active, 10, "failed within 10 s")
    assert time.monotonic() - killed < 10
    assert snap.state == "failed" and snap.model_name is None, brief(snap)
    assert WORKER_GONE in snap.error and "no model was saved" in snap.error
    assert "Traceback" not in snap.error
    with pytest.raises(RunError, match="already ended"):
        board.cancel(run_id, "alice")

    board.client.wait_for_workers(1, timeout=60)  # the nanny starts a fresh worker
    assert dask_cluster.worker_pids() != [pid]
    after = board.wait(board.submit(TINY, "alice"), timeout=180)
    assert after.state == "finished", brief(after)
    # Neither the killed run nor the earlier, finished one (whose result was on the dead worker)
    # ran again: exactly the two finished runs' models.
    assert sorted(store.list().names()) == sorted([earlier.model_name, after.model_name])
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


def test_a_run_is_never_started_twice(board):
    """A run whose first start was on a worker that died is refused on a second one (a scheduler that
    retries tasks would otherwise train it again from scratch)."""
    from distributed import Event

    from core.learning.runs import _failure
    from core.learning.tasks import WorkerLost, channel_names, run

    run_id = "twice-" + uuid.uuid4().hex[:8]
    started = Event(channel_names(run_id).started, client=board.client)
    started.set()  # as the first start did
    request = {"kind": "train", "config": TINY.to_dict(), "name": None, "command": "", "shipped": False}
    future = board.client.submit(run, run_id, request, board.models_dir, pure=False)
    try:
        error = future.exception(timeout=60)
    finally:
        started.clear()
    assert isinstance(error, WorkerLost), error
    assert _failure(error).startswith(WORKER_GONE)
    assert store_of(board).list().names() == []


# --- the worker's memory limit -------------------------------------------------------------------------

# A worker with TensorFlow and MNIST loaded holds ~0.7 GB; a tiny run peaks at ~1.3 GB (fitting the
# "not a digit" detector). The largest allowed MLP at the largest batch goes past 5 GB at once.
MEMORY_LIMIT = "2GiB"
HUGE = TrainConfig(spec=ModelSpec(family="mlp", hidden=HIDDEN_LIMIT, filters=(), dropout=0.0, batch_norm=False),
                   epochs=1, batch_size=4096, train_size=60000, seed=0)


def test_a_run_past_the_worker_memory_limit_fails_clearly_and_a_small_one_fits(tmp_path):
    from distributed import Client

    from tests.dask_cluster import start_cluster

    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = start_cluster(logs, workers=0)
    try:
        cluster.add_worker(memory_limit=MEMORY_LIMIT)
        board = RunBoard(Client(cluster.address, timeout="10s"), str(tmp_path / "models"))
        try:
            small = board.wait(board.submit(TINY, "alice"), timeout=180)
            assert small.state == "finished", brief(small)
            t0 = time.monotonic()
            huge = board.wait(board.submit(HUGE, "alice"), timeout=150)
            assert huge.state == "failed", f"not failed after {time.monotonic() - t0:.0f} s: {brief(huge)}"
            assert WORKER_GONE in huge.error and "memory limit" in huge.error
            assert ModelStore(tmp_path / "models").list().names() == [small.model_name]
        finally:
            board.close()
        log = "".join(p.read_text(errors="replace") for p in logs.glob("worker-*.log"))
        assert "exceeded 95% memory budget" in log  # killed by its nanny for memory, not by anything else
    finally:
        cluster.stop()
