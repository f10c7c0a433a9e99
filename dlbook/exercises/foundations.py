"""Exercises of the foundations chapter."""

from __future__ import annotations

import contextlib
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import Wrong, as_number, exercise, forbid_functions, forbid_ops, near

# How the rules are enforced -----------------------------------------------------------
# An answer runs inside three guards. forbid_ops refuses torch's operators by name, however
# the answer reached them (F.softplus bound to another name before the check,
# torch.ops.aten.softplus, a torch.distributions loss built on them). forbid_functions
# refuses Python functions (dlbook's, torch.autograd's) by their code, so a name bound
# before the check refuses too. _Work watches what the answer computes: how many numbers
# it produces, how many tensor entries it reads back as Python numbers, and, under the
# no-autograd rule, whether it switches gradient recording or forward-mode AD on. NumPy
# and SciPy are shut out by refusing the ways out of a tensor (TENSOR_EXITS).

TENSOR_EXITS = tuple((torch.Tensor, name) for name in ("numpy", "__array__", "tolist", "__dlpack__"))


class _Work:
    """A torch dispatch mode that counts, and enforces the quantitative part of a rule.

    ``done`` counts the numbers the answer produces with torch's operators (the
    sizes of every operator's outputs); past ``budget`` it is refused, with
    ``what`` saying what the budget is. ``reads`` is the most tensor entries
    it may turn into Python numbers (``item()``, ``float()``, an ``if`` on a
    tensor). With ``no_autograd``, any operator run while gradient recording
    is on, or inside forward-mode AD's dual level, is refused (the checks run
    answers under ``torch.no_grad()``, on tensors that do not require grad).
    """

    def __init__(self, rule: str, budget: int | None = None, what: str = "", reads: int | None = None,
                 no_autograd: bool = False):
        import torch.autograd.forward_ad as forward_ad
        from torch.utils._python_dispatch import TorchDispatchMode

        guard = self
        self.done, self.read = 0, 0

        def refuse(why: str):
            raise Wrong(f"the rule is: {rule}. Your answer {why}.")

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if no_autograd and torch.is_grad_enabled():
                    refuse("switched autograd's recording on (torch.enable_grad or set_grad_enabled)")
                if no_autograd and getattr(forward_ad, "_current_level", -1) >= 0:
                    refuse("used forward-mode automatic differentiation (a dual level)")
                if reads is not None and func.overloadpacket.__name__ == "_local_scalar_dense":
                    guard.read += 1
                    if guard.read > reads:
                        refuse(f"read more than {reads} tensor entries as Python numbers (item(), float(), "
                               f"an if on a tensor): work with whole tensors")
                out = func(*args, **(kwargs or {}))
                guard.done += sum(t.numel() for t in (out if isinstance(out, (tuple, list)) else (out,))
                                  if isinstance(t, torch.Tensor))
                if budget is not None and guard.done > budget:
                    refuse(f"computed more than {what}")
                return out

        self.mode = Mode()

    def __enter__(self) -> "_Work":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def _count_work(function, *args) -> int:
    """How many numbers ``function(*args)`` produces with torch's operators."""
    with torch.no_grad(), _Work("count") as counter:
        function(*args)
    return counter.done


# 1. a stable binary cross-entropy ------------------------------------------------

