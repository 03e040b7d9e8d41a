"""Write methods_reference.npz: the official-code ports' vectors (official_ports.py) on
stories260K (../shared) and on the stand-in model that tests/_standin_gguf.py writes (seed 0).

When the official echo-embeddings repository is at $ECHO_EMBEDDINGS (a checkout holding
echo_embeddings.py), its own EchoParser/EchoPooling/EchoEmbeddingsMistral also run on each model
and must equal the port.

    PYTHONPATH=. python tests/reference/make_reference.py
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from _standin_gguf import write_standin_gguf  # noqa: E402
from official_ports import ECHO_TEMPLATE, SENTENCES, reference_vectors  # noqa: E402

from metaeol.loading import convert_gguf  # noqa: E402

STORIES = Path(os.environ.get("METAEOL_SHARED", HERE.parents[2] / "shared")) / "models/stories260K/stories260K.gguf"
OUTPUT = HERE / "methods_reference.npz"


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def official_echo(folder: str, strategy: str) -> np.ndarray | None:
    """The official echo_embeddings.py run as its example.py does, or None when it is not here."""
    checkout = os.environ.get("ECHO_EMBEDDINGS")
    if not checkout:
        return None
    spec = importlib.util.spec_from_file_location("echo_embeddings", Path(checkout) / "echo_embeddings.py")
    echo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(echo)
    model = echo.EchoEmbeddingsMistral.from_pretrained(folder, dtype=torch.float32).eval()
    parser = echo.EchoParser(folder, {"query": ECHO_TEMPLATE})
    pooling = echo.EchoPooling(strategy=strategy)
    with torch.no_grad():
        return pooling(model(parser([("query", {"text": s}) for s in SENTENCES])))["sentence_embedding"].numpy()


def main() -> None:
    arrays: dict[str, np.ndarray] = {"sentences": np.array(SENTENCES)}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"standin": write_standin_gguf(Path(tmp) / "stories260K.gguf")}
        if STORIES.is_file():
            models["stories260K"] = STORIES
        for name, gguf in models.items():
            folder = str(convert_gguf(gguf))
            for key, vectors in reference_vectors(folder).items():
                arrays[f"{name}/{key}"] = vectors.astype(np.float32)
                if key.startswith("echo/"):
                    official = official_echo(folder, key.split("/")[1])
                    if official is not None:
                        agreement = cosine(official, vectors).min()
                        print(f"{name} {key}: official echo_embeddings.py vs port, min cosine {agreement:.8f}")
                        assert agreement >= 0.99999
    np.savez_compressed(OUTPUT, **arrays)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes): {sorted(k for k in arrays if k != 'sentences')}")


if __name__ == "__main__":
    main()
