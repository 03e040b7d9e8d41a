"""Changing a file's bytes in place, for tests of content-based identity."""

from __future__ import annotations

import os


def flip_last_byte(path: str | os.PathLike) -> None:
    """Flip the lowest bit of the file's last byte (same size, same inode)."""
    with open(path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 1]))
