"""The features around a prediction, end to end in Debian's Chromium against the real server.

- Draw, one digit: "Why this digit" heatmap (red/blue pixels, fetched from the page), no "not a digit"
  warning, and "Wrong? The right digit is ..." saving a correction, which the Corrections page then
  lists and deletes.
- Draw, "Several digits": "42" drawn with mouse strokes -> "Number read" 42 and the boxes image.
- Upload: a Fashion-MNIST ankle boot (or, without Debian's dataset-fashion-mnist, a drawn letter)
  is called "probably not a digit" while a real MNIST digit beside it is not; with "Several digits"
  on, a PNG of a 4-digit number made of MNIST test digits is read as that number.

Uses the session server of conftest.py (its private model store and app-data folder: corrections
saved here never reach the real ``data/app``). A screenshot per feature lands in tests/artifacts/.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path
from urllib.parse import urljoin

import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.server import (
    EMPTY_CANVAS_PROMPT,
    PREDICTED,
    canvas_has_ink,
    draw_digit,
    draw_stroke,
    metric_value,
    open_draw_page,
    wait_idle,
)

pytestmark = pytest.mark.browser

COLD_TIMEOUT_MS = 180_000  # the first test may pay for TensorFlow's import and the model's load
STEP_TIMEOUT_MS = 60_000
NOT_A_DIGIT = "probably not a digit"  # ui.views.NOT_A_DIGIT's words
WHY_CAPTION = "Why this digit"
FASHION_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")  # Debian's dataset-fashion-mnist
FASHION_BOOT = 0  # test image 0: an ankle boot
NUMBER_INDICES = (8, 9, 10, 11)  # MNIST test digits 5, 9, 0, 6 -> "5906"
SINGLE_INDEX = 0  # MNIST test digit 7

# "42" on the 360x280 "Several digits" canvas (relative coordinates): the 4 as an L and a stem
# crossing its bar, then the 2, with a clear gap between them.
STROKES_42 = [
    [(0.23, 0.18), (0.14, 0.59), (0.38, 0.59)],
    [(0.33, 0.25), (0.33, 0.86)],
    [(0.56, 0.34), (0.61, 0.23), (0.70, 0.19), (0.80, 0.25), (0.82, 0.39), (0.76, 0.55), (0.67, 0.70),
     (0.57, 0.84), (0.88, 0.84)],
]


# --- helpers ----------------------------------------------------------------------------------------

def main_area(page):
    return page.locator('[data-testid="stMain"]')


def alert_texts(scope, kind: str) -> list[str]:
    return scope.locator(f'[data-testid="stAlertContent{kind.capitalize()}"]').all_inner_texts()


def assert_no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, "the page shows a traceback"
    errors = alert_texts(main_area(page), "error")
    assert errors == [], f"the page shows an error: {errors}"


def not_a_digit_warnings(scope) -> list[str]:
    return [t for t in alert_texts(scope, "warning") if NOT_A_DIGIT in t]


def image_with_caption(scope, caption: str):
    """The <img> of the st.image whose caption contains ``caption``."""
    return scope.locator('[data-testid="stImage"]').filter(has_text=caption).locator("img")


def fetch_image(page, img) -> np.ndarray:
    """The pixels (RGB uint8) the server serves for an <img> on the page."""
    img.wait_for()
    src = img.get_attribute("src")
    assert src, "the image has no source"
    response = page.request.get(urljoin(page.url, src))
    assert response.ok, f"the image {src} cannot be fetched: {response.status}"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def colour_counts(pixels: np.ndarray) -> tuple[int, int]:
    """(reddish, bluish) pixels: the heatmap's two colours; grey ink and black have neither."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    return int(np.sum((r - np.maximum(g, b)) > 60)), int(np.sum((b - np.maximum(r, g)) > 60))


def select_option(page, key: str, option: str) -> None:
    """Pick ``option`` in the st.selectbox / st.multiselect with widget key ``key``: type it into the
    combo box (which filters the list to it) and choose it with the keyboard (a click on the
    option is flaky: the list can re-render under the mouse)."""
    box = page.locator(f'.st-key-{key} [role="combobox"]')
    box.click()
    box.press_sequentially(option)
    page.get_by_role("option", name=option, exact=True).wait_for()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    if page.get_by_role("listbox").count():  # a multiselect's list stays open (and hides the page from roles)
        page.keyboard.press("Escape")


