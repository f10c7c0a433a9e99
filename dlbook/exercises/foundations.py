"""Exercises of the foundations chapter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import Wrong, exercise, forbid, is_int


# 1. a stable binary cross-entropy ------------------------------------------------

def _reference_bce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max(z, 0) - z y + log(1 + exp(-|z|)): never overflows."""
    return z.clamp_min(0) - z * y + torch.log1p(torch.exp(-z.abs()))


def _forbid_log_sum_exp():
    """Everything that computes a stable log-sigmoid, softplus or log-sum-exp for the reader."""
    from .. import foundations

    return forbid("write the stable formula yourself: no library loss, log-sigmoid, softplus or log-sum-exp",
                  (F, "binary_cross_entropy_with_logits"), (F, "binary_cross_entropy"), (F, "logsigmoid"),
                  (F, "softplus"), (F, "cross_entropy"), (F, "log_softmax"), (F, "nll_loss"),
                  (torch, "logaddexp"), (torch, "logaddexp2"), (torch, "logsumexp"), (torch, "log_softmax"),
                  (torch.Tensor, "logsumexp"), (torch.Tensor, "log_softmax"), (torch.Tensor, "logaddexp"),
                  (torch.special, "logsumexp"), (torch.special, "log_softmax"),
                  (foundations, "logsumexp"), (foundations, "log_softmax"), (foundations, "softmax"),
                  (foundations, "cross_entropy"))


_LOGITS = [-1000.0, -100.0, -20.0, -3.0, -0.5, 0.0, 0.5, 3.0, 20.0, 100.0, 1000.0]


@exercise(
    "foundations.bce_with_logits",
    "Write bce_with_logits(z, y): the binary cross-entropy -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] "
    "of a logit z and a target y in [0, 1], element by element (same shape as z), finite for every finite z, "
    "even z = -1000 or 1000, in float32 and float64. No library loss, log-sigmoid, softplus or log-sum-exp.",
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


def _autograd_grads(x, y, weights, biases):
    params = [w.clone().requires_grad_() for w in weights] + [b.clone().requires_grad_() for b in biases]
    n = len(weights)
    _, logits = _tanh_forward(x, params[:n], params[n:])
    grads = torch.autograd.grad(F.cross_entropy(logits, y), params)
    return list(grads[:n]), list(grads[n:])


def _sigmoid_hidden_grads(x, y, weights, biases):
    """The typical mistake: the sigmoid's derivative h (1 - h) in place of tanh's."""
    hs, logits = _tanh_forward(x, weights, biases)
    delta = (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).double()) / len(x)
    gw, gb = [], []
    for l in reversed(range(len(weights))):
        gw.insert(0, hs[l].T @ delta)
        gb.insert(0, delta.sum(0))
        if l > 0:
            delta = hs[l] * (1 - hs[l]) * (delta @ weights[l].T)
    return gw, gb


def _forbid_autograd():
    from .. import foundations

    return forbid("compute the gradients by hand: no autograd, no finite differences",
                  (torch.autograd, "grad"), (torch.autograd, "backward"), (torch.Tensor, "backward"),
                  (torch.func, "grad"), (torch.func, "grad_and_value"), (torch.func, "vjp"),
                  (torch.func, "jacrev"), (torch.func, "jacfwd"), (torch.autograd.functional, "jacobian"),
                  (torch.autograd.functional, "vjp"), (foundations, "numerical_gradient"))


def _close(a, b) -> bool:
    return a.shape == b.shape and bool(((a - b).abs() <= 1e-8 * (1 + b.abs())).all())


