"""The foundations chapter's exercises: right answers pass, typical wrong ones
get a hint that never gives the solution away, and the rules are enforced."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbook import exercises
from dlbook import foundations as fd
from exercise_helpers import assert_fails_with_hint, assert_passes, check, wrong_cases


# The right answers, as a reader would write them ---------------------------------

def _bce(z, y):
    return z.clamp_min(0) - z * y + torch.log1p(torch.exp(-z.abs()))


def _bce_where(z, y):  # another right answer: the two branches written out
    pos = z + torch.log1p(torch.exp(-z))
    neg = torch.log1p(torch.exp(z))
    return torch.where(z >= 0, pos, neg) - z * y


def _tanh_grads(x, y, weights, biases, hidden_derivative=lambda h: 1 - h ** 2, scale=None):
    hs = [x]
    for W, b in zip(weights[:-1], biases[:-1]):
        hs.append(torch.tanh(hs[-1] @ W + b))
    z = hs[-1] @ weights[-1] + biases[-1]
    B = len(x) if scale is None else scale
    delta = (torch.softmax(z, 1) - F.one_hot(y, z.shape[1]).to(z.dtype)) / B
    gw, gb = [], []
    for l in reversed(range(len(weights))):
        gw.insert(0, hs[l].T @ delta)
        gb.insert(0, delta.sum(0))
        if l > 0:
            delta = hidden_derivative(hs[l]) * (delta @ weights[l].T)
    return gw, gb


def _max_models(n, eps, p_bad):
    return math.floor(p_bad / 2 * math.exp(2 * n * eps ** 2))


def _nine_piece_net():
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.copy_(torch.tensor([0.0, -1 / 3, -2 / 3]))
        net[2].weight.copy_(torch.tensor([[3.0, -6.0, 6.0]] * 3))
        net[2].bias.copy_(torch.tensor([0.0, -1 / 3, -2 / 3]))
        net[4].weight.copy_(torch.tensor([[3.0, -6.0, 6.0]]))
        net[4].bias.zero_()
    return net


RIGHT = {
    "foundations.bce_with_logits": _bce,
    "foundations.tanh_backprop": _tanh_grads,
    "foundations.max_models": _max_models,
    "foundations.nine_pieces": _nine_piece_net(),
}


# Typical mistakes, each with a fragment the hint must contain ------------------

def _random_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))


def _tent_in_wide_layers():
    """The sawtooth's two layers, padded to width 3: only 4 pieces."""
    net = _random_net()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net[0].weight[:2, 0] = 1.0
        net[0].bias[1] = -0.5
        net[2].weight[:2, :2] = torch.tensor([[2.0, -4.0], [2.0, -4.0]])
        net[2].bias[1] = -0.5
        net[4].weight[0, :2] = torch.tensor([2.0, -4.0])
    return net


def _naive_bce(z, y):
    p = torch.sigmoid(z)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def _unstable_softplus_bce(z, y):  # right for z >= 0 only: exp(-z) overflows for z = -1000
    return z - z * y + torch.log1p(torch.exp(-z))


WRONG = {
    "foundations.bce_with_logits": [
        (_naive_bce, "log meet 0"), (_unstable_softplus_bce, "overflow"),
        (lambda z, y: _bce(z, y).mean(), "one loss per element"), (lambda z, y: _bce(z, 1 - y), "should be"),
        (lambda z, y: _bce(z, y).tolist(), "tensor"), (3, "function"),
        (lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none"), "the rule"),
        (lambda z, y: -y * F.logsigmoid(z) - (1 - y) * F.logsigmoid(-z), "the rule"),
        (lambda z, y: F.softplus(z) - z * y, "the rule"),
        (lambda z, y: torch.logaddexp(torch.zeros_like(z), z) - z * y, "the rule"),
        (lambda z, y: torch.logsumexp(torch.stack([torch.zeros_like(z), z]), 0) - z * y, "the rule"),
        (lambda z, y: -fd.log_softmax(torch.stack([torch.zeros_like(z), z], -1))[..., 1] * y
         - fd.log_softmax(torch.stack([torch.zeros_like(z), z], -1))[..., 0] * (1 - y), "the rule"),
    ],
    "foundations.tanh_backprop": [
        (lambda x, y, W, b: _tanh_grads(x, y, W, b, scale=1), "times too large"),
        (lambda x, y, W, b: _tanh_grads(x, y, W, b, hidden_derivative=lambda h: h * (1 - h)), "derivative of tanh"),
        (lambda x, y, W, b: _tanh_grads(x, y, W, b, hidden_derivative=lambda h: torch.ones_like(h)),
         "a hidden layer is not"),
        (lambda x, y, W, b: tuple(g[::-1] for g in _tanh_grads(x, y, W, b)), "shape"),
        (lambda x, y, W, b: _tanh_grads(x, y, W, b)[0], "two lists"),
        (lambda x, y, W, b: ([g * 0 for g in _tanh_grads(x, y, W, b)[0]], _tanh_grads(x, y, W, b)[1]),
         "last layer's gradients are wrong"),
        (lambda x, y, W, b: _autograd_answer(x, y, W, b), "the rule"),
        (lambda x, y, W, b: _backward_answer(x, y, W, b), "the rule"),
        (lambda x, y, W, b: (fd.numerical_gradient(lambda: 0.0, W), b), "the rule"),
    ],
    "foundations.max_models": [
        (lambda n, e, d: math.floor(d * math.exp(2 * n * e * e)), "factor by factor"),
        (lambda n, e, d: math.floor(d / 2 * math.exp(n * e * e)), "factor by factor"),
        (lambda n, e, d: math.ceil(d / 2 * math.exp(2 * n * e * e)), "one model too many"),
        (lambda n, e, d: d / 2 * math.exp(2 * n * e * e), "whole number"),
        (lambda n, e, d: float(_max_models(n, e, d)), "is a float"),
        (lambda n, e, d: math.floor(2 / d * math.exp(-2 * n * e * e)), "Set the bound equal"),
        (lambda n, e, d: next(h for h in range(1, 10**6) if fd.bad_sample_bound(n, e, h + 1) > d), "the rule"),
        (202, "function"),
    ],
    "foundations.nine_pieces": [
        (_random_net(), "linear pieces"), (_tent_in_wide_layers(), "4 linear pieces"),
        (fd.sawtooth_net(3), "exactly"), (nn.Sequential(nn.Linear(1, 9), nn.ReLU(), nn.Linear(9, 1)), "exactly"),
        (nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)), "exactly"),
        (nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)), "exactly"),
        ("9 pieces", "answer with the network"),
    ],
}


