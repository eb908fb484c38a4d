"""Faults: a server killed while training or saving, hostile model files, the Keras version, and
the training-job manager under concurrent requests.

test_store.py already covers: corrupt zip / JSON / weights, an orphan .keras, a Python-lambda
Lambda layer, an exception in the middle of a save. This file adds what needs a real process
kill or a crafted config.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core import config
from core.learning.persist import load_model
from core.store import ModelStore, StoreError

ROOT = config.ROOT
DEFAULT = config.DEFAULT_MODEL_NAME
VICTIM = "victim"
TRAIN_ARGS = ["train", "--family", "mlp", "--epochs", "1", "--train-size", "3000", "--name", VICTIM]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def good_store(tmp_path, monkeypatch) -> ModelStore:
    """A store holding a copy of the shipped model, set active (the 'previous good model')."""
    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    root = tmp_path / "models"
    root.mkdir()
    for suffix in (".keras", ".onnx", ".novelty.npz", ".json"):
        shutil.copyfile(ROOT / "models" / f"{DEFAULT}{suffix}", root / f"{DEFAULT}{suffix}")
    store = ModelStore(root)
    store.set_active(DEFAULT)
    return store


def reads_mnist_well(store: ModelStore, name: str) -> float:
    """Accuracy of the model ``name`` as served (its exported file, checksums verified) on 200
    MNIST test digits (the shipped model scores ~1.0)."""
    from core.data import cached_mnist
    from core.serving.predict import Predictor

    mnist = cached_mnist()
    x = mnist.x_test[:200].astype(np.float32) / 255.0
    probs = Predictor.load(name, store).probabilities(x)
    return float(np.mean(np.argmax(probs, axis=1) == mnist.y_test[:200]))


# --------------------------------------------------------------------------------------------
# SIGKILL during training and saving
# --------------------------------------------------------------------------------------------


def _temp_model_files(root: Path) -> list[Path]:
    return sorted(root.glob(f".{VICTIM}.*.keras"))


KILL_POINTS = {
    # stderr line that shows the moment, or a file that appears in the store
    "during_fit": ("stderr", re.compile(r"epoch 1/1 batch \d+/\d+")),
    "after_fit_while_testing": ("stderr", re.compile(r"^epoch 1/1 loss")),
    "while_writing_the_archive": ("file", _temp_model_files),
    "after_archive_before_metadata": ("file", lambda root: [p for p in [root / f"{VICTIM}.keras"] if p.exists()]),
}


def train_and_kill(store: ModelStore, point: str, deadline_s: float = 240.0) -> dict:
    """Run the CLI's training against ``store`` and SIGKILL it at ``point``; returns what was seen."""
    kind, probe = KILL_POINTS[point]
    env = {**os.environ, config.MODELS_DIR_ENV: str(store.root), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop(config.ACTIVE_MODEL_ENV, None)
    proc = subprocess.Popen([sys.executable, "-m", "core", *TRAIN_ARGS], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True)
    reader.start()
    seen: list[str] = []
    killed_at = None
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if kind == "file":
                found = probe(store.root)
                if found:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = [p.name for p in found]
                    break
                time.sleep(0.002)
            else:
                try:
                    line = lines.get(timeout=0.05)
                except queue.Empty:
                    continue
                seen.append(line.rstrip())
                if probe.search(line):
                    proc.send_signal(signal.SIGKILL)
                    killed_at = line.strip()
                    break
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(timeout=30)
    while not lines.empty():
        seen.append(lines.get().rstrip())
    return {"killed_at": killed_at, "returncode": proc.returncode, "stderr": seen}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_while_training_or_saving_keeps_the_previous_model(point, good_store):
    before = {p.name: sha256(p) for p in good_store.root.glob(f"{DEFAULT}.*")}
    outcome = train_and_kill(good_store, point)
    assert outcome["killed_at"] is not None, f"never reached {point}: {outcome}"
    assert outcome["returncode"] == -signal.SIGKILL, outcome

    listing = good_store.list()
    assert DEFAULT in listing.names()
    assert set(listing.names()) <= {DEFAULT, VICTIM}
    assert set(listing.problems) <= {VICTIM}, listing.problems  # nothing wrong with the previous models
    if VICTIM in listing.names():  # listed only when complete: it must load and be served
        assert load_model(good_store, VICTIM) is not None
        assert reads_mnist_well(good_store, VICTIM) > 0.5
    if VICTIM in listing.problems:
        assert "no metadata" in listing.problems[VICTIM]
    assert good_store.active_name() == DEFAULT and good_store.active_name(fallback=False) == DEFAULT
    assert {p.name: sha256(p) for p in good_store.root.glob(f"{DEFAULT}.*")} == before
    assert load_model(good_store, DEFAULT) is not None
    assert reads_mnist_well(good_store, DEFAULT) >= 0.98

    leftovers = [p for p in good_store.root.iterdir() if p.name.startswith(".")]
    if point == "while_writing_the_archive":
        assert leftovers or (good_store.root / f"{VICTIM}.keras").exists(), outcome
    for p in leftovers:  # a leftover is never mistaken for a model
        assert p.stem.lstrip(".") not in listing.names()
    time.sleep(0.02)
    assert good_store.clean_temporaries(older_than_s=0) == len(leftovers)
    assert not [p for p in good_store.root.iterdir() if p.name.startswith(".")]
    assert good_store.list().names() == listing.names()


@pytest.mark.slow
def test_an_uninterrupted_cli_run_saves_a_complete_model_and_keeps_the_active_one(good_store):
    env = {**os.environ, config.MODELS_DIR_ENV: str(good_store.root), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop(config.ACTIVE_MODEL_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "core", *TRAIN_ARGS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["model"] == VICTIM
    listing = good_store.list()
    assert set(listing.names()) == {DEFAULT, VICTIM} and not listing.problems
    assert good_store.active_name() == DEFAULT  # a new model is never served until someone activates it
    assert not [p for p in good_store.root.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------
# Hostile config.json inside a .keras archive
# --------------------------------------------------------------------------------------------

CANARY_MODULE = """
import pathlib
pathlib.Path({path!r}).write_text("imported")
import keras

class Evil(keras.layers.Flatten):
    pass

def evil(*args, **kwargs):
    pathlib.Path({path!r}).write_text("called")
    return args[0] if args else None
"""


@pytest.fixture
def hostile_store(tmp_path, monkeypatch, tiny_served_files):
    """A store with a tiny valid model 'base', and an importable canary module that records being
    imported or called (it must never be)."""
    from core.learning.model import ModelSpec, build_model
    from core.learning.persist import save_model

    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    canary = tmp_path / "CANARY"
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "digits_canary_mod.py").write_text(CANARY_MODULE.format(path=str(canary)), encoding="utf-8")
    monkeypatch.syspath_prepend(str(module_dir))
    store = ModelStore(tmp_path / "models")
    tiny = ModelSpec(family="mlp", hidden=(8,), filters=(), dropout=0.0, batch_norm=False)
    save_model(store, build_model(tiny, seed=0), {"family": "mlp"}, name="base", files=tiny_served_files)
    return store, canary


def _function_ref(module: str, name: str) -> dict:
    return {"module": module, "class_name": "function", "config": name, "registered_name": "function"}


def _as_lambda(layer: dict, function: dict) -> dict:
    return {"module": "keras.layers", "class_name": "Lambda",
            "config": {"name": layer["name"], "trainable": True, "dtype": layer["config"].get("dtype"),
                       "function": function, "arguments": {}},
            "registered_name": None, "build_config": layer.get("build_config"), "name": layer["name"],
            "inbound_nodes": layer["inbound_nodes"]}


HOSTILE_LAYERS = {
    # a layer class from an arbitrary module (CVE-2025-1550 style): importing it would run its code
    "custom_module_class": lambda layer: {**layer, "module": "digits_canary_mod", "class_name": "Evil",
                                          "registered_name": None},
    "custom_module_registered": lambda layer: {**layer, "module": "digits_canary_mod", "class_name": "Evil",
                                               "registered_name": "digits_canary_mod>Evil"},
    # a Lambda whose function is a module-level function (no bytecode): a custom module, os.system
    "lambda_custom_function": lambda layer: _as_lambda(layer, _function_ref("digits_canary_mod", "evil")),
    "lambda_os_system": lambda layer: _as_lambda(layer, _function_ref("os", "system")),
    # a config that switches safe mode off, then anything (CVE-2025-9906 style)
    "lambda_enable_unsafe_deserialization": lambda layer: _as_lambda(
        layer, _function_ref("keras.config", "enable_unsafe_deserialization")),
    "builtins_eval_as_a_layer": lambda layer: {**layer, "module": "builtins", "class_name": "eval",
                                               "registered_name": None},
    "unknown_keras_class": lambda layer: {**layer, "module": "keras.layers", "class_name": "NoSuchLayer",
                                          "registered_name": None},
}


def write_hostile(store: ModelStore, name: str, patch) -> None:
    with zipfile.ZipFile(store.keras_path("base")) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    cfg = json.loads(members["config.json"])
    layers = cfg["config"]["layers"]
    assert layers[1]["class_name"] == "Flatten"
    layers[1] = patch(layers[1])
    members["config.json"] = json.dumps(cfg).encode("utf-8")
    with zipfile.ZipFile(store.keras_path(name), "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    # Beside base's served files, with every checksum recorded: whoever can write to the store can
    # write metadata that matches, so the listing takes it; only loading the archive can tell.
    files = {".keras": sha256(store.keras_path(name))}
    for suffix in (".onnx", ".novelty.npz"):
        shutil.copyfile(store.root / f"base{suffix}", store.root / f"{name}{suffix}")
        files[suffix] = sha256(store.root / f"{name}{suffix}")
    store.meta_path(name).write_text(json.dumps({"family": "mlp", "files": files}), encoding="utf-8")


@pytest.mark.parametrize("case", list(HOSTILE_LAYERS))
def test_hostile_config_is_refused_without_running_code(case, hostile_store):
    store, canary = hostile_store
    write_hostile(store, case, HOSTILE_LAYERS[case])
    assert case in store.list().names()  # structurally a .keras archive: only loading can tell
    with pytest.raises(StoreError) as info:
        load_model(store, case)
    message = str(info.value)
    assert repr(case) in message and ("Refused" in message or "Cannot load" in message), message
    assert "Traceback" not in message
    assert not canary.exists(), f"loading {case} ran code: {canary.read_text()}"
    assert "digits_canary_mod" not in sys.modules
    # Safe mode is still on for the next load: a Python-lambda model is still refused.
    import keras

    inp = keras.Input((28, 28, 1))
    evil = keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t)(inp))))
    evil.save(store.keras_path("plain_lambda"))
    store.meta_path("plain_lambda").write_text("{}", encoding="utf-8")
    with pytest.raises(StoreError, match="unsafe content"):
        load_model(store, "plain_lambda")
    assert load_model(store, "base") is not None  # the good model next to them still loads


