"""Deterministic toy encoder and a tiny SentEval layout for the evaluation tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


class ToyEncoder:
    """``anchor`` -> [1, 0, ...]; ``p0.25`` -> a unit vector with cosine 0.25 to the anchor;
    anything else -> a hashed bag of words. Records every ``encode`` call."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, sentences, batch_size=16, show_progress_bar=False) -> np.ndarray:
        self.calls.append(list(sentences))
        return np.stack([self._vector(s) for s in sentences]).astype(np.float32)

    def _vector(self, s: str) -> np.ndarray:
        v = np.zeros(self.dim)
        if s == "anchor":
            v[0] = 1.0
        elif s.startswith("p") and s[1:].replace(".", "", 1).isdigit():
            c = float(s[1:])
            v[0], v[1] = c, np.sqrt(1 - c * c)
        else:
            for w in s.lower().split():
                seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
                v += np.random.default_rng(seed).normal(size=self.dim)
        return v

    def describe(self) -> dict:
        return {"model": "toy", "dim": self.dim}


# STS13 subsets: (system cosine, gold) per scored pair. Hand-derived expectations:
# FNWN Spearman 1, headlines 0.8 (Pearson 0.8), OnWN -0.5; mean 1.3/3, weighted
# (3*1 + 4*0.8 + 3*-0.5)/10 = 0.47; pooled over the ten pairs 1 - 6*38/(10*99).
STS13 = {
    "FNWN": [(0.10, 1.0), (0.20, 2.0), (0.30, 3.0)],
    "headlines": [(0.40, 0.5), (0.50, 1.5), (0.60, 3.5), (0.70, 2.5)],
    "OnWN": [(0.80, 4.5), (0.85, 4.0), (0.90, 4.2)],
}
STS13_POOLED = 1 - 6 * 38 / (10 * 99)
STS13_MEAN = 1.3 / 3
STS13_WMEAN = 0.47


def write(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)


def tiny_layout(root: Path) -> Path:
    """STS13 (with one unscored pair), STS-B test and MR in the SentEval layout."""
    folder = root / "STS" / "STS13-en-test"
    for name, rows in STS13.items():
        pairs = [f"anchor\tp{c:.2f}" for c, _ in rows] + ["anchor\tp0.99"]
        gold = [f"{g}" for _, g in rows] + [""]
        write(folder / f"STS.input.{name}.txt", "\n".join(pairs) + "\n")
        write(folder / f"STS.gs.{name}.txt", "\n".join(gold) + "\n")
    stsb = [("p0.30", "2.0"), ("p0.60", "4.0"), ("p0.10", "1.0"), ("p0.45", "3.0")]
    write(
        root / "STS" / "STSBenchmark" / "sts-test.csv",
        "".join(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{g}\tanchor\t{s}\n" for i, (s, g) in enumerate(stsb)),
    )
    good = ["good great fine", "great movie", "fine good", "good fun", "great great", "fine fun good"] * 2
    bad = ["bad awful dull", "awful movie", "dull bad", "bad boring", "awful awful", "dull boring bad"] * 2
    write(root / "MR" / "rt-polarity.pos", "\n".join(good) + "\n", "latin-1")
    write(root / "MR" / "rt-polarity.neg", "\n".join(bad) + "\n", "latin-1")
    return root


def standard_layout(root: Path) -> Path:
    """Every task of the SentEval layout with the standard file sizes and formats (synthetic
    sentences), for a clone without ../shared. It keeps the real files' quirks that the
    loaders must handle: unscored STS pairs, empty lines in CR and MPQA, a double quote in
    STS-B, MRPC's byte-order mark and header, TREC's coarse:fine labels."""
    from metaeol.evaluation.data import (
        BINARY_FILES, MRPC_SPLITS, SICK_SPLITS, SST2_SPLITS, STS_SUBSETS, STSB_SPLITS, TREC_CLASSES, TREC_SPLITS,
    )

    def sentence(tag: str, i: int) -> str:
        return f"{tag} sentence number {i} about  a cat"

    for task, subsets in STS_SUBSETS.items():
        for subset, n in subsets.items():
            folder = root / "STS" / f"{task}-en-test"
            rows = [f"{sentence(subset, i)}\t{sentence(subset, i + 1)}" for i in range(n + 1)]
            write(folder / f"STS.input.{subset}.txt", "\n".join(rows) + "\n")
            write(folder / f"STS.gs.{subset}.txt", "\n".join([str(i % 5) for i in range(n)] + [""]) + "\n")
    quoted = 'he said "hi"'
    for split, (name, n) in STSB_SPLITS.items():
        rows = [f"genre\tfile\tyear\t{i:04d}\t{i % 5}.0\t{sentence(quoted, i)}\t{sentence('b', i)}"
                for i in range(n)]
        write(root / "STS" / "STSBenchmark" / name, "\n".join(rows) + "\n")
    for split, (name, n) in SICK_SPLITS.items():
        rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
        rows += [f"{i}\t{sentence('a', i)}\t{sentence('b', i)}\t{1 + i % 4}.5\tNEUTRAL" for i in range(n)]
        write(root / "SICK" / name, "\n".join(rows) + "\n")
    for folder, pos, neg, n_pos, n_neg in BINARY_FILES.values():
        empty = {"CR": 2, "MPQA": 2}.get(folder, 0)
        for name, n in ((pos, n_pos), (neg, n_neg)):
            lines = ["" if i < empty else sentence(name, i) for i in range(n)]
            empty = {"CR": 2, "MPQA": 1}.get(folder, 0)
            write(root / folder / name, "\n".join(lines) + "\n", "latin-1")
    for split, n in SST2_SPLITS.items():
        write(root / "SST" / "binary" / f"sentiment-{split}",
              "".join(f"{sentence(split, i)}\t{i % 2}\n" for i in range(n)))
    coarse = list(TREC_CLASSES)
    test_labels = [c for c, k in zip(coarse, (9, 138, 94, 65, 81, 113)) for _ in range(k)]
    for split, (name, n) in TREC_SPLITS.items():
        labels = test_labels if split == "test" else [coarse[i % 6] for i in range(n)]
        write(root / "TREC" / name, "".join(f"{c}:other {sentence(split, i)} ?\n" for i, c in enumerate(labels)),
              "latin-1")
    for split, (name, n) in MRPC_SPLITS.items():
        rows = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        rows += [f"{(i + 1) % 2}\t{i}\t{i + 1}\t{sentence('a', i)}\t{sentence('b', i)}" for i in range(n)]
        write(root / "MRPC" / name, "\n".join(rows) + "\n")
    return root
