"""``metaeol demonstrations``: list the built-in pools, choose demonstrations on STS-B dev."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import encoder_options, make_encoder, parse_layers


@click.group("demonstrations")
def demonstrations_group() -> None:
    """In-context demonstrations (PromptEOL + ICL): pools of candidates and their selection."""


@demonstrations_group.command("pools")
def pools_command() -> None:
    """List the built-in pools: name, candidates, labelled picks."""
    from metaeol.methods.demonstrations import builtin_pools, load_pool

    for name in builtin_pools():
        pool = load_pool(name)
        picks = ", ".join(f"{label}={index}" for label, index in pool.selected.items())
        click.echo(f"{name}: {len(pool.candidates)} candidates; selected: {picks or 'none'}")


@demonstrations_group.command("select")
@click.option("--pool", default="scaling_sentemb", show_default=True, help="Built-in pool name or YAML/JSON pool file.")
@click.option("--candidates", type=click.IntRange(min=1), default=None,
              help="Score only the first N candidates (default: all).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="demonstrations.yaml", show_default=True,
              help="Where the chosen demonstrations go (YAML, or JSON for .json); pass it to --demonstrations.")
@click.option("--data", "data_root", type=click.Path(file_okay=False), default=None,
              help="SentEval data root (default: $METAEOL_DATA, then ../shared/data/senteval).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Quick mode: the first N STS-B dev pairs.")
@click.option("--no-count-check", is_flag=True, help="Accept data files whose sizes differ from the standard ones.")
@click.option("--joint", is_flag=True,
              help="Then search the set as a whole: change one template's demonstration at a time while the dev "
                   "score of the templates' mean (the embedding) rises. No extra encoding; keeps every "
                   "candidate's dev vectors in memory.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bars; a line per scored candidate goes to stderr either way.")
@encoder_options
def select_command(pool: str, candidates: int | None, output: str, data_root: str | None, limit: int | None,
                   no_count_check: bool, joint: bool, progress: bool, **options: Any) -> None:
    """Choose each template's demonstration on STS-B dev, as the official PromptEOL + ICL search:
    every candidate is scored (Spearman x100 of cosines) and the best kept."""
    from metaeol.evaluation.data import DataError, load_task, resolve_data_root
    from metaeol.evaluation.sweep import pooled_pairs
    from metaeol.methods.demonstrations import DemonstrationPool, load_pool
    from metaeol.methods.selection import select_demonstrations

    if options["demonstrations"] is not None:
        raise click.BadParameter("select chooses the demonstrations; leave --demonstrations out",
                                 param_hint="--demonstrations")
    if not isinstance(parse_layers(options["layer"]), int):
        raise click.BadParameter("select scores one layer", param_hint="--layer")
    try:
        pairs = pooled_pairs(load_task("STS-B", resolve_data_root(data_root), split="dev", limit=limit,
                                       check_counts=not no_count_check))
    except DataError as err:
        raise click.ClickException(str(err)) from err
    with user_errors():
        candidates_pool = load_pool(pool)
        if candidates is not None:
            candidates_pool = DemonstrationPool(candidates_pool.name, candidates_pool.candidates[:candidates])
        encoder = make_encoder(options)
        selection = select_demonstrations(encoder, encoder.prompt_set, candidates_pool, pairs,
                                          batch_size=options["batch_size"],
                                          log=lambda message: click.echo(message, err=True),
                                          show_progress_bar=None if progress else False, joint=joint)
        path = selection.demonstrations.save(output)
    for template in encoder.prompt_set:
        index, score = selection.best(template.name)
        demo = candidates_pool.candidates[index]
        shown = "nan" if math.isnan(score) else f"{score:.2f}"
        click.echo(f"{template.name}: candidate {index + 1} {demo.sentence!r} -> {demo.answer_for(template)!r} "
                   f"(STS-B dev Spearman {shown}, {len(pairs)} pairs)")
    if selection.combined is not None:
        click.echo(f"the set, templates averaged: STS-B dev Spearman {selection.combined:.2f} "
                   f"(per-template bests: {selection.independent:.2f})")
    click.echo(f"wrote {Path(path)}; use it with --demonstrations {path}")
