"""The app as a real server in a real browser: start/stop Streamlit, launch Debian's Chromium, and
drive the pages (wait for reruns, draw digits on the canvas, read metrics, take screenshots).

A plain module (no pytest), shared by ``tests/browser/`` and ``bench/app_latency.py``::

    from tests.browser.server import free_port, launch_chromium, start_server
    server = start_server(free_port(), env={"DIGITS_MODELS_DIR": "/tmp/models"})
    ...  # server.url, server.pid
    server.stop()
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def launch_chromium(playwright, **kwargs):
    """Debian's Chromium, headless, with the flags this project's machines need (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **kwargs)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``streamlit run Home.py`` process (in its own process group)."""

    process: subprocess.Popen
    port: int
    log_path: Path
    started_at: float  # time.perf_counter() just before the process was spawned
    env: dict = field(default_factory=dict)
    base_url_path: str = ""  # the app's path prefix (``--server.baseUrlPath``), "" for none

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}" + (f"/{self.base_url_path}" if self.base_url_path else "")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after ``timeout`` s)."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(5)


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url/_stcore/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _die_with_parent():
    """A ``preexec_fn`` asking the kernel to SIGTERM the server when the process that started it dies
    (pytest or a benchmark killed by a timeout never runs its clean-up, and the server lives in its
    own session, so it would be orphaned). Linux only; elsewhere None (no such guard)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved now, not in the forked child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_pdeathsig


def start_server(port: int, env: dict | None = None, *, log_path: Path | str | None = None,
                 timeout: float = 60.0, script: str = "Home.py", base_url_path: str = "") -> Server:
    """Run ``streamlit run <script>`` on 127.0.0.1:``port`` and wait until its health check answers.

    Args:
        port: TCP port (see ``free_port()``).
        env: variables added to (and overriding) this process' environment, e.g. ``DIGITS_MODELS_DIR``;
            a value of None removes the variable.
        log_path: where the server's stdout and stderr go (default: a temp file).
        timeout: seconds to wait for ``/_stcore/health``.
        base_url_path: serve the app under this path prefix (``--server.baseUrlPath``), as behind a
            proxy; ``Server.url`` includes it.

    Returns:
        The running ``Server``; call ``stop()`` when done.

    Raises:
        RuntimeError: the server exited or did not become healthy in time (its log is in the message).
    """
    full_env = os.environ.copy()
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = str(value)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    full_env["PYTHONUNBUFFERED"] = "1"
    if log_path is None:
        import tempfile

        log_path = Path(tempfile.mkstemp(prefix=f"streamlit-{port}-", suffix=".log")[1])
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "streamlit", "run", script,
           "--server.port", str(port), "--server.address", HOST,
           "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    if base_url_path:
        cmd += ["--server.baseUrlPath", base_url_path]
    log = open(log_path, "wb")
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent())
    log.close()
    server = Server(process, port, log_path, started, dict(env or {}), base_url_path.strip("/"))
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if not server.alive():
            raise RuntimeError(f"streamlit exited with status {process.returncode}:\n{server.log()[-3000:]}")
        if healthy(server.url, timeout=1.0):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"streamlit did not answer {server.url}/_stcore/health within {timeout:.0f} s:\n"
                       f"{server.log()[-3000:]}")


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return rss_mb(tree)


def rss_mb(pids) -> float:
    """Resident memory of the processes ``pids`` together, in MiB (from /proc; gone ones count 0)."""
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kb / 1024.0


def app_env(models_src: Path, workdir: Path) -> dict:
    """Environment for a server on a private copy of the model store ``models_src``.

    Copies ``models_src`` to ``workdir/models`` (so trainings never touch the real store) and points
    ``DIGITS_DATA_DIR`` at ``workdir/app-data``; the server's default model is the copy's own.
    """
    models = workdir / "models"
    if models.exists():
        shutil.rmtree(models)
    shutil.copytree(models_src, models, ignore=shutil.ignore_patterns("*.tmp", ".*"))
    (workdir / "app-data").mkdir(parents=True, exist_ok=True)
    return {"DIGITS_MODELS_DIR": str(models), "DIGITS_DATA_DIR": str(workdir / "app-data"),
            "DIGITS_ACTIVE_MODEL": None}


# --- driving pages ---------------------------------------------------------------------------------

PREDICTED = "Predicted digit"
EMPTY_CANVAS_PROMPT = "Draw a digit on the canvas"

