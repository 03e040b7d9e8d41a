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
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from metaeol.prompts import PromptSet, Template
from metaeol.store import (
    VectorStore,
    canonical_layers,
    encoder_store_key,
    fill_store,
    sentence_hash,
)

OVERFIT_WARNING = (
    "The best layer is chosen on {split}. Choosing a layer on the data you report scores on "
    "overfits: select on a development split and report test scores at that fixed layer."
)


@dataclass(frozen=True)
class StsSet:
    """One STS evaluation set: sentence pairs and gold scores.

    ``groups`` (optional) labels each pair with its subset; scoring is then pooled over all
    pairs (the "all" Spearman used for STS12-16), which is what a flat set gives anyway."""

    name: str
    sent1: tuple[str, ...]
    sent2: tuple[str, ...]
    gold: np.ndarray
    groups: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.gold)


ScoreFn = Callable[[np.ndarray, np.ndarray], float]


def spearman_x100(pred: np.ndarray, gold: np.ndarray) -> float:
    """Spearman correlation x 100 (NaN when either side is constant)."""
    from scipy.stats import spearmanr

    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return float("nan")
    return float(spearmanr(pred, gold).statistic) * 100.0


# -- layer helpers -------------------------------------------------------------------
def parse_layers(spec: str | Sequence[int], num_layers: int) -> list[int]:
    """``all`` -> blocks 1..num_layers-1 then -1 (final, normed output); or a comma list
    such as ``-1,10,20``.  Layer 0 (token embeddings) is allowed when named but not in
    ``all``: the last prompt token is the same for every sentence there."""
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(range(1, num_layers)) + [-1]
        try:
            layers = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError as err:
            raise ValueError(f"--layers must be 'all' or a comma-separated list of integers, got {spec!r}") from err
    else:
        layers = [int(x) for x in spec]
    if not layers:
        raise ValueError("no layers requested")
    for layer in layers:
        if not (layer == -1 or 0 <= layer < num_layers):
            raise ValueError(
                f"layer {layer} out of range: use -1 (final normed output) or 0..{num_layers - 1} "
                f"(hidden_states index; {num_layers} is the same as -1)"
            )
    return list(dict.fromkeys(layers))


def layer_label(layer: int) -> str:
    return "out" if layer == -1 else str(layer)


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
    task: StsSet,
    *,
    chunk_pairs: int = 512,
    also_float16: bool = False,
) -> tuple[Grams, Grams | None]:
    """Gram matrices for every pair of ``task`` at ``layer``, read from the store in chunks."""
    t = len(t_hashes)
    p = len(task)
    out = [np.empty((p, t, t)) for _ in range(3)]
    out16 = [np.empty((p, t, t)) for _ in range(3)] if also_float16 else None
    for start in range(0, p, chunk_pairs):
        stop = min(p, start + chunk_pairs)
        sides = []
        for sents in (task.sent1[start:stop], task.sent2[start:stop]):
            vecs, found = store.get(model_key, t_hashes, [layer], [sentence_hash(s) for s in sents])
            if not found.all():
                raise RuntimeError(f"{task.name}: {int((~found).sum())} sentences missing from the store at layer {layer}")
            sides.append(vecs[:, :, 0, :])
        a, b = sides
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


# -- the sweep -----------------------------------------------------------------------
def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