def _reference_bce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max(z, 0) - z y + log(1 + exp(-|z|)): never overflows."""
    return z.clamp_min(0) - z * y + torch.log1p(torch.exp(-z.abs()))


BCE_RULE = ("write the stable formula yourself, with PyTorch's elementwise operations on whole tensors: "
            "no library loss, log-sigmoid, softplus or log-sum-exp (PyTorch's, dlbook's, NumPy's or SciPy's)")
# torch's operators that compute log(1 + e^z) or a log-sum-exp in one call. Softmax's and
# cross_entropy's come as _log_softmax; nn.BCEWithLogitsLoss, torch.distributions.Bernoulli
# and ContinuousBernoulli as binary_cross_entropy_with_logits; logsigmoid as
# log_sigmoid_forward; F.soft_margin_loss(z, -1) is log(1 + e^z). torch.distributions.Binomial's
# log_prob, written in plain operators, is refused as a function, and by its lgamma.
LOG_SUM_EXP_OPS = ("softplus", "log_sigmoid", "logsumexp", "logcumsumexp", "logaddexp", "log_softmax",
                   "binary_cross_entropy", "soft_margin_loss", "lgamma")


def _forbid_log_sum_exp():
    """Everything that computes a stable log-sigmoid, softplus or log-sum-exp for the reader."""
    from .. import foundations

    stack = contextlib.ExitStack()
    stack.enter_context(forbid_ops(BCE_RULE, *LOG_SUM_EXP_OPS))
    stack.enter_context(forbid_functions(
        BCE_RULE, *((foundations, name) for name in ("logsumexp", "log_softmax", "softmax", "cross_entropy")),
        (torch.distributions.Binomial, "log_prob"), *TENSOR_EXITS))
    stack.enter_context(_Work(BCE_RULE, reads=4))  # an element-by-element loop reads all 11
    return stack


_LOGITS = [-1000.0, -100.0, -20.0, -3.0, -0.5, 0.0, 0.5, 3.0, 20.0, 100.0, 1000.0]


@exercise(
    "foundations.bce_with_logits",
    "Write bce_with_logits(z, y): the binary cross-entropy -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] "
    "of a logit z and a target y in [0, 1], element by element (same shape as z), finite for every finite z, "
    "even z = -1000 or 1000, in float32 and float64. Write it with PyTorch's elementwise operations on whole "
    "tensors: no library loss, log-sigmoid, softplus or log-sum-exp (PyTorch's, dlbook's, NumPy's or "
    "SciPy's); the check refuses them at the level of PyTorch's operators.",
    "log sigmoid(z) = -log(1 + e^(-z)) and log(1 - sigmoid(z)) = -z - log(1 + e^(-z)), so the loss is "
    "z - z y + log(1 + e^(-z)); for negative z, e^(-z) overflows, so write z = max(z, 0) - |z| ... and get "
    "max(z, 0) - z y + log1p(exp(-|z|)): the exponent is never positive, and the log's argument lies in "
    "(1, 2]. It is the two-class case of the log-sum-exp trick (log(e^0 + e^z) = max + log(1 + e^(-|z|))).",
)
def _bce_with_logits(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function bce_with_logits(z, y).")
    for dtype in (torch.float64, torch.float32):
        z = torch.tensor(_LOGITS, dtype=dtype)
        for target in (0.0, 1.0, 0.25):
            y = torch.full_like(z, target)
            with _forbid_log_sum_exp():
                got = answer(z, y)
            if not isinstance(got, torch.Tensor):
                raise Wrong(f"return a tensor; you returned a {type(got).__name__}.")
            if got.shape != z.shape:
                raise Wrong(f"return one loss per element, of shape {tuple(z.shape)} like z; yours has shape "
                            f"{tuple(got.shape)} (a mean or a sum?).")
            got = got.detach()
            bad = ~torch.isfinite(got)
            if bad.any():
                where = z[bad][0].item()
                raise Wrong(f"for y = {target} and z = {where:g} ({str(dtype).replace('torch.', '')}) your loss "
                            f"is {got[bad][0].item()}: where does an exponential overflow, or a log meet 0?")
            expected = _reference_bce(z.double(), y.double())
            tol = 1e-9 if dtype == torch.float64 else 1e-4
            wrong = (got.double() - expected).abs() > tol * (1 + expected.abs())
            if wrong.any():
                i = int(wrong.nonzero()[0])
                raise Wrong(f"for y = {target} and z = {z[i].item():g} your loss is {got[i].item():.6g}; it "
                            f"should be {expected[i].item():.6g}. Check the formula at moderate z first, then "
                            f"how you rewrote it for large |z|.")


# 2. backpropagation through tanh layers and a softmax ---------------------------

def _tanh_forward(x, weights, biases):
    hs = [x]
    for W, b in zip(weights[:-1], biases[:-1]):
        hs.append(torch.tanh(hs[-1] @ W + b))
    return hs, hs[-1] @ weights[-1] + biases[-1]


def _tanh_case(widths, B, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, widths[0], generator=gen, dtype=torch.float64)
    y = torch.randint(0, widths[-1], (B,), generator=gen)
    weights = [torch.randn(a, b, generator=gen, dtype=torch.float64) / math.sqrt(a)
               for a, b in zip(widths[:-1], widths[1:])]
    biases = [0.1 * torch.randn(b, generator=gen, dtype=torch.float64) for b in widths[1:]]
    return x, y, weights, biases


def _tanh_cases():
    """Networks of fresh random sizes at every check, the first with about 1,500
    parameters (a finite difference there costs hundreds of times a backward pass),
    and two fixed small ones: a softmax regression, and a batch of 1."""
    draw = random.Random()
    big = (draw.randint(5, 8), draw.randint(28, 36), draw.randint(28, 36), draw.randint(4, 6))
    cases = [(big, draw.randint(6, 10), draw.randrange(10**6)), ((3, 4), 5, 0), ((2, 3, 3, 3, 2), 1, 3)]
    for depth in (1, 2):
        widths = (draw.randint(2, 6), *(draw.randint(3, 8) for _ in range(depth)), draw.randint(2, 5))
        cases.append((widths, draw.randint(2, 9), draw.randrange(10**6)))
    return cases


def _autograd_grads(x, y, weights, biases):
    params = [w.clone().requires_grad_() for w in weights] + [b.clone().requires_grad_() for b in biases]
    n = len(weights)
    _, logits = _tanh_forward(x, params[:n], params[n:])
    grads = torch.autograd.grad(F.cross_entropy(logits, y), params)
    return list(grads[:n]), list(grads[n:])


def _hidden_grads(x, y, weights, biases, derivative):
    """Backpropagation by hand, with ``derivative(h)`` the activation's derivative:
    1 - h^2 is the right answer; h (1 - h), a sigmoid's, is the typical mistake."""
    hs, logits = _tanh_forward(x, weights, biases)
    delta = (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)) / len(x)
    gw, gb = [], []
    for l in reversed(range(len(weights))):
        gw.insert(0, hs[l].T @ delta)
        gb.insert(0, delta.sum(0))
        if l > 0:
            delta = derivative(hs[l]) * (delta @ weights[l].T)
    return gw, gb


