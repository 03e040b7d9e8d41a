"""The method table: the rows of several `metaeol sweep` results in one table, each row's encode cost
measured here, in one run, relative to MetaEOL at the final output.

Each sweep chose its rows' settings and layers on its selection split and scored them once on the
report tasks; this script only gathers those rows (a row in several files is taken once; a row pooled otherwise than by
the last token, or without the clean-up, says so in its name), checks that every file scored the same model, dtype and report pairs, and
times every row's encoder (rebuilt from the row's settings record) on the same sentences of the
selection split, interleaved, best of --repeats:

    python bench/methods_table.py /work/runs/methods/results.json /work/runs/tp-placement/results.json \\
        --output bench/results/methods_smollm2

A table this script wrote (OUTPUT.json) may stand in for the sweeps' results, so a row joins a
finished table without them; its transfer section is not carried over (rerun transfer_table.py).

A stack whose settings were chosen outside a sweep (per-template demonstrations chosen by
`metaeol demonstrations select`, a meta-task subset) joins as ``--eval-row NAME DEV TEST``: the
results.json of `metaeol eval` on the selection split and on the report tasks, with the same encoder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metaeol import MetaEOL
from metaeol.evaluation.data import load_task, resolve_data_root, task_label
from metaeol.evaluation.encode_cost import time_encoders
from metaeol.evaluation.json_results import nan_to_none
from metaeol.settings import build_encoder
from metaeol.versions import library_versions


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _row_name(row: dict[str, Any]) -> str:
    """The sweep's row name, plus the pooling when it is not the last token and the missing clean-up."""
    config = row["config"]
    extras = ([f"{config['pooling']} pooling"] if config["pooling"] != "last" else []) + (
        ["no clean-up"] if config["clean"] is False else [])
    return ", ".join([row["name"], *extras])


