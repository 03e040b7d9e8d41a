"""Transfer tasks: a logistic regression on frozen embeddings, scored the way SentEval scores it.

Two protocols, both following SentEval's validation schemes and data order:

* ``senteval`` (default): SentEval's PyTorch logistic regression with the MetaEOL authors'
  settings (``usepytorch: True, kfold: 10``, Adam, batch 64, tenacity 5, epoch size 4), as the
  paper's Table 2 was scored; see ``senteval_classifier``.
* ``sklearn``: SentEval's scikit-learn alternative (``usepytorch: False``); see ``sklearn_classifier``.

Per task (SentEval's ``binary.py``, ``sst.py``, ``trec.py``, ``mrpc.py``): samples are sorted by
token count, then label (pairs: by both token counts, then label), before embedding and
validation. MR, CR, SUBJ, MPQA: nested k-fold CV; TREC, MRPC: k-fold CV on train, then test;
SST2: dev selection, then test. MRPC features: ``senteval`` gives SentEval's ``[|u-v|, u*v]``
(the ``senteval`` protocol's default); ``full`` gives ``[u, v, |u-v|, u*v]`` as the method's
specification describes (the ``sklearn`` protocol's default).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import f1_score

from metaeol.evaluation import senteval_classifier, sklearn_classifier
from metaeol.evaluation.data import TREC_CLASSES, Labelled, Pairs, TaskData

Embed = Callable[[Sequence[str]], np.ndarray]

SEED = 1111
PROTOCOLS = ("senteval", "sklearn")
MRPC_FEATURES = ("senteval", "full")
DEFAULT_MRPC_FEATURES = {"senteval": "senteval", "sklearn": "full"}
NCLASSES = {"MR": 2, "CR": 2, "SUBJ": 2, "MPQA": 2, "SST2": 2, "TREC": len(TREC_CLASSES), "MRPC": 2}


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"transfer protocol must be one of {PROTOCOLS}, not {protocol!r}")


def classifier_settings(
    protocol: str = "senteval", *, kfold: int = 10, seed: int = SEED, mrpc_features: str | None = None
) -> dict[str, Any]:
    """What ``evaluate_transfer`` runs with these arguments, JSON-able (recorded in reports)."""
    _check_protocol(protocol)
    common = {"protocol": protocol, "kfold": kfold, "seed": seed,
              "mrpc_features": mrpc_features or DEFAULT_MRPC_FEATURES[protocol]}
    if protocol == "sklearn":
        return common | {
            "kind": "scikit-learn LogisticRegression (lbfgs), SentEval's sklearn procedure",
            "max_iter": sklearn_classifier.MAX_ITER, "inner_grid": list(sklearn_classifier.INNER_GRID),
            "kfold_grid": list(sklearn_classifier.KFOLD_GRID),
        }
    return common | {"kind": "SentEval PyTorch logistic regression (MLP, nhid 0)"} | (
        senteval_classifier.LogRegConfig(seed=seed).describe()
    )


def _sorted_sentences(split: Labelled, embed: Embed) -> tuple[np.ndarray, np.ndarray]:
    order = sorted(range(len(split)), key=lambda i: (len(split.sentences[i].split()), split.labels[i]))
    return np.asarray(embed([split.sentences[i] for i in order])), split.labels[order]


def pair_features(u: np.ndarray, v: np.ndarray, kind: str = "full") -> np.ndarray:
    """MRPC pair features: ``[|u-v|, u*v]`` (SentEval) or ``[u, v, |u-v|, u*v]`` (``full``)."""
    if kind not in MRPC_FEATURES:
        raise ValueError(f"pair features must be one of {MRPC_FEATURES}, not {kind!r}")
    parts = [np.abs(u - v), u * v]
    return np.concatenate(parts if kind == "senteval" else [u, v, *parts], axis=1)


def _sorted_pairs(split: Pairs, embed: Embed, kind: str) -> tuple[np.ndarray, np.ndarray]:
    key = lambda i: (len(split.sent1[i].split()), len(split.sent2[i].split()), split.targets[i])
    order = sorted(range(len(split)), key=key)
    u = np.asarray(embed([split.sent1[i] for i in order]), dtype=np.float64)
    v = np.asarray(embed([split.sent2[i] for i in order]), dtype=np.float64)
    return pair_features(u, v, kind), split.targets[order]


def _schemes(protocol: str, nclasses: int, kfold: int, seed: int) -> tuple[Callable[..., dict[str, Any]], ...]:
    """(nested k-fold, k-fold then test, dev then test) for the protocol."""
    if protocol == "sklearn":
        sk = sklearn_classifier
        return (partial(sk.inner_kfold, k=kfold, seed=seed), partial(sk.kfold_then_test, k=kfold, seed=seed),
                partial(sk.dev_then_test, seed=seed))
    se, config = senteval_classifier, senteval_classifier.LogRegConfig(seed=seed)
    return (partial(se.inner_kfold, nclasses=nclasses, k=kfold, config=config),
            partial(se.kfold_then_test, nclasses=nclasses, k=kfold, config=config),
            partial(se.dev_then_test, nclasses=nclasses, config=config))


def evaluate_transfer(
    task: TaskData, embed: Embed, *, protocol: str = "senteval", kfold: int = 10, seed: int = SEED,
    mrpc_features: str | None = None,
) -> dict[str, Any]:
    """Score one transfer task; ``score`` is the test accuracy (x100). ``mrpc_features`` defaults
    to the protocol's (``DEFAULT_MRPC_FEATURES``)."""
    _check_protocol(protocol)
    if task.name not in NCLASSES:
        raise ValueError(f"{task.name} is not a transfer task")
    inner_kfold, kfold_then_test, dev_then_test = _schemes(protocol, NCLASSES[task.name], kfold, seed)
    s = task.splits
    if task.name == "SST2":
        parts = [_sorted_sentences(s[p], embed) for p in ("train", "dev", "test")]
        out = dev_then_test(*parts[0], *parts[1], *parts[2]) | {"ndev": len(s["dev"]), "ntest": len(s["test"])}
    elif task.name == "TREC":
        (X, y), (Xt, yt) = _sorted_sentences(s["train"], embed), _sorted_sentences(s["test"], embed)
        out = kfold_then_test(X, y, Xt, yt) | {"ndev": len(y), "ntest": len(yt)}
        out.pop("pred")
    elif task.name == "MRPC":
        features = mrpc_features or DEFAULT_MRPC_FEATURES[protocol]
        (X, y), (Xt, yt) = (_sorted_pairs(s[p], embed, features) for p in ("train", "test"))
        out = kfold_then_test(X, y, Xt, yt)
        out |= {"f1": round(100 * float(f1_score(yt, out.pop("pred"))), 2), "features": features}
        out |= {"ndev": len(y), "ntest": len(yt)}
    else:
        X, y = _sorted_sentences(s["all"], embed)
        out = inner_kfold(X, y) | {"ndev": len(y), "ntest": len(y)}
    return out | {"protocol": protocol, "score": out["acc"]}
