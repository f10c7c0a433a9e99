r"""Foundations: linear and softmax regression, the MLP, backpropagation by
hand, generalization and regularization.

Shapes use the book's legend: B batch, C features, K classes; a network's
layer widths are ``C_0`` (its input) to ``C_D`` (its output; ``D`` is the depth). Weights of the
hand-written networks are stored input-major, $W^{(l)} \in
\mathbb{R}^{C_{l-1} \times C_l}$, so that a layer computes $h W + b$ as in
the chapter's equations (``nn.Linear`` stores the transpose).

==========================  ================================================
group                       functions
==========================  ================================================
autograd                    :func:`computation_graph`, :func:`draw_graph`
linear regression           :func:`synthetic_linear_data`, :func:`least_squares`,
                            :func:`linear_risk`, :func:`sgd_error_growth`
softmax and cross-entropy   :func:`logsumexp`, :func:`softmax`,
                            :func:`log_softmax`, :func:`cross_entropy`,
                            :func:`cross_entropy_grad`,
                            :func:`softmax_squared_error` (a classifier's
                            predictions: :func:`dlbook.predictions`)
information                 :func:`entropy`, :func:`cross_entropy_between`,
                            :func:`kl_divergence`
perceptron                  :func:`perceptron`
networks                    :func:`mlp`, :data:`ACTIVATIONS`,
                            :func:`sawtooth_net`, :func:`breakpoints`,
                            :func:`count_linear_pieces`
backpropagation             :func:`sigmoid_mlp_forward`, :func:`delta_rule`,
                            :func:`numerical_gradient`,
                            :func:`max_relative_error`
generalization              :func:`polynomial_features`, :func:`kfold_indices`,
                            :func:`bad_sample_bound`,
                            :func:`best_of_random_guessers`
regularization              :func:`dropout`, :func:`mixup`, :class:`MixupStep`,
                            :func:`ensemble_probs`
initialization, norms       :func:`xavier_normal_`, :func:`xavier_uniform_`,
                            :func:`kaiming_normal_`,
                            :func:`preactivation_variances`,
                            :func:`preactivation_gradient_norms`, :func:`layer_norm`
2-D toy problems            :func:`two_moons`, :func:`train_toy_classifier`,
                            :func:`plot_decision_regions`
==========================  ================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (check_bool, check_callable, check_float, check_int, check_module,
                      check_tensor, describe)


def _check_floating(x, name: str, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """``x`` when it is a floating tensor with one of the numbers of dimensions ``dims``."""
    check_tensor(x, name)
    if dims is not None and x.dim() not in dims:
        wanted = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be a {wanted} tensor; got shape {tuple(x.shape)}")
    check_tensor(x, name, floating=True)
    return x


def _check_labels(y, name: str, n: int, num_classes: int) -> torch.Tensor:
    """``y`` when it is an integer tensor of shape (n,) with values in [0, num_classes)."""
    check_tensor(y, name)
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{name} must hold integer class labels; got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},); got {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}); got values in [{int(y.min())}, {int(y.max())}]")
    return y


# autograd ---------------------------------------------------------------------

def computation_graph(output: torch.Tensor, names: dict[str, torch.Tensor] | None = None
                      ) -> tuple[dict[int, str], list[tuple[int, int]]]:
    """The graph autograd recorded for ``output``: nodes and edges.

    Walks ``output.grad_fn`` back to the leaves. A leaf (a tensor with
    ``requires_grad=True``) is named after its key in ``names``; an
    operation after its backward node (``MulBackward0`` -> ``mul``).
    Tensors that do not require gradients are not recorded by autograd and
    do not appear.

    Returns:
        nodes: ``{node id: label}``; edges: ``(from, to)`` pairs in the
        direction of the forward computation.

    Shapes:
        output: any shape (usually a scalar loss) -> a graph
    """
    check_tensor(output, "output")
    if output.grad_fn is None:
        raise ValueError("output has no grad_fn: compute it from tensors with requires_grad=True")
    names = dict(names or {})
    for key, t in names.items():
        check_tensor(t, f"names[{key!r}]")
    leaf_names = {id(t): key for key, t in names.items()}
    nodes: dict[int, str] = {}
    edges: list[tuple[int, int]] = []

    def visit(fn) -> int:
        key = id(fn)
        if key in nodes:
            return key
        if type(fn).__name__ == "AccumulateGrad":
            nodes[key] = leaf_names.get(id(fn.variable), "leaf")
        else:
            nodes[key] = type(fn).__name__.removesuffix("Backward0").removesuffix("Backward1").lower()
        for parent, _ in fn.next_functions:
            if parent is not None:
                edges.append((visit(parent), key))
        return key

    visit(output.grad_fn)
    return nodes, edges


def draw_graph(output: torch.Tensor, names: dict[str, torch.Tensor] | None = None,
               title: str = "Computation graph", ax=None):
    """Draw :func:`computation_graph` left to right; leaves blue, operations orange.

    A node's column is the length of the longest path from a leaf to it.
    Returns the Figure.

    Shapes:
        output: any shape (usually a scalar loss) -> a Figure
    """
    import matplotlib.pyplot as plt

    nodes, edges = computation_graph(output, names)
    level = {k: 0 for k in nodes}
    for _ in nodes:  # longest path from a leaf: relax the edges |nodes| times
        for a, b in edges:
            level[b] = max(level[b], level[a] + 1)
    columns: dict[int, list[int]] = {}
    for k in nodes:
        columns.setdefault(level[k], []).append(k)
    position = {}
    for col, keys in columns.items():
        for row, k in enumerate(keys):
            position[k] = (col, row - (len(keys) - 1) / 2)
    if ax is None:
        width = 1.6 * (max(columns) + 1) + 1
        fig, ax = plt.subplots(figsize=(width, 2.6))
    else:
        fig = ax.figure
    for a, b in edges:
        ax.annotate("", xy=position[b], xytext=position[a],
                    arrowprops=dict(arrowstyle="->", color="gray", shrinkA=18, shrinkB=18))
    for k, label in nodes.items():
        leaf = level[k] == 0
        ax.text(*position[k], label, ha="center", va="center", fontsize=11,
                bbox=dict(boxstyle="round,pad=0.4", fc="#cfe2f3" if leaf else "#fce5cd",
                          ec="#3d85c6" if leaf else "#e69138"))
    ax.set_xlim(-0.6, max(columns) + 0.6)
    rows = max(len(v) for v in columns.values())
    ax.set_ylim(-rows / 2 - 0.2, rows / 2 + 0.2)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


# linear regression ------------------------------------------------------------

def synthetic_linear_data(w: torch.Tensor, b: float, n: int, noise: float = 0.01,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Inputs $x \sim \mathcal{N}(0, I)$ and targets $y = x w + b + \xi$,
    $\xi \sim \mathcal{N}(0, \text{noise}^2)$.

    Shapes:
        w: (C,) -> x: (n, C), y: (n, 1)
    """
    w = _check_floating(w, "w", (1,))
    b = check_float(b, "b")
    n = check_int(n, "n", 1)
    noise = check_float(noise, "noise", 0.0)
    x = torch.randn(n, len(w), generator=generator, dtype=w.dtype)  # (n, C)
    y = x @ w + b + noise * torch.randn(n, generator=generator, dtype=w.dtype)  # (n,)
    return x, y[:, None]


