"""The statistics every chapter computes, in one place.

- :func:`mean_std`: the mean and the sample standard deviation (n - 1 in
  the denominator) of a metric over seeds, as the book reports it.
- :func:`accuracy`, :func:`accuracy_stderr`: an accuracy on a test set with
  the standard error of that one estimate, sqrt(p (1 - p) / n).
- :func:`mcnemar`: two models on the same test set, compared on the
  examples where exactly one of them is right.
- :func:`paired`: two settings run with the same seeds, compared seed by
  seed (the paired t-test).
- :func:`margin`: how many standard errors separate two estimates.
- :func:`same_class_neighbours`: how well vectors (an embedding) keep the
  classes apart: the share of each point's nearest points in its class.
- :func:`roc_auc`: the area under the ROC curve of a score that should be
  higher for one group (anomalies) than for the other.

The book's naming rule for spreads: ``_std`` is the sample standard
deviation over seeds, ``_stderr`` the standard error of one run's estimate.
Each result prints in the form the chapters use (``0.8148 ± 0.0070``) and
can be handed to :func:`dlbook.claim` as evidence.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ._checks import check_float, check_int, describe

__all__ = ["Estimate", "McNemar", "Paired", "Spread", "accuracy", "accuracy_stderr", "margin", "mcnemar",
           "mean_std", "paired", "roc_auc", "same_class_neighbours"]


def _values(values: Any, name: str, minimum: int = 1) -> np.ndarray:
    """A 1-D float64 array of finite numbers, from a list, an array or a tensor."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of numbers (a list, an array or a tensor); "
                        f"got {describe(values)}")
    items = np.asarray(values, dtype=object)
    if items.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one number per seed); got shape {items.shape}")
    for v in items:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must hold numbers; found {describe(v)}")
    array = items.astype(np.float64)
    if len(array) < minimum:
        raise ValueError(f"{name} needs at least {minimum} value{'s' if minimum > 1 else ''}; got {len(array)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite; got {array.tolist()}")
    return array


def _fmt(x: float, spec: str) -> str:
    return format(x, spec or ".4f")


@dataclass(frozen=True)
class Spread:
    """A metric over n seeds: its mean and sample standard deviation (NaN for one seed)."""

    mean: float
    std: float
    n: int

    @property
    def stderr(self) -> float:
        """The standard error of the mean, std / sqrt(n)."""
        return self.std / math.sqrt(self.n)

    def __format__(self, spec: str) -> str:
        return f"{_fmt(self.mean, spec)} ± {_fmt(self.std, spec)}"

    def __str__(self) -> str:
        return f"{self:.4f} (mean ± sample std over {self.n} seed{'s' if self.n != 1 else ''})"


def mean_std(values: Sequence[float]) -> Spread:
    """The mean and the sample standard deviation (n - 1 in the denominator)
    of ``values``, one per seed. With one value the deviation is NaN: one
    seed says nothing about the spread."""
    v = _values(values, "values")
    std = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return Spread(float(v.mean()), std, len(v))


@dataclass(frozen=True)
class Estimate:
    """One estimate with its standard error, e.g. an accuracy on n test examples."""

    value: float
    stderr: float
    n: int

    def __format__(self, spec: str) -> str:
        return f"{_fmt(self.value, spec)} ± {_fmt(self.stderr, spec)}"

    def __str__(self) -> str:
        return f"{self:.4f} (± standard error, {self.n:,} examples)"


def accuracy_stderr(acc: float, n: int) -> float:
    """The standard error sqrt(p (1 - p) / n) of an accuracy p measured on n examples."""
    p = check_float(acc, "acc", 0.0, 1.0)
    n = check_int(n, "n", 1)
    return math.sqrt(p * (1 - p) / n)


