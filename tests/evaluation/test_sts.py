import numpy as np
import pytest

from metaeol.evaluation.data import Pairs, TaskData, load_task
from metaeol.evaluation.sts import correlations, cosine_rows, evaluate_sts

from _eval_toys import STS13_MEAN, STS13_POOLED, STS13_WMEAN, ToyEncoder, tiny_layout


def test_cosine_rows_known_values_and_zero_vector():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, 0.0, 1 / np.sqrt(2), 0.0])


def test_spearman_of_known_rankings():
    # ranks 1..5 against 1,3,2,5,4: sum d^2 = 4, rho = 1 - 6*4/(5*24) = 0.8
    assert correlations(np.arange(1, 6), np.array([1, 3, 2, 5, 4]))["spearman"] == pytest.approx(0.8)


def test_pearson_known_value_where_spearman_is_one():
    # x = 1,2,3 and y = 1,2,4: cov sum 3, sum dx^2 = 2, sum dy^2 = 42/9 -> r = 9/sqrt(84)
    r = correlations(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert r["pearson"] == pytest.approx(9 / np.sqrt(84))
    assert r["spearman"] == pytest.approx(1.0)
    assert r["n"] == 3


def test_pooled_mean_and_weighted_mean_on_tiny_layout(tmp_path):
    task = load_task("STS13", tiny_layout(tmp_path), check_counts=False)
    assert [len(p) for p in task.splits.values()] == [3, 4, 3]  # the unscored pair is skipped
    enc = ToyEncoder()
    res = evaluate_sts(task, lambda s: enc.encode(list(s)))
    sub = res["subsets"]
    assert sub["FNWN"]["spearman"] == pytest.approx(1.0)
    assert sub["headlines"]["spearman"] == pytest.approx(0.8)
    assert sub["headlines"]["pearson"] == pytest.approx(0.8)
    assert sub["OnWN"]["spearman"] == pytest.approx(-0.5)
    sp = res["all"]["spearman"]
    assert sp["all"] == pytest.approx(STS13_POOLED)
    assert sp["mean"] == pytest.approx(STS13_MEAN)
    assert sp["wmean"] == pytest.approx(STS13_WMEAN)
    assert res["score"] == sp["all"] and res["n"] == 10


def test_single_split_task_scores_its_split():
    pairs = Pairs(("anchor",) * 3, ("p0.10", "p0.50", "p0.30"), np.array([1.0, 3.0, 2.0]))
    enc = ToyEncoder()
    res = evaluate_sts(TaskData("STS-B", "sts", {"test": pairs}), lambda s: enc.encode(list(s)))
    assert res["score"] == pytest.approx(1.0)
    assert list(res["subsets"]) == ["test"]
