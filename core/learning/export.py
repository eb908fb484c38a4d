"""Export a trained Keras model as the one inference file the web tier serves.

The file is Keras' own ONNX export (``model.export(path, format="onnx")``) of the model with a
second output (`core.learning.model.feature_model`): one graph, one forward pass, two outputs, in order:

    image (N, 28, 28, 1) float32 in [0, 1]  ->  probabilities (N, 10), features (N, D)

The features are what the "not a digit" detector (`core.serving.novelty`) scores. ONNX Runtime serves the
file (`core.serving.runtime`) without TensorFlow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

ONNX_SUFFIX = ".onnx"


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
    with tempfile.TemporaryDirectory(prefix="digits-export-") as folder:
        path = Path(folder) / f"model{ONNX_SUFFIX}"
        both.export(str(path), format="onnx", verbose=False)
        return path.read_bytes()
