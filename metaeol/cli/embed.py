"""``metaeol embed``: embed a file of texts, resumably."""

from __future__ import annotations

import time

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import encoder_options, make_encoder


@click.command("embed")
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
    from metaeol.output_lock import output_lock

    with user_errors(options.get("store")), output_lock(output):  # locked before the model loads
        encoder = make_encoder(options)
        started = time.perf_counter()
        with tqdm(desc="Embedding", unit="row", disable=None) as bar:
            report = run_embed_job(
                encoder, input_path, output, column=column, chunk_size=chunk_size,
                batch_size=options["batch_size"], normalize=normalize, overwrite=overwrite,
                on_start=lambda total: bar.reset(total=total), on_chunk=bar.update,
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
