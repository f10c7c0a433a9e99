"""The optimizers chapter's exercises: right answers pass, typical wrong ones
get a hint that never gives the solution away, and the rules are enforced."""

import math

import numpy as np
import pytest
import torch

from dlbook import exercises
from exercise_helpers import assert_fails_with_hint, assert_passes, check, wrong_cases

# The right answers, as a reader would write them ---------------------------------


def _adamax(theta, g, m, u, t, lr, beta1, beta2):
    m = beta1 * m + (1 - beta1) * g
    u = torch.maximum(beta2 * u, g.abs())
    theta = theta - lr / (1 - beta1**t) * m / u
    return theta, m, u


def _adamax_in_place(theta, g, m, u, t, lr, beta1, beta2):
    m.mul_(beta1).add_((1 - beta1) * g)
    torch.maximum(u.mul_(beta2), g.abs(), out=u)
    theta.sub_(lr / (1 - beta1**t) * m / u)
    return theta, m, u


ORDER = ["rmsprop", "adam", "momentum", "sgd"]  # the saddle race, first to escape first

RIGHT = {
    "optimizers.adamax": _adamax,
    "optimizers.saddle_escape": (76, ["rmsprop", "adam", "momentum", "sgd"]),
    "optimizers.first_step_ratio": lambda b1, b2: (1 - b1) / math.sqrt(1 - b2),
    "optimizers.three_weights": ([0.0, 0.0, 0.0], "saddle point"),
}


# Typical mistakes, each with a fragment the hint must contain ------------------

def _adamax_sum(theta, g, m, u, t, lr, beta1, beta2):
    m = beta1 * m + (1 - beta1) * g
    u = beta2 * u + g.abs()
    return theta - lr / (1 - beta1**t) * m / u, m, u


def _adamax_no_correction(theta, g, m, u, t, lr, beta1, beta2):
    theta, m, u = _adamax(theta, g, m, u, t, lr, beta1, beta2)
    return theta + lr / (1 - beta1**t) * m / u - lr * m / u, m, u


def _adamax_off_by_one(theta, g, m, u, t, lr, beta1, beta2):
    m2 = beta1 * m + (1 - beta1) * g
    u2 = torch.maximum(beta2 * u, g.abs())
    return theta - lr / (1 - beta1 ** (t + 1)) * m2 / u2, m2, u2


def _adamax_m_without_weight(theta, g, m, u, t, lr, beta1, beta2):
    m = beta1 * m + g
    u = torch.maximum(beta2 * u, g.abs())
    return theta - lr / (1 - beta1**t) * m / u, m, u


def _adamax_rms(theta, g, m, u, t, lr, beta1, beta2):
    m = beta1 * m + (1 - beta1) * g
    u = torch.sqrt(beta2 * u**2 + (1 - beta2) * g**2)
    return theta - lr / (1 - beta1**t) * m / u, m, u


def _adamax_by_torch(theta, g, m, u, t, lr, beta1, beta2):
    p = theta.clone().requires_grad_(True)
    opt = torch.optim.Adamax([p], lr=lr, betas=(beta1, beta2))
    p.grad = g
    opt.step()
    return p.detach(), m, u


def _adamax_by_functional(theta, g, m, u, t, lr, beta1, beta2):
    import torch.optim.adamax as module

    module.adamax([theta], [g], [m], [u], [torch.tensor(float(t - 1))], eps=1e-8, beta1=beta1, beta2=beta2,
                  lr=lr, weight_decay=0.0)
    return theta, m, u


WRONG = {
    "optimizers.adamax": [
        (_adamax_sum, "adds |g|"), (_adamax_no_correction, "unbiased"), (_adamax_off_by_one, "power of beta1"),
        (_adamax_m_without_weight, "m is not right"), (_adamax_rms, "u is not right"),
        (_adamax_by_torch, "the rule"), (_adamax_by_functional, "the rule"),
        (lambda *args: _adamax(*args)[0], "triple"), (lambda *args: [v.tolist() for v in _adamax(*args)], "tensors"),
        (3, "function"),
    ],
    "optimizers.saddle_escape": [
        ((75, ORDER), "off by one"), ((77, ORDER), "off by one"), ((38, ORDER), "by what factor"),
        ((76, ["adam", "rmsprop", "momentum", "sgd"]), "not the first"),
        ((76, ["momentum", "rmsprop", "adam", "sgd"]), "not the first"),
        ((76, ["sgd", "momentum", "adam", "rmsprop"]), "not the first"),
        ((76, ["rmsprop", "momentum", "adam", "sgd"]), "order of the others"),
        ((76, ["rmsprop", "sgd", "adam", "momentum"]), "order of the others"),
        ((76.0, ORDER), "whole number"), ((76, "rmsprop"), "list of the four names"),
        ((76, ["rmsprop", "adam", "momentum"]), "each once"), ((76, ["RMSprop!", "adam", "momentum", "sgd"]), "each once"),
        ((76,), "pair"), ("76, rmsprop", "pair"),
    ],
    "optimizers.first_step_ratio": [
        (lambda b1, b2: math.sqrt(1 - b2) / (1 - b1), "upside down"),
        (lambda b1, b2: (1 - b1) / (1 - b2), "square root of v"),
        (lambda b1, b2: 1.0, "your ratio is"), (lambda b1, b2: 1 - b1, "your ratio is"),
        (lambda b1, b2: "1.5", "return a number"), (lambda b1, b2: float("nan"), "return a number"),
        (3.16, "function"),
    ],
    "optimizers.three_weights": [
        (([0.0, 0.0, 0.0], "local minimum"), "Hessian cannot decide"),
        (([0.0, 0.0, 0.0], "local maximum"), "Hessian cannot decide"),
        (([-2.0, 0.0, 2.0], "saddle point"), "not all of your eigenvalues"),
        (([2.0, 2.0, 2.0], "local minimum"), "not all of your eigenvalues"),
        (([0.0, 0.0], "saddle point"), "three eigenvalues"),
        (([0.0, 0.0, 0.0], "saddle"), "must be one of"), ((["a", "b", "c"], "saddle point"), "three numbers"),
        ("saddle point", "pair"),
    ],
}

