"""The sweep's outputs: ``sweep.json``, a markdown report and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from metaeol.layers import layer_label


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
    if f16 and not f16["compared_scores"]:
        lines.append("No defined scores to compare (every score is undefined).")
    elif f16:
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
        from metaeol.evaluation.sweep_plots import plot_sweep

        paths.update(plot_sweep(res, out))
    return paths
