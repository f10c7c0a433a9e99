r"""Graph neural networks: message passing on an edge list, GCN, GAT, GIN,
and the spectral view.

Shapes use the book's legend: N nodes, E edges, C features, K classes, nh
heads, hs head size, B graphs in a batch. A graph's edges are an
``edge_index`` of shape (2, E): row 0 holds the source $j$ and row 1 the
target $i$ of each directed edge $j \to i$, along which $j$ sends a message
to $i$; an undirected edge is stored in both directions. Message passing
gathers along ``edge_index`` and adds up with ``index_add_`` or
``scatter_reduce``: nothing builds an $N \times N$ matrix, except the
functions that say so (``dense_adjacency``, ``dense_gcn_norm``,
``laplacian``), which exist to check the sparse code and to study small
graphs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_bool, check_float, check_int, check_tensor, describe

REDUCTIONS = ("sum", "mean", "max")

# The topics of Cora's classes 0..6. The Planetoid files carry numbers only;
# the class sizes (351, 217, 418, 818, 426, 298, 180) are all different and
# match the sizes of these topics in the original Cora data.
CORA_CLASSES = ("Theory", "Reinforcement_Learning", "Genetic_Algorithms", "Neural_Networks",
                "Probabilistic_Methods", "Case_Based", "Rule_Learning")


# checks -----------------------------------------------------------------------

def check_edge_index(edge_index, num_nodes: int, name: str = "edge_index") -> torch.Tensor:
    """``edge_index`` when it is an int64 tensor of shape (2, E) whose
    entries are node ids in ``0..num_nodes-1``; a ValueError naming the
    problem otherwise.

    Shapes:
        edge_index: (2, E) -> (2, E), unchanged
    """
    check_tensor(edge_index, name)
    num_nodes = check_int(num_nodes, "num_nodes", 0)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.int64:
        raise ValueError(f"{name} must be an int64 tensor of shape (2, E); got {edge_index.dtype} "
                         f"of shape {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"{name} holds node ids from {int(edge_index.min())} to {int(edge_index.max())}; "
                         f"with num_nodes={num_nodes} they must lie in 0..{num_nodes - 1}")
    return edge_index


def _check_nodes(x, name: str = "x") -> torch.Tensor:
    """``x`` when it is a floating (N, C) tensor, dense or sparse COO."""
    check_tensor(x, name, floating=True)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, C); got shape {tuple(x.shape)}")
    return x


def _check_width(x, in_features: int, name: str = "x") -> torch.Tensor:
    """``x`` when it is a floating (N, in_features) tensor."""
    _check_nodes(x, name)
    if x.shape[1] != in_features:
        raise ValueError(f"{name} must have {in_features} features per node (the model's in_features); "
                         f"got shape {tuple(x.shape)}")
    return x


def _check_reduce(reduce: str) -> str:
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(map(repr, REDUCTIONS))}; got {describe(reduce)}")
    return reduce


# graphs -----------------------------------------------------------------------

def add_self_loops(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``edge_index`` with an edge $i \\to i$ appended for every node.

    Shapes:
        edge_index: (2, E) -> (2, E + N)
    """
    check_edge_index(edge_index, num_nodes)
    loops = torch.arange(num_nodes, device=edge_index.device).repeat(2, 1)  # (2, N)
    return torch.cat([edge_index, loops], dim=1)