def png(pixels: np.ndarray | Image.Image) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def on_paper(digit: np.ndarray, size: int) -> np.ndarray:
    """A 28x28 MNIST digit (white on black) as dark ink on light paper, ``size`` px square."""
    up = np.asarray(Image.fromarray(np.asarray(digit)).resize((size, size), Image.Resampling.BICUBIC))
    return (235 - up.astype(np.float32) * 235 / 255).astype(np.uint8)


def number_png(digits: list[np.ndarray], height: int = 90, gap: int = 24, margin: int = 40) -> bytes:
    """MNIST digits written left to right, dark on light paper, as a PNG."""
    rows = height + 2 * margin
    cols = len(digits) * height + (len(digits) - 1) * gap + 2 * margin
    sheet = np.full((rows, cols), 235, np.uint8)
    for i, digit in enumerate(digits):
        left = margin + i * (height + gap)
        sheet[margin:margin + height, left:left + height] = on_paper(digit, height)
    return png(sheet)


def not_a_digit_png() -> tuple[str, bytes]:
    """A Fashion-MNIST ankle boot (the detector never saw Fashion-MNIST), else a drawn "W"."""
    if FASHION_IMAGES.is_file():
        with gzip.open(FASHION_IMAGES, "rb") as fh:
            data = fh.read(16 + 28 * 28 * (FASHION_BOOT + 1))
        boot = np.frombuffer(data, np.uint8, 28 * 28, offset=16 + 28 * 28 * FASHION_BOOT).reshape(28, 28)
        return "ankle_boot.png", png(Image.fromarray(boot).resize((196, 196), Image.Resampling.BICUBIC))
    image = Image.new("L", (220, 220), 235)
    ImageDraw.Draw(image).line([(30, 40), (70, 180), (110, 80), (150, 180), (190, 40)], fill=20, width=14,
                               joint="curve")
    return "letter_w.png", png(image)


def card(page, name: str):
    """The result card of one uploaded file: the block around its bold name."""
    title = main_area(page).locator('[data-testid="stMarkdownContainer"] strong').filter(
        has_text=re.compile(rf"^{re.escape(name)}$"))
    return title.locator('xpath=ancestor::div[@data-testid="stVerticalBlock"][1]')


def card_metric(scope, label: str):
    return scope.locator('[data-testid="stMetric"]').filter(has_text=label).locator('[data-testid="stMetricValue"]')


def remove_uploaded_files(page) -> None:
    """Press the delete button of every file in the Upload page's uploader."""
    chips = page.locator('.st-key-upload_files [data-testid="stFileChip"]')
    for _ in range(20):
        n = chips.count()
        if n == 0:
            return
        chips.first.locator('[data-testid="stFileChipDeleteBtn"]').click()
        page.wait_for_function(
            """(n) => document.querySelectorAll('.st-key-upload_files [data-testid="stFileChip"]').length < n""",
            arg=n, timeout=STEP_TIMEOUT_MS)
    assert chips.count() == 0, "the uploaded files could not be removed"


def go_to(page, label: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=label).click()


# --- Draw: one digit, why, correction; Corrections: the correction listed and deleted ----------------

