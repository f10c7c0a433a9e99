"""dlbook.cnn: parity with PyTorch, golden numbers, shapes and validation."""

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from torch import nn

from dlbook import cnn
from dlbook.bench import count_parameters

ATOL = 1e-5


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# conv_output_size -------------------------------------------------------------

def test_conv_output_size_matches_nn_conv2d_on_a_grid():
    checked = 0
    for W, Fk, P, S in itertools.product(range(1, 10), range(1, 6), range(3), range(1, 4)):
        if Fk > W + 2 * P:
            with pytest.raises(ValueError, match="larger"):
                cnn.conv_output_size(W, Fk, P, S)
            continue
        conv = nn.Conv2d(1, 1, Fk, stride=S, padding=P, bias=False)
        with torch.no_grad():
            actual = conv(torch.zeros(1, 1, W, W)).shape[-1]
        assert cnn.conv_output_size(W, Fk, P, S) == actual, (W, Fk, P, S)
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("W, F_, P, S, expected", [
    (28, 5, 2, 1, 28), (28, 2, 0, 2, 14), (10, 5, 0, 1, 6), (227, 11, 0, 4, 55), (7, 3, 0, 2, 3),
    (8, 3, 0, 2, 3),  # floor: the last window would hang over
    (224, 7, 3, 2, 112),
])
def test_conv_output_size_golden(W, F_, P, S, expected):
    assert cnn.conv_output_size(W, F_, P, S) == expected


@pytest.mark.parametrize("args", [
    (0, 1), (5, 0), (5, 3, -1), (5, 3, 0, 0), (5, 6), (5, 8, 1), (5.0, 3), (5, 3, 0, 1.5),
    (True, 1), (5, "3"),
])
def test_conv_output_size_rejects_bad_input(args):
    with pytest.raises(ValueError):
        cnn.conv_output_size(*args)


# corr2d -----------------------------------------------------------------------

@pytest.mark.parametrize("H, W, kh, kw", [(5, 5, 3, 3), (6, 4, 2, 3), (3, 7, 3, 1), (4, 4, 4, 4), (1, 5, 1, 2)])
def test_corr2d_matches_conv2d(H, W, kh, kw):
    x, k = torch.randn(H, W), torch.randn(kh, kw)
    expected = F.conv2d(x[None, None], k[None, None])[0, 0]
    assert torch.allclose(cnn.corr2d(x, k), expected, atol=ATOL)


def test_corr2d_golden_and_edge_kernel():
    x = torch.arange(9.0).view(3, 3)
    k = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert torch.equal(cnn.corr2d(x, k), torch.tensor([[19.0, 25.0], [37.0, 43.0]]))  # d2l's example
    flat = torch.full((5, 5), 3.0)
    assert torch.equal(cnn.corr2d(flat, cnn.EDGE_KERNEL), torch.zeros(3, 3))  # no edges, no response
    assert cnn.EDGE_KERNEL.sum() == 0


def test_corr2d_validation():
    with pytest.raises(ValueError, match="2-D"):
        cnn.corr2d(torch.zeros(1, 3, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="larger"):
        cnn.corr2d(torch.zeros(2, 2), torch.zeros(3, 1))


# conv2d_loops and conv2d_unfold -------------------------------------------------

CONV_CASES = [
    # B, C_in, C_out, H, W, kh, kw, stride, padding
    (2, 3, 4, 7, 6, 3, 3, 1, 0),
    (1, 1, 1, 5, 5, 5, 5, 1, 0),
    (2, 2, 3, 8, 9, 3, 2, 2, 1),
    (3, 4, 2, 6, 6, 1, 1, 1, 0),
    (1, 2, 5, 9, 7, 3, 5, (2, 1), (1, 2)),
    (2, 3, 2, 5, 8, 2, 4, (1, 3), (0, 1)),
    (1, 1, 2, 4, 4, 3, 3, 3, 2),
    (2, 2, 2, 6, 5, 3, 3, [2, 2], [1, 0]),
]


@pytest.mark.parametrize("impl", [cnn.conv2d_loops, cnn.conv2d_unfold])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_pytorch(impl, case, bias):
    B, C_in, C_out, H, W, kh, kw, stride, padding = case
    x = torch.randn(B, C_in, H, W)
    weight = torch.randn(C_out, C_in, kh, kw)
    b = torch.randn(C_out) if bias else None
    expected = F.conv2d(x, weight, b, stride=tuple(stride) if isinstance(stride, list) else stride,
                        padding=tuple(padding) if isinstance(padding, list) else padding)
    got = impl(x, weight, b, stride=stride, padding=padding)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("impl", [cnn.conv2d_loops, cnn.conv2d_unfold])
def test_conv2d_gradients_match_pytorch(impl):
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    grads = []
    for f in (impl, F.conv2d):
        out = f(x, weight, bias, stride=2, padding=1)
        grads.append(torch.autograd.grad((out ** 2).sum(), (x, weight, bias)))
    for ours, theirs in zip(*grads):
        assert torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("impl", [cnn.conv2d_loops, cnn.conv2d_unfold])
@pytest.mark.parametrize("args, kwargs, match", [
    ((torch.zeros(3, 5, 5), torch.zeros(1, 3, 3, 3)), {}, "B, C, H, W"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(3, 3, 3)), {}, "C_out, C_in"),
    ((torch.zeros(1, 2, 5, 5), torch.zeros(1, 3, 3, 3)), {}, "channels"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 3, 3), torch.zeros(3)), {}, "bias"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 3, 3)), dict(stride=(1, 2, 3)), "stride"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 3, 3)), dict(stride=1.5), "stride"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 3, 3)), dict(padding="same"), "padding"),
    ((torch.zeros(1, 3, 5, 5), torch.zeros(2, 3, 3, 3)), dict(stride=0), "stride"),
    ((torch.zeros(1, 3, 2, 5), torch.zeros(2, 3, 3, 3)), {}, "larger"),
])
def test_conv2d_validation(impl, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        impl(*args, **kwargs)


def test_1x1_convolution_is_a_linear_layer_per_pixel():
    B, C_in, C_out, H, W = 2, 5, 3, 4, 6
    conv = nn.Conv2d(C_in, C_out, 1)
    linear = nn.Linear(C_in, C_out)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.view(C_out, C_in))
        linear.bias.copy_(conv.bias)
    x = torch.randn(B, C_in, H, W)
    per_pixel = linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C_out, H, W)
    assert torch.allclose(conv(x), per_pixel, atol=ATOL)
    assert torch.allclose(cnn.conv2d_unfold(x, conv.weight, conv.bias), per_pixel, atol=ATOL)
    assert torch.allclose(cnn.conv2d_loops(x, conv.weight, conv.bias), per_pixel, atol=ATOL)


