"""Custom layer stacks: layers as data, their output shapes, parameter counts and training memory,
computed in plain Python (no TensorFlow), and the checks that refuse a stack that cannot work.

A stack is a tuple of small frozen records (`Conv`, `Pool`, `Dense`, `Dropout`, `BatchNorm`) between
the (28, 28, 1) image and the implied output: a Flatten before the first dense layer (or before the
output when there is none) and a Dense(10) softmax. ``core.learning.model.build_model`` builds the
same layers with Keras, named as `keras_names` says, so the arithmetic here is what Keras builds:
convolutions and poolings use Keras' default "valid" padding, each convolution and dense layer is
followed by a ReLU, and batch normalization counts its moving mean and variance as parameters (as
``model.count_params()`` does).

In a share link a stack is one compact parameter: ``conv32k3s1,pool2,bn,dense128,drop0.2``
(`layers_text`, `parse_layers`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import ClassVar, Union

from core import config
from core.config import IMAGE_SIZE, NUM_CLASSES

# Limits shared with the presets (`core.learning.model.ModelSpec`).
MAX_HIDDEN_LAYERS = 6  # dense layers, with at most 4,096 units each: ~70M weights, well inside a worker's memory
MAX_UNITS = 4096
MAX_FILTERS = 512
# Limits of a custom stack.
MAX_LAYERS = 24  # rows of the editor: deeper stacks only shrink the 28x28 image to nothing
MAX_KERNEL = 7
MAX_STRIDE = 4
MAX_POOL = 7
MAX_DROPOUT = 0.9  # exclusive, as for the presets
MIN_BATCH_SIZE = 8  # TrainConfig's smallest batch: a spec alone is checked at it

# The training memory estimate: float32 values; per parameter the weight, its gradient and Adam's two
# moment slots; per activation its value and its gradient in the backward pass.
BYTES_PER_FLOAT = 4
COPIES_PER_PARAMETER = 4
COPIES_PER_ACTIVATION = 2


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution ("valid" padding, with bias) followed by a ReLU."""

    filters: int
    kernel: int = 3
    stride: int = 1
    kind: ClassVar[str] = "conv"

    def token(self) -> str:
        """Its share-link token (`parse_token` reads it back)."""
        return f"conv{self.filters}k{self.kernel}s{self.stride}"

    def label(self) -> str:
        """What it is, for people and messages."""
        return f"conv {self.filters}, {self.kernel}×{self.kernel}, stride {self.stride}"


@dataclass(frozen=True)
class Pool:
    """Max pooling over ``size`` x ``size`` windows, stride ``size`` ("valid" padding)."""

    size: int = 2
    kind: ClassVar[str] = "pool"

    def token(self) -> str:
        """Its share-link token (`parse_token` reads it back)."""
        return f"pool{self.size}"

    def label(self) -> str:
        """What it is, for people and messages."""
        return f"max pooling {self.size}×{self.size}"


@dataclass(frozen=True)
class Dense:
    """A dense layer followed by a ReLU (the first one flattens the image before it)."""

    units: int
    kind: ClassVar[str] = "dense"

    def token(self) -> str:
        """Its share-link token (`parse_token` reads it back)."""
        return f"dense{self.units}"

    def label(self) -> str:
        """What it is, for people and messages."""
        return f"dense {self.units}"


