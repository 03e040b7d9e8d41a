import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from metaeol.evaluation import senteval_classifier
from metaeol.evaluation.data import Labelled, Pairs, TaskData
from metaeol.evaluation.runner import EvalData, run_evaluation
from metaeol.evaluation.senteval_classifier import (
    L2_GRID,
    LogRegConfig,
    dev_then_test,
    fit_logreg,
    inner_kfold,
    kfold_then_test,
)
from metaeol.evaluation.transfer import classifier_settings, evaluate_transfer

from _eval_toys import ToyEncoder

FAST = LogRegConfig(max_epoch=40, lr=0.05)  # the authors' settings with Adam's steps 50x longer


@pytest.fixture
def fast_default(monkeypatch):
    """Tasks scored under the senteval protocol with FAST's learning rate (small data, few steps)."""
    monkeypatch.setattr(senteval_classifier, "LogRegConfig", lambda **kw: LogRegConfig(**kw, lr=FAST.lr))


def _data(n, d=8, classes=2, noise=0.0, sep=3.0, seed=0):
    """Class means ``sep`` apart per axis; ``noise`` is the share of labels replaced by random ones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    X = sep * np.eye(classes, d)[y] + rng.normal(size=(n, d))
    flip = rng.random(n) < noise
    y[flip] = rng.integers(0, classes, size=int(flip.sum()))
    return X.astype(np.float32), y


def _senteval_fit(X, y, nclasses, l2reg, cfg, valid=None):
    """SentEval's MLP(nhid=0).fit written out with torch's own modules and global seeds."""
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = torch.nn.Sequential(torch.nn.Linear(X.shape[1], nclasses))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=l2reg)
    if valid is None:
        perm = np.random.permutation(len(X))
        cut = int(0.05 * len(X))
        valid, X, y = (X[perm[:cut]], y[perm[:cut]]), X[perm[cut:]], y[perm[cut:]]
    Xt, yt = torch.tensor(X), torch.tensor(y)
    Xd, yd = torch.tensor(valid[0]), torch.tensor(valid[1])
    nepoch, best, stop, misses = 0, -1.0, False, 0
    while not stop and nepoch <= cfg.max_epoch:
        for _ in range(cfg.epoch_size):
            perm = np.random.permutation(len(Xt))
            for i in range(0, len(Xt), cfg.batch_size):
                idx = torch.from_numpy(perm[i:i + cfg.batch_size])
                loss = torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        nepoch += cfg.epoch_size
        with torch.no_grad():
            acc = (model(Xd).argmax(1) == yd).double().mean().item()
        if acc > best:
            best, kept = acc, copy.deepcopy(model)
        else:
            stop = misses >= cfg.tenacity
            misses += 1
    return best, nepoch, kept[0].weight.detach(), kept[0].bias.detach()


def test_matches_senteval_fit_step_for_step():
    X, y = _data(260, d=10, classes=3, noise=0.3, seed=4)
    cfg = LogRegConfig(batch_size=32, tenacity=2, epoch_size=2, max_epoch=20, lr=0.01, seed=7)
    state = np.random.get_state()
    with torch.random.fork_rng():
        for valid in ((X[200:], y[200:]), None):  # held-out data; a 5% split drawn with the seed
            fit = fit_logreg(X[:200], y[:200], 3, (1e-5, 1e-2), cfg, valid=valid)
            assert fit.early_stopped.any()  # the comparison covers the early stop
            for r, reg in enumerate((1e-5, 1e-2)):
                best, epochs, weight, bias = _senteval_fit(X[:200], y[:200], 3, reg, cfg, valid)
                assert fit.dev_acc[r] == pytest.approx(best) and fit.epochs[r] == epochs
                torch.testing.assert_close(fit.weight[r], weight, atol=1e-5, rtol=0)
                torch.testing.assert_close(fit.bias[r], bias, atol=1e-5, rtol=0)
    np.random.set_state(state)


def test_early_stopping_counts_misses_over_the_run():
    X, y = _data(200, sep=10.0, seed=1)
    cfg = LogRegConfig(tenacity=2, epoch_size=3, lr=FAST.lr)
    fit = fit_logreg(X[:150], y[:150], 2, (1e-5,), cfg, valid=(X[150:], y[150:]))
    # separable: best from the first epoch, then stop at the (tenacity + 1)-th epoch without a gain
    assert fit.dev_acc[0] == 1.0 and fit.early_stopped[0] and fit.epochs[0] == (cfg.tenacity + 2) * cfg.epoch_size
    # with no early stop in reach, training runs while the epoch count is <= max_epoch
    fit = fit_logreg(X[:150], y[:150], 2, (1e-5,), LogRegConfig(tenacity=1000, max_epoch=10, lr=FAST.lr), valid=(X[150:], y[150:]))
    assert not fit.early_stopped[0] and fit.epochs[0] == 12


def test_same_seed_same_result_other_seed_other_model():
    X, y = _data(150, noise=0.3, seed=2)
    a = inner_kfold(X, y, 2, k=3, config=FAST)
    assert a == inner_kfold(X.copy(), y.copy(), 2, k=3, config=FAST)
    fits = [fit_logreg(X, y, 2, L2_GRID, LogRegConfig(max_epoch=8, lr=FAST.lr, seed=s)) for s in (1111, 1111, 5)]
    assert torch.equal(fits[0].weight, fits[1].weight) and not torch.equal(fits[0].weight, fits[2].weight)


def test_accuracy_separable_and_noisy():
    X, y = _data(150, sep=10.0, seed=3)
    assert inner_kfold(X, y, 2, k=3, config=FAST)["acc"] == 100.0
    X, y = _data(300, noise=0.5, seed=3)  # a quarter of the labels wrong: about 75 reachable
    res = inner_kfold(X, y, 2, k=3, config=FAST)
    assert 60 < res["acc"] < 90 and 60 < res["devacc"] < 90


def test_nested_kfold_folds_fits_and_grid():
    X, y = _data(120, noise=0.2, seed=5)
    res = inner_kfold(X, y, 2, k=4, config=FAST)
    assert len(res["l2reg"]) == 4 and set(res["l2reg"]) <= set(L2_GRID)
    assert res["fits"] == 4 * (4 * len(L2_GRID) + 1)  # outer folds x (inner folds x grid + final fit)
    res = kfold_then_test(X[:90], y[:90], X[90:], y[90:], 2, k=3, config=FAST)
    assert res["l2reg"] in L2_GRID and res["fits"] == 3 * len(L2_GRID) + 1 and res["pred"].shape == (30,)
    assert res["acc"] == round(100 * float(np.mean(res["pred"] == y[90:])), 2)


def _correlated(n, seed):
    """Feature 0 = label signal + large noise, feature 1 = that noise: only their difference
    separates the classes, which a strong penalty (weights held near the mean difference) misses."""
    rng = np.random.default_rng(seed)
    y, z = rng.integers(0, 2, size=n), 4 * rng.normal(size=n)
    return np.stack([2 * y - 1 + z, z + 0.1 * rng.normal(size=n)], 1).astype(np.float32), y


@pytest.mark.parametrize("grid", [(1e-5, 50.0), (50.0, 1e-5)])
def test_penalty_chosen_by_score_not_position(grid):
    X, y = _correlated(120, seed=6)
    assert inner_kfold(X, y, 2, k=3, config=FAST, grid=grid)["l2reg"] == [1e-5] * 3
    assert kfold_then_test(X[:90], y[:90], X[90:], y[90:], 2, k=3, config=FAST, grid=grid)["l2reg"] == 1e-5


def test_sst2_style_dev_selection():
    X, y = _correlated(240, seed=0)
    res = dev_then_test(X[:120], y[:120], X[120:180], y[120:180], X[180:], y[180:], 2, config=FAST,
                        grid=(50.0, 1e-5))
    fit = fit_logreg(X[:120], y[:120], 2, (50.0, 1e-5), FAST, valid=(X[120:180], y[120:180]))
    assert res["l2reg"] == 1e-5 and res["fits"] == 2
    assert res["devacc"] == round(100 * fit.dev_acc[1], 2) > round(100 * fit.dev_acc[0], 2)
    assert res["acc"] == round(100 * fit.accuracy(X[180:], y[180:])[1], 2) > 95


def test_bad_input_is_named():
    X, y = _data(40)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        fit_logreg(X, y + 1, 2, L2_GRID)
    with pytest.raises(ValueError, match="tenacity"):
        LogRegConfig(tenacity=-1)
    with pytest.raises(ValueError, match="transfer protocol"):
        evaluate_transfer(TaskData("MR", "transfer", {}), lambda s: None, protocol="liblinear")


WORDS = {1: ("good", "great", "fine"), 0: ("bad", "awful", "dull")}
FILLER = ("movie", "plot", "film", "story", "acting", "cast", "scene", "script")


def _sentences(labels, seed):
    rng = np.random.default_rng(seed)
    return tuple(f"{rng.choice(WORDS[int(c)])} {' '.join(rng.choice(FILLER, size=rng.integers(1, 3)))}"
                 for c in labels)


def test_tasks_under_the_senteval_protocol(fast_default):
    embed = lambda s: ToyEncoder().encode(list(s))
    labels = np.arange(90) % 2
    mr = TaskData("MR", "transfer", {"all": Labelled(_sentences(labels, 0), labels)})
    res = evaluate_transfer(mr, embed, kfold=3)
    assert res["protocol"] == "senteval" and res["acc"] == res["score"] > 90 and len(res["l2reg"]) == 3

    trec = {p: Labelled(tuple(f"q{c} {w}" for c in y for w in FILLER[:2]), np.repeat(y, 2))
            for p, y in (("train", np.arange(6).repeat(3)), ("test", np.arange(6)))}
    res = evaluate_transfer(TaskData("TREC", "transfer", trec), embed, kfold=3)
    assert res["ntest"] == 12 and res["acc"] > 80 and res["l2reg"] in L2_GRID

    first, other = _sentences(labels, 1), _sentences(1 - labels, 3)  # paraphrase: the same sentence
    split = Pairs(first, tuple(a if c else b for a, b, c in zip(first, other, labels)), labels)
    res = evaluate_transfer(TaskData("MRPC", "transfer", {"train": split, "test": split}), embed, kfold=3)
    assert res["features"] == "senteval" and res["f1"] > 0 and res["protocol"] == "senteval"


def test_report_records_the_protocol(tmp_path):
    labels = np.arange(60) % 2
    data = EvalData(Path(tmp_path), {"CR": TaskData("CR", "transfer", {"all": Labelled(_sentences(labels, 2), labels)})},
                    "test", None, False, 0.0)
    report = run_evaluation(ToyEncoder(), data, kfold=3)
    assert report["config"]["classifier"] == classifier_settings("senteval", kfold=3)
    assert report["config"]["classifier"] | {"tenacity": 5, "epoch_size": 4, "batch_size": 64, "optim": "adam",
                                             "mrpc_features": "senteval"} == report["config"]["classifier"]
    assert report["results"]["CR"]["protocol"] == "senteval" and "senteval protocol" in report["markdown"]
    sk = run_evaluation(ToyEncoder(), data, kfold=3, transfer_protocol="sklearn")["config"]["classifier"]
    assert sk["protocol"] == "sklearn" and sk["mrpc_features"] == "full" and "max_iter" in sk
