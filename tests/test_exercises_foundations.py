"""The foundations chapter's exercises: right answers pass, typical wrong ones
get a hint that never gives the solution away, and the rules are enforced,
however the answer reaches what they forbid."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import grad as pre_bound_grad  # names bound before a check: the reviews' bypass
from torch.func import grad as pre_bound_func_grad
from torch.nn.functional import logsigmoid as pre_bound_logsigmoid
from torch.nn.functional import softplus as pre_bound_softplus

from dlbook import exercises
from dlbook import foundations as fd
from dlbook.foundations import logsumexp as pre_bound_logsumexp
from dlbook.foundations import numerical_gradient as pre_bound_numerical_gradient
from exercise_helpers import assert_fails_with_hint, assert_passes, check, wrong_cases

# The right answers, as a reader would write them ---------------------------------


def _bce(z, y):
    return z.clamp_min(0) - z * y + torch.log1p(torch.exp(-z.abs()))


def _bce_where(z, y):  # another right answer: the two branches written out
    pos = z + torch.log1p(torch.exp(-z))
    neg = torch.log1p(torch.exp(z))
    return torch.where(z >= 0, pos, neg) - z * y


def _bce_relu_if(z, y):  # relu for max(z, 0), and one `if` on a tensor: allowed
    if bool((z == 0).all()):
        return torch.full_like(z, math.log(2))
    return F.relu(z) - z * y + torch.log1p(torch.exp(-z.abs()))


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


def _tanh_grads_per_example(x, y, weights, biases):
    """Another right answer: one example at a time, outer products, an index per label."""
    gw = [torch.zeros_like(w) for w in weights]
    gb = [torch.zeros_like(b) for b in biases]
    for i in range(len(x)):
        hs = [x[i]]
        for W, b in zip(weights[:-1], biases[:-1]):
            hs.append(torch.tanh(hs[-1] @ W + b))
        z = hs[-1] @ weights[-1] + biases[-1]
        e = torch.exp(z - z.max())
        delta = e / e.sum()
        delta[y[i]] -= 1
        delta = delta / len(x)
        for l in reversed(range(len(weights))):
            gw[l] += torch.outer(hs[l], delta)
            gb[l] += delta
            if l > 0:
                delta = (1 - hs[l] ** 2) * (weights[l] @ delta)
    return gw, gb


def _tanh_grads_jacobians(x, y, weights, biases):
    """Another right answer, wasteful on purpose: every Jacobian built as a matrix."""
    hs = [x]
    for W, b in zip(weights[:-1], biases[:-1]):
        hs.append(torch.tanh(hs[-1] @ W + b))
    z = hs[-1] @ weights[-1] + biases[-1]
    p = torch.softmax(z, 1)
    J = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (B, K, K)
    dloss_dp = -F.one_hot(y, z.shape[1]).to(z.dtype) / p / len(x)
    delta = (J @ dloss_dp[:, :, None])[:, :, 0]
    gw, gb = [], []
    for l in reversed(range(len(weights))):
        gw.insert(0, torch.einsum("bi,bj->ij", hs[l], delta))
        gb.insert(0, delta.sum(0))
        if l > 0:
            D = torch.diag_embed(1 - hs[l] ** 2)  # (B, C, C)
            delta = (D @ (delta @ weights[l].T)[:, :, None])[:, :, 0]
    return gw, gb


SWEEP_EPS = math.sqrt(math.log(2 * 8 / 0.05) / (2 * 5000))  # 8 configurations, 5,000 images
SWEEP_N = math.log(2 * 8 / 0.05) / (2 * 0.0001 ** 2)  # each accuracy within half the gap


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
    "foundations.sweep_epsilon": (SWEEP_EPS, False, SWEEP_N),
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


def _eps(models, n=5000, p_bad=0.05):
    return math.sqrt(math.log(2 * models / p_bad) / (2 * n))


WRONG = {
    "foundations.bce_with_logits": [
        (_naive_bce, "log meet 0"), (_unstable_softplus_bce, "overflow"),
        (lambda z, y: _bce(z, y).mean(), "one loss per element"), (lambda z, y: _bce(z, 1 - y), "should be"),
        (lambda z, y: _bce(z, y).tolist(), "tensor"), (3, "function"),
        (lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none"), "the rule"),
        (lambda z, y: F.softplus(z) - z * y, "the rule"),
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
        (lambda x, y, W, b: tuple([g.float() for g in gs] for gs in _tanh_grads(x, y, W, b)), "float32"),
        (lambda x, y, W, b: tuple([g.tolist() for g in gs] for gs in _tanh_grads(x, y, W, b)), "tensor"),
        (7, "function"),
    ],
    "foundations.sweep_epsilon": [
        ((_eps(4), False, SWEEP_N), "|H| = 4"), ((_eps(1), False, SWEEP_N), "|H| = 1"),
        ((math.sqrt(math.log(8 / 0.05) / (2 * 5000)), False, SWEEP_N), "lost a factor"),  # one-sided
        ((_eps(8, n=55_000), False, SWEEP_N), "number of examples"),
        ((_eps(8, n=10_000), False, SWEEP_N), "number of examples"),
        ((0.0049, False, SWEEP_N), "standard error"),
        ((math.sqrt(math.log(320) / 5000), False, SWEEP_N), "solve for eps"),  # 2 n eps^2 lost its 2
        ((SWEEP_EPS, True, SWEEP_N), "in which directions"),
        ((SWEEP_EPS, "no", SWEEP_N), "True or False"),
        ((SWEEP_EPS, False, SWEEP_N / 4), "other order"),  # eps = the gap, not half of it
        ((SWEEP_EPS, False, math.log(2 * 2 / 0.05) / (2 * 0.0001 ** 2)), "another |H|"),
        ((SWEEP_EPS, False, 5000), "not it"),
        ((SWEEP_EPS, False), "three values"), ((SWEEP_EPS, False, float("nan")), "positive number"),
        (0.024, "three values"),
    ],
    "foundations.nine_pieces": [
        (_random_net(), "linear pieces"), (_tent_in_wide_layers(), "4 linear pieces"),
        (fd.sawtooth_net(3), "exactly"), (nn.Sequential(nn.Linear(1, 9), nn.ReLU(), nn.Linear(9, 1)), "exactly"),
        (nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)), "exactly"),
        (nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1)), "exactly"),
        ("9 pieces", "answer with the network"),
    ],
}

# What a hint must never print: the explanation's key facts
SECRETS = {
    "foundations.bce_with_logits": ["max(z, 0) - z y + log1p(exp(-|z|))", "log1p", "max(z, 0)"],
    "foundations.tanh_backprop": ["(1 - h^2)", "1 - tanh^2", "(softmax(z) - onehot(y)) / B"],
    "foundations.sweep_epsilon": ["|H| = 8", "0.024", "2.9e8", "288", "half the gap", "= 8"],
    "foundations.nine_pieces": ["3 relu(x) - 6 relu(x - 1/3)", "[3, -6, 6]", "zigzag"],
}


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_right_answer_passes(key, capsys):
    assert_passes(key, RIGHT[key], capsys)


@pytest.mark.parametrize("answer", [_bce_where, _bce_relu_if])
def test_other_right_bces_pass(answer, capsys):
    assert_passes("foundations.bce_with_logits", answer, capsys)


@pytest.mark.parametrize("answer", [_tanh_grads_per_example, _tanh_grads_jacobians])
def test_other_right_backprops_pass(answer, capsys):
    """A loop over the examples and explicit Jacobian matrices cost more than the
    vectorized formula, but far less than the work budget."""
    assert_passes("foundations.tanh_backprop", answer, capsys)


def test_exact_backprop_passes_on_every_fresh_draw(capsys):
    """The check draws new network sizes every time: the right answer passes all of them."""
    for _ in range(5):
        result, out = check("foundations.tanh_backprop", _tanh_grads, capsys)
        assert result.passed, out


@pytest.mark.parametrize("key, answer, hint", wrong_cases(WRONG))
def test_wrong_answer_fails_with_a_hint_and_no_solution(key, answer, hint, capsys):
    assert_fails_with_hint(key, answer, hint, SECRETS[key], capsys)


def test_secrets_are_really_in_the_explanations():
    """The strings the hints must not print are the solutions."""
    for key, secrets in SECRETS.items():
        assert secrets[0] in exercises.get(key).explanation, key


def test_every_wrong_list_names_an_exercise():
    assert set(WRONG) == set(RIGHT) == set(SECRETS)


# Exercise 1: every way to have a library compute the loss is refused ----------------

def _stack_zero(z):
    return torch.stack([torch.zeros_like(z), z])  # (2, ...): log(e^0 + e^z) along dim 0


BCE_BYPASSES = {
    "F.softplus bound before the check": lambda z, y: pre_bound_softplus(z) - z * y,
    "F.logsigmoid bound before the check": lambda z, y: -y * pre_bound_logsigmoid(z)
    - (1 - y) * pre_bound_logsigmoid(-z),
    "torch.logcumsumexp over [0, z]": lambda z, y: torch.logcumsumexp(_stack_zero(z), 0)[1] - z * y,
    "torch.logaddexp(0, z)": lambda z, y: torch.logaddexp(torch.tensor(0.0, dtype=z.dtype), z) - z * y,
    "torch.logaddexp2": lambda z, y: torch.logaddexp2(torch.zeros_like(z), z / math.log(2)) * math.log(2) - z * y,
    "F.binary_cross_entropy_with_logits": lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none"),
    "torch.binary_cross_entropy_with_logits": lambda z, y: torch.binary_cross_entropy_with_logits(
        z, y, None, None, 0),
    "nn.BCEWithLogitsLoss": lambda z, y: nn.BCEWithLogitsLoss(reduction="none")(z, y),
    "logsumexp of stack([0, z])": lambda z, y: torch.logsumexp(_stack_zero(z), 0) - z * y,
    "torch.special.logsumexp": lambda z, y: torch.special.logsumexp(_stack_zero(z), 0) - z * y,
    "torch.ops.aten.softplus": lambda z, y: torch.ops.aten.softplus(z, 1, 20) - z * y,
    "nn.Softplus": lambda z, y: nn.Softplus()(z) - z * y,
    "F.soft_margin_loss(|z|, 1)": lambda z, y: z.clamp_min(0) - z * y + F.soft_margin_loss(
        z.abs(), torch.ones_like(z), reduction="none"),
    "log_softmax of two logits": lambda z, y: -(F.log_softmax(_stack_zero(z).movedim(0, -1), -1)
                                                 * torch.stack([1 - y, y], -1)).sum(-1),
    "F.cross_entropy with soft targets": lambda z, y: F.cross_entropy(
        _stack_zero(z).movedim(0, -1).reshape(-1, 2), torch.stack([1 - y, y], -1).reshape(-1, 2),
        reduction="none").reshape(z.shape),
    "torch.distributions.Bernoulli": lambda z, y: -torch.distributions.Bernoulli(
        logits=z, validate_args=False).log_prob(y),
    "torch.distributions.Binomial": lambda z, y: -(
        y * torch.distributions.Binomial(1, logits=z).log_prob(torch.ones_like(z))
        + (1 - y) * torch.distributions.Binomial(1, logits=z).log_prob(torch.zeros_like(z))),
    "fd.logsumexp": lambda z, y: fd.logsumexp(_stack_zero(z), 0) - z * y,
    "fd.logsumexp bound before the check": lambda z, y: pre_bound_logsumexp(_stack_zero(z), 0) - z * y,
    "np.logaddexp on z.numpy()": lambda z, y: torch.from_numpy(np.logaddexp(0, z.numpy())) - z * y,
    "np.logaddexp on the tensor": lambda z, y: torch.as_tensor(np.logaddexp(0, z)) - z * y,
    "Python floats, one by one": lambda z, y: torch.tensor(
        [max(float(v), 0) + math.log1p(math.exp(-abs(float(v)))) for v in z], dtype=z.dtype) - z * y,
    "a list, then NumPy": lambda z, y: torch.tensor(np.logaddexp(0, z.tolist()), dtype=z.dtype) - z * y,
}


@pytest.mark.parametrize("name", sorted(BCE_BYPASSES))
def test_bce_with_logits_bypasses_refused(name, capsys):
    result, out = check("foundations.bce_with_logits", BCE_BYPASSES[name], capsys)
    assert not result.passed, f"{name} got through"
    assert "the rule is: write the stable formula yourself" in out, out
    assert "Your answer" in out, out  # and it says what the answer used


def test_bce_bypasses_compute_the_right_loss_without_the_rule():
    """Each bypass would pass on its numbers alone: only the rule stops it."""
    z = torch.tensor([-1000.0, -3.0, 0.0, 3.0, 1000.0], dtype=torch.float64)
    for target in (0.0, 0.25, 1.0):
        y = torch.full_like(z, target)
        for name, answer in BCE_BYPASSES.items():
            got = answer(z, y)
            if "Binomial" in name and target == 0.25:
                continue  # its y = 0 and y = 1 terms, mixed: exact as well, up to lgamma's rounding
            assert torch.allclose(got, _bce(z, y), rtol=1e-9, atol=1e-9), name


# Exercise 2: no autograd, no finite differences ----------------------------------

def _loss(x, y, weights, biases):
    h = x
    for W, b in zip(weights[:-1], biases[:-1]):
        h = torch.tanh(h @ W + b)
    return F.cross_entropy(h @ weights[-1] + biases[-1], y)


def _loss_without_backward_ops(x, y, weights, biases):
    """tanh and the cross-entropy from exp and log: autograd's backward of these runs
    no operator named *_backward, so only the functions' refusal catches it."""
    h = x
    for W, b in zip(weights[:-1], biases[:-1]):
        h = 1 - 2 / (torch.exp(2 * (h @ W + b)) + 1)
    z = h @ weights[-1] + biases[-1]
    return (torch.log(torch.exp(z).sum(1)) - z.gather(1, y[:, None])[:, 0]).mean()


