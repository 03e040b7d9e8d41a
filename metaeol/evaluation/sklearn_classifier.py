"""SentEval's scikit-learn logistic-regression procedure (``usepytorch=False``), the optional
``sklearn`` transfer protocol; the default is SentEval's PyTorch one (``senteval_classifier``).

* MR, CR, SUBJ, MPQA: nested k-fold cross-validation (``InnerKFoldClassifier``): for each
  outer fold, C is chosen from 2^-2..2^3 by inner k-fold CV on the training part.
* TREC, MRPC: k-fold CV on train chooses C from 2^-1..2^5, then train -> test (``KFoldClassifier``).
* SST2: C from 2^-2..2^3 chosen on dev, then train -> test (``SplitClassifier``).
* Stratified folds shuffled with seed 1111, fold scores rounded to 0.01 before the argmax
  exactly as SentEval does; no feature standardisation. Deviation: SentEval-era scikit-learn
  defaulted to liblinear; here scikit-learn's current default (lbfgs) with ``max_iter`` raised
  to 1000; fits that still hit the limit are counted in ``not_converged``. BLAS runs
  single-threaded during the fits: this is both faster here (OpenBLAS threading slowed lbfgs
  several-fold on a 2-core machine) and independent of the machine's core count.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

SEED = 1111
INNER_GRID = tuple(2.0**t for t in range(-2, 4))
KFOLD_GRID = tuple(2.0**t for t in range(-1, 6))
MAX_ITER = 1000
F = TypeVar("F", bound=Callable[..., Any])


def _single_blas_thread(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class _Fitter:
    """Fits seeded logistic regressions and counts the ones that did not converge."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.not_converged = 0

    def fit(self, X: np.ndarray, y: np.ndarray, C: float) -> LogisticRegression:
        clf = LogisticRegression(C=C, random_state=self.seed, max_iter=MAX_ITER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        self.not_converged += int(np.max(clf.n_iter_) >= MAX_ITER)
        return clf


@_single_blas_thread
def inner_kfold(X: np.ndarray, y: np.ndarray, *, k: int = 10, seed: int = SEED) -> dict[str, Any]:
    """Nested CV accuracy (x100): C chosen per outer fold by inner k-fold CV."""
    fitter = _Fitter(seed)
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    dev, test, chosen = [], [], []
    for tr, te in folds.split(X, y):
        scores = []
        for C in INNER_GRID:
            inner = [
                fitter.fit(X[tr][a], y[tr][a], C).score(X[tr][b], y[tr][b])
                for a, b in folds.split(X[tr], y[tr])
            ]
            scores.append(round(100 * float(np.mean(inner)), 2))
        best = int(np.argmax(scores))
        chosen.append(INNER_GRID[best])
        dev.append(scores[best])
        test.append(round(100 * fitter.fit(X[tr], y[tr], INNER_GRID[best]).score(X[te], y[te]), 2))
    return {
        "devacc": round(float(np.mean(dev)), 2),
        "acc": round(float(np.mean(test)), 2),
        "C": chosen,
        "not_converged": fitter.not_converged,
    }


@_single_blas_thread
def kfold_then_test(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *, k: int = 10, seed: int = SEED
) -> dict[str, Any]:
    """C chosen by k-fold CV on train, then a model on all of train scored on test."""
    fitter = _Fitter(seed)
    folds = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y))
    scores = [
        round(100 * float(np.mean([fitter.fit(X[a], y[a], C).score(X[b], y[b]) for a, b in folds])), 2)
        for C in KFOLD_GRID
    ]
    best = int(np.argmax(scores))
    clf = fitter.fit(X, y, KFOLD_GRID[best])
    pred = clf.predict(X_test)
    return {
        "devacc": scores[best],
        "acc": round(100 * float(np.mean(pred == y_test)), 2),
        "C": KFOLD_GRID[best],
        "pred": pred,
        "not_converged": fitter.not_converged,
    }


@_single_blas_thread
def dev_then_test(
    X: np.ndarray, y: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
    *, seed: int = SEED,
) -> dict[str, Any]:
    """C chosen on the dev split, then the train model with that C scored on test."""
    fitter = _Fitter(seed)
    models = [fitter.fit(X, y, C) for C in INNER_GRID]
    scores = [round(100 * m.score(X_dev, y_dev), 2) for m in models]
    best = int(np.argmax(scores))
    return {
        "devacc": scores[best],
        "acc": round(100 * models[best].score(X_test, y_test), 2),
        "C": INNER_GRID[best],
        "not_converged": fitter.not_converged,
    }
