r"""Optimizers and learning-rate schedules, written to be read.

Every optimizer here is a small :class:`torch.optim.Optimizer` subclass whose
update for one parameter tensor is a few lines under its equation, in the
notation of the chapter: $\theta$ the parameters, $g$ the gradient of the
loss on the current minibatch, $\eta$ the learning rate, $t$ the step
(counted from 1), $m$ and $v$ running averages of $g$ and $g^2$ (all
elementwise). They compute what ``torch.optim`` computes with the same
settings (the tests check every trajectory against it in float64), but one
tensor at a time and without fusing operations, so they are slower: see
the chapter's "How fast is it?".

- :class:`SGD` (with momentum and Nesterov momentum), :class:`Adagrad`,
  :class:`RMSProp`, :class:`Adam`, :class:`AdamW`, :class:`AMSGrad`,
  :class:`RAdam`, and :class:`Lookahead`, a wrapper around any of them;
- schedules: :func:`step_decay` and :func:`warmup_cosine` (pure functions of
  the step) and the schedulers :class:`StepDecay` and :class:`WarmupCosine`
  that apply them;
- 2-D test surfaces (:data:`SURFACES`) and :func:`trajectory`, to watch an
  optimizer move; :func:`draw_surface` and :func:`animate` to draw them;
- critical points of small networks: :func:`hessian`,
  :func:`classify_critical_point`, :func:`minimum_ratio`,
  :func:`mlp_loss` (a small MLP as a function of one flat parameter
  vector), :func:`stall_points`, :func:`critical_point_search` (and
  :func:`find_critical_point`) and :func:`gradient_flatness`;
- the sharpness of a trained network: :func:`top_hessian_eigenvalue`, by
  :func:`power_iteration` on Hessian-vector products, with the residual
  that checks it (:class:`PowerIteration`);
- :func:`parameter_trajectory`: the parameters of a tiny MLP after each of
  ``steps`` updates, to compare two optimizers exactly;
- :func:`step_op_calls`: the PyTorch operators one optimizer step calls,
  to see why one implementation is faster than another.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from ._checks import check_bool, check_callable, check_float, check_int, check_tensor, describe

__all__ = [
    "ParamwiseOptimizer", "SGD", "Adagrad", "RMSProp", "Adam", "AdamW", "AMSGrad", "RAdam", "Lookahead",
    "step_decay", "warmup_cosine", "StepDecay", "WarmupCosine",
    "Surface", "SURFACES", "trajectory", "draw_surface", "animate",
    "hessian", "classify_critical_point", "minimum_ratio", "mlp_loss", "mlp_num_params",
    "CriticalPointSearch", "critical_point_search", "find_critical_point", "GradientFlatness",
    "gradient_flatness", "stall_points", "one_thread", "PowerIteration", "power_iteration",
    "top_hessian_eigenvalue", "parameter_trajectory", "OPTIMIZERS",
    "step_op_calls",
]


@contextlib.contextmanager
def one_thread():
    """Within the block, PyTorch computes on one CPU thread (restored after).

    The chapter's small experiments (2-D surfaces, networks of a few dozen
    parameters) run thousands of operations on tiny tensors, for which
    keeping several threads in step costs more than it saves; on a busy
    machine, much more.

    Shapes:
        none: it changes no tensor.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# argument checks ------------------------------------------------------------------

def _check_lr(lr) -> float:
    return check_float(lr, "lr", 0.0)


def _check_betas(betas) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2); got {describe(betas)}")
    return (check_float(betas[0], "betas[0]", 0.0, 1.0, open_max=True),
            check_float(betas[1], "betas[1]", 0.0, 1.0, open_max=True))


def _check_made_optimizer(optimizer, what: str = "make_optimizer") -> torch.optim.Optimizer:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{what}(params) must return a torch.optim.Optimizer; got {type(optimizer).__name__}")
    return optimizer


def _check_scalar_loss(loss, what: str = "loss_fn") -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
        got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else describe(loss)
        raise ValueError(f"{what} must return a scalar floating-point tensor (the loss); got {got}")
    return loss


# the common loop -------------------------------------------------------------------

class ParamwiseOptimizer(torch.optim.Optimizer):
    """An optimizer whose update treats every parameter tensor on its own.

    :meth:`step` calls ``update(p, g, state, group)`` for every parameter
    ``p`` that has a gradient ``g``; ``state`` is that parameter's own dict
    (running averages, the step count), ``group`` its parameter group (the
    learning rate and the other settings). Subclasses write ``update``.

    Shapes:
        ``update`` receives ``p`` and ``g`` of the same (any) shape and
        changes ``p`` in place.
    """

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """One update of every parameter that has a gradient; returns ``closure()``'s loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                self.update(p, p.grad, self.state[p], group)
        return loss


# SGD -------------------------------------------------------------------------------

class SGD(ParamwiseOptimizer):
    r"""Stochastic gradient descent, with momentum and Nesterov momentum.

    With weight decay $\omega$ (``weight_decay``, an L2 penalty) the gradient
    is first $g \leftarrow g + \omega \theta$. Then

    - plain: $\theta \leftarrow \theta - \eta g$;
    - momentum $\mu$: $b \leftarrow \mu b + g$ (with $b_1 = g_1$), and
      $\theta \leftarrow \theta - \eta b$;
    - Nesterov: the same $b$, and $\theta \leftarrow \theta - \eta (g + \mu b)$,
      the step that plain momentum would take *after* the next update of $b$
      (the look-ahead of Nesterov's accelerated gradient, rewritten so that
      the gradient is taken at the current parameters).

    As ``torch.optim.SGD`` with ``dampening=0``.

    Shapes:
        every parameter: any shape; the state ``"momentum"`` has its shape.
    """

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        lr = _check_lr(lr)
        momentum = check_float(momentum, "momentum", 0.0, 1.0, open_max=True)
        nesterov = check_bool(nesterov, "nesterov")
        weight_decay = check_float(weight_decay, "weight_decay", 0.0)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay))

    def update(self, p, g, state, group):
        lr, mu = group["lr"], group["momentum"]
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p  # L2 penalty: g + omega theta
        if mu:
            if "momentum" not in state:
                state["momentum"] = g.clone()  # b_1 = g_1
            else:
                state["momentum"].mul_(mu).add_(g)  # b = mu b + g
            b = state["momentum"]
            g = g + mu * b if group["nesterov"] else b
        p.sub_(lr * g)  # theta = theta - eta g


# Adagrad and RMSProp ----------------------------------------------------------------

class Adagrad(ParamwiseOptimizer):
    r"""Adagrad (Duchi et al., 2011): each parameter's step divided by the
    root of the sum of all its squared gradients so far.

    $G \leftarrow G + g^2, \qquad \theta \leftarrow \theta - \eta\, g / (\sqrt{G} + \epsilon).$

    A parameter whose gradients have been large takes small steps, one whose
    gradients have been small takes large ones; and since $G$ only grows,
    every step shrinks as training goes on. As ``torch.optim.Adagrad``
    (``lr_decay=0``, ``initial_accumulator_value=0``).

    Shapes:
        every parameter: any shape; the state ``"sum_sq"`` has its shape.
    """

    def __init__(self, params, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=_check_lr(lr), eps=check_float(eps, "eps", 0.0),
                                      weight_decay=check_float(weight_decay, "weight_decay", 0.0)))

    def update(self, p, g, state, group):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        if "sum_sq" not in state:
            state["sum_sq"] = torch.zeros_like(p)
        G = state["sum_sq"]
        G.add_(g * g)  # G = G + g^2
        p.sub_(group["lr"] * g / (G.sqrt() + group["eps"]))


class RMSProp(ParamwiseOptimizer):
    r"""RMSProp (Tieleman and Hinton, Coursera lecture 6.5, 2012): Adagrad
    with a forgetting running average instead of a sum. With the decay rate
    $\beta$ (``alpha``, PyTorch's name):

    $v \leftarrow \beta v + (1 - \beta) g^2, \qquad
    \theta \leftarrow \theta - \eta\, g / (\sqrt{v} + \epsilon).$

    $v$ starts at 0 and is not corrected for it, so the first steps are
    larger than $\eta$ (the first is $\eta / \sqrt{1 - \beta}$ per
    coordinate). As ``torch.optim.RMSprop`` (not centred, no momentum).

    Shapes:
        every parameter: any shape; the state ``"square_avg"`` has its shape.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=_check_lr(lr), alpha=check_float(alpha, "alpha", 0.0, 1.0, open_max=True),
                                      eps=check_float(eps, "eps", 0.0),
                                      weight_decay=check_float(weight_decay, "weight_decay", 0.0)))

    def update(self, p, g, state, group):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p)
        v, alpha = state["square_avg"], group["alpha"]
        v.mul_(alpha).add_((1 - alpha) * g * g)  # v = beta v + (1 - beta) g^2, beta = alpha
        p.sub_(group["lr"] * g / (v.sqrt() + group["eps"]))


