"""An exclusive lock on an output file, so that one run at a time writes it.

The lock is ``OUTPUT.lock``, locked with ``flock`` and holding the holder's pid, host and
start time. The kernel releases a ``flock`` when its process dies, so the lock of a
killed run is taken over by the next run; the file is removed when the lock is released.
Re-entering the lock from the thread that holds it is allowed (the CLI takes it before
loading the model, the job takes it again). POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)


class OutputError(OSError):
    """The output cannot be written."""


class OutputLocked(OutputError):
    """Another run is writing the same output."""


@dataclass
class _Held:
    fd: int
    thread: int
    depth: int = 1


_held: dict[str, _Held] = {}
_guard = threading.Lock()


def lock_path(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".lock")


def _describe(info: dict) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {when}"


def _read_info(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _is_current(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a releasing holder removes it)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _acquire(output: Path) -> int:
    import fcntl

    path = lock_path(output)
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"cannot write {output}: {path.parent} is a file, not a folder")
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(f"cannot write {output}: {err.strerror} ({err.filename})") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_info(fd)
            os.close(fd)
            who = _describe(holder) if holder else "it is starting"
            raise OutputLocked(
                f"{output} is being written by another run ({who}); wait for it to finish or stop it "
                f"(its lock: {path})"
            ) from None
        if _is_current(fd, path):
            break
        os.close(fd)  # locked a file its holder had just removed: lock the new one
    stale = _read_info(fd)
    if stale:
        logger.warning("taking over the lock of a run that ended without releasing it (%s)", _describe(stale))
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode())
    return fd


@contextlib.contextmanager
def output_lock(output: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock on ``output`` for the duration of the block.

    Raises :class:`OutputLocked` naming the holder when another process (or another
    thread of this one) holds it, and :class:`OutputError` when the lock file cannot be
    created next to ``output``.
    """
    path = lock_path(output)
    key = str(path.absolute())
    me = threading.get_ident()
    with _guard:
        held = _held.get(key)
        if held is not None and held.thread != me:
            raise OutputLocked(f"{output} is being written by another thread of this process")
        if held is not None:
            held.depth += 1
        else:
            held = _held[key] = _Held(_acquire(Path(output)), me)
    try:
        yield
    finally:
        with _guard:
            held.depth -= 1
            if held.depth == 0:
                del _held[key]
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # before closing, so that no one locks a file about to vanish
                os.close(held.fd)
