"""The Compare page (pages/6_Compare.py) and its figure (`core.report.charts.compare_figure`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from core.report.charts import COMPARE_COLORS, compare_figure, compare_points
from tests.test_pages import table_lines

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60  # AppTest's default is 3 s; the machine is shared
PAGE = "pages/6_Compare.py"


def _history(epochs: int, *, loss0: float, seconds_per_epoch: float, validation: bool = True) -> dict:
    """A run's history with values that tell runs apart: loss ``loss0 / epoch``, ``elapsed`` a multiple
    of ``seconds_per_epoch``, accuracy ``1 - loss / 10``."""
    rows = []
    for e in range(1, epochs + 1):
        loss = loss0 / e
        rows.append({"epoch": e, "step": 100 * e, "elapsed": seconds_per_epoch * e + 0.25, "loss": loss,
                     "accuracy": 1 - loss / 10, "val_loss": loss * 1.1 if validation else None,
                     "val_accuracy": 1 - loss / 9 if validation else None})
    return {"epoch": rows, "batch": [{"step": 1, "epoch": 1, "loss": 9.0, "accuracy": 0.0, "elapsed": 0.1}]}


# --- compare_figure --------------------------------------------------------------------------------

def test_compare_figure_draws_each_runs_own_history_by_epoch():
    a = _history(3, loss0=0.9, seconds_per_epoch=10)
    b = _history(5, loss0=0.5, seconds_per_epoch=4)
    fig = compare_figure([("a", a), ("b", b)], "epoch")
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["a", "a (validation)", "a", "a (validation)",
                                          "b", "b (validation)", "b", "b (validation)"]
    loss_a, val_loss_a, acc_a, val_acc_a, loss_b, val_loss_b, acc_b, val_acc_b = fig.data
    assert list(loss_a.x) == [1, 2, 3] and list(loss_b.x) == [1, 2, 3, 4, 5]
    assert list(loss_a.y) == pytest.approx([r["loss"] for r in a["epoch"]])
    assert list(loss_b.y) == pytest.approx([r["loss"] for r in b["epoch"]])
    assert list(acc_b.y) == pytest.approx([r["accuracy"] for r in b["epoch"]])
    assert list(val_loss_a.y) == pytest.approx([r["val_loss"] for r in a["epoch"]])
    assert list(val_acc_b.y) == pytest.approx([r["val_accuracy"] for r in b["epoch"]])
    # Loss on the left subplot, accuracy on the right.
    assert {t.xaxis for t in (loss_a, val_loss_a, loss_b, val_loss_b)} == {"x"}
    assert {t.xaxis for t in (acc_a, val_acc_a, acc_b, val_acc_b)} == {"x2"}
    # One colour per run; training solid, validation dotted; one legend entry per run.
    assert {t.line.color for t in fig.data[:4]} == {COMPARE_COLORS[0]}
    assert {t.line.color for t in fig.data[4:]} == {COMPARE_COLORS[1]}
    assert [t.line.dash for t in fig.data] == ["solid", "dot"] * 4
    assert [t.name for t in fig.data if t.showlegend] == ["a", "b"]
    assert fig.layout.xaxis.title.text == "Epoch"


def test_compare_figure_by_time_uses_elapsed_seconds():
    a = _history(3, loss0=0.9, seconds_per_epoch=10)
    b = _history(2, loss0=0.5, seconds_per_epoch=4)
    fig = compare_figure([("a", a), ("b", b)], "time")
    by_name = {}
    for t in fig.data:
        by_name.setdefault(t.name, list(t.x))
    assert by_name["a"] == pytest.approx([10.25, 20.25, 30.25])
    assert by_name["a (validation)"] == pytest.approx([10.25, 20.25, 30.25])
    assert by_name["b"] == pytest.approx([4.25, 8.25])
    assert fig.layout.xaxis.title.text == "Training time (s)"
    assert fig.layout.xaxis2.title.text == "Training time (s)"


def test_compare_figure_draws_validation_only_where_recorded():
    fig = compare_figure([("plain", _history(2, loss0=1, seconds_per_epoch=1, validation=False)),
                          ("held-out", _history(2, loss0=1, seconds_per_epoch=1))], "epoch")
    assert [t.name for t in fig.data] == ["plain", "plain", "held-out", "held-out (validation)",
                                          "held-out", "held-out (validation)"]
    # The second run keeps the second colour when the first has no validation curve.
    assert {t.line.color for t in fig.data[2:]} == {COMPARE_COLORS[1]}


@pytest.mark.parametrize("history", [{}, {"epoch": []}, {"batch": [{"step": 1, "loss": 2.0}]},
                                     {"epoch": [{"epoch": 1, "loss": float("nan"), "accuracy": None}]},
                                     {"epoch": "not rows"}])
def test_compare_figure_skips_runs_without_curves(history):
    good = _history(2, loss0=1, seconds_per_epoch=1)
    fig = compare_figure([("empty", history), ("good", good)], "epoch")
    assert compare_points(history, "epoch") == []
    assert {t.name for t in fig.data} == {"good", "good (validation)"}
    assert {t.line.color for t in fig.data} == {COMPARE_COLORS[1]}  # colours stay tied to the pick order
    assert len(compare_figure([("empty", history)], "time").data) == 0
    assert len(compare_figure([], "epoch").data) == 0


def test_compare_figure_by_time_skips_rows_without_elapsed():
    history = _history(3, loss0=1, seconds_per_epoch=2)
    del history["epoch"][1]["elapsed"]
    fig = compare_figure([("a", history)], "time")
    assert list(fig.data[0].x) == pytest.approx([2.25, 6.25])
    assert list(compare_figure([("a", history)], "epoch").data[0].x) == [1, 2, 3]


def test_compare_figure_rejects_an_unknown_x():
    with pytest.raises(ValueError, match="x must be 'epoch' or 'time', got 'step'"):
        compare_figure([("a", _history(1, loss0=1, seconds_per_epoch=1))], "step")
    with pytest.raises(ValueError, match="got 'step'"):
        compare_figure([], "step")


# --- the page --------------------------------------------------------------------------------------

NO_CURVES = "test-mlp-no-curves"
SLOW_COPY_SECONDS = 3.5  # the copy's recorded epochs are stretched so its time axis differs


@pytest.fixture
def compare_env(trained_store, tmp_path, monkeypatch) -> Path:
    """A copy of ``trained_store`` where ``test-mlp-copy`` records another test accuracy (0.5), other
    losses and elapsed times, plus ``test-mlp-no-curves`` (an empty history, the oldest model)."""
    from core import config

    root = tmp_path / "models"
    shutil.copytree(trained_store, root)
    copy = json.loads((root / "test-mlp-copy.json").read_text(encoding="utf-8"))
    copy["test_accuracy"] = 0.5
    copy["history"]["epoch"] = [row | {"loss": row["loss"] * 2, "elapsed": row["elapsed"] * SLOW_COPY_SECONDS}
                                for row in copy["history"]["epoch"]]
    (root / "test-mlp-copy.json").write_text(json.dumps(copy), encoding="utf-8")
    for suffix in (".keras", ".onnx", ".novelty.npz"):
        shutil.copyfile(root / f"test-mlp{suffix}", root / f"{NO_CURVES}{suffix}")
    bare = copy | {"name": NO_CURVES, "created": "1999-01-01T00:00:00+00:00", "history": {}}
    (root / f"{NO_CURVES}.json").write_text(json.dumps(bare), encoding="utf-8")
    monkeypatch.setenv(config.MODELS_DIR_ENV, str(root))
    monkeypatch.setenv(config.APP_DATA_DIR_ENV, str(tmp_path / "app-data"))
    monkeypatch.delenv(config.ACTIVE_MODEL_ENV, raising=False)
    return root


def compare_page() -> AppTest:
    """A fresh session that opened Home, then the Compare page."""
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=TIMEOUT).run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def table_rows(at: AppTest) -> dict[str, list[str]]:
    """The settings table's rows: model cell -> all cells."""
    table = next(m.value for m in at.markdown if "| Model |" in m.value)
    lines = table_lines(table)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header), line
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def chart(at: AppTest) -> dict:
    """The page's Plotly figure as JSON (``st.plotly_chart`` is opaque to AppTest otherwise)."""
    (element,) = at.get("plotly_chart")
    return json.loads(element.proto.spec)


