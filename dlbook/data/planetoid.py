"""The official Planetoid files of Cora and CiteSeer, read safely and converted.

Planetoid (Yang, Cohen and Salakhutdinov, 2016; kimiyoung/planetoid) ships
each graph as eight files ``ind.{name}.{ext}``: Python 2 pickles of scipy
sparse matrices (features ``x``, ``tx``, ``allx``), numpy arrays (one-hot
labels ``y``, ``ty``, ``ally``) and a ``defaultdict`` of adjacency lists
(``graph``), plus a text file of test node ids (``test.index``).

A pickle may name any Python callable, so unpickling a tampered download can
run code. :func:`load_pickle` allows only the handful of types these files
use and rebuilds the sparse matrices from their pickled attributes, so
neither scipy nor anything else is ever imported or called.

:func:`planetoid_arrays` turns the eight files into the arrays of
``cora.npz`` / ``citeseer.npz`` exactly as PyTorch Geometric's
``read_planetoid_data`` does.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np

from .formats import DataError

PLANETOID_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
NUM_VAL = 500  # Planetoid's validation nodes follow its training nodes


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle; only :func:`_reconstruct` accepts it."""


_RECONSTRUCT = np.ndarray.__reduce__(np.empty(0))[0]  # numpy's own array rebuilder


def _reconstruct(cls, shape, typecode):
    if cls is not _NdarrayToken or tuple(shape) != (0,):
        raise pickle.UnpicklingError("an ndarray may only be rebuilt the way numpy pickles it")
    return _RECONSTRUCT(np.ndarray, (0,), typecode)


def _dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"arrays of Python objects are not allowed (dtype {dtype})")
    return dtype


class _PickledSparse:
    """The pickled attributes of a scipy CSR or CSC matrix, nothing more."""

    format = ""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a sparse matrix's state must be a dict")
        self.state = state


class _PickledCSR(_PickledSparse):
    format = "csr"


class _PickledCSC(_PickledSparse):
    format = "csc"


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy", "dtype"): _dtype,
    ("scipy.sparse.csr", "csr_matrix"): _PickledCSR,
    ("scipy.sparse._csr", "csr_matrix"): _PickledCSR,
    ("scipy.sparse.csc", "csc_matrix"): _PickledCSC,
    ("scipy.sparse._csc", "csc_matrix"): _PickledCSC,
    ("collections", "defaultdict"): collections.defaultdict,
    ("__builtin__", "list"): list,
    ("builtins", "list"): list,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is not one of the "
                                         f"types a Planetoid file may contain") from None


def load_pickle(path: str | Path):
    """Unpickle a Planetoid file, allowing only numpy arrays, sparse matrices
    and a dict of lists; a sparse matrix comes back as a dense float32 array.

    Raises:
        DataError: naming the file, when it names any other type (a tampered
            file) or is not a readable pickle.
    """
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"refused to load {path}: {err}. It is not an official Planetoid file; "
                        f"delete it and download it again.") from err
    if isinstance(obj, _PickledSparse):
        return sparse_to_dense(obj, path)
    return obj


def _array(state: dict, key: str, path) -> np.ndarray:
    value = state.get(key)
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise DataError(f"{path}: the sparse matrix has no 1-D array {key!r}")
    return value


def sparse_to_dense(matrix: _PickledSparse, path="the pickle") -> np.ndarray:
    """The dense float32 array of a pickled CSR or CSC matrix (duplicates summed, as scipy does).

    Shapes:
        the matrix's ``_shape`` (rows, columns).
    """
    state = matrix.state
    shape = state.get("_shape", state.get("shape"))
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(n, int) and n >= 0 for n in shape)):
        raise DataError(f"{path}: the sparse matrix has no valid shape ({shape!r})")
    indptr, indices, values = (_array(state, key, path) for key in ("indptr", "indices", "data"))
    n_major, n_minor = shape if matrix.format == "csr" else shape[::-1]
    if (len(indptr) != n_major + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0)
            or indptr[-1] != len(indices) or len(indices) != len(values)
            or (len(indices) and (indices.min() < 0 or indices.max() >= n_minor))):
        raise DataError(f"{path}: the {matrix.format.upper()} arrays of the sparse matrix are inconsistent")
    dense = np.zeros((n_major, n_minor), dtype=np.float32)
    major = np.repeat(np.arange(n_major), np.diff(indptr))
    np.add.at(dense, (major, indices), values.astype(np.float32))
    return dense if matrix.format == "csr" else dense.T.copy()


