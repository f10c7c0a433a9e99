"""Exercises of the CNN chapter."""

from __future__ import annotations

import contextlib
import random
import types

import torch
import torch.nn.functional as F
from torch import nn

from . import LAYER_OPS, Wrong, exercise, forbid, forbid_functions, forbid_ops, is_int, module_functions

@exercise(
    "cnn.classifier_receptive_rows",
    "Which rows of the 28x28 input does the top-left unit after the second pooling layer of "
    "cnn.mnist_classifier() see? Answer (first, last), counting rows from 0 at the top of the "
    "image; rows of the zero padding above it have negative numbers.",
    "Rows -2 to 13: 16 rows, two of them padding. Going backwards: pooling unit 0 reads rows 0-1 of the "
    "second convolution's output, which read rows 0-5 of the first pooling's output, which read rows "
    "0-11 of the first convolution's output, which read rows -2 to 13 of the input (padding 2).",
)
def _classifier_receptive_rows(answer) -> None:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2 or not all(is_int(v) for v in answer):
        raise Wrong("answer with a pair of whole numbers (first row, last row).")
    first, last = (int(v) for v in answer)
    if (first, last) == (-2, 13):
        return
    if last - first + 1 == 16:
        raise Wrong(f"rows {first} to {last} are the right number of rows, but not the right ones: where "
                    f"does the first convolution's padding put its first window?")
    if (first, last) in ((0, 15), (0, 13)):
        raise Wrong("the first convolution pads the image with 2 rows of zeros: its first window starts "
                    "above the image.")
    if last - first + 1 in (9, 10, 11, 13):
        raise Wrong("count the pooling windows too, and remember that after a stride-2 pooling one step "
                    "is two rows of what came before.")
    raise Wrong(f"rows {first} to {last} is not it. Go backwards one layer at a time: which rows of its "
                f"input does each layer's row 0 (or rows 0 to r) read?")


CONVOLUTION_OPS = ("conv", "im2col", "col2im", "unfold", "as_strided", "fft", "correlat")


def _numpy_scipy_convolutions() -> list[tuple]:
    """numpy's and scipy's convolutions, windowing and FFTs, as (module, name)."""
    import numpy as np

    targets = [(np.lib.stride_tricks, "sliding_window_view"), (np.lib.stride_tricks, "as_strided"),
               (np, "convolve"), (np, "correlate")]
    targets += [(np.fft, name) for name in np.fft.__all__ if callable(getattr(np.fft, name))]
    try:  # imported here, so that an answer importing them finds them refused too
        import scipy.fft
        import scipy.ndimage
        import scipy.signal
    except ImportError:
        return targets
    targets += [(scipy.signal, name) for name in ("correlate", "convolve", "correlate2d", "convolve2d",
                                                  "fftconvolve", "oaconvolve")]
    targets += [(scipy.ndimage, name) for name in ("correlate", "convolve", "correlate1d", "convolve1d")]
    # scipy.fft's functions are uarray multimethods (refused by name); the work is done by the
    # Python functions of its backend modules (found as scipy's own backend finds them), refused
    # whatever name reached them
    targets += [(scipy.fft, name) for name in scipy.fft.__all__ if callable(getattr(scipy.fft, name))]
    backend = getattr(scipy.fft, "_backend", None)
    for module in (getattr(backend, attr, None) for attr in ("_basic_backend", "_realtransforms_backend",
                                                              "_fftlog_backend")):
        targets += [(module, name) for name in scipy.fft.__all__
                    if isinstance(getattr(module, name, None), types.FunctionType)]
    return targets


def _forbid_conv():
    """Everything that computes a convolution or cuts out windows for one: at
    the level of torch's operators, and numpy's, scipy's and dlbook's
    functions however the answer named them."""
    from .. import cnn

    rule = "use loops and slicing, not a convolution or windowing function"
    stack = contextlib.ExitStack()
    stack.enter_context(forbid_functions(rule, *_numpy_scipy_convolutions(), *module_functions(cnn)))
    stack.enter_context(forbid_ops(rule, *CONVOLUTION_OPS))
    return stack