# Adam and its family ------------------------------------------------------------------

class Adam(ParamwiseOptimizer):
    r"""Adam (Kingma and Ba, 2015): momentum on the gradient, RMSProp on its scale.

    With an L2 penalty $\omega$ (``weight_decay``) the gradient is first $g \leftarrow g + \omega\theta$. Then

    $$m \leftarrow \beta_1 m + (1 - \beta_1) g, \qquad v \leftarrow \beta_2 v + (1 - \beta_2) g^2,$$
    $$\hat m = \frac{m}{1 - \beta_1^t}, \qquad \hat v = \frac{v}{1 - \beta_2^t}, \qquad
    \theta \leftarrow \theta - \eta\, \frac{\hat m}{\sqrt{\hat v} + \epsilon}.$$

    $m$ and $v$ start at 0, so early on they are too small; dividing by
    $1 - \beta^t$ (bias correction) removes that. As ``torch.optim.Adam``.
    :class:`AdamW` and :class:`AMSGrad` change one line each.

    Shapes:
        every parameter: any shape; the states ``"m"`` and ``"v"`` have its shape.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=_check_lr(lr), betas=_check_betas(betas), eps=check_float(eps, "eps", 0.0),
                                      weight_decay=check_float(weight_decay, "weight_decay", 0.0)))

    # The chapter prints decay, second_moment and update (and the overrides
    # below) as they are here: keep their lines within 79 columns.
    def decay(self, p, g, group):
        """Adam's weight decay is an L2 penalty: it goes into the gradient."""
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p  # g + omega theta
        return g

    def second_moment(self, state):
        """The v that the step divides by (AMSGrad: a running maximum)."""
        return state["v"]

    def update(self, p, g, state, group):
        if not state:
            state["step"] = 0
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
        state["step"] += 1
        t, (beta1, beta2) = state["step"], group["betas"]
        g = self.decay(p, g, group)
        # m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
        state["m"].mul_(beta1).add_((1 - beta1) * g)
        state["v"].mul_(beta2).add_((1 - beta2) * g * g)
        m_hat = state["m"] / (1 - beta1**t)  # bias correction
        v_hat = self.second_moment(state) / (1 - beta2**t)
        p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))


