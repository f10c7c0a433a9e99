"""The optimizers chapter's exercises: right answers pass, typical wrong ones
get a hint that never gives the solution away, and the rules are enforced,
however the answer reaches what they forbid."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from torch.optim import Adamax as PreBoundAdamax  # names bound before a check: the reviews' bypass
from torch.optim.adamax import _single_tensor_adamax as pre_bound_single_tensor_adamax
from torch.optim.adamax import adamax as pre_bound_adamax

from dlbook import exercises, optim
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


RATIOS = (1.0, 1 - 0.999**10)  # u_10 / |g| for Adamax, and for an average of |g| started at 0
MU, LAMBDA = 0.9, 100.0
HEAVY_BALL = 2 * (1 + MU) / LAMBDA  # 0.038
NESTEROV = 2 * (1 + MU) / ((1 + 2 * MU) * LAMBDA)  # 0.0135714...
S5 = 1 - (1 - 2.5) ** 5  # 1 - (-1.5)^5 = 8.59375


def _uncorrected(t, b1, b2):
    return (1 - b1**t) / math.sqrt(1 - b2**t)


PEAK = (12, _uncorrected(12, 0.9, 0.999))  # 6.56852...: where the uncorrected step is largest

RIGHT = {
    "optimizers.adamax": (_adamax, RATIOS),
    "optimizers.momentum_limit": (HEAVY_BALL, NESTEROV),
    "optimizers.bias_correction": (_uncorrected, PEAK),
    "optimizers.lookahead_rescue": (1 / S5, 2 / S5, False),
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


def _adamax_by_torch(theta, g, m, u, t, lr, beta1, beta2, make=torch.optim.Adamax, **settings):
    """torch's Adamax, its state set to (m, u, t - 1) so that one step is the answer's."""
    p = theta.clone().requires_grad_(True)
    opt = make([p], lr=lr, betas=(beta1, beta2), eps=0.0, **settings)
    opt.state[p] = {"step": torch.tensor(float(t - 1)), "exp_avg": m.clone(), "exp_inf": u.clone()}
    p.grad = g.clone()
    opt.step()
    state = opt.state[p]
    return p.detach(), state["exp_avg"], state["exp_inf"]


def _adamax_by_functional(theta, g, m, u, t, lr, beta1, beta2, function=pre_bound_adamax, **settings):
    theta, m, u = theta.clone(), m.clone(), u.clone()
    function([theta], [g], [m], [u], [torch.tensor(float(t - 1))], eps=0.0, beta1=beta1, beta2=beta2,
             lr=lr, weight_decay=0.0, **settings)
    return theta, m, u


def _adamax_by_foreach_ops(theta, g, m, u, t, lr, beta1, beta2):
    (m,) = torch._foreach_add(torch._foreach_mul([m], beta1), torch._foreach_mul([g], 1 - beta1))
    (u,) = torch._foreach_maximum(torch._foreach_mul([u], beta2), torch._foreach_abs([g]))
    return theta - lr / (1 - beta1**t) * m / u, m, u


WRONG = {
    "optimizers.adamax": [
        ((_adamax_sum, RATIOS), "adds |g|"), ((_adamax_no_correction, RATIOS), "unbiased"),
        ((_adamax_off_by_one, RATIOS), "power of beta1"), ((_adamax_m_without_weight, RATIOS), "m is not right"),
        ((_adamax_rms, RATIOS), "u is not right"),
        ((lambda *args: _adamax(*args)[0], RATIOS), "triple"),
        ((lambda *args: [v.tolist() for v in _adamax(*args)], RATIOS), "tensors"),
        ((_adamax, (1 - 0.999, RATIOS[1])), "Follow u by hand"),
        ((_adamax, (1 - 0.999**10, RATIOS[1])), "Follow u by hand"),
        ((_adamax, (1.0, 10 * (1 - 0.999))), "Sum the series"),
        ((_adamax, (1.0, 1 - 0.999)), "after one step"), ((_adamax, (1.0, 1.0)), "a_1, a_2 and a_3"),
        ((_adamax, (1.0,)), "two numbers"), ((_adamax, ("1", "0.01")), "two numbers"),
        (_adamax, "the pair"), ((3, RATIOS), "the pair"), (3, "the pair"),
    ],
    "optimizers.momentum_limit": [
        ((0.02, NESTEROV), "gradient descent's limit"), ((HEAVY_BALL, 0.02), "gradient descent's limit"),
        ((HEAVY_BALL, HEAVY_BALL), "not the same"), ((0.038, 0.01357), "within 0.1%"),
        ((2 * (1 + MU), NESTEROV), "curvature"), ((2 * (1 - MU) / LAMBDA, NESTEROV), "unit circle"),
        ((HEAVY_BALL, 2 / ((1 + MU) * LAMBDA)), "unit circle"),
        ((HEAVY_BALL, -1.0), "positive number"), ((HEAVY_BALL, "0.0136"), "positive number"),
        ((HEAVY_BALL,), "pair"), (0.038, "pair"),
    ],
    "optimizers.bias_correction": [
        ((lambda t, b1, b2: 1 / _uncorrected(t, b1, b2), PEAK), "upside down"),
        ((lambda t, b1, b2: (1 - b1**t) / (1 - b2**t), PEAK), "square root of v"),
        ((lambda t, b1, b2: (1 - b1) / math.sqrt(1 - b2), PEAK), "the one of the first step"),
        ((lambda t, b1, b2: 1.0, PEAK), "your ratio is"), ((lambda t, b1, b2: 1 - b1**t, PEAK), "your ratio is"),
        ((lambda t, b1, b2: "1.5", PEAK), "return a number"), ((lambda t, b1, b2: float("nan"), PEAK), "a number"),
        ((_uncorrected, (1, _uncorrected(1, 0.9, 0.999))), "the first step is not"),
        ((_uncorrected, (11, 6.5)), "find the step where it stops rising"),
        ((_uncorrected, (12, 6.568)), "6 significant"), ((_uncorrected, (12.5, 6.0)), "whole number"),
        ((_uncorrected, (True, 6.0)), "whole number"), ((_uncorrected, 6.0), "two numbers"),
        (_uncorrected, "the pair"), ((3.16, PEAK), "the pair"), (PEAK, "the pair"),
    ],
    "optimizers.lookahead_rescue": [
        ((2 / S5, 1 / S5, False), "swapped"), ((0.116364, 0.232727, False), "within 0.1%"),
        ((1 / (1 + 1.5**3), 2 / (1 + 1.5**3), False), "count the fast steps"),
        ((1 / (1 + 0.25**5), 2 / (1 + 0.25**5), False), "multiply theta by"),  # 1 - eta lambda / 2
        ((1 / (1 + 4**5), 2 / (1 + 4**5), False), "multiply theta by"),  # 1 - 2 eta lambda
        ((1 / (1 - 1.5**4), 2 / (1 - 1.5**4), False), "positive number"),  # k = 4: no alpha works
        ((1 / S5, 1 / S5, False), "alpha_max is not"), ((0.5 / S5, 2 / S5, False), "alpha_monotone is not"),
        ((0.5, 1.0, False), "follow one cycle"), ((1 / S5, 2 / S5, True), "which side of phi"),
        ((1 / S5, 2 / S5, "no"), "True or False"), ((1 / S5, 2 / S5), "three values"),
        ((0, 2 / S5, False), "positive number"), ("0.1, 0.2, False", "three values"),
    ],
}

# What a hint must never print: the explanation's key facts
SECRETS = {
    "optimizers.adamax": ["decaying maximum of their sizes", "infinity norm", "0.00996", "1 - beta2^t"],
    "optimizers.momentum_limit": ["2 (1 + mu)", "0.038", "0.0135714", "1 + 2 mu", "3.8", "suprema, not"],
    "optimizers.bias_correction": ["v's deficit wins", "6.56852", "t = 12", "3925"],
    "optimizers.lookahead_rescue": ["(1 - alpha (1 - r^k))", "0.116364", "0.232727", "8.59375", "-7.59375", "(False)"],
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
    result, out = check("optimizers.adamax", (_adamax_in_place, RATIOS), capsys)
    assert result.passed, out


# Exercise 1: torch's Adamax is refused, however the answer reaches it ---------------------

ADAMAX_BYPASSES = {
    "torch.optim.Adamax": _adamax_by_torch,
    "torch.optim.Adamax bound before the check": partial(_adamax_by_torch, make=PreBoundAdamax),
    "torch.optim.Adamax(foreach=True)": partial(_adamax_by_torch, foreach=True),
    "a subclass of torch.optim.Adamax": partial(_adamax_by_torch, make=type("MyAdamax", (torch.optim.Adamax,), {})),
    "torch.optim.adamax.adamax bound before the check": _adamax_by_functional,
    "torch.optim.adamax.adamax(foreach=True)": partial(_adamax_by_functional, foreach=True),
    "_single_tensor_adamax bound before the check": partial(
        _adamax_by_functional, function=lambda *args, **kw: pre_bound_single_tensor_adamax(
            *args, **kw, maximize=False, differentiable=False, capturable=False, has_complex=False)),
    "torch._foreach_* operators": _adamax_by_foreach_ops,
}


@pytest.mark.parametrize("name", sorted(ADAMAX_BYPASSES))
def test_adamax_bypasses_refused(name, capsys):
    result, out = check("optimizers.adamax", (ADAMAX_BYPASSES[name], RATIOS), capsys)
    assert not result.passed, f"{name} got through"
    assert "the rule is: write the update with tensor operations" in out, out
    assert "Your answer" in out, out


@pytest.mark.parametrize("name", sorted(ADAMAX_BYPASSES))
def test_adamax_bypasses_compute_the_right_step_without_the_rule(name):
    """Each bypass would pass on its numbers alone: only the rule stops it."""
    gen = torch.Generator().manual_seed(1)
    theta, g = torch.randn(5, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)
    m, u = 0.1 * torch.randn(5, generator=gen, dtype=torch.float64), torch.rand(5, generator=gen, dtype=torch.float64)
    got = ADAMAX_BYPASSES[name](theta, g, m, u, 3, 0.01, 0.9, 0.99)
    for a, b in zip(got, _adamax(theta, g, m, u, 3, 0.01, 0.9, 0.99)):
        assert torch.allclose(a, b, atol=1e-12), name


def test_the_rule_is_enforced_and_everything_is_restored(capsys):
    import torch.optim.adamax as module

    real = (torch.optim.Adamax.step, module.adamax, module._single_tensor_adamax)
    codes = [f.__code__ for f in real]
    result, out = check("optimizers.adamax", (_adamax_by_torch, RATIOS), capsys)
    assert not result.passed and "the rule" in out
    assert (torch.optim.Adamax.step, module.adamax, module._single_tensor_adamax) == real
    assert [f.__code__ for f in real] == codes
    p = torch.ones(2, requires_grad=True)
    opt = torch.optim.Adamax([p], lr=0.1)
    p.grad = torch.ones(2)
    opt.step()  # still works after the check
    assert torch.allclose(p, torch.full((2,), 0.9))
    assert torch._foreach_add([torch.ones(1)], 1.0)[0].item() == 2.0


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


def test_the_ratios_are_what_the_updates_give():
    g = torch.tensor([0.3, -2.0], dtype=torch.float64)
    u = average = torch.zeros(2, dtype=torch.float64)
    for _ in range(10):
        u = torch.maximum(0.999 * u, g.abs())
        average = 0.999 * average + 0.001 * g.abs()
    assert torch.allclose(u / g.abs(), torch.full((2,), RATIOS[0], dtype=torch.float64))
    assert torch.allclose(average / g.abs(), torch.full((2,), RATIOS[1], dtype=torch.float64))


# Exercise 3: the peak is where Adam's own steps, uncorrected, are largest ---------------------

def test_uncorrected_adam_steps_peak_where_the_answer_says():
    """Adam with the corrections undone, on a constant gradient: its step over the corrected step."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=1.0, eps=0.0)
    ratios = []
    for t in range(1, 41):
        before = p.detach().clone()
        p.grad = torch.full((1,), 0.3, dtype=torch.float64)
        opt.step()
        state = opt.state[p]
        uncorrected = state["exp_avg"] / state["exp_avg_sq"].sqrt()
        corrected = (before - p.detach()).abs()
        assert corrected.item() == pytest.approx(1.0)  # the corrected step is lr at every step
        ratios.append((uncorrected / corrected).item())
    assert max(range(40), key=ratios.__getitem__) + 1 == PEAK[0]
    assert ratios[PEAK[0] - 1] == pytest.approx(PEAK[1], rel=1e-9) and ratios[0] == pytest.approx(0.1 / 0.001**0.5)


