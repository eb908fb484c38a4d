"""The model store: save, list, load, activate, atomic saves, corrupt and unsafe files, and the
checksums of the files a model is served from."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from core import config
from core.learning.model import ModelSpec, build_model
from core.learning.persist import load_model, save_model
from core.storage.info import ModelInfo
from core.storage.store import ModelStore, StoreError

TINY = ModelSpec(family="mlp", hidden=(8,), filters=(), dropout=0.0, batch_norm=False)


class FixtureStore(ModelStore):
    """A store whose test saves (`_save`) give every model the same served files."""

    def __init__(self, root, served_files: dict[str, bytes]):
        super().__init__(root)
        self.served_files = served_files


@pytest.fixture
def store(tmp_path, monkeypatch, tiny_served_files):
    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    return FixtureStore(tmp_path / "models", tiny_served_files)


def _save(store, name, seed=0, **meta):
    model = build_model(TINY, seed=seed)
    return save_model(store, model, ModelInfo(family="mlp", test_accuracy=0.5, **meta), name=name,
                      files=store.served_files), model


def test_save_list_load_roundtrip(store):
    name, model = _save(store, "first", created="2026-01-01T00:00:00+00:00")
    assert store.list().names() == ["first"]
    info = store.info("first")
    assert info.params == model.count_params() and info.family == "mlp" and info.keras_version
    assert set(info.files) == {".keras", ".onnx", ".novelty.npz", ".layers.onnx"}  # each file's SHA-256
    _, served = store.verify("first")
    assert served == {"onnx": store.root / "first.onnx", "novelty": store.root / "first.novelty.npz"}
    assert served["onnx"].read_bytes() == store.served_files[".onnx"]
    loaded = load_model(store, "first")
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5)
    # Newest first.
    _save(store, "second", created="2026-02-01T00:00:00+00:00")
    assert store.list().names() == ["second", "first"]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_write_stores_the_files_it_is_handed_with_their_checksums(store):
    """The store's own write (no Keras): bytes in, files and metadata out; the metadata last."""
    import hashlib

    _save(store, "made")
    files = {suffix: (store.root / f"made{suffix}").read_bytes() for suffix in (".keras", ".onnx", ".novelty.npz")}
    name = store.write("copied", ModelInfo(family="mlp", params=1), files)
    assert name == "copied" and set(store.list().names()) == {"made", "copied"}
    info = store.info("copied")
    assert info.name == "copied" and info.created and info.params == 1
    assert info.files == {s: hashlib.sha256(b).hexdigest() for s, b in files.items()}
    assert list(info.files)[0] == ".keras"
    with pytest.raises(StoreError, match="already exists"):
        store.write("copied", ModelInfo(family="mlp"), files)
    with pytest.raises(StoreError, match="Invalid model name"):
        store.write("../evil", ModelInfo(family="mlp"), files)
    with pytest.raises(StoreError, match="unknown file suffix '/../x'"):
        store.write("odd", ModelInfo(family="mlp"), {**files, "/../x": b"x"})
    assert not list(store.root.glob("odd*")) and not (store.root.parent / "x").exists()
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")], "no temporary files left"