def degree(index: torch.Tensor, num_nodes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """How often each node id occurs in ``index``: with ``edge_index[1]``, the
    in-degree (the number of messages each node receives).

    Shapes:
        index: (E,) -> (N,)
    """
    check_tensor(index, "index")
    num_nodes = check_int(num_nodes, "num_nodes", 0)
    if index.dim() != 1 or index.dtype != torch.int64:
        raise ValueError(f"index must be an int64 tensor of shape (E,); got {index.dtype} of shape "
                         f"{tuple(index.shape)}")
    return torch.zeros(num_nodes, dtype=dtype, device=index.device).index_add_(
        0, index, torch.ones(len(index), dtype=dtype, device=index.device))


def to_undirected(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Every edge in both directions, each once, without self loops, sorted
    by target then source.

    Shapes:
        edge_index: (2, E) -> (2, E') with E' even
    """
    check_edge_index(edge_index, num_nodes)
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1)  # (2, 2E)
    both = both[:, both[0] != both[1]]
    key = torch.unique(both[1] * num_nodes + both[0])  # sorted, one per (i, j)
    return torch.stack([key % num_nodes, key // num_nodes])


def ring_graph(num_nodes: int) -> torch.Tensor:
    """The cycle $0 - 1 - \\dots - (N-1) - 0$, both directions.

    Shapes:
        -> (2, 2N)
    """
    N = check_int(num_nodes, "num_nodes", 3)
    i = torch.arange(N)
    return to_undirected(torch.stack([i, (i + 1) % N]), N)


def grid_graph(height: int, width: int) -> torch.Tensor:
    """The H x W grid: node ``r * W + c`` is joined to its 4 neighbours.

    Shapes:
        -> (2, E) with E = 2 (H (W - 1) + (H - 1) W)
    """
    H, W = check_int(height, "height", 1), check_int(width, "width", 1)
    ids = torch.arange(H * W).view(H, W)
    right = torch.stack([ids[:, :-1].flatten(), ids[:, 1:].flatten()])
    down = torch.stack([ids[:-1, :].flatten(), ids[1:, :].flatten()])
    return to_undirected(torch.cat([right, down], dim=1), H * W)


def random_graph(num_nodes: int, avg_degree: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random undirected graph with about ``num_nodes * avg_degree / 2``
    edges between uniformly drawn pairs (a few drawn twice, or as self
    loops, are dropped), so each node has ``avg_degree`` neighbours on
    average whatever N is: the kind of sparse graph whose edge count grows
    like N, not N^2.

    Shapes:
        -> (2, E) with E close to N * avg_degree
    """
    N = check_int(num_nodes, "num_nodes", 2)
    avg_degree = check_float(avg_degree, "avg_degree", 0.0)
    if avg_degree > N - 1:
        raise ValueError(f"avg_degree must be at most num_nodes - 1 = {N - 1}; got {avg_degree}")
    pairs = torch.randint(0, N, (2, round(N * avg_degree / 2)), generator=generator)  # (2, E/2)
    return to_undirected(pairs, N)


def khop_nodes(edge_index: torch.Tensor, num_nodes: int, node: int, hops: int) -> torch.Tensor:
    """The hop distance from every node to ``node`` along the edges
    (-1 beyond ``hops``): the nodes a ``hops``-layer message-passing network
    reads to compute ``node``'s output are those with a distance >= 0.

    Shapes:
        edge_index: (2, E) -> (N,) int64
    """
    check_edge_index(edge_index, num_nodes)
    node = check_int(node, "node", 0)
    hops = check_int(hops, "hops", 0)
    if node >= num_nodes:
        raise ValueError(f"node must be a node id below num_nodes={num_nodes}; got {node}")
    dist = torch.full((num_nodes,), -1, dtype=torch.int64, device=edge_index.device)
    dist[node] = 0
    src, dst = edge_index
    for k in range(1, hops + 1):
        # j is at distance k if it sends a message to a node at distance k - 1
        frontier = (dist[dst] == k - 1) & (dist[src] < 0)  # (E,)
        dist[src[frontier]] = k
    return dist


def connected_components(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The connected component of every node, numbered by its smallest node
    id: every node repeatedly takes the smallest label among itself and its
    neighbours (label propagation, as many rounds as the longest shortest
    path), with edges followed in both directions.

    Shapes:
        edge_index: (2, E) -> (N,) int64
    """
    check_edge_index(edge_index, num_nodes)
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1)  # (2, 2E)
    labels = torch.arange(num_nodes, device=edge_index.device)
    while True:
        new = labels.scatter_reduce(0, both[1], labels[both[0]], "amin")  # min over neighbours and self
        if torch.equal(new, labels):
            return labels
        labels = new


def edge_homophily(edge_index: torch.Tensor, y: torch.Tensor) -> float:
    r"""The share of the edges that join two nodes of the same class (the
    *edge homophily* of the labels ``y`` on the graph): 1 when every edge
    stays inside a class, about $\sum_k p_k^2$ for random wiring, with
    $p_k$ the share of the edge ends in class k.

    Shapes:
        edge_index: (2, E), y: (N,) -> a float
    """
    check_tensor(y, "y")
    if y.dim() != 1 or y.dtype != torch.int64:
        raise ValueError(f"y must be an int64 tensor of class labels, shape (N,); got {y.dtype} of shape "
                         f"{tuple(y.shape)}")
    check_edge_index(edge_index, len(y))
    if edge_index.shape[1] == 0:
        raise ValueError("edge_homophily needs a graph with at least one edge")
    return (y[edge_index[0]] == y[edge_index[1]]).double().mean().item()


def rewire(edge_index: torch.Tensor, num_nodes: int, swaps_per_edge: int = 10,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """The same graph with its edges rewired at random, every node keeping
    its degree: repeated double-edge swaps, in which two edges {a, b} and
    {c, d} become {a, d} and {c, b} (a swap that would make a self loop or
    a second copy of an edge is skipped). After ``swaps_per_edge`` attempts
    per edge, who is joined to whom is random, but every degree is what it
    was: a control for experiments that ask whether the wiring matters,
    beyond the degrees.

    Shapes:
        edge_index: (2, E), undirected, no self loops -> (2, E)
    """
    check_edge_index(edge_index, num_nodes)
    swaps_per_edge = check_int(swaps_per_edge, "swaps_per_edge", 0)
    und = to_undirected(edge_index, num_nodes)  # sorted by target, then source
    keys = torch.sort(edge_index[1] * num_nodes + edge_index[0]).values
    if und.shape != edge_index.shape or not torch.equal(keys, und[1] * num_nodes + und[0]):
        raise ValueError("rewire expects an undirected graph without self loops, every edge stored once in "
                         "each direction (gnn.to_undirected makes one)")
    pairs = und[:, und[0] < und[1]].T.tolist()  # each undirected edge once, [a, b] with a < b
    present = {tuple(e) for e in pairs}
    M = len(pairs)
    if M < 2:
        return und
    picks = torch.randint(0, M, (swaps_per_edge * M, 2), generator=generator).tolist()
    flips = torch.randint(0, 2, (swaps_per_edge * M,), generator=generator).tolist()
    for (e1, e2), flip in zip(picks, flips):
        (a, b), (c, d) = pairs[e1], pairs[e2]
        if flip:
            c, d = d, c
        new1, new2 = (min(a, d), max(a, d)), (min(c, b), max(c, b))
        if e1 == e2 or a == d or c == b or new1 == new2 or new1 in present or new2 in present:
            continue
        present -= {tuple(pairs[e1]), tuple(pairs[e2])}
        present |= {new1, new2}
        pairs[e1], pairs[e2] = list(new1), list(new2)
    return to_undirected(torch.tensor(pairs, device=edge_index.device).T, num_nodes)


# message passing --------------------------------------------------------------

def aggregate(x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor | None = None, *,
              reduce: str = "sum") -> torch.Tensor:
    r"""Every node collects the features of the nodes that send it a message.

    $$\mathbf{m}_i = \operatorname*{AGG}_{j \to i} w_{ji}\, \mathbf{x}_j,$$

    with AGG the sum, the mean or the elementwise maximum over the edges
    into $i$, and $w_{ji} = 1$ unless ``edge_weight`` is given. Gather
    (``x[source]``), then scatter into the targets (``index_add_`` or
    ``scatter_reduce``): O(E C) work and memory. A node that receives no
    message gets zeros.

    Shapes:
        x: (N, C), edge_index: (2, E), edge_weight: (E,) -> (N, C)
    """
    _check_nodes(x)
    N = x.shape[0]
    check_edge_index(edge_index, N)
    reduce = _check_reduce(reduce)
    src, dst = edge_index
    messages = x.index_select(0, src)  # (E, C)
    if edge_weight is not None:
        check_tensor(edge_weight, "edge_weight", floating=True)
        if edge_weight.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_weight must have shape (E,) = ({edge_index.shape[1]},); got "
                             f"{tuple(edge_weight.shape)}")
        messages = messages * edge_weight[:, None]
    out = torch.zeros(N, x.shape[1], dtype=messages.dtype, device=x.device)  # (N, C)
    if reduce == "max":
        index = dst[:, None].expand_as(messages)  # (E, C)
        return out.scatter_reduce(0, index, messages, "amax", include_self=False)
    out = out.index_add(0, dst, messages)
    if reduce == "mean":
        out = out / degree(dst, N, out.dtype).clamp(min=1)[:, None]
    return out


def gcn_norm(edge_index: torch.Tensor, num_nodes: int,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The edges and weights of $\hat A = \tilde D^{-1/2} (A + I) \tilde D^{-1/2}$.

    Self loops are added, and the edge $j \to i$ gets the weight
    $\hat A_{ij} = 1 / \sqrt{\tilde d_i \tilde d_j}$ with $\tilde d$ the
    degree counting the self loop. Stored as an edge list: $E + N$ numbers,
    not $N^2$. ``aggregate(x, *gcn_norm(edge_index, N, x.dtype))`` is
    $\hat A x$. The weights come in ``dtype``: pass the features' dtype
    (the layers here do), or a float64 model is propagated with float32
    weights, off by about 1e-7 relative.

    Shapes:
        edge_index: (2, E) -> edge_index (2, E + N), edge_weight (E + N,)
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype (the features' dtype); got {describe(dtype)}")
    loops = add_self_loops(edge_index, num_nodes)  # (2, E + N)
    src, dst = loops
    deg = degree(dst, num_nodes, dtype)  # (N,): d~_i = d_i + 1
    inv_sqrt = deg.pow(-0.5)
    return loops, inv_sqrt[src] * inv_sqrt[dst]  # (E + N,)


def dense_adjacency(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The $N \\times N$ adjacency matrix with ``A[i, j]`` the number of edges
    $j \\to i$, so that ``A @ x`` sums each node's incoming messages (for
    an undirected graph A is symmetric). N^2 floats: for checking, and for
    small graphs.

    Shapes:
        edge_index: (2, E) -> (N, N)
    """
    check_edge_index(edge_index, num_nodes)
    A = torch.zeros(num_nodes, num_nodes, device=edge_index.device)
    return A.index_put_((edge_index[1], edge_index[0]), torch.ones(edge_index.shape[1], device=A.device),
                        accumulate=True)


def dense_gcn_norm(A: torch.Tensor) -> torch.Tensor:
    r"""$\hat A = \tilde D^{-1/2} (A + I) \tilde D^{-1/2}$ as a dense matrix,
    with $\tilde D$ the diagonal of the row sums of $A + I$.

    Shapes:
        A: (N, N) -> (N, N)
    """
    check_tensor(A, "A", floating=True)
    if A.dim() != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (N, N) matrix; got shape {tuple(A.shape)}")
    A_tilde = A + torch.eye(len(A), dtype=A.dtype, device=A.device)
    inv_sqrt = A_tilde.sum(1).pow(-0.5)  # (N,)
    return inv_sqrt[:, None] * A_tilde * inv_sqrt[None, :]


# node features ----------------------------------------------------------------

def row_normalize(x: torch.Tensor) -> torch.Tensor:
    """Divide each row of non-negative features by its sum, so that it sums
    to 1 (a row of zeros stays zeros), as Kipf and Welling and PyTorch
    Geometric's ``NormalizeFeatures`` do for bag-of-words features.

    Shapes:
        x: (N, C) -> (N, C)
    """
    _check_nodes(x)
    if x.is_sparse:
        raise ValueError("row_normalize expects a dense x; normalise before x.to_sparse()")
    if bool((x < 0).any()):
        raise ValueError("row_normalize expects non-negative features (counts or 0/1 words)")
    return x / x.sum(1, keepdim=True).clamp(min=1e-12)


def dropout_nonzero(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout on the stored (non-zero) entries of a sparse COO matrix.

    Ordinary dropout zeroes each entry with probability ``p`` and scales the
    rest by 1 / (1 - p). A zero stays zero either way, so drawing the coin
    only for the non-zero entries gives exactly the same distribution of
    outputs, with nnz random numbers instead of N C (Cora: 49,216 instead of
    3,880,564).

    Shapes:
        x: (N, C) sparse COO -> (N, C) sparse COO
    """
    check_tensor(x, "x", floating=True)
    if not x.is_sparse:
        raise ValueError("dropout_nonzero expects a sparse COO tensor (x.to_sparse()); for a dense x "
                         "use F.dropout")
    p = check_float(p, "p", 0.0, 1.0, open_max=True)
    training = check_bool(training, "training")
    if not training or p == 0.0:
        return x
    x = x.coalesce()
    return torch.sparse_coo_tensor(x.indices(), F.dropout(x.values(), p, True), x.shape,
                                   is_coalesced=True, check_invariants=False)


def node_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    r"""$x W^\top$ for a dense or a sparse COO ``x``.

    For a sparse ``x`` only the stored entries are multiplied: each
    $x_{nc} \neq 0$ adds $x_{nc} W_{:, c}$ to row $n$, nnz C_out
    multiply-adds instead of N C C_out (PyTorch's sparse product does it).

    Shapes:
        x: (N, C), weight: (C_out, C) -> (N, C_out)
    """
    _check_nodes(x)
    check_tensor(weight, "weight", floating=True)
    if weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must have shape (C_out, {x.shape[1]}); got {tuple(weight.shape)}")
    if not x.is_sparse:
        return x @ weight.T
    # compressed rows: PyTorch's fastest sparse product on a CPU. It has no
    # bfloat16 kernel, so it runs in float32 even under autocast (and in
    # float64 when x or the weight is float64).
    dtype = torch.promote_types(x.dtype, weight.dtype)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    with torch.autocast(x.device.type, enabled=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        return x.to(dtype).to_sparse_csr() @ weight.to(dtype).T


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    return dropout_nonzero(x, p, training) if x.is_sparse else F.dropout(x, p, training)


# GCN --------------------------------------------------------------------------

class GCNConv(nn.Module):
    r"""One graph convolution (Kipf and Welling, 2017):
    $H' = \hat A H W^\top + \mathbf{b}$ with $\hat A$ from :func:`gcn_norm`.

    Shapes:
        x: (N, C_in) dense or sparse COO, edge_index: (2, E) -> (N, C_out)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        in_features = check_int(in_features, "in_features", 1)
        out_features = check_int(out_features, "out_features", 1)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if check_bool(bias, "bias") else None
        nn.init.xavier_uniform_(self.weight)  # Glorot, as in the paper

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, bias={self.bias is not None}"

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        """With ``edge_weight=None``, ``edge_index`` is the graph and Â is
        computed here; otherwise they are :func:`gcn_norm`'s output."""
        _check_nodes(x)
        if edge_weight is None:
            edge_index, edge_weight = gcn_norm(edge_index, x.shape[0], x.dtype)
        h = node_matmul(x, self.weight)  # (N, C_out)
        out = aggregate(h, edge_index, edge_weight)  # (N, C_out): A^ H W
        return out if self.bias is None else out + self.bias


class GCN(nn.Module):
    r"""A stack of :class:`GCNConv` layers with ReLU and dropout between them:
    Kipf and Welling's two-layer model is ``GCN(C, 16, K)``,

    $$\hat Y = \hat A \,\mathrm{ReLU}(\hat A X W_1^\top) W_2^\top,$$

    with dropout on the input of each layer. ``num_layers > 2`` repeats the
    hidden layer (for the over-smoothing experiment).
    :meth:`embed` returns the last hidden layer's output.

    Shapes:
        x: (N, C) dense or sparse COO, edge_index: (2, E) -> (N, K)
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, num_layers: int = 2,
                 dropout: float = 0.5):
        super().__init__()
        num_layers = check_int(num_layers, "num_layers", 1)
        self.dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        sizes = [in_features] + [hidden] * (num_layers - 1) + [num_classes]
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """The input of the last layer (after its ReLU): (N, hidden)."""
        _check_nodes(x)
        edge_index, weight = gcn_norm(edge_index, x.shape[0], x.dtype)  # once for every layer
        for conv in self.convs[:-1]:
            x = F.relu(conv(_dropout(x, self.dropout, self.training), edge_index, weight))  # (N, hidden)
        return x

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.embed(x, edge_index)  # (N, hidden)
        edge_index, weight = gcn_norm(edge_index, x.shape[0], x.dtype)
        return self.convs[-1](_dropout(h, self.dropout, self.training), edge_index, weight)  # (N, K)


class MLP(nn.Module):
    """The baseline that ignores the edges: ``GCN`` with $\\hat A = I$ (two
    linear layers, ReLU and dropout, the same sizes). The edge_index
    argument is accepted and not used.

    Shapes:
        x: (N, C) dense or sparse COO -> (N, K)
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        self.lin1 = nn.Linear(in_features, hidden)
        self.lin2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor | None = None) -> torch.Tensor:
        _check_nodes(x)
        h = node_matmul(_dropout(x, self.dropout, self.training), self.lin1.weight) + self.lin1.bias
        h = F.dropout(F.relu(h), self.dropout, self.training)  # (N, hidden)
        return self.lin2(h)  # (N, K)


# GAT --------------------------------------------------------------------------

def segment_softmax(scores: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    r"""Softmax over the entries that share an index: with ``index`` the
    target of each edge, each node's incoming scores are normalised to sum
    to 1,

    $$\alpha_{ji} = \frac{\exp(e_{ji} - m_i)}{\sum_{k \to i} \exp(e_{ki} - m_i)},
    \qquad m_i = \max_{k \to i} e_{ki}.$$

    Subtracting the maximum changes nothing mathematically and keeps
    ``exp`` from overflowing; it is treated as a constant for gradients.

    Shapes:
        scores: (E,) or (E, nh), index: (E,) -> same as scores
    """
    check_tensor(scores, "scores", floating=True)
    check_tensor(index, "index")
    if scores.dim() not in (1, 2) or index.dim() != 1 or len(index) != len(scores):
        raise ValueError(f"scores must have shape (E,) or (E, nh) and index (E,); got {tuple(scores.shape)} "
                         f"and {tuple(index.shape)}")
    check_edge_index(torch.stack([index, index]), num_nodes, "index")
    expand = index if scores.dim() == 1 else index[:, None].expand_as(scores)
    with torch.no_grad():
        m = torch.full((num_nodes, *scores.shape[1:]), -math.inf, dtype=scores.dtype, device=scores.device)
        m = m.scatter_reduce(0, expand, scores, "amax", include_self=True)  # (N, nh)
    ex = (scores - m.index_select(0, index)).exp()  # (E, nh)
    total = torch.zeros_like(m).index_add_(0, index, ex)  # (N, nh)
    return ex / total.index_select(0, index)


class GATConv(nn.Module):
    r"""One graph attention layer (Veličković et al., 2018), ``num_heads``
    heads of size ``head_size``.

    Each head projects $\mathbf{h}_j = W \mathbf{x}_j$ and scores every edge
    $j \to i$ of the graph with self loops,

    $$e_{ji} = \mathrm{LeakyReLU}\big(\mathbf{a}_\text{dst}^\top \mathbf{h}_i
    + \mathbf{a}_\text{src}^\top \mathbf{h}_j\big), \qquad
    \alpha_{ji} = \operatorname{softmax}_{j \to i}(e_{ji}), \qquad
    \mathbf{h}'_i = \sum_{j \to i} \alpha_{ji} \mathbf{h}_j,$$

    (the paper's $\mathbf{a}^\top [W\mathbf{x}_i \,\|\, W\mathbf{x}_j]$ with
    $\mathbf{a}$ split in two halves). The heads are concatenated
    (``concat=True``: (N, nh hs)) or averaged ((N, hs)); dropout is applied
    to the attention coefficients during training. ``forward(...,
    return_attention=True)`` also returns the edges with self loops and
    their coefficients, (2, E + N) and (E + N, nh).

    Shapes:
        x: (N, C) dense or sparse COO, edge_index: (2, E) -> (N, nh hs) or (N, hs)
    """

    def __init__(self, in_features: int, head_size: int, num_heads: int = 1, concat: bool = True,
                 dropout: float = 0.0, negative_slope: float = 0.2, bias: bool = True):
        super().__init__()
        in_features = check_int(in_features, "in_features", 1)
        self.head_size = check_int(head_size, "head_size", 1)
        self.num_heads = check_int(num_heads, "num_heads", 1)
        self.concat = check_bool(concat, "concat")
        self.dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        self.negative_slope = check_float(negative_slope, "negative_slope", 0.0)
        nh, hs = self.num_heads, self.head_size
        self.weight = nn.Parameter(torch.empty(nh * hs, in_features))
        self.att_src = nn.Parameter(torch.empty(nh, hs))
        self.att_dst = nn.Parameter(torch.empty(nh, hs))
        out = nh * hs if self.concat else hs
        self.bias = nn.Parameter(torch.zeros(out)) if check_bool(bias, "bias") else None
        for p in (self.weight, self.att_src, self.att_dst):
            nn.init.xavier_uniform_(p)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1]}, head_size={self.head_size}, num_heads={self.num_heads}, "
                f"concat={self.concat}, dropout={self.dropout}")

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, return_attention: bool = False):
        _check_nodes(x)
        N, nh, hs = x.shape[0], self.num_heads, self.head_size
        edge_index = add_self_loops(edge_index, N)  # (2, E + N)
        src, dst = edge_index
        h = node_matmul(x, self.weight).view(N, nh, hs)  # (N, nh, hs)
        score_src = torch.einsum("nhs,hs->nh", h, self.att_src)  # (N, nh): a_src . h_j
        score_dst = torch.einsum("nhs,hs->nh", h, self.att_dst)  # (N, nh): a_dst . h_i
        # e_ji = LeakyReLU(a_dst . h_i + a_src . h_j), one per edge and head
        e = F.leaky_relu(score_src.index_select(0, src) + score_dst.index_select(0, dst),
                         self.negative_slope)  # (E + N, nh)
        alpha = segment_softmax(e, dst, N)  # (E + N, nh)
        weights = F.dropout(alpha, self.dropout, self.training)
        messages = h.index_select(0, src) * weights[..., None]  # (E + N, nh, hs)
        out = torch.zeros_like(h).index_add_(0, dst, messages)  # (N, nh, hs)
        out = out.reshape(N, nh * hs) if self.concat else out.mean(1)  # (N, nh hs) or (N, hs)
        if self.bias is not None:
            out = out + self.bias
        return (out, (edge_index, alpha)) if return_attention else out


class GAT(nn.Module):
    """The two-layer GAT of Veličković et al. for Cora and CiteSeer: dropout,
    ``num_heads`` heads of size ``head_size`` concatenated, ELU, dropout,
    and an output layer of ``out_heads`` heads averaged into K scores.
    Dropout ``dropout`` on both layers' inputs and attention coefficients.

    Shapes:
        x: (N, C) dense or sparse COO, edge_index: (2, E) -> (N, K)
    """

    def __init__(self, in_features: int, num_classes: int, head_size: int = 8, num_heads: int = 8,
                 out_heads: int = 1, dropout: float = 0.6):
        super().__init__()
        self.dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        self.conv1 = GATConv(in_features, head_size, num_heads, dropout=dropout)
        self.conv2 = GATConv(head_size * num_heads, num_classes, out_heads, concat=False, dropout=dropout)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, return_attention: bool = False):
        _check_nodes(x)
        h, att1 = self.conv1(_dropout(x, self.dropout, self.training), edge_index, return_attention=True)
        h = F.dropout(F.elu(h), self.dropout, self.training)  # (N, nh hs)
        out, att2 = self.conv2(h, edge_index, return_attention=True)  # (N, K)
        return (out, [att1, att2]) if return_attention else out


# training on one graph --------------------------------------------------------

def node_classification_step(model: nn.Module, graph) -> dict:
    """The step for full-batch training on one graph (``fit(model, [graph],
    step=node_classification_step, ...)``): the model scores every node,
    the cross-entropy loss and the accuracy are taken over the training
    nodes only.

    Shapes:
        graph.x: (N, C), graph.edge_index: (2, E) -> {"loss", "acc"} scalars
    """
    if not all(hasattr(graph, key) for key in ("x", "y", "edge_index", "train_mask")):
        raise TypeError(f"node_classification_step expects a graph with x, y, edge_index and train_mask "
                        f"(a dlbook.data.Graph); got {type(graph).__name__}")
    y_hat = model(graph.x, graph.edge_index)  # (N, K)
    mask = graph.train_mask
    return {"loss": F.cross_entropy(y_hat[mask], graph.y[mask]),
            "acc": (y_hat[mask].argmax(1) == graph.y[mask]).float().mean()}


@torch.no_grad()
def accuracy(model: nn.Module, graph, mask: torch.Tensor) -> float:
    """The accuracy of ``model`` on the nodes of ``mask``, in evaluation mode
    (no dropout); the model's mode is restored afterwards.

    Shapes:
        mask: (N,) bool -> a float
    """
    check_tensor(mask, "mask")
    if mask.dtype != torch.bool or mask.shape != (graph.y.shape[0],):
        raise ValueError(f"mask must be a bool tensor of shape ({graph.y.shape[0]},); got {mask.dtype} "
                         f"of shape {tuple(mask.shape)}")
    was_training = model.training
    model.eval()
    try:
        y_hat = model(graph.x, graph.edge_index)  # (N, K)
    finally:
        model.train(was_training)
    return (y_hat[mask].argmax(1) == graph.y[mask]).float().mean().item()


class EarlyStopping:
    """Remember the weights with the best validation score, and stop
    looking after ``patience`` evaluations without improvement.

    Call it after every epoch: as :func:`dlbook.fit`'s ``after_step`` hook
    for full-batch training (one step is one epoch), with the stopper in
    ``state`` so that a checkpoint keeps it::

        stopper = EarlyStopping(lambda m: accuracy(m, graph, graph.val_mask), patience=100)
        fit(model, [graph], ..., after_step=stopper, state={"stopper": stopper},
            stop_when=lambda history: stopper.stopped)
        stopper.restore(model)  # the weights of the best evaluation

    Each call scores the model (``scores`` keeps every score). A score at
    least as good as the best so far saves a copy of the weights and resets
    the count (a tie counts as an improvement, as in the GAT authors' code:
    of equally good checkpoints the latest is kept). Once ``patience``
    evaluations in a row have been worse, the run is over as far as early
    stopping is concerned: later scores are recorded but can no longer
    replace the best weights, so :meth:`restore` gives what stopping the
    run at that moment would have given. Pass
    ``stop_when=lambda history: stopper.stopped`` to ``fit`` to end the
    run there. ``best_at`` is the evaluation count of the kept weights,
    ``stopped_at`` the one at which patience ran out (``None`` if it never
    did).

    Shapes:
        score(model) -> a float, higher is better
    """

    def __init__(self, score, patience: int = 100):
        if not callable(score):
            raise TypeError(f"score must be a function score(model) -> float; got {describe(score)}")
        self.score = score
        self.patience = check_int(patience, "patience", 1)
        self.reset()

    def reset(self) -> None:
        self.best, self.best_at, self.stopped_at, self.count = -math.inf, 0, None, 0
        self.best_state: dict | None = None
        self.scores: list[float] = []

    def fingerprint(self) -> str:
        return f"EarlyStopping(score={describe(self.score)}, patience={self.patience})"

    def __call__(self, model: nn.Module) -> dict:
        value = float(self.score(model))
        self.scores.append(value)
        self.count += 1
        if self.stopped_at is None:
            if value >= self.best:
                self.best, self.best_at = value, self.count
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif self.count - self.best_at >= self.patience:
                self.stopped_at = self.count
        return {"acc": value, "best": self.best}

    @property
    def stopped(self) -> bool:
        return self.stopped_at is not None

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the best weights into ``model``."""
        if self.best_state is None:
            raise RuntimeError("EarlyStopping has not evaluated any model yet")
        model.load_state_dict(self.best_state)
        return model

    def state_dict(self) -> dict:
        return {"best": self.best, "best_at": self.best_at, "stopped_at": self.stopped_at,
                "count": self.count, "best_state": self.best_state, "scores": list(self.scores)}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_at = float(state["best"]), int(state["best_at"])
        self.stopped_at, self.count = state["stopped_at"], int(state["count"])
        self.best_state = state["best_state"]
        self.scores = [float(v) for v in state["scores"]]


@dataclass
class NodeRun:
    """One training run of :func:`train_node_classifier`."""

    history: object  # dlbook.train.History
    test_acc: float  # of the weights chosen on the validation nodes, measured once
    val_acc: float  # of those weights
    epoch: int  # the epoch whose weights were tested
    stopped_at: int | None  # the epoch at which patience ran out (None: never, or no early stopping)
    seconds: float  # wall time of the fit call, evaluations included
    val_curve: list[float] | None  # the validation accuracy after every epoch, with early stopping


def first_layer_decay(model: nn.Module, first: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups with weight decay on ``first``'s parameters only, as
    Kipf and Welling regularise the first GCN layer (and only it).

    Shapes:
        -> two parameter groups for a torch optimizer
    """
    weight_decay = check_float(weight_decay, "weight_decay", 0.0)
    ours = {id(p) for p in first.parameters()}
    if not ours or not ours <= {id(p) for p in model.parameters()}:
        raise ValueError("first must be a layer of model that has parameters")
    rest = [p for p in model.parameters() if id(p) not in ours]
    return [{"params": list(first.parameters()), "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


def train_node_classifier(model: nn.Module, graph, optimizer: torch.optim.Optimizer, epochs: int, *,
                          patience: int | None = None, checkpoint=None, checkpoint_every: int = 50,
                          device=None, progress: bool = False, desc: str = "") -> NodeRun:
    """Full-batch training on one graph with :func:`dlbook.fit`, then one
    test.

    Every epoch is one step on the whole graph (the loader is ``[graph]``)
    with :func:`node_classification_step`. Without ``patience`` the
    validation accuracy is measured once, at the end, and the last weights
    are tested: a fixed number of epochs and nothing chosen on the
    validation nodes. That is this book's GCN protocol, not a published
    one: Kipf and Welling trained at most 200 epochs and stopped when the
    validation loss had not fallen for 10, and PyTorch Geometric's GCN
    example trains 200 epochs and reports the test accuracy of the epoch
    with the best validation accuracy. With ``patience`` an
    :class:`EarlyStopping` hook measures the validation accuracy after
    every epoch, the weights it kept are tested, and training ends when
    patience runs out (the book's GAT protocol: accuracy only, where
    Veličković et al. watch the validation loss too); ``fit`` evaluates,
    and writes its checkpoint, every ``checkpoint_every`` epochs and at
    the end. Training runs
    in float32 (``amp=False``): the sparse products have no bfloat16
    kernel on a CPU, and autocast does not make the rest faster.

    Shapes:
        graph.x: (N, C) -> a :class:`NodeRun`
    """
    import time

    from .train import fit

    epochs = check_int(epochs, "epochs", 1)
    device = graph.x.device if device is None else device
    graph = graph.to(device)
    kwargs = {"evals": {"val": lambda m: {"acc": accuracy(m, graph, graph.val_mask)}}}
    if patience is None:
        stopper = None
        kwargs["eval_every"] = epochs
    else:
        stopper = EarlyStopping(lambda m: accuracy(m, graph, graph.val_mask), patience)
        every = min(epochs, check_int(checkpoint_every, "checkpoint_every", 1))
        kwargs.update(after_step=stopper, state={"stopper": stopper}, eval_every=every,
                      stop_when=lambda history: stopper.stopped)
    start = time.perf_counter()
    history = fit(model, [graph], step=node_classification_step, optimizer=optimizer, epochs=epochs,
                  amp=False, device=device, checkpoint=checkpoint, progress=progress, desc=desc, **kwargs)
    seconds = time.perf_counter() - start
    if stopper is None:
        return NodeRun(history, accuracy(model, graph, graph.test_mask), history.last["val_acc"], epochs,
                       None, seconds, None)
    stopper.restore(model)
    return NodeRun(history, accuracy(model, graph, graph.test_mask), stopper.best, stopper.best_at,
                   stopper.stopped_at, seconds, list(stopper.scores))


# many small graphs --------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SmallGraph:
    """One small graph of a data set of graphs: node features, edges, and a
    label for the whole graph (a 0-dim tensor) or one per node ((N,)).

    Shapes:
        x: (N, C), edge_index: (2, E), y: () or (N,)
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    y: torch.Tensor

    def __post_init__(self):
        _check_nodes(self.x, "SmallGraph.x")
        check_edge_index(self.edge_index, self.x.shape[0], "SmallGraph.edge_index")
        check_tensor(self.y, "SmallGraph.y")
        if self.y.shape not in ((), (self.x.shape[0],)):
            raise ValueError(f"SmallGraph.y must have shape () for a graph label or ({self.x.shape[0]},) "
                             f"for node labels; got {tuple(self.y.shape)}")

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True, eq=False)
class GraphBatch:
    """Several graphs stored as one graph with several components: the node
    features stacked, the edges renumbered, and ``batch[n]`` the graph that
    node n belongs to. Message passing never crosses from one graph to
    another, because no edge does.

    Shapes:
        x: (N, C), edge_index: (2, E), batch: (N,), y: (B,) or (N,)
    """

    x: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    y: torch.Tensor
    num_graphs: int

    def to(self, device) -> GraphBatch:
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return GraphBatch(**moved, num_graphs=self.num_graphs)


def collate(graphs: list[SmallGraph]) -> GraphBatch:
    """Put ``graphs`` into one :class:`GraphBatch`: graph b's node ids are
    shifted by the number of nodes before it.

    Shapes:
        B graphs of N_b nodes -> x (sum N_b, C), batch (sum N_b,)
    """
    if not isinstance(graphs, (list, tuple)) or not graphs:
        raise ValueError(f"collate expects a non-empty list of SmallGraph; got {describe(graphs)}")
    if not all(isinstance(g, SmallGraph) for g in graphs):
        raise TypeError("collate expects SmallGraph objects")
    widths = sorted({g.x.shape[1] for g in graphs})
    if len(widths) > 1:
        raise ValueError(f"collate expects graphs with the same number of node features; got widths {widths}")
    sizes = torch.tensor([g.num_nodes for g in graphs])
    offsets = torch.cumsum(sizes, 0) - sizes  # (B,)
    x = torch.cat([g.x for g in graphs])  # (N, C)
    edge_index = torch.cat([g.edge_index + off for g, off in zip(graphs, offsets)], dim=1)  # (2, E)
    batch = torch.repeat_interleave(torch.arange(len(graphs)), sizes)  # (N,)
    graph_level = graphs[0].y.dim() == 0
    if any((g.y.dim() == 0) != graph_level for g in graphs):
        raise ValueError("collate expects all graph labels or all node labels, not a mix")
    y = torch.stack([g.y for g in graphs]) if graph_level else torch.cat([g.y for g in graphs])
    return GraphBatch(x, edge_index, batch, y, len(graphs))


class GraphLoader:
    """Batches of ``batch_size`` graphs (:func:`collate`), reshuffled every
    pass with torch's global generator when ``shuffle`` (so that a seeded
    run, and a resumed one, draws the same batches).

    Shapes:
        yields :class:`GraphBatch` objects of up to ``batch_size`` graphs
    """

    def __init__(self, graphs: list[SmallGraph], batch_size: int, shuffle: bool = False):
        if not isinstance(graphs, (list, tuple)) or not graphs:
            raise ValueError(f"graphs must be a non-empty list of SmallGraph; got {describe(graphs)}")
        bad = next((g for g in graphs if not isinstance(g, SmallGraph)), None)
        if bad is not None:
            raise TypeError(f"graphs must hold SmallGraph objects; got {describe(bad)}")
        self.graphs = list(graphs)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.shuffle = check_bool(shuffle, "shuffle")

    def __len__(self) -> int:
        return math.ceil(len(self.graphs) / self.batch_size)

    def fingerprint(self) -> str:
        sizes = [(g.num_nodes, g.edge_index.shape[1]) for g in self.graphs]
        parts = [describe(t) for g in self.graphs for t in (g.x, g.edge_index, g.y)]
        return f"GraphLoader({len(self.graphs)} graphs, {describe(sizes)}, {describe(parts)}, " \
               f"batch_size={self.batch_size}, shuffle={self.shuffle})"

    def __iter__(self):
        order = torch.randperm(len(self.graphs)) if self.shuffle else torch.arange(len(self.graphs))
        for start in range(0, len(order), self.batch_size):
            yield collate([self.graphs[i] for i in order[start:start + self.batch_size]])


def readout(x: torch.Tensor, batch: torch.Tensor, num_graphs: int, reduce: str = "sum") -> torch.Tensor:
    r"""One vector per graph from its nodes' vectors: $\mathbf{h}_G =
    \operatorname{AGG}_{n \in G} \mathbf{h}_n$ with AGG the sum, mean or
    maximum (a graph without nodes gets zeros).

    Shapes:
        x: (N, C), batch: (N,) -> (B, C)
    """
    _check_nodes(x)
    num_graphs = check_int(num_graphs, "num_graphs", 1)
    check_tensor(batch, "batch")
    if batch.shape != (x.shape[0],) or batch.dtype != torch.int64:
        raise ValueError(f"batch must be an int64 tensor of shape ({x.shape[0]},); got {batch.dtype} of "
                         f"shape {tuple(batch.shape)}")
    if batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= num_graphs):
        raise ValueError(f"batch holds graph ids from {int(batch.min())} to {int(batch.max())}; with "
                         f"num_graphs={num_graphs} they must lie in 0..{num_graphs - 1}")
    # a graph is a node that every one of its nodes sends a message to
    to_graph = torch.stack([torch.arange(x.shape[0], device=x.device), batch + x.shape[0]])  # (2, N)
    padded = torch.cat([x, x.new_zeros(num_graphs, x.shape[1])])  # (N + B, C)
    return aggregate(padded, to_graph, reduce=_check_reduce(reduce))[x.shape[0]:]  # (B, C)


def graph_classification_step(model: nn.Module, batch: GraphBatch) -> dict:
    """The step for a batch of graphs with one label each: cross-entropy
    loss and accuracy over the graphs.

    Shapes:
        batch.y: (B,) -> {"loss", "acc"} scalars
    """
    if not isinstance(batch, GraphBatch):
        raise TypeError(f"graph_classification_step expects a GraphBatch (gnn.collate); got "
                        f"{type(batch).__name__}")
    y_hat = model(batch.x, batch.edge_index, batch.batch, batch.num_graphs)  # (B, K)
    return {"loss": F.cross_entropy(y_hat, batch.y), "acc": (y_hat.argmax(1) == batch.y).float().mean()}


def node_batch_step(model: nn.Module, batch: GraphBatch) -> dict:
    """The step for a batch of graphs with one label per node.

    Shapes:
        batch.y: (N,) -> {"loss", "acc"} scalars
    """
    if not isinstance(batch, GraphBatch):
        raise TypeError(f"node_batch_step expects a GraphBatch (gnn.collate); got {type(batch).__name__}")
    y_hat = model(batch.x, batch.edge_index, batch.batch, batch.num_graphs)  # (N, K)
    return {"loss": F.cross_entropy(y_hat, batch.y), "acc": (y_hat.argmax(1) == batch.y).float().mean()}


# GIN ----------------------------------------------------------------------------

class GINConv(nn.Module):
    r"""One layer of the graph isomorphism network (Xu et al., 2019):

    $$\mathbf{h}'_i = \mathrm{MLP}\Big((1 + \epsilon)\, \mathbf{h}_i
    + \operatorname*{AGG}_{j \to i} \mathbf{h}_j\Big),$$

    with AGG the sum (GIN), or the mean or maximum for comparison. The MLP
    is Linear, BatchNorm, ReLU, Linear; $\epsilon$ is fixed (``eps``) or
    learned (``train_eps=True``). The factor $1 + \epsilon$ weighs the
    node's own vector apart from its neighbours', so that the update can
    tell "me" from "one of them" (for an irrational $\epsilon$ Xu et al.
    prove the map injective on (node, neighbour multiset) pairs);
    $\epsilon = 0$ (GIN-0) does as well in their experiments.

    Shapes:
        x: (N, C_in), edge_index: (2, E) -> (N, C_out)
    """

    def __init__(self, in_features: int, out_features: int, reduce: str = "sum", eps: float = 0.0,
                 train_eps: bool = False):
        super().__init__()
        self.reduce = _check_reduce(reduce)
        in_features = check_int(in_features, "in_features", 1)
        out_features = check_int(out_features, "out_features", 1)
        eps = torch.tensor(check_float(eps, "eps"))
        if check_bool(train_eps, "train_eps"):
            self.eps = nn.Parameter(eps)
        else:
            self.register_buffer("eps", eps)
        self.mlp = nn.Sequential(nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features), nn.ReLU(),
                                 nn.Linear(out_features, out_features))

    def extra_repr(self) -> str:
        return f"reduce={self.reduce!r}"

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        neighbours = aggregate(x, edge_index, reduce=self.reduce)  # (N, C_in)
        return self.mlp((1 + self.eps) * x + neighbours)  # (N, C_out)


class GIN(nn.Module):
    r"""GIN for graph classification: ``num_layers`` :class:`GINConv` layers
    with ReLU, a readout of every layer (and of the input) with the same
    AGG, concatenated, and a linear classifier,

    $$\mathbf{h}_G = \big\|_{k=0}^{\ell} \operatorname*{AGG}_{n \in G} \mathbf{h}^{(k)}_n,
    \qquad \hat{\mathbf{y}} = W \mathbf{h}_G + \mathbf{b},$$

    with $\ell$ = ``num_layers``. ``reduce`` is used both between
    neighbours and in the readout. :meth:`embed` returns $\mathbf{h}_G$.

    Shapes:
        x: (N, C), edge_index: (2, E), batch: (N,) -> (B, K)
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, num_layers: int = 3,
                 reduce: str = "sum", dropout: float = 0.0):
        super().__init__()
        num_layers = check_int(num_layers, "num_layers", 1)
        self.reduce = _check_reduce(reduce)
        self.dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        self.in_features = check_int(in_features, "in_features", 1)
        sizes = [in_features] + [hidden] * num_layers
        self.convs = nn.ModuleList(GINConv(a, b, reduce) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sum(sizes), num_classes)

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
              num_graphs: int) -> torch.Tensor:
        """The graph vectors h_G: (B, C + num_layers hidden)."""
        _check_width(x, self.in_features)
        pooled = [readout(x, batch, num_graphs, self.reduce)]
        for conv in self.convs:
            x = F.relu(conv(x, edge_index))  # (N, hidden)
            pooled.append(readout(x, batch, num_graphs, self.reduce))  # (B, hidden)
        return torch.cat(pooled, dim=1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> torch.Tensor:
        h = self.embed(x, edge_index, batch, num_graphs)  # (B, C + num_layers hidden)
        return self.head(F.dropout(h, self.dropout, self.training))  # (B, K)


# a task that only counting solves -------------------------------------------------

def random_connected_graph(num_nodes: int, num_edges: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """A random connected undirected graph: a random tree (node n > 0 joined
    to a random earlier node) plus random extra edges, ``num_edges``
    undirected edges in all.

    Shapes:
        -> (2, 2 num_edges)
    """
    N = check_int(num_nodes, "num_nodes", 2)
    num_edges = check_int(num_edges, "num_edges", N - 1)
    if num_edges > N * (N - 1) // 2:
        raise ValueError(f"a simple graph on {N} nodes has at most {N * (N - 1) // 2} edges; got {num_edges}")
    parents = [int(torch.randint(0, n, (1,), generator=generator)) for n in range(1, N)]
    edges = {(min(n, p), max(n, p)) for n, p in zip(range(1, N), parents)}
    while len(edges) < num_edges:
        a, b = (int(v) for v in torch.randint(0, N, (2,), generator=generator))
        if a != b:
            edges.add((min(a, b), max(a, b)))
    pairs = torch.tensor(sorted(edges)).T  # (2, num_edges)
    return to_undirected(pairs, N)


def double_cover(edge_index: torch.Tensor, num_nodes: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """A random double cover of an undirected graph: node v gets two copies,
    v and v + N, and each edge {u, v} becomes either {u, v} and {u + N, v + N}
    or {u, v + N} and {u + N, v}, at random. Every copy has exactly the
    neighbours (copies of) its original had: the same multiset of
    neighbour features, for every aggregation.

    Shapes:
        edge_index: (2, E) -> (2, 2E) on 2N nodes
    """
    check_edge_index(edge_index, num_nodes)
    N = num_nodes
    u, v = edge_index[:, edge_index[0] < edge_index[1]]  # each undirected edge once
    cross = torch.randint(0, 2, u.shape, generator=generator).to(u.device) * N  # 0 or N
    pairs = torch.cat([torch.stack([u, v + cross]), torch.stack([u + N, v + N - cross])], dim=1)
    return to_undirected(pairs, 2 * N)


def blow_up(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Replace every node v by two twins, v and v + N, and join each twin to
    both twins of every neighbour. Every twin sees each neighbour feature
    of its original twice: the same mean and maximum, twice the sum.

    Shapes:
        edge_index: (2, E) -> (2, 4E) on 2N nodes
    """
    check_edge_index(edge_index, num_nodes)
    N = num_nodes
    u, v = edge_index
    pairs = torch.cat([torch.stack([u + a, v + b]) for a in (0, N) for b in (0, N)], dim=1)  # (2, 4E)
    return to_undirected(pairs, 2 * N)


def twin_dataset(num_pairs: int, min_nodes: int = 8, max_nodes: int = 16, num_colours: int = 3,
                 avg_degree: float = 3.0, seed: int = 0) -> list[SmallGraph]:
    """A graph-classification task that a mean or max aggregator cannot
    solve and a sum aggregator can.

    For each pair, a random connected graph G with random one-hot colours
    (``num_colours``) gives two graphs on 2N nodes: class 0, a random
    :func:`double_cover` of G (each node keeps the neighbours it had in G),
    and class 1, the :func:`blow_up` of G (each node sees each neighbour
    twice). Node by node, the neighbour features of the two graphs have the
    same mean and the same maximum, and the whole graphs the same mean and
    maximum of node features; only the counts differ. The pairs come in
    order: graphs 2p and 2p + 1 come from the same G.

    Shapes:
        -> 2 num_pairs SmallGraphs, x (2N, num_colours), y ()
    """
    num_pairs = check_int(num_pairs, "num_pairs", 1)
    min_nodes = check_int(min_nodes, "min_nodes", 2)
    max_nodes = check_int(max_nodes, "max_nodes", min_nodes)
    num_colours = check_int(num_colours, "num_colours", 1)
    avg_degree = check_float(avg_degree, "avg_degree", 0.0)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    graphs = []
    for _ in range(num_pairs):
        N = int(torch.randint(min_nodes, max_nodes + 1, (1,), generator=gen))
        M = min(max(N - 1, round(N * avg_degree / 2)), N * (N - 1) // 2)
        edges = random_connected_graph(N, M, gen)
        colours = F.one_hot(torch.randint(0, num_colours, (N,), generator=gen), num_colours).float()
        x = torch.cat([colours, colours])  # (2N, num_colours): v and v + N share a colour
        graphs.append(SmallGraph(x, double_cover(edges, N, gen), torch.tensor(0)))
        graphs.append(SmallGraph(x, blow_up(edges, N), torch.tensor(1)))
    return graphs


def with_degree(graphs: list[SmallGraph]) -> list[SmallGraph]:
    """The same graphs with one more node feature: each node's degree (the
    number of edges into it), appended as the last column. With it, a mean
    or max aggregator can see what only the sum saw: how many neighbours a
    node has.

    Shapes:
        SmallGraphs with x (N, C) -> SmallGraphs with x (N, C + 1)
    """
    if not isinstance(graphs, (list, tuple)) or not graphs:
        raise ValueError(f"with_degree expects a non-empty list of SmallGraph; got {describe(graphs)}")
    bad = next((g for g in graphs if not isinstance(g, SmallGraph)), None)
    if bad is not None:
        raise TypeError(f"with_degree expects SmallGraph objects; got {describe(bad)}")
    return [SmallGraph(torch.cat([g.x, degree(g.edge_index[1], g.num_nodes, g.x.dtype)[:, None]], dim=1),
                       g.edge_index, g.y) for g in graphs]


def star_pairs(num_pairs: int, min_leaves: int = 3, max_leaves: int = 15, seed: int = 0) -> list[SmallGraph]:
    """A graph-classification task with equal degrees that a max aggregator
    cannot solve and a mean or sum aggregator can.

    Each pair is two stars with the same number of leaves (so every node
    has the same degree in both): a hub of colour 2 joined to leaves of
    colours 0 and 1, both present. Class 0 has more leaves of colour 0,
    class 1 the same counts with the colours swapped. Every node sees the
    same *set* of neighbour colours in both graphs (the hub {0, 1}, a leaf
    {2}), and the graphs hold the same set of colours, so the maximum
    agrees everywhere; the proportions differ, so the mean and the sum do
    not. Graphs 2p and 2p + 1 are a pair.

    Shapes:
        -> 2 num_pairs SmallGraphs, x (1 + leaves, 3) one-hot colours, y ()
    """
    num_pairs = check_int(num_pairs, "num_pairs", 1)
    min_leaves = check_int(min_leaves, "min_leaves", 3)
    max_leaves = check_int(max_leaves, "max_leaves", min_leaves)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    graphs = []
    for _ in range(num_pairs):
        n = int(torch.randint(min_leaves, max_leaves + 1, (1,), generator=gen))
        low = n // 2 + 1  # a strict majority, leaving at least one leaf of the other colour
        k = int(torch.randint(low, n, (1,), generator=gen))
        leaves = torch.tensor([0] * k + [1] * (n - k))[torch.randperm(n, generator=gen)]  # (n,)
        edges = to_undirected(torch.stack([torch.zeros(n, dtype=torch.int64), torch.arange(1, n + 1)]), n + 1)
        for label, colours in ((0, leaves), (1, 1 - leaves)):
            x = F.one_hot(torch.cat([torch.tensor([2]), colours]), 3).float()  # (1 + n, 3)
            graphs.append(SmallGraph(x, edges, torch.tensor(label)))
    return graphs


def wl_colours(edge_index: torch.Tensor, num_nodes: int, x: torch.Tensor | None = None,
               iterations: int = 3) -> torch.Tensor:
    """Weisfeiler-Lehman colour refinement (the 1-WL test).

    Every node starts with a colour (one per distinct row of ``x``; all the
    same without ``x``). In each round a node's new colour is a name for
    the pair (its colour, the multiset of its neighbours' colours). Two
    graphs whose colour counts agree after every round are called
    1-WL-equivalent; no message-passing GNN can tell them apart. To compare
    graphs, refine them together as one graph with several components
    (:func:`collate`), so that a colour means the same in both.

    Shapes:
        edge_index: (2, E), x: (N, C) -> (N,) int64 colours after ``iterations`` rounds
    """
    check_edge_index(edge_index, num_nodes)
    iterations = check_int(iterations, "iterations", 0)
    if x is None:
        colours = [0] * num_nodes
    else:
        _check_nodes(x)
        if x.shape[0] != num_nodes:
            raise ValueError(f"x must have one row per node, num_nodes={num_nodes} rows; got shape "
                             f"{tuple(x.shape)}")
        rows = [tuple(r) for r in x.tolist()]
        names = {r: i for i, r in enumerate(sorted(set(rows)))}
        colours = [names[r] for r in rows]
    neighbours = [[] for _ in range(num_nodes)]
    for j, i in edge_index.T.tolist():
        neighbours[i].append(j)
    for _ in range(iterations):
        signatures = [(colours[i], tuple(sorted(colours[j] for j in neighbours[i]))) for i in range(num_nodes)]
        names = {s: k for k, s in enumerate(sorted(set(signatures)))}
        colours = [names[s] for s in signatures]
    return torch.tensor(colours, dtype=torch.int64)


# a virtual global node ------------------------------------------------------------

class GlobalNodeLayer(nn.Module):
    r"""A message-passing layer with (``use_global=True``) or without a
    global vector $\mathbf{u}$ per graph, the state of a virtual node that
    every node talks to:

    $$\mathbf{h}'_i = \mathrm{ReLU}\big(W_1 \mathbf{h}_i + W_2 \operatorname*{mean}_{j \to i}
    \mathbf{h}_j + W_3 \mathbf{u}_{g(i)}\big), \qquad
    \mathbf{u}'_g = \mathrm{ReLU}\big(W_4 \mathbf{u}_g + W_5 \operatorname*{mean}_{i \in g}
    \mathbf{h}_i\big).$$

    Without it the $W_3$ term and $\mathbf{u}$ are left out (``u`` passes
    through as zeros).

    Shapes:
        x: (N, C_in), edge_index: (2, E), u: (B, C_in), batch: (N,) -> (N, C_out), (B, C_out)
    """

    def __init__(self, in_features: int, out_features: int, use_global: bool = True):
        super().__init__()
        self.use_global = check_bool(use_global, "use_global")
        self.self_lin = nn.Linear(in_features, out_features)
        self.neighbour_lin = nn.Linear(in_features, out_features, bias=False)
        if self.use_global:
            self.global_to_node = nn.Linear(in_features, out_features, bias=False)
            self.global_lin = nn.Linear(in_features, out_features)
            self.node_to_global = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x, edge_index, u, batch):
        h = self.self_lin(x) + self.neighbour_lin(aggregate(x, edge_index, reduce="mean"))  # (N, C_out)
        if not self.use_global:
            return F.relu(h), u.new_zeros(u.shape[0], h.shape[1])
        h = h + self.global_to_node(u).index_select(0, batch)  # every node hears its graph's u
        pooled = readout(x, batch, u.shape[0], "mean")  # (B, C_in): u hears every node
        return F.relu(h), F.relu(self.global_lin(u) + self.node_to_global(pooled))


class GlobalNodeNet(nn.Module):
    """``num_layers`` :class:`GlobalNodeLayer` layers and a linear classifier
    of every node.

    Shapes:
        x: (N, C), edge_index: (2, E), batch: (N,) -> (N, K)
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, num_layers: int = 2,
                 use_global: bool = True):
        super().__init__()
        num_layers = check_int(num_layers, "num_layers", 1)
        self.in_features = check_int(in_features, "in_features", 1)
        sizes = [in_features] + [hidden] * num_layers
        self.layers = nn.ModuleList(GlobalNodeLayer(a, b, use_global) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x, edge_index, batch, num_graphs):
        _check_width(x, self.in_features)
        u = x.new_zeros(num_graphs, x.shape[1])  # (B, C): the virtual node starts empty
        for layer in self.layers:
            x, u = layer(x, edge_index, u, batch)  # (N, hidden), (B, hidden)
        return self.head(x)  # (N, K)


def majority_rings(num_graphs: int, min_nodes: int = 41, max_nodes: int = 81, seed: int = 0) -> list[SmallGraph]:
    """Rings of red and blue nodes (an odd number of them); every node's
    label says whether its ring has more red nodes than blue ones. Each ring
    draws its own share of red between 0.35 and 0.65, so the answer is
    often close. A node learns it only by hearing from the whole ring.

    Shapes:
        -> num_graphs SmallGraphs, x (N, 2) one-hot colours, y (N,)
    """
    num_graphs = check_int(num_graphs, "num_graphs", 1)
    min_nodes = check_int(min_nodes, "min_nodes", 3)
    max_nodes = check_int(max_nodes, "max_nodes", min_nodes)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    graphs = []
    for _ in range(num_graphs):
        N = int(torch.randint(min_nodes // 2, max_nodes // 2 + 1, (1,), generator=gen)) * 2 + 1  # odd
        share = 0.35 + 0.3 * torch.rand((), generator=gen)
        red = (torch.rand(N, generator=gen) < share).long()  # (N,)
        label = (red.sum() > N // 2).long()
        graphs.append(SmallGraph(F.one_hot(red, 2).float(), ring_graph(N), label.repeat(N)))
    return graphs


# the spectral view ----------------------------------------------------------------

def laplacian(edge_index: torch.Tensor, num_nodes: int, normalized: bool = False) -> torch.Tensor:
    r"""The graph Laplacian as a dense matrix (small graphs only): $L = D - A$,
    or with ``normalized=True`` $L = I - D^{-1/2} A D^{-1/2}$ (an isolated
    node gets $L_{ii} = 1$). For an undirected graph both are symmetric
    with eigenvalues $\ge 0$, and $\mathbf{x}^\top L \mathbf{x} = \frac12
    \sum_{i \sim j} (x_i - x_j)^2$ for the first: how much a signal on the
    nodes varies across the edges.

    Shapes:
        edge_index: (2, E) -> (N, N) float64
    """
    A = dense_adjacency(edge_index, num_nodes).double()  # (N, N)
    if not torch.equal(A, A.T):
        raise ValueError("laplacian expects an undirected graph: every edge in both directions")
    deg = A.sum(1)  # (N,)
    if not check_bool(normalized, "normalized"):
        return torch.diag(deg) - A
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-12).pow(-0.5), torch.zeros_like(deg))
    return torch.eye(num_nodes, dtype=A.dtype, device=A.device) - inv_sqrt[:, None] * A * inv_sqrt[None, :]


def laplacian_eigenvectors(edge_index: torch.Tensor, num_nodes: int,
                           normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The eigenvalues (ascending: the frequencies) and orthonormal
    eigenvectors (the columns: the graph's Fourier basis) of the Laplacian.

    Shapes:
        edge_index: (2, E) -> eigenvalues (N,), eigenvectors (N, N), float64
    """
    return torch.linalg.eigh(laplacian(edge_index, num_nodes, normalized))


def spectral_filter(x: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor,
                    response) -> torch.Tensor:
    r"""Filter a signal on the nodes in the frequency domain: transform
    ($\Phi^\top \mathbf{x}$, with the eigenvectors as the columns of
    $\Phi$), multiply each frequency by $g(\lambda)$, and transform back,

    $$\mathbf{y} = \Phi \operatorname{diag}\big(g(\lambda)\big) \Phi^\top \mathbf{x}.$$

    Shapes:
        x: (N,) or (N, C), eigenvalues: (N,), eigenvectors: (N, N) -> like x
    """
    check_tensor(x, "x", floating=True)
    if not callable(response):
        raise TypeError(f"response must be a function g(eigenvalues) -> gains; got {describe(response)}")
    N = eigenvalues.shape[0]
    if eigenvectors.shape != (N, N) or x.shape[0] != N:
        raise ValueError(f"expected x with {N} rows and eigenvectors of shape ({N}, {N}); got x "
                         f"{tuple(x.shape)} and eigenvectors {tuple(eigenvectors.shape)}")
    U = eigenvectors.to(x.dtype)
    x_hat = U.T @ x  # (N, ...) the graph Fourier transform
    gains = response(eigenvalues)
    if not isinstance(gains, torch.Tensor) or gains.shape != (N,):
        raise ValueError(f"response(eigenvalues) must return a tensor of {N} gains, shape ({N},), one per "
                         f"eigenvalue; got {describe(gains)}")
    gains = gains.to(x.dtype)  # (N,)
    return U @ (gains.reshape(-1, *[1] * (x.dim() - 1)) * x_hat)


# over-smoothing -------------------------------------------------------------------

def mean_cosine_distance(h: torch.Tensor) -> float:
    r"""The mean cosine distance $1 - \cos(\mathbf{h}_i, \mathbf{h}_j)$ over
    all pairs of distinct nodes (rows of zeros left out): 0 when every
    embedding points the same way. Computed from the sum of the unit
    vectors, in O(N C), without the N x N matrix of pairs.

    Shapes:
        h: (N, C) -> a float
    """
    _check_nodes(h, "h")
    h = h.detach().double()
    norms = h.norm(dim=1)
    unit = h[norms > 0] / norms[norms > 0, None]  # (N', C)
    n = len(unit)
    if n < 2:
        raise ValueError("mean_cosine_distance needs at least two non-zero rows")
    total = unit.sum(0)  # sum_ij cos(h_i, h_j) = |sum_i u_i|^2, the diagonal adds n
    mean_cos = (total @ total - n) / (n * (n - 1))
    return float(1 - mean_cos)


# drawing --------------------------------------------------------------------------

def layout(edge_index: torch.Tensor, num_nodes: int, seed: int = 0, iterations: int = 100) -> torch.Tensor:
    """2-D positions for drawing a small graph: the Fruchterman-Reingold
    spring layout (as in networkx), in which every pair of nodes pushes
    apart and every edge pulls its ends together, from random positions
    drawn with ``seed``. O(N^2) per iteration: for graphs of up to a few
    thousand nodes.

    Shapes:
        edge_index: (2, E) -> (N, 2)
    """
    check_edge_index(edge_index, num_nodes)
    iterations = check_int(iterations, "iterations", 1)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    N = num_nodes
    pos = torch.rand(N, 2, generator=gen, dtype=torch.float64)  # (N, 2)
    if N < 2:
        return pos.float()
    A = dense_adjacency(edge_index.cpu(), N).double()
    A = ((A + A.T) > 0).double()  # (N, N)
    k = (1.0 / N) ** 0.5  # the ideal distance between nodes
    t = 0.1  # the largest step, cooling to zero
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]  # (N, N, 2)
        dist = delta.norm(dim=-1).clamp(min=0.01)  # (N, N)
        force = k * k / dist**2 - A * dist / k  # push apart, pull along the edges
        move = torch.einsum("ijc,ij->ic", delta, force)  # (N, 2)
        length = move.norm(dim=1, keepdim=True).clamp(min=0.01)
        pos = pos + move * (t / length)
        t -= 0.1 / (iterations + 1)
    pos = pos - pos.mean(0)
    return (pos / pos.abs().max().clamp(min=1e-12)).float()


def draw_graph(ax, edge_index: torch.Tensor, pos: torch.Tensor, node_color=None, edge_width=None,
               labels: bool = False, cmap: str = "viridis", node_size: float = 80, vmin=None, vmax=None,
               edge_color="0.6"):
    """Draw a graph with matplotlib: edges as lines (``edge_width`` one
    width per edge of ``edge_index``), nodes as dots coloured by
    ``node_color`` (values through ``cmap``, or colour names). Returns the
    scatter, for a colour bar.

    Shapes:
        edge_index: (2, E), pos: (N, 2), node_color: (N,), edge_width: (E,)
    """
    from matplotlib.collections import LineCollection

    check_tensor(pos, "pos", floating=True)
    if pos.dim() != 2 or pos.shape[1] != 2:
        raise ValueError(f"pos must hold one 2-D position per node, shape (N, 2); got {tuple(pos.shape)}")
    check_edge_index(edge_index, len(pos))
    if node_color is not None and not isinstance(node_color, str) and len(node_color) != len(pos):
        raise ValueError(f"node_color must have one entry per node, {len(pos)}; got {len(node_color)}")
    segments = pos[edge_index.T].numpy()  # (E, 2, 2)
    widths = 1.0 if edge_width is None else torch.as_tensor(edge_width).tolist()
    ax.add_collection(LineCollection(segments, linewidths=widths, colors=edge_color, zorder=1))
    colours = "tab:blue" if node_color is None else node_color
    if isinstance(colours, torch.Tensor):
        colours = colours.detach().cpu().numpy()
    if isinstance(node_size, torch.Tensor):
        node_size = node_size.numpy()
    dots = ax.scatter(pos[:, 0], pos[:, 1], c=colours, s=node_size, cmap=cmap, vmin=vmin, vmax=vmax,
                      edgecolors="k", linewidths=0.5, zorder=2)
    if labels:
        for n, (px, py) in enumerate(pos.tolist()):
            ax.annotate(str(n), (px, py), ha="center", va="center", fontsize=8, zorder=3)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.margins(0.1)  # room for the largest dots at the edges
    ax.autoscale_view()
    return dots


def subgraph(edge_index: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The edges among ``nodes``, renumbered 0..len(nodes)-1, and the
    positions (in ``edge_index``'s columns) of the edges kept.

    Shapes:
        edge_index: (2, E), nodes: (n,) -> (2, E_sub), (E_sub,)
    """
    check_tensor(nodes, "nodes")
    if nodes.dim() != 1 or nodes.dtype != torch.int64:
        raise ValueError(f"nodes must be an int64 tensor of node ids, shape (n,); got {nodes.dtype} of "
                         f"shape {tuple(nodes.shape)}")
    N = int(edge_index.max()) + 1 if edge_index.numel() else 0
    N = max(N, int(nodes.max()) + 1 if nodes.numel() else 0)
    check_edge_index(edge_index, N)
    new_id = torch.full((N,), -1, dtype=torch.int64, device=edge_index.device)
    new_id[nodes] = torch.arange(len(nodes), device=edge_index.device)
    keep = torch.nonzero((new_id[edge_index[0]] >= 0) & (new_id[edge_index[1]] >= 0)).flatten()  # (E_sub,)
    return new_id[edge_index[:, keep]], keep


def plot_neighbourhood(ax, edge_index: torch.Tensor, num_nodes: int, node: int, hops: int,
                       node_color=None, edge_weight: torch.Tensor | None = None, seed: int = 0,
                       max_width: float = 6.0, cmap: str = "tab10", vmin=None, vmax=None,
                       max_labels: int = 12):
    """Draw the ``hops``-hop neighbourhood of ``node`` (the nodes a
    ``hops``-layer GNN reads for it): the centre large with a black ring,
    the others smaller the farther they are. With ``edge_weight`` (one per
    edge of ``edge_index``, e.g. attention), the edges into the centre are
    drawn with widths proportional to it (the others thin) and, when there
    are at most ``max_labels`` of them, labelled with their values.
    Returns the node ids drawn (the centre first) and the scatter.

    Shapes:
        edge_index: (2, E), node_color: (N,), edge_weight: (E,)
    """
    dist = khop_nodes(edge_index, num_nodes, node, hops)  # (N,)
    if node_color is not None and len(node_color) != num_nodes:
        raise ValueError(f"node_color must have one entry per node, num_nodes={num_nodes}; got "
                         f"{len(node_color)}")
    order = torch.argsort(dist.clamp(min=0) + (dist < 0) * (hops + 1), stable=True)
    nodes = order[: int((dist >= 0).sum())]  # the centre first, then by distance
    sub, kept = subgraph(edge_index, nodes)
    pos = layout(sub, len(nodes), seed)
    colours = None if node_color is None else torch.as_tensor(node_color)[nodes]
    widths = torch.full((sub.shape[1],), 0.6)
    if edge_weight is not None:
        check_tensor(edge_weight, "edge_weight", floating=True)
        if edge_weight.shape != (edge_index.shape[1],):
            raise ValueError(f"edge_weight must have shape (E,) = ({edge_index.shape[1]},); got "
                             f"{tuple(edge_weight.shape)}")
        into_centre = sub[1] == 0
        w = edge_weight.detach().cpu()[kept]
        widths[into_centre] = 0.6 + max_width * w[into_centre] / w[into_centre].max().clamp(min=1e-12)
        if int(into_centre.sum()) <= max_labels:
            for j, value in zip(sub[0, into_centre].tolist(), w[into_centre].tolist()):
                mid = 0.55 * pos[0] + 0.45 * pos[j]
                ax.annotate(f"{value:.2f}", mid.tolist(), fontsize=8, ha="center", va="center", zorder=4,
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
    hop = dist[nodes].float()
    sizes = 260 / (1 + 1.5 * hop)  # (n,)
    dots = draw_graph(ax, sub, pos, node_color=colours, edge_width=widths, cmap=cmap, node_size=sizes,
                      vmin=vmin, vmax=vmax)
    ax.scatter(pos[:1, 0], pos[:1, 1], s=sizes[:1] * 2.2, facecolors="none", edgecolors="k", linewidths=2,
               zorder=3)
    return nodes, dots
