"""SentEval's PyTorch logistic regression and its three validation schemes, on the CPU.

A reimplementation of SentEval's ``usepytorch=True`` path (``tools/classifier.py``: ``MLP``
with ``nhid=0``; ``tools/validation.py``), with the MetaEOL authors' settings as defaults
(``LogRegConfig``):

* Model: one linear layer, initialised like ``nn.Linear`` right after ``torch.manual_seed(seed)``;
  mean cross-entropy; Adam (lr 1e-3) with the L2 penalty as Adam's (coupled) ``weight_decay``
  on weight and bias.
* Training: an "epoch" is ``epoch_size`` passes over the training data in mini-batches of
  ``batch_size``, each pass in the order of a fresh ``np.random.permutation`` from a
  ``RandomState(seed)``. After every epoch the validation accuracy is measured; the best model
  is kept; training stops at the ``tenacity + 1``-th epoch (counted over the whole run, as
  SentEval counts) that does not improve it, or once more than ``max_epoch`` passes ran.
* Validation data: the scheme's held-out part, or (final fits of the k-fold schemes) the first
  ``int(0.05 * n)`` samples of a permutation drawn before training, the rest being trained on.
* L2 penalties ``10^-5 .. 10^-2``; a penalty's score is rounded to 0.01 before the argmax
  (first best wins), as SentEval does.

The grid's penalties see the same data in the same order (SentEval seeds every fit alike), so
they are trained side by side as one batched model: same numbers, a quarter of the steps.
Fits run with one torch thread: results do not depend on the machine's core count.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)
SEED = 1111
VALIDATION_SPLIT = 0.05
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class LogRegConfig:
    """SentEval classifier settings; the defaults are the MetaEOL authors' (``--mode test``)."""

    batch_size: int = 64
    tenacity: int = 5
    epoch_size: int = 4
    max_epoch: int = 200
    lr: float = 1e-3
    seed: int = SEED

    def __post_init__(self) -> None:
        for name in ("batch_size", "epoch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, not {getattr(self, name)!r}")
        for name in ("tenacity", "max_epoch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, not {self.lr!r}")

    def describe(self) -> dict[str, Any]:
        """JSON-able settings, SentEval's names where it has them."""
        return {"nhid": 0, "optim": "adam"} | asdict(self) | {
            "validation_split": VALIDATION_SPLIT, "l2_grid": list(L2_GRID),
        }


@dataclass(frozen=True)
class LogRegFit:
    """The best model (by validation accuracy) of each L2 penalty, trained side by side."""

    l2regs: tuple[float, ...]
    weight: torch.Tensor  # (R, C, D)
    bias: torch.Tensor  # (R, C)
    dev_acc: np.ndarray  # (R,) best validation accuracy, a fraction
    epochs: np.ndarray  # (R,) epochs trained (in SentEval's count: passes, a multiple of epoch_size)
    early_stopped: np.ndarray  # (R,) False where max_epoch ended the training

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted classes, (R, N)."""
        return _logits(torch.as_tensor(np.asarray(X, dtype=np.float32)), self.weight, self.bias).argmax(-1).numpy()

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Accuracy of each penalty's model, (R,)."""
        return (self.predict(X) == np.asarray(y)[None, :]).mean(axis=1)


