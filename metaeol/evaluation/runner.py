"""Run a set of tasks: encode every unique sentence once, score, write JSON and a markdown table."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from metaeol.evaluation import json_results
from metaeol.evaluation.data import (
    STS_TASKS,
    TRANSFER_TASKS,
    TaskData,
    load_tasks,
    parse_tasks_and_split,
    resolve_data_root,
)
from metaeol.evaluation.sts import evaluate_sts
from metaeol.evaluation.transfer import SEED, classifier_settings, evaluate_transfer
from metaeol.finite import check_finite
from metaeol.protocols import SentenceEncoder
from metaeol.versions import library_versions


def unique_sentences(tasks: Sequence[TaskData]) -> list[str]:
    """Every distinct sentence across the tasks, in first-seen order."""
    return list(dict.fromkeys(s for task in tasks for s in task.sentences()))


def encode_unique(
    encoder: SentenceEncoder, sentences: list[str], *, batch_size: int, show_progress: bool
) -> Callable[[Sequence[str]], np.ndarray]:
    """Encode ``sentences`` in one call; return a lookup from any of them to their rows."""
    emb = np.asarray(encoder.encode(sentences, batch_size=batch_size, show_progress_bar=show_progress))
    if emb.ndim != 2 or emb.shape[0] != len(sentences):
        raise ValueError(f"encoder returned shape {emb.shape} for {len(sentences)} sentences")
    check_finite(emb, sentences)
    index = {s: i for i, s in enumerate(sentences)}
    return lambda batch: emb[[index[s] for s in batch]]


def load_paper_results() -> dict[str, Any]:
    """The paper's reported numbers (``paper_results.json``)."""
    return json.loads(resources.files("metaeol.evaluation").joinpath("paper_results.json").read_text("utf-8"))


def paper_rows(model_name: str | None) -> dict[str, dict[str, float]]:
    """The paper's STS rows when ``model_name`` names the model it reports (else empty)."""
    if not model_name:
        return {}
    paper = load_paper_results()
    name = os.path.basename(model_name.rstrip("/")).lower().replace("_", "-").replace(" ", "-")
    if any(p in name for p in paper["model_patterns"]) and not any(p in name for p in paper["exclude_patterns"]):
        return paper["sts"]
    return {}


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Headline scores x100 (STS) or accuracy (transfer) per task, with the average per group."""
    out: dict[str, dict[str, float]] = {}
    for group, names, scale in (("sts", STS_TASKS, 100.0), ("transfer", TRANSFER_TASKS, 1.0)):
        scores = {t: round(results[t]["score"] * scale, 2) for t in names if t in results}
        if scores:
            out[group] = scores | {"avg": round(float(np.mean(list(scores.values()))), 2)}
    return out


def _table(columns: list[str], rows: dict[str, dict[str, float]]) -> str:
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, row in rows.items():
        cells = [f"{row[c]:.2f}" if c in row else "–" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _settings_line(described: Any) -> str:
    """``, layer 28, float32, Contrastive Prompting 4:0.5`` (then demonstrations, EmbedFilter, no
    clean-up when on) from an encoder's ``describe()``: the
    settings besides model and prompts that change the vectors (empty for other encoders)."""
    if not isinstance(described, dict) or "layers" not in described:
        return ""
    parts = [f"layer {','.join(str(k) for k in described['layers'])}", str(described.get("dtype"))]
    if described.get("pooling") == "mean":
        parts.append("mean pooling")
    tp, cp = described.get("token_prepending"), described.get("contrastive")
    if tp:
        placement = tp.get("placement", "sentence")  # results written before placements existed used ours
        parts.append(f"Token Prepending {tp['start_layer']}:{tp['end_layer']} ({tp['placeholder']}, {placement} placement)")
    if cp:
        parts.append(f"Contrastive Prompting {cp['layer']}:{cp['scale']:g}")
    demonstrations = (described.get("prompts") or {}).get("demonstrations")
    if demonstrations:
        parts.append(f"demonstrations {demonstrations}")
    if described.get("embed_filter"):
        parts.append(f"EmbedFilter 1/{described['embed_filter']['filter_ratio']} ({described.get('embedding_dim')} dims)")
    if described.get("clean") is False:
        parts.append("no clean-up")
    return ", " + ", ".join(parts)


def markdown_report(report: dict[str, Any]) -> str:
    """Markdown tables (STS: Spearman x100; transfer: accuracy) with the paper's rows when known."""
    cfg, summary = report["config"], report["summary"]
    model, prompts = cfg["model"] or "encoder", cfg["prompts"] or "?"
    label = f"ours: {model} / {prompts}"
    notes = []
    if cfg["limit"] is not None:
        notes.append(f"quick mode: first {cfg['limit']} items per file; not comparable with full-data numbers")
    parts = [f"# MetaEOL evaluation\n\nmodel `{model}`, prompts `{prompts}`{_settings_line(cfg['encoder'])}, "
             f"data `{cfg['data_root']}`"]
    if "sts" in summary:
        rows = {label: summary["sts"]}
        split = cfg["split"]
        for name, paper in report.get("paper", {}).items():
            shown = {
                t: v for t, v in paper.items()
                if t in summary["sts"] and t != "avg" and not (t in ("STS-B", "SICK-R") and split != "test")
            }
            if shown:
                rows[f"paper: LLaMA2-7B / {name}"] = shown | {"avg": round(float(np.mean(list(shown.values()))), 2)}
        if split != "test":
            notes.append(f"STS-B and SICK-R scored on their {split} split")
        parts.append("## STS (Spearman x100)\n\n" + _table(list(summary["sts"]), rows))
    if "transfer" in summary:
        protocol = cfg["classifier"]["protocol"]
        parts.append(f"## Transfer (accuracy, {protocol} protocol)\n\n"
                     + _table(list(summary["transfer"]), {label: summary["transfer"]}))
    parts.extend(f"_Note: {n}._" for n in notes)
    return "\n\n".join(parts) + "\n"


