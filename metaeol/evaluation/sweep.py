"""Ablations from one encoding pass: prompts, meta-tasks and layers (paper Figs. 3-4).

The sweep encodes every sentence once with the ablated prompt set (MetaEOL's eight
templates) plus the baseline template (PromptEOL) at every requested layer, keeping each
per-template last-token vector in a :class:`~metaeol.store.VectorStore`.  Every
configuration (a prompt subset at a layer) is then scored from stored vectors only.

Scoring never holds all vectors in memory.  For each layer and each chunk of sentence
pairs it reads the [pairs, T, D] vectors of both sides and keeps only their T x T Gram
matrices (<a_i, a_j>, <b_i, b_j>, <a_i, b_j>, in float64).  The cosine of the mean over
any template subset S follows from them exactly::

    cos(mean_S a, mean_S b) = sum_{i,j in S} <a_i, b_j> / sqrt(sum <a_i, a_j> * sum <b_i, b_j>)

so memory is O(pairs x T^2) per task plus one chunk of vectors, whatever D and the number
of layers.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from metaeol.cache import EncodeReport, TemplateStateCache
from metaeol.evaluation.data import Pairs, TaskData
from metaeol.evaluation.json_results import nan_to_none
from metaeol.evaluation.sts import spearman_x100
from metaeol.layers import layer_label, resolve_layers
from metaeol.prompts import PromptSet, Template
from metaeol.protocols import TemplateEncoder
from metaeol.store import VectorStore, sentence_hash

OVERFIT_WARNING = (
    "The best layer is chosen on {split}. Choosing a layer on the data you report scores on "
    "overfits: select on a development split and report test scores at that fixed layer."
)

ScoreFn = Callable[[np.ndarray, np.ndarray], float]


def pooled_pairs(task: TaskData, sample: int | None = None, seed: int = 0) -> Pairs:
    """All pairs of an STS task's splits together (as the pooled "all" Spearman uses them);
    with ``sample``, a seeded random subset in the original order. A larger sample contains
    a smaller one with the same seed, so its sentences are already in the store."""
    parts = [split for split in task.splits.values() if isinstance(split, Pairs)]
    if len(parts) != len(task.splits):
        raise ValueError(f"{task.name} is not an STS task; the sweep scores sentence pairs")
    sent1 = tuple(s for p in parts for s in p.sent1)
    sent2 = tuple(s for p in parts for s in p.sent2)
    gold = np.concatenate([np.asarray(p.targets, dtype=np.float64) for p in parts])
    if sample is not None and sample < len(gold):
        idx = np.sort(np.random.default_rng(seed).permutation(len(gold))[:sample])
        sent1, sent2, gold = tuple(sent1[i] for i in idx), tuple(sent2[i] for i in idx), gold[idx]
    return Pairs(sent1, sent2, gold)


# -- Gram statistics -----------------------------------------------------------------
@dataclass
class Grams:
    """Per-pair T x T Gram matrices of one task at one layer."""

    aa: np.ndarray  # [P, T, T]
    bb: np.ndarray
    ab: np.ndarray

    def cosines(self, subset: Sequence[int]) -> np.ndarray:
        idx = np.asarray(subset)
        sub = np.ix_(np.arange(self.ab.shape[0]), idx, idx)
        dot = self.ab[sub].sum(axis=(1, 2))
        na = self.aa[sub].sum(axis=(1, 2))
        nb = self.bb[sub].sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            # zero vectors give 0, as SentEval's nan_to_num does
            return np.nan_to_num(dot / np.sqrt(np.clip(na, 0, None) * np.clip(nb, 0, None)))


def _gram(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.einsum("ptd,pud->ptu", x, x)


def _as_float16(x: np.ndarray) -> np.ndarray:
    """What a float16 store returns for x (rows that overflow stay float32)."""
    with np.errstate(over="ignore"):
        h = x.astype(np.float16).astype(np.float32)
    bad = ~np.isfinite(h).all(axis=-1) & np.isfinite(x).all(axis=-1)
    h[bad] = x[bad]
    return h


def task_grams(
    store: VectorStore,
    model_key: str,
    t_hashes: Sequence[str],
    layer: int,
    pairs: Pairs,
    *,
    chunk_pairs: int = 512,
    also_float16: bool = False,
    projection: np.ndarray | None = None,
) -> tuple[Grams, Grams | None]:
    """Gram matrices for every pair at ``layer`` (a store key), read from the store in chunks;
    with ``projection`` ``[k, D]`` (EmbedFilter's), of the projected vectors."""
    t = len(t_hashes)
    p = len(pairs)
    out = [np.empty((p, t, t)) for _ in range(3)]
    out16 = [np.empty((p, t, t)) for _ in range(3)] if also_float16 else None
    for start in range(0, p, chunk_pairs):
        stop = min(p, start + chunk_pairs)
        sides = []
        for sents in (pairs.sent1[start:stop], pairs.sent2[start:stop]):
            vecs, found = store.get(model_key, t_hashes, [layer], [sentence_hash(s) for s in sents])
            if not found.all():
                raise RuntimeError(f"{int((~found).sum())} sentences missing from the store at layer {layer}")
            sides.append(vecs[:, :, 0, :])
        a, b = sides
        if projection is not None:  # linear, so the projected template mean is the mean of the projections
            a, b = a @ projection.T, b @ projection.T
        out[0][start:stop], out[1][start:stop] = _gram(a), _gram(b)
        out[2][start:stop] = np.einsum("ptd,pud->ptu", a.astype(np.float64), b.astype(np.float64))
        if out16 is not None:
            a16, b16 = _as_float16(a), _as_float16(b)
            out16[0][start:stop], out16[1][start:stop] = _gram(a16), _gram(b16)
            out16[2][start:stop] = np.einsum("ptd,pud->ptu", a16.astype(np.float64), b16.astype(np.float64))
    return Grams(*out), (Grams(*out16) if out16 is not None else None)


# -- configurations ------------------------------------------------------------------
@dataclass
class Configs:
    """Template subsets (indices into the combined template list) to score."""

    subsets: dict[str, tuple[int, ...]] = field(default_factory=dict)
    prompt_orders: dict[str, list[int]] = field(default_factory=dict)  # order name -> ablated-set indices
    meta_task_subsets: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def add(self, label: str, subset: Iterable[int]) -> str:
        self.subsets[label] = tuple(subset)
        return label


def build_configs(ablated: PromptSet, n_random_orders: int, seed: int) -> Configs:
    """MetaEOL (all), PromptEOL (baseline, the last template), the first k prompts of each
    order for k = 1..n, and every non-empty combination of meta-tasks."""
    n = len(ablated)
    cfg = Configs()
    cfg.add("all", range(n))
    cfg.add("baseline", (n,))
    orders = {"authors": list(range(n)), "reverse": list(range(n - 1, -1, -1))}
    rng = np.random.default_rng(seed)
    for i in range(n_random_orders):
        orders[f"random{i + 1}"] = [int(x) for x in rng.permutation(n)]
    cfg.prompt_orders = orders
    for name, order in orders.items():
        for k in range(1, n + 1):
            cfg.add(f"{name}:{k}", sorted(order[:k]))
    tasks = [task for task in ablated.tasks]
    for r in range(1, len(tasks) + 1):
        for combo in itertools.combinations(tasks, r):
            idx = tuple(i for i, t in enumerate(ablated.templates) if t.task in combo)
            cfg.meta_task_subsets["+".join(combo)] = idx
            cfg.add("tasks:" + "+".join(combo), idx)
    return cfg


# -- the sweep: encode -> score -> summarise ------------------------------------------
@dataclass
class ScoreGrid:
    """Spearman x100 of every configuration, per task, per layer (and the same from
    float16-rounded vectors when measured)."""

    scores: dict[str, dict[str, list[float]]]
    scores16: dict[str, dict[str, list[float]]] | None
    seconds: float


def encode_into_store(encoder: TemplateEncoder, store: VectorStore, tasks: Mapping[str, Pairs],
                      store_layers: Sequence[int], *, batch_size: int = 32, max_chunk_bytes: int = 256 * 2**20,
                      log: Callable[[str], None] = lambda message: None) -> EncodeReport:
    """Every distinct sentence of the tasks, all templates x layers, into the store (only what it lacks)."""
    cache = TemplateStateCache(
        store, encoder.cache_key, [t.sha256 for t in encoder.prompt_set.templates],
        lambda sentences, layers, templates: encoder.encode_templates(
            sentences, layers=layers, batch_size=batch_size, show_progress_bar=False, templates=templates),
        max_chunk_bytes=max_chunk_bytes, first_chunk=2 * batch_size,
    )
    sentences = [s for pairs in tasks.values() for s in (*pairs.sent1, *pairs.sent2)]
    return cache.fill(sentences, store_layers, log=log)


def score_configurations(store: VectorStore, key: str, template_hashes: Sequence[str], tasks: Mapping[str, Pairs],
                         store_layers: Sequence[int], configs: Configs, *, score_fn: ScoreFn = spearman_x100,
                         also_float16: bool = False, log: Callable[[int, dict], None] = lambda i, scores: None,
                         ) -> ScoreGrid:
    """Score every configuration on every task at every layer from the stored vectors."""
    empty = lambda: {label: {name: [] for name in tasks} for label in configs.subsets}  # noqa: E731
    scores, scores16 = empty(), (empty() if also_float16 else None)
    started = time.perf_counter()
    for i, layer in enumerate(store_layers):
        for name, pairs in tasks.items():
            grams, grams16 = task_grams(store, key, template_hashes, layer, pairs, also_float16=also_float16)
            for label, subset in configs.subsets.items():
                scores[label][name].append(score_fn(grams.cosines(subset), pairs.targets))
                if grams16 is not None:
                    scores16[label][name].append(score_fn(grams16.cosines(subset), pairs.targets))
        log(i, scores)
    return ScoreGrid(scores, scores16, time.perf_counter() - started)


def _best_layer(values: Sequence[float], layers: Sequence[int]) -> dict[str, Any]:
    vals = np.array(values, dtype=float)
    if np.isnan(vals).all():
        return {"layer": None, "score": None}
    i = int(np.nanargmax(vals))
    return {"layer": int(layers[i]), "score": float(vals[i])}


def _prompt_count_curves(grid: ScoreGrid, configs: Configs, ablated: PromptSet, names: Sequence[str],
                         column: int) -> dict[str, Any]:
    """Score vs number of prompts for each order at one layer column, with the random orders' mean and std."""
    scores = grid.scores
    curves = {
        order_name: {"order": [ablated.templates[i].name for i in order],
                     "scores": {n: [scores[f"{order_name}:{k}"][n][column] for k in range(1, len(ablated) + 1)]
                                for n in names}}
        for order_name, order in configs.prompt_orders.items()
    }
    randoms = [name for name in configs.prompt_orders if name.startswith("random")]
    if randoms:
        for n in names:
            mat = np.array([curves[r]["scores"][n] for r in randoms], dtype=float)
            curves.setdefault("random_mean", {"order": None, "scores": {}})["scores"][n] = np.nanmean(mat, axis=0).tolist()
            curves.setdefault("random_std", {"order": None, "scores": {}})["scores"][n] = np.nanstd(mat, axis=0).tolist()
    return curves


def _float16_effect(grid: ScoreGrid, names: Sequence[str]) -> dict[str, Any] | None:
    if grid.scores16 is None:
        return None
    a = np.array([v for lab in grid.scores for n in names for v in grid.scores[lab][n]], dtype=float)
    b = np.array([v for lab in grid.scores16 for n in names for v in grid.scores16[lab][n]], dtype=float)
    diff = np.abs(a - b)[~(np.isnan(a) | np.isnan(b))]
    return {
        "compared_scores": int(diff.size),
        "max_abs_diff": float(diff.max()) if diff.size else None,
        "mean_abs_diff": float(diff.mean()) if diff.size else None,
        "metaeol_by_layer_float16": {n: grid.scores16["all"][n] for n in names},
        "note": "Spearman x100 from float32 vectors vs the same vectors rounded as a float16 store returns them",
    }


def _timing(enc: EncodeReport, grid: ScoreGrid, configs: Configs, ablated: PromptSet, n_layers: int) -> dict[str, Any]:
    """Encoding and scoring time, and what re-encoding each configuration separately would cost:
    every distinct prompt-count and meta-task subset once (at one layer), plus MetaEOL and
    PromptEOL once per layer, each run encoding every sentence with every template of its subset."""
    ablation_subsets = {s for lab, s in configs.subsets.items() if ":" in lab} - {
        configs.subsets["all"], configs.subsets["baseline"]}
    n_cfg_prompts = sum(len(s) for s in ablation_subsets) + n_layers * (len(ablated) + 1)
    per_prompt = enc.seconds_per_prompt
    return {
        "sweep_wall_seconds": None,  # filled by run_sweep
        "encode_seconds": enc.seconds,
        "score_seconds": grid.seconds,
        "sentences": enc.sentences,
        "sentences_from_store": enc.cached,
        "sentences_encoded": enc.encoded,
        "prompts_encoded": enc.prompts_encoded,
        "seconds_per_prompt": per_prompt,
        "separate_runs": len(ablation_subsets) + 2 * n_layers,
        "separate_runs_prompts": n_cfg_prompts * enc.sentences,
        "separate_runs_estimate_seconds": (n_cfg_prompts * enc.sentences * per_prompt) if per_prompt else None,
        "separate_runs_note": (
            "re-encoding each configuration on its own: every distinct prompt-count and meta-task subset "
            "once (at one layer), and MetaEOL + PromptEOL once per layer; estimated at this run's "
            "measured seconds per prompt"
        ),
        "peak_chunk_bytes": enc.peak_chunk_bytes,
    }


def summarise(encoder: TemplateEncoder, store: VectorStore, tasks: Mapping[str, Pairs], layers: Sequence[int],
              grid: ScoreGrid, enc: EncodeReport, configs: Configs, *, ablated: PromptSet, baseline: PromptSet,
              select_on: str, seed: int) -> dict[str, Any]:
    """The JSON-ready results: best layers on ``select_on``, score vs layer, score vs number of
    prompts and meta-task subsets at the final and the best layer, float16 effect, cost."""
    names = list(tasks)
    scores = grid.scores
    best = {"metaeol": _best_layer(scores["all"][select_on], layers),
            "prompteol": _best_layer(scores["baseline"][select_on], layers)}
    ref_layer = -1 if -1 in layers else layers[-1]
    focus = list(dict.fromkeys([ref_layer] + ([best["metaeol"]["layer"]] if best["metaeol"]["layer"] is not None else [])))
    column = {layer: list(layers).index(layer) for layer in focus}
    key = encoder.cache_key
    return {
        "model": encoder.describe(),
        "model_key": encoder.model_key,
        "store_key": key,
        "ablated_prompt_set": ablated.describe(),
        "baseline_prompt_set": baseline.describe(),
        "tasks": {name: {"pairs": len(pairs)} for name, pairs in tasks.items()},
        "layers": [int(x) for x in layers],
        "layer_labels": [layer_label(x) for x in layers],
        "seed": seed,
        "selection": {"task": select_on, "best_layer": best, "reference_layer": ref_layer,
                      "warning": OVERFIT_WARNING.format(split=select_on)},
        "by_layer": {"metaeol": {n: scores["all"][n] for n in names}, "prompteol": {n: scores["baseline"][n] for n in names}},
        "prompt_count": {layer_label(layer): _prompt_count_curves(grid, configs, ablated, names, column[layer])
                         for layer in focus},
        "meta_tasks": {
            layer_label(layer): [
                {"tasks": combo.split("+"), "templates": [ablated.templates[i].name for i in idx],
                 "scores": {n: scores[f"tasks:{combo}"][n][column[layer]] for n in names}}
                for combo, idx in configs.meta_task_subsets.items()
            ]
            for layer in focus
        },
        "float16_effect": _float16_effect(grid, names),
        "store": {"path": str(store.path), "storage_dtype": store.storage_dtype, "size_bytes": store.size_bytes(),
                  "rows_this_model": next((m["rows"] for m in store.stats()["models"] if m["model_key"] == key), 0)},
        "timing": _timing(enc, grid, configs, ablated, len(layers)),
        "grid": {lab: {n: scores[lab][n] for n in names} for lab in configs.subsets},
    }


def run_sweep(
    encoder: TemplateEncoder,
    store: VectorStore,
    tasks: Mapping[str, Pairs],
    layers: Sequence[int],
    *,
    ablated: PromptSet,
    baseline: PromptSet,
    select_on: str,
    seed: int = 0,
    n_random_orders: int = 5,
    batch_size: int = 32,
    max_chunk_bytes: int = 256 * 2**20,
    score_fn: ScoreFn = spearman_x100,
    measure_float16: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Encode once (through the store), score every configuration at every layer, and
    return the results as a JSON-ready dict (see :func:`metaeol.evaluation.sweep_report.write_outputs`).

    ``tasks`` maps a label to its pairs (see :func:`pooled_pairs`); ``layers`` are indices as
    the user counts them (``-1`` = final output). ``encoder`` must be built with the prompt
    set ``combined_prompt_set(ablated, baseline)``."""
    if len(baseline) != 1:
        raise ValueError(f"baseline prompt set must have one template, {baseline.name!r} has {len(baseline)}")
    templates = list(ablated.templates) + list(baseline.templates)
    if [t.sha256 for t in encoder.prompt_set.templates] != [t.sha256 for t in templates]:
        raise ValueError("encoder's prompt set must be the ablated templates followed by the baseline template")
    if select_on not in tasks:
        raise ValueError(f"selection task {select_on!r} is not among the tasks {list(tasks)}")
    wall = time.perf_counter()
    store_layers = resolve_layers(list(layers), encoder.num_layers)
    enc = encode_into_store(encoder, store, tasks, store_layers, batch_size=batch_size,
                            max_chunk_bytes=max_chunk_bytes, log=log)
    log(f"encoding: {enc.encoded} sentences x {len(templates)} prompts in {enc.seconds:.1f}s")

    def progress(i: int, scores: dict) -> None:
        log(f"scored layer {layer_label(layers[i])}: MetaEOL {scores['all'][select_on][-1]:.2f}, "
            f"PromptEOL {scores['baseline'][select_on][-1]:.2f} on {select_on}")

    configs = build_configs(ablated, n_random_orders, seed)
    grid = score_configurations(store, encoder.cache_key, [t.sha256 for t in templates], tasks, store_layers, configs,
                                score_fn=score_fn, also_float16=measure_float16 and store.storage_dtype == "float32",
                                log=progress)
    results = summarise(encoder, store, tasks, layers, grid, enc, configs, ablated=ablated, baseline=baseline,
                        select_on=select_on, seed=seed)
    results["timing"]["sweep_wall_seconds"] = time.perf_counter() - wall
    if "test" in select_on.lower():
        warnings.warn(OVERFIT_WARNING.format(split=select_on), stacklevel=2)
    return nan_to_none(results)


def combined_prompt_set(ablated: PromptSet, baseline: PromptSet) -> PromptSet:
    """The ablated templates followed by the baseline's, for one encoding pass."""
    templates = list(ablated.templates)
    names = {t.name for t in templates}
    for t in baseline.templates:
        if t.sha256 in {x.sha256 for x in templates}:
            raise ValueError(f"baseline template {t.name!r} is already in {ablated.name!r}")
        templates.append(t if t.name not in names else Template(f"baseline-{t.name}", t.text, t.task))
    return PromptSet(f"{ablated.name}+{baseline.name}", tuple(templates), "sweep: ablated set + baseline")