BACKPROP_RULE = ("compute the gradients by hand, with PyTorch's tensor operations: no autograd (reverse or "
                 "forward mode), no finite differences")
WORK_FACTOR = 50  # a backward pass by hand, however it is written, costs far less; a finite difference far more


def _forbid_autograd(budget: int, parameters: int, reads: int):
    """No autograd and no numerical differentiation: autograd's functions by their code
    (pre-bound names too), autograd's derivative operators (*_backward) and forward-mode
    AD, gradient recording switched on, and a budget of work that one or two evaluations
    of the network per parameter exceed many times over."""
    import torch.autograd.forward_ad as forward_ad
    import torch.autograd.functional as autograd_functional

    from .. import foundations

    targets = [(torch.autograd, "grad"), (torch.autograd, "backward"), (torch.Tensor, "backward"),
               (forward_ad, "make_dual"), (forward_ad, "unpack_dual"), (forward_ad.dual_level, "__enter__"),
               (foundations, "numerical_gradient"), *TENSOR_EXITS]
    targets += [(autograd_functional, name) for name in ("jacobian", "hessian", "vjp", "jvp", "hvp", "vhp")]
    targets += [(torch.func, name) for name in ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd",
                                                "hessian", "linearize")]
    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(forbid_ops(BACKPROP_RULE, "backward", "_make_dual", "unpack_dual"))
    stack.enter_context(forbid_functions(BACKPROP_RULE, *targets))
    stack.enter_context(_Work(BACKPROP_RULE, budget=budget, reads=reads, no_autograd=True,
                              what=f"{WORK_FACTOR} times the numbers a backward pass by hand computes, on a "
                                   f"network of {parameters:,} parameters: one or two evaluations of the "
                                   f"network per parameter are a finite difference"))
    return stack


