"""Layer, booster and method settings chosen on a development split, test tasks scored at them.

Every combination of the settings of the boosters (token prepending, contrastive prompting) and
methods (in-context demonstrations, EmbedFilter) -- a *candidate* -- is encoded on the selection
split only, at every layer, through the vector store, and scored there (the mean of the prompt
set's templates). EmbedFilter only projects the stored vectors, so its candidates cost no
encoding. Only the reported rows are encoded on the report tasks, each at its one layer: the
baseline and the prompt set at the final output, the prompt set at its best layer, each booster
or method alone at its best setting and layer, and the best stack of several.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from metaeol import MetaEOL
from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.evaluation.data import Pairs
from metaeol.evaluation.encode_cost import time_encoders
from metaeol.evaluation.json_results import nan_to_none
from metaeol.evaluation.sts import spearman_x100
from metaeol.evaluation.sweep import Grams, encode_into_store, task_grams
from metaeol.layers import layer_label, resolve_layers
from metaeol.prompts import PromptSet
from metaeol.store import VectorStore
from metaeol.versions import library_versions

Log = Callable[[str], None]

# the components of a setting, in the order names and labels list them
COMPONENTS = ("TP", "CP", "ICL", "EmbedFilter")


@dataclass(frozen=True)
class Setting:
    """One combination of booster and method settings (None: that one off)."""

    token_prepending: TokenPrepending | None = None
    contrastive: ContrastivePrompting | None = None
    demonstrations: str | None = None  # a demonstrations file or POOL:PICK (metaeol.methods.demonstrations)
    embed_filter: int | None = None  # EmbedFilter ratio

    @property
    def components(self) -> tuple[str, ...]:
        """The boosters and methods this setting turns on, e.g. ``("CP", "ICL")``."""
        on = (self.token_prepending, self.contrastive, self.demonstrations, self.embed_filter)
        return tuple(name for name, value in zip(COMPONENTS, on) if value is not None)

    @property
    def label(self) -> str:
        """``TP 1:4 + CP 4:0.5 + ICL scaling_sentemb:opt-125m + EmbedFilter 2``, or ``off`` (``TP 1:4
        sentence`` for the sentence placement)."""
        tp, cp = self.token_prepending, self.contrastive
        parts = []
        if tp:
            parts.append(f"TP {tp.start_layer}:{tp.end_layer}" + (" sentence" if tp.placement == "sentence" else ""))
        if cp:
            parts.append(f"CP {cp.layer}:{cp.scale:g}")
        if self.demonstrations is not None:
            parts.append(f"ICL {self.demonstrations}")
        if self.embed_filter is not None:
            parts.append(f"EmbedFilter {self.embed_filter}")
        return " + ".join(parts) or "off"

    @property
    def encoding(self) -> "Setting":
        """The setting whose stored vectors this one scores (EmbedFilter projects them afterwards)."""
        return replace(self, embed_filter=None)

    def describe(self) -> dict[str, Any]:
        return {"token_prepending": self.token_prepending.describe() if self.token_prepending else None,
                "contrastive": self.contrastive.describe() if self.contrastive else None,
                "demonstrations": self.demonstrations, "embed_filter": self.embed_filter}


def settings_grid(token_prepending: Sequence[TokenPrepending | None],
                  contrastive: Sequence[ContrastivePrompting | None],
                  demonstrations: Sequence[str | None] = (None,),
                  embed_filter: Sequence[int | None] = (None,)) -> list[Setting]:
    """Every combination of the settings, plain MetaEOL first (always there: the reference rows
    and the encode cost are measured against it)."""
    return list(dict.fromkeys([Setting(), *(Setting(tp, cp, icl, ef) for tp in token_prepending for cp in contrastive
                                            for icl in demonstrations for ef in embed_filter)]))


def variant(base: MetaEOL, prompts: PromptSet, setting: Setting, layer: int | Sequence[int] | str = -1,
            store: VectorStore | None = None) -> MetaEOL:
    """An encoder on ``base``'s loaded model and settings with other prompts, boosters, methods
    and layer (and ``store`` as its cache); its store keys name the same model as ``base``'s."""
    encoder = MetaEOL(base.model, prompts, tokenizer=base.tokenizer, layer=layer, engine=base.engine_kind,
                      clean=base.clean, max_sentence_tokens=base.max_sentence_tokens, pooling=base.pooling,
                      max_batch_tokens=base.max_batch_tokens, prefix_attention=base.prefix_attention,
                      token_prepending=setting.token_prepending, contrastive=setting.contrastive,
                      demonstrations=setting.demonstrations, embed_filter=setting.embed_filter, store=store)
    encoder.model_name, encoder.revision, encoder.weights_id = base.model_name, base.revision, base.weights_id
    encoder.output_head = base.output_head
    return encoder


