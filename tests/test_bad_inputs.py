"""The bad-input corpus (tests/bad_inputs.py) through every way a file reaches the model.

(a) the Upload page's core path (``decode_image`` + ``Predictor.read_many``) in a child process,
    with a time bound per file and a bound on the child's peak memory;
(b) the CLI, ``python -m core predict FILE... --json``, in one call over every file;
(c) the Upload page itself under Streamlit's AppTest, all files in one upload.

The model is the shipped ``default-cnn`` (99.6%), copied to a temporary store so nothing touches
the repository's ``models/``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests import bad_inputs as bi

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def items() -> list[bi.BadInput]:
    return bi.corpus()


@pytest.fixture(scope="module")
def corpus_dir(items, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad-inputs")
    bi.write_corpus(folder, items)
    return folder


@pytest.fixture(scope="module")
def shipped_store(tmp_path_factory) -> Path:
    """A temporary store holding a copy of the shipped default model only."""
    root = tmp_path_factory.mktemp("shipped-store")
    for suffix in (".keras", ".onnx", ".json", ".novelty.npz"):  # the shipped files: served ones included
        shutil.copyfile(ROOT / "models" / f"{bi.DEFAULT_MODEL}{suffix}", root / f"{bi.DEFAULT_MODEL}{suffix}")
    return root


def test_corpus_covers_the_brief(items):
    names = {i.name for i in items}
    for required in ("zero_bytes", "text_renamed_png", "html_renamed_png", "svg", "truncated_png", "truncated_jpeg",
                     "png_bomb_gigapixel", "huge_jpeg_8000x8000", "animated_gif_first_frame",
                     "multipage_tiff_first_page", "png_16_bit_grey", "palette_png_transparency", "cmyk_jpeg",
                     "exif_rotated_photo", "rgba_transparent_dark_ink", "one_by_one", "all_white", "all_black",
                     "pure_noise", "name_path_traversal", "name_backslash", "name_non_ascii", "png_named_jpg",
                     "jpeg_named_png"):
        assert required in names, required
    bomb = next(i for i in items if i.name == "png_bomb_gigapixel")
    width, height = int.from_bytes(bomb.data[16:20], "big"), int.from_bytes(bomb.data[20:24], "big")
    assert width * height >= 1_000_000_000 and len(bomb.data) < 200_000  # a real gigapixel bomb, tiny on disk
    huge = next(i for i in items if i.name == "huge_jpeg_8000x8000")
    assert Image.open(io.BytesIO(huge.data)).size == (8000, 8000)
    assert bi.disk_name("dïgit ✓ ٣.png") == "dïgit ✓ ٣.png"
    assert "/" not in bi.disk_name("../../etc/passwd.png") and "\\" not in bi.disk_name("a\\b.png")


# --- (a) the Upload page's core path, bounded in time and memory ------------------------------------

def test_upload_path_answers_every_file_cleanly_in_bounded_time_and_memory(corpus_dir, shipped_store):
    records, summary = bi.run_isolated(corpus_dir, models_dir=shipped_store)
    problems = [f"{r['name']}: {r['problem']}" for r in records if r["problem"]]
    assert not problems, "\n".join(problems)
    assert summary["crashes"] == 0 and summary["answered_cleanly"] == summary["inputs"] == len(records)
    slow = [f"{r['name']}: {r['seconds']:.1f} s" for r in records if r["seconds"] > bi.ITEM_TIMEOUT_S]
    assert not slow, slow
    assert summary["peak_rss_mb"] < bi.PEAK_RSS_LIMIT_MB, summary
    # The bombs are refused from their headers: no item grows the worker's memory by a gigapixel's worth.
    by_name = {r["name"]: r for r in records}
    order = [r["name"] for r in records]
    for bomb in ("png_bomb_gigapixel", "gif_header_bomb", "png_header_bomb", "png_ztxt_bomb"):
        before = by_name[order[order.index(bomb) - 1]]["rss_mb"]
        assert by_name[bomb]["rss_mb"] - before < 100, (bomb, before, by_name[bomb]["rss_mb"])
        assert by_name[bomb]["seconds"] < 2.0, by_name[bomb]
    messages = {r["name"]: r["message"] for r in records}
    assert "empty" in messages["zero_bytes"] and "SVG" in messages["svg"]
    assert "truncated" in messages["truncated_png"] and "truncated" in messages["truncated_jpeg"]
    assert "decompression bomb" in messages["png_bomb_gigapixel"]


def test_upload_path_in_process_matches_the_batched_page_call(items, shipped_store):
    """The page decodes every file, then reads all decoded images in ONE read_many call."""
    from core.reading.preprocess import decode_image

    predictor = bi.load_predictor(shipped_store)
    decoded = []
    for item in items:
        try:
            decoded.append(decode_image(item.data))
        except ValueError as exc:
            decoded.append(exc)
    answers = iter(predictor.read_many([d for d in decoded if not isinstance(d, Exception)]))
    for item, d in zip(items, decoded):
        result = d if isinstance(d, Exception) else next(answers)
        outcome, message = bi.outcome_of(result)
        assert bi.problem(item.expect, outcome, message) is None, (item.name, outcome, message)


# --- (b) the CLI ---------------------------------------------------------------------------------

def test_cli_answers_one_json_object_per_file(items, corpus_dir, shipped_store):
    rows = bi.read_manifest(corpus_dir)
    paths = [str(corpus_dir / r["disk_name"]) for r in rows]
    assert any(not p.isascii() for p in paths), "the non-ASCII name is kept on disk"
    env = {**os.environ, "DIGITS_MODELS_DIR": str(shipped_store), "PYTHONIOENCODING": "utf-8"}
    env.pop("DIGITS_ACTIVE_MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "core", "predict", *paths, "--json", "--model", bi.DEFAULT_MODEL],
                          cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])  # some files cannot be read
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    objs = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout holds only JSON, one per line
    assert [o["file"] for o in objs] == paths
    for row, obj in zip(rows, objs):
        expect = row["expect"]
        if expect == "error":
            assert set(obj) == {"file", "error"} and obj["error"].strip(), (row["name"], obj)
            assert "Traceback" not in obj["error"]
        elif expect == "no_digit":
            assert obj["digit"] is None and obj["message"].strip() and "error" not in obj, (row["name"], obj)
        elif expect == "any":
            assert "error" not in obj and "digit" in obj, (row["name"], obj)
        else:
            assert obj.get("digit") == expect, (row["name"], obj)
            assert len(obj["probabilities"]) == 10 and 0 < obj["confidence"] <= 1


# --- (c) the Upload page under AppTest ---------------------------------------------------------------

@pytest.fixture
def shipped_app_env(shipped_store, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DIGITS_MODELS_DIR", str(shipped_store))
    monkeypatch.setenv("DIGITS_DATA_DIR", str(tmp_path / "app-data"))
    monkeypatch.delenv("DIGITS_ACTIVE_MODEL", raising=False)
    return shipped_store


# Extensions the page's st.file_uploader(type=...) admits; Streamlit itself refuses the others.
PAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def page_name(filename: str) -> str:
    """The upload name for the page test: a name the uploader's ``type=`` admits (``seven.svg``
    becomes ``seven.svg.png``; Streamlit's own refusal is tested separately below)."""
    return filename if filename.lower().endswith(PAGE_TYPES) else filename + ".png"