# Exercises 2 and 4: the predicted limits are where the package's optimizers change behaviour ---

def _ravine(x, y):
    return (x**2 + LAMBDA * y**2) / 2


@pytest.mark.parametrize("settings, limit", [({"momentum": MU}, HEAVY_BALL),
                                             ({"momentum": MU, "nesterov": True}, NESTEROV)])
def test_momentum_limits_are_where_the_ravine_starts_to_diverge(settings, limit):
    ends = {}
    for factor in (0.995, 1.005):
        path = optim.trajectory(_ravine, partial(optim.SGD, lr=limit * factor, **settings), 3000, start=(1.0, 1.0))
        ends[factor] = path[-1, 1].abs().item()
    assert ends[0.995] < 1e-3 and ends[1.005] > 1e3, ends
    gd = optim.trajectory(_ravine, partial(optim.SGD, lr=0.021), 200, start=(1.0, 1.0))
    assert gd[-1, 1].abs() > 1e3  # gradient descent's limit, 2 / 100, as the prompt says


def _slow_weights(alpha, k, steps=400):
    """Lookahead(SGD) on 1.25 theta^2 (lambda = 2.5, eta = 1): the slow weights after every cycle."""
    surface = lambda x, y: 1.25 * (x**2 + y**2)  # noqa: E731
    path = optim.trajectory(surface, lambda p: optim.Lookahead(optim.SGD(p, lr=1.0), k=k, alpha=alpha), steps,
                            start=(1.0, 1.0))
    return path[::k, 0]


