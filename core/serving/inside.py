"""Inside the network: every layer's output for one input, from the model's layers file.

The layers file ``NAME.layers.onnx`` (`core.learning.export.export_layers_onnx`, written when a model is
saved, or by ``python -m core export NAME`` for an older model) is Keras' ONNX export of the model with
one output per layer that computes something (convolution, activation, pooling, dense; not batch
normalization, dropout or flatten), named after the layer, plus one constant output: the first
layer's learned weights. Its metadata (``LAYERS_KEY``) lists the layers in the model's order:

    image (N, 28, 28, 1) float32 in [0, 1]  ->  one (N, H, W, C) or (N, units) output per layer,
                                                 and the first layer's kernel (``WEIGHTS_OUTPUT``)

ONNX Runtime runs it; no TensorFlow. The last layer's output is the model's probabilities, before the
calibration (`core.serving.calibrate`) that the app's confidences go through.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYERS_KEY = "digits.layers"  # ONNX metadata_props key: the JSON description of the outputs
WEIGHTS_OUTPUT = "first_layer_weights"  # the constant output holding the first layer's kernel
LAYERS_FORMAT = 1


class LayersError(ValueError):
    """A layers file that cannot be used: not loadable, or without the outputs its metadata lists."""


@dataclass(frozen=True)
class LayerOutput:
    """One layer's output for one input.

    Attributes:
        name: the Keras layer's name (``conv1``, ``relu_dense1``, ``probabilities``).
        kind: its Keras class name (``Conv2D``, ``Activation``, ``Dense``, ``MaxPooling2D``...).
        activation: the activation function the layer applies (``relu`` for an ``Activation`` layer,
            ``softmax`` for the output layer); "" for none (linear).
        values: float32, (H, W, C) for a convolution-like layer, (units,) for a dense-like one.
    """

    name: str
    kind: str
    activation: str
    values: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """The output's shape for one input, as Keras gives it without the batch axis."""
        return tuple(int(n) for n in self.values.shape)

    @property
    def is_map(self) -> bool:
        """Whether the output is a stack of feature maps (H, W, C) rather than a vector."""
        return self.values.ndim == 3


@dataclass(frozen=True)
class FirstWeights:
    """The first layer's learned weights, in Keras' layout.

    Attributes:
        layer: the layer's name (``conv1``, or ``dense1`` for an MLP).
        kind: its Keras class name (``Conv2D`` or ``Dense``).
        kernel: float32, (kh, kw, 1, filters) for a convolution, (inputs, units) for a dense layer
            (784 inputs when it reads the 28x28 image itself).
    """

    layer: str
    kind: str
    kernel: np.ndarray

    def tiles(self) -> np.ndarray:
        """float32 (n, h, w): one image per filter (kh x kw), or per unit of a dense layer (28 x 28:
        what the unit weighs each input pixel by; s x s when it reads an s x s pooled image).

        Raises:
            LayersError: a kernel that is neither (kh, kw, 1, n) nor (s * s, n).
        """
        k = self.kernel
        if k.ndim == 4 and k.shape[2] == 1:
            return np.ascontiguousarray(k[:, :, 0, :].transpose(2, 0, 1))
        side = int(round(math.sqrt(k.shape[0]))) if k.ndim == 2 else 0
        if k.ndim == 2 and side * side == k.shape[0]:
            return np.ascontiguousarray(k.T.reshape(-1, side, side))
        raise LayersError(f"Expected a first-layer kernel of shape (kh, kw, 1, n) or (s * s, n), got {k.shape}.")


def strongest_units(first: FirstWeights, outputs: list[LayerOutput], count: int = 8) -> list[int]:
    """The units of a dense first layer that respond most to this input, strongest first.

    Args:
        first: the first layer's weights.
        outputs: the layers' outputs for the input (`LayersRuntime.run`).
        count: how many units, at most.

    Returns:
        Unit indices (into ``first.tiles()``); for a convolution, the first ``count`` filters in order.
    """
    out = next((o for o in outputs if o.name == first.layer), None)
    if first.kind != "Dense" or out is None or out.is_map:
        return list(range(min(count, int(first.kernel.shape[-1]))))
    return [int(i) for i in np.argsort(-out.values, kind="stable")[:count]]


