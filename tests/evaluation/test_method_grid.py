"""The method grid's parts: settings, which rows are reported, and the encode-cost timer."""

from __future__ import annotations

import math

import pytest

from metaeol.boosters import ContrastivePrompting, TokenPrepending
from metaeol.evaluation import encode_cost
from metaeol.evaluation.method_grid import Candidate, Setting, reported_rows, settings_grid
from metaeol.evaluation.encode_cost import time_encoders

TP13, TP14, CP = TokenPrepending(1, 3), TokenPrepending(1, 4), ContrastivePrompting(2, 0.5)
LAYERS = [1, 2, -1]
NAN = math.nan


def test_the_grid_is_every_combination_with_plain_first() -> None:
    grid = settings_grid([TP13, None, TP14], [CP, None])
    assert grid[0] == Setting() and len(grid) == 6
    assert {(s.token_prepending, s.contrastive) for s in grid} == {(tp, cp) for tp in (TP13, None, TP14) for cp in (CP, None)}
    assert settings_grid([TP13], [None]) == [Setting(), Setting(TP13)]  # plain is always scored
    assert [s.label for s in settings_grid([TP13], [CP])] == ["off", "TP 1:3 + CP 2:0.5"]


def _candidates(scores: dict[Setting, list[float]]) -> list[Candidate]:
    return [Candidate(setting, encoder=None, scores=values) for setting, values in scores.items()]


def test_each_row_is_the_best_of_its_group_on_the_selection_split() -> None:
    candidates = _candidates({
        Setting(): [50.0, 61.0, 55.0],
        Setting(TP13): [40.0, 58.0, 62.0],
        Setting(TP14): [63.0, NAN, 10.0],  # the best TP setting, at layer 1; NaN is skipped
        Setting(None, CP): [20.0, 30.0, 59.0],
        Setting(TP13, CP): [70.0, 70.0, 1.0],  # a tie: the first layer wins
        Setting(TP14, CP): [69.0, 0.0, 0.0],
    })
    rows = reported_rows(candidates, LAYERS, "metaeol", "prompteol")
    got = {(r.name, r.setting, r.layer, r.baseline, r.chosen) for r in rows}
    assert got == {
        ("prompteol", Setting(), -1, True, False),
        ("metaeol", Setting(), -1, False, False),
        ("metaeol (best layer)", Setting(), 2, False, True),
        ("metaeol + TP", Setting(TP14), 1, False, True),
        ("metaeol + CP", Setting(None, CP), -1, False, True),
        ("metaeol + TP + CP", Setting(TP13, CP), 1, False, True),
    }


def test_rows_exist_only_for_what_the_grid_holds() -> None:
    candidates = _candidates({Setting(): [NAN, NAN, NAN], Setting(TP13, CP): [1.0, 2.0, 3.0]})
    rows = reported_rows(candidates, LAYERS, "metaeol", "prompteol")
    # no booster alone in the grid; plain's scores are all undefined, so no layer is chosen for it
    assert [r.name for r in rows] == ["prompteol", "metaeol", "metaeol + TP + CP"]
    assert rows[-1].layer == -1


class Clocked:
    """An encoder whose encode advances a fake clock by its next duration (per sentence)."""

    def __init__(self, name: str, durations: list[float], clock: list[float], calls: list[str]) -> None:
        self.name, self.durations, self.clock, self.calls = name, durations, clock, calls

    def encode(self, sentences, batch_size=32, show_progress_bar=None):
        self.calls.append(f"{self.name}:{len(sentences)}")
        self.clock[0] += self.durations.pop(0) * len(sentences)


def test_encoders_are_timed_interleaved_after_a_warm_up_best_of_the_repeats(monkeypatch) -> None:
    clock, calls = [0.0], []
    monkeypatch.setattr(encode_cost.time, "perf_counter", lambda: clock[0])
    encoders = {"a": Clocked("a", [9.0, 3.0, 1.0, 2.0], clock, calls), "b": Clocked("b", [9.0, 5.0, 7.0, 4.0], clock, calls)}
    per_sentence = time_encoders(encoders, ["s1", "s2", "s3", "s4"], repeats=3)
    assert calls == ["a:2", "b:2"] + ["a:4", "b:4"] * 3
    assert per_sentence == {"a": 1.0, "b": 4.0}
    with pytest.raises(ValueError, match="one sentence"):
        time_encoders(encoders, [], repeats=1)


def test_methods_get_a_row_each_and_the_best_stack_one_row() -> None:
    icl, ef = "scaling_sentemb:opt-125m", 2
    candidates = _candidates({
        Setting(): [50.0, 61.0, 55.0],
        Setting(None, CP): [20.0, 30.0, 59.0],
        Setting(demonstrations=icl): [64.0, 1.0, 1.0],
        Setting(embed_filter=ef): [1.0, 1.0, 62.0],
        Setting(None, CP, icl): [66.0, 1.0, 1.0],
        Setting(None, CP, icl, ef): [1.0, 67.0, 1.0],  # the best stack
        Setting(demonstrations=icl, embed_filter=ef): [65.0, 1.0, 1.0],
    })
    rows = {r.name: (r.setting, r.layer) for r in reported_rows(candidates, LAYERS, "metaeol", "prompteol")}
    assert rows == {
        "prompteol": (Setting(), -1), "metaeol": (Setting(), -1), "metaeol (best layer)": (Setting(), 2),
        "metaeol + CP": (Setting(None, CP), -1), "metaeol + ICL": (Setting(demonstrations=icl), 1),
        "metaeol + EmbedFilter": (Setting(embed_filter=ef), -1),
        "metaeol + CP + ICL + EmbedFilter": (Setting(None, CP, icl, ef), 2),
    }
    stack = Setting(TokenPrepending(1, 4, placement="sentence"), CP, icl, ef)
    assert stack.label == f"TP 1:4 sentence + CP 2:0.5 + ICL {icl} + EmbedFilter 2"
    assert Setting(TokenPrepending(1, 4)).label == "TP 1:4"  # the default (official) placement
    assert stack.encoding == Setting(stack.token_prepending, CP, icl)  # EmbedFilter reads the unfiltered vectors
