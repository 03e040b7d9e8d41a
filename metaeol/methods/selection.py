"""Choosing demonstrations on STS-B dev, as the official PromptEOL + ICL code does.

kongds/scaling_sentemb ``evaluation.py`` (``--icl_examples_file``, ``--mode dev``) scores every
line of the candidate file on ``STSBenchmark-dev`` (Spearman of cosine similarities) and
``run_icl.sh`` keeps the best one per model. Here every template of the prompt set gets its own
choice: the candidate under which that template alone scores best (for a one-template set such as
PromptEOL, exactly the official search). Ties go to the earlier candidate.

A set of several templates is embedded as their mean, so the per-template bests need not be the best
set. ``joint=True`` goes on from them by coordinate ascent on the dev score of the mean (the
embedding the method returns): one template's candidate at a time, a change kept only when it raises
the score, until no single change does. It reuses the candidates' vectors, so it costs no encoding.
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
    chosen: dict[str, int]  # template name -> index of the chosen candidate
    combined: float | None = None  # joint search: the chosen set's score, templates averaged
    independent: float | None = None  # joint search: the same for the per-template bests

    def best(self, template: str) -> tuple[int, float]:
        """The chosen candidate's index and its score for ``template`` alone."""
        index = self.chosen[template]
        return index, float(self.scores[template][index])


def select_demonstrations(base: MetaEOL, prompts: PromptSet, pool: DemonstrationPool, pairs: Pairs, *,
                          batch_size: int = 32, log: Callable[[str], None] = lambda message: None,
                          show_progress_bar: bool | None = None, joint: bool = False) -> Selection:
    """For each template of ``prompts``, the ``pool`` candidate that scores best on ``pairs``
    (STS-B dev in the official search), encoding on ``base``'s model, layer and settings,
    boosters and EmbedFilter included (its store, if any, keeps the vectors for a rerun).
    ``joint``: then the coordinate-ascent search of the module docstring on the templates' mean; it
    keeps every candidate's vectors in memory (sentences x templates x candidates x hidden floats).
    ``show_progress_bar`` as for :meth:`~metaeol.MetaEOL.encode_templates`, for each candidate."""
    from metaeol.evaluation.method_grid import Setting, variant
    from metaeol.evaluation.sts import cosine_rows, spearman_x100

    sentences = list(dict.fromkeys((*pairs.sent1, *pairs.sent2)))
    where = {s: i for i, s in enumerate(sentences)}
    first, second = [where[s] for s in pairs.sent1], [where[s] for s in pairs.sent2]
    matrix = base.filter_matrix()
    scores: dict[str, list[float]] = {t.name: [] for t in prompts}
    kept: dict[str, dict[int, np.ndarray]] = {t.name: {} for t in prompts}  # joint: unfiltered vectors
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
        if joint:
            for j, t in enumerate(answered):
                kept[t.name][i] = states[:, j]
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
        chosen[t.name] = int(np.nanargmax(scores[t.name]))
    name, combined, independent = f"{pool.name}-selected", None, None
    if joint:
        def score(choice: dict[str, int]) -> float:
            pooled = torch.from_numpy(np.stack([kept[t][c] for t, c in choice.items()], axis=1)).mean(dim=1)
            if matrix is not None:
                pooled = apply_filter(pooled, matrix)
            return spearman_x100(cosine_rows(pooled[first].numpy(), pooled[second].numpy()), pairs.targets)

        independent = score(chosen)
        chosen, combined = _coordinate_ascent(chosen, {t: sorted(kept[t]) for t in kept}, score, independent, log)
        name = f"{pool.name}-joint"
    demonstrations = Demonstrations(name, {t: pool.candidates[c] for t, c in chosen.items()})
    return Selection(demonstrations, scores, chosen, combined, independent)


def _coordinate_ascent(choice: dict[str, int], options: dict[str, list[int]], score: Callable[[dict[str, int]], float],
                       current: float, log: Callable[[str], None]) -> tuple[dict[str, int], float]:
    """Change one template's candidate at a time while a change raises ``score`` (ties keep the choice)."""
    improved = True
    while improved:
        improved = False
        for template, candidates in options.items():
            for candidate in candidates:
                if candidate == choice[template]:
                    continue
                trial = {**choice, template: candidate}
                value = score(trial)
                if value > current:
                    log(f"joint: {template} -> candidate {candidate + 1}: {current:.3f} -> {value:.3f}")
                    choice, current, improved = trial, value, True
    return choice, current
