"""What a visitor waits for in the real app: the served Streamlit app driven in Debian's Chromium.

Run from the repository root (several minutes; it starts its own servers on free ports, on a
temporary copy of ``models/``, so the real model store is never touched)::

    python bench/app_latency.py
    python bench/app_latency.py --train-epochs 2   # shorter training comparison

Figures (the last line of output is one JSON object with them):

``home_s``
    Server start (process spawned) -> health check answered -> the Home page rendered (its title and
    the model card's metrics shown) in a browser tab opened before the server was started. Goal:
    <= 3 s. A cold start is one noisy sample, so three fresh servers are timed one after the other
    and the median run is reported (all three in ``home_s_runs``). Also ``health_s`` and
    ``home_title_s`` (the parts up to the health check and to the title), ``home_server_cpu_s``
    (the server's CPU seconds by then: robust to a loaded machine) and ``home_warm_s`` (Home opened
    in a new context once the server is warm: request -> metrics shown), all from the median run.
    Home must not import TensorFlow: ``home_imports_tensorflow`` says whether the server had loaded
    it once Home had finished running (from /proc/PID/maps).
``floor_home_s``, ``floor_canvas_s``, ``floor_rss_mb``
    The floor under those figures, in the same run: bare Streamlit pages on cold servers, timed the
    same way. ``bench/floor/home.py`` (a title and one metric): server start -> metric shown.
    ``bench/floor/canvas.py`` (streamlit-drawable-canvas alone, no model): server start -> canvas
    shown, and the server's RSS then. No app on Streamlit 1.67 with this canvas goes under them here;
    ``home_over_floor_s`` and ``first_canvas_over_floor_s`` are what this app adds.
``first_prediction_s``
    On a second, fresh server: server start -> /Draw opened -> a 7 drawn with the mouse -> its answer
    (the "Predicted digit" metric) shown. Includes loading the model (ONNX Runtime, no TensorFlow).
    ``first_stroke_to_prediction_s`` is the part from the mouseup that ends the stroke.
``stroke_to_prediction_p50_ms`` (and ``_p90_ms``, ``_max_ms``)
    Warm page: digits 0-9 twice (22 strokes; the canvas cleared between digits). Before each stroke
    the page is settled (no rerun running, no stale element, output unchanged for 300 ms); each
    stroke is timed on the browser's clock from its mouseup to the first moment the page shows an
    answer that differs from the one before the stroke (metric values, alert texts and the 28x28
    "what the model sees" image, seen by a MutationObserver; the transient empty result column
    in between does not count). Goal: p50 <= 300 ms. ``draw_correct`` counts the digits read right.
    ``stroke_to_first_change_p50_ms`` is the first change of any output (tests/browser/server.py's
    ``draw_stroke`` figure), for comparison. The reference, in the same run: a third server whose
    canvas keeps the component's own 200 ms delay after a stroke (``DIGITS_CANVAS_SEND_MS=shipped``),
    drawn on in turn with the first, digit by digit: ``stroke_shipped_canvas_p50_ms`` (and ``_p90_ms``)
    and ``stroke_speedup_vs_shipped_canvas`` (its p50 / this app's p50).
``rss_reading_mb_1``, ``rss_reading_mb_10``
    Issue 16's memory: resident memory (MiB) of a fresh server once 1, then 10, sessions each drew a
    digit on /Draw, read a PNG on /Upload and opened /Evaluate; no training run.
``rss_mb_1``, ``rss_mb_10``
    Resident memory (MiB) of the server process and all its children (/proc), with 1 open session
    and with 10 (9 more browser contexts), while a training run (started from the Train page by the
    first session) trains on the Dask worker. Training runs on a real ``dask scheduler`` and
    ``dask worker`` that this script starts as separate processes (``tests/dask_cluster.py``) and
    points every server and CLI run at (``DIGITS_DASK_SCHEDULER``): ``worker_rss_mb`` is the
    worker processes' RSS (nanny included), reported apart as DESIGN.md says, and
    ``rss_run_training`` whether the run was still training when RSS was read. Every session uses the three reading pages: a digit drawn
    and read on /Draw, a PNG uploaded and read on /Upload, the model measured on /Evaluate
    (``sessions_answered`` counts the sessions where all three showed their answer). ``rss_tensorflow``
    says whether TensorFlow was loaded in the server by then (from /proc/PID/maps).
``submit_to_first_point_s``
    On the warm cluster (worker started, no other run): the Train page's "Start training" click ->
    the first point in the live chart (read from the Plotly figure in the page), for the first
    Train page run of the comparison below. Goal: <= 5 s.
``train_page_overhead``
    The same training run (MLP 256-128, ``--train-epochs`` epochs, 60,000 images of which 10% for
    validation, batch 128, peak learning rate 0.003, seed 0) from the CLI (``python -m core train
    ...``, its ``train_seconds``) and from the Train page, with the page open and its live panel
    redrawn every second (the saved model's ``train_seconds``). Both figures are the same
    ``core.learning.train.train`` clock (``fit`` only: no data loading, no test evaluation), on the
    same Dask worker (the CLI submits to the same scheduler). ``--train-pairs``
    pairs (default 4, 3 epochs each) go CLI-page, page-CLI, CLI-page, ..., so a drift of the
    machine's load hits both sides alike; ``train_page_overhead = mean(page) / mean(CLI) - 1``.
    ``train_page_overhead_pairs`` is each pair's own page/CLI - 1 and
    ``train_page_overhead_paired_median`` their median, which one run slowed by a burst of CPU
    stolen by other guests moves less; ``train_runs_steal_cores`` is that stolen CPU (/proc/stat)
    during each run, in cores. ``train_same_config`` checks the stored hyperparameters of all runs
    are identical (if not, the overhead is null).
    On this machine the browser runs on the same CPUs as the server: ``train_page_browser_cpu_s``
    is the CPU seconds Chromium, Playwright's driver and this script used during a page run (mean),
    a cost a real visitor's browser would not put on the server; the Dask scheduler and worker that
    this script starts are left out (before 2026-12-06 they were counted, and the 7-8 s reported then
    were mostly the training worker's). ``train_page_server_cpu_s`` is the server's CPU seconds over a
    page run (mean): the live panel's redraws (training runs on the worker).

The machine is a shared 2-core CPU: absolute times move with its load (printed). Needs Playwright
for Python and /usr/bin/chromium; never downloads a browser. Every server it starts is stopped at
the end (also on an error or SIGTERM); the temporary folder is removed after a successful run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets TF_CPP_MIN_LOG_LEVEL and puts the repo root on sys.path)
from common import emit_json, load_1min, pct, process_tree_cpu_s, say  # noqa: E402

from tests.dask_cluster import start_cluster  # noqa: E402
from tests.browser.server import (  # noqa: E402
    DIGIT_STROKES,
    PREDICTED,
    app_env,
    clear_canvas,
    draw_stroke,
    free_port,
    launch_chromium,
    metric_value,
    open_draw_page,
    process_tree_rss_mb,
    start_server,
)

ROOT = common.ROOT
VIEWPORT = {"width": 1280, "height": 900}
# Issue 16's goals for the serving tier (no TensorFlow in the server).
GOAL_HOME_S = 1.5
GOAL_FIRST_PREDICTION_S = 1.5
GOAL_STROKE_P50_MS = 60.0
GOAL_RSS_MB = 250.0
GOAL_TRAIN_OVERHEAD = 0.03
GOAL_FIRST_POINT_S = 5.0
STROKE_DIGITS = list(range(10)) * 2
FIRST_DIGIT = 7
EXTRA_SESSIONS = 9
HOME_RUNS = 3  # cold servers started for the Home figures (the median one is reported)
COLD_TIMEOUT_MS = 180_000
TRAIN_PAIRS = 4  # CLI/page pairs of the training comparison
TRAIN = {"family": "mlp", "hidden": "256,128", "epochs": 3, "train_size": 60000, "batch_size": 128, "lr": 0.003,
         "val_fraction": 0.1, "seed": 0}

# --- page probes -----------------------------------------------------------------------------------

# The main area's output: image sources, metric values, alert texts; plus whether a rerun is going on
# (elements marked stale, or Streamlit's status widget, which only shows for reruns over 0.5 s).
_OUTPUT_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return null;
  const pick = (sel, f) => [...main.querySelectorAll(sel)].map(f);
  return {imgs: pick('img', e => e.src), metrics: pick('[data-testid="stMetricValue"]', e => e.textContent),
          alerts: pick('[data-testid="stAlert"]', e => e.textContent),
          busy: main.querySelector('[data-stale="true"]') !== null
                || document.querySelector('[data-testid="stStatusWidget"]') !== null};
}"""

