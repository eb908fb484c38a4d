"""The compiled kernels (`core._jit`), loaded on first use, or None where numba is missing.

Importing this module costs nothing: numba (~0.4 s to import) is loaded by the first `get()`,
from the reading path, never by the pages that only list models. Set ``DIGITS_NO_JIT=1`` (or
``ENABLED = False``) to run the plain numpy code instead; the results are the same (see
`tests/test_kernels.py`).
"""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType

import numpy as np

NO_JIT_ENV = "DIGITS_NO_JIT"
ENABLED = os.environ.get(NO_JIT_ENV, "") not in ("1", "true", "yes")

log = logging.getLogger(__name__)
_lock = threading.Lock()
_loaded: list = []  # [module or None] once loading was tried


def get() -> ModuleType | None:
    """`core._jit` when numba is installed and the kernels are enabled, else None."""
    if not ENABLED:
        return None
    if not _loaded:
        with _lock:
            if not _loaded:
                try:
                    from core import _jit
                except Exception as exc:  # noqa: BLE001 - no numba, or one that cannot load: numpy path
                    log.warning("Compiled kernels unavailable (%s: %s); using numpy.", type(exc).__name__, exc)
                    _jit = None
                _loaded.append(_jit)
    return _loaded[0]


def warm() -> bool:
    """Compile (or load from numba's cache) every kernel the reading path uses, on tiny inputs,
    so the first real reading does not pay for it. True when the kernels are in use."""
    jit = get()
    if jit is None:
        return False
    from core import novelty, preprocess

    try:
        canvas = np.zeros((200, 200, 4), np.uint8)  # tall enough for fit_in_box's block mean
        canvas[..., 3] = 255
        canvas[10:190, 90:110, :3] = 255
        x28 = preprocess.to_mnist(canvas)
        novelty.shape_descriptor(x28[None])
        novelty.ink_statistics(x28[None])
        preprocess.to_mnist(canvas[..., 0])  # a grey upload
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot compile here: numpy from now on
        log.warning("Compiled kernels failed (%s: %s); using numpy.", type(exc).__name__, exc)
        _loaded[:] = [None]
        return False
    return True
