"""dlbook.foundations: parity with PyTorch, golden numbers, shapes and validation."""

import math

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
from dlbook import foundations as fd

D = torch.float64


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# autograd ---------------------------------------------------------------------

def test_computation_graph_of_a_squared_error():
    w = torch.tensor(3.0, requires_grad=True)
    b = torch.tensor(1.0, requires_grad=True)
    x, y = torch.tensor(2.0), torch.tensor(5.0)  # constants: not in the graph
    loss = (w * x + b - y) ** 2
    nodes, edges = fd.computation_graph(loss, {"w": w, "b": b})
    assert sorted(nodes.values()) == sorted(["w", "b", "mul", "add", "sub", "pow"])
    label = nodes.get
    assert sorted((label(a), label(c)) for a, c in edges) == sorted(
        [("w", "mul"), ("mul", "add"), ("b", "add"), ("add", "sub"), ("sub", "pow")])
    fig = fd.draw_graph(loss, {"w": w, "b": b}, title="graph")
    assert fig.axes[0].get_title() == "graph"


def test_computation_graph_shares_a_node_used_twice():
    a = torch.tensor(2.0, requires_grad=True)
    nodes, edges = fd.computation_graph(a * a + a, {"a": a})
    assert list(nodes.values()).count("a") == 1
    assert len(edges) == 4  # a -> mul twice, mul -> add, a -> add


def test_computation_graph_validation():
    with pytest.raises(ValueError, match="grad_fn"):
        fd.computation_graph(torch.tensor(1.0))
    with pytest.raises(TypeError):
        fd.computation_graph(3.0)


# linear regression ------------------------------------------------------------

