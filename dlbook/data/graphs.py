"""Citation graphs with the Planetoid split: Cora and CiteSeer.

The cache files ``cora.npz`` and ``citeseer.npz`` are converted from the
official Planetoid files (:mod:`dlbook.data.planetoid`), exactly as PyTorch
Geometric's ``Planetoid`` data set reads them: bag-of-words features
(0/1, not normalised), 20 training nodes per class, 500 validation and
1,000 test nodes, undirected edges stored in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .._checks import check_device
from ._checks import check_choice
from .cache import fetch

GRAPH_DATASETS = ("cora", "citeseer")


def _require(ok: bool, t: torch.Tensor, key: str, expected: str) -> None:
    if not ok:
        raise ValueError(f"Graph.{key} must be {expected}; got {t.dtype} of shape {tuple(t.shape)}")


@dataclass(frozen=True, eq=False)
class Graph:
    """One graph with node features, labels and the train/val/test masks.

    Shapes:
        x: (N, C) float32 node features; y: (N,) int64 labels in 0..K-1;
        edge_index: (2, E) int64, row 0 the source and row 1 the target of
        each directed edge (both directions of every undirected edge, no
        self loops); train_mask, val_mask, test_mask: (N,) bool.

    The constructor checks all of this, including that every node id in
    ``edge_index`` is a node of the graph (in ``0..N-1``), so a wrong graph
    is refused where it is made, not in the first layer that reads it.
    """

    x: torch.Tensor
    y: torch.Tensor
    edge_index: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    name: str = ""

    def __post_init__(self):
        tensors = [f.name for f in fields(self) if f.name != "name"]
        if not all(isinstance(getattr(self, key), torch.Tensor) for key in tensors):
            raise ValueError(f"Graph needs tensors for {', '.join(tensors)}")
        N = len(self.x) if self.x.dim() else -1
        _require(self.x.dim() == 2 and self.x.is_floating_point(), self.x, "x", "(N, C) floating point")
        _require(self.y.shape == (N,) and self.y.dtype == torch.int64, self.y, "y", f"({N},) int64")
        _require(self.edge_index.dim() == 2 and len(self.edge_index) == 2 and self.edge_index.dtype == torch.int64,
                 self.edge_index, "edge_index", "(2, E) int64")
        for key in ("train_mask", "val_mask", "test_mask"):
            mask = getattr(self, key)
            _require(mask.shape == (N,) and mask.dtype == torch.bool, mask, key, f"({N},) bool")
        self._check_node_ids(N)

    def _check_node_ids(self, N: int) -> None:
        """Every entry of edge_index in 0..N-1: one min and one max (about 10 us for Cora's
        21,112 entries). A tensor on the meta device has no values to check."""
        e = self.edge_index
        if e.numel() == 0 or e.is_meta:
            return
        low, high = (int(v) for v in torch.aminmax(e))
        if low >= 0 and high < N:
            return
        bad = low if low < 0 else high
        row, col = (int(i) for i in (e == bad).nonzero()[0])
        which = "source" if row == 0 else "target"
        allowed = f"0..{N - 1}" if N else "nothing (no nodes)"
        raise ValueError(f"Graph.edge_index names node {bad} (the {which} of edge {col}: "
                         f"{int(e[0, col])} -> {int(e[1, col])}), but the graph has N={N} nodes "
                         f"(x has {N} rows): node ids must lie in {allowed}")

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if self.y.numel() else 0

    def to(self, device: torch.device | str) -> Graph:
        """A new Graph with every tensor on ``device``."""
        device = check_device(device)
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def __repr__(self) -> str:
        splits = "/".join(str(int(getattr(self, f"{s}_mask").sum())) for s in ("train", "val", "test"))
        return (f"Graph({self.name or 'graph'}: N={self.num_nodes} nodes, E={self.num_edges} edges, "
                f"C={self.num_features} features, K={self.num_classes} classes, "
                f"train/val/test {splits}, device={self.x.device})")


def load_graph(name: str) -> Graph:
    """Cora or CiteSeer with the Planetoid split, from the verified cache.

    ================  ======  ======  =====  ==  ==========
    name              N       E       C      K   train/val/test
    ================  ======  ======  =====  ==  ==========
    ``"cora"``        2,708   10,556  1,433  7   140/500/1000
    ``"citeseer"``    3,327   9,104   3,703  6   120/500/1000
    ================  ======  ======  =====  ==  ==========

    CiteSeer's official files have no features or label for 15 node ids
    inside the range of its test ids (PyTorch Geometric calls them isolated,
    though they have edges); they get zero features and label 0, and are in
    no split.

    Shapes:
        see :class:`Graph`.
    """
    name = check_choice(name, "the graph data set", GRAPH_DATASETS)
    with np.load(fetch(name)) as npz:
        tensors = {f.name: torch.from_numpy(npz[f.name]) for f in fields(Graph) if f.name != "name"}
    return Graph(**tensors, name=name)
