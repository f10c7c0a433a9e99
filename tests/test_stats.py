"""dlbook.stats against scipy and hand-computed values."""

import math

import numpy as np
import pytest
import torch

scipy_stats = pytest.importorskip("scipy.stats")

from dlbook import stats  # noqa: E402


def test_mean_std_uses_the_sample_standard_deviation():
    s = stats.mean_std([0.81, 0.82, 0.80, 0.83])
    assert s.mean == pytest.approx(0.815)
    assert s.std == pytest.approx(np.std([0.81, 0.82, 0.80, 0.83], ddof=1))
    assert s.std == pytest.approx(math.sqrt(0.0005 / 3), rel=1e-12)  # by hand: squared deviations sum to 0.0005
    assert s.n == 4 and s.stderr == pytest.approx(s.std / 2)
    assert f"{s:.4f}" == "0.8150 ± 0.0129"
    assert str(s) == "0.8150 ± 0.0129 (mean ± sample std over 4 seeds)"


def test_mean_std_of_one_seed_has_no_spread():
    s = stats.mean_std([0.5])
    assert s.mean == 0.5 and math.isnan(s.std)


def test_mean_std_takes_arrays_and_tensors():
    assert stats.mean_std(np.array([1.0, 3.0])).mean == 2.0
    assert stats.mean_std(torch.tensor([1.0, 3.0])).std == pytest.approx(math.sqrt(2))
    assert stats.mean_std([np.float32(1), np.int64(3)]).mean == 2.0


@pytest.mark.parametrize("values, error, match", [
    ([], ValueError, "at least 1"), ([1.0, float("nan")], ValueError, "finite"), ("0.8", TypeError, "sequence"),
    (0.8, TypeError, "sequence"), ([[1.0, 2.0]], ValueError, "one-dimensional"), ([True, False], TypeError, "numbers"),
    (["a"], TypeError, "numbers"),
])
def test_mean_std_bad_input(values, error, match):
    with pytest.raises(error, match=match):
        stats.mean_std(values)


def test_accuracy_and_its_standard_error():
    y = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    y_hat = torch.tensor([0, 1, 2, 0, 0, 2, 1, 1])  # 6 of 8
    est = stats.accuracy(y_hat, y)
    assert est.value == 0.75 and est.n == 8
    assert est.stderr == pytest.approx(math.sqrt(0.75 * 0.25 / 8))
    logits = torch.nn.functional.one_hot(y_hat, 3).float()
    assert stats.accuracy(logits, y) == est
    assert stats.accuracy(y_hat.numpy(), y.numpy()) == est
    assert f"{est:.3f}" == "0.750 ± 0.153"
    # the book's standard error of the CNN chapter's test accuracy
    assert stats.accuracy_stderr(0.9948, 10_000) == pytest.approx(0.000719, abs=1e-6)


@pytest.mark.parametrize("args, match", [((1.2, 10), "acc"), ((0.5, 0), "n"), ((0.5, 2.5), "n"),
                                         ((float("nan"), 10), "acc")])
def test_accuracy_stderr_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        stats.accuracy_stderr(*args)


def test_accuracy_bad_input():
    with pytest.raises(ValueError, match="same non-zero length"):
        stats.accuracy(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="predictions"):
        stats.accuracy([0, 1], torch.zeros(2))


@pytest.mark.parametrize("only_a, only_b, both, neither", [(3, 12, 80, 5), (0, 0, 9, 1), (40, 20, 900, 40),
                                                           (7, 7, 10, 0), (900, 1100, 7000, 1000)])
def test_mcnemar_against_scipy(only_a, only_b, both, neither):
    a = torch.tensor([True] * only_a + [False] * only_b + [True] * both + [False] * neither)
    b = torch.tensor([False] * only_a + [True] * only_b + [True] * both + [False] * neither)
    perm = torch.randperm(len(a), generator=torch.Generator().manual_seed(0))
    result = stats.mcnemar(a[perm], b[perm])
    assert (result.only_a, result.only_b, result.n) == (only_a, only_b, len(a))
    n = only_a + only_b
    expected = scipy_stats.binomtest(only_a, n, 0.5).pvalue if n else 1.0
    assert result.p_value == pytest.approx(expected, rel=1e-9)
    if n:
        chi2 = (abs(only_a - only_b) - 1) ** 2 / n
        assert result.statistic == pytest.approx(chi2)
    assert "McNemar p =" in str(result)


def test_mcnemar_bad_input():
    with pytest.raises(ValueError, match="boolean vector"):
        stats.mcnemar(torch.tensor([1, 0]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="same test set"):
        stats.mcnemar(torch.tensor([True]), torch.tensor([True, False]))


@pytest.mark.parametrize("a, b", [
    ([0.82, 0.83, 0.81], [0.80, 0.80, 0.79]),
    ([1.0, 2.0, 3.0, 4.0, 5.0], [1.1, 1.9, 3.3, 3.8, 5.2]),
    (list(np.random.default_rng(0).normal(0.8, 0.01, 10)), list(np.random.default_rng(1).normal(0.8, 0.01, 10))),
    ([0.5, 0.6], [0.1, 0.3]),
    ([10.0, 20.0, 30.0, 40.0], [-5.0, 25.0, 31.0, 39.0]),
])
def test_paired_against_scipy(a, b):
    result = stats.paired(a, b)
    expected = scipy_stats.ttest_rel(a, b)
    assert result.t == pytest.approx(expected.statistic, rel=1e-10)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-8)
    assert result.n == len(a) and result.wins == int(np.sum(np.array(a) > np.array(b)))
    assert result.mean_diff == pytest.approx(np.mean(np.array(a) - np.array(b)))