def test_names_are_checked_and_never_overwritten(store):
    _save(store, "m1")
    with pytest.raises(StoreError, match="already exists"):
        _save(store, "m1")
    for bad in ("../evil", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(StoreError, match="Invalid model name"):
            store.keras_path(bad)


def test_activate_and_fallbacks(store, monkeypatch):
    assert store.active_name() is None
    _save(store, "a", created="2026-01-01T00:00:00+00:00")
    _save(store, "b", created="2026-02-01T00:00:00+00:00")
    assert store.active_name() == "b"  # newest when nothing is chosen
    store.set_active("a")
    assert store.active_name() == "a"
    monkeypatch.setenv(config.ACTIVE_MODEL_ENV, "b")
    assert store.active_name() == "b"  # the operator's environment variable wins
    monkeypatch.setenv(config.ACTIVE_MODEL_ENV, "missing")
    assert store.active_name() == "a"  # an unknown name is ignored
    with pytest.raises(StoreError, match="No usable model"):
        store.set_active("nope")


def test_interrupted_save_leaves_previous_model_loadable(store, monkeypatch):
    _save(store, "good")
    store.set_active("good")
    import keras

    def boom(self, *args, **kwargs):
        # Simulate a crash midway through writing the archive.
        with open(args[0], "wb") as fh:
            fh.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(keras.Model, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        _save(store, "half")
    monkeypatch.undo()
    listing = store.list()
    assert listing.names() == ["good"] and not listing.problems
    assert store.active_name() == "good"
    assert load_model(store, "good") is not None
    assert not list(store.root.glob(".*")), "temporary file removed"


def test_crash_between_model_and_metadata_is_not_listed(store):
    _save(store, "good")
    # A .keras without metadata (the process died before writing the JSON).
    (store.root / "orphan.keras").write_bytes(store.keras_path("good").read_bytes())
    listing = store.list()
    assert listing.names() == ["good"] and "orphan" in listing.problems


def test_corrupt_files_are_reported_and_skipped(store):
    _save(store, "good")
    _save(store, "badzip")
    store.keras_path("badzip").write_bytes(b"not a zip at all")
    _save(store, "badjson")
    store.meta_path("badjson").write_text("{ truncated", encoding="utf-8")
    listing = store.list()
    assert listing.names() == ["good"]
    assert set(listing.problems) == {"badzip", "badjson"}
    assert "badzip.keras does not match the checksum" in listing.problems["badzip"]
    with pytest.raises(StoreError, match="not a valid .keras archive"):
        load_model(store, "badzip")


def test_served_files_are_checked_against_their_checksums(store):
    _save(store, "good")
    _save(store, "flipped")
    onnx = store.root / "flipped.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte altered: same size
    onnx.write_bytes(bytes(data))
    _save(store, "nodetector")
    (store.root / "nodetector.novelty.npz").unlink()
    _save(store, "unexported")
    meta = json.loads(store.meta_path("unexported").read_text(encoding="utf-8"))
    del meta["files"]  # saved before models were exported
    store.meta_path("unexported").write_text(json.dumps(meta), encoding="utf-8")
    listing = store.list()
    assert listing.names() == ["good"]
    assert "flipped.onnx does not match the checksum" in listing.problems["flipped"]
    assert "nodetector.novelty.npz is missing" in listing.problems["nodetector"]
    assert "python -m core export unexported" in listing.problems["unexported"]
    for name in ("flipped", "nodetector", "unexported"):
        with pytest.raises(StoreError):
            store.verify(name)
        with pytest.raises(StoreError, match="No usable model"):
            store.set_active(name)
    with pytest.raises(StoreError, match="No model named 'nope'"):
        store.verify("nope")


def test_a_file_altered_in_place_is_caught_even_with_its_old_modification_time(store):
    import os

    _save(store, "good")
    assert store.list().names() == ["good"]  # checksums computed (and remembered) once
    onnx = store.root / "good.onnx"
    stat = onnx.stat()
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0x01
    with open(onnx, "r+b") as fh:  # same file, same size
        fh.write(bytes(data))
    os.utime(onnx, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # modification time set back
    listing = store.list()
    assert listing.names() == [] and "good.onnx does not match the checksum" in listing.problems["good"]


def test_corrupt_weights_inside_valid_zip_fail_cleanly(store):
    _save(store, "broken")
    path = store.keras_path("broken")
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data[: len(data) // 3] if n.endswith(".h5") else data)
    with pytest.raises(StoreError, match="Cannot load model 'broken'"):
        load_model(store, "broken")


def test_lambda_layer_is_refused_in_safe_mode(store):
    import keras

    inp = keras.Input((28, 28, 1))
    out = keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2)(inp)))
    evil = keras.Model(inp, out)
    store.root.mkdir(parents=True, exist_ok=True)
    evil.save(store.keras_path("evil"))
    store.meta_path("evil").write_text(json.dumps({"family": "cnn"}), encoding="utf-8")
    with pytest.raises(StoreError, match="unsafe content"):
        load_model(store, "evil")


def test_cap_on_user_models_removes_oldest_but_keeps_default(store, monkeypatch):
    monkeypatch.setenv(config.MAX_USER_MODELS_ENV, "2")
    _save(store, config.DEFAULT_MODEL_NAME, created="2020-01-01T00:00:00+00:00", shipped=True)
    for i in range(4):
        _save(store, f"user{i}", created=f"2026-0{i + 1}-01T00:00:00+00:00")
    assert store.list().names() == ["user3", "user2", config.DEFAULT_MODEL_NAME]


# --------------------------------------------------------------------------------------------
# Saving over an existing model: versioned file stems, crash-safe at every point
# --------------------------------------------------------------------------------------------

SUFFIXES = (".keras", ".onnx", ".novelty.npz")


def _files(version: int) -> dict[str, bytes]:
    """Small stand-ins for a model's files (the store only checks checksums)."""
    return {suffix: f"v{version} {suffix}".encode() for suffix in SUFFIXES}


def _model_files(root, name="m") -> set[str]:
    return {p.name for p in root.iterdir() if p.name.startswith((f"{name}.", f"{name}~"))}


@pytest.fixture
def bytes_store(tmp_path, monkeypatch):
    """An empty store for tests that write raw bytes (no Keras)."""
    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    return ModelStore(tmp_path / "models")


def test_overwrite_writes_a_new_version_and_removes_the_old_files(bytes_store):
    store = bytes_store
    store.write("m", ModelInfo(family="mlp", command=f"v{1}", stem="m~00000000"), _files(1))
    assert store.info("m").stem is None  # a first save keeps NAME + suffix (a stem handed in is ignored)
    assert _model_files(store.root) == {"m.json", "m.keras", "m.onnx", "m.novelty.npz"}

    for version in (2, 3):
        store.write("m", ModelInfo(family="mlp", command=f"v{version}"), _files(version), overwrite=True)
        listing = store.list()
        assert listing.names() == ["m"] and not listing.problems
        info = store.info("m")
        stem = info.stem
        assert info.command == f"v{version}" and re.fullmatch(r"m~[0-9a-f]{8}", stem)
        assert _model_files(store.root) == {"m.json", *(stem + s for s in SUFFIXES)}, "old files gone"
        _, served = store.verify("m")
        assert served == {"onnx": store.root / f"{stem}.onnx", "novelty": store.root / f"{stem}.novelty.npz"}
        assert served["onnx"].read_bytes() == _files(version)[".onnx"]
        assert store.keras_path("m") == listing.get("m").path == store.root / f"{stem}.keras"
        assert store.keras_path("m").read_bytes() == _files(version)[".keras"]

    store.attach("m", {".onnx": b"re-exported", ".novelty.npz": b"refitted"})  # beside the current version
    assert (store.root / f"{stem}.onnx").read_bytes() == b"re-exported" and store.list().names() == ["m"]
    assert _model_files(store.root) == {"m.json", *(stem + s for s in SUFFIXES)}

    store.delete("m")
    assert _model_files(store.root) == set() and store.list().names() == []


def test_overwrite_with_keras_loads_the_new_model(store):
    _save(store, "m", seed=0)
    model = build_model(TINY, seed=1)
    save_model(store, model, ModelInfo(family="mlp"), name="m", overwrite=True, files=store.served_files)
    assert store.list().names() == ["m"] and store.info("m").stem.startswith("m~")
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(load_model(store, "m")(x).numpy(), model(x).numpy(), rtol=1e-5)


def test_a_stem_outside_the_model_is_refused(bytes_store):
    store = bytes_store
    store.write("m", ModelInfo(family="mlp"), _files(1))
    meta = json.loads(store.meta_path("m").read_text(encoding="utf-8"))
    for bad in ("../evil", "other~0123abcd", "m~0123", 7):
        store.meta_path("m").write_text(json.dumps({**meta, "stem": bad}), encoding="utf-8")
        assert "invalid file stem" in store.list().problems["m"]
        assert store.keras_path("m") == store.root / "m.keras"


# The child writes v1 of model "m", then saves v2 over it and stops at a kill point: it prints
# PAUSED and sleeps until the parent SIGKILLs it.
KILL_CHILD = r"""
import sys, time
from core.storage import store as s
from core.storage.info import ModelInfo

root, point = sys.argv[1], sys.argv[2]
files = lambda v: {suffix: f"v{v} {suffix}".encode() for suffix in (".keras", ".onnx", ".novelty.npz")}
store = s.ModelStore(root)
store.write("m", ModelInfo(family="mlp", command=f"v{1}"), files(1))

real, written = s._atomic_write_bytes, []

def pause():
    print("PAUSED", flush=True)
    time.sleep(120)

def atomic_write_bytes(path, data):
    if (point == "after_first_file" and len(written) == 1) or (point == "before_metadata" and path.suffix == ".json"):
        pause()
    real(path, data)
    written.append(path)
    if point == "after_metadata" and path.suffix == ".json":
        pause()

s._atomic_write_bytes = atomic_write_bytes
store.write("m", ModelInfo(family="mlp", command=f"v{2}"), files(2), overwrite=True)
print("NOT KILLED", flush=True)
"""

# Kill point -> the version the model must be after the kill: the old one until the metadata is replaced.
KILL_OVERWRITE_POINTS = {"after_first_file": 1, "before_metadata": 1, "after_metadata": 2}


def _overwrite_and_kill(root, point: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(root), point], cwd=config.ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "PAUSED", (line, proc.stderr.read() if proc.poll() is not None else "")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("point", list(KILL_OVERWRITE_POINTS))
def test_sigkill_while_saving_over_a_model_leaves_a_complete_version(point, bytes_store):
    store, version = bytes_store, KILL_OVERWRITE_POINTS[point]
    _overwrite_and_kill(store.root, point)
    listing = store.list()
    assert listing.names() == ["m"] and not listing.problems, listing.problems  # leftovers are no orphan models
    assert listing.get("m").info.command == f"v{version}"
    _, served = store.verify("m")
    paths = {".keras": store.keras_path("m"), ".onnx": served["onnx"], ".novelty.npz": served["novelty"]}
    assert {suffix: path.read_bytes() for suffix, path in paths.items()} == _files(version)
    assert listing.get("m").path == store.keras_path("m")
    if version == 1:
        assert store.keras_path("m") == store.root / "m.keras"  # the old files, untouched


@pytest.mark.parametrize("point", list(KILL_OVERWRITE_POINTS))
def test_leftovers_of_a_killed_overwrite_go_with_the_next_save(point, bytes_store):
    store = bytes_store
    _overwrite_and_kill(store.root, point)
    store.write("m", ModelInfo(family="mlp", command=f"v{3}"), _files(3), overwrite=True)
    stem = store.info("m").stem
    assert _model_files(store.root) == {"m.json", *(stem + s for s in SUFFIXES)}
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("point", list(KILL_OVERWRITE_POINTS))
def test_leftovers_of_a_killed_overwrite_go_with_clean_temporaries(point, bytes_store):
    store = bytes_store
    _overwrite_and_kill(store.root, point)
    current = {"m.json", *(store.keras_path("m").stem + s for s in SUFFIXES)}
    leftovers = _model_files(store.root) - current
    if point != "after_metadata":
        assert leftovers, "the new version's first files were written"
    assert store.clean_temporaries() == 0  # too recent
    time.sleep(0.02)
    assert store.clean_temporaries(older_than_s=0) == len(leftovers)
    assert _model_files(store.root) == current
    assert store.list().names() == ["m"] and store.info("m").command == f"v{KILL_OVERWRITE_POINTS[point]}"


def test_delete_removes_leftover_versions(bytes_store):
    store = bytes_store
    _overwrite_and_kill(store.root, "before_metadata")
    store.delete("m")
    assert _model_files(store.root) == set()
