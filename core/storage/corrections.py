"""Corrections visitors give ("Wrong? The right digit is ..."), kept in an embedded SQLite file.

Each row holds the 28x28 input the model saw (784 uint8 bytes), the right label, the model's
prediction, where it came from, the model's name and the time; see ``STORED_NOTE``. The store is
safe under concurrent sessions: every call opens its own connection, the file is in WAL mode
(readers never block the one writer) and writers wait up to ``BUSY_TIMEOUT_S`` for each other.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import threading
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np

from core import config
from core.config import IMAGE_SIZE, NUM_CLASSES

DB_NAME = "corrections.sqlite3"
SOURCES = ("draw", "upload")
MAX_MODEL_NAME = 200
BUSY_TIMEOUT_S = 30.0
SCHEMA_VERSION = 1
PIXELS = IMAGE_SIZE * IMAGE_SIZE

STORED_NOTE = (
    "A correction stores only the 28×28 grayscale image the model saw, the right digit you chose, "
    "the model's prediction, where it came from (drawing or upload), the model's name and the time. "
    "Your original drawing or photo, your IP address and any user id are not stored."
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS corrections (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    created   TEXT    NOT NULL,
    label     INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    predicted INTEGER          CHECK (predicted IS NULL OR predicted BETWEEN 0 AND 9),
    source    TEXT    NOT NULL,
    model     TEXT    NOT NULL,
    image     BLOB    NOT NULL CHECK (length(image) = {PIXELS})
);
PRAGMA user_version = {SCHEMA_VERSION};
"""

# Schema set-up once per file and process; SQLite serializes the rest.
_init_lock = threading.Lock()
_initialized: set[str] = set()


@dataclass(frozen=True, eq=False)
class Correction:
    """One stored correction.

    Attributes:
        id: database id (increasing with time).
        image: uint8 (28, 28) in 0..255, ink bright on black: the input the model saw.
        label: the right digit, 0..9.
        predicted: what the model said, 0..9, or None if unknown.
        source: "draw" or "upload".
        model: the store name of the model that made the prediction.
        created: ISO 8601 UTC timestamp, seconds precision.
    """

    id: int
    image: np.ndarray = field(repr=False)
    label: int
    predicted: int | None
    source: str
    model: str
    created: str

    @property
    def image_float(self) -> np.ndarray:
        """float32 (28, 28) in [0, 1], the model's input."""
        return self.image.astype(np.float32) / 255.0


def _digit(value: object, what: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer digit 0..9, got {value!r} ({type(value).__name__}).")
    if not 0 <= int(value) < NUM_CLASSES:
        raise ValueError(f"{what} must be a digit 0..9, got {int(value)}.")
    return int(value)


def image_to_bytes(image28: np.ndarray) -> bytes:
    """A 28x28 image -> 784 uint8 bytes (row-major).

    Args:
        image28: float (28, 28) in [0, 1] (the model's input), or uint8 (28, 28) in 0..255;
            a trailing or leading axis of size 1 is accepted.

    Raises:
        ValueError: another shape, NaN/inf, or values outside [0, 1] for a float image.
    """
    x = np.asarray(image28)
    if x.shape in ((IMAGE_SIZE, IMAGE_SIZE, 1), (1, IMAGE_SIZE, IMAGE_SIZE)):
        x = x.reshape(IMAGE_SIZE, IMAGE_SIZE)
    if x.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"Expected a 28x28 image (the model's input), got shape {x.shape}. "
                         "Pass the preprocessed image (Prediction.image), not the original.")
    if x.dtype == np.uint8:
        return x.tobytes()
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"Expected a float image in [0, 1] or a uint8 image, got dtype {x.dtype}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("The image contains NaN or infinite values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"Expected float pixel values in [0, 1], got {lo:.3g}..{hi:.3g}. "
                         "Divide uint8 pixels by 255 (or pass them as uint8).")
    return np.rint(x.astype(np.float64) * 255.0).astype(np.uint8).tobytes()


def _image_from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE).copy()


