"""Convolutional networks, from the cross-correlation up to a small ResNet.

Shapes use the book's legend: B batch, C channels, H and W height and
width, K classes; ``kh, kw`` are kernel height and width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_bool, check_float, check_int, check_pair, check_tensor


def _check_images(x, who: str, channels: int, min_size: int = 1) -> torch.Tensor:
    """``x`` when it is a floating (B, channels, H, W) tensor with H, W >= ``min_size``."""
    check_tensor(x, "x")
    if x.dim() != 4 or x.shape[1] != channels or min(x.shape[2:]) < min_size:
        raise ValueError(f"{who} expects x of shape (B, {channels}, H, W) with H, W >= {min_size}; "
                         f"got shape {tuple(x.shape)}")
    check_tensor(x, "x", floating=True)
    return x


def conv_output_size(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    r"""Output length of a convolution or pooling along one axis.

    $W_\text{out} = \lfloor (W - k + 2P) / S \rfloor + 1$ for an input of length $W$,
    a kernel of length $k$, padding $P$ and stride $S$. When $(W - k + 2P)$
    is not a multiple of $S$, the last window would hang over the edge;
    PyTorch drops it, which is the floor.

    Raises:
        ValueError: for non-positive sizes, negative padding, or a kernel
            larger than the padded input.
    """
    size, kernel = check_int(size, "size", 1), check_int(kernel, "kernel", 1)
    padding, stride = check_int(padding, "padding", 0), check_int(stride, "stride", 1)
    if kernel > size + 2 * padding:
        raise ValueError(f"kernel {kernel} is larger than the padded input {size} + 2*{padding}")
    return (size - kernel + 2 * padding) // stride + 1


def corr2d(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """2-D cross-correlation of one image with one kernel, by two loops.

    $Y[i, j] = \\sum_{u, v} X[i + u, j + v] \\, w[u, v]$ for the kernel ``w``.

    Shapes:
        x: (H, W), w: (kh, kw) -> (H - kh + 1, W - kw + 1)
    """
    check_tensor(x, "x")
    check_tensor(w, "w")
    if x.dim() != 2 or w.dim() != 2:
        raise ValueError(f"corr2d expects a 2-D image and a 2-D kernel; got {tuple(x.shape)} and {tuple(w.shape)}")
    kh, kw = w.shape
    H, W = x.shape
    if kh == 0 or kw == 0:
        raise ValueError(f"the kernel must be at least 1x1; got shape {tuple(w.shape)}")
    if kh > H or kw > W:
        raise ValueError(f"kernel {tuple(w.shape)} is larger than the image {tuple(x.shape)}")
    y = torch.zeros(H - kh + 1, W - kw + 1, dtype=torch.result_type(x, w), device=x.device)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] = (x[i:i + kh, j:j + kw] * w).sum()
    return y


def _prepare_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding):
    """Check the arguments of a convolution, pad x, and work out the output size.

    The rules are F.conv2d's: x, weight and bias of one floating dtype on one
    device, at least one channel in and out, a kernel of at least 1x1, and no
    negative padding (which would crop the input).

    Returns the padded x, the strides (sh, sw) and the output size (H_out, W_out).
    """
    check_tensor(x, "x")
    check_tensor(weight, "weight")
    if x.dim() != 4:
        raise ValueError(f"expected input (B, C, H, W); got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"expected weight (C_out, C_in, kh, kw); got shape {tuple(weight.shape)}")
    if min(weight.shape) == 0:
        raise ValueError(f"weight (C_out, C_in, kh, kw) needs every size >= 1; got {tuple(weight.shape)}")
    if min(x.shape[2:]) == 0:
        raise ValueError(f"input (B, C, H, W) needs H, W >= 1; got shape {tuple(x.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"input has {x.shape[1]} channels but the weight expects {weight.shape[1]}")
    if bias is not None:
        check_tensor(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"expected bias of shape ({weight.shape[0]},); got {tuple(bias.shape)}")
    tensors = {"x": x, "weight": weight} | ({} if bias is None else {"bias": bias})
    if not x.is_floating_point() or any(t.dtype != x.dtype for t in tensors.values()):
        raise ValueError("x, weight and bias must share one floating dtype; got "
                         + ", ".join(f"{name} {t.dtype}" for name, t in tensors.items()))
    if any(t.device != x.device for t in tensors.values()):
        raise ValueError("x, weight and bias must be on one device; got "
                         + ", ".join(f"{name} on {t.device}" for name, t in tensors.items()))
    (sh, sw), (ph, pw) = check_pair(stride, "stride", 1), check_pair(padding, "padding", 0)
    kh, kw = weight.shape[2:]
    H_out = conv_output_size(x.shape[2], kh, ph, sh)  # checks that the kernel fits
    W_out = conv_output_size(x.shape[3], kw, pw, sw)
    x = F.pad(x, (pw, pw, ph, ph))  # (B, C_in, H + 2ph, W + 2pw)
    return x, (sh, sw), (H_out, W_out)


def conv2d_loops(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 stride=1, padding=0) -> torch.Tensor:
    """Multi-channel convolution (cross-correlation) with a loop over output pixels.

    $Y[o, i, j] = \\text{bias}_o + \\sum_{c, u, v} X[c, iS + u, jS + v] \\, w[o, c, u, v]$
    for each image of the batch, with $X$ zero-padded by ``padding`` and $w$ the ``weight``.

    Shapes:
        x: (B, C_in, H, W), weight: (C_out, C_in, kh, kw), bias: (C_out,)
        -> (B, C_out, H_out, W_out)
    """
    x, (sh, sw), (H_out, W_out) = _prepare_conv(x, weight, bias, stride, padding)
    B = x.shape[0]
    C_out, _, kh, kw = weight.shape
    y = x.new_zeros(B, C_out, H_out, W_out)
    for i in range(H_out):
        for j in range(W_out):
            window = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]  # (B, C_in, kh, kw)
            y[:, :, i, j] = torch.einsum("bcuv,ocuv->bo", window, weight)  # (B, C_out)
    if bias is not None:
        y = y + bias.view(1, C_out, 1, 1)
    return y


def conv2d_unfold(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride=1, padding=0) -> torch.Tensor:
    """Convolution as one matrix product ("im2col").

    The C_in x kh x kw block under every output position is laid out as one
    row of length C_in*kh*kw; the kernels, flattened the same way, are the
    rows of a (C_out, C_in*kh*kw) matrix, and one matmul computes every
    output pixel.

    Shapes:
        x: (B, C_in, H, W), weight: (C_out, C_in, kh, kw) -> (B, C_out, H_out, W_out)
    """
    x, (sh, sw), (H_out, W_out) = _prepare_conv(x, weight, bias, stride, padding)
    B, C_in = x.shape[:2]
    C_out, _, kh, kw = weight.shape
    patches = x.unfold(2, kh, sh).unfold(3, kw, sw)  # (B, C_in, H_out, W_out, kh, kw)
    cols = patches.permute(0, 2, 3, 1, 4, 5).reshape(B, H_out * W_out, C_in * kh * kw)  # (B, H_out*W_out, C_in*kh*kw)
    y = cols @ weight.reshape(C_out, -1).T  # (B, H_out*W_out, C_out)
    if bias is not None:
        y = y + bias
    return y.transpose(1, 2).reshape(B, C_out, H_out, W_out)  # (B, C_out, H_out, W_out)


def pool2d(x: torch.Tensor, size: int = 2, stride: int | None = None, mode: str = "max") -> torch.Tensor:
    """Max or average pooling, channel by channel, with no parameters.

    Shapes:
        x: (B, C, H, W) -> (B, C, H_out, W_out)
    """
    check_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"pool2d expects (B, C, H, W); got shape {tuple(x.shape)}")
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg'; got {mode!r}")
    if mode == "avg":
        check_tensor(x, "x (average pooling)", floating=True)
    size = check_int(size, "size", 1)
    stride = size if stride is None else check_int(stride, "stride", 1)
    conv_output_size(x.shape[2], size, 0, stride)  # validates the sizes
    conv_output_size(x.shape[3], size, 0, stride)
    windows = x.unfold(2, size, stride).unfold(3, size, stride)  # (B, C, H_out, W_out, size, size)
    windows = windows.flatten(-2)  # (B, C, H_out, W_out, size*size)
    return windows.amax(-1) if mode == "max" else windows.mean(-1)


def batch_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
               running_mean: torch.Tensor, running_var: torch.Tensor, training: bool,
               momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    r"""Batch normalization over (B, H, W) for each channel.

    Training: $\hat x = (x - \mu_B) / \sqrt{\sigma_B^2 + \epsilon}$ with the
    batch's own mean and (biased) variance, and the running statistics move
    towards them: $r \leftarrow (1 - m) r + m \cdot s$, using the unbiased
    variance for $r_{\text{var}}$, as PyTorch does. Evaluation: the running
    statistics replace the batch's. Output $y = \gamma \hat x + \beta$.

    ``running_mean`` and ``running_var`` are updated in place when training.

    Shapes:
        x: (B, C, H, W) or (B, C); gamma, beta, running_*: (C,)
    """
    check_tensor(x, "x")
    if x.dim() not in (2, 4):
        raise ValueError(f"batch_norm expects x of shape (B, C) or (B, C, H, W); got shape {tuple(x.shape)}")
    check_tensor(x, "x", floating=True)
    C = x.shape[1]
    for name, t in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if check_tensor(t, name).shape != (C,):
            raise ValueError(f"{name} must have shape ({C},); got {tuple(t.shape)}")
    training = check_bool(training, "training")
    momentum = check_float(momentum, "momentum", 0.0, 1.0)
    eps = check_float(eps, "eps", 0.0)
    dims = (0,) if x.dim() == 2 else (0, 2, 3)
    shape = (1, C) if x.dim() == 2 else (1, C, 1, 1)
    if training:
        n = x.numel() // C if C else 0
        if n < 2:
            raise ValueError("batch_norm in training needs more than one value per channel")
        mean = x.mean(dim=dims)  # (C,)
        var = x.var(dim=dims, unbiased=False)  # (C,)
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
    else:
        mean, var = running_mean, running_var
    x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    return gamma.view(shape) * x_hat + beta.view(shape)


class BatchNorm(nn.Module):
    """Batch normalization with learnable scale and shift, from scratch.

    Behaves like ``nn.BatchNorm2d`` (4-D input) or ``nn.BatchNorm1d`` (2-D).
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        num_features = check_int(num_features, "num_features", 1)
        self.momentum = check_float(momentum, "momentum", 0.0, 1.0)
        self.eps = check_float(eps, "eps", 0.0)
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_norm(x, self.gamma, self.beta, self.running_mean, self.running_var,
                          self.training, self.momentum, self.eps)


