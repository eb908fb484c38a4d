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
SHIFTED_MODEL = "test-mlp-plus-one"  # two_readers_store's model trained on labels + 1 (tests/conftest.py)

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "Home.py", *sorted((ROOT / "pages").glob("*.py"))]
TIMEOUT = 60  # AppTest's default is 3 s; a training run (TensorFlow) and a busy machine take longer
TITLES = {
    "Home.py": "Handwritten digit recognizer",
    "1_Train.py": "Train a model",
    "2_Draw.py": "Draw a digit",
    "3_Upload.py": "Read digits in images",
    "5_Corrections.py": "Corrections",
}
# Pages that show the training runs: they need the run board (`ui.runs.board()`), on the test cluster.
BOARD_PAGES = {"1_Train.py", "5_Corrections.py"}


# --- helpers -------------------------------------------------------------------------------------

def app(page: str = "Home.py", *, owner: str | None = None) -> AppTest:
    """A fresh session that has opened ``page`` the way a visitor does: Home first, then the page
    (page links resolve against the entrypoint, as in the running app). ``owner``: the address
    carries that owner token (``?owner=...``), as when a visitor reloads the page or opens it in
    another tab."""
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    if owner is not None:
        at.query_params["owner"] = owner
    at.run()
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


# --- the run board --------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_local_cluster(monkeypatch):
    """AppTest runs the pages in this process, where the run board (`ui.runs.board()`) is cached for
    every later test: a page here must never start a local Dask cluster of its own. A test that
    shows the Train or Corrections page uses ``train_env`` (the session's test cluster)."""
    import distributed.deploy.subprocess

    def refuse(*args, **kwargs):
        raise RuntimeError("a page test started a local Dask cluster: give the test the train_env fixture")

    monkeypatch.setattr(distributed.deploy.subprocess, "SubprocessCluster", refuse)


def _end_active_runs(board, timeout: float = 120) -> None:
    """Cancel every run still queued or running on ``board`` and wait until they ended."""
    from core.learning.runs import RunError

    active = [r for r in board.runs() if r.active]
    for run in active:
        try:
            board.cancel(run.id, run.owner)
        except RunError:
            pass  # it ended meanwhile, or is already stopping or cancelling
    deadline = time.monotonic() + timeout
    for run in active:
        snap = board.wait(run.id, timeout=max(1.0, deadline - time.monotonic()))
        assert snap is None or not snap.active, f"run {run.id} still {snap.state} {timeout:.0f} s after Cancel"


@pytest.fixture(scope="session")
def _pages_board_store(dask_cluster, tmp_path_factory):
    """The pages' run board's own store (where a run submitted without the page's store would land:
    never the page's), and the board closed before the session's cluster stops."""
    yield tmp_path_factory.mktemp("board-default-store")
    from ui import runs

    if _BOARD_MADE:
        runs.board().close()
        runs.board.clear()


_BOARD_MADE: list[bool] = []


@pytest.fixture
def train_env(cluster_env, _pages_board_store):
    """The pages' run board (`ui.runs.board()`, one per process) on the session's test cluster, with
    no run left queued or running by an earlier test, and none left by this one. Its default store
    is a scratch folder of its own: each page must send its runs to the store it shows."""
    from core import config
    from ui import runs

    _BOARD_MADE.append(True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(config.MODELS_DIR_ENV, str(_pages_board_store))
        board = runs.board()
        if (board.client.scheduler.address, board.models_dir) != (cluster_env.address, str(_pages_board_store)):
            board.close()  # made by a test outside this file: replace it
            runs.board.clear()
            board = runs.board()
    _end_active_runs(board)
    yield board
    _end_active_runs(board)


# --- smoke ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_runs_without_exception(page, app_env, request):
    if page.name in BOARD_PAGES:
        request.getfixturevalue("train_env")
    at = app(str(page.relative_to(ROOT))).run()
    assert not at.exception, [e.message for e in at.exception]
    if page.name in BOARD_PAGES:
        assert not at.error, texts(at.error)  # the training workers were reached
    titles = texts(at.title)
    if page.name in TITLES:
        assert titles == [TITLES[page.name]]
    else:
        assert titles, f"{page.name} shows no title"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_with_empty_store_says_so(page, empty_store_env, request):
    if page.name in BOARD_PAGES:
        request.getfixturevalue("train_env")
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
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(ROOT / 'Home.py')!r}, default_timeout=60).run()\n"
        "assert not at.exception, [e.message for e in at.exception]\n"
        "assert at.title[0].value == 'Handwritten digit recognizer'\n"
        "assert any(m.label == 'Test accuracy' for m in at.metric)\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    stdout = run_fresh_interpreter(code, timeout=120)
    assert "HEAVY=\n" in stdout, f"Home imported {stdout.split('HEAVY=')[-1].strip()}"


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