def test_lookahead_limits_are_where_the_slow_weights_change():
    monotone, largest = 1 / S5, 2 / S5
    below = _slow_weights(monotone * 0.99, 5)
    assert (below > 0).all() and below[-1] < 1e-100  # converges without a change of sign
    between = _slow_weights(monotone * 1.01, 5)
    assert (between[1::2] < 0).all() and between[-1].abs() < 1e-100  # converges, alternating
    near = _slow_weights(largest * 0.99, 5)
    assert near[-1].abs() < near[1].abs()
    beyond = _slow_weights(largest * 1.01, 5)
    assert beyond[-1].abs() > 1  # diverges
    for alpha in (0.01, 0.3, 1.0):
        assert _slow_weights(alpha, 4, 80)[-1].abs() > 1  # with k = 4 nothing helps
    sgd = optim.trajectory(lambda x, y: 1.25 * (x**2 + y**2), partial(optim.SGD, lr=1.0), 20, start=(1.0, 1.0))
    assert sgd[-1, 0].abs() > 1000  # SGD alone diverges, as the prompt says


@pytest.mark.parametrize("key", ["optimizers.adamax", "optimizers.bias_correction"])
def test_student_stub_of_a_function_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, (stub, None), capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out


@pytest.mark.parametrize("key", ["optimizers.momentum_limit", "optimizers.lookahead_rescue"])
def test_student_stub_of_a_value_is_not_yet(key, capsys):
    result, out = check(key, None, capsys)
    assert not result.passed and "not yet" in out


# numbers of every kind ----------------------------------------------------------------

@pytest.mark.parametrize("key, answer", [
    ("optimizers.momentum_limit", (np.float64(HEAVY_BALL), torch.tensor(NESTEROV, dtype=torch.float64))),
    ("optimizers.momentum_limit", [2 * 1.9 / 100, 3.8 / 280]),
    ("optimizers.lookahead_rescue", (np.float64(1 / S5), np.float32(2 / S5).item(), np.bool_(False))),
    ("optimizers.adamax", (_adamax, [np.float64(1), torch.tensor(RATIOS[1])])),
    ("optimizers.bias_correction", (lambda t, b1, b2: np.float64(_uncorrected(t, b1, b2)),
                                    (np.int64(12), np.float64(PEAK[1])))),
    ("optimizers.bias_correction", (lambda t, b1, b2: torch.tensor(_uncorrected(t, b1, b2)),
                                    (torch.tensor(12), torch.tensor(PEAK[1], dtype=torch.float64)))),
])
def test_other_number_types_are_right_answers(key, answer, capsys):
    result, out = check(key, answer, capsys)
    assert result.passed, out