class LeNet(nn.Module):
    """LeNet-5 (LeCun et al., 1998) in its modern form, for 28x28 inputs.

    Two 5x5 convolutions with pooling, then three fully connected layers.
    ``modern=False`` gives the classic sigmoid/average-pool network;
    ``modern=True`` uses ReLU, max pooling and batch normalization (the
    layers in front of it then have no bias), the choices later networks
    made (Krizhevsky et al. report ReLU trained several times faster than
    tanh; Ioffe and Szegedy that batch normalization needed far fewer
    steps); the book does not measure them for this network;
    ``batch_norm=False`` leaves the normalization out of the modern network
    (and gives the layers their biases back), to measure what it is worth.
    ``width`` scales the channels (6 and 16 for LeNet-5).

    Shapes:
        x: (B, 1, 28, 28) -> (B, K)
    """

    def __init__(self, num_classes: int = 10, modern: bool = True, width: tuple[int, int] = (6, 16),
                 hidden: tuple[int, int] = (120, 84), dropout: float = 0.0, batch_norm: bool = True):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", 1)
        modern = check_bool(modern, "modern")
        c1, c2 = check_pair(width, "width", 1)
        hidden = check_pair(hidden, "hidden", 1)
        dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        act = nn.ReLU if modern else nn.Sigmoid
        pool = nn.MaxPool2d if modern else nn.AvgPool2d
        # A layer followed by batch norm has no bias: BN subtracts the mean,
        # which would cancel it, and adds its own shift beta.
        norm = modern and check_bool(batch_norm, "batch_norm")
        bias = not norm
        norm2d = (lambda c: nn.BatchNorm2d(c)) if norm else (lambda c: nn.Identity())
        norm1d = (lambda c: nn.BatchNorm1d(c)) if norm else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5, padding=2, bias=bias), norm2d(c1), act(), pool(2),  # (B, c1, 14, 14)
            nn.Conv2d(c1, c2, 5, bias=bias), norm2d(c2), act(), pool(2),  # (B, c2, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, c2*25)
            nn.Linear(c2 * 25, hidden[0], bias=bias), norm1d(hidden[0]), act(), nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1], bias=bias), norm1d(hidden[1]), act(), nn.Dropout(dropout),
            nn.Linear(hidden[1], num_classes),  # (B, K)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"LeNet expects (B, 1, 28, 28); got shape {tuple(x.shape)}")
        check_tensor(x, "x", floating=True)
        return self.classifier(self.features(x))