def test_draw_why_this_digit_and_a_correction_reviewed_on_corrections(page, app_url, screenshot):
    open_draw_page(page, app_url, timeout_ms=COLD_TIMEOUT_MS)
    draw_digit(page, 7, timeout_ms=COLD_TIMEOUT_MS)
    value = metric_value(page, PREDICTED)
    value.wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page)
    assert value.inner_text().strip() == "7", f"the drawn 7 was read as {value.inner_text()!r}"
    assert not_a_digit_warnings(main_area(page)) == [], "a drawn 7 must not be called 'not a digit'"

    # Why this digit: a heatmap in red (for) and blue (against) beside the plain grey 28x28 view.
    why = image_with_caption(main_area(page), WHY_CAPTION)
    assert why.count() == 1, "no 'Why this digit' heatmap beside the prediction"
    assert why.evaluate("img => img.complete && img.naturalWidth > 0"), "the heatmap image did not load"
    red, _blue = colour_counts(fetch_image(page, why))
    assert red >= 20, f"the heatmap shows no red evidence for the 7 ({red} red pixels)"
    seen_red, seen_blue = colour_counts(fetch_image(page, image_with_caption(main_area(page), "What the model sees")))
    assert seen_red == seen_blue == 0, "the 28x28 view should be grey, only the heatmap coloured"
    assert main_area(page).get_by_text(re.compile(r"red marks the ink that pushed the model towards 7")).count() == 1
    assert_no_exception(page)
    screenshot(page, "feature-why")

    # Wrong? The right digit is 1 -> Save correction.
    save = page.locator(".st-key-draw_correct_save button")
    assert "Save correction" in save.inner_text()
    assert save.is_disabled(), "Save correction should wait for a digit to be picked"
    # A rerun that redraws the picker while its list is open can swallow the choice (about one time
    # in three on a busy 2-core machine): once the page is idle, pick again until the button is enabled.
    for attempt in range(5):
        wait_idle(page, 500)
        select_option(page, "draw_correct_label", "1")
        try:
            page.wait_for_function(
                """() => { const b = document.querySelector('.st-key-draw_correct_save button'); return b && !b.disabled; }""",
                timeout=STEP_TIMEOUT_MS // 4)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    else:
        pytest.fail("picking 1 never enabled Save correction")
    save.click()
    saved = main_area(page).locator('[data-testid="stAlertContentSuccess"]', has_text="Saved correction")
    saved.wait_for(timeout=STEP_TIMEOUT_MS)
    match = re.search(r"Saved correction #(\d+): this is a 1\.", saved.inner_text())
    assert match, f"unexpected confirmation: {saved.inner_text()!r}"
    correction_id = int(match[1])
    wait_idle(page)
    screenshot(page, "feature-correction-saved")

    # The Corrections page lists it, with what the model had read, and deletes it.
    go_to(page, "Corrections")
    main_area(page).get_by_role("heading", name="Corrections", exact=True).wait_for(timeout=COLD_TIMEOUT_MS)
    count = metric_value(page, "Corrections")
    count.wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page)
    n_before = int(count.inner_text().replace(",", ""))
    assert n_before >= 1, f"the Corrections page counts {n_before} corrections"
    caption = f"#{correction_id}: 1 (read 7)"
    assert main_area(page).locator('[data-testid="stImage"]').filter(has_text=caption).count() == 1, \
        f"no review tile {caption!r} on the Corrections page"
    assert page.locator(".st-key-train_finetune button:visible").is_enabled(), "Fine-tune should be offered with a correction"
    assert_no_exception(page)
    screenshot(page, "feature-corrections")

    select_option(page, "train_corrections_selected", caption)
    delete = page.locator(".st-key-train_corrections_delete button")
    page.wait_for_function(
        """() => { const b = document.querySelector('.st-key-train_corrections_delete button'); return b && !b.disabled; }""",
        timeout=STEP_TIMEOUT_MS)
    assert "Delete selected" in delete.inner_text()
    delete.click()
    main_area(page).locator('[data-testid="stAlertContentSuccess"]', has_text="Deleted 1 correction.").wait_for(
        timeout=STEP_TIMEOUT_MS)
    wait_idle(page)
    assert main_area(page).locator('[data-testid="stImage"]').filter(has_text=caption).count() == 0, \
        f"{caption!r} is still listed after Delete"
    if n_before == 1:
        main_area(page).get_by_text("No corrections yet.").wait_for(timeout=STEP_TIMEOUT_MS)
        assert page.locator(".st-key-train_finetune button:visible").is_disabled(), "nothing left to fine-tune on"
    else:
        assert int(metric_value(page, "Corrections").inner_text().replace(",", "")) == n_before - 1
    assert_no_exception(page)
    screenshot(page, "feature-corrections-deleted")


# --- Draw: several digits --------------------------------------------------------------------------

