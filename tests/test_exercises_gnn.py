"""The GNN chapter's exercises: right answers pass, typical wrong ones get a
hint that never gives the solution away, and the rules are enforced."""

import numpy as np
import pytest
import scipy.sparse
import torch
# names bound before any check, as a reader's notebook may have bound them
from numpy.linalg import eigh as np_eigh
from scipy.sparse.linalg import eigsh, splu

from dlbook import exercises, gnn
from dlbook.gnn import degree, khop_nodes, laplacian
from exercise_helpers import assert_fails_with_hint, assert_passes, check, wrong_cases

# The right answers, as a reader would write them ---------------------------------


def _walks(edge_index, num_nodes):
    """(i, k) for every walk k -> j -> i, as a reader would form them."""
    src, dst = edge_index
    order = torch.argsort(dst, stable=True)  # edges grouped by target
    deg = torch.bincount(dst, minlength=num_nodes)
    start = torch.cumsum(deg, 0) - deg  # first edge into each node
    reps = deg[src]  # (E,): edges into j, for each edge j -> i
    first = torch.repeat_interleave(torch.arange(len(src)), reps)  # (walks,)
    offset = torch.arange(len(first)) - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
    k = src[order[start[src[first]] + offset]]
    return dst[first], k


def _two_hop(edge_index, num_nodes):
    i, k = _walks(edge_index, num_nodes)
    codes = torch.unique(i * num_nodes + k)
    i, k = codes // num_nodes, codes % num_nodes
    keep = (i != k) & ~torch.isin(codes, edge_index[1] * num_nodes + edge_index[0])
    return torch.bincount(i[keep], minlength=num_nodes)


def _two_hop_sets(edge_index, num_nodes):
    nbrs = [set() for _ in range(num_nodes)]
    for j, i in edge_index.T.tolist():
        nbrs[i].add(j)
    return torch.tensor([len(set().union(*(nbrs[j] for j in nbrs[i])) - nbrs[i] - {i})
                         for i in range(num_nodes)])


def _limit(edge_index, num_nodes):
    deg = torch.bincount(edge_index[1], minlength=num_nodes).double()
    v = (deg + 1).sqrt()
    return v / v.norm()


RING6 = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0)]
TRIANGLES = [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3)]

RIGHT = {
    "gnn.two_hop_count": _two_hop,
    "gnn.wl_pair": (RING6, TRIANGLES),
    "gnn.ring_filter": (1, -0.5, 1 / 16),
    "gnn.oversmoothing_limit": _limit,
}


def _hop_walks(edge_index, n):
    i, k = _walks(edge_index, n)
    return torch.bincount(i, minlength=n)


def _hop_with_self(edge_index, n):
    i, k = _walks(edge_index, n)
    codes = torch.unique(i * n + k)
    i, k = codes // n, codes % n
    keep = ~torch.isin(codes, edge_index[1] * n + edge_index[0])
    return torch.bincount(i[keep], minlength=n)


def _hop_with_neighbours(edge_index, n):
    i, k = _walks(edge_index, n)
    codes = torch.unique(i * n + k)
    i, k = codes // n, codes % n
    return torch.bincount(i[i != k], minlength=n)


def _hop_dense_mm(edge_index, n):  # the reviewer's: an N x N matrix and Tensor.mm
    A = torch.zeros(n, n)
    A.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.shape[1]), accumulate=True)
    A2 = A.mm(A)
    return ((A2 > 0) & (A == 0) & ~torch.eye(n, dtype=torch.bool)).sum(1)


def _hop_dense_broadcast(edge_index, n):  # no product at all, only broadcasting
    A = torch.zeros(n, n)
    A.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.shape[1]), accumulate=True)
    A2 = (A[:, :, None] * A[None, :, :]).sum(1)
    return ((A2 > 0) & (A == 0) & ~torch.eye(n, dtype=torch.bool)).sum(1)


def _hop_dense_index(edge_index, n):  # an N x N boolean matrix filled by indexing
    reach = torch.zeros(n, n, dtype=torch.bool)
    i, k = _walks(edge_index, n)
    reach[i, k] = True
    reach[edge_index[1], edge_index[0]] = False
    reach[torch.arange(n), torch.arange(n)] = False
    return reach.sum(1)


def _hop_sparse(edge_index, n):
    A = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.shape[1]), (n, n))
    A2 = torch.sparse.mm(A, A).to_dense()
    return ((A2 > 0) & (A.to_dense() == 0) & ~torch.eye(n, dtype=torch.bool)).sum(1)


def _hop_package(edge_index, n):
    hops = [gnn.khop_nodes(edge_index, n, v, 2) for v in range(n)]
    return torch.stack([(h == 2).sum() for h in hops])


