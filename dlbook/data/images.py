"""MNIST and Fashion-MNIST: tensors, the train/val/test split, loaders, augmentation.

Every chapter uses the same split of the official 60,000 training images:
the first 55,000 train, the last 5,000 (indices 55,000-59,999) validate.
Models are chosen and monitored on ``"val"``; ``"test"`` (the official
10,000 test images) is evaluated once, at the end.

==============  ======================================================
split           images
==============  ======================================================
``train``       official training images 0-54,999
``val``         official training images 55,000-59,999
``test``        the official test set (10,000)
``train_full``  all 60,000 training images (``train`` + ``val``): only
                for refitting once every choice is made on ``val``;
                never monitor or choose on ``val`` while using it
==============  ======================================================
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .._checks import check_bool, check_callable, check_int
from ._checks import check_choice, check_limit
from .cache import fetch
from .loaders import BatchLoader, subset_indices
from .sources import IDX_FILES

IMAGE_DATASETS = ("mnist", "fashion_mnist")
SPLITS = ("train", "val", "test", "train_full")
VAL_SIZE = 5000  # the last VAL_SIZE official training images

#: Mean and standard deviation of the (60,000) training pixels, scaled to [0, 1].
NORMALIZATION = {
    "mnist": (0.1307, 0.3081),
    "fashion_mnist": (0.2860, 0.3530),
}

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
}


def _check_name(name: str) -> str:
    return check_choice(name, "the image data set", IMAGE_DATASETS)


def load_arrays(name: str) -> dict[str, np.ndarray]:
    """The raw uint8 arrays of MNIST or Fashion-MNIST, as published.

    Shapes:
        x_train (60000, 28, 28), y_train (60000,), x_test (10000, 28, 28),
        y_test (10000,); all uint8.
    """
    with np.load(fetch(_check_name(name))) as npz:
        return {key: npz[key] for key in IDX_FILES}


def split_rows(split: str) -> tuple[str, slice]:
    """Which official arrays (``"train"`` or ``"test"``) and rows a split takes."""
    split = check_choice(split, "split", SPLITS)
    if split == "test":
        return "test", slice(None)
    return "train", {"train": slice(None, -VAL_SIZE), "val": slice(-VAL_SIZE, None),
                     "train_full": slice(None)}[split]


def _images(arrays: dict[str, np.ndarray], name: str, split: str, limit: int | None,
            normalize: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    part, rows = split_rows(split)
    images, labels = arrays[f"x_{part}"][rows], arrays[f"y_{part}"][rows]
    keep = subset_indices(len(labels), limit, seed)
    x = torch.from_numpy(images[keep]).float().div_(255).unsqueeze(1)  # (N, 1, H, W)
    if normalize:
        mean, std = NORMALIZATION[name]
        x = x.sub_(mean).div_(std)
    y = torch.from_numpy(labels[keep].astype(np.int64))  # (N,)
    return x, y


def load_images(name: str, split: str = "train", limit: int | None = None,
                normalize: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST or Fashion-MNIST as tensors.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"train_full"`` (see the
            module's table).
        limit: keep a fixed random subset of this many examples of the split
            (smoke runs), in their original order.
        normalize: subtract the training mean and divide by its standard
            deviation (:data:`NORMALIZATION`); otherwise scale to [0, 1].
        seed: which subset ``limit`` takes.

    Shapes:
        x: (N, 1, 28, 28) float32; y: (N,) int64. N is 55,000 (train),
        5,000 (val), 10,000 (test), 60,000 (train_full), or ``limit``.
    """
    split_rows(split)  # every argument checked before anything is loaded
    check_limit(limit)
    check_int(seed, "seed", minimum=0)
    check_bool(normalize, "normalize")
    return _images(load_arrays(name), name, split, limit, normalize, seed)


def image_dataset(name: str, split: str = "train", limit: int | None = None,
                  normalize: bool = True, seed: int = 0) -> TensorDataset:
    """:func:`load_images` wrapped as a ``TensorDataset`` of ``(x, y)`` pairs.

    Shapes:
        each item: x (1, 28, 28) float32, y () int64.
    """
    return TensorDataset(*load_images(name, split, limit, normalize, seed))


def denormalize(x: torch.Tensor, name: str) -> torch.Tensor:
    """Undo the normalisation of :func:`load_images`, back to [0, 1].

    Shapes:
        x: any -> the same.
    """
    mean, std = NORMALIZATION[_check_name(name)]
    return x * std + mean


def random_shift(x: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in each direction.

    Each image moves by its own ``dy`` and ``dx``, each drawn uniformly from
    ``-max_shift..max_shift``. The border is filled with the image's
    background value (its minimum). The shifts come from the global torch
    generator.

    ``max_shift`` is at most ``min(H, W) - 1``: a shift of ``H`` rows (or
    ``W`` columns) moves the whole image out of the frame and leaves only
    background, so a larger bound is a mistake (pixels for a fraction, or
    another image size), not an augmentation.

    Shapes:
        x: (B, C, H, W) -> (B, C, H, W)
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"random_shift expects (B, C, H, W) images; got shape {tuple(getattr(x, 'shape', ()))}")
    s = check_int(max_shift, "max_shift", minimum=0)
    B, C, H, W = x.shape
    if s and s >= min(H, W):
        raise ValueError(f"max_shift must be at most {min(H, W) - 1} for {H}x{W} images (the side minus 1: "
                         f"a shift of {min(H, W)} moves the whole image out of the frame); got {s}")
    if s == 0:
        return x
    fill = x.amin(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1): each image's background
    padded = torch.nn.functional.pad(x - fill, (s, s, s, s)) + fill  # (B, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * s + 1, (B,))
    dx = torch.randint(0, 2 * s + 1, (B,))
    rows = (dy[:, None] + torch.arange(H)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(W)[None, :])  # (B, W)
    b = torch.arange(B)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


class ImageLoaders(NamedTuple):
    """The three loaders of an image chapter."""

    train: BatchLoader
    val: BatchLoader
    test: BatchLoader


def image_loaders(name: str, batch_size: int = 128, limit_train: int | None = None,
                  limit_val: int | None = None, limit_test: int | None = None,
                  augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  eval_batch_size: int = 1000, seed: int = 0) -> ImageLoaders:
    """Train, validation and test loaders for MNIST or Fashion-MNIST.

    The training loader (split ``"train"``) shuffles with the global torch
    generator and applies ``augment`` to each batch; the validation and test
    loaders do neither and use ``eval_batch_size``. Each ``limit_*`` keeps a
    fixed random subset of that split (see :func:`load_images`).

    Shapes:
        batches x (B, 1, 28, 28) float32, y (B,) int64.
    """
    for limit, arg in ((limit_train, "limit_train"), (limit_val, "limit_val"), (limit_test, "limit_test")):
        check_limit(limit, arg)
    check_int(seed, "seed", minimum=0)
    if augment is not None:
        check_callable(augment, "augment")
    check_int(batch_size, "batch_size", minimum=1)
    check_int(eval_batch_size, "eval_batch_size", minimum=1)
    arrays = load_arrays(name)
    x, y = _images(arrays, name, "train", limit_train, normalize=True, seed=seed)
    xv, yv = _images(arrays, name, "val", limit_val, normalize=True, seed=seed)
    xt, yt = _images(arrays, name, "test", limit_test, normalize=True, seed=seed)
    return ImageLoaders(
        train=BatchLoader(x, y, batch_size=batch_size, shuffle=True, transform=augment),
        val=BatchLoader(xv, yv, batch_size=eval_batch_size),
        test=BatchLoader(xt, yt, batch_size=eval_batch_size),
    )