def _close(a, b) -> bool:
    return a.shape == b.shape and bool(((a - b).abs() <= 1e-10 * (1 + b.abs())).all())


@exercise(
    "foundations.tanh_backprop",
    "Write tanh_mlp_grads(x, y, weights, biases) -> (grads of the weights, grads of the biases), two lists, "
    "for the network h = tanh(h W + b) for every layer but the last, logits z = h W + b for the last, and the "
    "loss F.cross_entropy(z, y) (the mean over the batch). Weights are input-major, (C_in, C_out). Compute "
    "the gradients by hand with PyTorch's tensor operations: no autograd (reverse or forward mode), no "
    "finite differences. The check runs your function without gradient recording, on networks of fresh "
    "random sizes, and counts its work: one evaluation of the network per parameter is far over budget.",
    "The output layer's delta is (softmax(z) - onehot(y)) / B, predicted minus true, divided by B because the "
    "loss is a mean. Going down, delta_hidden = (1 - h^2) * (delta_above @ W_above^T), since tanh' = 1 - tanh^2; "
    "every layer's gradients are h_below^T @ delta and delta summed over the batch, as in the sigmoid network. "
    "The whole backward pass costs about two forward passes, whatever the number of parameters; a finite "
    "difference costs two forward passes per parameter.",
)
def _tanh_backprop(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function tanh_mlp_grads(x, y, weights, biases).")
    for widths, B, seed in _tanh_cases():
        x, y, weights, biases = _tanh_case(widths, B, seed)
        parameters = sum(w.numel() + b.numel() for w, b in zip(weights, biases))
        by_hand = _count_work(_hidden_grads, x, y, weights, biases, lambda h: 1 - h ** 2)
        with _forbid_autograd(WORK_FACTOR * by_hand, parameters, reads=4 * B + 16):
            got = answer(x.clone(), y.clone(), [w.clone() for w in weights], [b.clone() for b in biases])
        where = f"for layer widths {list(widths)} and a batch of {B}"
        if not isinstance(got, (tuple, list)) or len(got) != 2 or not all(
                isinstance(g, (tuple, list)) and len(g) == len(weights) for g in got):
            raise Wrong(f"{where}: return two lists, ({len(weights)} weight gradients, {len(weights)} bias "
                        f"gradients).")
        gw, gb = (list(g) for g in got)
        if not all(isinstance(g, torch.Tensor) for g in gw + gb):
            raise Wrong("every gradient must be a tensor.")
        if any(g.requires_grad or g.grad_fn is not None for g in gw + gb):
            raise Wrong(f"the rule is: {BACKPROP_RULE}. Your answer returned tensors that autograd records "
                        f"(they require grad or have a grad_fn): return plain tensors computed by hand.")
        for g, p, kind in zip(gw + gb, weights + biases, ["weights"] * len(gw) + ["biases"] * len(gb)):
            if tuple(g.shape) != tuple(p.shape):
                raise Wrong(f"{where}: a gradient of the {kind} must have its parameter's shape "
                            f"{tuple(p.shape)}; yours is {tuple(g.shape)}.")
        rw, rb = _autograd_grads(x, y, weights, biases)
        if all(_close(a, b) for a, b in zip(gw + gb, rw + rb)):
            continue
        error = max(((a.double() - b).abs() / (1 + b.abs())).max().item() for a, b in zip(gw + gb, rw + rb))
        if error < 1e-4:
            raise Wrong(f"{where} your gradients are close to the right ones, but only to about {error:.0e}: "
                        f"gradients from exact formulas agree to rounding (about 1e-15 in float64). Is "
                        f"something approximated, or computed in float32?")
        if all(_close(a, b * B) for a, b in zip(gw + gb, rw + rb)) and B > 1:
            raise Wrong(f"{where} your gradients are {B} times too large: the loss is the mean over the batch.")
        if not (_close(gw[-1], rw[-1]) and _close(gb[-1], rb[-1])):
            raise Wrong(f"{where} the last layer's gradients are wrong. What is the derivative of the mean "
                        f"cross-entropy with respect to the logits?")
        sw, sb = _hidden_grads(x, y, weights, biases, lambda h: h * (1 - h))
        if all(_close(a, b) for a, b in zip(gw + gb, sw + sb)):
            raise Wrong(f"{where} the hidden layers' gradients are those of a sigmoid network: what is the "
                        f"derivative of tanh?")
        raise Wrong(f"{where} the last layer is right but a hidden layer is not. Write the delta of each hidden "
                    f"layer from the delta above it: which weights, transposed or not, and which derivative?")


# 3. what a validation set can tell about the configurations compared on it --------

SWEEP_MODELS, SWEEP_N, SWEEP_P_BAD, SWEEP_GAP = 8, 5000, 0.05, 0.0002  # the softmax sweep of the chapter


def _bound_eps(num_models: float, n: float, p_bad: float = SWEEP_P_BAD) -> float:
    """The eps at which 2 |H| exp(-2 n eps^2) = p_bad."""
    return math.sqrt(math.log(2 * num_models / p_bad) / (2 * n))


def _bound_n(num_models: float, eps: float, p_bad: float = SWEEP_P_BAD) -> float:
    """The n at which 2 |H| exp(-2 n eps^2) = p_bad."""
    return math.log(2 * num_models / p_bad) / (2 * eps ** 2)


@exercise(
    "foundations.sweep_epsilon",
    "The softmax-regression sweep of the chapter chose its configuration by validation accuracy on 5,000 "
    "images. Answer (eps, meaningful, n_needed): the eps that the union bound guarantees with probability "
    "0.95 (P_bad = 0.05) for every configuration the sweep compared at once; whether the gap between the "
    "best two validation accuracies (0.8602 against 0.8600, one image) shows that the first is truly the "
    "better one (True or False); and how many validation images the bound would need, for the same "
    "configurations and P_bad, to show that a gap of 0.0002 is real.",
    "The sweep compared 4 peak learning rates times 2 run lengths, |H| = 8 configurations, so eps = "
    "sqrt(ln(2 * 8 / 0.05) / (2 * 5000)) = 0.024. Each of the two best validation accuracies may be up to "
    "0.024 from its true accuracy, in opposite directions, so their true difference can lie anywhere "
    "between about -0.048 and +0.048: a gap of 0.0002 means nothing (False), and any of the configurations "
    "near the top is as good a choice. To show that the first is better, each accuracy must be within half "
    "the gap, eps = 0.0001: n = ln(320) / (2 * 0.0001^2) = 2.9e8 images (288 million, about 4,000 times all "
    "of Fashion-MNIST). A validation set can rank configurations that differ by a few points, not by one image.",
)
def _sweep_epsilon(answer) -> None:
    example = "(0.05, True, 1e6)"
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        raise Wrong(f"answer with three values (eps, meaningful, n_needed), such as {example}.")
    eps, meaningful, n_needed = as_number(answer[0]), answer[1], as_number(answer[2])
    for name, value, given in (("eps", eps, answer[0]), ("n_needed", n_needed, answer[2])):
        if value is None or value <= 0:
            raise Wrong(f"{name} is a positive number; you gave {given!r}.")
    right_eps = _bound_eps(SWEEP_MODELS, SWEEP_N)
    if not near(eps, right_eps, 2e-3):
        models = next((h for h in range(1, 65) if h != SWEEP_MODELS and near(eps, _bound_eps(h, SWEEP_N), 2e-3)),
                      None)
        if models is not None:
            raise Wrong(f"your eps, {eps:.4g}, is what the bound gives for |H| = {models}, or for a bound that "
                        f"lost a factor. Count every configuration whose validation accuracy the choice "
                        f"looked at, and keep every factor of 2 |H| exp(-2 N eps^2).")
        if any(near(eps, _bound_eps(h, n), 2e-3) for h in range(1, 65) for n in (500, 10_000, 55_000, 60_000)):
            raise Wrong(f"your eps, {eps:.4g}, comes from another number of examples: the bound's N is the "
                        f"number of images the compared accuracies were measured on.")
        if abs(eps - 0.0049) < 0.0002:
            raise Wrong("that is about the standard error of one validation accuracy. The bound speaks about "
                        "every configuration compared at once, with probability 0.95.")
        raise Wrong(f"your eps, {eps:.4g}, is not it. Set 2 |H| exp(-2 N eps^2) equal to P_bad, with the "
                    f"chapter's N and the number of configurations compared, and solve for eps step by step.")
    if not isinstance(meaningful, (bool, np.bool_)):
        raise Wrong(f"meaningful is True or False; you gave {meaningful!r}.")
    if meaningful:
        raise Wrong("eps is right. Now put the gap of 0.0002 beside it: how far may each of the two "
                    "validation accuracies be from its true accuracy, and in which directions?")
    right_n = _bound_n(SWEEP_MODELS, SWEEP_GAP / 2)
    if near(n_needed, right_n, 0.01):
        return
    implied = math.sqrt(math.log(2 * SWEEP_MODELS / SWEEP_P_BAD) / (2 * n_needed))
    if near(n_needed, _bound_n(SWEEP_MODELS, SWEEP_GAP), 0.01):
        raise Wrong(f"with n = {n_needed:.3g} images each accuracy is within {implied:.2g} of its truth, with "
                    f"probability 0.95. Could the true accuracies of the two still be in the other order?")
    if any(near(n_needed, _bound_n(h, SWEEP_GAP / 2), 0.01) for h in range(1, 65) if h != SWEEP_MODELS):
        raise Wrong(f"your n = {n_needed:.3g} uses another |H|: the two best were found by comparing all the "
                    f"configurations, so the guarantee must hold for all of them, as for eps.")
    raise Wrong(f"your n = {n_needed:.3g} is not it. How close to its true accuracy must each of the two "
                f"be for a gap of 0.0002 to settle the order, and what N gives that eps?")


# 4. nine linear pieces from two small layers ------------------------------------

@exercise(
    "foundations.nine_pieces",
    "Build nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)) and set its "
    "weights so that it has at least 9 linear pieces on [0, 1] (counted by foundations.count_linear_pieces).",
    "Generalize the tent map: with three units the first layer can compute a zigzag g(x) = 3 relu(x) - "
    "6 relu(x - 1/3) + 6 relu(x - 2/3), which maps each third of [0, 1] onto all of [0, 1]. The second layer "
    "applies g again to g(x) (weights [3, -6, 6] in every row, biases 0, -1/3, -2/3), and the output layer "
    "forms g once more: g(g(x)) has 3 x 3 = 9 pieces. One hidden layer of 6 units has at most 7.",
)
def _nine_pieces(answer) -> None:
    from .. import foundations

    shape = "nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))"
    if not isinstance(answer, nn.Sequential):
        raise Wrong(f"answer with the network {shape}.")
    kinds = [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    sizes = [(1, 3), None, (3, 3), None, (3, 1)]
    layers = list(answer)
    if len(layers) != 5 or any(type(layer) is not kind or (size and (layer.in_features, layer.out_features) != size)
                               for layer, kind, size in zip(layers, kinds, sizes)):
        found = ", ".join(type(layer).__name__ + (f"({layer.in_features}, {layer.out_features})"
                                                  if isinstance(layer, nn.Linear) else "") for layer in layers)
        raise Wrong(f"the network must be exactly {shape}; yours is {found}.")
    if not all(torch.isfinite(p).all() for p in answer.parameters()):
        raise Wrong("the weights must be finite numbers.")
    pieces = foundations.count_linear_pieces(answer, 0.0, 1.0)
    if pieces >= 9:
        return
    raise Wrong(f"your network has {pieces} linear pieces on [0, 1]. The first layer can bend [0, 1] at most "
                f"3 times, and adding more bends the same way is not enough: how did the tent map double "
                f"the number of pieces with every layer?")
