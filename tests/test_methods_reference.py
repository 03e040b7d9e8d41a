"""Each method equals its official code (tests/reference/official_ports.py, line-by-line ports;
the official echo_embeddings.py itself agreed with its port when the file was written).

Always checked, with or without ../shared: MetaEOL == the ports' vectors stored in
tests/reference/methods_reference.npz == the ports run live, on the stand-in model (written
afresh, seed 0) and, where ../shared has it, on the real stories260K."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import STORIES_GGUF
from metaeol import MetaEOL
from metaeol.loading import convert_gguf
from metaeol.prompts import PromptSet, Template

REFERENCE = Path(__file__).parent / "reference"
sys.path.insert(0, str(REFERENCE))
from official_ports import EMBFILTER_TEMPLATE, FILTER_RATIOS, ICL_LINES, SENTENCES, reference_vectors  # noqa: E402

MODELS = ["standin"] + (["stories260K"] if STORIES_GGUF.is_file() else [])
STORED = np.load(REFERENCE / "methods_reference.npz")
EMBFILTER_PROMPTS = PromptSet("embfilter-prompteol", (Template("summarize", EMBFILTER_TEMPLATE.replace("{text}", "{s}")),))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module", params=MODELS)
def model_gguf(request, tmp_path_factory) -> tuple[str, Path]:
    if request.param == "standin":
        from _standin_gguf import write_standin_gguf

        return "standin", write_standin_gguf(tmp_path_factory.mktemp("standin") / "stories260K.gguf")
    return "stories260K", STORIES_GGUF


@pytest.fixture(scope="module")
def live(model_gguf) -> dict[str, np.ndarray]:
    return reference_vectors(str(convert_gguf(model_gguf[1])))


def ours(gguf: Path, key: str, engine: str) -> np.ndarray:
    """MetaEOL's vectors for a reference key, configured as the official code runs."""
    method, setting = key.split("/")
    if method == "icl":
        encoder = MetaEOL(str(gguf), "prompteol", demonstrations=f"scaling_sentemb:{setting}", engine=engine)
    elif method == "echo":  # the official code takes the text as it is: no clean-up
        encoder = MetaEOL(str(gguf), "echo", pooling=setting, clean=False, engine=engine)
    else:
        encoder = MetaEOL(str(gguf), EMBFILTER_PROMPTS, clean=False, embed_filter=int(setting), engine=engine)
    return encoder.encode(SENTENCES)


KEYS = [*(f"icl/{name}" for name in ICL_LINES), "echo/last", "echo/mean", *(f"embfilter/{r}" for r in FILTER_RATIOS)]


def test_reference_file_holds_every_method_and_model():
    assert list(STORED["sentences"]) == SENTENCES
    assert {f"{m}/{k}" for m in ("standin", "stories260K") for k in KEYS} <= set(STORED.files)


@pytest.mark.parametrize("key", KEYS)
def test_stored_reference_matches_the_port(model_gguf, live, key):
    stored = STORED[f"{model_gguf[0]}/{key}"]
    assert stored.shape == live[key].shape
    assert cosine(stored, live[key]).min() >= 0.9999


@pytest.mark.parametrize("engine", ["prefix", "plain"])
@pytest.mark.parametrize("key", KEYS)
def test_method_equals_official_code(model_gguf, live, key, engine):
    name, gguf = model_gguf
    got = ours(gguf, key, engine)
    for expected in (live[key], STORED[f"{name}/{key}"]):
        agreement = cosine(got, expected).min()
        print(f"{name} {key} {engine}: min cosine {agreement:.8f}")
        assert got.shape == expected.shape and agreement >= 0.9999
