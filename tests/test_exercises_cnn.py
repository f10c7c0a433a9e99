"""The CNN chapter's exercises: right answers pass, typical wrong ones get a
hint that never gives the solution away, and the rules are enforced."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dlbook import exercises
from exercise_helpers import assert_fails_with_hint, assert_passes, check, wrong_cases

# The right answers, as a reader would write them ---------------------------------

def _strided(x, k, stride, padding):
    x = F.pad(x, (padding, padding, padding, padding))  # (H + 2P, W + 2P)
    kh, kw = k.shape
    H_out = (x.shape[0] - kh) // stride + 1
    W_out = (x.shape[1] - kw) // stride + 1
    y = torch.zeros(H_out, W_out)
    for i in range(H_out):
        for j in range(W_out):
            y[i, j] = (x[i * stride:i * stride + kh, j * stride:j * stride + kw] * k).sum()
    return y


SOBEL = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])
EDGE = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])

RIGHT = {
    "cnn.classifier_receptive_rows": (-2, 13),
    "cnn.strided_conv": _strided,
    "cnn.block_parameters": lambda C, M: (18 * C * C + 4 * C, 2 * C * M + 9 * M * M + 4 * M + 2 * C),
    "cnn.horizontal_edges": SOBEL,
}


def _no_padding(x, k, stride, padding):
    return _strided(x, k, stride, 0)


def _one_sided(x, k, stride, padding):
    return _strided(F.pad(x, (padding, 0, padding, 0)), k, stride, 0)


def _ceil_size(x, k, stride, padding):
    x = F.pad(x, (padding,) * 4)
    kh, kw = k.shape
    H_out, W_out = -(-(x.shape[0] - kh) // stride) + 1, -(-(x.shape[1] - kw) // stride) + 1
    return torch.zeros(H_out, W_out)


def _wrong_start(x, k, stride, padding):
    y = _strided(x, k, 1, padding)
    return y[::stride, ::stride].flip(0) if y.shape[0] > 1 else y[::stride, ::stride] + 1


# Typical mistakes, each with a fragment the hint must contain ------------------
WRONG = {
    "cnn.classifier_receptive_rows": [
        ((0, 15), "where does the first convolution's padding"), ((0, 13), "pads the image"),
        ((-1, 14), "right number of rows"), ((-2, 8), "count the pooling windows"),
        ((0, 27), "Go backwards"), ([-2.0, 13.0], "pair of whole numbers"), (16, "pair of whole numbers"),
        ("(-2, 13)", "pair of whole numbers"), ((-2, 13, 0), "pair of whole numbers"),
    ],
    "cnn.strided_conv": [
        (_no_padding, "should be"), (_one_sided, "should be"), (_ceil_size, "for a"),
        (_wrong_start, "values are not"), (lambda x, k, s, p: _strided(x, k, s, p).tolist(), "tensor"),
        (lambda x, k, s, p: F.conv2d(x[None, None], k[None, None], stride=s, padding=p)[0, 0], "the rule"),
        (lambda x, k, s, p: torch.conv2d(x[None, None], k[None, None], stride=s, padding=p)[0, 0], "the rule"),
        (lambda x, k, s, p: x.unfold(0, k.shape[0], s), "the rule"),
        (lambda x, k, s, p: torch.convolution(x[None, None], k[None, None], None, [s, s], [p, p], [1, 1],
                                              False, [0, 0], 1)[0, 0], "the rule"),
        (lambda x, k, s, p: torch.as_strided(x, (2, 2), (1, 1)), "the rule"),
        (lambda x, k, s, p: x.as_strided((2, 2), (1, 1)), "the rule"),
        (lambda x, k, s, p: torch.from_numpy(
            np.lib.stride_tricks.sliding_window_view(x.numpy(), k.shape)).sum((-2, -1)), "the rule"),
        (3, "function"),
        (lambda x, k, s, p: F.conv_transpose2d(x[None, None], k.flip(-1, -2)[None, None])[0, 0], "the rule"),
        (lambda x, k, s, p: torch._C._nn.im2col(x[None, None], k.shape, (1, 1), (p, p), (s, s)), "the rule"),
        (lambda x, k, s, p: torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(k, x.shape)), "the rule"),
        (lambda x, k, s, p: torch.from_numpy(np.correlate(x.numpy().ravel(), k.numpy().ravel())), "the rule"),
    ],
    "cnn.block_parameters": [
        (lambda C, M: (18 * C * C, 2 * C * M + 9 * M * M + 4 * M + 2 * C), "batch norms have parameters"),
        (lambda C, M: (18 * C * C + 4 * C, 2 * C * M + 9 * M * M), "count its batch norms"),
        (lambda C, M: (18 * C * C + 4 * C, 9 * M * M), "Write down each layer"),
        (lambda C, M: (9 * C * C, 0), "Write down each layer"),
        (lambda C, M: 18 * C * C + 4 * C, "pair"),
        (lambda C, M: (float(18 * C * C + 4 * C), 2 * C * M + 9 * M * M + 4 * M + 2 * C), "is a float"),
        (lambda C, M: (sum(p.numel() for p in torch.nn.Conv2d(C, C, 3).parameters()), 0), "build no layers"),
        (lambda C, M: (sum(p.numel() for p in torch.nn.BatchNorm2d(C).parameters()), 0), "build no layers"),
    ],
    "cnn.horizontal_edges": [
        (SOBEL.T, "nothing on a horizontal edge"), (EDGE, "on a vertical edge"), (torch.zeros(3, 3), "nothing"),
        (torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, 1, 1]]), "sum to 3"),
        (torch.tensor([[-1.0, -1, 0], [0, 0, 0], [0, 1, 1]]), "on a vertical edge"),
        (-SOBEL, "opposite edge"),
        (SOBEL[:2], "shape"), (SOBEL.tolist(), "tensor"), (torch.full((3, 3), float("nan")), "finite"),
    ],
}

# What a hint must never print: the explanation's key facts
SECRETS = {
    "cnn.classifier_receptive_rows": ["Rows -2 to 13", "-2 to 13"],
    "cnn.strided_conv": ["top-left corner is (i*S, j*S)"],
    "cnn.block_parameters": ["2 * 9C^2 + 2 * 2C", "CM + 9M^2", "73,984"],
    "cnn.horizontal_edges": ["subtracts the row above from the row", "Sobel"],
}



@pytest.mark.parametrize("key", sorted(RIGHT))
def test_right_answer_passes(key, capsys):
    assert_passes(key, RIGHT[key], capsys)


@pytest.mark.parametrize("key, answer, hint", wrong_cases(WRONG))
def test_wrong_answer_fails_with_a_hint_and_no_solution(key, answer, hint, capsys):
    assert_fails_with_hint(key, answer, hint, SECRETS[key], capsys)


def test_secrets_are_really_in_the_explanations():
    """The strings the hints must not print are the solutions."""
    for key, secrets in SECRETS.items():
        assert secrets[0] in exercises.get(key).explanation, key


def test_the_rules_are_enforced_and_everything_is_restored(capsys):
    real = (F.conv2d, torch.conv2d, torch.nn.Conv2d.__init__)
    check("cnn.strided_conv", lambda x, k, s, p: F.conv2d(x[None, None], k[None, None], stride=s)[0, 0], capsys)
    check("cnn.block_parameters", lambda C, M: (torch.nn.Conv2d(C, C, 3), 0), capsys)
    assert (F.conv2d, torch.conv2d, torch.nn.Conv2d.__init__) == real
    assert "unfold" not in vars(torch.Tensor)  # the inherited method is back, not a copy
    assert torch.equal(torch.arange(4.0).unfold(0, 2, 2), torch.tensor([[0.0, 1.0], [2.0, 3.0]]))


def test_strided_conv_right_answer_matches_conv2d():
    x, k = torch.randn(7, 6), torch.randn(3, 2)
    assert torch.allclose(_strided(x, k, 2, 1), F.conv2d(x[None, None], k[None, None], stride=2, padding=1)[0, 0],
                          atol=1e-5)


@pytest.mark.parametrize("key", ["cnn.strided_conv", "cnn.block_parameters"])
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out


# numbers of every kind ----------------------------------------------------------------

@pytest.mark.parametrize("key, answer", [
    ("cnn.classifier_receptive_rows", (np.int64(-2), np.int64(13))),
    ("cnn.classifier_receptive_rows", [np.int32(-2), 13]),
    ("cnn.block_parameters", lambda C, M: (np.int64(18 * C * C + 4 * C), np.int64(2 * C * M + 9 * M * M) + 4 * M + 2 * C)),
    ("cnn.horizontal_edges", SOBEL.double()),
])
def test_numpy_integers_are_right_answers(key, answer, capsys):
    result, out = check(key, answer, capsys)
    assert result.passed, out


@pytest.mark.parametrize("key, answer, hint", [
    ("cnn.classifier_receptive_rows", (np.float64(-2.0), 13), "whole numbers"),
    ("cnn.classifier_receptive_rows", (np.bool_(True), 13), "whole numbers"),
    ("cnn.block_parameters", lambda C, M: (float(18 * C * C + 4 * C), 0), "is a float"),
])
def test_right_number_of_the_wrong_type_fails(key, answer, hint, capsys):
    result, out = check(key, answer, capsys)
    assert not result.passed and hint in out
    for secret in SECRETS[key]:
        assert secret not in out


def test_a_table_of_counts_made_outside_the_check_does_not_pass(capsys):
    from dlbook import cnn
    from dlbook.bench import count_parameters

    table = {(C, M): (count_parameters(cnn.Residual(C, C)), count_parameters(cnn.Bottleneck(C, M, C)))
             for C in (1, 4, 32, 256) for M in (1, 8, 64)}
    result, out = check("cnn.block_parameters", lambda C, M: table[(C, M)], capsys)
    assert not result.passed


def test_the_operator_rule_lets_slicing_through_and_is_lifted_afterwards():
    from dlbook.exercises import forbid_ops

    x = torch.arange(16.0).reshape(4, 4)
    with forbid_ops("no convolutions", "conv"):
        assert x[1:3, 1:3].sum().item() == 30.0
    assert F.conv2d(x[None, None], torch.ones(1, 1, 2, 2)).shape == (1, 1, 3, 3)
