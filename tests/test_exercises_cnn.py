"""The CNN chapter's exercises: right answers pass, typical wrong ones get a
hint that never gives the solution away, and the rules are enforced."""

import copy

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import scipy.signal
import torch
import torch.nn.functional as F
# names bound before any check, as a reader's notebook may have bound them
from numpy import convolve as np_convolve
from numpy import correlate as np_correlate
from numpy.lib.stride_tricks import as_strided, sliding_window_view
from scipy.fft import irfft2 as sp_irfft2
from scipy.fft import rfft2 as sp_rfft2
from scipy.signal import convolve2d
from torch.nn.functional import conv2d as torch_conv2d

from dlbook import cnn, exercises
from dlbook.cnn import corr2d
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


# Every way around the two rules that the reviews list (names bound before the check, numpy's and
# scipy's convolutions, saved __init__s, other layer classes, deep copies) is refused, and the hint
# names the rule and what the answer called or ran. "got through" marks those that the check let
# through while it forbade names only (or, for scipy, not at all).

def _padded(x, k, p):
    return np.pad(x.numpy(), p), k.numpy()


def _windows(xp, kh, kw, s):
    """(H_out, W_out, kh, kw) windows of xp, moving s at a time, by numpy's as_strided."""
    H_out, W_out = (xp.shape[0] - kh) // s + 1, (xp.shape[1] - kw) // s + 1
    r, c = xp.strides
    return as_strided(xp, (H_out, W_out, kh, kw), (s * r, s * c, r, c))


def _by_rows(x, k, s, p, one_d):
    """Each output row as a sum of 1-D correlations of image rows with kernel rows."""
    xp, kn = _padded(x, k, p)
    kh = kn.shape[0]
    rows = [sum(one_d(xp[i + u], kn[u]) for u in range(kh)) for i in range(xp.shape[0] - kh + 1)]
    return torch.from_numpy(np.array(rows)[::s, ::s].copy())


def _by_fft(x, k, s, p, rfft2, irfft2):
    xp, kn = _padded(x, k, p)
    (H, W), (kh, kw) = xp.shape, kn.shape
    size = (H + kh - 1, W + kw - 1)
    full = irfft2(rfft2(xp, size) * rfft2(kn[::-1, ::-1], size), size)  # the full convolution
    return torch.from_numpy(full[kh - 1:H, kw - 1:W][::s, ::s].copy())


def _scipy(correlate):
    def answer(x, k, s, p):
        xp, kn = _padded(x, k, p)
        return torch.from_numpy(correlate(xp, kn)[::s, ::s].copy())
    return answer