# Everything in the main area a rerun can change: image sources (a new 28x28 "what the model sees"
# gets a new media URL), metric values and alert texts. A change means the page has new output.
_SIGNATURE_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return '';
  const pick = (sel, f) => [...main.querySelectorAll(sel)].map(f);
  return JSON.stringify([pick('img', e => e.src), pick('[data-testid="stMetricValue"]', e => e.textContent),
                         pick('[data-testid="stAlert"]', e => e.textContent)]);
}"""

# Arms a one-shot probe: the browser-clock time of the next mouseup, and of the first change of the
# main area's signature after it (MutationObserver, so no polling delay).
_ARM_PROBE_JS = """() => {
  const sig = (SIGNATURE);
  const probe = {up: null, changed: null, before: sig()};
  window.__probe = probe;
  document.addEventListener('mouseup', () => { if (probe.up === null) probe.up = performance.now(); },
                            {capture: true, once: true});
  const main = document.querySelector('[data-testid="stMain"]');
  const obs = new MutationObserver(() => {
    if (probe.up !== null && probe.changed === null && sig() !== probe.before) {
      probe.changed = performance.now();
      obs.disconnect();
    }
  });
  obs.observe(main, {subtree: true, childList: true, attributes: true, characterData: true});
  probe.stop = () => obs.disconnect();
}""".replace("SIGNATURE", _SIGNATURE_JS)

# True once no script run has been shown as running for `quiet` ms (Streamlit's status widget).
_IDLE_JS = """(quiet) => {
  const now = performance.now();
  const busy = document.querySelector('[data-testid="stStatusWidget"]') !== null;
  if (busy) { window.__idleSince = null; return false; }
  if (window.__idleSince == null) { window.__idleSince = now; }
  return now - window.__idleSince >= quiet;
}"""

# Whether the canvas' drawing layer has any ink: a pixel that differs from its corner (its background:
# white paper in the light theme, black in the dark one, or transparent). Run on the element: the
# component lives in a shadow root, which Playwright's locators pierce.
_CANVAS_INK_JS = """(c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - d[0]) + Math.abs(d[i + 1] - d[1]) + Math.abs(d[i + 2] - d[2]) + Math.abs(d[i + 3] - d[3]) > 96)
      return true;
  }
  return false;
}"""


def wait_idle(page, quiet_ms: int = 800, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has shown no running script for ``quiet_ms``."""
    page.evaluate("() => { window.__idleSince = null; }")
    page.wait_for_function(_IDLE_JS, arg=quiet_ms, polling=100, timeout=timeout_ms)


def metric_value(page, label: str):
    """Locator of the value of the ``st.metric`` with this label, in the main area."""
    metric = page.locator('[data-testid="stMain"] [data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label))
    return metric.locator('[data-testid="stMetricValue"]')


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> list[tuple[float, float]]:
    start = -math.pi / 2  # from the top, clockwise on screen
    return [(cx + rx * math.cos(start + 2 * math.pi * i / n), cy + ry * math.sin(start + 2 * math.pi * i / n))
            for i in range(n + 1)]


# Mouse strokes for each digit: polylines in canvas-relative coordinates (0..1, y down), one list per
# stroke. Shapes a person draws; the shipped CNN reads every one of them.
DIGIT_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_ellipse(0.5, 0.5, 0.2, 0.32)],
    1: [[(0.52, 0.15), (0.5, 0.85)]],
    2: [[(0.3, 0.3), (0.38, 0.18), (0.52, 0.14), (0.66, 0.2), (0.7, 0.32), (0.64, 0.46), (0.3, 0.84), (0.74, 0.84)]],
    3: [[(0.3, 0.2), (0.5, 0.13), (0.68, 0.2), (0.7, 0.32), (0.6, 0.44), (0.45, 0.48), (0.6, 0.52), (0.72, 0.64),
         (0.7, 0.78), (0.5, 0.87), (0.3, 0.8)]],
    4: [[(0.34, 0.15), (0.3, 0.56), (0.74, 0.56)], [(0.64, 0.15), (0.64, 0.88)]],
    5: [[(0.7, 0.15), (0.34, 0.15), (0.32, 0.46), (0.5, 0.42), (0.66, 0.5), (0.7, 0.66), (0.62, 0.82), (0.46, 0.87),
         (0.3, 0.8)]],
    6: [[(0.64, 0.13), (0.46, 0.3), (0.34, 0.52), (0.32, 0.7), (0.4, 0.84), (0.55, 0.87), (0.67, 0.77), (0.66, 0.62),
         (0.52, 0.54), (0.38, 0.6), (0.33, 0.7)]],
    7: [[(0.28, 0.18), (0.72, 0.18), (0.46, 0.88)]],
    8: [[(0.62, 0.2), (0.5, 0.13), (0.36, 0.2), (0.37, 0.34), (0.5, 0.48), (0.66, 0.62), (0.64, 0.8), (0.5, 0.87),
         (0.36, 0.8), (0.34, 0.62), (0.5, 0.48), (0.63, 0.34), (0.62, 0.2)]],
    9: [[(0.66, 0.3), (0.58, 0.16), (0.44, 0.14), (0.34, 0.24), (0.36, 0.4), (0.5, 0.45), (0.66, 0.36), (0.66, 0.3),
         (0.64, 0.6), (0.6, 0.88)]],
}


