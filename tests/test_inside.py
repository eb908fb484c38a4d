"""Inside the network (issue 19, part 1): the layers file ``NAME.layers.onnx`` answers as Keras' own
layers do, ends in the served probabilities, is checked against its checksum, is optional (an older
model is listed and served, and the Inside page and ``python -m core export`` say and do what gets
it); the Inside page draws one panel per layer for a drawn 2, without TensorFlow or Keras."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core import config
from tests.conftest import point_app_at
from tests.helpers_images import as_canvas
from tests.test_pages import app, canvas_state, metric, mnist_test_digit, run_fresh_interpreter, texts

ROOT = config.ROOT
SHIPPED = ROOT / "models"
TEST_MODEL = "test-mlp"  # the trained_store fixture's MLP (tests/conftest.py)
CANVAS_KEY = "inside_canvas"
PANEL = " · output shape "  # in each layer panel's caption
# The layers a panel is expected for, by the Keras class recorded in the model's own layer table
# (its metadata's "layers", written from Keras when it was saved): not from the layers file.
SHOWN_TYPES = ("Conv2D", "Dense", "Activation")


def expected_panels(info) -> list[tuple[str, str]]:
    """(layer name, output shape without the batch axis) of each layer the Inside page must show,
    from the model's recorded Keras layer table: ``"(None, 12, 12, 32)"`` -> ``"(12, 12, 32)"``."""
    rows = []
    for row in info.layers:
        if row["type"] in SHOWN_TYPES:
            dims = tuple(int(d) for d in row["output shape"].strip("()").split(",")[1:] if d.strip())
            rows.append((row["layer"], str(dims)))
    return rows


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, wrong checksum
    path.write_bytes(bytes(data))


def drawn_two() -> dict:
    """A 2 from MNIST's test set drawn on the black (dark theme) canvas, as the canvas component reports it."""
    return canvas_state(as_canvas(mnist_test_digit(2), np.random.default_rng(1), transparent=False))


def panel_captions(at) -> list[str]:
    return [c for c in texts(at.caption) if PANEL in c]


@pytest.fixture(scope="module")
def test_images() -> np.ndarray:
    from core.data import cached_mnist, to_model_input

    return to_model_input(cached_mnist().x_test[:1000])


@pytest.fixture
def store_of(trained_store):
    """``store_of(name)``: the store holding ``name``: the shipped one for default-cnn, the fixture's."""
    from core.storage.store import ModelStore

    return lambda name: ModelStore(SHIPPED if name == config.DEFAULT_MODEL_NAME else trained_store)


@pytest.fixture
def shipped_env(tmp_path, monkeypatch) -> Path:
    """The app pointed at a copy of the shipped store (default-cnn: a CNN, with its layers file)."""
    root = tmp_path / "models"
    shutil.copytree(SHIPPED, root)
    return point_app_at(root, tmp_path, monkeypatch)


@pytest.fixture
def copied_env(trained_store, tmp_path, monkeypatch) -> Path:
    """The app pointed at a copy of the trained store, for tests that change its files."""
    root = tmp_path / "models"
    shutil.copytree(trained_store, root)
    return point_app_at(root, tmp_path, monkeypatch)


# --- the layers file against Keras ------------------------------------------------------------------

@pytest.mark.parametrize("name", [config.DEFAULT_MODEL_NAME, TEST_MODEL])
def test_layers_file_matches_keras_layer_by_layer_on_1000_test_images(name, store_of, test_images):
    import keras

    from core.learning.persist import load_model
    from core.serving.inside import LayersRuntime

    store = store_of(name)
    model = load_model(store, name)
    runtime = LayersRuntime.load(name, store)
    expected = [layer for layer, _ in expected_panels(store.info(name))]
    assert [layer for layer, _, _ in runtime.layers] == expected
    # Keras' own intermediate outputs, from a sub-model made here (not the one the export made).
    sub = keras.Model(model.inputs, [model.get_layer(layer).output for layer in expected])
    keras_outputs = sub.predict(test_images, batch_size=500, verbose=0)
    ours = [runtime.run(x) for x in test_images]
    for i, layer in enumerate(expected):
        got = np.stack([outputs[i].values for outputs in ours])
        assert got.shape == keras_outputs[i].shape, layer
        scale = max(1.0, float(np.abs(keras_outputs[i]).max()))
        np.testing.assert_allclose(got, keras_outputs[i], atol=1e-5 * scale, err_msg=layer)
    first = "conv1" if name == config.DEFAULT_MODEL_NAME else "dense1"
    assert runtime.first.layer == first
    np.testing.assert_array_equal(runtime.first.kernel, model.get_layer(first).get_weights()[0])
    assert runtime.first.tiles().shape == ((32, 5, 5) if first == "conv1" else (256, 28, 28))


