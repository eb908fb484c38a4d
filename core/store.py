"""The model store: per model, in one folder, ``NAME.keras`` (the Keras model, for the learning
tier), ``NAME.onnx`` (its exported inference file, which the web tier serves), ``NAME.novelty.npz``
(its "not a digit" detector) and ``NAME.json`` (metadata, with each file's SHA-256); plus
``active.json`` (the server's default).

Writes are atomic (temporary file in the same folder, then ``os.replace``), and the metadata is
written last, so a model is listed only once all its files are complete: an interrupted save never
leaves a listed half-written model and never touches an existing one. Listing verifies every
file against its recorded checksum: a model with a missing or altered file is reported under
``problems`` and never served.

The store only writes and checks the files it is handed (`ModelStore.write`): it imports no model
runtime. Making the ``.keras`` archive and loading it (with ``safe_mode=True``) is the learning
tier's work (`core.learning.persist`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core import config

KERAS_SUFFIX = ".keras"
ONNX_SUFFIX = ".onnx"  # the exported inference file (core.learning.export)
NOVELTY_SUFFIX = ".novelty.npz"  # the "not a digit" detector (core.novelty)
# The files a model needs to be served, by role.
SERVED = {"onnx": ONNX_SUFFIX, "novelty": NOVELTY_SUFFIX}

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
ACTIVE_FILE = "active.json"


class StoreError(RuntimeError):
    """A model cannot be saved, found or loaded; the message says which and why."""


@dataclass(frozen=True)
class Entry:
    """A listed model: its name, metadata and files."""

    name: str
    meta: dict
    path: Path

    @property
    def is_default(self) -> bool:
        return bool(self.meta.get("shipped")) or self.name == config.DEFAULT_MODEL_NAME


@dataclass
class Listing:
    """Usable models (newest first) and problems found while listing (name -> message)."""

    entries: list[Entry] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def get(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith((".json", ".keras")):
        raise StoreError(
            f"Invalid model name {name!r}: use 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    return name


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_digests: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, inode, size, mtime, ctime) so a listing does not
    reread it. The change time is in the key because any write updates it and, unlike the
    modification time, it cannot be set back: a file altered in place is always read again."""
    stat = path.stat()
    key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]