def test_compare_page_shows_both_models_with_their_stored_figures(app_env):
    from core.storage.store import ModelStore

    at = compare_page()
    assert [t.value for t in at.title] == ["Compare models"]
    assert at.multiselect(key="compare_models").value == ["test-mlp", "test-mlp-copy"]
    rows = table_rows(at)
    assert set(rows) == {"**test-mlp** (yours)", "**test-mlp-copy**"}
    store = ModelStore(app_env)
    for cell, name in (("**test-mlp** (yours)", "test-mlp"), ("**test-mlp-copy**", "test-mlp-copy")):
        info = store.info(name)
        row = rows[cell]
        assert row["Test acc."] == f"{info.test_accuracy:.2%}"
        assert row["Architecture"] == "MLP dense " + "-".join(map(str, info.hyperparameters["spec"]["hidden"]))
        assert row["Parameters"] == f"{info.params:,}"
        assert row["Epochs"] == "1" and row["Batch size"] == "128"
        assert row["Learning rate"] == "0.01 (onecycle)"
        assert row["Training images"] == "10,000 (10% validation)" and row["Augmentation"] == "no"
    assert not at.info  # two models picked, both with curves
    figure = chart(at)
    assert [t["name"] for t in figure["data"] if t.get("showlegend")] == ["test-mlp", "test-mlp-copy"]