def test_synthetic_data_shapes_and_noise_free_targets():
    w = torch.tensor([2.0, -3.4])
    x, y = fd.synthetic_linear_data(w, 4.2, 50, noise=0.0)
    assert x.shape == (50, 2) and y.shape == (50, 1)
    assert torch.allclose(y[:, 0], x @ w + 4.2, atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(fd.synthetic_linear_data(w, 0.0, 5, generator=g1)[0],
                       fd.synthetic_linear_data(w, 0.0, 5, generator=g2)[0])


def test_least_squares_matches_lstsq_with_a_bias_column():
    x, y = fd.synthetic_linear_data(torch.tensor([2.0, -3.4, 0.5], dtype=D), 4.2, 200, noise=0.3)
    w, b = fd.least_squares(x, y)
    design = torch.cat([x, torch.ones(200, 1, dtype=D)], 1)
    ref = torch.linalg.lstsq(design, y).solution
    assert w.shape == (3, 1) and b.shape == (1,)
    assert torch.allclose(w[:, 0], ref[:3, 0], atol=1e-10) and torch.allclose(b, ref[3], atol=1e-10)
    w1, b1 = fd.least_squares(x, y[:, 0])
    assert w1.shape == (3,) and b1.shape == () and torch.allclose(w1, w[:, 0])


def test_least_squares_with_weight_decay_solves_its_normal_equations():
    x, y = fd.synthetic_linear_data(torch.tensor([1.0, -2.0], dtype=D), 0.5, 40, noise=0.5)
    lam = 0.3
    w, b = fd.least_squares(x, y[:, 0], weight_decay=lam)
    # the gradient of (1/N)|x w + b - y|^2 + (lam/2)|w|^2 vanishes at the minimum
    r = x @ w + b - y[:, 0]
    assert torch.allclose(2 * x.T @ r / 40 + lam * w, torch.zeros(2, dtype=D), atol=1e-10)
    assert abs(float(r.mean())) < 1e-10  # and so does its derivative in b
    w0, _ = fd.least_squares(x, y[:, 0])
    assert w.norm() < w0.norm()  # weight decay shrinks the weights


def test_least_squares_is_where_sgd_with_weight_decay_converges():
    x, y = fd.synthetic_linear_data(torch.tensor([1.0, -2.0]), 0.5, 64, noise=0.5)
    model = nn.Linear(2, 1)
    # the bias is not penalized: it goes in a parameter group without weight decay
    opt = torch.optim.SGD([{"params": [model.weight], "weight_decay": 0.4}, {"params": [model.bias]}], lr=0.2)
    for _ in range(500):  # full-batch gradient descent
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    w, b = fd.least_squares(x, y, weight_decay=0.4)
    assert torch.allclose(model.weight.detach().T, w, atol=1e-4)
    assert torch.allclose(model.bias.detach(), b, atol=1e-4)


def test_least_squares_validation():
    with pytest.raises(ValueError, match="shape"):
        fd.least_squares(torch.zeros(5, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="2-D"):
        fd.least_squares(torch.zeros(5), torch.zeros(5))
    with pytest.raises(ValueError, match="weight_decay"):
        fd.least_squares(torch.zeros(5, 2), torch.zeros(5), weight_decay=-1.0)
    with pytest.raises(ValueError, match="floating"):
        fd.least_squares(torch.zeros(5, 2, dtype=torch.long), torch.zeros(5))


def test_sgd_error_growth_of_one_full_batch_is_the_spectral_radius_of_gradient_descent():
    x, _ = fd.synthetic_linear_data(torch.tensor([1.0, -2.0]), 0.5, 200)
    design = torch.cat([x.double(), torch.ones(len(x), 1, dtype=D)], 1)
    rho = torch.linalg.eigvalsh(2 * design.T @ design / len(design))  # ascending
    for lr in (0.3, 0.95 * 2 / rho[-1].item(), 1.05 * 2 / rho[-1].item()):
        expected = (1 - lr * rho).abs().max().item()
        growth = fd.sgd_error_growth(x, lr, batch_size=len(x), epochs=1000)
        assert growth == pytest.approx(expected, rel=2e-3)  # the start fades slowly


def test_sgd_error_growth_tells_a_diverging_run_from_a_converging_one():
    x, y = fd.synthetic_linear_data(torch.tensor([2.0, -3.4]), 4.2, 500,
                                    generator=torch.Generator().manual_seed(0))
    for lr in (0.1, 0.5, 1.2):
        growth = fd.sgd_error_growth(x, lr, batch_size=10, epochs=20,
                                     generator=torch.Generator().manual_seed(1))
        model = nn.Linear(2, 1)
        nn.init.zeros_(model.weight)
        nn.init.zeros_(model.bias)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(2)
        for _ in range(20):  # epochs of shuffled batches of 10
            for rows in torch.randperm(len(x), generator=gen).split(10):
                opt.zero_grad()
                F.mse_loss(model(x[rows]), y[rows]).backward()
                opt.step()
        loss = F.mse_loss(model(x), y).item()
        assert (growth < 1) == (math.isfinite(loss) and loss < 1.0), (lr, growth, loss)


def test_sgd_error_growth_validation():
    with pytest.raises(ValueError, match="batch_size"):
        fd.sgd_error_growth(torch.zeros(5, 2), 0.1, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        fd.sgd_error_growth(torch.zeros(5, 2), -0.1, batch_size=2)
    with pytest.raises(ValueError, match="2-D"):
        fd.sgd_error_growth(torch.zeros(5), 0.1, batch_size=2)


# softmax and cross-entropy ----------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 100.0, 1e4])
def test_softmax_family_matches_torch_even_for_huge_logits(scale):
    z = scale * torch.randn(6, 5)
    assert torch.allclose(fd.logsumexp(z), torch.logsumexp(z, -1), rtol=1e-6)
    assert torch.allclose(fd.log_softmax(z), F.log_softmax(z, -1), atol=1e-5, rtol=1e-6)
    assert torch.allclose(fd.softmax(z), F.softmax(z, -1), rtol=1e-5, atol=1e-7)
    assert torch.allclose(fd.softmax(z, dim=0), F.softmax(z, 0), rtol=1e-5, atol=1e-7)
    shifted = z + 1000.0  # softmax ignores a common shift; no precision lost to it
    assert torch.allclose(fd.softmax(shifted), F.softmax(shifted, -1), rtol=1e-5, atol=1e-7)
    assert torch.isfinite(fd.log_softmax(z)).all()


def test_logsumexp_golden_and_minus_infinity():
    assert torch.allclose(fd.logsumexp(torch.tensor([0.0, 0.0])), torch.tensor(math.log(2)))
    assert fd.logsumexp(torch.tensor([1000.0, 1000.0])).item() == pytest.approx(1000 + math.log(2))
    row = torch.tensor([[-math.inf, -math.inf], [0.0, -math.inf]])
    assert torch.equal(fd.logsumexp(row), torch.logsumexp(row, -1))


def test_cross_entropy_and_its_gradient_match_autograd():
    z = torch.randn(8, 4, dtype=D, requires_grad=True)
    y = torch.randint(0, 4, (8,))
    ours = fd.cross_entropy(z, y)
    ref = F.cross_entropy(z, y)
    assert torch.allclose(ours, ref, atol=1e-12)
    ref.backward()
    assert torch.allclose(fd.cross_entropy_grad(z.detach(), y), z.grad, atol=1e-12)
    # golden: uniform logits give log K
    assert fd.cross_entropy(torch.zeros(3, 4), torch.tensor([0, 1, 2])).item() == pytest.approx(math.log(4))


def test_cross_entropy_validation():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        fd.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer"):
        fd.cross_entropy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        fd.cross_entropy_grad(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="2-D"):
        fd.cross_entropy(torch.zeros(3), torch.tensor([0]))


# information ------------------------------------------------------------------

def test_entropy_cross_entropy_kl_golden_coin():
    fair, guess = torch.tensor([0.5, 0.5], dtype=D), torch.tensor([0.2, 0.8], dtype=D)
    assert fd.entropy(fair).item() == pytest.approx(math.log(2))
    assert fd.cross_entropy_between(fair, guess).item() == pytest.approx(-0.5 * math.log(0.2) - 0.5 * math.log(0.8))
    assert fd.kl_divergence(fair, guess).item() == pytest.approx(0.5 * math.log(2.5) + 0.5 * math.log(0.625))
    assert fd.kl_divergence(fair, fair).item() == pytest.approx(0.0, abs=1e-15)
    assert fd.entropy(torch.tensor([1.0, 0.0])).item() == 0.0  # 0 log 0 = 0


def test_information_matches_torch_distributions():
    p = torch.softmax(torch.randn(5, 6, dtype=D), -1)
    q = torch.softmax(torch.randn(5, 6, dtype=D), -1)
    P, Q = torch.distributions.Categorical(probs=p), torch.distributions.Categorical(probs=q)
    assert torch.allclose(fd.entropy(p), P.entropy())
    assert torch.allclose(fd.kl_divergence(p, q), torch.distributions.kl_divergence(P, Q))
    assert torch.allclose(fd.kl_divergence(p, q), F.kl_div(q.log(), p, reduction="none").sum(-1))
    assert torch.allclose(fd.cross_entropy_between(p, q), fd.entropy(p) + fd.kl_divergence(p, q))
    assert (fd.kl_divergence(p, q) >= 0).all()


def test_information_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        fd.entropy(torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="non-negative"):
        fd.entropy(torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match="same number"):
        fd.kl_divergence(torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3, 0.5]))


# perceptron -------------------------------------------------------------------

def test_perceptron_separates_separable_data_and_fails_on_xor():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    and_labels = torch.tensor([-1, -1, -1, 1])
    result = fd.perceptron(x, and_labels)
    assert result.converged
    assert torch.equal(torch.sign(x @ result.w + result.b), and_labels.float())
    xor = fd.perceptron(x, torch.tensor([-1, 1, 1, -1]), epochs=200)
    assert not xor.converged and len(xor.mistakes) == 200 and min(xor.mistakes) >= 1


def test_perceptron_validation():
    with pytest.raises(ValueError, match="-1 and \\+1"):
        fd.perceptron(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="epochs"):
        fd.perceptron(torch.zeros(2, 2), torch.tensor([1, -1]), epochs=0)


# networks and linear pieces ---------------------------------------------------

@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_derivatives_match_autograd(name):
    f, df = fd.ACTIVATIONS[name]
    z = torch.linspace(-4, 4, 81, dtype=D).requires_grad_()  # 0 itself is at index 40
    f(z).sum().backward()
    keep = z.detach() != 0  # relu has no derivative at 0
    assert torch.allclose(df(z.detach())[keep], z.grad[keep])


def test_mlp_structure():
    m = fd.mlp(784, [256, 128], 10, dropout=0.2, flatten=True)
    kinds = [type(layer).__name__ for layer in m]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert [type(layer).__name__ for layer in fd.mlp(2, [], 1)] == ["Linear"]
    assert isinstance(fd.mlp(2, [3], 1, activation="tanh")[1], nn.Tanh)
    with pytest.raises(ValueError, match="activation"):
        fd.mlp(2, [3], 1, activation="gelu")
    with pytest.raises(ValueError, match="hidden"):
        fd.mlp(2, 3, 1)
    with pytest.raises(ValueError, match="dropout"):
        fd.mlp(2, [3], 1, dropout=1.0)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 6])