def _split(grads, n):
    return list(grads[:n]), list(grads[n:])


def _with_grad(x, y, weights, biases, backward):
    with torch.enable_grad():
        params = [p.clone().requires_grad_() for p in weights + biases]
        loss = _loss(x, y, params[:len(weights)], params[len(weights):])
        return _split(backward(loss, params), len(weights))


def _backward(loss, params):
    loss.backward()
    return [p.grad for p in params]


def _functional(transform):
    def answer(x, y, weights, biases):
        n = len(weights)
        grads = transform(lambda params: _loss_without_backward_ops(x, y, params[:n], params[n:]))(
            list(weights + biases))
        return _split(grads, n)
    return answer


def _func_vjp(x, y, weights, biases):
    n = len(weights)
    _, pullback = torch.func.vjp(lambda *ps: _loss_without_backward_ops(x, y, ps[:n], ps[n:]), *weights, *biases)
    return _split(pullback(torch.tensor(1.0, dtype=x.dtype)), n)


def _autograd_functional(x, y, weights, biases):
    n = len(weights)
    with torch.enable_grad():
        grads = torch.autograd.functional.jacobian(lambda *ps: _loss(x, y, ps[:n], ps[n:]),
                                                   tuple(weights + biases))
    return _split(grads, n)


def _forward_ad(x, y, weights, biases):
    """One forward-mode pass per parameter, with dual numbers."""
    import torch.autograd.forward_ad as fwAD

    params, grads = weights + biases, []
    for i, p in enumerate(params):
        g = torch.zeros_like(p)
        for j in range(p.numel()):
            tangent = torch.zeros_like(p)
            tangent.view(-1)[j] = 1
            with fwAD.dual_level():
                dual = list(params)
                dual[i] = fwAD.make_dual(p, tangent)
                g.view(-1)[j] = fwAD.unpack_dual(
                    _loss_without_backward_ops(x, y, dual[:len(weights)], dual[len(weights):])).tangent
        grads.append(g)
    return _split(grads, len(weights))