def test_t_distribution_tails_against_scipy():
    for df in (1, 2, 4, 9, 30, 200):
        for t in (0.0, 0.1, 1.0, 2.5, 7.0, 40.0):
            assert stats._t_two_sided(t, df) == pytest.approx(2 * scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-300)


def test_paired_with_no_spread():
    same = stats.paired([1.0, 2.0], [1.0, 2.0])
    assert same.t == 0.0 and same.p_value == 1.0
    shifted = stats.paired([2.0, 3.0], [1.0, 2.0])
    assert shifted.t == math.inf and shifted.p_value == 0.0


def test_paired_bad_input():
    with pytest.raises(ValueError, match="the same seeds"):
        stats.paired([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        stats.paired([1.0], [2.0])
    with pytest.raises(ValueError, match="the same points"):
        stats.paired([1.0, 2.0], [1.0, 2.0, 3.0], unit="points")
    with pytest.raises(ValueError, match="unit"):
        stats.paired([1.0, 2.0], [1.0, 3.0], unit="")


def test_paired_names_what_was_paired():
    assert "over 3 seeds" in str(stats.paired([1.0, 2.0, 4.0], [1.0, 1.0, 1.0]))
    by_point = stats.paired([1.0, 2.0, 4.0], [1.0, 1.0, 1.0], unit="validation points")
    assert "over 3 validation points" in str(by_point) and "seeds" not in str(by_point)


def test_margin_in_standard_errors():
    # CiteSeer: 0.7098 with a seed-mean standard error 0.0067 / sqrt(10) against the paper's 0.703 (no error given)
    assert stats.margin(0.7098, 0.0067 / math.sqrt(10), 0.703, 0.0) == pytest.approx(3.21, abs=0.01)
    assert stats.margin(0.5, 0.03, 0.4, 0.04) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="both 0"):
        stats.margin(1.0, 0.0, 0.5, 0.0)
    with pytest.raises(ValueError, match="a_stderr"):
        stats.margin(1.0, -0.1, 0.5, 0.1)


def test_same_class_neighbours_by_hand_and_on_clusters():
    # four points on two rays; class 0 on the first ray, class 1 on the second
    h = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    assert stats.same_class_neighbours(h, torch.tensor([0, 0, 1, 1]), 1) == 1.0
    assert stats.same_class_neighbours(h, torch.tensor([0, 1, 0, 1]), 1) == 0.0
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    clustered = torch.eye(3)[y] + 0.1 * torch.randn(300, 3, generator=g)
    assert stats.same_class_neighbours(clustered, y) == 1.0
    noise = torch.randn(300, 8, generator=g)
    assert abs(stats.same_class_neighbours(noise, y) - 1 / 3) < 0.05
    with pytest.raises(ValueError, match="n_nearest must be below the number of points"):
        stats.same_class_neighbours(h, torch.tensor([0, 0, 1, 1]), 4)
    with pytest.raises(ValueError, match="y must be an int64 tensor of shape"):
        stats.same_class_neighbours(h, torch.tensor([0, 1]))


def test_same_class_neighbours_by_distance():
    """On a line, by distance: the cosine would call every positive point the same."""
    h = torch.tensor([[1.0, 0.0], [1.1, 0.0], [5.0, 0.0], [5.2, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert stats.same_class_neighbours(h, y, 1, metric="euclidean") == 1.0
    assert stats.same_class_neighbours(h, torch.tensor([0, 1, 0, 1]), 1, metric="euclidean") == 0.0
    g = torch.Generator().manual_seed(1)
    points = torch.randn(60, 2, generator=g)
    labels = torch.randint(0, 3, (60,), generator=g)
    dist = torch.cdist(points, points).fill_diagonal_(float("inf"))
    nearest = dist.topk(4, largest=False).indices  # brute force
    expected = (labels[nearest] == labels[:, None]).double().mean().item()
    assert stats.same_class_neighbours(points, labels, 4, metric="euclidean") == pytest.approx(expected)
    with pytest.raises(ValueError, match="metric must be 'cosine' or 'euclidean'"):
        stats.same_class_neighbours(h, y, 1, metric="l1")


# roc_auc ------------------------------------------------------------------------

def _pairwise_auc(pos, neg):
    """The definition: the share of (positive, negative) pairs in the right order, ties half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_the_pairwise_count(seed):
    gen = np.random.default_rng(seed)
    pos = gen.integers(0, 6, size=gen.integers(1, 30)).astype(float)  # many ties
    neg = gen.integers(0, 5, size=gen.integers(1, 30)).astype(float)
    assert stats.roc_auc(pos, neg) == pytest.approx(_pairwise_auc(pos, neg), abs=1e-12)
    cont_pos, cont_neg = gen.normal(1, 1, 40), gen.normal(0, 1, 35)
    assert stats.roc_auc(cont_pos, cont_neg) == pytest.approx(_pairwise_auc(cont_pos, cont_neg), abs=1e-12)


def test_roc_auc_golden():
    assert stats.roc_auc([3, 4], [1, 2]) == 1.0
    assert stats.roc_auc([1, 2], [3, 4]) == 0.0
    assert stats.roc_auc([1, 1], [1, 1, 1]) == 0.5
    assert stats.roc_auc(torch.tensor([2.0, 0.0]), [1.0]) == 0.5


@pytest.mark.parametrize("pos, neg, error, match", [
    ([], [1.0], ValueError, "scores_pos needs at least 1 value"),
    ([1.0], [float("nan")], ValueError, "scores_neg must be finite"),
    ("abc", [1.0], TypeError, "scores_pos must be a sequence"),
])
def test_roc_auc_bad_input(pos, neg, error, match):
    with pytest.raises(error, match=match):
        stats.roc_auc(pos, neg)
