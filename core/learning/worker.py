"""Dask worker preload: warm a training worker before its first run.

``dask worker tcp://host:8786 --preload core.learning.worker`` (and the embedded `LocalCluster` of
`core.learning.runs`) loads this module in each worker. `dask_setup` imports Keras and TensorFlow and loads
the bundled MNIST on a background thread, so the worker joins the cluster at once and a run
submitted later starts training without paying for the imports.
"""

from __future__ import annotations

import logging
import threading

_LOG = logging.getLogger(__name__)


def _warm() -> None:
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

        from core.data import cached_mnist

        cached_mnist()
    except Exception:  # noqa: BLE001 - a run started later reports the same problem with its message
        _LOG.exception("warming the training worker failed")


def dask_setup(worker) -> None:
    """Called by Dask when the worker starts."""
    threading.Thread(target=_warm, name="digits-warm", daemon=True).start()