def test_sawtooth_has_two_to_the_depth_pieces_at_the_right_places(depth):
    net = fd.sawtooth_net(depth)
    assert fd.count_linear_pieces(net) == 2 ** depth
    expected = torch.arange(1, 2 ** depth, dtype=D) / 2 ** depth
    assert torch.allclose(fd.breakpoints(net), expected, atol=1e-12)
    x = torch.linspace(0, 1, 2 ** depth + 1)[:, None]  # the teeth: 0 at even, 1 at odd multiples
    with torch.no_grad():
        assert torch.allclose(net(x)[:, 0], (torch.arange(2 ** depth + 1) % 2).float(), atol=1e-5)


def test_breakpoints_of_one_hidden_layer_are_minus_b_over_w():
    net = fd.mlp(1, [12], 1)
    w, b = net[0].weight.detach()[:, 0].double(), net[0].bias.detach().double()
    kinks = (-b / w)
    inside = kinks[(kinks > -1) & (kinks < 1)].sort().values
    assert torch.allclose(fd.breakpoints(net, -1.0, 1.0), inside, atol=1e-9)


def test_breakpoints_agree_with_a_fine_grid_for_a_deep_random_net():
    net = fd.mlp(1, [6, 6, 6], 2)
    found = fd.breakpoints(net, -1.0, 1.0)
    x = torch.linspace(-1, 1, 200_001, dtype=D)[:, None]
    with torch.no_grad():
        y = net.double()(x)
    slopes = (y[1:] - y[:-1]) / (x[1:] - x[:-1])
    changed = ((slopes[1:] - slopes[:-1]).abs().amax(1) > 1e-6).nonzero()[:, 0]
    # every kink on the grid is near a breakpoint, and each breakpoint shows on the grid
    grid_kinks = x[1:-1][changed, 0]
    assert all((found - k).abs().min() < 2e-5 for k in grid_kinks)
    assert all((grid_kinks - k).abs().min() < 2e-5 for k in found)