@exercise(
    "foundations.tanh_backprop",
    "Write tanh_mlp_grads(x, y, weights, biases) -> (grads of the weights, grads of the biases), two lists, "
    "for the network h = tanh(h W + b) for every layer but the last, logits z = h W + b for the last, and the "
    "loss F.cross_entropy(z, y) (the mean over the batch). Weights are input-major, (C_in, C_out). No autograd.",
    "The output layer's delta is (softmax(z) - onehot(y)) / B, predicted minus true, divided by B because the "
    "loss is a mean. Going down, delta_hidden = (1 - h^2) * (delta_above @ W_above^T), since tanh' = 1 - tanh^2; "
    "every layer's gradients are h_below^T @ delta and delta summed over the batch, as in the sigmoid network.",
)
def _tanh_backprop(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function tanh_mlp_grads(x, y, weights, biases).")
    cases = [((3, 4), 5, 0), ((4, 6, 3), 7, 1), ((5, 8, 6, 4), 9, 2), ((2, 3, 3, 3, 2), 1, 3)]
    for widths, B, seed in cases:
        x, y, weights, biases = _tanh_case(widths, B, seed)
        with _forbid_autograd():
            got = answer(x, y, [w.clone() for w in weights], [b.clone() for b in biases])
        where = f"for layer widths {list(widths)} and a batch of {B}"
        if not isinstance(got, (tuple, list)) or len(got) != 2 or not all(
                isinstance(g, (tuple, list)) and len(g) == len(weights) for g in got):
            raise Wrong(f"{where}: return two lists, ({len(weights)} weight gradients, {len(weights)} bias "
                        f"gradients).")
        gw, gb = (list(g) for g in got)
        if not all(isinstance(g, torch.Tensor) for g in gw + gb):
            raise Wrong("every gradient must be a tensor.")
        for g, p, kind in zip(gw + gb, weights + biases, ["weights"] * len(gw) + ["biases"] * len(gb)):
            if tuple(g.shape) != tuple(p.shape):
                raise Wrong(f"{where}: a gradient of the {kind} must have its parameter's shape "
                            f"{tuple(p.shape)}; yours is {tuple(g.shape)}.")
        rw, rb = _autograd_grads(x, y, weights, biases)
        if all(_close(a, b) for a, b in zip(gw + gb, rw + rb)):
            continue
        if all(_close(a, b * B) for a, b in zip(gw + gb, rw + rb)) and B > 1:
            raise Wrong(f"{where} your gradients are {B} times too large: the loss is the mean over the batch.")
        if not (_close(gw[-1], rw[-1]) and _close(gb[-1], rb[-1])):
            raise Wrong(f"{where} the last layer's gradients are wrong. What is the derivative of the mean "
                        f"cross-entropy with respect to the logits?")
        sw, sb = _sigmoid_hidden_grads(x, y, weights, biases)
        if all(_close(a, b) for a, b in zip(gw + gb, sw + sb)):
            raise Wrong(f"{where} the hidden layers' gradients are those of a sigmoid network: what is the "
                        f"derivative of tanh?")
        raise Wrong(f"{where} the last layer is right but a hidden layer is not. Write the delta of each hidden "
                    f"layer from the delta above it: which weights, transposed or not, and which derivative?")


# 3. how many models a validation set can judge ----------------------------------

def _max_models(n: int, eps: float, p_bad: float) -> int:
    return math.floor(p_bad / 2 * math.exp(2 * n * eps ** 2))


@exercise(
    "foundations.max_models",
    "Write max_models(n, eps, p_bad): the largest number of models |H| for which the chapter's bound "
    "2 |H| exp(-2 n eps^2) guarantees, with probability at least 1 - p_bad, that every model's accuracy on "
    "n validation examples is within eps of its true accuracy. Return an int (0 when not even one model "
    "is guaranteed). Do not call foundations.bad_sample_bound.",
    "Solve 2 |H| exp(-2 n eps^2) <= p_bad for |H|: |H| <= (p_bad / 2) exp(2 n eps^2), and take the floor. "
    "The allowance grows exponentially with n eps^2. With our 5,000 validation images and p_bad = 0.05 it is "
    "1 model at eps = 0.02 and 202 at eps = 0.03: a validation split that judges many models can only "
    "promise coarse accuracies.",
)
def _max_models_check(answer) -> None:
    from .. import foundations

    if not callable(answer):
        raise Wrong("answer with a function max_models(n, eps, p_bad).")
    cases = [(5000, 0.03, 0.05), (5000, 0.02, 0.05), (1000, 0.05, 0.05), (100, 0.05, 0.05),
             (20000, 0.02, 0.01), (2500, 0.04, 0.1), (10000, 0.01, 0.01)]
    for n, eps, p_bad in cases:
        with forbid("derive the count yourself", (foundations, "bad_sample_bound")):
            got = answer(n, eps, p_bad)
        right = _max_models(n, eps, p_bad)
        where = f"for n = {n}, eps = {eps}, p_bad = {p_bad}"
        if not is_int(got):
            if isinstance(got, float) and got == right:
                raise Wrong(f"{where} your answer {got!r} is a float; a number of models is an int.")
            raise Wrong(f"{where} you return {got!r}; return a whole number (an int).")
        if got == right:
            continue
        if got == math.floor(p_bad * math.exp(2 * n * eps ** 2)) or got == math.floor(
                p_bad / 2 * math.exp(n * eps ** 2)):
            raise Wrong(f"{where} you return {got}. Write the bound again, factor by factor, and solve the "
                        f"inequality for |H|.")
        if got == right + 1:
            raise Wrong(f"{where} you return {got}, one model too many: with that many the bound exceeds "
                        f"p_bad. Round the right way.")
        if got < 0:
            raise Wrong(f"{where} you return {got}: when not even one model is guaranteed, the answer is 0.")
        raise Wrong(f"{where} you return {got}. Set the bound equal to p_bad and solve for |H|.")


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
