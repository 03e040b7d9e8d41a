"""The ``metaeol`` command line: one module per command, the only package that imports click."""

from __future__ import annotations

import click

from metaeol.cli.bench import bench_command
from metaeol.cli.demo import demo
from metaeol.cli.demonstrations import demonstrations_group
from metaeol.cli.embed import embed
from metaeol.cli.serve import serve
from metaeol.cli.download import download_command
from metaeol.cli.evaluate import eval_command
from metaeol.cli.mteb import mteb_command
from metaeol.cli.store import store_group
from metaeol.cli.sweep import sweep_command
from metaeol.cli.templates import templates_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="metaeol")
def main() -> None:
    """Training-free sentence embeddings from decoder-only LLMs (MetaEOL)."""


for command in (embed, demo, eval_command, sweep_command, download_command, store_group, templates_group, serve,
                mteb_command, bench_command, demonstrations_group):
    main.add_command(command)