def gather(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of every results file, and what they share (model, selection, report tasks)."""
    rows: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] | None = None
    for path in paths:
        res = json.loads(path.read_text())
        if "shared" in res:  # a table this script wrote: its rows join as they are
            facts, named = res["shared"], [(row["name"], row) for row in res["rows"]]
        else:
            facts = {"model_key": res["model_key"], "selection": res["selection"]["task"],
                     "selection_pairs": res["selection"]["pairs"], "report_tasks": res["report_tasks"],
                     "sampled": bool(res.get("sample") or res.get("report_sample")),
                     "storage_dtype": res.get("storage_dtype")}
            named = [(_row_name(row), {**row, "source": str(path)}) for row in res["rows"]]
        if shared is None:
            shared = facts
        elif facts != shared:
            raise SystemExit(f"{path} differs from {paths[0]} in model, selection or report tasks: {facts} vs {shared}")
        for name, row in named:
            if name in rows and rows[name]["config"] != row["config"]:
                raise SystemExit(f"{path}: row {name!r} differs from the one in {rows[name]['source']}")
            rows.setdefault(name, {**row, "name": name})
    if "metaeol" not in rows:
        raise SystemExit("no row named 'metaeol' (MetaEOL at the final output), the cost reference")
    return list(rows.values()), shared


def _setting_label(config: dict[str, Any], prompts: str) -> str:
    """``CP 4:0.5 + prompts <prompt set name> + EmbedFilter 2``, close to a sweep's setting labels."""
    parts = []
    if config.get("token_prepending"):
        tp = config["token_prepending"]
        parts.append(f"TP {tp['start_layer']}:{tp['end_layer']} ({tp['placement']})")
    if config.get("contrastive"):
        parts.append(f"CP {config['contrastive']['layer']}:{config['contrastive']['scale']}")
    parts.append(f"prompts {prompts}")
    if config.get("embed_filter"):
        parts.append(f"EmbedFilter {config['embed_filter']}")
    return " + ".join(parts)


def eval_row(name: str, dev_path: Path, test_path: Path, shared: dict[str, Any]) -> dict[str, Any]:
    """A table row from two `metaeol eval` results of one encoder: the selection split and the report tasks."""
    dev, test = (json.loads(p.read_text())["config"] for p in (dev_path, test_path))
    if not dev.get("encoder_settings") or dev["encoder_settings"] != test.get("encoder_settings"):
        raise SystemExit(f"--eval-row {name}: {dev_path} and {test_path} do not record the same encoder settings")
    if not test["encoder"]["store_key"].startswith(shared["model_key"] + "|"):
        raise SystemExit(f"--eval-row {name}: {test_path} scored {test['encoder']['store_key']}, "
                         f"not {shared['model_key']}")
    selection, split = shared["selection"].rsplit("-", 1)
    if test["split"] != "test" or dev["split"] != split or selection not in dev["tasks"] or dev["limit"] or test["limit"]:
        raise SystemExit(f"--eval-row {name}: {dev_path} is not the full {shared['selection']}")
    results = {task_label(t, test["split"]): r for t, r in json.loads(test_path.read_text())["results"].items()}
    scores = {t: 100 * r["score"] for t, r in results.items() if r.get("score") is not None}
    missing = [t for t in shared["report_tasks"] if t not in scores]
    if missing:
        raise SystemExit(f"--eval-row {name}: {test_path} has no score for {', '.join(missing)}")
    settings = test["encoder_settings"]
    layer = settings["layer"]
    return {"name": name, "setting": _setting_label(settings, test["encoder"]["prompts"]["name"]),
            "layer": layer, "layer_label": "out" if layer in (-1, test["encoder"]["num_layers"]) else str(layer),
            "chosen_on": shared["selection"],
            "selection_score": 100 * json.loads(dev_path.read_text())["results"][selection]["score"],
            "scores": {t: scores[t] for t in shared["report_tasks"]},
            "average": sum(scores[t] for t in shared["report_tasks"]) / len(shared["report_tasks"]),
            "config": settings, "source": f"{dev_path} + {test_path}"}


def markdown(rows: list[dict[str, Any]], shared: dict[str, Any], cost: dict[str, Any]) -> str:
    tasks = list(shared["report_tasks"])
    selection = shared["selection"]
    lines = [f"# Training-free methods on `{shared['model_key']}`", "",
             f"Spearman x100 of cosine similarity. Every setting and layer marked * was chosen on {selection} "
             f"({shared['selection_pairs']} pairs) only; {', '.join(tasks)} were scored once, at those fixed settings"
             + (", on samples" if shared["sampled"] else ", on the full sets (no sampling)")
             + f"; vectors stored as {shared['storage_dtype']}.", "",
             "| row | setting | layer | " + " | ".join([selection, *tasks, "avg"]) + " | encode cost |",
             "|---|---|---|" + "---|" * (len(tasks) + 2) + "---|"]
    for r in rows:
        cells = [_fmt(r["selection_score"]), *(_fmt(r["scores"].get(t)) for t in tasks), _fmt(r["average"])]
        relative = cost["relative"].get(r["name"])
        lines.append(f"| {r['name']} | {r['setting']} | {r['layer_label']}{' *' if r['chosen_on'] else ''} | "
                     + " | ".join(cells) + f" | {'–' if relative is None else f'{relative:.2f}x'} |")
    lines += ["", f"Layer: hidden-state index (out = final output). Encode cost: seconds per sentence relative to "
                  f"metaeol at the final output ({cost['seconds_per_sentence']['metaeol'] * 1000:.1f} ms), every row's "
                  f"encoder rebuilt from its settings record and timed in one run on the same {cost['sentences']} "
                  f"{selection} sentences, rows interleaved, best of {cost['repeats']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of `metaeol sweep --report-on`, "
                        "or an OUTPUT.json this script wrote (its rows join as they are)")
    parser.add_argument("--output", required=True, type=Path, help="writes OUTPUT.md and OUTPUT.json")
    parser.add_argument("--eval-row", nargs=3, action="append", default=[], metavar=("NAME", "DEV", "TEST"),
                        help="a row from `metaeol eval` results.json on the selection split (DEV) and the report "
                             "tasks (TEST)")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=None, help="SentEval data root")
    args = parser.parse_args()

    rows, shared = gather(args.results)
    rows += [eval_row(name, Path(dev), Path(test), shared) for name, dev, test in args.eval_row]
    reference = next(r for r in rows if r["name"] == "metaeol")["config"]
    base = MetaEOL(reference["model"], dtype=reference["dtype"])
    encoders = {r["name"]: build_encoder(r["config"], model=base.model, tokenizer=base.tokenizer) for r in rows}
    name, split = shared["selection"].rsplit("-", 1)
    sentences = load_task(name, resolve_data_root(args.data), split=split).sentences()[: args.sentences]
    seconds = time_encoders(encoders, sentences, repeats=args.repeats)
    cost = {"sentences": len(sentences), "repeats": args.repeats, "seconds_per_sentence": seconds,
            "relative": {n: s / seconds["metaeol"] for n, s in seconds.items()}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text(markdown(rows, shared, cost))
    args.output.with_suffix(".json").write_text(json.dumps(nan_to_none(
        {"shared": shared, "rows": rows, "cost": cost, "versions": library_versions()}), indent=1) + "\n")
    print(args.output.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
