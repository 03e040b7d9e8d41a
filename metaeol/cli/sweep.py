"""``metaeol sweep``: prompt-count, meta-task and layer ablations from one encoding pass."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np


def parse_sweep_task(spec: str) -> tuple[str, str]:
    """``stsb-dev`` -> ("STS-B", "dev"); ``sickr-test`` -> ("SICK-R", "test"); ``sts12`` -> ("STS12", "test")."""
    from metaeol.evaluation.data import canonical_task

    text = spec.strip()
    split = "test"
    for suffix in ("-dev", "-test", ":dev", ":test", "_dev", "_test"):
        if text.lower().endswith(suffix):
            text, split = text[: -len(suffix)], suffix[1:]
            break
    name = canonical_task({"sickr": "SICK-R", "sick-r": "SICK-R"}.get(text.lower(), text))
    if name not in ("STS-B", "SICK-R") and split != "test":
        raise click.BadParameter(f"{name} has only a test split", param_hint="--tasks")
    return name, split


def sweep_task_label(name: str, split: str) -> str:
    return f"{name}-{split}" if name in ("STS-B", "SICK-R") else name


def load_sweep_tasks(specs: list[str], data_root: str | None, sample: int | None, seed: int):
    """Load STS tasks as pooled :class:`~metaeol.sweep.StsSet` (all subsets' pairs together,
    as the pooled "all" Spearman uses them); optionally a seeded random sample of pairs."""
    from metaeol.evaluation.data import STS_TASKS, Pairs, load_task, resolve_data_root
    from metaeol.sweep import StsSet

    root = resolve_data_root(data_root)
    out = []
    for spec in specs:
        name, split = parse_sweep_task(spec)
        if name not in STS_TASKS:
            raise click.BadParameter(f"{name} is not an STS task; the sweep scores STS tasks", param_hint="--tasks")
        task = load_task(name, root, split=split)
        s1, s2, gold, groups = [], [], [], []
        for sub, pairs in task.splits.items():
            assert isinstance(pairs, Pairs)
            s1 += pairs.sent1
            s2 += pairs.sent2
            gold.append(np.asarray(pairs.targets, dtype=np.float64))
            groups += [sub] * len(pairs)
        gold_arr = np.concatenate(gold)
        if sample is not None and sample < len(gold_arr):
            # a prefix of one seeded permutation: a larger --sample contains the smaller one,
            # so its sentences are already in the store
            idx = np.sort(np.random.default_rng(seed).permutation(len(gold_arr))[:sample])
            s1, s2, groups = [s1[i] for i in idx], [s2[i] for i in idx], [groups[i] for i in idx]
            gold_arr = gold_arr[idx]
        out.append(StsSet(sweep_task_label(name, split), tuple(s1), tuple(s2), gold_arr, tuple(groups)))
    return out


@click.command("sweep")
@click.option("--model", required=True, help="Model id or local path (as `MetaEOL(model)` takes it).")
@click.option("--tasks", default="stsb-dev", show_default=True,
              help="Comma-separated STS tasks: stsb-dev, stsb-test, sickr-test, sts12 .. sts16.")
@click.option("--layers", default="all", show_default=True,
              help="'all' (blocks 1..n-1 and the final normed output) or a list such as -1,8,16.")
@click.option("--prompts", default="metaeol", show_default=True, help="Prompt set to ablate (built-in name or file).")
@click.option("--baseline", default="prompteol", show_default=True, help="Single-template baseline set.")
@click.option("--store", "store_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Vector store (SQLite) used as cache. Default: OUTPUT/vectors.db.")
@click.option("--storage-dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--select-on", default="stsb-dev", show_default=True,
              help="Task whose scores pick the best layer (added to --tasks when missing).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for random prompt orders and --sample.")
@click.option("--random-orders", default=5, show_default=True, type=click.IntRange(0, 1000))
@click.option("--sample", default=None, type=click.IntRange(2, None), help="Score a seeded random sample of N pairs per task.")
@click.option("--data", "data_root", default=None, help="SentEval data root (default ../shared/data/senteval).")
@click.option("--dtype", default=None, help="Model dtype (float32, bfloat16, float16; default: the model's).")
@click.option("--device", default=None, help="Device (cpu, cuda, ...).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1, None))
@click.option("--max-chunk-mb", default=256, show_default=True, type=click.IntRange(1, None),
              help="Vectors held in memory before they are written to the store.")
@click.option("--float16-check/--no-float16-check", default=True, show_default=True,
              help="Also score float16-rounded vectors to measure what float16 storage would change.")
@click.option("--plots/--no-plots", default=True, show_default=True)
def sweep_command(model, tasks, layers, prompts, baseline, store_path, storage_dtype, output, select_on, seed,
                  random_orders, sample, data_root, dtype, device, batch_size, max_chunk_mb, float16_check, plots):
    """Score MetaEOL prompt subsets, meta-task subsets and layers from one encoding pass."""
    import time

    from metaeol.prompts import load_prompt_set
    from metaeol.store import VectorStore
    from metaeol.sweep import (
        combined_prompt_set,
        parse_layers,
        run_sweep,
        write_outputs,
    )

    t0 = time.perf_counter()
    from metaeol.evaluation.data import DataError

    specs = [t for t in tasks.split(",") if t.strip()]
    try:
        sel_name, sel_split = parse_sweep_task(select_on)
        labels = [sweep_task_label(*parse_sweep_task(s)) for s in specs]
    except DataError as err:
        raise click.BadParameter(str(err), param_hint="--tasks/--select-on") from err
    select_label = sweep_task_label(sel_name, sel_split)
    if select_label not in labels:
        specs.append(select_on)
    if sel_split == "test":
        click.echo(f"warning: selecting the layer on {select_label} (a test split) overfits", err=True)
    try:
        sts = load_sweep_tasks(specs, data_root, sample, seed)
    except DataError as err:
        raise click.ClickException(str(err)) from err
    ablated, base = load_prompt_set(prompts), load_prompt_set(baseline)
    combined = combined_prompt_set(ablated, base)

    from metaeol import MetaEOL

    encoder = MetaEOL(model, prompts=combined, dtype=dtype, device=device)
    layer_list = parse_layers(layers, encoder.num_layers)
    store_path = store_path or Path(output) / "vectors.db"
    click.echo(f"{encoder.model_key}: {len(layer_list)} layers x {len(combined)} templates; "
               f"tasks {', '.join(f'{t.name} ({len(t)} pairs)' for t in sts)}; store {store_path}", err=True)
    from metaeol.evaluation.sts import correlations

    def score_fn(cos: np.ndarray, gold: np.ndarray) -> float:
        if np.ptp(cos) == 0:  # constant similarities (e.g. layer 0): no correlation to speak of
            return float("nan")
        return correlations(cos, gold)["spearman"] * 100.0

    with VectorStore(store_path, storage_dtype=storage_dtype) as store:
        res = run_sweep(
            encoder, store, sts, layer_list, ablated=ablated, baseline=base, select_on=select_label, seed=seed,
            n_random_orders=random_orders, batch_size=batch_size, max_chunk_bytes=max_chunk_mb * 2**20,
            measure_float16=float16_check, score_fn=score_fn, log=lambda m: click.echo(m, err=True),
        )
    res["timing"]["command_wall_seconds"] = time.perf_counter() - t0
    res["sample"] = sample
    paths = write_outputs(res, output, plots=plots)
    best = res["selection"]["best_layer"]
    click.echo(f"best layer on {select_label}: MetaEOL {best['metaeol']['layer']} ({best['metaeol']['score']:.2f}), "
               f"PromptEOL {best['prompteol']['layer']} ({best['prompteol']['score']:.2f})")
    click.echo(f"warning: {res['selection']['warning']}")
    for key, p in paths.items():
        click.echo(f"{key}: {p}")