def canvas_has_ink(page) -> bool | None:
    """Whether the drawing canvas shows any stroke (None: no canvas on the page)."""
    layer = page.locator("canvas.lower-canvas:not(.dc-background-canvas)")
    if layer.count() != 1:
        return None
    return layer.evaluate(_CANVAS_INK_JS)


def draw_stroke(page, points, *, steps: int = 6, timeout_ms: int = 90_000) -> float:
    """Draw one stroke with the real mouse on the Draw page's canvas and wait for the page to answer.

    Args:
        points: the polyline, canvas-relative (0..1, y down), scaled to the canvas' bounding box.
        steps: intermediate mouse moves per segment.

    Returns:
        Milliseconds, on the browser's clock, from the mouseup that ends the stroke to the first change
        of the page's output (prediction, confidence, the 28x28 the model sees, or a message).

    Raises:
        playwright's TimeoutError: the page did not change within ``timeout_ms``.
    """
    box = page.locator("canvas.upper-canvas").bounding_box()
    assert box is not None, "the drawing canvas (canvas.upper-canvas) is not on the page"

    def at(u: float, v: float) -> tuple[float, float]:
        return box["x"] + u * box["width"], box["y"] + v * box["height"]

    page.evaluate(_ARM_PROBE_JS)
    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for u, v in points[1:]:
        page.mouse.move(*at(u, v), steps=steps)
    page.mouse.up()
    try:
        page.wait_for_function("() => window.__probe.changed !== null", polling=50, timeout=timeout_ms)
    finally:
        page.evaluate("() => window.__probe && window.__probe.stop()")
    return page.evaluate("() => window.__probe.changed - window.__probe.up")


def draw_digit(page, digit: int, **kwargs) -> list[float]:
    """Draw ``digit`` (DIGIT_STROKES) stroke by stroke, waiting for the page's answer to each stroke.

    Returns:
        The stroke-to-update latency of each stroke, in ms.
    """
    return [draw_stroke(page, stroke, **kwargs) for stroke in DIGIT_STROKES[digit]]


def clear_canvas(page, timeout_ms: int = 60_000) -> None:
    """Press the Draw page's Clear button and wait until the canvas is empty and the prompt is back."""
    page.locator('[data-testid="stMain"]').get_by_role("button", name="Clear").click()
    page.locator('[data-testid="stMain"] [data-testid="stAlert"]', has_text=EMPTY_CANVAS_PROMPT).wait_for(
        timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    while canvas_has_ink(page) is not False:
        if time.monotonic() > deadline:
            raise TimeoutError("the canvas still shows strokes after Clear")
        page.wait_for_timeout(100)
    wait_idle(page, 500, timeout_ms)


def open_draw_page(page, url: str, timeout_ms: int = 90_000) -> None:
    """Open /Draw and wait until the empty canvas and its prompt are shown."""
    page.goto(f"{url}/Draw")
    page.locator("canvas.upper-canvas").wait_for(timeout=timeout_ms)
    page.locator('[data-testid="stMain"] [data-testid="stAlert"]', has_text=EMPTY_CANVAS_PROMPT).wait_for(
        timeout=timeout_ms)
    wait_idle(page, 800, timeout_ms)


_CONTENT_HEIGHT_JS = """() => Math.max(...['stMain', 'stAppViewContainer', 'stMainBlockContainer'].map(t => {
  const e = document.querySelector(`[data-testid="${t}"]`); return e ? e.scrollHeight : 0; }))"""


def full_page_screenshot(page, path: Path | str, *, max_height: int = 3200) -> Path:
    """Screenshot of the whole page (Streamlit scrolls inside its main area, so the viewport is grown
    to the content's height, up to ``max_height``, and restored afterwards)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = int(page.evaluate(_CONTENT_HEIGHT_JS) or size["height"])
    grown = min(max(height, size["height"]), max_height)
    try:
        if grown != size["height"]:
            page.set_viewport_size({"width": size["width"], "height": grown})
            page.wait_for_timeout(1200)  # charts re-layout to the new size
        page.screenshot(path=str(path))
    finally:
        if grown != size["height"]:
            page.set_viewport_size(size)
    return path
