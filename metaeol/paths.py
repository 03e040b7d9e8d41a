"""Where metaeol keeps files per user: converted models and downloaded evaluation data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$METAEOL_CACHE``, else ``~/.cache/metaeol``."""
    return Path(os.environ.get("METAEOL_CACHE") or Path.home() / ".cache" / "metaeol")


def user_data_root() -> Path:
    """Where ``metaeol download-data`` writes and evaluation looks first: ``$METAEOL_DATA``,
    else ``senteval`` under :func:`cache_root`."""
    return Path(os.environ.get("METAEOL_DATA") or cache_root() / "senteval")