class Block(nn.Sequential):
    """An ``nn.Sequential`` that checks its input before running its layers:
    a floating (B, in_channels, H, W) tensor with H, W >= ``min_size``.

    What :func:`vgg_block` and :func:`nin_block` return; its parameters have
    the names a plain ``nn.Sequential`` would give them.
    """

    def __init__(self, name: str, in_channels: int, min_size: int, *layers: nn.Module):
        super().__init__(*layers)
        self.name, self.in_channels, self.min_size = name, in_channels, min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, self.name, self.in_channels, self.min_size)
        return super().forward(x)


def vgg_block(num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = True) -> Block:
    """VGG block: ``num_convs`` 3x3 convolutions (padding 1), then a 2x2 max pool.

    With ``batch_norm``, each convolution is followed by batch normalization
    and has no bias of its own: BN subtracts the mean, which would cancel it,
    and adds its own shift.

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H // 2, W // 2)
    """
    num_convs = check_int(num_convs, "num_convs", 1)
    in_channels = check_int(in_channels, "in_channels", 1)
    out_channels = check_int(out_channels, "out_channels", 1)
    batch_norm = check_bool(batch_norm, "batch_norm")
    layers = []
    for i in range(num_convs):
        c_in = in_channels if i == 0 else out_channels
        layers += [nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(out_channels)] if batch_norm else []
        layers += [nn.ReLU()]
    layers.append(nn.MaxPool2d(2))
    return Block("vgg_block", in_channels, 2, *layers)


