"""Shared fixtures: a small trained model store, and the environment pointing the app at it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TEST_MODEL = "test-mlp"
# One epoch of the default MLP on 10,000 images: ~92% test accuracy in a few seconds.
TINY_MLP = dict(epochs=1, batch_size=128, learning_rate=1e-2, train_size=10000, val_fraction=0.1, seed=0)


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory) -> Path:
    """A model store with one small trained MLP (``test-mlp``, set active) and a copy of it
    (``test-mlp-copy``) so pickers have a choice. Read-only for tests: copy it to change it."""
    from core.learning.model import default_spec
    from core.learning.train import TrainConfig, save_result, train
    from core.storage.store import ModelStore

    root = tmp_path_factory.mktemp("models")
    result = train(TrainConfig(spec=default_spec("mlp"), **TINY_MLP))
    assert result.test_accuracy >= 0.9, f"fixture model too weak: {result.test_accuracy:.3f}"
    store = ModelStore(root)
    save_result(result, store, name=TEST_MODEL, command="tests/conftest.py")
    copy = store.info(TEST_MODEL).to_json() | {"name": f"{TEST_MODEL}-copy", "created": "2000-01-01T00:00:00+00:00"}
    for suffix in (".keras", ".onnx", ".novelty.npz"):
        shutil.copyfile(root / f"{TEST_MODEL}{suffix}", root / f"{TEST_MODEL}-copy{suffix}")
    store.meta_path(f"{TEST_MODEL}-copy").write_text(json.dumps(copy), encoding="utf-8")
    store.set_active(TEST_MODEL)
    return root


SHIFTED_MODEL = "test-mlp-plus-one"


@pytest.fixture(scope="session")
def two_readers_store(trained_store, tmp_path_factory) -> Path:
    """A copy of ``trained_store`` (``test-mlp`` active, ``test-mlp-copy``) plus ``test-mlp-plus-one``:
    a tiny MLP trained like ``test-mlp`` (``TINY_MLP``, same images and seed) on labels shifted by
    one, ``(y + 1) % 10``, so it reads a 2 as 3 and a 7 as 8 where ``test-mlp`` reads 2 and 7. For
    tests that must tell which model answered. Its recorded test accuracy is measured on the true
    labels (near 0%). Read-only for tests: copy it to change it."""
    import time
    from dataclasses import replace

    from core.data import cached_mnist, training_split
    from core.learning.model import build_model, default_spec
    from core.learning.train import TrainConfig, TrainResult, fit, save_result, test_accuracy
    from core.storage.store import ModelStore

    root = tmp_path_factory.mktemp("two-readers") / "models"
    shutil.copytree(trained_store, root)
    cfg = TrainConfig(spec=default_spec("mlp"), **TINY_MLP)
    mnist = cached_mnist()
    split = training_split(mnist, train_size=cfg.train_size, val_fraction=cfg.val_fraction, seed=cfg.seed)
    shifted = replace(split, y_train=(split.y_train + 1) % 10, y_val=(split.y_val + 1) % 10,
                      y_test=(split.y_test + 1) % 10)
    model = build_model(cfg.spec, seed=cfg.seed)
    start = time.perf_counter()
    history = fit(model, shifted, cfg)
    seconds = time.perf_counter() - start
    shifted_accuracy = test_accuracy(model, shifted.x_test, shifted.y_test)
    assert shifted_accuracy >= 0.85, f"fixture model too weak on shifted labels: {shifted_accuracy:.3f}"
    result = TrainResult(cfg, model, history, test_accuracy(model, split.x_test, split.y_test), seconds,
                         stopped=False, param_count=int(model.count_params()), data_sha256=mnist.sha256)
    save_result(result, ModelStore(root), name=SHIFTED_MODEL, command="tests/conftest.py (labels + 1)")
    return root


@pytest.fixture(scope="session")
def tiny_served_files() -> dict[str, bytes]:
    """The served files (``.onnx`` and ``.novelty.npz``, by store suffix) of a tiny untrained MLP,
    made once: for tests that save their own models with
    ``core.learning.persist.save_model(store, ..., files=...)``. The
    store lists a model only with its served files, and checks them against their checksums, not
    against the ``.keras`` weights; tests that serve a model use ``trained_store``."""
    from core.learning.model import ModelSpec, build_model
    from core.learning.train import served_files

    tiny = ModelSpec(family="mlp", hidden=(8,), filters=(), dropout=0.0, batch_norm=False)
    return served_files(build_model(tiny, seed=0))


def point_app_at(store: Path, tmp_path: Path, monkeypatch) -> Path:
    """Point the app (AppTest runs scripts in-process) at the model store ``store`` and a scratch data
    dir, with no default model forced by the environment; returns ``store``."""
    from core import config

    monkeypatch.setenv(config.MODELS_DIR_ENV, str(store))
    monkeypatch.setenv(config.APP_DATA_DIR_ENV, str(tmp_path / "app-data"))
    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    return store


@pytest.fixture
def app_env(trained_store, tmp_path, monkeypatch) -> Path:
    """The app on the trained store (`point_app_at`)."""
    return point_app_at(trained_store, tmp_path, monkeypatch)


@pytest.fixture
def two_readers_env(two_readers_store, tmp_path, monkeypatch) -> Path:
    """Like ``app_env``, on ``two_readers_store`` (two models that read digits differently)."""
    return point_app_at(two_readers_store, tmp_path, monkeypatch)


@pytest.fixture
def empty_store_env(tmp_path, monkeypatch) -> Path:
    """Point the app at an empty model store of its own (for tests that write models)."""
    from core import config

    root = tmp_path / "models"
    monkeypatch.setenv(config.MODELS_DIR_ENV, str(root))
    monkeypatch.setenv(config.APP_DATA_DIR_ENV, str(tmp_path / "app-data"))
    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    return root


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory):
    """A real ``dask scheduler`` and one ``dask worker`` (4 GiB limit), separate processes on
    localhost, shared by the tests that train through the run queue."""
    from tests.dask_cluster import start_cluster

    cluster = start_cluster(tmp_path_factory.mktemp("dask-logs"))
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_env(dask_cluster, monkeypatch):
    """Point `core.learning.runs.connect` (and so the app's run board) at ``dask_cluster``."""
    from core import config

    monkeypatch.setenv(config.DASK_SCHEDULER_ENV, dask_cluster.address)
    return dask_cluster