def test_draw_several_digits_reads_42(page, app_url, screenshot):
    open_draw_page(page, app_url, timeout_ms=COLD_TIMEOUT_MS)
    main_area(page).locator(".st-key-draw_multi").get_by_text("Several digits").click()
    main_area(page).locator('[data-testid="stAlert"]', has_text="Draw some digits side by side").wait_for(
        timeout=STEP_TIMEOUT_MS)
    canvas = page.locator("canvas.upper-canvas")  # in the component's shadow root: a locator, not querySelector
    for _ in range(100):  # the canvas widens for a number (360 px instead of 280)
        box = canvas.bounding_box()
        if box and box["width"] >= 350:
            break
        page.wait_for_timeout(200)
    assert box and box["width"] >= 350, f"the canvas did not widen for several digits: {box}"
    wait_idle(page)
    assert main_area(page).get_by_text(EMPTY_CANVAS_PROMPT).count() == 0

    for stroke in STROKES_42:
        draw_stroke(page, stroke, timeout_ms=COLD_TIMEOUT_MS)
    assert canvas_has_ink(page), "the strokes of 42 did not land on the canvas"
    number = metric_value(page, "Number read")
    number.wait_for(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)
    assert number.inner_text().strip() == "42", f"'42' drawn, the page read {number.inner_text()!r}"
    boxes = image_with_caption(main_area(page), "The digits found, boxed")
    assert boxes.count() == 1, "no image of the digits found, boxed"
    assert boxes.evaluate("img => img.complete && img.naturalWidth > 0"), "the boxes image did not load"
    assert main_area(page).get_by_text("1. why 4").count() == 1 and main_area(page).get_by_text("2. why 2").count() == 1, \
        "no per-digit 'why' tiles"
    assert not_a_digit_warnings(main_area(page)) == [], "a drawn 42 must not be called 'not a digit'"
    assert metric_value(page, PREDICTED).count() == 0, "several digits show 'Number read', not one digit"
    assert_no_exception(page)
    screenshot(page, "feature-draw-42")


# --- Upload: not a digit, and a number -------------------------------------------------------------

def test_upload_not_a_digit_and_a_four_digit_number(page, app_url, screenshot):
    from core.data import cached_mnist

    mnist = cached_mnist()
    odd_name, odd_png = not_a_digit_png()
    digit_name = "seven.png"
    files = [
        {"name": odd_name, "mimeType": "image/png", "buffer": odd_png},
        {"name": digit_name, "mimeType": "image/png", "buffer": png(on_paper(mnist.x_test[SINGLE_INDEX], 200))},
    ]
    seven = str(int(mnist.y_test[SINGLE_INDEX]))

    page.goto(f"{app_url}/Upload")
    uploader = page.locator('.st-key-upload_files input[type="file"]')
    uploader.wait_for(state="attached", timeout=COLD_TIMEOUT_MS)
    wait_idle(page)
    uploader.set_input_files(files)
    main_area(page).get_by_text("2 of 2 images read").wait_for(timeout=COLD_TIMEOUT_MS)
    card_metric(card(page, digit_name), PREDICTED).wait_for(timeout=STEP_TIMEOUT_MS)
    card_metric(card(page, odd_name), PREDICTED).wait_for(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)

    odd_warnings = not_a_digit_warnings(card(page, odd_name))
    assert len(odd_warnings) == 1, f"{odd_name} should be called 'probably not a digit': " \
                                   f"{alert_texts(card(page, odd_name), 'warning')}"
    assert card_metric(card(page, digit_name), PREDICTED).inner_text().strip() == seven
    assert not_a_digit_warnings(card(page, digit_name)) == [], "a real MNIST digit got the 'not a digit' warning"
    assert len(not_a_digit_warnings(main_area(page))) == 1, "exactly one image should be flagged"
    assert_no_exception(page)
    screenshot(page, "feature-not-a-digit")

    # Several digits on, one PNG of a 4-digit number.
    expected = "".join(str(int(mnist.y_test[i])) for i in NUMBER_INDICES)
    remove_uploaded_files(page)  # the uploader adds to its files: take the first two away
    main_area(page).get_by_text("Upload one or more images").wait_for(timeout=STEP_TIMEOUT_MS)
    main_area(page).locator(".st-key-upload_multi").get_by_text("Several digits").click()
    wait_idle(page)
    uploader.set_input_files([{"name": "number.png", "mimeType": "image/png",
                               "buffer": number_png([mnist.x_test[i] for i in NUMBER_INDICES])}])
    card(page, "number.png").wait_for(timeout=STEP_TIMEOUT_MS)
    number = card_metric(card(page, "number.png"), "Number read")
    number.wait_for(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)
    assert number.inner_text().strip() == expected, f"number.png ({expected}) read as {number.inner_text()!r}"
    boxes = image_with_caption(card(page, "number.png"), "The digits found, boxed")
    assert boxes.count() == 1 and boxes.evaluate("img => img.complete && img.naturalWidth > 0"), "no boxes image"
    assert not_a_digit_warnings(main_area(page)) == [], "a number of real MNIST digits got the 'not a digit' warning"
    assert main_area(page).get_by_text(odd_name).count() == 0, f"{odd_name} should be gone from the results"
    assert main_area(page).locator('[data-testid="stMetric"]').filter(has_text=PREDICTED).count() == 0
    assert_no_exception(page)
    screenshot(page, "feature-upload-number")