def nin_block(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
              padding: int = 0) -> Block:
    """Network-in-Network block: one convolution, then two 1x1 convolutions.

    The 1x1 convolutions act as a small MLP applied at every pixel.

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H_out, W_out)
    """
    in_channels = check_int(in_channels, "in_channels", 1)
    out_channels = check_int(out_channels, "out_channels", 1)
    kernel_size = check_int(kernel_size, "kernel_size", 1)
    stride, padding = check_int(stride, "stride", 1), check_int(padding, "padding", 0)
    return Block(
        "nin_block", in_channels, max(1, kernel_size - 2 * padding),
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 1), nn.ReLU(),
    )


class NiN(nn.Module):
    """A small NiN for 28x28 images: no fully connected layer at all; the last
    block has one channel per class and global average pooling reads them out.

    Any H, W >= 4 works (two 2x2 poolings must leave a pixel).

    Shapes:
        x: (B, 1, 28, 28) -> (B, K)
    """

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", 1)
        width = check_int(width, "width", 1)
        self.net = nn.Sequential(
            nin_block(1, width, 5, padding=2), nn.MaxPool2d(2),  # (B, width, 14, 14)
            nin_block(width, 2 * width, 3, padding=1), nn.MaxPool2d(2),  # (B, 2w, 7, 7)
            nin_block(2 * width, num_classes, 3, padding=1),  # (B, K, 7, 7)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, K)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_check_images(x, "NiN", 1, 4))


class Inception(nn.Module):
    """GoogLeNet's Inception block: four parallel paths, concatenated on channels.

    Paths: 1x1 conv; 1x1 then 3x3; 1x1 then 5x5; 3x3 max pool then 1x1.
    ``c2`` and ``c3`` are (reduce, out) pairs.

    Shapes:
        (B, in_channels, H, W) -> (B, c1 + c2[1] + c3[1] + c4, H, W)
    """

    def __init__(self, in_channels: int, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", 1)
        c1, c4 = check_int(c1, "c1", 1), check_int(c4, "c4", 1)
        for name, pair in (("c2", c2), ("c3", c3)):
            if not isinstance(pair, (tuple, list)):
                raise ValueError(f"{name} must be a (reduce, out) pair of integers; got {pair!r}")
        c2, c3 = check_pair(c2, "c2", 1), check_pair(c3, "c3", 1)
        self.p1 = nn.Sequential(nn.Conv2d(in_channels, c1, 1), nn.ReLU())
        self.p2 = nn.Sequential(nn.Conv2d(in_channels, c2[0], 1), nn.ReLU(),
                                nn.Conv2d(c2[0], c2[1], 3, padding=1), nn.ReLU())
        self.p3 = nn.Sequential(nn.Conv2d(in_channels, c3[0], 1), nn.ReLU(),
                                nn.Conv2d(c3[0], c3[1], 5, padding=2), nn.ReLU())
        self.p4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                nn.Conv2d(in_channels, c4, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "Inception", self.in_channels)
        return torch.cat([self.p1(x), self.p2(x), self.p3(x), self.p4(x)], dim=1)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The identity when a block keeps the shape, else a 1x1 convolution with BN."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class Residual(nn.Module):
    """The basic residual block of ResNet: $y = \\mathrm{ReLU}(f(x) + s(x))$.

    $f$ is 3x3 conv, BN, ReLU, 3x3 conv, BN. The shortcut $s$ is the identity,
    or a 1x1 convolution (with BN) when the shape changes (stride or channels).
    A convolution followed by BN has no bias: BN's shift replaces it.
    ``shortcut=False`` leaves the shortcut out: two plain layers.

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", 1)
        out_channels = check_int(out_channels, "out_channels", 1)
        stride = check_int(stride, "stride", 1)
        self.f = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels),
        )
        # shortcut=False: the same two layers as a plain stack, y = ReLU(f(x)), for comparison
        self.shortcut = _shortcut(in_channels, out_channels, stride) if check_bool(shortcut, "shortcut") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "Residual", self.in_channels)
        if self.shortcut is None:
            return F.relu(self.f(x))
        return F.relu(self.f(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """The bottleneck residual block: 1x1 (reduce), 3x3, 1x1 (expand), plus shortcut.

    Cheaper than two 3x3 convolutions at the full width, which is why the
    deep ResNets (50 layers and more) use it.

    Shapes:
        (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride)
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", 1)
        mid_channels = check_int(mid_channels, "mid_channels", 1)
        out_channels = check_int(out_channels, "out_channels", 1)
        stride = check_int(stride, "stride", 1)
        self.f = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, mid_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(mid_channels), nn.ReLU(),
            nn.Conv2d(mid_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "Bottleneck", self.in_channels)
        return F.relu(self.f(x) + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet for 28x28 grey images.

    A 3x3 stem, then one stage of ``blocks`` basic residual blocks per entry
    of ``channels`` (each stage after the first halves H and W), global
    average pooling and one linear layer.

    Shapes:
        x: (B, 1, 28, 28) -> (B, K)
    """

    def __init__(self, num_classes: int = 10, channels: tuple[int, ...] = (16, 32, 64), blocks: int = 1):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", 1)
        blocks = check_int(blocks, "blocks", 1)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, (tuple, list)) or not channels:
            raise ValueError(f"channels must be a non-empty tuple of integers; got {channels!r}")
        channels = [check_int(c, "every entry of channels", 1) for c in channels]
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels[0]), nn.ReLU())  # (B, c0, 28, 28)
        stages, c_in = [], channels[0]
        for i, c in enumerate(channels):
            for b in range(blocks):
                stages.append(Residual(c_in, c, stride=2 if (i > 0 and b == 0) else 1))
                c_in = c
        self.stages = nn.Sequential(*stages)  # (B, c_last, 28 / 2^(len-1), ...)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))  # (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(_check_images(x, "ResNet", 1))))


class DeepStack(nn.Module):
    """A deep stack of 3x3 convolutions with batch norm, with or without shortcuts.

    A stride-2 stem convolution (28x28 to 14x14), then ``blocks`` basic
    blocks (:class:`Residual` with 16 channels: two 3x3 convolutions, each
    with BN), global average pooling and a linear layer: ``2 * blocks + 2``
    layers with weights (9 blocks: 20). ``residual=False`` drops every
    shortcut, leaving a plain stack of the same layers and parameters.

    Shapes:
        x: (B, 1, 28, 28) -> (B, K)
    """

    def __init__(self, blocks: int = 9, channels: int = 16, residual: bool = True, num_classes: int = 10):
        super().__init__()
        blocks = check_int(blocks, "blocks", 1)
        channels = check_int(channels, "channels", 1)
        residual = check_bool(residual, "residual")
        num_classes = check_int(num_classes, "num_classes", 1)
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())  # (B, C, 14, 14)
        self.blocks = nn.Sequential(*(Residual(channels, channels, shortcut=residual) for _ in range(blocks)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))  # (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(_check_images(x, "DeepStack", 1))))


class AlexNet(nn.Module):
    """AlexNet (Krizhevsky, Sutskever and Hinton, 2012) for 224x224 colour images.

    Five convolutions (96, 256, 384, 384 and 256 channels; 11x11 with stride
    4, 5x5, then three 3x3) with ReLU, local response normalization after
    the first two, overlapping 3x3 max pooling with stride 2 after the
    first, second and fifth, then three fully connected layers (4096, 4096,
    K) with dropout before the first two. ``two_gpus=True`` gives the
    paper's split over two GPUs: the second, fourth and fifth convolutions
    see only the half of the channels on their own GPU, which is a grouped
    convolution (``groups=2``). Padding 2 in the first layer makes a 224x224
    input give 55x55, as the paper's figure says.

    Shapes:
        x: (B, 3, 224, 224) -> (B, K)
    """

    def __init__(self, num_classes: int = 1000, two_gpus: bool = False, dropout: float = 0.5):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", 1)
        g = 2 if check_bool(two_gpus, "two_gpus") else 1
        dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)

        def lrn():
            # The paper divides by (k + alpha * sum of squares)^beta with alpha = 1e-4;
            # PyTorch's layer divides alpha by size, so the paper's value is 5 * 1e-4.
            return nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0)

        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(), lrn(),  # (B, 96, 55, 55)
            nn.MaxPool2d(3, stride=2),  # (B, 96, 27, 27)
            nn.Conv2d(96, 256, 5, padding=2, groups=g), nn.ReLU(), lrn(),  # (B, 256, 27, 27)
            nn.MaxPool2d(3, stride=2),  # (B, 256, 13, 13)
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),  # (B, 384, 13, 13)
            nn.Conv2d(384, 384, 3, padding=1, groups=g), nn.ReLU(),  # (B, 384, 13, 13)
            nn.Conv2d(384, 256, 3, padding=1, groups=g), nn.ReLU(),  # (B, 256, 13, 13)
            nn.MaxPool2d(3, stride=2),  # (B, 256, 6, 6)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 9216)
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, num_classes),  # (B, K)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        if x.dim() != 4 or x.shape[1:] != (3, 224, 224):
            raise ValueError(f"AlexNet expects (B, 3, 224, 224); got shape {tuple(x.shape)}")
        return self.classifier(self.features(check_tensor(x, "x", floating=True)))


def affine(x: torch.Tensor, theta: torch.Tensor, fill: float | None = None) -> torch.Tensor:
    """Resample each image through the affine map ``theta`` (bilinear).

    Output position $\\mathbf{p}$ (from $-1$ at the left or top edge to $1$
    at the right or bottom edge) reads the input at
    $\\theta \\, (p_x, p_y, 1)^\\top$. Pixels read from outside the image take
    ``fill`` (default: each image's minimum, its background).

    Shapes:
        x: (B, C, H, W), theta: (2, 3) or (B, 2, 3) -> (B, C, H, W)
    """
    _check_images(x, "affine", x.shape[1] if isinstance(x, torch.Tensor) and x.dim() == 4 else 1)
    check_tensor(theta, "theta", floating=True)
    if theta.shape not in ((2, 3), (len(x), 2, 3)):
        raise ValueError(f"theta must have shape (2, 3) or ({len(x)}, 2, 3); got {tuple(theta.shape)}")
    theta = theta.to(dtype=x.dtype, device=x.device).expand(len(x), 2, 3)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    base = x.amin(dim=(1, 2, 3), keepdim=True) if fill is None else check_float(fill, "fill")
    return F.grid_sample(x - base, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + base


def rotate(x: torch.Tensor, degrees, fill: float | None = None) -> torch.Tensor:
    """Rotate each image counter-clockwise (as seen) by ``degrees`` about its centre.

    ``degrees`` is one angle for all images or a tensor of one angle per
    image. See :func:`affine` for the sampling and ``fill``.

    Shapes:
        x: (B, C, H, W), degrees: () or (B,) -> (B, C, H, W)
    """
    _check_images(x, "rotate", x.shape[1] if isinstance(x, torch.Tensor) and x.dim() == 4 else 1)
    if isinstance(degrees, torch.Tensor):
        if degrees.shape not in ((), (len(x),)) or not torch.isfinite(degrees).all():
            raise ValueError(f"degrees must be a number or {len(x)} finite angles (one per image); "
                             f"got a tensor of shape {tuple(degrees.shape)}")
        a = torch.deg2rad(degrees.to(x.dtype)).expand(len(x)).to(x.device)  # (B,)
    else:
        a = torch.full((len(x),), math.radians(check_float(degrees, "degrees")), dtype=x.dtype, device=x.device)
    cos, sin, zero = a.cos(), a.sin(), torch.zeros_like(a)
    # With y pointing down, this theta turns the picture counter-clockwise as
    # seen on screen (like torch.rot90).
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    return affine(x, theta, fill)


def zoom(x: torch.Tensor, factor: float, fill: float | None = None) -> torch.Tensor:
    """Scale each image about its centre: ``factor`` > 1 enlarges, < 1 shrinks.

    Shapes:
        x: (B, C, H, W) -> (B, C, H, W)
    """
    factor = check_float(factor, "factor", 1e-3)
    return affine(x, torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]]), fill)


def shift(x: torch.Tensor, pixels: float, fill: float | None = None) -> torch.Tensor:
    """Move each image ``pixels`` to the right and ``pixels`` down (square images).

    A pixel is $2 / W$ on the grid from $-1$ to $1$. ``|pixels|`` is at most
    the side minus 1: a larger shift leaves nothing of the image.

    Shapes:
        x: (B, C, H, W) -> (B, C, H, W)
    """
    pixels = check_float(pixels, "pixels")
    _check_images(x, "shift", x.shape[1] if isinstance(x, torch.Tensor) and x.dim() == 4 else 1)
    side = min(x.shape[-2:])
    if abs(pixels) > side - 1:
        raise ValueError(f"pixels must lie in [-{side - 1}, {side - 1}] for {x.shape[-2]}x{x.shape[-1]} images "
                         f"(a shift of {side} moves the whole image out of the frame); got {pixels:g}")
    t = -2 * pixels / x.shape[-1]
    return affine(x, torch.tensor([[1.0, 0.0, t], [0.0, 1.0, t]]), fill)


def random_rotation(x: torch.Tensor, max_degrees: float = 30.0) -> torch.Tensor:
    """Augmentation: rotate each image by its own angle, uniform in [-max_degrees, max_degrees].

    The angles come from torch's global generator, so a seeded run is
    reproducible (and resumes exactly).

    Shapes:
        x: (B, C, H, W) -> (B, C, H, W)
    """
    max_degrees = check_float(max_degrees, "max_degrees", 0.0, 180.0)
    _check_images(x, "random_rotation", x.shape[1] if isinstance(x, torch.Tensor) and x.dim() == 4 else 1)
    angles = (torch.rand(len(x)) * 2 - 1) * max_degrees  # (B,)
    return rotate(x, angles)


def bilinear_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Read ``x`` at real-valued positions by bilinear interpolation, from scratch.

    ``grid[b, i, j] = (u, v)`` in [-1, 1] from the left (top) edge to the
    right (bottom) edge, as ``F.grid_sample(..., align_corners=False)``
    reads it; positions outside the image read zeros. Each output is a
    weighted sum of the four pixels around its position, with weights
    $(1 - |p_x - c_x|)(1 - |p_y - c_y|)$ that are linear in the position:
    that is what makes sampling differentiable with respect to where it reads.

    Shapes:
        x: (B, C, H, W), grid: (B, H_out, W_out, 2) -> (B, C, H_out, W_out)
    """
    _check_images(x, "bilinear_sample", x.shape[1] if isinstance(x, torch.Tensor) and x.dim() == 4 else 1)
    check_tensor(grid, "grid", floating=True)
    if grid.dim() != 4 or grid.shape[0] != x.shape[0] or grid.shape[-1] != 2:
        raise ValueError(f"grid must have shape ({x.shape[0]}, H_out, W_out, 2) for x of shape "
                         f"{tuple(x.shape)}; got {tuple(grid.shape)}")
    B, C, H, W = x.shape
    px = (grid[..., 0] + 1) * W / 2 - 0.5  # (B, H_out, W_out): column position, in pixels
    py = (grid[..., 1] + 1) * H / 2 - 0.5  # (B, H_out, W_out): row position, in pixels
    x0, y0 = px.floor(), py.floor()
    out = torch.zeros(B, C, *grid.shape[1:3], dtype=x.dtype, device=x.device)  # (B, C, H_out, W_out)
    for cx in (x0, x0 + 1):
        for cy in (y0, y0 + 1):
            weight = (1 - (px - cx).abs()) * (1 - (py - cy).abs())  # (B, H_out, W_out)
            inside = (cx >= 0) & (cx < W) & (cy >= 0) & (cy < H)
            index = (cy.clamp(0, H - 1) * W + cx.clamp(0, W - 1)).long().flatten(1)  # (B, H_out*W_out)
            values = x.flatten(2).gather(2, index[:, None].expand(B, C, -1))  # (B, C, H_out*W_out)
            out = out + values.view_as(out) * (weight * inside)[:, None]
    return out


class SpatialTransformer(nn.Module):
    r"""A spatial transformer (Jaderberg et al., 2015): look, then resample.

    A small *localization network* (as in PyTorch's spatial-transformer
    tutorial: two convolutions with max pooling and ReLU, then two linear
    layers) predicts for every image the six numbers $\theta$ of an affine
    map; output position $\mathbf{p}$ (from $-1$ to $1$ across the image)
    then reads the input at $\theta \, (p_x, p_y, 1)^\top$ through
    ``F.affine_grid`` and bilinear ``F.grid_sample``. Positions outside the
    image read the nearest border pixel (the background, for digits). The
    last layer starts at zero weights with the identity map as its bias, so
    an untrained transformer passes every image through unchanged; what it
    learns, it learns from the loss of whatever network reads its output.

    Shapes:
        x: (B, C, H, W) -> (B, C, H, W); :meth:`theta`: (B, C, H, W) -> (B, 2, 3)
    """

    def __init__(self, in_channels: int = 1, size: int = 28, hidden: int = 32):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", 1)
        size = check_int(size, "size", 1)
        hidden = check_int(hidden, "hidden", 1)
        side = size
        for kernel in (7, 5):  # each convolution, then a 2x2 max pool
            if side < kernel + 1:
                raise ValueError(f"size must be at least 20 (two convolutions, 7x7 and 5x5, each followed by "
                                 f"a 2x2 pooling); got {size}")
            side = conv_output_size(side, kernel) // 2
        self.size = size
        self.features = nn.Sequential(
            nn.Conv2d(self.in_channels, 8, 7), nn.MaxPool2d(2), nn.ReLU(),  # (B, 8, (H-6)/2, (W-6)/2)
            nn.Conv2d(8, 10, 5), nn.MaxPool2d(2), nn.ReLU(),  # (B, 10, side, side)
            nn.Flatten(),  # (B, 10*side*side)
        )
        self.head = nn.Sequential(nn.Linear(10 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, 6))  # (B, 6)
        with torch.no_grad():  # start at the identity map
            self.head[-1].weight.zero_()
            self.head[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """The affine map the localization network chooses for each image, (B, 2, 3)."""
        _check_images(x, "SpatialTransformer", self.in_channels)
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"SpatialTransformer(size={self.size}) expects (B, {self.in_channels}, "
                             f"{self.size}, {self.size}); got shape {tuple(x.shape)}")
        return self.head(self.features(x)).view(-1, 2, 3)  # (B, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta(x).to(x.dtype)  # (B, 2, 3); autocast may have lowered it
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class TransformedClassifier(nn.Module):
    """A :class:`SpatialTransformer` in front of a trained classifier that stays as it is.

    Only the transformer learns: ``classifier`` is frozen in place (its
    parameters stop requiring gradients, so pass a copy to keep the
    original trainable) and stays in evaluation mode, with its batch
    normalization's running statistics and its dropout as after its own
    training, even while the whole model trains. Whatever the transformer
    learns, it learns from the classifier's loss alone.

    Shapes:
        x: (B, C, H, W) -> the classifier's output, (B, K)
    """

    def __init__(self, classifier: nn.Module, transformer: SpatialTransformer | None = None):
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be an nn.Module; got {type(classifier).__name__}")
        if transformer is not None and not isinstance(transformer, SpatialTransformer):
            raise TypeError(f"transformer must be a SpatialTransformer; got {type(transformer).__name__}")
        self.transformer = SpatialTransformer() if transformer is None else transformer
        self.classifier = classifier.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "TransformedClassifier":
        super().train(mode)
        self.classifier.eval()  # frozen: its batch norm and dropout stay as trained
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transformer(x))


def rotation_degrees(theta: torch.Tensor) -> torch.Tensor:
    r"""The rotation in each affine map, in degrees, counter-clockwise as seen.

    The angle of the map's linear part $A = \theta_{:, :2}$, read as
    $\operatorname{atan2}(A_{10} - A_{01}, A_{00} + A_{11})$: exact for a
    rotation times a scale, and the nearest rotation's angle for a map with
    some shear. The sign is that of :func:`rotate`: the map through which
    ``rotate(x, degrees)`` samples, which turns the picture
    counter-clockwise by ``degrees``, has ``rotation_degrees`` equal to
    ``degrees``. A transformer that undoes a turn by $\alpha$ reads its
    input through a map of about $-\alpha$.

    Shapes:
        theta: (B, 2, 3) -> (B,)
    """
    check_tensor(theta, "theta", floating=True)
    if theta.dim() != 3 or theta.shape[1:] != (2, 3):
        raise ValueError(f"theta must have shape (B, 2, 3); got {tuple(theta.shape)}")
    a = theta[:, :, :2]
    return torch.rad2deg(torch.atan2(a[:, 1, 0] - a[:, 0, 1], a[:, 0, 0] + a[:, 1, 1]))


def receptive_field(kernels: list[int], strides: list[int] | None = None) -> int:
    """Receptive field of a stack of convolutions/poolings, in input pixels.

    $r_L = 1 + \\sum_l (k_l - 1) \\prod_{m < l} s_m$
    """
    lists = {}
    for name, values in (("kernels", kernels), ("strides", strides)):
        if values is None and name == "strides":
            continue
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
            raise ValueError(f"{name} must be a list of integers >= 1; got {values!r}")
        lists[name] = [check_int(v, f"every entry of {name}", 1) for v in values]
    kernels = lists["kernels"]
    strides = lists.get("strides", [1] * len(kernels))
    if len(strides) != len(kernels):
        raise ValueError(f"got {len(kernels)} kernels but {len(strides)} strides")
    r, jump = 1, 1
    for k, s in zip(kernels, strides):
        r += (k - 1) * jump
        jump *= s
    return r


EDGE_KERNEL = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]])