class AdamW(Adam):
    r"""AdamW (Loshchilov and Hutter, 2019): Adam with *decoupled* weight decay.

    Instead of adding $\omega\theta$ to the gradient (where Adam would then
    divide it by $\sqrt{\hat v}$, so that parameters with large gradients
    are hardly decayed), every parameter shrinks by the same factor before
    the Adam step: $\theta \leftarrow (1 - \eta\omega)\,\theta$. As
    ``torch.optim.AdamW`` (default $\omega = 0.01$); the paper multiplies
    $\omega$ by the schedule's multiplier only, not by the learning rate.

    Shapes:
        every parameter: any shape; the states ``"m"`` and ``"v"`` have its shape.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def decay(self, p, g, group):
        # theta = (1 - eta omega) theta, before the Adam step; g unchanged
        p.mul_(1 - group["lr"] * group["weight_decay"])
        return g


class AMSGrad(Adam):
    r"""AMSGrad (Reddi et al., 2018): Adam that divides by the largest $v$ so far,
    $v_\max \leftarrow \max(v_\max, v)$, so a parameter's effective step
    $\eta / \sqrt{\hat v}$ can never grow *because its recent gradients were
    small*. As ``torch.optim.Adam(amsgrad=True)``, which also keeps Adam's
    bias correction ($\hat v = v_\max / (1 - \beta_2^t)$): the effective
    step $\eta \sqrt{1 - \beta_2^t} / \sqrt{v_\max}$ then still grows over
    the first $\sim 1 / (1 - \beta_2)$ steps while $v_\max$ stays the same,
    as the correction fades. Reddi et al.'s algorithm has no correction,
    and its effective step never grows.

    Shapes:
        every parameter: any shape; the state ``"v_max"`` has its shape.
    """

    def second_moment(self, state):
        if "v_max" not in state:
            state["v_max"] = torch.zeros_like(state["v"])
        v_max = state["v_max"]
        torch.maximum(v_max, state["v"], out=v_max)  # max(v_max, v)
        return v_max


class RAdam(Adam):
    r"""RAdam (Liu et al., 2020): Adam with its adaptive step switched on
    gradually, as the estimate of $v$ becomes reliable.

    With $\rho_\infty = 2 / (1 - \beta_2) - 1$, the length of the
    average that $v$ approximates at step $t$ is
    $\rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t)$. While
    $\rho_t \le 5$ the step is momentum SGD, $\theta \leftarrow \theta - \eta \hat m$;
    after that it is Adam's, scaled by the rectification

    $$r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}, \qquad
    \theta \leftarrow \theta - \eta\, r_t\, \hat m\, \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v} + \epsilon},$$

    which grows from near 0 towards 1. As ``torch.optim.RAdam`` (which puts
    $\epsilon$ beside $\sqrt{v}$, before the bias correction, and switches at
    $\rho_t > 5$, where the paper's algorithm says 4).

    Shapes:
        every parameter: any shape; the states ``"m"`` and ``"v"`` have its shape.
    """

    def update(self, p, g, state, group):
        if not state:
            state["step"] = 0
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
        state["step"] += 1
        t, (beta1, beta2) = state["step"], group["betas"]
        g = self.decay(p, g, group)
        state["m"].mul_(beta1).add_((1 - beta1) * g)  # Adam's m and v
        state["v"].mul_(beta2).add_((1 - beta2) * g * g)
        m_hat = state["m"] / (1 - beta1**t)
        # how many gradients v averages: rho_t, and rho_inf in the long run
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho_t <= 5:  # too few gradients for a reliable v: momentum SGD
            p.sub_(group["lr"] * m_hat)
            return
        r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                        / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        adaptive = math.sqrt(1 - beta2**t) / (state["v"].sqrt() + group["eps"])
        p.sub_(group["lr"] * r_t * m_hat * adaptive)


# Lookahead ---------------------------------------------------------------------------

class Lookahead(torch.optim.Optimizer):
    r"""Lookahead (Zhang et al., 2019): k steps forward, one step back.

    The wrapped optimizer moves the *fast* weights $\theta$ for $k$ steps;
    then the *slow* weights $\phi$ (a copy of the parameters kept at the
    start) move a fraction $\alpha$ of the way towards them, and the fast
    weights restart from there:

    $$\phi \leftarrow \phi + \alpha (\theta - \phi), \qquad \theta \leftarrow \phi .$$

    The wrapped optimizer keeps its own state (Adam's $m$ and $v$) across
    the restarts. ``Lookahead`` shares the wrapped optimizer's parameter
    groups, so a learning-rate scheduler built on either drives both.

    Shapes:
        every parameter: any shape; the state ``"slow"`` has its shape.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer to wrap; got {type(optimizer).__name__}")
        if isinstance(optimizer, Lookahead):
            raise TypeError("optimizer is a Lookahead already; wrap the inner optimizer once")
        k = check_int(k, "k", 1)
        alpha = check_float(alpha, "alpha", 0.0, 1.0)
        if alpha == 0:
            raise ValueError("alpha must lie in (0, 1]; with 0 the slow weights never move")
        self.optimizer = optimizer
        # the same group dicts as the inner optimizer: one learning rate for both
        super().__init__(optimizer.param_groups, dict(k=k, alpha=alpha))
        self.param_groups = optimizer.param_groups

    def fingerprint(self) -> str:
        """What a checkpoint compares: the inner optimizer's class and every setting."""
        settings = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return f"Lookahead({type(self.optimizer).__module__}.{type(self.optimizer).__qualname__}, {settings!r})"

    @torch.no_grad()
    def step(self, closure=None):
        """A step of the inner optimizer; every k-th, the step back."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if "slow" not in state:  # phi_0 = theta_0, before any step
                    state["slow"], state["step"] = p.detach().clone(), 0
        loss = self.optimizer.step(closure)  # the fast weights theta move
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] += 1
                if state["step"] % group["k"] == 0:
                    slow = state["slow"]
                    # phi = phi + alpha (theta - phi), then theta = phi
                    slow.add_(group["alpha"] * (p - slow))
                    p.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"lookahead": super().state_dict(), "inner": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or set(state_dict) != {"lookahead", "inner"}:
            raise ValueError("a Lookahead state dict has the keys 'lookahead' and 'inner'")
        self.optimizer.load_state_dict(state_dict["inner"])
        super().load_state_dict(state_dict["lookahead"])
        self.param_groups = self.optimizer.param_groups  # shared again


# the optimizers of the chapter, by name ----------------------------------------------------

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": SGD,
    "momentum": lambda params, lr, momentum=0.9, **kw: SGD(params, lr, momentum=momentum, **kw),
    "nesterov": lambda params, lr, momentum=0.9, **kw: SGD(params, lr, momentum=momentum, nesterov=True, **kw),
    "adagrad": Adagrad,
    "rmsprop": RMSProp,
    "adam": Adam,
    "adamw": AdamW,
    "amsgrad": AMSGrad,
    "radam": RAdam,
    "lookahead": lambda params, lr, k=5, alpha=0.5, **kw: Lookahead(Adam(params, lr, **kw), k=k, alpha=alpha),
}
"""Name -> ``make(params, lr, **settings)``; ``"lookahead"`` wraps :class:`Adam`."""


# learning-rate schedules ----------------------------------------------------------------------

def step_decay(step: int, lr: float, step_size: int, gamma: float = 0.1) -> float:
    r"""The learning rate at ``step`` (from 0) under step decay:
    $\eta_t = \eta\, \gamma^{\lfloor t / s \rfloor}$, multiplied by $\gamma$
    every ``step_size`` $= s$ steps (as ``torch.optim.lr_scheduler.StepLR``).

    Shapes:
        numbers in, a float out.
    """
    step = check_int(step, "step", 0)
    lr = _check_lr(lr)
    step_size = check_int(step_size, "step_size", 1)
    gamma = check_float(gamma, "gamma", 0.0)
    return lr * gamma ** (step // step_size)


def warmup_cosine(step: int, lr: float, warmup_steps: int, total_steps: int,
                  start_factor: float = 0.01, min_lr: float = 0.0) -> float:
    r"""The learning rate at ``step`` (from 0) under linear warm-up, then cosine decay.

    For $t < W$ (``warmup_steps``) it rises linearly from $s\eta$
    (``start_factor`` $= s$) towards $\eta$:
    $\eta_t = \eta\,(s + (1 - s)\, t / W)$; from $t = W$ to $T$
    (``total_steps``) it follows half a cosine from $\eta$ down to
    $\eta_\min$ (``min_lr``):

    $$\eta_t = \eta_\min + \tfrac12 (\eta - \eta_\min)\Big(1 + \cos\frac{\pi (t - W)}{T - W}\Big),$$

    and stays at $\eta_\min$ after $T$. The same numbers as
    ``SequentialLR([LinearLR(start_factor=s, total_iters=W),
    CosineAnnealingLR(T_max=T - W, eta_min=min_lr)], milestones=[W])``
    for $t \le T$ (past $T$ PyTorch's cosine rises again; this one stays).

    Shapes:
        numbers in, a float out.
    """
    step = check_int(step, "step", 0)
    lr = _check_lr(lr)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
    total_steps = check_int(total_steps, "total_steps", 1)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})")
    start_factor = check_float(start_factor, "start_factor", 0.0, 1.0)
    if start_factor == 0:
        raise ValueError("start_factor must lie in (0, 1]: a learning rate of 0 makes the first step do nothing")
    min_lr = check_float(min_lr, "min_lr", 0.0, lr)
    if step < warmup_steps:
        return lr * (start_factor + (1 - start_factor) * step / warmup_steps)
    progress = min(step - warmup_steps, total_steps - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


class _Schedule(LRScheduler):
    """Sets each group's learning rate to a function of the step count
    (``self.last_epoch``, which ``step()`` advances) and its initial rate."""

    def lr_at(self, step: int, base_lr: float) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


class StepDecay(_Schedule):
    """Step decay as a scheduler: :func:`step_decay` of each group's initial rate.
    Call ``step()`` once per step (or per epoch, with ``step_size`` in epochs).

    Shapes:
        sets every parameter group's ``"lr"`` (a float).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1):
        self.step_size = check_int(step_size, "step_size", 1)
        self.gamma = check_float(gamma, "gamma", 0.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step, base_lr):
        return step_decay(step, base_lr, self.step_size, self.gamma)


class WarmupCosine(_Schedule):
    """Warm-up then cosine decay as a scheduler: :func:`warmup_cosine` of each
    group's initial rate, with ``min_lr`` as a fraction ``min_factor`` of it.

    Shapes:
        sets every parameter group's ``"lr"`` (a float).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                 start_factor: float = 0.01, min_factor: float = 0.0, last_epoch: int = -1):
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
        self.total_steps = check_int(total_steps, "total_steps", 1)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})")
        self.start_factor = check_float(start_factor, "start_factor", 0.0, 1.0)
        if self.start_factor == 0:
            raise ValueError("start_factor must lie in (0, 1]")
        self.min_factor = check_float(min_factor, "min_factor", 0.0, 1.0)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step, base_lr):
        return warmup_cosine(step, base_lr, self.warmup_steps, self.total_steps,
                             self.start_factor, self.min_factor * base_lr)


# 2-D surfaces and trajectories ----------------------------------------------------------------

@dataclass(frozen=True)
class Surface:
    """A loss surface over two parameters, for watching optimizers.

    ``f(x, y)`` works elementwise on tensors (a grid for the contours, two
    scalars for a step); ``start`` is where the trajectories begin;
    ``minima`` are the points it is minimal at (for the figures).

    Shapes:
        x, y: any one shape -> the loss, of that shape
    """

    name: str
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    start: tuple[float, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    log_levels: bool = False

    def __call__(self, x, y):
        return self.f(x, y)


def _saddle(x, y):
    # a saddle at (0, 0) between two minima at (0, -1) and (0, 1)
    return x**2 + y**4 / 4 - y**2 / 2 + 0.25


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _plateau(x, y):
    # a well at the origin in a plateau that is almost flat: far out the gradient is tiny
    return 1 - torch.exp(-(x**2 + y**2) / 2)


SURFACES: dict[str, Surface] = {
    "saddle": Surface("saddle: x² + y⁴/4 − y²/2 + ¼", _saddle, (-1.5, 1e-3), (-2.0, 2.0), (-1.6, 1.6),
                      ((0.0, -1.0), (0.0, 1.0))),
    "rosenbrock": Surface("Rosenbrock valley", _rosenbrock, (-1.5, 2.0), (-2.0, 2.0), (-1.0, 3.5),
                          ((1.0, 1.0),), log_levels=True),
    "plateau": Surface("a well in a plateau", _plateau, (-3.0, 2.5), (-3.5, 3.5), (-3.5, 3.5),
                       ((0.0, 0.0),)),
}
"""The chapter's three surfaces: a saddle, the Rosenbrock valley, a plateau."""


def trajectory(surface: Surface | Callable, make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
               steps: int, start: Sequence[float] | None = None) -> torch.Tensor:
    """The path of an optimizer on a 2-D surface, in float64.

    ``make_optimizer([theta])`` builds the optimizer over the single
    parameter $\\theta = (x, y)$; the path starts at ``start`` (default the
    surface's) and records $\\theta$ after every step.

    Shapes:
        returns (steps + 1, 2): the start, then the point after each step.
    """
    f = check_callable(surface, "surface")
    check_callable(make_optimizer, "make_optimizer")
    steps = check_int(steps, "steps", 0)
    if start is None:
        if not isinstance(surface, Surface):
            raise ValueError("start is needed for a surface that is a plain function")
        start = surface.start
    if not isinstance(start, (tuple, list, torch.Tensor)) or len(start) != 2:
        raise ValueError(f"start must be a point (x, y); got {describe(start)}")
    theta = torch.tensor([float(s) for s in start], dtype=torch.float64, requires_grad=True)  # (2,)
    optimizer = _check_made_optimizer(make_optimizer([theta]))
    path = [theta.detach().clone()]
    with one_thread():  # two numbers: threads would only cost
        for _ in range(steps):
            optimizer.zero_grad()
            loss = _check_scalar_loss(f(theta[0], theta[1]), "surface(x, y)")
            loss.backward()
            optimizer.step()
            path.append(theta.detach().clone())
    return torch.stack(path)  # (steps + 1, 2)


def _grid(surface: Surface, n: int = 200):
    xs = torch.linspace(*surface.xlim, n, dtype=torch.float64)
    ys = torch.linspace(*surface.ylim, n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")  # (n, n)
    return X, Y, surface(X, Y)


def draw_surface(surface: Surface, ax=None, levels: int = 30, color: str = "0.8"):
    """Contours of ``surface`` on ``ax`` (a new figure if None), with its start as a
    black square and its minima as black stars drawn above everything; returns ``ax``.

    The contours are thin lines in one light ``color`` (a matplotlib colour;
    light grey by default), so that paths drawn over them stay visible;
    surfaces with ``log_levels`` get log-spaced levels.

    Shapes:
        the surface is evaluated on a (200, 200) grid over its limits.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if not isinstance(surface, Surface):
        raise TypeError(f"surface must be a dlbook.optim.Surface; got {type(surface).__name__}")
    levels = check_int(levels, "levels", 2)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    X, Y, Z = _grid(surface)
    if surface.log_levels:
        lo = max(float(Z.min()), 1e-2)
        levels = np.geomspace(lo, float(Z.max()), levels)
    ax.contour(X, Y, Z, levels=levels, colors=color, linewidths=0.6, zorder=0)
    ax.plot(*surface.start, "s", color="black", markersize=5, zorder=6)
    for mx, my in surface.minima:
        ax.plot(mx, my, "*", color="black", markersize=11, markeredgecolor="white", zorder=6)
    ax.set_xlim(*surface.xlim)
    ax.set_ylim(*surface.ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(surface.name)
    return ax


def animate(panels: Sequence[tuple[Surface, dict]], frames: int = 60, figsize: tuple[float, float] | None = None,
            dpi: int = 60, interval: int = 120):
    """A matplotlib animation of paths on surfaces, ``frames`` frames long.

    ``panels`` is a list of ``(surface, paths)`` pairs, one subplot each;
    ``paths`` maps a name to a path from :func:`trajectory`. Frame ``i``
    draws every path up to its share ``i / (frames - 1)`` of its steps, so
    paths of different lengths finish together. Returns the
    ``FuncAnimation``; its ``to_jshtml()`` plays in a web page without a
    kernel (keep ``frames`` and ``dpi`` small: every frame is stored as an
    image). The figure is closed, so that a notebook does not show it twice.

    Shapes:
        every path: (steps + 1, 2)
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    if isinstance(panels, tuple) and len(panels) == 2 and isinstance(panels[0], Surface):
        panels = [panels]
    if not isinstance(panels, (list, tuple)) or not panels:
        raise ValueError("panels must be a non-empty list of (surface, paths) pairs")
    for panel in panels:
        if not isinstance(panel, (tuple, list)) or len(panel) != 2:
            raise ValueError(f"each panel must be a pair (surface, paths); got {describe(panel)}")
        surface, paths = panel
        if not isinstance(surface, Surface):
            raise TypeError(f"each panel starts with a dlbook.optim.Surface; got {type(surface).__name__}")
        if not isinstance(paths, dict) or not paths:
            raise ValueError("paths must be a non-empty dict of name -> (steps + 1, 2) tensor")
        for name, path in paths.items():
            check_tensor(path, f"paths[{name!r}]")
            if path.dim() != 2 or path.shape[1] != 2:
                raise ValueError(f"paths[{name!r}] must have shape (steps + 1, 2); got {tuple(path.shape)}")
    frames = check_int(frames, "frames", 2)
    dpi = check_int(dpi, "dpi", 10)
    figsize = figsize or (3.5 * len(panels), 3.6)
    fig, axes = plt.subplots(1, len(panels), figsize=figsize, dpi=dpi, squeeze=False)
    lines = []  # (line, path)
    for ax, (surface, paths) in zip(axes[0], panels):
        draw_surface(surface, ax, levels=20)
        ax.set_title(surface.name, fontsize=9)
        for name, path in paths.items():
            lines.append((ax.plot([], [], "-", linewidth=1.2, label=name)[0], path.detach().cpu()))
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()

    def show(i):
        for line, path in lines:
            upto = 1 + round(i * (len(path) - 1) / (frames - 1))
            line.set_data(path[:upto, 0].numpy(), path[:upto, 1].numpy())
        return [line for line, _ in lines]

    anim = FuncAnimation(fig, show, frames=frames, interval=interval, blit=True)
    plt.close(fig)
    return anim


# critical points --------------------------------------------------------------------------

def hessian(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
    r"""The Hessian $H_{ij} = \partial^2 L / \partial\theta_i \partial\theta_j$ of
    ``loss_fn`` at the flat parameter vector ``theta``, by automatic differentiation.

    Shapes:
        theta: (P,) -> (P, P), symmetric
    """
    check_callable(loss_fn, "loss_fn")
    check_tensor(theta, "theta", floating=True)
    if theta.dim() != 1:
        raise ValueError(f"theta must be a flat parameter vector (P,); got shape {tuple(theta.shape)}")
    _check_scalar_loss(loss_fn(theta.detach()))
    H = torch.autograd.functional.hessian(loss_fn, theta.detach())  # (P, P)
    return (H + H.T) / 2  # symmetric up to rounding; make it exactly so


def _check_eigenvalues(eigenvalues) -> torch.Tensor:
    check_tensor(eigenvalues, "eigenvalues", floating=True)
    if eigenvalues.dim() != 1 or eigenvalues.numel() == 0:
        raise ValueError(f"eigenvalues must be a non-empty vector; got shape {tuple(eigenvalues.shape)}")
    if not bool(torch.isfinite(eigenvalues).all()):
        raise ValueError("eigenvalues must be finite numbers; got NaN or infinity")
    return eigenvalues


def classify_critical_point(eigenvalues: torch.Tensor, tol: float = 1e-8) -> str:
    r"""What kind of critical point the Hessian's eigenvalues say it is.

    All $> $ ``tol``: ``"local minimum"``; all $<$ ``-tol``: ``"local maximum"``;
    some of each: ``"saddle point"``; otherwise (some within ``tol`` of 0 and
    none of the other sign) ``"undetermined"``: the second derivatives
    alone cannot tell, and higher-order terms decide.

    Shapes:
        eigenvalues: (P,) -> a string
    """
    lam = _check_eigenvalues(eigenvalues)
    tol = check_float(tol, "tol", 0.0)
    pos, neg = bool((lam > tol).any()), bool((lam < -tol).any())
    if pos and neg:
        return "saddle point"
    if bool((lam > tol).all()):
        return "local minimum"
    if bool((lam < -tol).all()):
        return "local maximum"
    return "undetermined"


def minimum_ratio(eigenvalues: torch.Tensor, tol: float = 0.0) -> float:
    r"""The fraction of the Hessian's eigenvalues that are positive (above ``tol``):
    1 at a strict local minimum, below 1 where some direction still leads down
    (or is flat).

    Shapes:
        eigenvalues: (P,) -> a float in [0, 1]
    """
    lam = _check_eigenvalues(eigenvalues)
    tol = check_float(tol, "tol", 0.0)
    return float((lam > tol).double().mean())


def mlp_num_params(sizes: Sequence[int]) -> int:
    """The number of weights and biases of an MLP with layer sizes ``sizes`` (input first).

    Shapes:
        sizes: (L + 1,) layer widths -> an int
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size; got {describe(sizes)}")
    sizes = [check_int(s, "every size", 1) for s in sizes]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def mlp_loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    r"""The mean squared error of a tanh MLP whose weights are the flat vector ``theta``.

    Layer $l$ computes $h_l = \tanh(h_{l-1} W_l + b_l)$, the last one without
    the tanh; ``theta`` holds $W_1, b_1, W_2, b_2, \ldots$ one after the other.
    A smooth activation (not ReLU) so that the Hessian exists everywhere.

    Shapes:
        theta: (P,) with P = mlp_num_params(sizes); x: (N, sizes[0]); y: (N, sizes[-1]) -> ()
    """
    check_tensor(theta, "theta", floating=True)
    P = mlp_num_params(sizes)
    if theta.shape != (P,):
        raise ValueError(f"theta must have shape ({P},) for sizes {list(sizes)}; got {tuple(theta.shape)}")
    check_tensor(x, "x", floating=True)
    check_tensor(y, "y", floating=True)
    if x.dim() != 2 or x.shape[1] != sizes[0] or y.shape != (x.shape[0], sizes[-1]):
        raise ValueError(f"x must be (N, {sizes[0]}) and y (N, {sizes[-1]}); got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    h, i = x, 0
    for layer, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = theta[i:i + a * b].view(a, b)  # (a, b)
        bias = theta[i + a * b:i + a * b + b]  # (b,)
        i += a * b + b
        h = h @ W + bias  # (N, b)
        if layer < len(sizes) - 2:
            h = torch.tanh(h)
    return F.mse_loss(h, y)


@dataclass(frozen=True)
class CriticalPointSearch:
    r"""What :func:`critical_point_search` found, and how it got there.

    ``theta`` is where the search ended. ``grad_norms[i]`` is the gradient
    norm $\lVert \nabla L \rVert$ after ``at_iteration[i]`` L-BFGS iterations
    (the start, every ``record_every`` iterations, and the end), so
    ``grad_norms[-1]`` is the norm at ``theta``. ``evaluations`` counts the
    evaluations of $\nabla L$ (each with its own gradient, $2 H \nabla L$).
    ``stop`` says why the search stopped: ``"max_iter"``, ``"stalled"`` (the
    norm fell by less than a fraction ``min_decrease`` over the last
    ``patience`` iterations), ``"zero"`` (the gradient is exactly 0) or
    ``"no progress"`` (L-BFGS found no step that lowers the norm).

    Shapes:
        theta: (P,)
    """

    theta: torch.Tensor
    grad_norms: tuple[float, ...]
    at_iteration: tuple[int, ...]
    evaluations: int
    stop: str

    @property
    def grad_norm(self) -> float:
        """The gradient norm where the search ended."""
        return self.grad_norms[-1]

    @property
    def iterations(self) -> int:
        """The L-BFGS iterations taken."""
        return self.at_iteration[-1]


def critical_point_search(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                          max_iter: int = 500, record_every: int = 10, patience: int | None = None,
                          min_decrease: float = 0.01) -> CriticalPointSearch:
    r"""Search for a critical point near ``theta``, recording the gradient norm
    as it goes.

    Minimizes the squared gradient norm $\lVert \nabla L(\theta) \rVert^2$
    with L-BFGS (strong Wolfe line search, a memory of 50 steps). Its own
    gradient is $2 H \nabla L$, so ``loss_fn`` must be twice differentiable.
    Minima, maxima and saddles all have a zero gradient, so it finds any of
    them: it does not go downhill in the loss. But it can also slow down and
    end where $H \nabla L \approx 0$ with $\nabla L \ne 0$ (the gradient lies
    along directions of almost zero curvature), which is no critical point:
    :func:`gradient_flatness` tells the two apart.

    It stops after ``max_iter`` iterations, or earlier when the gradient
    norm stops falling: when it fell by less than a fraction
    ``min_decrease`` over the last ``patience`` iterations (``None``: never;
    a multiple of ``record_every``). The norm is recorded every
    ``record_every`` iterations (each record costs one more evaluation).

    Shapes:
        theta: (P,) -> a :class:`CriticalPointSearch` with theta (P,)
    """
    check_callable(loss_fn, "loss_fn")
    check_tensor(theta, "theta", floating=True)
    max_iter = check_int(max_iter, "max_iter", 1)
    record_every = check_int(record_every, "record_every", 1)
    if patience is not None:
        patience = check_int(patience, "patience", 1)
        if patience % record_every:
            raise ValueError(f"patience ({patience}) must be a multiple of record_every ({record_every})")
    min_decrease = check_float(min_decrease, "min_decrease", 0.0, 1.0)
    if theta.dim() != 1:
        raise ValueError(f"theta must be a flat parameter vector (P,); got shape {tuple(theta.shape)}")
    point = theta.detach().clone().requires_grad_(True)
    (first,) = torch.autograd.grad(_check_scalar_loss(loss_fn(point)), point, create_graph=True)
    if not first.requires_grad:
        raise ValueError("loss_fn must be twice differentiable with a gradient that depends on theta "
                         "(its gradient is constant: a linear loss has no critical point)")
    # record_every iterations per call; L-BFGS keeps its state (the memory of past steps)
    # from call to call, so the iterates are those of one long call
    solver = torch.optim.LBFGS([point], lr=1.0, max_iter=record_every, max_eval=25 * record_every,
                               tolerance_grad=0.0, tolerance_change=0.0, history_size=50,
                               line_search_fn="strong_wolfe")
    evaluations = 0

    def closure():
        nonlocal evaluations
        evaluations += 1
        solver.zero_grad()
        (grad,) = torch.autograd.grad(loss_fn(point), point, create_graph=True)
        norm2 = (grad * grad).sum()
        norm2.backward()
        return norm2.detach()

    def done() -> int:
        return solver.state[point].get("n_iter", 0) if point in solver.state else 0

    norms: list[float] = []
    at: list[int] = []
    back = None if patience is None else patience // record_every
    stop = "max_iter"
    with one_thread():
        while True:
            before, iters = point.detach().clone(), done()
            if iters >= max_iter:
                with torch.enable_grad():
                    norms.append(math.sqrt(float(closure())))  # the norm where the search ended
                at.append(iters)
                break
            solver.param_groups[0]["max_iter"] = min(record_every, max_iter - iters)
            norms.append(math.sqrt(float(solver.step(closure))))  # the norm here; then the iterations
            at.append(iters)
            if norms[-1] == 0.0 or torch.equal(before, point.detach()):  # it did not move
                stop = "zero" if norms[-1] == 0.0 else "no progress"
                break
            if back is not None and len(norms) > back and norms[-1] > (1 - min_decrease) * norms[-1 - back]:
                with torch.enable_grad():
                    norms.append(math.sqrt(float(closure())))
                at.append(done())
                stop = "stalled"
                break
    return CriticalPointSearch(point.detach(), tuple(norms), tuple(at), evaluations, stop)


def find_critical_point(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                        max_iter: int = 500) -> torch.Tensor:
    r"""A critical point near ``theta``: where :func:`critical_point_search`
    ends after at most ``max_iter`` L-BFGS iterations on
    $\lVert \nabla L(\theta) \rVert^2$ (check its gradient norm: the search
    can end short of one).

    Shapes:
        theta: (P,) -> (P,)
    """
    return critical_point_search(loss_fn, theta, max_iter).theta


@dataclass(frozen=True)
class GradientFlatness:
    r"""How the gradient sits against the Hessian's curvature, at one point.

    ``grad_norm`` is $\lVert g \rVert$; ``relative_curvature`` is
    $\lVert H g \rVert / (\lVert H \rVert_2 \lVert g \rVert)$, between 0 (the
    gradient lies in directions of zero curvature) and 1 (it lies along the
    steepest curvature); ``flat_share`` is the share of $\lVert g \rVert^2$ in
    the eigenvectors of $H$ whose eigenvalues are within ``tol`` times
    $\lVert H \rVert_2$ of 0. A point where $g \ne 0$ but $Hg \approx 0$ is
    what Frye et al. (2021) call *gradient-flat*.
    """

    grad_norm: float
    relative_curvature: float
    flat_share: float


def gradient_flatness(loss_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor,
                      tol: float = 1e-3) -> GradientFlatness:
    r"""The gradient at ``theta`` measured against the Hessian there (exact:
    for small ``P``, the Hessian is formed and diagonalized).

    Shapes:
        theta: (P,) -> a :class:`GradientFlatness`
    """
    check_callable(loss_fn, "loss_fn")
    check_tensor(theta, "theta", floating=True)
    tol = check_float(tol, "tol", 0.0)
    if theta.dim() != 1:
        raise ValueError(f"theta must be a flat parameter vector (P,); got shape {tuple(theta.shape)}")
    point = theta.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_check_scalar_loss(loss_fn(point)), point)  # (P,)
    H = hessian(loss_fn, point)  # (P, P)
    lam, Q = torch.linalg.eigh(H)  # (P,), (P, P)
    scale = lam.abs().max()
    g_norm = g.norm()
    if g_norm == 0 or scale == 0:
        raise ValueError("the gradient (or the Hessian) is exactly zero at theta: there is nothing to compare")
    coeffs = Q.T @ g  # g in the eigenvectors, (P,)
    flat = lam.abs() <= tol * scale
    return GradientFlatness(float(g_norm), float((H @ g).norm() / (scale * g_norm)),
                            float(coeffs[flat].pow(2).sum() / g_norm**2))


def stall_points(loss_fn: Callable[[torch.Tensor], torch.Tensor], thetas: torch.Tensor, steps: int,
                 lr: float, every: int = 50, window: int = 500, min_progress: float = 0.01) -> list[dict]:
    r"""Train several parameter vectors by full-batch gradient descent and
    return the points where training stalls.

    All runs (the rows of ``thetas``) take ``steps`` steps
    $\theta \leftarrow \theta - \eta \nabla L(\theta)$ together (``torch.func.vmap``).
    Every ``every`` steps the loss is recorded; a run *stalls* at a record
    when its loss falls by less than a fraction ``min_progress`` over the
    next ``window`` steps. A run may stall several times (it can escape a
    plateau and stall again lower): a new stall counts only once the loss
    is 20% below the previous one.

    Returns one dict per stall: ``run``, ``step``, ``loss`` and ``theta``.

    Shapes:
        thetas: (R, P), one run per row; each returned theta: (P,)
    """
    from torch.func import grad, vmap

    check_callable(loss_fn, "loss_fn")
    check_tensor(thetas, "thetas", floating=True)
    if thetas.dim() != 2:
        raise ValueError(f"thetas must be (R, P), one run per row; got shape {tuple(thetas.shape)}")
    steps, every, window = check_int(steps, "steps", 1), check_int(every, "every", 1), check_int(window, "window", 1)
    if window % every:
        raise ValueError(f"window ({window}) must be a multiple of every ({every})")
    lr = _check_lr(lr)
    min_progress = check_float(min_progress, "min_progress", 0.0, 1.0)
    _check_scalar_loss(loss_fn(thetas[0].detach()))
    gradient, loss = vmap(grad(loss_fn)), vmap(loss_fn)
    theta = thetas.detach().clone()
    snapshots, losses = [], []
    with one_thread():  # small networks: threads would only cost
        for step in range(steps + 1):
            if step % every == 0:
                snapshots.append(theta.clone())
                losses.append(loss(theta))
            if step < steps:
                theta = theta - lr * gradient(theta)  # every run at once
    losses = torch.stack(losses)  # (records, R)
    ahead = window // every
    stalls = []
    for run in range(thetas.shape[0]):
        previous = None
        for i in range(len(losses) - ahead):
            now, later = losses[i, run].item(), losses[i + ahead, run].item()
            if (now - later) < min_progress * now and (previous is None or now < 0.8 * previous):
                stalls.append({"run": run, "step": i * every, "loss": now, "theta": snapshots[i][run]})
                previous = now
    return stalls


@dataclass(frozen=True)
class PowerIteration:
    r"""What :func:`power_iteration` found, and how far to trust it.

    ``eigenvalue`` is the Rayleigh quotient $\lambda = v^\top A v$ of the
    last unit vector $v$, and ``residual`` is
    $\lVert A v - \lambda v \rVert / |\lambda|$: for a symmetric $A$ some
    eigenvalue lies within ``residual`` $\cdot |\lambda|$ of ``eigenvalue``
    (a check that needs no knowledge of the answer). ``converged`` says
    whether ``residual`` fell to the tolerance within the iterations
    allowed; ``history`` holds the Rayleigh quotient after every iteration.
    ``float(result)`` is the eigenvalue.
    """

    eigenvalue: float
    residual: float
    iterations: int
    converged: bool
    history: tuple[float, ...]

    def __float__(self) -> float:
        return self.eigenvalue


def power_iteration(matvec: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor, max_iters: int = 200,
                    tol: float = 1e-3) -> PowerIteration:
    r"""The eigenvalue of largest *magnitude* of a symmetric linear map $A$.

    Repeats $v \leftarrow A v / \lVert A v \rVert$ from ``v0``. After each
    product it computes $\lambda = v^\top A v$ and the relative residual
    $\lVert A v - \lambda v \rVert / |\lambda|$, and stops once that is at
    most ``tol``, or after ``max_iters`` products. The component of $v$
    along the eigenvector of the eigenvalue largest in magnitude grows
    fastest, by the ratio of the two largest magnitudes per step, so that
    is the eigenvalue found, whatever its sign: a negative one if the most
    negative eigenvalue is larger in magnitude than the most positive.

    Shapes:
        v0: (P,), not zero; ``matvec`` maps (P,) -> (P,).
    """
    check_callable(matvec, "matvec")
    check_tensor(v0, "v0", floating=True)
    if v0.dim() != 1 or v0.numel() == 0 or not bool(v0.abs().sum() > 0):
        raise ValueError(f"v0 must be a non-zero vector (P,); got shape {tuple(v0.shape)}")
    max_iters = check_int(max_iters, "max_iters", 1)
    tol = check_float(tol, "tol", 0.0)
    v = v0 / v0.norm()
    history: list[float] = []
    residual = math.inf
    for i in range(1, max_iters + 1):
        Av = matvec(v)
        if not isinstance(Av, torch.Tensor) or Av.shape != v.shape:
            got = f"shape {tuple(Av.shape)}" if isinstance(Av, torch.Tensor) else describe(Av)
            raise ValueError(f"matvec must map a vector of shape {tuple(v.shape)} to one of the same shape; "
                             f"got {got}")
        norm = Av.norm().item()
        if norm == 0.0:  # A v = 0: v lies in the null space, and A has the eigenvalue 0
            history.append(0.0)
            return PowerIteration(0.0, 0.0, i, True, tuple(history))
        lam = float((Av * v).sum())  # v^T A v, with |v| = 1
        history.append(lam)
        residual = (Av - lam * v).norm().item() / abs(lam) if lam else math.inf
        if residual <= tol:
            return PowerIteration(lam, residual, i, True, tuple(history))
        v = Av / norm
    return PowerIteration(history[-1], residual, max_iters, False, tuple(history))


def top_hessian_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor, max_iters: int = 200,
                           tol: float = 1e-3, seed: int = 0) -> PowerIteration:
    r"""The eigenvalue largest in magnitude of the Hessian of the cross-entropy
    of ``model`` on ``(x, y)`` with respect to all its parameters.

    :func:`power_iteration` with Hessian-vector products $Hv$ (two backward
    passes each; the Hessian itself is never formed), from a random start
    drawn with ``seed``. At a minimum every eigenvalue is $\ge 0$, and near
    one the negative eigenvalues are small, so a positive, converged result
    is the largest eigenvalue $\lambda_\max$: the *sharpness* of the
    minimum. By the second-order expansion, no shift of the weights by a
    distance $r$ raises the loss by more than about
    $\tfrac12 \lambda_\max r^2$.

    Shapes:
        x: (N, ...) inputs, y: (N,) class indices -> a :class:`PowerIteration`
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    check_tensor(x, "x", floating=True)
    check_tensor(y, "y")
    if y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"y must be (N,) class indices for x of {len(x)} examples; got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class indices; got dtype {y.dtype}")
    max_iters = check_int(max_iters, "max_iters", 1)
    tol = check_float(tol, "tol", 0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat_grad = torch.cat([g.reshape(-1) for g in grads])  # (P,)

        def hvp(v: torch.Tensor) -> torch.Tensor:  # (P,) -> (P,)
            Hv = torch.autograd.grad(flat_grad, params, v, retain_graph=True)
            return torch.cat([h.reshape(-1) for h in Hv]).detach()

        gen = torch.Generator(device=x.device).manual_seed(check_int(seed, "seed", 0))
        v0 = torch.randn(flat_grad.shape, generator=gen, device=flat_grad.device, dtype=flat_grad.dtype)
        return power_iteration(hvp, v0, max_iters, tol)
    finally:
        model.train(was_training)


# the parity check ------------------------------------------------------------------------------

def parameter_trajectory(make_optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                         steps: int = 200, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All parameters of a tiny MLP after each of ``steps`` updates.

    The MLP (4 inputs, 16 tanh units, 3 classes) and 64 random examples are
    made from ``seed``; step ``i`` uses minibatch ``i mod 4`` of 16
    examples (the same for every optimizer). Two optimizers that compute
    the same update give the same trajectory up to rounding.

    Shapes:
        returns (steps + 1, P): the initial parameters, then after each step;
        P = 4*16 + 16 + 16*3 + 3 = 131.
    """
    check_callable(make_optimizer, "make_optimizer")
    steps = check_int(steps, "steps", 1)
    seed = check_int(seed, "seed", 0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype; got {describe(dtype)}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=gen, dtype=dtype)  # (N, 4)
    y = torch.randint(0, 3, (64,), generator=gen)  # (N,)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=dtype))
    optimizer = _check_made_optimizer(make_optimizer(model.parameters()))
    flat = lambda: torch.cat([p.detach().flatten() for p in model.parameters()])  # noqa: E731
    path = [flat()]
    with one_thread():  # 131 parameters: threads would only cost
        for i in range(steps):
            batch = slice(16 * (i % 4), 16 * (i % 4) + 16)
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            path.append(flat())
    return torch.stack(path)  # (steps + 1, P)


# what a step costs ------------------------------------------------------------------------------

def step_op_calls(optimizer: torch.optim.Optimizer, inside: bool = False) -> dict[str, int]:
    """How often one ``optimizer.step()`` calls each PyTorch operator.

    Runs one step under the profiler (CPU) and counts the top-level ATen
    operator calls (``aten::mul``, ``aten::_foreach_add_``, ...), not the
    calls these make inside. Every call costs a fixed overhead (Python, the
    dispatcher), and an elementwise one reads and writes its tensors once.
    With ``inside=True`` it counts, instead, the operators that the
    top-level ones call directly: where a device has no kernel of its own
    for an operator (the ``_foreach_*`` ones on a CPU), PyTorch runs it as
    a loop that calls the per-tensor operator once per tensor, and those
    calls show here. Run a first step before, so that the optimizer's
    state exists; the step changes the parameters as usual.

    Shapes:
        none: returns {operator name: number of calls}.
    """
    from torch.profiler import ProfilerActivity, profile

    from .bench import _quiet_profiler

    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    inside = check_bool(inside, "inside")
    with torch.no_grad(), _quiet_profiler(), profile(activities=[ProfilerActivity.CPU]) as prof:
        optimizer.step()

    def is_aten(event) -> bool:
        return event is not None and event.name.startswith("aten::")

    def is_top(event) -> bool:
        return is_aten(event) and not is_aten(event.cpu_parent)

    counts: dict[str, int] = {}
    for event in prof.events():
        if is_aten(event) and (is_top(event.cpu_parent) if inside else is_top(event)):
            counts[event.name] = counts.get(event.name, 0) + 1
    return dict(sorted(counts.items()))
