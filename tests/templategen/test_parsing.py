"""Parsing replies into candidates, and screening candidates."""

from __future__ import annotations

import json

import pytest

from metaeol.prompts import load_prompt_set
from metaeol.templategen.instructions import build_messages, meta_task, prompt_sha256
from metaeol.templategen.parsing import parse_candidates
from metaeol.templategen.validation import Limits, Screen, normalise, problem

GOOD = 'In this task, you judge the tone of a post. For this task, this sentence : "{s}" has a tone in one word:"'
GOOD2 = 'In this task, you label a headline. For this task, this sentence : "{s}" belongs to a topic in one word:"'


def test_numbered_list_with_intro_and_outro():
    reply = f"Here are two templates:\n\n1. {GOOD}\n2) {GOOD2}\n\nI hope these help!"
    assert parse_candidates(reply) == [GOOD, GOOD2]


def test_bullets_and_template_labels_and_wrapping_quotes():
    reply = f'- "{GOOD}"\n* `{GOOD2}`\nTemplate 3: \u201c{GOOD}\u201d'
    # A double-quote wrapper shows as a doubled closing quote and is removed once.
    assert parse_candidates(reply) == [GOOD, GOOD2, GOOD]


def test_template_labels_after_markers():
    reply = f"1. **Template 1:** {GOOD}\n2. Prompt 2: \"{GOOD2}\"\n**Template 3:** {GOOD}"
    assert parse_candidates(reply) == [GOOD, GOOD2, GOOD]


def test_unwrapped_template_keeps_its_final_quote():
    assert parse_candidates(f'1. "{GOOD}') == [GOOD]
    assert parse_candidates(GOOD) == [GOOD]


def test_json_array_in_code_fence():
    reply = "Sure!\n```json\n" + json.dumps([GOOD, GOOD2], indent=2) + "\n```\nDone."
    assert parse_candidates(reply) == [GOOD, GOOD2]


def test_json_objects_and_templates_key():
    assert parse_candidates(json.dumps([{"text": GOOD}, {"template": GOOD2}])) == [GOOD, GOOD2]
    assert parse_candidates(json.dumps({"templates": [GOOD]})) == [GOOD]


def test_invalid_json_falls_back_to_lines():
    # Inner quotes left unescaped: not JSON, but each line still holds one template.
    reply = f'[\n  "{GOOD}",\n  "{GOOD2}"\n]'
    assert parse_candidates(reply) == [GOOD, GOOD2]


def test_wrapped_list_item_is_joined():
    head, tail = GOOD.split(" For this task,")
    assert parse_candidates(f"1. {head}\n   For this task,{tail}\n\n2. {GOOD2}") == [GOOD, GOOD2]


def test_prose_only_reply_has_no_candidates():
    assert parse_candidates("I cannot help with that.\nSorry.") == []


def test_typographic_quotes_become_ascii():
    text = GOOD.replace('"{s}"', "\u201c{s}\u201d")
    assert parse_candidates(f"1. {text}") == [GOOD]


@pytest.mark.parametrize(
    "text, reason",
    [
        ('In this task, classify it. This sentence : "{s}" and "{s}" in one word:"', "exactly one {s}"),
        ("In this task, classify it. This sentence : {sentence} means in one word:\"", "exactly one {s}"),
        ('Word : "{s}" in one word:"', "too short"),
        ('In this task, classify it. ' * 40 + 'This sentence : "{s}" means in one word:"', "too long"),
        ("In this task, classify the text. This sentence : {s} means in one word:\"", "inside double quotes"),
        ('In this task, classify the text. This sentence : "{s}" means in one word.', "one-word answer slot"),
        ('In this task, classify the text. This sentence : "{s}" means in one word:', "one-word answer slot"),
    ],
)
def test_problems_are_named(text, reason):
    assert reason in problem(text, Limits())


def test_good_template_has_no_problem():
    assert problem(GOOD, Limits()) is None


def test_screen_rejects_duplicates_after_normalisation():
    screen = Screen()
    screen.add_known(load_prompt_set("prompteol").templates[0].text, "the PromptEOL template")
    assert screen.reason(GOOD) is None
    screen.accept(GOOD, "sa-1")
    again = GOOD.replace("In this task, you judge", "IN THIS TASK you JUDGE").replace(" : ", ":   ")
    assert screen.reason(again) == "duplicate of accepted template 'sa-1'"
    long_prompteol = 'THIS sentence: "{s}" means, in one word:"'
    assert normalise(long_prompteol) == normalise('This sentence : "{s}" means in one word:"')
    assert screen.reason(long_prompteol) == "duplicate of the PromptEOL template"
    assert Screen().reason(long_prompteol) is None  # nothing known: acceptable
    assert "too short" in Screen(Limits(min_chars=50)).reason(long_prompteol)


def test_messages_describe_task_and_are_hashed():
    messages = build_messages(meta_task("pi"), 3)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "paraphrase identification" in user and "Write 3 different" in user
    assert '"{s}"' in user and 'in one word:"' in user
    assert len(prompt_sha256()) == 64


def test_custom_meta_task():
    task = meta_task("Decide whether a tweet is sarcastic", tag="sarc")
    assert task.custom and task.tag == "SARC"
    assert "Decide whether a tweet is sarcastic" in build_messages(task, 2)[1]["content"]
    with pytest.raises(ValueError):
        meta_task("  ")
