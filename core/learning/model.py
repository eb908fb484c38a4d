"""Model architectures from one builder: an MLP (input, hidden and output layers), a CNN, and a
custom stack of layers (`core.learning.architecture`).

Architectures are data (``ModelSpec``) passed to ``build_model``, as in keras-io's
``make_model(input_shape, num_classes)``; nothing is copied per family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from core.config import IMAGE_SIZE, NUM_CLASSES
from core.learning import architecture
from core.learning.architecture import MAX_FILTERS, MAX_HIDDEN_LAYERS, MAX_UNITS, Layer
from core.storage.info import ModelInfo

Family = Literal["mlp", "cnn", "custom"]
FAMILIES = ("cnn", "mlp", "custom")

DEFAULT_MLP_HIDDEN = (256, 128)
DEFAULT_CNN_FILTERS = (32, 64)
# Moving statistics must keep up with weights that move fast under a one-cycle peak rate.
BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class ModelSpec:
    """What to build.

    Attributes:
        family: "mlp" (Flatten -> Dense hidden layers -> Dense 10), "cnn" (conv blocks -> Dense -> 10)
            or "custom" (``layers`` -> Flatten -> Dense 10).
        hidden: MLP hidden layer sizes, or the CNN's dense layer sizes before the output. Custom: the
            stack's dense layer sizes, derived from ``layers`` (for summaries).
        filters: CNN conv block widths, one strided conv (+ BN) + ReLU per entry; unused by the MLP.
            Custom: the stack's conv widths, derived from ``layers``.
        dropout: dropout rate before each hidden dense layer's output, in [0, 0.9). Custom: 0 (the
            stack's own dropout layers say it).
        batch_norm: batch normalization after each conv / hidden layer. Custom: False (as ``dropout``).
        layers: the custom stack, in order (`core.learning.architecture` records; their dicts, link
            tokens or a whole link text, "conv32k3s1,pool2,dense128", are read too); empty for the presets.

    Raises:
        ValueError: a value outside these limits, or a custom stack that cannot work or does not fit
            a training worker's memory at the smallest batch (`architecture.check_stack`: the message
            names the layer and why).
    """

    family: Family = "cnn"
    hidden: tuple[int, ...] = (256,)
    filters: tuple[int, ...] = DEFAULT_CNN_FILTERS
    dropout: float = 0.1
    batch_norm: bool = True
    layers: tuple[Layer, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be 'mlp', 'cnn' or 'custom', got {self.family!r}.")
        if self.family == "custom":
            layers = (architecture.parse_layers(self.layers) if isinstance(self.layers, str) else
                      tuple(architecture.as_layer(layer, i) for i, layer in enumerate(self.layers, 1)))
            architecture.check_stack(layers)
            object.__setattr__(self, "layers", layers)
            object.__setattr__(self, "hidden", tuple(layer.units for layer in layers if layer.kind == "dense"))
            object.__setattr__(self, "filters", tuple(layer.filters for layer in layers if layer.kind == "conv"))
            object.__setattr__(self, "dropout", 0.0)
            object.__setattr__(self, "batch_norm", False)
            return
        if self.layers:
            raise ValueError(f"layers are for the custom family; a {self.family} takes hidden and filters "
                             f"(got layers={architecture.layers_text(tuple(self.layers))!r}).")
        if len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise ValueError(f"at most {MAX_HIDDEN_LAYERS} dense layers, got {len(self.hidden)}.")
        if any(int(h) < 1 or int(h) > MAX_UNITS for h in self.hidden):
            raise ValueError(f"hidden layer sizes must be between 1 and {MAX_UNITS}, got {self.hidden}.")
        if self.family == "cnn" and not 1 <= len(self.filters) <= 3:
            raise ValueError(f"a CNN takes 1 to 3 conv blocks, got filters={self.filters}.")
        if any(int(f) < 1 or int(f) > MAX_FILTERS for f in self.filters):
            raise ValueError(f"filter counts must be between 1 and {MAX_FILTERS}, got {self.filters}.")
        if not 0.0 <= self.dropout < 0.9:
            raise ValueError(f"dropout must be in [0, 0.9), got {self.dropout}.")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))

    def to_dict(self) -> dict:
        """The spec as plain JSON values (stored in a model's metadata); a custom spec adds
        ``"layers"``: one dict per layer (`architecture.layer_to_dict`)."""
        data = {key: value for key, value in asdict(self).items() if key != "layers"}
        if self.family == "custom":
            data["layers"] = [architecture.layer_to_dict(layer) for layer in self.layers]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        """A spec from `to_dict`'s output; unknown keys are ignored.

        Raises:
            TypeError, ValueError: values the spec refuses (see the class).
        """
        known = {k: data[k] for k in ("family", "hidden", "filters", "dropout", "batch_norm", "layers") if k in data}
        for key in ("hidden", "filters", "layers"):
            if key in known and not isinstance(known[key], str):  # a custom stack's link text is read whole
                known[key] = tuple(known[key])
        return cls(**known)


def default_spec(family: Family) -> ModelSpec:
    """Sensible defaults per family (custom: `architecture.DEFAULT_STACK`)."""
    if family == "mlp":
        return ModelSpec(family="mlp", hidden=DEFAULT_MLP_HIDDEN, filters=(), dropout=0.2, batch_norm=True)
    if family == "custom":
        return ModelSpec(family="custom", layers=architecture.DEFAULT_STACK)
    return ModelSpec(family="cnn")


def recorded_spec(info: ModelInfo, family: str | None = None) -> ModelSpec:
    """The architecture a stored model was trained with, as its metadata records it; else the
    default of its family (the recorded one, else ``family``, else the CNN)."""
    try:
        return ModelSpec.from_dict(info.hyperparameters["spec"])
    except (KeyError, TypeError, ValueError):
        known = [f for f in (info.family, family) if f in FAMILIES]
        return default_spec(known[0] if known else "cnn")


def build_model(spec: ModelSpec, *, seed: int | None = None):
    """Build an uncompiled Keras model for (28, 28, 1) float32 inputs in [0, 1] and 10 softmax outputs.

    Args:
        spec: the architecture.
        seed: seeds the weight initializers (repeatable runs).

    Returns:
        ``keras.Model`` named after the family.
    """
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = inputs
    if spec.family == "custom":
        return keras.Model(inputs, _custom_layers(spec.layers, inputs), name=spec.family)
    if spec.family == "cnn":
        for i, width in enumerate(spec.filters):
            # Strided convs instead of conv + max-pool: on a CPU a full-resolution conv and its
            # pooling cost several times more per epoch for the same accuracy (bench/train_speed.py).
            # The 5x5 first conv sees a whole stroke width: 28 -> 12 -> 5 -> 2 pixels.
            x = layers.Conv2D(width, 5 if i == 0 else 3, strides=2, use_bias=not spec.batch_norm,
                              name=f"conv{i + 1}")(x)
            if spec.batch_norm:
                x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn_conv{i + 1}")(x)
            x = layers.Activation("relu", name=f"relu_conv{i + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(spec.hidden):
        x = layers.Dense(units, use_bias=not spec.batch_norm, name=f"dense{i + 1}")(x)
        if spec.batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn_dense{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu_dense{i + 1}")(x)
        if spec.dropout > 0:
            x = layers.Dropout(spec.dropout, name=f"dropout{i + 1}")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=spec.family)


def _custom_layers(stack: tuple[Layer, ...], x):
    """Keras layers for a custom stack on ``x`` (named by `architecture.keras_names`, a ReLU after each
    convolution and dense layer), the implied Flatten and the Dense(10) softmax; returns the output."""
    from keras import layers

    flat = False
    for layer, names in zip(stack, architecture.keras_names(stack)):
        if layer.kind == "conv":
            x = layers.Conv2D(layer.filters, layer.kernel, strides=layer.stride, name=names[0])(x)
        elif layer.kind == "pool":
            x = layers.MaxPooling2D(layer.size, name=names[0])(x)
        elif layer.kind == "bn":
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=names[0])(x)
        elif layer.kind == "dropout":
            x = layers.Dropout(layer.rate, name=names[0])(x)
        elif layer.kind == "dense":
            if not flat:
                x, flat = layers.Flatten(name="flatten")(x), True
            x = layers.Dense(layer.units, name=names[0])(x)
        if len(names) > 1:
            x = layers.Activation("relu", name=names[1])(x)
    if not flat:
        x = layers.Flatten(name="flatten")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)


def layer_summary(model) -> list[dict]:
    """One row per layer: name, type, output shape, parameter count (for tables in the app)."""
    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        rows.append({
            "layer": layer.name,
            "type": type(layer).__name__,
            "output shape": str(tuple(shape.shape)) if shape is not None else "",
            "parameters": int(layer.count_params()),
        })
    return rows


def feature_model(model):
    """The model with a second output: the features the "not a digit" detector scores.

    The features are every ReLU layer's output (the ``relu_*`` layers `build_model` makes), each
    convolution layer's averaged over its positions, concatenated in depth order: from strokes
    and texture (first layer) to the digit's shape (last hidden layer). One forward pass gives
    both the probabilities and the features.

    Args:
        model: a Keras model from `build_model` (or any model with ``relu_*`` layers).

    Returns:
        (feature_model, sizes): a ``keras.Model`` mapping (N, 28, 28, 1) inputs to
        [(N, 10) probabilities, (N, D) features], and each layer's feature count (summing to D).

    Raises:
        ValueError: the model has no ``relu_*`` layer.
    """
    import keras
    from keras import layers

    parts = []
    for layer in model.layers:
        if not layer.name.startswith("relu_"):
            continue
        out = layer.output
        if len(out.shape) == 4:
            out = layers.GlobalAveragePooling2D(name=f"mean_{layer.name}")(out)
        parts.append(out)
    if not parts:
        raise ValueError(f"Model {model.name!r} has no relu_* layer to take features from.")
    features = parts[0] if len(parts) == 1 else layers.Concatenate(name="features")(parts)
    sizes = [int(p.shape[-1]) for p in parts]
    return keras.Model(model.inputs[0], [model.outputs[0], features], name=f"{model.name}_features"), sizes
