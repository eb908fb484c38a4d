"""Shared helpers for the benchmarks: setup, timing, synthetic inputs and the one-line JSON result.

Import this module before TensorFlow: it sets ``TF_CPP_MIN_LOG_LEVEL=2`` and puts the repository
root on ``sys.path`` so that ``core`` imports when a script is run as ``python bench/NAME.py``.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CANVAS_SIZE = 280  # streamlit-drawable-canvas' default drawing surface in the Draw page


# --- output ----------------------------------------------------------------------------------------

def say(*args) -> None:
    """A human-readable line (flushed, so a log file shows progress while a long run goes on)."""
    print(*args, flush=True)


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def emit_json(figures: dict) -> None:
    """Print the figures as ONE line of JSON: the last line of every benchmark's output.

    Floats are rounded to 4 decimals; NaN and infinities become null.
    """
    print(json.dumps(_clean(figures), separators=(", ", ": ")), flush=True)


def machine_line() -> str:
    """Where the figures come from: CPU count, load average, library versions."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    import keras
    import tensorflow as tf

    return (f"machine: {os.cpu_count()} CPUs, load average {load}; Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}, NumPy {np.__version__}; "
            f"OPENBLAS_NUM_THREADS={blas_threads()}")


def blas_threads() -> str:
    """The OPENBLAS_NUM_THREADS setting this run started with ("default": one thread per CPU)."""
    return os.environ.get("OPENBLAS_NUM_THREADS", "default")


def load_1min() -> float:
    return round(os.getloadavg()[0], 2)


# --- timing ----------------------------------------------------------------------------------------

def time_ms(fn: Callable[[], object], calls: int) -> list[float]:
    """Wall time of each of ``calls`` calls of ``fn``, in milliseconds."""
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` (linear interpolation)."""
    return float(np.percentile(np.asarray(values, np.float64), q))


class Clock:
    """Wall and CPU seconds of a run, minus the pauses in it (evaluation off the clock).

    ``start()`` begins; ``pause()`` / ``resume()`` bracket work that must not count;
    ``read()`` gives (wall_s, cpu_s) counted so far. CPU time is the whole process'
    (``time.process_time``, all threads), so it is the robust figure when the machine is shared.
    """

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._t0 = self._c0 = None

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    resume = start

    def pause(self) -> tuple[float, float]:
        if self._t0 is not None:
            self.wall += time.perf_counter() - self._t0
            self.cpu += time.process_time() - self._c0
            self._t0 = self._c0 = None
        return self.wall, self.cpu

    def read(self) -> tuple[float, float]:
        if self._t0 is None:
            return self.wall, self.cpu
        return self.wall + time.perf_counter() - self._t0, self.cpu + time.process_time() - self._c0


# --- synthetic inputs ------------------------------------------------------------------------------

def _upscale(digit: np.ndarray, size: int) -> np.ndarray:
    """uint8 (28, 28) MNIST digit -> float32 (size, size) crisp pen strokes in [0, 1]."""
    up = np.asarray(Image.fromarray(np.asarray(digit, np.uint8)).resize((size, size), Image.Resampling.BICUBIC),
                    np.float32) / 255.0
    # Re-threshold at mid-grey with a ~1.5 px antialiased edge, like a drawn or rendered stroke.
    ramp = min(1.0, 0.75 * 28.0 / size)
    return np.clip((up - 0.45) / ramp + 0.5, 0.0, 1.0)


def canvas_rgba(digit: np.ndarray, size: int = CANVAS_SIZE) -> np.ndarray:
    """What the drawable canvas returns for this digit drawn in thick white strokes on black.

    Args:
        digit: uint8 (28, 28) MNIST digit, white on black.
        size: canvas side in pixels.

    Returns:
        uint8 (size, size, 4) RGBA: grey = white stroke coverage, alpha 255 everywhere (opaque).
        Strokes are MNIST's ~2-3 px scaled by size/28, i.e. ~20-30 px at 280: a thick brush.
    """
    ink = (_upscale(digit, size) * 255.0 + 0.5).astype(np.uint8)
    canvas = np.empty((size, size, 4), np.uint8)
    canvas[..., :3] = ink[..., None]
    canvas[..., 3] = 255
    return canvas


def upload_png(digit: np.ndarray, size: int = 200) -> bytes:
    """PNG bytes of this digit rendered ``size`` x ``size``, dark ink on a light background."""
    paper, ink = 235.0, 25.0
    coverage = _upscale(digit, size)
    grey = (paper + (ink - paper) * coverage + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


# --- processes -------------------------------------------------------------------------------------

def _proc_children() -> dict[int, list[int]]:
    """Every live process' children, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree_cpu_s(pid: int, skip: tuple[int, ...] = ()) -> float:
    """User + system CPU seconds of a process and its live descendants (all threads), leaving out the
    subtrees rooted at ``skip``; from /proc (Linux). Descendants that already exited are not counted."""
    children = _proc_children()
    ticks, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in skip:
            continue
        todo.extend(children.get(p, []))
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")