def least_squares(x: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The minimizer of $L(w, b) = \frac{1}{N}\lVert x w + b - y\rVert^2 +
    \frac{\lambda}{2}\lVert w\rVert^2$ in closed form ($\lambda$ =
    ``weight_decay``; the bias is not penalized).

    Centring removes the bias: with $\bar x, \bar y$ the means, $w$ solves
    $(X_c^\top X_c / N + \tfrac{\lambda}{2} I)\, w = X_c^\top y_c / N$ and
    $b = \bar y - \bar x w$. The system is solved as a least-squares problem
    (``torch.linalg.lstsq`` on the centred data stacked on
    $\sqrt{N\lambda/2}\, I$), in float64, which is accurate even for badly
    conditioned features such as high powers of $x$. $\lambda$ is the
    ``weight_decay`` of ``torch.optim.SGD`` on ``F.mse_loss``.

    Shapes:
        x: (N, C), y: (N,) or (N, 1) -> w: (C,) or (C, 1), b: () or (1,)
    """
    x = _check_floating(x, "x", (2,))
    y = _check_floating(y, "y", (1, 2))
    if len(y) != len(x) or (y.dim() == 2 and y.shape[1] != 1):
        raise ValueError(f"y must have shape ({len(x)},) or ({len(x)}, 1) for x of shape {tuple(x.shape)}; "
                         f"got {tuple(y.shape)}")
    lam = check_float(weight_decay, "weight_decay", 0.0)
    N, C = x.shape
    xd, yd = x.double(), y.double().reshape(N, 1)
    x_mean, y_mean = xd.mean(0), yd.mean(0)  # (C,), (1,)
    a, rhs = xd - x_mean, yd - y_mean  # (N, C), (N, 1)
    if lam > 0:
        a = torch.cat([a, math.sqrt(N * lam / 2) * torch.eye(C, dtype=torch.float64)])  # (N + C, C)
        rhs = torch.cat([rhs, torch.zeros(C, 1, dtype=torch.float64)])  # (N + C, 1)
    w = torch.linalg.lstsq(a, rhs, driver="gelsd").solution  # (C, 1)
    b = y_mean - x_mean @ w  # (1,)
    if y.dim() == 1:
        w, b = w[:, 0], b[0]
    return w.to(x.dtype), b.to(x.dtype)


def sgd_error_growth(x: torch.Tensor, lr: float, batch_size: int, epochs: int = 20,
                     generator: torch.Generator | None = None) -> float:
    r"""The typical factor by which one SGD step multiplies the error of a
    linear least-squares model: above 1 the iterates diverge, below 1 they
    converge (to the noise floor).

    With the loss $\frac1B\lVert \tilde X_B \theta - y_B\rVert^2$ of a batch
    ($\tilde X_B$ its rows of ``x`` with a column of ones for the bias), one
    step maps the error $e = \theta - \theta^*$ to
    $(I - \eta H_B)\, e - \eta\, g_B(\theta^*)$, with the batch's Hessian
    $H_B = \frac2B \tilde X_B^\top \tilde X_B$. The second term is bounded
    noise; whether the error grows is decided by the product of the matrices
    $I - \eta H_B$ along the run. This follows that product over ``epochs``
    epochs of shuffled batches (as a ``BatchLoader`` with ``shuffle=True``
    draws them) and returns the geometric mean of
    $\lVert e_{t+1}\rVert / \lVert e_t\rVert$ over the steps: the
    exponential of the top Lyapunov exponent, estimated. With one batch of
    all the data it is the spectral radius $\max_i |1 - \eta\rho_i|$ of
    gradient descent. A single batch's own limit $2/\rho_\text{max}(H_B)$ does
    not decide: the batches that curve less pull the error back.

    Shapes:
        x: (N, C) -> a float
    """
    x = _check_floating(x, "x", (2,))
    lr = check_float(lr, "lr", 0.0)
    batch_size = check_int(batch_size, "batch_size", 1)
    epochs = check_int(epochs, "epochs", 1)
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)  # (N, C + 1)
    eye = torch.eye(design.shape[1], dtype=torch.float64)
    error = torch.ones(design.shape[1], dtype=torch.float64)  # any start; the product forgets it
    log_growth, steps = 0.0, 0
    for _ in range(epochs):
        for rows in torch.randperm(len(design), generator=generator).split(batch_size):
            batch = design[rows]  # (B, C + 1)
            error = (eye - lr * 2 * batch.T @ batch / len(batch)) @ error
            norm = torch.linalg.vector_norm(error)
            if norm == 0:  # the step removed the error exactly
                return 0.0
            log_growth += math.log(norm.item())
            error = error / norm
            steps += 1
    return math.exp(log_growth / steps)


def linear_risk(w: torch.Tensor, b, true_w: torch.Tensor, true_b: float, noise: float) -> torch.Tensor:
    r"""The risk $R(w, b) = \mathbb{E}[(x w + b - y)^2]$ of a linear model on
    the data :func:`synthetic_linear_data` draws: $x \sim \mathcal{N}(0, I)$,
    $y = x w^* + b^* + \xi$, $\xi \sim \mathcal{N}(0, s^2)$ (``true_w``,
    ``true_b``, ``noise``). In closed form,

    $R(w, b) = \lVert w - w^*\rVert^2 + (b - b^*)^2 + s^2$,

    because the error $x (w - w^*) + (b - b^*) - \xi$ has mean $b - b^*$ and
    variance $\lVert w - w^*\rVert^2 + s^2$. Its minimum, $s^2$, is at the
    true parameters; the training error (the *empirical* risk) is the mean
    of the same squared error over the training examples only.

    Shapes:
        w: (..., C), b: a number or a tensor broadcastable to (...),
        true_w: (C,) -> (...)
    """
    w = _check_floating(w, "w")
    true_w = _check_floating(true_w, "true_w", (1,))
    if w.dim() == 0 or w.shape[-1] != len(true_w):
        raise ValueError(f"w must have {len(true_w)} features along its last axis, like true_w; "
                         f"got shape {tuple(w.shape)}")
    if isinstance(b, torch.Tensor):
        b = _check_floating(b, "b").to(w.dtype)
    else:
        b = check_float(b, "b")
    true_b = check_float(true_b, "true_b")
    noise = check_float(noise, "noise", 0.0)
    return ((w - true_w.to(w.dtype)) ** 2).sum(-1) + (b - true_b) ** 2 + noise ** 2


# softmax and cross-entropy ----------------------------------------------------

def _check_dim(z: torch.Tensor, dim) -> int:
    """``dim`` when it names an axis of ``z`` (negative counts from the end)."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int; got {describe(dim)}")
    if z.dim() == 0:
        raise ValueError("z must have at least one axis; got a 0-D tensor")
    if not -z.dim() <= dim < z.dim():
        raise ValueError(f"dim must lie in [{-z.dim()}, {z.dim() - 1}] for z of shape {tuple(z.shape)}; got {dim}")
    return dim