@dataclass(frozen=True)
class Row:
    """A reported row: the baseline template or the prompt set, a setting, a layer."""

    name: str
    setting: Setting
    layer: int
    baseline: bool = False
    chosen: bool = False  # the layer (and setting) were chosen on the selection split


@dataclass
class Candidate:
    """A setting's encoder and its scores on the selection split, one per layer."""

    setting: Setting
    encoder: MetaEOL
    scores: list[float]
    baseline_scores: list[float] | None = None
    encoded: int = 0

    def score(self, row: Row, layers: Sequence[int]) -> float:
        return (self.baseline_scores if row.baseline else self.scores)[list(layers).index(row.layer)]


class GramScorer:
    """Spearman x100 of the mean of the prompt set's templates (the first ``n_prompts``) or of
    the baseline template (the next one), from the store's vectors (projected by the encoder's
    EmbedFilter, if any): one read per templates, filter, task and layer."""

    def __init__(self, store: VectorStore, n_prompts: int):
        self.store = store
        self.n_prompts = n_prompts
        self._grams: dict[tuple[Any, ...], Grams] = {}

    def __call__(self, encoder: MetaEOL, layer: int, label: str, pairs: Pairs, baseline: bool = False) -> float:
        hashes = tuple(t.sha256 for t in encoder.prompt_set.templates)
        key = (encoder.cache_key, hashes, encoder.embed_filter, layer, label)
        if key not in self._grams:
            matrix = encoder.filter_matrix()
            self._grams[key] = task_grams(self.store, encoder.cache_key, hashes, resolve_layers([layer], encoder.num_layers)[0],
                                          pairs, projection=None if matrix is None else matrix.numpy())[0]
        subset = (self.n_prompts,) if baseline else tuple(range(self.n_prompts))
        return spearman_x100(self._grams[key].cosines(subset), pairs.targets)


def _best(candidates: Sequence[Candidate], layers: Sequence[int]) -> tuple[Candidate, int] | None:
    """The candidate and layer with the highest selection score (the first on ties)."""
    table = np.array([c.scores for c in candidates], dtype=float)
    if np.isnan(table).all():
        return None
    i, k = np.unravel_index(int(np.nanargmax(table)), table.shape)
    return candidates[i], int(layers[k])


def reported_rows(candidates: Sequence[Candidate], layers: Sequence[int], ablated: str, baseline: str) -> list[Row]:
    """The baseline and the prompt set at the final output; then, each at its best layer on the
    selection split: the prompt set, + each booster or method alone at its best setting, and the
    best stack (the best candidate that combines several), named by what it combines."""
    plain = Setting()
    rows = [Row(baseline, plain, -1, baseline=True), Row(ablated, plain, -1)]
    groups = {f"{ablated} (best layer)": [c for c in candidates if c.setting == plain]}
    for component in COMPONENTS:
        groups[f"{ablated} + {component}"] = [c for c in candidates if c.setting.components == (component,)]
    for name, group in groups.items():
        best = _best(group, layers) if group else None
        if best is not None:
            rows.append(Row(name, best[0].setting, best[1], chosen=True))
    stacks = [c for c in candidates if len(c.setting.components) > 1]
    best = _best(stacks, layers) if stacks else None
    if best is not None:
        rows.append(Row(" + ".join((ablated, *best[0].setting.components)), best[0].setting, best[1], chosen=True))
    return rows


def _grid_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """One user index per requested hidden state, the final output as -1 and always included."""
    resolved = [-1 if k == num_layers else k for k in resolve_layers(list(layers), num_layers)]
    return list(dict.fromkeys(resolved + [-1]))