def mnist_classifier(num_classes: int = 10) -> LeNet:
    """The book's MNIST classifier: a modern LeNet (16 and 32 channels, BN, dropout 0.1).

    The CNN chapter trains it and saves it with :func:`dlbook.zoo.save_model`
    under the name ``"mnist_cnn"``; later chapters rebuild it with this
    function and load the weights, so its layers and their names never change
    (127,722 parameters for 10 classes).

    Shapes:
        x: (B, 1, 28, 28) -> (B, K)
    """
    return LeNet(num_classes, modern=True, width=(16, 32), hidden=(128, 84), dropout=0.1)


GEOMETRY_MAX = 40  # conv_geometry draws every pixel: larger inputs are unreadable (and slow)


def conv_geometry(size: int, kernel: int, padding: int = 0, stride: int = 1, fig=None):
    """Draw where a kernel slides over a padded input, and the output it makes.

    Left: the input (white) inside its zero padding (grey), the first window
    (red), the last window that fits (blue) and, when
    $(W - k + 2P)$ is not a multiple of $S$, the next window, which would
    hang over the edge and is dropped (dashed orange). Right: the output grid.

    Returns the matplotlib ``Figure`` (``fig`` when one is given, cleared first).
    """
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    n = conv_output_size(size, kernel, padding, stride)  # validates the arguments
    full = size + 2 * padding
    if full > GEOMETRY_MAX:
        raise ValueError(f"conv_geometry draws every pixel: size + 2*padding must be at most "
                         f"{GEOMETRY_MAX}; got {size} + 2*{padding} = {full}")
    if fig is not None and not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure or None; got {type(fig).__name__}")
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
    ax_in.set_title(f"input W={size}, padding P={padding}\nkernel k={kernel}, stride S={stride}", fontsize=11)
    ax_out.set_title(f"output {n}x{n}", fontsize=11)
    formula = f"W_out = floor(({size} - {kernel} + 2*{padding}) / {stride}) + 1 = floor({ratio:g}) + 1 = {n}"
    note = ("" if not remainder else
            f"\n(W - k + 2P)/S = {ratio:g} is not whole: the dashed window\nwould hang "
            f"{stride - remainder} pixel(s) over the edge, so it is dropped")
    fig.suptitle(formula + note, fontsize=11)
    fig.tight_layout()
    return fig
