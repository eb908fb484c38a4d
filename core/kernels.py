"""The compiled kernels (`core._jit`): used once they are warm, or never where numba is missing.

Importing this module costs nothing. `get()` never compiles: it returns the kernels only after
`warm()` has compiled them (seconds, once per install) or loaded them from numba's cache (~1 s),
and None before that, so every caller takes the plain numpy path until then and no reading ever
waits for a compiler. The app starts `warm_in_background()` when it loads a model; tests and
benchmarks call `warm()`. Set ``DIGITS_NO_JIT=1`` (or ``ENABLED = False``) to run numpy only;
the results are the same (see `tests/test_kernels.py`).
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
_lock = threading.Lock()  # held by warm() while it compiles
_start_lock = threading.Lock()  # guards _background only, so starting never waits on a compile
_warming = threading.local()  # .module: the kernels, in the thread that is warming them up
_ready: ModuleType | None = None  # the kernels, once warm: what get() returns
_failed = False  # numba missing, or a kernel that cannot compile here: numpy for good
_background: threading.Thread | None = None


def get() -> ModuleType | None:
    """`core._jit` once warm (and enabled), else None: the caller takes the numpy path."""
    if not ENABLED:
        return None
    return _ready or getattr(_warming, "module", None)


def ready() -> bool:
    """True when the compiled kernels are warm and in use."""
    return get() is not None


def warm() -> bool:
    """Compile (or load from numba's cache) every kernel the reading path uses, on tiny inputs,
    and use them from then on. Blocks; safe from any thread. True when the kernels are in use."""
    global _ready, _failed
    if not ENABLED:
        return False
    with _lock:
        if _ready is not None or _failed:
            return _ready is not None
        try:
            from core import _jit
        except Exception as exc:  # noqa: BLE001 - no numba, or one that cannot load: numpy path
            log.warning("Compiled kernels unavailable (%s: %s); using numpy.", type(exc).__name__, exc)
            _failed = True
            return False
        from core import novelty, preprocess

        _warming.module = _jit
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
            _failed = True
            return False
        finally:
            _warming.module = None
        _ready = _jit
        return True


def warm_in_background() -> threading.Thread | None:
    """Start `warm()` on a daemon thread (once per process) and return at once; readings use
    numpy until it is done. Returns the thread, or None when there is nothing to do."""
    global _background
    if not ENABLED or _ready is not None or _failed:
        return None
    with _start_lock:
        if _background is None:
            _background = threading.Thread(target=warm, name="digits-kernels-warm", daemon=True)
            _background.start()
    return _background
