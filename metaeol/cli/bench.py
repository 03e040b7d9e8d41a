"""``metaeol bench``: MetaEOL's speed on your model, dtype and device, against the dense-FLOP bound."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from metaeol.cli.errors import user_errors
from metaeol.loading import DEFAULT_MODEL

DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")


def _distinct_list(text: str, parse: Callable[[str], Any], what: str, flag: str) -> list[Any]:
    """The comma-separated values of ``text``, each read by ``parse`` (``ValueError`` or None: not one
    of ``what``); all distinct, else a usage error naming ``flag``."""
    try:
        items = [parse(item.strip()) for item in text.split(",")]
    except ValueError:
        items = [None]
    if None in items or len(set(items)) != len(items):
        raise click.BadParameter(f"{text!r}: give distinct {what}, separated by commas", param_hint=flag)
    return items


def _dtypes(text: str) -> list[str]:
    return _distinct_list(text, lambda item: item if item in DTYPES else None,
                          f"dtypes from {', '.join(DTYPES)}", "--dtype")


def _pass_sizes(text: str | None) -> list[int | None]:
    if text is None:
        return [None]
    return _distinct_list(text, lambda item: int(item) if int(item) >= 1 else None,
                          "whole numbers >= 1", "--pass-tokens")


@click.command("bench")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Hub id, local folder or .gguf file.")
@click.option("--prompts", "-p", default="metaeol", show_default=True, help="Prompt set, as for every command.")
@click.option("--layer", "-l", default="-1", show_default=True, help="Hidden-state index (-1 = final output).")
@click.option("--dtype", default="auto", show_default=True,
              help="One or several of auto, float32, bfloat16, float16, int8, separated by commas (e.g. "
                   "float32,bfloat16,int8); each is measured on a freshly loaded model.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
@click.option("--pass-tokens", default=None,
              help="Tokens per engine pass: one or several, separated by commas (e.g. 512,1024,2048), each "
                   "measured with every dtype, to find this machine's fastest (default: the engine's, 512 on CPU, "
                   "16384 on GPU); give the winner to embed, eval or serve as --pass-tokens.")
@click.option("--sentences", "-n", default=64, show_default=True, type=click.IntRange(min=4),
              help="Built-in STS-B-like sentences to encode per dtype.")
@click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--bound-seconds", default=1.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds per row count when measuring the dense-FLOP bound.")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 100),
              help="Time every dtype this many times, dtypes interleaved, and keep each one's best time and "
                   "bound: steadier ratios on a machine whose speed drifts (shared or throttled CPUs).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results as JSON here ('-' for stdout instead of the table).")
def bench_command(model: str, prompts: str, layer: str, dtype: str, device: str | None, pass_tokens: str | None,
                  sentences: int, batch_size: int, bound_seconds: float, rounds: int, json_path: Path | None) -> None:
    """Sentences/s and prompt tokens/s of MetaEOL, peak memory, and the fraction of the dense-FLOP
    bound (the best rate of the model's own linear layers, measured in the same run). Needs no data
    and no network beyond the model itself. With several dtypes, each later one also shows its
    minimum cosine to the first one's vectors; so does each later pass size."""
    from metaeol.benchmark import format_table, run_benchmark
    from metaeol.cli.options import parse_layers
    from metaeol.versions import library_versions

    dtypes, passes = _dtypes(dtype), _pass_sizes(pass_tokens)
    log = (lambda message: None) if str(json_path) == "-" else (lambda message: click.echo(message, err=True))
    with user_errors():
        rows = run_benchmark(model, dtypes, sentences=sentences, batch_size=batch_size, bound_seconds=bound_seconds,
                             rounds=rounds, pass_tokens=passes, log=log, prompts=prompts, layer=parse_layers(layer), device=device)
    report = {"model": model, "prompts": prompts, "layer": layer, "device": device, "batch_size": batch_size,
              "rounds": rounds, "versions": library_versions(), "results": [row.as_dict() for row in rows]}
    if str(json_path) == "-":
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"model: {model}  prompts: {prompts}  layer: {layer}  {sentences} sentences, batch {batch_size}"
               + (f", best of {rounds} interleaved rounds" if rounds > 1 else ""))
    click.echo(format_table(rows))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        click.echo(f"json: {json_path}")
