"""``metaeol sweep``: prompt-count, meta-task and layer ablations from one encoding pass."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import GRID_OPTIONS, data_options, encoder_options, make_encoder


def _log(message: str) -> None:
    click.echo(message, err=True)


def _scored(best: dict[str, Any]) -> str:
    """``28 (78.02)``, or why there is no best layer (every score undefined)."""
    if best["score"] is None:
        return "none (every score undefined)"
    return f"{best['layer']} ({best['score']:.2f})"


@click.command("sweep")
@click.option("--tasks", default="STS-B:dev", show_default=True,
              help="Comma-separated STS tasks, as for `eval` (STS12..STS16, STS-B, SICK-R, sts); "
                   "NAME:dev picks STS-B's or SICK-R's dev split. Scored at every layer.")
@click.option("--select-on", default="STS-B:dev", show_default=True,
              help="Task whose scores pick the best layer and booster settings (added to --tasks when missing).")
@click.option("--report-on", default=None,
              help="STS tasks scored only at the settings chosen on --select-on, e.g. sts (STS12-16, STS-B and "
                   "SICK-R test); written to OUTPUT/results.json and results.md.")
@click.option("--baseline", default="prompteol", show_default=True, help="Single-template baseline set.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--storage-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="How the vector store keeps vectors.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for random prompt orders and --sample.")
@click.option("--random-orders", default=5, show_default=True, type=click.IntRange(0, 1000))
@click.option("--sample", default=None, type=click.IntRange(2, None), help="Score a seeded random sample of N pairs per task.")
@click.option("--report-sample", default=None, type=click.IntRange(2, None),
              help="Score a seeded random sample of N pairs of each --report-on task only (default: --sample); "
                   "the selection split keeps --sample. A larger sample holds a smaller one.")
@click.option("--max-chunk-mb", default=256, show_default=True, type=click.IntRange(1, None),
              help="Vectors held in memory before they are written to the store.")
@click.option("--float16-check/--no-float16-check", default=True, show_default=True,
              help="Also score float16-rounded vectors to measure what float16 storage would change.")
@click.option("--cost-sentences", default=64, show_default=True, type=click.IntRange(0, None),
              help="--select-on sentences each reported row encodes to measure its encode cost (0: not measured).")
@click.option("--cost-repeats", default=3, show_default=True, type=click.IntRange(1, None),
              help="Timing repeats per row (the best counts).")
@click.option("--plots/--no-plots", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress lines on stderr (warnings and the result are printed either way).")
@data_options
@encoder_options(layer_default="all")
def sweep_command(tasks: str, select_on: str, report_on: str | None, baseline: str, output: Path, storage_dtype: str,
                  seed: int, random_orders: int, sample: int | None, report_sample: int | None, max_chunk_mb: int, float16_check: bool,
                  cost_sentences: int, cost_repeats: int, plots: bool, progress: bool, data_root: str | None, split: str,
                  no_count_check: bool, **options: Any) -> None:
    """Score MetaEOL prompt subsets, meta-task subsets and layers from one encoding pass, and
    choose the layer, booster and method settings on --select-on.

    --token-prepending, --tp-placement, --contrastive, --demonstrations and --embed-filter take
    several settings (off,1:4,1:7): every combination is scored at every layer on --select-on
    only, and the chosen rows on --report-on (each booster or method alone, and the best stack).
    The vector store (--store, default OUTPUT/vectors.db) keeps every per-template vector,
    so a rerun, a larger --sample or more layers encode only what is missing."""
    from metaeol.cli.options import contrastive_grid, demonstrations_grid, embed_filter_grid, token_prepending_grid
    from metaeol.evaluation.method_grid import grid_candidates, run_grid
    from metaeol.evaluation.data import (
        DataError, load_task, parse_sts_specs, parse_task_split, resolve_data_root, task_label,
    )
    from metaeol.evaluation.grid_report import write_results
    from metaeol.evaluation.sweep import combined_prompt_set, pooled_pairs, run_sweep
    from metaeol.evaluation.sweep_report import write_outputs
    from metaeol.layers import expand_layers, resolve_layers
    from metaeol.prompts import load_prompt_set
    from metaeol.store import VectorStore

    started = time.perf_counter()
    log = _log if progress else (lambda message: None)
    with user_errors():
        try:
            specs = parse_sts_specs(tasks, split)
            selection = parse_task_split(select_on, split)
            if selection not in specs:
                specs.append(selection)
            reported = parse_sts_specs(report_on, split) if report_on else []
            if report_sample is not None and not reported:
                raise click.ClickException("--report-sample samples the --report-on tasks; give --report-on too")
            if selection[1] == "test":
                _log(f"warning: selecting the layer on {task_label(*selection)} (a test split) overfits")
            root = resolve_data_root(data_root)
            sizes = {spec: sample if spec in specs or report_sample is None else report_sample
                     for spec in dict.fromkeys(specs + reported)}
            pairs = {task_label(name, s): pooled_pairs(load_task(name, root, split=s, check_counts=not no_count_check),
                                                        sizes[name, s], seed)
                     for name, s in sizes}
        except DataError as err:
            raise click.ClickException(str(err)) from err
        grids = (token_prepending_grid(options), contrastive_grid(options), demonstrations_grid(options),
                 embed_filter_grid(options))
        ablated = load_prompt_set(options["prompts"], tasks=options["meta_tasks"].split(",") if options["meta_tasks"] else None)
        base = load_prompt_set(baseline)
        encoder = make_encoder({**options, **dict.fromkeys(GRID_OPTIONS)},  # the grid adds them
                               prompts=combined_prompt_set(ablated, base), tasks=None, store=None)
        layers = expand_layers(options["layer"], encoder.num_layers)
        candidates = grid_candidates(encoder, ablated, *grids)
        store_path = Path(options["store"]) if options["store"] else output / "vectors.db"
        if 0 in resolve_layers(layers, encoder.num_layers):
            _log("warning: layer 0 is the input embedding: the last token is the same for every sentence, "
                 "so its scores are undefined")
        log(f"{encoder.model_key}: {len(layers)} layers x {len(encoder.prompt_set)} templates; "
             f"tasks {', '.join(f'{label} ({len(p)} pairs)' for label, p in pairs.items())}; store {store_path}")
        store_path.parent.mkdir(parents=True, exist_ok=True)
        with VectorStore(store_path, storage_dtype=storage_dtype) as store:
            res = run_sweep(
                encoder, store, {task_label(*t): pairs[task_label(*t)] for t in specs}, layers, ablated=ablated,
                baseline=base, select_on=task_label(*selection), seed=seed, n_random_orders=random_orders,
                batch_size=options["batch_size"], max_chunk_bytes=max_chunk_mb * 2**20,
                measure_float16=float16_check, log=log,
            )
            grid = run_grid(
                encoder, store, candidates, ablated=ablated, baseline=base, layers=layers, select_on=task_label(*selection), selection=pairs[task_label(*selection)],
                report={task_label(*t): pairs[task_label(*t)] for t in reported}, batch_size=options["batch_size"],
                max_chunk_bytes=max_chunk_mb * 2**20, cost_sentences=cost_sentences, cost_repeats=cost_repeats,
                log=log,
            )
    res["timing"]["command_wall_seconds"] = time.perf_counter() - started
    res["sample"] = grid["sample"] = sample
    grid["report_sample"] = report_sample if report_sample is not None else sample
    grid["seed"], grid["storage_dtype"] = seed, storage_dtype
    paths = {**write_outputs(res, output, plots=plots), **write_results(grid, output)}
    best = res["selection"]["best_layer"]
    click.echo(f"best layer on {res['selection']['task']}: {ablated.name} {_scored(best['metaeol'])}, "
               f"{base.name} {_scored(best['prompteol'])}")
    click.echo(f"chosen on {grid['selection']['task']}: {grid['selection']['chosen']}, "
               + next((f"setting {r['setting']}, layer {r['layer_label']}" for r in grid["rows"]
                       if r["name"] == grid["selection"]["chosen"]), "nothing"))
    click.echo(f"warning: {res['selection']['warning']}")
    for key, path in paths.items():
        click.echo(f"{key}: {path}")