# What a hint must never print: the explanation's key facts
SECRETS = {
    "optimizers.adamax": ["decaying maximum of their sizes", "infinity norm"],
    "optimizers.saddle_escape": ["t = 76", "RMSProp wins", "in 2 steps", "1.2^t"],
    "optimizers.first_step_ratio": ["lr (1 - beta1) / sqrt(1 - beta2)", "3.16"],
    "optimizers.three_weights": ["so the origin is a saddle point", "all three eigenvalues are 0",
                                 "(1 - s^3)^2"],
}


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_right_answer_passes(key, capsys):
    assert_passes(key, RIGHT[key], capsys)


@pytest.mark.parametrize("key, answer, hint", wrong_cases(WRONG))
def test_wrong_answer_fails_with_a_hint_and_no_solution(key, answer, hint, capsys):
    assert_fails_with_hint(key, answer, hint, SECRETS[key], capsys)


def test_secrets_are_really_in_the_explanations():
    for key, secrets in SECRETS.items():
        assert secrets[0] in exercises.get(key).explanation, key


def test_every_wrong_list_names_an_exercise():
    assert set(WRONG) == set(RIGHT) == set(SECRETS)


def test_adamax_in_place_is_right_too(capsys):
    result, out = check("optimizers.adamax", _adamax_in_place, capsys)
    assert result.passed, out


def test_the_rule_is_enforced_and_everything_is_restored(capsys):
    import torch.optim.adamax as module

    real = (torch.optim.Adamax.step, module.adamax)
    result, out = check("optimizers.adamax", _adamax_by_torch, capsys)
    assert not result.passed and "the rule" in out
    assert (torch.optim.Adamax.step, module.adamax) == real
    p = torch.ones(2, requires_grad=True)
    opt = torch.optim.Adamax([p], lr=0.1)
    p.grad = torch.ones(2)
    opt.step()  # still works after the check
    assert torch.allclose(p, torch.full((2,), 0.9))


def test_reference_adamax_agrees_with_torch():
    """The checker's reference is torch's Adamax (whose eps is negligible here)."""
    from dlbook.exercises.optimizers import _reference_adamax

    torch.manual_seed(0)
    theta = torch.randn(5, dtype=torch.float64)
    p = theta.clone().requires_grad_(True)
    opt = torch.optim.Adamax([p], lr=0.01, betas=(0.9, 0.99), eps=1e-12)
    m, u = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for t in range(1, 6):
        g = torch.randn(5, dtype=torch.float64)
        theta, m, u = _reference_adamax(theta, g, m, u, t, 0.01, 0.9, 0.99)
        p.grad = g
        opt.step()
    assert torch.allclose(p.detach(), theta, atol=1e-10)


def test_the_saddle_race_is_as_the_explanation_says():
    from dlbook.exercises.optimizers import _race

    race = _race()
    assert race == {"sgd": 76, "momentum": 36, "adam": 11, "rmsprop": 2}


def test_the_three_weights_hessian_is_zero():
    H = torch.autograd.functional.hessian(lambda w: (1 - w[0] * w[1] * w[2]) ** 2, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(H, torch.zeros(3, 3, dtype=torch.float64))


@pytest.mark.parametrize("key", ["optimizers.adamax", "optimizers.first_step_ratio"])
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out


# numbers of every kind ----------------------------------------------------------------

@pytest.mark.parametrize("key, answer", [
    ("optimizers.saddle_escape", (np.int64(76), ("rmsprop", "adam", "momentum", "sgd"))),
    ("optimizers.saddle_escape", [76, [" RMSProp ", "Adam", "momentum", "SGD"]]),
    ("optimizers.first_step_ratio", lambda b1, b2: np.float64((1 - b1) / np.sqrt(1 - b2))),
    ("optimizers.first_step_ratio", lambda b1, b2: torch.tensor((1 - b1) / math.sqrt(1 - b2))),
    ("optimizers.three_weights", (torch.zeros(3), "Saddle point")),
    ("optimizers.three_weights", (np.zeros(3), "saddle point")),
])
def test_other_number_types_are_right_answers(key, answer, capsys):
    result, out = check(key, answer, capsys)
    assert result.passed, out