@dataclass(frozen=True)
class Dropout:
    """Dropout of a ``rate`` share of the values while training, in [0, 0.9)."""

    rate: float = 0.2
    kind: ClassVar[str] = "dropout"

    def token(self) -> str:
        """Its share-link token (`parse_token` reads it back)."""
        return f"drop{self.rate:g}"

    def label(self) -> str:
        """What it is, for people and messages."""
        return f"dropout {self.rate:g}"


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalization over the last axis (channels, or units after a dense layer)."""

    kind: ClassVar[str] = "bn"

    def token(self) -> str:
        """Its share-link token (`parse_token` reads it back)."""
        return "bn"

    def label(self) -> str:
        """What it is, for people and messages."""
        return "batch normalization"


Layer = Union[Conv, Pool, Dense, Dropout, BatchNorm]
KINDS: dict[str, type] = {cls.kind: cls for cls in (Conv, Pool, Dense, Dropout, BatchNorm)}
DEFAULTS: dict[str, Layer] = {"conv": Conv(32), "pool": Pool(2), "dense": Dense(128), "dropout": Dropout(0.2),
                              "bn": BatchNorm()}
DEFAULT_STACK: tuple[Layer, ...] = (Conv(32), Pool(2), Conv(64), Pool(2), Dense(128), Dropout(0.2))

TOKEN_HELP = "conv32k3s1 (filters, kernel, stride), pool2, bn, dense128 or drop0.2"
_TOKENS = [
    (re.compile(r"conv(\d+)(?:k(\d+))?(?:s(\d+))?"),
     lambda m: Conv(int(m[1]), int(m[2] or 3), int(m[3] or 1))),
    (re.compile(r"(?:max)?pool(\d+)?"), lambda m: Pool(int(m[1] or 2))),
    (re.compile(r"dense(\d+)"), lambda m: Dense(int(m[1]))),
    (re.compile(r"drop(?:out)?(\d*\.?\d+)"), lambda m: Dropout(float(m[1]))),
    (re.compile(r"bn|batchnorm"), lambda m: BatchNorm()),
]


# --- conversions -----------------------------------------------------------------------------------

def parse_token(token: str) -> Layer:
    """One layer from its link token (``conv32k3s1``, ``pool2``, ``bn``, ``dense128``, ``drop0.2``;
    ``k3`` and ``s1`` may be left out).

    Raises:
        ValueError: not a layer token (the layer's own limits are checked by `check_stack`).
    """
    text = str(token).strip().lower()
    for pattern, make in _TOKENS:
        match = pattern.fullmatch(text)
        if match:
            return make(match)
    raise ValueError(f"{token!r} is not a layer; write {TOKEN_HELP}.")


def parse_layers(text: str) -> tuple[Layer, ...]:
    """A stack from its link text: tokens separated by commas (`parse_token`); empty text, no layers.

    Raises:
        ValueError: a token that is not a layer, with its position.
    """
    tokens = [t.strip() for t in str(text).split(",") if t.strip()]
    layers = []
    for i, token in enumerate(tokens, 1):
        try:
            layers.append(parse_token(token))
        except ValueError as exc:
            raise ValueError(f"Layer {i}: {exc}") from None
    return tuple(layers)


def layers_text(layers: tuple[Layer, ...]) -> str:
    """The stack's link text, ``conv32k3s1,pool2,dense128``: `parse_layers` reads it back."""
    return ",".join(layer.token() for layer in layers)


def layer_to_dict(layer: Layer) -> dict:
    """A layer as plain JSON values: ``{"kind": "conv", "filters": 32, "kernel": 3, "stride": 1}``."""
    return {"kind": layer.kind, **{f.name: getattr(layer, f.name) for f in fields(layer)}}


def as_layer(value, position: int = 0) -> Layer:
    """A layer from a layer, its dict (`layer_to_dict`) or its token (`parse_token`).

    Args:
        value: what to read.
        position: the layer's 1-based place in its stack, for messages (0: not said).

    Returns:
        The layer record (its values unchecked: `summarize` checks them within the stack).

    Raises:
        ValueError: a value that is none of these (the message names the position).
    """
    where = f"Layer {position}: " if position else ""
    if isinstance(value, tuple(KINDS.values())):
        return value
    if isinstance(value, str):
        try:
            return parse_token(value)
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
    if isinstance(value, dict):
        cls = KINDS.get(value.get("kind"))
        if cls is None:
            raise ValueError(f"{where}unknown layer kind {value.get('kind')!r}; expected one of {', '.join(KINDS)}.")
        try:
            return cls(**{f.name: value[f.name] for f in fields(cls) if f.name in value})
        except TypeError as exc:
            raise ValueError(f"{where}{exc}") from None
    raise ValueError(f"{where}expected a layer, its dict or its token, got {value!r}.")


def describe(layers: tuple[Layer, ...]) -> str:
    """The stack in one line: ``conv 32, 3×3, stride 1 · max pooling 2×2 · dense 128``."""
    return " · ".join(layer.label() for layer in layers) or "no layers"


def keras_names(layers: tuple[Layer, ...]) -> list[tuple[str, ...]]:
    """The names of the Keras layers each layer of the stack becomes (``build_model`` uses them):
    ``("conv1", "relu_conv1")``, ``("pool1",)``, ``("bn1",)``, ``("dropout1",)``,
    ``("dense1", "relu_dense1")``; the ReLUs' ``relu_`` prefix is what the "not a digit" detector
    reads (``core.learning.model.feature_model``)."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        n = counts[layer.kind] = counts.get(layer.kind, 0) + 1
        base = f"{layer.kind}{n}"
        names.append((base, f"relu_{base}") if layer.kind in ("conv", "dense") else (base,))
    return names


# --- shapes, parameters, memory -------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One line of a stack's summary.

    Attributes:
        position: the layer's 1-based place in the stack; 0 for the implied input, flatten and output.
        label: what it is, e.g. "conv 32, 3×3, stride 1 + ReLU".
        shape: its output shape for one image (no batch axis), e.g. (26, 26, 32); None past a problem.
        params: its parameter count (what Keras' ``count_params()`` counts: moving statistics included).
        activations: values it keeps per image for the backward pass (its outputs, the ReLU's included).
        keras: the names of the Keras layers it becomes.
    """

    position: int
    label: str
    shape: tuple[int, ...] | None
    params: int = 0
    activations: int = 0
    keras: tuple[str, ...] = ()

    @property
    def implied(self) -> bool:
        """Whether the row is one the stack implies (input, flatten, output), not one of its layers."""
        return self.position == 0


@dataclass(frozen=True)
class Summary:
    """A stack's rows (the implied input, flatten and output included), totals and first problem.

    Attributes:
        rows: input, the stack's layers, the implied flatten (before the first dense layer, else
            before the output) and output, in order.
        params: total parameter count (None when a problem stopped the arithmetic).
        activations: values kept per image for the backward pass, all layers (None as ``params``).
        problem: why the stack cannot work, naming the layer ("Layer 3 (max pooling 2×2): ..."), or None.
    """

    rows: tuple[Row, ...]
    params: int | None
    activations: int | None
    problem: str | None

    def memory(self, batch_size: int) -> int | None:
        """Estimated bytes to train at ``batch_size``: parameters x 4 bytes x 4 (weights, gradients,
        two Adam slots) + activations x batch x 4 bytes x 2 (values and gradients); None as ``params``."""
        if self.params is None or self.activations is None:
            return None
        return (self.params * BYTES_PER_FLOAT * COPIES_PER_PARAMETER
                + self.activations * int(batch_size) * BYTES_PER_FLOAT * COPIES_PER_ACTIVATION)


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _limits(layer: Layer) -> str | None:
    """Why ``layer``'s own values are out of their limits, or None."""
    def whole(name: str, low: int, high: int) -> str | None:
        value = getattr(layer, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"{name} must be a whole number from {low} to {high}, got {value!r}"
        return None

    if isinstance(layer, Conv):
        return (whole("filters", 1, MAX_FILTERS) or whole("kernel", 1, MAX_KERNEL)
                or whole("stride", 1, MAX_STRIDE))
    if isinstance(layer, Pool):
        return whole("size", 2, MAX_POOL)
    if isinstance(layer, Dense):
        return whole("units", 1, MAX_UNITS)
    if isinstance(layer, Dropout):
        rate = layer.rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < MAX_DROPOUT:
            return f"the rate must be in [0, {MAX_DROPOUT:g}), got {rate!r}"
    return None


def summarize(layers: tuple[Layer, ...]) -> Summary:
    """Output shapes and parameter counts of a stack, as Keras builds it, without TensorFlow.

    The arithmetic stops at the first layer that cannot work (its rows and the ones after it have
    no shape); ``problem`` then says which layer and why. Problems: a value outside its limits
    (`MAX_FILTERS`, `MAX_UNITS`, `MAX_KERNEL`, `MAX_STRIDE`, `MAX_POOL`, `MAX_DROPOUT`), more than
    `MAX_LAYERS` layers or `MAX_HIDDEN_LAYERS` dense layers, a convolution or pooling after a dense
    layer, a kernel or pooling window larger than the image it gets (it would shrink it below
    1 px), and no convolution or dense layer at all (nothing to learn features with). The memory
    limit is `check_memory`'s.

    Args:
        layers: the stack (layer records; see `as_layer` for other forms).

    Returns:
        A `Summary`.
    """
    layers = tuple(layers)
    names = keras_names(layers)
    rows = [Row(0, "input image", (IMAGE_SIZE, IMAGE_SIZE, 1))]
    shape: tuple[int, ...] | None = (IMAGE_SIZE, IMAGE_SIZE, 1)  # None once a problem stopped the arithmetic
    params = activations = 0
    problem = None
    dense_seen = 0
    first_dense = None

    def flatten() -> None:
        nonlocal shape, activations
        shape = (_size(shape),) if shape is not None else None
        rows.append(Row(0, "flatten (implied)", shape, 0, shape[0] if shape else 0, ("flatten",)))
        activations += shape[0] if shape else 0

    for i, layer in enumerate(layers, 1):
        label = layer.label() + (" + ReLU" if layer.kind in ("conv", "dense") else "")
        why = None
        if i > MAX_LAYERS:
            why = f"a custom stack takes at most {MAX_LAYERS} layers; remove some"
        why = why or _limits(layer)
        if isinstance(layer, Dense):
            dense_seen += 1
            if first_dense is None:
                first_dense = i
                flatten()
            if not why and dense_seen > MAX_HIDDEN_LAYERS:
                why = f"at most {MAX_HIDDEN_LAYERS} dense layers (MAX_HIDDEN_LAYERS), this is dense layer {dense_seen}"
        if not why and isinstance(layer, (Conv, Pool)) and first_dense is not None:
            why = (f"a {'convolution' if isinstance(layer, Conv) else 'pooling layer'} needs an image, and layer "
                   f"{first_dense} (dense) before it has flattened it; move it above the first dense layer")
        if not why and shape is not None and isinstance(layer, (Conv, Pool)):
            h, w, _ = shape
            window = layer.kernel if isinstance(layer, Conv) else layer.size
            if window > h or window > w:
                what = f"{window}×{window} {'kernel' if isinstance(layer, Conv) else 'window'}"
                why = (f"it would shrink the image below 1 px: it gets {h}×{w} px, smaller than its {what}; "
                       "remove it or shrink the image less before it")
        if why and problem is None:
            problem = f"Layer {i} ({layer.label()}): {why}."
        if problem is not None:
            shape = None
            rows.append(Row(i, label, None, keras=names[i - 1]))
            continue
        count, copies = 0, 1
        if isinstance(layer, Conv):
            h, w, c = shape
            shape = ((h - layer.kernel) // layer.stride + 1, (w - layer.kernel) // layer.stride + 1, layer.filters)
            count, copies = layer.kernel * layer.kernel * c * layer.filters + layer.filters, 2
        elif isinstance(layer, Pool):
            h, w, c = shape
            shape = (h // layer.size, w // layer.size, c)
        elif isinstance(layer, Dense):
            count, copies = shape[0] * layer.units + layer.units, 2
            shape = (layer.units,)
        elif isinstance(layer, BatchNorm):
            count = 4 * shape[-1]  # gamma, beta and the moving mean and variance
        rows.append(Row(i, label, shape, count, copies * _size(shape), names[i - 1]))
        params += count
        activations += copies * _size(shape)

    if first_dense is None:
        flatten()
    if problem is None and not any(isinstance(layer, (Conv, Dense)) for layer in layers):
        where = "Layer 1" if len(layers) == 1 else f"Layers 1–{len(layers)}"
        problem = ("The stack has no layer: add at least one convolution or dense layer (the output alone "
                   "learns no features, and the not-a-digit detector reads them)." if not layers else
                   f"{where} ({describe(layers)}): nothing to train features with; a stack needs a convolution "
                   "or dense layer (the not-a-digit detector reads their outputs too). Add one.")
    output = f"dense {NUM_CLASSES} + softmax (implied output)"
    if problem is not None:
        rows.append(Row(0, output, None, keras=("probabilities",)))
        return Summary(tuple(rows), None, None, problem)
    out = shape[0] * NUM_CLASSES + NUM_CLASSES
    rows.append(Row(0, output, (NUM_CLASSES,), out, NUM_CLASSES, ("probabilities",)))
    return Summary(tuple(rows), params + out, activations + NUM_CLASSES, None)


# --- the worker's memory ---------------------------------------------------------------------------

_BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30,
               "gib": 2**30, "ti": 2**40, "tib": 2**40}


def memory_limit(text: str | None = None) -> int | None:
    """The worker's memory limit in bytes, read as Dask reads it ("4GiB", "4 GB", "4000000000").

    Args:
        text: the limit; None: `core.config.worker_memory()` (``$DIGITS_WORKER_MEMORY``, default 4 GiB).

    Returns:
        Bytes, or None for no fixed limit ("auto", "0", "none", or text Dask would not read either).
    """
    text = (config.worker_memory() if text is None else str(text)).strip().lower().replace(" ", "")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", text)
    if not match or match[2] not in _BYTE_UNITS:
        return None
    value = int(float(match[1]) * _BYTE_UNITS[match[2]])
    return value or None


def human_bytes(n: int) -> str:
    """``n`` bytes as "3.9 GiB", "512 MiB" or "12 KiB"."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n < 10 * size else f"{n / size:.0f} {unit}"
    return f"{n} bytes"


def memory_problem(summary: Summary, batch_size: int, limit: int | None = None) -> str | None:
    """Why a stack is too big to train at ``batch_size`` on a worker, naming the layer that costs
    most, or None when it fits (or has no fixed limit, or ``summary`` has a problem of its own).

    Args:
        summary: the stack's `summarize` output.
        batch_size: images per training step.
        limit: bytes; None: the worker's (`memory_limit`).
    """
    limit = memory_limit() if limit is None else limit
    need = summary.memory(batch_size)
    if limit is None or need is None or need <= limit:
        return None

    def cost(row: Row) -> int:
        return (row.params * BYTES_PER_FLOAT * COPIES_PER_PARAMETER
                + row.activations * int(batch_size) * BYTES_PER_FLOAT * COPIES_PER_ACTIVATION)

    worst = max(summary.rows, key=cost)
    where = f"Layer {worst.position} ({worst.label})" if worst.position else f"The {worst.label}"
    weights = summary.params * BYTES_PER_FLOAT * COPIES_PER_PARAMETER
    return (f"{where} makes the model too big for a training worker: at batch {batch_size} it needs about "
            f"{human_bytes(need)} ({summary.params:,} parameters × 16 bytes for weights, gradients and two "
            f"Adam slots = {human_bytes(weights)}, plus {human_bytes(need - weights)} of activations), more "
            f"than the worker's memory limit of {human_bytes(limit)} ({config.WORKER_MEMORY_ENV}); this layer "
            f"alone needs about {human_bytes(cost(worst))}. Use fewer filters or units, pool earlier, or a "
            "smaller batch.")


def check_stack(layers: tuple[Layer, ...], batch_size: int = MIN_BATCH_SIZE, limit: int | None = None) -> Summary:
    """Refuse a stack that cannot work or does not fit a worker at ``batch_size``.

    Args:
        layers: the stack.
        batch_size: images per training step (default: the smallest batch a run takes).
        limit: the worker's memory limit in bytes; None: `memory_limit()`.

    Returns:
        The stack's `Summary` (no problem).

    Raises:
        ValueError: the first problem (`summarize`), or the memory estimate past the limit
            (`memory_problem`), naming the layer and why.
    """
    summary = summarize(layers)
    problem = summary.problem or memory_problem(summary, batch_size, limit)
    if problem:
        raise ValueError(problem)
    return summary


def with_value(layer: Layer, name: str, value) -> Layer:
    """``layer`` with one value changed (its other values kept)."""
    return replace(layer, **{name: value})
