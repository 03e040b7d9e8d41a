"""The ``metaeol`` command line."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator

import click

from metaeol.cli_options import encoder_options, make_encoder
from metaeol.cli_store import store_group
from metaeol.cli_sweep import sweep_command
from metaeol.evaluation.commands import download_command, eval_command
from metaeol.templategen.cli import templates_group

DEMO_SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing music on an instrument.",
    "A woman is slicing an onion.",
    "A chef is chopping vegetables in the kitchen.",
    "The stock market fell sharply today.",
    "Shares dropped after the earnings report.",
]


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="metaeol")
def main() -> None:
    """Training-free sentence embeddings from decoder-only LLMs (MetaEOL)."""


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output file: .npy (array in input order) or .parquet (row_id, embedding, error).")
@click.option("--column", "-c", default="text", show_default=True, help="Text column for .jsonl/.csv/.parquet.")
@click.option("--chunk-size", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Rows per resumable chunk.")
@click.option("--normalize", is_flag=True, help="L2-normalise the embeddings.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output and any unfinished run.")
@encoder_options
def embed(input_path: str, output: str, column: str, chunk_size: int, normalize: bool, overwrite: bool,
          **options) -> None:
    """Embed every text of INPUT (.txt one per line, .jsonl, .csv, .parquet) into OUTPUT.

    An interrupted run resumes after its last finished chunk when restarted with the
    same command.
    """
    from tqdm.auto import tqdm

    from metaeol.embed_job import run_embed_job

    with user_errors():
        encoder = make_encoder(options)
        started = time.perf_counter()
        with tqdm(desc="Embedding", unit="row", disable=None) as bar:
            report = run_embed_job(
                encoder, input_path, output, column=column, chunk_size=chunk_size,
                batch_size=options["batch_size"], normalize=normalize, overwrite=overwrite, on_chunk=bar.update,
            )
    elapsed = time.perf_counter() - started
    click.echo(
        f"wrote {report.rows} embeddings to {output} in {elapsed:.1f} s "
        f"({report.chunks_done} chunks computed, {report.chunks_resumed} resumed)", err=True,
    )
    if report.truncated:
        click.echo(f"{report.truncated} texts were longer than {options['max_sentence_tokens']} tokens and were truncated",
                   err=True)
    if report.bad_rows:
        click.echo(f"{report.bad_rows} rows were not text: NaN/null embeddings, listed in {output}.errors.jsonl",
                   err=True)


@main.command()
@click.argument("sentences", nargs=-1)
@encoder_options
def demo(sentences: tuple[str, ...], **options) -> None:
    """Embed a few sentences and print their cosine-similarity matrix."""
    texts = list(sentences) or DEMO_SENTENCES
    with user_errors():
        started = time.perf_counter()
        encoder = make_encoder(options)
        loaded = time.perf_counter()
        embeddings = encoder.encode(texts, batch_size=options["batch_size"])
        done = time.perf_counter()
    if embeddings.ndim == 3:  # several layers: show the first
        embeddings = embeddings[:, 0]
    similarity = encoder.similarity(embeddings, embeddings).numpy()
    click.echo(f"model: {encoder.model_name}  prompts: {encoder.prompt_set.name} ({len(encoder.prompt_set)} templates)"
               f"  layer: {options['layer']}  dtype: {str(encoder.dtype).replace('torch.', '')}  dim: {embeddings.shape[-1]}")
    click.echo("cosine similarity:")
    for i, text in enumerate(texts):
        row = " ".join(f"{v:5.2f}" for v in similarity[i])
        click.echo(f"  [{i}] {row}  {text[:60]}")
    click.echo(f"load {loaded - started:.1f} s, encode {len(texts)} sentences {done - loaded:.1f} s", err=True)


main.add_command(templates_group)
main.add_command(eval_command)
main.add_command(download_command)

main.add_command(store_group)
main.add_command(sweep_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
