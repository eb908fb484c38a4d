"""Faults: a server killed while training or saving, hostile model files, the Keras version.
(Runs on the Dask cluster: a killed worker, a worker past its memory limit, many visitors' runs,
owner-only stop and cancel are in test_runs.py.)

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
from core.storage.store import ModelStore, StoreError

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


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Wait until no process of the group is left (killed children are reaped by init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {pgid} outlived a SIGKILL")


def train_and_kill(store: ModelStore, point: str, deadline_s: float = 240.0) -> dict:
    """Run the CLI's training against ``store`` and SIGKILL it at ``point``; returns what was seen."""
    kind, probe = KILL_POINTS[point]
    env = {**os.environ, config.MODELS_DIR_ENV: str(store.root), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    env.pop(config.ACTIVE_MODEL_ENV, None)
    env.pop(config.DASK_SCHEDULER_ENV, None)  # the CLI's own local cluster, in the CLI's process group
    # Its own process group: the CLI and the local Dask cluster it starts (scheduler, nanny, the
    # worker that trains and writes the files) die together, as when the machine goes down.
    proc = subprocess.Popen([sys.executable, "-m", "core", *TRAIN_ARGS], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
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
                    os.killpg(proc.pid, signal.SIGKILL)
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
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_at = line.strip()
                    break
    finally:
        if killed_at is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _wait_group_gone(proc.pid)
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


def _group_pids(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_a_killed_cli_takes_its_local_cluster_and_its_run_with_it(good_store):
    """SIGKILL of the CLI alone (not its process group): the local cluster it started (scheduler,
    nanny, the worker training) closes by itself, and the run saves nothing."""
    env = {**os.environ, config.MODELS_DIR_ENV: str(good_store.root), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONUNBUFFERED": "1"}
    env.pop(config.ACTIVE_MODEL_ENV, None)
    env.pop(config.DASK_SCHEDULER_ENV, None)
    # A run of hours (batches of 8 for 100 epochs), cut as soon as it reports a batch.
    args = ["train", "--family", "mlp", "--hidden", "32", "--epochs", "100", "--batch-size", "8", "--name", VICTIM]
    proc = subprocess.Popen([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if re.search(r"epoch 1/100 batch \d+/\d+", lines.get(timeout=0.1)):
                    break
            except queue.Empty:
                pass
        else:
            raise AssertionError(f"the run never reported a batch (exit {proc.poll()})")
        cluster = [p for p in _group_pids(proc.pid) if p != proc.pid]
        assert len(cluster) >= 3, cluster  # scheduler, nanny, worker (and the nanny's helpers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _group_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _group_pids(proc.pid)
        assert not left, f"the local cluster outlived its CLI: {left}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
    listing = good_store.list()
    assert listing.names() == [DEFAULT] and not listing.problems
    assert not (good_store.root / f"{VICTIM}.keras").exists()


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
    from core.storage.info import ModelInfo

    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    canary = tmp_path / "CANARY"
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    (module_dir / "digits_canary_mod.py").write_text(CANARY_MODULE.format(path=str(canary)), encoding="utf-8")
    monkeypatch.syspath_prepend(str(module_dir))
    store = ModelStore(tmp_path / "models")
    tiny = ModelSpec(family="mlp", hidden=(8,), filters=(), dropout=0.0, batch_norm=False)
    save_model(store, build_model(tiny, seed=0), ModelInfo(family="mlp"), name="base", files=tiny_served_files)
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
