"""A stored model's metadata (``NAME.json``) as one typed record, read and written here alone.

`ModelInfo.from_json` reads what any version of the project wrote (the older ``param_count`` key
included) and never trusts a field's type: a value of the wrong type reads as missing. `to_json`
writes only what is set.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

T_MIN, T_MAX = 0.05, 5.0  # calibration temperatures outside this range are not trusted (read as 1.0)


@dataclass(frozen=True)
class ModelInfo:
    """What the store records about a model.

    Attributes:
        name: the model's name in the store (set by the store when it is saved).
        family: "cnn" or "mlp".
        created: UTC time of the save, ISO 8601 (set by the store unless given).
        params: the model's parameter count.
        test_accuracy: accuracy on MNIST's 10,000 test images, 0..1.
        train_seconds: wall time of training (fine-tuning included).
        temperature: calibration temperature: shown confidences are softmax(logits / temperature).
        hyperparameters: the run's settings (`core.learning.train.TrainConfig.to_dict`; fine-tuning's
            under ``"finetune"``).
        history: ``{"epoch": [...], "batch": [...]}``, the curves of the run.
        layers: one row per layer (name, type, output shape, parameters).
        command: the command that made the model.
        data_sha256: SHA-256 of the MNIST file it was trained on.
        stopped_early: its owner stopped the run; the model as it was then.
        shipped: the project's bundled default.
        base_model, corrections: the model it was fine-tuned from, on this many corrections.
        files: SHA-256 of each stored file, by suffix (set by the store).
        stem: the files' stem when it is not the name (``NAME~xxxxxxxx``, set by the store).
    """

    name: str = ""
    family: str = "model"
    created: str = ""
    params: int | None = None
    test_accuracy: float | None = None
    train_seconds: float | None = None
    temperature: float = 1.0
    hyperparameters: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)
    command: str | None = None
    command_note: str | None = None
    data_sha256: str | None = None
    keras_version: str | None = None
    stopped_early: bool = False
    shipped: bool = False
    base_model: str | None = None
    corrections: int | None = None
    files: dict = field(default_factory=dict)
    stem: str | None = None

    @property
    def finetuned(self) -> bool:
        """Whether it was fine-tuned from another model."""
        return self.base_model is not None

    def replace(self, **changes) -> ModelInfo:
        """A copy with ``changes`` (field name -> value)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """The record as a JSON object: fields that are not set (None, False, empty) are left out."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if value is not None and value is not False and value != {} and value != [] and value != ""}

    @classmethod
    def from_json(cls, data: object) -> ModelInfo:
        """Read a record from its JSON object; unknown keys are ignored.

        Raises:
            ValueError: ``data`` is not a JSON object.
        """
        if not isinstance(data, dict):
            raise ValueError("metadata is not a JSON object")

        def typed(key: str, kind: type | tuple[type, ...], default=None):
            value = data.get(key, default)
            if isinstance(value, bool) and kind is not bool:
                return default
            return value if isinstance(value, kind) else default

        def number(key: str) -> float | None:
            value = typed(key, (int, float))
            return float(value) if value is not None and math.isfinite(value) else None

        temperature = number("temperature")
        return cls(
            name=typed("name", str, ""),
            family=typed("family", str, "model"),
            created=typed("created", str, ""),
            params=typed("params", int) if "params" in data else typed("param_count", int),
            test_accuracy=number("test_accuracy"),
            train_seconds=number("train_seconds"),
            temperature=temperature if temperature is not None and T_MIN <= temperature <= T_MAX else 1.0,
            hyperparameters=typed("hyperparameters", dict, {}),
            history=typed("history", dict, {}),
            layers=typed("layers", list, []),
            command=typed("command", str),
            command_note=typed("command_note", str),
            data_sha256=typed("data_sha256", str),
            keras_version=typed("keras_version", str),
            stopped_early=typed("stopped_early", bool, False),
            shipped=typed("shipped", bool, False),
            base_model=typed("base_model", str),
            corrections=typed("corrections", int),
            files=typed("files", dict, {}),
            # A stem of another type is kept as text, so the store refuses it as an invalid stem.
            stem=None if data.get("stem") is None else str(data["stem"]),
        )
