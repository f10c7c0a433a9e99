"""dlbook.data.graphs and .planetoid: Cora and CiteSeer from the official Planetoid files.

The converter runs on the byte-exact official files in ../shared/data/planetoid
and must give exactly the arrays of cora.npz / citeseer.npz.
"""

import os
import pickle
from collections import defaultdict

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from dlbook import data
from dlbook.data import DataError
from dlbook.data import planetoid

CORA_CLASS_COUNTS = [351, 217, 418, 818, 426, 298, 180]
SIZES = {"cora": (2708, 1433, 7, 10556, 140), "citeseer": (3327, 3703, 6, 9104, 120)}  # N, C, K, E, train


@pytest.fixture(scope="module")
def official():
    """name -> {file name: path} of the official Planetoid files."""
    folder = SHARED_DATA / "planetoid"
    if not folder.is_dir():
        pytest.skip(f"{folder} is missing")
    return {name: {p.name: p for p in folder.glob(f"ind.{name}.*")} for name in SIZES}


# The converter on the official files ------------------------------------------

@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_the_official_files_convert_to_exactly_the_shared_arrays(official, name):
    arrays = planetoid.planetoid_arrays(name, official[name])
    with np.load(SHARED_DATA / f"{name}.npz") as npz:
        assert list(arrays) == npz.files
        for key in npz.files:
            assert arrays[key].dtype == npz[key].dtype and arrays[key].shape == npz[key].shape, key
            assert np.array_equal(arrays[key], npz[key]), key


def test_citeseer_ids_missing_from_the_test_files_get_zero_features_and_label_0(official):
    test_index = planetoid.read_test_index(official["citeseer"]["ind.citeseer.test.index"])
    missing = np.setdiff1d(np.arange(test_index.min(), test_index.max() + 1), test_index)
    assert len(missing) == 15
    arrays = planetoid.planetoid_arrays("citeseer", official["citeseer"])
    assert not arrays["x"][missing].any() and not arrays["y"][missing].any()
    for split in ("train", "val", "test"):
        assert not arrays[f"{split}_mask"][missing].any()


def test_fetch_downloads_and_converts_the_eight_planetoid_files(monkeypatch, tmp_path, mirror_server, capsys):
    monkeypatch.setenv("DLBOOK_DATA", str(tmp_path / "cache"))
    path = data.fetch("cora", mirrors=(mirror_server("missing"), mirror_server("good")))
    assert data.sha256_file(path) == data.SOURCES["cora"].sha256  # byte for byte the shared cora.npz
    downloads = [line.split()[-1] for line in capsys.readouterr().out.splitlines()]
    assert downloads == [mirror_server("missing") + "ind.cora.x"] + [
        mirror_server("good") + f.name for f in data.SOURCES["cora"].files]
    assert sorted(p.name for p in path.parent.iterdir()) == ["cora.npz"]


# The restricted unpickler -----------------------------------------------------

class _WritesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload, refused", [(_WritesMarker, ".open, which"), (_RunsShell, ".system, which")])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, payload, refused):
    marker = tmp_path / "marker"
    path = tmp_path / "ind.cora.x"
    path.write_bytes(pickle.dumps({"graph": [payload(marker)]}, protocol=2))
    pickle.loads(path.read_bytes())  # the payload works: an ordinary unpickler runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DataError) as err:
        planetoid.load_pickle(path)
    assert str(path) in str(err.value) and refused in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [np.array([1, "a"], dtype=object), np.array([1.0]).view(np.matrix)])
def test_numpy_objects_beyond_plain_arrays_are_refused(tmp_path, obj):
    path = tmp_path / "f"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataError, match="refused"):
        planetoid.load_pickle(path)


def test_plain_arrays_and_adjacency_lists_load(tmp_path):
    adjacency = defaultdict(list, {0: [1, 2], 2: [0]})
    for obj in (np.arange(6, dtype=np.int32).reshape(2, 3), adjacency):
        path = tmp_path / "f"
        path.write_bytes(pickle.dumps(obj, protocol=4))  # 2 would store bytes through _codecs.encode
        back = planetoid.load_pickle(path)
        assert type(back) is type(obj)
        assert np.array_equal(back, obj) if isinstance(obj, np.ndarray) else back == obj


@pytest.mark.parametrize("payload", [b"", b"not a pickle", pickle.dumps(np.arange(3), protocol=2)[:-5]])
def test_a_damaged_pickle_is_a_clear_error(tmp_path, payload):
    path = tmp_path / "ind.cora.y"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="ind.cora.y"):
        planetoid.load_pickle(path)


