"""The method options (--demonstrations, --embed-filter, --no-clean) and `metaeol demonstrations`."""

import json
import re

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from _threads import single_thread
from metaeol import MetaEOL
from metaeol.cli import main
from metaeol.settings import build_encoder

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def run(args):
    return CliRunner().invoke(main, args)


def test_pools_lists_the_shipped_pools():
    res = run(["demonstrations", "pools"])
    lines = res.output.splitlines()
    assert res.exit_code == 0
    assert "metaeol_tasks: 24 candidates; selected: none" in lines
    assert any(line.startswith("scaling_sentemb: 300 candidates; selected: opt-125m=15") for line in lines)


def test_select_then_eval_with_the_chosen_demonstrations(tmp_path, stories_gguf, senteval_root, monkeypatch):
    bars = []
    encode_templates = MetaEOL.encode_templates

    def recording(self, *args, show_progress_bar=None, **kwargs):
        bars.append(show_progress_bar)
        return encode_templates(self, *args, show_progress_bar=show_progress_bar, **kwargs)

    monkeypatch.setattr(MetaEOL, "encode_templates", recording)
    chosen = tmp_path / "demos.yaml"
    res = run(["demonstrations", "select", "--model", str(stories_gguf), "--prompts", "prompteol", "--candidates", "2",
               "--limit", "6", "--data", str(senteval_root), "--no-count-check", "--no-progress", "-o", str(chosen)])
    assert res.exit_code == 0, res.output
    assert bars == [False, False]  # --no-progress silences each candidate's progress bar too
    assert res.stdout.startswith("prompteol: candidate ") and "STS-B dev Spearman" in res.stdout
    # but not the line per scored candidate, the progress of a long background selection
    assert [line.split(" ")[1] for line in res.stderr.splitlines() if line.startswith("candidate ")] == ["1/2", "2/2"]
    number, sentence = re.match(r"prompteol: candidate (\d+) ('.*?') ->", res.stdout).groups()  # numbered as logged
    assert any(line.startswith(f"candidate {number}/2 {sentence}:") for line in res.stderr.splitlines())
    assert set(yaml.safe_load(chosen.read_text())["demonstrations"]) == {"prompteol"}
    out = tmp_path / "out"
    res = run(["eval", "--tasks", "STS-B", "--split", "dev", "--limit", "6", "--model", str(stories_gguf),
               "--prompts", "prompteol", "--demonstrations", str(chosen), "--embed-filter", "2", "--no-clean",
               "--data", str(senteval_root), "--no-count-check", "--output", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    encoder = json.loads((out / "results.json").read_text())["config"]["encoder"]
    assert encoder["embed_filter"] == {"filter_ratio": 2} and encoder["embedding_dim"] == 32
    assert encoder["prompts"]["name"] == "prompteol+scaling_sentemb-selected" and encoder["clean"] is False
    assert encoder["prompts"]["demonstrations"] == "scaling_sentemb-selected"
    assert ("demonstrations scaling_sentemb-selected, EmbedFilter 1/2 (32 dims), no clean-up"
            in (out / "results.md").read_text())
    # the results rebuild the encoder that made them (demonstrations and all)
    config = json.loads((out / "results.json").read_text())["config"]
    assert build_encoder(config["encoder_settings"]).settings.describe() == {
        k: v for k, v in encoder.items() if k not in ("device", "num_layers", "hidden_size", "embedding_dim", "engine",
                                                      "versions")}


def test_joint_select_reports_the_sets_score(tmp_path, stories_gguf, senteval_root):
    chosen = tmp_path / "joint.yaml"
    res = run(["demonstrations", "select", "--model", str(stories_gguf), "--prompts", "metaeol", "--meta-tasks", "PI",
               "--pool", "metaeol_tasks", "--candidates", "2", "--joint", "--limit", "6", "--data", str(senteval_root),
               "--no-count-check", "--no-progress", "-o", str(chosen)])
    assert res.exit_code == 0, res.output
    assert re.search(r"the set, templates averaged: STS-B dev Spearman -?\d+\.\d\d \(per-template bests: -?\d+\.\d\d\)",
                     res.output)
    saved = yaml.safe_load(chosen.read_text())
    assert saved["name"] == "metaeol_tasks-joint" and set(saved["demonstrations"]) == {"pi-relationship", "pi-synonym"}


@pytest.mark.parametrize("args, message", [
    (["--demonstrations", "scaling_sentemb"], "is a pool of candidates"),
    (["--demonstrations", "scaling_sentemb:999"], "has no candidate '999'"),
    (["--embed-filter", "0"], "--embed-filter"),
])
def test_bad_method_options_are_one_line_errors(tmp_path, stories_gguf, args, message):
    (tmp_path / "in.txt").write_text("A man is playing a guitar.\n")
    res = run(["embed", "--model", str(stories_gguf), str(tmp_path / "in.txt"), str(tmp_path / "out.npy")] + args)
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output


def test_embed_writes_the_filtered_dimension(tmp_path, stories_gguf):
    (tmp_path / "in.txt").write_text("A man is playing a guitar.\nSomeone plays music\n")
    res = run(["embed", "--model", str(stories_gguf), str(tmp_path / "in.txt"), str(tmp_path / "out.npy"),
               "--prompts", "echo", "--no-clean", "--embed-filter", "4"])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "out.npy").shape == (2, 16)


ICL = "scaling_sentemb:opt-125m"


def test_methods_are_sweep_dimensions_scored_as_the_encoder_would(tmp_path, stories, stories_gguf, senteval_root):
    """Demonstrations, EmbedFilter and both TP placements in one grid: every combination scored on
    the selection split, EmbedFilter from the unfiltered vectors (no encoding of its own), each
    method alone and the best stack reported, each score equal to the encoder's at that setting."""
    from metaeol import MetaEOL
    from metaeol.boosters import TokenPrepending
    from metaeol.evaluation.data import load_task
    from metaeol.evaluation.sts import cosine_rows, spearman_x100
    from metaeol.evaluation.sweep import pooled_pairs
    from metaeol.settings import build_encoder

    res = run(["sweep", "--model", str(stories_gguf), "--tasks", "STS-B:dev", "--report-on", "STS12", "--sample", "8",
               "--random-orders", "0", "--no-plots", "--no-float16-check", "--cost-sentences", "0", "--data",
               str(senteval_root), "--output", str(tmp_path / "s"), "--token-prepending", "off,1:3",
               "--tp-placement", "sentence,official", "--demonstrations", f"off,{ICL}", "--embed-filter", "off,4",
               "--no-progress"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "s" / "results.json").read_text())
    candidates = {c["setting"]: c for c in out["selection"]["candidates"]}
    tps, icls, efs = ["", "TP 1:3", "TP 1:3 sentence"], ["", f"ICL {ICL}"], ["", "EmbedFilter 4"]
    assert set(candidates) == {" + ".join(p for p in (tp, icl, ef) if p) or "off" for tp in tps for icl in icls for ef in efs}
    for label, c in candidates.items():  # filtered: the unfiltered vectors; off: the ablation sweep's
        assert (c["sentences_encoded"] == 0) == ("EmbedFilter" in label or label == "off"), label
    rows = {r["name"]: r for r in out["rows"]}
    assert {"metaeol + TP", "metaeol + ICL", "metaeol + EmbedFilter"} <= set(rows)
    stack = next(r for name, r in rows.items() if name.count(" + ") > 1)
    best_stack = max((c for c in candidates.values() if c["setting"].count(" + ") > 0),
                     key=lambda c: max(x for x in c["scores"] if x is not None))
    assert stack["setting"] == best_stack["setting"]
    assert stack["name"] == " + ".join(["metaeol", *(part.split(" ")[0] for part in stack["setting"].split(" + "))])
    sts12 = pooled_pairs(load_task("STS12", senteval_root), 8, 0)
    for row in (rows["metaeol + ICL"], rows["metaeol + EmbedFilter"], stack):
        tp = row["token_prepending"]
        encoder = MetaEOL(stories.model, "metaeol", tokenizer=stories.tokenizer, layer=row["layer"],
                          demonstrations=row["demonstrations"], embed_filter=row["embed_filter"],
                          token_prepending=TokenPrepending(tp["start_layer"], tp["end_layer"], placement=tp["placement"])
                          if tp else None)
        direct = spearman_x100(cosine_rows(encoder.encode(list(sts12.sent1)), encoder.encode(list(sts12.sent2))),
                               sts12.targets)
        assert row["scores"]["STS12"] == pytest.approx(direct, abs=1e-6), row["name"]
        rebuilt = build_encoder(row["config"], model=stories.model, tokenizer=stories.tokenizer)  # the row's own record
        assert rebuilt.settings.fingerprint() == {**encoder.settings.fingerprint(), "model": rebuilt.model_name,
                                                  "weights": rebuilt.settings.weights}


def test_eval_takes_one_placement_and_one_ratio(tmp_path, stories_gguf, senteval_root):
    common = ["eval", "--tasks", "STS-B", "--split", "dev", "--limit", "4", "--model", str(stories_gguf), "--no-progress",
              "--data", str(senteval_root), "--no-count-check", "--output", str(tmp_path)]
    placements = run(common + ["--token-prepending", "1:3", "--tp-placement", "sentence,official"])
    assert placements.exit_code == 1 and "--tp-placement takes one setting here; `metaeol sweep` tries several" in placements.output
    ratios = run(common + ["--embed-filter", "2,4"])
    assert ratios.exit_code == 1 and "--embed-filter takes one setting here" in ratios.output
    bad = run(common + ["--embed-filter", "half"])
    assert bad.exit_code == 1 and "--embed-filter: 'half' is not a ratio (an integer >= 1)" in bad.output
