"""A run's settings as query parameters (core.learning.settings): round trip and refusals."""

from __future__ import annotations

import pytest

from core.learning.model import ModelSpec, default_spec
from core.learning.settings import PARAMS, from_query, has_settings, query_keys, to_query
from core.learning.train import RECIPES, TrainConfig

CONFIGS = {
    "defaults": TrainConfig(),
    "mlp": TrainConfig(spec=ModelSpec(family="mlp", hidden=(64, 32), filters=(), dropout=0.3, batch_norm=False),
                       epochs=7, batch_size=64, learning_rate=0.005, schedule="constant", train_size=12000,
                       val_fraction=0.2, augment=True, label_smoothing=0.1, seed=42),
    "cnn 3 blocks": TrainConfig(spec=ModelSpec(filters=(16, 32, 64), hidden=(128,)), batch_size=8, seed=2**31 - 1),
    **{f"recipe {name}": cfg for name, cfg in RECIPES.items()},
    "custom": TrainConfig(spec=ModelSpec(family="custom", layers="conv32k3s1,pool2,bn,dense128,drop0.2"),
                          epochs=2, batch_size=256, schedule="constant", train_size=3000, seed=5),
    "custom, dense only": TrainConfig(spec=ModelSpec(family="custom", layers="dense64,drop0.35,dense32"),
                                      augment=True, val_fraction=0.0),
    "custom default stack": TrainConfig(spec=default_spec("custom")),
}
PRESET_KEYS = {"arch", "filters", "hidden", "dropout", "bn", "epochs", "batch", "lr", "schedule", "images", "val",
               "augment", "smoothing", "seed"}  # the presets' links, as they were before custom stacks


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_settings_round_trip_through_the_query(cfg):
    params = to_query(cfg)
    custom = cfg.spec.family == "custom"
    expected = PRESET_KEYS - {"filters", "hidden", "dropout", "bn"} | {"layers"} if custom else PRESET_KEYS
    assert set(params) == expected == set(query_keys(cfg.spec.family)) <= set(PARAMS)
    assert all(isinstance(v, str) for v in params.values())
    assert from_query(params) == cfg


def test_a_preset_link_is_as_it_was():
    assert to_query(TrainConfig()) == {
        "arch": "cnn", "filters": "32,64", "hidden": "256", "dropout": "0.1", "bn": "1", "epochs": "3",
        "batch": "128", "lr": "0.01", "schedule": "onecycle", "images": "60000", "val": "0.1", "augment": "0",
        "smoothing": "0", "seed": "0"}
    assert from_query({**to_query(TrainConfig()), "layers": "dense8"}) == TrainConfig()  # a preset ignores layers


def test_a_custom_link_carries_its_layers_in_one_parameter():
    params = {"arch": "custom", "layers": "conv32k3s1,pool2,bn,dense128,drop0.2", "epochs": "2"}
    cfg = from_query(params)
    assert cfg.epochs == 2 and cfg.spec.family == "custom"
    assert [layer.kind for layer in cfg.spec.layers] == ["conv", "pool", "bn", "dense", "dropout"]
    assert to_query(cfg)["layers"] == params["layers"]
    # The presets' parameters left in an address are ignored; layers without arch are a custom stack.
    assert from_query({**params, "filters": "8,8,8,8", "hidden": "10000", "bn": "maybe"}) == cfg
    assert from_query({"layers": params["layers"], "epochs": "2"}) == cfg
    assert from_query({"arch": "custom"}).spec == default_spec("custom")
    assert has_settings({"layers": "dense8"})


def test_missing_parameters_keep_their_defaults():
    assert from_query({}) == TrainConfig(spec=default_spec("cnn"))
    assert from_query({"arch": "mlp"}).spec == default_spec("mlp")
    assert from_query({"epochs": "5"}) == TrainConfig(spec=default_spec("cnn"), epochs=5)


def test_the_owner_token_is_not_a_setting():
    assert not has_settings({"owner": "abc"}) and has_settings({"owner": "abc", "epochs": "2"})
    assert "owner" not in to_query(TrainConfig())


REFUSED = {
    "epochs 1,000,000": ({"epochs": "1000000"}, "epochs"),
    "epochs 0": ({"epochs": "0"}, "epochs"),
    "batch 0": ({"batch": "0"}, "batch_size"),
    "10,000 units": ({"hidden": "10000"}, "between 1 and 4096"),
    "seven dense layers": ({"hidden": "8,8,8,8,8,8,8"}, "at most 6"),
    "four conv blocks": ({"filters": "8,8,8,8"}, "1 to 3 conv blocks"),
    "an unknown architecture": ({"arch": "rnn"}, "not cnn, mlp or custom"),
    "words for a number": ({"lr": "fast"}, "peak learning rate"),
    "a fraction for a whole number": ({"epochs": "2.5"}, "whole number"),
    "nan": ({"val": "nan"}, "validation share"),
    "a negative seed": ({"seed": "-1"}, "seed"),
    "a yes-or-no that is neither": ({"augment": "maybe"}, "1 or 0"),
    "a learning rate of 0": ({"lr": "0"}, "learning_rate"),
    "an unknown schedule": ({"schedule": "cosine"}, "schedule"),
    "sizes that are not numbers": ({"hidden": "256,lots"}, "whole numbers separated by commas"),
    "a layer that is no layer": ({"arch": "custom", "layers": "conv32,lots"},
                                 r"custom layers \(layers='conv32,lots'\): Layer 2: 'lots' is not a layer"),
    "an empty custom stack": ({"arch": "custom", "layers": ""}, "no layer"),
    "a conv after a dense layer": ({"layers": "dense64,conv8"}, r"Layer 2 \(conv 8, 3×3, stride 1\)"),
    "a pooling below 1 px": ({"layers": "conv8,pool7,pool7"}, r"Layer 3 \(max pooling 7×7\).*below 1 px"),
    "a custom stack past the worker's memory": ({"layers": "conv64,conv64,dense256", "batch": "4096"},
                                                "too big for a training worker: at batch 4096"),
}


@pytest.mark.parametrize("params, message", REFUSED.values(), ids=REFUSED.keys())
def test_settings_the_form_would_refuse_are_refused_with_a_message(params, message):
    with pytest.raises(ValueError, match=message):
        from_query(params)
