"""What the engine needs from a booster for one run: a limit on prefix reuse per row, and
hooks that live for one forward pass."""

from __future__ import annotations

from typing import ContextManager, Protocol, Sequence

import torch


class RowBoost(Protocol):
    """A booster bound to the rows of one :meth:`Engine.run <metaeol.engine.Engine.run>`."""

    def reuse_limit(self, row: int) -> int | None:
        """How many leading tokens of ``row`` may come from the stored prefix (None: no limit)."""

    def active(self, rows: Sequence[int], reused: Sequence[int], last: torch.Tensor) -> ContextManager[None]:
        """Hooks for one forward pass over ``rows`` (run indices), whose first ``reused[i]``
        tokens come from the stored prefix; ``last[i]`` is the last token's index in the pass."""