# True once no rerun is visible and the output has not changed for `quiet` ms.
_SETTLED_JS = """(quiet) => {
  const out = (OUTPUT)();
  const now = performance.now();
  if (!out || out.busy) { window.__settle = null; return false; }
  const key = JSON.stringify(out);
  if (!window.__settle || window.__settle.key !== key) { window.__settle = {key, since: now}; return false; }
  return now - window.__settle.since >= quiet;
}""".replace("OUTPUT", _OUTPUT_JS)

# Arms a one-shot probe: the browser-clock time of the next mouseup, and of the first moment after it
# that the page shows an answer (a metric or a message) different from the one shown when armed.
_ARM_ANSWER_JS = """() => {
  const output = (OUTPUT);
  const answer = () => {
    const o = output();
    if (!o || (!o.metrics.length && !o.alerts.length)) return null;  // e.g. the result column being rebuilt
    return JSON.stringify([o.metrics, o.alerts, o.imgs.slice(0, 1)]);
  };
  const probe = {up: null, at: null, before: answer(), value: null};
  window.__answer = probe;
  document.addEventListener('mouseup', () => { if (probe.up === null) probe.up = performance.now(); },
                            {capture: true, once: true});
  const obs = new MutationObserver(() => {
    if (probe.up === null || probe.at !== null) return;
    const now = answer();
    if (now !== null && now !== probe.before) { probe.at = performance.now(); probe.value = now; obs.disconnect(); }
  });
  obs.observe(document.querySelector('[data-testid="stMain"]'),
              {subtree: true, childList: true, attributes: true, characterData: true});
  probe.stop = () => obs.disconnect();
}""".replace("OUTPUT", _OUTPUT_JS)