def test_breakpoints_ignore_a_dead_unit_and_handle_dropout_layers():
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        net[0].bias.copy_(torch.tensor([-0.5, -0.25]))
        net[3].weight.copy_(torch.tensor([[1.0, 0.0]]))  # the second unit's kink does not reach the output
    assert torch.allclose(fd.breakpoints(net), torch.tensor([0.5], dtype=D))


def test_breakpoints_validation():
    with pytest.raises(TypeError, match="Sequential"):
        fd.breakpoints(nn.Linear(1, 1))
    with pytest.raises(ValueError, match="Linear, ReLU"):
        fd.breakpoints(nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 1)))
    with pytest.raises(ValueError, match="in_features=1"):
        fd.breakpoints(nn.Sequential(nn.Linear(2, 1)))
    with pytest.raises(ValueError, match="smaller"):
        fd.breakpoints(fd.sawtooth_net(1), 1.0, 0.0)


# backpropagation by hand ------------------------------------------------------

def _sigmoid_case(widths=(4, 5, 3, 2), B=6):
    x = torch.randn(B, widths[0], dtype=D)
    y = torch.rand(B, widths[-1], dtype=D)
    weights = [torch.randn(a, b, dtype=D) for a, b in zip(widths[:-1], widths[1:])]
    biases = [torch.randn(b, dtype=D) for b in widths[1:]]
    return x, y, weights, biases


def test_delta_rule_matches_autograd_and_nn_linear():
    x, y, weights, biases = _sigmoid_case()
    loss, gw, gb = fd.delta_rule(x, y, weights, biases)
    layers = []
    for W, b in zip(weights, biases):
        lin = nn.Linear(*W.shape).double()
        with torch.no_grad():
            lin.weight.copy_(W.T)  # nn.Linear stores (C_out, C_in)
            lin.bias.copy_(b)
        layers += [lin, nn.Sigmoid()]
    net = nn.Sequential(*layers)
    ref = 0.5 * ((net(x) - y) ** 2).sum()
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-12)
    for g, lin in zip(gw, net[::2]):
        assert torch.allclose(g, lin.weight.grad.T, atol=1e-12)
    for g, lin in zip(gb, net[::2]):
        assert torch.allclose(g, lin.bias.grad, atol=1e-12)


def test_delta_rule_golden_single_unit():
    # one sigmoid unit, x = 1, w = 0, b = 0: y_hat = 1/2, target 1: delta = (1/2 - 1) * 1/2 * 1/2 = -1/8
    loss, gw, gb = fd.delta_rule(torch.ones(1, 1, dtype=D), torch.ones(1, 1, dtype=D),
                                 [torch.zeros(1, 1, dtype=D)], [torch.zeros(1, dtype=D)])
    assert loss.item() == pytest.approx(0.125)
    assert gw[0].item() == pytest.approx(-0.125) and gb[0].item() == pytest.approx(-0.125)


def test_numerical_gradient_agrees_with_the_delta_rule_in_float64():
    x, y, weights, biases = _sigmoid_case((3, 4, 2), B=5)
    _, gw, gb = fd.delta_rule(x, y, weights, biases)
    before = [p.clone() for p in weights + biases]
    numeric = fd.numerical_gradient(lambda: fd.delta_rule(x, y, weights, biases)[0], weights + biases)
    assert fd.max_relative_error(numeric, gw + gb) < 1e-6
    assert all(torch.equal(p, q) for p, q in zip(before, weights + biases))  # restored


