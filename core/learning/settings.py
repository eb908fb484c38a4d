"""A run's settings as URL query parameters: the share link of the Train page and "train again".

One flat, readable parameter per setting (``arch=cnn&filters=32,64&hidden=256&epochs=3...``), read
back through `TrainConfig` and `ModelSpec` themselves, so a link is held to the same limits as the
Train form and the CLI. A custom stack is one parameter, ``arch=custom&layers=conv32k3s1,pool2,bn,
dense128,drop0.2`` (`core.learning.architecture`), in place of ``filters``, ``hidden``, ``dropout``
and ``bn``; the presets' links are as they were. A link carries settings only, never an owner token.
No Keras here.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.learning import architecture
from core.learning.model import FAMILIES, ModelSpec, default_spec
from core.learning.train import TrainConfig

# Parameter -> what it sets, for messages.
PARAMS = {
    "arch": "architecture (cnn, mlp or custom)",
    "filters": "conv filters per block",
    "hidden": "dense layer sizes",
    "layers": "custom layers",
    "dropout": "dropout",
    "bn": "batch normalization (1 or 0)",
    "epochs": "epochs",
    "batch": "batch size",
    "lr": "peak learning rate",
    "schedule": "learning-rate schedule (onecycle or constant)",
    "images": "training images",
    "val": "validation share",
    "augment": "augmentation (1 or 0)",
    "smoothing": "label smoothing",
    "seed": "seed",
}


# The architecture's parameters: a preset's, or a custom stack's; the others are every run's.
PRESET_PARAMS = ("filters", "hidden", "dropout", "bn")
CUSTOM_PARAMS = ("layers",)


def query_keys(family: str) -> tuple[str, ...]:
    """The parameters `to_query` writes for a ``family``: every key of `PARAMS` but the other kind's
    architecture parameters (`PRESET_PARAMS` or `CUSTOM_PARAMS`)."""
    other = PRESET_PARAMS if family == "custom" else CUSTOM_PARAMS
    return tuple(key for key in PARAMS if key not in other)


def to_query(cfg: TrainConfig) -> dict[str, str]:
    """The settings of ``cfg`` as query parameters (strings), one per key of `query_keys` of its family:
    a preset's as they always were, a custom stack's with ``layers`` in place of the preset's four."""
    spec = cfg.spec
    if spec.family == "custom":
        arch = {"arch": "custom", "layers": architecture.layers_text(spec.layers)}
    else:
        arch = {
            "arch": spec.family,
            "filters": ",".join(map(str, spec.filters)) if spec.family == "cnn" else "",
            "hidden": ",".join(map(str, spec.hidden)),
            "dropout": f"{spec.dropout:g}",
            "bn": "1" if spec.batch_norm else "0",
        }
    return arch | {
        "epochs": str(cfg.epochs),
        "batch": str(cfg.batch_size),
        "lr": f"{cfg.learning_rate:g}",
        "schedule": cfg.schedule,
        "images": str(cfg.train_size if cfg.train_size is not None else 60000),
        "val": f"{cfg.val_fraction:g}",
        "augment": "1" if cfg.augment else "0",
        "smoothing": f"{cfg.label_smoothing:g}",
        "seed": str(cfg.seed),
    }


def has_settings(params: Mapping[str, str]) -> bool:
    """Whether ``params`` carries any run setting (a share link), not only other parameters."""
    return any(key in params for key in PARAMS)


def _number(params: Mapping[str, str], key: str, kind: type, default):
    text = str(params.get(key, "")).strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{PARAMS[key]} ({key}={text!r}) is not a {'whole ' if kind is int else ''}number.") from None
    if kind is float and value != value:  # NaN
        raise ValueError(f"{PARAMS[key]} ({key}={text!r}) is not a number.")
    return value


def _flag(params: Mapping[str, str], key: str, default: bool) -> bool:
    text = str(params.get(key, "")).strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{PARAMS[key]} ({key}={text!r}) must be 1 or 0.")


def parse_sizes(text: str) -> tuple[int, ...]:
    """Layer sizes written as text, ``"256,128"`` -> ``(256, 128)`` (spaces around them and empty
    parts ignored; ``""`` -> ``()``), for the Train form, links and the CLI alike.

    Raises:
        ValueError: a part that is not a whole number.
    """
    try:
        return tuple(int(p) for p in (p.strip() for p in str(text).split(",")) if p)
    except ValueError:
        raise ValueError(f"{str(text)!r} is not a list of whole numbers separated by commas, like 256,128.") from None


def _sizes(params: Mapping[str, str], key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    if key not in params:
        return default
    try:
        return parse_sizes(params[key])
    except ValueError as exc:
        raise ValueError(f"{PARAMS[key]} ({key}): {exc}") from None


def _custom_spec(params: Mapping[str, str], batch_size: int) -> ModelSpec:
    text = str(params.get("layers", "")).strip()
    if "layers" not in params:
        return default_spec("custom")
    try:
        layers = architecture.parse_layers(text)
        architecture.check_stack(layers, batch_size)  # first: its message names the link's batch size
        return ModelSpec(family="custom", layers=layers)
    except ValueError as exc:
        raise ValueError(f"{PARAMS['layers']} (layers={text!r}): {exc}") from None


def from_query(params: Mapping[str, str]) -> TrainConfig:
    """The run settings a link carries; a parameter that is missing keeps its default. ``arch=custom``
    reads ``layers`` (and ignores the presets' four); a link with ``layers`` and no ``arch`` is custom.

    Raises:
        ValueError: a parameter that is not a number where one is expected, or settings that the
            Train form would refuse (the limits of `TrainConfig` and `ModelSpec`, and a custom
            stack's memory estimate at the link's batch size), with a message that names it.
    """
    default = "custom" if str(params.get("layers", "")).strip() else "cnn"
    family = str(params.get("arch", default)).strip().lower() or default
    if family not in FAMILIES:
        raise ValueError(f"{PARAMS['arch']}: {family!r} is not cnn, mlp or custom.")
    batch_size = _number(params, "batch", int, TrainConfig.batch_size)
    if family == "custom":
        spec = _custom_spec(params, max(batch_size, architecture.MIN_BATCH_SIZE))
    else:
        base = default_spec(family)
        spec = ModelSpec(
            family=family,
            hidden=_sizes(params, "hidden", base.hidden),
            filters=_sizes(params, "filters", base.filters) if family == "cnn" else (),
            dropout=_number(params, "dropout", float, base.dropout),
            batch_norm=_flag(params, "bn", base.batch_norm),
        )
    return TrainConfig(
        spec=spec,
        epochs=_number(params, "epochs", int, TrainConfig.epochs),
        batch_size=batch_size,
        learning_rate=_number(params, "lr", float, TrainConfig.learning_rate),
        schedule=str(params.get("schedule", TrainConfig.schedule)).strip() or TrainConfig.schedule,
        train_size=_number(params, "images", int, 60000),
        val_fraction=_number(params, "val", float, TrainConfig.val_fraction),
        augment=_flag(params, "augment", TrainConfig.augment),
        label_smoothing=_number(params, "smoothing", float, TrainConfig.label_smoothing),
        seed=_number(params, "seed", int, TrainConfig.seed),
    )
