"""Exercises of the CNN chapter."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from . import Wrong, exercise, is_int


@exercise(
    "cnn.output_size",
    "Write output_size(W, F, P, S): the output length of a convolution with input "
    "length W, kernel F, padding P and stride S, as PyTorch computes it.",
    "N = floor((W - F + 2P) / S) + 1: when the last window would hang over the edge, "
    "PyTorch drops it, so the division is floored.",
)
def _output_size(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function output_size(W, F, P, S) that returns an int.")
    not_int = None  # a right number of the wrong type: said only when every value is right
    for W, Fk, P, S in itertools.product((5, 7, 28, 32), (1, 2, 3, 5), (0, 1, 2), (1, 2, 3)):
        expected = (W - Fk + 2 * P) // S + 1
        got = answer(W, Fk, P, S)
        if got != expected:
            if (W - Fk + 2 * P) % S == 0:
                raise Wrong(f"for W={W}, F={Fk}, P={P}, S={S} you return {got!r}. Count how many "
                            f"positions a window of width F can take on the padded input when it moves S at a time.")
            raise Wrong(f"for W={W}, F={Fk}, P={P}, S={S} you return {got!r}. Here (W - F + 2P) is not a "
                        f"multiple of S: what happens to a window that would hang over the edge?")
        if not_int is None and not is_int(got):
            not_int = f"for W={W}, F={Fk}, P={P}, S={S} you return {got!r}"
    if not_int:
        raise Wrong(f"{not_int}: the right number, but not an int. A length counts window positions.")


@exercise(
    "cnn.param_count",
    "Write conv_params(c_in, c_out, k): the number of parameters of "
    "nn.Conv2d(c_in, c_out, k) (square kernel, with bias).",
    "Each of the c_out kernels has c_in * k * k weights and one bias: c_out * (c_in * k * k + 1). "
    "It does not depend on the image size: that is weight sharing.",
)
def _param_count(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function conv_params(c_in, c_out, k) that returns an int.")
    cases = list(itertools.product((1, 3, 16), (1, 8, 64), (1, 3, 5)))
    answers = {case: answer(*case) for case in cases}
    if all(answers[(c_in, c_out, k)] == c_out * c_in * k * k for c_in, c_out, k in cases):
        raise Wrong("close: you counted the weights; every output channel has a bias too.")
    for (c_in, c_out, k), got in answers.items():
        if got != c_out * (c_in * k * k + 1):
            raise Wrong(f"for c_in={c_in}, c_out={c_out}, k={k} you return {got!r}. How many weights does one "
                        f"output channel's kernel have when it spans all input channels?")
    not_int = [(case, got) for case, got in answers.items() if not is_int(got)]
    if not_int:
        (c_in, c_out, k), got = not_int[0]
        raise Wrong(f"for c_in={c_in}, c_out={c_out}, k={k} you return {got!r}: the right number, but not "
                    f"an int. A count of parameters is a whole number.")


@exercise(
    "cnn.conv1x1",
    "Write conv1x1(x, weight): a 1x1 convolution without bias, using only a matrix "
    "product (no conv2d). x is (B, C_in, H, W) and weight is (C_out, C_in).",
    "A 1x1 convolution applies the same C_out x C_in matrix to the channel vector of every "
    "pixel: a fully connected layer over channels, shared across positions.",
)
def _conv1x1(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function conv1x1(x, weight).")
    gen = torch.Generator().manual_seed(0)
    for B, C_in, C_out, H, W in ((2, 3, 4, 5, 6), (1, 8, 2, 3, 3), (3, 1, 5, 4, 2)):
        x = torch.randn(B, C_in, H, W, generator=gen)
        weight = torch.randn(C_out, C_in, generator=gen)
        expected = F.conv2d(x, weight.view(C_out, C_in, 1, 1))
        got = answer(x, weight)
        if not isinstance(got, torch.Tensor):
            raise Wrong("return a tensor.")
        if got.shape != expected.shape:
            raise Wrong(f"for x of shape {tuple(x.shape)} and weight {tuple(weight.shape)} the result should "
                        f"have shape {tuple(expected.shape)}; yours has {tuple(got.shape)}.")
        if not torch.allclose(got, expected, atol=1e-5):
            raise Wrong("the shape is right but the values are not: which axis of x does the weight matrix "
                        "contract with?")


@exercise(
    "cnn.receptive_field",
    "Give the receptive field (in pixels, along one axis) of one output pixel after "
    "three stacked 3x3 convolutions with stride 1.",
    "Each 3x3 layer adds 2 pixels: 1 + 3 * 2 = 7. Three 3x3 layers see as far as one 7x7 layer "
    "with 27 instead of 49 weights per channel pair, which is VGG's argument for small kernels.",
)
def _receptive_field(answer) -> None:
    if not is_int(answer):
        raise Wrong("answer with a whole number of pixels.")
    if answer != 7:
        raise Wrong("one 3x3 layer sees 3 pixels; how many more does each further 3x3 layer add?")