def test_max_relative_error_golden():
    assert fd.max_relative_error([torch.tensor([1.0, 0.0])], [torch.tensor([1.1, 0.0])]) == pytest.approx(0.1 / 1.1)
    with pytest.raises(ValueError, match="shape"):
        fd.max_relative_error([torch.zeros(2)], [torch.zeros(3)])
    with pytest.raises(ValueError, match="same length"):
        fd.max_relative_error([torch.zeros(2)], [])


def test_delta_rule_validation():
    x, y, weights, biases = _sigmoid_case()
    with pytest.raises(ValueError, match="layer 1"):
        fd.delta_rule(x, y, [weights[0], weights[1].T, weights[2]], biases)
    with pytest.raises(ValueError, match="one tensor per layer"):
        fd.delta_rule(x, y, weights, biases[:2])
    with pytest.raises(ValueError, match="output's shape"):
        fd.delta_rule(x, y[:, :1], weights, biases)
    with pytest.raises(ValueError, match="dtype"):
        fd.delta_rule(x.float(), y, weights, biases)
    with pytest.raises(ValueError, match="positive"):
        fd.numerical_gradient(lambda: 0.0, [torch.zeros(2)], eps=0.0)


# generalization ---------------------------------------------------------------

def test_polynomial_features_golden():
    x = torch.tensor([2.0, -1.0])
    assert torch.equal(fd.polynomial_features(x, 3, scaled=False), torch.tensor([[2.0, 4.0, 8.0], [-1.0, 1.0, -1.0]]))
    assert torch.allclose(fd.polynomial_features(x, 3), torch.tensor([[2.0, 2.0, 8 / 6], [-1.0, 0.5, -1 / 6]]))
    assert fd.polynomial_features(x, 0).shape == (2, 0)


@pytest.mark.parametrize("n, k", [(10, 2), (23, 5), (7, 7), (100, 10)])
def test_kfold_indices_cover_everything_once(n, k):
    folds = fd.kfold_indices(n, k, seed=1)
    assert len(folds) == k
    vals = torch.cat([v for _, v in folds])
    assert torch.equal(vals.sort().values, torch.arange(n))
    for train, val in folds:
        assert len(set(train.tolist()) & set(val.tolist())) == 0
        assert len(train) + len(val) == n and len(val) in (n // k, n // k + 1)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(folds, fd.kfold_indices(n, k, seed=1)))
    with pytest.raises(ValueError, match="at most n"):
        fd.kfold_indices(3, 4)


def test_bad_sample_bound_golden():
    assert fd.bad_sample_bound(1000, 0.05, 1) == pytest.approx(2 * math.exp(-5))
    assert fd.bad_sample_bound(1000, 0.05, 10) == pytest.approx(20 * math.exp(-5))
    assert fd.bad_sample_bound(10, 0.01, 5) == 1.0
    with pytest.raises(ValueError, match="num_models"):
        fd.bad_sample_bound(10, 0.1, 0)


def test_the_bound_holds_for_random_classifiers():
    # 200 coin-flip classifiers on 100 examples: how often is some validation accuracy 0.15 off?
    gen = torch.Generator().manual_seed(0)
    trials, models, n, eps = 200, 200, 100, 0.15
    correct = torch.rand(trials, models, n, generator=gen) < 0.5
    off = ((correct.float().mean(-1) - 0.5).abs() > eps).any(-1).float().mean().item()
    assert off <= fd.bad_sample_bound(n, eps, models)


# regularization ---------------------------------------------------------------

def test_dropout_train_and_eval():
    x = torch.randn(10_000)
    assert torch.equal(fd.dropout(x, 0.5, training=False), x)
    assert torch.equal(fd.dropout(x, 0.0), x)
    assert torch.equal(fd.dropout(x, 1.0), torch.zeros_like(x))
    out = fd.dropout(torch.ones(100_000), 0.3)
    assert abs((out == 0).float().mean().item() - 0.3) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout keeps the mean
    values = out.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.7)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(fd.dropout(x, 0.4, generator=g1), fd.dropout(x, 0.4, generator=g2))


def test_dropout_computes_what_nn_dropout_computes_for_the_same_mask():
    x = torch.randn(64, 32) + 3  # no zeros in x: a zero in the output marks a dropped entry
    layer = nn.Dropout(0.3)
    out = layer(x)
    keep = out != 0
    assert torch.allclose(out, x * keep / 0.7)
    assert torch.equal(layer.eval()(x), x)
    ours = fd.dropout(x, 0.3)
    assert torch.allclose(ours, x * (ours != 0) / 0.7)


