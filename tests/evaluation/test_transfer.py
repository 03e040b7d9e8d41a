import numpy as np
import pytest

from metaeol.evaluation.data import Labelled, Pairs, TaskData
from metaeol.evaluation.sklearn_classifier import (
    INNER_GRID,
    KFOLD_GRID,
    dev_then_test,
    inner_kfold,
    kfold_then_test,
)
from metaeol.evaluation.transfer import evaluate_transfer, pair_features


def _noisy(n=90, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(int)
    return X, y


def test_senteval_regulariser_grids():
    assert INNER_GRID == (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    assert KFOLD_GRID == (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def test_same_embeddings_give_identical_results():
    X, y = _noisy()
    first, second = inner_kfold(X, y), inner_kfold(X.copy(), y.copy())  # the real 10x10 protocol
    assert first == second
    assert 50 < first["acc"] < 100  # noisy labels: neither chance nor perfect
    a = kfold_then_test(X[:60], y[:60], X[60:], y[60:], k=3)
    b = kfold_then_test(X[:60], y[:60], X[60:], y[60:], k=3)
    assert a["acc"] == b["acc"] and a["C"] == b["C"] and np.array_equal(a["pred"], b["pred"])


def test_separable_embeddings_score_perfectly():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    X = np.eye(3)[y] * 5 + 0.1 * rng.normal(size=(60, 3))
    assert inner_kfold(X[:40], (y[:40] > 0).astype(int), k=3)["acc"] == 100.0
    assert kfold_then_test(X[::2], y[::2], X[1::2], y[1::2], k=3)["acc"] == 100.0
    res = dev_then_test(X[::3], y[::3], X[1::3], y[1::3], X[2::3], y[2::3])
    assert res["acc"] == 100.0 and res["devacc"] == 100.0


def test_pair_features():
    u, v = np.array([[1.0, -2.0]]), np.array([[3.0, 1.0]])
    np.testing.assert_array_equal(pair_features(u, v, "senteval"), [[2.0, 3.0, 3.0, -2.0]])
    np.testing.assert_array_equal(pair_features(u, v, "full"), [[1.0, -2.0, 3.0, 1.0, 2.0, 3.0, 3.0, -2.0]])
    with pytest.raises(ValueError):
        pair_features(u, v, "other")


def _embed_words(vectors):
    return lambda sentences: np.stack([sum(vectors[w] for w in s.split()) for s in sentences])


def test_binary_task_uses_senteval_order_and_scores():
    vectors = {"good": np.array([1.0, 0.2]), "bad": np.array([-1.0, 0.3]), "very": np.array([0.0, 1.0])}
    sents = ("very good", "good", "very very bad", "bad", "good good", "very bad") * 6
    labels = np.array([1, 1, 0, 0, 1, 0] * 6)
    seen = []
    embed = _embed_words(vectors)
    res = evaluate_transfer(
        TaskData("MR", "transfer", {"all": Labelled(sents, labels)}),
        lambda s: seen.append(list(s)) or embed(s), protocol="sklearn", kfold=3,
    )
    lengths = [len(s.split()) for s in seen[0]]
    assert lengths == sorted(lengths)  # SentEval sorts by token count (then label) before CV
    assert res["acc"] == 100.0 and res["score"] == res["acc"] and res["ntest"] == 36


def test_mrpc_reports_accuracy_and_f1():
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0])}
    s1 = ("a", "a", "b", "b", "c", "c") * 5
    s2 = ("a", "b", "b", "c", "c", "a") * 5
    y = np.array([int(x == z) for x, z in zip(s1, s2)])
    split = Pairs(s1, s2, y)
    task = TaskData("MRPC", "transfer", {"train": split, "test": split})
    res = evaluate_transfer(task, _embed_words(vectors), protocol="sklearn", kfold=3)
    assert res["acc"] == 100.0 and res["f1"] == 100.0 and res["features"] == "full"
    assert res["protocol"] == "sklearn" and "not_converged" in res
