"""Run the bad-input corpus (tests/bad_inputs.py) through the Upload page's core path and report.

Each file goes through ``decode_image`` + ``Predictor.read_many`` (as pages/3_Upload.py does) in a
child process; this script prints one line per file (time, outcome, message) and ends with one
line of JSON:

    {"inputs": N, "answered_cleanly": N, "crashes": 0, "wrong": 0, "max_s": ..., "peak_rss_mb": ...,
     "total_s": ..., "detector_fit_s": null, "load_1min": ...}

"answered cleanly" means the expected answer (the digit, "no digit", or a clear error message,
never a traceback) within the per-file time limit; "crashes" counts any other exception or a
timeout (a worker that dies or overruns the whole run counts every file as a crash, and the JSON
line is still printed); ``max_s`` is the slowest file; ``peak_rss_mb`` is the child's peak
resident memory (ONNX Runtime and the model included); ``total_s`` the whole run, corpus included.

    python bench/bad_inputs.py                      # the shipped default-cnn, ~20 s
    python bench/bad_inputs.py --keep DIR           # also leave the corpus files in DIR

The model runs from a temporary copy of its store entry (``NAME.json``, the exported inference
file ``NAME.onnx`` it is served from, its "not a digit" detector ``NAME.novelty.npz`` and
``NAME.keras``), so nothing is written into the store. A model saved before models were exported
needs ``python -m core export NAME`` first (``detector_fit_s`` stays null).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import emit_json, load_1min, say  # noqa: E402
from tests import bad_inputs as bi  # noqa: E402


def private_store(source: Path, model: str, folder: Path) -> tuple[Path, float | None]:
    """Copy ``model``'s files from the store ``source`` into ``folder``. Returns (store, None): the
    detector is part of a saved model now, never fitted here."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".keras", ".onnx", ".json", ".novelty.npz"):
        if (source / f"{model}{suffix}").is_file():
            shutil.copyfile(source / f"{model}{suffix}", folder / f"{model}{suffix}")
    if not (folder / f"{model}.json").is_file():
        raise SystemExit(f"no model {model!r} in {source}")
    if not (folder / f"{model}.onnx").is_file():
        raise SystemExit(f"model {model!r} has no exported inference file; run `python -m core export {model}`")
    return folder, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", type=Path, default=ROOT / "models",
                   help="model store to copy the model from (default: the repository's models/)")
    p.add_argument("--model", default=bi.DEFAULT_MODEL)
    p.add_argument("--keep", type=Path, help="write the corpus here and keep it")
    args = p.parse_args(argv)

    say(f"load average {load_1min()} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as tmp:
        store, fit_s = private_store(args.models_dir, args.model, Path(tmp) / "store")
        # The worker's Predictor finds the detector in the configured store: the private copy.
        os.environ["DIGITS_MODELS_DIR"] = str(store)
        start = time.perf_counter()
        folder = args.keep or Path(tmp) / "corpus"
        rows = bi.write_corpus(folder)
        say(f"corpus: {len(rows)} files, {sum(r['size'] for r in rows) / 1e6:.1f} MB, written in "
            f"{time.perf_counter() - start:.1f} s to {folder}")
        say(f"{'item':28s} {'expect':>8s} {'outcome':>9s} {'ms':>8s} {'rss MB':>7s}  message / problem")

        def echo(r: dict) -> None:
            note = f"PROBLEM: {r['problem']}" if r["problem"] else r["message"][:90]
            say(f"{r['name']:28s} {str(r['expect']):>8s} {str(r['outcome']):>9s} {r['seconds'] * 1e3:8.1f} "
                f"{r['rss_mb'] or 0:7.0f}  {note}")

        try:
            _records, summary = bi.run_isolated(folder, models_dir=store, model=args.model, echo=echo)
        except AssertionError as exc:  # the worker died or overran: still end with the JSON line
            say(f"the corpus run failed: {exc}")
            emit_json({"inputs": len(rows), "answered_cleanly": 0, "crashes": len(rows), "wrong": 0, "max_s": None,
                       "peak_rss_mb": None, "total_s": time.perf_counter() - start, "error": str(exc)[:500]})
            return 1
    summary["total_s"] = time.perf_counter() - start
    summary["detector_fit_s"] = fit_s
    summary["load_1min"] = load_1min()
    say(f"{summary['answered_cleanly']} of {summary['inputs']} answered cleanly, {summary['crashes']} crashes, "
        f"{summary['wrong']} wrong answers; slowest {summary['max_s']:.3f} s (limit {bi.ITEM_TIMEOUT_S:.0f} s); "
        f"peak RSS {summary['peak_rss_mb']:.0f} MB (limit {bi.PEAK_RSS_LIMIT_MB:.0f} MB)")
    emit_json(summary)
    ok = (summary["crashes"] == 0 and summary["answered_cleanly"] == summary["inputs"]
          and summary["peak_rss_mb"] < bi.PEAK_RSS_LIMIT_MB)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