def _autograd_answer(x, y, weights, biases):
    params = [w.clone().requires_grad_() for w in weights + biases]
    n = len(weights)
    hs = x
    for W, b in zip(params[:n - 1], params[n:-1]):
        hs = torch.tanh(hs @ W + b)
    grads = torch.autograd.grad(F.cross_entropy(hs @ params[n - 1] + params[-1], y), params)
    return list(grads[:n]), list(grads[n:])


def _backward_answer(x, y, weights, biases):
    params = [w.clone().requires_grad_() for w in weights + biases]
    n = len(weights)
    hs = x
    for W, b in zip(params[:n - 1], params[n:-1]):
        hs = torch.tanh(hs @ W + b)
    F.cross_entropy(hs @ params[n - 1] + params[-1], y).backward()
    return [p.grad for p in params[:n]], [p.grad for p in params[n:]]


# What a hint must never print: the explanation's key facts
SECRETS = {
    "foundations.bce_with_logits": ["max(z, 0) - z y + log1p(exp(-|z|))", "log1p", "max(z, 0)"],
    "foundations.tanh_backprop": ["(1 - h^2)", "1 - tanh^2", "(softmax(z) - onehot(y)) / B"],
    "foundations.max_models": ["(p_bad / 2) exp(2 n eps^2)", "202 at eps"],
    "foundations.nine_pieces": ["3 relu(x) - 6 relu(x - 1/3)", "[3, -6, 6]", "zigzag"],
}


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_right_answer_passes(key, capsys):
    assert_passes(key, RIGHT[key], capsys)


def test_another_right_bce_passes(capsys):
    assert_passes("foundations.bce_with_logits", _bce_where, capsys)


@pytest.mark.parametrize("key, answer, hint", wrong_cases(WRONG))
def test_wrong_answer_fails_with_a_hint_and_no_solution(key, answer, hint, capsys):
    assert_fails_with_hint(key, answer, hint, SECRETS[key], capsys)


def test_secrets_are_really_in_the_explanations():
    """The strings the hints must not print are the solutions."""
    for key, secrets in SECRETS.items():
        assert secrets[0] in exercises.get(key).explanation, key


def test_the_rules_are_enforced_and_everything_is_restored(capsys):
    real = (F.binary_cross_entropy_with_logits, torch.logsumexp, torch.Tensor.backward, torch.autograd.grad,
            fd.bad_sample_bound, fd.log_softmax)
    check("foundations.bce_with_logits", lambda z, y: F.softplus(z) - z * y, capsys)
    check("foundations.tanh_backprop", _backward_answer, capsys)
    check("foundations.max_models", lambda n, e, d: fd.bad_sample_bound(n, e, 1), capsys)
    assert (F.binary_cross_entropy_with_logits, torch.logsumexp, torch.Tensor.backward, torch.autograd.grad,
            fd.bad_sample_bound, fd.log_softmax) == real
    assert "backward" in vars(torch.Tensor)  # torch.Tensor defines backward itself: restored, not deleted
    z = torch.tensor(1.0, requires_grad=True)
    (2 * z).backward()
    assert z.grad.item() == 2.0


def test_nine_pieces_reference_has_nine():
    assert fd.count_linear_pieces(_nine_piece_net()) == 9


@pytest.mark.parametrize("key", ["foundations.bce_with_logits", "foundations.tanh_backprop",
                                 "foundations.max_models"])
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out


# numbers of every kind ----------------------------------------------------------------

def test_numpy_integers_are_right_answers(capsys):
    result, out = check("foundations.max_models", lambda n, e, d: np.int64(_max_models(n, e, d)), capsys)
    assert result.passed, out


def test_bool_is_not_a_count(capsys):
    result, out = check("foundations.max_models", lambda n, e, d: _max_models(n, e, d) > 0, capsys)
    assert not result.passed and "whole number" in out