def read_test_index(path: str | Path) -> np.ndarray:
    """The node ids of ``ind.{name}.test.index``, one per line, in file order."""
    try:
        return np.array([int(line) for line in Path(path).read_text().split()], dtype=np.int64)
    except ValueError as err:
        raise DataError(f"{path} is not a list of node ids, one a line ({err})") from err


def _expect(obj, kind, what: str, path) -> None:
    if not isinstance(obj, kind):
        raise DataError(f"{path}: expected {what}, found {type(obj).__name__}")


def edge_index_from_lists(adjacency: dict, num_nodes: int) -> np.ndarray:
    """Every (node, neighbour) pair of the adjacency lists, without self loops
    or duplicates, sorted by node then neighbour (PyG's ``coalesce``).

    Shapes:
        (2, E) int64.
    """
    rows = np.concatenate([np.full(len(v), k, dtype=np.int64) for k, v in adjacency.items()] or [np.zeros(0, np.int64)])
    cols = np.concatenate([np.asarray(v, dtype=np.int64) for v in adjacency.values()] or [np.zeros(0, np.int64)])
    if len(cols) and (cols.min() < 0 or max(rows.max(), cols.max()) >= num_nodes):
        raise DataError(f"the graph names nodes outside 0..{num_nodes - 1}")
    keep = rows != cols  # self loops out
    keys = np.unique(rows[keep] * num_nodes + cols[keep])  # sorted, duplicates out
    return np.stack([keys // num_nodes, keys % num_nodes])  # (2, E)


def _fill_test_gaps(tx: np.ndarray, ty: np.ndarray, sorted_test: np.ndarray):
    """Rows of zeros for the ids inside the test range that have no test row (CiteSeer's 15).

    Shapes:
        tx (n_test, C), ty (n_test, K) -> (span, C), (span, K), span = max - min + 1.
    """
    span = sorted_test[-1] - sorted_test[0] + 1
    if span == len(sorted_test):
        return tx, ty
    tx_full = np.zeros((span, tx.shape[1]), tx.dtype)  # (span, C)
    ty_full = np.zeros((span, ty.shape[1]), ty.dtype)  # (span, K)
    tx_full[sorted_test - sorted_test[0]] = tx
    ty_full[sorted_test - sorted_test[0]] = ty
    return tx_full, ty_full


def _split_masks(num_nodes: int, num_train: int, test_index: np.ndarray) -> dict[str, np.ndarray]:
    """Planetoid's split: the first ``num_train`` nodes, the next 500, the listed test ids."""
    ids = {"train": np.arange(num_train), "val": np.arange(num_train, num_train + NUM_VAL), "test": test_index}
    masks = {}
    for split, rows in ids.items():
        masks[f"{split}_mask"] = np.zeros(num_nodes, dtype=bool)
        masks[f"{split}_mask"][rows] = True
    return masks


def planetoid_arrays(name: str, files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Convert the eight Planetoid files of ``name`` into the cached arrays.

    ``files`` maps each file name (``ind.cora.x``, ...) to its verified local
    copy. The test nodes are put back in place (``x[test_index] =
    x[sorted(test_index)]``); the 15 ids in CiteSeer's test range that have
    no features or label get zero features and label 0 (PyTorch Geometric's
    choice).

    Shapes:
        x (N, C) float32, y (N,) int64, edge_index (2, E) int64,
        train_mask, val_mask, test_mask (N,) bool.
    """
    path = {part: files[f"ind.{name}.{part}"] for part in PLANETOID_PARTS}
    loaded = {part: load_pickle(path[part]) for part in PLANETOID_PARTS if part != "test.index"}
    for part in ("x", "y", "tx", "ty", "allx", "ally"):
        _expect(loaded[part], np.ndarray, "an array", path[part])
    _expect(loaded["graph"], dict, "a dict of adjacency lists", path["graph"])
    test_index = read_test_index(path["test.index"])
    sorted_test = np.sort(test_index)

    tx, ty = _fill_test_gaps(loaded["tx"], loaded["ty"], sorted_test)
    x = np.concatenate([loaded["allx"], tx]).astype(np.float32)  # (N, C)
    y = np.concatenate([loaded["ally"], ty]).argmax(axis=1).astype(np.int64)  # (N,) a zero row -> 0
    x[test_index], y[test_index] = x[sorted_test], y[sorted_test]
    return {"x": x, "y": y, "edge_index": edge_index_from_lists(loaded["graph"], len(y)),
            **_split_masks(len(y), len(loaded["y"]), test_index)}
