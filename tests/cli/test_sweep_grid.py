"""`metaeol sweep` with a booster grid: layer and booster settings chosen on STS-B dev, the
report tasks scored at those fixed settings, in one command (stories260K, a few pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _threads import single_thread
from metaeol import MetaEOL
from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.cli import main
from metaeol.evaluation.data import load_task
from metaeol.evaluation.sts import cosine_rows, spearman_x100
from metaeol.evaluation.sweep import pooled_pairs
from metaeol.layers import resolve_layers
from metaeol.store import VectorStore

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)

SAMPLE = 6
LAYERS = [1, 2, 3, 4, -1]  # "all" on stories260K's 5 blocks
SETTINGS = {"off": (None, None), "CP 1:0.5": (None, ContrastivePrompting(1, 0.5)), "TP 1:3": (TokenPrepending(1, 3), None),
            "TP 1:3 + CP 1:0.5": (TokenPrepending(1, 3), ContrastivePrompting(1, 0.5))}


def run(args: list[str]):
    return CliRunner().invoke(main, args)


def strict_json(path: Path) -> dict:
    def reject(constant: str):
        raise AssertionError(f"{path} is not strict JSON: {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def sweep_args(model: Path, data: Path, store: Path, out: Path, *extra: str) -> list[str]:
    return ["sweep", "--model", str(model), "--tasks", "STS-B:dev", "--report-on", "STS12,SICK-R", "--sample", str(SAMPLE),
            "--random-orders", "0", "--no-plots", "--no-float16-check", "--batch-size", "8", "--data", str(data),
            "--store", str(store), "--output", str(out), "--token-prepending", "off,1:3", "--contrastive", "off,1:0.5",
            *extra]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, stories_gguf, senteval_root):
    """One grid run: (its folder, results.json, the vector store's path)."""
    tmp = tmp_path_factory.mktemp("grid")
    res = run(sweep_args(stories_gguf, senteval_root, tmp / "v.db", tmp / "out", "--cost-sentences", "4",
                         "--cost-repeats", "1"))
    assert res.exit_code == 0, res.output
    return tmp, strict_json(tmp / "out" / "results.json"), tmp / "v.db"


def _pairs(root: Path, name: str, split: str = "test"):
    return pooled_pairs(load_task(name, root, split=split), SAMPLE, 0)


def test_each_chosen_row_is_the_argmax_of_the_listed_selection_scores(grid) -> None:
    tmp, res, _ = grid
    candidates = {c["setting"]: np.array([np.nan if x is None else x for x in c["scores"]]) for c in res["selection"]["candidates"]}
    assert list(candidates) == list(SETTINGS) and res["layers"] == LAYERS
    groups = {"metaeol (best layer)": ["off"], "metaeol + TP": ["TP 1:3"], "metaeol + CP": ["CP 1:0.5"],
              "metaeol + TP + CP": ["TP 1:3 + CP 1:0.5"]}
    rows = {r["name"]: r for r in res["rows"]}
    assert list(rows) == ["prompteol", "metaeol", *groups]
    for name, settings in groups.items():
        table = np.stack([candidates[s] for s in settings])
        i, k = np.unravel_index(np.nanargmax(table), table.shape)
        assert (rows[name]["setting"], rows[name]["layer"]) == (settings[i], LAYERS[k])
        assert rows[name]["selection_score"] == table[i, k] and rows[name]["chosen_on"] == "STS-B-dev"
    overall = max(groups, key=lambda name: rows[name]["selection_score"])
    assert res["selection"]["chosen"] == overall
    # the same scores as the ablation sweep's, which reads the same stored vectors
    sweep = strict_json(tmp / "out" / "sweep.json")
    np.testing.assert_array_equal(candidates["off"], sweep["by_layer"]["metaeol"]["STS-B-dev"])
    assert rows["prompteol"]["selection_score"] == sweep["by_layer"]["prompteol"]["STS-B-dev"][-1]
    assert rows["metaeol"]["chosen_on"] is None and rows["metaeol"]["layer"] == -1


def test_scores_are_the_encoders_at_those_fixed_settings(grid, stories, senteval_root) -> None:
    _, res, _ = grid
    for row in res["rows"]:
        if row["name"] not in ("prompteol", "metaeol + TP + CP"):
            continue
        tp, cp = SETTINGS[row["setting"]]
        encoder = MetaEOL(stories.model, "prompteol" if row["templates"] == "baseline" else "metaeol",
                          tokenizer=stories.tokenizer, layer=row["layer"], token_prepending=tp, contrastive=cp)
        for label, pairs in (("STS-B-dev", _pairs(senteval_root, "STS-B", "dev")), ("STS12", _pairs(senteval_root, "STS12")),
                             ("SICK-R-test", _pairs(senteval_root, "SICK-R"))):
            direct = spearman_x100(cosine_rows(encoder.encode(list(pairs.sent1)), encoder.encode(list(pairs.sent2))),
                                   pairs.targets)
            listed = row["selection_score"] if label == "STS-B-dev" else row["scores"][label]
            assert listed == pytest.approx(direct, abs=1e-6), (row["name"], label)


def test_report_tasks_are_encoded_only_for_the_reported_rows(grid, senteval_root) -> None:
    _, res, store_path = grid
    selection = set(_pairs(senteval_root, "STS-B", "dev").sent1 + _pairs(senteval_root, "STS-B", "dev").sent2)
    report = {s for name in ("STS12", "SICK-R") for p in [_pairs(senteval_root, name)] for s in p.sent1 + p.sent2}
    with VectorStore(store_path) as store:
        rows_in_store = {m["model_key"]: m["rows"] for m in store.stats()["models"]}
    reported = {r["setting"] for r in res["rows"]}
    for c in res["selection"]["candidates"]:
        templates = 9 if c["setting"] == "off" else 8  # plain MetaEOL also carries the PromptEOL template
        row_layers = {k for r in res["rows"] if r["setting"] == c["setting"] for k in resolve_layers([r["layer"]], 5)}
        expected = templates * (len(selection) * len(LAYERS) + len(report - selection) * len(row_layers))
        assert rows_in_store[c["store_key"]] == expected, c["setting"]
        assert (c["setting"] in res["encoding"]["report"]) == (c["setting"] in reported)
    assert len(rows_in_store) == len(SETTINGS) and 0 < len(reported - {"off"}) < len(SETTINGS)


def test_a_rerun_encodes_nothing(grid, stories_gguf, senteval_root, monkeypatch) -> None:
    tmp, res, store_path = grid
    calls = []
    original = MetaEOL._compute_template_states
    monkeypatch.setattr(MetaEOL, "_compute_template_states", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    again = run(sweep_args(stories_gguf, senteval_root, store_path, tmp / "again", "--cost-sentences", "0"))
    assert again.exit_code == 0, again.output
    assert calls == []
    rerun = strict_json(tmp / "again" / "results.json")
    assert [r["scores"] for r in rerun["rows"]] == [r["scores"] for r in res["rows"]]
    assert set(rerun["encoding"]["selection"].values()) == set(rerun["encoding"]["report"].values()) == {0}
    assert rerun["cost"] is None and rerun["rows"][1]["relative_cost"] is None


def test_the_report_says_what_was_chosen_on_which_split(grid) -> None:
    tmp, res, _ = grid
    chosen = next(r for r in res["rows"] if r["name"] == res["selection"]["chosen"])
    md = (tmp / "out" / "results.md").read_text()
    assert (f"**Chosen on STS-B-dev** ({SAMPLE} pairs): {chosen['name']}, setting {chosen['setting']}, "
            f"layer {chosen['layer_label']}") in md
    assert "| row | setting | layer | STS-B-dev | STS12 | SICK-R-test | avg | encode cost |" in md
    assert "| metaeol | off | out | " in md and md.count(" * |") == 4
    metaeol = res["rows"][1]
    assert metaeol["relative_cost"] == 1.0 and metaeol["seconds_per_sentence"] > 0
    assert all(r["relative_cost"] > 0 for r in res["rows"]) and res["cost"]["sentences"] == 4
    assert res["model"]["dtype"] == "float32" and res["versions"]["torch"] and res["model_key"] in res["selection"]["candidates"][0]["store_key"]
    assert res["sample"] == SAMPLE and res["storage_dtype"] == "float32"


def test_report_sample_samples_the_report_tasks_only(grid, stories_gguf, senteval_root, monkeypatch) -> None:
    tmp, res, store_path = grid
    calls = []
    original = MetaEOL._compute_template_states
    monkeypatch.setattr(MetaEOL, "_compute_template_states", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    smaller = run(sweep_args(stories_gguf, senteval_root, store_path, tmp / "smaller", "--report-sample", "4",
                             "--cost-sentences", "0"))
    assert smaller.exit_code == 0, smaller.output
    assert calls == []  # a 4-pair sample is inside the 6-pair one, whose vectors are stored
    out = strict_json(tmp / "smaller" / "results.json")
    assert out["selection"]["pairs"] == SAMPLE and out["report_tasks"] == {"STS12": {"pairs": 4}, "SICK-R-test": {"pairs": 4}}
    assert [(r["setting"], r["layer"], r["selection_score"]) for r in out["rows"]] == \
        [(r["setting"], r["layer"], r["selection_score"]) for r in res["rows"]]
    sts12 = pooled_pairs(load_task("STS12", senteval_root), 4, 0)
    encoder = MetaEOL(str(stories_gguf), "prompteol", layer=-1)
    direct = spearman_x100(cosine_rows(encoder.encode(list(sts12.sent1)), encoder.encode(list(sts12.sent2))), sts12.targets)
    assert out["rows"][0]["scores"]["STS12"] == pytest.approx(direct, abs=1e-6)
    assert out["sample"] == SAMPLE and out["report_sample"] == 4
    md = (tmp / "smaller" / "results.md").read_text()
    assert (f"**Sampled:** STS-B-dev on at most {SAMPLE} of its pairs; each report task on at most 4 of its pairs "
            "(STS12 4, SICK-R-test 4), a seeded random sample (seed 0)") in md


@pytest.mark.parametrize("extra, message", [
    (["--token-prepending", "off,1-3"], "--token-prepending: token prepending must be START:END block indices, e.g. 1:7; got '1-3'"),
    (["--token-prepending", "1:3,,1:4"], "--token-prepending: empty setting in '1:3,,1:4'"),
    (["--token-prepending", "1:3", "--tp-placement", "sentence,sideways"],
     "--tp-placement: 'sideways' is not a placement; use sentence or official"),
    (["--embed-filter", "off,0"], "--embed-filter: '0' is not a ratio (an integer >= 1)"),
    (["--demonstrations", "off,no-such-pool:opt-1"],
     "unknown demonstrations 'no-such-pool': not a built-in pool ['metaeol_tasks', 'scaling_sentemb'] and no such file"),
    (["--contrastive", "1:0.5,OFF,1:.5"], "--contrastive: '1:0.5,OFF,1:.5' lists one setting twice (1:0.5, 1:.5)"),
    (["--token-prepending", "off,1:9"], "token_prepending end_layer 9 is beyond the model's 5 blocks"),
    (["--report-on", "STS12,MR"], "MR: not an STS task; only STS tasks are scored here"),
    (["--report-sample", "4"], "--report-sample samples the --report-on tasks; give --report-on too"),
    (["--tp-placeholder", "mean"], "--tp-placeholder configures --token-prepending, which is off; give a "
                                   "--token-prepending setting or leave it out"),
    (["--token-prepending", "off", "--tp-seed", "3"], "--tp-seed configures --token-prepending, which is off; give a "
                                                      "--token-prepending setting or leave it out"),
    (["--cp-auxiliary", 'Odd "{s}" in one word:"'], "--cp-auxiliary configures --contrastive, which is off; give a "
                                                     "--contrastive setting or leave it out"),
])
def test_bad_grid_values_are_one_line_errors(tmp_path, stories_gguf, senteval_root, extra, message) -> None:
    res = run(["sweep", "--model", str(stories_gguf), "--data", str(senteval_root), "--sample", "4",
               "--output", str(tmp_path / "out"), *extra])
    assert res.exit_code == 1 and res.output.strip().splitlines() == [f"Error: {message}"]
    assert not (tmp_path / "out").exists()  # refused before any encoding


def test_eval_takes_one_setting_of_each_booster(tmp_path, stories_gguf, senteval_root) -> None:
    common = ["eval", "--tasks", "STS-B", "--split", "dev", "--limit", "4", "--model", str(stories_gguf), "--no-progress",
              "--data", str(senteval_root), "--no-count-check", "--output", str(tmp_path)]
    res = run(common + ["--token-prepending", "off", "--contrastive", "1:0.5"])
    assert res.exit_code == 0, res.output
    encoder = strict_json(tmp_path / "results.json")["config"]["encoder"]
    assert encoder["token_prepending"] is None and encoder["contrastive"]["layer"] == 1
    assert "layer 5, float32, Contrastive Prompting 1:0.5, data" in (tmp_path / "results.md").read_text()
    several = run(common + ["--token-prepending", "off,1:3"])
    assert several.exit_code == 1 and "--token-prepending takes one setting here; `metaeol sweep` tries several" in several.output


def test_layer_zero_and_no_progress(tmp_path, stories_gguf, senteval_root) -> None:
    """Layer 0 (the input embedding: every score undefined) is reported, not a traceback after the
    encoding; --no-progress keeps only warnings and the result."""
    res = run(["sweep", "--model", str(stories_gguf), "--data", str(senteval_root), "--sample", "4", "--layer", "0",
               "--no-plots", "--cost-sentences", "0", "--random-orders", "0", "--no-progress",
               "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "best layer on STS-B-dev: metaeol none (every score undefined), prompteol none (every score undefined)" in res.output
    assert "layer 0 is the input embedding" in res.output
    assert "store:" not in res.output and "scored layer" not in res.output  # progress lines are off
    assert "No defined scores to compare" in (tmp_path / "out" / "sweep.md").read_text()
