"""Exercises of the CNN chapter."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from . import Wrong, exercise, forbid, is_int

EDGE = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])


@exercise(
    "cnn.classifier_receptive_field",
    "How many input pixels across does one unit after the second pooling layer of "
    "cnn.mnist_classifier() see?",
    "16 pixels: 1 + (5 - 1) + (2 - 1)*1 + (5 - 1)*2 + (2 - 1)*2. Every stride-2 pooling doubles what the "
    "later layers add; the 5x5 grid of such units, 4 pixels apart, covers the digit with overlapping windows.",
)
def _classifier_receptive_field(answer) -> None:
    if not is_int(answer):
        raise Wrong("answer with a whole number of pixels.")
    if answer == 9:
        raise Wrong("you counted the two 5x5 convolutions; the pooling layers have windows (and strides) too.")
    if answer in (11, 10):
        raise Wrong("after a stride-2 pooling, a step of one unit is two input pixels: what does that do to "
                    "what the second convolution adds?")
    if answer == 13:
        raise Wrong("close: each 2x2 pooling window also widens the field, by (2 - 1) times the jump so far.")
    if answer >= 28:
        raise Wrong(f"{int(answer)} would be the whole image or more; follow the formula layer by layer: "
                    f"conv 5x5, pool 2x2 stride 2, conv 5x5, pool 2x2 stride 2.")
    if answer != 16:
        raise Wrong(f"{int(answer)} is not it. List the layers in order with their kernel sizes and strides "
                    f"and apply r = 1 + sum of (k - 1) times the product of the earlier strides.")


FORBIDDEN_CONV = [(F, "conv2d"), (torch, "conv2d"), (torch.Tensor, "unfold"), (F, "unfold")]


def _forbid_conv():
    from .. import cnn

    return forbid("use loops and slicing, not a convolution function",
                  *FORBIDDEN_CONV, (cnn, "corr2d"), (cnn, "conv2d_loops"), (cnn, "conv2d_unfold"))


@exercise(
    "cnn.strided_conv",
    "Write conv2d_strided(x, k, stride, padding): the cross-correlation of one image x (H, W) with "
    "one kernel k (kh, kw), with `padding` zeros on every side and the window moving `stride` pixels "
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
    "basic = 2 * 9C^2 + 2 * 2C; bottleneck = CM + 9M^2 + MC + 2 * 2M + 2C. With C = 256 and M = 64 "
    "that is 1,180,672 against 70,400: the 1x1 convolutions make the 3x3 work on 4 times fewer channels.",
)
def _block_parameters(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function block_params(C, M) that returns (basic, bottleneck).")
    for C, M in itertools.product((1, 4, 32, 256), (1, 8, 64)):
        with forbid("derive the counts; build no layers", (nn.Conv2d, "__init__"), (nn.BatchNorm2d, "__init__")):
            got = answer(C, M)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Wrong(f"for C={C}, M={M} you return {got!r}; return a pair (basic, bottleneck).")
        basic, bottleneck = got
        right_basic = 18 * C * C + 4 * C
        right_bottleneck = 2 * C * M + 9 * M * M + 4 * M + 2 * C
        for name, value, right in (("basic", basic, right_basic), ("bottleneck", bottleneck, right_bottleneck)):
            if not is_int(value) or value != right:
                if is_int(value) and name == "basic" and value == 18 * C * C:
                    raise Wrong("the basic block's convolutions are right; the batch norms have parameters too.")
                if is_int(value) and name == "bottleneck" and value == 2 * C * M + 9 * M * M:
                    raise Wrong("the bottleneck's convolutions are right; count its batch norms too.")
                raise Wrong(f"for C={C}, M={M} your {name} count is {value!r}. Write down each layer of "
                            f"the block with its input and output channels and kernel size.")


@exercise(
    "cnn.edge_patch",
    "Give the 3x3 patch, pixel values in [0, 1], that makes the edge kernel "
    "[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]] respond as strongly as possible (a 3x3 tensor).",
    "A bright centre on a black surround: the response is 8, the largest possible. The kernel rewards "
    "the centre and punishes every neighbour alike, so it sees a dot best and has no preferred direction.",
)
def _edge_patch(answer) -> None:
    if not isinstance(answer, torch.Tensor):
        raise Wrong("answer with a 3x3 tensor of pixel values.")
    if tuple(answer.shape) != (3, 3):
        raise Wrong(f"the patch must have shape (3, 3); yours has {tuple(answer.shape)}.")
    patch = answer.detach().float()
    if not torch.isfinite(patch).all() or patch.min() < 0 or patch.max() > 1:
        raise Wrong("every pixel must lie in [0, 1] (black to white).")
    response = (patch * EDGE).sum().item()
    if response < 8 - 1e-6:
        raise Wrong(f"your patch gives a response of {response:g}. Which pixels does the kernel reward, "
                    f"which does it punish, and how much can each be worth?")
