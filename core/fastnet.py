"""Inference of the store's models in plain numpy, without TensorFlow's per-call overhead.

A compiled TensorFlow call costs ~0.7 ms per image here, almost all of it fixed overhead; the models
this app builds (strided convs, batch norm, dense layers) need only a few small matrix products.
``compile_numpy(model)`` turns a linear chain of supported Keras layers into a numpy function,
folding batch norm into the preceding layer, and checks it against the Keras model on random
inputs; for anything else it returns None and the caller keeps the TensorFlow path.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Fn = Callable[[np.ndarray], np.ndarray]


def _activation(name: str) -> Fn | None:
    if name in ("linear", None):
        return lambda x: x
    if name == "relu":
        return lambda x: np.maximum(x, 0.0, out=x)
    if name == "softmax":
        def softmax(x):
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        return softmax
    return None


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _gather_index(h: int, w: int, c: int, kh: int, kw: int, sh: int, sw: int,
                  padding: str) -> tuple[np.ndarray, int, int]:
    """Indices into a flattened (h, w, c) image plus one trailing zero (padding): (ho * wo, c * kh * kw).

    Row ``oy * wo + ox`` holds the receptive field of output pixel (oy, ox) in (C, kh, kw) order.
    """
    if padding == "same":
        (pt, _), (pl, _) = _same_pads(h, kh, sh), _same_pads(w, kw, sw)
        ho, wo = -(-h // sh), -(-w // sw)
    else:
        pt = pl = 0
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    oy, ox = np.arange(ho)[:, None, None, None, None], np.arange(wo)[None, :, None, None, None]
    ci = np.arange(c)[None, None, :, None, None]
    i, j = np.arange(kh)[None, None, None, :, None], np.arange(kw)[None, None, None, None, :]
    r, col = oy * sh + i - pt, ox * sw + j - pl
    inside = (r >= 0) & (r < h) & (col >= 0) & (col < w)
    flat = np.where(inside, (r * w + col) * c + ci, h * w * c)  # out of range: the zero slot
    return np.ascontiguousarray(flat.reshape(ho * wo, c * kh * kw), dtype=np.intp), ho, wo


def _conv(kernel: np.ndarray, bias: np.ndarray, strides: tuple[int, int], padding: str) -> Fn:
    kh, kw, c, f = kernel.shape
    sh, sw = strides
    w = np.ascontiguousarray(kernel.transpose(2, 0, 1, 3).reshape(c * kh * kw, f), dtype=np.float32)
    b = bias.astype(np.float32)
    indices: dict[tuple[int, int], tuple[np.ndarray, int, int]] = {}  # per input size, built once

    def conv(x):
        # im2col as one fancy-indexing gather over the flattened image (plus a zero for padding):
        # a few microseconds for a drawing, where a padded sliding-window view cost tens.
        n, h, wi = x.shape[:3]
        if (h, wi) not in indices:
            indices[(h, wi)] = _gather_index(h, wi, c, kh, kw, sh, sw, padding)
        index, ho, wo = indices[(h, wi)]
        flat = np.empty((n, h * wi * c + 1), np.float32)
        flat[:, :-1] = x.reshape(n, -1)
        flat[:, -1] = 0.0
        cols = flat[:, index].reshape(n * ho * wo, c * kh * kw)
        return (cols @ w + b).reshape(n, ho, wo, f)

    return conv


def _dense(kernel: np.ndarray, bias: np.ndarray) -> Fn:
    w = np.ascontiguousarray(kernel, dtype=np.float32)
    b = bias.astype(np.float32)
    return lambda x: x @ w + b


def _pool(size: tuple[int, int], strides: tuple[int, int], kind: str) -> Fn | None:
    if tuple(size) != tuple(strides):
        return None
    ph, pw = size

    def pool(x):
        n, h, w, c = x.shape
        x = x[:, : h - h % ph, : w - w % pw].reshape(n, h // ph, ph, w // pw, pw, c)
        return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))

    return pool


def _steps(model) -> list[Fn] | None:
    """numpy steps for a linear chain of supported layers, batch norm folded in; None if unsupported."""
    from keras import layers

    steps: list[Fn] = []
    pending: dict | None = None  # a conv/dense whose output may still get a batch norm folded in

    def flush():
        nonlocal pending
        if pending is not None:
            k, b = pending["kernel"], pending["bias"]
            steps.append(_conv(k, b, pending["strides"], pending["padding"]) if pending["conv"] else _dense(k, b))
            act = _activation(pending["activation"])
            steps.append(act)
            pending = None

    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            flush()
            if isinstance(layer, layers.Conv2D) and (layer.dilation_rate != (1, 1) or layer.groups != 1
                                                     or layer.data_format != "channels_last"):
                return None
            act = getattr(layer.activation, "__name__", None)
            if _activation(act) is None:
                return None
            weights = [np.asarray(w) for w in layer.get_weights()]
            kernel = weights[0]
            bias = weights[1] if layer.use_bias else np.zeros(kernel.shape[-1], np.float32)
            pending = {"conv": isinstance(layer, layers.Conv2D), "kernel": kernel, "bias": bias,
                       "activation": act, "strides": getattr(layer, "strides", None),
                       "padding": getattr(layer, "padding", None)}
        elif isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = _bn_weights(layer)
            scale = gamma / np.sqrt(var + layer.epsilon)
            if pending is not None and pending["activation"] == "linear":
                pending["kernel"] = pending["kernel"] * scale
                pending["bias"] = (pending["bias"] - mean) * scale + beta
            else:
                flush()
                shift = beta - mean * scale
                steps.append(lambda x, s=scale.astype(np.float32), t=shift.astype(np.float32): x * s + t)
        elif isinstance(layer, layers.Activation):
            act = getattr(layer.activation, "__name__", None)
            fn = _activation(act)
            if fn is None:
                return None
            if pending is not None and pending["activation"] == "linear":
                pending["activation"] = act
            else:
                flush()
                steps.append(fn)
        elif isinstance(layer, layers.ReLU) and layer.max_value is None and not layer.negative_slope and not layer.threshold:
            flush()
            steps.append(_activation("relu"))
        elif isinstance(layer, layers.Dropout):
            continue  # identity at inference
        elif isinstance(layer, layers.Flatten):
            flush()
            steps.append(lambda x: x.reshape(len(x), -1))
        elif isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
            flush()
            if layer.padding != "valid":
                return None
            fn = _pool(layer.pool_size, layer.strides, "max" if isinstance(layer, layers.MaxPooling2D) else "avg")
            if fn is None:
                return None
            steps.append(fn)
        else:
            return None
    flush()
    return steps


def _bn_weights(layer):
    c = layer.moving_mean.shape[-1]
    gamma = np.asarray(layer.gamma) if layer.scale else np.ones(c, np.float32)
    beta = np.asarray(layer.beta) if layer.center else np.zeros(c, np.float32)
    return gamma, beta, np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)


def _is_linear_chain(model) -> bool:
    try:
        prev = None
        for layer in model.layers:
            nodes = layer._inbound_nodes
            if len(nodes) != 1:
                return False
            parents = [t._keras_history.operation for t in nodes[0].input_tensors]
            if prev is not None and parents != [prev]:
                return False
            prev = layer
        return True
    except AttributeError:
        return False


def compile_numpy(model, *, check_samples: int = 8, atol: float = 1e-4) -> Fn | None:
    """A numpy function computing ``model(x, training=False)`` for float32 (N, 28, 28, 1) inputs.

    Returns None when the model has a layer or topology this module does not handle, or when the
    numpy result differs from Keras' on random inputs by more than ``atol``.
    """
    if not _is_linear_chain(model):
        return None
    steps = _steps(model)
    if not steps:
        return None

    def run(x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, dtype=np.float32)
        for step in steps:
            y = step(y)
        return y

    probe = np.random.default_rng(0).random((check_samples, *model.input_shape[1:]), dtype=np.float32)
    probe[: check_samples // 2] *= probe[: check_samples // 2] > 0.7  # sparse, digit-like inputs too
    expected = np.asarray(model(probe, training=False))
    got = run(probe)
    if got.shape != expected.shape or not np.allclose(got, expected, atol=atol, rtol=1e-3):
        return None
    return run
