"""Evaluation on STS12-16, STS-B, SICK-R and the SentEval transfer tasks (numpy/scipy/sklearn/torch).

    from metaeol.evaluation import load_eval_data, run_evaluation
    report = run_evaluation(encoder, load_eval_data("sts", "path/to/senteval"), output_dir="out")

``encoder`` is anything with ``encode(list[str], batch_size=..., show_progress_bar=...) -> (N, D)``.
"""

from metaeol.evaluation.data import DataError, load_task, parse_tasks
from metaeol.evaluation.download import DownloadError, download
from metaeol.evaluation.runner import EvalData, load_eval_data, run_evaluation
from metaeol.evaluation.sts import evaluate_sts
from metaeol.evaluation.transfer import evaluate_transfer

__all__ = [
    "DataError", "DownloadError", "EvalData", "download", "evaluate_sts", "evaluate_transfer",
    "load_eval_data", "load_task", "parse_tasks", "run_evaluation",
]