def _logits(X: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.matmul(X, weight.transpose(1, 2)) + bias[:, None, :]


def _adam_step(p: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
               decay: torch.Tensor, step: int, lr: float) -> None:
    """torch.optim.Adam's update (coupled weight decay), one decay per leading index."""
    beta1, beta2 = ADAM_BETAS
    grad = grad + decay * p
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(ADAM_EPS)
    p.addcdiv_(m, denom, value=-lr / (1 - beta1**step))


def _init_linear(dim: int, nclasses: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.Linear(dim, nclasses)``'s initial parameters after ``torch.manual_seed(seed)``."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.nn.init.kaiming_uniform_(torch.empty(nclasses, dim), a=math.sqrt(5), generator=gen)
    bound = 1 / math.sqrt(dim)
    return weight, torch.empty(nclasses).uniform_(-bound, bound, generator=gen)


def _check_xy(X: np.ndarray, y: np.ndarray, nclasses: int, what: str) -> None:
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"{what}: expected features (N, D) and labels (N,), got {X.shape} and {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= nclasses):
        raise ValueError(f"{what}: labels must lie in 0..{nclasses - 1}, found {y.min()}..{y.max()}")


def fit_logreg(
    X: np.ndarray,
    y: np.ndarray,
    nclasses: int,
    l2regs: Sequence[float],
    config: LogRegConfig = LogRegConfig(),
    *,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
) -> LogRegFit:
    """Train one SentEval logistic regression per penalty in ``l2regs``, early-stopped on ``valid``
    (default: a ``VALIDATION_SPLIT`` share of ``X`` drawn with the seed, as SentEval's final fits)."""
    X, y = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)
    _check_xy(X, y, nclasses, "training data")
    if not l2regs:
        raise ValueError("l2regs is empty")
    rng = np.random.RandomState(config.seed)
    if valid is None:
        if len(X) < 2:
            raise ValueError(f"cannot hold out validation samples from {len(X)} training sample(s)")
        perm = rng.permutation(len(X))
        cut = max(1, int(VALIDATION_SPLIT * len(X)))  # SentEval divides by zero where this is 0
        X_dev, y_dev, X, y = X[perm[:cut]], y[perm[:cut]], X[perm[cut:]], y[perm[cut:]]
    else:
        X_dev, y_dev = np.asarray(valid[0], dtype=np.float32), np.asarray(valid[1], dtype=np.int64)
        _check_xy(X_dev, y_dev, nclasses, "validation data")
        if len(y_dev) == 0 or X_dev.shape[1] != X.shape[1]:
            raise ValueError(f"validation features {X_dev.shape} do not fit training features {X.shape}")
    if len(X) == 0:
        raise ValueError("no training samples")

    n, dim, R = len(X), X.shape[1], len(l2regs)
    Xt, Xd = torch.from_numpy(X), torch.from_numpy(X_dev)
    targets = torch.nn.functional.one_hot(torch.from_numpy(y), nclasses).float()
    yd = torch.from_numpy(y_dev)
    w0, b0 = _init_linear(dim, nclasses, config.seed)
    weight, bias = w0.expand(R, -1, -1).clone(), b0.expand(R, -1).clone()
    state = [torch.zeros_like(t) for t in (weight, weight, bias, bias)]
    decay = torch.tensor(list(l2regs), dtype=torch.float32)
    best_w, best_b = weight.clone(), bias.clone()
    best = np.full(R, -1, dtype=np.int64)
    misses = np.zeros(R, dtype=np.int64)
    stopped = np.zeros(R, dtype=bool)
    epochs = np.zeros(R, dtype=np.int64)
    nepoch = step = 0
    with torch.no_grad():
        while not stopped.all() and nepoch <= config.max_epoch:
            for _ in range(config.epoch_size):
                order = torch.from_numpy(rng.permutation(n))
                for idx in order.split(config.batch_size):
                    xb = Xt[idx]
                    grad = (torch.softmax(_logits(xb, weight, bias), -1) - targets[idx]) / len(idx)
                    step += 1
                    _adam_step(weight, grad.transpose(1, 2) @ xb, *state[:2], decay[:, None, None], step, config.lr)
                    _adam_step(bias, grad.sum(1), *state[2:], decay[:, None], step, config.lr)
            nepoch += config.epoch_size
            correct = (_logits(Xd, weight, bias).argmax(-1) == yd).sum(1).numpy()
            for r in np.flatnonzero(~stopped):
                epochs[r] = nepoch
                if correct[r] > best[r]:
                    best[r] = correct[r]
                    best_w[r], best_b[r] = weight[r], bias[r]
                else:
                    stopped[r] = misses[r] >= config.tenacity
                    misses[r] += 1
    return LogRegFit(tuple(l2regs), best_w, best_b, best / len(y_dev), epochs, stopped)


def _one_torch_thread(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return func(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper  # type: ignore[return-value]


class _Log:
    """Counts fits and the ones that ran to ``max_epoch`` without early stopping."""

    def __init__(self) -> None:
        self.fits = 0
        self.max_epoch_reached = 0

    def add(self, fit: LogRegFit) -> LogRegFit:
        self.fits += len(fit.l2regs)
        self.max_epoch_reached += int((~fit.early_stopped).sum())
        return fit

    def report(self) -> dict[str, int]:
        return {"fits": self.fits, "max_epoch_reached": self.max_epoch_reached}


def _pick(scores: Sequence[float], grid: Sequence[float]) -> tuple[float, float]:
    best = int(np.argmax(scores))
    return grid[best], scores[best]


@_one_torch_thread
def inner_kfold(
    X: np.ndarray, y: np.ndarray, nclasses: int, *, k: int = 10, config: LogRegConfig = LogRegConfig(),
    grid: Sequence[float] = L2_GRID,
) -> dict[str, Any]:
    """SentEval's ``InnerKFoldClassifier``: per outer fold, the penalty is chosen by inner k-fold
    CV on the training part (folds always seeded 1111, as SentEval's), then a final fit on that
    part is scored on the held-out fold. Accuracies x100."""
    log, dev, test, chosen = _Log(), [], [], []
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=SEED)
    for tr, te in folds.split(X, y):
        Xtr, ytr = X[tr], y[tr]
        inner = [log.add(fit_logreg(Xtr[a], ytr[a], nclasses, grid, config, valid=(Xtr[b], ytr[b]))).dev_acc
                 for a, b in folds.split(Xtr, ytr)]
        reg, score = _pick([round(100 * float(s), 2) for s in np.mean(inner, axis=0)], grid)
        final = log.add(fit_logreg(Xtr, ytr, nclasses, [reg], config))
        chosen.append(reg)
        dev.append(score)
        test.append(round(100 * float(final.accuracy(X[te], y[te])[0]), 2))
    return {"devacc": round(float(np.mean(dev)), 2), "acc": round(float(np.mean(test)), 2), "l2reg": chosen,
            **log.report()}


@_one_torch_thread
def kfold_then_test(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, nclasses: int, *, k: int = 10,
    config: LogRegConfig = LogRegConfig(), grid: Sequence[float] = L2_GRID,
) -> dict[str, Any]:
    """SentEval's ``KFoldClassifier``: the penalty is chosen by k-fold CV on train (folds seeded
    with ``config.seed``), then a final fit on all of train is scored on test. Accuracies x100."""
    log = _Log()
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=config.seed).split(X, y)
    cv = [log.add(fit_logreg(X[a], y[a], nclasses, grid, config, valid=(X[b], y[b]))).dev_acc for a, b in folds]
    reg, score = _pick([round(100 * float(s), 2) for s in np.mean(cv, axis=0)], grid)
    pred = log.add(fit_logreg(X, y, nclasses, [reg], config)).predict(X_test)[0]
    return {"devacc": score, "acc": round(100 * float(np.mean(pred == y_test)), 2), "l2reg": reg, "pred": pred,
            **log.report()}


@_one_torch_thread
def dev_then_test(
    X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
    nclasses: int, *, config: LogRegConfig = LogRegConfig(), grid: Sequence[float] = L2_GRID,
) -> dict[str, Any]:
    """SentEval's ``SplitClassifier``: every penalty trained on train and early-stopped on dev; the
    best on dev is scored on test (SentEval retrains it with the same seed: the same model)."""
    log = _Log()
    fit = log.add(fit_logreg(X, y, nclasses, grid, config, valid=(X_dev, y_dev)))
    best = int(np.argmax([round(100 * float(s), 2) for s in fit.dev_acc]))
    return {"devacc": round(100 * float(fit.dev_acc[best]), 2),
            "acc": round(100 * float(fit.accuracy(X_test, y_test)[best]), 2), "l2reg": grid[best], **log.report()}