def settle(page, quiet_ms: int = 300, timeout_ms: int = 120_000) -> None:
    """Wait until no rerun shows on the page and its output has not changed for ``quiet_ms``."""
    page.evaluate("() => { window.__settle = null; }")
    page.wait_for_function(_SETTLED_JS, arg=quiet_ms, polling=50, timeout=timeout_ms)


def timed_stroke(page, points, timeout_ms: int = 60_000) -> dict:
    """Settle the page, draw one stroke (``draw_stroke``) and wait for the answer to it.

    Returns:
        ``answer_ms``: mouseup -> the page shows a new answer (browser clock); ``first_change_ms``:
        mouseup -> first change of any output (``draw_stroke``'s figure); ``lag_s``: how long ago, on
        the browser's clock, the answer appeared when this returned.
    """
    settle(page)
    page.evaluate(_ARM_ANSWER_JS)
    try:
        first = draw_stroke(page, points, timeout_ms=timeout_ms)
        page.wait_for_function("() => window.__answer.at !== null", polling=50, timeout=timeout_ms)
    finally:
        page.evaluate("() => window.__answer && window.__answer.stop()")
    got = page.evaluate("() => ({ms: window.__answer.at - window.__answer.up, "
                        "lag: performance.now() - window.__answer.at})")
    return {"answer_ms": got["ms"], "first_change_ms": first, "lag_s": got["lag"] / 1000.0}


def timed_digit(page, digit: int, timeout_ms: int = 60_000) -> list[dict]:
    return [timed_stroke(page, stroke, timeout_ms) for stroke in DIGIT_STROKES[digit]]


def read_digit(page) -> str | None:
    value = metric_value(page, PREDICTED)
    return value.inner_text().strip() if value.count() == 1 else None


def tensorflow_loaded(pid: int) -> bool:
    """Whether the process has TensorFlow's native library mapped (i.e. imported it)."""
    try:
        return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def new_page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(120_000)
    return context, context.new_page()


def wait_home(page) -> tuple[float, float]:
    """perf_counter() times at which Home's title, then its model card's metrics, are shown."""
    page.locator('[data-testid="stMain"] h1').first.wait_for(timeout=COLD_TIMEOUT_MS)
    t_title = time.perf_counter()
    page.locator('[data-testid="stMain"] [data-testid="stMetric"]').first.wait_for(timeout=COLD_TIMEOUT_MS)
    return t_title, time.perf_counter()


# --- the measurements ------------------------------------------------------------------------------

def measure_home(browser, env: dict, logs: Path) -> dict:
    context, page = new_page(browser)  # the browser side is ready before the server starts
    server = None
    try:
        server = start_server(free_port(), env, timeout=120, log_path=logs / "home-server.log")
        t_health = time.perf_counter()
        page.goto(server.url)
        t_title, t_card = wait_home(page)
        server_cpu = process_tree_cpu_s(server.pid)
        settle(page, 500)
        tf = tensorflow_loaded(server.pid)
        context.close()
        context, page = new_page(browser)  # Home again: server warm, new session
        t0 = time.perf_counter()
        page.goto(server.url)
        warm = wait_home(page)[1] - t0
    finally:
        context.close()
        if server is not None:
            server.stop()
    t_start = server.started_at
    return {"home_s": t_card - t_start, "health_s": t_health - t_start, "home_title_s": t_title - t_start,
            "home_server_cpu_s": server_cpu, "home_warm_s": warm, "home_imports_tensorflow": tf}


def measure_floor(browser, env: dict, logs: Path) -> dict:
    """Cold servers of the bare pages in ``bench/floor``: Home's and Draw's floor (see the docstring)."""
    figures = {}
    for script, key in (("home.py", "floor_home_s"), ("canvas.py", "floor_canvas_s")):
        context, page = new_page(browser)
        server = None
        try:
            server = start_server(free_port(), env, timeout=120, log_path=logs / f"floor-{script}.log",
                                  script=str(ROOT / "bench" / "floor" / script))
            page.goto(server.url)
            if script == "home.py":
                wait_home(page)
            else:
                page.locator("canvas.upper-canvas").wait_for(timeout=COLD_TIMEOUT_MS)
            figures[key] = time.perf_counter() - server.started_at
            if script == "canvas.py":
                settle(page, 500)
                figures["floor_rss_mb"] = process_tree_rss_mb(server.pid)
        finally:
            context.close()
            if server is not None:
                server.stop()
    return figures


