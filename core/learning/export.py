"""Export a trained Keras model as the inference files the web tier serves.

``NAME.onnx`` (`export_onnx`) is Keras' own ONNX export (``model.export(path, format="onnx")``) of the
model with a second output (`core.learning.model.feature_model`): one graph, one forward pass, two
outputs, in order:

    image (N, 28, 28, 1) float32 in [0, 1]  ->  probabilities (N, 10), features (N, D)

The features are what the "not a digit" detector (`core.serving.novelty`) scores. ONNX Runtime serves the
file (`core.serving.runtime`) without TensorFlow.

``NAME.layers.onnx`` (`export_layers_onnx`), for the Inside page, is Keras' ONNX export of the model
with one output per layer that computes something (`LAYER_TYPES`), named after the layer, plus the
first layer's learned weights as one constant output and the list of layers as metadata (the format
`core.serving.inside` reads). The weights live in the same file, not in a ``.npz`` beside it: one file,
one checksum, and the filters shown can never come from another version of the model than the
activations beside them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from core.serving.inside import LAYERS_FORMAT, LAYERS_KEY, WEIGHTS_OUTPUT

ONNX_SUFFIX = ".onnx"
# Keras layer classes whose output the layers file gives: what computes something a visitor can see.
# Batch normalization (a per-channel rescaling of the layer before it), dropout (nothing at inference)
# and flatten (the same numbers, reshaped) are left out.
LAYER_TYPES = ("Conv2D", "Dense", "Activation", "ReLU", "MaxPooling2D", "AveragePooling2D",
               "GlobalAveragePooling2D", "GlobalMaxPooling2D")


def _export_bytes(model) -> bytes:
    """Keras' own ONNX export of a called ``model``, as bytes."""
    with tempfile.TemporaryDirectory(prefix="digits-export-") as folder:
        path = Path(folder) / f"model{ONNX_SUFFIX}"
        model.export(str(path), format="onnx", verbose=False)
        return path.read_bytes()


def export_onnx(model) -> bytes:
    """The model (probabilities and detector features) as ONNX bytes.

    Args:
        model: a Keras model from `core.learning.model.build_model` (or any model with ``relu_*`` layers).

    Returns:
        The bytes of an ``.onnx`` file with input ``image`` and outputs (probabilities, features).

    Raises:
        ValueError: the model has no layer to take features from.
    """
    from core.learning.model import feature_model

    both, _ = feature_model(model)
    both(np.zeros((1, 28, 28, 1), np.float32))  # Keras exports only a model that has been called
    return _export_bytes(both)


def layers_model(model):
    """The model with one output per layer of `LAYER_TYPES`, and the layer whose weights are shown.

    Args:
        model: a Keras model from `core.learning.model.build_model` (or any functional model on
            (28, 28, 1) images).

    Returns:
        (layers, rows, first): a ``keras.Model`` mapping (N, 28, 28, 1) inputs to a dict of each
        layer's output by layer name; one row ``{"name", "type"[, "activation"]}`` per layer, in the
        model's order (``activation``: the layer's own activation function when it is not linear);
        and the first ``Conv2D`` layer (the first ``Dense`` one for an MLP).

    Raises:
        ValueError: the model has no such layer, or no convolution or dense layer.
    """
    import keras

    kinds = tuple(getattr(keras.layers, kind) for kind in LAYER_TYPES)
    chosen = [layer for layer in model.layers if isinstance(layer, kinds)]
    if not chosen:
        raise ValueError(f"Model {model.name!r} has no layer of the kinds {', '.join(LAYER_TYPES)}.")
    first = next((layer for layer in chosen if isinstance(layer, keras.layers.Conv2D)), None) or \
        next((layer for layer in chosen if isinstance(layer, keras.layers.Dense)), None)
    if first is None:
        raise ValueError(f"Model {model.name!r} has no convolution or dense layer whose weights could be shown.")
    rows = []
    for layer in chosen:
        row = {"name": layer.name, "type": type(layer).__name__}
        activation = layer.get_config().get("activation")
        if isinstance(activation, str) and activation != "linear":  # a Dense with softmax, an Activation
            row["activation"] = activation
        rows.append(row)
    outputs = {layer.name: layer.output for layer in chosen}
    return keras.Model(model.inputs[0], outputs, name=f"{model.name}_layers"), rows, first


def export_layers_onnx(model) -> bytes:
    """The model's layer-by-layer outputs and its first layer's weights as ONNX bytes (``NAME.layers.onnx``).

    Args:
        model: a Keras model from `core.learning.model.build_model`.

    Returns:
        The bytes of an ``.onnx`` file: input ``image`` (N, 28, 28, 1); one output per layer of
        `LAYER_TYPES` named after it; the constant output ``WEIGHTS_OUTPUT`` with the first
        convolution's kernel (kh, kw, 1, filters), or the first dense layer's (inputs, units) for a
        model without convolutions (784 inputs for an MLP);
        metadata ``LAYERS_KEY``: ``{"format", "layers": [{"name", "type"[, "activation"]}...],
        "weights": {"layer", "type", "output"}}`` (`core.serving.inside.LayersRuntime` reads it).

    Raises:
        ValueError: the model has no layer to show (`layers_model`), the export lost a layer's name,
            or a layer takes the name ``WEIGHTS_OUTPUT``.
    """
    import onnx
    from onnx import helper, numpy_helper

    layers, rows, first = layers_model(model)
    layers(np.zeros((1, 28, 28, 1), np.float32))  # Keras exports only a model that has been called
    proto = onnx.load_from_string(_export_bytes(layers))
    graph = proto.graph
    names = {o.name for o in graph.output}
    lost = [row["name"] for row in rows if row["name"] not in names]
    if lost:
        raise ValueError(f"The layers export of {model.name!r} does not name its outputs after the layers "
                         f"(missing {lost}, outputs {sorted(names)}).")
    if WEIGHTS_OUTPUT in names:
        raise ValueError(f"Model {model.name!r} has a layer named {WEIGHTS_OUTPUT!r}, the name the layers file "
                         "gives the first layer's weights. Rename the layer.")
    # The first layer's kernel as a constant output: an initializer passed through an Identity node
    # (a graph output that is itself an initializer is not accepted by every runtime).
    kernel = np.asarray(first.get_weights()[0], np.float32)
    constant = f"{WEIGHTS_OUTPUT}_value"
    graph.initializer.append(numpy_helper.from_array(kernel, constant))
    graph.node.append(helper.make_node("Identity", [constant], [WEIGHTS_OUTPUT], name=f"{WEIGHTS_OUTPUT}_identity"))
    graph.output.append(helper.make_tensor_value_info(WEIGHTS_OUTPUT, onnx.TensorProto.FLOAT, list(kernel.shape)))
    description = {"format": LAYERS_FORMAT, "layers": rows,
                   "weights": {"layer": first.name, "type": type(first).__name__, "output": WEIGHTS_OUTPUT}}
    helper.set_model_props(proto, {LAYERS_KEY: json.dumps(description)})
    onnx.checker.check_model(proto)
    return proto.SerializeToString()
