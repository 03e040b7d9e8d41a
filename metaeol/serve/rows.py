"""The server's units of work: prompt rows (one per template and input), so that the rows of
many requests share each forward pass (see :mod:`metaeol.serve.batcher`)."""

from __future__ import annotations

from itertools import groupby
from typing import Any, Sequence

import numpy as np
import torch

from metaeol.prompt_rows import PromptRows
from metaeol.serve.batcher import Work

Unit = tuple[PromptRows, int]  # a request's rows and one row's index


def prompt_row_work(encoder: Any, texts: list[str], normalize: bool) -> Work:
    """A request's rows, each costing the tokens it computes; finished into one embedding per text."""
    rows = encoder.prompt_rows(texts)

    def finish(states: np.ndarray) -> np.ndarray:
        return encoder.rows_to_embeddings(torch.from_numpy(states), normalize)[:, 0].numpy()

    return Work([(rows, i) for i in range(len(rows))], list(rows.costs), finish)


def run_prompt_rows(encoder: Any, units: Sequence[Unit], batch_size: int) -> np.ndarray:
    """The states ``[len(units), 1, D]`` of the units' rows, computed in one engine run."""
    parts = [(rows, [i for _, i in group]) for rows, group in groupby(units, key=lambda unit: unit[0])]
    return encoder.run_rows(parts, batch_size=batch_size).numpy()
