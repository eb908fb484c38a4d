"""The CLI's contracts: predict --json (one object per file, errors, no ink), evaluate, activate, list."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from core import config
from core.data import cached_mnist
from core.learning.model import ModelSpec
from core.learning.train import TrainConfig, save_result, train

ROOT = config.ROOT
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory):
    """A store with a small CNN trained for a couple of epochs (good enough to read clean digits)."""
    root = tmp_path_factory.mktemp("cli-models")
    from core.storage.store import ModelStore

    cfg = TrainConfig(spec=ModelSpec(family="cnn", filters=(16, 32), hidden=(64,)), epochs=2,
                      batch_size=128, train_size=20000, seed=0)
    result = train(cfg)
    assert result.test_accuracy > 0.97
    save_result(result, ModelStore(root), name="cli-cnn")
    return root


def run_cli(args, store, **env):
    e = {**os.environ, config.MODELS_DIR_ENV: str(store), **env}
    e.pop(config.ACTIVE_MODEL_ENV, None)
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=300)


def digit_png(path, index):
    """A real MNIST test digit, dark ink on white paper, 112x112."""
    m = cached_mnist()
    img = Image.fromarray(255 - m.x_test[index]).resize((112, 112), Image.Resampling.BILINEAR)
    img.save(path)
    return int(m.y_test[index])


def test_predict_json_contract(cli_store, tmp_path):
    good = tmp_path / "seven.png"
    label = digit_png(good, 0)
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    html = tmp_path / "page.png"
    html.write_text("<html><body>not an image</body></html>")
    missing = tmp_path / "missing.png"
    args = ["predict", str(good), str(blank), str(html), str(missing), "--json"]
    proc = run_cli(args, cli_store)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.strip().splitlines()
    objs = [json.loads(line) for line in lines]  # stdout holds only JSON
    assert [o["file"] for o in objs] == args[1:5]
    assert objs[0]["digit"] == label and 0.5 < objs[0]["confidence"] <= 1
    assert len(objs[0]["probabilities"]) == 10 and abs(sum(objs[0]["probabilities"]) - 1) < 1e-3
    assert objs[1]["digit"] is None and "no digit found" in objs[1]["message"]
    assert "error" in objs[2] and "digit" not in objs[2]
    assert "error" in objs[3] and "cannot open" in objs[3]["error"]


def test_predict_all_good_exits_zero(cli_store, tmp_path):
    good = tmp_path / "a.png"
    digit_png(good, 1)
    proc = run_cli(["predict", str(good), "--json"], cli_store)
    assert proc.returncode == 0 and json.loads(proc.stdout)["digit"] == 2


def test_evaluate_activate_list(cli_store):
    proc = run_cli(["evaluate", "--json"], cli_store)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "cli-cnn" and 0.97 < out["test_accuracy"] <= 1
    assert run_cli(["activate", "cli-cnn"], cli_store).returncode == 0
    listing = json.loads(run_cli(["list", "--json"], cli_store).stdout)
    assert listing[0]["name"] == "cli-cnn" and listing[0]["active"]
    # A model that cannot be used is exit 1 (usage errors are 2), the reason on stderr.
    bad = run_cli(["activate", "nope"], cli_store)
    assert bad.returncode == 1 and "No model named 'nope'" in bad.stderr
    assert run_cli(["evaluate", "--model", "nope", "--json"], cli_store).returncode == 1


def test_train_saves_to_store_with_command(tmp_path, dask_cluster):
    """Through the session's Dask cluster (test_faults.py trains through the CLI's own local one)."""
    proc = run_cli(["train", "--family", "mlp", "--epochs", "1", "--train-size", "3000", "--name", "tiny"], tmp_path,
                   **{config.DASK_SCHEDULER_ENV: dask_cluster.address})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == "tiny"
    assert "epoch 1/1" in proc.stderr
    meta = json.loads((tmp_path / "tiny.json").read_text())
    assert meta["command"] == "python -m core train --family mlp --epochs 1 --train-size 3000 --name tiny"
    assert meta["hyperparameters"]["train_size"] == 3000 and meta["history"]["epoch"]
    assert "stopped_early" not in meta and meta["test_accuracy"] == json.loads(proc.stdout)["test_accuracy"]
