"""Figures with one look across the book: image grids, learning curves,
confusion matrices, and a two-dimensional projection for scatter plots
(:func:`pca_2d`).

Every function returns the matplotlib ``Figure`` it drew, with a title and
labelled axes, so a notebook can show it or save it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ._checks import check_bool, check_float, check_int, describe

FIGSIZE = (6.4, 4.0)  # one column of the book's page, in inches
CMAP = "gray"
SIGNED_CMAP = "RdBu_r"  # negative blue, zero white, positive red
# Fonts large enough to read when the page shrinks a figure to a phone's width.
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
         "ytick.labelsize": 10, "legend.fontsize": 10, "figure.titlesize": 12}
plt.rcParams.update(STYLE)


def _as_numpy(x, name: str) -> np.ndarray:
    """A real-valued array from a tensor, an array or a (nested) list of numbers."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        array = (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy()
    else:
        try:
            array = np.asarray(x)
        except (ValueError, TypeError) as err:  # ragged lists
            raise ValueError(f"{name} must be a tensor or an array of numbers; got {describe(x)}") from err
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a tensor or an array of real numbers; got dtype {array.dtype}")
    return array


def _check_text(value, name: str) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None; got {describe(value)}")


def image_grid(images, labels: Sequence[str] | None = None, ncols: int = 8,
               title: str | None = None, cmap: str | None = None, scale: float = 1.2,
               normalize: bool = True, signed: bool = False):
    """Show a batch of images in a grid.

    Args:
        images: (B, H, W), (B, 1, H, W) or (B, 3, H, W) tensor or array of
            finite numbers.
        labels: one caption per image (optional).
        ncols: images per row (at most; fewer when there are fewer images).
        title: the figure's title.
        scale: the size of one image, in inches.
        normalize: stretch each image to its own min..max for display.
        signed: for weights, where the sign matters: each image is divided
            by its largest absolute value and drawn with a diverging colour
            map (blue negative, white zero, red positive) and a colour bar.

    Shapes:
        images: (B, H, W) or (B, C, H, W) with C in {1, 3}
    """
    x = _as_numpy(images, "images").astype(np.float64)
    normalize = check_bool(normalize, "normalize")
    signed = check_bool(signed, "signed")
    _check_text(title, "title")
    _check_text(cmap, "cmap")
    cmap = cmap or (SIGNED_CMAP if signed else CMAP)
    if x.ndim == 4:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"image_grid expects 1 or 3 channels; got shape {x.shape}")
        x = x.transpose(0, 2, 3, 1)  # (B, H, W, C)
        if x.shape[-1] == 1:
            x = x[..., 0]  # (B, H, W)
    elif x.ndim != 3:
        raise ValueError(f"image_grid expects images of shape (B, H, W) or (B, C, H, W); got shape {x.shape}")
    n = len(x)
    if n == 0:
        raise ValueError("image_grid got no images")
    if 0 in x.shape[1:3]:
        raise ValueError(f"image_grid got images of size 0; shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).reshape(n, -1).all(1))[0])
        raise ValueError(f"image_grid got NaN or infinite values (first in image {bad})")
    if labels is not None:
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
            raise ValueError(f"labels must be a list of captions, one per image; got {describe(labels)}")
        if len(labels) != n:
            raise ValueError(f"image_grid got {n} images but {len(labels)} labels")
    ncols = min(check_int(ncols, "ncols", 1), n)
    scale = check_float(scale, "scale", 0.1, 10.0)
    nrows = -(-n // ncols)
    height = nrows * (scale + (0.3 if labels is not None else 0)) + (0.5 if title else 0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, height), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        img = x[i]
        if signed:
            peak = np.abs(img).max()
            img = img / peak if peak > 0 else img
            shown = ax.imshow(img, cmap=cmap, vmin=-1, vmax=1)
        else:
            if normalize:
                lo, hi = img.min(), img.max()
                img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0 if normalize else None,
                      vmax=1 if normalize else None)
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if signed:
        bar = fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, ticks=[-1, 0, 1])
        bar.set_label("weight / the image's largest |weight|", fontsize=9)
    return fig


_SPLITS = {"train": "training", "val": "validation", "test": "test"}
_METRICS = {"loss": "loss", "acc": "accuracy"}


def key_label(key: str) -> str:
    """Words for a History key: ``val_acc`` -> "validation accuracy"."""
    split, _, metric = key.partition("_")
    if not metric:
        return key
    return f"{_SPLITS.get(split, split)} {_METRICS.get(metric, metric.replace('_', ' '))}"


