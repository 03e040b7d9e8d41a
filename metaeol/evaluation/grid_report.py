"""The booster grid's outputs: ``results.json`` (strict JSON) and ``results.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metaeol.evaluation import json_results
from metaeol.layers import layer_label


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _grid_line(res: dict[str, Any]) -> str:
    candidates = res["selection"]["candidates"]
    return (f"Settings tried: {', '.join(c['setting'] for c in candidates)} ({len(candidates)} settings x "
            f"{len(res['layers'])} layers, scored on {res['selection']['task']} only).")


def _chosen_line(res: dict[str, Any]) -> str:
    sel = res["selection"]
    row = next((r for r in res["rows"] if r["name"] == sel["chosen"]), None)
    if row is None:
        return f"Nothing could be chosen on {sel['task']}: every score there is undefined."
    report = ", ".join(res["report_tasks"]) or "no report task"
    return (f"**Chosen on {sel['task']}** ({sel['pairs']} pairs): {row['name']}, setting {row['setting']}, "
            f"layer {row['layer_label']} ({_fmt(row['selection_score'])}). Every layer and setting marked * was "
            f"chosen on {sel['task']} only; {report} were scored once, at those fixed settings.")


def _sample_line(res: dict[str, Any]) -> str:
    """Which tasks were scored on a seeded sample of their pairs (empty when none was)."""
    parts = []
    if res.get("sample"):
        parts.append(f"{res['selection']['task']} on at most {res['sample']} of its pairs")
    if res.get("report_sample") and res["report_tasks"]:
        counts = ", ".join(f"{task} {info['pairs']}" for task, info in res["report_tasks"].items())
        parts.append(f"each report task on at most {res['report_sample']} of its pairs ({counts})")
    if not parts:
        return ""
    return (f"**Sampled:** {'; '.join(parts)}, a seeded random sample (seed {res.get('seed', 0)}); "
            f"scores on the full sets can differ.")


def markdown_report(res: dict[str, Any]) -> str:
    """The rows (selection score, report scores, average, encode cost), what was chosen on
    which split, and every setting's score on the selection split."""
    sel, tasks = res["selection"], list(res["report_tasks"])
    lines = [f"# Settings chosen on {sel['task']}: `{res['model_key']}`", "",
             f"Spearman x100 of cosine similarity. Prompt set `{res['prompts']['name']}` "
             f"({len(res['prompts']['templates'])} templates), baseline `{res['baseline']['name']}`. " + _grid_line(res),
             "", _chosen_line(res), ""]
    sampled = _sample_line(res)
    if sampled:
        lines += [sampled, ""]
    if "test" in sel["task"].lower():
        lines += [f"> **Warning:** {sel['task']} is a test split: choosing settings on it overfits.", ""]
    columns = [sel["task"], *tasks, *(["avg"] if tasks else [])]
    lines.append("| row | setting | layer | " + " | ".join(columns) + " | encode cost |")
    lines.append("|---|---|---|" + "---|" * len(columns) + "---|")
    for r in res["rows"]:
        cells = [_fmt(r["selection_score"]), *(_fmt(r["scores"][t]) for t in tasks), *([_fmt(r["average"])] if tasks else [])]
        cost = "–" if r["relative_cost"] is None else f"{r['relative_cost']:.2f}x"
        lines.append(f"| {r['name']} | {r['setting']} | {r['layer_label']}{' *' if r['chosen_on'] else ''} | "
                     + " | ".join(cells) + f" | {cost} |")
    lines.append("")
    lines.append("Layer: hidden-state index (out = final output).")
    cost = res["cost"]
    if cost:
        reference = next(r for r in res["rows"] if r["name"] == cost["reference"])
        lines[-1] += (f" Encode cost: relative to {cost['reference']} at layer out "
                      f"({reference['seconds_per_sentence'] * 1000:.1f} ms per sentence); {cost['method']} "
                      f"({cost['sentences']} {cost['split']} sentences, best of {cost['repeats']}).")
    lines += ["", f"## Every setting on {sel['task']}", "",
              "| setting | sentences encoded | best layer | best | out |", "|---|---|---|---|---|"]
    for c in sel["candidates"]:
        scores = np.array([np.nan if x is None else x for x in c["scores"]], dtype=float)
        best = None if np.isnan(scores).all() else int(np.nanargmax(scores))
        lines.append(f"| {c['setting']} | {c['sentences_encoded']} | "
                     f"{'–' if best is None else layer_label(res['layers'][best])} | "
                     f"{_fmt(None if best is None else float(scores[best]))} | {_fmt(c['scores'][res['layers'].index(-1)])} |")
    return "\n".join(lines) + "\n"


def write_results(res: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """Write ``results.json`` and ``results.md`` into ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results_json": out / "results.json", "results_markdown": out / "results.md"}
    paths["results_json"].write_text(json_results.dumps(res) + "\n", encoding="utf-8")
    paths["results_markdown"].write_text(markdown_report(res), encoding="utf-8")
    return paths
