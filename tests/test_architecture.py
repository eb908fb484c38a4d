"""Custom layer stacks (core.learning.architecture): the shapes and parameter counts computed without
TensorFlow equal Keras' own for the same stack, refusals name the layer and the reason, the memory
estimate, and the stack's round trips (metadata, the worker's request, share links)."""

from __future__ import annotations

import pytest

from core import config
from core.learning import architecture as arch
from core.learning.architecture import (
    MAX_FILTERS, MAX_HIDDEN_LAYERS, MAX_KERNEL, MAX_LAYERS, MAX_POOL, MAX_STRIDE, MAX_UNITS, BatchNorm, Conv, Dense,
    Dropout, Pool,
)
from core.learning.model import ModelSpec
from core.learning.settings import from_query, to_query
from core.learning.train import TrainConfig

STACKS = {
    "the issue's example": "conv32k3s1,pool2,bn,dense128,drop0.2",
    "the default stack": arch.layers_text(arch.DEFAULT_STACK),
    "strided convs, bn and dropout between dense layers": "conv8k5s2,bn,conv16k3s2,drop0.1,dense32,bn,dense16",
    "dense only, after a pooling": "pool2,dense10",
    "convolutions only (flatten before the output)": "conv4k7s3,pool2,conv3k1s1",
    "batch norm on the image, a stride larger than the kernel": "bn,conv2k3s4",
    "pooling to 1x1": "conv6k3s1,pool3,pool3,pool2,bn,dense8",  # 26 -> 8 -> 2 -> 1
    "odd sizes, a window that leaves a remainder": "conv5k2s3,pool4,dense7,drop0,dense3",
}


# --- the arithmetic against Keras ------------------------------------------------------------------------

@pytest.mark.parametrize("text", STACKS.values(), ids=STACKS.keys())
def test_shapes_and_parameter_counts_equal_keras(text):
    from core.learning.model import build_model, feature_model, layer_summary

    spec = ModelSpec(family="custom", layers=text)
    model = build_model(spec, seed=0)
    summary = arch.summarize(spec.layers)
    assert summary.problem is None
    assert summary.params == model.count_params()
    assert sum(r["parameters"] for r in layer_summary(model)) == model.count_params()
    built = {layer.name for layer in model.layers if layer.name != "image"}
    rows = [row for row in summary.rows if row.keras]
    assert {name for row in rows for name in row.keras} == built  # every Keras layer has its row
    for row in rows:
        for name in row.keras:
            assert tuple(model.get_layer(name).output.shape[1:]) == row.shape, (name, row)
        assert sum(model.get_layer(name).count_params() for name in row.keras) == row.params, row
    # The implied rows, in place: the flatten before the first dense layer (or the output), the output last.
    labels = [row.label for row in summary.rows]
    assert labels[0] == "input image" and labels[-1].startswith("dense 10 + softmax")
    first_dense = next((row.position for row in summary.rows if row.label.startswith("dense ") and row.position),
                       None)
    flatten_at = labels.index("flatten (implied)")
    assert summary.rows[flatten_at + 1].position == (first_dense or 0)
    # The "not a digit" detector reads every ReLU: one per convolution and dense layer.
    _, sizes = feature_model(model)
    assert sizes == [layer.filters if isinstance(layer, Conv) else layer.units
                     for layer in spec.layers if isinstance(layer, (Conv, Dense))]


def test_the_example_stack_by_hand():
    # conv 32 3x3 on 28x28x1 -> 26x26x32 (3*3*1*32 + 32 = 320); pool 2 -> 13x13x32; bn: 4*32 = 128;
    # flatten 5408; dense 128: 5408*128 + 128 = 692,352; dropout; output 128*10 + 10 = 1,290.
    summary = arch.summarize(arch.parse_layers("conv32k3s1,pool2,bn,dense128,drop0.2"))
    assert [(row.label, row.shape, row.params) for row in summary.rows] == [
        ("input image", (28, 28, 1), 0),
        ("conv 32, 3×3, stride 1 + ReLU", (26, 26, 32), 320),
        ("max pooling 2×2", (13, 13, 32), 0),
        ("batch normalization", (13, 13, 32), 128),
        ("flatten (implied)", (5408,), 0),
        ("dense 128 + ReLU", (128,), 692_352),
        ("dropout 0.2", (128,), 0),
        ("dense 10 + softmax (implied output)", (10,), 1_290),
    ]
    assert summary.params == 320 + 128 + 692_352 + 1_290


