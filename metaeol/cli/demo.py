"""``metaeol demo``: embed a few sentences and print their similarities."""

from __future__ import annotations

import time

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import encoder_options, make_encoder

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing music on an instrument.",
    "A woman is slicing an onion.",
    "A chef is chopping vegetables in the kitchen.",
    "The stock market fell sharply today.",
    "Shares dropped after the earnings report.",
]


@click.command("demo")
@click.argument("sentences", nargs=-1)
@encoder_options
def demo(sentences: tuple[str, ...], **options) -> None:
    """Embed a few sentences and print their cosine-similarity matrix."""
    texts = list(sentences) or DEMO_SENTENCES
    with user_errors(options.get("store")):
        started = time.perf_counter()
        encoder = make_encoder(options)
        loaded = time.perf_counter()
        embeddings = encoder.encode(texts, batch_size=options["batch_size"])
        done = time.perf_counter()
    if embeddings.ndim == 3:  # several layers: show the first
        embeddings = embeddings[:, 0]
    similarity = encoder.similarity(embeddings, embeddings).numpy()
    click.echo(f"model: {encoder.model_name}  prompts: {encoder.prompt_set.name} ({len(encoder.prompt_set)} templates)"
               f"  layer: {options['layer']}  dtype: {encoder.dtype_name}  dim: {embeddings.shape[-1]}")
    click.echo("cosine similarity:")
    for i, text in enumerate(texts):
        row = " ".join(f"{v:5.2f}" for v in similarity[i])
        click.echo(f"  [{i}] {row}  {text[:60]}")
    click.echo(f"load {loaded - started:.1f} s, encode {len(texts)} sentences {done - loaded:.1f} s", err=True)
