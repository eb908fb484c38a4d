"""A phone (Pixel 7: 412x915 CSS pixels, touch) in a real browser: a digit drawn with a finger on the
Draw page is read, and the predicted digit and its confidence are on screen without scrolling.

The finger is Chromium's own touch input (DevTools protocol ``Input.dispatchTouchEvent``), not mouse
events. Screenshot: tests/artifacts/phone-draw.png (also tests/screenshots/ with UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import pytest

from tests.browser.server import DIGIT_STROKES, PREDICTED, metric_value, open_draw_page, wait_idle

pytestmark = pytest.mark.browser

PIXEL_7 = {"width": 412, "height": 915}
COLD_TIMEOUT_MS = 180_000
STEPS = 6  # touch moves per segment of a stroke
_SCROLLED_JS = """() => Math.max(window.scrollY, ...['stMain', 'stAppViewContainer', 'stMainBlockContainer']
  .map(t => { const e = document.querySelector(`[data-testid="${t}"]`); return e ? e.scrollTop : 0; }))"""


def touch_digit(page, cdp, digit: int) -> None:
    """Draw ``digit`` (DIGIT_STROKES) on the canvas with one finger, stroke by stroke."""
    box = page.locator("canvas.upper-canvas").bounding_box()
    for stroke in DIGIT_STROKES[digit]:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": points[0][0], "y": points[0][1]}]})
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            for k in range(1, STEPS + 1):
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [
                    {"x": x0 + (x1 - x0) * k / STEPS, "y": y0 + (y1 - y0) * k / STEPS}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_a_finger_drawn_digit_is_read_and_the_answer_shows_without_scrolling(visitors, app_url, screenshot):
    page = visitors("phone", viewport=PIXEL_7, has_touch=True, is_mobile=True, device_scale_factor=2)
    open_draw_page(page, app_url, COLD_TIMEOUT_MS)
    touch_digit(page, page.context.new_cdp_session(page), 7)
    metric_value(page, PREDICTED).wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page, 800, COLD_TIMEOUT_MS)
    assert metric_value(page, PREDICTED).inner_text().strip() == "7"
    assert page.evaluate(_SCROLLED_JS) == 0, "the page scrolled"
    for label in (PREDICTED, "Confidence"):
        box = metric_value(page, label).bounding_box()
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= PIXEL_7["height"], (label, box)
    assert metric_value(page, "Confidence").inner_text().strip().endswith("%")
    screenshot(page, "phone-draw")


_WIDTHS_JS = """() => { const table = document.querySelector('[data-testid="stMain"] table');
  const box = table && table.closest('div[style*="overflow-x"]');
  const main = document.querySelector('[data-testid="stMain"]');
  return box ? [table.offsetWidth, box.clientWidth, box.scrollWidth, main.scrollWidth] : null; }"""


def test_a_wide_table_scrolls_in_its_own_box_and_the_page_stays_on_screen(visitors, app_url):
    # Home's table of models is wider than a phone: it scrolls sideways in its box (ui.messages.show_table);
    # the page itself does not, so nothing else is pushed off the screen.
    page = visitors("phone-home", viewport=PIXEL_7, has_touch=True, is_mobile=True)
    page.goto(app_url)
    page.locator('[data-testid="stMain"] table').first.wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page, 800, COLD_TIMEOUT_MS)
    widths = page.evaluate(_WIDTHS_JS)
    assert widths is not None, "the table is not in a scrolling box"
    table, box, scroll, main = widths
    assert table > box and scroll > box, widths  # wider than the phone: the box scrolls
    assert box <= PIXEL_7["width"] and main <= PIXEL_7["width"], widths  # without the box, the main area grows as wide as the table