def grid_candidates(base: MetaEOL, ablated: PromptSet, token_prepending: Sequence[TokenPrepending | None],
                    contrastive: Sequence[ContrastivePrompting | None], demonstrations: Sequence[str | None] = (None,),
                    embed_filter: Sequence[int | None] = (None,)) -> list[Candidate]:
    """One candidate per setting of :func:`settings_grid`, its encoder built (so its settings are
    checked against the model before any encoding); plain MetaEOL uses ``base`` itself."""
    if base.token_prepending is not None or base.contrastive is not None or base.embed_filter is not None:
        raise ValueError("the base encoder must have no booster and no EmbedFilter: the grid's settings add them")
    if base.prompt_set.metadata.get("demonstrations"):
        raise ValueError("the base encoder must have no demonstrations: the grid's settings add them")
    return [Candidate(s, base if s == Setting() else variant(base, ablated, s), [])
            for s in settings_grid(token_prepending, contrastive, demonstrations, embed_filter)]


def score_selection(candidates: Sequence[Candidate], store: VectorStore, score: GramScorer, layers: Sequence[int],
                    select_on: str, selection: Pairs, log: Log = lambda message: None, **encode: Any) -> None:
    """Encode ``selection`` into the store for every candidate at every layer (only what the
    store lacks) and fill in the candidates' scores."""
    for c in candidates:
        store_layers = resolve_layers(list(layers), c.encoder.num_layers)
        c.encoded = encode_into_store(c.encoder, store, {select_on: selection}, store_layers, log=log, **encode).encoded
        c.scores = [score(c.encoder, k, select_on, selection) for k in layers]
        if c.setting == Setting():
            c.baseline_scores = [score(c.encoder, k, select_on, selection, baseline=True) for k in layers]
        best = _best([c], layers)
        found = f"best {c.scores[list(layers).index(best[1])]:.2f} at layer {layer_label(best[1])}" if best else "no score"
        log(f"{c.setting.label}: {found} on {select_on} ({c.encoded} sentences encoded)")


