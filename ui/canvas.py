"""The drawing canvas: streamlit-drawable-canvas 0.13, served from the installed package, sending
each stroke after ``config.canvas_send_ms()`` instead of its fixed 200 ms."""

from __future__ import annotations

import functools
import logging
import re
import threading
from pathlib import Path

import streamlit as st

from core import config

_LOG = logging.getLogger(__name__)


_CANVAS_COMPONENT = "streamlit-drawable-canvas.streamlit_drawable_canvas"  # the package's own component
_FAST_CANVAS_COMPONENT = "digits.drawing_canvas"
# In the component's bundle the sender is built as ``h.sender = Nh((c) => Ic(h, c), Bc)``: its last
# argument names the delay constant, defined once as ``Bc = 200`` (names change with each build).
_SENDER_RE = re.compile(r"\.sender\s*=\s*[\w$]+\(\s*\(?\s*[\w$]+\s*\)?\s*=>\s*[\w$]+\([^()]*\)\s*,\s*([\w$]+)\s*\)")
# Loads the package's own bundle, served by Streamlit from the package, with its delay constant
# replaced, and hands every mount to it.
_CANVAS_LOADER_JS = """
const PATH = %(path)s, FALLBACK = %(url)s, FIND = %(find)s, REPLACE = %(replace)s;
let canvasModule = null, loading = null;
// Where the bundle is: first on the server's address as the app itself found it (its last health
// check: right behind a proxy too), then on the address the Python side computed.
const candidates = () => {
  const checks = performance.getEntriesByType("resource").map((e) => e.name)
    .filter((name) => /\\/_stcore\\/(health|host-config)(\\?|$)/.test(name));
  const last = checks[checks.length - 1];
  const urls = [new URL(FALLBACK, window.location.href).href];
  if (last) urls.unshift(last.slice(0, last.lastIndexOf("/_stcore/")) + PATH);
  return [...new Set(urls)];
};
const load = async () => {
  let problem = "no address";
  for (const url of candidates()) {
    try {
      const response = await fetch(url);
      if (!response.ok || !/javascript/.test(response.headers.get("content-type") || "")) {
        problem = `HTTP ${response.status} from ${url}`;
        continue;
      }
      const source = (await response.text()).replace(FIND, REPLACE);
      return (canvasModule = await import(URL.createObjectURL(new Blob([source], {type: "text/javascript"}))));
    } catch (error) {
      problem = String(error);
    }
  }
  throw new Error(`The drawing canvas could not be loaded (${problem}).`);
};
export default function (component) {
  if (canvasModule) return canvasModule.default(component);
  loading ??= load().catch((error) => { loading = null; throw error; });
  return loading.then((module) => module.default(component));
}
"""
_canvas_lock = threading.Lock()
_canvas_problem_logged = False


def canvas_send_patch(source: str, delay_ms: int) -> tuple[str, str]:
    """The edit of streamlit-drawable-canvas's JavaScript bundle that sets its delay after a stroke.

    Returns:
        ``(find, replace)``: the constant's definition as it appears (once) in ``source``, and the
        same definition with ``delay_ms``.

    Raises:
        ValueError: the bundle does not have the expected sender (another version of the component).
    """
    senders = _SENDER_RE.findall(source)
    if len(senders) != 1:
        raise ValueError(f"expected one debounced sender in the canvas bundle, found {len(senders)}")
    name = re.escape(senders[0])
    found = re.findall(rf"(?<![\w$.]){name}\s*=\s*\d+(?![\w$.])", source)
    if len(found) != 1 or source.count(found[0]) != 1:
        raise ValueError(f"expected one definition of the canvas's send delay {senders[0]!r}, found {len(found)}")
    return found[0], f"{senders[0]} = {int(delay_ms)}"


@functools.lru_cache(maxsize=4)
def _fast_canvas(delay_ms: int, base_url_path: str):
    """The canvas component, sending ``delay_ms`` after a stroke instead of the shipped 200 ms."""
    import json

    import streamlit_drawable_canvas

    build = Path(streamlit_drawable_canvas.__file__).resolve().parent / "frontend" / "build"
    scripts, styles = sorted(build.glob("index-*.js")), sorted(build.glob("index-*.css"))
    if len(scripts) != 1 or len(styles) != 1:
        raise ValueError(f"expected one script and one stylesheet in {build}")
    find, replace = canvas_send_patch(scripts[0].read_text(encoding="utf-8"), delay_ms)
    path = f"/_stcore/bidi-components/{_CANVAS_COMPONENT}/{scripts[0].name}"
    url = f"/{base_url_path}{path}" if base_url_path else path
    js = _CANVAS_LOADER_JS % {"path": json.dumps(path), "url": json.dumps(url), "find": json.dumps(find),
                              "replace": json.dumps(replace)}
    return st.components.v2.component(_FAST_CANVAS_COMPONENT, js=js, css=styles[0].read_text(encoding="utf-8"),
                                      html='<div class="canvas-root"></div>', isolate_styles=True)


def drawing_canvas(**kwargs):
    """streamlit-drawable-canvas's ``st_canvas(**kwargs)``, sending each stroke sooner.

    As shipped, the component (0.13) waits a fixed 200 ms after a stroke before it sends the
    drawing. Here the same component, served from the installed package, runs with
    ``config.canvas_send_ms()`` instead (``DIGITS_CANVAS_SEND_MS=shipped`` keeps 200). Another
    version of the component that cannot be patched runs unchanged, with a warning in the server log.

    Returns:
        What ``st_canvas`` returns (the drawing's image data and JSON), None before the first stroke.
    """
    global _canvas_problem_logged
    import streamlit_drawable_canvas

    with _canvas_lock:
        shipped = vars(streamlit_drawable_canvas).setdefault("_digits_shipped_out", streamlit_drawable_canvas.out)
        renderer, delay_ms = shipped, config.canvas_send_ms()
        if delay_ms is not None:
            base = str(st.get_option("server.baseUrlPath") or "").strip("/")
            try:
                renderer = _fast_canvas(delay_ms, base)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                if not _canvas_problem_logged:
                    _canvas_problem_logged = True
                    _LOG.warning("The drawing canvas keeps its own 200 ms delay after a stroke: %s", exc)
        streamlit_drawable_canvas.out = renderer
    return streamlit_drawable_canvas.st_canvas(**kwargs)


# At 280 px a digit drawn ~200 px tall is shrunk ~10x to MNIST's 20 px box: the 20 px marker becomes
# MNIST's 2-3 px stroke. The other pens draw as people's own pens do: a fine line, a soft grey pencil.
PENS = {"Marker": (20, 1.0), "Fine pen": (6, 1.0), "Pencil": (9, 0.6)}  # name -> (width px, share of full ink)


def canvas_colours(pen: str, light: bool) -> tuple[int, str, str]:
    """The canvas of the theme in use: paper (white, dark ink) in the light theme, a blackboard
    (black, light ink) in the dark one; the reader takes either.

    Args:
        pen: a key of `PENS`.
        light: the light theme is in use.

    Returns:
        (stroke width px, stroke colour, background colour), colours as ``#RRGGBB``.

    Raises:
        KeyError: an unknown pen.
    """
    width, ink = PENS[pen]
    level = round(255 * (1 - ink)) if light else round(255 * ink)
    return width, f"#{level:02X}{level:02X}{level:02X}", "#FFFFFF" if light else "#000000"
