"""Errors as one-line CLI messages (exit code 1): the library's input errors, file-system and vector-store failures."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterator

import click


def os_message(err: OSError) -> str:
    """``PATH: reason`` for a raw OSError; a library's own OSError subclass keeps its text."""
    if isinstance(err, (FileExistsError, NotADirectoryError)) and err.filename:
        path = Path(err.filename)
        blocker = next((p for p in (path, *path.parents) if p.is_file()), None)
        if blocker is not None:
            return f"cannot create {path}: {blocker} is a file, not a folder"
    if err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return str(err)


@contextlib.contextmanager
def user_errors(store: object = None) -> Iterator[None]:
    """Turn the library's input errors, an OSError (unwritable output, unreadable file) or an
    SQLite error (``store``: the vector store's path, named in the message) into a
    :class:`click.ClickException`."""
    from metaeol.loading import ModelLoadError
    from metaeol.prompts import PromptSetError
    from metaeol.readers import InputError

    try:
        yield
    except (InputError, PromptSetError, ModelLoadError, ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:
        raise click.ClickException(os_message(err)) from err
    except sqlite3.Error as err:
        where = f" {store}" if store is not None else ""
        raise click.ClickException(f"cannot use the vector store{where}: {err}") from err