def measure_first_prediction(server, page) -> dict:
    page.goto(f"{server.url}/Draw")
    page.locator("canvas.upper-canvas").wait_for(timeout=COLD_TIMEOUT_MS)
    t_canvas = time.perf_counter()
    open_draw_page(page, server.url, timeout_ms=COLD_TIMEOUT_MS)  # settles (800 ms without a rerun)
    t_drawing = time.perf_counter()
    strokes = timed_digit(page, FIRST_DIGIT, timeout_ms=COLD_TIMEOUT_MS)
    t_answer = time.perf_counter() - strokes[-1]["lag_s"]
    settle(page)
    stroke_s = strokes[-1]["answer_ms"] / 1000.0
    return {"first_prediction_s": t_answer - server.started_at,
            "first_stroke_to_prediction_s": stroke_s,
            # What a visitor waits for: the canvas, then the answer after their stroke (the harness'
            # settling and the drawing itself left out).
            "first_canvas_s": t_canvas - server.started_at,
            "first_wait_s": (t_canvas - server.started_at) + stroke_s,
            "first_digit_read": read_digit(page)}


def measure_strokes(page, shipped_page) -> dict:
    """Digits drawn in turn on ``page`` (this app's canvas) and on ``shipped_page`` (a server whose
    canvas keeps the component's own 200 ms delay after a stroke), in alternating order."""
    times: dict[str, dict[str, list[float]]] = {k: {"answer": [], "first": []} for k in ("app", "shipped")}
    correct = {"app": 0, "shipped": 0}
    for i, digit in enumerate(STROKE_DIGITS):
        order = (("app", page), ("shipped", shipped_page))
        for kind, pg in order if i % 2 == 0 else order[::-1]:
            clear_canvas(pg)
            for s in timed_digit(pg, digit):
                times[kind]["answer"].append(s["answer_ms"])
                times[kind]["first"].append(s["first_change_ms"])
            settle(pg)
            correct[kind] += read_digit(pg) == str(digit)
    answer, shipped = times["app"]["answer"], times["shipped"]["answer"]
    return {"stroke_to_prediction_p50_ms": pct(answer, 50), "stroke_to_prediction_p90_ms": pct(answer, 90),
            "stroke_to_prediction_max_ms": max(answer),
            "stroke_to_first_change_p50_ms": pct(times["app"]["first"], 50),
            "stroke_shipped_canvas_p50_ms": pct(shipped, 50), "stroke_shipped_canvas_p90_ms": pct(shipped, 90),
            "stroke_speedup_vs_shipped_canvas": pct(shipped, 50) / pct(answer, 50),
            "strokes": len(answer), "draw_correct": f"{correct['app']}/{len(STROKE_DIGITS)}",
            "draw_correct_shipped_canvas": f"{correct['shipped']}/{len(STROKE_DIGITS)}"}


def upload_png_path() -> Path:
    """A photographed-looking digit (dark on light, 140 px) as a PNG file, made once per run."""
    path = Path(tempfile.gettempdir()) / f"app-latency-upload-{os.getpid()}.png"
    if not path.is_file():
        from PIL import Image

        from tests.helpers_images import mnist_sample

        digit = mnist_sample(1, seed=3)[0][0]
        Image.fromarray(255 - digit).resize((140, 140), Image.Resampling.BICUBIC).save(path)
    return path


def use_reading_pages(page, url: str) -> bool:
    """On a page already showing /Draw with a digit read: upload a PNG on /Upload, then open
    /Evaluate; True when each showed its answer."""
    answered = read_digit(page) is not None
    page.goto(url.rstrip("/") + "/Upload")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(upload_png_path()))
    metric_value(page, PREDICTED).first.wait_for(timeout=COLD_TIMEOUT_MS)
    page.goto(url.rstrip("/") + "/Evaluate")
    metric_value(page, "Test accuracy").first.wait_for(timeout=COLD_TIMEOUT_MS)
    return answered


_CHART_POINTS_JS = """() => {
  for (const plot of document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot')) {
    const trace = (plot.data || []).find(t => (t.name || '').startsWith('Training') && t.x);
    if (trace) return trace.x.length;  // the live curves' per-batch points (not the data section's charts)
  }
  return 0;
}"""
_RUN_STATE_JS = """() => {
  const h = [...document.querySelectorAll('[data-testid="stMain"] h3')].map(e => e.textContent.trim());
  return h.find(t => t.startsWith('Training')) || h.find(t => t.startsWith('Last training')) || null;
}"""


def open_mlp_form(page, url: str, hidden: str, epochs: int) -> None:
    """Open /Train and fill the form for an MLP with ``hidden`` layers and ``epochs`` epochs."""
    page.goto(url.rstrip("/") + "/Train")
    page.get_by_role("button", name="Start training").wait_for(timeout=COLD_TIMEOUT_MS)
    settle(page, 500)
    page.get_by_text("MLP (dense layers)").click()
    field = page.get_by_role("textbox", name="Hidden layers")
    field.wait_for()
    settle(page, 500)
    field.fill(hidden)
    page.locator(".st-key-train_epochs input").fill(str(epochs))