# pooling ------------------------------------------------------------------------

@pytest.mark.parametrize("shape, size, stride", [
    ((2, 3, 8, 8), 2, None), ((1, 2, 7, 9), 3, 2), ((2, 1, 6, 5), 2, 1), ((1, 1, 5, 5), 5, None),
    ((1, 2, 9, 9), 3, 3), ((1, 1, 7, 7), 2, 3),
])
def test_pool2d_matches_pytorch(shape, size, stride):
    x = torch.randn(shape)
    s = size if stride is None else stride
    assert torch.equal(cnn.pool2d(x, size, stride, "max"), F.max_pool2d(x, size, s))
    assert torch.allclose(cnn.pool2d(x, size, stride, "avg"), F.avg_pool2d(x, size, s), atol=ATOL)


def test_pool2d_gradient_matches_pytorch():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    ours = torch.autograd.grad(cnn.pool2d(x, 2, mode="max").sum(), x)[0]
    theirs = torch.autograd.grad(F.max_pool2d(x, 2).sum(), x)[0]
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("x, kwargs, match", [
    (torch.zeros(3, 4, 4), {}, "B, C, H, W"),
    (torch.zeros(1, 1, 4, 4), dict(mode="min"), "mode"),
    (torch.zeros(1, 1, 4, 4), dict(size=5), "larger"),
    (torch.zeros(1, 1, 4, 4), dict(size=0), "size"),
    (torch.zeros(1, 1, 4, 4), dict(stride=0), "stride"),
])
def test_pool2d_validation(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cnn.pool2d(x, **kwargs)


# batch normalization --------------------------------------------------------------

@pytest.mark.parametrize("shape, reference", [((8, 3, 5, 4), nn.BatchNorm2d), ((16, 6), nn.BatchNorm1d)])
@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_batchnorm_matches_pytorch(shape, reference, momentum):
    C = shape[1]
    ours, theirs = cnn.BatchNorm(C, momentum=momentum), reference(C, momentum=momentum)
    with torch.no_grad():
        gamma, beta = torch.rand(C) + 0.5, torch.randn(C)
        ours.gamma.copy_(gamma), ours.beta.copy_(beta)
        theirs.weight.copy_(gamma), theirs.bias.copy_(beta)
    for step in range(4):  # training mode: batch statistics, running averages move
        x = torch.randn(shape) * (step + 1) + step
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-5)
    assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-5)
    assert not torch.allclose(ours.running_var, torch.ones(C))  # they did move
    ours.eval(), theirs.eval()
    x = torch.randn(shape) * 3
    before = ours.running_mean.clone()
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    assert torch.equal(ours.running_mean, before)  # eval does not update


def test_batchnorm_gradients_match_pytorch():
    C = 3
    ours, theirs = cnn.BatchNorm(C), nn.BatchNorm2d(C)
    with torch.no_grad():
        ours.gamma.copy_(torch.tensor([0.5, 1.5, 2.0])), theirs.weight.copy_(ours.gamma)
        ours.beta.copy_(torch.tensor([0.1, -0.2, 0.3])), theirs.bias.copy_(ours.beta)
    x = torch.randn(4, C, 5, 5)
    target = torch.randn(4, C, 5, 5)
    grads = []
    for module in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        loss = ((module(xi) - target) ** 3).mean()
        params = [module.gamma, module.beta] if module is ours else [module.weight, module.bias]
        grads.append(torch.autograd.grad(loss, [xi, *params]))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_batch_norm_function_golden():
    x = torch.tensor([[1.0], [3.0]])  # (B=2, C=1): mean 2, biased var 1, unbiased var 2
    rm, rv = torch.zeros(1), torch.ones(1)
    y = cnn.batch_norm(x, torch.ones(1), torch.zeros(1), rm, rv, training=True, momentum=0.5, eps=0.0)
    assert torch.allclose(y, torch.tensor([[-1.0], [1.0]]))
    assert torch.allclose(rm, torch.tensor([1.0])) and torch.allclose(rv, torch.tensor([1.5]))
    y = cnn.batch_norm(x, torch.full((1,), 2.0), torch.ones(1), rm, rv, training=False, eps=0.0)
    assert torch.allclose(y, 2 * (x - 1) / 1.5 ** 0.5 + 1)


@pytest.mark.parametrize("x, C, training, match", [
    (torch.zeros(2, 3, 4), 3, True, r"\(B, C\) or \(B, C, H, W\)"),
    (torch.zeros(2, 3), 4, True, "gamma"),
    (torch.zeros(1, 3), 3, True, "more than one"),
    (torch.zeros(1, 3, 1, 1), 3, True, "more than one"),
])
def test_batch_norm_validation(x, C, training, match):
    with pytest.raises(ValueError, match=match):
        cnn.batch_norm(x, torch.ones(C), torch.zeros(C), torch.zeros(C), torch.ones(C), training)


def test_batch_norm_single_example_is_fine_in_eval():
    bn = cnn.BatchNorm(3).eval()
    assert bn(torch.randn(1, 3)).shape == (1, 3)


# receptive field ----------------------------------------------------------------

@pytest.mark.parametrize("kernels, strides, expected", [
    ([3], None, 3), ([3, 3], None, 5), ([3, 3, 3], None, 7), ([7], None, 7),
    ([5, 2, 5, 2], [1, 2, 1, 2], 16),  # LeNet: conv5, pool2, conv5, pool2
    ([3, 3, 2, 3, 3, 2], [1, 1, 2, 1, 1, 2], 16),  # two VGG blocks of two convs
    ([2, 2, 2], [2, 2, 2], 8),
    ([], None, 1),
])
def test_receptive_field_golden(kernels, strides, expected):
    assert cnn.receptive_field(kernels, strides) == expected


