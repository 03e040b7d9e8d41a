"""Semantic textual similarity: cosine scores against gold, as SentEval computes them."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr

from metaeol.evaluation.data import Pairs, TaskData

Embed = Callable[[Sequence[str]], np.ndarray]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64; NaNs and zero vectors give 0 (SentEval's nan_to_num)."""
    a = np.nan_to_num(np.asarray(a, dtype=np.float64))
    b = np.nan_to_num(np.asarray(b, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        sims = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.nan_to_num(sims)


def correlations(system: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of system scores with gold scores; NaN where they
    are undefined (fewer than two pairs, or either side constant)."""
    system, gold = np.asarray(system, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if len(gold) < 2 or np.ptp(system) == 0 or np.ptp(gold) == 0:
        return {"pearson": float("nan"), "spearman": float("nan"), "n": len(gold)}
    return {
        "pearson": float(pearsonr(system, gold)[0]),
        "spearman": float(spearmanr(system, gold)[0]),
        "n": len(gold),
    }


def spearman_x100(system: np.ndarray, gold: np.ndarray) -> float:
    """Spearman correlation x 100 (NaN where undefined)."""
    return correlations(system, gold)["spearman"] * 100.0


def score_pairs(pairs: Pairs, embed: Embed) -> np.ndarray:
    """Cosine similarity of each pair's embeddings."""
    return cosine_rows(embed(pairs.sent1), embed(pairs.sent2))


def evaluate_sts(task: TaskData, embed: Embed) -> dict[str, Any]:
    """Per-subset correlations plus the pooled ("all"), mean and sample-weighted mean.

    The task's headline ``score`` is the pooled Spearman over all its subsets, as the
    paper and SimCSE's SentEval report for STS12-16; STS-B and SICK-R have one split, so
    there it is simply that split's Spearman.
    """
    subsets: dict[str, dict[str, float]] = {}
    all_sys, all_gold = [], []
    for name, pairs in task.splits.items():
        sys_scores = score_pairs(pairs, embed)
        subsets[name] = correlations(sys_scores, pairs.targets)
        all_sys.append(sys_scores)
        all_gold.append(pairs.targets)
    weights = [s["n"] for s in subsets.values()]
    pooled = correlations(np.concatenate(all_sys), np.concatenate(all_gold))
    summary = {
        metric: {
            "all": pooled[metric],
            "mean": float(np.mean([s[metric] for s in subsets.values()])),
            "wmean": float(np.average([s[metric] for s in subsets.values()], weights=weights)),
        }
        for metric in ("pearson", "spearman")
    }
    return {"subsets": subsets, "all": summary, "n": pooled["n"], "score": summary["spearman"]["all"]}