def start_long_run(page, url: str) -> None:
    """Start a run that outlasts the memory measurement (MLP 1024-1024, 30 epochs) from /Train."""
    open_mlp_form(page, url, "1024,1024", 30)
    page.get_by_role("button", name="Start training").click()
    page.wait_for_function(_CHART_POINTS_JS, polling=250, timeout=COLD_TIMEOUT_MS)


def cancel_run(page) -> None:
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("No model was saved").first.wait_for(timeout=COLD_TIMEOUT_MS)


def workers_rss_mb(cluster) -> float:
    return sum(process_tree_rss_mb(proc.pid) for proc in cluster.workers if proc.poll() is None)


def more_reading_sessions(browser, url: str, count: int, contexts: list) -> int:
    """``count`` new sessions, each drawing a digit on /Draw, then using /Upload and /Evaluate; their
    contexts are appended to ``contexts`` (kept open: the server keeps their sessions). Returns how
    many showed all three answers."""
    answered = 0
    for _ in range(count):
        ctx, pg = new_page(browser)
        contexts.append(ctx)
        open_draw_page(pg, url)
        timed_digit(pg, 1)
        settle(pg)
        answered += use_reading_pages(pg, url)
    return answered


def measure_reading_memory(browser, env: dict, logs: Path) -> dict:
    """Issue 16's memory: a fresh server whose 1, then 10, sessions used the reading pages alone."""
    server = start_server(free_port(), env, timeout=120, log_path=logs / "reading-server.log")
    contexts: list = []
    try:
        more_reading_sessions(browser, server.url, 1, contexts)
        time.sleep(1.0)
        rss_1 = process_tree_rss_mb(server.pid)
        more_reading_sessions(browser, server.url, EXTRA_SESSIONS, contexts)
        time.sleep(1.0)
        return {"rss_reading_mb_1": rss_1, "rss_reading_mb_10": process_tree_rss_mb(server.pid),
                "rss_reading_tensorflow": tensorflow_loaded(server.pid)}
    finally:
        for ctx in contexts:
            ctx.close()
        server.stop()


def measure_memory(browser, server, page, cluster) -> dict:
    answered = int(use_reading_pages(page, server.url))
    train_context, train_page_ = new_page(browser)
    start_long_run(train_page_, server.url)
    time.sleep(1.0)
    rss_1 = process_tree_rss_mb(server.pid)
    extra: list = []
    try:
        answered += more_reading_sessions(browser, server.url, EXTRA_SESSIONS, extra)
        time.sleep(1.0)
        rss_10 = process_tree_rss_mb(server.pid)
        workers = workers_rss_mb(cluster)
        training = train_page_.evaluate(_RUN_STATE_JS) == "Training in progress"
        cancel_run(train_page_)
    finally:
        for ctx in extra:
            ctx.close()
        train_context.close()
    return {"rss_mb_1": rss_1, "rss_mb_10": rss_10, "sessions_answered": f"{answered}/{1 + EXTRA_SESSIONS}",
            "rss_tensorflow": tensorflow_loaded(server.pid), "worker_rss_mb": workers,
            "rss_run_training": training}


def train_cli(workdir: Path, tag: str, scheduler: str) -> dict:
    models = workdir / "cli-models"
    env = os.environ | {"DIGITS_MODELS_DIR": str(models), "DIGITS_DATA_DIR": str(workdir / "cli-data"),
                        "TF_CPP_MIN_LOG_LEVEL": "2", "DIGITS_DASK_SCHEDULER": scheduler}
    env.pop("DIGITS_ACTIVE_MODEL", None)
    a = TRAIN
    cmd = [sys.executable, "-m", "core", "train", "--family", a["family"], "--hidden", a["hidden"],
           "--epochs", str(a["epochs"]), "--train-size", str(a["train_size"]), "--batch-size", str(a["batch_size"]),
           "--lr", str(a["lr"]), "--val-fraction", str(a["val_fraction"]), "--seed", str(a["seed"]),
           "--name", f"bench-cli-{tag}"]
    out = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    name = json.loads(out.stdout.strip().splitlines()[-1])["model"]
    meta = json.loads((models / f"{name}.json").read_text(encoding="utf-8"))
    return {"train_seconds": float(meta["train_seconds"]), "hyperparameters": meta.get("hyperparameters")}


def set_slider(page, key: str, text: str) -> str:
    """Move a select_slider with the keyboard (Home, then Right) until it shows ``text``."""
    slider = page.locator(f'.st-key-{key} input[type="range"]')
    slider.focus()
    page.keyboard.press("Home")
    for _ in range(20):
        shown = slider.get_attribute("aria-valuetext") or ""
        if shown == text:
            break
        page.keyboard.press("ArrowRight")
    return shown


