"""Options and error handling shared by the commands (one spelling and meaning everywhere)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import click

from metaeol.loading import DEFAULT_MODEL


def parse_layers(value: str) -> int | list[int]:
    """``-1`` -> -1; ``-1,12,20`` -> [-1, 12, 20]."""
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as err:
        raise click.BadParameter(f"layers must be integers separated by commas, got {value!r}") from err
    if not items:
        raise click.BadParameter("no layer given")
    return items[0] if len(items) == 1 and "," not in value else items


def encoder_options(command: Callable) -> Callable:
    """Add the options that choose and configure the encoder."""
    options = [
        click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
                     help="Hub id, local folder or .gguf file."),
        click.option("--prompts", "-p", default="metaeol", show_default=True,
                     help="Built-in prompt set (metaeol, prompteol, pcoteol, ke) or a YAML/JSON file."),
        click.option("--meta-tasks", default=None, help="Keep only templates of these meta-tasks, e.g. SA,PI."),
        click.option("--layer", "-l", default="-1", show_default=True,
                     help="Hidden-state index (-1 = final output), or several separated by commas."),
        click.option("--dtype", default="auto", show_default=True,
                     type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
                     help="auto = float32 on CPU, bfloat16 on GPU."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
        click.option("--engine", default="prefix", show_default=True, type=click.Choice(["prefix", "plain"]),
                     help="prefix reuses each template's instruction states; plain runs full prompts."),
        click.option("--pooling", default="last", show_default=True, type=click.Choice(["last", "mean"]),
                     help="last = the method; mean = mean pooling baseline."),
        click.option("--batch-size", "-b", default=32, show_default=True, type=click.IntRange(min=1),
                     help="Sentences per forward pass (each brings one row per template)."),
        click.option("--max-sentence-tokens", default=512, show_default=True, type=click.IntRange(min=1),
                     help="Cut longer sentences to this many tokens (templates are never cut)."),
        click.option("--attn-implementation", default=None, help="sdpa (default) or eager."),
        click.option("--store", default=None, type=click.Path(dir_okay=False),
                     help="SQLite vector store used as a cache: repeated inputs cost no model time."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def make_encoder(options: dict[str, Any]):
    """A MetaEOL encoder from the values of :func:`encoder_options` (others are ignored)."""
    from metaeol import MetaEOL

    return MetaEOL(
        options["model"],
        options["prompts"],
        tasks=options["meta_tasks"].split(",") if options.get("meta_tasks") else None,
        layer=parse_layers(options["layer"]),
        dtype=options["dtype"],
        device=options["device"],
        engine=options["engine"],
        pooling=options["pooling"],
        max_sentence_tokens=options["max_sentence_tokens"],
        attn_implementation=options["attn_implementation"],
        store=options.get("store"),
    )


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's input errors into one clear CLI message (exit code 1)."""
    from metaeol.loading import ModelLoadError
    from metaeol.prompts import PromptSetError
    from metaeol.readers import InputError

    try:
        yield
    except (InputError, PromptSetError, ModelLoadError, ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from err