def test_receptive_field_by_autograd():
    """The input pixels one output pixel depends on, found by backpropagation."""
    kernels, strides = [3, 2, 5, 3], [1, 2, 2, 1]
    layers = [nn.Conv2d(1, 1, k, s, bias=False) for k, s in zip(kernels, strides)]
    for layer in layers:
        nn.init.constant_(layer.weight, 1.0)
    x = torch.ones(1, 1, 64, 64, requires_grad=True)
    y = nn.Sequential(*layers)(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    assert int(rows.max() - rows.min() + 1) == cnn.receptive_field(kernels, strides) == 20


def test_receptive_field_length_mismatch():
    with pytest.raises(ValueError, match="2 kernels but 1 strides"):
        cnn.receptive_field([3, 3], [1])


@pytest.mark.parametrize("kernels, strides", [([0], None), ([3, -1], None), ([3, 3], [1, 0]), ([3], [])])
def test_receptive_field_rejects_bad_input(kernels, strides):
    with pytest.raises(ValueError):
        cnn.receptive_field(kernels, strides)


# architectures: shapes ----------------------------------------------------------

@pytest.mark.parametrize("modern", [True, False])
def test_lenet_shapes(modern):
    net = cnn.LeNet(modern=modern, dropout=0.1)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert net.features(torch.randn(2, 1, 28, 28)).shape == (2, 16, 5, 5)
    assert cnn.LeNet(num_classes=3, width=(4, 8), hidden=(20, 10))(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_lenet_classic_and_modern_layers():
    classic, modern = cnn.LeNet(modern=False), cnn.LeNet(modern=True)
    kinds = lambda m: {type(layer) for layer in m.modules()}  # noqa: E731
    assert {nn.Sigmoid, nn.AvgPool2d} <= kinds(classic) and not {nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d} & kinds(classic)
    assert {nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d, nn.BatchNorm1d} <= kinds(modern) and nn.Sigmoid not in kinds(modern)


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 3, 28, 28), (1, 28, 28), (2, 1, 28, 27)])
def test_lenet_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        cnn.LeNet()(torch.randn(shape))


@pytest.mark.parametrize("num_convs, bn", [(1, True), (2, False), (3, True)])
def test_vgg_block(num_convs, bn):
    block = cnn.vgg_block(num_convs, 3, 8, batch_norm=bn)
    assert block(torch.randn(2, 3, 12, 10)).shape == (2, 8, 6, 5)
    assert sum(isinstance(m, nn.Conv2d) for m in block) == num_convs
    assert any(isinstance(m, nn.BatchNorm2d) for m in block) == bn


def test_nin_block_and_nin():
    block = cnn.nin_block(3, 6, kernel_size=5, stride=2, padding=1)
    assert block(torch.randn(2, 3, 15, 15)).shape == (2, 6, 7, 7)
    assert [m.kernel_size for m in block if isinstance(m, nn.Conv2d)] == [(5, 5), (1, 1), (1, 1)]
    net = cnn.NiN(num_classes=7, width=4)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    assert not any(isinstance(m, nn.Linear) for m in net.modules())  # no fully connected layer


def test_inception_shape_and_paths():
    block = cnn.Inception(6, 4, (3, 5), (2, 3), 2)
    x = torch.randn(2, 6, 9, 7)
    y = block(x)
    assert y.shape == (2, 4 + 5 + 3 + 2, 9, 7)
    assert torch.equal(y[:, :4], block.p1(x)) and torch.equal(y[:, 12:], block.p4(x))


@pytest.mark.parametrize("c_in, c_out, stride, projection, out_hw", [
    (4, 4, 1, False, 8), (4, 8, 1, True, 8), (4, 4, 2, True, 4), (4, 8, 2, True, 4),
])
def test_residual(c_in, c_out, stride, projection, out_hw):
    block = cnn.Residual(c_in, c_out, stride)
    assert isinstance(block.shortcut, nn.Identity) != projection
    x = torch.randn(2, c_in, 8, 8)
    y = block(x)
    assert y.shape == (2, c_out, out_hw, out_hw)
    assert torch.all(y >= 0)
    assert torch.equal(y, F.relu(block.f(x) + block.shortcut(x)))


def test_residual_identity_passes_the_input_through():
    block = cnn.Residual(3, 3)
    nn.init.zeros_(block.f[-1].weight)  # last BatchNorm's gamma = 0: f(x) = beta = 0
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(block(x), F.relu(x))