def _lim_numpy(edge_index, n):  # the reviewer's: numpy's eigen-solver on a dense A_hat
    A = np.zeros((n, n))
    A[edge_index[1].numpy(), edge_index[0].numpy()] = 1
    At = A + np.eye(n)
    d = At.sum(1)
    w, V = np.linalg.eigh(At / np.sqrt(np.outer(d, d)))
    v = np.abs(V[:, -1])
    return torch.tensor(v / np.linalg.norm(v))


def _lim_dense_power(edge_index, n):  # the reviewer's: power iteration with a dense A_hat
    A = torch.zeros(n, n, dtype=torch.float64)
    A[edge_index[1], edge_index[0]] = 1
    At = A + torch.eye(n, dtype=torch.float64)
    d = At.sum(1)
    Ah = At / (d[:, None] * d[None]).sqrt()
    v = torch.rand(n, dtype=torch.float64) + 0.1
    for _ in range(2000):
        v = Ah @ v
        v = v / v.norm()
    return v


def _lim_dense_power_no_matmul(edge_index, n):  # broadcasting instead of a product
    A = torch.zeros(n, n, dtype=torch.float64)
    A[edge_index[1], edge_index[0]] = 1
    At = A + torch.eye(n, dtype=torch.float64)
    d = At.sum(1)
    Ah = At / (d[:, None] * d[None]).sqrt()
    v = torch.rand(n, dtype=torch.float64) + 0.1
    for _ in range(2000):
        v = (Ah * v[None]).sum(1)
        v = v / v.norm()
    return v


def _lim_sparse_power(edge_index, n):  # power iteration with scatters: too slow on a long ring
    src, dst = edge_index
    deg = torch.bincount(dst, minlength=n).double() + 1
    w = (deg[src] * deg[dst]).rsqrt()
    v = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for _ in range(300):
        v = v / deg + torch.zeros_like(v).index_add_(0, dst, w * v[src])
        v = v / v.norm()
    return v


CUBE = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
# the other connected cubic graph on 8 nodes with a 4-cycle structure (not the cube): 1-WL-equivalent
TWISTED = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 6), (2, 5), (3, 7)]
PATH4 = [(0, 1), (1, 2), (2, 3)]
STAR4 = [(0, 1), (0, 2), (0, 3)]
# same degrees (2, 2, 2, 1, 1 and ...): a path of 5 against a triangle with a separate edge
PATH5 = [(0, 1), (1, 2), (2, 3), (3, 4)]
TRIANGLE_EDGE = [(0, 1), (1, 2), (2, 0), (3, 4)]

WRONG = {
    "gnn.two_hop_count": [
        (_hop_walks, "walks of length 2"), (_hop_with_self, "node itself"),
        (_hop_with_neighbours, "one hop away"),
        (lambda e, n: torch.bincount(e[1], minlength=n), "numbers of neighbours"),
        (lambda e, n: _two_hop(e, n) + (torch.arange(n) == n - 1).long(), "not right"),
        (_hop_dense_mm, "the rule"), (_hop_dense_broadcast, "the rule"), (_hop_dense_index, "the rule"),
        (_hop_sparse, "the rule"), (_hop_package, "the rule"),
        (lambda e, n: _two_hop(e, n).tolist(), "tensor"), (lambda e, n: _two_hop(e, n)[:-1], "one count"),
        (lambda e, n: _two_hop(e, n) + 0.5, "whole numbers"), (3, "function"),
    ],
    "gnn.wl_pair": [
        ((RING6, RING6), "isomorphic"), ((RING6, [(5 - u, 5 - v) for u, v in RING6]), "isomorphic"),
        ((PATH4, STAR4), "degrees differ"), ((RING6, TRIANGLES[:5]), "edges"),
        ((RING6, PATH4), "nodes"), ((PATH5, TRIANGLE_EDGE), "later round"),
        ((RING6, [(0, 0)] + TRIANGLES[1:]), "self loop"), ((RING6, [(0, 1), (1, 2), (2, 9)]), "not all"),
        ((RING6,), "pair"), ((RING6, "triangles"), "list of edges"), ((RING6, [(0, 1.5)]), "pair of node ids"),
    ],
    "gnn.ring_filter": [
        ((1, -0.25, 0), "Only L^2"), ((1, -0.5, 0.25), "Only L^2"), ((0.5, 0.25, 0), "constant signal"),
        ((0, -0.5, 1 / 16), "constant signal"), ((1, 0.5, 1 / 16), "c0 and c2 are right"),
        ((1, -0.25, 1 / 16), "c0 and c2 are right"), ((1, -0.25), "three numbers"),
        (("1", "a", "b"), "three numbers"), ((float("nan"), 1, 0), "finite"), (0.75, "three numbers"),
    ],
    "gnn.oversmoothing_limit": [
        (lambda e, n: -_limit(e, n), "sign"),
        (lambda e, n: torch.full((n,), n ** -0.5, dtype=torch.float64), "random walk"),
        (lambda e, n: (lambda d: d / d.norm())(torch.bincount(e[1], minlength=n).double()), "A + I"),
        (lambda e, n: (lambda d: d / d.norm())(torch.bincount(e[1], minlength=n).double() + 1), "not the limit"),
        (lambda e, n: 2 * _limit(e, n), "unit vector"), (lambda e, n: _limit(e, n)[:-1], "one per node"),
        (lambda e, n: _limit(e, n).tolist(), "tensor"),
        (lambda e, n: torch.linalg.eigh(torch.eye(n))[1][:, 0], "the rule"),
        (lambda e, n: gnn.gcn_norm(e, n)[1][:n], "the rule"),
        (_lim_numpy, "the rule"), (_lim_dense_power, "the rule"), (_lim_dense_power_no_matmul, "the rule"),
        (_lim_sparse_power, "not the limit"),
        (7, "function"),
    ],
}

