"""Loaders for the SentEval data layout (STS12-16, STS-B, SICK-R and seven transfer tasks).

Files are parsed the way SentEval (and the SimCSE copy the MetaEOL authors evaluate with)
parses them. Every sentence is whitespace-normalised with ``" ".join(s.split())``: SentEval
splits sentences into tokens and the reference batcher joins them back with single spaces,
so this is exactly the text the reference encoder sees. Empty lines in CR and MPQA stay as
empty sentences with their label, as in SentEval.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from metaeol.paths import user_data_root

DEFAULT_SUBDIR = Path("..") / "shared" / "data" / "senteval"

STS_SUBSETS: dict[str, dict[str, int]] = {
    "STS12": {"MSRpar": 750, "MSRvid": 750, "SMTeuroparl": 459, "surprise.OnWN": 750, "surprise.SMTnews": 399},
    "STS13": {"FNWN": 189, "headlines": 750, "OnWN": 561},
    "STS14": {"deft-forum": 450, "deft-news": 300, "headlines": 750, "images": 750, "OnWN": 750, "tweet-news": 750},
    "STS15": {"answers-forums": 375, "answers-students": 750, "belief": 375, "headlines": 750, "images": 750},
    "STS16": {"answer-answer": 254, "headlines": 249, "plagiarism": 230, "postediting": 244, "question-question": 209},
}
STSB_SPLITS = {"train": ("sts-train.csv", 5749), "dev": ("sts-dev.csv", 1500), "test": ("sts-test.csv", 1379)}
SICK_SPLITS = {
    "train": ("SICK_train.txt", 4500),
    "dev": ("SICK_trial.txt", 500),
    "test": ("SICK_test_annotated.txt", 4927),
}
BINARY_FILES: dict[str, tuple[str, str, str, int, int]] = {
    # task: (folder, positive file, negative file, expected positives, expected negatives)
    "MR": ("MR", "rt-polarity.pos", "rt-polarity.neg", 5331, 5331),
    "CR": ("CR", "custrev.pos", "custrev.neg", 2407, 1368),
    "SUBJ": ("SUBJ", "subj.objective", "subj.subjective", 5000, 5000),
    "MPQA": ("MPQA", "mpqa.pos", "mpqa.neg", 3312, 7294),
}
SST2_SPLITS = {"train": 67349, "dev": 872, "test": 1821}
TREC_SPLITS = {"train": ("train_5500.label", 5452), "test": ("TREC_10.label", 500)}
TREC_CLASSES = {"ABBR": 0, "DESC": 1, "ENTY": 2, "HUM": 3, "LOC": 4, "NUM": 5}
MRPC_SPLITS = {"train": ("msr_paraphrase_train.txt", 4076), "test": ("msr_paraphrase_test.txt", 1725)}

STS_TASKS = (*STS_SUBSETS, "STS-B", "SICK-R")
TRANSFER_TASKS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
ALL_TASKS = STS_TASKS + TRANSFER_TASKS
_ALIASES = {"STSB": "STS-B", "STSBENCHMARK": "STS-B", "SICK": "SICK-R", "SICKRELATEDNESS": "SICK-R"}


class DataError(ValueError):
    """A data file is missing, malformed, or does not have the expected size."""


@dataclass(frozen=True)
class Pairs:
    """Sentence pairs with one target each (a gold similarity or a class label)."""

    sent1: tuple[str, ...]
    sent2: tuple[str, ...]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Labelled:
    """Sentences with integer class labels."""

    sentences: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


Split = Pairs | Labelled


@dataclass(frozen=True)
class TaskData:
    """One task: named splits (STS12-16: one per subset) in evaluation order."""

    name: str
    kind: str  # "sts" or "transfer"
    splits: Mapping[str, Split]

    def sentences(self) -> list[str]:
        """All sentences of the task, in order, with repeats."""
        out: list[str] = []
        for split in self.splits.values():
            if isinstance(split, Pairs):
                out.extend(split.sent1)
                out.extend(split.sent2)
            else:
                out.extend(split.sentences)
        return out


def canonical_task(name: str) -> str:
    """The canonical spelling of a task name (case-insensitive; STSB/SICK aliases)."""
    key = name.strip().upper().replace("_", "-")
    key = _ALIASES.get(key.replace("-", ""), key)
    if key not in ALL_TASKS:
        raise DataError(f"unknown task {name!r}; known: {', '.join(ALL_TASKS)}")
    return key


def parse_tasks(spec: str) -> list[str]:
    """``sts``, ``transfer``, ``all`` or comma-separated task names -> canonical names."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        group = {"sts": STS_TASKS, "transfer": TRANSFER_TASKS, "all": ALL_TASKS}.get(part.lower())
        names.extend(group if group else [canonical_task(part)])
    if not names:
        raise DataError("no tasks requested")
    return list(dict.fromkeys(names))


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The data root: the given path; else :func:`~metaeol.paths.user_data_root`
    (``$METAEOL_DATA``, where ``metaeol download-data`` writes); else, in a development
    checkout, ``../shared/data/senteval`` from the CWD or the repository."""
    if data_root is not None:
        root = Path(data_root)
        if not root.is_dir():
            raise DataError(f"data root {root} is not a directory")
        return root
    candidates = [user_data_root(), Path.cwd() / DEFAULT_SUBDIR, Path(__file__).resolve().parents[2] / DEFAULT_SUBDIR]
    for root in candidates:
        if root.is_dir():
            return root.resolve()
    raise DataError(
        "no evaluation data found at " + " or ".join(str(c) for c in candidates)
        + f"; run `metaeol download-data` (it writes to {user_data_root()}) or pass --data"
    )


def _named_split(spec: str) -> tuple[str, str | None]:
    """``STS-B:dev`` / ``stsb-dev`` -> (``STS-B`` / ``stsb``, ``dev``); a spec naming no split -> (spec, None)."""
    text = spec.strip()
    if ":" in text:
        name, split = (part.strip() for part in text.split(":", 1))
        return name, split
    for suffix in ("-dev", "-test", "_dev", "_test"):
        if text.lower().endswith(suffix):
            return text[: -len(suffix)], suffix[1:]
    return text, None


def parse_task_split(spec: str, default_split: str = "test") -> tuple[str, str]:
    """``STS-B:dev`` -> ("STS-B", "dev"); ``SICK-R`` -> ("SICK-R", default_split); the older
    ``stsb-dev`` / ``sickr-test`` spellings are read too. Only STS-B and SICK-R have a dev split."""
    text, named = _named_split(spec)
    split = named or default_split
    name = canonical_task(text)
    if split not in ("test", "dev"):
        raise DataError(f"unknown split {split!r} in {spec!r}; use test or dev")
    if split == "dev" and name not in ("STS-B", "SICK-R"):
        raise DataError(f"{name} has only a test split")
    return name, split


def parse_tasks_and_split(spec: str, default_split: str = "test") -> tuple[list[str], str]:
    """:func:`parse_tasks` for a run that scores STS-B and SICK-R on one split (``eval``): a task
    may name that split (``STS-B:dev``), which then holds for both; named splits must agree."""
    names: list[str] = []
    named: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part or part.lower() in ("sts", "transfer", "all"):
            names.extend(parse_tasks(part) if part else [])
            continue
        if _named_split(part)[1] is None:
            names.append(canonical_task(part))
            continue
        name, named[part] = parse_task_split(part)
        names.append(name)
    if len(set(named.values())) > 1:
        raise DataError(f"one run scores one split; {', '.join(named)} name different ones "
                        "(run each split separately)")
    if not names:
        raise DataError("no tasks requested")
    return list(dict.fromkeys(names)), next(iter(named.values()), default_split)


def parse_sts_specs(spec: str, default_split: str = "test") -> list[tuple[str, str]]:
    """Comma-separated STS tasks as :func:`parse_task_split` reads them, ``sts`` standing for
    the seven (STS12-16, STS-B, SICK-R); transfer tasks are refused."""
    specs: list[tuple[str, str]] = []
    for part in (p.strip() for p in spec.split(",")):
        if part.lower() == "sts":
            specs.extend((name, default_split) for name in STS_TASKS)
        elif part:
            specs.append(parse_task_split(part, default_split))
    transfer = [name for name, _ in specs if name not in STS_TASKS]
    if transfer:
        raise DataError(f"{', '.join(transfer)}: not an STS task; only STS tasks are scored here")
    if not specs:
        raise DataError(f"no tasks in {spec!r}")
    return list(dict.fromkeys(specs))


def task_label(name: str, split: str) -> str:
    """``STS-B-dev``, ``SICK-R-test``; tasks with one split keep their name."""
    return f"{name}-{split}" if name in ("STS-B", "SICK-R") else name


def _norm(sentence: str) -> str:
    return " ".join(sentence.split())


def _data_root_of(path: Path) -> Path:
    """The SentEval root above a data file (the folder holding STS/, SICK/, MR/, ...)."""
    depth = 3 if path.parent.parent.name in ("STS", "SST") else 2
    return path.parents[depth - 1]


def _open(path: Path, encoding: str) -> io.TextIOWrapper:
    if not path.is_file():
        raise DataError(f"missing data file: {path}; `metaeol download-data --data {_data_root_of(path)}` fetches "
                        "the evaluation sets")
    return open(path, encoding=encoding)


def _check(path: Path, count: int, expected: int, check_counts: bool) -> None:
    if check_counts and count != expected:
        raise DataError(f"{path}: expected {expected} items, found {count} (pass check_counts=False to allow)")


def _float(path: Path, lineno: int, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}:{lineno}: not a number: {text!r}") from None


def _head(split: Split, limit: int | None) -> Split:
    if limit is None:
        return split
    if isinstance(split, Pairs):
        return Pairs(split.sent1[:limit], split.sent2[:limit], split.targets[:limit])
    return Labelled(split.sentences[:limit], split.labels[:limit])


def load_sts_subset(folder: Path, subset: str, expected: int | None = None) -> Pairs:
    """One STS12-16 subset: ``STS.input.<subset>.txt`` with ``STS.gs.<subset>.txt``; unscored pairs skipped."""
    inp, gs = folder / f"STS.input.{subset}.txt", folder / f"STS.gs.{subset}.txt"
    with _open(inp, "utf-8") as f:
        lines = f.read().splitlines()
    with _open(gs, "utf-8") as f:
        gold = f.read().splitlines()
    if len(lines) != len(gold):
        raise DataError(f"{inp} has {len(lines)} lines but {gs} has {len(gold)}")
    s1, s2, scores = [], [], []
    for i, (line, g) in enumerate(zip(lines, gold), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{inp}:{i}: expected 2 tab-separated sentences, found {len(fields)} fields")
        if g.strip() == "":
            continue
        scores.append(_float(gs, i, g))
        s1.append(_norm(fields[0]))
        s2.append(_norm(fields[1]))
    if expected is not None:
        _check(inp, len(scores), expected, True)
    return Pairs(tuple(s1), tuple(s2), np.asarray(scores, dtype=np.float64))


def _load_stsb(path: Path) -> Pairs:
    s1, s2, scores = [], [], []
    with _open(path, "utf-8") as f:  # tab-split, no quote handling: quoting disabled
        for i, line in enumerate(f, 1):
            fields = line.strip().split("\t")
            if len(fields) < 7:
                raise DataError(f"{path}:{i}: expected at least 7 tab-separated fields, found {len(fields)}")
            scores.append(_float(path, i, fields[4]))
            s1.append(_norm(fields[5]))
            s2.append(_norm(fields[6]))
    return Pairs(tuple(s1), tuple(s2), np.asarray(scores, dtype=np.float64))


def _load_sick(path: Path) -> Pairs:
    s1, s2, scores = [], [], []
    with _open(path, "utf-8") as f:
        header = f.readline().strip().split("\t")
        try:
            ia, ib, iscore = (header.index(c) for c in ("sentence_A", "sentence_B", "relatedness_score"))
        except ValueError:
            raise DataError(f"{path}: header lacks sentence_A/sentence_B/relatedness_score: {header}") from None
        for i, line in enumerate(f, 2):
            fields = line.strip().split("\t")
            if len(fields) != len(header):
                raise DataError(f"{path}:{i}: expected {len(header)} fields, found {len(fields)}")
            scores.append(_float(path, i, fields[iscore]))
            s1.append(_norm(fields[ia]))
            s2.append(_norm(fields[ib]))
    return Pairs(tuple(s1), tuple(s2), np.asarray(scores, dtype=np.float64))


def _load_lines(path: Path, encoding: str = "latin-1") -> list[str]:
    with _open(path, encoding) as f:
        return [_norm(line) for line in f]


def _load_sst(path: Path) -> Labelled:
    sents, labels = [], []
    with _open(path, "utf-8") as f:
        for i, line in enumerate(f, 1):
            fields = line.strip().split("\t")
            if len(fields) != 2 or fields[1] not in ("0", "1"):
                raise DataError(f"{path}:{i}: expected 'sentence<TAB>0|1'")
            sents.append(_norm(fields[0]))
            labels.append(int(fields[1]))
    return Labelled(tuple(sents), np.asarray(labels, dtype=np.int64))


def _load_trec(path: Path) -> Labelled:
    sents, labels = [], []
    with _open(path, "latin-1") as f:
        for i, line in enumerate(f, 1):
            target, _, rest = line.strip().partition(":")
            parts = rest.split(" ", 1)
            if target not in TREC_CLASSES or len(parts) != 2:
                raise DataError(f"{path}:{i}: expected 'COARSE:fine question', got {line.strip()[:60]!r}")
            sents.append(_norm(parts[1]))
            labels.append(TREC_CLASSES[target])
    return Labelled(tuple(sents), np.asarray(labels, dtype=np.int64))


def _load_mrpc(path: Path) -> Pairs:
    s1, s2, labels = [], [], []
    with _open(path, "utf-8-sig") as f:
        header = f.readline().strip().split("\t")
        if header[:1] != ["Quality"] or len(header) != 5:
            raise DataError(f"{path}: unexpected header {header}")
        for i, line in enumerate(f, 2):
            fields = line.strip().split("\t")
            if len(fields) != 5 or fields[0] not in ("0", "1"):
                raise DataError(f"{path}:{i}: expected 5 tab-separated fields starting with 0|1")
            labels.append(int(fields[0]))
            s1.append(_norm(fields[3]))
            s2.append(_norm(fields[4]))
    return Pairs(tuple(s1), tuple(s2), np.asarray(labels, dtype=np.int64))


def load_task(
    name: str,
    data_root: str | os.PathLike,
    *,
    split: str = "test",
    limit: int | None = None,
    check_counts: bool = True,
) -> TaskData:
    """Load one task. ``split`` picks STS-B/SICK-R's evaluated split (``test`` or ``dev``);
    ``limit`` keeps the first N items of every file (per STS subset, split or class file)."""
    name = canonical_task(name)
    root = Path(data_root)
    splits: dict[str, Split] = {}
    if name in STS_SUBSETS:
        folder = root / "STS" / f"{name}-en-test"
        for subset, n in STS_SUBSETS[name].items():
            splits[subset] = load_sts_subset(folder, subset, n if check_counts else None)
    elif name in ("STS-B", "SICK-R"):
        if split not in ("test", "dev"):
            raise DataError(f"split must be 'test' or 'dev', not {split!r}")
        fname, n = (STSB_SPLITS if name == "STS-B" else SICK_SPLITS)[split]
        path = root / ("STS/STSBenchmark" if name == "STS-B" else "SICK") / fname
        pairs = (_load_stsb if name == "STS-B" else _load_sick)(path)
        _check(path, len(pairs), n, check_counts)
        splits[split] = pairs
    elif name in BINARY_FILES:
        folder, pos, neg, npos, nneg = BINARY_FILES[name]
        groups = []
        for fname, n, label in ((pos, npos, 1), (neg, nneg, 0)):
            path = root / folder / fname
            lines = _load_lines(path)
            _check(path, len(lines), n, check_counts)
            groups.append(_head(Labelled(tuple(lines), np.full(len(lines), label, dtype=np.int64)), limit))
        splits["all"] = Labelled(
            groups[0].sentences + groups[1].sentences, np.concatenate([groups[0].labels, groups[1].labels])
        )
        return TaskData(name, "transfer", splits)
    elif name == "SST2":
        for part, n in SST2_SPLITS.items():
            path = root / "SST" / "binary" / f"sentiment-{part}"
            splits[part] = _load_sst(path)
            _check(path, len(splits[part]), n, check_counts)
    elif name == "TREC":
        for part, (fname, n) in TREC_SPLITS.items():
            path = root / "TREC" / fname
            splits[part] = _load_trec(path)
            _check(path, len(splits[part]), n, check_counts)
    elif name == "MRPC":
        for part, (fname, n) in MRPC_SPLITS.items():
            path = root / "MRPC" / fname
            splits[part] = _load_mrpc(path)
            _check(path, len(splits[part]), n, check_counts)
    kind = "sts" if name in STS_TASKS else "transfer"
    return TaskData(name, kind, {k: _head(v, limit) for k, v in splits.items()})


def load_tasks(
    names: Sequence[str], data_root: str | os.PathLike, **kwargs
) -> dict[str, TaskData]:
    """Load several tasks (see :func:`load_task`), keyed by canonical name."""
    return {t.name: t for t in (load_task(n, data_root, **kwargs) for n in names)}