@pytest.mark.parametrize("c_in, mid, c_out, stride, projection", [
    (16, 4, 16, 1, False), (8, 4, 16, 1, True), (16, 4, 16, 2, True),
])
def test_bottleneck(c_in, mid, c_out, stride, projection):
    block = cnn.Bottleneck(c_in, mid, c_out, stride)
    assert isinstance(block.shortcut, nn.Identity) != projection
    assert block(torch.randn(2, c_in, 8, 8)).shape == (2, c_out, 8 // stride, 8 // stride)
    convs = [m for m in block.f if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]


@pytest.mark.parametrize("channels, blocks, final_hw", [((4, 8, 16), 1, 7), ((4,), 2, 28), ((4, 8), 2, 14)])
def test_resnet(channels, blocks, final_hw):
    net = cnn.ResNet(num_classes=5, channels=channels, blocks=blocks)
    x = torch.randn(2, 1, 28, 28)
    assert net(x).shape == (2, 5)
    assert net.stages(net.stem(x)).shape == (2, channels[-1], final_hw, final_hw)
    assert len(net.stages) == len(channels) * blocks


# parameter counts: golden numbers, computed by hand ---------------------------------

def test_count_parameters_classic_lenet5():
    # conv1 1->6, 5x5: 6*25+6 = 156; conv2 6->16, 5x5: 16*150+16 = 2,416;
    # fc 400->120: 48,120; 120->84: 10,164; 84->10: 850. Sum: 61,706.
    assert count_parameters(cnn.LeNet(modern=False)) == 61_706


def test_count_parameters_modern_lenet():
    # + BatchNorm gamma and beta: 2*(6 + 16 + 120 + 84) = 452; - the biases in front of BN: 226
    assert count_parameters(cnn.LeNet(modern=True)) == 61_706 + 452 - 226


def test_count_parameters_inception_3a():
    # GoogLeNet's inception (3a): 192 -> 64 + 128 + 32 + 32 = 256 channels.
    # 1x1: 192*64+64 = 12,352; 1x1 reduce 192*96+96 = 18,528, 3x3 96*128*9+128 = 110,720;
    # 1x1 reduce 192*16+16 = 3,088, 5x5 16*32*25+32 = 12,832; pool proj 192*32+32 = 6,176.
    block = cnn.Inception(192, 64, (96, 128), (16, 32), 32)
    assert count_parameters(block) == 163_696
    assert block(torch.randn(1, 192, 4, 4)).shape == (1, 256, 4, 4)


def test_count_parameters_residual_blocks():
    # identity, 4->4: two 3x3 convs without bias 2*144 + two BNs 2*8 = 304
    assert count_parameters(cnn.Residual(4, 4)) == 304
    # projection, 4->8 stride 2: 288 + 16 + 576 + 16 + 1x1 conv 32 + BN 16 = 944
    assert count_parameters(cnn.Residual(4, 8, stride=2)) == 944
    # bottleneck 16->4->16: 64 + 8 + 144 + 8 + 64 + 32 = 320
    assert count_parameters(cnn.Bottleneck(16, 4, 16)) == 320


def test_vgg_block_parameters_without_redundant_bias():
    # two 3x3 convs 16->32 and 32->32 without bias (BN follows): 4,608 + 9,216; two BNs: 2*64
    assert count_parameters(cnn.vgg_block(2, 16, 32)) == 4_608 + 9_216 + 128
    # without batch norm each convolution keeps its bias
    assert count_parameters(cnn.vgg_block(2, 16, 32, batch_norm=False)) == 4_608 + 32 + 9_216 + 32


@pytest.mark.parametrize("module", [
    cnn.vgg_block(2, 3, 8), cnn.Residual(4, 8, stride=2), cnn.Bottleneck(8, 4, 16), cnn.ResNet(channels=(4, 8)),
], ids=["vgg_block", "Residual", "Bottleneck", "ResNet"])
def test_no_bias_on_a_convolution_followed_by_batch_norm(module):
    layers = [m for m in module.modules() if not list(m.children())]  # leaves, in order
    pairs = [(a, b) for a, b in zip(layers, layers[1:]) if isinstance(a, nn.Conv2d)]
    assert pairs, "no convolution found"
    for conv, after in pairs:
        if isinstance(after, nn.BatchNorm2d):
            assert conv.bias is None, f"{conv} is followed by batch norm but has a bias"
    assert any(isinstance(after, nn.BatchNorm2d) for _, after in pairs)


# the book's MNIST classifier: later chapters load a saved copy -----------------------

def test_mnist_classifier_is_pinned():
    """A saved model only loads into the same layers: this pins them."""
    model = cnn.mnist_classifier()
    assert isinstance(model, cnn.LeNet)
    assert count_parameters(model) == 127_722
    state = model.state_dict()
    assert len(state) == 26
    assert tuple(state["features.0.weight"].shape) == (16, 1, 5, 5)
    # no bias in front of batch norm; the output layer keeps its own
    assert not {"features.0.bias", "features.4.bias", "classifier.1.bias", "classifier.5.bias"} & set(state)
    assert "classifier.9.bias" in state
    assert tuple(state["features.4.weight"].shape) == (32, 16, 5, 5)
    assert tuple(state["classifier.1.weight"].shape) == (128, 800)
    assert tuple(state["classifier.5.weight"].shape) == (84, 128)
    assert tuple(state["classifier.9.weight"].shape) == (10, 84)
    drop = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drop == [0.1, 0.1]


@pytest.mark.parametrize("B", [1, 3])
def test_mnist_classifier_shapes(B):
    model = cnn.mnist_classifier().eval()
    assert model(torch.randn(B, 1, 28, 28)).shape == (B, 10)
    assert cnn.mnist_classifier(num_classes=3).eval()(torch.randn(B, 1, 28, 28)).shape == (B, 3)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        model(torch.randn(B, 1, 32, 32))


def test_mnist_classifier_saves_and_loads_through_the_zoo():
    from dlbook import zoo

    trained = cnn.mnist_classifier()
    with torch.no_grad():
        trained(torch.randn(4, 1, 28, 28))  # moves the batch-norm statistics
    zoo.save_model("mnist_cnn", trained)
    fresh = cnn.mnist_classifier()
    zoo.load_model("mnist_cnn", fresh)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(trained.eval()(x), fresh.eval()(x))


# conv_geometry ----------------------------------------------------------------------

@pytest.fixture
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("W, F_, P, S, dashed", [(5, 3, 0, 1, False), (5, 3, 1, 1, False), (7, 3, 0, 2, False),
                                                  (8, 3, 0, 2, True), (6, 4, 1, 3, True)])
def test_conv_geometry_draws_the_formula(close_figures, W, F_, P, S, dashed):
    n = cnn.conv_output_size(W, F_, P, S)
    fig = cnn.conv_geometry(W, F_, P, S)
    ax_in, ax_out = fig.axes
    full = W + 2 * P
    cells = [p for p in ax_in.patches if isinstance(p, Rectangle) and p.get_width() == 1 and p.fill]
    assert len(cells) == full * full
    grey = [c for c in cells if c.get_facecolor()[:3] != (1.0, 1.0, 1.0)]
    assert len(grey) == full * full - W * W  # the padding
    windows = [p for p in ax_in.patches if not p.fill]
    assert len(windows) == (3 if dashed else 2)
    assert [w.get_xy() for w in windows[:2]] == [(0, 0), ((n - 1) * S, (n - 1) * S)]
    assert all(w.get_width() == F_ for w in windows)
    assert len(ax_out.patches) == n * n
    title = fig._suptitle.get_text()
    assert title.startswith(f"W_out = floor(({W} - {F_} + 2*{P}) / {S}) + 1") and f"= {n}" in title
    assert ("dropped" in title) == dashed
    assert ax_out.get_title() == f"output {n}x{n}"


def test_conv_geometry_reuses_a_figure(close_figures):
    fig = plt.figure()
    assert cnn.conv_geometry(5, 3, 0, 1, fig=fig) is fig
    assert cnn.conv_geometry(7, 3, 1, 2, fig=fig) is fig
    assert len(fig.axes) == 2  # cleared, not drawn twice


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((5, 6), {}, ValueError, "larger"),
    ((5, 3, -1), {}, ValueError, "padding"),
    ((5, 3, 0, 0), {}, ValueError, "stride"),
    ((5.0, 3), {}, ValueError, "size"),
    ((39, 3, 1), {}, ValueError, "at most 40"),
    ((5, 3), dict(fig="figure"), TypeError, "Figure"),
])
def test_conv_geometry_rejects_bad_input(close_figures, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        cnn.conv_geometry(*args, **kwargs)


def test_conv_geometry_accepts_numpy_integers(close_figures):
    fig = cnn.conv_geometry(np.int64(7), np.int32(3), np.int64(0), np.int64(2))
    assert fig.axes[1].get_title() == "output 3x3"


# bad input: a clear error, or the right result ----------------------------------------

X = torch.zeros(1, 3, 5, 5)
WEIGHT = torch.zeros(2, 3, 3, 3)


@pytest.mark.parametrize("impl", [cnn.conv2d_loops, cnn.conv2d_unfold])
@pytest.mark.parametrize("args, kwargs, error, match", [
    ((X, WEIGHT), dict(padding=-1), ValueError, "padding"),  # would crop the input; PyTorch refuses too
    ((X, WEIGHT), dict(padding=(0, -1)), ValueError, "padding"),
    ((X, WEIGHT), dict(stride=True), ValueError, "stride"),
    ((X, WEIGHT), dict(stride=2.0), ValueError, "stride"),
    ((X.numpy(), WEIGHT), {}, TypeError, "x must be a torch.Tensor"),
    ((X, WEIGHT.tolist()), {}, TypeError, "weight must be a torch.Tensor"),
    ((X, WEIGHT, [0.0, 0.0]), {}, TypeError, "bias must be a torch.Tensor"),
    ((X.long(), WEIGHT.long()), {}, ValueError, "floating dtype"),
    ((X.double(), WEIGHT), {}, ValueError, "float64"),
    ((X, WEIGHT, torch.zeros(2, dtype=torch.float64)), {}, ValueError, "bias torch.float64"),
    ((X, torch.zeros(0, 3, 3, 3)), {}, ValueError, "every size >= 1"),
    ((X, torch.zeros(2, 3, 0, 3)), {}, ValueError, "every size >= 1"),
    ((torch.zeros(1, 0, 5, 5), torch.zeros(2, 0, 3, 3)), {}, ValueError, "every size >= 1"),
    ((torch.zeros(1, 3, 0, 5), WEIGHT), {}, ValueError, "H, W >= 1"),
])
def test_conv2d_bad_input(impl, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        impl(*args, **kwargs)


@pytest.mark.parametrize("impl", [cnn.conv2d_loops, cnn.conv2d_unfold])
def test_conv2d_numpy_integers_and_an_empty_batch(impl):
    x, weight = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    expected = F.conv2d(x, weight, stride=2, padding=1)
    got = impl(x, weight, stride=np.int64(2), padding=(np.int32(1), np.int64(1)))
    assert torch.allclose(got, expected, atol=ATOL)
    empty = impl(torch.zeros(0, 3, 6, 6), weight, padding=1)
    assert empty.shape == F.conv2d(torch.zeros(0, 3, 6, 6), weight, padding=1).shape == (0, 4, 6, 6)


def test_conv2d_propagates_nan_like_pytorch():
    x = torch.randn(1, 1, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    weight = torch.ones(1, 1, 2, 2)
    ours, theirs = cnn.conv2d_unfold(x, weight), F.conv2d(x, weight)
    assert torch.equal(ours.isnan(), theirs.isnan()) and ours.isnan().sum() == 1


@pytest.mark.parametrize("fn, args, error, match", [
    (cnn.conv_output_size, (np.int64(5), np.int64(3)), None, 3),
    (cnn.conv_output_size, (5, 3, np.int64(1), np.int32(2)), None, 3),
    (cnn.conv_output_size, (np.float64(5), 3), ValueError, "size"),
    (cnn.conv_output_size, (5, np.bool_(True)), ValueError, "kernel"),
    (cnn.conv_output_size, (5, 3, float("nan")), ValueError, "padding"),
    (cnn.conv_output_size, (None, 3), ValueError, "size"),
    (cnn.corr2d, (np.zeros((3, 3)), torch.zeros(2, 2)), TypeError, "x must be a torch.Tensor"),
    (cnn.corr2d, (torch.zeros(3, 3), torch.zeros(0, 2)), ValueError, "at least 1x1"),
    (cnn.pool2d, (torch.zeros(1, 1, 4, 4), np.int64(2)), None, (1, 1, 2, 2)),
    (cnn.pool2d, (torch.zeros(1, 1, 4, 4), 2.0), ValueError, "size"),
    (cnn.pool2d, (torch.zeros(1, 1, 4, 4), 2, True), ValueError, "stride"),
    (cnn.pool2d, (torch.zeros(1, 1, 4, 4, dtype=torch.long), 2, None, "avg"), ValueError, "floating"),
    (cnn.pool2d, ([[[[1.0]]]],), TypeError, "torch.Tensor"),
    (cnn.receptive_field, ([np.int64(3), 3],), None, 5),
    (cnn.receptive_field, ("33",), ValueError, "kernels"),
    (cnn.receptive_field, (None,), ValueError, "kernels"),
    (cnn.receptive_field, (3,), ValueError, "kernels"),
    (cnn.receptive_field, ([3], 2), ValueError, "strides"),
    (cnn.receptive_field, ([3.0],), ValueError, "kernels"),
    (cnn.mnist_classifier, (0,), ValueError, "num_classes"),
    (cnn.mnist_classifier, (np.int64(5),), None, None),
])
def test_functions_bad_input(fn, args, error, match):
    if error is None:
        result = fn(*args)
        if isinstance(result, torch.Tensor):
            assert tuple(result.shape) == match
        elif match is not None:
            assert result == match and type(result) is int
        return
    with pytest.raises(error, match=match):
        fn(*args)


BN_OK = dict(gamma=torch.ones(3), beta=torch.zeros(3), running_mean=torch.zeros(3), running_var=torch.ones(3))


@pytest.mark.parametrize("changes, error, match", [
    (dict(x=torch.zeros(4, 3, dtype=torch.long)), ValueError, "floating"),
    (dict(x=np.zeros((4, 3), dtype=np.float32)), TypeError, "x must be a torch.Tensor"),
    (dict(gamma=[1.0, 1.0, 1.0]), TypeError, "gamma must be a torch.Tensor"),
    (dict(training="no"), TypeError, "training"),  # a non-empty string would count as True
    (dict(momentum=1.5), ValueError, "momentum"),
    (dict(momentum=float("nan")), ValueError, "momentum"),
    (dict(eps=-1e-5), ValueError, "eps"),
])
def test_batch_norm_bad_input(changes, error, match):
    kwargs = dict(x=torch.randn(4, 3), training=True, **BN_OK) | changes
    with pytest.raises(error, match=match):
        cnn.batch_norm(**kwargs)


def test_batch_norm_numpy_numbers_are_fine():
    x = torch.randn(4, 3)
    ours = cnn.batch_norm(x, training=np.bool_(True), momentum=np.float32(0.5), eps=np.float64(1e-5),
                          **{k: v.clone() for k, v in BN_OK.items()})
    theirs = F.batch_norm(x, torch.zeros(3), torch.ones(3), torch.ones(3), torch.zeros(3), True, 0.5, 1e-5)
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("build, error, match", [
    (lambda: cnn.vgg_block(0, 3, 8), ValueError, "num_convs"),
    (lambda: cnn.vgg_block(2, 3, 8, batch_norm="yes"), TypeError, "batch_norm"),
    (lambda: cnn.vgg_block(2, 0, 8), ValueError, "in_channels"),
    (lambda: cnn.vgg_block(1.0, 3, 8), ValueError, "num_convs"),
    (lambda: cnn.nin_block(3, 8, 0), ValueError, "kernel_size"),
    (lambda: cnn.nin_block(3, 8, 3, padding=-1), ValueError, "padding"),
    (lambda: cnn.nin_block(3, 8, 3, stride=0), ValueError, "stride"),
    (lambda: cnn.NiN(0), ValueError, "num_classes"),
    (lambda: cnn.NiN(10, width=2.5), ValueError, "width"),
    (lambda: cnn.Inception(4, 2, 3, (2, 3), 2), ValueError, "c2"),
    (lambda: cnn.Inception(4, 2, (2, 3), (0, 3), 2), ValueError, "c3"),
    (lambda: cnn.Inception(4, 0, (2, 3), (2, 3), 2), ValueError, "c1"),
    (lambda: cnn.Residual(4, 8, stride=0), ValueError, "stride"),
    (lambda: cnn.Residual(-4, 8), ValueError, "in_channels"),
    (lambda: cnn.Bottleneck(8, 0, 8), ValueError, "mid_channels"),
    (lambda: cnn.ResNet(channels=()), ValueError, "channels"),
    (lambda: cnn.ResNet(channels=16), ValueError, "channels"),
    (lambda: cnn.ResNet(channels=(16, 0)), ValueError, "channels"),
    (lambda: cnn.ResNet(blocks=0), ValueError, "blocks"),
    (lambda: cnn.LeNet(dropout=1.0), ValueError, "dropout"),
    (lambda: cnn.LeNet(width=(6,)), ValueError, "width"),
    (lambda: cnn.LeNet(modern="yes"), TypeError, "modern"),
    (lambda: cnn.LeNet(hidden=(120, 0)), ValueError, "hidden"),
    (lambda: cnn.BatchNorm(0), ValueError, "num_features"),
    (lambda: cnn.BatchNorm(3, momentum=-0.1), ValueError, "momentum"),
])
def test_architectures_reject_bad_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_architectures_accept_numpy_integers():
    n = np.int64
    assert cnn.vgg_block(n(1), n(3), n(4))(torch.randn(1, 3, 4, 4)).shape == (1, 4, 2, 2)
    assert cnn.Residual(n(2), n(4), stride=n(2))(torch.randn(1, 2, 4, 4)).shape == (1, 4, 2, 2)
    assert cnn.ResNet(n(3), channels=[n(4)])(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert cnn.Inception(n(2), n(1), (n(1), n(2)), (n(1), n(1)), n(1))(torch.randn(1, 2, 3, 3)).shape == (1, 5, 3, 3)


@pytest.mark.parametrize("module, x, error, match", [
    (cnn.vgg_block(1, 3, 4), torch.randn(1, 2, 4, 4), ValueError, r"vgg_block expects x of shape \(B, 3, H, W\)"),
    (cnn.vgg_block(1, 3, 4), torch.randn(1, 3, 1, 4), ValueError, "H, W >= 2"),
    (cnn.vgg_block(1, 3, 4), torch.randn(3, 4, 4), ValueError, "vgg_block"),
    (cnn.nin_block(3, 4, 5), torch.randn(1, 3, 4, 4), ValueError, "H, W >= 5"),
    (cnn.NiN(10, 4), torch.randn(1, 1, 3, 28), ValueError, r"NiN expects x of shape \(B, 1, H, W\) with H, W >= 4"),
    (cnn.NiN(10, 4), torch.randn(1, 3, 28, 28), ValueError, "NiN"),
    (cnn.NiN(10, 4), torch.zeros(1, 1, 28, 28, dtype=torch.uint8), ValueError, "floating"),
    (cnn.Inception(4, 1, (1, 1), (1, 1), 1), torch.randn(1, 3, 5, 5), ValueError, "Inception"),
    (cnn.Residual(4, 4), torch.randn(1, 5, 5, 5), ValueError, "Residual"),
    (cnn.Residual(4, 4), np.zeros((1, 4, 5, 5), dtype=np.float32), TypeError, "torch.Tensor"),
    (cnn.Bottleneck(8, 2, 8), torch.randn(2, 8, 4), ValueError, "Bottleneck"),
    (cnn.ResNet(channels=(4,)), torch.randn(1, 3, 28, 28), ValueError, "ResNet"),
    (cnn.LeNet(), torch.zeros(1, 1, 28, 28, dtype=torch.long), ValueError, "floating"),
    (cnn.LeNet(), [[0.0]], TypeError, "torch.Tensor"),
])
def test_architectures_reject_bad_input(module, x, error, match):
    with pytest.raises(error, match=match):
        module(x)


def test_blocks_keep_the_parameter_names_of_a_plain_sequential():
    block = cnn.vgg_block(2, 3, 4)
    assert isinstance(block, nn.Sequential)
    assert list(block.state_dict())[:3] == ["0.weight", "1.weight", "1.bias"]
    assert list(cnn.nin_block(3, 4, 3).state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                                         "4.weight", "4.bias"]


# AlexNet, the deep stacks, rotation and bilinear sampling ------------------------

def test_alexnet_matches_the_paper():
    from dlbook.bench import count_parameters

    model = cnn.AlexNet()
    assert count_parameters(model) == 62_378_344
    # the paper's two GPUs: conv2, conv4 and conv5 see half the channels ("60 million parameters")
    assert count_parameters(cnn.AlexNet(two_gpus=True)) == 60_965_224
    with torch.no_grad():
        x = torch.zeros(2, 3, 224, 224)
        assert model.features[:4](x).shape == (2, 96, 27, 27)  # 55x55 after conv1, 27x27 after pooling
        assert model.eval()(x).shape == (2, 1000)
    with pytest.raises(ValueError, match=r"\(B, 3, 224, 224\)"):
        model(torch.zeros(1, 3, 227, 227))


@pytest.mark.parametrize("residual", [True, False])
def test_deep_stack(residual):
    from dlbook.bench import count_parameters, layer_costs

    model = cnn.DeepStack(blocks=9, residual=residual)
    weighted = [c for c in layer_costs(model, torch.zeros(2, 1, 28, 28))]
    assert len(weighted) == 20  # 19 convolutions and the linear layer
    assert count_parameters(model) == count_parameters(cnn.DeepStack(blocks=9, residual=not residual))
    assert all((b.shortcut is not None) == residual for b in model.blocks)


def test_a_block_without_shortcut_is_its_plain_layers():
    torch.manual_seed(0)
    block = cnn.Residual(4, 4, shortcut=False).eval()
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.equal(block(x), F.relu(block.f(x)))
    with pytest.raises(TypeError, match="shortcut"):
        cnn.Residual(4, 4, shortcut="no")


def test_rotate_by_quarter_turns_matches_rot90():
    x = torch.rand(3, 2, 8, 8)
    for k in (1, 2, 3):
        assert torch.allclose(cnn.rotate(x, 90 * k, fill=0.0), torch.rot90(x, k, dims=(-2, -1)), atol=1e-6)
    assert torch.allclose(cnn.rotate(x, 0.0), x, atol=1e-6)


def test_rotate_fills_with_each_images_background():
    x = torch.full((2, 1, 9, 9), -0.5)
    x[1] = 2.0
    x[:, :, 3:6, 3:6] = 5.0
    out = cnn.rotate(x, 45)
    assert out[0, 0, 0, 0].item() == pytest.approx(-0.5) and out[1, 0, 0, 0].item() == pytest.approx(2.0)


@pytest.mark.parametrize("args, error, match", [
    ((torch.rand(2, 8, 8), 10), ValueError, "rotate expects"),
    ((torch.rand(1, 1, 8, 8), float("nan")), ValueError, "degrees"),
    ((torch.zeros(1, 1, 8, 8, dtype=torch.long), 10), ValueError, "floating"),
    (("image", 10), TypeError, "torch.Tensor"),
])
def test_rotate_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        cnn.rotate(*args)


def test_bilinear_sample_matches_grid_sample_inside_and_outside():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 6, 7)
    theta = torch.randn(3, 2, 3) * 0.6 + torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])  # reaches outside too
    grid = F.affine_grid(theta, [3, 2, 5, 9], align_corners=False)
    assert (grid.abs() > 1).any()
    assert torch.allclose(cnn.bilinear_sample(x, grid), F.grid_sample(x, grid, align_corners=False), atol=1e-6)


def test_bilinear_sampling_is_differentiable_in_the_position():
    x = torch.rand(1, 1, 6, 6)
    shift = torch.tensor(0.13, requires_grad=True)
    theta = torch.stack([torch.stack([torch.tensor(1.0), torch.tensor(0.0), shift]),
                         torch.tensor([0.0, 1.0, 0.0])])[None]
    out = cnn.bilinear_sample(x, F.affine_grid(theta, [1, 1, 6, 6], align_corners=False))
    (grad,) = torch.autograd.grad(out.sum(), shift)
    assert grad.abs().item() > 0


def test_bilinear_sample_bad_grid():
    with pytest.raises(ValueError, match="grid must have shape"):
        cnn.bilinear_sample(torch.rand(2, 1, 4, 4), torch.zeros(1, 4, 4, 2))


def test_rotate_takes_one_angle_per_image():
    x = torch.rand(2, 1, 8, 8)
    both = cnn.rotate(x, torch.tensor([90.0, 180.0]), fill=0.0)
    assert torch.allclose(both[0], torch.rot90(x[0], 1, dims=(-2, -1)), atol=1e-6)
    assert torch.allclose(both[1], torch.rot90(x[1], 2, dims=(-2, -1)), atol=1e-6)
    with pytest.raises(ValueError, match="one per image"):
        cnn.rotate(x, torch.tensor([1.0, 2.0, 3.0]))


def test_random_rotation_draws_from_the_global_generator():
    x = torch.rand(4, 1, 8, 8)
    torch.manual_seed(3)
    a = cnn.random_rotation(x, 40)
    torch.manual_seed(3)
    b = cnn.random_rotation(x, 40)
    assert torch.equal(a, b) and not torch.allclose(a, x)
    assert torch.equal(cnn.random_rotation(x, 0), cnn.rotate(x, 0.0))
    with pytest.raises(ValueError, match="max_degrees"):
        cnn.random_rotation(x, 200)


def test_lenet_without_batch_norm_keeps_its_biases():
    from dlbook.bench import count_parameters

    plain = cnn.LeNet(modern=True, width=(16, 32), hidden=(128, 84), batch_norm=False)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    # the normalized model: its BN layers add 2 per channel, the biases in front of them go
    assert count_parameters(cnn.mnist_classifier()) == count_parameters(plain) - (16 + 32 + 128 + 84) \
        + 2 * (16 + 32 + 128 + 84)
    with pytest.raises(TypeError, match="batch_norm"):
        cnn.LeNet(batch_norm="no")


def test_alexnet_lrn_uses_the_papers_alpha():
    lrn = cnn.AlexNet().features[2]
    # PyTorch divides alpha by size: 5e-4 / 5 is the paper's 1e-4
    assert isinstance(lrn, nn.LocalResponseNorm) and lrn.alpha / lrn.size == pytest.approx(1e-4)


def test_shift_and_zoom():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2, 3] = 1.0
    moved = cnn.shift(x, 2, fill=0.0)
    assert torch.allclose(moved[0, 0, 4, 5], torch.tensor(1.0), atol=1e-6)  # two right, two down
    assert torch.allclose(cnn.zoom(x, 1.0), x, atol=1e-6)
    big = torch.zeros(1, 1, 8, 8)
    big[0, 0, 3:5, 3:5] = 1.0
    assert cnn.zoom(big, 2.0, fill=0.0).sum() > 3 * big.sum()  # the square grows
    with pytest.raises(ValueError, match="factor"):
        cnn.zoom(x, 0)
    with pytest.raises(ValueError, match="theta"):
        cnn.affine(x, torch.zeros(3, 3))


