"""The methods of metaeol.methods beyond exactness (tests/test_methods_reference.py): data files,
errors, the settings record, prefix reuse, EmbedFilter's dimension, demonstration selection."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from metaeol import MetaEOL
from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.evaluation.data import Pairs
from metaeol.methods.demonstrations import (
    ALL_TEMPLATES, Demonstration, DemonstrationError, Demonstrations, DemonstrationPool, load_demonstrations, load_pool,
)
from metaeol.methods.embed_filter import EmbedFilterError, bulk_directions, unembedding_matrix
from metaeol.methods.selection import select_demonstrations
from metaeol.prompts import PromptSetError, load_prompt_set, prompt_set_from_dict

sys.path.insert(0, str(Path(__file__).parent / "reference"))
from official_ports import ICL_LINES  # noqa: E402

SENTENCES = ["A man is playing a guitar.", "Someone plays music", "Is it raining?"]


def _on(stories, **kwargs) -> MetaEOL:
    return MetaEOL(stories.model, tokenizer=stories.tokenizer, **kwargs)


# -- demonstrations ------------------------------------------------------------------
def test_official_pool_is_shipped_with_its_picks():
    pool = load_pool("scaling_sentemb")
    assert len(pool.candidates) == 300
    assert pool.pick("opt-2.7b") == Demonstration("A jockey riding a horse.", "Equestrian")
    assert pool.pick(15) == pool.pick("opt-125m")


def test_metaeol_task_pool_answers_each_template_in_its_own_words():
    """The metaeol_tasks pool: official sentences, one answer per MetaEOL template, the official
    answer for the paraphrase ('means in one word') templates, and a rating for the rating template."""
    pool, official = load_pool("metaeol_tasks"), load_pool("scaling_sentemb")
    by_sentence = {c.sentence: c for c in official.candidates}
    names = {t.name for t in load_prompt_set("metaeol")}
    for candidate in pool.candidates:
        assert set(candidate.answers) == names
        assert candidate.answers["pi-relationship"] == by_sentence[candidate.sentence].answer
        assert candidate.answers["sa-rating"] in {"1", "2", "3", "4", "5"}
    prompts = Demonstrations("one", {ALL_TEMPLATES: pool.candidates[0]}).apply(load_prompt_set("metaeol"))
    rating = next(t for t in prompts if t.name == "sa-rating")
    assert rating.text.count('in one word:"1".') == 1


@pytest.mark.parametrize("model", sorted(ICL_LINES))
def test_demonstration_template_is_the_official_string(model):
    """evaluation.py: the run_icl.sh line with '_' -> ' ', the sentence at '*sent 0*'."""
    prompts = load_demonstrations(f"scaling_sentemb:{model}").apply(load_prompt_set("prompteol"))
    assert prompts.templates[0].text == ICL_LINES[model].replace("_", " ").replace("*sent 0*", "{s}")


def test_prefix_engine_computes_the_demonstration_once(stories):
    encoder = _on(stories, prompts="prompteol", demonstrations="scaling_sentemb:opt-2.7b")
    demo = 'This sentence : "A jockey riding a horse." means in one word:"Equestrian".This sentence : "'
    prefix = encoder._template_prefixes[0]
    assert len(prefix) >= len(stories.tokenizer(demo)["input_ids"]) - 1
    rows, templates = encoder.prompt_tokens.prompts(encoder.prepare(SENTENCES))
    engine = encoder._engine(encoder.layers, 8)
    assert all(engine.reused_tokens(row, 0) >= len(prefix) - 1 for row in rows)
    encoder.encode(SENTENCES)
    assert engine.prefix_mode is not None  # reuse was verified against full prompts


def test_one_demonstration_per_template_and_file_round_trip(stories, tmp_path):
    metaeol = load_prompt_set("metaeol", tasks=["SA"])
    demos = Demonstrations("mine", {t.name: Demonstration("I love it.", answers={t.name: f"a{i}"})
                                    for i, t in enumerate(metaeol)})
    path = demos.save(tmp_path / "demos.yaml")
    loaded = load_demonstrations(path)
    applied = loaded.apply(metaeol)
    for i, (t, original) in enumerate(zip(applied, metaeol)):
        assert t.text == original.text.replace("{s}", "I love it.") + f'a{i}".' + original.text
    assert _on(stories, prompts=metaeol, demonstrations=path).prompt_set.templates == applied.templates
    assert [t.sha256 for t in applied] != [t.sha256 for t in metaeol]  # in the hash, so in the store key
    # JSON for .json, YAML for any other name (select writes to a temporary name before renaming)
    assert demos.save(tmp_path / "demos.json").read_text().startswith("{")
    assert demos.save(tmp_path / "demos.yaml.part").read_text().startswith("name: mine")
    assert load_demonstrations(tmp_path / "demos.json") == load_demonstrations(tmp_path / "demos.yaml.part") == loaded


@pytest.mark.parametrize("spec, message", [
    ("scaling_sentemb", "is a pool of candidates"),
    ("scaling_sentemb:300", "has no candidate '300'"),
    ("scaling_sentemb:opt-1b", "has no candidate 'opt-1b'"),
    ("nowhere.yaml", "not a built-in pool"),
])
def test_bad_demonstration_specs_are_one_line_errors(spec, message):
    with pytest.raises(DemonstrationError, match=message) as err:
        load_demonstrations(spec)
    assert "\n" not in str(err.value)


def test_demonstration_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("demonstrations:\n  prompteol: {sentence: 'x {s}', answer: A}\n")
    with pytest.raises(DemonstrationError, match="may not contain"):
        load_demonstrations(bad)
    only = Demonstrations("only", {"other": Demonstration("x", "A")})
    with pytest.raises(DemonstrationError, match="none for template 'prompteol'"):
        only.apply(load_prompt_set("prompteol"))
    with pytest.raises(DemonstrationError, match="echo template"):
        load_demonstrations("scaling_sentemb:0").apply(load_prompt_set("echo"))
    unanswered = Demonstrations("d", {"*": Demonstration("x", answers={"tc1": "A"})})
    with pytest.raises(DemonstrationError, match="no answer for template"):
        unanswered.apply(load_prompt_set("prompteol"))


def test_selection_keeps_each_templates_best_candidate(stories):
    pool = DemonstrationPool("toy", (Demonstration("A dog runs.", "Dog"), Demonstration("Rain falls.", "Weather"),
                                     Demonstration("x", answers={"other": "y"})))
    pairs = Pairs(("A man is playing a guitar.", "A dog runs in the park.", "It rains."),
                  ("Someone plays music.", "A cat sleeps.", "The weather is wet."), np.array([4.0, 1.0, 3.5]))
    base = _on(stories, prompts="prompteol")
    selection = select_demonstrations(base, base.prompt_set, pool, pairs)
    scores = selection.scores["prompteol"]
    assert np.isnan(scores[2])  # no answer for this template
    best = int(np.nanargmax(scores))
    assert selection.demonstrations.by_template["prompteol"] == pool.candidates[best]
    # the score is the STS-B-style Spearman of the encoder with that demonstration
    from metaeol.evaluation.sts import score_pairs, spearman_x100

    chosen = _on(stories, prompts="prompteol", demonstrations=Demonstrations("c", {"*": pool.candidates[best]}))
    assert spearman_x100(score_pairs(pairs, chosen.encode), pairs.targets) == pytest.approx(scores[best], abs=1e-6)


def test_joint_selection_scores_the_set_as_the_method_embeds_it(stories):
    """The joint search starts at the per-template bests, never ends below them, and its score is
    the dev score of the encoder built from the chosen demonstrations (templates averaged, filtered)."""
    from metaeol.evaluation.sts import score_pairs, spearman_x100

    pool = DemonstrationPool("toy", (Demonstration("A dog runs.", "Dog"), Demonstration("Rain falls.", "Weather"),
                                     Demonstration("Kids play chess.", "Game")))
    pairs = Pairs(("A man is playing a guitar.", "A dog runs in the park.", "It rains.", "Two kids play."),
                  ("Someone plays music.", "A cat sleeps.", "The weather is wet.", "Children are playing chess."),
                  np.array([4.0, 1.0, 3.5, 3.0]))
    base = _on(stories, prompts="metaeol", embed_filter=2)
    per_template = select_demonstrations(base, base.prompt_set, pool, pairs)
    joint = select_demonstrations(base, base.prompt_set, pool, pairs, joint=True)
    assert per_template.combined is None and joint.scores == per_template.scores

    def dev_score(demonstrations: Demonstrations) -> float:
        encoder = _on(stories, prompts="metaeol", embed_filter=2, demonstrations=demonstrations)
        return spearman_x100(score_pairs(pairs, encoder.encode), pairs.targets)

    assert joint.independent == pytest.approx(dev_score(per_template.demonstrations), abs=1e-6)
    assert joint.combined == pytest.approx(dev_score(joint.demonstrations), abs=1e-6)
    assert joint.combined >= joint.independent
    assert joint.demonstrations.name == "toy-joint"
    assert all(joint.demonstrations.by_template[t] == pool.candidates[c] for t, c in joint.chosen.items())


def test_coordinate_ascent_moves_one_template_at_a_time_until_no_change_helps():
    from metaeol.methods.selection import _coordinate_ascent

    target = {"a": 2, "b": 1}

    def score(choice):
        return -sum((choice[t] - target[t]) ** 2 for t in choice)

    start = {"a": 0, "b": 0}
    choice, value = _coordinate_ascent(start, {"a": [0, 1, 2], "b": [0, 1, 2]}, score, score(start), print)
    assert choice == target and value == 0
    # a tie keeps the current choice
    flat, _ = _coordinate_ascent({"a": 1}, {"a": [0, 1, 2]}, lambda choice: 0.0, 0.0, print)
    assert flat == {"a": 1}


def test_selection_scores_candidates_with_every_setting_of_the_base_encoder(stories, monkeypatch):
    """The candidates are encoded with the base encoder's boosters, layer and engine (a selection
    for a CP stack is a selection under CP), only the prompts change."""
    from metaeol.settings import VectorSettings

    encoded = []
    original = MetaEOL.encode_templates

    def spy(self, *args, **kwargs):
        encoded.append(VectorSettings.of(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MetaEOL, "encode_templates", spy)
    pool = DemonstrationPool("toy", (Demonstration("A dog runs.", "Dog"), Demonstration("Rain falls.", "Weather")))
    pairs = Pairs(("A man plays.", "It rains."), ("Music.", "Wet."), np.array([4.0, 3.5]))
    base = _on(stories, prompts="prompteol", layer=-2, contrastive=ContrastivePrompting(1, 0.5),
               token_prepending=TokenPrepending(1, 3))
    select_demonstrations(base, base.prompt_set, pool, pairs)
    expected = VectorSettings.of(base)
    assert len(encoded) == 2
    for settings in encoded:
        assert settings.prompts != expected.prompts
        assert replace(settings, prompts=expected.prompts) == expected


# -- echo ----------------------------------------------------------------------------
def test_echo_templates_and_their_errors(stories):
    with pytest.raises(PromptSetError, match="two for an echo template"):
        prompt_set_from_dict({"templates": ["{s} {s} {s}"]}, "three")
    for booster in (dict(token_prepending=TokenPrepending(1, 3)), dict(contrastive=ContrastivePrompting(1, 0.5))):
        with pytest.raises(ValueError, match="do not apply to echo templates"):
            _on(stories, prompts="echo", **booster)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_echo_span_is_the_second_copy(stories, pooling):
    encoder = _on(stories, prompts="echo", clean=False, pooling=pooling)
    rows, _, spans = encoder.prompt_tokens.prompts_with_spans(SENTENCES, pooling)
    for sentence, ids, (start, end) in zip(SENTENCES, rows, spans):
        copy = stories.tokenizer(sentence, add_special_tokens=False)["input_ids"]
        assert ids[end - len(copy) if pooling == "last" else start:end] == copy
        assert end == len(ids) and (pooling == "mean" or end - start == 1)
    assert encoder.engine_kind == "prefix"  # the prefix ends before the first copy, so it is reused
    np.testing.assert_allclose(encoder.encode(SENTENCES), _on(stories, prompts="echo", clean=False, pooling=pooling,
                                                              engine="plain").encode(SENTENCES), atol=1e-5)
    assert encoder._engine(encoder.layers, 1).packs  # span pooling in padding-free passes


def test_echo_mixed_with_one_copy_templates(stories, tmp_path):
    """A set mixing echo and one-copy templates: each row pools its own span."""
    mixed = prompt_set_from_dict({"templates": [load_prompt_set("echo").templates[0].text,
                                                load_prompt_set("prompteol").templates[0].text]}, "mixed")
    states = _on(stories, prompts=mixed, clean=False).encode_templates(SENTENCES)
    echo = _on(stories, prompts="echo", clean=False).encode_templates(SENTENCES)
    prompteol = _on(stories, prompts="prompteol", clean=False).encode_templates(SENTENCES)
    np.testing.assert_allclose(states[:, 0], echo[:, 0], atol=1e-5)
    np.testing.assert_allclose(states[:, 1], prompteol[:, 0], atol=1e-5)


# -- EmbedFilter ---------------------------------------------------------------------
def test_embed_filter_dimension_is_reported(stories, tmp_path):
    encoder = _on(stories, embed_filter=4)
    assert encoder.embedding_dim == stories.hidden_size // 4 == 16
    described = encoder.describe()
    assert described["embedding_dim"] == 16 and described["embed_filter"] == {"filter_ratio": 4}
    assert encoder.encode(SENTENCES).shape == (3, 16)
    several = _on(stories, embed_filter=4, layer=[2, -1]).encode(SENTENCES)
    assert several.shape == (3, 2, 16)
    assert encoder.cache_key == _on(stories).cache_key  # per-template states are the unfiltered ones
    stored = _on(stories, embed_filter=4, store=tmp_path / "v.db")
    np.testing.assert_allclose(stored.encode(SENTENCES), encoder.encode(SENTENCES), atol=1e-6)
    np.testing.assert_allclose(stored.encode(SENTENCES), encoder.encode(SENTENCES), atol=1e-6)  # from the store
    assert _on(stories, embed_filter=1).embed_filter is None  # ratio 1 keeps every dimension: off


def test_embed_filter_projects_the_template_mean(stories):
    """Linear, so projecting the mean equals the official projection of every template's state."""
    encoder = _on(stories, embed_filter=2)
    states = stories.encode_templates(SENTENCES)[:, :, 0]
    matrix = bulk_directions(unembedding_matrix(stories.model), 2)
    expected = (torch.from_numpy(states) @ matrix.T).mean(1).numpy()
    np.testing.assert_allclose(encoder.encode(SENTENCES), expected, atol=1e-5)


