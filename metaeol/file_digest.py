"""The sha256 of a file's contents, read once while the file is unchanged.

Digests are kept in ``file-hashes.json`` under :func:`~metaeol.paths.cache_root`, keyed by the
file's path, size, inode and modification and change times; a file is read again only when one of
them changes (writing a file moves its change time, which cannot be set back).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from metaeol.paths import cache_root

logger = logging.getLogger(__name__)

_HASH_CACHE = "file-hashes.json"
_READ_BLOCK = 1 << 22  # 4 MiB


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex of the file's contents, from the digest cache while the file is unchanged."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = f"{resolved}|{stat.st_size}|{stat.st_ino}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
    cache_file = cache_root() / _HASH_CACHE
    cache = _read_cache(cache_file)
    if key in cache:
        return cache[key]
    if stat.st_size > 1 << 30:
        logger.info("hashing %s (%.1f GB) once", resolved, stat.st_size / 1e9)
    digest = hashlib.sha256()
    with open(resolved, "rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    cache = {k: v for k, v in _read_cache(cache_file).items() if not k.startswith(f"{resolved}|")}
    cache[key] = digest.hexdigest()
    _write_cache(cache_file, cache)
    return cache[key]


def _read_cache(cache_file: Path) -> dict[str, str]:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache_file: Path, cache: dict[str, str]) -> None:
    """Atomic replace; a cache that cannot be written only costs a re-read next time."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
        os.replace(tmp, cache_file)
    except OSError as err:
        logger.debug("could not write the weights hash cache %s: %s", cache_file, err)
