"""The booster options of `metaeol eval`, `sweep` and `embed`: carried into the encoder and its reports."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from _threads import single_thread
from metaeol import MetaEOL
from metaeol.boosters import TokenPrepending
from metaeol.cli import main


one_thread = pytest.fixture(autouse=True, scope="module")(single_thread)


def run(args):
    return CliRunner().invoke(main, args)


def test_eval_reports_the_booster(tmp_path, stories_gguf, senteval_root):
    out = tmp_path / "out"
    res = run(["eval", "--tasks", "STS-B", "--split", "dev", "--limit", "6", "--model", str(stories_gguf),
               "--data", str(senteval_root), "--no-count-check", "--output", str(out), "--no-progress",
               "--token-prepending", "1:3", "--tp-seed", "2", "--contrastive", "1:0.5"])
    assert res.exit_code == 0, res.output
    encoder = json.loads((out / "results.json").read_text())["config"]["encoder"]
    assert encoder["token_prepending"] == {"start_layer": 1, "end_layer": 3, "placeholder": "random:2",
                                          "placement": "official"}  # the default placement
    assert encoder["contrastive"]["layer"] == 1 and encoder["contrastive"]["scale"] == 0.5


def test_sweep_keeps_boosted_vectors_apart(tmp_path, stories_gguf, senteval_root):
    store = tmp_path / "v.db"
    common = ["sweep", "--model", str(stories_gguf), "--tasks", "STS-B:dev", "--layer", "2,-1", "--sample", "6",
              "--random-orders", "0", "--no-plots", "--no-float16-check", "--cost-sentences", "0",
              "--data", str(senteval_root), "--store", str(store)]
    plain = run(common + ["--output", str(tmp_path / "plain")])
    boosted = run(common + ["--output", str(tmp_path / "tp"), "--token-prepending", "1:3"])
    assert plain.exit_code == 0 and boosted.exit_code == 0, plain.output + boosted.output
    reports = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("plain", "tp")]
    assert [c["setting"] for c in reports[0]["selection"]["candidates"]] == ["off"]
    off, tp = reports[1]["selection"]["candidates"]
    assert off["token_prepending"] is None and tp["token_prepending"]["end_layer"] == 3
    assert off["store_key"] == reports[0]["selection"]["candidates"][0]["store_key"]
    assert tp["store_key"] == off["store_key"] + ",boost=tp(1:3,random:0,official)"
    assert off["sentences_encoded"] == 0 and tp["sentences_encoded"] > 0  # nothing taken from the plain run's vectors


def test_embed_with_a_given_placeholder_vector(tmp_path, stories, stories_gguf):
    texts = tmp_path / "in.txt"
    texts.write_text("A man plays a guitar.\nThe cat sat on the mat.\n")
    vector = np.linspace(-1, 1, stories.embedding_dim, dtype=np.float32)
    np.save(tmp_path / "ph.npy", vector)
    out = tmp_path / "o.npy"
    res = run(["embed", str(texts), "-o", str(out), "-m", str(stories_gguf), "--token-prepending", "1:4",
               "--tp-placeholder", str(tmp_path / "ph.npy")])
    assert res.exit_code == 0, res.output
    expected = MetaEOL(stories.model, tokenizer=stories.tokenizer,
                       token_prepending=TokenPrepending(1, 4, placeholder=vector)).encode(texts.read_text().split("\n")[:2])
    assert np.abs(np.load(out) - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("extra, message", [
    (["--token-prepending", "1-3"], "START:END"),
    (["--token-prepending", "1:9"], "beyond the model's 5 blocks"),
    (["--token-prepending", "1:3", "--tp-placeholder", "zeros"], "one of"),
    (["--token-prepending", "1:3", "--tp-placeholder", "missing.npy"], "cannot read missing.npy"),
    (["--contrastive", "1"], "LAYER:SCALE"),
    (["--contrastive", "1:0.5", "--cp-auxiliary", "no slot"], "exactly one {s}"),
])
def test_bad_booster_options_are_clear_errors(tmp_path, stories_gguf, extra, message):
    texts = tmp_path / "in.txt"
    texts.write_text("Hello.\n")
    res = run(["embed", str(texts), "-o", str(tmp_path / "o.npy"), "-m", str(stories_gguf), *extra])
    assert res.exit_code != 0 and message in res.output