def _finite_difference(eps, central=True):
    def answer(x, y, weights, biases):
        grads = []
        for p in weights + biases:
            g = torch.zeros_like(p)
            flat = p.view(-1)
            for j in range(flat.numel()):
                old = flat[j].clone()
                flat[j] = old + eps
                plus = _loss(x, y, weights, biases)
                flat[j] = old - eps if central else old
                minus = _loss(x, y, weights, biases)
                flat[j] = old
                g.view(-1)[j] = (plus - minus) / (2 * eps if central else eps)
            grads.append(g)
        return _split(grads, len(weights))
    return answer


def _richardson(x, y, weights, biases, eps=1e-3):
    """A fourth-order central difference: about 1e-13 in float64."""
    grads = []
    for p in weights + biases:
        g = torch.zeros_like(p)
        flat = p.view(-1)
        for j in range(flat.numel()):
            old = flat[j].clone()
            values = []
            for k in (2, 1, -1, -2):
                flat[j] = old + k * eps
                values.append(_loss(x, y, weights, biases))
            flat[j] = old
            g.view(-1)[j] = (-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * eps)
        grads.append(g)
    return _split(grads, len(weights))


def _complex_step(x, y, weights, biases, h=1e-30):
    """The complex-step derivative, exact to rounding: one complex forward pass per parameter."""
    n, params = len(weights), [p.to(torch.complex128) for p in weights + biases]

    def loss(ps):
        hidden = x.to(torch.complex128)
        for W, b in zip(ps[:n - 1], ps[n:-1]):
            hidden = torch.tanh(hidden @ W + b)
        z = hidden @ ps[n - 1] + ps[-1]
        return (torch.log(torch.exp(z).sum(1)) - z.gather(1, y[:, None])[:, 0]).mean()

    grads = []
    for i, p in enumerate(params):
        g = torch.zeros(p.shape, dtype=torch.float64)
        for j in range(p.numel()):
            q = p.clone()
            q.view(-1)[j] += 1j * h
            g.view(-1)[j] = loss(params[:i] + [q] + params[i + 1:]).imag / h
        grads.append(g)
    return _split(grads, n)