def _max_shift(z: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``z - m`` and ``m = max z`` along ``dim`` (kept), with a row of -inf shifted by 0."""
    dim = _check_dim(z, dim)
    m = z.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return z - m, m


def logsumexp(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""$\log \sum_k e^{z_k}$ without overflow: $m + \log \sum_k e^{z_k - m}$, $m = \max_k z_k$.

    Shapes:
        z: (..., K, ...) -> the same without ``dim``
    """
    z = _check_floating(z, "z")
    shifted, m = _max_shift(z, dim)
    return (m + shifted.exp().sum(dim=dim, keepdim=True).log()).squeeze(dim)


def log_softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""$\log \operatorname{softmax}(z)_k = z_k - \log \sum_j e^{z_j}$, computed as
    $(z_k - m) - \log \sum_j e^{z_j - m}$ so that neither term is large.

    Shapes:
        z: (..., K) -> (..., K)
    """
    z = _check_floating(z, "z")
    shifted, _ = _max_shift(z, dim)
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()


def softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    r"""$\operatorname{softmax}(z)_k = e^{z_k} / \sum_j e^{z_j}$, computed as
    $e^{z_k - m} / \sum_j e^{z_j - m}$ with $m = \max_j z_j$: every exponent
    is at most 0, so nothing overflows, and the largest term is exactly 1.

    Shapes:
        z: (..., K) -> (..., K)
    """
    z = _check_floating(z, "z")
    e = _max_shift(z, dim)[0].exp()
    return e / e.sum(dim=dim, keepdim=True)


def _check_loss_inputs(logits, y, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (B, K) with B >= 1 and integer classes y (B,) in [0, K), for ``loss``."""
    logits = _check_floating(logits, "logits", (2,))
    B, K = logits.shape
    y = _check_labels(y, "y", B, K)
    if B == 0:
        raise ValueError(f"{loss} needs at least one example")
    return logits, y


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""The mean over the batch of $-\log \operatorname{softmax}(z)_{y} =
    \log\sum_k e^{z_k} - z_y$ (what ``F.cross_entropy`` computes).

    Shapes:
        logits: (B, K), y: (B,) integer classes -> ()
    """
    logits, y = _check_loss_inputs(logits, y, "cross_entropy")
    z_y = logits.gather(1, y.long()[:, None])[:, 0]  # (B,)
    return (logsumexp(logits) - z_y).mean()


def cross_entropy_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""The gradient of :func:`cross_entropy` with respect to the logits:
    $\partial L / \partial z = (\operatorname{softmax}(z) - \operatorname{onehot}(y)) / B$,
    "predicted minus true".

    Shapes:
        logits: (B, K), y: (B,) -> (B, K)
    """
    logits = _check_floating(logits, "logits", (2,))
    B, K = logits.shape
    y = _check_labels(y, "y", B, K)
    return (softmax(logits) - F.one_hot(y.long(), K).to(logits.dtype)) / B


def softmax_squared_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Squared error between the predicted probabilities and the one-hot
    labels, summed over the $K$ classes and averaged over the batch:
    $\frac{1}{B} \sum_i \sum_k (\operatorname{softmax}(z_i)_k - [k = y_i])^2$.

    The loss the study notes first tried for classification, and the
    chapter's foil for :func:`cross_entropy`: with two classes it is
    $2 (1 - \sigma(z_1 - z_2))^2$ for an example of class 1, whose gradient
    vanishes where the model is confidently wrong. Half-precision logits
    (under autocast) are promoted to float32 first.

    Shapes:
        logits: (B, K), y: (B,) integer classes -> ()
    """
    logits, y = _check_loss_inputs(logits, y, "softmax_squared_error")
    K = logits.shape[1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    onehot = F.one_hot(y.long(), K).to(logits.dtype)  # (B, K)
    return ((softmax(logits) - onehot) ** 2).sum(1).mean()


# information ------------------------------------------------------------------

def _check_distributions(p, name: str) -> torch.Tensor:
    p = _check_floating(p, name)
    if p.dim() == 0 or p.shape[-1] == 0:
        raise ValueError(f"{name} must hold distributions along its last axis; got shape {tuple(p.shape)}")
    if not torch.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{name} must hold non-negative finite probabilities")
    if not torch.allclose(p.sum(-1), torch.ones((), dtype=p.dtype), atol=1e-5):
        raise ValueError(f"every distribution in {name} must sum to 1; got sums {p.sum(-1).tolist()}")
    return p


def entropy(p: torch.Tensor) -> torch.Tensor:
    r"""$H(p) = -\sum_k p_k \log p_k$ in nats (natural log), with $0 \log 0 = 0$.

    Shapes:
        p: (..., K) -> (...)
    """
    p = _check_distributions(p, "p")
    return -torch.special.xlogy(p, p).sum(-1)


def cross_entropy_between(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""$H(p, q) = -\sum_k p_k \log q_k$ in nats: the mean surprise under $q$ of
    outcomes drawn from $p$.

    Shapes:
        p, q: (..., K) -> (...)
    """
    p, q = _check_distributions(p, "p"), _check_distributions(q, "q")
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(f"p and q must have the same number of outcomes; got {p.shape[-1]} and {q.shape[-1]}")
    return -torch.special.xlogy(p, q).sum(-1)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""$D_\text{KL}(p \,\Vert\, q) = \sum_k p_k \log (p_k / q_k) = H(p, q) - H(p)$, in nats.

    Shapes:
        p, q: (..., K) -> (...)
    """
    return cross_entropy_between(p, q) - entropy(p)


# the perceptron ---------------------------------------------------------------

@dataclass(frozen=True)
class PerceptronResult:
    """What :func:`perceptron` found: weights ``w``, bias ``b`` (a float),
    and the number of mistakes in each epoch.

    Shapes:
        w: (C,); mistakes: one int per epoch run
    """

    w: torch.Tensor
    b: float
    mistakes: list[int]

    @property
    def converged(self) -> bool:
        """True when the last epoch made no mistake."""
        return bool(self.mistakes) and self.mistakes[-1] == 0


def perceptron(x: torch.Tensor, y: torch.Tensor, epochs: int = 100) -> PerceptronResult:
    r"""Rosenblatt's perceptron: for each example in turn, if
    $y_i (x_i \cdot w + b) \le 0$, update $w \leftarrow w + y_i x_i$,
    $b \leftarrow b + y_i$. Stops after an epoch without mistakes.

    Shapes:
        x: (N, C), y: (N,) with values -1 or +1
    """
    x = _check_floating(x, "x", (2,))
    check_tensor(y, "y")
    if y.shape != (len(x),) or not bool(((y == 1) | (y == -1)).all()):
        raise ValueError(f"y must have shape ({len(x)},) with values -1 and +1; got {describe(y)}")
    epochs = check_int(epochs, "epochs", 1)
    w, b = torch.zeros(x.shape[1], dtype=x.dtype), 0.0
    mistakes = []
    for _ in range(epochs):
        wrong = 0
        for xi, yi in zip(x, y.to(x.dtype)):
            if yi * (xi @ w + b) <= 0:
                w, b = w + yi * xi, b + float(yi)
                wrong += 1
        mistakes.append(wrong)
        if wrong == 0:
            break
    return PerceptronResult(w, b, mistakes)


# networks ---------------------------------------------------------------------

#: Each activation with its derivative, written out: $f$, $f'$.
ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": (torch.relu, lambda z: (z > 0).to(z.dtype)),
    "sigmoid": (torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z))),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
}

_ACTIVATION_MODULES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def mlp(in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu",
        dropout: float = 0.0, flatten: bool = False) -> nn.Sequential:
    """A multilayer perceptron: ``Linear``, activation (and ``Dropout`` when
    ``dropout > 0``) for each hidden width, then a ``Linear`` output layer.

    ``flatten=True`` puts an ``nn.Flatten`` first, for images.

    Shapes:
        (B, in_features) (or (B, ...) with ``flatten``) -> (B, out_features)
    """
    in_features = check_int(in_features, "in_features", 1)
    out_features = check_int(out_features, "out_features", 1)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden must be a list of widths such as [256, 256]; got {describe(hidden)}")
    hidden = [check_int(h, "every hidden width", 1) for h in hidden]
    if activation not in _ACTIVATION_MODULES:
        raise ValueError(f"activation must be one of {', '.join(_ACTIVATION_MODULES)}; got {activation!r}")
    dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
    flatten = check_bool(flatten, "flatten")
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    widths = [in_features, *hidden]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(c_in, c_out), _ACTIVATION_MODULES[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-1], out_features))
    return nn.Sequential(*layers)


def sawtooth_net(depth: int) -> nn.Sequential:
    r"""A ReLU network on $[0, 1]$ with ``depth`` hidden layers of 2 units
    that computes the tent map $T(x) = 2\operatorname{relu}(x) -
    4\operatorname{relu}(x - \tfrac12)$ composed ``depth`` times: a sawtooth
    with $2^\text{depth}$ linear pieces.

    Shapes:
        (B, 1) -> (B, 1)
    """
    depth = check_int(depth, "depth", 1)
    first = nn.Linear(1, 2)
    layers: list[nn.Module] = [first, nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(2, 2), nn.ReLU()]
    layers.append(nn.Linear(2, 1))
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0], [1.0]]))  # both units read x
        first.bias.copy_(torch.tensor([0.0, -0.5]))  # relu(x), relu(x - 1/2)
        for layer in layers[2:-1:2]:  # T of the previous layer, fed to both units
            layer.weight.copy_(torch.tensor([[2.0, -4.0], [2.0, -4.0]]))
            layer.bias.copy_(torch.tensor([0.0, -0.5]))
        layers[-1].weight.copy_(torch.tensor([[2.0, -4.0]]))  # T itself
        layers[-1].bias.zero_()
    return nn.Sequential(*layers)


_PIECEWISE_LINEAR = (nn.Linear, nn.ReLU, nn.Identity, nn.Dropout)


@torch.no_grad()
def breakpoints(model: nn.Sequential, lo: float = 0.0, hi: float = 1.0, tol: float = 1e-9) -> torch.Tensor:
    r"""The inputs in $(lo, hi)$ where the slope of a 1-D ReLU network changes, exactly.

    The network is a piecewise linear function of its scalar input. We carry
    its values at a sorted list of points, between which every layer so far
    is linear: a ``Linear`` layer keeps that true; a ``ReLU`` adds, in each
    interval, the point where a unit's input crosses zero (found by linear
    interpolation, which is exact there). At the end, a point is a
    breakpoint when the output's slope on its two sides differs (by more
    than ``tol``, relative). ``Dropout`` is the identity (evaluation mode).
    Computed in float64.

    Shapes:
        model: (B, 1) -> (B, C_D), an ``nn.Sequential`` of ``Linear``,
        ``ReLU``, ``Identity`` or ``Dropout`` -> (number of breakpoints,)
    """
    check_module(model)
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential of Linear and ReLU layers; got {type(model).__name__}")
    bad = [type(m).__name__ for m in model if not isinstance(m, _PIECEWISE_LINEAR)]
    if bad:
        raise ValueError(f"breakpoints handles Linear, ReLU, Identity and Dropout layers; got {', '.join(bad)}")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    if not linears or linears[0].in_features != 1:
        raise ValueError("the network must take one input: its first Linear layer needs in_features=1")
    lo, hi = check_float(lo, "lo"), check_float(hi, "hi")
    if not lo < hi:
        raise ValueError(f"lo must be smaller than hi; got lo={lo}, hi={hi}")
    tol = check_float(tol, "tol", 0.0)
    xs = torch.tensor([lo, hi], dtype=torch.float64)  # (n,)
    h = xs[:, None].clone()  # (n, C): the current layer's values at xs
    for layer in model:
        if isinstance(layer, nn.Linear):
            h = h @ layer.weight.double().T + layer.bias.double()  # (n, C_out)
        elif isinstance(layer, nn.ReLU):
            za, zb = h[:-1], h[1:]  # (n - 1, C): each interval's two ends
            crossing = (za * zb) < 0
            rows, units = crossing.nonzero(as_tuple=True)
            t = za[rows, units] / (za[rows, units] - zb[rows, units])  # (m,) fraction of the interval
            new_x = xs[rows] + t * (xs[rows + 1] - xs[rows])  # (m,)
            new_h = h[rows] + t[:, None] * (h[rows + 1] - h[rows])  # (m, C)
            new_h[torch.arange(len(rows)), units] = 0.0  # exactly on the kink
            xs, order = torch.cat([xs, new_x]).sort()
            h = torch.cat([h, new_h])[order]
            keep = torch.cat([torch.tensor([True]), xs[1:] - xs[:-1] > 1e-12 * (hi - lo)])
            xs, h = xs[keep], h[keep].clamp_min(0.0)
    slopes = (h[1:] - h[:-1]) / (xs[1:] - xs[:-1])[:, None]  # (n - 1, C_D)
    change = (slopes[1:] - slopes[:-1]).abs().amax(1)  # (n - 2,)
    scale = 1.0 + slopes.abs().amax()
    return xs[1:-1][change > tol * scale]


def count_linear_pieces(model: nn.Sequential, lo: float = 0.0, hi: float = 1.0) -> int:
    """How many linear pieces a 1-D ReLU network has on ``[lo, hi]``:
    one more than its :func:`breakpoints`.

    Shapes:
        model: (B, 1) -> (B, C_D) -> an int
    """
    return len(breakpoints(model, lo, hi)) + 1


# backpropagation by hand ------------------------------------------------------

def _check_layers(x, weights, biases) -> None:
    x = _check_floating(x, "x", (2,))
    if not isinstance(weights, (list, tuple)) or not isinstance(biases, (list, tuple)):
        raise TypeError("weights and biases must be lists of tensors, one per layer")
    if not weights or len(weights) != len(biases):
        raise ValueError(f"weights and biases need one tensor per layer; got {len(weights)} and {len(biases)}")
    width = x.shape[1]
    for i, (W, b) in enumerate(zip(weights, biases)):
        _check_floating(W, f"weights[{i}]", (2,))
        _check_floating(b, f"biases[{i}]", (1,))
        if W.shape[0] != width or b.shape != (W.shape[1],):
            raise ValueError(f"layer {i}: weights must be ({width}, C) and biases (C,), input-major; "
                             f"got {tuple(W.shape)} and {tuple(b.shape)}")
        if W.dtype != x.dtype or b.dtype != x.dtype:
            raise ValueError(f"layer {i}: weights, biases and x must share a dtype; "
                             f"got {W.dtype}, {b.dtype} and {x.dtype}")
        width = W.shape[1]


def sigmoid_mlp_forward(x: torch.Tensor, weights: Sequence[torch.Tensor],
                        biases: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    r"""Every layer's output of a sigmoid network: $h^{(0)} = x$,
    $h^{(l)} = \sigma(h^{(l-1)} W^{(l)} + b^{(l)})$; the last is $\hat y$.

    Shapes:
        x: (B, C_0), weights[l]: (C_l, C_{l+1}), biases[l]: (C_{l+1},)
        -> [x, h1 (B, C_1), ..., y_hat (B, C_D)]
    """
    _check_layers(x, weights, biases)
    hs = [x]
    for W, b in zip(weights, biases):
        hs.append(torch.sigmoid(hs[-1] @ W + b))  # (B, C_l)
    return hs


def delta_rule(x: torch.Tensor, y: torch.Tensor, weights: Sequence[torch.Tensor],
               biases: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    r"""Backpropagation by hand for a sigmoid network with squared error.

    The loss is $L = \tfrac12 \sum_{b, k} (\hat y_{bk} - y_{bk})^2$ (summed
    over the batch, as in the δ-rule's usual statement). With
    $\delta^{(l)} = \partial L / \partial z^{(l)}$, the gradient of the loss
    with respect to layer $l$'s input to the sigmoid:

    $\delta^{(D)} = (\hat y - y) \odot \hat y \odot (1 - \hat y)$ (output layer),
    $\delta^{(l)} = h^{(l)} \odot (1 - h^{(l)}) \odot (\delta^{(l+1)} {W^{(l+1)}}^\top)$ (hidden),
    $\partial L / \partial W^{(l)} = {h^{(l-1)}}^\top \delta^{(l)}$,
    $\partial L / \partial b^{(l)} = \sum_b \delta^{(l)}_b$.

    Returns:
        (loss, gradients of the weights, gradients of the biases)

    Shapes:
        x: (B, C_0), y: (B, C_D), weights[l]: (C_l, C_{l+1}), biases[l]: (C_{l+1},)
        -> (), [like weights], [like biases]
    """
    hs = sigmoid_mlp_forward(x, weights, biases)
    y_hat = hs[-1]
    check_tensor(y, "y")
    if y.shape != y_hat.shape:
        raise ValueError(f"y must have the output's shape {tuple(y_hat.shape)}; got {tuple(y.shape)}")
    if y.dtype != y_hat.dtype:
        raise ValueError(f"y must have the dtype of x and the weights ({y_hat.dtype}); got {y.dtype}")
    loss = 0.5 * ((y_hat - y) ** 2).sum()
    delta = (y_hat - y) * y_hat * (1 - y_hat)  # (B, C_D): the output layer's δ
    grads_w: list[torch.Tensor] = []
    grads_b: list[torch.Tensor] = []
    for l in reversed(range(len(weights))):
        grads_w.insert(0, hs[l].T @ delta)  # (C_l, C_{l+1})
        grads_b.insert(0, delta.sum(0))  # (C_{l+1},)
        if l > 0:  # δ of the layer below: σ' = h (1 - h), times the weighted δs above
            delta = hs[l] * (1 - hs[l]) * (delta @ weights[l].T)  # (B, C_l)
    return loss, grads_w, grads_b


def numerical_gradient(f: Callable[[], torch.Tensor | float], params: Sequence[torch.Tensor],
                       eps: float = 1e-5) -> list[torch.Tensor]:
    r"""Central finite differences: $\partial f / \partial \theta_i \approx
    (f(\theta + \epsilon e_i) - f(\theta - \epsilon e_i)) / 2\epsilon$ for
    every entry $\theta_i$ of every tensor in ``params``.

    ``f()`` computes the loss from the current values of ``params``, which
    are changed in place one entry at a time and restored. Use float64: in
    float32 the rounding error of $f$ swamps the difference. The default
    step, $10^{-5}$, is near the cube root of float64's machine epsilon,
    which balances the curvature error ($\propto \epsilon^2$) against the
    rounding error ($\propto 1/\epsilon$). Costs two evaluations of ``f``
    per parameter.

    Shapes:
        params: any shapes -> gradients of the same shapes
    """
    check_callable(f, "f")
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"params must be a list of tensors; got {describe(params)}")
    eps = check_float(eps, "eps", 0.0)
    if eps == 0:
        raise ValueError("eps must be positive")

    def value() -> float:
        out = f()
        if isinstance(out, torch.Tensor) and out.numel() != 1:
            raise ValueError(f"f must return a scalar loss; got a tensor of shape {tuple(out.shape)}")
        return float(out)

    grads = []
    with torch.no_grad():
        for i, p in enumerate(params):
            _check_floating(p, f"params[{i}]")
            if not p.is_contiguous():
                raise ValueError(f"params[{i}] must be contiguous (it is changed in place)")
            flat = p.view(-1)
            g = torch.zeros_like(flat)
            for j in range(flat.numel()):
                old = flat[j].item()
                flat[j] = old + eps
                plus = value()
                flat[j] = old - eps
                minus = value()
                flat[j] = old
                g[j] = (plus - minus) / (2 * eps)
            grads.append(g.view_as(p))
    return grads


def max_relative_error(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], floor: float = 1e-8) -> float:
    r"""$\max_i |a_i - b_i| / \max(|a_i|, |b_i|, \text{floor})$ over every entry of two lists of tensors.

    The floor keeps entries where both are (nearly) zero from dividing by zero.

    Shapes:
        a[i], b[i]: the same shape for every i -> a float
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, (list, tuple)):
            raise TypeError(f"{name} must be a list of tensors; got {describe(t)}")
    if len(a) != len(b) or not len(a):
        raise ValueError(f"a and b must be non-empty lists of the same length; got {len(a)} and {len(b)}")
    floor = check_float(floor, "floor", 0.0)
    worst = 0.0
    for i, (s, t) in enumerate(zip(a, b)):
        check_tensor(s, f"a[{i}]")
        check_tensor(t, f"b[{i}]")
        if s.shape != t.shape:
            raise ValueError(f"a[{i}] and b[{i}] differ in shape: {tuple(s.shape)} and {tuple(t.shape)}")
        s, t = s.double(), t.double()
        denom = torch.maximum(torch.maximum(s.abs(), t.abs()), torch.full_like(s, floor))
        if s.numel():
            worst = max(worst, float(((s - t).abs() / denom).max()))
    return worst


