"""Load test: N browser sessions draw digits on /Draw while a training run goes on, on ONE server.

What it does, all on 127.0.0.1 and bounded (every loop has a count and a deadline):

1. starts one Streamlit server (``streamlit run Home.py``) on a free port, on a temporary copy of
   the model store (``tests.browser.server.app_env``: the repository's ``models/`` is never
   written) with ``--model`` as its default, unless ``--url`` names a server already running on
   this machine;
2. warms the server up with one drawing (not counted: the first one loads TensorFlow and the
   model, and fits the "not a digit" detector if the store has none saved);
3. starts a training run through the Train page's form in a browser (an MLP, 30 epochs on 60,000
   images: it outlasts the test and is stopped with the page's Stop button at the end), and checks
   that a second visitor on /Train gets the busy answer (the form locked, "A run is in progress")
   and no Stop button;
4. opens N sessions (one Debian Chromium, N browser contexts, started ``--ramp`` seconds apart)
   that each go to /Draw and, R times, clear the canvas, draw a digit with the mouse on the real
   canvas (``canvas.upper-canvas``) and read the "Predicted digit" metric;
5. counts requests and errors (an exception or ``st.error`` on the page, a wrong digit, a
   timeout, a page using another model than ``--model``), the latency from the last mouse-up to
   the right digit on screen (p50/p95), and the CPU seconds the server, the browser and the rest
   of the machine (other people's jobs) used meanwhile;
6. stops the training run (Stop button) and the server.

The digits drawn are the browser tests' own strokes (``tests.browser.server.DIGIT_STROKES``), the
single-stroke ones only: a digit drawn in two strokes is read once after each stroke, and the
reading of its first half would be neither right nor wrong. tests/browser/test_load.py checks
offline (``render_digit`` + the model) that the shipped model reads each of them right. A
session's answers come from its session's model: each page must say "Model: default-cnn", and the
answers must be right, which a model in training (a fresh MLP) would not give.

    python bench/load_test.py                                # 20 sessions x 5 drawings, with training
    python bench/load_test.py --sessions 4 --requests 3 --no-train

The last line is JSON: {"sessions", "requests", "errors", "p50_ms", "p95_ms", "training_running",
"busy_answer", "training_stopped", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import CANVAS_SIZE, emit_json, load_1min, pct, process_tree_cpu_s, say  # noqa: E402
from tests.browser.server import (  # noqa: E402
    _CANVAS_INK_JS,
    CHROMIUM,
    DIGIT_STROKES,
    PREDICTED,
    app_env,
    free_port,
    launch_chromium,
    process_tree_rss_mb,
    start_server,
)

MODEL = "default-cnn"
# Digits drawn in one stroke: the page's answer to the last mouse-up is the answer to the digit.
LOAD_DIGITS = [d for d, strokes in sorted(DIGIT_STROKES.items()) if len(strokes) == 1]
STROKE_PX = 20  # pages/2_Draw.py's brush
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
MAIN = "[data-testid='stMain']"
ERROR_SELECTORS = ("[data-testid='stException']", "[data-testid='stAlertContentError']")
TRAINING = "Training in progress"
BUSY_NOTE = "A run is in progress; the form unlocks when it ends."
VIEWPORT = {"width": 1280, "height": 900}


def digit_of(session_idx: int, request_idx: int) -> int:
    """The digit a session draws for a request (sessions start at different digits)."""
    return LOAD_DIGITS[(session_idx + request_idx) % len(LOAD_DIGITS)]


def render_digit(digit: int, size: int = CANVAS_SIZE, stroke_px: int = STROKE_PX):
    """The drawing as the Draw page's canvas holds it: uint8 (size, size, 4), white strokes on black."""
    import numpy as np
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    pen = ImageDraw.Draw(image)
    r = stroke_px / 2
    for stroke in DIGIT_STROKES[digit]:
        points = [(u * size, v * size) for u, v in stroke]
        pen.line(points, fill=(255, 255, 255, 255), width=stroke_px, joint="curve")
        for x, y in points:  # round caps and joins, as the canvas' brush draws them
            pen.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255, 255))
    return np.asarray(image)


