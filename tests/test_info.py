"""ModelInfo: a stored model's metadata, read from whatever JSON a store holds and written back."""

from __future__ import annotations

import json

import pytest

from core.storage.info import ModelInfo


def test_round_trip_keeps_every_field_that_is_set():
    info = ModelInfo(name="m", family="cnn", created="2026-01-01T00:00:00+00:00", params=1234, test_accuracy=0.99,
                     train_seconds=12.5, temperature=0.7, hyperparameters={"epochs": 2, "spec": {"family": "cnn"}},
                     history={"epoch": [{"epoch": 1}], "batch": []}, layers=[{"name": "dense"}], command="python -m core",
                     data_sha256="ab" * 32, keras_version="3.0", stopped_early=True, shipped=True, base_model="b",
                     corrections=3, files={".keras": "00"}, stem="m~0123abcd")
    assert ModelInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
    assert info.finetuned and not ModelInfo().finetuned


def test_to_json_leaves_out_what_is_not_set():
    assert ModelInfo(family="mlp").to_json() == {"family": "mlp", "temperature": 1.0}


def test_fields_of_the_wrong_type_read_as_missing():
    info = ModelInfo.from_json({"name": 7, "family": ["cnn"], "params": "12", "test_accuracy": "0.9",
                                "train_seconds": float("inf"), "hyperparameters": [], "history": "x", "layers": {},
                                "shipped": "yes", "stopped_early": 1, "corrections": True, "files": ["a"],
                                "base_model": 3, "unknown": "ignored"})
    assert info == ModelInfo()


def test_an_older_file_with_param_count_is_read():
    assert ModelInfo.from_json({"param_count": 42}).params == 42
    assert ModelInfo.from_json({"param_count": 42, "params": 43}).params == 43


@pytest.mark.parametrize("data", [None, [], "text", 3])
def test_metadata_that_is_not_an_object_is_refused(data):
    with pytest.raises(ValueError, match="not a JSON object"):
        ModelInfo.from_json(data)


def test_a_stem_of_another_type_is_kept_as_text_for_the_store_to_refuse():
    assert ModelInfo.from_json({"stem": 7}).stem == "7"
    assert ModelInfo.from_json({}).stem is None