def score_rows(rows: Sequence[Row], encoders: Mapping[Setting, MetaEOL], store: VectorStore, score: GramScorer,
               report: Mapping[str, Pairs], log: Log = lambda message: None,
               **encode: Any) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Each row's scores on the report tasks, and the sentences encoded for each setting: each
    setting encodes the report tasks once, at its rows' layers only. The plain setting and the
    last row's (the best stack, when there is one) encode first: a long report has its headline
    comparison first."""
    scores: dict[str, dict[str, float]] = {}
    encoded: dict[str, int] = {}
    first = [rows[0].setting.encoding, rows[-1].setting.encoding]
    for setting in dict.fromkeys([*first, *(r.setting.encoding for r in rows)]):  # EmbedFilter rows read their base's
        group = [r for r in rows if r.setting.encoding == setting]
        encoder = encoders[group[0].setting]
        store_layers = resolve_layers([r.layer for r in group], encoder.num_layers)
        encoded[setting.label] = encode_into_store(encoder, store, report, store_layers, log=log, **encode).encoded
        for row in group:
            scores[row.name] = {label: score(encoders[row.setting], row.layer, label, pairs, row.baseline)
                                for label, pairs in report.items()}
            if report:
                log(f"{row.name} at layer {layer_label(row.layer)}: average "
                    f"{np.mean(list(scores[row.name].values())):.2f} over {len(report)} report tasks")
    return scores, encoded


def run_grid(
    base: MetaEOL,
    store: VectorStore,
    candidates: Sequence[Candidate],
    *,
    ablated: PromptSet,
    baseline: PromptSet,
    layers: Sequence[int],
    select_on: str,
    selection: Pairs,
    report: Mapping[str, Pairs],
    batch_size: int = 32,
    max_chunk_bytes: int = 256 * 2**20,
    cost_sentences: int = 64,
    cost_repeats: int = 3,
    log: Log = lambda message: None,
) -> dict[str, Any]:
    """Score every candidate (see :func:`grid_candidates`) at every layer on ``selection``, pick
    the reported rows there, score them on ``report`` and time their encoding; return the
    JSON-ready results (see :mod:`metaeol.evaluation.grid_report`). ``base`` has the templates
    of ``ablated`` then ``baseline``; ``layers`` are user indices (the final output is always added)."""
    if [t.sha256 for t in base.prompt_set.templates] != [t.sha256 for t in (*ablated.templates, *baseline.templates)]:
        raise ValueError("the base encoder's prompt set must be the ablated templates followed by the baseline template")
    layers = _grid_layers(layers, base.num_layers)
    score = GramScorer(store, len(ablated))
    encode = {"batch_size": batch_size, "max_chunk_bytes": max_chunk_bytes}
    score_selection(candidates, store, score, layers, select_on, selection, log, **encode)
    rows = reported_rows(candidates, layers, ablated.name, baseline.name)
    by_setting = {c.setting: c for c in candidates}
    row_scores, encoded = score_rows(rows, {s: c.encoder for s, c in by_setting.items()}, store, score, report, log,
                                     **encode)
    encoders = {r.name: variant(base, baseline if r.baseline else ablated, r.setting, r.layer) for r in rows}
    sample = _sample(selection, cost_sentences)
    costs = _costs(encoders, sample, cost_repeats, batch_size, log) if sample else {}
    chosen = max((r for r in rows if r.chosen), key=lambda r: by_setting[r.setting].score(r, layers), default=None)
    return nan_to_none({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": base.describe(),
        "model_key": base.model_key,
        "versions": library_versions(),
        "prompts": ablated.describe(),
        "baseline": baseline.describe(),
        "layers": layers,
        "selection": {
            "task": select_on, "pairs": len(selection), "chosen": chosen.name if chosen else None,
            "candidates": [{"setting": c.setting.label, **c.setting.describe(), "store_key": c.encoder.cache_key,
                            "scores": c.scores, **({"baseline_scores": c.baseline_scores} if c.baseline_scores else {}),
                            "sentences_encoded": c.encoded} for c in candidates],
        },
        "report_tasks": {label: {"pairs": len(p)} for label, p in report.items()},
        "rows": [{**_row(r, by_setting[r.setting].score(r, layers), row_scores[r.name], costs, costs.get(rows[1].name),
                         select_on), "config": encoders[r.name].settings.to_config()} for r in rows],
        "encoding": {"selection": {c.setting.label: c.encoded for c in candidates}, "report": encoded},
        "cost": {"sentences": len(sample), "repeats": cost_repeats, "split": select_on, "reference": rows[1].name,
                 "method": COST_METHOD} if costs else None,
    })


COST_METHOD = ("seconds per sentence, each row timed with a fresh encoder (no store) on the same sentences of the "
               "selection split, rows interleaved, best of the repeats, after a warm-up on two sentences")


def _sample(selection: Pairs, n: int) -> list[str]:
    """The first ``n`` distinct sentences of the selection split (first sides first)."""
    return list(dict.fromkeys((*selection.sent1, *selection.sent2)))[:n]


def _costs(encoders: Mapping[str, MetaEOL], sentences: list[str], repeats: int, batch_size: int,
           log: Log) -> dict[str, float]:
    """Seconds per sentence of each row's encoder (see :data:`COST_METHOD`)."""
    log(f"timing {len(encoders)} rows on {len(sentences)} sentences, best of {repeats}")
    return time_encoders(encoders, sentences, repeats=repeats, batch_size=batch_size)


def _row(row: Row, selection_score: float, scores: dict[str, float], costs: dict[str, float],
         reference: float | None, select_on: str) -> dict[str, Any]:
    values = list(scores.values())
    seconds = costs.get(row.name)
    return {
        "name": row.name, "setting": row.setting.label, **row.setting.describe(),
        "templates": "baseline" if row.baseline else "prompt set", "layer": row.layer,
        "layer_label": layer_label(row.layer), "chosen_on": select_on if row.chosen else None,
        "selection_score": selection_score, "scores": scores,
        "average": float(np.mean(values)) if values and not np.isnan(values).any() else None,
        "seconds_per_sentence": seconds, "relative_cost": seconds / reference if seconds and reference else None,
    }
