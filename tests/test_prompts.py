import json

import pytest

from metaeol.prompts import PromptSetError, builtin_prompt_sets, load_prompt_set
from metaeol.text import clean_sentence


def test_builtin_sets_are_shipped():
    assert builtin_prompt_sets() == ["ck", "echo", "ke", "metaeol", "metaeol-ck", "none", "pcoteol", "prompteol"]


def test_metaeol_has_the_papers_eight_templates_in_order():
    ps = load_prompt_set("metaeol")
    assert [t.task for t in ps] == ["TC", "TC", "SA", "SA", "PI", "PI", "IE", "IE"]
    assert all(t.text.endswith('in one word:"') and t.text.count("{s}") == 1 for t in ps)
    assert ps.templates[0].text.startswith("In this task, you're presented with a text excerpt.")
    assert ps.templates[4].fill("A cat.") .endswith('this sentence : "A cat." means in one word:"')


def test_prompteol_matches_the_spec():
    (t,) = load_prompt_set("prompteol").templates
    assert t.fill("Hi.") == 'This sentence : "Hi." means in one word:"'


def test_select_by_meta_task_keeps_order():
    ps = load_prompt_set("metaeol", tasks=["pi", "SA"])
    assert [t.name for t in ps] == ["sa-rating", "sa-emotion", "pi-relationship", "pi-synonym"]
    with pytest.raises(PromptSetError, match="meta-task"):
        load_prompt_set("metaeol", tasks=["XX"])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_user_file_round_trip(tmp_path, suffix):
    ps = load_prompt_set("metaeol").select(tasks=["IE"])
    path = ps.save(tmp_path / f"mine{suffix}")
    again = load_prompt_set(path)
    assert [t.text for t in again] == [t.text for t in ps]
    assert [t.task for t in again] == ["IE", "IE"]


@pytest.mark.parametrize(
    "text,problem",
    [("no placeholder here", "found 0"), ('"{s}" and "{s}" or "{s}"', "found 3"), ("   ", "empty")],  # two: echo
)
def test_invalid_template_names_file_and_template(tmp_path, text, problem):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"templates": [{"name": "ok", "text": "{s}"}, {"name": "broken", "text": text}]}))
    with pytest.raises(PromptSetError) as err:
        load_prompt_set(path)
    message = str(err.value)
    assert str(path) in message and "'broken'" in message and problem in message


def test_unknown_prompt_set_and_unreadable_file(tmp_path):
    with pytest.raises(PromptSetError, match="unknown prompt set 'nope'"):
        load_prompt_set("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("templates: [unclosed")
    with pytest.raises(PromptSetError, match="cannot read"):
        load_prompt_set(bad)


def test_duplicate_names_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("templates:\n  - {name: a, text: '{s}'}\n  - {name: a, text: 'x {s}'}\n")
    with pytest.raises(PromptSetError, match="duplicate"):
        load_prompt_set(path)


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("A man plays", "A man plays."),
        ("Done.", "Done."),
        ("Is it?", "Is it."),
        ('He said "hi"', "He said 'hi'"),
        ('He said "why?"', "He said 'why?'"),
        ("Why 'not'?", "Why 'not'."),
        ("", ""),
        ("ends with space ", "ends with space ."),
    ],
)
def test_clean_sentence_matches_reference(raw, clean):
    assert clean_sentence(raw) == clean