def _sparse(fmt, shape, indptr, indices, values):
    matrix = {"csr": planetoid._PickledCSR, "csc": planetoid._PickledCSC}[fmt]()
    matrix.__setstate__({"_shape": shape, "indptr": np.array(indptr, np.int32),
                         "indices": np.array(indices, np.int32), "data": np.array(values, np.float64)})
    return matrix


def test_sparse_matrices_become_dense_as_scipy_would():
    # [[1, 0, 2], [0, 0, 0], [0, 3, 0]] with the 2 stored as 1.5 + 0.5 (duplicates add up)
    expected = np.array([[1, 0, 2], [0, 0, 0], [0, 3, 0]], np.float32)
    csr = _sparse("csr", (3, 3), [0, 3, 3, 4], [0, 2, 2, 1], [1, 1.5, 0.5, 3])
    csc = _sparse("csc", (3, 3), [0, 1, 2, 4], [0, 2, 0, 0], [1, 3, 1.5, 0.5])
    for matrix in (csr, csc):
        dense = planetoid.sparse_to_dense(matrix)
        assert dense.dtype == np.float32 and np.array_equal(dense, expected)
    wide = planetoid.sparse_to_dense(_sparse("csr", (1, 4), [0, 1], [3], [7]))
    assert np.array_equal(wide, [[0, 0, 0, 7]])


@pytest.mark.parametrize("indptr, indices", [([0, 1, 1], [0]), ([0, 2, 1, 1], [0, 1]), ([0, 1, 1, 1], [5])])
def test_inconsistent_sparse_arrays_are_refused(indptr, indices):
    with pytest.raises(DataError, match="inconsistent"):
        planetoid.sparse_to_dense(_sparse("csr", (3, 3), indptr, indices, [1.0] * len(indices)))


def test_edge_index_from_lists_drops_self_loops_and_duplicates_and_sorts():
    edges = planetoid.edge_index_from_lists({2: [0, 2, 1, 1], 0: [2], 1: [2]}, num_nodes=3)
    assert edges.dtype == np.int64 and edges.tolist() == [[0, 1, 2, 2], [2, 2, 0, 1]]
    with pytest.raises(DataError, match="outside"):
        planetoid.edge_index_from_lists({0: [3]}, num_nodes=3)


# load_graph -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_load_graph_shapes_dtypes_masks_and_edges(shared_data, name):
    N, C, K, E, n_train = SIZES[name]
    g = data.load_graph(name)
    assert (g.num_nodes, g.num_features, g.num_classes, g.num_edges) == (N, C, K, E)
    assert g.x.shape == (N, C) and g.x.dtype == torch.float32
    assert g.y.shape == (N,) and g.y.dtype == torch.int64
    assert g.edge_index.shape == (2, E) and g.edge_index.dtype == torch.int64
    masks = [g.train_mask, g.val_mask, g.test_mask]
    assert all(m.shape == (N,) and m.dtype == torch.bool for m in masks)
    assert [int(m.sum()) for m in masks] == [n_train, 500, 1000]
    assert int(sum(m.long() for m in masks).max()) == 1  # disjoint
    assert torch.bincount(g.y[g.train_mask], minlength=K).tolist() == [20] * K  # 20 per class
    src, dst = g.edge_index
    assert not torch.any(src == dst)  # no self loops
    keys = src * N + dst
    assert torch.equal(keys, torch.sort(keys).values) and len(torch.unique(keys)) == E  # sorted, no duplicates
    assert torch.equal(torch.sort(dst * N + src).values, keys)  # symmetric
    assert name in repr(g) and f"N={N}" in repr(g) and f"E={E}" in repr(g) and "0x" not in repr(g)


def test_cora_class_counts(shared_data):
    assert torch.bincount(data.load_graph("cora").y).tolist() == CORA_CLASS_COUNTS


def test_graph_to_returns_a_new_graph(shared_data):
    g = data.load_graph("cora")
    moved = g.to("meta")
    assert moved is not g and moved.name == "cora"
    assert all(t.device.type == "meta" for t in (moved.x, moved.y, moved.edge_index, moved.train_mask,
                                                 moved.val_mask, moved.test_mask))
    assert g.x.device.type == "cpu"  # the original stays where it was
    same = g.to("cpu")
    assert same is not g and torch.equal(same.x, g.x) and torch.equal(same.edge_index, g.edge_index)


@pytest.mark.parametrize("name", ["pubmed", "Cora", "", None])
def test_load_graph_rejects_an_unknown_name(name):
    with pytest.raises(ValueError, match="cora.*citeseer"):
        data.load_graph(name)