def _as_input(x28: np.ndarray) -> np.ndarray:
    x = np.asarray(x28, dtype=np.float32)
    if x.size != 28 * 28:
        raise ValueError(f"Expected one (28, 28) image in [0, 1], got shape {x.shape}.")
    return np.ascontiguousarray(x.reshape(1, 28, 28, 1))


class LayersRuntime:
    """An ONNX Runtime session over a model's layers file.

    Args:
        source: the ``.layers.onnx`` file's bytes or path.

    Attributes:
        layers: (name, kind, activation) of each layer with an output, in the model's order.
        first: the first layer's weights.

    Raises:
        LayersError: not a loadable ONNX model, or one without the image input, the metadata, or the
            outputs the metadata lists.
    """

    def __init__(self, source: bytes | Path | str):
        from core.serving.runtime import open_session

        self._session = open_session(source, LayersError, "the layers file")
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [28, 28, 1]:
            raise LayersError("the layers file does not take one (N, 28, 28, 1) image")
        self._input = inputs[0].name
        try:
            meta = json.loads(self._session.get_modelmeta().custom_metadata_map[LAYERS_KEY])
            self.layers = [(str(row["name"]), str(row["type"]), str(row.get("activation") or ""))
                           for row in meta["layers"]]
            weights = meta["weights"]
        except (KeyError, TypeError, ValueError) as exc:
            raise LayersError(f"the layers file has no readable {LAYERS_KEY!r} metadata ({exc})") from exc
        outputs = {o.name for o in self._session.get_outputs()}
        missing = [name for name, _, _ in self.layers if name not in outputs] + \
            ([WEIGHTS_OUTPUT] if WEIGHTS_OUTPUT not in outputs else [])
        if not self.layers or missing:
            raise LayersError(f"the layers file lacks the outputs {missing or 'of any layer'}")
        kernel = self._session.run([WEIGHTS_OUTPUT], {self._input: np.zeros((1, 28, 28, 1), np.float32)})[0]
        self.first = FirstWeights(str(weights.get("layer", "")), str(weights.get("type", "")),
                                  np.asarray(kernel, np.float32))

    @classmethod
    def load(cls, name: str, store=None) -> "LayersRuntime":
        """The layers file of the stored model ``name``, after checking it against its recorded checksum.

        Raises:
            core.storage.store.MissingFileError: the model has no layers file (saved before they
                were written): the message says to run ``python -m core export NAME``.
            core.storage.store.StoreError: no usable model of that name, or a layers file that is
                missing, altered (its checksum does not match) or cannot be used.
        """
        from core.storage.store import ModelStore, StoreError

        store = store or ModelStore()
        data = store.read_optional(name, "layers")
        try:
            return cls(data)
        except LayersError as exc:
            raise StoreError(f"The layers file of {name!r} cannot be used: {exc}.") from exc

    def run(self, x28: np.ndarray) -> list[LayerOutput]:
        """Every layer's output for one input.

        Args:
            x28: float (28, 28) (or (28, 28, 1)) model input in [0, 1], as `core.reading.preprocess.to_mnist`
                makes it.

        Returns:
            One `LayerOutput` per layer, in the model's order; the last is the model's (uncalibrated)
            probabilities.

        Raises:
            ValueError: an input that is not one 28 x 28 image.
        """
        names = [name for name, _, _ in self.layers]
        values = self._session.run(names, {self._input: _as_input(x28)})
        return [LayerOutput(name, kind, activation, np.asarray(v[0], np.float32))
                for (name, kind, activation), v in zip(self.layers, values)]