def _finite_difference_batched(x, y, weights, biases, eps=1e-6):
    """Every parameter perturbed at once, as a batch of P networks: few calls, P times the work."""
    shapes = [p.shape for p in weights + biases]
    sizes = [p.numel() for p in weights + biases]
    theta = torch.cat([p.reshape(-1) for p in weights + biases])
    n = len(weights)

    def losses(thetas):  # (N, P) -> (N,)
        parts = torch.split(thetas, sizes, 1)
        Ws = [q.reshape(-1, *s) for q, s in zip(parts[:n], shapes[:n])]
        bs = [q.reshape(-1, 1, *s) for q, s in zip(parts[n:], shapes[n:])]
        h = x.expand(len(thetas), *x.shape)
        for W, b in zip(Ws[:-1], bs[:-1]):
            h = torch.tanh(h @ W + b)
        z = h @ Ws[-1] + bs[-1]
        picked = z.gather(2, y.expand(len(thetas), -1)[:, :, None])[:, :, 0]
        return (torch.log(torch.exp(z).sum(2)) - picked).mean(1)

    E = eps * torch.eye(len(theta), dtype=theta.dtype)
    g = (losses(theta + E) - losses(theta - E)) / (2 * eps)
    return _split([part.reshape(s) for part, s in zip(torch.split(g, sizes), shapes)], n)


