"""The model store: per model, in one folder, ``NAME.json`` (metadata, with each file's SHA-256) and
the model's files ``STEM.keras`` (the Keras model, for the learning tier), ``STEM.onnx`` (its
exported inference file, which the web tier serves) and ``STEM.novelty.npz`` (its "not a digit"
detector), and optionally ``STEM.layers.onnx`` (every layer's output, for the Inside page: models
saved before it existed have none, and are listed and served all the same); plus ``active.json``
(the server's default). The stem is the name (``NAME.keras``) for
a model saved once; a save over an existing model writes its files under a fresh stem
``NAME~xxxxxxxx`` (8 hex digits; ``~`` never occurs in a name), recorded under ``stem`` in the
metadata.

Writes are atomic (temporary file in the same folder, then ``os.replace``), and the metadata is
written last, so a model is listed only once all its files are complete: an interrupted save never
leaves a listed half-written model. A save over an existing model never touches the files the old
metadata points to until the new metadata has replaced it, so at any point the metadata points to
a complete set of files, old or new; the previous version's files are removed after that (or, if
the process died first, by the next save of that name or `ModelStore.clean_temporaries`). Listing
verifies every file against its recorded checksum: a model with a missing or altered file is
reported under ``problems`` and never served. An optional file is not needed to list or serve a
model: it is checked against its recorded checksum when it is read (`ModelStore.read_optional`), and
an altered one is refused, never used.

The store only writes and checks the files it is handed (`ModelStore.write`): it imports no model
runtime. Making the ``.keras`` archive and loading it (with ``safe_mode=True``) is the learning
tier's work (`core.learning.persist`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core import config
from core.storage.info import ModelInfo

KERAS_SUFFIX = ".keras"
ONNX_SUFFIX = ".onnx"  # the exported inference file (core.learning.export)
NOVELTY_SUFFIX = ".novelty.npz"  # the "not a digit" detector (core.serving.novelty)
LAYERS_SUFFIX = ".layers.onnx"  # every layer's output, for the Inside page (core.serving.inside)
# The files a model needs to be served, by role.
SERVED = {"onnx": ONNX_SUFFIX, "novelty": NOVELTY_SUFFIX}
# Files a model may have, by role: checked when read, not needed to list or serve the model.
OPTIONAL = {"layers": LAYERS_SUFFIX}
# Every file the store keeps for a model, besides its metadata.
FILE_SUFFIXES = (KERAS_SUFFIX, *SERVED.values(), *OPTIONAL.values())

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
# A file of a model saved over an earlier one: NAME~xxxxxxxx + suffix.
VERSIONED_RE = re.compile(r"^(?P<stem>(?P<name>[^~]+)~[0-9a-f]{8})(?P<suffix>%s)$"
                          % "|".join(map(re.escape, sorted(FILE_SUFFIXES, key=len, reverse=True))))
# Names a model may not take: store files, and NAME.layers, whose NAME.layers.onnx would be the
# layers file of the model NAME.
RESERVED_ENDINGS = (".json", ".keras", ".layers")
ACTIVE_FILE = "active.json"


class StoreError(RuntimeError):
    """A model cannot be saved, found or loaded; the message says which and why."""


class MissingFileError(StoreError):
    """A usable model has no optional file of that kind (it was saved before such files were
    written); the message says how to make it."""


@dataclass(frozen=True)
class Entry:
    """A listed model: its name, metadata and the path of its current ``.keras`` file."""

    name: str
    info: ModelInfo
    path: Path

    @property
    def is_default(self) -> bool:
        return self.info.shipped or self.name == config.DEFAULT_MODEL_NAME


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
    """``name`` when it is a valid model name.

    Raises:
        StoreError: anything else (a path, an empty or over-long name, a store file name, a name
            ending in one of `RESERVED_ENDINGS`).
    """
    if not isinstance(name, str) or not NAME_RE.match(name) or name.lower().endswith(RESERVED_ENDINGS):
        raise StoreError(
            f"Invalid model name {name!r}: use 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"not ending in {', '.join(RESERVED_ENDINGS)}."
        )
    return name


def _stem_of(name: str, info: ModelInfo) -> str:
    """The stem of the files of model ``name`` that its metadata ``info`` records (``name`` when it
    records none).

    Raises:
        StoreError: the recorded stem is not ``name`` or ``name~xxxxxxxx``.
    """
    stem = info.stem or name
    if stem != name and not re.fullmatch(re.escape(name) + r"~[0-9a-f]{8}", stem):
        raise StoreError(f"its metadata records an invalid file stem {stem!r}")
    return stem


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
        with open(path, "rb") as fh:
            _digests[key] = hashlib.file_digest(fh, "sha256").hexdigest()
    return _digests[key]


def read_matching(path: Path, sha256: str) -> bytes:
    """The bytes of the file at ``path``, read once and returned only if their SHA-256 is ``sha256``:
    what a caller gets is exactly what was checked, even if the file changes afterwards.

    Raises:
        OSError: the file cannot be read (FileNotFoundError: it is missing).
        StoreError: its bytes do not match (the file was altered or damaged).
    """
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoreError(f"{path.name} does not match the checksum recorded when it was saved (altered or damaged)")
    return data


class ModelStore:
    """Models in a folder (default: ``config.models_dir()``)."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else config.models_dir()

    def keras_path(self, name: str) -> Path:
        """The path of the ``.keras`` file of ``name``: under the stem its metadata records, else
        ``NAME.keras`` (no metadata, or one that cannot be read). The file may not exist.

        Raises:
            StoreError: invalid name.
        """
        return self.root / f"{self._recorded_stem(name) or name}{KERAS_SUFFIX}"

    def meta_path(self, name: str) -> Path:
        """``NAME.json``, the metadata file of ``name`` (which may not exist).

        Raises:
            StoreError: an invalid name.
        """
        return self.root / f"{check_name(name)}.json"

    def _recorded_stem(self, name: str) -> str | None:
        """The stem of the files of ``name`` that its metadata records: ``name`` when it records
        none or there is no metadata, None when the metadata cannot be read or records an invalid
        stem."""
        try:
            info = self._read_info(name)
        except FileNotFoundError:
            return name
        except (OSError, ValueError):
            return None
        try:
            return _stem_of(name, info)
        except StoreError:
            return None

    def _read_info(self, name: str) -> ModelInfo:
        """The metadata file of ``name``, as it is on disk (unchecked).

        Raises:
            FileNotFoundError: there is none. OSError: it cannot be read. ValueError: it is not a
                JSON object.
        """
        return ModelInfo.from_json(json.loads(self.meta_path(name).read_text(encoding="utf-8")))

    def _checked_info(self, name: str) -> ModelInfo:
        """The metadata file of ``name``, as it is on disk.

        Raises:
            StoreError: there is none, or it cannot be read or is not a JSON object.
        """
        try:
            return self._read_info(name)
        except FileNotFoundError:
            raise StoreError(f"No model named {name!r} in {self.root}.") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"the metadata of {name!r} cannot be read ({exc})") from exc

    def _write_info(self, name: str, info: ModelInfo) -> None:
        _atomic_write_bytes(self.meta_path(name), json.dumps(info.to_json(), indent=1).encode("utf-8"))

    def _version_files(self, name: str) -> dict[Path, str]:
        """The files of every version of ``name`` in the folder (``NAME + suffix`` and
        ``NAME~xxxxxxxx + suffix``), each with its stem."""
        found = {self.root / f"{name}{suffix}": name for suffix in FILE_SUFFIXES}
        for path in self.root.glob(f"{name}~*"):
            m = VERSIONED_RE.match(path.name)
            if m and m["name"] == name:
                found[path] = m["stem"]
        return {path: stem for path, stem in found.items() if path.is_file()}

    def _remove_versions(self, name: str, keep: str | None, older_than_s: float | None = None) -> int:
        """Remove the files of every version of ``name`` except those of the stem ``keep`` (all of
        them when None), only those older than ``older_than_s`` when given; returns how many went."""
        n = 0
        for path, stem in self._version_files(name).items():
            if stem != keep and (older_than_s is None or time.time() - path.stat().st_mtime > older_than_s):
                path.unlink(missing_ok=True)
                n += 1
        return n

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
                info, _ = self.verify(name)
            except (StoreError, OSError, ValueError) as exc:
                listing.problems[name] = f"Skipped model {name!r}: {exc}"
                continue
            listing.entries.append(Entry(name, info, self.root / f"{_stem_of(name, info)}{KERAS_SUFFIX}"))
        for orphan in self.root.glob("*.keras"):
            if orphan.name.startswith(".") or "~" in orphan.name:  # a temporary file, or a version of a model
                continue
            if not orphan.with_suffix(".json").exists():
                listing.problems[orphan.stem] = f"Skipped model {orphan.stem!r}: it has no metadata file."
        listing.entries.sort(key=lambda e: (e.info.created, e.name), reverse=True)
        return listing

    def verify(self, name: str) -> tuple[ModelInfo, dict[str, Path]]:
        """A model's metadata and the paths of the files it is served from (under the stem the
        metadata records), after checking them.

        Returns:
            (info, {"onnx": path, "novelty": path}).

        Raises:
            StoreError: unknown name, unreadable metadata or an invalid stem in it, or a file that is
                missing or does not match the checksum recorded when the model was saved (altered or
                damaged). Optional files (`OPTIONAL`) are not checked here but when they are read
                (`read_optional`).
        """
        info = self._checked_info(name)
        recorded = info.files
        if not all(s in recorded for s in SERVED.values()):
            raise StoreError(f"it has no exported inference file; make one with `python -m core export {name}`")
        stem = _stem_of(name, info)
        for suffix, expected in recorded.items():
            path = self.root / f"{stem}{suffix}"
            if suffix not in FILE_SUFFIXES:
                raise StoreError(f"its metadata lists an unknown file {path.name}")
            if suffix in OPTIONAL.values():
                continue
            if not path.is_file():
                raise StoreError(f"its file {path.name} is missing")
            if file_sha256(path) != expected:
                raise StoreError(f"its file {path.name} does not match the checksum recorded when it was saved "
                                 "(altered or damaged)")
        return info, {role: self.root / f"{stem}{suffix}" for role, suffix in SERVED.items()}

    def read_optional(self, name: str, role: str) -> bytes:
        """The bytes of an optional file of a usable model (``"layers"``: ``STEM.layers.onnx``),
        checked against the checksum its metadata records.

        The file is read once and its bytes are checked, so what is returned is exactly what
        matched: a file altered after the check is never what a caller gets.

        Args:
            name: the model's name.
            role: a key of `OPTIONAL`.

        Returns:
            The file's bytes.

        Raises:
            MissingFileError: the model's metadata records no such file (saved before they were
                written); the message gives the command that writes it.
            StoreError: an unknown role; no usable model of that name (`verify`); the file is
                missing or cannot be read, or does not match its recorded checksum (altered or damaged).
        """
        if role not in OPTIONAL:
            raise StoreError(f"Unknown optional file {role!r}: expected one of {', '.join(OPTIONAL)}.")
        suffix = OPTIONAL[role]
        info, _ = self.verify(name)
        expected = info.files.get(suffix)
        if not expected:
            raise MissingFileError(f"Model {name!r} has no {role} file ({name}{suffix}): it was saved before "
                                   f"those were written. Export it again with `python -m core export {name}`.")
        path = self.root / f"{_stem_of(name, info)}{suffix}"
        try:
            return read_matching(path, expected)
        except FileNotFoundError:
            raise StoreError(f"The {role} file {path.name} of {name!r} is missing. "
                             f"Export it again with `python -m core export {name}`.") from None
        except OSError as exc:
            raise StoreError(f"The {role} file {path.name} of {name!r} cannot be read ({exc}).") from exc
        except StoreError:
            raise StoreError(f"The {role} file {path.name} of {name!r} does not match the checksum recorded when "
                             f"it was saved (altered or damaged); it is not used. Export it again with "
                             f"`python -m core export {name}`.") from None

    def unusable_files(self, name: str) -> list[str]:
        """The suffixes of the served and optional files of ``name`` that cannot be used as they
        are: not recorded in its metadata, missing, or not matching their recorded checksum. What
        ``python -m core export`` writes.

        Raises:
            StoreError: no metadata of that name, metadata that cannot be read, or an invalid stem in it.
        """
        info = self._checked_info(name)
        stem = _stem_of(name, info)
        unusable = []
        for suffix in (*SERVED.values(), *OPTIONAL.values()):
            path = self.root / f"{stem}{suffix}"
            expected = info.files.get(suffix)
            if not expected or not path.is_file() or file_sha256(path) != expected:
                unusable.append(suffix)
        return unusable

    # --- saving -------------------------------------------------------------------------------

    def new_name(self, family: str) -> str:
        """A free name ``<family>-<UTC time>`` (``-2``, ``-3``... when taken)."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        name, i = f"{family}-{stamp}", 1
        while self.meta_path(name).exists() or self.keras_path(name).exists():
            i += 1
            name = f"{family}-{stamp}-{i}"
        return name

    def name_for_save(self, name: str | None, family: str, *, overwrite: bool = False) -> str:
        """The name a save of a ``family`` model under ``name`` takes: ``name`` itself, or a new
        ``<family>-<UTC time>`` one when it is None.

        Raises:
            StoreError: bad name, or the name exists and ``overwrite`` is False.
        """
        name = check_name(name or self.new_name(family))
        if not overwrite and (self.meta_path(name).exists() or self.keras_path(name).exists()):
            raise StoreError(f"A model named {name!r} already exists in {self.root}.")
        return name

    def write(self, name: str | None, info: ModelInfo, files: dict[str, bytes], *, overwrite: bool = False) -> str:
        """Write a model's files and its metadata atomically; returns the name.

        ``files`` maps suffixes (`KERAS_SUFFIX`, `ONNX_SUFFIX`, `NOVELTY_SUFFIX`, `LAYERS_SUFFIX`) to the bytes of the
        files that make up the model as ``STEM + suffix`` (the ``.keras`` archive is made by
        `core.learning.persist.save_model`); the stem is the name, or a fresh ``NAME~xxxxxxxx`` when
        a model of that name exists (``overwrite``). Each file is written atomically, the ``.keras``
        first; then the metadata (replacing the old one in one step), with each file's SHA-256 under
        ``files``, the name, the creation time and the stem when it is not the name. The metadata
        goes last: its presence is what makes the model listed, and until it is replaced the old
        one points to the old files, untouched, so an interrupted write never leaves a listed
        half-written model nor damages the model it overwrites. Then the files of the name's other
        versions (the previous one, leftovers of interrupted overwrites) are removed, and the oldest
        user models beyond the cap go.

        Raises:
            StoreError: bad name, the name exists and ``overwrite`` is False, or a suffix the store
                does not know.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        name = self.name_for_save(name, info.family, overwrite=overwrite)
        stem = name
        if self.meta_path(name).exists():  # never write over the files the current metadata points to
            current = self._recorded_stem(name)
            while stem in (name, current):
                stem = f"{name}~{secrets.token_hex(4)}"
        checksums = self._write_files(stem, files)
        info = info.replace(name=name, files=checksums, stem=stem if stem != name else None,
                            created=info.created or datetime.now(timezone.utc).isoformat(timespec="seconds"))
        # Metadata last: its presence is what makes the model listed, and replacing it is what
        # switches an existing model to the new files.
        self._write_info(name, info)
        self._remove_versions(name, keep=stem)
        self.prune()
        return name

    def attach(self, name: str, files: dict[str, bytes]) -> None:
        """Write files beside an existing model's ``.keras`` (``python -m core export``), under the
        stem its metadata records, and record their checksums (and the ``.keras`` file's).

        The checksums of the model's other files stay recorded; the rest of the metadata file is
        kept as it is on disk (its keys in their order, keys this version does not know included),
        so the new checksums are the only change.

        Raises:
            StoreError: no such model (its ``.keras`` and metadata must exist), an invalid stem in its
                metadata, or a suffix the store does not know.
        """
        try:
            raw = json.loads(self.meta_path(name).read_text(encoding="utf-8"))
            info = ModelInfo.from_json(raw)
        except (OSError, ValueError) as exc:
            raise StoreError(f"No model named {name!r} in {self.root} ({exc}).") from exc
        stem = _stem_of(name, info)
        keras_file = self.root / f"{stem}{KERAS_SUFFIX}"
        if not keras_file.is_file():
            raise StoreError(f"No model named {name!r} in {self.root}.")
        written = self._write_files(stem, files)
        checksums = {**info.files, KERAS_SUFFIX: file_sha256(keras_file), **written}
        raw = raw | info.replace(files=checksums).to_json()  # keys already there keep their place
        _atomic_write_bytes(self.meta_path(name), json.dumps(raw, indent=1).encode("utf-8"))

    def _write_files(self, stem: str, files: dict[str, bytes]) -> dict[str, str]:
        """Write each ``STEM + suffix`` file atomically, the ``.keras`` archive first; returns their
        SHA-256 by suffix.

        Raises:
            StoreError: a suffix the store does not know (nothing is written).
        """
        unknown = [suffix for suffix in files if suffix not in FILE_SUFFIXES]
        if unknown:
            raise StoreError(f"Cannot write {stem.partition('~')[0]!r}: unknown file suffix {unknown[0]!r} "
                             f"(the store keeps {', '.join(FILE_SUFFIXES)}).")
        checksums = {}
        for suffix in sorted(files, key=lambda s: s != KERAS_SUFFIX):  # the archive first, as it was always
            _atomic_write_bytes(self.root / f"{stem}{suffix}", files[suffix])
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
        """Remove a model: its metadata first (so it is never listed half-deleted), then the files
        of its current version and of any other (``NAME~xxxxxxxx`` leftovers). A model that is
        listed as a problem (damaged, half-written) can be deleted too.

        Raises:
            StoreError: an invalid name, or nothing of that name in the store.
        """
        if not self.meta_path(name).exists() and not self._version_files(name):
            raise StoreError(f"No model named {name!r} in {self.root}; see `python -m core list`.")
        if name == self.active_name(fallback=False):
            self.set_active(None)
        self.meta_path(name).unlink(missing_ok=True)
        self._remove_versions(name, keep=None)

    def clean_temporaries(self, older_than_s: float = 3600) -> int:
        """Remove leftovers of interrupted saves older than ``older_than_s``; returns how many files
        went.

        The leftovers are hidden temporary files, and the files of a model's versions that its
        metadata does not point to (an interrupted save over it; ``NAME~xxxxxxxx`` files of a name
        with no metadata). A ``NAME + suffix`` file with no metadata is left alone (listing reports
        it), and so are the files of a model whose metadata cannot be read.
        """
        n = 0
        for tmp in self.root.glob(".*"):
            if tmp.is_file() and time.time() - tmp.stat().st_mtime > older_than_s:
                tmp.unlink(missing_ok=True)
                n += 1
        names = {m["name"] for p in self.root.glob("*~*") if (m := VERSIONED_RE.match(p.name))}
        names |= {p.stem for p in self.root.glob("*.json") if p.name != ACTIVE_FILE}
        for name in sorted(names):
            try:
                keep = self._recorded_stem(name)
            except StoreError:  # not a model name (a hidden file, say)
                continue
            if keep is not None:
                n += self._remove_versions(name, keep=keep, older_than_s=older_than_s)
        return n

    def info(self, name: str) -> ModelInfo:
        """The metadata of a usable model.

        Raises:
            StoreError: no usable model of that name.
        """
        entry = self.list().get(name)
        if entry is None:
            raise StoreError(f"No usable model named {name!r} in {self.root}.")
        return entry.info

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