class CorrectionStore:
    """Corrections in an SQLite file (default: ``config.app_data_dir() / "corrections.sqlite3"``).

    Reads of a store that was never written return nothing and create no file; the first ``add``
    creates the folder and the database.
    """

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else config.app_data_dir() / DB_NAME

    # --- connections ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        key = str(self.path.resolve())
        if fresh or key not in _initialized:
            with _init_lock:
                if fresh or key not in _initialized:
                    # WAL is a property of the file: set once, it stays for every later connection.
                    con.execute("PRAGMA journal_mode = WAL")
                    con.executescript(_SCHEMA)
                    _initialized.add(key)
        return con

    def _read(self, sql: str, params: Iterable = ()) -> list[tuple]:
        if not self.path.is_file():
            return []
        with closing(self._connect()) as con:
            return con.execute(sql, tuple(params)).fetchall()

    # --- writing --------------------------------------------------------------------------------

    def add(self, image28: np.ndarray, label: int, predicted: int | None, source: str, model: str) -> int:
        """Store one correction.

        Args:
            image28: the model's input, float32 (28, 28) in [0, 1] (or uint8 0..255).
            label: the right digit, 0..9.
            predicted: the model's answer, 0..9, or None.
            source: "draw" or "upload".
            model: the store name of the model that answered.

        Returns:
            The new correction's id.

        Raises:
            ValueError: a label, prediction, source, model name or image that is not as described.
        """
        label = _digit(label, "label")
        predicted = _digit(predicted, "predicted", allow_none=True)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(map(repr, SOURCES))}, got {source!r}.")
        if not isinstance(model, str) or not model or len(model) > MAX_MODEL_NAME:
            raise ValueError(f"model must be the model's store name (1-{MAX_MODEL_NAME} characters), got {model!r}.")
        blob = image_to_bytes(image28)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con:
            cur = con.execute(
                "INSERT INTO corrections (created, label, predicted, source, model, image) VALUES (?, ?, ?, ?, ?, ?)",
                (created, label, predicted, source, model, blob),
            )
            return int(cur.lastrowid)

    def delete(self, ids: Iterable[int]) -> int:
        """Remove corrections by id (unknown ids are ignored); returns how many were removed."""
        ids = [int(i) for i in ids]
        if not ids or not self.path.is_file():
            return 0
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            removed = 0
            for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
                chunk = ids[start:start + 500]
                removed += con.execute(f"DELETE FROM corrections WHERE id IN ({','.join('?' * len(chunk))})",
                                       chunk).rowcount
            con.execute("COMMIT")
            return removed

    # --- reading --------------------------------------------------------------------------------

    def count(self) -> int:
        """How many corrections are stored."""
        rows = self._read("SELECT COUNT(*) FROM corrections")
        return int(rows[0][0]) if rows else 0

    def label_counts(self) -> np.ndarray:
        """int64 (10,): corrections per right digit."""
        counts = np.zeros(NUM_CLASSES, np.int64)
        for label, n in self._read("SELECT label, COUNT(*) FROM corrections GROUP BY label"):
            counts[int(label)] = int(n)
        return counts

    def list(self, *, newest_first: bool = True, limit: int | None = None) -> list[Correction]:
        """The stored corrections (newest first by default; at most ``limit``)."""
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT id, image, label, predicted, source, model, created FROM corrections ORDER BY id {order}"
        params: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (max(0, int(limit)),)
        return [Correction(int(i), _image_from_bytes(img), int(lab), None if pred is None else int(pred), src, mdl, ts)
                for i, img, lab, pred, src, mdl, ts in self._read(sql, params)]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All corrections as training arrays, oldest first.

        Returns:
            (x, y): uint8 (N, 28, 28) in 0..255 (MNIST's layout) and uint8 (N,) labels.
        """
        x, y, _ = self._arrays_with_ids()
        return x, y

    def _arrays_with_ids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._read("SELECT id, label, image FROM corrections ORDER BY id ASC")
        if not rows:
            return (np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8), np.zeros(0, np.uint8), np.zeros(0, np.int64))
        ids = np.array([r[0] for r in rows], np.int64)
        y = np.array([r[1] for r in rows], np.uint8)
        x = np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE).copy()
        return x, y, ids

    # --- export ---------------------------------------------------------------------------------

    def export_npz(self, path_or_buffer: str | os.PathLike | IO[bytes]) -> int:
        """Write ``x`` (uint8 (N, 28, 28)), ``y`` (uint8 (N,)) and ``ids`` (int64 (N,)) with
        ``np.savez`` (plain arrays: loads with ``allow_pickle=False``). Returns N."""
        x, y, ids = self._arrays_with_ids()
        np.savez(path_or_buffer, x=x, y=y, ids=ids)
        return len(y)

    def export_csv(self, path_or_buffer: str | os.PathLike | IO) -> int:
        """Write a CSV with a header: id, label, predicted (empty if unknown), source, model,
        created, then pixel0..pixel783 (uint8, row-major). Returns the number of rows.

        Accepts a path, a binary buffer (written as UTF-8) or a text buffer.
        """
        rows = self.list(newest_first=False)
        header = ["id", "label", "predicted", "source", "model", "created"] + [f"pixel{i}" for i in range(PIXELS)]

        def write(fh: IO[str]) -> None:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow(header)
            for c in rows:
                out.writerow([c.id, c.label, "" if c.predicted is None else c.predicted, c.source, c.model, c.created,
                              *c.image.reshape(-1).tolist()])

        if isinstance(path_or_buffer, (str, os.PathLike)):
            with open(path_or_buffer, "w", encoding="utf-8", newline="") as fh:
                write(fh)
        elif isinstance(path_or_buffer, io.TextIOBase):
            write(path_or_buffer)
        else:
            text = io.StringIO()
            write(text)
            path_or_buffer.write(text.getvalue().encode("utf-8"))
        return len(rows)

    def npz_bytes(self) -> bytes:
        """``export_npz`` into memory (for a download button)."""
        buffer = io.BytesIO()
        self.export_npz(buffer)
        return buffer.getvalue()

    def csv_bytes(self) -> bytes:
        """``export_csv`` into memory, UTF-8 (for a download button)."""
        buffer = io.BytesIO()
        self.export_csv(buffer)
        return buffer.getvalue()