def test_dropout_validation():
    with pytest.raises(ValueError, match="p must lie"):
        fd.dropout(torch.zeros(3), 1.5)
    with pytest.raises(TypeError, match="training"):
        fd.dropout(torch.zeros(3), 0.5, training="no")


def test_mixup_mixes_inputs_and_labels_with_one_lambda():
    x = torch.randn(16, 1, 4, 4)
    y = torch.randint(0, 5, (16,))
    torch.manual_seed(3)
    x_mix, y_soft = fd.mixup(x, y, 5, alpha=0.4)
    assert x_mix.shape == x.shape and y_soft.shape == (16, 5)
    assert torch.allclose(y_soft.sum(1), torch.ones(16))
    torch.manual_seed(3)
    lam = torch.distributions.Beta(0.4, 0.4).sample()
    perm = torch.randperm(16)
    assert torch.allclose(x_mix, lam * x + (1 - lam) * x[perm])
    with pytest.raises(ValueError, match="alpha"):
        fd.mixup(x, y, 5, alpha=0.0)


def test_mixup_step_trains_with_fit(native_bf16):
    x, y = fd.two_moons(64, generator=torch.Generator().manual_seed(0))
    loader = dlbook.data.BatchLoader(x, y, batch_size=16, shuffle=True)
    model = fd.mlp(2, [8], 2)
    history = dlbook.fit(model, loader, step=fd.MixupStep(num_classes=2), eval_step=dlbook.supervised(),
                         optimizer=torch.optim.Adam(model.parameters(), 1e-2), epochs=2,
                         evals={"val": loader}, progress=False, device="cpu")
    assert "val_acc" in history.last and math.isfinite(history.last["train_loss"])


def test_ensemble_probs_averages_and_restores_modes():
    a, b = fd.mlp(3, [4], 2, dropout=0.5), fd.mlp(3, [4], 2)
    a.train()
    b.eval()
    x = torch.randn(5, 3)
    probs = fd.ensemble_probs([a, b], x)
    with torch.no_grad():
        expected = (torch.softmax(a.eval()(x), 1) + torch.softmax(b(x), 1)) / 2
    a.train()
    assert torch.allclose(probs, expected) and torch.allclose(probs.sum(1), torch.ones(5))
    assert fd.ensemble_probs([a, b], x) is not None and a.training and not b.training
    with pytest.raises(ValueError, match="list"):
        fd.ensemble_probs(a, x)


# initialization and normalization ---------------------------------------------

def test_init_helpers_match_nn_init_draw_for_draw():
    for ours, theirs in ((fd.xavier_normal_, nn.init.xavier_normal_),
                         (fd.kaiming_normal_, lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))):
        w1, w2 = torch.empty(300, 200), torch.empty(300, 200)
        torch.manual_seed(1)
        ours(w1)
        torch.manual_seed(1)
        theirs(w2)
        assert torch.equal(w1, w2)
    w = fd.xavier_normal_(torch.empty(400, 600))
    assert abs(w.std().item() - math.sqrt(2 / 1000)) < 0.002
    w = fd.kaiming_normal_(torch.empty(400, 600))
    assert abs(w.std().item() - math.sqrt(2 / 600)) < 0.002
    with pytest.raises(ValueError, match="C_out, C_in"):
        fd.xavier_normal_(torch.empty(3, 3, 3))


def test_preactivation_variances_and_gradient_norms():
    net = fd.mlp(16, [32, 32, 32], 4)
    x = torch.randn(64, 16)
    v = fd.preactivation_variances(net, x)
    with torch.no_grad():
        z1 = net[0](x)
    assert len(v) == 3 and v[0] == pytest.approx(z1.var().item())
    y = torch.randint(0, 4, (64,))
    norms = fd.preactivation_gradient_norms(net, lambda m: F.cross_entropy(m(x), y))
    # by hand: the last hidden layer's delta is relu'(z) * (dL/dlogits W_out), the output layer's input
    z = x
    zs = []
    for layer in net:
        if isinstance(layer, nn.ReLU):
            zs.append(z)  # a non-leaf tensor: autograd.grad can still differentiate by it
            z = layer(z)
        else:
            z = layer(z)
    grads = torch.autograd.grad(F.cross_entropy(z, y), zs)
    assert norms == pytest.approx([g.norm().item() for g in grads])
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="no ReLU"):
        fd.preactivation_variances(nn.Sequential(nn.Linear(2, 2)), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="no ReLU"):
        fd.preactivation_gradient_norms(nn.Sequential(nn.Linear(2, 2)), lambda m: m(torch.zeros(1, 2)).sum())


