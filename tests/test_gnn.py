"""dlbook.gnn: message passing on an edge list against hand results and
dense matrices, GCN/GAT/GIN layers, the twin task's property, the spectral
tools, and bad input."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import dlbook
from dlbook import gnn

# A small directed graph: 0 -> 1, 0 -> 2, 1 -> 2, 3 -> 2 (node 0 and node 3 receive nothing)
EDGES = torch.tensor([[0, 0, 1, 3], [1, 2, 2, 2]])
X = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])


def path(n):
    """The undirected path 0 - 1 - ... - (n-1), both directions."""
    i = torch.arange(n - 1)
    return gnn.to_undirected(torch.stack([i, i + 1]), n)


def random_undirected(N, E, seed=0):
    g = torch.Generator().manual_seed(seed)
    return gnn.to_undirected(torch.randint(0, N, (2, E), generator=g), N)


# graphs ----------------------------------------------------------------------------

def test_to_undirected_both_directions_once_no_loops():
    e = gnn.to_undirected(torch.tensor([[0, 1, 1, 2, 2], [1, 0, 1, 0, 0]]), 3)
    assert sorted(map(tuple, e.T.tolist())) == [(0, 1), (0, 2), (1, 0), (2, 0)]


def test_ring_and_grid_sizes():
    assert gnn.ring_graph(5).shape == (2, 10)
    assert gnn.grid_graph(3, 4).shape == (2, 2 * (3 * 3 + 2 * 4))
    deg = gnn.degree(gnn.grid_graph(3, 3)[1], 9)
    assert deg.tolist() == [2, 3, 2, 3, 4, 3, 2, 3, 2]


def test_random_graph_has_the_asked_average_degree():
    e = gnn.random_graph(2000, 6.0, torch.Generator().manual_seed(0))
    assert abs(e.shape[1] / 2000 - 6.0) < 0.1  # a few duplicates dropped
    assert torch.equal(gnn.to_undirected(e, 2000), e)


def test_add_self_loops_and_degree():
    e = gnn.add_self_loops(EDGES, 4)
    assert e.shape == (2, 8) and e[:, 4:].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert gnn.degree(EDGES[1], 4).tolist() == [0, 1, 3, 0]


def test_connected_components():
    e = torch.tensor([[0, 1, 3, 5], [1, 2, 4, 3]])
    assert gnn.connected_components(e, 7).tolist() == [0, 0, 0, 3, 3, 3, 6]


def test_khop_nodes_on_a_path():
    dist = gnn.khop_nodes(path(6), 6, 2, 2)
    assert dist.tolist() == [2, 1, 0, 1, 2, -1]


# message passing against hand results ---------------------------------------------

def test_aggregate_by_hand():
    assert gnn.aggregate(X, EDGES).tolist() == [[0, 0], [1, 10], [7, 70], [0, 0]]
    mean = torch.tensor([[0, 0], [1, 10], [7 / 3, 70 / 3], [0, 0]])
    assert torch.allclose(gnn.aggregate(X, EDGES, reduce="mean"), mean)
    assert gnn.aggregate(X, EDGES, reduce="max").tolist() == [[0, 0], [1, 10], [4, 40], [0, 0]]
    w = torch.tensor([1.0, 2.0, 3.0, 0.5])
    assert gnn.aggregate(X, EDGES, w).tolist() == [[0, 0], [1, 10], [2 + 6 + 2, 20 + 60 + 20], [0, 0]]


def test_aggregate_equals_dense_adjacency_product():
    e = random_undirected(30, 80)
    x = torch.randn(30, 5)
    A = gnn.dense_adjacency(e, 30)
    assert torch.allclose(gnn.aggregate(x, e), A @ x, atol=1e-5)
    directed = torch.randint(0, 30, (2, 50), generator=torch.Generator().manual_seed(1))
    A = gnn.dense_adjacency(directed, 30)  # repeated edges count twice
    assert torch.allclose(gnn.aggregate(x, directed), A @ x, atol=1e-5)


def test_aggregate_gradients_flow():
    x = torch.randn(4, 2, requires_grad=True)
    gnn.aggregate(x, EDGES).sum().backward()
    # node j's gradient counts its outgoing edges
    assert x.grad[:, 0].tolist() == [2, 1, 0, 1]


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_aggregate_is_permutation_equivariant(reduce):
    e = random_undirected(12, 30)
    x = torch.randn(12, 3)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    inverse = torch.argsort(perm)  # new id of old node n is inverse[n]
    out = gnn.aggregate(x, e, reduce=reduce)
    out_perm = gnn.aggregate(x[perm], inverse[e], reduce=reduce)
    assert torch.allclose(out_perm, out[perm], atol=1e-6)


# GCN ---------------------------------------------------------------------------------

def test_gcn_norm_by_hand_on_a_path():
    e, w = gnn.gcn_norm(path(3), 3)  # degrees with loops: 2, 3, 2
    A_hat = torch.zeros(3, 3).index_put_((e[1], e[0]), w, accumulate=True)
    expected = torch.tensor([[1 / 2, 1 / math.sqrt(6), 0], [1 / math.sqrt(6), 1 / 3, 1 / math.sqrt(6)],
                             [0, 1 / math.sqrt(6), 1 / 2]])
    assert torch.allclose(A_hat, expected, atol=1e-6)


def test_sparse_gcn_equals_dense_formula():
    e = random_undirected(40, 100, seed=3)
    x = torch.randn(40, 6)
    dense = gnn.dense_gcn_norm(gnn.dense_adjacency(e, 40)) @ x
    assert torch.allclose(gnn.aggregate(x, *gnn.gcn_norm(e, 40)), dense, atol=1e-5)


def test_gcn_conv_and_model_sparse_equal_dense_input():
    torch.manual_seed(0)
    e = random_undirected(25, 60)
    x = torch.rand(25, 10) * (torch.rand(25, 10) < 0.3)
    conv = gnn.GCNConv(10, 4)
    A_hat = gnn.dense_gcn_norm(gnn.dense_adjacency(e, 25))
    expected = A_hat @ x @ conv.weight.T + conv.bias
    assert torch.allclose(conv(x, e), expected, atol=1e-5)
    assert torch.allclose(conv(x.to_sparse(), e), expected, atol=1e-5)
    model = gnn.GCN(10, 8, 3).eval()
    assert torch.allclose(model(x, e), model(x.to_sparse(), e), atol=1e-5)
    assert model.embed(x, e).shape == (25, 8)


def test_gcn_model_is_permutation_equivariant():
    torch.manual_seed(0)
    e = random_undirected(20, 50)
    x = torch.randn(20, 5)
    model = gnn.GCN(5, 8, 3).eval()
    perm = torch.randperm(20)
    inverse = torch.argsort(perm)
    assert torch.allclose(model(x[perm], inverse[e]), model(x, e)[perm], atol=1e-5)


def test_mlp_ignores_the_edges():
    torch.manual_seed(0)
    x = torch.randn(6, 4)
    mlp = gnn.MLP(4, 8, 3).eval()
    assert torch.equal(mlp(x, EDGES), mlp(x, torch.zeros(2, 0, dtype=torch.long)))
    assert torch.allclose(mlp(x.to_sparse()), mlp(x), atol=1e-6)


def test_row_normalize_and_zero_rows():
    x = torch.tensor([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    assert gnn.row_normalize(x).tolist() == [[0.25, 0.25, 0.5], [0.0, 0.0, 0.0]]


def test_dropout_nonzero_same_distribution_as_dropout():
    torch.manual_seed(0)
    x = (torch.rand(200, 50) < 0.1).float() * torch.rand(200, 50)
    xs = x.to_sparse()
    out = gnn.dropout_nonzero(xs, 0.5).to_dense()
    kept = out != 0
    assert kept.sum() < (x != 0).sum()  # some dropped
    assert torch.allclose(out[kept], 2 * x[kept])  # the rest scaled by 1 / (1 - p)
    assert not bool(((x == 0) & kept).any())  # zeros stay zeros
    # the mean is kept, as with F.dropout
    means = torch.stack([gnn.dropout_nonzero(xs, 0.5).to_dense() for _ in range(400)]).mean(0)
    assert torch.allclose(means.sum(), x.sum(), rtol=0.02)
    assert gnn.dropout_nonzero(xs, 0.5, training=False) is xs


def test_node_matmul_sparse_dense_and_under_autocast():
    torch.manual_seed(0)
    x = torch.rand(30, 12) * (torch.rand(30, 12) < 0.2)
    w = torch.randn(5, 12, requires_grad=True)
    assert torch.allclose(gnn.node_matmul(x.to_sparse(), w), x @ w.T, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gnn.node_matmul(x.to_sparse(), w)
    assert out.dtype == torch.float32 and torch.allclose(out, x @ w.T, atol=1e-5)
    gnn.node_matmul(x.to_sparse(), w).sum().backward()
    assert torch.allclose(w.grad, x.sum(0).expand(5, 12), atol=1e-5)


# float64: the package's layers compute in the features' dtype ------------------------

def test_gcn_norm_weights_come_in_the_asked_dtype():
    e = random_undirected(30, 70, seed=5)
    _, w32 = gnn.gcn_norm(e, 30)
    loops, w64 = gnn.gcn_norm(e, 30, torch.float64)
    assert w32.dtype == torch.float32 and w64.dtype == torch.float64
    deg = gnn.degree(loops[1], 30, torch.float64)  # with the self loops
    exact = 1 / torch.sqrt(deg[loops[0]] * deg[loops[1]])
    assert torch.allclose(w64, exact, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype"):
        gnn.gcn_norm(e, 30, torch.int64)


def test_gcn_in_float64_matches_the_dense_formula_to_float64_rounding():
    torch.manual_seed(0)
    e = random_undirected(25, 60, seed=2)
    x = (torch.rand(25, 10) * (torch.rand(25, 10) < 0.3)).double()
    A_hat = gnn.dense_gcn_norm(gnn.dense_adjacency(e, 25).double())  # (N, N) float64
    conv = gnn.GCNConv(10, 4).double()
    expected = A_hat @ x @ conv.weight.T + conv.bias
    for features in (x, x.to_sparse()):  # dense, and sparse (once a dtype error)
        out = conv(features, e)
        assert out.dtype == torch.float64
        assert torch.allclose(out, expected, rtol=1e-12, atol=1e-13)  # float32 weights: ~1e-7 off
    model = gnn.GCN(10, 8, 3).double().eval()
    h = torch.relu(A_hat @ x @ model.convs[0].weight.T + model.convs[0].bias)
    dense = A_hat @ h @ model.convs[1].weight.T + model.convs[1].bias
    assert torch.allclose(model(x.to_sparse(), e), dense, rtol=1e-12, atol=1e-13)


def test_gat_in_float64_accepts_sparse_features_and_matches_dense_input():
    torch.manual_seed(0)
    e = random_undirected(20, 40)
    x = (torch.rand(20, 9) * (torch.rand(20, 9) < 0.4)).double()
    conv = gnn.GATConv(9, 4, num_heads=2).double().eval()
    out = conv(x.to_sparse(), e)  # once a dtype error in the sparse product
    assert out.dtype == torch.float64
    assert torch.allclose(out, conv(x, e), rtol=1e-12, atol=1e-13)
    model = gnn.GAT(9, 3, head_size=4, num_heads=2).double().eval()
    assert torch.allclose(model(x.to_sparse(), e), model(x, e), rtol=1e-12, atol=1e-13)


def test_node_matmul_sparse_float64_and_mixed_dtypes():
    torch.manual_seed(0)
    x = (torch.rand(30, 12) * (torch.rand(30, 12) < 0.2)).double()
    w = torch.randn(5, 12, dtype=torch.float64)
    out = gnn.node_matmul(x.to_sparse(), w)
    assert out.dtype == torch.float64 and torch.allclose(out, x @ w.T, rtol=1e-12, atol=1e-14)
    mixed = gnn.node_matmul(x.to_sparse(), w.float())  # float64 features, float32 weights
    assert mixed.dtype == torch.float64


# GAT -----------------------------------------------------------------------------------

def test_segment_softmax_sums_to_one_and_matches_dense_softmax():
    scores = torch.tensor([1.0, 2.0, 3.0, 100.0, -2.0])
    index = torch.tensor([0, 0, 1, 1, 2])
    alpha = gnn.segment_softmax(scores, index, 4)
    assert torch.allclose(alpha[:2], torch.softmax(torch.tensor([1.0, 2.0]), 0))
    assert torch.allclose(alpha[2:4], torch.softmax(torch.tensor([3.0, 100.0]), 0))
    assert alpha[4] == 1.0 and torch.isfinite(alpha).all()


def test_gat_attention_sums_to_one_per_node_and_matches_dense_attention():
    torch.manual_seed(0)
    N = 15
    e = random_undirected(N, 30)
    x = torch.randn(N, 6)
    conv = gnn.GATConv(6, 4, num_heads=3).eval()
    out, (loops, alpha) = conv(x, e, return_attention=True)
    assert out.shape == (N, 12) and alpha.shape == (e.shape[1] + N, 3)
    sums = torch.zeros(N, 3).index_add_(0, loops[1], alpha)
    assert torch.allclose(sums, torch.ones(N, 3), atol=1e-6)
    # dense: scores for every pair, -inf where there is no edge, softmax over each row
    h = (x @ conv.weight.T).view(N, 3, 4)  # (N, nh, hs)
    s_src, s_dst = (h * conv.att_src).sum(-1), (h * conv.att_dst).sum(-1)  # (N, nh)
    scores = F.leaky_relu(s_dst[:, None, :] + s_src[None, :, :], 0.2)  # (N_i, N_j, nh)
    mask = gnn.dense_adjacency(gnn.add_self_loops(e, N), N) > 0  # (N_i, N_j)
    att = torch.softmax(scores.masked_fill(~mask[..., None], -math.inf), dim=1)  # (N_i, N_j, nh)
    dense = torch.einsum("ijh,jhs->ihs", att, h).reshape(N, 12) + conv.bias
    assert torch.allclose(out, dense, atol=1e-5)
    mean_heads = gnn.GATConv(6, 4, num_heads=3, concat=False)
    assert mean_heads(x, e).shape == (N, 4)


def test_gat_model_shapes_sparse_input_and_equivariance():
    torch.manual_seed(0)
    e = random_undirected(20, 40)
    x = torch.rand(20, 9) * (torch.rand(20, 9) < 0.4)
    model = gnn.GAT(9, 3, head_size=4, num_heads=2).eval()
    out, att = model(x, e, return_attention=True)
    assert out.shape == (20, 3) and len(att) == 2 and att[0][1].shape == (e.shape[1] + 20, 2)
    assert torch.allclose(model(x.to_sparse(), e), out, atol=1e-5)
    perm = torch.randperm(20)
    assert torch.allclose(model(x[perm], torch.argsort(perm)[e]), out[perm], atol=1e-5)


# training on one graph -----------------------------------------------------------------

def tiny_graph():
    g = torch.Generator().manual_seed(0)
    N = 40
    y = torch.arange(N) % 2
    x = F.one_hot(y, 2).float() + 0.5 * torch.randn(N, 2, generator=g)
    e = random_undirected(N, 60)
    masks = [torch.arange(N) % 3 == r for r in range(3)]
    return dlbook.data.Graph(x=x, y=y, edge_index=e, train_mask=masks[0], val_mask=masks[1], test_mask=masks[2])


def test_full_batch_training_with_early_stopping():
    graph = tiny_graph()
    dlbook.seed_everything(0)
    model = gnn.GCN(2, 8, 2, dropout=0.0)
    stopper = gnn.EarlyStopping(lambda m: gnn.accuracy(m, graph, graph.val_mask), patience=5)
    dlbook.fit(model, [graph], step=gnn.node_classification_step,
               optimizer=torch.optim.Adam(model.parameters(), lr=0.05), epochs=40,
               after_step=stopper, state={"stopper": stopper}, amp=False, progress=False)
    accs = stopper.scores
    assert len(accs) == 40 and stopper.count == 40
    last = stopper.stopped_at or 40
    assert stopper.best == max(accs[:last])
    assert stopper.best_at == max(i + 1 for i, a in enumerate(accs[:last]) if a == stopper.best)  # the latest
    if stopper.stopped:
        assert stopper.stopped_at - stopper.best_at == 5
    stopper.restore(model)
    assert gnn.accuracy(model, graph, graph.val_mask) == stopper.best
    other = gnn.EarlyStopping(stopper.score, patience=5)
    other.load_state_dict(stopper.state_dict())
    assert other.best == stopper.best and other.stopped_at == stopper.stopped_at and other.scores == accs


def test_train_node_classifier_both_protocols(tmp_path):
    graph = tiny_graph()
    dlbook.seed_everything(0)
    model = gnn.GCN(2, 8, 2)
    run = gnn.train_node_classifier(model, graph, torch.optim.Adam(model.parameters(), lr=0.05), 30)
    assert run.epoch == 30 and run.stopped_at is None and run.val_curve is None
    assert run.val_acc == run.history.last["val_acc"] and 0 <= run.test_acc <= 1
    dlbook.seed_everything(0)
    model = gnn.GCN(2, 8, 2)
    optimizer = torch.optim.Adam(gnn.first_layer_decay(model, model.convs[0], 5e-4), lr=0.05)
    run = gnn.train_node_classifier(model, graph, optimizer, 30, patience=5, checkpoint=tmp_path / "c.pt",
                                    checkpoint_every=10)
    assert run.stopped_at is not None  # patience ran out, and training ended there
    assert len(run.val_curve) == run.stopped_at and run.val_acc == max(run.val_curve)
    assert gnn.accuracy(model, graph, graph.val_mask) == run.val_acc  # the kept weights are restored
    # fit evaluates every 10 epochs, and at the epoch it stopped
    evaluated = [s for s in (10, 20, 30) if s < run.stopped_at] + [run.stopped_at]
    assert run.history.column("step") == evaluated and len(run.history.column("val_acc")) == len(evaluated)
    assert optimizer.param_groups[1]["weight_decay"] == 0.0


def test_early_stopping_ignores_improvements_after_patience():
    values = iter([0.5, 0.6, 0.55, 0.55, 0.9])
    stopper = gnn.EarlyStopping(lambda m: next(values), patience=2)
    model = torch.nn.Linear(1, 1)
    for _ in range(5):
        stopper(model)
    assert stopper.best == 0.6 and stopper.best_at == 2 and stopper.stopped_at == 4


def test_early_stopping_a_tie_is_an_improvement():
    values = iter([0.5, 0.6, 0.55, 0.6, 0.55, 0.55, 0.55])
    stopper = gnn.EarlyStopping(lambda m: next(values), patience=3)
    model = torch.nn.Linear(1, 1)
    for _ in range(7):
        stopper(model)
    assert stopper.best == 0.6 and stopper.best_at == 4 and stopper.stopped_at == 7


def test_accuracy_restores_the_mode():
    graph = tiny_graph()
    model = gnn.GCN(2, 4, 2).train()
    acc = gnn.accuracy(model, graph, graph.test_mask)
    assert model.training and 0.0 <= acc <= 1.0


# many graphs, GIN and the twin task ---------------------------------------------------

def test_collate_and_readout():
    a = gnn.SmallGraph(torch.ones(2, 1), torch.tensor([[0, 1], [1, 0]]), torch.tensor(0))
    b = gnn.SmallGraph(torch.full((3, 1), 2.0), torch.tensor([[0, 2], [2, 0]]), torch.tensor(1))
    batch = gnn.collate([a, b])
    assert batch.edge_index.tolist() == [[0, 1, 2, 4], [1, 0, 4, 2]]
    assert batch.batch.tolist() == [0, 0, 1, 1, 1] and batch.y.tolist() == [0, 1]
    assert gnn.readout(batch.x, batch.batch, 2, "sum").flatten().tolist() == [2, 6]
    assert gnn.readout(batch.x, batch.batch, 2, "mean").flatten().tolist() == [1, 2]
    assert gnn.readout(batch.x, batch.batch, 3, "max").flatten().tolist() == [1, 2, 0]


def test_graph_loader_batches_and_shuffles():
    graphs = gnn.twin_dataset(5, seed=1)
    loader = gnn.GraphLoader(graphs, 4, shuffle=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3
    assert sum(b.num_graphs for b in batches) == 10
    assert sorted(torch.cat([b.y for b in batches]).tolist()) == [0] * 5 + [1] * 5


def test_double_cover_keeps_and_blow_up_doubles_every_neighbourhood():
    e = gnn.random_connected_graph(7, 10, torch.Generator().manual_seed(0))
    deg = gnn.degree(e[1], 7)
    cover = gnn.double_cover(e, 7, torch.Generator().manual_seed(1))
    blown = gnn.blow_up(e, 7)
    assert torch.equal(gnn.degree(cover[1], 14), torch.cat([deg, deg]))
    assert torch.equal(gnn.degree(blown[1], 14), 2 * torch.cat([deg, deg]))
    assert cover.shape[1] == 2 * e.shape[1] and blown.shape[1] == 4 * e.shape[1]
    x = torch.randn(7, 3)
    x2 = torch.cat([x, x])
    for reduce in ("mean", "max"):
        expected = gnn.aggregate(x, e, reduce=reduce).repeat(2, 1)
        assert torch.allclose(gnn.aggregate(x2, cover, reduce=reduce), expected, atol=1e-6)
        assert torch.allclose(gnn.aggregate(x2, blown, reduce=reduce), expected, atol=1e-6)
    assert torch.allclose(gnn.aggregate(x2, blown), 2 * gnn.aggregate(x2, cover), atol=1e-5)


def test_twin_task_mean_and_max_features_coincide_across_classes_sum_does_not():
    graphs = gnn.twin_dataset(6, seed=0)
    assert [g.y.item() for g in graphs] == [0, 1] * 6
    torch.manual_seed(0)
    for reduce in ("mean", "max", "sum"):
        model = gnn.GIN(3, 16, 2, num_layers=3, reduce=reduce).eval()
        for p in model.parameters():  # random weights everywhere, batch norm included
            torch.nn.init.normal_(p)
        batch = gnn.collate(graphs)
        h = model.embed(batch.x, batch.edge_index, batch.batch, batch.num_graphs)  # (B, ...)
        gap = (h[0::2] - h[1::2]).abs().amax(1) / h.abs().amax()
        if reduce == "sum":
            assert bool((gap > 1e-3).all())  # every pair told apart
        else:
            assert bool((gap < 1e-5).all())  # no pair told apart


def gin_pair_gaps(graphs, reduce, in_features=3):
    """How far apart a randomly weighted GIN puts the two graphs of each pair."""
    torch.manual_seed(0)
    model = gnn.GIN(in_features, 16, 2, num_layers=3, reduce=reduce).eval()
    for p in model.parameters():  # random weights everywhere, batch norm included
        torch.nn.init.normal_(p)
    batch = gnn.collate(graphs)
    h = model.embed(batch.x, batch.edge_index, batch.batch, batch.num_graphs)  # (B, ...)
    return (h[0::2] - h[1::2]).abs().amax(1) / h.abs().amax()


def test_with_degree_lets_mean_and_max_see_the_twin_task():
    graphs = gnn.twin_dataset(6, seed=0)
    degreed = gnn.with_degree(graphs)
    g = degreed[1]
    assert g.x.shape == (graphs[1].num_nodes, 4) and torch.equal(g.x[:, :3], graphs[1].x)
    assert torch.equal(g.x[:, 3], gnn.degree(g.edge_index[1], g.num_nodes))
    assert [h.y.item() for h in degreed] == [0, 1] * 6
    for reduce in ("mean", "max"):
        assert bool((gin_pair_gaps(degreed, reduce, 4) > 1e-3).all())  # every pair told apart now
    with pytest.raises(TypeError, match="SmallGraph"):
        gnn.with_degree([1])


def test_star_pairs_equal_degrees_max_cannot_tell_mean_and_sum_can():
    graphs = gnn.star_pairs(8, min_leaves=3, max_leaves=9, seed=0)
    assert [g.y.item() for g in graphs] == [0, 1] * 8
    for a, b in zip(graphs[0::2], graphs[1::2]):
        assert torch.equal(a.edge_index, b.edge_index)  # the same star: the same degrees
        assert a.x[0].argmax() == b.x[0].argmax() == 2  # the hub
        ca, cb = a.x[1:].sum(0), b.x[1:].sum(0)  # leaf colour counts
        assert ca[0] > ca[1] >= 1 and torch.equal(cb, ca[[1, 0, 2]])  # class 0: more of colour 0
    assert bool((gin_pair_gaps(graphs, "max") < 1e-5).all())  # no pair told apart
    for reduce in ("mean", "sum"):
        assert bool((gin_pair_gaps(graphs, reduce) > 1e-3).all())


def test_edge_homophily_by_hand():
    e = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    assert gnn.edge_homophily(e, torch.tensor([0, 0, 1])) == 0.5
    assert gnn.edge_homophily(e, torch.tensor([3, 3, 3])) == 1.0
    with pytest.raises(ValueError, match="y must be an int64 tensor of class labels"):
        gnn.edge_homophily(e, torch.tensor([0.0, 0.0, 1.0]))


def test_rewire_keeps_every_degree_and_randomises_the_wiring():
    N = 300
    g = torch.Generator().manual_seed(0)
    y = torch.arange(N) % 3
    # a homophilous graph: 90% of the edges inside a class
    src = torch.randint(0, N, (1200,), generator=g)
    inside = torch.rand(1200, generator=g) < 0.9
    dst = torch.where(inside, (src + 3 * torch.randint(1, N // 3, (1200,), generator=g)) % N,
                      torch.randint(0, N, (1200,), generator=g))
    e = gnn.to_undirected(torch.stack([src, dst]), N)
    r = gnn.rewire(e, N, generator=torch.Generator().manual_seed(1))
    assert r.shape == e.shape and torch.equal(gnn.to_undirected(r, N), r)  # undirected, no loops, no repeats
    assert torch.equal(gnn.degree(r[1], N), gnn.degree(e[1], N))  # every degree kept
    kept = set(map(tuple, e.T.tolist())) & set(map(tuple, r.T.tolist()))
    assert len(kept) < 0.1 * e.shape[1]  # almost every edge moved
    assert gnn.edge_homophily(e, y) > 0.85 and abs(gnn.edge_homophily(r, y) - 1 / 3) < 0.05
    again = gnn.rewire(e, N, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, r)  # seeded: the same rewiring
    assert torch.equal(gnn.rewire(e, N, swaps_per_edge=0), e)
    with pytest.raises(ValueError, match="undirected graph without self loops"):
        gnn.rewire(torch.tensor([[0, 1], [1, 2]]), 3)  # one direction only
    with pytest.raises(ValueError, match="undirected graph without self loops"):
        gnn.rewire(torch.tensor([[0, 1, 1], [1, 0, 1]]), 3)  # a self loop


def test_gin_layer_formula():
    torch.manual_seed(0)
    conv = gnn.GINConv(2, 3, eps=0.5).eval()
    expected = conv.mlp(1.5 * X + gnn.aggregate(X, EDGES))
    assert torch.allclose(conv(X, EDGES), expected)
    assert isinstance(gnn.GINConv(2, 3, train_eps=True).eps, torch.nn.Parameter)


def test_global_node_reaches_every_node_in_one_layer():
    torch.manual_seed(0)
    ring = gnn.SmallGraph(torch.randn(21, 2), gnn.ring_graph(21), torch.zeros(21, dtype=torch.long))
    batch = gnn.collate([ring])
    for use_global, reach in ((False, 2 * 2 + 1), (True, 21)):
        model = gnn.GlobalNodeNet(2, 8, 2, num_layers=2, use_global=use_global)
        x = batch.x.clone().requires_grad_(True)
        model(x, batch.edge_index, batch.batch, 1)[0].sum().backward()
        assert int((x.grad.abs().sum(1) > 0).sum()) == reach


def test_majority_rings_labels():
    for g in gnn.majority_rings(5, seed=0):
        red = int(g.x[:, 1].sum())
        assert g.num_nodes % 2 == 1 and bool((g.y == int(red > g.num_nodes // 2)).all())


# the spectral view and over-smoothing -------------------------------------------------

def test_laplacian_of_a_path_and_its_quadratic_form():
    L = gnn.laplacian(path(3), 3)
    assert L.tolist() == [[1, -1, 0], [-1, 2, -1], [0, -1, 1]]
    x = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    assert x @ L @ x == (1 - 4) ** 2 + (4 - 2) ** 2
    Ln = gnn.laplacian(path(3), 3, normalized=True)
    assert torch.allclose(torch.diag(Ln), torch.ones(3, dtype=torch.float64))


def test_ring_eigenvalues_are_the_fourier_frequencies():
    N = 12
    lam, U = gnn.laplacian_eigenvectors(gnn.ring_graph(N), N)
    k = torch.arange(N, dtype=torch.float64)
    expected = torch.sort(2 - 2 * torch.cos(2 * math.pi * k / N)).values
    assert torch.allclose(lam, expected, atol=1e-10)
    assert torch.allclose(U.T @ U, torch.eye(N, dtype=torch.float64), atol=1e-10)


def test_gcn_propagation_is_a_spectral_filter():
    e = random_undirected(15, 30, seed=2)
    x = torch.randn(15, 3, dtype=torch.float64)
    lam, U = gnn.laplacian_eigenvectors(gnn.add_self_loops(e, 15), 15, normalized=True)
    A_hat = gnn.dense_gcn_norm(gnn.dense_adjacency(e, 15).double())
    assert torch.allclose(gnn.spectral_filter(x, lam, U, lambda l: 1 - l), A_hat @ x, atol=1e-10)


def test_mean_cosine_distance():
    assert gnn.mean_cosine_distance(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])) == pytest.approx(0.0)
    assert gnn.mean_cosine_distance(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)
    h = torch.randn(30, 4)
    unit = F.normalize(h, dim=1)
    cos = unit @ unit.T
    brute = 1 - (cos.sum() - 30) / (30 * 29)
    assert gnn.mean_cosine_distance(h) == pytest.approx(brute.item(), abs=1e-6)


def test_layout_and_draw_graph():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = gnn.layout(path(5), 5)
    assert pos.shape == (5, 2)
    fig, ax = plt.subplots()
    dots = gnn.draw_graph(ax, path(5), pos, node_color=torch.arange(5.0), edge_width=torch.ones(8), labels=True)
    assert dots is not None
    plt.close(fig)


# bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("edge_index, match", [
    (torch.tensor([[0, 1], [1, 5]]), "node ids"),
    (torch.tensor([[0, -1], [1, 2]]), "node ids"),
    (torch.tensor([0, 1, 2]), r"shape \(2, E\)"),
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "int64"),
])
def test_bad_edge_index(edge_index, match):
    with pytest.raises(ValueError, match=match):
        gnn.aggregate(torch.randn(4, 2), edge_index)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="reduce must be one of"):
        gnn.aggregate(X, EDGES, reduce="median")
    with pytest.raises(ValueError, match=r"x must have shape \(N, C\)"):
        gnn.aggregate(torch.randn(4), EDGES)
    with pytest.raises(ValueError, match="floating"):
        gnn.aggregate(torch.ones(4, 2, dtype=torch.long), EDGES)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        gnn.aggregate([[1.0]], EDGES)
    with pytest.raises(ValueError, match="edge_weight must have shape"):
        gnn.aggregate(X, EDGES, torch.ones(3))
    with pytest.raises(ValueError, match="sparse COO"):
        gnn.dropout_nonzero(X, 0.5)
    with pytest.raises(ValueError, match="p must lie in"):
        gnn.dropout_nonzero(X.to_sparse(), 1.0)
    with pytest.raises(ValueError, match="non-negative"):
        gnn.row_normalize(-X)
    with pytest.raises(ValueError, match="weight must have shape"):
        gnn.node_matmul(X, torch.randn(3, 5))
    with pytest.raises(ValueError, match="square"):
        gnn.dense_gcn_norm(torch.ones(2, 3))
    with pytest.raises(ValueError, match="undirected"):
        gnn.laplacian(EDGES, 4)
    with pytest.raises(ValueError, match="num_heads must be an integer >= 1"):
        gnn.GATConv(4, 2, num_heads=0)
    with pytest.raises(ValueError, match="reduce must be one of"):
        gnn.GIN(3, 8, 2, reduce="min")
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        gnn.EarlyStopping(lambda m: 0.0, patience=0)
    with pytest.raises(TypeError, match="score must be a function"):
        gnn.EarlyStopping(0.5)
    with pytest.raises(RuntimeError, match="not evaluated"):
        gnn.EarlyStopping(lambda m: 0.0).restore(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="node must be a node id below"):
        gnn.khop_nodes(EDGES, 4, 4, 1)
    with pytest.raises(ValueError, match="avg_degree must be at most"):
        gnn.random_graph(5, 5.0)
    with pytest.raises(ValueError, match="at most 3 edges"):
        gnn.random_connected_graph(3, 4)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        gnn.accuracy(gnn.GCN(2, 4, 2), tiny_graph(), torch.ones(40))
    with pytest.raises(ValueError, match="SmallGraph.y must have shape"):
        gnn.SmallGraph(torch.ones(3, 1), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match="non-empty list"):
        gnn.collate([])
    with pytest.raises(ValueError, match="batch must be an int64 tensor"):
        gnn.readout(X, torch.zeros(3, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="two non-zero rows"):
        gnn.mean_cosine_distance(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="expects a graph with x, y"):
        gnn.node_classification_step(gnn.GCN(2, 4, 2), (X, EDGES))
    with pytest.raises(TypeError, match="expects a GraphBatch"):
        gnn.graph_classification_step(gnn.GIN(2, 4, 2), [X])
    with pytest.raises(TypeError, match="expects a GraphBatch"):
        gnn.node_batch_step(gnn.GlobalNodeNet(2, 4, 2), [X])


def test_graph_with_sparse_features_survives_fit_fingerprint():
    graph = tiny_graph()
    sparse = dataclasses.replace(graph, x=graph.x.clamp(min=0).to_sparse())
    model = gnn.GCN(2, 4, 2)
    history = dlbook.fit(model, [sparse], step=gnn.node_classification_step,
                         optimizer=torch.optim.Adam(model.parameters(), lr=0.01), epochs=2, amp=True,
                         progress=False)
    assert len(history) == 2


def test_review_bad_inputs_get_clear_errors():
    """The calls a reader makes by mistake fail with a message naming what was expected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ring = gnn.ring_graph(6)
    lam, U = gnn.laplacian_eigenvectors(ring, 6)
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"response\(eigenvalues\) must return a tensor of 6 gains"):
        gnn.spectral_filter(x.double(), lam, U, lambda l: torch.ones(3))
    with pytest.raises(ValueError, match=r"response\(eigenvalues\) must return"):
        gnn.spectral_filter(x.double(), lam, U, lambda l: 2.0)
    with pytest.raises(ValueError, match="x must have one row per node, num_nodes=6"):
        gnn.wl_colours(ring, 6, torch.randn(4, 2))
    empty = torch.zeros(2, 0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"same number of node features; got widths \[2, 4\]"):
        gnn.collate([gnn.SmallGraph(torch.randn(3, 2), empty, torch.tensor(0)),
                     gnn.SmallGraph(torch.randn(3, 4), empty, torch.tensor(1))])
    with pytest.raises(ValueError, match="batch holds graph ids from 0 to 1; with num_graphs=1"):
        gnn.GIN(3, 4, 2)(x, ring, torch.tensor([0, 0, 0, 1, 1, 1]), 1)
    with pytest.raises(ValueError, match="x must have 2 features per node"):
        gnn.GlobalNodeNet(2, 4, 2)(x, ring, torch.zeros(6, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="x must have 5 features per node"):
        gnn.GIN(5, 4, 2)(x, ring, torch.zeros(6, dtype=torch.long), 1)
    with pytest.raises(TypeError, match="graphs must hold SmallGraph objects"):
        gnn.GraphLoader([1, 2], 1)
    fig, ax = plt.subplots()
    try:
        with pytest.raises(ValueError, match="node_color must have one entry per node, num_nodes=6"):
            gnn.plot_neighbourhood(ax, ring, 6, 0, 1, node_color=torch.arange(3))
        with pytest.raises(ValueError, match=r"pos must hold one 2-D position per node, shape \(N, 2\)"):
            gnn.draw_graph(ax, ring, torch.randn(6, 3))
        with pytest.raises(ValueError, match="node_color must have one entry per node, 6"):
            gnn.draw_graph(ax, ring, torch.randn(6, 2), node_color=torch.arange(4))
    finally:
        plt.close(fig)
