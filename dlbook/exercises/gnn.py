"""Exercises of the GNN chapter."""

from __future__ import annotations

import math
import types

import torch

from . import Wrong, exercise, forbid_functions, forbid_ops, is_int, module_functions


def _size_guard(rule: str, limit: int):
    """A torch dispatch mode (a context manager) that refuses every tensor
    of more than ``limit`` elements, asked for (a size argument, as in ``torch.zeros(N, N)``) or
    produced (a broadcast, a product): an N x N matrix cannot hide in it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    def refuse(shape):
        raise Wrong(f"the rule is: {rule}. Your answer made a tensor of shape {tuple(shape)}, "
                    f"more than {limit:,} elements, on a graph of that many nodes.")

    class Mode(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            for arg in list(args) + list((kwargs or {}).values()):
                if isinstance(arg, (list, tuple, torch.Size)) and arg and all(isinstance(v, int) for v in arg):
                    if math.prod(abs(v) for v in arg) > limit:
                        refuse(arg)
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (list, tuple)) else (out,):
                if isinstance(t, torch.Tensor) and t.numel() > limit:
                    refuse(t.shape)
            return out

    return Mode()


DENSE_OPS = ("mm", "matmul", "bmm", "addmm", "addmv", "mv", "dot", "einsum", "tensordot", "sparse", "to_dense")


def _forbid_dense(num_nodes: int | None = None):
    """Everything that would build an N x N matrix, or hand the work to the
    package: the package's functions (whatever name the answer gave them),
    matrix products and sparse tensors at the level of torch's operators
    and, with ``num_nodes``, any tensor with as many elements as an N x N
    matrix."""
    import contextlib

    from .. import gnn

    rule = ("gathers and scatters along edge_index: no N x N matrix, no matrix or sparse product, "
            "nothing from dlbook.gnn")
    stack = contextlib.ExitStack()
    stack.enter_context(forbid_functions(rule, *module_functions(gnn)))
    stack.enter_context(forbid_ops(rule, *DENSE_OPS))
    if num_nodes is not None:
        stack.enter_context(_size_guard(rule, num_nodes ** 2 // 8))
    return stack


def _two_hop_reference(edge_index: torch.Tensor, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(distinct nodes at distance exactly 2, walks of length 2, distinct nodes reached in 2 steps
    other than i itself) for every node, with Python sets, outside any rule."""
    src, dst = edge_index
    deg = torch.bincount(dst, minlength=N)
    walks = torch.zeros(N, dtype=torch.int64).index_add_(0, dst, deg[src])  # sum over j -> i of d_j
    nbrs = [set() for _ in range(N)]
    for j, i in edge_index.T.tolist():
        nbrs[i].add(j)
    two_steps = [set().union(*(nbrs[j] for j in nbrs[i])) - {i} for i in range(N)]
    exact = torch.tensor([len(two_steps[i] - nbrs[i]) for i in range(N)], dtype=torch.int64)
    reached = torch.tensor([len(s) for s in two_steps], dtype=torch.int64)
    return exact, walks, reached


def _hop_graphs():
    """The check's graphs: small ones with triangles, an isolated node, and a large sparse one."""
    from .. import gnn

    triangle_tail = gnn.to_undirected(torch.tensor([[0, 1, 2, 2, 3], [1, 2, 0, 3, 4]]), 6)  # node 5 alone
    graphs = [(triangle_tail, 6, False)]
    for N, M, seed in ((7, 9, 0), (15, 25, 1), (40, 70, 2)):
        graphs.append((gnn.random_connected_graph(N, M, torch.Generator().manual_seed(seed)), N, False))
    graphs.append((gnn.ring_graph(12), 12, False))
    graphs.append((gnn.random_graph(3000, 8.0, torch.Generator().manual_seed(3)), 3000, True))
    return graphs


