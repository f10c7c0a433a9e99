"""Mini-batches from tensors held in memory, and fixed random subsets."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..fingerprint import describe
from .._checks import check_bool, check_callable, check_int
from ._checks import check_limit


def subset_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """``limit`` distinct indices out of ``range(n)``, sorted, the same for a seed.

    ``limit=None`` (or ``limit >= n``) keeps all ``n`` in their order.

    Shapes:
        (min(n, limit),) int64.
    """
    n = check_int(n, "n", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    limit = check_limit(limit)
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


class BatchLoader:
    """Mini-batches straight from in-memory tensors.

    A ``DataLoader`` over a ``TensorDataset`` indexes and collates one
    example at a time; for small images held in memory this costs as much as
    the model. This loader slices whole batches out of the tensors instead,
    with the same ``shuffle``/``drop_last`` meaning and the same use of the
    global torch random generator: the order is drawn with ``torch.randperm``
    when iteration starts, so seeding makes it reproducible.

    ``transform`` is applied to each batch of inputs (the first tensor), for
    augmentation.

    Shapes:
        each tensor (N, ...) -> batches (batch_size, ...), the last one
        smaller unless ``drop_last``.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int = 128, shuffle: bool = False,
                 drop_last: bool = False, transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if not tensors:
            raise ValueError("BatchLoader needs one or more tensors")
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise TypeError(f"BatchLoader takes tensors; got {[type(t).__name__ for t in tensors]}")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"all tensors must have the same first dimension; got {[len(t) for t in tensors]}")
        if transform is not None:
            check_callable(transform, "transform")
        self.tensors = tensors
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.shuffle, self.drop_last = check_bool(shuffle, "shuffle"), check_bool(drop_last, "drop_last")
        self.transform = transform
        self.dataset = TensorDataset(*tensors)

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.tensors[0])
        order = torch.randperm(n) if self.shuffle else None
        for b in range(len(self)):
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            batch = [t[order[rows]] if order is not None else t[rows] for t in self.tensors]
            if self.transform is not None:
                batch[0] = self.transform(batch[0])
            yield tuple(batch)

    def fingerprint(self) -> str:
        """What this loader yields, the same in every process: the tensors'
        content, batch size, shuffle, drop_last and the transform."""
        return (f"BatchLoader(tensors={describe(list(self.tensors))}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, transform={describe(self.transform)})")

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self.tensors)
        return (f"BatchLoader({shapes}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, {len(self)} batches)")
