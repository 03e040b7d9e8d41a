"""The method options (--demonstrations, --embed-filter, --no-clean) and `metaeol demonstrations`."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from _threads import single_thread
from metaeol.cli import main

one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def run(args):
    return CliRunner().invoke(main, args)


def test_pools_lists_the_official_pool():
    res = run(["demonstrations", "pools"])
    assert res.exit_code == 0 and res.output.startswith("scaling_sentemb: 300 candidates; selected: opt-125m=15")


def test_select_then_eval_with_the_chosen_demonstrations(tmp_path, stories_gguf, senteval_root):
    chosen = tmp_path / "demos.yaml"
    res = run(["demonstrations", "select", "--model", str(stories_gguf), "--prompts", "prompteol", "--candidates", "2",
               "--limit", "6", "--data", str(senteval_root), "--no-count-check", "--no-progress", "-o", str(chosen)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("prompteol: candidate ") and "STS-B dev Spearman" in res.output
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


def test_sweep_refuses_the_methods_it_cannot_score(tmp_path, stories_gguf, senteval_root):
    res = run(["sweep", "--model", str(stories_gguf), "--tasks", "STS-B:dev", "--sample", "6", "--data",
               str(senteval_root), "--output", str(tmp_path / "s"), "--embed-filter", "2"])
    assert res.exit_code == 1 and "--embed-filter is not a sweep dimension yet" in res.output
    assert len(res.output.strip().splitlines()) == 1