@dataclass
class Request:
    session: int
    index: int
    digit: int
    got: str | None = None
    latency_ms: float | None = None
    error: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    """``bench.common.pct``, or None for no values."""
    return pct(values, q) if values else None


def check_local(url: str) -> str:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"The load test only targets this machine (127.0.0.1), not {host!r}.")
    return url.rstrip("/")


def _first_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line`` of an exception, plus the last step of a Playwright call log (what an
    action was still waiting for when it timed out, e.g. "element is not stable")."""
    lines = [line.strip(" -") for line in str(exc).strip().splitlines() if line.strip(" -")]
    text = f"{type(exc).__name__}: {lines[0][:limit] if lines else ''}"
    if "Call log:" in lines[:-1]:
        text += f" (last: {lines[-1][:limit]})"
    return text


def cpu_split(server_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the server's tree (when this process started it), of the browser side
    (this process and its other descendants: Playwright's driver and Chromium) and of the machine."""
    out = {"browser": process_tree_cpu_s(os.getpid(), skip=(server_pid,) if server_pid else ())}
    if server_pid:
        out["server"] = process_tree_cpu_s(server_pid)
    out["machine"] = machine_busy_s()
    return out


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot, all cores (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Browser steps (async Playwright: one browser, one context per session; the page helpers in
# tests/browser/server.py are the sync API's, so only their selectors and scripts are shared)
# --------------------------------------------------------------------------------------------


async def page_errors(page) -> list[str]:
    """Texts of exception boxes and st.error alerts on the page."""
    found = []
    for selector in ERROR_SELECTORS:
        loc = page.locator(selector)
        for i in range(await loc.count()):
            try:
                found.append((await loc.nth(i).inner_text(timeout=2000)).strip()[:200])
            except Exception:  # noqa: BLE001 - the element went away between count and read
                continue
    return found


async def metric_value(page, label: str) -> str | None:
    """The value of the main area's ``st.metric`` with this label (None: no such metric now)."""
    metrics = page.locator(f"{MAIN} [data-testid='stMetric']")
    for i in range(await metrics.count()):
        try:
            text = await metrics.nth(i).inner_text(timeout=2000)
        except Exception:  # noqa: BLE001 - redrawn between count and read
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines and lines[0] == label:
            return lines[1] if len(lines) > 1 else ""
    return None


async def draw(page, box: dict, digit: int) -> None:
    """Draw ``digit``'s strokes with the mouse, scaled to the canvas' bounding box."""
    for stroke in DIGIT_STROKES[digit]:
        points = [(box["x"] + u * box["width"], box["y"] + v * box["height"]) for u, v in stroke]
        await page.mouse.move(*points[0])
        await page.mouse.down()
        for x, y in points[1:]:
            await page.mouse.move(x, y, steps=6)
        await page.mouse.up()


async def read_drawing(page, digit: int, timeout_s: float, settle_s: float = 2.0) -> tuple[str | None, float | None, str | None]:
    """After the last mouse-up: (digit shown, latency ms, error). The answer counts once the app is
    idle and shows the expected digit; a different digit still shown ``settle_s`` after the app
    went idle is a wrong answer."""
    start = time.perf_counter()
    idle_since = None
    got = None
    while time.perf_counter() - start < timeout_s:
        idle = await page.locator(IDLE).count() > 0
        got = await metric_value(page, PREDICTED)
        now = time.perf_counter()
        if idle and got == str(digit):
            return got, (now - start) * 1000.0, None
        if idle and got is not None:
            idle_since = idle_since or now
            if now - idle_since >= settle_s:
                return got, None, f"wrong digit: drew {digit}, page says {got}"
        else:
            idle_since = None
        await asyncio.sleep(0.05)
    return got, None, f"timeout: no answer for {digit} within {timeout_s:.0f} s (page shows {got!r})"


async def canvas_has_ink(page) -> bool | None:
    """Whether the drawing canvas shows strokes (None: no single drawing canvas on the page)."""
    layer = page.locator("canvas.lower-canvas:not(.dc-background-canvas)")
    if await layer.count() != 1:
        return None
    return await layer.evaluate(_CANVAS_INK_JS)


async def clear_canvas(page, timeout_s: float) -> None:
    """Press the page's Clear button (if there is anything to clear) and wait until the answer is
    gone, the app is idle and the canvas itself shows no ink."""
    if await metric_value(page, PREDICTED) is None and await canvas_has_ink(page) is False:
        return
    await page.locator(MAIN).get_by_role("button", name="Clear").click(timeout=timeout_s * 1000)
    deadline = time.perf_counter() + timeout_s
    answer_gone = False
    while time.perf_counter() < deadline:
        if not answer_gone:
            answer_gone = await metric_value(page, PREDICTED) is None and await page.locator(IDLE).count() > 0
        elif await canvas_has_ink(page) is False:
            return
        await asyncio.sleep(0.1)
    if answer_gone:
        raise TimeoutError(f"canvas not cleared: the answer went away but the strokes stayed for {timeout_s:.0f} s")
    raise TimeoutError(f"the answer was still shown {timeout_s:.0f} s after Clear")


async def open_page(context, url: str, path: str, ready: str, timeout_s: float):
    """A new page on ``url/path``, once the ``ready`` selector shows and the script run is over."""
    page = await context.new_page()
    await page.goto(f"{url}/{path}", timeout=timeout_s * 1000)
    await page.locator(ready).first.wait_for(timeout=timeout_s * 1000)
    await page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
    return page


async def shown_model(page) -> str | None:
    """The model the page says it uses (the Draw page's caption "Model: NAME · ...")."""
    found = re.search(r"Model: (\S+) ·", await page.locator(MAIN).inner_text())
    return found.group(1) if found else None


async def diagnose(page, shot: Path | None) -> str:
    """What the page shows right now (connection and script state, metrics, alerts, canvas ink)."""
    try:
        app = page.locator("[data-testid='stApp']")
        parts = {
            "connection": await app.get_attribute("data-test-connection-state", timeout=10_000),
            "script": await app.get_attribute("data-test-script-state", timeout=10_000),
            "metrics": await page.locator("[data-testid='stMetricValue']").all_inner_texts(),
            "alerts": [t[:80] for t in await page.locator(
                "[data-testid='stAlert'], [data-testid='stException']").all_inner_texts()],
            "canvas_ink": await asyncio.wait_for(canvas_has_ink(page), 10),
        }
        state = ", ".join(f"{k}={v!r}" for k, v in parts.items())
    except Exception as exc:  # noqa: BLE001 - a page too stuck to answer is itself the diagnosis
        state = f"page did not answer ({type(exc).__name__})"
    if shot is not None:
        try:
            shot.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.wait_for(page.screenshot(path=str(shot)), 30)
        except Exception:  # noqa: BLE001 - diagnostics only
            pass
    return state


async def session(browser, url: str, results: list[Request], *, model: str, page_timeout_s: float,
                  request_timeout_s: float, deadline: float, artifacts: Path | None = None,
                  start_delay_s: float = 0.0) -> list[Request]:
    """One visitor: wait ``start_delay_s``, open /Draw, then for each request clear, draw and read.
    A request that fails is recorded (with what the page showed) and the page is reloaded for the
    next one.

    ``results`` is filled in as requests are done, so a caller that cancels this session at its
    deadline keeps what was measured."""
    await asyncio.sleep(max(0.0, min(start_delay_s, deadline - time.perf_counter())))
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(request_timeout_s * 1000)
    page = None
    try:
        for req in results:
            if time.perf_counter() > deadline:
                req.error = "deadline: reached before this request"
                continue
            try:
                if page is None:
                    try:
                        page = await open_page(context, url, "Draw", "canvas.upper-canvas", page_timeout_s)
                    except Exception as exc:  # noqa: BLE001 - the page did not load: this request fails
                        req.error = f"page did not load: {_first_line(exc, 120)}"
                        continue
                if (name := await shown_model(page)) != model:
                    req.error = f"wrong model: the page uses {name!r}, not {model!r}"
                    continue
                await clear_canvas(page, request_timeout_s)
                canvas = page.locator("canvas.upper-canvas")
                await canvas.wait_for(timeout=request_timeout_s * 1000)
                await draw(page, await canvas.bounding_box(timeout=request_timeout_s * 1000), req.digit)
                req.got, req.latency_ms, req.error = await read_drawing(page, req.digit, request_timeout_s)
                errors = await page_errors(page)
                if errors and req.error is None:
                    req.error = f"error on the page: {errors[0]}"
            except Exception as exc:  # noqa: BLE001 - counted, never fatal to the run
                req.error = _first_line(exc)
            if req.error and page is not None:
                shot = artifacts / f"load-session{req.session}-request{req.index}.png" if artifacts else None
                req.error += f" [page: {await diagnose(page, shot)}]"
                await page.close()
                page = None  # a fresh page (a new script run of /Draw) for the next request
        return results
    finally:
        await context.close()


async def start_training(browser, url: str, *, hidden: str, epochs: int, timeout_s: float):
    """Start an MLP run through the Train page's form; returns (context, page, started by us).

    If a run is already going on (another visitor's), it is left alone and watched.
    """
    context = await browser.new_context(viewport=VIEWPORT)
    page = await open_page(context, url, "Train", "button:has-text('Start training')", timeout_s)
    if await page.get_by_text(TRAINING).count():
        return context, page, False
    await page.get_by_text("MLP (dense layers)").click()
    hidden_input = page.locator("input[aria-label='Hidden layers']")
    await hidden_input.wait_for(timeout=timeout_s * 1000)
    await page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
    await hidden_input.fill(hidden)
    await page.locator("input[aria-label='Epochs']").fill(str(epochs))
    await page.get_by_role("button", name="Start training").click()
    await page.get_by_text(TRAINING).wait_for(timeout=timeout_s * 1000)
    await page.get_by_role("button", name="Stop training").wait_for(timeout=timeout_s * 1000)
    return context, page, True


async def second_visitor_on_train(browser, url: str, timeout_s: float) -> dict:
    """What another visitor sees on /Train while a run goes on: whether the form still lets them
    start a run, the busy note, and whether they get a Stop button (they must not)."""
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await open_page(context, url, "Train", "button:has-text('Start training')", timeout_s)
        await page.get_by_text(TRAINING).wait_for(timeout=timeout_s * 1000)
        note = page.get_by_text(BUSY_NOTE)
        return {
            "start_enabled": await page.get_by_role("button", name="Start training").is_enabled(),
            "busy_answer": (await note.first.inner_text()).strip() if await note.count() else None,
            "can_stop": await page.get_by_role("button", name="Stop training").count() > 0,
        }
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        return {"start_enabled": None, "busy_answer": None, "can_stop": None, "error": _first_line(exc)}
    finally:
        await context.close()


async def training_status(page) -> str | None:
    """The Train page's progress line while a run is in progress, else None."""
    if not await page.get_by_text(TRAINING).count():
        return None
    progress = page.locator("[data-testid='stProgress']")
    try:
        return (await progress.first.inner_text(timeout=5000)).strip() if await progress.count() else "in progress"
    except Exception:  # noqa: BLE001 - the fragment redrew it
        return "in progress"


async def stop_training(page, timeout_s: float) -> bool:
    """Press Stop and wait for the stopped run's panel."""
    button = page.get_by_role("button", name="Stop training")
    if not await button.count():
        return False
    await button.click(timeout=timeout_s * 1000)
    await page.get_by_text("Last training run").wait_for(timeout=timeout_s * 1000)
    return await page.get_by_text("Training was stopped").count() > 0


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


async def _run(url: str, sessions: int, requests: int, *, model: str, train: bool, train_hidden: str,
               train_epochs: int, page_timeout_s: float, request_timeout_s: float, deadline_s: float, log,
               artifacts: Path | None, server_pid: int | None, ramp_s: float) -> dict:
    from playwright.async_api import async_playwright

    t0 = time.perf_counter()
    deadline = t0 + deadline_s
    figures: dict = {}
    batches = [[Request(i, r, digit_of(i, r)) for r in range(requests)] for i in range(sessions)]
    async with async_playwright() as p:
        browser = await launch_chromium(p)
        owner = None
        try:
            # Warm-up (not counted), before training starts: the server's first drawing loads
            # TensorFlow and the model (and fits the "not a digit" detector if none is saved).
            warm_start = time.perf_counter()
            for attempt in range(3):
                warm = [Request(-1, attempt, digit_of(0, attempt))]
                await session(browser, url, warm, model=model, page_timeout_s=page_timeout_s,
                              request_timeout_s=max(request_timeout_s, 180.0), deadline=deadline)
                log(f"warm-up drawing {attempt + 1}: {warm[0].got} after {time.perf_counter() - warm_start:.1f} s"
                    + (f" (error: {warm[0].error[:300]})" if warm[0].error else ""))
                if warm[0].error is None:
                    break
            figures["warmup_s"] = time.perf_counter() - warm_start

            if train:
                owner = await start_training(browser, url, hidden=train_hidden, epochs=train_epochs,
                                             timeout_s=page_timeout_s)
                figures["training_owner"] = owner[2]
                log(f"training {'started' if owner[2] else 'already running (not ours)'}: "
                    f"{await training_status(owner[1])}")
                second = await second_visitor_on_train(browser, url, page_timeout_s)
                figures["second_visitor"] = second
                log(f"a second visitor on /Train: {second}")
            status_before = await training_status(owner[1]) if owner else None

            load_start, cpu_start = time.perf_counter(), cpu_split(server_pid)
            tasks = [asyncio.create_task(session(browser, url, batch, model=model, page_timeout_s=page_timeout_s,
                                                 request_timeout_s=request_timeout_s, deadline=deadline,
                                                 artifacts=artifacts, start_delay_s=i * ramp_s))
                     for i, batch in enumerate(batches)]
            # Sessions stop starting requests at the deadline; one still busy a minute later is cut off.
            _, late = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.perf_counter()) + 60.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for req in (r for batch in batches for r in batch):
                if req.error is None and req.latency_ms is None:
                    req.error = "deadline: cut off while in progress" if late else "no outcome recorded"
            figures["load_s"] = time.perf_counter() - load_start
            cpu = {k: v - cpu_start[k] for k, v in cpu_split(server_pid).items()}
            cpu["other"] = cpu["machine"] - cpu["browser"] - cpu.get("server", 0.0)  # not this test's
            figures["load_cpu_s"] = cpu
            figures["sessions_cut_off"] = len(late)

            status_after = await training_status(owner[1]) if owner else None
            figures["training_before"], figures["training_after"] = status_before, status_after
            figures["training_running"] = bool(status_before and status_after)
            if owner and owner[2]:
                try:
                    figures["training_stopped"] = await stop_training(owner[1], page_timeout_s)
                except Exception as exc:  # noqa: BLE001 - reported, the server is stopped anyway
                    figures["training_stopped"] = False
                    log(f"could not stop the training run: {_first_line(exc)}")
        finally:
            if owner:
                await owner[0].close()
            await browser.close()
    figures["results"] = [r for batch in batches for r in batch]
    figures["elapsed_s"] = time.perf_counter() - t0
    return figures


def run_load_test(sessions: int = 20, requests: int = 5, *, url: str | None = None, model: str = MODEL,
                  train: bool = True, train_hidden: str = "1024,1024", train_epochs: int = 30,
                  page_timeout_s: float = 180.0, request_timeout_s: float = 90.0, deadline_s: float = 1200.0,
                  ramp_s: float = 2.0, artifacts: Path | None = None, server_pid: int | None = None,
                  log=say) -> dict:
    """Run the load test and return its figures (see the module docstring).

    Args:
        sessions: browser sessions drawing at once.
        requests: drawings per session.
        url: an already running server on this machine (its store must serve ``model``); None
            starts one on a free port on a temporary copy of the store, and stops it.
        model: the model every page must say it uses, and whose answers are expected.
        train: start a training run through the Train page first and stop it at the end.
        ramp_s: seconds between the starts of two sessions (session i opens /Draw at i * ramp_s):
            visitors do not all open the page in the same instant, and each browser page's one-off
            start-up (the app's JavaScript, Plotly's on the first chart) would otherwise land on
            the shared CPUs all at once.
        deadline_s: the whole run's time limit (from the browser's start); requests not started
            by then count as errors, and a session still busy a minute later is cut off.
        artifacts: a folder for screenshots of pages where a request failed (None: none taken).
        server_pid: the pid of the server at ``url`` when this process started it (pytest's
            fixture), so that its CPU time is told apart from the browser's.

    Returns:
        A dict with ``sessions``, ``requests``, ``errors``, ``p50_ms``, ``p95_ms``,
        ``training_running``, ``busy_answer``, ``load_cpu_s`` (CPU seconds spent during the load
        phase by the server, the browser, the whole machine and everything else on it) and details (``error_kinds``, ``details`` per request, ...).
    """
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium package.")
    if sessions < 1 or requests < 1:
        raise ValueError("sessions and requests must be at least 1.")
    server = tmp = None
    server_log = ""
    if url is None:
        tmp = Path(tempfile.mkdtemp(prefix="digits-load-"))
        env = {**app_env(ROOT / "models", tmp), "DIGITS_ACTIVE_MODEL": model}
        try:
            server = start_server(free_port(), env, log_path=tmp / "server.log", timeout=120)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        url, server_pid = server.url, server.pid
        log(f"server {url} (pid {server.pid}), store {env['DIGITS_MODELS_DIR']}")
    try:
        url = check_local(url)
        # On a thread of its own: its event loop never meets one the caller may hold (e.g. pytest's
        # sync Playwright fixtures).
        with ThreadPoolExecutor(1, thread_name_prefix="load-test") as pool:
            figures = pool.submit(asyncio.run, _run(
                url, sessions, requests, model=model, train=train, train_hidden=train_hidden,
                train_epochs=train_epochs, page_timeout_s=page_timeout_s, request_timeout_s=request_timeout_s,
                deadline_s=deadline_s, log=log, artifacts=artifacts, server_pid=server_pid,
                ramp_s=ramp_s)).result()
        if server is not None:
            figures["server_rss_mb"] = process_tree_rss_mb(server.pid)
    finally:
        if server is not None:
            server.stop()
            server_log = server.log()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    results: list[Request] = figures.pop("results")
    latencies = [r.latency_ms for r in results if r.error is None and r.latency_ms is not None]
    kinds: dict[str, int] = {}
    for r in results:
        if r.error:
            kind = r.error.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    second = figures.get("second_visitor") or {}
    return {
        "sessions": sessions,
        "ramp_s": ramp_s,
        "requests": len(results),
        "errors": sum(r.error is not None for r in results),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "training_running": figures.get("training_running", False),
        "busy_answer": second.get("busy_answer"),
        "second_visitor_can_start": second.get("start_enabled"),
        "second_visitor_can_stop": second.get("can_stop"),
        "training_stopped": figures.get("training_stopped"),
        "error_kinds": kinds,
        "max_ms": max(latencies) if latencies else None,
        "warmup_s": figures.get("warmup_s"),
        "load_s": figures.get("load_s"),
        "load_cpu_s": figures.get("load_cpu_s"),
        "elapsed_s": figures.get("elapsed_s"),
        "training_before": figures.get("training_before"),
        "training_after": figures.get("training_after"),
        "training_owner": figures.get("training_owner", False),
        "sessions_cut_off": figures.get("sessions_cut_off"),
        "server_rss_mb": figures.get("server_rss_mb"),
        "server_tracebacks": server_log.count("Traceback (most recent call last)") if server else None,
        "server_first_traceback": _first_traceback(server_log),
        "load_1min": load_1min(),
        "details": [asdict(r) for r in results],
    }


def _first_traceback(log: str, limit: int = 4000) -> str | None:
    """The first traceback in the server's log (with the line just before it), or None."""
    at = log.find("Traceback (most recent call last)")
    if at < 0:
        return None
    start = log.rfind("\n", 0, max(0, log.rfind("\n", 0, at))) + 1
    return log[start:at + limit]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--requests", type=int, default=5, help="drawings per session")
    p.add_argument("--url", help="an already running server on 127.0.0.1 (default: start one)")
    p.add_argument("--model", default=MODEL, help="the model the server's pages must use")
    p.add_argument("--no-train", action="store_true", help="do not start a training run")
    p.add_argument("--train-hidden", default="1024,1024", help="the MLP's hidden layers for the background run")
    p.add_argument("--train-epochs", type=int, default=30)
    p.add_argument("--request-timeout", type=float, default=90.0)
    p.add_argument("--ramp", type=float, default=2.0, help="seconds between two sessions' starts")
    p.add_argument("--deadline", type=float, default=1200.0, help="whole-run time limit, seconds")
    p.add_argument("--artifacts", type=Path, default=ROOT / "bench" / "results" / "load_test",
                   help="screenshots of pages where a request failed")
    args = p.parse_args(argv)

    say(f"load average {load_1min()} on {os.cpu_count()} CPUs; {args.sessions} sessions x {args.requests} drawings"
        + ("" if args.no_train else ", with a training run going on"))
    out = run_load_test(args.sessions, args.requests, url=args.url, model=args.model, train=not args.no_train,
                        train_hidden=args.train_hidden, train_epochs=args.train_epochs,
                        request_timeout_s=args.request_timeout, ramp_s=args.ramp, deadline_s=args.deadline,
                        artifacts=args.artifacts)
    details = out.pop("details")
    for s in sorted({d["session"] for d in details}):
        mine = [d for d in details if d["session"] == s]
        lat = [d["latency_ms"] for d in mine if d["latency_ms"] is not None]
        line = " ".join(f"{d['digit']}->{d['got'] or '-'}" for d in mine)
        say(f"session {s:2d}: {line}; median {percentile(lat, 50) or 0:.0f} ms; "
            f"{sum(d['error'] is not None for d in mine)} errors")
        for d in mine:
            if d["error"]:
                say(f"    request {d['index']}: {d['error']}")
    say(f"{out['requests']} requests, {out['errors']} errors {out['error_kinds']}; p50 {out['p50_ms'] or 0:.0f} ms, "
        f"p95 {out['p95_ms'] or 0:.0f} ms; training running throughout: {out['training_running']} "
        f"({out['training_before']} -> {out['training_after']}); a second visitor got: {out['busy_answer']!r}; "
        f"stopped: {out['training_stopped']}; server RSS {out['server_rss_mb'] or 0:.0f} MB")
    if out["load_cpu_s"]:
        say(f"CPU seconds during the {out['load_s']:.0f} s of load ({os.cpu_count()} CPUs: "
            f"{os.cpu_count() * out['load_s']:.0f} at most): "
            + ", ".join(f"{k} {v:.0f}" for k, v in out["load_cpu_s"].items()))
    if out["server_first_traceback"]:
        say("first traceback in the server log:\n" + out["server_first_traceback"])
    out.pop("server_first_traceback")
    emit_json(out)
    ok = out["errors"] == 0 and not out["server_tracebacks"]
    if not args.no_train:
        ok = ok and out["training_running"] and bool(out["busy_answer"]) and not out["second_visitor_can_start"] \
            and not out["second_visitor_can_stop"] and out["training_stopped"] is not False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