@pytest.mark.parametrize("pixels", [8, -8, 100, 7.5])
def test_a_shift_that_leaves_nothing_of_the_image_is_refused(pixels):
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"pixels must lie in \[-7, 7\] for 8x8 images"):
        cnn.shift(x, pixels)
    assert cnn.shift(x, 7).shape == x.shape and cnn.shift(x, -7).shape == x.shape


# spatial transformer ----------------------------------------------------------

def test_spatial_transformer_starts_as_the_identity():
    stn = cnn.SpatialTransformer()
    x = torch.randn(3, 1, 28, 28)
    theta = stn.theta(x)
    assert theta.shape == (3, 2, 3)
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))
    assert torch.allclose(stn(x), x, atol=1e-5)


def test_spatial_transformer_resamples_through_its_theta_like_rotate():
    stn = cnn.SpatialTransformer()
    angle = torch.deg2rad(torch.tensor(30.0))
    with torch.no_grad():  # make the localization network answer a fixed rotation
        stn.head[-1].bias.copy_(torch.tensor([angle.cos(), -angle.sin(), 0, angle.sin(), angle.cos(), 0]))
    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # a bar on a background of 0, away from the border
    assert torch.allclose(stn(x), cnn.rotate(x, 30.0, fill=0.0), atol=1e-5)
    assert torch.allclose(cnn.rotation_degrees(stn.theta(x)), torch.tensor([30.0, 30.0]), atol=1e-4)