def _describe(encoder: SentenceEncoder) -> Any:
    describe = getattr(encoder, "describe", None)
    return describe() if callable(describe) else None


def _rebuild_config(encoder: SentenceEncoder) -> dict[str, Any] | None:
    """The arguments that rebuild ``encoder`` (:func:`metaeol.settings.build_encoder`), when it has them."""
    to_config = getattr(getattr(encoder, "settings", None), "to_config", None)
    return to_config() if callable(to_config) else None


@dataclass(frozen=True)
class EvalData:
    """Loaded tasks plus how they were loaded (recorded in the report)."""

    root: Path
    tasks: dict[str, TaskData]
    split: str
    limit: int | None
    check_counts: bool
    load_s: float


def load_eval_data(
    tasks: str | Sequence[str],
    data_root: str | os.PathLike | None = None,
    *,
    split: str = "test",
    limit: int | None = None,
    check_counts: bool = True,
) -> EvalData:
    """Resolve the data root and load ``tasks`` (a spec such as ``"sts"`` or ``"STS-B:dev"``, which
    overrides ``split``, or a list of names)."""
    t0 = time.perf_counter()
    names, split = parse_tasks_and_split(tasks, split) if isinstance(tasks, str) else (list(tasks), split)
    root = resolve_data_root(data_root)
    loaded = load_tasks(names, root, split=split, limit=limit, check_counts=check_counts)
    return EvalData(root, loaded, split, limit, check_counts, round(time.perf_counter() - t0, 3))


def _name_in(description: Any, key: str) -> str | None:
    """``description[key]``, or its ``name``/``name_or_path`` when that is a dict."""
    value = description.get(key) if isinstance(description, dict) else None
    if isinstance(value, dict):
        value = value.get("name") or value.get("name_or_path")
    return value if isinstance(value, str) else None


def run_evaluation(
    encoder: SentenceEncoder,
    data: EvalData,
    *,
    batch_size: int = 16,
    kfold: int = 10,
    transfer_protocol: str = "senteval",
    mrpc_features: str | None = None,
    model_name: str | None = None,
    prompts_name: str | None = None,
    output_dir: str | os.PathLike | None = None,
    show_progress: bool = False,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, Any]:
    """Evaluate ``encoder`` on the loaded tasks; return the report (and write it to ``output_dir``).

    ``transfer_protocol``: ``senteval`` (SentEval's PyTorch logistic regression, the paper's) or
    ``sklearn``; ``mrpc_features`` defaults to the protocol's (see ``metaeol.evaluation.transfer``)."""
    classifier = classifier_settings(transfer_protocol, kfold=kfold, seed=SEED, mrpc_features=mrpc_features)
    t_start = time.perf_counter()
    loaded = data.tasks
    sentences = unique_sentences(list(loaded.values()))
    n_total = sum(len(t.sentences()) for t in loaded.values())
    log(f"encoding {len(sentences)} unique sentences ({n_total} with repeats) for {', '.join(loaded)}")
    embed = encode_unique(encoder, sentences, batch_size=batch_size, show_progress=show_progress)
    t_encoded = time.perf_counter()

    results: dict[str, dict[str, Any]] = {}
    score_time: dict[str, float] = {}
    for name, task in loaded.items():
        t0 = time.perf_counter()
        if task.kind == "sts":
            results[name] = evaluate_sts(task, embed)
        else:
            results[name] = evaluate_transfer(task, embed, protocol=transfer_protocol, kfold=kfold, seed=SEED,
                                              mrpc_features=mrpc_features)
        score_time[name] = round(time.perf_counter() - t0, 3)
        log(f"{name}: {results[name]['score']:.4f} ({score_time[name]:.1f} s)")

    description = _describe(encoder)
    model_name = model_name or _name_in(description, "model")
    prompts_name = prompts_name or _name_in(description, "prompts")
    report: dict[str, Any] = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "model": model_name,
            "prompts": prompts_name,
            "encoder": description,
            "encoder_settings": _rebuild_config(encoder),
            "data_root": str(data.root),
            "tasks": list(loaded),
            "split": data.split,
            "limit": data.limit,
            "check_counts": data.check_counts,
            "batch_size": batch_size,
            "classifier": classifier,
        },
        "versions": library_versions(),
        "sentences": {"unique": len(sentences), "total": n_total},
        "timings_s": {
            "load": data.load_s,
            "encode": round(t_encoded - t_start, 3),
            "score": score_time,
            "total": round(data.load_s + time.perf_counter() - t_start, 3),
        },
        "summary": summarise(results),
        "results": results,
    }
    paper = paper_rows(model_name)
    if paper:
        report["paper"] = paper
    report["markdown"] = markdown_report(report)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json_results.dumps(report) + "\n", "utf-8")
        (out / "results.md").write_text(report["markdown"], "utf-8")
    return report
