"""The transfer section of the method table: a stack's SentEval transfer scores, gathered from
`metaeol eval` results of one encoder, one task or several per file (so a run of hours can be
split across sessions, each finished task kept).

    python bench/transfer_table.py --name "the same, SA+PI+IE templates" \\
        /work/runs/transfer/*/results.json --update bench/results/methods_smollm2

writes the section "## Transfer tasks" into OUTPUT.md (replacing an earlier one) and the key
``transfer`` into OUTPUT.json; tasks not scored yet are listed as such, and the average is given
only when all seven are in. Every file must hold the same encoder settings and classifier protocol,
and the table's row NAME the same encoder settings; the package versions that ran each task may
differ (the settings record, not the version, decides the vectors) and are kept per task.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

TASKS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
HEADING = "## Transfer tasks"


def gather(paths: list[Path]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per task, its result; and the encoder settings and protocol every file shares."""
    scores: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] | None = None
    for path in paths:
        res = json.loads(path.read_text())
        encoder = {key: value for key, value in res["config"]["encoder"].items() if key != "versions"}
        facts = {"encoder": encoder, "settings": res["config"]["encoder_settings"],
                 "classifier": res["config"].get("classifier"), "limit": res["config"].get("limit")}
        if shared is None:
            shared = facts
        elif facts != shared:
            raise SystemExit(f"{path} was scored with other encoder or classifier settings than {paths[0]}")
        if facts["limit"] is not None:
            raise SystemExit(f"{path} was run with --limit: the table holds full tasks only")
        for task, result in res["results"].items():
            if task not in TASKS:
                raise SystemExit(f"{path}: {task} is not a transfer task")
            if task in scores:
                raise SystemExit(f"{path}: {task} is scored in two files")
            scores[task] = {**result, "source": str(path), "versions": res["config"]["encoder"].get("versions")}
    if shared is None:
        raise SystemExit("no results given")
    return scores, shared


def markdown(row: dict[str, Any], scores: dict[str, dict[str, Any]], shared: dict[str, Any]) -> str:
    cells = [f"{scores[t]['score']:.2f}" if t in scores else "not run yet" for t in TASKS]
    done = all(t in scores for t in TASKS)
    avg = f"{sum(scores[t]['score'] for t in TASKS) / len(TASKS):.2f}" if done else "–"
    classifier = shared["classifier"] or {}
    about = (f"Test accuracy x100 (MRPC: accuracy; F1 in the JSON), SentEval protocol "
             f"({classifier.get('kind', 'see the JSON')}, {classifier.get('kfold', '?')}-fold), every sentence of "
             f"every task, `{shared['encoder'].get('dtype')}` encoder; the stack's settings were chosen on STS-B dev only.")
    return "\n".join([
        HEADING, "", about, "",
        "| row | setting | layer | " + " | ".join(TASKS) + " | avg |",
        "|---|---|---|" + "---|" * (len(TASKS) + 1),
        f"| {row['name']} | {row['setting']} | {row['layer_label']} | " + " | ".join(cells) + f" | {avg} |",
        "", "",
    ])


def check_row(output: Path, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The table's row ``name``, which must be the encoder these transfer scores came from."""
    rows = {row["name"]: row for row in json.loads(output.with_suffix(".json").read_text())["rows"]}
    if name not in rows:
        raise SystemExit(f"{output.with_suffix('.json')} has no row {name!r} (rows: {', '.join(rows)})")
    if rows[name]["config"] != settings:
        raise SystemExit(f"row {name!r} of {output.with_suffix('.json')} has other encoder settings than these "
                         "transfer results")
    return rows[name]


def update(output: Path, section: str, record: dict[str, Any]) -> None:
    """Replace (or append) the transfer section of OUTPUT.md and the ``transfer`` key of OUTPUT.json."""
    md_path, json_path = output.with_suffix(".md"), output.with_suffix(".json")
    text = md_path.read_text() if md_path.exists() else ""
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    text = pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    md_path.write_text(text)
    data = json.loads(json_path.read_text()) if json_path.exists() else {}
    data["transfer"] = record
    json_path.write_text(json.dumps(data, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of `metaeol eval` on transfer tasks")
    parser.add_argument("--name", required=True, help="the method table's row these scores belong to (checked: "
                                                      "the same encoder settings)")
    parser.add_argument("--update", required=True, type=Path, help="OUTPUT: updates OUTPUT.md and OUTPUT.json")
    args = parser.parse_args()
    scores, shared = gather(args.results)
    row = check_row(args.update, args.name, shared["settings"])
    section = markdown(row, scores, shared)
    update(args.update, section, {"name": args.name, **shared, "results": scores,
                                  "missing": [t for t in TASKS if t not in scores]})
    print(section)


if __name__ == "__main__":
    main()
