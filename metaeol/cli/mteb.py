"""``metaeol mteb``: run MTEB tasks (or STS-B from the local SentEval files) with MetaEOL."""

from __future__ import annotations

from typing import Any

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import encoder_options, make_encoder

ENGLISH_STS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICK-R")


@click.command("mteb")
@click.option("--tasks", default=None,
              help="MTEB task names, comma-separated (fetched from the Hugging Face hub). Default without "
                   f"--local-stsb: the English STS tasks {','.join(ENGLISH_STS)}.")
@click.option("--local-stsb", is_flag=True,
              help="Run STS-B from the local SentEval data (offline; same sentences as `metaeol eval`).")
@click.option("--data", "data_root", type=click.Path(file_okay=False), default=None,
              help="SentEval data root for --local-stsb (default: ../shared/data/senteval from the CWD or the repo).")
@click.option("--split", type=click.Choice(["test", "dev"]), default="test", show_default=True,
              help="STS-B split for --local-stsb.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Quick mode for --local-stsb: the first N pairs (cached under their own task name).")
@click.option("--output", type=click.Path(file_okay=False), default="mteb-results", show_default=True,
              help="mteb result cache: OUTPUT/results/<model>/<revision>/<task>.json. Finished tasks are not rerun.")
@click.option("--overwrite", is_flag=True, help="Rerun tasks that already have results in --output.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@encoder_options
def mteb_command(
    tasks: str | None, local_stsb: bool, data_root: str | None, split: str, limit: int | None, output: str,
    overwrite: bool, progress: bool, **options: Any,
) -> None:
    """Evaluate MetaEOL with MTEB; print each task's main score and write mteb's result files."""
    try:
        import mteb

        from metaeol.integrations.mteb import MetaEOLMTEB, local_stsb_task
    except ImportError as err:
        raise click.ClickException(str(err)) from err

    names = [n.strip() for n in (tasks or "").split(",") if n.strip()]
    if not names and not local_stsb:
        names = list(ENGLISH_STS)
    with user_errors():
        try:
            selected = list(mteb.get_tasks(tasks=names)) if names else []
        except KeyError as err:
            raise click.BadParameter(str(err.args[0] if err.args else err), param_hint="--tasks") from err
        if local_stsb:
            selected.append(local_stsb_task(data_root, split=split, limit=limit))
        model = MetaEOLMTEB(make_encoder(options))
    meta = model.mteb_model_meta
    click.echo(f"model {meta.name} revision {meta.revision}", err=True)
    cache = mteb.ResultCache(cache_path=output)
    results = mteb.evaluate(
        model, selected, cache=cache, overwrite_strategy="always" if overwrite else "only-missing",
        encode_kwargs={"batch_size": options["batch_size"], "show_progress_bar": progress},
        show_progress_bar=progress, raise_error=False,
    )
    click.echo(_table(results.task_results))
    folder = cache.get_task_result_path("-", meta).parent
    click.echo(f"results in {folder}", err=True)
    failures = results.exceptions or []
    for failure in failures:
        click.echo(f"{failure.task_name} failed: {failure.exception}", err=True)
    if failures:
        raise click.ClickException(f"{len(failures)} of {len(selected)} tasks failed")


def _table(task_results: list) -> str:
    lines = ["| task | split | subset | main score x100 |", "|---|---|---|---|"]
    for result in task_results:
        for split, scores in result.scores.items():
            for score in scores:
                lines.append(f"| {result.task_name} | {split} | {score['hf_subset']} | {100 * score['main_score']:.2f} |")
    return "\n".join(lines)