# What a hint must never print: the explanation's key facts
SECRETS = {
    "gnn.two_hop_count": ["repeat_interleave", "torch.isin)"],
    "gnn.wl_pair": ["a ring of 6 nodes against two triangles", "same degree"],
    "gnn.ring_filter": ["(1, -1/2, 1/16)", "1/16", "0.0625", "(1 - lambda / 4)^2"],
    "gnn.oversmoothing_limit": ["sqrt(d_i + 1)", "D~^(1/2) 1"],
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


@pytest.mark.parametrize("answer", [
    (CUBE, TWISTED),
    (TRIANGLES, RING6),
    (torch.tensor(RING6), torch.tensor(TRIANGLES).T),  # tensors in either layout
])
def test_other_right_wl_pairs(answer, capsys):
    result, out = check("gnn.wl_pair", answer, capsys)
    assert result.passed, out


def test_two_double_covers_of_one_graph_are_a_right_wl_pair(capsys):
    base = gnn.random_connected_graph(6, 8, torch.Generator().manual_seed(0))
    covers = []
    for seed in range(20):
        cover = gnn.double_cover(base, 6, torch.Generator().manual_seed(seed))
        covers.append([tuple(p) for p in cover[:, cover[0] < cover[1]].T.tolist()])
    import networkx as nx

    pair = next((a, b) for a in covers for b in covers if not nx.is_isomorphic(nx.Graph(a), nx.Graph(b)))
    result, out = check("gnn.wl_pair", pair, capsys)
    assert result.passed, out


def test_a_plain_python_answer_is_right_too(capsys):
    result, out = check("gnn.two_hop_count", _two_hop_sets, capsys)
    assert result.passed, out


def test_the_rules_are_enforced_and_everything_is_restored(capsys):
    real = (torch.matmul, torch.sparse.mm, torch.Tensor.__matmul__, torch.Tensor.to_dense, gnn.aggregate,
            torch.linalg.eigh)
    check("gnn.two_hop_count", _hop_dense_mm, capsys)
    check("gnn.two_hop_count", _hop_package, capsys)
    check("gnn.oversmoothing_limit", _lim_numpy, capsys)
    check("gnn.oversmoothing_limit", WRONG["gnn.oversmoothing_limit"][7][0], capsys)
    assert (torch.matmul, torch.sparse.mm, torch.Tensor.__matmul__, torch.Tensor.to_dense, gnn.aggregate,
            torch.linalg.eigh) == real
    assert np.linalg.eigh is not None and np.linalg.eigh(np.eye(2))[0].tolist() == [1.0, 1.0]
    assert torch.equal(torch.eye(2) @ torch.ones(2), torch.ones(2))
    assert torch.zeros(3000, 3000).numel() == 9_000_000  # no size guard left behind


@pytest.mark.parametrize("key", ["gnn.two_hop_count", "gnn.oversmoothing_limit"])
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out


@pytest.mark.parametrize("key, answer", [
    ("gnn.wl_pair", ([(np.int64(u), np.int64(v)) for u, v in RING6], TRIANGLES)),
    ("gnn.ring_filter", (np.float64(1.0), np.float32(-0.5), np.float64(0.0625))),
    ("gnn.ring_filter", [1, -1 / 2, 1 / 16]),
])
def test_numpy_numbers_are_right_answers(key, answer, capsys):
    result, out = check(key, answer, capsys)
    assert result.passed, out


# Every way around the two rules through a name bound before the check, or through scipy's sparse
# solvers, is refused, and the hint names the rule and what the answer called. "got through" marks
# those that the check let through while it forbade names only (or, for splu, not at all).

def _hop_by_khop(edge_index, n):  # got through
    return torch.stack([(khop_nodes(edge_index, n, v, 2) == 2).sum() for v in range(n)])


def _hop_by_degree(edge_index, n):  # the package's degree, under its own name: got through
    deg = degree(edge_index[1], n)
    return _two_hop(edge_index, n) + 0 * deg.long()


def _a_hat(edge_index, n, shift=0.0):
    """A_hat - shift I as a scipy sparse matrix, built from the edge list (no product)."""
    d = np.bincount(edge_index[1].numpy(), minlength=n) + 1.0
    rows, cols = edge_index[1].numpy(), edge_index[0].numpy()
    values = np.concatenate([1 / np.sqrt(d[rows] * d[cols]), 1 / d - shift])
    index = (np.concatenate([rows, np.arange(n)]), np.concatenate([cols, np.arange(n)]))
    return scipy.sparse.csc_matrix((values, index), shape=(n, n))


def _unit(v):
    v = np.abs(v)
    return torch.tensor(v / np.linalg.norm(v))


def _lim_eigsh(edge_index, n):  # got through, even on the ring of 200,000 nodes
    return _unit(eigsh(_a_hat(edge_index, n), k=1, sigma=1 + 1e-10)[1][:, 0])


def _lim_inverse_iteration(edge_index, n):  # got through: a few solves with A_hat - (1 + eps) I
    lu = splu(_a_hat(edge_index, n, shift=1 + 1e-10))
    v = np.ones(n)
    for _ in range(5):
        v = lu.solve(v)
        v = v / np.linalg.norm(v)
    return _unit(v)


def _lim_numpy_eigh(edge_index, n):  # got through the small graphs; the large one is too large for it
    A = _a_hat(edge_index, n).toarray()
    return _unit(np_eigh(A)[1][:, -1])


def _lim_laplacian(edge_index, n):  # got through the small graphs
    L = laplacian(edge_index, n)
    return _limit(edge_index, n) + 0 * L.sum()


GNN_BYPASSES = [
    ("gnn.two_hop_count", _hop_by_khop, "dlbook.gnn.khop_nodes"),
    ("gnn.two_hop_count", _hop_by_degree, "dlbook.gnn.degree"),
    ("gnn.oversmoothing_limit", _lim_eigsh, "scipy.sparse.linalg.eigsh"),
    ("gnn.oversmoothing_limit", _lim_inverse_iteration, "scipy.sparse.linalg.splu"),
    ("gnn.oversmoothing_limit", _lim_numpy_eigh, "numpy.linalg.eigh"),
    ("gnn.oversmoothing_limit", _lim_laplacian, "dlbook.gnn.laplacian"),
]
RULES = {"gnn.two_hop_count": "gathers and scatters along edge_index: no N x N matrix",
         "gnn.oversmoothing_limit": "reason it out: no eigen-solver or linear solver, no matrix product"}


@pytest.mark.parametrize("key, answer, called", GNN_BYPASSES)
def test_every_bypass_through_a_name_bound_before_the_check_is_refused(key, answer, called, capsys):
    result, out = check(key, answer, capsys)
    assert not result.passed, out
    assert f"the rule is: {RULES[key]}" in out, out
    assert called in out, out


def test_the_bypasses_give_the_right_answers():
    """Each bypass would pass (on the graphs it can handle) if the check let it through."""
    graph = gnn.random_connected_graph(15, 25, torch.Generator().manual_seed(1))
    for key, answer, _ in GNN_BYPASSES:
        right = RIGHT[key](graph, 15)
        assert torch.allclose(answer(graph, 15).double(), right.double(), atol=1e-6), answer.__name__


def test_every_function_is_restored_after_the_checks(capsys):
    functions = (khop_nodes, degree, laplacian, eigsh, splu, np_eigh)
    codes = [f.__code__ for f in (khop_nodes, degree, laplacian, eigsh, splu, np_eigh._implementation)]
    for key, answer, _ in GNN_BYPASSES:
        check(key, answer, capsys)
    assert functions == (gnn.khop_nodes, gnn.degree, gnn.laplacian, scipy.sparse.linalg.eigsh,
                         scipy.sparse.linalg.splu, np.linalg.eigh)
    assert codes == [f.__code__ for f in (khop_nodes, degree, laplacian, eigsh, splu, np_eigh._implementation)]
    graph = gnn.ring_graph(6)
    assert torch.equal(_hop_by_khop(graph, 6), torch.ones(6, dtype=torch.int64) * 2)
    assert torch.allclose(_lim_inverse_iteration(graph, 6), torch.full((6,), 6 ** -0.5, dtype=torch.float64))
