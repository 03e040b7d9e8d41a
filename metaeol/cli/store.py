"""``metaeol store info|prune``: inspect and trim a vector store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from metaeol.cli.errors import user_errors


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


_path_option = click.option(
    "--path", "path", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Store file (SQLite)."
)


@click.group("store")
def store_group() -> None:
    """Inspect or prune a per-template, per-layer vector store."""


@store_group.command("info")
@_path_option
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def info(path: Path, as_json: bool) -> None:
    """Size on disk and rows per model key."""
    from metaeol.settings import VectorSettings
    from metaeol.store import VectorStore

    if not path.exists():
        raise click.ClickException(f"no store at {path}")
    with user_errors(path), VectorStore(path) as store:
        stats = store.stats()
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(f"{stats['path']}: {_human(stats['size_bytes'])} on disk, {stats['rows']} vectors")
    for m in stats["models"]:
        click.echo(
            f"  {m['model_key']}: {m['rows']} vectors ({m['float16_rows']} float16), dim {m['dim']}, "
            f"{m['sentences']} sentences x {m['templates']} templates x {m['layers']} layers, "
            f"{_human(m['payload_bytes'])} of vectors, written {_when(m['first_written'])} .. {_when(m['last_written'])}"
        )
        if VectorSettings.is_outdated_key(m["model_key"]):
            click.echo("    (keyed before weights were identified by their contents: no encoder reads these; "
                       "`metaeol store adopt` re-keys them, `metaeol store prune --model KEY` frees them)")


@store_group.command("adopt")
@_path_option
@click.option("--model", "models", multiple=True, help="A model name, as the outdated keys name it, whose weights "
              "now are those its vectors came from (repeatable).")
def adopt(path: Path, models: tuple[str, ...]) -> None:
    """Re-key vectors stored before weights were identified by their contents.

    Keys naming a hub commit are re-keyed as they are; keys of local weights only for the models
    given with --model, whose weights (hashed now) you vouch the stored vectors came from."""
    from metaeol.settings import VectorSettings, adopted_key
    from metaeol.store import VectorStore
    from metaeol.weights_identity import source_weights_id

    if not path.exists():
        raise click.ClickException(f"no store at {path}")
    local = {}
    for model in models:
        weights = source_weights_id(model, None)
        if not weights.startswith("local-"):
            raise click.ClickException(f"--model {model!r} names no local weights file or folder")
        local[model] = weights
    with user_errors(path), VectorStore(path) as store:
        keys = [m["model_key"] for m in store.stats()["models"] if VectorSettings.is_outdated_key(m["model_key"])]
        if not keys:
            click.echo(f"{path}: no outdated keys")
        for key in keys:
            new_key = adopted_key(key, local)
            if new_key is None:
                click.echo(f"kept {key} (local weights: name them with --model to adopt it)")
                continue
            click.echo(f"{key} -> {new_key}: {store.rename_model(key, new_key)} vectors")


@store_group.command("prune")
@_path_option
@click.option("--model", "model_key", default=None, help="Only this model key (as `store info` lists it).")
@click.option("--older-than-days", type=float, default=None, help="Only vectors written more than this many days ago.")
@click.option("--all", "everything", is_flag=True, help="Allow removing every vector (no --model/--older-than-days).")
def prune(path: Path, model_key: str | None, older_than_days: float | None, everything: bool) -> None:
    """Remove vectors and compact the file."""
    from metaeol.store import VectorStore

    if not path.exists():
        raise click.ClickException(f"no store at {path}")
    if model_key is None and older_than_days is None and not everything:
        raise click.UsageError("give --model and/or --older-than-days, or --all to empty the store")
    with user_errors(path), VectorStore(path) as store:
        before = store.size_bytes()
        removed = store.prune(model_key=model_key, older_than_days=older_than_days)
        after = store.size_bytes()
    click.echo(f"removed {removed} vectors; {_human(before)} -> {_human(after)}")