def learning_curves(histories: Mapping, keys: Sequence[str] | str = ("train_loss", "val_loss"),
                    x: str = "epoch", title: str = "Learning curves", ylabel: str | None = None,
                    logy: bool = False):
    """Plot metrics of one or more :class:`dlbook.train.History` objects.

    Args:
        histories: ``{"run name": history}``; a history is a list of record
            dicts (a :class:`dlbook.train.History` is one).
        keys: record keys to plot, one line each per run (one key may be a string).
        x: the record key for the x axis (``"epoch"``, ``"step"`` or ``"seconds"``).

    The legend says what each key is: ``train_loss`` is "training loss",
    ``val_acc`` "validation accuracy", ``test_acc`` "test accuracy".

    Raises:
        ValueError: when no history has any of ``keys``, or a record with
            one of them lacks ``x``.
    """
    if not isinstance(histories, Mapping):
        raise TypeError(f"histories must be a dict of run name -> history; got {type(histories).__name__}")
    if not histories:
        raise ValueError("learning_curves needs at least one history")
    keys = (keys,) if isinstance(keys, str) else keys
    if not isinstance(keys, Sequence) or not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"keys must be a record key or a non-empty list of them; got {describe(keys)}")
    for name, value in (("x", x), ("title", title), ("ylabel", ylabel)):
        _check_text(value, name)
    if x is None:
        raise TypeError("x must be a record key such as 'epoch'; got None")
    logy = check_bool(logy, "logy")
    lines = []  # (x values, y values, style, legend label)
    for name, history in histories.items():
        try:
            records = list(history)
        except TypeError:
            records = [None]
        if not all(isinstance(r, Mapping) for r in records):
            raise TypeError(f"history {name!r} must be a list of record dicts; got {describe(history)}")
        for key in keys:
            rows = [r for r in records if key in r]
            if any(x not in r for r in rows):
                raise ValueError(f"history {name!r}: a record with {key!r} has no {x!r} for the x axis")
            if rows:
                style = "--" if key.startswith("train") else "-"
                lines.append(([r[x] for r in rows], [r[key] for r in rows], style, f"{name}: {key_label(key)}"))
    if not lines:
        raise ValueError(f"no history has any of the keys {list(keys)}")
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for xs, ys, style, label in lines:
        ax.plot(xs, ys, style, marker=".", label=label)
    ax.set_xlabel({"epoch": "epoch", "step": "step", "seconds": "training time (s)"}.get(x, x))
    ax.set_ylabel(ylabel or ", ".join(key_label(k) for k in keys))
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _labels(y, name: str) -> np.ndarray:
    """Integer class labels; floats only when every value is a whole number."""
    a = _as_numpy(y, name)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name} must hold integer class labels; got non-integer values")
    elif a.dtype.kind == "b":
        raise ValueError(f"{name} must hold integer class labels; got booleans")
    return a.astype(np.int64)


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of examples of true class ``i`` predicted as ``j``.

    Shapes:
        y_true, y_pred: (N,) integer labels -> (K, K)
    """
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and the same length; got {t.shape} and {p.shape}")
    if num_classes is None:
        k = int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    else:
        k = check_int(num_classes, "num_classes", 1)
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= k or p.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}); got y_true in [{t.min()}, {t.max()}], "
                         f"y_pred in [{p.min()}, {p.max()}]")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def plot_confusion_matrix(y_true, y_pred, class_names: Sequence[str], title: str = "Confusion matrix"):
    """Draw the confusion matrix with counts in the cells (log colour scale)."""
    from matplotlib.colors import LogNorm

    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence) or not class_names:
        raise ValueError(f"class_names must be a non-empty list of names; got {describe(class_names)}")
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    fig, ax = plt.subplots(figsize=(0.6 * k + 3.0, 0.6 * k + 1.8))
    shown = ax.imshow(cm + 1, cmap="Blues", norm=LogNorm(vmin=1, vmax=cm.max() + 1))
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 3 else "black")
    bar = fig.colorbar(shown, ax=ax, shrink=0.85)
    bar.set_label("count + 1 (log scale)")
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(k), [str(c) for c in class_names], fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def pca_2d(h: torch.Tensor) -> torch.Tensor:
    """The rows of ``h`` projected on their two directions of largest
    variance (PCA, after subtracting the mean row), for a scatter plot.

    Computed with PyTorch's randomised ``torch.pca_lowrank`` on a generator
    of its own (seed 0), so that the figure is the same on every run and
    the global random state is left alone. Each direction is signed so that
    its largest entry is positive (PCA fixes a direction only up to sign).

    Shapes:
        h: (N, C) -> (N, 2)
    """
    if not isinstance(h, torch.Tensor):
        raise TypeError(f"h must be a torch.Tensor of shape (N, C); got {describe(h)}")
    if h.dim() != 2 or h.shape[0] < 3 or h.shape[1] < 2 or not h.is_floating_point() or h.is_sparse:
        raise ValueError(f"h must be a dense floating tensor of shape (N, C) with N >= 3 and C >= 2; got "
                         f"{h.dtype} of shape {tuple(h.shape)}{' (sparse)' if h.is_sparse else ''}")
    h = h.detach() - h.detach().mean(0)  # (N, C)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        _, _, V = torch.pca_lowrank(h, q=min(6, *h.shape), center=False, niter=4)  # (C, q)
    V = V[:, :2]
    V = V * torch.sign(V.gather(0, V.abs().argmax(0, keepdim=True)))  # largest entry positive
    return h @ V  # (N, 2)
