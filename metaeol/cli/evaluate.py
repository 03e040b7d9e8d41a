"""``metaeol eval``: score a model on STS and transfer tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from metaeol.cli.errors import user_errors
from metaeol.cli.options import data_options, encoder_options, make_encoder, parse_layers
from metaeol.evaluation.data import DataError
from metaeol.evaluation.runner import load_eval_data, run_evaluation
from metaeol.evaluation.transfer import MRPC_FEATURES, PROTOCOLS


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.command("eval")
@click.option("--tasks", default="sts", show_default=True,
              help="sts, transfer, all, or comma-separated names (STS12..STS16, STS-B, SICK-R, MR, CR, SUBJ, MPQA, "
                   "SST2, TREC, MRPC).")
@click.option("--output", "-o", type=click.Path(file_okay=False), default="metaeol-eval", show_default=True,
              help="Folder for results.json and results.md.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Quick mode: keep the first N items of every file (STS subset, split, class file).")
@click.option("--kfold", type=click.IntRange(min=2), default=10, show_default=True, help="Folds for transfer CV.")
@click.option("--transfer-protocol", type=click.Choice(PROTOCOLS), default="senteval", show_default=True,
              help="senteval: SentEval's PyTorch logistic regression with the paper's settings; "
                   "sklearn: SentEval's scikit-learn alternative.")
@click.option("--mrpc-features", type=click.Choice(MRPC_FEATURES), default=None,
              help="senteval: [|u-v|, u*v] as SentEval's code (default with --transfer-protocol senteval); "
                   "full: [u, v, |u-v|, u*v] as the method spec (default with sklearn).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@data_options
@encoder_options
def eval_command(
    tasks: str, data_root: str | None, output: str, limit: int | None, split: str, kfold: int,
    transfer_protocol: str, mrpc_features: str | None, no_count_check: bool, progress: bool, **options: Any,
) -> None:
    """Score a model on STS and transfer tasks; write results.json and results.md to --output."""
    try:
        data = load_eval_data(tasks, data_root, split=split, limit=limit, check_counts=not no_count_check)
    except DataError as exc:
        raise click.ClickException(str(exc)) from exc
    if not isinstance(parse_layers(options["layer"]), int):
        raise click.BadParameter("eval scores one layer at a time; use `metaeol sweep` for several", param_hint="--layer")
    with user_errors():
        encoder = make_encoder(options)
    report = run_evaluation(
        encoder, data, batch_size=options["batch_size"], kfold=kfold, transfer_protocol=transfer_protocol,
        mrpc_features=mrpc_features,
        model_name=options["model"], prompts_name=options["prompts"], output_dir=output, show_progress=progress,
        log=_log,
    )
    click.echo(report["markdown"])
    _log(f"wrote {Path(output) / 'results.json'} and {Path(output) / 'results.md'} "
         f"({report['timings_s']['total']:.1f} s)")