def test_training_and_corrections_pages_never_import_tensorflow(app_env, train_env, tmp_path, monkeypatch):
    # In a fresh interpreter, as a server sees it: the Train page's form queues a short run on the
    # test cluster (its scheduler's address in the environment), the page follows it to its end and
    # shows the saved model; the Corrections page is drawn; the training happened in a Dask worker,
    # so neither TensorFlow nor Keras was imported here.
    from core import config
    from core.storage.store import ModelStore

    models = tmp_path / "store"
    shutil.copytree(app_env, models)  # the fixture store is shared: the run saves into a copy
    monkeypatch.setenv(config.MODELS_DIR_ENV, str(models))
    assert os.environ[config.DASK_SCHEDULER_ENV] == train_env.client.scheduler.address
    code = (
        "import sys, time\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(ROOT / 'Home.py')!r}, default_timeout=60).run()\n"
        "at.switch_page('pages/1_Train.py').run()\n"
        "at.radio(key='train_family').set_value('mlp').run()\n"
        "at.select_slider(key='train_size').set_value(1000)\n"
        "at.number_input(key='train_epochs').set_value(1)\n"
        "at.button(key='train_submit').click().run()\n"
        "assert not at.exception and not at.error, ([e.message for e in at.exception], [e.value for e in at.error])\n"
        "deadline = time.monotonic() + 150\n"
        "while not any('saved as' in s.value for s in at.success):\n"
        "    shown = [h.value for h in at.subheader] + [w.value for w in at.warning] + [e.value for e in at.error]\n"
        "    assert time.monotonic() < deadline, f'the run did not end with a model: {shown}'\n"
        "    time.sleep(0.5)\n"
        "    at.run()\n"
        "    assert not at.exception, [e.message for e in at.exception]\n"
        "print('TRAIN=' + next(s.value for s in at.success if 'saved as' in s.value))\n"
        "at.switch_page('pages/5_Corrections.py').run()\n"
        "assert not at.exception and not at.error, ([e.message for e in at.exception], [e.value for e in at.error])\n"
        "print('CORRECTIONS=' + at.title[0].value)\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    stdout = run_fresh_interpreter(code, timeout=240)
    assert "TRAIN=Training finished. It was saved as **mlp-" in stdout, stdout
    assert "CORRECTIONS=Corrections\n" in stdout, stdout
    assert "HEAVY=\n" in stdout, f"the Train or Corrections page imported {stdout.split('HEAVY=')[-1].strip()}"
    (name,) = [n for n in ModelStore(models).list().names() if n.startswith("mlp-")]
    assert f"saved as **{name}**" in stdout


# --- Home and the model picker -------------------------------------------------------------------

def test_home_shows_active_model_and_store(app_env):
    at = app().run()
    assert any("Model in use: `test-mlp`" in m.value for m in at.markdown)
    assert metric(at, "Architecture") == "MLP"
    assert metric(at, "Test accuracy").endswith("%")
    assert len(at.dataframe) == 0  # a Markdown table: Home loads neither pandas nor the data grid
    table = next(m.value for m in at.markdown if "| Model |" in m.value)
    rows = {line.split("|")[1].strip(): line for line in table_lines(table)[2:]}
    assert set(rows) == {"**test-mlp**", "**test-mlp-copy**"}
    assert "✓ in use" in rows["**test-mlp**"] and "✓" not in rows["**test-mlp-copy**"]
    assert [e.label for e in at.expander] == ["test-mlp — details", "test-mlp-copy — details"]
    assert sorted(b.proto.label for b in at.get("download_button")) == [
        "Download test-mlp-copy.keras", "Download test-mlp-copy.onnx", "Download test-mlp.keras", "Download test-mlp.onnx"]


def table_lines(markdown: str) -> list[str]:
    """The lines of a Markdown table shown by `ui.messages.show_table` (inside its scrolling box)."""
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_markdown_table_formats_aligns_and_escapes():
    from ui.messages import markdown_table

    table = markdown_table(
        [{"name": "a|b", "n": 1234567, "acc": 0.99612, "note": "two\nlines"}, {"name": "c", "n": None, "acc": "?"}],
        {"name": "Name", "n": "Count", "acc": "Accuracy", "note": "Note"},
        formats={"n": "{:,}", "acc": "{:.2%}"}, right=("n", "acc"), center=("note",))
    assert table.splitlines() == [
        "| Name | Count | Accuracy | Note |",
        "| --- | ---: | ---: | :---: |",
        "| a\\|b | 1,234,567 | 99.61% | two lines |",
        "| c |  | ? |  |",
    ]
    # The page shows tables with HTML allowed (`show_table`'s scrolling box): a cell's markup is text.
    hostile = markdown_table([{"name": "<img src=x onerror=alert(1)> & co"}], {"name": "<b>Name</b>"})
    assert hostile.splitlines()[::2] == ["| &lt;b&gt;Name&lt;/b&gt; |", "| &lt;img src=x onerror=alert(1)&gt; &amp; co |"]


def test_model_choice_is_per_session_and_followed_by_every_page(two_readers_env):
    # Two models that answer differently: test-mlp (the default) reads a drawn 2 as 2, the shifted
    # test-mlp-plus-one (tests/conftest.py, trained on labels + 1) reads it as 3. So each answer
    # tells which model gave it.
    visitor = app().run()
    picker = visitor.selectbox(key="sidebar_model")
    assert picker.value == "test-mlp"
    assert any(o.startswith(SHIFTED_MODEL) for o in picker.options), picker.options
    picker.set_value(SHIFTED_MODEL).run()
    assert visitor.session_state["model_name"] == SHIFTED_MODEL
    assert draws_a_two(visitor) == "3"  # the visitor's pick answered, not the default
    assert visitor.selectbox(key="sidebar_model").value == SHIFTED_MODEL
    assert any(f"`{SHIFTED_MODEL}`" in c.value for c in visitor.caption)

    other = app().run()  # a fresh session keeps the server's default
    assert other.selectbox(key="sidebar_model").value == "test-mlp"
    assert draws_a_two(other) == "2"

    # The pick follows the visitor to Upload (a photographed 7 read as 8) and Evaluate (the shifted
    # model gets almost every MNIST test label wrong; test-mlp gets ~92% right), and back to Draw.
    visitor.switch_page("pages/3_Upload.py").run()
    seven = ink_on_paper_png(mnist_test_digit(7))
    visitor.file_uploader(key="upload_files").set_value([("seven.png", seven, "image/png")]).run()
    assert not visitor.exception, [e.message for e in visitor.exception]
    assert metric(visitor, "Predicted digit") == "8"
    visitor.switch_page("pages/4_Evaluate.py").run()
    assert not visitor.exception, [e.message for e in visitor.exception]
    assert visitor.selectbox(key="sidebar_model").value == SHIFTED_MODEL
    assert float(metric(visitor, "Test accuracy").rstrip("%")) < 10, metric(visitor, "Test accuracy")
    assert draws_a_two(visitor) == "3"
    assert draws_a_two(other) == "2"  # and the other session never followed


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
    from ui import canvas

    source = canvas_bundle().read_text(encoding="utf-8")
    find, replace = canvas.canvas_send_patch(source, 25)
    assert source.count(find) == 1 and find.endswith("= 200"), find  # the component's 200 ms, once
    assert replace == find.replace("200", "25")
    patched = source.replace(find, replace)
    assert canvas.canvas_send_patch(patched, 25) == (replace, replace)  # the sender now uses 25
    with pytest.raises(ValueError, match="sender"):
        canvas.canvas_send_patch("export default () => {}", 25)  # another build: no patch
    with pytest.raises(ValueError, match="definition"):
        canvas.canvas_send_patch(patched + f"; {replace}", 25)  # ambiguous: no patch


def test_draw_canvas_is_the_package_bundle_with_a_shorter_delay(app_env):
    from core import config

    at = app("pages/2_Draw.py").run()
    assert not at.exception
    proto = canvas_proto(at)
    assert proto.component_name == "digits.drawing_canvas"
    bundle = canvas_bundle()
    find, replace = __import__("ui.canvas").canvas.canvas_send_patch(bundle.read_text(encoding="utf-8"), config.CANVAS_SEND_MS_DEFAULT)
    # The loader fetches the package's own bundle from Streamlit's route (on the server's address as
    # the page reached its health check) and patches it in the browser.
    path = f"/_stcore/bidi-components/streamlit-drawable-canvas.streamlit_drawable_canvas/{bundle.name}"
    assert f'const PATH = "{path}", FALLBACK = "{path}"' in proto.js_content
    assert f'FIND = "{find}", REPLACE = "{replace}"' in proto.js_content
    assert ".dc-canvas" in proto.css_content  # the package's stylesheet, inline


def test_draw_canvas_keeps_the_shipped_delay_when_asked_or_unpatchable(app_env, monkeypatch, caplog):
    from core import config
    from ui import canvas

    monkeypatch.setenv(config.CANVAS_SEND_MS_ENV, "shipped")
    at = app("pages/2_Draw.py").run()
    assert not at.exception and canvas_proto(at).component_name.startswith("streamlit-drawable-canvas.")

    # Another version of the component that cannot be patched: it runs as shipped, the log says why,
    # and the page still reads drawings.
    monkeypatch.setenv(config.CANVAS_SEND_MS_ENV, "40")

    def unpatchable(source, delay_ms):
        raise ValueError("expected one debounced sender in the canvas bundle, found 0")

    monkeypatch.setattr(canvas, "canvas_send_patch", unpatchable)
    monkeypatch.setattr(canvas, "_canvas_problem_logged", False)
    canvas._fast_canvas.cache_clear()
    with caplog.at_level("WARNING", logger="ui.canvas"):
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
    notes = {m.label: m.delta for m in at.metric}  # ...and under each metric, what it means here
    assert notes == {"Predicted digit": "nearest guess", "Confidence": "among digits"}, notes


def test_saving_a_correction_from_draw_stores_it_and_corrections_lists_and_deletes_it(app_env, train_env):
    from core import config
    from core.storage.corrections import CorrectionStore

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

    at.switch_page("pages/5_Corrections.py").run()
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
    assert table["note"].iloc[0].startswith("Cannot be read. ")
    assert table["note"].iloc[2].startswith("No digit found: no strokes stand out from the background")
    # The card's message: a sentence as written (not lower-cased after its first letter), beside the thumbnail.
    (card_note,) = [i.value for i in at.info if i.value.startswith("No digit found")]
    assert "Draw or photograph a single digit." in card_note, card_note
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
    from core.storage.corrections import CorrectionStore

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
    assert [m.delta or None for m in at.metric] == ["nearest guess", "among digits", None, None]  # the letter's
    assert len([w for w in texts(at.warning) if NOT_A_DIGIT in w]) == 1
    table = at.dataframe[0].value
    assert list(table["Digit?"]) == ["no", "yes"]


def download_data(monkeypatch):
    """A function that returns the bytes an ``st.download_button`` of an AppTest session sends when
    clicked: data given at once, or a callable that Streamlit runs on the click (deferred data).

    AppTest gives a button's proto (its ``url``, or its ``deferred_file_id``) but not its data, and
    each run makes its own media file manager and in-memory storage: this records them, runs a
    deferred button's callable through the latest manager and reads the file from the latest
    storage. For deferred data the returned function raises ``MediaFileStorageError`` when the
    callable raises (Streamlit then sends no file)."""
    import streamlit.testing.v1.app_test as app_test_module
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    managers: list = []
    storages: list = []

    class RecordingManager(MediaFileManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            managers.append(self)

    class RecordingStorage(MemoryMediaFileStorage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            storages.append(self)

    monkeypatch.setattr(app_test_module, "MediaFileManager", RecordingManager)
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", RecordingStorage)

    def data(button) -> bytes:
        url, file_id = button.proto.url, button.proto.deferred_file_id
        if file_id:
            assert managers, "no media file manager was made"
            url = managers[-1].execute_deferred(file_id)
        assert url and storages, "the download button has no file"
        return storages[-1].get_file(url.rsplit("/", 1)[-1]).content

    return data


def test_upload_csv_keeps_spreadsheets_from_reading_file_names_as_formulas(app_env, monkeypatch):
    import csv

    read_download = download_data(monkeypatch)
    risky = ["=cmd|' -C calc'!A0.png", "+1.png", "-1.png", "@SUM(A1).png"]
    harmless = "seven.png"
    at = app("pages/3_Upload.py").run()
    files = [(name, png_bytes(mnist_test_digit(label)), "image/png")
             for name, label in zip([*risky, harmless], [1, 2, 3, 4, 7])]
    at.file_uploader(key="upload_files").set_value(files).run()
    assert not at.exception, [e.message for e in at.exception]
    (button,) = at.get("download_button")
    assert button.proto.label == "Download as CSV"
    rows = list(csv.DictReader(io.StringIO(read_download(button).decode("utf-8"))))
    assert [r["file"] for r in rows] == ["'" + name for name in risky] + [harmless]
    assert rows[-1]["digit"] == "7"
    # No cell of the file, in any column, starts the way a formula does.
    assert not [cell for r in rows for cell in r.values() if cell[:1] in ("=", "+", "-", "@", "\t", "\r")], rows


# --- Train ------------------------------------------------------------------------------------------

ACTIVE_TRAINING = ("Training queued", "Training in progress")  # the run panel's subheaders while it runs
ACTIVE_FINETUNING = ("Fine-tuning queued", "Fine-tuning in progress")


def subheaders(at: AppTest) -> list[str]:
    return [h.value for h in at.subheader]


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def buttons(at: AppTest) -> set[str]:
    return {b.key for b in at.button}


def markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _wait_until(at: AppTest, done, seconds: float, what: str) -> AppTest:
    """Rerun the page (0.5 s apart, at most ``seconds``) until ``done(at)``; fails on any exception."""
    deadline = time.monotonic() + seconds
    while True:
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        if done(at):
            return at
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {seconds:.0f} s: {subheaders(at)} "
                                 f"{progress_texts(at)} {texts(at.warning) + texts(at.error)}")
        time.sleep(0.5)


def _wait_while(at: AppTest, shown: tuple[str, ...], seconds: float, what: str) -> AppTest:
    """Rerun the page until none of the subheaders ``shown`` is left (the run in view ended)."""
    return _wait_until(at, lambda a: not set(shown) & set(subheaders(a)), seconds, f"{what} ending")


def _wait_until_done(at: AppTest, seconds: float = 180) -> AppTest:
    return _wait_while(at, ACTIVE_TRAINING, seconds, "training")


def _wait_until_training(at: AppTest, seconds: float = 120) -> AppTest:
    """Rerun until the visitor's run trains: batches done (the metrics are shown) and Stop enabled."""
    return _wait_until(at, lambda a: "Training in progress" in subheaders(a) and metric(a, "Training loss")
                       and "train_stop" in buttons(a) and not a.button(key="train_stop").disabled,
                       seconds, "the run's first batches")


def start_small_run(at: AppTest) -> None:
    """Start the form's run on 3,000 images for one epoch; it is then in progress on the page."""
    at.select_slider(key="train_size").set_value(3000)
    at.number_input(key="train_epochs").set_value(1)
    at.button(key="train_submit").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, texts(at.error)
    assert set(ACTIVE_TRAINING) & set(subheaders(at)), subheaders(at)


def test_train_form_starts_a_run_that_saves_a_model(empty_store_env, train_env):
    from core.storage.store import ModelStore

    at = app("pages/1_Train.py").run()
    assert not at.exception
    assert any("No training run yet" in i for i in texts(at.info))
    at.radio(key="train_family").set_value("mlp").run()
    assert at.text_input(key="train_hidden").value == "256,128"
    assert at.number_input(key="train_dropout").value == pytest.approx(0.2)  # the MLP's own default, as the CLI's
    start_small_run(at)
    assert any("Started by you" in c.value and "MLP, hidden 256-128 · 3,000 images" in c.value for c in at.caption)

    at = _wait_until_done(at)
    assert any("Training finished" in s for s in texts(at.success)), texts(at.error) + texts(at.warning)
    names = ModelStore(empty_store_env).list().names()  # the page's store, not the run board's own
    assert len(names) == 1 and names[0].startswith("mlp-"), (names, ModelStore(train_env.models_dir).list().names())
    assert any(f"saved as **{names[0]}**" in m for m in texts(at.success))
    assert metric(at, "Test accuracy").endswith("%")
    assert ModelStore(empty_store_env).info(names[0]).command == "streamlit: Train page"
    assert names[0] in markdown(at)  # listed under "Finished recently" in the queue section

    at.button(key="train_use_model").click().run()
    assert at.session_state["model_name"] == names[0]
    assert at.selectbox(key="sidebar_model").value == names[0]


def test_train_form_rejects_bad_layer_sizes(empty_store_env, train_env):
    at = app("pages/1_Train.py").run()
    at.text_input(key="train_hidden").set_value("256, lots")
    at.button(key="train_submit").click().run()
    assert not at.exception
    assert any("Dense layers" in e and "whole numbers" in e for e in texts(at.error))
    assert not [r for r in train_env.runs() if r.owned_by(at.session_state["run_owner"])]  # nothing queued
    assert not set(ACTIVE_TRAINING) & set(subheaders(at))


def test_another_visitor_watches_a_run_and_queues_their_own(empty_store_env, train_env):
    from core.storage.store import ModelStore

    owner = app("pages/1_Train.py").run()
    owner.number_input(key="train_epochs").set_value(10)  # a CNN on 60,000 images: minutes (cancelled below)
    owner.button(key="train_submit").click().run()
    assert not owner.exception and not owner.error, [e.message for e in owner.exception] + texts(owner.error)
    token = owner.query_params["owner"]
    owner = _wait_until_training(owner)

    # Another visitor sees the run, without its controls, and can still submit: their run queues.
    other = app("pages/1_Train.py").run()
    assert other.query_params["owner"] != token
    assert "Training in progress" in subheaders(other)
    assert any("Started by another visitor" in c.value for c in other.caption)
    assert any("Only the visitor who started this run" in c.value for c in other.caption)
    assert not {"train_stop", "train_cancel"} & buttons(other)
    assert not other.button(key="train_submit").disabled and not other.button(key="train_quick").disabled
    other.button(key="train_quick").click().run()
    assert not other.exception and not other.error, [e.message for e in other.exception] + texts(other.error)
    assert "Training queued" in subheaders(other)
    assert any(t.startswith("Waiting for a worker: next in the queue") for t in progress_texts(other)), \
        progress_texts(other)
    assert other.button(key="train_stop").disabled and not other.button(key="train_cancel").disabled
    queue = markdown(other)
    assert "| you | CNN training | queued (#1) |" in queue and "| another visitor | CNN training | running |" in queue

    # A third visitor, with no run of their own, watches the run that trains, not the one that waits.
    third = app("pages/1_Train.py").run()
    assert "Training in progress" in subheaders(third) and metric(third, "Training loss"), subheaders(third)
    assert any("Started by another visitor" in c.value and "60,000 images" in c.value for c in third.caption)

    # The owner's page after a reload (its address carries the token) still has the run and its controls.
    again = app("pages/1_Train.py", owner=token).run()
    assert again.session_state["run_owner"] == token
    assert "Training in progress" in subheaders(again) and {"train_stop", "train_cancel"} <= buttons(again)
    assert any("Started by you" in c.value for c in again.caption)
    assert "| another visitor | CNN training | queued (#1) |" in markdown(again)

    # Cancel: the run ends and nothing is saved; the queued run then gets the worker and saves its model.
    again.button(key="train_cancel").click().run()
    assert not again.exception
    again = _wait_until_done(again, 120)
    assert any("Training was cancelled. No model was saved." in w for w in texts(again.warning)), \
        texts(again.warning) + texts(again.success)
    assert not [s for s in texts(again.success) if "saved as" in s]
    (cancelled,) = [r for r in train_env.runs() if r.owned_by(token)]
    assert cancelled.state == "cancelled" and cancelled.model_name is None

    other = _wait_until_done(other, 120)
    assert any("Training finished" in s for s in texts(other.success)), texts(other.error) + texts(other.warning)
    names = ModelStore(empty_store_env).list().names()
    assert len(names) == 1 and any(f"saved as **{names[0]}**" in s for s in texts(other.success))


def test_the_owner_stops_a_run_and_its_model_so_far_is_saved(empty_store_env, train_env):
    from core.storage.store import ModelStore

    at = app("pages/1_Train.py").run()
    at.number_input(key="train_epochs").set_value(10)  # a CNN on 60,000 images: stopped long before its end
    at.button(key="train_submit").click().run()
    at = _wait_until_training(at)
    at.button(key="train_stop").click().run()
    assert not at.exception, [e.message for e in at.exception]
    at = _wait_until_done(at, 120)
    success = texts(at.success)
    assert any("Training was stopped; the model as it was then." in s for s in success), \
        success + texts(at.warning) + texts(at.error)
    names = ModelStore(empty_store_env).list().names()
    assert len(names) == 1 and names[0].startswith("cnn-")
    assert any(f"saved as **{names[0]}**" in s for s in success)
    accuracy = metric(at, "Test accuracy")
    assert accuracy.endswith("%") and float(accuracy[:-1]) > 10, accuracy  # it learned something before the stop
    assert "train_use_model" in buttons(at)


# --- Corrections and fine-tuning ------------------------------------------------------------------------

def test_finetune_needs_a_correction_and_a_model(app_env, train_env, monkeypatch, tmp_path):
    from core.storage.corrections import CorrectionStore

    at = app("pages/5_Corrections.py").run()
    assert not at.exception and not at.error, [e.message for e in at.exception] + texts(at.error)
    assert any("No corrections yet" in i for i in texts(at.info))
    assert at.button(key="train_finetune").disabled
    assert "Needs at least one correction." in at.button(key="train_finetune").help

    # A correction saved, then deleted by someone else before the button is pressed: the page says why.
    store = CorrectionStore()
    cid = store.add(mnist_test_digit(3, 1), 3, None, "upload", "test-mlp")
    at.run()
    assert metric(at, "Corrections") == "1" and not at.button(key="train_finetune").disabled
    assert store.delete([cid]) == 1
    at.button(key="train_finetune").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not set(ACTIVE_FINETUNING) & set(subheaders(at))
    assert not [r for r in train_env.runs() if r.owned_by(at.session_state["run_owner"])]  # nothing queued

    # No model in the store: nothing to fine-tune, whatever the corrections.
    store.add(mnist_test_digit(3, 1), 3, None, "upload", "test-mlp")
    monkeypatch.setenv("DIGITS_MODELS_DIR", str(tmp_path / "empty-store"))
    at = app("pages/5_Corrections.py").run()
    assert not at.exception
    assert metric(at, "Corrections") == "1"
    assert any("There is no model to fine-tune yet" in c.value for c in at.caption)
    assert at.button(key="train_finetune").disabled


@pytest.mark.slow
def test_finetune_on_corrections_queues_a_run_that_saves_a_model(app_env, train_env, tmp_path, monkeypatch):
    from core.storage.corrections import CorrectionStore
    from core.storage.store import ModelStore

    models = tmp_path / "store"
    shutil.copytree(app_env, models)  # the fixture store is shared: fine-tune into a copy
    monkeypatch.setenv("DIGITS_MODELS_DIR", str(models))
    corrections = CorrectionStore()
    for label in (3, 5, 8):
        corrections.add(mnist_test_digit(label, 1), label, None, "upload", "test-mlp")

    at = app("pages/5_Corrections.py").run()
    assert metric(at, "Corrections") == "3"
    at.button(key="train_finetune").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, texts(at.error)
    assert set(ACTIVE_FINETUNING) & set(subheaders(at)), subheaders(at)
    assert any("Fine-tuning **test-mlp** on 3 corrections" in c.value for c in at.caption)
    train = app("pages/1_Train.py").run()  # the Train page is free meanwhile: it shows training runs only
    assert not train.button(key="train_submit").disabled and not set(ACTIVE_TRAINING) & set(subheaders(train))

    at = _wait_while(at, ACTIVE_FINETUNING, 300, "fine-tuning")
    assert any("Fine-tuning finished" in s for s in texts(at.success)), texts(at.error) + texts(at.warning)
    assert metric(at, "Corrections read right, after").endswith("%")
    assert metric(at, "Test accuracy").endswith("%")
    new = [n for n in ModelStore(models).list().names() if n.startswith("mlp-finetuned-")]
    assert len(new) == 1 and ModelStore(models).info(new[0]).base_model == "test-mlp"
    assert any(f"saved as **{new[0]}**" in s for s in texts(at.success))
    at.button(key="train_finetune_use_model").click().run()
    assert at.session_state["model_name"] == new[0]


def finetune_panel(after: float | None) -> None:
    """The ended panel of a fine-tuning run that read ``after`` of its corrections right (AppTest script)."""
    from core.learning.model import ModelSpec
    from core.learning.runs import RunSnapshot
    from core.learning.train import TrainConfig
    from ui.runs import ended_panel

    cfg = TrainConfig(spec=ModelSpec(family="mlp", hidden=(32,), filters=(), dropout=0.0, batch_norm=False),
                      epochs=1, batch_size=128, train_size=3000, val_fraction=0.0, seed=0)
    snap = RunSnapshot(id="r", owner="me", kind="finetune", config=cfg, state="finished", submitted_at=0.0,
                       info={"corrections_accuracy_before": 0.0, "corrections_accuracy_after": after},
                       model_name="mlp-finetuned-1", test_accuracy=0.97, train_seconds=3.0)
    ended_panel(snap, "me", "panel")


@pytest.mark.parametrize("after, hint", [(0.5, True), (1.0, False), (None, False)])
def test_a_fine_tune_that_left_corrections_unlearned_says_why(after, hint):
    at = AppTest.from_function(finetune_panel, args=(after,), default_timeout=30).run()
    assert not at.exception, [e.message for e in at.exception]
    assert metric(at, "Corrections read right, after") == ("–" if after is None else f"{after:.0%}")
    shown = [c.value for c in at.caption if "still read the old way" in c.value]
    assert bool(shown) == hint, texts(at.caption)
    if hint:
        assert shown[0].startswith("50% of the corrections") and "Corrections page" in shown[0]


# --- share links ------------------------------------------------------------------------------------

SHARED = {"arch": "mlp", "filters": "", "hidden": "64,32", "dropout": "0.3", "bn": "0", "epochs": "7", "batch": "64",
          "lr": "0.005", "schedule": "constant", "images": "12000", "val": "0.2", "augment": "1", "smoothing": "0.1",
          "seed": "42"}


def share_link(at: AppTest) -> str:
    """The link the Train page offers to share its settings (its code block)."""
    codes = [c.value for c in at.code if "/Train?" in c.value]
    assert len(codes) == 1, [c.value for c in at.code]
    return codes[0]


def test_a_share_link_fills_the_train_form_and_the_form_writes_its_settings_back(app_env, train_env):
    from urllib.parse import parse_qsl, urlsplit

    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    at.query_params.update(SHARED)
    at.run()
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.warning, texts(at.warning)
    assert at.radio(key="train_family").value == "mlp"
    assert at.text_input(key="train_hidden").value == "64,32"
    assert at.number_input(key="train_epochs").value == 7 and at.select_slider(key="train_batch_size").value == 64
    assert at.number_input(key="train_lr").value == pytest.approx(0.005)
    assert at.select_slider(key="train_size").value == 12000 and at.checkbox(key="train_augment").value is True
    assert at.number_input(key="train_seed").value == 42 and at.selectbox(key="train_schedule").value == "constant"
    assert at.number_input(key="train_dropout").value == pytest.approx(0.3)
    assert at.checkbox(key="train_batch_norm").value is False

    # The link to share: the same settings, no owner token; the address has both.
    link = share_link(at)
    assert urlsplit(link).path.endswith("/Train") and dict(parse_qsl(urlsplit(link).query, keep_blank_values=True)) == SHARED
    assert "owner" not in link and at.query_params["owner"] and at.query_params["epochs"] == "7"

    # A change in the form goes to the address and the link once the form is submitted.
    at.number_input(key="train_epochs").set_value(9)
    at.text_input(key="train_hidden").set_value("bad")  # refused: nothing queued, the address keeps the last usable
    at.button(key="train_submit").click().run()
    assert any("whole numbers" in e for e in texts(at.error))
    assert at.query_params["epochs"] == "7" and "epochs=7" in share_link(at)
    at.text_input(key="train_hidden").set_value("64,32")
    at.number_input(key="train_epochs").set_value(9)
    at.button(key="train_quick").click().run()  # a quick run: the form's own settings are what it shares
    assert not at.exception and not at.error, texts(at.error)
    assert at.query_params["epochs"] == "9" and "epochs=9" in share_link(at)


def test_a_share_link_with_absurd_settings_is_refused_and_the_form_keeps_its_defaults(app_env, train_env):
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    at.query_params.update({"epochs": "1000000", "hidden": "10000"})
    at.run()
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("were not used" in w and "4096" in w for w in texts(at.warning)), texts(at.warning)
    assert at.number_input(key="train_epochs").value == 3 and at.text_input(key="train_hidden").value == "256"
    assert "epochs=3" in share_link(at)


def test_every_stored_model_offers_to_train_again_with_its_settings(app_env, train_env):
    from urllib.parse import parse_qsl

    from core.learning.settings import from_query
    from core.learning.train import TrainConfig
    from core.storage.store import ModelStore

    at = app().run()
    links = [p.proto for p in at.get("page_link") if p.proto.label == "Train again with these settings"]
    assert len(links) == 2 and {p.page for p in links} == {"Train"}, [p.label for p in at.get("page_link")]
    recorded = TrainConfig.from_dict(ModelStore(app_env).info("test-mlp").hyperparameters)
    assert from_query(dict(parse_qsl(links[0].query_string, keep_blank_values=True))) == recorded

    # Following the link: the Train page's form holds those settings.
    train = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    train.query_params.update(dict(parse_qsl(links[0].query_string, keep_blank_values=True)))
    train.run()
    train.switch_page("pages/1_Train.py").run()
    assert not train.exception and not train.warning, texts(train.warning)
    assert train.radio(key="train_family").value == recorded.spec.family == "mlp"
    assert train.select_slider(key="train_size").value == recorded.train_size == 10000


# --- the architecture editor (Custom) ---------------------------------------------------------------

def layer_ids(at: AppTest) -> list[int]:
    """The row ids of the custom stack being edited, in order (its inputs are keyed by them)."""
    return [row_id for row_id, _ in at.session_state["train_layers"]]


def stack_text(at: AppTest) -> str:
    from core.learning.architecture import layers_text

    return layers_text(tuple(layer for _, layer in at.session_state["train_layers"]))


def custom_train_page() -> AppTest:
    """The Train page with "Custom" chosen: the default stack conv32, pool2, conv64, pool2, dense128, drop0.2."""
    at = app("pages/1_Train.py").run()
    at.radio(key="train_family").set_value("custom").run()
    assert not at.exception, [e.message for e in at.exception]
    assert stack_text(at) == "conv32k3s1,pool2,conv64k3s1,pool2,dense128,drop0.2"
    return at


def test_the_custom_editor_adds_removes_and_reorders_layers_with_live_shapes_and_totals(empty_store_env, train_env):
    at = custom_train_page()
    assert not at.error, texts(at.error)
    text = markdown(at)
    # 28 -conv 3x3-> 26 -pool-> 13 -conv 3x3-> 11 -pool-> 5: flatten 1,600 -> dense 128 -> the output.
    for shape, params in (("(26, 26, 32)", "320"), ("(11, 11, 64)", "18,496"), ("(1600,)", None),
                          ("(128,)", "204,928"), ("(10,)", "1,290")):
        assert f"`{shape}`" in text and (params is None or params in texts(at.markdown)), (shape, params)
    assert "Total: 225,034 parameters" in text and "*flatten (implied)*" in text
    assert "dense 10 + softmax (implied output)" in text
    assert at.query_params["layers"] == stack_text(at) and "filters" not in at.query_params  # the address follows

    # Add a batch normalization at the end: 4 x 128 more parameters.
    at.selectbox(key="train_layer_kind").set_value("bn")
    at.button(key="train_layer_add").click().run()
    assert stack_text(at).endswith("drop0.2,bn") and "Total: 225,546 parameters" in markdown(at)
    # Move the first pooling below the second conv: conv64 now sees 26x26 -> 24x24, pool 12, pool 6.
    at.button(key="train_layer_down_2").click().run()
    assert stack_text(at) == "conv32k3s1,conv64k3s1,pool2,pool2,dense128,drop0.2,bn"
    assert "`(24, 24, 64)`" in markdown(at) and "`(2304,)`" in markdown(at)
    assert "Total: 315,658 parameters" in markdown(at)  # 320 + 18,496 + 295,040 + 512 + 1,290
    at.button(key="train_layer_up_3").click().run()  # and back
    assert stack_text(at) == "conv32k3s1,pool2,conv64k3s1,pool2,dense128,drop0.2,bn"
    # Edit a row: its value follows the layer, the shapes and totals follow the value.
    first = layer_ids(at)[0]
    at.number_input(key=f"train_layer_{first}_filters").set_value(8).run()
    assert stack_text(at).startswith("conv8k3s1,") and "`(26, 26, 8)`" in markdown(at)
    assert "Total: 211,482 parameters" in markdown(at)  # conv8: 80, conv64 on 8 channels: 4,672
    at.button(key="train_layer_down_1").click().run()
    assert stack_text(at).startswith("pool2,conv8k3s1,")
    assert at.number_input(key=f"train_layer_{first}_filters").value == 8
    # Remove rows: the bn at the end, then the dropout.
    at.button(key="train_layer_remove_7").click().run()
    at.button(key="train_layer_remove_6").click().run()
    assert stack_text(at) == "pool2,conv8k3s1,conv64k3s1,pool2,dense128"
    assert not at.error and not at.exception, texts(at.error)
    assert at.query_params["layers"] == stack_text(at)


def test_an_impossible_custom_stack_shows_why_and_queues_nothing(empty_store_env, train_env):
    at = custom_train_page()
    at.selectbox(key="train_layer_kind").set_value("conv")
    at.button(key="train_layer_add").click().run()  # a conv after the dense layer
    why = "Layer 7 (conv 32, 3×3, stride 1): a convolution needs an image, and layer 5 (dense) before it"
    assert any(why in e for e in texts(at.error)), texts(at.error)  # live, before anything is pressed
    assert "Total: —" in markdown(at)
    for button in ("train_submit", "train_quick"):
        at.button(key=button).click().run()
        assert not at.exception, [e.message for e in at.exception]
        assert any(e.startswith("Check the settings") and why in e for e in texts(at.error)), texts(at.error)
    assert not [r for r in train_env.runs() if r.owned_by(at.session_state["run_owner"])]  # nothing queued
    assert not set(ACTIVE_TRAINING) & set(subheaders(at))
    assert at.query_params["layers"] == "conv32k3s1,pool2,conv64k3s1,pool2,dense128,drop0.2"  # the last usable

    # Pooling below 1 px, then a stack too big for the worker's memory: refused the same way.
    at.button(key="train_layer_remove_7").click().run()
    for _ in range(3):
        at.selectbox(key="train_layer_kind").set_value("pool")
        at.button(key="train_layer_add").click().run()
        n = len(layer_ids(at))
        at.button(key=f"train_layer_up_{n}").click().run()
        at.button(key=f"train_layer_up_{n - 1}").click().run()  # above the dense layer and the dropout
    assert any("Layer 7 (max pooling 2×2): it would shrink the image below 1 px" in e for e in texts(at.error))
    for _ in range(3):
        at.button(key="train_layer_remove_5").click().run()
    dense = layer_ids(at)[-2]
    at.number_input(key=f"train_layer_{dense}_units").set_value(4096).run()
    first = layer_ids(at)[0]
    at.number_input(key=f"train_layer_{first}_filters").set_value(512).run()
    at.number_input(key=f"train_layer_{layer_ids(at)[2]}_filters").set_value(512).run()
    at.button(key="train_layer_remove_2").click().run()
    at.button(key="train_layer_remove_3").click().run()
    assert stack_text(at) == "conv512k3s1,conv512k3s1,dense4096,drop0.2", stack_text(at)
    at.button(key="train_submit").click().run()
    assert any("Layer 3 (dense 4096 + ReLU) makes the model too big for a training worker" in e
               and "memory limit of" in e for e in texts(at.error)), texts(at.error)
    assert not [r for r in train_env.runs() if r.owned_by(at.session_state["run_owner"])]


def test_a_custom_stack_trains_through_the_queue_and_its_layers_are_recorded(empty_store_env, train_env):
    from core.learning.architecture import summarize
    from core.storage.store import ModelStore

    at = custom_train_page()
    ids = layer_ids(at)
    at.number_input(key=f"train_layer_{ids[0]}_filters").set_value(8)
    at.number_input(key=f"train_layer_{ids[2]}_filters").set_value(16)
    at.number_input(key=f"train_layer_{ids[4]}_units").set_value(32)
    at.run()
    assert stack_text(at) == "conv8k3s1,pool2,conv16k3s1,pool2,dense32,drop0.2"
    start_small_run(at)

    at = _wait_until_done(at)
    assert any("Training finished" in s for s in texts(at.success)), texts(at.error) + texts(at.warning)
    store = ModelStore(empty_store_env)
    names = store.list().names()
    assert len(names) == 1 and names[0].startswith("custom-"), names
    info = store.info(names[0])
    spec = info.hyperparameters["spec"]
    assert spec["family"] == "custom" and [layer["kind"] for layer in spec["layers"]] == [
        "conv", "pool", "conv", "pool", "dense", "dropout"]
    assert spec["layers"][0] == {"kind": "conv", "filters": 8, "kernel": 3, "stride": 1}
    assert info.params == summarize(tuple(layer for _, layer in at.session_state["train_layers"])).params
    assert [row["layer"] for row in info.layers if row["type"] != "InputLayer"] == [
        "conv1", "relu_conv1", "pool1", "conv2", "relu_conv2", "pool2", "flatten", "dense1", "relu_dense1",
        "dropout1", "probabilities"]
    assert info.test_accuracy is not None and info.test_accuracy > 0.5


def test_a_share_link_with_a_custom_stack_fills_the_editor(app_env, train_env):
    from urllib.parse import parse_qsl, urlsplit

    layers = "conv8k5s2,bn,pool2,dense16,drop0.25"
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT)
    at.query_params.update({"arch": "custom", "layers": layers, "epochs": "2"})
    at.run()
    at.switch_page("pages/1_Train.py").run()
    assert not at.exception and not at.warning, texts(at.warning)
    assert at.radio(key="train_family").value == "custom" and stack_text(at) == layers
    ids = layer_ids(at)
    assert at.number_input(key=f"train_layer_{ids[0]}_kernel").value == 5
    assert at.number_input(key=f"train_layer_{ids[4]}_rate").value == pytest.approx(0.25)
    assert "`(12, 12, 8)`" in markdown(at) and "`(6, 6, 8)`" in markdown(at)  # 28 -5x5 stride 2-> 12 -pool-> 6
    shared = dict(parse_qsl(urlsplit(share_link(at)).query, keep_blank_values=True))
    assert shared["layers"] == layers and shared["epochs"] == "2" and "filters" not in shared