def test_kaiming_keeps_the_relu_signal_and_xavier_halves_it():
    x = torch.randn(2000, 256)
    ratios = {}
    for init in (fd.kaiming_normal_, fd.xavier_normal_):
        net = fd.mlp(256, [256] * 10, 10)
        for m in net:
            if isinstance(m, nn.Linear):
                init(m.weight)
                nn.init.zeros_(m.bias)
        v = fd.preactivation_variances(net, x)
        ratios[init] = v[-1] / v[0]
    assert 1 / 3 < ratios[fd.kaiming_normal_] < 3  # a random walk around a constant
    assert ratios[fd.xavier_normal_] < 0.01  # about 2^-9: halved by every ReLU


def test_layer_norm_matches_torch():
    x = 3 * torch.randn(4, 7, 10) + 2
    gamma, beta = torch.rand(10) + 0.5, torch.randn(10)
    assert torch.allclose(fd.layer_norm(x, gamma, beta), F.layer_norm(x, (10,), gamma, beta), atol=1e-5)
    ln = nn.LayerNorm(10)
    assert torch.allclose(fd.layer_norm(x, ln.weight, ln.bias), ln(x), atol=1e-5)
    with pytest.raises(ValueError, match="gamma"):
        fd.layer_norm(x, torch.ones(3), beta)


# 2-D toy problems -------------------------------------------------------------

