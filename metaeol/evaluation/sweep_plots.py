"""PNG plots of a sweep (matplotlib, imported only here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _plt():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'metaeol[plots]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v


@dataclass(frozen=True)
class _Context:
    """What every plot of one sweep shows: the selection task, a title and the task sizes."""

    task: str
    title: str
    pairs: str


def _context(res: dict[str, Any]) -> _Context:
    model = res.get("model", {})
    name = str(model.get("model", res["model_key"])).rstrip("/").split("/")[-1] if model.get("model", "").startswith("/") \
        else str(model.get("model", res["model_key"]))
    title = f"{name} ({model['dtype']})" if model.get("dtype") else name
    pairs = ", ".join(f"{n}: {v['pairs']} pairs" for n, v in res["tasks"].items())
    return _Context(res["selection"]["task"], title, pairs)


def plot_layers(plt, res: dict[str, Any], out: Path, context: _Context) -> Path:
    """Score vs layer for MetaEOL and PromptEOL on every task, with the selected layer."""
    task, title, pairs = context.task, context.title, context.pairs
    layers = res["layers"]
    n_blocks = max([x for x in layers if x >= 0], default=0) + 1
    xs = [n_blocks if x == -1 else x for x in layers]
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ti, n in enumerate(res["tasks"]):
        c = colors[ti % len(colors)]
        for method, style, label in (("metaeol", "-o", "MetaEOL"), ("prompteol", "--s", "PromptEOL")):
            ys = [_nan(res["by_layer"][method][n][i]) for i in order]
            ax.plot([xs[i] for i in order], ys, style, color=c, ms=3.5, lw=1.6 if method == "metaeol" else 1.1,
                    label=f"{label} · {n}")
    best = res["selection"]["best_layer"]["metaeol"]
    if best["layer"] is not None:
        bx = n_blocks if best["layer"] == -1 else best["layer"]
        ax.axvline(bx, color="grey", ls=":", lw=1)
        right = bx > (min(xs) + max(xs)) / 2  # keep the label inside the axes
        ax.annotate(f"best on {task}: {'out' if best['layer'] == -1 else best['layer']} ({best['score']:.1f})",
                    (bx, best["score"]), xytext=(-5 if right else 5, -14), textcoords="offset points", fontsize=8,
                    ha="right" if right else "left")
    ax.set_xticks(sorted(set(xs)))
    ax.set_xticklabels(["out" if x == n_blocks and -1 in layers else str(x) for x in sorted(set(xs))],
                       fontsize=7 if len(xs) > 20 else 9)
    ax.set_xlabel("layer (hidden_states index; 'out' = final normed output)")
    ax.set_ylabel("Spearman x100")
    ax.set_title(f"Score vs layer — {title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.text(0.01, 0.01, f"{pairs}. Best layer chosen on {task}; choosing it on test data overfits.", fontsize=7,
             color="dimgray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(plt, fig, out / "layers.png")


def plot_prompt_count(plt, res: dict[str, Any], out: Path, context: _Context) -> Path:
    """Score vs number of prompts averaged, per order, at each reported layer."""
    task, title, pairs = context.task, context.title, context.pairs
    pc = res["prompt_count"]
    fig, axes = plt.subplots(1, len(pc), figsize=(5.2 * len(pc), 4.2), squeeze=False)
    for ax, (layer, curves) in zip(axes[0], pc.items()):
        k = len(curves["authors"]["scores"][task])
        ks = list(range(1, k + 1))
        for name, c in curves.items():
            if name.startswith("random") and name[6:].isdigit():
                ax.plot(ks, [_nan(v) for v in c["scores"][task]], color="grey", alpha=0.35, lw=0.9)
        if "random_mean" in curves:
            m = [_nan(v) for v in curves["random_mean"]["scores"][task]]
            s = [_nan(v) for v in curves["random_std"]["scores"][task]]
            ax.errorbar(ks, m, yerr=s, color="black", lw=1.4, capsize=2, label="random orders (mean ± sd)")
        ax.plot(ks, [_nan(v) for v in curves["authors"]["scores"][task]], "-o", ms=4, label="authors' order")
        ax.plot(ks, [_nan(v) for v in curves["reverse"]["scores"][task]], "-s", ms=4, label="reverse order")
        base_i = res["layer_labels"].index(layer)
        base = res["by_layer"]["prompteol"][task][base_i]
        if base is not None:
            ax.axhline(base, color="tab:red", ls="--", lw=1, label="PromptEOL")
        ax.set_xticks(ks)
        ax.set_xlabel("number of MetaEOL prompts averaged")
        ax.set_ylabel(f"Spearman x100 ({task})")
        ax.set_title(f"layer {layer}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Score vs number of prompts — {title} — {pairs}", fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, out / "prompts.png")


def plot_meta_tasks(plt, res: dict[str, Any], out: Path, context: _Context) -> Path:
    """Every meta-task subset's score at each reported layer."""
    task, title, pairs = context.task, context.title, context.pairs
    mt = res["meta_tasks"]
    first = next(iter(mt.values()))
    fig, axes = plt.subplots(1, len(mt), figsize=(5.2 * len(mt), 0.32 * len(first) + 1.6), squeeze=False)
    for ax, (layer, subsets) in zip(axes[0], mt.items()):
        subsets = sorted(subsets, key=lambda s: _nan(s["scores"][task]) if s["scores"][task] is not None else -1e9)
        labels = ["+".join(s["tasks"]) for s in subsets]
        vals = [_nan(s["scores"][task]) for s in subsets]
        colors_ = ["tab:blue" if len(s["tasks"]) == len(first[-1]["tasks"]) else
                   ("tab:orange" if len(s["tasks"]) == 1 else "tab:gray") for s in subsets]
        ax.barh(labels, vals, color=colors_)
        finite = [v for v in vals if v == v]
        if finite:
            lo, hi = min(finite), max(finite)
            ax.set_xlim(lo - 0.15 * (hi - lo + 1e-9) - 1, hi + 0.1 * (hi - lo + 1e-9) + 1)
        for y, v in enumerate(vals):
            if v == v:
                ax.text(v, y, f" {v:.1f}", va="center", fontsize=7)
        base = res["by_layer"]["prompteol"][task][res["layer_labels"].index(layer)]
        if base is not None:
            ax.axvline(base, color="tab:red", ls="--", lw=1, label=f"PromptEOL ({base:.1f})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel(f"Spearman x100 ({task})")
        ax.set_title(f"meta-task subsets, layer {layer}", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Meta-task subsets — {title} — {pairs} (orange: one meta-task, blue: all four)", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, out / "meta_tasks.png")


def plot_sweep(res: dict[str, Any], output: str | Path) -> dict[str, Path]:
    """Write layers.png, prompts.png and meta_tasks.png; return their paths."""
    plt, out, context = _plt(), Path(output), _context(res)
    return {
        "plot_layers": plot_layers(plt, res, out, context),
        "plot_prompts": plot_prompt_count(plt, res, out, context),
        "plot_meta_tasks": plot_meta_tasks(plt, res, out, context),
    }
