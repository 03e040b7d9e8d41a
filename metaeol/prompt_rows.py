"""The prompts of some sentences as rows that can be computed in any grouping.

:meth:`MetaEOL.prompt_rows <metaeol.encoder.MetaEOL.prompt_rows>` tokenizes every prompt of
every sentence once, with what the boosters need per row; :meth:`MetaEOL.run_rows
<metaeol.encoder.MetaEOL.run_rows>` computes any subset of the rows of one or several
:class:`PromptRows` in one engine run. A row's state does not depend on the rows it shares a
pass with, so a scheduler (the server's) can pack the rows of many requests into each pass and
answer a request as soon as its last row is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

Span = tuple[int, int]


@dataclass(eq=False)  # compared by identity: two requests with the same texts are two row groups
class PromptRows:
    """Row ``i`` is template ``i % n_templates`` of sentence ``i // n_templates``."""

    made_by: object  # the token of the encoder whose prompt_rows made them (only it can run them)
    sentences: list[str]  # prepared (cleaned, cut) sentences
    n_templates: int
    ids: list[list[int]]
    templates: list[int]
    placeholder_positions: list[int] | None = None  # Token Prepending: where each row's placeholder is
    spans: list[Span] | None = None  # echo: the tokens each row pools
    costs: list[int] = field(default_factory=list)  # tokens each row computes (its prompt after the shared prefix)
    # Contrastive Prompting: each sentence's auxiliary state, computed when a row of it is first run
    negatives: dict[int, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def sentence_of(self, row: int) -> int:
        return row // self.n_templates

    def missing_negatives(self, rows: Sequence[int]) -> list[int]:
        """The sentences of ``rows`` whose auxiliary state is not computed yet (in row order)."""
        return [s for s in dict.fromkeys(self.sentence_of(r) for r in rows) if s not in self.negatives]
