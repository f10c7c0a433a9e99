"""Exercises of the optimizers chapter."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from . import Wrong, as_number, exercise, forbid_functions, forbid_ops, near


# 1. Adamax from its equation ------------------------------------------------------------

def _reference_adamax(theta, g, m, u, t, lr, beta1, beta2):
    m = beta1 * m + (1 - beta1) * g
    u = torch.maximum(beta2 * u, g.abs())
    return theta - lr / (1 - beta1**t) * m / u, m, u


ADAMAX_RULE = "write the update with tensor operations, not with torch.optim.Adamax or its functions"
ADAMAX_BETA2, ADAMAX_T = 0.999, 10  # the thinking question's setting


def _forbid_adamax():
    """torch.optim.Adamax, its functional forms (by their code, so names bound before the
    check refuse too) and the foreach operators its multi-tensor form runs on."""
    import torch.optim.adamax as adamax_module

    stack = contextlib.ExitStack()
    stack.enter_context(forbid_ops(ADAMAX_RULE, "_foreach", "adamax"))
    stack.enter_context(forbid_functions(
        ADAMAX_RULE, (torch.optim.Adamax, "step"), (adamax_module, "adamax"),
        (adamax_module, "_single_tensor_adamax"), (adamax_module, "_multi_tensor_adamax")))
    return stack


def _check_adamax_step(step) -> None:
    gen = torch.Generator().manual_seed(0)
    for lr, beta1, beta2 in ((2e-3, 0.9, 0.999), (0.1, 0.5, 0.9), (0.01, 0.0, 0.99)):
        theta = torch.randn(6, generator=gen, dtype=torch.float64)
        m, u = torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
        ref = (theta.clone(), m.clone(), u.clone())
        for t in range(1, 8):
            g = torch.randn(6, generator=gen, dtype=torch.float64) * (3.0 if t == 4 else 1.0) + 0.1
            with _forbid_adamax():
                got = step(theta.clone(), g.clone(), m.clone(), u.clone(), t, lr, beta1, beta2)
            ref = _reference_adamax(ref[0], g, ref[1], ref[2], t, lr, beta1, beta2)
            where = f"at step t={t} with lr={lr}, beta1={beta1}, beta2={beta2}"
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise Wrong(f"adamax_step returns the triple (theta, m, u); {where} it returned "
                            f"{type(got).__name__}.")
            if not all(isinstance(v, torch.Tensor) and v.shape == theta.shape for v in got):
                raise Wrong(f"{where}: theta, m and u must be tensors of the shape of theta.")
            new_theta, new_m, new_u = (v.detach().double() for v in got)
            if not torch.allclose(new_m, ref[1], rtol=1e-6, atol=1e-9):
                raise Wrong(f"{where} m is not right: it is a running average of g weighted by beta1.")
            if not torch.allclose(new_u, ref[2], rtol=1e-6, atol=1e-9):
                if torch.allclose(new_u, beta2 * u + g.abs(), rtol=1e-6):
                    raise Wrong(f"{where} u adds |g|; the update takes the larger of the two.")
                raise Wrong(f"{where} u is not right: compare beta2 u with |g| element by element.")
            if not torch.allclose(new_theta, ref[0], rtol=1e-6, atol=1e-9):
                plain = theta - lr * ref[1] / ref[2]
                if torch.allclose(new_theta, plain, rtol=1e-6, atol=1e-9) and beta1 > 0:
                    raise Wrong(f"{where} theta moved as if m were unbiased: m starts at 0.")
                raise Wrong(f"{where} m and u are right but theta is not: check the step size "
                            f"and the power of beta1 (t counts from 1).")
            theta, m, u = ref


@exercise(
    "optimizers.adamax",
    "Write adamax_step(theta, g, m, u, t, lr, beta1, beta2) -> (theta, m, u): one step of Adamax, "
    "m = beta1 m + (1 - beta1) g, u = max(beta2 u, |g|), theta = theta - lr / (1 - beta1^t) * m / u, "
    "with t counted from 1, written with tensor operations, not with torch.optim.Adamax or its functions. "
    "Then, for a gradient that is the same g != 0 at every step, with beta2 = 0.999: u_10 / |g|, and the "
    "same ratio for an exponential moving average of |g| started at 0, a = beta2 a + (1 - beta2) |g|. "
    "Answer the pair (adamax_step, (u_ratio, average_ratio)).",
    "Adamax replaces Adam's root mean square of past gradients by a decaying maximum of their sizes "
    "(the infinity norm): u needs no bias correction, because max(beta2 u, |g|) with u = 0 at the start "
    "is |g_1| after the first step, not a shrunken value: u_t / |g| = 1 for a constant gradient. An "
    "average started at 0 is (1 - beta2^t) |g|, only 0.00996 |g| after 10 steps with beta2 = 0.999: that "
    "is the bias Adam corrects. Only m is corrected, by 1 - beta1^t.",
)
def _adamax(answer) -> None:
    example = "(adamax_step, (0.5, 0.5))"
    if callable(answer):
        raise Wrong(f"answer with the pair (adamax_step, (u_ratio, average_ratio)), such as {example}.")
    if not isinstance(answer, (tuple, list)) or len(answer) != 2 or not callable(answer[0]):
        raise Wrong(f"answer with the pair (adamax_step, (u_ratio, average_ratio)): a function and two "
                    f"numbers, such as {example}.")
    step, ratios = answer
    _check_adamax_step(step)
    if not isinstance(ratios, (tuple, list)) or len(ratios) != 2 or None in (as_number(r) for r in ratios):
        raise Wrong(f"adamax_step is right. The second item is two numbers (u_ratio, average_ratio); you "
                    f"gave {ratios!r}.")
    u_ratio, average_ratio = (as_number(r) for r in ratios)
    if not near(u_ratio, 1.0, 1e-6):
        raise Wrong(f"adamax_step is right, but u_10 / |g| is not {u_ratio:.4g}. Follow u by hand from u = 0: "
                    f"what is max(beta2 u, |g|) after the first step, and after the second?")
    right = 1 - ADAMAX_BETA2 ** ADAMAX_T
    if near(average_ratio, right, 1e-3):
        return
    if near(average_ratio, ADAMAX_T * (1 - ADAMAX_BETA2), 1e-4):
        raise Wrong("u's ratio is right. The average's is close but not it: every step multiplies what the "
                    "average held by beta2 again. Sum the series.")
    if near(average_ratio, 1 - ADAMAX_BETA2, 1e-4):
        raise Wrong(f"u's ratio is right. That is the average after one step; the question asks after "
                    f"{ADAMAX_T}.")
    raise Wrong(f"u's ratio is right; the average's is not {average_ratio:.4g}. Write a_1, a_2 and a_3 for a "
                f"constant |g|, starting from a_0 = 0, and see the pattern.")


# 2. how large a step momentum survives -------------------------------------------------------

RAVINE_CURVATURE, MOMENTUM = 100.0, 0.9  # the steep direction of (x^2 + 100 y^2) / 2


def _momentum_limits(curvature: float = RAVINE_CURVATURE, mu: float = MOMENTUM) -> tuple[float, float]:
    """The largest stable learning rates of heavy-ball and Nesterov momentum on a
    quadratic of the given curvature: 2 (1 + mu) / lambda and 2 (1 + mu) / ((1 + 2 mu) lambda)."""
    return 2 * (1 + mu) / curvature, 2 * (1 + mu) / ((1 + 2 * mu) * curvature)


@exercise(
    "optimizers.momentum_limit",
    "On the ravine L(x, y) = (x^2 + 100 y^2) / 2, plain gradient descent diverges for learning rates "
    "above 2/100. Answer the pair (eta_momentum, eta_nesterov): the largest learning rate (a supremum: "
    "the rate itself is the first that fails) below which heavy-ball momentum with mu = 0.9 "
    "(optim.SGD(momentum=0.9), as torch.optim.SGD) converges from every start, and the same for Nesterov "
    "momentum with mu = 0.9 (nesterov=True), each exact to 6 significant digits.",
    "Along the steep direction the gradient is lambda y with lambda = 100. Heavy ball: "
    "b_t = mu b_(t-1) + lambda y_(t-1), y_t = y_(t-1) - eta b_t, a linear map of (y, eta b) whose "
    "eigenvalues solve z^2 - (1 + mu - eta lambda) z + mu = 0. One of them reaches -1 at eta lambda = "
    "2 (1 + mu): eta < 2 * 1.9 / 100 = 0.038, nearly twice gradient descent's limit: when the steep "
    "coordinate overshoots, its gradients alternate in sign and partly cancel in b. Nesterov steps with "
    "g + mu b, which gives z^2 - (1 + mu)(1 - eta lambda) z + mu (1 - eta lambda) = 0, with a root at -1 "
    "when eta lambda = 2 (1 + mu) / (1 + 2 mu): eta < 3.8 / 280 = 0.0135714, below gradient descent's "
    "0.02. At each limit itself an eigenvalue is exactly -1: the swing neither grows nor shrinks, so the "
    "answers are suprema, not rates that converge. The look-ahead counts the newest gradient 1 + mu "
    "times: that damps the swing at eta lambda = 1 (the chapter's eta = 0.01 makes the map nilpotent), "
    "and makes large steps unstable sooner.",
)
def _momentum_limit(answer) -> None:
    example = "(0.05, 0.05)"
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong(f"answer with a pair of learning rates (eta_momentum, eta_nesterov), such as {example}.")
    got = [as_number(v) for v in answer]
    for value, given in zip(got, answer):
        if value is None or value <= 0:
            raise Wrong(f"a learning rate is a positive number; you gave {given!r}.")
    heavy, nesterov = got
    right_heavy, right_nesterov = _momentum_limits()
    gd = 2 / RAVINE_CURVATURE
    for name, value, right in (("heavy-ball momentum", heavy, right_heavy), ("Nesterov", nesterov, right_nesterov)):
        if near(value, right, 1e-6):
            continue
        if near(value, right, 1e-3):
            raise Wrong(f"your {name} limit is within 0.1% but not exact: give it to 6 significant digits "
                        f"(an expression such as 2 / 100 is exact).")
        if near(value, gd, 1e-3):
            raise Wrong(f"{value:g} is gradient descent's limit; does {name} change it? Write one step on the "
                        f"steep coordinate as a 2x2 matrix acting on (y, eta b) and find where one of its "
                        f"eigenvalues leaves the unit circle.")
        if name == "Nesterov" and near(value, right_heavy, 1e-3):
            raise Wrong("the heavy-ball limit is right, and Nesterov's is not the same: its step is "
                        "eta (g + mu b), not eta b. Write its 2x2 matrix too.")
        if near(value, right * RAVINE_CURVATURE, 1e-3):
            raise Wrong(f"that is the limit of eta times the curvature; the steep direction's curvature "
                        f"is {RAVINE_CURVATURE:g}.")
        raise Wrong(f"your {name} limit {value:g} is not it. On the steep coordinate one step maps "
                    f"(y, eta b) linearly: find where an eigenvalue of that 2x2 matrix leaves the "
                    f"unit circle, as a function of eta * 100.")


# 3. Adam without bias correction ------------------------------------------------------------------

BIAS_BETAS = (0.9, 0.999)  # the defaults, for the peak


def _uncorrected_ratio(t: int, beta1: float, beta2: float) -> float:
    """Adam's step t without bias correction over the step with it, for a constant gradient and eps -> 0:
    (1 - beta1^t) / sqrt(1 - beta2^t)."""
    return (1 - beta1**t) / math.sqrt(1 - beta2**t)


def _bias_peak(beta1: float = BIAS_BETAS[0], beta2: float = BIAS_BETAS[1]) -> tuple[int, float]:
    """The step at which that ratio is largest, and the ratio there (it rises, then falls to 1)."""
    t = max(range(1, 100_000), key=lambda t: _uncorrected_ratio(t, beta1, beta2))
    return t, _uncorrected_ratio(t, beta1, beta2)


def _as_ratio(got, where: str) -> float:
    value = as_number(got)
    if isinstance(got, bool) or value is None:
        raise Wrong(f"{where} you returned {got!r}; return a number.")
    return value


@exercise(
    "optimizers.bias_correction",
    "For a gradient that is the same g != 0 at every step and eps -> 0, write uncorrected_ratio(t, beta1, "
    "beta2): the size of Adam's step t without bias correction, lr m_t / sqrt(v_t), divided by its size "
    "with it. Then, with beta1 = 0.9 and beta2 = 0.999: at which step t is the uncorrected step largest "
    "compared with the corrected one, and how many times as large is it there? Answer "
    "(uncorrected_ratio, (t_peak, largest_ratio)), the ratio to 6 significant digits.",
    "For a constant g, m_t = (1 - beta1^t) g and v_t = (1 - beta2^t) g^2, so the corrected step is lr sign(g) "
    "at every step and the uncorrected one is lr (1 - beta1^t) / sqrt(1 - beta2^t) sign(g). Uncorrected, "
    "both averages are too small, and they pull in opposite directions: a small m shrinks the step, a "
    "small v enlarges it. v's deficit wins, because it fades a hundred times more slowly (over about "
    "1 / (1 - beta2) = 1000 steps, against 10 for m). So the uncorrected step is 3.16 times too large at "
    "t = 1, and the ratio still rises while m's deficit fades, to 6.56852 at t = 12; then it falls slowly "
    "and is within 1% of 1 only from step 3925 on. Without the correction, Adam's early steps would be "
    "several times the learning rate for hundreds of steps: the correction is what keeps them at about lr.",
)
def _bias_correction(answer) -> None:
    example = "(uncorrected_ratio, (10, 2.5))"
    if callable(answer):
        raise Wrong(f"answer with the pair (uncorrected_ratio, (t_peak, largest_ratio)), such as {example}.")
    if not isinstance(answer, (tuple, list)) or len(answer) != 2 or not callable(answer[0]):
        raise Wrong(f"answer with the pair (uncorrected_ratio, (t_peak, largest_ratio)): a function and two "
                    f"numbers, such as {example}.")
    ratio, peak = answer
    for t, beta1, beta2 in ((1, 0.9, 0.999), (1, 0.5, 0.9), (5, 0.9, 0.999), (40, 0.9, 0.999), (3, 0.0, 0.99),
                            (200, 0.95, 0.95), (2, 0.99, 0.9999)):
        where = f"for t={t}, beta1={beta1}, beta2={beta2}"
        got = _as_ratio(ratio(t, beta1, beta2), where)
        right = _uncorrected_ratio(t, beta1, beta2)
        if near(got, right, 1e-6):
            continue
        if near(got, 1 / right, 1e-6):
            raise Wrong(f"{where} you have the ratio upside down: the uncorrected step divided by the "
                        f"corrected one.")
        if near(got, (1 - beta1**t) / (1 - beta2**t), 1e-6):
            raise Wrong("the step divides by the square root of v, not by v.")
        if t > 1 and near(got, (1 - beta1) / math.sqrt(1 - beta2), 1e-6):
            raise Wrong(f"{where} your ratio is the one of the first step. Write m_t and v_t for a constant "
                        f"gradient: how much of g has each average gathered after t steps?")
        raise Wrong(f"{where} your ratio is {got:.4g}. Write m_t and v_t for a constant gradient, starting "
                    f"from 0, and divide the uncorrected step by the corrected one.")
    if not isinstance(peak, (tuple, list)) or len(peak) != 2:
        raise Wrong(f"uncorrected_ratio is right. The second item is two numbers (t_peak, largest_ratio); "
                    f"you gave {peak!r}.")
    t_peak, largest = as_number(peak[0]), as_number(peak[1])
    if t_peak is None or largest is None or isinstance(peak[0], bool) or t_peak != int(t_peak) or t_peak < 1:
        raise Wrong(f"uncorrected_ratio is right. t_peak is a step (a whole number from 1) and largest_ratio "
                    f"a number; you gave {peak!r}.")
    right_t, right_ratio = _bias_peak()
    first = _uncorrected_ratio(1, *BIAS_BETAS)
    if int(t_peak) == 1 or near(largest, first, 1e-6):
        raise Wrong("uncorrected_ratio is right, but the first step is not where the ratio is largest: "
                    "compare it at t = 1, 2 and 5.")
    if int(t_peak) != right_t:
        raise Wrong(f"uncorrected_ratio is right; t_peak is not {int(t_peak)}. The ratio rises and then "
                    f"falls: find the step where it stops rising (compare each step with the next).")
    if not near(largest, right_ratio, 1e-6):
        raise Wrong(f"t_peak is right; the ratio there is not {largest:.6g}: give it to 6 significant "
                    f"digits.")


# 4. Lookahead rescues a step too large for SGD ----------------------------------------------

LOOKAHEAD_ETA_LAMBDA, LOOKAHEAD_K = 2.5, 5  # SGD alone multiplies theta by 1 - 2.5 = -1.5 per step


def _slow_factor(alpha: float, k: int, eta_lambda: float = LOOKAHEAD_ETA_LAMBDA) -> float:
    """What one Lookahead cycle (k SGD steps on lambda theta^2 / 2, then the slow step)
    multiplies the slow weights by: 1 - alpha + alpha (1 - eta lambda)^k."""
    return 1 - alpha + alpha * (1 - eta_lambda) ** k


def _lookahead_limits(k: int = LOOKAHEAD_K, eta_lambda: float = LOOKAHEAD_ETA_LAMBDA) -> tuple[float, float]:
    """(largest alpha without a change of sign, supremum of the alphas that converge):
    1 / (1 - r^k) and 2 / (1 - r^k) with r = 1 - eta lambda, when 1 - r^k > 0."""
    shrink = 1 - (1 - eta_lambda) ** k
    return 1 / shrink, 2 / shrink


@exercise(
    "optimizers.lookahead_rescue",
    "On L(theta) = lambda theta^2 / 2, SGD with eta lambda = 2.5 diverges: every step multiplies theta by "
    "1 - 2.5 = -1.5. Wrap it in Lookahead with k = 5 fast steps per slow step of size alpha. Answer "
    "(alpha_monotone, alpha_max, rescued_with_k4): the largest alpha for which the slow weights phi "
    "converge to 0 without changing sign; the largest alpha (a supremum) for which they converge at all, "
    "each exact to 6 significant digits; and whether some alpha in (0, 1] makes Lookahead converge with "
    "k = 4 instead (True or False).",
    "After k fast steps theta = (1 - eta lambda)^k phi = r^k phi, so the slow step gives phi <- (1 - alpha "
    "+ alpha r^k) phi = (1 - alpha (1 - r^k)) phi. With k = 5, r^5 = -7.59375 and 1 - r^5 = 8.59375: the "
    "factor is positive and below 1 for alpha < 1 / 8.59375 = 0.116364 (a monotone approach), between -1 "
    "and 0 up to 2 / 8.59375 = 0.232727 (it converges, changing sign every cycle), and below -1 beyond. With "
    "k = 4, r^4 = +5.0625: the fast weights end on phi's side and farther out, 1 - alpha (1 - r^4) = "
    "1 + 4.0625 alpha > 1, and "
    "no alpha helps (False). Lookahead rescues a step that overshoots to the other side, because the slow "
    "step averages the two sides; it cannot rescue one that runs away on the same side.",
)
def _lookahead_rescue(answer) -> None:
    example = "(0.5, 0.9, True)"
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        raise Wrong(f"answer with three values (alpha_monotone, alpha_max, rescued_with_k4), such as {example}.")
    monotone, largest = as_number(answer[0]), as_number(answer[1])
    for name, value, given in (("alpha_monotone", monotone, answer[0]), ("alpha_max", largest, answer[1])):
        if value is None or value <= 0:
            raise Wrong(f"{name} is a positive number, a fraction of the way to the fast weights; you gave "
                        f"{given!r}.")
    right_monotone, right_largest = _lookahead_limits()
    if not (near(monotone, right_monotone, 1e-6) and near(largest, right_largest, 1e-6)):
        if near(monotone, right_largest, 1e-6) and near(largest, right_monotone, 1e-6):
            raise Wrong("your two values are swapped: alpha_monotone is the smaller.")
        if near(monotone, right_monotone, 1e-3) and near(largest, right_largest, 1e-3):
            raise Wrong("both are within 0.1% but not exact: give them to 6 significant digits (an "
                        "expression such as 1 / 3 is exact).")
        for k in (LOOKAHEAD_K - 2, LOOKAHEAD_K, LOOKAHEAD_K + 2):
            for eta_lambda in (LOOKAHEAD_ETA_LAMBDA, LOOKAHEAD_ETA_LAMBDA / 2, 2 * LOOKAHEAD_ETA_LAMBDA):
                if (k, eta_lambda) == (LOOKAHEAD_K, LOOKAHEAD_ETA_LAMBDA):
                    continue
                if any(near(v, w, 1e-6) for v in (monotone, largest) for w in _lookahead_limits(k, eta_lambda)):
                    if eta_lambda != LOOKAHEAD_ETA_LAMBDA:
                        raise Wrong("what does one SGD step multiply theta by? The gradient of lambda "
                                    "theta^2 / 2 is lambda theta, and eta lambda = 2.5.")
                    raise Wrong(f"count the fast steps again: {LOOKAHEAD_K} SGD steps between two slow "
                                f"steps, each multiplying theta by -1.5.")
        if near(monotone, right_monotone, 1e-6):
            raise Wrong("alpha_monotone is right; alpha_max is not. Converging needs |factor| < 1 per cycle: "
                        "which alpha makes the factor -1?")
        if near(largest, right_largest, 1e-6):
            raise Wrong("alpha_max is right; alpha_monotone is not. Where does the factor per cycle change "
                        "sign?")
        raise Wrong("follow one cycle: start the fast weights at phi, take 5 SGD steps, then "
                    "phi <- phi + alpha (theta - phi). phi is multiplied by a number that depends on alpha: "
                    "when is it between 0 and 1, and when between -1 and 1?")
    rescued = answer[2]
    if not isinstance(rescued, (bool, np.bool_)):
        raise Wrong(f"rescued_with_k4 is True or False; you gave {rescued!r}.")
    if rescued:
        raise Wrong("both alphas are right. With k = 4, on which side of phi do the fast weights end a "
                    "cycle, and how far out? Can a step of alpha <= 1 towards them shrink phi?")