class ModelStore:
    """Models in a folder (default: ``config.models_dir()``)."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else config.models_dir()

    def keras_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.keras"

    def meta_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    # --- listing ------------------------------------------------------------------------------

    def list(self) -> Listing:
        """All complete models, newest first; corrupt or half-written ones go to ``problems``."""
        listing = Listing()
        if not self.root.is_dir():
            return listing
        for meta_file in sorted(self.root.glob("*.json")):
            name = meta_file.stem
            if meta_file.name == ACTIVE_FILE or meta_file.name.startswith("."):
                continue
            try:
                check_name(name)
                meta, _ = self.verify(name)
            except (StoreError, OSError, ValueError) as exc:
                listing.problems[name] = f"Skipped model {name!r}: {exc}"
                continue
            listing.entries.append(Entry(name, meta, self.keras_path(name)))
        for orphan in self.root.glob("*.keras"):
            if not orphan.name.startswith(".") and not orphan.with_suffix(".json").exists():
                listing.problems[orphan.stem] = f"Skipped model {orphan.stem!r}: it has no metadata file."
        listing.entries.sort(key=lambda e: (str(e.meta.get("created", "")), e.name), reverse=True)
        return listing

    def verify(self, name: str) -> tuple[dict, dict[str, Path]]:
        """A model's metadata and the paths of the files it is served from, after checking them.

        Returns:
            (meta, {"onnx": path, "novelty": path}).

        Raises:
            StoreError: unknown name, unreadable metadata, or a file that is missing or does not
                match the checksum recorded when the model was saved (altered or damaged).
        """
        meta_file = self.meta_path(name)
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"No model named {name!r} in {self.root}.") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"the metadata of {name!r} cannot be read ({exc})") from exc
        if not isinstance(meta, dict):
            raise StoreError("metadata is not a JSON object")
        recorded = meta.get("files")
        if not isinstance(recorded, dict) or not all(s in recorded for s in SERVED.values()):
            raise StoreError(f"it has no exported inference file; make one with `python -m core export {name}`")
        for suffix, expected in recorded.items():
            path = self.root / f"{name}{suffix}"
            if suffix not in (KERAS_SUFFIX, *SERVED.values()):
                raise StoreError(f"its metadata lists an unknown file {path.name}")
            if not path.is_file():
                raise StoreError(f"its file {path.name} is missing")
            if file_sha256(path) != expected:
                raise StoreError(f"its file {path.name} does not match the checksum recorded when it was saved "
                                 "(altered or damaged)")
        return meta, {role: self.root / f"{name}{suffix}" for role, suffix in SERVED.items()}

    # --- saving -------------------------------------------------------------------------------

    def new_name(self, family: str) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        name, i = f"{family}-{stamp}", 1
        while self.meta_path(name).exists() or self.keras_path(name).exists():
            i += 1
            name = f"{family}-{stamp}-{i}"
        return name

    def name_for_save(self, name: str | None, meta: dict, *, overwrite: bool = False) -> str:
        """The name a save of ``meta`` under ``name`` takes: ``name`` itself, or a new
        ``<family>-<UTC time>`` one when it is None.

        Raises:
            StoreError: bad name, or the name exists and ``overwrite`` is False.
        """
        name = check_name(name or self.new_name(str(meta.get("family", "model"))))
        if not overwrite and (self.meta_path(name).exists() or self.keras_path(name).exists()):
            raise StoreError(f"A model named {name!r} already exists in {self.root}.")
        return name

    def write(self, name: str | None, meta: dict, files: dict[str, bytes], *, overwrite: bool = False) -> str:
        """Write a model's files and its metadata atomically; returns the name.

        ``files`` maps suffixes (`KERAS_SUFFIX`, `ONNX_SUFFIX`, `NOVELTY_SUFFIX`) to the bytes of the
        files that make up the model as ``NAME + suffix`` (the ``.keras`` archive is made by
        `core.learning.persist.save_model`). Each is written atomically, the ``.keras`` first; then
        the metadata, with each file's SHA-256 under ``files``, the name and the creation time. The
        metadata goes last: its presence is what makes the model listed, so an interrupted write
        never leaves a listed half-written model. Then the oldest user models beyond the cap go.

        Raises:
            StoreError: bad name, the name exists and ``overwrite`` is False, or a suffix the store
                does not know.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        name = self.name_for_save(name, meta, overwrite=overwrite)
        checksums = self._write_files(name, files)
        meta = {**meta, "name": name, "files": checksums,
                "created": meta.get("created") or datetime.now(timezone.utc).isoformat(timespec="seconds")}
        # Metadata last: its presence is what makes the model listed.
        _atomic_write_bytes(self.meta_path(name), json.dumps(meta, indent=1).encode("utf-8"))
        self.prune()
        return name

    def attach(self, name: str, files: dict[str, bytes]) -> None:
        """Write files beside an existing model (``python -m core export``) and record their checksums.

        Raises:
            StoreError: no such model (its ``.keras`` and metadata must exist), or a suffix the store
                does not know.
        """
        meta_file, keras_file = self.meta_path(name), self.keras_path(name)
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"No model named {name!r} in {self.root} ({exc}).") from exc
        if not keras_file.is_file() or not isinstance(meta, dict):
            raise StoreError(f"No model named {name!r} in {self.root}.")
        checksums = {KERAS_SUFFIX: file_sha256(keras_file), **self._write_files(name, files)}
        _atomic_write_bytes(meta_file, json.dumps({**meta, "files": checksums}, indent=1).encode("utf-8"))

    def _write_files(self, name: str, files: dict[str, bytes]) -> dict[str, str]:
        """Write each ``NAME + suffix`` file atomically, the ``.keras`` archive first; returns their
        SHA-256 by suffix.

        Raises:
            StoreError: a suffix the store does not know (nothing is written).
        """
        known = (KERAS_SUFFIX, *SERVED.values())
        unknown = [suffix for suffix in files if suffix not in known]
        if unknown:
            raise StoreError(f"Cannot write {name!r}: unknown file suffix {unknown[0]!r} "
                             f"(the store keeps {', '.join(known)}).")
        checksums = {}
        for suffix in sorted(files, key=lambda s: s != KERAS_SUFFIX):  # the archive first, as it was always
            _atomic_write_bytes(self.root / f"{name}{suffix}", files[suffix])
            checksums[suffix] = hashlib.sha256(files[suffix]).hexdigest()
        return checksums

    def prune(self, keep: int | None = None) -> list[str]:
        """Remove the oldest user-trained models beyond the cap; the default and the active one stay."""
        keep = config.max_user_models() if keep is None else keep
        active = self.active_name(fallback=False)
        user = [e for e in self.list().entries if not e.is_default and e.name != active]
        removed = []
        for entry in user[keep:]:  # newest first, so the tail is the oldest
            self.delete(entry.name)
            removed.append(entry.name)
        return removed

    def delete(self, name: str) -> None:
        """Remove a model's files (metadata first, so it is never listed half-deleted)."""
        if name == self.active_name(fallback=False):
            self.set_active(None)
        self.meta_path(name).unlink(missing_ok=True)
        keras_path = self.keras_path(name)
        keras_path.unlink(missing_ok=True)
        for suffix in SERVED.values():
            keras_path.with_name(name + suffix).unlink(missing_ok=True)

    def clean_temporaries(self, older_than_s: float = 3600) -> int:
        """Remove leftovers of interrupted saves (hidden temp files older than ``older_than_s``)."""
        n = 0
        for tmp in self.root.glob(".*"):
            if tmp.is_file() and time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink(missing_ok=True)
                n += 1
        return n

    def meta(self, name: str) -> dict:
        entry = self.list().get(name)
        if entry is None:
            raise StoreError(f"No usable model named {name!r} in {self.root}.")
        return entry.meta

    # --- the server's default model --------------------------------------------------------------

    def set_active(self, name: str | None) -> None:
        """Set the server's default model (None clears the choice)."""
        path = self.root / ACTIVE_FILE
        if name is None:
            path.unlink(missing_ok=True)
            return
        if self.list().get(name) is None:
            raise StoreError(f"No usable model named {name!r} in {self.root}; see `python -m core list`.")
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(path, json.dumps({"active": name}).encode("utf-8"))

    def active_name(self, *, fallback: bool = True) -> str | None:
        """The server's default: ``$DIGITS_ACTIVE_MODEL``, else ``active.json``, else the shipped
        default, else the newest model (with ``fallback``)."""
        listing = self.list() if fallback else None
        for candidate in (os.environ.get(config.ACTIVE_MODEL_ENV), self._active_file()):
            if candidate and (listing is None or listing.get(candidate)):
                return candidate
        if not fallback:
            return None
        if listing.get(config.DEFAULT_MODEL_NAME):
            return config.DEFAULT_MODEL_NAME
        return listing.entries[0].name if listing.entries else None

    def configured_active(self) -> str | None:
        """The default the operator chose (``$DIGITS_ACTIVE_MODEL``, else ``active.json``), usable or not."""
        return os.environ.get(config.ACTIVE_MODEL_ENV) or self._active_file()

    def _active_file(self) -> str | None:
        try:
            return json.loads((self.root / ACTIVE_FILE).read_text(encoding="utf-8")).get("active")
        except (OSError, ValueError, AttributeError):
            return None