# generalization ---------------------------------------------------------------

def polynomial_features(x: torch.Tensor, degree: int, scaled: bool = True) -> torch.Tensor:
    r"""Columns $x, x^2, \dots, x^d$ (divided by $i!$ when ``scaled``, as in
    Dive into Deep Learning, so that high powers do not dwarf the rest).
    Degree 0 gives no columns: a model with only a bias.

    Shapes:
        x: (N,) -> (N, degree)
    """
    x = _check_floating(x, "x", (1,))
    degree = check_int(degree, "degree", 0)
    scaled = check_bool(scaled, "scaled")
    powers = torch.arange(1, degree + 1, dtype=x.dtype)  # (degree,)
    columns = x[:, None] ** powers  # (N, degree)
    if scaled:
        columns = columns / torch.exp(torch.lgamma(powers + 1))  # divide by i!
    return columns


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split ``range(n)`` at random into ``k`` folds of (nearly) equal size;
    return ``k`` pairs (training indices, validation indices), fold ``i``
    validating in pair ``i``. Every index validates exactly once.

    Shapes:
        -> k pairs of int64 tensors of sizes (n - n_i,) and (n_i,), n_i = n // k or n // k + 1
    """
    n = check_int(n, "n", 1)
    k = check_int(k, "k", 2)
    seed = check_int(seed, "seed", 0)
    if k > n:
        raise ValueError(f"k must be at most n; got k={k} folds for n={n} examples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    folds = order.tensor_split(k)
    return [(torch.cat(folds[:i] + folds[i + 1:]).sort().values, folds[i].sort().values) for i in range(k)]


def bad_sample_bound(n: int, eps: float, num_models: int) -> float:
    r"""Hoeffding's inequality with a union bound: for a loss in $[0, 1]$ and
    ``n`` i.i.d. examples, the probability that *some* model of a set of
    ``num_models`` has an empirical loss more than $\epsilon$ away from its
    expected loss is at most $\min(1, 2|\mathcal{H}| e^{-2n\epsilon^2})$.

    Shapes:
        scalars -> a float in [0, 1]
    """
    n = check_int(n, "n", 1)
    eps = check_float(eps, "eps", 0.0)
    num_models = check_int(num_models, "num_models", 1)
    return min(1.0, 2 * num_models * math.exp(-2 * n * eps ** 2))


def best_of_random_guessers(num_models: int, n_val: int, n_fresh: int = 100_000, trials: int = 20,
                            num_inputs: int = 256, generator: torch.Generator | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose the best of ``num_models`` classifiers that know nothing on a
    validation set, then score the chosen one on fresh data.

    The inputs are the integers ``0 .. num_inputs - 1``, drawn uniformly;
    the labels are fair coin flips, independent of the input, so every
    classifier's true accuracy is exactly 1/2. Each classifier is a fixed
    random table with one label per input. In each of ``trials``
    repetitions, ``num_models`` new tables are drawn and scored on ``n_val``
    validation examples; the one with the best validation accuracy (the
    first, on ties) is then scored, with its same table, on ``n_fresh`` new
    examples.

    Returns:
        the chosen classifier's validation accuracy and its accuracy on the
        fresh examples, one of each per trial.

    Shapes:
        -> (trials,), (trials,) float64
    """
    num_models = check_int(num_models, "num_models", 1)
    n_val = check_int(n_val, "n_val", 1)
    n_fresh = check_int(n_fresh, "n_fresh", 1)
    trials = check_int(trials, "trials", 1)
    num_inputs = check_int(num_inputs, "num_inputs", 1)
    best_val = torch.empty(trials, dtype=torch.float64)
    fresh = torch.empty(trials, dtype=torch.float64)
    for t in range(trials):
        tables = torch.randint(2, (num_models, num_inputs), generator=generator)  # (H, inputs)
        x_val = torch.randint(num_inputs, (n_val,), generator=generator)  # (n_val,)
        y_val = torch.randint(2, (n_val,), generator=generator)
        val_acc = (tables[:, x_val] == y_val).double().mean(1)  # (H,)
        chosen = int(val_acc.argmax())  # the first of the best
        x_new = torch.randint(num_inputs, (n_fresh,), generator=generator)  # (n_fresh,)
        y_new = torch.randint(2, (n_fresh,), generator=generator)
        best_val[t] = val_acc[chosen]
        fresh[t] = (tables[chosen, x_new] == y_new).double().mean()
    return best_val, fresh