def test_spatial_transformer_learns_from_the_loss_behind_it():
    stn = cnn.SpatialTransformer()
    x = torch.randn(4, 1, 28, 28)
    target = cnn.rotate(x, 20.0)
    F.mse_loss(stn(x), target).backward()
    grads = [p.grad for p in stn.parameters()]
    assert all(g is not None for g in grads)
    assert stn.head[-1].bias.grad.abs().sum() > 0  # the loss reaches theta through the sampler


@pytest.mark.parametrize("x, match", [
    (torch.zeros(2, 3, 28, 28), r"\(B, 1, H, W\)"),
    (torch.zeros(2, 1, 32, 32), r"expects \(B, 1, 28, 28\)"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.long), "floating"),
])
def test_spatial_transformer_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        cnn.SpatialTransformer()(x)


def test_spatial_transformer_sizes():
    assert cnn.SpatialTransformer(in_channels=3, size=32)(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="at least 20"):
        cnn.SpatialTransformer(size=16)
    with pytest.raises(ValueError, match="in_channels"):
        cnn.SpatialTransformer(in_channels=0)


def test_rotation_degrees_reads_back_the_angle_of_rotate_and_ignores_scale():
    angles = torch.tensor([-170.0, -45.0, 0.0, 10.0, 90.0])
    a = torch.deg2rad(angles)
    rotation = torch.stack([torch.stack([a.cos(), -a.sin(), torch.zeros(5)], 1),
                            torch.stack([a.sin(), a.cos(), torch.zeros(5)], 1)], 1)  # (5, 2, 3)
    assert torch.allclose(cnn.rotation_degrees(rotation), angles, atol=1e-4)
    assert torch.allclose(cnn.rotation_degrees(0.5 * rotation), angles, atol=1e-4)
    # rotate() turns a picture the way its theta's angle says (counter-clockwise as seen)
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 2] = 1.0  # a dot above the centre
    turned = cnn.rotate(x, 90.0, fill=0.0)
    assert turned[0, 0, 2, 0] > 0.99  # now left of the centre
    with pytest.raises(ValueError, match=r"\(B, 2, 3\)"):
        cnn.rotation_degrees(torch.zeros(2, 3))


def test_transformed_classifier_trains_only_the_transformer():
    classifier = cnn.mnist_classifier()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    model = cnn.TransformedClassifier(classifier)
    model.train()
    assert model.transformer.training and not classifier.training  # BN and dropout stay as trained
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    with torch.no_grad():
        assert torch.allclose(model(x), classifier(x), atol=1e-4)  # the identity at the start
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())  # running stats too
    assert model.transformer.head[-1].bias.grad.abs().sum() > 0
    assert count_parameters(model) == count_parameters(model.transformer)
    with pytest.raises(TypeError, match="classifier"):
        cnn.TransformedClassifier(lambda v: v)
    with pytest.raises(TypeError, match="SpatialTransformer"):
        cnn.TransformedClassifier(classifier, nn.Identity())
