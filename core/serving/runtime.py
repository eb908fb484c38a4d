"""One ONNX Runtime session over a model's exported file: one forward pass, two outputs.

The file (`core.learning.export`) maps ``image`` (N, 28, 28, 1) float32 in [0, 1] to the ten
probabilities and the "not a digit" detector's features. A session is safe to share between
threads (ONNX Runtime's ``run`` is thread-safe); one intra-op thread keeps a single image's call
short and lets concurrent visitors use the other cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BATCH = 100  # images per run() call for large inputs: ONNX Runtime's arena keeps the peak of the largest
# call for the server's life (1000 images: ~70 MB more for an evaluation; 100: ~8 MB; bench/README.md)


class RuntimeError_(ValueError):
    """The exported file cannot be loaded or does not have the expected inputs and outputs."""


def open_session(source: Path | str | bytes, error: type[Exception], what: str):
    """An ONNX Runtime CPU session over an exported file, one intra-op thread (a single image's call
    stays short; concurrent visitors use the other cores).

    Args:
        source: the file's path or bytes.
        error: the exception type to raise; what: the file, for its message.

    Raises:
        error: the file cannot be read or is not a loadable ONNX model.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        model = source if isinstance(source, bytes) else Path(source).read_bytes()
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise error(f"{what} cannot be loaded ({type(exc).__name__}: {exc})") from exc


class Runtime:
    """A loaded exported model.

    Args:
        source: the ``.onnx`` file's path or bytes.

    Raises:
        RuntimeError_: not a loadable ONNX model, or one without one image input and two outputs
            of which the first has ten columns.
    """

    def __init__(self, source: Path | str | bytes):
        self._session = open_session(source, RuntimeError_, "the exported model")
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [28, 28, 1] or len(outputs) != 2 \
                or outputs[0].shape[-1] != 10:
            raise RuntimeError_("the exported model does not map one (N, 28, 28, 1) image to "
                                "(probabilities, features)")
        self._input = inputs[0].name
        self.feature_count = int(outputs[1].shape[-1])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities float32 (N, 10), features float32 (N, D)) for float32 (N, 28, 28, 1) inputs."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, 10), np.float32), np.zeros((0, self.feature_count), np.float32)
        chunks = [self._session.run(None, {self._input: x[i:i + BATCH]}) for i in range(0, len(x), BATCH)]
        return (np.concatenate([c[0] for c in chunks]).astype(np.float32, copy=False),
                np.concatenate([c[1] for c in chunks]).astype(np.float32, copy=False))
