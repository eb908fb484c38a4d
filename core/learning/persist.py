"""The Keras side of the model store: serialize a model into the store, and load it back.

The store (`core.storage.store.ModelStore`) only writes and checks files; this module, in the learning tier,
is the one that turns a Keras model into the bytes of ``NAME.keras`` (`save_model`) and loads them
again with ``safe_mode=True`` (`load_model`). The web tier never loads a ``.keras`` file: it serves
the exported inference file written beside it.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

from core.storage.info import ModelInfo
from core.storage.store import KERAS_SUFFIX, ModelStore, StoreError


def _check_keras_file(path: Path) -> None:
    """Cheap structural check of a .keras archive (a zip with a ``config.json``), before Keras reads it."""
    if not path.is_file():
        raise StoreError(f"{path.name} is missing.")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise StoreError(f"{path.name} is not a valid .keras archive ({exc}).") from exc
    if "config.json" not in names:
        raise StoreError(f"{path.name} is not a Keras model archive (no config.json inside).")


def _keras_bytes(store: ModelStore, model, name: str) -> bytes:
    """The ``.keras`` archive of an uncompiled copy of ``model`` (architecture and weights only:
    a smaller file, no optimizer or schedule objects to deserialize), checked before it is used.

    The archive is written to a hidden temporary file in the store's folder (so an interrupted
    save leaves only a leftover that `ModelStore.clean_temporaries` removes), then read back.
    """
    import keras

    clean = keras.Model.from_config(model.get_config())  # the architecture only, no compile state
    clean.set_weights(model.get_weights())
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=KERAS_SUFFIX, dir=store.root)
    os.close(fd)
    try:
        clean.save(tmp)
        _check_keras_file(Path(tmp))
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_model(store: ModelStore, model, info: ModelInfo, name: str | None = None, *, overwrite: bool = False,
               files: dict[str, bytes] | None = None) -> str:
    """Save ``model`` (without optimizer state), the ``files`` beside it and ``info`` atomically to
    ``store``; returns the name.

    Args:
        store: the model store.
        model: a Keras model.
        info: its metadata; ``params`` (the model's parameter count) and ``keras_version`` are added, and
            the store adds ``name``, ``created`` (unless given), ``files`` (each file's SHA-256) and,
            over an existing model, ``stem`` (see `core.storage.store.ModelStore.write`).
        name: the model's name (default: ``<family>-<UTC time>``).
        overwrite: replace a model of that name instead of refusing.
        files: suffixes (such as `core.storage.store.NOVELTY_SUFFIX`) -> the bytes of files that go beside the
            model's ``.keras``, with the same stem (its served files).

    Raises:
        StoreError: bad name, or the name exists and ``overwrite`` is False (checked before the
            model is serialized).
    """
    import keras

    name = store.name_for_save(name, info.family, overwrite=overwrite)
    store.root.mkdir(parents=True, exist_ok=True)
    data = _keras_bytes(store, model, name)
    info = info.replace(params=int(model.count_params()), keras_version=keras.__version__)
    return store.write(name, info, {**(files or {}), KERAS_SUFFIX: data}, overwrite=overwrite)


def load_model(store: ModelStore, name: str):
    """Load a stored model's ``.keras`` file with ``safe_mode=True`` (uncompiled).

    Raises:
        StoreError: unknown name, corrupt file, or unsafe content (e.g. a Lambda layer).
    """
    import keras

    path = store.keras_path(name)
    if not path.is_file():
        raise StoreError(f"No model named {name!r} in {store.root}.")
    _check_keras_file(path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            raise StoreError(
                f"Refused to load {name!r}: it contains unsafe content (such as a Lambda layer) that "
                "could run arbitrary code. Only plain Keras layers are accepted."
            ) from exc
        raise StoreError(f"Cannot load model {name!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any failure inside a corrupt archive
        raise StoreError(f"Cannot load model {name!r}: the file is corrupt or incompatible ({type(exc).__name__}: {exc}).") from exc
