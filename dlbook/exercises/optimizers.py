"""Exercises of the optimizers chapter."""

from __future__ import annotations

import math

import torch

from . import Wrong, exercise, forbid, is_int

NAMES = ("sgd", "momentum", "adam", "rmsprop")


# 1. Adamax from its equation ------------------------------------------------------------

def _reference_adamax(theta, g, m, u, t, lr, beta1, beta2):
    m = beta1 * m + (1 - beta1) * g
    u = torch.maximum(beta2 * u, g.abs())
    return theta - lr / (1 - beta1**t) * m / u, m, u


def _forbid_adamax():
    import torch.optim.adamax as adamax_module

    return forbid("write the update yourself, not with torch.optim.Adamax",
                  (torch.optim.Adamax, "step"), (adamax_module, "adamax"))


@exercise(
    "optimizers.adamax",
    "Write adamax_step(theta, g, m, u, t, lr, beta1, beta2) -> (theta, m, u): one step of Adamax, "
    "m = beta1 m + (1 - beta1) g, u = max(beta2 u, |g|), theta = theta - lr / (1 - beta1^t) * m / u, "
    "with t counted from 1. Not with torch.optim.Adamax.",
    "Adamax replaces Adam's root mean square of past gradients by a decaying maximum of their sizes "
    "(the infinity norm): u needs no bias correction, because max(beta2 u, |g|) with u = 0 at the start "
    "is |g_1| after the first step, not a shrunken value. Only m is corrected, by 1 - beta1^t.",
)
def _adamax(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function adamax_step(theta, g, m, u, t, lr, beta1, beta2).")
    gen = torch.Generator().manual_seed(0)
    for lr, beta1, beta2 in ((2e-3, 0.9, 0.999), (0.1, 0.5, 0.9), (0.01, 0.0, 0.99)):
        theta = torch.randn(6, generator=gen, dtype=torch.float64)
        m, u = torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
        ref = (theta.clone(), m.clone(), u.clone())
        for t in range(1, 8):
            g = torch.randn(6, generator=gen, dtype=torch.float64) * (3.0 if t == 4 else 1.0) + 0.1
            with _forbid_adamax():
                got = answer(theta.clone(), g.clone(), m.clone(), u.clone(), t, lr, beta1, beta2)
            ref = _reference_adamax(ref[0], g, ref[1], ref[2], t, lr, beta1, beta2)
            where = f"at step t={t} with lr={lr}, beta1={beta1}, beta2={beta2}"
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise Wrong(f"return the triple (theta, m, u); {where} you returned {type(got).__name__}.")
            if not all(isinstance(v, torch.Tensor) and v.shape == theta.shape for v in got):
                raise Wrong(f"{where}: theta, m and u must be tensors of the shape of theta.")
            new_theta, new_m, new_u = (v.double() for v in got)
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


# 2. who escapes a saddle first ------------------------------------------------------------------

def _escape_steps(make, start=(1.0, 1e-6), steps=300) -> int:
    from .. import optim

    path = optim.trajectory(lambda x, y: x**2 - y**2, make, steps, start=start)
    escaped = (path[:, 1].abs() >= 1).nonzero()
    return int(escaped[0]) if len(escaped) else steps + 1


def _race() -> dict[str, int]:
    from .. import optim

    makers = {"sgd": lambda p: optim.SGD(p, lr=0.1), "momentum": lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
              "adam": lambda p: optim.Adam(p, lr=0.1), "rmsprop": lambda p: optim.RMSProp(p, lr=0.1)}
    return {name: _escape_steps(make) for name, make in makers.items()}


@exercise(
    "optimizers.saddle_escape",
    "On L(x, y) = x^2 - y^2, starting at (1, 1e-6), an optimizer has escaped the saddle once |y| >= 1. "
    "Answer the pair (steps plain gradient descent with lr 0.1 needs, the four names 'sgd', "
    "'momentum' (0.9), 'adam' and 'rmsprop' in the order they escape, first first), all with lr 0.1 "
    "and their default settings.",
    "Gradient descent multiplies y by 1 + 2 * 0.1 = 1.2 per step, so it needs the smallest t with "
    "1.2^t * 1e-6 >= 1: t = 76 (ln 10^6 / ln 1.2 = 75.8). Momentum builds up speed (36 steps); Adam "
    "normalizes the tiny gradient and moves about lr per step (11 steps). RMSProp wins, in 2 steps: its "
    "v starts at 0 and is not bias-corrected, so its first step is lr / sqrt(1 - 0.99) = 10 lr. The order: rmsprop, adam, momentum, sgd.",
)
def _saddle_escape(answer) -> None:
    example = "(10, ['adam', 'sgd', 'momentum', 'rmsprop'])"
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong(f"answer with a pair (number of steps, the four names in order), such as {example}.")
    steps, order = answer
    if not is_int(steps):
        raise Wrong(f"the number of steps is a whole number; you gave {steps!r}.")
    if isinstance(order, str) or not isinstance(order, (tuple, list)):
        raise Wrong(f"the second item is a list of the four names, in the order they escape, such as "
                    f"{example}; you gave {order!r}.")
    if not all(isinstance(n, str) for n in order) or sorted(n.strip().lower() for n in order) != sorted(NAMES):
        raise Wrong(f"the names must be {', '.join(NAMES)}, each once; you gave {order!r}.")
    order = [n.strip().lower() for n in order]
    race = _race()
    right_steps = race["sgd"]
    if steps != right_steps:
        if abs(steps - right_steps) == 1:
            raise Wrong(f"{steps} is off by one: after t steps y has been multiplied t times; is the "
                        f"condition |y| >= 1 met after step {steps}, or one step earlier or later?")
        raise Wrong(f"{steps} steps is not it. Near the saddle, by what factor does one gradient step "
                    f"multiply y (the gradient in y is -2y)? Then solve factor^t * 1e-6 >= 1.")
    right_order = sorted(race, key=race.get)
    if order[0] != right_order[0]:
        raise Wrong(f"the steps are right, but {order[0]!r} is not the first to escape. How large is each "
                    f"optimizer's very first step when the gradient is tiny? Look at how v starts.")
    if order != right_order:
        raise Wrong("the steps and the first are right, but not the order of the others. Which of them "
                    "takes steps of about lr from the start, and how fast does momentum build up speed "
                    "when y grows by a factor per step?")


# 3. Adam without bias correction ------------------------------------------------------------------

@exercise(
    "optimizers.first_step_ratio",
    "Write first_step_ratio(beta1, beta2): the size of Adam's first step without bias correction "
    "(m / (sqrt(v) + eps)) divided by its size with it, for eps -> 0 and any nonzero gradient.",
    "After one step m = (1 - beta1) g and v = (1 - beta2) g^2, so without correction the step is "
    "lr (1 - beta1) / sqrt(1 - beta2) times sign(g): with the defaults 0.1 / 0.0316 = 3.16 times the "
    "corrected step, lr sign(g). The two corrections pull in opposite directions, and the second wins.",
)
def _first_step_ratio(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function first_step_ratio(beta1, beta2) that returns a number.")
    for beta1, beta2 in ((0.9, 0.999), (0.5, 0.9), (0.0, 0.99), (0.95, 0.95), (0.99, 0.9999)):
        got = answer(beta1, beta2)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got):
            raise Wrong(f"for beta1={beta1}, beta2={beta2} you returned {got!r}; return a number.")
        right = (1 - beta1) / math.sqrt(1 - beta2)
        if math.isclose(got, right, rel_tol=1e-6):
            continue
        if math.isclose(got, 1 / right, rel_tol=1e-6):
            raise Wrong(f"for beta1={beta1}, beta2={beta2} you have the ratio upside down: the "
                        f"uncorrected step divided by the corrected one.")
        if math.isclose(got, (1 - beta1) / (1 - beta2), rel_tol=1e-6):
            raise Wrong("the step divides by the square root of v, not by v.")
        raise Wrong(f"for beta1={beta1}, beta2={beta2} your ratio is {got:.4g}. Write m and v after one "
                    f"step, starting from 0, and divide.")


# 4. the origin of a three-layer linear chain ----------------------------------------------------------

KINDS = ("local minimum", "local maximum", "saddle point")


@exercise(
    "optimizers.three_weights",
    "For L(w1, w2, w3) = (1 - w1 w2 w3)^2 (a chain of three weights, one example x = 1, y = 1), answer "
    "(the three eigenvalues of the Hessian at the origin, the kind of point the origin is: "
    "'local minimum', 'local maximum' or 'saddle point').",
    "Every second derivative at the origin is 0 (each term still has a factor w), so all three "
    "eigenvalues are 0 and the Hessian cannot tell. The loss can: along w1 = w2 = w3 = s it is "
    "(1 - s^3)^2, below 1 for small s > 0 and above 1 for s < 0, so the origin is a saddle point. "
    "Deeper chains have flatter saddles at the origin, which is one reason deep networks start slowly "
    "from tiny weights.",
)
def _three_weights(answer) -> None:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong("answer with a pair (eigenvalues, kind), such as ([1.0, 2.0, 3.0], 'local minimum').")
    eigenvalues, kind = answer
    try:
        lam = torch.as_tensor(eigenvalues, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise Wrong(f"the eigenvalues must be three numbers; you gave {eigenvalues!r}.") from None
    if lam.numel() != 3:
        raise Wrong(f"L has three weights, so its Hessian has three eigenvalues; you gave {lam.numel()}.")
    if not isinstance(kind, str) or kind.strip().lower() not in KINDS:
        raise Wrong(f"the kind must be one of {', '.join(repr(k) for k in KINDS)}; you gave {kind!r}.")
    if (lam.abs() > 1e-9).any():
        raise Wrong("not all of your eigenvalues are right. Differentiate L twice and put w = 0: "
                    "how many factors of w does each second derivative still have?")
    if kind.strip().lower() != "saddle point":
        raise Wrong(f"the eigenvalues are right, so the Hessian cannot decide; {kind!r} is not it. "
                    f"Look at L itself on a line through the origin, on both sides.")