# --- refusals: which layer and why ------------------------------------------------------------------------

REFUSED = {
    "a pooling that shrinks the image below 1 px": (
        "pool4,pool4,pool2", ["Layer 3 (max pooling 2×2)", "below 1 px", "1×1 px", "2×2 window"]),
    "a strided conv that shrinks it below 1 px": (
        "conv8k5s2,conv8k5s2,conv8k5s2", ["Layer 3 (conv 8, 5×5, stride 2)", "below 1 px", "4×4 px", "5×5 kernel"]),
    "a conv after the first dense layer": (
        "conv8,dense64,bn,conv8", ["Layer 4 (conv 8, 3×3, stride 1)", "layer 2 (dense)", "flattened"]),
    "a pooling after a dense layer": ("dense64,pool2", ["Layer 2 (max pooling 2×2)", "layer 1 (dense)"]),
    "nothing trainable": ("pool2,drop0.2,bn",
                          ["Layers 1–3", "max pooling 2×2 · dropout 0.2", "convolution or dense"]),
    "no layer at all": ("", ["no layer", "convolution or dense"]),
    f"more than {MAX_LAYERS} layers": (",".join(["bn"] * MAX_LAYERS + ["dense8"]),
                                       [f"Layer {MAX_LAYERS + 1} (dense 8)", f"at most {MAX_LAYERS} layers"]),
    f"more than {MAX_HIDDEN_LAYERS} dense layers": (",".join(["dense8"] * (MAX_HIDDEN_LAYERS + 1)),
                                                    [f"Layer {MAX_HIDDEN_LAYERS + 1} (dense 8)",
                                                     f"at most {MAX_HIDDEN_LAYERS} dense layers"]),
    f"{MAX_UNITS + 1} units": (f"conv8,dense{MAX_UNITS + 1}", [f"Layer 2 (dense {MAX_UNITS + 1})",
                                                               f"units must be a whole number from 1 to {MAX_UNITS}"]),
    "0 units": ("dense0", ["Layer 1 (dense 0)", "from 1 to"]),
    f"{MAX_FILTERS + 1} filters": (f"conv{MAX_FILTERS + 1}",
                                   [f"Layer 1 (conv {MAX_FILTERS + 1}",
                                    f"filters must be a whole number from 1 to {MAX_FILTERS}"]),
    "0 filters": ("dense8,conv0", ["Layer 2 (conv 0", "filters must be"]),  # its own limit comes first
    f"kernel {MAX_KERNEL + 1}": (f"conv8k{MAX_KERNEL + 1}",
                                ["Layer 1", f"kernel must be a whole number from 1 to {MAX_KERNEL}"]),
    f"stride {MAX_STRIDE + 1}": (f"conv8k3s{MAX_STRIDE + 1}",
                                 ["Layer 1", f"stride must be a whole number from 1 to {MAX_STRIDE}"]),
    f"a pooling window of {MAX_POOL + 1}": (f"pool{MAX_POOL + 1},dense8", ["Layer 1 (max pooling", "size must be"]),
    "a pooling window of 1": ("pool1,dense8", ["Layer 1 (max pooling 1×1)", "from 2 to"]),
    "a dropout rate of 0.9": ("dense8,drop0.9", ["Layer 2 (dropout 0.9)", "rate must be in [0, 0.9)"]),
    "a token that is no layer": ("dense8,conv8x", ["Layer 2", "'conv8x' is not a layer"]),
}
ACCEPTED_AT_THE_LIMITS = {
    f"{MAX_LAYERS} layers": ",".join(["bn"] * (MAX_LAYERS - 1) + ["dense8"]),
    f"{MAX_HIDDEN_LAYERS} dense layers": ",".join(["dense8"] * MAX_HIDDEN_LAYERS),
    f"{MAX_UNITS} units, 1 filter": f"conv1,pool2,dense{MAX_UNITS}",
    f"{MAX_FILTERS} filters, 1 unit": f"conv{MAX_FILTERS}k3s2,dense1",
    f"kernel {MAX_KERNEL}, stride {MAX_STRIDE}": f"conv8k{MAX_KERNEL}s{MAX_STRIDE},conv8k1s1,dense8",
    f"a pooling window of {MAX_POOL}": f"pool{MAX_POOL},dense8",
    "a kernel as large as the image it gets": "pool4,conv8k7s1,dense8",  # 7x7 -> 1x1
    "pooling down to 1 px": "pool2,pool2,pool7,dense8",  # 28 -> 14 -> 7 -> 1
    "a dropout rate of 0.89": "dense8,drop0.89",
}


