"""Figures with one look across the book: image grids, learning curves,
confusion matrices.

Every function returns the matplotlib ``Figure`` it drew, with a title and
labelled axes, so a notebook can show it or save it.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

FIGSIZE = (6.4, 4.0)  # one column of the book's page, in inches
CMAP = "gray"


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def image_grid(images, labels: Sequence[str] | None = None, ncols: int = 8,
               title: str | None = None, cmap: str = CMAP, scale: float = 1.2,
               normalize: bool = True):
    """Show a batch of images in a grid.

    Args:
        images: (B, H, W), (B, 1, H, W) or (B, 3, H, W) tensor or array.
        labels: one caption per image (optional).
        ncols: images per row.
        title: the figure's title.
        normalize: stretch each image to its own min..max for display.

    Shapes:
        images: (B, H, W) or (B, C, H, W) with C in {1, 3}
    """
    x = _as_numpy(images)
    if x.ndim == 4:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"image_grid expects 1 or 3 channels; got shape {x.shape}")
        x = x.transpose(0, 2, 3, 1)  # (B, H, W, C)
        if x.shape[-1] == 1:
            x = x[..., 0]  # (B, H, W)
    elif x.ndim != 3:
        raise ValueError(f"image_grid expects (B, H, W) or (B, C, H, W); got shape {x.shape}")
    n = len(x)
    if n == 0:
        raise ValueError("image_grid got no images")
    if labels is not None and len(labels) != n:
        raise ValueError(f"image_grid got {n} images but {len(labels)} labels")
    ncols = max(1, min(ncols, n))
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
        if normalize:
            lo, hi = img.min(), img.max()
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0 if normalize else None,
                  vmax=1 if normalize else None)
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def learning_curves(histories: dict, keys: Sequence[str] = ("train_loss", "val_loss"),
                    x: str = "epoch", title: str = "Learning curves", ylabel: str | None = None,
                    logy: bool = False, names: dict[str, str] | None = None):
    """Plot metrics of one or more :class:`dlbook.train.History` objects.

    Args:
        histories: ``{"run name": history}``.
        keys: record keys to plot, one line each per run.
        x: the record key for the x axis (``"epoch"`` or ``"seconds"``).
        names: legend names for the keys, e.g. ``{"val_loss": "test loss"}``
            when the validation set is the test set.
    """
    names = names or {}
    if not histories:
        raise ValueError("learning_curves needs at least one history")
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for name, history in histories.items():
        for key in keys:
            rows = [r for r in history if key in r]
            if not rows:
                continue
            style = "--" if key.startswith("train") else "-"
            ax.plot([r[x] for r in rows], [r[key] for r in rows], style, marker=".", label=f"{name}: {names.get(key, key)}")
    ax.set_xlabel({"epoch": "epoch", "seconds": "training time (s)"}.get(x, x))
    ax.set_ylabel(ylabel or ", ".join(keys))
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of examples of true class ``i`` predicted as ``j``.

    Shapes:
        y_true, y_pred: (N,) integer labels -> (K, K)
    """
    t, p = _as_numpy(y_true).astype(np.int64), _as_numpy(y_pred).astype(np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D and the same length; got {t.shape} and {p.shape}")
    k = num_classes if num_classes is not None else int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= k or p.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}); got y_true in [{t.min()}, {t.max()}], "
                         f"y_pred in [{p.min()}, {p.max()}]")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def plot_confusion_matrix(y_true, y_pred, class_names: Sequence[str], title: str = "Confusion matrix"):
    """Draw the confusion matrix with counts in the cells (log colour scale)."""
    from matplotlib.colors import LogNorm

    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.2, 0.55 * k + 1.6))
    ax.imshow(cm + 1, cmap="Blues", norm=LogNorm(vmin=1, vmax=cm.max() + 1))
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 3 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def conv_geometry(size: int, kernel: int, padding: int = 0, stride: int = 1, fig=None):
    """Draw where a kernel slides over a padded input, and the output it makes.

    Left: the input (white) inside its zero padding (grey), the first window
    (red), the last window that fits (blue) and, when
    $(W - F + 2P)$ is not a multiple of $S$, the next window, which would
    hang over the edge and is dropped (dashed orange). Right: the output grid.
    """
    from matplotlib.patches import Rectangle

    from .cnn import conv_output_size

    n = conv_output_size(size, kernel, padding, stride)  # validates the arguments
    full = size + 2 * padding
    fig = fig or plt.figure(figsize=(8.0, 4.0))
    fig.clear()
    ax_in, ax_out = fig.subplots(1, 2, gridspec_kw={"width_ratios": [full, max(n, 1)]})
    for ax, m in ((ax_in, full), (ax_out, n)):
        ax.set_xlim(-0.5, m + 0.5)
        ax.set_ylim(m + 0.5, -0.5)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for i in range(full):
        for j in range(full):
            inside = padding <= i < padding + size and padding <= j < padding + size
            ax_in.add_patch(Rectangle((j, i), 1, 1, facecolor="white" if inside else "0.85",
                                      edgecolor="0.6", linewidth=0.5))
    last = (n - 1) * stride
    ax_in.add_patch(Rectangle((0, 0), kernel, kernel, fill=False, edgecolor="tab:red", linewidth=2.5))
    ax_in.add_patch(Rectangle((last, last), kernel, kernel, fill=False, edgecolor="tab:blue", linewidth=2.5))
    remainder = (size - kernel + 2 * padding) % stride
    if remainder:
        nxt = last + stride
        ax_in.add_patch(Rectangle((nxt, nxt), kernel, kernel, fill=False, edgecolor="tab:orange",
                                  linewidth=2, linestyle="--", clip_on=False))
    for i in range(n):
        for j in range(n):
            color = "tab:red" if (i, j) == (0, 0) else "tab:blue" if (i, j) == (n - 1, n - 1) else "white"
            ax_out.add_patch(Rectangle((j, i), 1, 1, facecolor=color, edgecolor="0.4", linewidth=0.8,
                                       alpha=0.6 if color != "white" else 1))
    ratio = (size - kernel + 2 * padding) / stride
    ax_in.set_title(f"input W={size}, padding P={padding}\nkernel F={kernel}, stride S={stride}", fontsize=10)
    ax_out.set_title(f"output {n}x{n}", fontsize=10)
    formula = f"N = floor(({size} - {kernel} + 2*{padding}) / {stride}) + 1 = floor({ratio:g}) + 1 = {n}"
    note = ("" if not remainder else
            f"\n(W - F + 2P)/S = {ratio:g} is not whole: the dashed window would hang "
            f"{stride - remainder} pixel(s) over the edge, so it is dropped")
    fig.suptitle(formula + note, fontsize=9)
    fig.tight_layout()
    return fig
