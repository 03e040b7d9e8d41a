"""``metaeol embed``: embed a file of texts, resumably (in one process, or on a Ray cluster with --ray)."""

from __future__ import annotations

import logging
import time
from typing import Any

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import encoder_kwargs, encoder_options, make_encoder

RAY_ONLY = ("address", "num_actors", "threads_per_actor")


@click.command("embed")
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.argument("output_arg", metavar="[OUTPUT]", required=False, type=click.Path())
@click.option("--output", "-o", default=None, type=click.Path(),
              help="Output: .npy (array in input order) or .parquet (row_id, embedding, error); "
                   "with --ray a directory of parquet shards. May also be given as the second argument.")
@click.option("--column", "-c", default="text", show_default=True, help="Text column for .jsonl/.csv/.parquet.")
@click.option("--chunk-size", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Rows per resumable chunk (with --ray: per parquet shard).")
@click.option("--normalize", is_flag=True, help="L2-normalise the embeddings.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output and any unfinished run.")
@click.option("--ray", "use_ray", is_flag=True,
              help="Run on a Ray cluster (pip install 'metaeol[ray]'): OUTPUT is a directory of parquet shards.")
@click.option("--address", default=None,
              help="[--ray] Ray cluster address, 'auto' for the running one (default: start a local cluster).")
@click.option("--num-actors", default=1, show_default=True, type=click.IntRange(min=1),
              help="[--ray] Encoder actors (one model each; one GPU each when the cluster has GPUs).")
@click.option("--threads-per-actor", default=1, show_default=True, type=click.IntRange(min=1),
              help="[--ray] CPU threads (and Ray CPUs) per actor.")
@encoder_options
@click.pass_context
def embed(ctx: click.Context, input_path: str, output_arg: str | None, output: str | None, column: str,
          chunk_size: int, normalize: bool, overwrite: bool, use_ray: bool, address: str | None, num_actors: int,
          threads_per_actor: int, **options) -> None:
    """Embed every text of INPUT (.txt one per line, .jsonl, .csv, .parquet) into OUTPUT.

    An interrupted run resumes after its last finished chunk when restarted with the
    same command. With --ray the work is spread over Ray actors and OUTPUT is a
    directory of parquet shards (row_id, text_sha256, embedding, error) with a
    _metaeol.json manifest; see docs/scale-out.md.
    """
    if (output is None) == (output_arg is None):
        raise click.UsageError("give the output once: as the second argument or with --output")
    output = output or output_arg
    misplaced = [f"--{name.replace('_', '-')}" for name in RAY_ONLY
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if misplaced and not use_ray:
        raise click.UsageError(f"{', '.join(misplaced)} only apply with --ray")
    started = time.perf_counter()
    if use_ray:
        _embed_on_ray(input_path, output, column=column, shard_size=chunk_size, normalize=normalize,
                      overwrite=overwrite, address=address, num_actors=num_actors,
                      threads_per_actor=threads_per_actor, options=options, started=started)
        return
    from tqdm.auto import tqdm

    from metaeol.embed_job import run_embed_job
    from metaeol.output_lock import output_lock

    with user_errors(options.get("store")), output_lock(output):  # locked before the model loads
        encoder = make_encoder(options)
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
    _report_rows(report.truncated, report.bad_rows, report.nonfinite, options,
                 f"NaN/null embeddings, listed in {output}.errors.jsonl")


def _report_rows(truncated: int, bad_rows: int, nonfinite: int, options: dict[str, Any], where: str) -> None:
    if truncated:
        click.echo(f"{truncated} texts were longer than {options['max_sentence_tokens']} tokens and were truncated",
                   err=True)
    if bad_rows:
        click.echo(f"{bad_rows} rows were not text: {where}", err=True)
    if nonfinite:
        click.echo(f"{nonfinite} rows gave non-finite embeddings (NaN/inf): {where}", err=True)


def _embed_on_ray(input_path: str, output: str, *, options: dict[str, Any], started: float, **job: Any) -> None:
    try:
        import ray.data
    except ImportError as err:
        raise click.ClickException("--ray needs Ray Data: pip install 'metaeol[ray]'") from err
    from tqdm.auto import tqdm

    from metaeol.ray.job import run_ray_embed_job

    ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts rows
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset execution plans
    with user_errors(), tqdm(desc="Embedding", unit="row", disable=None) as bar:
        report = run_ray_embed_job(input_path, output, on_shard=bar.update, **job, **encoder_kwargs(options),
                                   encode_batch_size=options["batch_size"])
    elapsed = time.perf_counter() - started
    click.echo(
        f"wrote {report.rows} embeddings to {output} in {elapsed:.1f} s "
        f"({report.shards_done} shards computed, {report.shards_resumed} resumed)", err=True,
    )
    _report_rows(report.truncated, report.bad_rows, report.nonfinite, options,
                 "null embeddings, with an 'error' saying why")