CONV_BYPASSES = [
    (lambda x, k, s, p: corr2d(F.pad(x, (p,) * 4), k)[::s, ::s], "dlbook.cnn.corr2d"),  # got through
    (lambda x, k, s, p: torch.from_numpy(
        (sliding_window_view(np.pad(x.numpy(), p), tuple(k.shape))[::s, ::s] * k.numpy()).sum((-2, -1))),
     "sliding_window_view"),  # got through
    (lambda x, k, s, p: torch.from_numpy((_windows(np.pad(x.numpy(), p), *k.shape, s) * k.numpy()).sum((-2, -1))),
     "as_strided"),  # got through
    (lambda x, k, s, p: _by_rows(x, k, s, p, lambda a, b: np_correlate(a, b, "valid")),
     "numpy.correlate"),  # got through
    (lambda x, k, s, p: _by_rows(x, k, s, p, lambda a, b: np_convolve(a, b[::-1], "valid")),
     "numpy.convolve"),  # got through
    (_scipy(lambda a, b: scipy.signal.correlate2d(a, b, "valid")), "scipy.signal.correlate2d"),  # got through
    (_scipy(lambda a, b: convolve2d(a, b[::-1, ::-1], "valid")), "scipy.signal.convolve2d"),  # got through
    (_scipy(lambda a, b: scipy.ndimage.correlate(a, b, mode="constant")[  # centred windows: keep the valid ones
        b.shape[0] // 2:b.shape[0] // 2 + a.shape[0] - b.shape[0] + 1,
        b.shape[1] // 2:b.shape[1] // 2 + a.shape[1] - b.shape[1] + 1]), "scipy.ndimage.correlate"),  # got through
    (lambda x, k, s, p: _by_fft(x, k, s, p, np.fft.rfft2, np.fft.irfft2), "numpy.fft.rfft2"),  # got through
    (lambda x, k, s, p: _by_fft(x, k, s, p, sp_rfft2, sp_irfft2), "rfft2"),  # got through
    (lambda x, k, s, p: torch_conv2d(x[None, None], k[None, None], stride=s, padding=p)[0, 0], "operation conv"),
    (lambda x, k, s, p: torch.ops.aten.convolution(x[None, None], k[None, None], None, [s, s], [p, p], [1, 1],
                                                   False, [0, 0], 1)[0, 0], "operation conv"),
]


@pytest.mark.parametrize("answer, called", CONV_BYPASSES)
def test_every_bypass_of_the_strided_conv_rule_is_refused(answer, called, capsys):
    result, out = check("cnn.strided_conv", answer, capsys)
    assert not result.passed, out
    assert "the rule is: use loops and slicing, not a convolution or windowing function" in out, out
    assert called in out, out


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), (3, 2)])
def test_the_conv_bypasses_compute_the_right_output(stride, padding):
    """Each bypass would pass if the check let it through: its refusal is what fails it."""
    x, k = torch.randn(7, 9, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    expected = F.conv2d(x[None, None], k[None, None], stride=stride, padding=padding)[0, 0]
    for answer, _ in CONV_BYPASSES:
        assert torch.allclose(answer(x, k, stride, padding).double(), expected, atol=1e-9)


CONV_INIT, BN_INIT = torch.nn.Conv2d.__init__, torch.nn.BatchNorm2d.__init__  # saved before the check
EARLIER = {(C, M): (cnn.Residual(C, C), cnn.Bottleneck(C, M, C)) for C, M in ((1, 1), (256, 64))}


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _blocks(conv, norm):
    """The two counts from the counts of the blocks' layers, each found by building it."""
    return lambda C, M: (2 * conv(C, C, 3) + 2 * norm(C),
                         conv(C, M, 1) + conv(M, M, 3) + conv(M, C, 1) + 2 * norm(M) + norm(C))


def _saved_init_conv(i, o, k):
    m = torch.nn.Conv2d.__new__(torch.nn.Conv2d)
    CONV_INIT(m, i, o, k, bias=False)
    return _count(m)


def _saved_init_norm(c):
    m = torch.nn.BatchNorm2d.__new__(torch.nn.BatchNorm2d)
    BN_INIT(m, c)
    return _count(m)


BLOCK_BYPASSES = [
    (_blocks(_saved_init_conv, _saved_init_norm), "operation empty"),  # got through
    (_blocks(lambda i, o, k: _count(torch.nn.Conv1d(i, o, k * k, bias=False)),
             lambda c: _count(torch.nn.BatchNorm1d(c))), "operation empty"),  # got through
    (_blocks(lambda i, o, k: _count(torch.nn.utils.skip_init(torch.nn.Conv1d, i, o, k * k, bias=False)),
             lambda c: 2 * c), "operation empty"),  # got through
    # the check's fixed sizes come first: a deep copy of a block built earlier was stopped only by
    # the random sizes after them
    (lambda C, M: tuple(_count(copy.deepcopy(block)) for block in EARLIER[(C, M)]), "operation clone"),
    (lambda C, M: (_count(cnn.Residual(C, C)), _count(cnn.Bottleneck(C, M, C))), "Conv2d.__init__"),
]


@pytest.mark.parametrize("answer, called", BLOCK_BYPASSES)
def test_every_bypass_of_the_build_no_layers_rule_is_refused(answer, called, capsys):
    result, out = check("cnn.block_parameters", answer, capsys)
    assert not result.passed, out
    assert "the rule is: derive the counts; build no layers" in out, out
    assert called in out, out


def test_the_block_bypasses_count_right():
    for answer, _ in BLOCK_BYPASSES:
        assert answer(256, 64) == RIGHT["cnn.block_parameters"](256, 64)


def test_every_function_is_restored_after_the_checks(capsys):
    functions = (corr2d, sliding_window_view, as_strided, np_correlate, np_convolve, np.fft.rfft2,
                 scipy.signal.correlate2d, convolve2d, scipy.ndimage.correlate, CONV_INIT)
    codes = [f.__code__ for f in (corr2d, as_strided, np.fft.rfft2._implementation, convolve2d, CONV_INIT)]
    for answer, _ in CONV_BYPASSES:
        check("cnn.strided_conv", answer, capsys)
    for answer, _ in BLOCK_BYPASSES:
        check("cnn.block_parameters", answer, capsys)
    assert functions == (cnn.corr2d, np.lib.stride_tricks.sliding_window_view, np.lib.stride_tricks.as_strided,
                         np.correlate, np.convolve, np.fft.rfft2, scipy.signal.correlate2d, scipy.signal.convolve2d,
                         scipy.ndimage.correlate, torch.nn.Conv2d.__init__)
    assert codes == [f.__code__ for f in (corr2d, as_strided, np.fft.rfft2._implementation, convolve2d, CONV_INIT)]
    x, k = torch.randn(6, 6, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    for answer, _ in CONV_BYPASSES:
        assert answer(x, k, 1, 0).shape == (4, 4)  # every one of them works again
    assert BLOCK_BYPASSES[0][0](8, 4) == RIGHT["cnn.block_parameters"](8, 4)
