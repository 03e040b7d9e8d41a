"""Versions of the packages that affect the numbers, for results and manifests."""

from __future__ import annotations

import platform
from importlib import metadata

VERSIONED_PACKAGES = ("metaeol", "numpy", "scipy", "scikit-learn", "torch", "transformers")


def library_versions() -> dict[str, str | None]:
    """Python and the installed versions of :data:`VERSIONED_PACKAGES` (None where absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