def _labels(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or an array; got {type(x).__name__}")
    return x.detach().cpu()


def accuracy(predictions: Any, labels: Any) -> Estimate:
    """The fraction of ``predictions`` equal to ``labels``, with its standard error.

    ``predictions`` are class indices of shape (N,) or scores of shape (N, K)
    (their argmax is taken); ``labels`` are class indices of shape (N,).
    """
    y_hat, y = _labels(predictions, "predictions"), _labels(labels, "labels")
    if y_hat.dim() == 2:
        y_hat = y_hat.argmax(1)
    if y.dim() != 1 or y_hat.dim() != 1:
        raise ValueError(f"predictions must have shape (N,) or (N, K) and labels (N,); got "
                         f"{tuple(predictions.shape)} and {tuple(labels.shape)}")
    if len(y_hat) != len(y) or len(y) == 0:
        raise ValueError(f"predictions and labels must have the same non-zero length; got {len(y_hat)} and {len(y)}")
    correct = (y_hat == y)
    p = correct.double().mean().item()
    return Estimate(p, accuracy_stderr(p, len(y)), len(y))


def _correct(x: Any, name: str) -> torch.Tensor:
    t = _labels(x, name)
    if t.dim() != 1 or t.dtype != torch.bool:
        raise ValueError(f"{name} must be a boolean vector (True where the model is right), shape (N,); "
                         f"got {t.dtype} of shape {tuple(t.shape)}")
    return t


def _binom_two_sided(k: int, n: int) -> float:
    """Two-sided p-value of k successes in n fair coin flips (doubling the smaller tail)."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
                 for i in range(k + 1)]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class McNemar:
    """Two models on one test set: ``only_a`` examples only A gets right,
    ``only_b`` only B; the p-value of "they are equally good" (exact
    binomial test on the ``only_a + only_b`` disagreements)."""

    only_a: int
    only_b: int
    n: int
    p_value: float
    statistic: float  # the chi-square statistic with continuity correction, (|b - c| - 1)^2 / (b + c)

    def __str__(self) -> str:
        return (f"only A right on {self.only_a:,}, only B on {self.only_b:,} of {self.n:,} examples; "
                f"McNemar p = {self.p_value:.3g}")


def mcnemar(correct_a: Any, correct_b: Any) -> McNemar:
    """McNemar's test for two models on the same test set.

    ``correct_a`` and ``correct_b`` are boolean vectors, True where each
    model is right on each test example. Only the examples where the two
    disagree carry information; the p-value is the exact two-sided binomial
    test of those disagreements against a fair coin.
    """
    a, b = _correct(correct_a, "correct_a"), _correct(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must be of the same test set; got lengths {len(a)} and {len(b)}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    disagree = only_a + only_b
    stat = (abs(only_a - only_b) - 1) ** 2 / disagree if disagree else 0.0
    return McNemar(only_a, only_b, len(a), _binom_two_sided(only_a, disagree), float(stat))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (a continued fraction, Numerical Recipes 6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2, 0.5, df / (df + t * t))


@dataclass(frozen=True)
class Paired:
    """Setting A against setting B over the same seeds (or the same examples:
    ``unit``): the mean and sample standard deviation of the differences
    a - b, their standard error, the paired t statistic and its two-sided
    p-value, and how many pairs A won."""

    mean_diff: float
    std_diff: float
    n: int
    t: float
    p_value: float
    wins: int
    unit: str = "seeds"

    @property
    def stderr(self) -> float:
        return self.std_diff / math.sqrt(self.n)

    def __str__(self) -> str:
        margin = "" if not math.isfinite(self.t) else f", {self.t:+.1f} standard errors"
        return (f"A - B = {self.mean_diff:+.4g} ± {self.std_diff:.2g} (mean ± sample std of the "
                f"differences over {self.n} {self.unit}{margin}; A ahead on {self.wins} of {self.n}; "
                f"paired t-test p = {self.p_value:.3g})")


def paired(a: Sequence[float], b: Sequence[float], unit: str = "seeds") -> Paired:
    """Compare two settings run with the same seeds (``a[i]`` and ``b[i]``
    share seed i): the paired t-test on the differences ``a - b``. The pairs
    may as well be examples scored by both (``a[i]``, ``b[i]`` the two models'
    errors on example i); ``unit`` names them in the printed result."""
    x, y = _values(a, "a", minimum=2), _values(b, "b", minimum=2)
    if not isinstance(unit, str) or not unit.strip():
        raise ValueError(f"unit must be a non-empty string such as 'seeds' or 'points'; got {unit!r}")
    if len(x) != len(y):
        raise ValueError(f"a and b must hold one value per {unit.rstrip('s') or unit}, the same {unit}; "
                         f"got {len(x)} and {len(y)} values")
    d = x - y
    mean, std, n = float(d.mean()), float(d.std(ddof=1)), len(d)
    if std == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        t = mean / (std / math.sqrt(n))
    return Paired(mean, std, n, float(t), _t_two_sided(t, n - 1), int((d > 0).sum()), unit)


def margin(a: float, a_stderr: float, b: float, b_stderr: float) -> float:
    """How many standard errors separate two independent estimates:
    (a - b) / sqrt(a_stderr^2 + b_stderr^2)."""
    a, b = check_float(a, "a"), check_float(b, "b")
    ea, eb = check_float(a_stderr, "a_stderr", 0.0), check_float(b_stderr, "b_stderr", 0.0)
    scale = math.hypot(ea, eb)
    if scale == 0.0:
        raise ValueError("a_stderr and b_stderr are both 0: a margin in standard errors is undefined")
    return (a - b) / scale


def same_class_neighbours(h: torch.Tensor, y: torch.Tensor, n_nearest: int = 10,
                          metric: str = "cosine") -> float:
    """The share of each point's ``n_nearest`` nearest other points (by
    cosine similarity, or with ``metric="euclidean"`` by distance, which a
    two-dimensional embedding needs: there the cosine sees only the angle)
    that have its class, averaged over the points: 1
    when every neighbourhood is pure, about the chance of two random
    points sharing a class when the vectors carry no class information.

    Builds the N x N matrix of similarities (a sparse ``h`` row by row
    skips its zeros): for up to some ten thousand points.

    Shapes:
        h: (N, C), y: (N,) -> a float
    """
    if not isinstance(h, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"h and y must be torch.Tensors; got {describe(h)} and {describe(y)}")
    if h.dim() != 2 or not h.is_floating_point() or h.is_sparse:
        raise ValueError(f"h must be a dense floating tensor of shape (N, C); got {h.dtype} of shape "
                         f"{tuple(h.shape)}")
    if y.shape != (h.shape[0],) or y.dtype != torch.int64:
        raise ValueError(f"y must be an int64 tensor of shape ({h.shape[0]},), one class per row of h; got "
                         f"{y.dtype} of shape {tuple(y.shape)}")
    n_nearest = check_int(n_nearest, "n_nearest", 1)
    if n_nearest >= h.shape[0]:
        raise ValueError(f"n_nearest must be below the number of points, {h.shape[0]}; got {n_nearest}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean'; got {metric!r}")
    if metric == "euclidean":
        sim = -torch.cdist(h.detach(), h.detach())  # (N, N): the nearest has the largest -distance
        sim.fill_diagonal_(-math.inf)  # a point is not its own neighbour
    else:
        unit = torch.nn.functional.normalize(h.detach(), dim=1)  # (N, C)
        sim = torch.sparse.mm(unit.to_sparse(), unit.T)  # (N, N); the sparse product skips zeros
        sim.fill_diagonal_(-2.0)  # below any cosine: a point is not its own neighbour
    nearest = sim.topk(n_nearest, dim=1).indices  # (N, n_nearest)
    y = y.to(h.device)
    return (y[nearest] == y[:, None]).double().mean().item()


def roc_auc(scores_pos: Any, scores_neg: Any) -> float:
    """The area under the ROC curve of a score meant to be higher for the
    positives (anomalies) than for the negatives: the probability that a
    random positive scores above a random negative, ties counted half.

    Computed in the Mann-Whitney form from the ranks of all the scores
    (tied scores share their average rank): U = R_pos - n_pos (n_pos + 1) / 2,
    AUC = U / (n_pos n_neg). 0.5 is chance, 1 a perfect separation, 0 a
    perfectly reversed one.

    Shapes:
        scores_pos: (n_pos,), scores_neg: (n_neg,) -> a float
    """
    pos = _values(scores_pos, "scores_pos")
    neg = _values(scores_neg, "scores_neg")
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    rank_sums = np.bincount(inverse, weights=ranks)
    ranks = (rank_sums / counts)[inverse]  # tied scores share their average rank
    n_pos, n_neg = len(pos), len(neg)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))
