"""Models and training on small data: accuracy floor, progress hook, stop (the model so far is kept),
seeds. Runs through the Dask run queue are in test_runs.py."""

import threading

import numpy as np
import pytest

from core.learning.model import ModelSpec, build_model, default_spec, layer_summary
from core.learning.train import Progress, TrainConfig, one_cycle_lr, save_result, train

pytestmark = pytest.mark.slow

MLP_10K = TrainConfig(spec=default_spec("mlp"), epochs=1, batch_size=128, learning_rate=1e-2,
                      train_size=10000, val_fraction=0.1, seed=0)


def test_builder_makes_both_families_from_one_spec():
    mlp = build_model(ModelSpec(family="mlp", hidden=(64, 32), filters=(), dropout=0.1, batch_norm=False))
    cnn = build_model(ModelSpec(family="cnn", filters=(8, 16), hidden=(32,)))
    assert [l.name for l in mlp.layers if l.name.startswith("dense")] == ["dense1", "dense2"]
    assert mlp.output_shape == (None, 10) and cnn.output_shape == (None, 10)
    assert any(l.name == "conv2" for l in cnn.layers)
    rows = layer_summary(cnn)
    assert sum(r["parameters"] for r in rows) == cnn.count_params()
    with pytest.raises(ValueError, match="family"):
        ModelSpec(family="rnn")
    with pytest.raises(ValueError, match="dropout"):
        ModelSpec(dropout=0.95)


def test_one_cycle_rises_then_falls():
    lrs = [one_cycle_lr(s, 100, 1e-2) for s in range(100)]
    peak = int(np.argmax(lrs))
    assert 20 <= peak <= 30 and lrs[peak] == pytest.approx(1e-2, rel=0.05)
    assert lrs[0] < lrs[peak] and lrs[-1] < 1e-3


def test_mlp_one_epoch_on_10k_reaches_92_percent_with_progress():
    events: list[Progress] = []
    result = train(MLP_10K, hook=events.append)
    assert result.test_accuracy >= 0.92, result.test_accuracy
    batches = [e for e in events if e.kind == "batch"]
    epochs = [e for e in events if e.kind == "epoch"]
    assert len(batches) == int(np.ceil(9000 / 128)) and len(epochs) == 1
    for e in batches + epochs:
        assert np.isfinite(e.loss) and 0 <= e.accuracy <= 1 and e.elapsed >= 0 and e.eta >= 0
    assert epochs[0].val_loss is not None and 0.8 < epochs[0].val_accuracy <= 1
    assert batches[-1].fraction == pytest.approx(1.0) and batches[-1].eta == pytest.approx(0.0, abs=1e-6)
    assert len(result.history["epoch"]) == 1 and len(result.history["batch"]) == len(batches)


def test_stop_request_ends_training_within_one_batch_and_keeps_the_model_so_far(tmp_path):
    from core.storage.store import ModelStore

    stop = threading.Event()
    seen = []

    def hook(p):
        if p.kind == "batch":
            seen.append(p.batch)
            if p.batch == 5:
                stop.set()

    cfg = TrainConfig(spec=default_spec("mlp"), epochs=3, train_size=10000, seed=0)
    result = train(cfg, hook=hook, stop=stop)
    assert seen == [1, 2, 3, 4, 5]
    assert result.stopped and result.model is not None and len(result.history["batch"]) == 5
    assert [row["step"] for row in result.history["epoch"]] == [5]  # Keras closes the cut epoch
    # Measured like a finished run: five batches of an MLP already read some digits.
    assert result.test_accuracy is not None and 0.2 < result.test_accuracy <= 1
    store = ModelStore(tmp_path / "models")
    name = save_result(result, store, name="stopped")
    meta = store.info(name)
    assert meta.stopped_early is True and meta.test_accuracy == result.test_accuracy
    assert len(meta.history["batch"]) == 5 and store.list().names() == ["stopped"]


def test_stop_before_training_still_trains_one_batch():
    """The stop request is read after each batch: a run stopped before it starts has one batch."""
    stop = threading.Event()
    stop.set()
    cfg = TrainConfig(spec=ModelSpec(family="mlp", hidden=(32,), filters=(), dropout=0.0, batch_norm=False),
                      epochs=2, train_size=2000, seed=0)
    result = train(cfg, stop=stop)
    assert result.stopped and len(result.history["batch"]) == 1 and result.test_accuracy is not None


def test_a_run_without_a_batch_is_not_saved(tmp_path):
    from core.learning.train import TrainResult
    from core.storage.store import ModelStore

    cfg = TrainConfig(spec=ModelSpec(family="mlp", hidden=(8,), filters=(), dropout=0.0, batch_norm=False))
    model = build_model(cfg.spec, seed=0)
    empty = TrainResult(cfg, model, {"epoch": [], "batch": []}, None, 0.0, True, int(model.count_params()), "0" * 64)
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ValueError, match="before its first batch"):
        save_result(empty, store)
    assert store.list().names() == []


def test_same_seed_same_run():
    cfg = TrainConfig(spec=ModelSpec(family="mlp", hidden=(32,), filters=(), dropout=0.0, batch_norm=False),
                      epochs=1, train_size=2000, seed=7)
    a, b = train(cfg), train(cfg)
    assert a.history["epoch"][0]["loss"] == pytest.approx(b.history["epoch"][0]["loss"], rel=1e-5)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