def _python_floats(x, y, weights, biases):
    """The network in Python floats (read with item()), differentiated numerically."""
    read = [[[w[i, j].item() for j in range(w.shape[1])] for i in range(w.shape[0])] for w in weights]
    return _tanh_grads(x, y, weights, biases) if read else None


def _in_a_thread(x, y, weights, biases):
    """Autograd in another thread, where the check's no_grad and operator guards do not reach."""
    from concurrent.futures import ThreadPoolExecutor

    def job():
        params = [p.clone().requires_grad_() for p in weights + biases]
        return pre_bound_grad(_loss(x, y, params[:len(weights)], params[len(weights):]), params)

    with ThreadPoolExecutor(1) as pool:
        return _split(pool.submit(job).result(), len(weights))


BACKPROP_BYPASSES = {
    "torch.autograd.grad bound before the check": lambda x, y, W, b: _with_grad(
        x, y, W, b, lambda loss, params: pre_bound_grad(loss, params)),
    "loss.backward()": lambda x, y, W, b: _with_grad(x, y, W, b, _backward),
    "torch.func.grad": _functional(torch.func.grad),
    "torch.func.grad bound before the check": _functional(pre_bound_func_grad),
    "torch.func.jacrev": _functional(torch.func.jacrev),
    "torch.func.jacfwd": _functional(torch.func.jacfwd),
    "torch.func.vjp": _func_vjp,
    "torch.autograd.functional.jacobian": _autograd_functional,
    "forward-mode AD (make_dual)": _forward_ad,
    "fd.numerical_gradient": lambda x, y, W, b: _split(fd.numerical_gradient(lambda: _loss(x, y, W, b), W + b),
                                                      len(W)),
    "fd.numerical_gradient bound before the check": lambda x, y, W, b: _split(
        pre_bound_numerical_gradient(lambda: _loss(x, y, W, b), W + b), len(W)),
    "a central difference, eps 1e-4": _finite_difference(1e-4),
    "a central difference, eps 1e-5": _finite_difference(1e-5),
    "a central difference, eps 1e-6": _finite_difference(1e-6),
    "a central difference, eps 1e-7": _finite_difference(1e-7),
    "a central difference, eps 1e-8": _finite_difference(1e-8),
    "a one-sided difference, eps 1e-7": _finite_difference(1e-7, central=False),
    "a fourth-order difference": _richardson,
    "the complex step": _complex_step,
    "a difference batched over the parameters": _finite_difference_batched,
    "Python floats from item()": _python_floats,
    "Python lists from tolist()": lambda x, y, W, b: _tanh_grads(x, y, W, b) if W[0].tolist() else None,
    "autograd in a thread": _in_a_thread,
    "tensors that require grad": lambda x, y, W, b: tuple([g.requires_grad_() for g in gs]
                                                          for gs in _tanh_grads(x, y, W, b)),
}


