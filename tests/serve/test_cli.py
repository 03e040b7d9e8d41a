"""`metaeol serve` options: refused with a one-line error before anything starts, or passed on."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi")

from metaeol.cli import main  # noqa: E402


@pytest.fixture
def started(monkeypatch):
    """Replace the server loop: record what would be served instead of serving it."""
    calls = []

    def run(encoder, settings, **kwargs):
        calls.append((settings, kwargs))
        return True

    monkeypatch.setattr("metaeol.serve.server.run", run)
    return calls


def invoke(*args, env=None):
    return CliRunner().invoke(main, ["serve", *args], env=env)


@pytest.mark.parametrize("layer", ["all", "-1,3", "ALL"])
def test_serve_needs_one_layer(stories_gguf, started, layer):
    result = invoke("-m", str(stories_gguf), "--layer", layer)
    assert result.exit_code == 2 and "give a single layer" in result.output and not started
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, env, words", [
    (["--api-key", ""], None, "empty"),
    ([], {"METAEOL_API_KEY": ""}, "empty"),
    (["--api-key", "clé"], None, "ASCII"),
    (["--api-key", "a key"], None, "spaces"),
])
def test_unusable_api_keys_are_refused(stories_gguf, started, args, env, words):
    result = invoke("-m", str(stories_gguf), *args, env=env)
    assert result.exit_code == 2 and words in result.output and "--api-key" in result.output and not started


def test_served_name_defaults_to_the_file_stem_and_options_reach_the_server(stories_gguf, started):
    result = invoke("-m", str(stories_gguf), "--accept-token-ids", "--allowed-hosts", "emb.internal, 10.0.0.5",
                    "--allowed-origins", "http://app.example", "--body-timeout", "5", "--shutdown-timeout", "7",
                    env={"METAEOL_API_KEY": "k"})
    assert result.exit_code == 0, result.output
    settings, kwargs = started[0]
    assert settings.served_model_name == "stories260K" and settings.api_key == "k"
    assert settings.accept_token_ids and settings.allowed_hosts == ["emb.internal", "10.0.0.5"]
    assert settings.allowed_origins == ["http://app.example"]
    assert settings.body_timeout_s == 5 and settings.shutdown_timeout_s == 7


def test_default_served_model_name(tmp_path):
    from metaeol.serve.app import default_served_model_name

    folder = tmp_path / "my-model"
    folder.mkdir()
    assert default_served_model_name(str(folder)) == "my-model"
    assert default_served_model_name(str(folder) + "/") == "my-model"
    assert default_served_model_name(str(tmp_path / "m.gguf")) == "m"  # not there (yet): still no path
    assert default_served_model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