_SAVED_AS_JS = """(known) => {
  const ok = document.querySelector('[data-testid="stMain"] [data-testid="stAlertContentSuccess"]');
  const m = ok && ok.textContent.trim().match(/saved as (\\S+?)\\.?$/);
  return m && !known.includes(m[1]) ? m[1] : null;
}"""


def train_page(browser, server, models_dir: Path, cluster) -> dict:
    """One run from the Train page (new session), the page kept open until it finishes. The browser's CPU
    is this process' tree without the server and the Dask cluster (which this script started)."""
    harness_skip = (server.pid, cluster.scheduler.pid, *(w.pid for w in cluster.workers))
    known = sorted(p.stem for p in models_dir.glob("*.json"))
    context, page = new_page(browser)
    try:
        open_mlp_form(page, server.url, TRAIN["hidden"], TRAIN["epochs"])
        page.locator(".st-key-train_lr input").fill(f"{TRAIN['lr']:.4f}")
        page.locator(".st-key-train_val_fraction input").fill(f"{TRAIN['val_fraction']:.2f}")
        size = set_slider(page, "train_size", f"{TRAIN['train_size']:,}")
        batch = set_slider(page, "train_batch_size", str(TRAIN["batch_size"]))
        if size != f"{TRAIN['train_size']:,}" or batch != str(TRAIN["batch_size"]):
            raise RuntimeError(f"Train page sliders read {size!r} images, batch {batch!r}")
        page.get_by_role("button", name="Start training").click()
        t_submit = time.perf_counter()
        page.wait_for_function(_CHART_POINTS_JS, polling=100, timeout=COLD_TIMEOUT_MS)
        first_point = time.perf_counter() - t_submit
        browser_cpu0, server_cpu0 = process_tree_cpu_s(os.getpid(), skip=harness_skip), process_tree_cpu_s(server.pid)
        name = page.wait_for_function(_SAVED_AS_JS, arg=known, polling=250, timeout=1_200_000).json_value()
        browser_cpu = process_tree_cpu_s(os.getpid(), skip=harness_skip) - browser_cpu0
        server_cpu = process_tree_cpu_s(server.pid) - server_cpu0
        settle(page, 300)
        shown = metric_value(page, "Training time").inner_text()
    finally:
        context.close()
    meta = json.loads((models_dir / f"{name}.json").read_text(encoding="utf-8"))
    return {"train_seconds": float(meta["train_seconds"]), "hyperparameters": meta.get("hyperparameters"),
            "model": name, "shown": shown, "browser_cpu_s": browser_cpu, "server_cpu_s": server_cpu,
            "first_point_s": first_point}


def _steal_ticks() -> int:
    """The machine's CPU time stolen by other guests so far (/proc/stat), in clock ticks."""
    try:
        return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8])
    except (OSError, IndexError, ValueError):
        return 0


def measure_training(browser, server, cluster, workdir: Path, models_dir: Path, pairs: int = TRAIN_PAIRS) -> dict:
    scheduler = server.env["DIGITS_DASK_SCHEDULER"]
    # Pairs alternate CLI-page, page-CLI, ... so a drift of the machine's load hits both sides alike.
    order = [kind for i in range(pairs) for kind in (("cli", "page") if i % 2 == 0 else ("page", "cli"))]
    say(f"training {TRAIN} {len(order)} times: " + ", ".join(order) + "…")
    runs = []
    for i, kind in enumerate(order):
        steal0, t0 = _steal_ticks(), time.perf_counter()
        run = train_cli(workdir, str(i), scheduler) if kind == "cli" else train_page(browser, server, models_dir, cluster)
        run["kind"] = kind
        run["steal_cores"] = (_steal_ticks() - steal0) / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - t0)
        runs.append(run)
        extra = (f" (shown as {run['shown']!r}; model {run['model']}; CPU during the run: server "
                 f"{run['server_cpu_s']:.1f} s, browser {run['browser_cpu_s']:.1f} s)" if kind == "page" else "")
        say(f"  {'CLI' if kind == 'cli' else 'Train page'}: train_seconds {run['train_seconds']:.2f}; "
            f"stolen by other guests: {run['steal_cores']:.2f} cores{extra}")
    cli = [r["train_seconds"] for r in runs if r["kind"] == "cli"]
    page = [r["train_seconds"] for r in runs if r["kind"] == "page"]
    same = all(r["hyperparameters"] == runs[0]["hyperparameters"] for r in runs)
    if not same:
        say("  WARNING: the runs' configurations differ: " + "; ".join(
            f"{r['kind']}: {r['hyperparameters']}" for r in runs))
    cli_s, page_s = sum(cli) / len(cli), sum(page) / len(page)
    overhead = page_s / cli_s - 1 if same else None
    # Each pair's own ratio, and their median: one run hit by a burst of stolen CPU moves it less.
    by_pair = [{r["kind"]: r["train_seconds"] for r in runs[j:j + 2]} for j in range(0, len(runs), 2)]
    paired = [pair["page"] / pair["cli"] - 1 for pair in by_pair]
    paired_median = pct(paired, 50) if same else None
    say(f"train_page_overhead: page {page_s:.2f} s / CLI {cli_s:.2f} s - 1 = "
        + (f"{overhead:+.1%}" if overhead is not None else "n/a (different configurations)")
        + f" [goal <= {GOAL_TRAIN_OVERHEAD:.0%}]; per pair " + ", ".join(f"{p:+.1%}" for p in paired)
        + (f" (median {paired_median:+.1%})" if paired_median is not None else ""))
    return {"train_same_config": same, "train_cli_s": cli_s, "train_page_s": page_s, "train_cli_runs_s": cli,
            "train_page_runs_s": page, "train_page_overhead": overhead,
            "train_page_overhead_pairs": paired, "train_page_overhead_paired_median": paired_median,
            "train_runs_steal_cores": [round(r["steal_cores"], 3) for r in runs],
            "train_page_browser_cpu_s": sum(r["browser_cpu_s"] for r in runs if r["kind"] == "page") / len(page),
            "train_page_server_cpu_s": sum(r["server_cpu_s"] for r in runs if r["kind"] == "page") / len(page),
            "train_epochs": TRAIN["epochs"], "train_size": TRAIN["train_size"],
            "submit_to_first_point_s": next(r["first_point_s"] for r in runs if r["kind"] == "page"),
            "submit_to_first_point_runs_s": [round(r["first_point_s"], 2) for r in runs if r["kind"] == "page"]}


