"""Page tests with Streamlit's AppTest: a smoke test over every page, then behaviour by widget key."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.helpers_images import as_canvas, render_strokes

NOT_A_DIGIT = "probably not a digit"

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "Home.py", *sorted((ROOT / "pages").glob("*.py"))]
TIMEOUT = 60  # AppTest's default is 3 s; a training run (TensorFlow) and a busy machine take longer
TITLES = {
    "Home.py": "Handwritten digit recognizer",
    "1_Train.py": "Train a model",
    "2_Draw.py": "Draw a digit",
    "3_Upload.py": "Read digits in images",
}


# --- helpers -------------------------------------------------------------------------------------

def app(page: str = "Home.py") -> AppTest:
    """A fresh session that has opened ``page`` the way a visitor does: Home first, then the page
    (page links resolve against the entrypoint, as in the running app)."""
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT).run()
    if page != "Home.py":
        at.switch_page(page)
    return at


def mnist_test_digit(label: int, nth: int = 0) -> np.ndarray:
    """The ``nth`` MNIST test image of ``label``: uint8 (28, 28), white ink on black."""
    from core.data import cached_mnist

    mnist = cached_mnist()
    return mnist.x_test[np.flatnonzero(mnist.y_test == label)[nth]]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def ink_on_paper_png(digit: np.ndarray, size: int = 200) -> bytes:
    """A real MNIST digit re-drawn as dark ink on white paper, ``size`` x ``size`` pixels."""
    height = int(size * 0.75)
    coverage = render_strokes(digit, height)
    paper = np.full((size, size), 250.0, np.float32)
    top = (size - height) // 2
    window = paper[top:top + height, top:top + height]
    window[...] = window * (1 - coverage) + 25.0 * coverage
    return png_bytes(np.clip(np.rint(paper), 0, 255).astype(np.uint8))


def number_on_paper_png(labels: list[int], height: int = 120) -> bytes:
    """Real MNIST test digits (the first of each label) pasted left to right as dark ink on white paper,
    each ``height`` pixels tall: "2026" written on a sheet."""
    gap = height // 6
    paper = np.full((height + 2 * gap, len(labels) * height + 2 * gap), 250.0, np.float32)
    for i, label in enumerate(labels):
        coverage = render_strokes(mnist_test_digit(label), height)
        window = paper[gap:gap + height, gap + i * height:gap + (i + 1) * height]
        window[...] = window * (1 - coverage) + 25.0 * coverage
    return png_bytes(np.clip(np.rint(paper), 0, 255).astype(np.uint8))


def number_on_canvas(labels: list[int], width: int = 360, height: int = 280) -> np.ndarray:
    """MNIST test digits drawn side by side on the black drawing canvas: uint8 (height, width, 4) RGBA."""
    full = np.zeros((height, width), np.float32)
    step = width // len(labels)
    size = min(int(height * 0.75), step + 20)
    for i, label in enumerate(labels):
        left = max(0, min(width - size, i * step + (step - size) // 2))
        top = (height - size) // 2
        window = full[top:top + size, left:left + size]
        window[...] = np.maximum(window, render_strokes(mnist_test_digit(label), size))
    ink = np.clip(np.rint(full * 255), 0, 255).astype(np.uint8)
    canvas = np.zeros((height, width, 4), np.uint8)
    canvas[..., :3] = ink[..., None]
    canvas[..., 3] = 255
    return canvas


def letter_png(text: str = "A", size: int = 200) -> bytes:
    """A capital letter rendered with Pillow's font, dark on white: not a digit."""
    from PIL import ImageDraw, ImageFont

    image = Image.new("L", (size, size), 250)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(size * 0.7))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text(((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top), text, fill=20, font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def filled_rectangle_canvas(size: int = 280) -> np.ndarray:
    """A solid white block on the black canvas (a scribbled-over area): not a digit."""
    canvas = np.zeros((size, size, 4), np.uint8)
    canvas[..., 3] = 255
    canvas[60:220, 50:230, :3] = 255
    return canvas


def canvas_state(rgba: np.ndarray) -> dict:
    """What streamlit-drawable-canvas 0.13 keeps in ``st.session_state["draw_canvas"]`` after a stroke.

    The component (Components v2) stores ``{"drawing": {"raw": <Fabric.js JSON>, "data": <PNG data URL>},
    "backgroundFit": None}``; ``st_canvas`` decodes "data" into ``image_data``. This is the one place
    the tests depend on that internal shape.
    """
    url = "data:image/png;base64," + base64.b64encode(png_bytes(rgba)).decode("ascii")
    raw = {"version": "6", "objects": [{"type": "Path", "stroke": "#FFFFFF", "strokeWidth": 20}],
           "background": "#000000"}
    return {"drawing": {"raw": raw, "data": url}, "backgroundFit": None}


def metric(at: AppTest, label: str) -> str | None:
    return next((m.value for m in at.metric if m.label == label), None)


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def image_captions(at: AppTest) -> list[str]:
    return [caption for image in at.image for caption in image.captions]


# --- smoke ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_runs_without_exception(page, app_env):
    at = app(str(page.relative_to(ROOT))).run()
    assert not at.exception, [e.message for e in at.exception]
    titles = texts(at.title)
    if page.name in TITLES:
        assert titles == [TITLES[page.name]]
    else:
        assert titles, f"{page.name} shows no title"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_with_empty_store_says_so(page, empty_store_env):
    at = app(str(page.relative_to(ROOT))).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("No trained model" in w for w in texts(at.sidebar.warning))


def run_fresh_interpreter(code: str, timeout: float) -> str:
    """Run ``code`` in a new Python process at the repository root; its stdout (it must exit 0)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy(), capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_home_does_not_import_tensorflow(app_env):
    # In a fresh interpreter: this test process already imported TensorFlow for the fixture model.
    # Also counts Streamlit's one-time REPL check (inspect.stack(), 100-150 ms on a new server's
    # first page), which app_state._skip_bare_mode_check spares a running app.
    code = (
        "import sys\n"
        "import streamlit.env_util as env_util\n"
        "walks, is_repl = [], env_util.is_repl\n"
        "env_util.is_repl = lambda: walks.append(1) or is_repl()\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(ROOT / 'Home.py')!r}, default_timeout=60).run()\n"
        "assert not at.exception, [e.message for e in at.exception]\n"
        "assert at.title[0].value == 'Handwritten digit recognizer'\n"
        "assert any(m.label == 'Test accuracy' for m in at.metric)\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
        "print(f'STACK_WALKS={len(walks)}')\n"
    )
    stdout = run_fresh_interpreter(code, timeout=120)
    assert "HEAVY=\n" in stdout, f"Home imported {stdout.split('HEAVY=')[-1].strip()}"
    assert "STACK_WALKS=0" in stdout


def test_reading_pages_never_import_tensorflow(app_env, tmp_path):
    # In a fresh interpreter (this test process already imported TensorFlow for the fixture model):
    # Draw reads a drawn 2, Upload a photographed 7, Evaluate measures the model; each answer is
    # seen, so a page that stopped early cannot pass; then neither TensorFlow nor Keras is loaded.
    canvas = tmp_path / "canvas.npy"
    np.save(canvas, as_canvas(mnist_test_digit(2), np.random.default_rng(1), transparent=False))
    seven = tmp_path / "seven.png"
    seven.write_bytes(ink_on_paper_png(mnist_test_digit(7)))
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from tests.test_pages import canvas_state, metric\n"
        f"home = {str(ROOT / 'Home.py')!r}\n"
        "at = AppTest.from_file(home, default_timeout=60).run()\n"
        "at.switch_page('pages/2_Draw.py').run()\n"
        f"at.session_state['draw_canvas'] = canvas_state(np.load({str(canvas)!r}))\n"
        "at.run()\n"
        "assert not at.exception, [e.message for e in at.exception]\n"
        "print('DRAW=' + str(metric(at, 'Predicted digit')))\n"
        "at = AppTest.from_file(home, default_timeout=60).run()\n"
        "at.switch_page('pages/3_Upload.py').run()\n"
        f"at.file_uploader(key='upload_files').set_value([('7.png', Path({str(seven)!r}).read_bytes(), 'image/png')]).run()\n"
        "assert not at.exception, [e.message for e in at.exception]\n"
        "print('UPLOAD=' + str(metric(at, 'Predicted digit')))\n"
        "at = AppTest.from_file(home, default_timeout=60).run()\n"
        "at.switch_page('pages/4_Evaluate.py').run()\n"
        "assert not at.exception, [e.message for e in at.exception]\n"
        "print('EVALUATE=' + str(metric(at, 'Test accuracy')))\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    stdout = run_fresh_interpreter(code, timeout=240)
    assert "DRAW=2\n" in stdout and "UPLOAD=7\n" in stdout, stdout
    assert "EVALUATE=9" in stdout, stdout  # the fixture MLP scores 9x%
    assert "HEAVY=\n" in stdout, f"a reading page imported {stdout.split('HEAVY=')[-1].strip()}"


def test_reruns_do_not_reset_keras(app_env, monkeypatch):
    # Streamlit calls keras.backend.clear_session() after every run once Keras is imported (the
    # Train page's training runs import it); app_state turns that off because it would reset Keras
    # under a running training job (see app_state._keep_keras_state).
    import keras

    calls = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *args, **kwargs: calls.append(args))
    for page in ("pages/1_Train.py", "pages/2_Draw.py"):
        at = app(page).run()
        at.run()
        assert not at.exception, [e.message for e in at.exception]
    assert calls == []


# --- Home and the model picker -------------------------------------------------------------------

def test_home_shows_active_model_and_store(app_env):
    at = app().run()
    assert any("Model in use: `test-mlp`" in m.value for m in at.markdown)
    assert metric(at, "Architecture") == "MLP"
    assert metric(at, "Test accuracy").endswith("%")
    assert len(at.dataframe) == 0  # a Markdown table: Home loads neither pandas nor the data grid
    table = next(m.value for m in at.markdown if m.value.startswith("| Model |"))
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"**test-mlp**", "**test-mlp-copy**"}
    assert "✓ in use" in rows["**test-mlp**"] and "✓" not in rows["**test-mlp-copy**"]
    assert [e.label for e in at.expander] == ["test-mlp — details", "test-mlp-copy — details"]
    assert len(at.get("download_button")) == 2


def test_markdown_table_formats_aligns_and_escapes():
    import app_state

    table = app_state.markdown_table(
        [{"name": "a|b", "n": 1234567, "acc": 0.99612, "note": "two\nlines"}, {"name": "c", "n": None, "acc": "?"}],
        {"name": "Name", "n": "Count", "acc": "Accuracy", "note": "Note"},
        formats={"n": "{:,}", "acc": "{:.2%}"}, right=("n", "acc"), center=("note",))
    assert table.splitlines() == [
        "| Name | Count | Accuracy | Note |",
        "| --- | ---: | ---: | :---: |",
        "| a\\|b | 1,234,567 | 99.61% | two lines |",
        "| c |  | ? |  |",
    ]


def test_model_choice_is_per_session_and_followed_by_every_page(app_env):
    visitor = app().run()
    assert visitor.selectbox(key="sidebar_model").value == "test-mlp"
    visitor.selectbox(key="sidebar_model").set_value("test-mlp-copy").run()
    assert visitor.session_state["model_name"] == "test-mlp-copy"
    visitor.switch_page("pages/2_Draw.py").run()
    assert not visitor.exception
    assert visitor.selectbox(key="sidebar_model").value == "test-mlp-copy"
    assert any("test-mlp-copy" in c.value for c in visitor.caption)

    other = app().run()
    assert other.selectbox(key="sidebar_model").value == "test-mlp"


def store_with_altered_model(source: Path, folder: Path, name: str) -> Path:
    """A copy of the store ``source`` in which ``name`` (copied from test-mlp when it is not there)
    has one byte of its served file ``NAME.onnx`` flipped: same size, wrong checksum."""
    shutil.copytree(source, folder)
    if not (folder / f"{name}.json").exists():
        for suffix in (".keras", ".onnx", ".novelty.npz", ".json"):
            shutil.copyfile(folder / f"test-mlp{suffix}", folder / f"{name}{suffix}")
    onnx = folder / f"{name}.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    return folder


def draws_a_two(at: AppTest) -> str | None:
    """Draw a 2 on the Draw page of ``at``'s session; the predicted digit shown."""
    at.switch_page("pages/2_Draw.py").run()
    at.session_state["draw_canvas"] = canvas_state(as_canvas(mnist_test_digit(2), np.random.default_rng(1),
                                                             transparent=False))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return metric(at, "Predicted digit")


def test_home_reports_a_broken_model_file_as_a_warning(app_env, tmp_path, monkeypatch):
    # A model whose served file was altered on disk is listed as a problem, never offered, and the
    # default model keeps serving.
    store = store_with_altered_model(app_env, tmp_path / "store", "broken")
    monkeypatch.setenv("DIGITS_MODELS_DIR", str(store))
    at = app().run()
    assert not at.exception
    warnings = [w for w in texts(at.warning) if "broken" in w]
    assert warnings and "broken.onnx does not match the checksum" in warnings[0], texts(at.warning)
    assert not [o for o in at.selectbox(key="sidebar_model").options if "broken" in o]
    assert any("Model in use: `test-mlp`" in m.value for m in at.markdown)
    assert draws_a_two(at) == "2"


def test_an_altered_default_model_is_not_served(app_env, tmp_path, monkeypatch):
    # The server's default (test-mlp, active.json) has an altered .onnx: every page says so and
    # serves the other model instead.
    store = store_with_altered_model(app_env, tmp_path / "store", "test-mlp")
    monkeypatch.setenv("DIGITS_MODELS_DIR", str(store))
    at = app().run()
    assert not at.exception
    assert any("default model 'test-mlp' cannot be used" in w and "checksum" in w for w in texts(at.warning)), \
        texts(at.warning)
    picker = at.selectbox(key="sidebar_model")
    assert picker.value == "test-mlp-copy" and len(picker.options) == 1
    assert draws_a_two(at) == "2"
    assert any("default model 'test-mlp' cannot be used" in w for w in texts(at.warning))  # on the Draw page too


# --- Draw ------------------------------------------------------------------------------------------

def test_draw_empty_canvas_prompts(app_env):
    at = app("pages/2_Draw.py").run()
    assert not at.exception
    assert any(i.startswith("Draw a digit") for i in texts(at.info))
    assert metric(at, "Predicted digit") is None


def test_draw_reads_the_digit_drawn(app_env):
    at = app("pages/2_Draw.py").run()
    two = mnist_test_digit(2)
    at.session_state["draw_canvas"] = canvas_state(as_canvas(two, np.random.default_rng(1), transparent=False))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert metric(at, "Predicted digit") == "2"
    confidence = metric(at, "Confidence")
    assert confidence.endswith("%") and 0 < float(confidence[:-1]) <= 100
    assert at.image, "the 28x28 the model saw is not shown"


def canvas_bundle() -> Path:
    import streamlit_drawable_canvas

    (bundle,) = (Path(streamlit_drawable_canvas.__file__).parent / "frontend" / "build").glob("index-*.js")
    return bundle


def canvas_proto(at: AppTest):
    (element,) = at.get("bidi_component")
    return element.proto


def test_canvas_send_patch_finds_the_shipped_delay():
    import app_state

    source = canvas_bundle().read_text(encoding="utf-8")
    find, replace = app_state.canvas_send_patch(source, 25)
    assert source.count(find) == 1 and find.endswith("= 200"), find  # the component's 200 ms, once
    assert replace == find.replace("200", "25")
    patched = source.replace(find, replace)
    assert app_state.canvas_send_patch(patched, 25) == (replace, replace)  # the sender now uses 25
    with pytest.raises(ValueError, match="sender"):
        app_state.canvas_send_patch("export default () => {}", 25)  # another build: no patch
    with pytest.raises(ValueError, match="definition"):
        app_state.canvas_send_patch(patched + f"; {replace}", 25)  # ambiguous: no patch


def test_draw_canvas_is_the_package_bundle_with_a_shorter_delay(app_env):
    from core import config

    at = app("pages/2_Draw.py").run()
    assert not at.exception
    proto = canvas_proto(at)
    assert proto.component_name == "digits.drawing_canvas"
    bundle = canvas_bundle()
    find, replace = __import__("app_state").canvas_send_patch(bundle.read_text(encoding="utf-8"), config.CANVAS_SEND_MS_DEFAULT)
    # The loader fetches the package's own bundle from Streamlit's route (on the server's address as
    # the page reached its health check) and patches it in the browser.
    path = f"/_stcore/bidi-components/streamlit-drawable-canvas.streamlit_drawable_canvas/{bundle.name}"
    assert f'const PATH = "{path}", FALLBACK = "{path}"' in proto.js_content
    assert f'FIND = "{find}", REPLACE = "{replace}"' in proto.js_content
    assert ".dc-canvas" in proto.css_content  # the package's stylesheet, inline


def test_draw_canvas_keeps_the_shipped_delay_when_asked_or_unpatchable(app_env, monkeypatch, caplog):
    import app_state
    from core import config

    monkeypatch.setenv(config.CANVAS_SEND_MS_ENV, "shipped")
    at = app("pages/2_Draw.py").run()
    assert not at.exception and canvas_proto(at).component_name.startswith("streamlit-drawable-canvas.")

    # Another version of the component that cannot be patched: it runs as shipped, the log says why,
    # and the page still reads drawings.
    monkeypatch.setenv(config.CANVAS_SEND_MS_ENV, "40")

    def unpatchable(source, delay_ms):
        raise ValueError("expected one debounced sender in the canvas bundle, found 0")

    monkeypatch.setattr(app_state, "canvas_send_patch", unpatchable)
    monkeypatch.setattr(app_state, "_canvas_problem_logged", False)
    app_state._fast_canvas.cache_clear()
    with caplog.at_level("WARNING", logger="app_state"):
        at = app("pages/2_Draw.py").run()
        at.session_state["draw_canvas"] = canvas_state(as_canvas(mnist_test_digit(2), np.random.default_rng(1),
                                                                 transparent=False))
        at.run()
    assert not at.exception
    assert canvas_proto(at).component_name.startswith("streamlit-drawable-canvas.")
    assert metric(at, "Predicted digit") == "2"
    assert any("keeps its own 200 ms delay" in r.getMessage() for r in caplog.records)


def test_draw_clear_button_empties_the_canvas(app_env):
    at = app("pages/2_Draw.py").run()
    at.session_state["draw_canvas"] = canvas_state(as_canvas(mnist_test_digit(2), np.random.default_rng(1),
                                                             transparent=False))
    at.run()
    assert metric(at, "Predicted digit") == "2"
    at.button(key="draw_clear").click().run()
    assert not at.exception
    assert metric(at, "Predicted digit") is None
    assert any(i.startswith("Draw a digit") for i in texts(at.info))


def test_draw_shows_why_the_model_read_the_digit(app_env):
    at = app("pages/2_Draw.py").run()
    at.session_state["draw_canvas"] = canvas_state(as_canvas(mnist_test_digit(2), np.random.default_rng(1),
                                                             transparent=False))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    captions = image_captions(at)
    assert "What the model sees (28×28)" in captions and "Why this digit" in captions
    assert any("Why this digit" in c.value and "red" in c.value for c in at.caption)  # what the colours mean
    assert not [w for w in texts(at.warning) if "heatmap" in w]


def test_draw_multi_reads_a_number_and_an_empty_canvas_still_prompts(app_env):
    at = app("pages/2_Draw.py").run()
    assert not at.toggle(key="draw_multi").value
    at.toggle(key="draw_multi").set_value(True).run()
    assert not at.exception
    assert any(i.startswith("Draw some digits") for i in texts(at.info))
    at.session_state["draw_canvas"] = canvas_state(number_on_canvas([4, 2]))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert metric(at, "Number read") == "42"
    assert metric(at, "Predicted digit") is None
    digits = at.dataframe[0].value
    assert list(digits["digit"]) == ["4", "2"] and digits["confidence"].between(0, 1).all()
    assert any("boxed" in c for c in image_captions(at))

    at.toggle(key="draw_multi").set_value(False).run()  # off: one digit, as before
    assert metric(at, "Number read") is None and metric(at, "Predicted digit") is not None


def test_draw_says_when_it_is_probably_not_a_digit(app_env):
    at = app("pages/2_Draw.py").run()
    at.session_state["draw_canvas"] = canvas_state(filled_rectangle_canvas())
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert metric(at, "Predicted digit") is not None  # the metrics stay...
    assert any(NOT_A_DIGIT in w for w in texts(at.warning))  # ...and the page says it


def test_saving_a_correction_from_draw_stores_it_and_train_lists_and_deletes_it(app_env):
    from core import config
    from core.corrections import CorrectionStore

    store = CorrectionStore()
    assert store.path.parent == config.app_data_dir() and str(store.path).startswith(os.environ["DIGITS_DATA_DIR"])
    at = app("pages/2_Draw.py").run()
    at.session_state["draw_canvas"] = canvas_state(as_canvas(mnist_test_digit(2), np.random.default_rng(1),
                                                             transparent=False))
    at.run()
    assert metric(at, "Predicted digit") == "2"
    assert at.button(key="draw_correct_save").disabled  # nothing picked yet
    assert any("28×28" in c.value and "not stored" in c.value for c in at.caption)  # what is stored
    at.selectbox(key="draw_correct_label").set_value(5).run()
    at.button(key="draw_correct_save").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, texts(at.error)
    assert any("Saved correction" in s for s in texts(at.success))
    assert at.selectbox(key="draw_correct_label").value is None  # ready for the next one

    rows = store.list()
    assert len(rows) == 1
    (row,) = rows
    assert (row.label, row.predicted, row.source, row.model) == (5, 2, "draw", "test-mlp")
    assert row.image.shape == (28, 28) and row.image.max() > 200  # the 28x28 the model saw, not the canvas

    at.switch_page("pages/1_Train.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert metric(at, "Corrections") == "1"
    (table,) = [d.value for d in at.dataframe if "right digit" in d.value.columns]
    assert list(table["id"]) == [row.id] and list(table["right digit"]) == [5]
    assert list(table["source"]) == ["drawn"] and list(table["model"]) == ["test-mlp"]
    assert not at.button(key="train_finetune").disabled
    assert [b.label for b in at.get("download_button") if "Export" in b.label] == ["Export as .npz", "Export as CSV"]

    at.multiselect(key="train_corrections_selected").set_value([row.id]).run()
    at.button(key="train_corrections_delete").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert store.count() == 0
    assert any("Deleted 1 correction" in s for s in texts(at.success))
    assert any("No corrections yet" in i for i in texts(at.info))
    assert at.button(key="train_finetune").disabled


# --- Upload ------------------------------------------------------------------------------------------

def test_upload_reads_a_photographed_seven(app_env):
    at = app("pages/3_Upload.py").run()
    assert any("Upload one or more" in i for i in texts(at.info))
    seven = ink_on_paper_png(mnist_test_digit(7))
    at.file_uploader(key="upload_files").set_value([("seven.png", seven, "image/png")]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert metric(at, "Predicted digit") == "7"
    assert metric(at, "Confidence").endswith("%")
    assert not at.error


def test_upload_unreadable_file_gets_its_own_error_and_others_are_answered(app_env):
    at = app("pages/3_Upload.py").run()
    files = [
        ("broken.png", b"this is not an image at all", "image/png"),
        ("scans/batch 1\\seven.png", ink_on_paper_png(mnist_test_digit(7)), "image/png"),
        ("blank.png", png_bytes(np.full((120, 120), 255, np.uint8)), "image/png"),
    ]
    at.file_uploader(key="upload_files").set_value(files).run()
    assert not at.exception, [e.message for e in at.exception]
    errors = texts(at.error)
    assert len(errors) == 1 and "broken" in errors[0] and "cannot be read" in errors[0]
    assert [m.value for m in at.metric if m.label == "Predicted digit"] == ["7"]
    table = at.dataframe[0].value
    assert list(table["file"]) == ["broken.png", "seven.png", "blank.png"]
    assert table["digit"].iloc[1] == 7 and table["digit"].isna().iloc[[0, 2]].all()
    assert "no digit found" in table["note"].iloc[2]
    assert [b.label for b in at.get("download_button")] == ["Download as CSV"]


def test_upload_multi_reads_2026_and_boxes_the_digits(app_env):
    at = app("pages/3_Upload.py").run()
    assert not at.toggle(key="upload_multi").value
    at.toggle(key="upload_multi").set_value(True)
    at.file_uploader(key="upload_files").set_value([("year.png", number_on_paper_png([2, 0, 2, 6]), "image/png")])
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, texts(at.error)
    assert metric(at, "Number read") == "2026"
    digits = at.dataframe[0].value
    assert list(digits["digit"]) == ["2", "0", "2", "6"]
    captions = image_captions(at)
    assert any(c.startswith("The digits found, boxed") for c in captions)
    assert sum(c.startswith(f"{n}. why") for c in captions for n in range(1, 5)) == 4  # a heatmap per digit
    assert at.selectbox(key="upload_correct_which_0").value == 0  # which digit to correct


def test_upload_shows_the_heatmap_and_stores_a_correction(app_env):
    from core.corrections import CorrectionStore

    at = app("pages/3_Upload.py").run()
    at.file_uploader(key="upload_files").set_value([("seven.png", ink_on_paper_png(mnist_test_digit(7)), "image/png")])
    at.run()
    assert metric(at, "Predicted digit") == "7"
    captions = image_captions(at)
    assert "What the model sees" in captions and "Why this digit" in captions
    at.selectbox(key="upload_correct_label_0").set_value(1).run()
    at.button(key="upload_correct_save_0").click().run()
    assert not at.exception, [e.message for e in at.exception]
    rows = CorrectionStore().list()
    assert [(r.label, r.predicted, r.source) for r in rows] == [(1, 7, "upload")]


def test_upload_says_when_an_image_is_probably_not_a_digit(app_env):
    at = app("pages/3_Upload.py").run()
    files = [("letter.png", letter_png("M"), "image/png"),
             ("seven.png", ink_on_paper_png(mnist_test_digit(7)), "image/png")]
    at.file_uploader(key="upload_files").set_value(files).run()
    assert not at.exception, [e.message for e in at.exception]
    assert len([m for m in at.metric if m.label == "Predicted digit"]) == 2  # the metrics stay
    assert len([w for w in texts(at.warning) if NOT_A_DIGIT in w]) == 1
    table = at.dataframe[0].value
    assert list(table["Digit?"]) == ["no", "yes"]


# --- Train ------------------------------------------------------------------------------------------

def _wait_while(at: AppTest, subheader: str, seconds: float, what: str) -> AppTest:
    """Rerun the page until ``subheader`` is gone (a run in progress ended), failing on any exception."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        if not any(h.value == subheader for h in at.subheader):
            return at
        time.sleep(0.5)
    raise AssertionError(f"{what} did not finish in time")


def _wait_until_done(at: AppTest, seconds: float = 180) -> AppTest:
    return _wait_while(at, "Training in progress", seconds, "training")


def test_train_form_starts_a_job_that_saves_a_model(empty_store_env):
    from core.store import ModelStore

    at = app("pages/1_Train.py").run()
    assert not at.exception
    at.radio(key="train_family").set_value("mlp").run()
    assert at.text_input(key="train_hidden").value == "256,128"
    at.select_slider(key="train_size").set_value(3000)
    at.number_input(key="train_epochs").set_value(1)
    at.button(key="train_submit").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, texts(at.error)

    at = _wait_until_done(at)
    assert any("Training finished" in s for s in texts(at.success)), texts(at.error) + texts(at.warning)
    names = ModelStore(empty_store_env).list().names()
    assert len(names) == 1 and names[0].startswith("mlp-")
    assert any(f"saved as **{names[0]}**" in m for m in texts(at.success))
    assert metric(at, "Test accuracy").endswith("%")

    at.button(key="train_use_model").click().run()
    assert at.session_state["model_name"] == names[0]
    assert at.selectbox(key="sidebar_model").value == names[0]


def test_train_form_rejects_bad_layer_sizes(empty_store_env):
    at = app("pages/1_Train.py").run()
    at.text_input(key="train_hidden").set_value("256, lots")
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert any("Dense layers" in e and "whole numbers" in e for e in texts(at.error))


def test_other_visitor_sees_the_run_but_only_the_owner_can_stop_it(empty_store_env):
    from core.store import ModelStore

    owner = app("pages/1_Train.py").run()
    owner.select_slider(key="train_size").set_value(60000)  # a long CNN run: it is stopped below
    owner.button(key="train_submit").click().run()
    assert not owner.exception, [e.message for e in owner.exception]

    other = app("pages/1_Train.py").run()
    assert any(h.value == "Training in progress" for h in other.subheader)
    assert not [b for b in other.button if b.key == "train_stop"]
    assert other.button(key="train_submit").disabled
    assert any("another visitor" in c.value for c in other.caption)

    owner.run()
    owner.button(key="train_stop").click().run()
    owner = _wait_until_done(owner, 120)
    assert any("stopped" in w and "No model was saved" in w for w in texts(owner.warning))
    assert ModelStore(empty_store_env).list().names() == []
    other.run()
    assert any(h.value == "Last training run" for h in other.subheader)


def test_training_manager_allows_one_job_and_only_the_owner_stops_it(empty_store_env):
    import app_state
    from core.learning.model import default_spec
    from core.learning.train import TrainConfig

    manager = app_state.TrainingManager()
    cfg = TrainConfig(spec=default_spec("cnn"), epochs=1, train_size=60000)
    job = manager.start(cfg, owner="alice")
    try:
        with pytest.raises(app_state.TrainingBusy, match="one run at a time"):
            manager.start(cfg, owner="bob")
        assert manager.stop("bob") is False
        assert manager.stop("alice") is True
    finally:
        job.request_stop()
        job.join(120)
    assert job.state == "stopped" and manager.snapshot()["state"] == "stopped"
    assert not manager.running()



# --- Corrections and fine-tuning ------------------------------------------------------------------------

def _wait_for_finetune(at: AppTest, seconds: float = 300) -> AppTest:
    return _wait_while(at, "Fine-tuning in progress", seconds, "fine-tuning")


@pytest.mark.slow
def test_finetune_on_corrections_runs_in_the_training_slot_and_saves_a_model(app_env, tmp_path, monkeypatch):
    from core.corrections import CorrectionStore
    from core.store import ModelStore

    models = tmp_path / "store"
    shutil.copytree(app_env, models)  # the fixture store is shared: fine-tune into a copy
    monkeypatch.setenv("DIGITS_MODELS_DIR", str(models))
    corrections = CorrectionStore()
    for label in (3, 5, 8):
        corrections.add(mnist_test_digit(label, 1), label, None, "upload", "test-mlp")

    at = app("pages/1_Train.py").run()
    assert metric(at, "Corrections") == "3"
    at.button(key="train_finetune").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, texts(at.error)
    assert any(h.value == "Fine-tuning in progress" for h in at.subheader)
    assert at.button(key="train_submit").disabled  # the one slot is taken: no training meanwhile

    at = _wait_for_finetune(at)
    assert any("Fine-tuning finished" in s for s in texts(at.success)), texts(at.error) + texts(at.warning)
    assert metric(at, "Corrections read right, after").endswith("%")
    assert metric(at, "MNIST test accuracy").endswith("%")
    assert any("test-mlp" in c.value and "3 corrections" in c.value for c in at.caption)
    new = [n for n in ModelStore(models).list().names() if n.startswith("mlp-finetuned-")]
    assert len(new) == 1 and ModelStore(models).meta(new[0])["base_model"] == "test-mlp"
    at.button(key="train_finetune_use_model").click().run()
    assert at.session_state["model_name"] == new[0]


def test_finetune_needs_corrections(empty_store_env):
    import app_state

    with pytest.raises(ValueError, match="no corrections"):
        app_state.TrainingManager().start_finetune("test-mlp", owner="alice")