# regularization ---------------------------------------------------------------

def dropout(x: torch.Tensor, p: float, training: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Inverted dropout: in training, zero each entry with probability $p$
    and scale the survivors by $1 / (1 - p)$, so that $\mathbb{E}[h'] = h$;
    in evaluation, the identity.

    Shapes:
        x: any -> the same
    """
    x = _check_floating(x, "x")
    p = check_float(p, "p", 0.0, 1.0)
    training = check_bool(training, "training")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return torch.zeros_like(x)
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p  # (same as x)
    return x * keep / (1 - p)


def mixup(x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float = 0.2
          ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mixup (Zhang et al., 2018): draw $u \sim \mathrm{Beta}(\alpha, \alpha)$
    once for the batch and a random pairing $\pi$; return
    $\tilde x = u x + (1 - u) x_\pi$ and the soft targets
    $\tilde y = u\, \mathrm{onehot}(y) + (1 - u)\, \mathrm{onehot}(y_\pi)$.
    Uses torch's global random generator.

    Shapes:
        x: (B, ...), y: (B,) -> x_mix (B, ...), y_soft (B, K)
    """
    x = _check_floating(x, "x")
    num_classes = check_int(num_classes, "num_classes", 2)
    y = _check_labels(y, "y", len(x), num_classes)
    alpha = check_float(alpha, "alpha", 0.0)
    if alpha == 0:
        raise ValueError("alpha must be positive")
    lam = torch.distributions.Beta(alpha, alpha).sample().to(x.dtype)
    perm = torch.randperm(len(x), device=x.device)
    onehot = F.one_hot(y.long(), num_classes).to(x.dtype)  # (B, K)
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]


@dataclass(frozen=True)
class MixupStep:
    """A training step for :func:`dlbook.fit` that trains on :func:`mixup`
    batches with cross-entropy against the soft targets.

    Evaluate with the ordinary supervised step (``eval_step=dlbook.supervised()``).

    Shapes:
        batch: x (B, ...), y (B,) integer classes -> {"loss": ()}
    """

    num_classes: int = 10
    alpha: float = 0.2

    def __call__(self, model: nn.Module, batch) -> dict:
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise ValueError(f"batch must be a pair (x, y) of images and integer labels; got {describe(batch)}")
        x, y = batch
        x_mix, y_soft = mixup(x, y, self.num_classes, self.alpha)
        return {"loss": F.cross_entropy(model(x_mix), y_soft)}


@torch.no_grad()
def ensemble_probs(models: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    r"""The mean of the models' predicted probabilities,
    $\frac{1}{M}\sum_m \operatorname{softmax}(f_m(x))$, each model in evaluation mode.

    Shapes:
        x: (B, ...) -> (B, K)
    """
    if isinstance(models, nn.Module) or not models:
        raise ValueError("models must be a non-empty list of models")
    check_tensor(x, "x")
    probs = []
    for i, m in enumerate(models):
        check_module(m, f"models[{i}]")
        was_training = m.training
        m.eval()
        try:
            probs.append(torch.softmax(m(x).float(), dim=-1))  # (B, K)
        finally:
            m.train(was_training)
    return torch.stack(probs).mean(0)


# initialization, vanishing gradients, normalization ---------------------------

def _fans(weight) -> tuple[int, int]:
    check_tensor(weight, "weight", floating=True)
    if weight.dim() != 2:
        raise ValueError(f"weight must be a Linear layer's (C_out, C_in) matrix; got shape {tuple(weight.shape)}")
    return weight.shape[1], weight.shape[0]


def xavier_normal_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    r"""Glorot and Bengio's initialization, in place: $w \sim \mathcal{N}(0, \sigma^2)$,
    $\sigma = \text{gain} \cdot \sqrt{2 / (C_\text{in} + C_\text{out})}$.

    Shapes:
        weight: (C_out, C_in), as in ``nn.Linear`` -> the same tensor
    """
    fan_in, fan_out = _fans(weight)
    gain = check_float(gain, "gain", 0.0)
    with torch.no_grad():
        return weight.normal_(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def xavier_uniform_(weight: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    r"""Glorot and Bengio's initialization with a uniform distribution, in
    place: $w \sim U(-a, a)$ with $a = \sqrt 3\, \sigma$ and
    $\sigma = \text{gain} \cdot \sqrt{2 / (C_\text{in} + C_\text{out})}$, so
    that its variance, $a^2 / 3 = \sigma^2$, is :func:`xavier_normal_`'s (the
    paper's form, $a = \sqrt{6 / (C_\text{in} + C_\text{out})}$).

    Shapes:
        weight: (C_out, C_in), as in ``nn.Linear`` -> the same tensor
    """
    fan_in, fan_out = _fans(weight)
    gain = check_float(gain, "gain", 0.0)
    a = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-a, a)


def kaiming_normal_(weight: torch.Tensor, gain: float = math.sqrt(2.0)) -> torch.Tensor:
    r"""He et al.'s initialization for ReLU layers, in place:
    $w \sim \mathcal{N}(0, \sigma^2)$, $\sigma = \text{gain} / \sqrt{C_\text{in}}$,
    gain $\sqrt 2$ because a ReLU zeroes half of its inputs.

    Shapes:
        weight: (C_out, C_in) -> the same tensor
    """
    fan_in, _ = _fans(weight)
    gain = check_float(gain, "gain", 0.0)
    with torch.no_grad():
        return weight.normal_(0.0, gain / math.sqrt(fan_in))


def preactivation_variances(model: nn.Module, x: torch.Tensor) -> list[float]:
    r"""The variance of the input $z^{(l)}$ of every activation layer (ReLU,
    sigmoid, tanh) of ``model`` on the batch ``x``, in order: how the size of
    the signal changes with depth. This is the quantity Glorot and Bengio's
    and He et al.'s analyses keep constant. Runs without gradients.

    Shapes:
        x: (B, ...) -> one number per activation layer
    """
    check_module(model)
    check_tensor(x, "x", floating=True)
    found: list[float] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: found.append(float(inp[0].float().var())))
             for m in model.modules() if isinstance(m, tuple(_ACTIVATION_MODULES.values()))]
    if not hooks:
        raise ValueError("the model has no ReLU, Sigmoid or Tanh layer")
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return found


def preactivation_gradient_norms(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor]) -> list[float]:
    r"""The norm of $\delta^{(l)} = \partial L / \partial z^{(l)}$, the gradient of the
    loss ``loss_fn(model)`` with respect to the input of every activation
    layer (ReLU, sigmoid, tanh), from the first to the last: the backward
    signal of the δ-rule. The model's own gradients are left as they were.

    Shapes:
        loss_fn(model): () -> one number per activation layer
    """
    check_module(model)
    check_callable(loss_fn, "loss_fn")
    kinds = tuple(_ACTIVATION_MODULES.values())
    if not any(isinstance(m, kinds) for m in model.modules()):
        raise ValueError("the model has no ReLU, Sigmoid or Tanh layer")
    inputs: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: inputs.append(inp[0]))
             for m in model.modules() if isinstance(m, kinds)]
    try:
        loss = loss_fn(model)
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError("loss_fn must return a scalar tensor")
    return [float(g.norm()) for g in torch.autograd.grad(loss, inputs)]