@pytest.mark.parametrize("text, says", REFUSED.values(), ids=REFUSED.keys())
def test_a_stack_that_cannot_work_is_refused_naming_the_layer_and_the_reason(text, says):
    summary = arch.summarize(arch.parse_layers(text)) if "conv8x" not in text else None
    for make in (lambda: ModelSpec(family="custom", layers=text),  # the form's way and the CLI's
                 lambda: from_query({"arch": "custom", "layers": text}),  # a share link
                 lambda: TrainConfig.from_dict({"spec": {"family": "custom",  # a worker
                                                        "layers": [t for t in text.split(",") if t]}})):
        with pytest.raises(ValueError) as caught:
            make()
        message = str(caught.value)
        assert all(s in message for s in says), (message, says)
    if summary is not None:  # the live editor shows the same message, and no totals
        assert summary.problem and all(s in summary.problem for s in says) and summary.params is None


@pytest.mark.parametrize("text", ACCEPTED_AT_THE_LIMITS.values(), ids=ACCEPTED_AT_THE_LIMITS.keys())
def test_stacks_at_the_limits_are_accepted(text):
    spec = ModelSpec(family="custom", layers=text)
    assert arch.layers_text(spec.layers) == arch.layers_text(arch.parse_layers(text))
    assert arch.summarize(spec.layers).problem is None


def test_layers_belong_to_the_custom_family_only():
    with pytest.raises(ValueError, match="layers are for the custom family"):
        ModelSpec(family="cnn", layers=(Dense(8),))
    with pytest.raises(ValueError, match="'mlp', 'cnn' or 'custom'"):
        ModelSpec(family="rnn")


# --- the memory estimate -----------------------------------------------------------------------------------

MODEST = "conv32k3s1,pool2,conv64k3s1,pool2,dense128,drop0.2"
# Three full-width 512-filter convs then 4,096 units: ~1 billion parameters (16 GB of weights and Adam state).
HUGE = f"conv{MAX_FILTERS}k3s1,conv{MAX_FILTERS}k3s1,conv{MAX_FILTERS}k3s1,dense{MAX_UNITS}"


def test_the_estimate_is_parameters_times_16_bytes_plus_activations_times_batch_times_8():
    summary = arch.summarize(arch.parse_layers("conv8k3s1,dense16"))
    # conv: 8*9 + 8 = 80 params, 26*26*8 = 5,408 values, twice (conv and its ReLU); flatten 5,408;
    # dense 16: 5408*16 + 16 = 86,544 params, 16 values twice; output 170 params, 10 values.
    assert summary.params == 80 + 86_544 + 170
    assert summary.activations == 2 * 5408 + 5408 + 2 * 16 + 10
    assert summary.memory(64) == summary.params * 4 * 4 + summary.activations * 64 * 4 * 2


def test_the_memory_estimate_refuses_a_huge_stack_and_accepts_a_modest_one(monkeypatch):
    monkeypatch.delenv(config.WORKER_MEMORY_ENV, raising=False)  # the default: 4 GiB
    modest = ModelSpec(family="custom", layers=MODEST)
    assert arch.summarize(modest.layers).memory(1024) < 2**30
    assert from_query(to_query(TrainConfig(spec=modest, batch_size=1024))).spec == modest
    with pytest.raises(ValueError) as caught:
        ModelSpec(family="custom", layers=HUGE)
    message = str(caught.value)
    for says in ("Layer 4 (dense 4096 + ReLU)", "too big", "at batch 8", "about 15 GiB",
                 "1,019,791,370 parameters", "memory limit of 4.0 GiB", config.WORKER_MEMORY_ENV):
        assert says in message, (says, message)