def _tiny_graph(**changes):
    parts = dict(x=torch.zeros(3, 2), y=torch.tensor([0, 1, 1]), edge_index=torch.tensor([[0, 1], [1, 0]]),
                 train_mask=torch.tensor([True, False, False]), val_mask=torch.tensor([False, True, False]),
                 test_mask=torch.tensor([False, False, True]))
    return data.Graph(**{**parts, **changes}, name="tiny")


def test_a_graph_can_be_built_by_hand():
    g = _tiny_graph()
    assert (g.num_nodes, g.num_features, g.num_classes, g.num_edges) == (3, 2, 2, 2)
    assert repr(g) == ("Graph(tiny: N=3 nodes, E=2 edges, C=2 features, K=2 classes, "
                       "train/val/test 1/1/1, device=cpu)")


@pytest.mark.parametrize("edge_index, message", [
    ([[0, 5], [1, 0]], "names node 5 (the source of edge 1: 5 -> 0)"),
    ([[0, 1, 2], [1, 0, 3]], "names node 3 (the target of edge 2: 2 -> 3)"),
    ([[0, -1], [1, 0]], "names node -1 (the source of edge 1: -1 -> 0)"),
])
def test_an_edge_to_a_node_that_does_not_exist_is_refused(edge_index, message):
    with pytest.raises(ValueError) as err:
        _tiny_graph(edge_index=torch.tensor(edge_index))
    assert str(err.value) == (f"Graph.edge_index {message}, but the graph has N=3 nodes (x has 3 rows): "
                              f"node ids must lie in 0..2")


def test_a_graph_without_edges_or_nodes_is_fine():
    assert _tiny_graph(edge_index=torch.zeros(2, 0, dtype=torch.long)).num_edges == 0
    empty = dict(x=torch.zeros(0, 2), y=torch.zeros(0, dtype=torch.long), train_mask=torch.zeros(0, dtype=torch.bool),
                 val_mask=torch.zeros(0, dtype=torch.bool), test_mask=torch.zeros(0, dtype=torch.bool))
    assert data.Graph(**empty, edge_index=torch.zeros(2, 0, dtype=torch.long)).num_nodes == 0
    with pytest.raises(ValueError, match=r"N=0 nodes .* must lie in nothing \(no nodes\)"):
        data.Graph(**empty, edge_index=torch.tensor([[0], [0]]))


@pytest.mark.parametrize("device", ["banana", "gpu0", ""])
def test_graph_to_an_unknown_device_names_the_devices(device):
    with pytest.raises(ValueError) as err:
        _tiny_graph().to(device)
    assert str(err.value) == ("device must be a device name: 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps'; "
                              f"got {device!r}")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_graph_to_meta_skips_the_node_ids_it_cannot_read():
    moved = _tiny_graph().to("meta")
    assert moved.edge_index.is_meta and moved.num_edges == 2


def test_the_real_graphs_pass_their_own_checks(shared_data):
    for name, nodes in (("cora", 2708), ("citeseer", 3327)):
        g = data.load_graph(name)
        assert g.num_nodes == nodes and int(g.edge_index.max()) < nodes
        rebuilt = data.Graph(g.x, g.y, g.edge_index, g.train_mask, g.val_mask, g.test_mask, name)
        assert torch.equal(rebuilt.edge_index, g.edge_index)
        bad = g.edge_index.clone()
        bad[1, 7] = nodes
        with pytest.raises(ValueError, match=f"names node {nodes} .*N={nodes} nodes"):
            data.Graph(g.x, g.y, bad, g.train_mask, g.val_mask, g.test_mask, name)


@pytest.mark.parametrize("changes, match", [
    (dict(x=torch.zeros(3)), r"Graph.x must be \(N, C\)"),
    (dict(x=torch.zeros(3, 2, dtype=torch.long)), "Graph.x must be"),
    (dict(y=torch.tensor([0, 1])), r"Graph.y must be \(3,\) int64"),
    (dict(y=torch.tensor([0.0, 1.0, 1.0])), "Graph.y"),
    (dict(edge_index=torch.tensor([[0, 1, 2]])), r"Graph.edge_index must be \(2, E\) int64"),
    (dict(edge_index=torch.tensor([[0, 1], [1, 0]], dtype=torch.int32)), "Graph.edge_index"),
    (dict(val_mask=torch.tensor([0, 1, 0])), r"Graph.val_mask must be \(3,\) bool"),
    (dict(test_mask=np.array([False, False, True])), "tensors"),
])
def test_a_malformed_graph_is_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        _tiny_graph(**changes)
