"""The light and the dark theme in a real browser: a visitor whose system prefers one gets it, and the
charts, the drawing canvas and the 28x28 previews follow it.

Every page is opened in a light and in a dark colour scheme (Chromium's ``prefers-color-scheme``);
screenshots: tests/artifacts/theme-<page>-<scheme>.png (also tests/screenshots/ with
UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.browser.server import PREDICTED, draw_digit, metric_value, open_draw_page, wait_idle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
COLD_TIMEOUT_MS = 180_000
# .streamlit/config.toml: [theme.light] and [theme.dark] backgroundColor.
BACKGROUND = {"light": (255, 255, 255), "dark": (15, 23, 42)}
PAGES = ["", *(p.stem.split("_", 1)[1] for p in sorted((ROOT / "pages").glob("[0-9]*_*.py")))]

_RGB_JS = """(e) => (getComputedStyle(e).backgroundColor.match(/\\d+/g) || []).slice(0, 3).map(Number)"""
# The fill of the first axis tick label of the first Plotly chart on screen.
_TICK_FILL_JS = """() => {
  const t = [...document.querySelectorAll('.js-plotly-plot .xtick text, .js-plotly-plot .ytick text')]
    .find(e => e.getBoundingClientRect().width > 0);
  return t ? (getComputedStyle(t).fill.match(/\\d+/g) || []).slice(0, 3).map(Number) : null;
}"""


def pixel(locator, x: int = 3, y: int = 3) -> tuple[int, int, int]:
    """The colour on screen at (x, y) of an element (a screenshot of it: what the visitor sees)."""
    with Image.open(io.BytesIO(locator.screenshot())) as shot:
        return shot.convert("RGB").getpixel((x, y))


def luminance(rgb) -> float:
    r, g, b = (c / 255 for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_follows_the_visitors_theme(scheme, visitors, app_url, screenshot):
    page = visitors(scheme, color_scheme=scheme)
    for name in PAGES:
        page.goto(f"{app_url}/{name}", timeout=COLD_TIMEOUT_MS)
        page.locator('[data-testid="stMain"] h1').first.wait_for(timeout=COLD_TIMEOUT_MS)
        wait_idle(page, 800, COLD_TIMEOUT_MS)
        assert page.locator('[data-testid="stException"]').count() == 0, f"{name or 'Home'} shows a traceback"
        background = page.locator('[data-testid="stApp"]').evaluate(_RGB_JS)
        assert tuple(background) == BACKGROUND[scheme], (name, background)
        screenshot(page, f"theme-{(name or 'Home').lower()}-{scheme}")

    # Draw: the canvas is paper in the light theme and a blackboard in the dark one; a drawing reads the
    # same; the 28x28 preview and the chart's text follow the theme.
    open_draw_page(page, app_url, COLD_TIMEOUT_MS)
    draw_digit(page, 7, timeout_ms=COLD_TIMEOUT_MS)
    metric_value(page, PREDICTED).wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page, 800, COLD_TIMEOUT_MS)
    assert metric_value(page, PREDICTED).inner_text().strip() == "7"
    canvas_bg = pixel(page.locator("canvas.upper-canvas"))
    assert luminance(canvas_bg) > 0.9 if scheme == "light" else luminance(canvas_bg) < 0.1, canvas_bg
    corner = pixel(page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first)
    assert luminance(corner) > 0.9 if scheme == "light" else luminance(corner) < 0.1, corner
    tick = page.evaluate(_TICK_FILL_JS)
    assert tick is not None, "no chart on the Draw page"
    # Legible on the page: the chart's text stands out from the theme's background either way.
    assert abs(luminance(tick) - luminance(BACKGROUND[scheme])) > 0.3, (tick, BACKGROUND[scheme])
    screenshot(page, f"theme-draw-7-{scheme}")

    # Inside: the same drawing followed through every layer, on the theme's canvas.
    page.goto(f"{app_url}/Inside", timeout=COLD_TIMEOUT_MS)
    page.locator("canvas.upper-canvas").wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page, 800, COLD_TIMEOUT_MS)
    draw_digit(page, 7, timeout_ms=COLD_TIMEOUT_MS)
    page.get_by_role("heading", name="Layer by layer").wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page, 800, COLD_TIMEOUT_MS)
    assert metric_value(page, PREDICTED).inner_text().strip() == "7"
    assert page.locator('[data-testid="stMain"] [data-testid="stImage"]').count() >= 4  # input, filters, maps
    canvas_bg = pixel(page.locator("canvas.upper-canvas"))
    assert luminance(canvas_bg) > 0.9 if scheme == "light" else luminance(canvas_bg) < 0.1, canvas_bg
    screenshot(page, f"theme-inside-7-{scheme}")

