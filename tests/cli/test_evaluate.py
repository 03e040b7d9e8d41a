import json

import pytest
from click.testing import CliRunner

from metaeol.cli import main
from metaeol.cli import evaluate as commands

from _eval_toys import STS13_POOLED, ToyEncoder, tiny_layout


@pytest.fixture
def toy(monkeypatch):
    enc = ToyEncoder()
    built = {}

    def build(options):
        built.update(options)
        return enc

    monkeypatch.setattr(commands, "make_encoder", build)
    enc.built = built
    return enc


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_eval_cli_on_tiny_layout(tmp_path, toy):
    data, out = tiny_layout(tmp_path / "data"), tmp_path / "out"
    result = _run([
        "eval", "--tasks", "STS13,stsb,MR", "--model", "meta-llama/Llama-2-7b-hf", "--prompts", "prompteol",
        "--layer", "-2", "--data", str(data), "--output", str(out), "--no-count-check", "--kfold", "3",
        "--no-progress", "--transfer-protocol", "sklearn",
    ])
    assert result.exit_code == 0, result.output
    assert {k: toy.built[k] for k in ("model", "prompts", "layer", "dtype", "device", "pooling")} == {
        "model": "meta-llama/Llama-2-7b-hf", "prompts": "prompteol", "layer": "-2",
        "dtype": "auto", "device": None, "pooling": "last"}
    # one encode call over the deduplicated sentences of all tasks
    assert len(toy.calls) == 1 and len(toy.calls[0]) == len(set(toy.calls[0]))
    assert "anchor" in toy.calls[0] and "p0.99" not in toy.calls[0]  # unscored pair skipped

    report = json.loads((out / "results.json").read_text())
    assert report["config"]["tasks"] == ["STS13", "STS-B", "MR"]
    assert report["config"]["encoder"] == {"model": "toy", "dim": 16}
    assert report["config"]["data_root"] == str(data)
    assert report["versions"]["numpy"] and "encode" in report["timings_s"]
    assert report["results"]["STS13"]["score"] == pytest.approx(STS13_POOLED)
    assert report["summary"]["sts"]["STS13"] == round(100 * STS13_POOLED, 2)
    assert report["summary"]["sts"]["STS-B"] == 100.0
    assert report["summary"]["transfer"]["MR"] == 100.0
    assert report["config"]["classifier"]["protocol"] == "sklearn" and report["results"]["MR"]["protocol"] == "sklearn"
    # the paper's rows are printed beside ours for LLaMA2-7B, on the same columns
    md = (out / "results.md").read_text()
    assert md in result.output
    assert "| paper: LLaMA2-7B / MetaEOL | 81.61 | 77.96 | 79.78 |" in md


def test_eval_cli_without_paper_model_and_dev_split(tmp_path, toy):
    data = tiny_layout(tmp_path / "data")
    (data / "STS/STSBenchmark/sts-test.csv").rename(data / "STS/STSBenchmark/sts-dev.csv")
    result = _run(["eval", "--tasks", "STS-B", "--model", "toy", "--data", str(data), "--output",
                   str(tmp_path / "o"), "--no-count-check", "--split", "dev", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "paper:" not in result.output and "dev split" in result.output and "quick mode" in result.output
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    assert report["results"]["STS-B"]["n"] == 3 and report["config"]["split"] == "dev"
    # the task may name its split, as `sweep --tasks` takes it
    named = _run(["eval", "--tasks", "STS-B:dev", "--model", "toy", "--data", str(data), "--output",
                  str(tmp_path / "named"), "--no-count-check", "--limit", "3"])
    assert named.exit_code == 0, named.output
    assert json.loads((tmp_path / "named" / "results.json").read_text())["config"]["split"] == "dev"


def test_eval_cli_names_missing_file_before_loading_model(tmp_path, toy):
    result = _run(["eval", "--tasks", "SUBJ", "--model", "m", "--data", str(tiny_layout(tmp_path))])
    assert result.exit_code == 1
    assert "missing data file" in result.output and "subj.objective" in result.output
    assert toy.built == {}


def test_one_item_per_file_gives_null_scores_not_a_traceback(tmp_path, stories_gguf, senteval_root):
    """`--limit 1` leaves one pair per STS file: the correlation is undefined, reported as null."""
    import json

    from click.testing import CliRunner

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["eval", "--tasks", "STS-B,STS12", "--limit", "1", "--model", str(stories_gguf),
                                       "--data", str(senteval_root), "--output", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    text = (out / "results.json").read_text()
    assert "NaN" not in text
    report = json.loads(text)
    assert report["results"]["STS-B"]["score"] is None