def test_non_keras_files_in_the_store_are_never_loaded(hostile_store):
    """A pickle or an HDF5 file dropped into the store under a model name is refused structurally."""
    import pickle

    store, canary = hostile_store
    store.keras_path("pickled").write_bytes(pickle.dumps({"x": 1}))
    store.meta_path("pickled").write_text("{}", encoding="utf-8")
    store.keras_path("hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    store.meta_path("hdf5").write_text("{}", encoding="utf-8")
    listing = store.list()
    assert {"pickled", "hdf5"} <= set(listing.problems) and "pickled" not in listing.names()
    for name in ("pickled", "hdf5"):
        with pytest.raises(StoreError, match="not a valid .keras archive"):
            load_model(store, name)
    assert not canary.exists()


# --------------------------------------------------------------------------------------------
# Versions without the known model-loading advisories
# --------------------------------------------------------------------------------------------

# reliability_anchors.md 2.2: CVE-2026-12480 affects Keras <= 3.13.2 (fixed in 3.14.1),
# CVE-2026-12481 affects 3.14.0 (fixed in 3.15.0), and the ZIP/npz/HDF5-link hardening landed in
# 3.15.0/3.15.1; "Pin keras >= 3.15.1". Pillow: parser CVEs fixed up to 12.3.0 (section 1.1).
KERAS_ADVISORY_FREE = "3.15.1"
PILLOW_ADVISORY_FREE = "12.3.0"


def requirement(name: str):
    from packaging.requirements import Requirement

    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            if req.name.lower() == name and (req.marker is None or req.marker.evaluate()):
                return req
    raise AssertionError(f"{name} is not in requirements.txt")


def floor(req) -> str:
    return next(s.version for s in req.specifier if s.operator in (">=", "=="))


@pytest.mark.parametrize("package", ["keras", "pillow", "streamlit", "tensorflow-cpu"])
def test_installed_versions_satisfy_requirements(package):
    from importlib.metadata import PackageNotFoundError, version

    req = requirement(package)
    try:
        installed = version(package)
    except PackageNotFoundError:
        pytest.skip(f"{package} is not installed under that name here")
    assert req.specifier.contains(installed, prereleases=True), f"{package} {installed} does not satisfy {req}"


@pytest.mark.parametrize("package,safe", [("keras", KERAS_ADVISORY_FREE), ("pillow", PILLOW_ADVISORY_FREE)])
def test_installed_version_has_the_advisory_fixes(package, safe):
    from importlib.metadata import version

    from packaging.version import Version

    assert Version(version(package)) >= Version(safe), f"{package} {version(package)} < {safe}"


@pytest.mark.parametrize("package,safe", [("keras", KERAS_ADVISORY_FREE), ("pillow", PILLOW_ADVISORY_FREE)])
def test_requirements_floor_excludes_versions_with_advisories(package, safe):
    from packaging.version import Version

    assert Version(floor(requirement(package))) >= Version(safe), str(requirement(package))


# --------------------------------------------------------------------------------------------
# The training-job manager (app_state.TrainingManager)
# --------------------------------------------------------------------------------------------
# test_pages.py covers: a second start while one runs is refused, only the owner stops, Stop works.
# Here: many simultaneous starts, a failed job, starting again after the end, and where the
# finished model goes. The real training is replaced by a controllable fake (no TensorFlow work).


class FakeTraining:
    """Stands in for core.learning.train.train: runs until released or stopped, or raises on demand."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail_with: Exception | None = None
        self.calls = 0

    def __call__(self, cfg, *, hook=None, stop=None):
        from core.learning.train import TrainResult

        self.calls += 1
        self.started.set()
        deadline = time.monotonic() + 60
        while not (self.release.is_set() or (stop is not None and stop.is_set())) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.fail_with is not None:
            raise self.fail_with
        stopped = bool(stop is not None and stop.is_set())
        model = None
        if not stopped:
            from core.learning.model import build_model

            model = build_model(cfg.spec, seed=0)
        return TrainResult(cfg, model, {"epoch": [], "batch": []}, None if stopped else 0.5, 0.1, stopped,
                           int(model.count_params()) if model is not None else 0, "0" * 64)


@pytest.fixture
def manager_env(tmp_path, monkeypatch):
    import app_state
    import core.learning.train
    from core.learning.model import ModelSpec
    from core.learning.train import TrainConfig

    fake = FakeTraining()
    monkeypatch.setattr(core.learning.train, "train", fake)
    root = tmp_path / "models"
    monkeypatch.setenv(config.MODELS_DIR_ENV, str(root))
    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    cfg = TrainConfig(spec=ModelSpec(family="mlp", hidden=(8,), filters=(), dropout=0.0, batch_norm=False),
                      epochs=1, train_size=1000)
    manager = app_state.TrainingManager()
    yield app_state, manager, fake, cfg, root
    fake.release.set()
    job = manager.job
    if job is not None:
        job.request_stop()
        job.join(30)


def test_simultaneous_starts_run_exactly_one_job(manager_env):
    app_state, manager, fake, cfg, _ = manager_env
    barrier = threading.Barrier(8)
    outcomes: list[object] = []
    lock = threading.Lock()

    def visitor(i: int) -> None:
        barrier.wait()
        try:
            manager.start(cfg, owner=f"visitor-{i}")
            result: object = "started"
        except app_state.TrainingBusy as exc:
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("started") == 1
    busy = [o for o in outcomes if isinstance(o, app_state.TrainingBusy)]
    assert len(busy) == 7 and all("one run at a time" in str(b) for b in busy)
    assert manager.serial == 1 and manager.running()
    assert fake.started.wait(10) and fake.calls == 1


def test_stop_rules_and_a_new_run_after_the_end(manager_env):
    app_state, manager, fake, cfg, root = manager_env
    assert manager.stop("alice") is False  # nothing to stop
    job = manager.start(cfg, owner="alice")
    assert fake.started.wait(10)
    assert manager.stop("bob") is False and job.state == "running"  # not bob's
    assert manager.stop("alice") is True
    job.join(30)
    assert job.state == "stopped" and not manager.running()
    assert manager.stop("alice") is False  # already over
    assert not root.exists() or not list(root.glob("*.keras"))  # a stopped run saves nothing

    fake.release.set()  # the next run finishes on its own
    second = manager.start(cfg, owner="bob")
    second.join(60)
    assert second.state == "finished", second.snapshot()["error"]
    assert manager.serial == 2
    name = second.snapshot()["info"]["model_name"]
    store = ModelStore(root)
    assert store.list().names() == [name] and load_model(store, name) is not None
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_a_failed_run_is_reported_and_frees_the_slot(manager_env, monkeypatch):
    app_state, manager, fake, cfg, root = manager_env
    fake.fail_with = MemoryError("out of memory in the middle of epoch 1")
    fake.release.set()
    job = manager.start(cfg, owner="alice")
    job.join(30)
    snap = manager.snapshot()
    assert snap["state"] == "failed" and "MemoryError" in snap["error"] and "epoch 1" in snap["error"]
    assert not manager.running()
    assert not root.exists() or not list(root.glob("*.keras"))
    fake.fail_with = None
    again = manager.start(cfg, owner="bob")
    again.join(60)
    assert again.state == "finished"


def test_a_finished_run_is_saved_where_the_visitor_was_looking(manager_env, monkeypatch, tmp_path):
    """The store folder is captured when the run starts; changing the environment later (another
    deployment setting, a test) does not send the model elsewhere."""
    app_state, manager, fake, cfg, root = manager_env
    job = manager.start(cfg, owner="alice")
    assert fake.started.wait(10)
    monkeypatch.setenv(config.MODELS_DIR_ENV, str(tmp_path / "elsewhere"))
    fake.release.set()
    job.join(60)
    assert job.state == "finished"
    info = job.snapshot()["info"]
    assert info["models_dir"] == str(root)
    assert ModelStore(root).list().names() == [info["model_name"]]
    assert not (tmp_path / "elsewhere").exists()
