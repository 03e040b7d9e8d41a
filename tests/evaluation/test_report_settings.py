"""The settings line of an evaluation's results.md names everything that changes the vectors."""

from metaeol.evaluation.runner import _settings_line


def test_the_settings_line_names_the_token_prepending_placement():
    described = {"layers": [28], "dtype": "bfloat16",
                 "token_prepending": {"start_layer": 1, "end_layer": 4, "placeholder": "random", "placement": "official"},
                 "contrastive": {"layer": 4, "scale": 0.5}}
    line = _settings_line(described)
    assert "Token Prepending 1:4 (random, official placement)" in line and "Contrastive Prompting 4:0.5" in line
    del described["token_prepending"]["placement"]  # results written before placements existed
    assert "Token Prepending 1:4 (random, sentence placement)" in _settings_line(described)