@pytest.mark.parametrize("name", sorted(BACKPROP_BYPASSES))
def test_tanh_backprop_bypasses_refused(name, capsys):
    result, out = check("foundations.tanh_backprop", BACKPROP_BYPASSES[name], capsys)
    assert not result.passed, f"{name} got through"
    assert "the rule is: compute the gradients by hand" in out, out
    assert "Your answer" in out, out


@pytest.mark.parametrize("name", ["a fourth-order difference", "the complex step", "a central difference, eps 1e-6",
                                  "forward-mode AD (make_dual)"])
def test_numerical_bypasses_are_accurate_without_the_rule(name):
    """These would pass the tolerance on a small network: the work budget stops them, not their error."""
    from dlbook.exercises.foundations import _autograd_grads, _close, _tanh_case

    x, y, weights, biases = _tanh_case((3, 5, 4), 6, 0)
    got = BACKPROP_BYPASSES[name](x, y, [w.clone() for w in weights], [b.clone() for b in biases])
    right = _autograd_grads(x, y, weights, biases)
    error = max(((a - b).abs() / (1 + b.abs())).max().item() for a, b in zip(got[0] + got[1], right[0] + right[1]))
    assert error < 1e-8, (name, error)
    if name != "a central difference, eps 1e-6":
        assert all(_close(a, b) for a, b in zip(got[0] + got[1], right[0] + right[1])), name


