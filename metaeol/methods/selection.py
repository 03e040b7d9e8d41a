"""Choosing demonstrations on STS-B dev, as the official PromptEOL + ICL code does.

kongds/scaling_sentemb ``evaluation.py`` (``--icl_examples_file``, ``--mode dev``) scores every
line of the candidate file on ``STSBenchmark-dev`` (Spearman of cosine similarities) and
``run_icl.sh`` keeps the best one per model. Here every template of the prompt set gets its own
choice: the candidate under which that template alone scores best (for a one-template set such as
PromptEOL, exactly the official search). Ties go to the earlier candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from metaeol.methods.demonstrations import (
    ALL_TEMPLATES, DemonstrationError, DemonstrationPool, Demonstrations,
)
from metaeol.methods.embed_filter import apply_filter
from metaeol.prompts import PromptSet

if TYPE_CHECKING:
    from metaeol.encoder import MetaEOL
    from metaeol.evaluation.data import Pairs


@dataclass(frozen=True)
class Selection:
    """The chosen demonstrations and every candidate's score (Spearman x100) per template."""

    demonstrations: Demonstrations
    scores: dict[str, list[float]]  # template name -> score of each candidate (NaN: no answer for it)

    def best(self, template: str) -> tuple[int, float]:
        """The chosen candidate's index and score for ``template``."""
        values = np.array(self.scores[template], dtype=float)
        index = int(np.nanargmax(values))
        return index, float(values[index])


def select_demonstrations(base: MetaEOL, prompts: PromptSet, pool: DemonstrationPool, pairs: Pairs, *,
                          batch_size: int = 32, log: Callable[[str], None] = lambda message: None,
                          show_progress_bar: bool | None = None) -> Selection:
    """For each template of ``prompts``, the ``pool`` candidate that scores best on ``pairs``
    (STS-B dev in the official search), encoding on ``base``'s model, layer and settings,
    boosters and EmbedFilter included (its store, if any, keeps the vectors for a rerun).
    ``show_progress_bar`` as for :meth:`~metaeol.MetaEOL.encode_templates`, for each candidate."""
    from metaeol.evaluation.method_grid import Setting, variant
    from metaeol.evaluation.sts import cosine_rows, spearman_x100

    sentences = list(dict.fromkeys((*pairs.sent1, *pairs.sent2)))
    where = {s: i for i, s in enumerate(sentences)}
    first, second = [where[s] for s in pairs.sent1], [where[s] for s in pairs.sent2]
    matrix = base.filter_matrix()
    scores: dict[str, list[float]] = {t.name: [] for t in prompts}
    for i, candidate in enumerate(pool.candidates):
        answered = PromptSet(prompts.name, tuple(t for t in prompts if t.name in candidate.answers or candidate.answer))
        for t in prompts:
            if t not in answered.templates:
                scores[t.name].append(float("nan"))
        if not answered.templates:
            continue
        demonstrations = Demonstrations(f"{pool.name}:{i}", {ALL_TEMPLATES: candidate})
        # every setting of base (boosters, engine, layer, model identity) but the prompts
        encoder = variant(base, demonstrations.apply(answered),
                          Setting(token_prepending=base.token_prepending, contrastive=base.contrastive),
                          layer=base.layers[0], store=base.store)
        states = encoder.encode_templates(sentences, batch_size=batch_size, show_progress_bar=show_progress_bar)[:, :, 0]
        if matrix is not None:
            states = apply_filter(torch.from_numpy(states), matrix).numpy()
        for j, t in enumerate(answered):
            scores[t.name].append(spearman_x100(cosine_rows(states[first, j], states[second, j]), pairs.targets))
        log(f"candidate {i + 1}/{len(pool.candidates)} {candidate.sentence!r}: "
            + ", ".join(f"{t.name} {scores[t.name][-1]:.2f}" for t in answered))
    chosen = {}
    for t in prompts:
        if np.isnan(scores[t.name]).all():
            raise DemonstrationError(f"no candidate of pool {pool.name!r} answers template {t.name!r}")
        chosen[t.name] = pool.candidates[int(np.nanargmax(scores[t.name]))]
    return Selection(Demonstrations(f"{pool.name}-selected", chosen), scores)
