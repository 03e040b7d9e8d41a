"""Generation end to end against the local fake server: library API and CLI."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from fake_openai import Response

from metaeol.cli import main
from metaeol.prompts import load_prompt_set
from metaeol.templategen.generate import NO_CANDIDATES, Settings, generate_templates
from metaeol.templategen.instructions import meta_task, prompt_sha256
from metaeol.templategen.openai_chat import OpenAIChat


def tmpl(what: str) -> str:
    return f'In this task, you consider {what}. For this task, this sentence : "{{s}}" tells {what} in one word:"'


TC_EXAMPLE = meta_task("TC").example


def test_generate_screens_retries_and_records(fake_server, tmp_path):
    fake_server.reply(
        # TC, request 1: two good, one copy of the prompt's example, one bad ending, one duplicate.
        "Here you go:\n"
        f"1. {tmpl('the topic')}\n2. {TC_EXAMPLE}\n3. {tmpl('the genre')[:-1]}\n"
        f"4. {tmpl('the genre')}\n5. {tmpl('the topic').replace('the topic', 'THE TOPIC')}",
        # TC, request 2 (only 1 missing): a JSON reply with two good ones; the second is surplus.
        json.dumps([tmpl("the register"), tmpl("the audience")]),
        # Custom task, request 1: prose only; request 2: one good.
        "Sorry, I can't do that.",
        f"```\n{tmpl('the sarcasm')}\n```",
    )
    chat = OpenAIChat(fake_server.base_url, "fake-model", timeout=2, retries=0)
    tasks = [meta_task("tc"), meta_task("Decide if a post is sarcastic", tag="sarc")]
    lines: list[str] = []
    settings = Settings(n=3, temperature=0.3, seed=10, max_requests=2)
    result = generate_templates(chat, tasks, settings, name="gen", progress=lines.append)
    assert lines == [
        "TC request 1/2: 5 candidate(s), 2 accepted, 2/3 so far",
        "TC request 2/2: 2 candidate(s), 1 accepted, 3/3 so far",
        "SARC request 1/2: 0 candidate(s), 0 accepted, 0/3 so far",
        "SARC request 2/2: 1 candidate(s), 1 accepted, 1/3 so far",
    ]

    assert [(t.name, t.task, t.text) for t in result.prompt_set] == [
        ("tc-1", "TC", tmpl("the topic")),
        ("tc-2", "TC", tmpl("the genre")),
        ("tc-3", "TC", tmpl("the register")),
        ("sarc-1", "SARC", tmpl("the sarcasm")),
    ]
    reasons = [(r.task, r.reason) for r in result.rejected]
    assert reasons == [
        ("TC", "duplicate of the example given for TC"),
        ("TC", "does not end in the one-word answer slot 'in one word:\"'"),
        ("TC", "duplicate of accepted template 'tc-1'"),
        ("TC", "more than the 3 requested"),
        ("SARC", NO_CANDIDATES),
    ]
    assert result.rejected[-1].text == "Sorry, I can't do that."

    # Requests: seeds run on across the whole generation; the second asks only for what is missing.
    sent = [r["json"] for r in fake_server.requests]
    assert [r["seed"] for r in sent] == [10, 11, 12, 13]
    assert {r["temperature"] for r in sent} == {0.3}
    assert "Write 3 different" in sent[0]["messages"][1]["content"]
    assert "Write 1 different" in sent[1]["messages"][1]["content"]
    assert "Decide if a post is sarcastic" in sent[2]["messages"][1]["content"]

    # The file loads as a prompt set and carries the generation record.
    path = result.prompt_set.save(tmp_path / "gen.yaml")
    loaded = load_prompt_set(str(path))
    assert loaded.tasks == ("TC", "SARC") and len(loaded) == 4
    assert load_prompt_set(str(path), tasks=["SARC"]).templates[0].text == tmpl("the sarcasm")
    record = loaded.metadata["generation"]
    assert record["generator"] == "openai" and record["model"] == "fake-model"
    assert record["base_url"] == fake_server.base_url
    assert (record["seed"], record["temperature"], record["n_per_task"]) == (10, 0.3, 3)
    assert record["prompt_sha256"] == prompt_sha256()
    assert record["created"].endswith("+00:00")
    assert record["tasks"][0] == {"task": "TC", "name": "text classification", "accepted": 3, "seeds": [10, 11]}
    assert record["tasks"][1]["description"] == "Decide if a post is sarcastic"
    assert [r["reason"] for r in record["rejected"]] == [reason for _, reason in reasons]


def run_cli(fake_server, tmp_path, *extra, env=None):
    out = tmp_path / "out.yaml"
    args = ["templates", "generate", "--base-url", fake_server.base_url, "--model", "fake-model",
            "--api-key-env", "FAKE_KEY", "--timeout", "2", "--retries", "0", "-o", str(out), *extra]
    return CliRunner().invoke(main, args, env=env or {"FAKE_KEY": "sk-abc"}), out


def test_cli_generate_writes_loadable_file(fake_server, tmp_path):
    fake_server.reply(f"1. {tmpl('the mood')}\n2. no placeholder here in one word:\"", f"1. {tmpl('the gist')}")
    result, out = run_cli(fake_server, tmp_path, "-t", "SA", "-t", "pi", "-n", "1", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "accepted [SA] sa-1" in result.output and "accepted [PI] pi-1" in result.output
    assert "rejected [SA] template must contain exactly one {s} placeholder, found 0" in result.output
    assert "2 accepted (SA 1/1, PI 1/1), 1 rejected" in result.output
    assert fake_server.requests[0]["headers"]["Authorization"] == "Bearer sk-abc"
    prompt_set = load_prompt_set(str(out))
    assert prompt_set.name == "out" and [t.task for t in prompt_set] == ["SA", "PI"]

    listed = CliRunner().invoke(main, ["templates", "list", str(out)])
    assert f"{out}" in listed.output and "2 templates  [SA,PI]" in listed.output
    shown = CliRunner().invoke(main, ["templates", "show", str(out)])
    assert tmpl("the mood") in shown.output
    assert "generator=openai, model=fake-model, seed=3, temperature=0.7" in shown.output
    assert "rejected [SA] template must contain exactly one" in shown.output


def test_cli_nothing_accepted_writes_report_and_fails(fake_server, tmp_path):
    fake_server.reply("I am unable to comply.")
    result, out = run_cli(fake_server, tmp_path, "-t", "IE", "-n", "2", "--max-requests", "1")
    assert result.exit_code == 1
    assert "no template was accepted" in result.output
    data = yaml.safe_load(out.read_text())
    assert data["templates"] == []
    assert data["generation"]["rejected"] == [{"task": "IE", "text": "I am unable to comply.", "reason": NO_CANDIDATES}]
    shown = CliRunner().invoke(main, ["templates", "show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "out: 0 templates" in shown.output
    assert f"rejected [IE] {NO_CANDIDATES}: 'I am unable to comply.'" in shown.output
    not_a_set = tmp_path / "x.yaml"
    not_a_set.write_text("templates: []\n")
    assert CliRunner().invoke(main, ["templates", "show", str(not_a_set)]).exit_code == 1


def test_cli_bad_key_names_the_variable(fake_server, tmp_path):
    fake_server.push(Response(401, {"error": "invalid key"}))
    result, out = run_cli(fake_server, tmp_path, "-t", "TC", env={"FAKE_KEY": ""})
    assert result.exit_code == 1
    assert "rejected the API key (HTTP 401)" in result.output
    assert "$FAKE_KEY, which is not set" in result.output
    assert not out.exists()


def test_cli_malformed_reply_is_a_clear_error(fake_server, tmp_path):
    fake_server.push(Response(200, "not json at all"))
    result, _ = run_cli(fake_server, tmp_path, "-t", "TC")
    assert result.exit_code == 1 and "did not answer with JSON: 'not json at all'" in result.output


def test_cli_show_builtin():
    result = CliRunner().invoke(main, ["templates", "show", "metaeol"])
    assert result.exit_code == 0
    assert result.output.count("\n[") == 8 and "[IE] ie-" in result.output
    missing = CliRunner().invoke(main, ["templates", "show", "nope"])
    assert missing.exit_code == 1 and "unknown prompt set 'nope'" in missing.output
