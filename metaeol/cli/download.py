"""``metaeol download-data``: fetch the evaluation sets, checksum-verified."""

from __future__ import annotations

import click

from metaeol.cli.errors import user_errors
from metaeol.evaluation.download import DownloadError, download, load_manifest
from metaeol.paths import user_data_root


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.command("download-data")
@click.option("--data", "data_root", type=click.Path(file_okay=False), default=None,
              help="Where to create the SentEval layout (default: $METAEOL_DATA, else ~/.cache/metaeol/senteval, "
                   "where `eval` and `sweep` look first).")
@click.option("--manifest", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Manifest of URLs and sha256 values (default: the packaged one).")
@click.option("--force", is_flag=True, help="Download even when the files are present and verify.")
def download_command(data_root: str, manifest: str | None, force: bool) -> None:
    """Download the evaluation sets into the SentEval layout, verifying sha256 checksums."""
    data_root = data_root or str(user_data_root())
    try:
        with user_errors():
            written = download(data_root, load_manifest(manifest), force=force, log=_log)
    except DownloadError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(written)} files written under {data_root}")