def test_two_moons_and_decision_regions():
    x, y = fd.two_moons(101, noise=0.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (101, 2) and y.tolist().count(0) == 50 and y.tolist().count(1) == 51
    upper = x[y == 0]
    assert torch.allclose(upper.norm(dim=1), torch.ones(50), atol=1e-5)  # on the unit circle
    ax = fd.plot_decision_regions(fd.mlp(2, [4], 2), x, y, title="moons")
    assert ax.get_title() == "moons"
    fd.plot_decision_regions(nn.Linear(2, 1), x, y)  # one score: its sign is the class
    with pytest.raises(ValueError, match="2-D points"):
        fd.plot_decision_regions(nn.Linear(3, 1), torch.zeros(4, 3), torch.zeros(4))


# validation added after the review ------------------------------------------------

def test_softmax_family_rejects_a_bad_dim():
    z = torch.randn(3, 4)
    for fn in (fd.softmax, fd.log_softmax, fd.logsumexp):
        with pytest.raises(ValueError, match=r"dim must lie in \[-2, 1\]"):
            fn(z, dim=5)
        with pytest.raises(TypeError, match="dim must be an int"):
            fn(z, dim=1.0)
    assert torch.allclose(fd.softmax(z, dim=0), F.softmax(z, dim=0))  # other axes still work


def test_delta_rule_rejects_y_of_another_dtype():
    x, y, weights, biases = _sigmoid_case()
    with pytest.raises(ValueError, match="y must have the dtype"):
        fd.delta_rule(x, y.float(), weights, biases)


def test_gradient_helpers_want_lists():
    with pytest.raises(TypeError, match="params must be a list"):
        fd.numerical_gradient(lambda: torch.tensor(0.0), torch.zeros(3))
    with pytest.raises(ValueError, match="scalar loss"):
        fd.numerical_gradient(lambda: torch.zeros(3), [torch.zeros(2)])
    with pytest.raises(TypeError, match="a must be a list"):
        fd.max_relative_error(torch.zeros(3), torch.zeros(3))


def test_mixup_step_and_decision_regions_validate():
    with pytest.raises(ValueError, match=r"pair \(x, y\)"):
        fd.MixupStep(3)(nn.Linear(3, 3), (torch.randn(4, 3),))
    with pytest.raises(ValueError, match="one label per point"):
        fd.plot_decision_regions(nn.Linear(2, 2), torch.randn(5, 2), torch.zeros(3))
    plt.close("all")


# added with the second reading: risk, squared error, guessers ----------------

def test_linear_risk_matches_a_monte_carlo_estimate():
    true_w = torch.tensor([2.0, -3.4], dtype=D)
    w, b = torch.tensor([1.5, -3.0], dtype=D), 4.0
    x, y = fd.synthetic_linear_data(true_w, 4.2, 400_000, noise=0.5,
                                    generator=torch.Generator().manual_seed(0))
    estimate = ((x @ w + b - y[:, 0]) ** 2).mean().item()
    exact = fd.linear_risk(w, b, true_w, 4.2, 0.5).item()
    assert exact == pytest.approx(0.25 + 0.16 + 0.04 + 0.25)  # |w - w*|^2 + (b - b*)^2 + s^2
    assert estimate == pytest.approx(exact, rel=0.01)


def test_linear_risk_batches_and_validates():
    true_w = torch.tensor([1.0, 0.0])
    grid = torch.stack([torch.linspace(0, 2, 5), torch.zeros(5)], 1)  # (5, 2)
    risk = fd.linear_risk(grid, torch.tensor([0.5]), true_w, 0.5, 0.1)
    assert risk.shape == (5,) and torch.allclose(risk, (grid[:, 0] - 1) ** 2 + 0.01)
    assert int(risk.argmin()) == 2  # the minimum is at the true parameters
    with pytest.raises(ValueError, match="2 features"):
        fd.linear_risk(torch.zeros(3), 0.0, true_w, 0.0, 0.1)
    with pytest.raises(ValueError, match="noise"):
        fd.linear_risk(torch.zeros(2), 0.0, true_w, 0.0, -1.0)


def test_softmax_squared_error_golden_and_flat_where_confidently_wrong():
    logits = torch.tensor([[0.0, 0.0], [-10.0, 0.0], [3.0, -1.0]], dtype=D, requires_grad=True)
    y = torch.tensor([0, 0, 0])
    loss = fd.softmax_squared_error(logits, y)
    p = torch.sigmoid(logits[:, 0] - logits[:, 1])  # softmax of two logits
    assert torch.allclose(loss, (2 * (1 - p) ** 2).mean())
    onehot = F.one_hot(y, 2).to(D)
    assert torch.allclose(loss, F.mse_loss(torch.softmax(logits, 1), onehot, reduction="sum") / 3)
    (grad,) = torch.autograd.grad(loss, logits)
    ce_grad = fd.cross_entropy_grad(logits.detach(), y)
    assert grad[1].abs().max() < 1e-3 * ce_grad[1].abs().max()  # the plateau: confidently wrong
    half = fd.softmax_squared_error(logits.detach().bfloat16(), y)
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        fd.softmax_squared_error(logits.detach(), torch.tensor([0, 1]))


def test_best_of_random_guessers_overfits_validation_not_fresh_data():
    gen = torch.Generator().manual_seed(0)
    one_val, one_fresh = fd.best_of_random_guessers(1, 200, n_fresh=20_000, trials=30, generator=gen)
    many_val, many_fresh = fd.best_of_random_guessers(2000, 200, n_fresh=20_000, trials=30, generator=gen)
    assert one_val.shape == (30,) and one_val.dtype == torch.float64
    assert abs(one_val.mean().item() - 0.5) < 0.02  # one model: an honest estimate
    assert many_val.min().item() > 0.55  # the best of many: fitted to the validation noise
    for fresh in (one_fresh, many_fresh):  # the chosen table on new data: chance
        assert abs(fresh.mean().item() - 0.5) < 4 * 0.5 / math.sqrt(20_000 * 30)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(fd.best_of_random_guessers(10, 50, 100, 3, generator=g1)[0],
                       fd.best_of_random_guessers(10, 50, 100, 3, generator=g2)[0])
    with pytest.raises(ValueError, match="num_models"):
        fd.best_of_random_guessers(0, 10)


def test_xavier_uniform_matches_nn_init_draw_for_draw():
    w1, w2 = torch.empty(300, 200), torch.empty(300, 200)
    torch.manual_seed(2)
    fd.xavier_uniform_(w1)
    torch.manual_seed(2)
    nn.init.xavier_uniform_(w2)
    assert torch.equal(w1, w2)
    bound = math.sqrt(6 / 500)
    assert w1.abs().max().item() <= bound * (1 + 1e-6) and abs(w1.var().item() / (2 / 500) - 1) < 0.02
    with pytest.raises(ValueError, match="C_out, C_in"):
        fd.xavier_uniform_(torch.empty(3))


def test_train_toy_classifier_fits_and_repeats():
    x, y = fd.two_moons(60, noise=0.1, generator=torch.Generator().manual_seed(0))
    a = fd.train_toy_classifier(x, y, [16, 16], steps=200)
    b = fd.train_toy_classifier(x, y, [16, 16], steps=200)
    assert dlbook.stats.accuracy(a(x), y).value > 0.95
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # seeded
    with pytest.raises(ValueError, match="int64"):
        fd.train_toy_classifier(x, y.float(), [4])


def test_numerical_gradient_defaults_to_the_chapters_step():
    import inspect
    assert inspect.signature(fd.numerical_gradient).parameters["eps"].default == 1e-5