def test_the_work_budget_separates_backprop_from_finite_differences():
    """On the check's largest network a backward pass by hand, however written, costs a few
    times the reference; a finite difference costs hundreds of times more."""
    from dlbook.exercises.foundations import WORK_FACTOR, _count_work, _hidden_grads, _tanh_case

    x, y, weights, biases = _tanh_case((5, 28, 28, 4), 6, 0)  # the smallest "large" network drawn
    reference = _count_work(_hidden_grads, x, y, weights, biases, lambda h: 1 - h ** 2)
    for answer in (_tanh_grads, _tanh_grads_per_example, _tanh_grads_jacobians):
        assert _count_work(answer, x, y, weights, biases) < WORK_FACTOR * reference / 4
    one_sided = _count_work(_finite_difference(1e-7, central=False), x, y, [w.clone() for w in weights],
                            [b.clone() for b in biases])
    assert one_sided > 3 * WORK_FACTOR * reference


# Exercise 3 ---------------------------------------------------------------------------

def test_sweep_numbers_are_as_the_explanation_says():
    text = exercises.get("foundations.sweep_epsilon").explanation
    assert f"{SWEEP_EPS:.3f}" in text and f"{SWEEP_N:.1e}".replace("+0", "") in text
    assert round(SWEEP_N / 70_000, -3) == 4000  # "about 4,000 times all of Fashion-MNIST"
    assert 2 * SWEEP_EPS > 100 * 0.0002  # the gap is far inside the bound's uncertainty


@pytest.mark.parametrize("answer", [
    (0.024, False, 2.88e8), (np.float64(SWEEP_EPS), np.bool_(False), np.int64(288_416_050)),
    [torch.tensor(SWEEP_EPS), False, SWEEP_N],
])
def test_sweep_answers_of_every_number_type(answer, capsys):
    result, out = check("foundations.sweep_epsilon", answer, capsys)
    assert result.passed, out


# Everything is restored, and stubs say "not yet" -----------------------------------------

def test_the_rules_are_enforced_and_everything_is_restored(capsys):
    real = (F.binary_cross_entropy_with_logits, torch.logsumexp, torch.Tensor.backward, torch.autograd.grad,
            fd.numerical_gradient, fd.log_softmax, torch.Tensor.numpy, torch.Tensor.tolist)
    codes = [f.__code__ for f in (torch.Tensor.backward, torch.autograd.grad, fd.numerical_gradient,
                                  fd.logsumexp, torch.func.grad)]
    check("foundations.bce_with_logits", BCE_BYPASSES["fd.logsumexp bound before the check"], capsys)
    check("foundations.bce_with_logits", BCE_BYPASSES["np.logaddexp on z.numpy()"], capsys)
    check("foundations.tanh_backprop", BACKPROP_BYPASSES["loss.backward()"], capsys)
    check("foundations.tanh_backprop", BACKPROP_BYPASSES["torch.func.grad"], capsys)
    check("foundations.tanh_backprop", BACKPROP_BYPASSES["fd.numerical_gradient"], capsys)
    assert (F.binary_cross_entropy_with_logits, torch.logsumexp, torch.Tensor.backward, torch.autograd.grad,
            fd.numerical_gradient, fd.log_softmax, torch.Tensor.numpy, torch.Tensor.tolist) == real
    assert [f.__code__ for f in (torch.Tensor.backward, torch.autograd.grad, fd.numerical_gradient,
                                 fd.logsumexp, torch.func.grad)] == codes
    assert "backward" in vars(torch.Tensor)  # torch.Tensor defines backward itself: restored, not deleted
    assert "numpy" not in vars(torch.Tensor)  # inherited from TensorBase: the override is deleted
    z = torch.tensor(1.0, requires_grad=True)
    (2 * z).backward()
    assert z.grad.item() == 2.0 and torch.is_grad_enabled()
    assert F.softplus(torch.zeros(1)).item() == pytest.approx(math.log(2))
    assert np.asarray(torch.ones(2)).tolist() == [1.0, 1.0]


def test_nine_pieces_reference_has_nine():
    assert fd.count_linear_pieces(_nine_piece_net()) == 9


@pytest.mark.parametrize("key", ["foundations.bce_with_logits", "foundations.tanh_backprop"])
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out


def test_student_stub_of_a_value_is_not_yet(capsys):
    result, out = check("foundations.sweep_epsilon", None, capsys)
    assert not result.passed and "three values" in out