def test_embed_filter_unembedding_sources(tiny_llama, stories):
    model, tokenizer = tiny_llama
    model.config.tie_word_embeddings = True
    assert unembedding_matrix(model) is not None
    assert torch.equal(unembedding_matrix(model), model.get_input_embeddings().weight)
    model.config.tie_word_embeddings = False
    with pytest.raises(EmbedFilterError, match="no unembedding matrix"):
        MetaEOL(model, tokenizer=tokenizer, embed_filter=2).encode(SENTENCES)
    head = torch.nn.Linear(48, len(tokenizer), bias=False)
    assert unembedding_matrix(model, head) is head.weight or torch.equal(unembedding_matrix(model, head), head.weight)
    for ratio in (0, 65, 2.0, True):
        with pytest.raises(EmbedFilterError, match="filter ratio"):
            _on(stories, embed_filter=ratio)


def test_embed_filter_stacks_with_a_booster(stories):
    boosted = _on(stories, prompts="prompteol", token_prepending=TokenPrepending(1, 3))
    filtered = _on(stories, prompts="prompteol", token_prepending=TokenPrepending(1, 3), embed_filter=2)
    matrix = bulk_directions(unembedding_matrix(stories.model), 2)
    expected = torch.from_numpy(boosted.encode(SENTENCES)) @ matrix.T
    np.testing.assert_allclose(filtered.encode(SENTENCES), expected.numpy(), atol=1e-5)