@pytest.mark.parametrize("name", [config.DEFAULT_MODEL_NAME, TEST_MODEL])
def test_last_layer_is_the_served_probabilities(name, store_of, test_images):
    from core.serving.inside import LayersRuntime
    from core.serving.predict import Predictor

    store = store_of(name)
    runtime, predictor = LayersRuntime.load(name, store), Predictor.load(name, store)
    x = test_images[:50]
    last = np.stack([runtime.run(image)[-1].values for image in x])
    assert runtime.layers[-1][0] == "probabilities"
    np.testing.assert_allclose(last, predictor.probabilities(x), atol=1e-6)


# --- the file in the store -------------------------------------------------------------------------

def test_an_altered_layers_file_is_refused_and_the_model_still_served(copied_env):
    from core.serving.inside import LayersRuntime
    from core.serving.predict import Predictor
    from core.storage.store import ModelStore, StoreError

    flip_a_byte(copied_env / f"{TEST_MODEL}.layers.onnx")
    store = ModelStore(copied_env)
    with pytest.raises(StoreError, match=r"test-mlp\.layers\.onnx of 'test-mlp' does not match the checksum"):
        LayersRuntime.load(TEST_MODEL, store)
    assert TEST_MODEL in store.list().names()
    assert Predictor.load(TEST_MODEL, store).predict_input(mnist_test_digit(2) / 255.0).digit == 2
    at = app("pages/7_Inside.py").run()
    at.session_state[CANVAS_KEY] = drawn_two()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("cannot be shown" in e and "does not match the checksum" in e for e in texts(at.error)), \
        texts(at.error)
    assert not panel_captions(at) and metric(at, "Predicted digit") is None