def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    r"""Layer normalization (Ba et al., 2016) over the last axis, for every
    example on its own: $\hat x = (x - \mu) / \sqrt{\sigma^2 + \epsilon}$ with
    the mean and (biased) variance of that example's $C$ features;
    $y = \gamma \hat x + \beta$.

    Shapes:
        x: (..., C), gamma, beta: (C,) -> (..., C)
    """
    x = _check_floating(x, "x")
    if x.dim() == 0:
        raise ValueError("x must have a feature axis")
    C = x.shape[-1]
    for name, t in (("gamma", gamma), ("beta", beta)):
        if check_tensor(t, name).shape != (C,):
            raise ValueError(f"{name} must have shape ({C},); got {tuple(t.shape)}")
    eps = check_float(eps, "eps", 0.0)
    mean = x.mean(-1, keepdim=True)  # (..., 1)
    var = x.var(-1, unbiased=False, keepdim=True)  # (..., 1)
    return gamma * (x - mean) / torch.sqrt(var + eps) + beta


# 2-D toy problems -------------------------------------------------------------

def two_moons(n: int, noise: float = 0.2, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half circles, ``n // 2`` points each (class 0 on top),
    with Gaussian noise of standard deviation ``noise`` on each coordinate.

    Shapes:
        -> x: (n, 2) float32, y: (n,) int64
    """
    n = check_int(n, "n", 2)
    noise = check_float(noise, "noise", 0.0)
    n0 = n // 2
    t = torch.rand(n, generator=generator) * math.pi  # (n,) angle along the arc
    upper = torch.stack([t.cos(), t.sin()], 1)  # (n, 2)
    lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)
    y = (torch.arange(n) >= n0).long()  # (n,)
    x = torch.where(y[:, None] == 0, upper, lower)
    x = x + noise * torch.randn(n, 2, generator=generator)
    return x, y


def train_toy_classifier(x: torch.Tensor, y: torch.Tensor, hidden: Sequence[int], *, weight_decay: float = 0.0,
                         steps: int = 1000, lr: float = 0.01, seed: int = 0, checkpoint=None) -> nn.Sequential:
    """Train a ReLU :func:`mlp` with the given ``hidden`` widths on all of
    ``(x, y)`` at once: full-batch Adam for ``steps`` steps, with
    ``weight_decay`` added to the gradient as an L2 penalty (as
    ``torch.optim.Adam`` does), on the CPU in float32, from
    ``torch.manual_seed(seed)``. For small 2-D problems such as
    :func:`two_moons`. ``checkpoint`` is passed to :func:`dlbook.fit`.

    Shapes:
        x: (N, C), y: (N,) integer classes -> a model (B, C) -> (B, K)
    """
    from .data import BatchLoader
    from .train import fit

    x = _check_floating(x, "x", (2,))
    check_tensor(y, "y")
    if y.shape != (len(x),) or y.dtype != torch.int64:
        raise ValueError(f"y must hold int64 class labels of shape ({len(x)},); got {y.dtype} of shape "
                         f"{tuple(y.shape)}")
    num_classes = max(int(y.max()) + 1, 2) if len(y) else 2
    weight_decay = check_float(weight_decay, "weight_decay", 0.0)
    steps = check_int(steps, "steps", 1)
    lr = check_float(lr, "lr", 0.0)
    seed = check_int(seed, "seed", 0)
    torch.manual_seed(seed)
    model = mlp(x.shape[1], hidden, num_classes)
    loader = BatchLoader(x, y, batch_size=len(x))
    fit(model, loader, optimizer=torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay),
        max_steps=steps, eval_every=steps, device="cpu", amp=False, progress=False, checkpoint=checkpoint)
    return model


def plot_decision_regions(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ax=None,
                          title: str | None = None, resolution: int = 150, margin: float = 0.5,
                          point_size: float = 14.0):
    """Colour the plane by the class ``model`` predicts and draw the points.

    The model maps (B, 2) points to (B, K) logits, or to (B, 1) / (B,)
    scores whose sign is the class. Returns the Axes.

    Shapes:
        x: (N, 2), y: (N,)
    """
    import matplotlib.pyplot as plt

    check_module(model)
    x = _check_floating(x, "x", (2,))
    if x.shape[1] != 2:
        raise ValueError(f"x must hold 2-D points, shape (N, 2); got {tuple(x.shape)}")
    check_tensor(y, "y")
    if y.shape != (len(x),):
        raise ValueError(f"y must hold one label per point, shape ({len(x)},); got {tuple(y.shape)}")
    resolution = check_int(resolution, "resolution", 2)
    point_size = check_float(point_size, "point_size", 0.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    lo, hi = x.min(0).values - margin, x.max(0).values + margin
    g0 = torch.linspace(float(lo[0]), float(hi[0]), resolution)
    g1 = torch.linspace(float(lo[1]), float(hi[1]), resolution)
    grid = torch.stack(torch.meshgrid(g0, g1, indexing="xy"), -1).reshape(-1, 2)  # (R*R, 2)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(grid.to(device)).float().cpu()
    finally:
        model.train(was_training)
    classes = out.argmax(-1) if out.dim() == 2 and out.shape[1] > 1 else (out.reshape(-1) > 0).long()
    ax.contourf(g0, g1, classes.reshape(resolution, resolution), levels=[-0.5, 0.5, 1.5],
                colors=["#9fc5e8", "#f9cb9c"], alpha=0.8)
    for label, colour, marker in ((0, "#1c4587", "o"), (1, "#b45f06", "s")):
        chosen = (y.reshape(-1) == label) | ((label == 0) & (y.reshape(-1) == -1))
        ax.scatter(x[chosen, 0], x[chosen, 1], s=point_size, c=colour, marker=marker, edgecolors="white",
                   linewidths=0.4, label=f"class {label}")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    return ax


__all__ = [
    "ACTIVATIONS", "bad_sample_bound", "best_of_random_guessers", "breakpoints", "computation_graph",
    "count_linear_pieces", "cross_entropy", "cross_entropy_between", "cross_entropy_grad", "delta_rule", "draw_graph",
    "dropout", "ensemble_probs", "entropy", "kaiming_normal_", "kfold_indices", "kl_divergence", "layer_norm",
    "least_squares", "linear_risk", "log_softmax", "logsumexp", "max_relative_error", "mixup", "MixupStep", "mlp",
    "numerical_gradient", "perceptron", "PerceptronResult", "plot_decision_regions", "polynomial_features",
    "preactivation_gradient_norms", "preactivation_variances", "sawtooth_net", "sgd_error_growth", "sigmoid_mlp_forward",
    "softmax", "softmax_squared_error", "synthetic_linear_data", "train_toy_classifier", "two_moons",
    "xavier_normal_", "xavier_uniform_",
]