# --- main --------------------------------------------------------------------------------------------

def _sigterm(signum, _frame):
    raise SystemExit(128 + signum)  # run the clean-ups (servers, browser) when `timeout` stops us


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-epochs", type=int, default=TRAIN["epochs"],
                    help=f"epochs of each training run (default {TRAIN['epochs']})")
    ap.add_argument("--train-pairs", type=int, default=TRAIN_PAIRS,
                    help=f"CLI/page pairs of training runs (default {TRAIN_PAIRS}; 0 skips the comparison)")
    args = ap.parse_args(argv)
    TRAIN["epochs"] = args.train_epochs
    signal.signal(signal.SIGTERM, _sigterm)

    import streamlit
    from playwright.sync_api import sync_playwright

    say(f"machine: {os.cpu_count()} CPUs, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"Python {platform.python_version()}, Streamlit {streamlit.__version__}; Chromium /usr/bin/chromium")
    workdir = Path(tempfile.mkdtemp(prefix="app-latency-"))
    env = app_env(ROOT / "models", workdir)
    models_dir = Path(env["DIGITS_MODELS_DIR"])
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    figures: dict = {"load_1min_start": load_1min()}
    ok = False
    cluster = start_cluster(logs)  # a real dask scheduler and worker, separate processes
    env["DIGITS_DASK_SCHEDULER"] = cluster.address
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            try:
                # 1. Home, cold server.
                # A cold start is one sample of a noisy machine: the median of HOME_RUNS servers.
                homes = [measure_home(browser, env, logs) for _ in range(HOME_RUNS)]
                figures.update(sorted(homes, key=lambda h: h["home_s"])[len(homes) // 2])
                figures["home_s_runs"] = [round(h["home_s"], 2) for h in homes]
                figures["home_imports_tensorflow"] = any(h["home_imports_tensorflow"] for h in homes)
                say(f"home: server start -> Home rendered {figures['home_s']:.2f} s (health check answered after "
                    f"{figures['health_s']:.2f} s, title shown after {figures['home_title_s']:.2f} s; server CPU "
                    f"{figures['home_server_cpu_s']:.1f} s) [goal <= {GOAL_HOME_S:.1f} s]; TensorFlow loaded: "
                    f"{figures['home_imports_tensorflow']}; Home again on the warm server: "
                    f"{figures['home_warm_s']:.2f} s")

                floors = [measure_floor(browser, env, logs) for _ in range(HOME_RUNS)]
                for key in ("floor_home_s", "floor_canvas_s", "floor_rss_mb"):
                    figures[key] = sorted(f[key] for f in floors)[len(floors) // 2]
                figures["home_over_floor_s"] = figures["home_s"] - figures["floor_home_s"]
                say(f"floor (bare Streamlit pages, cold servers, median of {HOME_RUNS}): title + metric shown "
                    f"{figures['floor_home_s']:.2f} s, the canvas alone shown {figures['floor_canvas_s']:.2f} s "
                    f"(server RSS then {figures['floor_rss_mb']:.0f} MiB); Home is {figures['home_over_floor_s']:+.2f} s "
                    f"over its floor")

                reading = measure_reading_memory(browser, env, logs)
                figures.update(reading)
                say(f"server memory (RSS), the reading pages alone (Draw, Upload, Evaluate; no run): "
                    f"{reading['rss_reading_mb_1']:.0f} MiB with 1 session, {reading['rss_reading_mb_10']:.0f} MiB "
                    f"with {1 + EXTRA_SESSIONS} [goal <= {GOAL_RSS_MB:.0f}] (the bare canvas: "
                    f"{figures['floor_rss_mb']:.0f} MiB)")

                # 2-5 on another cold server, kept to the end.
                server = start_server(free_port(), env, timeout=120, log_path=logs / "server.log")
                try:
                    context, page = new_page(browser)
                    first = measure_first_prediction(server, page)
                    figures.update(first)
                    figures["first_canvas_over_floor_s"] = first["first_canvas_s"] - figures["floor_canvas_s"]
                    say(f"first prediction: server start -> {FIRST_DIGIT} drawn -> answer shown "
                        f"{first['first_prediction_s']:.2f} s ({first['first_stroke_to_prediction_s']:.2f} s of it "
                        f"from the end of the stroke; canvas shown after {first['first_canvas_s']:.2f} s, "
                        f"{figures['first_canvas_over_floor_s']:+.2f} s over the bare canvas; "
                        f"read {first['first_digit_read']!r})")

                    # The reference: the same app with the canvas component's own delay after a stroke.
                    shipped_env = env | {"DIGITS_CANVAS_SEND_MS": "shipped"}
                    shipped = start_server(free_port(), shipped_env, timeout=120, log_path=logs / "shipped-server.log")
                    try:
                        shipped_context, shipped_page = new_page(browser)
                        open_draw_page(shipped_page, shipped.url, timeout_ms=COLD_TIMEOUT_MS)
                        timed_digit(shipped_page, FIRST_DIGIT, timeout_ms=COLD_TIMEOUT_MS)
                        strokes = measure_strokes(page, shipped_page)
                        shipped_context.close()
                    finally:
                        shipped.stop()
                    figures.update(strokes)
                    say(f"warm strokes: {strokes['strokes']} strokes, end of stroke -> new answer p50 "
                        f"{strokes['stroke_to_prediction_p50_ms']:.0f} ms, p90 "
                        f"{strokes['stroke_to_prediction_p90_ms']:.0f} ms, "
                        f"max {strokes['stroke_to_prediction_max_ms']:.0f} ms "
                        f"[goal p50 <= {GOAL_STROKE_P50_MS:.0f} ms] "
                        f"(first change of any output: p50 {strokes['stroke_to_first_change_p50_ms']:.0f} ms); "
                        f"digits read right {strokes['draw_correct']}; the canvas as shipped (200 ms delay), "
                        f"same digits in turn: p50 {strokes['stroke_shipped_canvas_p50_ms']:.0f} ms, p90 "
                        f"{strokes['stroke_shipped_canvas_p90_ms']:.0f} ms "
                        f"({strokes['stroke_speedup_vs_shipped_canvas']:.2f}x)")

                    memory = measure_memory(browser, server, page, cluster)
                    figures.update(memory)
                    say(f"server memory (RSS, process + children) while a run trains "
                        f"({memory['rss_run_training']}): {memory['rss_mb_1']:.0f} MiB with 1 session, "
                        f"{memory['rss_mb_10']:.0f} MiB with {1 + EXTRA_SESSIONS} (sessions showing an answer: "
                        f"{memory['sessions_answered']}) [goal <= {GOAL_RSS_MB:.0f}]; the Dask worker apart: "
                        f"{memory['worker_rss_mb']:.0f} MiB")
                    context.close()

                    if args.train_pairs > 0:
                        figures.update(measure_training(browser, server, cluster, workdir, models_dir, args.train_pairs))
                finally:
                    server.stop()
            finally:
                browser.close()
        ok = True
    finally:
        cluster.stop()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"(temporary folder with the servers' logs kept: {workdir})")

    figures["load_1min_end"] = load_1min()
    say(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    overhead = figures.get("train_page_overhead")
    figures["goals_met"] = {
        "home_s": figures["home_s"] <= GOAL_HOME_S,
        "home_imports_tensorflow": not figures["home_imports_tensorflow"],
        "first_prediction_s": figures["first_prediction_s"] <= GOAL_FIRST_PREDICTION_S,
        "stroke_to_prediction_p50_ms": figures["stroke_to_prediction_p50_ms"] <= GOAL_STROKE_P50_MS,
        "rss_reading_mb_1": figures["rss_reading_mb_1"] <= GOAL_RSS_MB,
        "rss_reading_mb_10": figures["rss_reading_mb_10"] <= GOAL_RSS_MB,
        "rss_mb_1": figures["rss_mb_1"] <= GOAL_RSS_MB, "rss_mb_10": figures["rss_mb_10"] <= GOAL_RSS_MB,
        "train_page_overhead": None if overhead is None else overhead <= GOAL_TRAIN_OVERHEAD,
        "submit_to_first_point_s": (figures["submit_to_first_point_s"] <= GOAL_FIRST_POINT_S
                                    if "submit_to_first_point_s" in figures else None),
        "server_never_imports_tensorflow": not figures["rss_tensorflow"],
    }
    emit_json(figures)


if __name__ == "__main__":
    main()
