"""Sharing and taking home, in a real browser: a share link fills the Train form; a model's exported
file, downloaded from Home, reads a digit in a fresh ONNX Runtime session as the app does; Compare
overlays the stored models' curves.

Screenshots: tests/artifacts/share-link.png, take-home.png, compare.png (also tests/screenshots/
with UPDATE_SCREENSHOTS=1). In the full suite, test_app.py's training test has left a second model in
the server's store by the time this file runs, so Compare shows two.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.browser.server import wait_idle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
COLD_TIMEOUT_MS = 180_000
LINK = {"arch": "mlp", "hidden": "64,32", "epochs": "7", "batch": "64", "seed": "42", "augment": "1"}

# Read MNIST test digits with the downloaded file alone: no code of this app, no TensorFlow.
READ_WITH_ONNX = """
import sys, numpy as np, onnxruntime as ort
x = np.load(sys.argv[2])
session = ort.InferenceSession(sys.argv[1])
print(" ".join(str(d) for d in session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)))
assert "tensorflow" not in sys.modules and "keras" not in sys.modules
"""


def main_area(page):
    return page.locator('[data-testid="stMain"]')


def test_a_share_link_fills_the_train_form(page, app_url, screenshot):
    query = "&".join(f"{k}={v}" for k, v in LINK.items())
    page.goto(f"{app_url}/Train?{query}", timeout=COLD_TIMEOUT_MS)
    page.get_by_role("button", name="Start training").wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page)
    assert page.get_by_role("radio", name="MLP (dense layers)").is_checked()
    assert page.get_by_role("textbox", name="Hidden layers").input_value() == "64,32"
    assert page.locator(".st-key-train_epochs input").input_value() == "7"
    assert page.locator('.st-key-train_batch_size input[type="range"]').get_attribute("aria-valuetext") == "64"
    shared = main_area(page).locator('[data-testid="stCode"]').filter(has_text="/Train?").inner_text()
    assert "owner" not in shared and "epochs=7" in shared and "hidden=64,32" in shared and "seed=42" in shared
    assert "owner=" in page.url and "epochs=7" in page.url  # the visitor's own address keeps both
    screenshot(page, "share-link")


def test_the_downloaded_inference_file_reads_digits_as_the_app_does(page, app_url, models_dir, screenshot,
                                                                    tmp_path):
    from core.data import cached_mnist
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    page.goto(app_url, timeout=COLD_TIMEOUT_MS)
    page.locator('[data-testid="stMain"] h1').first.wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page)
    details = main_area(page).locator('[data-testid="stExpander"]', has_text="default-cnn — details")
    details.get_by_text("default-cnn — details").click()
    button = details.get_by_role("button", name="Download default-cnn.onnx")
    button.wait_for(timeout=COLD_TIMEOUT_MS)
    details.get_by_text("pip install numpy pillow onnxruntime").wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0, "Home shows a traceback"
    assert details.get_by_role("tab").count() == 2  # the five-line program and the one for any picture
    screenshot(page, "take-home", element=button)
    with page.expect_download(timeout=COLD_TIMEOUT_MS) as download:
        button.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "default-cnn.onnx"

    mnist = cached_mnist()
    x = mnist.x_test[:200].astype(np.float32)[..., None] / 255
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", READ_WITH_ONNX, str(saved), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    downloaded = [int(d) for d in proc.stdout.split()]
    app = [p.digit for p in Predictor.load("default-cnn", ModelStore(models_dir)).predict_inputs(x[..., 0])]
    assert downloaded == app and np.mean(np.array(app) == mnist.y_test[:200]) > 0.98


def test_compare_overlays_the_stored_models(page, app_url, screenshot):
    page.goto(f"{app_url}/Compare", timeout=COLD_TIMEOUT_MS)
    main_area(page).get_by_role("heading", name="Compare models").wait_for(timeout=COLD_TIMEOUT_MS)
    main_area(page).locator(".js-plotly-plot").first.wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page)
    assert "default-cnn" in main_area(page).locator("table").first.inner_text()
    traces = page.evaluate("() => document.querySelector('.js-plotly-plot').data.length")
    assert traces >= 4, traces  # one model: loss and accuracy, training and validation
    screenshot(page, "compare")


def test_the_architecture_editor_shows_a_custom_stack_live(page, app_url, screenshot):
    page.goto(f"{app_url}/Train?arch=custom&layers=conv16k3s1,pool2,bn,dense64,drop0.2", timeout=COLD_TIMEOUT_MS)
    page.get_by_role("button", name="Start training").wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page)
    text = main_area(page).inner_text()
    for shape in ("(26, 26, 16)", "(13, 13, 16)", "(2704,)", "(64,)", "(10,)"):
        assert shape in text, f"no output shape {shape} in the editor"
    total = 16 * 9 + 16 + 4 * 16 + 2704 * 64 + 64 + 64 * 10 + 10
    assert f"{total:,}" in text, f"no total of {total:,} parameters"
    screenshot(page, "architecture-editor")
    # A stack that cannot work: a pooling that shrinks the image below one pixel is refused, with the layer.
    page.goto(f"{app_url}/Train?arch=custom&layers=pool7,pool7,dense8", timeout=COLD_TIMEOUT_MS)
    page.get_by_role("button", name="Start training").wait_for(timeout=COLD_TIMEOUT_MS)
    wait_idle(page)
    assert "Layer 2" in main_area(page).inner_text()
