"""The ``metaeol`` command line."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="metaeol")
def main() -> None:
    """Training-free sentence embeddings from decoder-only LLMs (MetaEOL)."""


from metaeol.evaluation.commands import download_command, eval_command  # noqa: E402

main.add_command(eval_command)
main.add_command(download_command)