@exercise(
    "gnn.two_hop_count",
    "Write two_hop_count(edge_index, num_nodes): for an undirected graph (every edge stored in both "
    "directions, no self loops), the number of distinct nodes at distance exactly 2 from each node, as "
    "an int64 tensor of shape (num_nodes,). Not the node itself, not its neighbours, each such node "
    "counted once however many paths lead to it. Gathers, scatters, sorting, torch.unique, torch.isin, "
    "...: no N x N matrix, no matrix or sparse product, nothing from dlbook.gnn.",
    "Form every walk l -> j -> i: for each edge j -> i, all the edges into j (sort the edges by target "
    "and use repeat_interleave, or loop over the few distinct degrees). Encode each pair (i, l) as one "
    "integer i * N + l, drop l == i and the pairs that are edges (torch.isin), take torch.unique, and "
    "count by i with bincount(minlength=N). Memory is the number of walks, sum_j d_j^2, not N^2: a "
    "message-passing layer sees two hops at the same cost.",
)
def _two_hop_count(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function two_hop_count(edge_index, num_nodes).")
    for edge_index, N, large in _hop_graphs():
        exact, walks, reached = _two_hop_reference(edge_index, N)
        with _forbid_dense(N if large else None):
            got = answer(edge_index.clone(), N)
        where = f"on a graph of {N} nodes and {edge_index.shape[1] // 2} edges"
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor.")
        if tuple(got.shape) != (N,):
            raise Wrong(f"{where} return one count per node, shape ({N},); yours is {tuple(got.shape)}.")
        if got.is_floating_point() and not bool((got == got.round()).all()):
            raise Wrong(f"{where} your counts are not whole numbers.")
        got = got.detach().long()
        if torch.equal(got, exact):
            continue
        neighbours = torch.bincount(edge_index[1], minlength=N)
        if torch.equal(got, walks):
            raise Wrong(f"{where} you count walks of length 2 (with repeats, and back to the start); "
                        f"count distinct nodes.")
        if torch.equal(got, reached + 0) or torch.equal(got, reached + (neighbours > 0).long()):
            raise Wrong(f"{where} some of the nodes you count are one hop away: in a triangle a "
                        f"neighbour is also two steps away.")
        if torch.equal(got, exact + (neighbours > 0).long()):
            raise Wrong(f"{where} you count the node itself: i -> j -> i is a walk of two steps back to "
                        f"the start.")
        if torch.equal(got, neighbours):
            raise Wrong(f"{where} those are the numbers of neighbours, one hop away.")
        raise Wrong(f"{where} the counts are not right. Try it by hand on a path 0 - 1 - 2 - 3 and on a "
                    f"triangle with a tail; and check nodes without neighbours.")


def _edge_pairs(edges, name: str) -> tuple[int, list[tuple[int, int]]]:
    """(number of nodes, sorted undirected edges) of an answer's edge list."""
    if isinstance(edges, torch.Tensor):
        edges = edges.tolist() if edges.dim() == 2 and edges.shape[-1] == 2 else edges.T.tolist()
    if not isinstance(edges, (list, tuple)) or not edges:
        raise Wrong(f"{name} must be a non-empty list of edges (u, v).")
    pairs = set()
    for edge in edges:
        if not isinstance(edge, (list, tuple)) or len(edge) != 2 or not all(is_int(v) for v in edge):
            raise Wrong(f"{name}: every edge must be a pair of node ids (u, v); got {edge!r}.")
        u, v = int(edge[0]), int(edge[1])
        if u == v:
            raise Wrong(f"{name} has a self loop ({u}, {v}); use graphs without them.")
        if u < 0 or v < 0:
            raise Wrong(f"{name} has a negative node id in ({u}, {v}).")
        pairs.add((min(u, v), max(u, v)))
    nodes = {n for pair in pairs for n in pair}
    N = max(nodes) + 1
    if len(nodes) != N:
        raise Wrong(f"{name} uses node ids up to {N - 1} but not all of them: number the nodes 0..N-1, "
                    f"every one in at least one edge.")
    return N, sorted(pairs)


def _wl_histograms(N: int, a: list, b: list) -> bool:
    """True when 1-WL gives the two graphs the same colour counts in every round."""
    from .. import gnn

    union = torch.tensor(a + [(u + N, v + N) for u, v in b]).T  # (2, E_a + E_b)
    union = gnn.to_undirected(union, 2 * N)
    for rounds in range(2 * N + 1):
        colours = gnn.wl_colours(union, 2 * N, iterations=rounds)
        if sorted(colours[:N].tolist()) != sorted(colours[N:].tolist()):
            return False
    return True


@exercise(
    "gnn.wl_pair",
    "Give two graphs, (edges_a, edges_b), each a list of undirected edges (u, v) on the nodes 0..N-1 "
    "(the same N, every node in some edge), with the same number of edges, that are not isomorphic "
    "(not the same graph drawn differently) and yet get the same colour counts from the 1-WL test in "
    "every round, starting from one colour for every node (the nodes carry no features): graphs that "
    "even a sum-aggregating GIN cannot tell apart.",
    "Any two graphs in which every node has the same degree and the same number of nodes and edges "
    "work: 1-WL never gets past the degrees, because every node sees the same multiset of colours in "
    "every round. The smallest: a ring of 6 nodes against two triangles. Another: two non-isomorphic double "
    "covers of the same graph, since every node of a cover sees what its original saw. A GNN that "
    "must tell such graphs apart needs more than message passing (features such as cycle counts or "
    "random node identifiers, or higher-order networks).",
)
def _wl_pair(answer) -> None:
    import networkx as nx

    if not isinstance(answer, (list, tuple)) or len(answer) != 2:
        raise Wrong("answer with a pair (edges_a, edges_b) of edge lists.")
    (Na, a), (Nb, b) = _edge_pairs(answer[0], "edges_a"), _edge_pairs(answer[1], "edges_b")
    if Na != Nb:
        raise Wrong(f"the graphs have {Na} and {Nb} nodes; counting the nodes (a sum readout of a "
                    f"constant) already tells them apart. Use the same N.")
    if len(a) != len(b):
        raise Wrong(f"the graphs have {len(a)} and {len(b)} edges; a sum aggregation counts edges. "
                    f"Use the same number.")
    ga, gb = nx.Graph(a), nx.Graph(b)
    if nx.is_isomorphic(ga, gb):
        raise Wrong("these two graphs are isomorphic: the same graph with the nodes numbered "
                    "differently. Every GNN must give them the same output; find two that differ.")
    if sorted(d for _, d in ga.degree()) != sorted(d for _, d in gb.degree()):
        raise Wrong("the degrees differ, and 1-WL sees that in its first round. Start from two graphs "
                    "whose nodes all look alike from one hop away.")
    if not _wl_histograms(Na, a, b):
        raise Wrong("the degrees agree, but 1-WL tells the graphs apart in a later round: the "
                    "neighbours' degrees (or theirs) differ. Which graphs make every node's view look alike, "
                    "round after round?")


@exercise(
    "gnn.ring_filter",
    "On a ring of N nodes, the convolution with the kernel (1, 4, 6, 4, 1) / 16 centred on each node, "
    "y_i = (x_{i-2} + 4 x_{i-1} + 6 x_i + 4 x_{i+1} + x_{i+2}) / 16, is a polynomial of degree 2 in the "
    "ring's Laplacian L = D - A: y = c0 x + c1 L x + c2 L^2 x. Give (c0, c1, c2).",
    "(1, -1/2, 1/16): (L x)_i = 2 x_i - x_{i-1} - x_{i+1}, so x - L x / 4 is the kernel (1, 2, 1) / 4, "
    "and applying it twice gives (1, 4, 6, 4, 1) / 16: y = (I - L / 4)^2 x = x - L x / 2 + L^2 x / 16. "
    "Its gain is g(lambda) = (1 - lambda / 4)^2: 1 for a constant signal (lambda = 0), 0 for the fastest "
    "alternation (lambda = 4), a low-pass filter; and a polynomial of degree 2 in L mixes only nodes "
    "within 2 hops, as the kernel does.",
)
def _ring_filter(answer) -> None:
    from .. import gnn

    if not isinstance(answer, (list, tuple)) or len(answer) != 3:
        raise Wrong("answer with three numbers (c0, c1, c2).")
    try:
        c0, c1, c2 = (float(v) for v in answer)
    except (TypeError, ValueError):
        raise Wrong("answer with three numbers (c0, c1, c2).") from None
    if not all(math.isfinite(v) for v in (c0, c1, c2)):
        raise Wrong("the coefficients must be finite numbers.")
    N = 9
    L = gnn.laplacian(gnn.ring_graph(N), N)
    x = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = sum(w * torch.roll(x, shift) for shift, w in zip(range(-2, 3), (1, 4, 6, 4, 1))) / 16
    if torch.allclose(c0 * x + c1 * (L @ x) + c2 * (L @ L @ x), y, atol=1e-9):
        return
    constant = torch.ones(N, dtype=torch.float64)
    if abs(c0 - 1) > 1e-9:
        raise Wrong(f"feed it a constant signal: the kernel keeps it (its weights sum to 1), and L maps a "
                    f"constant to {float((L @ constant).abs().max()):g}. So what must c0 be?")
    if abs(c2 - 1 / 16) > 1e-9:
        raise Wrong("c0 is right. Only L^2 reaches two nodes away: which weight does (L^2 x)_i put on "
                    "x_{i+2}, and which does the kernel?")
    raise Wrong("c0 and c2 are right. Now match the weight of a neighbour x_{i+1}: count what L x and "
                "L^2 x put on it.")


def _no_eigen_solver():
    """Eigen-solvers, linear solvers and matrix products of torch (as operators),
    numpy and scipy, and the package, whatever name the answer gave them. A
    sparse linear solver is refused with the eigen-solvers: a few solves with
    A_hat - (1 + eps) I (inverse iteration) find the limit on any graph."""
    import contextlib

    import numpy as np

    from .. import gnn

    rule = "reason it out: no eigen-solver or linear solver, no matrix product, nothing from dlbook.gnn"
    targets = [(np.linalg, name) for name in ("eig", "eigh", "eigvals", "eigvalsh", "svd", "matrix_power",
                                              "solve", "lstsq", "inv", "pinv")]
    targets += [(np, "dot"), (np, "matmul"), (np, "einsum")]
    targets += module_functions(gnn)
    try:
        import scipy.linalg
        import scipy.sparse.linalg
        targets += [(scipy.linalg, name) for name in ("eig", "eigh", "eigvals", "eigvalsh", "svd", "solve",
                                                      "lstsq", "inv", "lu_factor", "lu_solve", "null_space")]
        # every public function of scipy.sparse.linalg: eigs, eigsh, svds, lobpcg, splu, spsolve, the
        # iterative solvers, ...
        targets += [(scipy.sparse.linalg, name) for name in scipy.sparse.linalg.__all__
                    if isinstance(getattr(scipy.sparse.linalg, name), types.FunctionType)]
    except ImportError:
        pass
    stack = contextlib.ExitStack()
    stack.enter_context(forbid_functions(rule, *targets))
    stack.enter_context(forbid_ops(rule, "eig", "svd", "lobpcg", "mm", "matmul", "mv", "dot", "einsum",
                                   "matrix_power", "sparse"))
    return stack


def _limit_graphs():
    from .. import gnn

    graphs = [(gnn.random_connected_graph(N, M, torch.Generator().manual_seed(seed)), N)
              for N, M, seed in ((6, 7, 0), (15, 25, 1), (30, 45, 2))]
    N = 200_000
    chords = torch.tensor([[0, 1_000, 50_000, 120_000], [7, 90_000, 150_000, 199_000]])
    graphs.append((gnn.to_undirected(torch.cat([gnn.ring_graph(N), chords], 1), N), N))
    return graphs


@exercise(
    "gnn.oversmoothing_limit",
    "Write smoothing_limit(edge_index, num_nodes): for a connected undirected graph, the unit vector "
    "with positive entries along which A_hat^k x points as k grows (A_hat = D~^-1/2 (A + I) D~^-1/2), for "
    "almost every x. Reason it out: no eigen-solver or linear solver, no matrix product, nothing from "
    "dlbook.gnn; the check also tries a ring of 200,000 nodes with a few chords, on which repeated "
    "propagation converges far too slowly to find it.",
    "The vector with entries sqrt(d_i + 1), normalised: A_hat D~^(1/2) 1 = D~^(-1/2) (A + I) 1 = "
    "D~^(-1/2) d~ = D~^(1/2) 1, so it is an eigenvector with eigenvalue 1, and every other eigenvalue "
    "of A_hat lies strictly between -1 and 1 for a connected graph with self loops. Repeated "
    "propagation keeps only this direction: every feature column ends up proportional to the square "
    "root of the degree, whatever it was, and a node keeps nothing of its own.",
)
def _oversmoothing_limit(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function smoothing_limit(edge_index, num_nodes).")
    for edge_index, N in _limit_graphs():
        deg = torch.zeros(N, dtype=torch.float64).index_add_(
            0, edge_index[1], torch.ones(edge_index.shape[1], dtype=torch.float64))
        expected = (deg + 1).sqrt()
        expected = expected / expected.norm()
        with _no_eigen_solver():
            if N > 1000:
                with _size_guard("no N x N matrix", 64 * N):
                    got = answer(edge_index.clone(), N)
            else:
                got = answer(edge_index.clone(), N)
        where = f"on a connected graph of {N} nodes"
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor of shape ({N},).")
        got = got.detach().double().flatten()
        if got.shape != (N,) or not bool(torch.isfinite(got).all()):
            raise Wrong(f"{where} return {N} finite numbers, one per node.")
        if abs(got.norm().item() - 1) > 1e-6:
            raise Wrong(f"{where} your vector has length {got.norm().item():.4g}; return a unit vector.")
        if torch.allclose(got, -expected, atol=1e-6):
            raise Wrong("the direction is right but the sign is not: give the one with positive entries.")
        if torch.allclose(got, expected, atol=1e-6):
            continue
        plain = deg / deg.norm()
        if torch.allclose(got, plain, atol=1e-6):
            raise Wrong(f"{where} close: but A_hat is built from A + I. Which degrees does it use?")
        uniform = torch.full((N,), N ** -0.5, dtype=torch.float64)
        if torch.allclose(got, uniform, atol=1e-6):
            raise Wrong(f"{where} a constant vector is where a random walk's mean ends up (D^-1 A); "
                        f"A_hat is normalised on both sides. Try A_hat times a vector built from the "
                        f"degrees.")
        raise Wrong(f"{where} that is not the limit. Which vector v satisfies A_hat v = v? Try "
                    f"vectors built from the degrees.")