def test_compare_page_x_axis_follows_the_control(compare_env):
    from core.storage.store import ModelStore

    at = compare_page()
    assert at.multiselect(key="compare_models").value == ["test-mlp", "test-mlp-copy"]
    store = ModelStore(compare_env)
    rows = table_rows(at)
    assert rows["**test-mlp-copy**"]["Test acc."] == "50.00%"
    assert rows["**test-mlp** (yours)"]["Test acc."] == f"{store.info('test-mlp').test_accuracy:.2%}"

    def curve(figure: dict, name: str) -> tuple[list, list]:
        trace = next(t for t in figure["data"] if t["name"] == name)  # the loss curve comes first
        return trace["x"], trace["y"]

    by_epoch = chart(at)
    assert by_epoch["layout"]["xaxis"]["title"]["text"] == "Epoch"
    for name in ("test-mlp", "test-mlp-copy"):
        rows = store.info(name).history["epoch"]
        assert curve(by_epoch, name) == ([r["epoch"] for r in rows], pytest.approx([r["loss"] for r in rows]))

    at.segmented_control(key="compare_x").set_value("time").run()
    assert not at.exception, [e.message for e in at.exception]
    by_time = chart(at)
    assert by_time["layout"]["xaxis"]["title"]["text"] == "Training time (s)"
    for name in ("test-mlp", "test-mlp-copy"):
        rows = store.info(name).history["epoch"]
        x, _ = curve(by_time, name)
        assert x == pytest.approx([r["elapsed"] for r in rows])
    assert curve(by_time, "test-mlp-copy")[0] != pytest.approx(curve(by_time, "test-mlp")[0])


def test_compare_page_says_when_fewer_than_two_or_no_curves(compare_env):
    at = compare_page()
    at.multiselect(key="compare_models").set_value(["test-mlp"]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Pick at least two models to compare" in i.value for i in at.info)
    assert set(table_rows(at)) == {"**test-mlp** (yours)"}  # the one picked is still shown
    assert {t["name"] for t in chart(at)["data"]} == {"test-mlp", "test-mlp (validation)"}

    at.multiselect(key="compare_models").set_value(["test-mlp", NO_CURVES]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(f"{NO_CURVES}: no curves recorded" in i.value for i in at.info), [i.value for i in at.info]
    assert table_rows(at)[f"**{NO_CURVES}**"]["Epochs"] == "no curves recorded (1 planned)"
    assert {t["name"] for t in chart(at)["data"]} == {"test-mlp", "test-mlp (validation)"}

    at.multiselect(key="compare_models").set_value([]).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Pick at least two models to compare" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_compare_page_with_empty_store_points_to_train(empty_store_env):
    at = compare_page()
    assert any("no trained model yet" in i.value and "Train" in i.value for i in at.info)
    link = at.get("page_link")[-1].proto
    assert (link.label, link.page) == ("Train a model", "Train")  # the page's URL path: /Train
    assert not at.get("plotly_chart") and not at.multiselect
    assert any("No trained model" in w.value for w in at.sidebar.warning)