def test_a_model_without_layers_file_is_listed_served_and_told_how_to_get_it(copied_env, monkeypatch):
    from core.__main__ import main
    from core.serving.inside import LayersRuntime
    from core.serving.predict import Predictor
    from core.storage.store import MissingFileError, ModelStore

    # A model saved before layers files: none on disk, none in its metadata.
    meta_path = copied_env / f"{TEST_MODEL}.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    del meta["files"][".layers.onnx"]
    meta_path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    (copied_env / f"{TEST_MODEL}.layers.onnx").unlink()
    served = {s: (copied_env / f"{TEST_MODEL}{s}").read_bytes() for s in (".onnx", ".novelty.npz")}
    store = ModelStore(copied_env)
    assert TEST_MODEL in store.list().names() and not store.list().problems
    assert Predictor.load(TEST_MODEL, store).predict_input(mnist_test_digit(2) / 255.0).digit == 2
    with pytest.raises(MissingFileError, match="python -m core export test-mlp"):
        LayersRuntime.load(TEST_MODEL, store)
    at = app("pages/7_Inside.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("no layers file" in i and "`python -m core export test-mlp`" in i for i in texts(at.info)), \
        texts(at.info)
    assert not panel_captions(at)

    # The command the page gives writes the layers file alone, and records its checksum; the served
    # files stay byte for byte, and the rest of the metadata as it was.
    assert main(["export", TEST_MODEL]) == 0
    assert {s: (copied_env / f"{TEST_MODEL}{s}").read_bytes() for s in served} == served
    after = json.loads(meta_path.read_text(encoding="utf-8"))
    assert set(after.pop("files")) == {".keras", ".onnx", ".novelty.npz", ".layers.onnx"}
    assert list(after) == [k for k in meta if k != "files"] and after == {k: v for k, v in meta.items() if k != "files"}
    assert len(LayersRuntime.load(TEST_MODEL, ModelStore(copied_env)).layers) == 5
    at = app("pages/7_Inside.py").run()
    at.session_state[CANVAS_KEY] = drawn_two()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(panel_captions(at)) == 5 and metric(at, "Predicted digit") == "2"


def test_a_name_whose_files_would_be_another_models_layers_file_is_refused():
    from core.storage.store import StoreError, check_name

    assert check_name("digits.v2") == "digits.v2"
    for bad in ("default-cnn.layers", "mine.LAYERS"):
        with pytest.raises(StoreError, match="Invalid model name"):
            check_name(bad)


# --- the page ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [TEST_MODEL, config.DEFAULT_MODEL_NAME])
def test_inside_page_shows_one_panel_per_layer_for_a_drawn_two(model, request):
    from core.storage.store import ModelStore

    root = request.getfixturevalue("app_env" if model == TEST_MODEL else "shipped_env")
    expected = expected_panels(ModelStore(root).info(model))
    at = app("pages/7_Inside.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert texts(at.title) == ["Inside the network"]
    assert any(i.startswith("Draw a digit on the canvas") for i in texts(at.info)), texts(at.info)
    assert not panel_captions(at)

    at.session_state[CANVAS_KEY] = drawn_two()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert metric(at, "Predicted digit") == "2"
    captions = panel_captions(at)
    assert len(captions) == len(expected), captions
    for caption, (layer, shape) in zip(captions, expected):
        assert caption.startswith(f"**{layer}** · ") and (
            caption.endswith(f"output shape {shape}") or f"output shape {shape} · showing the first 32 of" in caption
        ), (caption, layer, shape)
    maps = [shape for _, shape in expected if shape.count(",") == 2]
    # What the model sees, the first layer's weights, and one grid per convolution-like layer.
    assert len(at.image) == 2 + len(maps)
    if model == config.DEFAULT_MODEL_NAME:
        assert any("relu_conv3" in c and "showing the first 32 of 128 channels" in c for c in captions), captions
        assert any("Its 32 learned 5×5 filters" in c for c in texts(at.caption))
    else:
        assert any("units of `dense1` (of 256) that respond most" in c for c in texts(at.caption))


def test_home_links_to_the_inside_page(app_env):
    at = app().run()
    assert not at.exception
    links = {link.proto.page: link.proto.label for link in at.get("page_link")}
    assert links.get("Inside") == "**Inside**"  # the page's URL path: /Inside


def test_inside_page_never_imports_tensorflow(app_env, tmp_path):
    # In a fresh interpreter (this test process imported TensorFlow for the fixture model): the page
    # reads a drawn 2 and draws its panels, then neither TensorFlow nor Keras is loaded.
    canvas = tmp_path / "canvas.npy"
    np.save(canvas, as_canvas(mnist_test_digit(2), np.random.default_rng(1), transparent=False))
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from tests.test_pages import canvas_state, metric\n"
        f"at = AppTest.from_file({str(ROOT / 'Home.py')!r}, default_timeout=60).run()\n"
        "at.switch_page('pages/7_Inside.py').run()\n"
        f"at.session_state[{CANVAS_KEY!r}] = canvas_state(np.load({str(canvas)!r}))\n"
        "at.run()\n"
        "assert not at.exception, [e.message for e in at.exception]\n"
        "print('DIGIT=' + str(metric(at, 'Predicted digit')))\n"
        f"print('PANELS=' + str(sum({PANEL!r} in c.value for c in at.caption)))\n"
        "print('HEAVY=' + ','.join(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)))\n"
    )
    stdout = run_fresh_interpreter(code, timeout=180)
    assert "DIGIT=2\n" in stdout and "PANELS=5\n" in stdout, stdout
    assert "HEAVY=\n" in stdout, f"the Inside page imported {stdout.split('HEAVY=')[-1].strip()}"


# --- the pictures (pure functions) ---------------------------------------------------------------------

def test_feature_grids_bars_and_captions():
    from core.serving.inside import FirstWeights, LayerOutput, LayersError, strongest_units
    from core.report.layers import activation_bars, feature_grid, panel_caption, tile_colours, tile_grid

    maps = LayerOutput("relu_conv3", "Activation", "relu", np.arange(2 * 2 * 40, dtype=np.float32).reshape(2, 2, 40))
    grid = feature_grid(maps)  # 32 of the 40 channels: 4 rows of 8 tiles, 2x2 scaled to 48 px, 2 px apart
    assert grid.size == (8 * 48 + 7 * 2, 4 * 48 + 3 * 2)
    assert panel_caption(maps) == ("**relu_conv3** · ReLU · output shape (2, 2, 40) · "
                                   "showing the first 32 of 40 channels")
    signed = tile_colours(np.array([[[-2.0, 0.0, 1.0]]], np.float32))
    assert signed[0, 0, 0].tolist() == [33, 113, 181] and signed[0, 0, 1].tolist() == [0, 0, 0]
    assert signed[0, 0, 2, 0] == 114  # half the largest magnitude: half the red
    assert tile_colours(np.array([[[0.0, 2.0]]], np.float32))[0, 0].tolist() == [[0, 0, 0], [255, 255, 255]]
    with pytest.raises(ValueError, match="at least one tile"):
        tile_grid(np.zeros((0, 3, 3), np.float32))

    dense = LayerOutput("dense1", "Dense", "", np.array([0.5, -1.0, 2.0], np.float32))
    fig = activation_bars(dense)
    assert list(fig.data[0].x) == [0, 1, 2] and list(fig.data[0].y) == [0.5, -1.0, 2.0]
    assert panel_caption(dense) == "**dense1** · dense · output shape (3,)"
    probs = LayerOutput("probabilities", "Dense", "softmax", np.eye(10, dtype=np.float32)[7])
    assert list(activation_bars(probs).data[0].x) == [str(d) for d in range(10)]
    assert panel_caption(probs) == "**probabilities** · dense, softmax · output shape (10,)"

    first = FirstWeights("dense1", "Dense", np.random.default_rng(0).normal(size=(784, 3)).astype(np.float32))
    assert first.tiles().shape == (3, 28, 28)
    np.testing.assert_array_equal(first.tiles()[1], first.kernel[:, 1].reshape(28, 28))
    assert strongest_units(first, [dense], count=2) == [2, 0]
    pooled = FirstWeights("dense1", "Dense", np.zeros((14 * 14, 4), np.float32))  # behind a 2x2 pooling
    assert pooled.tiles().shape == (4, 14, 14)
    with pytest.raises(LayersError, match=r"got \(200, 4\)"):
        FirstWeights("dense1", "Dense", np.zeros((200, 4), np.float32)).tiles()