def test_the_estimate_counts_the_batch_and_the_workers_limit(monkeypatch):
    # A modest stack at the largest batch: ~0.9 GiB of activations. It fits 4 GiB, not 512 MiB.
    monkeypatch.delenv(config.WORKER_MEMORY_ENV, raising=False)
    spec = ModelSpec(family="custom", layers=MODEST)
    link = to_query(TrainConfig(spec=spec, batch_size=4096))
    assert from_query(link).batch_size == 4096
    monkeypatch.setenv(config.WORKER_MEMORY_ENV, "512MiB")
    assert arch.memory_limit() == 512 * 2**20
    assert ModelSpec(family="custom", layers=MODEST) == spec  # at the smallest batch it fits
    with pytest.raises(ValueError) as caught:
        from_query(link)  # at batch 4096 it does not
    message = str(caught.value)
    assert "Layer 1 (conv 32, 3×3, stride 1 + ReLU)" in message and "at batch 4096" in message
    assert "memory limit of 512 MiB" in message
    assert from_query({**link, "batch": "256"}).batch_size == 256


@pytest.mark.parametrize("text, expected", [
    ("4GiB", 4 * 2**30), ("4 GiB", 4 * 2**30), ("4GB", 4 * 10**9), ("4g", 4 * 10**9), ("512MiB", 512 * 2**20),
    ("1.5 GiB", 3 * 2**29), ("4000000000", 4 * 10**9), ("auto", None), ("0", None), ("lots", None),
])
def test_the_memory_limit_is_read_as_dask_reads_it(text, expected):
    from dask.utils import parse_bytes

    assert arch.memory_limit(text) == expected
    if expected is not None:  # as the worker's nanny reads it
        assert parse_bytes(text) == expected


# --- round trips --------------------------------------------------------------------------------------------

ROUND_TRIPS = {
    "records": (Conv(16, 5, 2), BatchNorm(), Pool(2), Dense(64), Dropout(0.35), Dense(32)),
    **{name: arch.parse_layers(text) for name, text in STACKS.items()},
}


@pytest.mark.parametrize("layers", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_a_custom_stack_round_trips_through_metadata_requests_and_links(layers):
    import json

    spec = ModelSpec(family="custom", layers=layers)
    assert spec.layers == tuple(layers)
    assert spec.hidden == tuple(l.units for l in layers if isinstance(l, Dense))
    assert spec.filters == tuple(l.filters for l in layers if isinstance(l, Conv))
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # a model's metadata
    cfg = TrainConfig(spec=spec, epochs=2, batch_size=64, seed=7)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # the worker's request
    params = to_query(cfg)
    assert params["arch"] == "custom" and params["layers"] == arch.layers_text(layers)
    assert not {"filters", "hidden", "dropout", "bn"} & set(params)
    assert from_query(params) == cfg  # a share link
    assert arch.parse_layers(arch.layers_text(layers)) == tuple(layers)


def test_link_tokens_may_leave_out_defaults_and_ignore_case_and_spaces():
    assert arch.parse_layers(" Conv32 , POOL, BN,dense128, dropout0.25 ,") == (
        Conv(32, 3, 1), Pool(2), BatchNorm(), Dense(128), Dropout(0.25))
    assert arch.layers_text(arch.parse_layers("conv32,pool,drop.5")) == "conv32k3s1,pool2,drop0.5"


def test_the_cli_trains_a_custom_stack_and_refuses_one_too_big_for_its_batch(capsys):
    from core.__main__ import _parser, main, train_config

    cfg = train_config(_parser().parse_args(["train", "--layers", "conv8k3s2,pool2,dense16", "--epochs", "1"]))
    assert cfg.spec.family == "custom" and [type(layer).__name__ for layer in cfg.spec.layers] == ["Conv", "Pool", "Dense"]
    # Checked at the run's own batch before any cluster is reached: exit 2, the layer named.
    assert main(["train", "--layers", "conv512k3s1,conv512k3s1,dense4096", "--batch-size", "4096"]) == 2
    assert "memory" in capsys.readouterr().err
