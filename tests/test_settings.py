"""A run's settings as query parameters (core.learning.settings): round trip and refusals."""

from __future__ import annotations

import pytest

from core.learning.model import ModelSpec, default_spec
from core.learning.settings import PARAMS, from_query, has_settings, to_query
from core.learning.train import RECIPES, TrainConfig

CONFIGS = {
    "defaults": TrainConfig(),
    "mlp": TrainConfig(spec=ModelSpec(family="mlp", hidden=(64, 32), filters=(), dropout=0.3, batch_norm=False),
                       epochs=7, batch_size=64, learning_rate=0.005, schedule="constant", train_size=12000,
                       val_fraction=0.2, augment=True, label_smoothing=0.1, seed=42),
    "cnn 3 blocks": TrainConfig(spec=ModelSpec(filters=(16, 32, 64), hidden=(128,)), batch_size=8, seed=2**31 - 1),
    **{f"recipe {name}": cfg for name, cfg in RECIPES.items()},
}


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_settings_round_trip_through_the_query(cfg):
    params = to_query(cfg)
    assert set(params) == set(PARAMS) and all(isinstance(v, str) for v in params.values())
    assert from_query(params) == cfg


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
    "an unknown architecture": ({"arch": "rnn"}, "not cnn or mlp"),
    "words for a number": ({"lr": "fast"}, "peak learning rate"),
    "a fraction for a whole number": ({"epochs": "2.5"}, "whole number"),
    "nan": ({"val": "nan"}, "validation share"),
    "a negative seed": ({"seed": "-1"}, "seed"),
    "a yes-or-no that is neither": ({"augment": "maybe"}, "1 or 0"),
    "a learning rate of 0": ({"lr": "0"}, "learning_rate"),
    "an unknown schedule": ({"schedule": "cosine"}, "schedule"),
    "sizes that are not numbers": ({"hidden": "256,lots"}, "whole numbers separated by commas"),
}


@pytest.mark.parametrize("params, message", REFUSED.values(), ids=REFUSED.keys())
def test_settings_the_form_would_refuse_are_refused_with_a_message(params, message):
    with pytest.raises(ValueError, match=message):
        from_query(params)
