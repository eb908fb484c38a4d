"""Take a model home (issue 19, part 5): Home offers each stored model as ``NAME.keras`` and as its
exported ``NAME.onnx`` (checked against its checksum, never an altered file), with a short program
that reads a digit with the ``.onnx`` file alone. The file and that program, as the page shows
them, run in fresh interpreters without TensorFlow and answer what the app answers."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import TEST_MODEL
from tests.test_pages import download_data, mnist_test_digit
from tests.helpers_images import render_strokes

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # AppTest's default is 3 s; a busy machine takes longer
ONNX_LABEL = f"Download {TEST_MODEL}.onnx"
SNIPPET_LABELS = (0, 2, 4, 7, 9)  # the first MNIST test digit of each: the snippet reads their PNGs
BLOCK_TF = "import sys; sys.modules.update(tensorflow=None, keras=None)\n"  # any import of them fails


# --- helpers -------------------------------------------------------------------------------------

def home(models_dir: Path, monkeypatch) -> AppTest:
    """A fresh session of Home over the model store ``models_dir``, run once."""
    from core import config

    monkeypatch.setenv(config.MODELS_DIR_ENV, str(models_dir))
    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def buttons(at: AppTest) -> dict:
    """The download buttons of ``at`` by label."""
    return {b.proto.label: b for b in at.get("download_button")}


def flip_a_byte(path: Path) -> None:
    """Alter a file in place: same size, one byte flipped (so its checksum no longer matches)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def dark_on_white_png(digit: np.ndarray, size: int = 200) -> bytes:
    """An MNIST digit re-drawn as dark ink (25) on white paper (250), ``size`` x ``size`` pixels."""
    height = int(size * 0.75)
    top = (size - height) // 2
    coverage = render_strokes(digit, height)
    paper = np.full((size, size), 250.0, np.float32)
    window = paper[top:top + height, top:top + height]
    window[...] = window * (1 - coverage) + 25.0 * coverage
    return png(np.clip(np.rint(paper), 0, 255).astype(np.uint8))


def white_on_black_png(digit: np.ndarray, size: int = 280) -> bytes:
    """An MNIST digit drawn white on black, as on the app's drawing canvas, ``size`` x ``size``."""
    height = int(size * 0.75)
    top = (size - height) // 2
    canvas = np.zeros((size, size), np.float32)
    canvas[top:top + height, top:top + height] = render_strokes(digit, height) * 255
    return png(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))