@exercise(
    "cnn.strided_conv",
    "Write conv2d_strided(x, w, stride, padding): the cross-correlation of one image x (H, W) with "
    "one kernel w (kh, kw), with `padding` zeros on every side and the window moving `stride` pixels "
    "at a time. Use loops and slicing: no conv2d, no unfold, nothing from dlbook.cnn.",
    "Pad first, then output pixel (i, j) reads the window whose top-left corner is (i*S, j*S) of the "
    "padded image; a window that would hang over the edge is never started.",
)
def _strided_conv(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function conv2d_strided(x, k, stride, padding).")
    gen = torch.Generator().manual_seed(0)
    cases = [(5, 5, 3, 3, 1, 0), (6, 7, 3, 3, 2, 0), (5, 5, 3, 3, 1, 1), (8, 8, 3, 2, 2, 1), (7, 9, 2, 4, 3, 2),
             (4, 4, 1, 1, 2, 0)]
    for H, W, kh, kw, S, P in cases:
        x = torch.randn(H, W, generator=gen)
        k = torch.randn(kh, kw, generator=gen)
        expected = F.conv2d(x[None, None], k[None, None], stride=S, padding=P)[0, 0]
        with _forbid_conv():
            got = answer(x, k, S, P)
        where = f"for a {H}x{W} image, a {kh}x{kw} kernel, stride {S} and padding {P}"
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor.")
        if tuple(got.shape) != tuple(expected.shape):
            raise Wrong(f"{where} the output should be {tuple(expected.shape)}; yours is {tuple(got.shape)}. "
                        f"How many window positions fit on the padded image, moving {S} at a time?")
        if not torch.allclose(got.float(), expected, atol=1e-4):
            raise Wrong(f"{where} the shape is right but the values are not. Are the zeros added on both "
                        f"sides, and does output (i, j) start at row i*S, column j*S of the padded image?")


@exercise(
    "cnn.block_parameters",
    "Write block_params(C, M): a pair (basic, bottleneck) with the parameter counts of cnn.Residual(C, C) "
    "and cnn.Bottleneck(C, M, C). Derive them: build no layers. The convolutions have no bias; each is "
    "followed by batch norm, with 2 parameters per channel.",
    "basic = 2 * 9C^2 + 2 * 2C; bottleneck = CM + 9M^2 + MC + 2 * 2M + 2C. A basic block on 64 channels "
    "has 73,984 parameters, a bottleneck from 256 through 64 channels 70,400: about the same cost, and it "
    "carries 4 times as many channels, because its 3x3 convolution works on the reduced 64.",
)
def _block_parameters(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function block_params(C, M) that returns (basic, bottleneck).")
    draw = random.Random()  # fresh sizes on every check: a table of counts cannot pass
    pairs = [(1, 1), (256, 64)] + [(draw.randint(2, 300), draw.randint(2, 100)) for _ in range(10)]
    rule = "derive the counts; build no layers"
    for C, M in pairs:
        # by name, to name the layer in the hint; and at the level of the operators that make
        # parameters, which also catches an __init__ saved before the check, other layer classes
        # (nn.Conv1d, nn.BatchNorm1d, nn.Linear) and a deep copy of a layer built earlier
        with forbid(rule, (nn.Conv2d, "__init__"), (nn.BatchNorm2d, "__init__")), forbid_ops(rule, *LAYER_OPS):
            got = answer(C, M)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Wrong(f"for C={C}, M={M} you return {got!r}; return a pair (basic, bottleneck).")
        basic, bottleneck = got
        right_basic = 18 * C * C + 4 * C
        right_bottleneck = 2 * C * M + 9 * M * M + 4 * M + 2 * C
        for name, value, right in (("basic", basic, right_basic), ("bottleneck", bottleneck, right_bottleneck)):
            if not is_int(value) and isinstance(value, float) and value == right:
                raise Wrong(f"for C={C}, M={M} your {name} count {value!r} has the right value but is a "
                            f"float; a count is a whole number (an int).")
            if not is_int(value) or value != right:
                if is_int(value) and name == "basic" and value == 18 * C * C:
                    raise Wrong("the basic block's convolutions are right; the batch norms have parameters too.")
                if is_int(value) and name == "bottleneck" and value == 2 * C * M + 9 * M * M:
                    raise Wrong("the bottleneck's convolutions are right; count its batch norms too.")
                raise Wrong(f"for C={C}, M={M} your {name} count is {value!r}. Write down each layer of "
                            f"the block with its input and output channels and kernel size.")


def _edge_images() -> tuple[torch.Tensor, torch.Tensor]:
    """A horizontal and a vertical step edge, 9x9: dark above (left), bright below (right)."""
    horizontal = torch.zeros(9, 9)
    horizontal[5:] = 1.0
    return horizontal, horizontal.T.contiguous()


@exercise(
    "cnn.horizontal_edges",
    "Give a 3x3 kernel (a tensor) whose weights sum to zero, so that a flat patch gives 0, and that "
    "responds to a horizontal edge (dark rows above bright rows) but not to a vertical one.",
    "A kernel that subtracts the row above from the row below, such as [[-1,-2,-1],[0,0,0],[1,2,1]] (the "
    "Sobel kernel) or [[-1,-1,-1],[0,0,0],[1,1,1]]: each column of weights sums to zero, so a vertical "
    "edge, constant down every column, gives nothing.",
)
def _horizontal_edges(answer) -> None:
    if not isinstance(answer, torch.Tensor):
        raise Wrong("answer with a 3x3 tensor of weights.")
    if tuple(answer.shape) != (3, 3):
        raise Wrong(f"the kernel must have shape (3, 3); yours has {tuple(answer.shape)}.")
    w = answer.detach().double()
    if not torch.isfinite(w).all():
        raise Wrong("the weights must be finite numbers.")
    if abs(w.sum().item()) > 1e-6 * max(1.0, w.abs().sum().item()):
        raise Wrong(f"the weights sum to {w.sum().item():g}: a flat patch would give that, not 0.")
    horizontal, vertical = (e.double()[None, None] for e in _edge_images())
    on_horizontal = F.conv2d(horizontal, w[None, None])
    strong = on_horizontal.abs().max().item()
    weak = F.conv2d(vertical, w[None, None]).abs().max().item()
    if strong < 1e-6:
        raise Wrong("your kernel gives nothing on a horizontal edge. What should the rows above and below "
                    "the centre do?")
    if on_horizontal.max().item() < 0.5 * strong:
        raise Wrong("your kernel answers a dark-above-bright edge with a negative number: it detects the "
                    "opposite edge. Which row should get the positive weights?")
    if weak > 0.05 * strong:
        raise Wrong(f"on a vertical edge your kernel gives {weak:.3g}, against {strong:.3g} on a horizontal "
                    f"one. Along a vertical edge every column is constant: what must each column of "
                    f"weights add up to?")