def upload_page_max_detailed() -> int:
    """The page's MAX_DETAILED (per-file cards drawn), read from its source."""
    import re

    found = re.search(r"^MAX_DETAILED\s*=\s*(\d+)", (ROOT / "pages" / "3_Upload.py").read_text(encoding="utf-8"), re.M)
    return int(found.group(1)) if found else 30


def shown_name(filename: str) -> str:
    """What the page should show for an upload name: the base name, never the folders."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


def test_upload_page_gives_each_bad_file_its_own_error_and_answers_the_rest(items, shipped_app_env):
    import pandas as pd

    from tests.test_pages import app, texts

    at = app("pages/3_Upload.py").run()
    files = [(page_name(i.filename), i.data, "image/png") for i in items]
    at.file_uploader(key="upload_files").set_value(files).run()
    assert not at.exception, [e.message for e in at.exception]

    shown_names = [shown_name(name) for name, _, _ in files]
    # Cards (error / metrics / info) are drawn for the first MAX_DETAILED files; the table lists all.
    detailed = items[:upload_page_max_detailed()]
    errors = [e.value.replace("\\", "") for e in at.error]  # the page escapes markdown punctuation
    bad = [(item, shown) for item, shown in zip(detailed, shown_names) if item.expect == "error"]
    assert len(errors) == len(bad), errors
    for (item, shown), error in zip(bad, errors):
        assert error.startswith(f"**{shown}** cannot be read."), (item.name, error)
        assert len(error) > len(shown) + 30 and "Traceback" not in error and 'File "' not in error

    table = at.dataframe[0].value
    assert list(table["file"]) == shown_names
    assert "passwd.png" in shown_names and "b.png" in shown_names and "dïgit ✓ ٣.png" in shown_names
    answered = []  # the digit each file got in the table (None: no digit / unreadable)
    for item, (_, row) in zip(items, table.iterrows()):
        got = None if pd.isna(row["digit"]) else int(row["digit"])
        answered.append(got)
        if isinstance(item.expect, int):
            assert got == item.expect, item.name
        elif item.expect == "error":
            assert got is None and row["note"].startswith("Cannot be read. "), item.name
        elif item.expect == "no_digit":
            assert got is None and row["note"].strip(), item.name

    digits = [m.value for m in at.metric if m.label == "Predicted digit"]
    assert digits == [str(d) for d in answered[: len(detailed)] if d is not None]
    assert len([m for m in at.metric if m.label == "Confidence"]) == len(digits)
    no_digit = [i for i, d in zip(detailed, answered) if i.expect != "error" and d is None]
    assert len(at.info) == len(no_digit), texts(at.info)
    read = sum(d is not None for d in answered)
    assert at.subheader[0].value == f"{read} of {len(items)} images read"
    if len(items) > len(detailed):
        assert any(f"first {len(detailed)} images" in c.value for c in at.caption)


def test_upload_of_an_extension_outside_the_allowed_types_leaks_nothing(shipped_app_env):
    """A crafted upload named ``*.svg`` (the browser's file picker would not offer it) is refused by
    Streamlit's own server-side extension check before the page runs: the visitor sees Streamlit's
    redacted error (``client.showErrorDetails = "none"``), never a traceback or the file's content."""
    from tests.test_pages import app

    at = app("pages/3_Upload.py").run()
    at.file_uploader(key="upload_files").set_value([("seven.svg", bi.SVG, "image/svg+xml")]).run()
    messages = [e.message for e in at.exception]
    assert len(messages) == 1 and "redacted" in messages[0], messages
    assert not at.exception[0].stack_trace
    assert "svg" not in messages[0].lower()
    assert not [m for m in at.metric if m.label == "Predicted digit"]