def plain_env() -> dict:
    """The environment for a fresh interpreter that cannot import this app's code."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def home_page(trained_store) -> dict:
    """What Home offers for ``test-mlp``: the labels of its download buttons, the bytes its
    ``.onnx`` button sends, and its code blocks (value, language)."""
    with pytest.MonkeyPatch.context() as mp:
        read = download_data(mp)
        at = home(trained_store, mp)
        offered = buttons(at)
        data = read(offered[ONNX_LABEL]) if ONNX_LABEL in offered else None
        return {"labels": sorted(offered), "onnx": data,
                "code": [(c.value, c.proto.language) for c in at.code],
                "captions": [c.value for c in at.caption],
                "warnings": [w.value for w in at.warning]}


def app_digits(store_root: Path, images: list) -> list[int]:
    """The digits the app reads (``Predictor.read``, as Draw and Upload do) in ``images``."""
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    predictor = Predictor.load(TEST_MODEL, ModelStore(store_root))
    return [predictor.read(image).digit for image in images]


# --- what Home offers ----------------------------------------------------------------------------

def test_home_offers_the_stored_onnx_file_and_the_snippet(home_page, trained_store):
    from core.serving.snippet import onnx_snippet
    from core.storage.store import ModelStore

    assert {ONNX_LABEL, f"Download {TEST_MODEL}.keras"} <= set(home_page["labels"]), home_page["labels"]
    _, files = ModelStore(trained_store).verify(TEST_MODEL)
    assert home_page["onnx"] == files["onnx"].read_bytes()
    assert (onnx_snippet(f"{TEST_MODEL}.onnx"), "python") in home_page["code"]
    assert any("app's own reading does more" in c for c in home_page["captions"]), home_page["captions"]
    assert not [w for w in home_page["warnings"] if "not offered" in w]


def test_a_model_with_an_altered_onnx_file_is_not_offered(trained_store, tmp_path, monkeypatch):
    # "broken" is test-mlp with one byte of broken.onnx flipped: listing already skips it, with a
    # warning; the good models keep their downloads.
    root = tmp_path / "models"
    shutil.copytree(trained_store, root)
    for suffix in (".keras", ".onnx", ".novelty.npz", ".json"):
        shutil.copyfile(root / f"{TEST_MODEL}{suffix}", root / f"broken{suffix}")
    flip_a_byte(root / "broken.onnx")
    at = home(root, monkeypatch)
    labels = set(buttons(at))
    assert ONNX_LABEL in labels and "Download broken.onnx" not in labels, labels
    assert [w.value for w in at.warning if "broken.onnx does not match the checksum" in w.value]


def offer_downloads(entry, root):
    """An AppTest script: the downloads of ``entry`` over the store at ``root``."""
    from core.storage.store import ModelStore
    from ui.downloads import model_downloads

    model_downloads(entry, ModelStore(root))


def test_an_onnx_file_altered_after_listing_gets_a_message_not_a_download(trained_store, tmp_path):
    # The file changes between the store's listing and the drawing of the details (another
    # process): the details say why instead of offering it.
    from core.storage.store import ModelStore

    root = tmp_path / "models"
    shutil.copytree(trained_store, root)
    entry = ModelStore(root).list().get(TEST_MODEL)
    flip_a_byte(root / f"{TEST_MODEL}.onnx")
    at = AppTest.from_function(offer_downloads, args=(entry, root), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    assert ONNX_LABEL not in buttons(at) and not at.code
    (warning,) = [w.value for w in at.warning]
    assert f"{TEST_MODEL}.onnx does not match the checksum" in warning and "not offered" in warning, warning


def test_an_onnx_file_altered_after_the_page_was_drawn_is_not_sent(trained_store, tmp_path, monkeypatch):
    from streamlit.runtime.media_file_storage import MediaFileStorageError

    root = tmp_path / "models"
    shutil.copytree(trained_store, root)
    read = download_data(monkeypatch)
    button = buttons(home(root, monkeypatch))[ONNX_LABEL]
    original = (root / f"{TEST_MODEL}.onnx").read_bytes()
    assert read(button) == original  # the click sends the file...
    flip_a_byte(root / f"{TEST_MODEL}.onnx")
    with pytest.raises(MediaFileStorageError, match="does not match the checksum"):
        read(button)  # ...but not once it was altered


# --- the downloaded file and the snippet, without TensorFlow ---------------------------------------

def test_the_downloaded_file_reads_like_the_app_without_tensorflow(home_page, trained_store, tmp_path):
    from core.reading.preprocess import to_mnist
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore

    digits = [mnist_test_digit(label) for label in range(10)]
    inputs = np.stack([to_mnist(d) for d in digits])[..., None]  # what the app feeds its model
    np.save(tmp_path / "inputs.npy", inputs)
    (tmp_path / "downloaded.onnx").write_bytes(home_page["onnx"])
    code = BLOCK_TF + (
        "import json, numpy as np, onnxruntime as ort\n"
        "session = ort.InferenceSession('downloaded.onnx', providers=['CPUExecutionProvider'])\n"
        "p = session.run(None, {session.get_inputs()[0].name: np.load('inputs.npy')})[0]\n"
        "heavy = [m for m in ('tensorflow', 'keras') if sys.modules.get(m)]\n"
        "print(json.dumps({'probabilities': p.tolist(), 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=plain_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["heavy"] == []
    probabilities = np.asarray(out["probabilities"], np.float32)
    app = app_digits(trained_store, digits)
    assert len(set(app)) >= 5, app  # a model that answers one digit for all would prove nothing
    assert [int(d) for d in probabilities.argmax(axis=1)] == app
    # The file's raw probabilities are the served model's, before calibration.
    served = Predictor.load(TEST_MODEL, ModelStore(trained_store)).probabilities(inputs)
    np.testing.assert_allclose(probabilities, served, atol=1e-6)


def test_the_snippet_shown_reads_a_png_like_the_app(home_page, trained_store, tmp_path):
    (snippet,) = [code for code, _ in home_page["code"]
                  if f"InferenceSession('{TEST_MODEL}.onnx')" in code and "np.median" in code]
    cases = {f"dark-on-white-{label}": dark_on_white_png(mnist_test_digit(label)) for label in SNIPPET_LABELS}
    cases["white-on-black-3"] = white_on_black_png(mnist_test_digit(3))
    printed = {}
    for case, image in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        (folder / "digit.png").write_bytes(image)
        (folder / f"{TEST_MODEL}.onnx").write_bytes(home_page["onnx"])
        (folder / "snippet.py").write_text(snippet, encoding="utf-8")  # as shown, to the byte
        run_snippet = BLOCK_TF + "import runpy; runpy.run_path('snippet.py', run_name='__main__')"
        proc = subprocess.run([sys.executable, "-c", run_snippet], cwd=folder, env=plain_env(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, (case, proc.stderr[-3000:])
        printed[case] = proc.stdout.strip()
    expected = app_digits(trained_store, list(cases.values()))
    assert printed == {case: str(digit) for case, digit in zip(cases, expected)}
    assert len(set(printed.values())) >= 4, printed


def test_the_five_line_snippet_reads_mnist_style_pngs_like_the_served_model(home_page, trained_store, tmp_path):
    from core.serving.predict import Predictor
    from core.serving.snippet import onnx_snippet_mnist
    from core.storage.store import ModelStore

    snippet = onnx_snippet_mnist(f"{TEST_MODEL}.onnx")
    assert (snippet, "python") in home_page["code"] and len(snippet.splitlines()) == 5
    digits = [mnist_test_digit(label) for label in range(10)]
    printed = []
    for label, digit in enumerate(digits):
        folder = tmp_path / str(label)
        folder.mkdir()
        (folder / "digit.png").write_bytes(png(digit))  # MNIST as it is: 28x28, white on black
        (folder / f"{TEST_MODEL}.onnx").write_bytes(home_page["onnx"])
        (folder / "snippet.py").write_text(snippet, encoding="utf-8")
        run_snippet = BLOCK_TF + "import runpy; runpy.run_path('snippet.py', run_name='__main__')"
        proc = subprocess.run([sys.executable, "-c", run_snippet], cwd=folder, env=plain_env(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, (label, proc.stderr[-3000:])
        printed.append(int(proc.stdout.strip()))
    x = np.stack(digits).astype(np.float32)[..., None] / 255
    served = Predictor.load(TEST_MODEL, ModelStore(trained_store)).probabilities(x).argmax(axis=1)
    assert printed == served.tolist() and sum(p == label for label, p in enumerate(printed)) >= 9, printed