def run_sweep(
    encoder: Any,
    store: VectorStore,
    tasks: Sequence[StsSet],
    layers: Sequence[int],
    *,
    ablated: PromptSet,
    baseline: PromptSet,
    select_on: str,
    seed: int = 0,
    n_random_orders: int = 5,
    batch_size: int = 16,
    max_chunk_bytes: int = 256 * 2**20,
    score_fn: ScoreFn = spearman_x100,
    measure_float16: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Encode once (through the store), score every configuration at every layer, and
    return the results as a JSON-ready dict (see :func:`write_outputs`).

    ``encoder`` must be built with the prompt set ``combined_prompt_set(ablated, baseline)``."""
    if len(baseline) != 1:
        raise ValueError(f"baseline prompt set must have one template, {baseline.name!r} has {len(baseline)}")
    templates = list(ablated.templates) + list(baseline.templates)
    enc_templates = list(encoder.prompt_set.templates)
    if [t.sha256 for t in enc_templates] != [t.sha256 for t in templates]:
        raise ValueError("encoder's prompt set must be the ablated templates followed by the baseline template")
    names = [t.name for t in tasks]
    if select_on not in names:
        raise ValueError(f"selection task {select_on!r} is not among the tasks {names}")
    model_key = encoder_store_key(encoder)
    store_layers = dict(zip(layers, canonical_layers(layers, getattr(encoder, "num_layers", None))))
    t_hashes = [t.sha256 for t in templates]
    all_sentences = [s for task in tasks for s in (*task.sent1, *task.sent2)]

    wall = time.perf_counter()
    enc = fill_store(
        encoder, store, templates, layers, all_sentences,
        batch_size=batch_size, max_chunk_bytes=max_chunk_bytes, show_progress_bar=True, log=log,
    )
    log(f"encoding: {enc.encoded} sentences x {len(templates)} prompts in {enc.seconds:.1f}s")

    cfg = build_configs(ablated, n_random_orders, seed)
    float16_possible = measure_float16 and store.storage_dtype == "float32"
    # scores[label][task] -> list over layers; same for float16-rounded vectors
    scores: dict[str, dict[str, list[float]]] = {lab: {n: [] for n in names} for lab in cfg.subsets}
    scores16: dict[str, dict[str, list[float]]] = {lab: {n: [] for n in names} for lab in cfg.subsets}
    t_score = time.perf_counter()
    for layer in layers:
        for task in tasks:
            grams, grams16 = task_grams(store, model_key, t_hashes, store_layers[layer], task,
                                        also_float16=float16_possible)
            for label, subset in cfg.subsets.items():
                scores[label][task.name].append(score_fn(grams.cosines(subset), task.gold))
                if grams16 is not None:
                    scores16[label][task.name].append(score_fn(grams16.cosines(subset), task.gold))
        log(f"scored layer {layer_label(layer)}: MetaEOL {scores['all'][select_on][-1]:.2f}, "
            f"PromptEOL {scores['baseline'][select_on][-1]:.2f} on {select_on}")
    score_seconds = time.perf_counter() - t_score

    def best(label: str) -> dict[str, Any]:
        vals = np.array(scores[label][select_on], dtype=float)
        if np.isnan(vals).all():
            return {"layer": None, "score": None}
        i = int(np.nanargmax(vals))
        return {"layer": int(layers[i]), "score": float(vals[i])}

    best_layers = {"metaeol": best("all"), "prompteol": best("baseline")}
    ref_layer = -1 if -1 in layers else layers[-1]
    focus_layers = list(dict.fromkeys([ref_layer] + ([best_layers["metaeol"]["layer"]] if best_layers["metaeol"]["layer"] is not None else [])))

    def at(label: str, layer: int) -> dict[str, float]:
        i = list(layers).index(layer)
        return {n: scores[label][n][i] for n in names}

    prompt_count = {}
    for layer in focus_layers:
        curves = {
            name: {"order": [ablated.templates[i].name for i in order],
                   "scores": {n: [scores[f"{name}:{k}"][n][list(layers).index(layer)] for k in range(1, len(ablated) + 1)] for n in names}}
            for name, order in cfg.prompt_orders.items()
        }
        randoms = [name for name in cfg.prompt_orders if name.startswith("random")]
        if randoms:
            for n in names:
                mat = np.array([curves[r]["scores"][n] for r in randoms], dtype=float)
                curves.setdefault("random_mean", {"order": None, "scores": {}})["scores"][n] = np.nanmean(mat, axis=0).tolist()
                curves.setdefault("random_std", {"order": None, "scores": {}})["scores"][n] = np.nanstd(mat, axis=0).tolist()
        prompt_count[layer_label(layer)] = curves

    meta_tasks = {
        layer_label(layer): [
            {"tasks": combo.split("+"), "templates": [ablated.templates[i].name for i in idx], "scores": at(f"tasks:{combo}", layer)}
            for combo, idx in cfg.meta_task_subsets.items()
        ]
        for layer in focus_layers
    }

    float16_effect = None
    if float16_possible:
        a = np.array([v for lab in cfg.subsets for n in names for v in scores[lab][n]], dtype=float)
        b = np.array([v for lab in cfg.subsets for n in names for v in scores16[lab][n]], dtype=float)
        diff = np.abs(a - b)[~(np.isnan(a) | np.isnan(b))]
        float16_effect = {
            "compared_scores": int(diff.size),
            "max_abs_diff": float(diff.max()) if diff.size else None,
            "mean_abs_diff": float(diff.mean()) if diff.size else None,
            "metaeol_by_layer_float16": {n: scores16["all"][n] for n in names},
            "note": "Spearman x100 from float32 vectors vs the same vectors rounded as a float16 store returns them",
        }

    n_sent = enc.sentences
    per_prompt = enc.seconds_per_prompt
    # Separate runs, as the reference would do them: each distinct template subset of the
    # prompt-count and meta-task ablations once (at one layer), plus MetaEOL and PromptEOL
    # once per layer; each run encodes every sentence with every template of its subset.
    ablation_subsets = {s for lab, s in cfg.subsets.items() if ":" in lab} - {cfg.subsets["all"], cfg.subsets["baseline"]}
    n_cfg_runs = len(ablation_subsets) + 2 * len(layers)
    n_cfg_prompts = sum(len(s) for s in ablation_subsets) + len(layers) * (len(ablated) + 1)
    timing = {
        "sweep_wall_seconds": None,  # filled below
        "encode_seconds": enc.seconds,
        "score_seconds": score_seconds,
        "sentences": n_sent,
        "sentences_from_store": enc.cached,
        "sentences_encoded": enc.encoded,
        "prompts_encoded": enc.prompts_encoded,
        "seconds_per_prompt": per_prompt,
        "separate_runs": n_cfg_runs,
        "separate_runs_prompts": n_cfg_prompts * n_sent,
        "separate_runs_estimate_seconds": (n_cfg_prompts * n_sent * per_prompt) if per_prompt else None,
        "separate_runs_note": (
            "re-encoding each configuration on its own: every distinct prompt-count and meta-task subset "
            "once (at one layer), and MetaEOL + PromptEOL once per layer; estimated at this run's "
            "measured seconds per prompt"
        ),
        "peak_chunk_bytes": enc.peak_chunk_bytes,
    }
    timing["sweep_wall_seconds"] = time.perf_counter() - wall
    results = {
        "model": encoder.describe() if hasattr(encoder, "describe") else {"model_key": model_key},
        "model_key": encoder.model_key,
        "store_key": model_key,
        "ablated_prompt_set": ablated.describe(),
        "baseline_prompt_set": baseline.describe(),
        "tasks": {t.name: {"pairs": len(t)} for t in tasks},
        "layers": [int(x) for x in layers],
        "layer_labels": [layer_label(x) for x in layers],
        "seed": seed,
        "selection": {
            "task": select_on,
            "best_layer": best_layers,
            "reference_layer": ref_layer,
            "warning": OVERFIT_WARNING.format(split=select_on),
        },
        "by_layer": {"metaeol": {n: scores["all"][n] for n in names}, "prompteol": {n: scores["baseline"][n] for n in names}},
        "prompt_count": prompt_count,
        "meta_tasks": meta_tasks,
        "float16_effect": float16_effect,
        "store": {"path": str(store.path), "storage_dtype": store.storage_dtype, "size_bytes": store.size_bytes(),
                  "rows_this_model": next((m["rows"] for m in store.stats()["models"] if m["model_key"] == model_key), 0)},
        "timing": timing,
        "grid": {lab: {n: scores[lab][n] for n in names} for lab in cfg.subsets},
    }
    if "test" in select_on.lower():
        warnings.warn(OVERFIT_WARNING.format(split=select_on), stacklevel=2)
    return _nan_to_none(results)


def combined_prompt_set(ablated: PromptSet, baseline: PromptSet) -> PromptSet:
    """The ablated templates followed by the baseline's, for one encoding pass."""
    templates = list(ablated.templates)
    names = {t.name for t in templates}
    for t in baseline.templates:
        if t.sha256 in {x.sha256 for x in templates}:
            raise ValueError(f"baseline template {t.name!r} is already in {ablated.name!r}")
        templates.append(t if t.name not in names else Template(f"baseline-{t.name}", t.text, t.task))
    return PromptSet(f"{ablated.name}+{baseline.name}", tuple(templates), "sweep: ablated set + baseline")


# -- outputs -------------------------------------------------------------------------
def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def markdown_report(res: dict[str, Any]) -> str:
    """A markdown summary: best layer (with the overfitting warning), score vs layer,
    score vs number of prompts, meta-task subsets, float16 effect, timing and store size."""
    names = list(res["tasks"])
    sel = res["selection"]
    lines = [f"# MetaEOL sweep: `{res['model_key']}`", ""]
    lines.append("Spearman x100 of cosine similarity. Tasks: " + ", ".join(f"{n} ({v['pairs']} pairs)" for n, v in res["tasks"].items()) + ".")
    lines.append("")
    bm, bp = sel["best_layer"]["metaeol"], sel["best_layer"]["prompteol"]
    lines.append(f"**Best layer on {sel['task']}**: MetaEOL layer {layer_label(bm['layer']) if bm['layer'] is not None else '–'} "
                 f"({_fmt(bm['score'])}), PromptEOL layer {layer_label(bp['layer']) if bp['layer'] is not None else '–'} ({_fmt(bp['score'])}).")
    lines.append("")
    lines.append(f"> **Warning:** {sel['warning']}")
    if bm["score"] is not None:
        n_sel = res["tasks"][sel["task"]]["pairs"]
        rho = bm["score"] / 100
        se = (1 - rho**2) * math.sqrt(1.06 / max(n_sel - 3, 1)) * 100  # Fieller et al. (1957)
        lines.append("")
        lines.append(f"With {n_sel} pairs, a Spearman x100 near {bm['score']:.0f} has a standard error of about "
                     f"{se:.1f} (Fieller's approximation): smaller differences between configurations are noise.")
    lines.append("")
    lines.append("## Score vs layer")
    lines.append("")
    lines.append("| layer | " + " | ".join(f"MetaEOL {n} | PromptEOL {n}" for n in names) + " |")
    lines.append("|---|" + "---|---|" * len(names))
    for i, lab in enumerate(res["layer_labels"]):
        cells = []
        for n in names:
            cells += [_fmt(res["by_layer"]["metaeol"][n][i]), _fmt(res["by_layer"]["prompteol"][n][i])]
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    for layer, curves in res["prompt_count"].items():
        lines += ["", f"## Score vs number of prompts (layer {layer}, {sel['task']})", ""]
        k = len(curves["authors"]["scores"][sel["task"]])
        lines.append("| order | " + " | ".join(str(i) for i in range(1, k + 1)) + " |")
        lines.append("|---|" + "---|" * k)
        for name, c in curves.items():
            if name == "random_std":
                continue
            vals = c["scores"][sel["task"]]
            if name == "random_mean":
                std = curves["random_std"]["scores"][sel["task"]]
                cells = [f"{_fmt(v)} ± {_fmt(s)}" for v, s in zip(vals, std)]
            else:
                cells = [_fmt(v) for v in vals]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        orders = {n: c["order"] for n, c in curves.items() if c["order"]}
        lines.append("")
        lines.append("Orders (first prompt first):")
        lines.append("")
        lines += [f"- {n}: {', '.join(o)}" for n, o in orders.items()]
    for layer, subsets in res["meta_tasks"].items():
        lines += ["", f"## Meta-task subsets (layer {layer})", ""]
        lines.append("| meta-tasks | templates | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        for s in sorted(subsets, key=lambda s: -(s["scores"][sel["task"]] or -1e9)):
            lines.append(f"| {'+'.join(s['tasks'])} | {len(s['templates'])} | " + " | ".join(_fmt(s["scores"][n]) for n in names) + " |")
    f16 = res.get("float16_effect")
    lines += ["", "## float16 storage", ""]
    if f16:
        lines.append(f"Over {f16['compared_scores']} scores (every configuration x layer x task), float16-rounded vectors change "
                     f"Spearman x100 by at most {f16['max_abs_diff']:.4f} (mean {f16['mean_abs_diff']:.4f}).")
    else:
        lines.append("Not measured (the store already holds float16 vectors, or measurement was turned off).")
    t, st = res["timing"], res["store"]
    lines += ["", "## Cost", ""]
    lines.append(f"- sweep wall time: {t['sweep_wall_seconds']:.1f} s (encoding {t['encode_seconds']:.1f} s for "
                 f"{t['sentences_encoded']} sentences, {t['sentences_from_store']} from the store; scoring {t['score_seconds']:.1f} s)")
    if t["separate_runs_estimate_seconds"]:
        lines.append(f"- re-encoding each configuration separately: {t['separate_runs']} runs, {t['separate_runs_prompts']} prompts, about "
                     f"{t['separate_runs_estimate_seconds']:.0f} s at {t['seconds_per_prompt'] * 1000:.1f} ms/prompt "
                     f"({t['separate_runs_estimate_seconds'] / max(t['encode_seconds'], 1e-9):.1f}x this sweep's encoding)")
    lines.append(f"- store: {st['path']} ({st['storage_dtype']}), {st['size_bytes'] / 2**20:.1f} MiB on disk, "
                 f"{st['rows_this_model']} vectors for this model")
    return "\n".join(lines) + "\n"


def write_outputs(res: dict[str, Any], output: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write ``sweep.json``, ``sweep.md`` and (with matplotlib) PNG plots into ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "sweep.json", "markdown": out / "sweep.md"}
    paths["json"].write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_report(res), encoding="utf-8")
    if plots:
        from metaeol.plots import plot_sweep

        paths.update(plot_sweep(res, out))
    return paths
