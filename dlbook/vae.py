r"""Autoencoders and the variational autoencoder.

- :func:`conv_transpose2d`: the transposed convolution from scratch (the
  decoder's upsampling layer), with :func:`conv_transpose_output_size`
  and :func:`overlap_counts` (where its checkerboard comes from);
- :class:`Autoencoder` (:func:`mlp_autoencoder`, :func:`conv_autoencoder`)
  and :class:`ReconstructionStep`, with :func:`add_noise` for a denoising
  autoencoder, :func:`reconstruction_error` for anomaly scores, and
  :class:`PCA`, the linear baseline with the same number of dimensions;
- :class:`VAE` (:func:`mlp_vae`, :func:`conv_vae`, and :func:`cvae`, the
  conditional one): an encoder to $(\mu, \log\sigma^2)$ and a decoder to
  Bernoulli logits, with :func:`reparameterize`, :func:`gaussian_kl`,
  :func:`bernoulli_nll`, :func:`vae_loss` (the loss of PyTorch's VAE
  example, per image, with a weight $\beta$ on the KL term),
  :class:`VAEStep` for :func:`dlbook.fit`, and :func:`iwae_bound`, the
  importance-weighted bound with $k$ samples;
- :class:`VectorQuantizer` and :class:`VQVAE`, discrete codes with the
  straight-through estimator;
- :func:`pixel_bernoulli` and :func:`pixel_bernoulli_nll`: the simplest
  likelihood baseline, every pixel an independent Bernoulli variable.

Images are in [0, 1] (``data.load_images(..., normalize=False)``), shaped
(B, 1, 28, 28). Shapes use the book's legend: B batch, C channels, H and
W height and width, K classes; ``z`` latents of size ``latent_dim``;
``k`` importance samples.

Binary cross-entropy on grey levels (not on binarized pixels) is what
PyTorch's example optimizes; it is not the log-likelihood of a proper
density over grey levels, so the numbers it gives are not nats of
$\log p(x)$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_bool, check_float, check_int, check_pair, check_tensor, describe

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 28 * 28


# checks ------------------------------------------------------------------------

def _check_images(x, name: str = "x") -> torch.Tensor:
    """``x`` when it is a floating (B, 1, 28, 28) tensor (the book's MNIST images)."""
    check_tensor(x, name)
    if x.dim() != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{name} must be images of shape (B, 1, 28, 28); got shape {tuple(x.shape)}")
    check_tensor(x, name, floating=True)
    return x


def _check_unit_interval(x, name: str = "x") -> torch.Tensor:
    """``x`` when every value lies in [0, 1] (grey levels, targets of a Bernoulli decoder)."""
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} must hold grey levels in [0, 1] (load the images with normalize=False); "
                         f"got values in [{x.min().item():.3g}, {x.max().item():.3g}]")
    return x


def _check_gaussian(mu, logvar) -> None:
    check_tensor(mu, "mu", floating=True)
    check_tensor(logvar, "logvar", floating=True)
    if mu.dim() != 2 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have one shape (B, latent_dim); got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}")


def _check_labels(y, B: int, num_classes: int) -> torch.Tensor:
    check_tensor(y, "y")
    if y.shape != (B,) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 class labels of shape ({B},); got {y.dtype} of shape {tuple(y.shape)}")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; got {y.min().item()}..{y.max().item()}")
    return y


# the transposed convolution -----------------------------------------------------

def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0) -> int:
    r"""Output length of a transposed convolution along one axis.

    $H_\text{out} = (H - 1) S - 2P + k + P_\text{out}$: each of the $H$
    inputs writes a kernel's worth of outputs, starting $S$ apart; $P$ is
    cropped from both ends and $P_\text{out}$ (``output_padding``, below
    $S$) added at the end. It inverts :func:`dlbook.cnn.conv_output_size`
    (for the same $k$, $S$, $P$) up to the rows the floor there dropped,
    which is what ``output_padding`` gives back.
    """
    size, kernel = check_int(size, "size", 1), check_int(kernel, "kernel", 1)
    stride, padding = check_int(stride, "stride", 1), check_int(padding, "padding", 0)
    output_padding = check_int(output_padding, "output_padding", 0)
    if output_padding >= stride:
        raise ValueError(f"output_padding must be smaller than the stride ({stride}); got {output_padding}")
    out = (size - 1) * stride - 2 * padding + kernel + output_padding
    if out < 1:
        raise ValueError(f"padding {padding} crops everything: (size - 1) * stride - 2 * padding + kernel + "
                         f"output_padding = {out}")
    return out


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride=1, padding=0, output_padding=0) -> torch.Tensor:
    r"""The transposed convolution, as a scatter of the kernel.

    Every input pixel $(i, j)$ adds its value times the kernel into the
    output, at rows $iS + u$ and columns $jS + v$:
    $Y[o, iS + u, jS + v] \mathrel{+}= \sum_c X[c, i, j]\, w[c, o, u, v]$;
    then ``padding`` rows and columns are cropped from every side and
    ``output_padding`` added at the bottom and right. Where kernels written
    by neighbouring inputs overlap, their contributions add up. It is the
    adjoint (the "transpose") of the convolution with the same weight, stride
    and padding: $\langle \mathrm{conv}(a), b\rangle = \langle a,
    \mathrm{conv^T}(b)\rangle$. Here the loop runs over the $k_h k_w$ kernel
    offsets, each one strided slice of the output. No groups or dilation.

    Shapes:
        x: (B, C_in, H, W), weight: (C_in, C_out, kh, kw), bias: (C_out,)
        -> (B, C_out, H_out, W_out) with H_out from :func:`conv_transpose_output_size`
    """
    check_tensor(x, "x")
    check_tensor(weight, "weight")
    if x.dim() != 4:
        raise ValueError(f"conv_transpose2d expects x of shape (B, C_in, H, W); got shape {tuple(x.shape)}")
    if weight.dim() != 4 or min(weight.shape) == 0:
        raise ValueError(f"weight must have shape (C_in, C_out, kh, kw), every size >= 1; got "
                         f"{tuple(weight.shape)}")
    if x.shape[1] != weight.shape[0]:
        raise ValueError(f"x has {x.shape[1]} channels but the weight (C_in, C_out, kh, kw) expects "
                         f"{weight.shape[0]}")
    if min(x.shape[2:]) == 0:
        raise ValueError(f"x (B, C_in, H, W) needs H, W >= 1; got shape {tuple(x.shape)}")
    tensors = {"x": x, "weight": weight}
    if bias is not None:
        check_tensor(bias, "bias")
        if bias.shape != (weight.shape[1],):
            raise ValueError(f"bias must have shape ({weight.shape[1]},) (C_out); got {tuple(bias.shape)}")
        tensors["bias"] = bias
    if not x.is_floating_point() or any(t.dtype != x.dtype for t in tensors.values()):
        raise ValueError("x, weight and bias must share one floating dtype; got "
                         + ", ".join(f"{name} {t.dtype}" for name, t in tensors.items()))
    (sh, sw), (ph, pw) = check_pair(stride, "stride", 1), check_pair(padding, "padding", 0)
    oph, opw = check_pair(output_padding, "output_padding", 0)
    B, C_in, H, W = x.shape
    C_out, kh, kw = weight.shape[1:]
    H_out = conv_transpose_output_size(H, kh, sh, ph, oph)
    W_out = conv_transpose_output_size(W, kw, sw, pw, opw)
    # the uncropped frame, with room for output_padding beyond the last kernel
    full = x.new_zeros(B, C_out, (H - 1) * sh + kh + oph, (W - 1) * sw + kw + opw)
    for u in range(kh):
        for v in range(kw):
            # every input pixel (i, j) writes w[:, :, u, v] to (i*S + u, j*S + v)
            contribution = torch.einsum("bchw,co->bohw", x, weight[:, :, u, v])  # (B, C_out, H, W)
            full[:, :, u:u + (H - 1) * sh + 1:sh, v:v + (W - 1) * sw + 1:sw] += contribution
    y = full[:, :, ph:ph + H_out, pw:pw + W_out]  # (B, C_out, H_out, W_out)
    if bias is not None:
        y = y + bias.view(1, C_out, 1, 1)
    return y


def overlap_counts(size: int, kernel: int, stride: int, padding: int = 0, output_padding: int = 0) -> torch.Tensor:
    """How many kernel placements cover each output pixel of a transposed convolution.

    The transposed convolution of an all-ones image with an all-ones kernel:
    where the count varies from pixel to pixel (kernel not divisible by the
    stride), a decoder starts with an uneven, checkered canvas.

    Shapes:
        -> (H_out, W_out) with H_out from :func:`conv_transpose_output_size`
    """
    size, kernel = check_int(size, "size", 1), check_int(kernel, "kernel", 1)
    ones = torch.ones(1, 1, size, size, dtype=torch.float64)
    return conv_transpose2d(ones, torch.ones(1, 1, kernel, kernel, dtype=torch.float64), None,
                            stride, padding, output_padding)[0, 0]


# losses and the Gaussian --------------------------------------------------------

def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    r"""A sample $z = \mu + \sigma \epsilon$ of $\mathcal N(\mu, \sigma^2)$, differentiable in $\mu$ and $\log\sigma^2$.

    $\sigma = \exp(\tfrac12 \log\sigma^2)$; $\epsilon \sim \mathcal N(0, I)$
    is drawn (on ``mu``'s device) unless given.

    Shapes:
        mu, logvar: (B, D); eps: (B, D) or (k, B, D) -> like eps
    """
    _check_gaussian(mu, logvar)
    if eps is None:
        eps = torch.randn_like(mu)
    else:
        check_tensor(eps, "eps", floating=True)
        if eps.shape[-2:] != mu.shape or eps.dim() not in (2, 3):
            raise ValueError(f"eps must have shape {tuple(mu.shape)} or (k, *{tuple(mu.shape)}); got "
                             f"{tuple(eps.shape)}")
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""$\mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, I))$ per image, summed over the latent dimensions.

    $\tfrac12 \sum_d (\mu_d^2 + \sigma_d^2 - \log\sigma_d^2 - 1)$, the
    closed form (Kingma & Welling, appendix B); PyTorch's example writes it
    $-\tfrac12 \sum (1 + \log\sigma^2 - \mu^2 - \sigma^2)$.

    Shapes:
        mu, logvar: (B, D) -> (B,)
    """
    _check_gaussian(mu, logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor | None = None, logvar: torch.Tensor | None = None) -> torch.Tensor:
    r"""$\log \mathcal N(z; \mu, \mathrm{diag}\,\sigma^2)$ summed over the last dimension (default $\mathcal N(0, I)$).

    Shapes:
        z: (..., D), mu, logvar: broadcastable to z -> (...)
    """
    check_tensor(z, "z", floating=True)
    mu = torch.zeros_like(z) if mu is None else mu
    logvar = torch.zeros_like(z) if logvar is None else logvar
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""Binary cross-entropy of every pixel, summed per image, from logits.

    $-\sum_j [x_j \log p_j + (1 - x_j)\log(1 - p_j)]$ with $p = \sigma(\ell)$,
    computed as $\mathrm{softplus}(\ell) - x\ell$, stable for any logit.
    Equal to ``F.binary_cross_entropy(torch.sigmoid(logits), x,
    reduction="sum")`` divided among the images, where that is finite.

    Shapes:
        logits, x: (B, ...) -> (B,)
    """
    check_tensor(logits, "logits", floating=True)
    check_tensor(x, "x", floating=True)
    if logits.shape != x.shape or logits.dim() < 2:
        raise ValueError(f"logits and x must have one shape (B, ...); got {tuple(logits.shape)} and "
                         f"{tuple(x.shape)}")
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def vae_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The VAE's loss per image: reconstruction $+\ \beta \cdot$ KL, and the two terms.

    With $\beta = 1$ it is PyTorch's example, ``F.binary_cross_entropy(
    recon_x, x, reduction="sum") + KLD``, per image instead of summed over
    the batch, and from logits: the $-$ELBO of a Bernoulli decoder
    (estimated with one sample of $z$).

    Shapes:
        logits, x: (B, 1, H, W); mu, logvar: (B, D) -> three (B,) tensors
        (loss, reconstruction, KL)
    """
    beta = check_float(beta, "beta", 0.0)
    recon = bernoulli_nll(logits, x)  # (B,)
    kl = gaussian_kl(mu, logvar)  # (B,)
    if recon.shape != kl.shape:
        raise ValueError(f"logits hold {recon.shape[0]} images but mu {kl.shape[0]}")
    return recon + beta * kl, recon, kl


# models -------------------------------------------------------------------------

def _mlp(sizes: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return layers


def _check_hidden(hidden) -> tuple[int, ...]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not hidden:
        raise ValueError(f"hidden must be a non-empty list of layer widths; got {describe(hidden)}")
    return tuple(check_int(h, "every hidden width", 1) for h in hidden)


def mlp_encoder(out_features: int, hidden: Sequence[int] = (512, 256), in_features: int = PIXELS) -> nn.Sequential:
    """Flatten, then Linear-ReLU layers of widths ``hidden``, then a Linear to ``out_features``.

    Shapes:
        (B, 1, 28, 28) or (B, in_features) -> (B, out_features)
    """
    hidden = _check_hidden(hidden)
    return nn.Sequential(nn.Flatten(), *_mlp((check_int(in_features, "in_features", 1), *hidden,
                                              check_int(out_features, "out_features", 1))))


def mlp_decoder(latent_dim: int, hidden: Sequence[int] = (256, 512)) -> nn.Sequential:
    """Linear-ReLU layers from ``latent_dim`` through ``hidden`` to 784 logits, as an image.

    Shapes:
        (B, latent_dim) -> (B, 1, 28, 28) logits
    """
    hidden = _check_hidden(hidden)
    return nn.Sequential(*_mlp((check_int(latent_dim, "latent_dim", 1), *hidden, PIXELS)),
                         nn.Unflatten(1, IMAGE_SHAPE))


def conv_encoder(out_features: int, channels: tuple[int, int] = (16, 32), hidden: int = 256) -> nn.Sequential:
    """Two 4x4 stride-2 convolutions (28 -> 14 -> 7), then Linear layers.

    Shapes:
        (B, 1, 28, 28) -> (B, out_features)
    """
    c1, c2 = check_pair(channels, "channels", 1)
    hidden = check_int(hidden, "hidden", 1)
    return nn.Sequential(
        nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),  # (B, c1, 14, 14)
        nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),  # (B, c2, 7, 7)
        nn.Flatten(),  # (B, c2 * 49)
        nn.Linear(c2 * 49, hidden), nn.ReLU(),
        nn.Linear(hidden, check_int(out_features, "out_features", 1)))


def conv_decoder(latent_dim: int, channels: tuple[int, int] = (32, 16), hidden: int = 256) -> nn.Sequential:
    """Linear layers to a (channels[0], 7, 7) map, then two 4x4 stride-2
    transposed convolutions (7 -> 14 -> 28) to one channel of logits.

    Shapes:
        (B, latent_dim) -> (B, 1, 28, 28) logits
    """
    c1, c2 = check_pair(channels, "channels", 1)
    hidden = check_int(hidden, "hidden", 1)
    return nn.Sequential(
        nn.Linear(check_int(latent_dim, "latent_dim", 1), hidden), nn.ReLU(),
        nn.Linear(hidden, c1 * 49), nn.ReLU(),
        nn.Unflatten(1, (c1, 7, 7)),  # (B, c1, 7, 7)
        nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),  # (B, c2, 14, 14)
        nn.ConvTranspose2d(c2, 1, 4, stride=2, padding=1))  # (B, 1, 28, 28)


class Autoencoder(nn.Module):
    """An encoder to a code ``z`` and a decoder back to the image's logits.

    ``forward(x)`` returns the logits of the reconstruction;
    ``torch.sigmoid`` of them is the reconstructed image in [0, 1].

    Shapes:
        x: (B, 1, 28, 28) -> encode: (B, latent_dim) -> decode: (B, 1, 28, 28) logits
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = check_int(latent_dim, "latent_dim", 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(_check_images(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        check_tensor(z, "z", floating=True)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}); got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def mlp_autoencoder(latent_dim: int, hidden: Sequence[int] = (512, 256)) -> Autoencoder:
    """784 -> hidden -> ``latent_dim`` -> reversed hidden -> 784."""
    hidden = _check_hidden(hidden)
    return Autoencoder(mlp_encoder(latent_dim, hidden), mlp_decoder(latent_dim, hidden[::-1]), latent_dim)


def conv_autoencoder(latent_dim: int, channels: tuple[int, int] = (16, 32), hidden: int = 256) -> Autoencoder:
    """:func:`conv_encoder` to ``latent_dim``, :func:`conv_decoder` back."""
    c1, c2 = check_pair(channels, "channels", 1)
    return Autoencoder(conv_encoder(latent_dim, (c1, c2), hidden), conv_decoder(latent_dim, (c2, c1), hidden),
                       latent_dim)


@dataclass(frozen=True)
class VAEOutput:
    """What a :class:`VAE` returns: the decoder's logits, the encoder's
    $\\mu$ and $\\log\\sigma^2$, and the sample ``z`` that was decoded."""

    logits: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


class VAE(nn.Module):
    r"""A variational autoencoder: $q(z \mid x) = \mathcal N(\mu(x), \mathrm{diag}\,\sigma^2(x))$,
    $p(z) = \mathcal N(0, I)$, $p(x \mid z)$ independent Bernoulli pixels with logits ``decode(z)``.

    The encoder outputs ``2 * latent_dim`` numbers, read as $\mu$ and
    $\log\sigma^2$. With ``num_classes`` (a conditional VAE) the label's
    one-hot vector is joined to the flattened image before the encoder and
    to ``z`` before the decoder, so both modules take ``num_classes`` more
    inputs. ``forward`` samples ``z`` with :func:`reparameterize` in
    training and in evaluation alike (PyTorch's example does too: the ELBO
    is an expectation over $q$).

    Shapes:
        x: (B, 1, 28, 28), y: (B,) -> VAEOutput(logits (B, 1, 28, 28), mu, logvar, z (B, latent_dim))
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, num_classes: int = 0):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = check_int(latent_dim, "latent_dim", 1)
        self.num_classes = check_int(num_classes, "num_classes", 0)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _one_hot(self, y, B: int) -> torch.Tensor | None:
        if not self.conditional:
            if y is not None:
                raise ValueError("this VAE is not conditional (num_classes=0): call it without y")
            return None
        if y is None:
            raise ValueError(f"this conditional VAE needs the labels y, shape ({B},)")
        return F.one_hot(_check_labels(y, B, self.num_classes), self.num_classes)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """$\\mu$ and $\\log\\sigma^2$ of $q(z \\mid x)$ (given ``y`` when conditional), each (B, latent_dim)."""
        _check_images(x)
        one_hot = self._one_hot(y, x.shape[0])
        inp = x if one_hot is None else torch.cat([x.flatten(1), one_hot.to(x.dtype)], 1)  # (B, 784 + K)
        h = self.encoder(inp)  # (B, 2 * latent_dim)
        if h.dim() != 2 or h.shape[1] != 2 * self.latent_dim:
            raise ValueError(f"the encoder must output (B, {2 * self.latent_dim}) (mu and logvar); got "
                             f"{tuple(h.shape)}")
        mu, logvar = h.chunk(2, dim=1)  # (B, D), (B, D)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The Bernoulli logits of $p(x \\mid z)$ (given ``y`` when conditional), (B, 1, 28, 28)."""
        check_tensor(z, "z", floating=True)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}); got {tuple(z.shape)}")
        one_hot = self._one_hot(y, z.shape[0])
        return self.decoder(z if one_hot is None else torch.cat([z, one_hot.to(z.dtype)], 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> VAEOutput:
        mu, logvar = self.encode(x, y)
        z = reparameterize(mu, logvar)  # (B, D)
        return VAEOutput(self.decode(z, y), mu, logvar, z)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images decoded from $z \\sim \\mathcal N(0, I)$: the decoder's
        mean image $\\sigma(\\text{logits})$, in [0, 1] (not binarized).

        Shapes:
            -> (n, 1, 28, 28)
        """
        n = check_int(n, "n", 1)
        weight = next(self.parameters())
        # drawn where the generator lives (a CPU generator on a GPU model), then moved
        z = torch.randn(n, self.latent_dim, generator=generator,
                        device=generator.device if generator is not None else weight.device)
        z = z.to(weight.device, weight.dtype)  # (n, D)
        return torch.sigmoid(self.decode(z, y))


def mlp_vae(latent_dim: int, hidden: Sequence[int] = (512, 256)) -> VAE:
    """An MLP VAE: 784 -> hidden -> (mu, logvar) and ``latent_dim`` -> reversed hidden -> 784 logits."""
    hidden = _check_hidden(hidden)
    return VAE(mlp_encoder(2 * latent_dim, hidden), mlp_decoder(latent_dim, hidden[::-1]), latent_dim)


def conv_vae(latent_dim: int, channels: tuple[int, int] = (16, 32), hidden: int = 256) -> VAE:
    """A convolutional VAE: :func:`conv_encoder` to (mu, logvar), :func:`conv_decoder` to logits."""
    c1, c2 = check_pair(channels, "channels", 1)
    return VAE(conv_encoder(2 * latent_dim, (c1, c2), hidden), conv_decoder(latent_dim, (c2, c1), hidden),
               latent_dim)


def cvae(latent_dim: int, num_classes: int = 10, hidden: Sequence[int] = (512, 256)) -> VAE:
    """A conditional MLP VAE: the label's one-hot vector goes into the encoder and the decoder."""
    hidden = _check_hidden(hidden)
    K = check_int(num_classes, "num_classes", 1)
    return VAE(mlp_encoder(2 * latent_dim, hidden, PIXELS + K),
               mlp_decoder(latent_dim + K, hidden[::-1]), latent_dim, K)


# training steps -----------------------------------------------------------------

def _images_of(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 2:
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise ValueError(f"the step expects batches x or (x, y); got {describe(batch)}")


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of standard deviation ``std`` added to every pixel, clipped back to [0, 1].

    Shapes:
        x: any -> the same
    """
    check_tensor(x, "x", floating=True)
    std = check_float(std, "std", 0.0)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + std * noise).clamp(0.0, 1.0)


@dataclass(frozen=True)
class ReconstructionStep:
    """The autoencoder's step: the binary cross-entropy (summed per image,
    :func:`bernoulli_nll`) of ``model(x_in)`` against the clean ``x``,
    where ``x_in`` is ``x`` with Gaussian noise of ``noise_std`` (a
    denoising autoencoder) or ``x`` itself (``noise_std=0``). Returns
    ``loss`` and ``sse``, the summed squared error of the reconstruction."""

    noise_std: float = 0.0

    def __post_init__(self):
        check_float(self.noise_std, "noise_std", 0.0)

    def __call__(self, model: nn.Module, batch) -> dict:
        x, _ = _images_of(batch)
        _check_images(x)
        x_in = add_noise(x, self.noise_std) if self.noise_std > 0 else x
        logits = model(x_in)  # (B, 1, 28, 28)
        with torch.no_grad():
            sse = (torch.sigmoid(logits.float()) - x).pow(2).flatten(1).sum(1).mean()
        return {"loss": bernoulli_nll(logits, x).mean(), "sse": sse}


@dataclass(frozen=True)
class VAEStep:
    """The VAE's step for :func:`dlbook.fit`: the mean over the batch of
    :func:`vae_loss` with weight ``beta``; it also returns ``recon``, ``kl``
    and ``neg_elbo`` (reconstruction + KL, whatever ``beta``), per image.
    A conditional VAE gets the batch's labels."""

    beta: float = 1.0

    def __post_init__(self):
        check_float(self.beta, "beta", 0.0)

    def __call__(self, model: nn.Module, batch) -> dict:
        x, y = _images_of(batch)
        _check_images(x)
        out = model(x, y) if getattr(model, "conditional", False) else model(x)
        loss, recon, kl = vae_loss(out.logits, x, out.mu, out.logvar, self.beta)
        return {"loss": loss.mean(), "recon": recon.mean(), "kl": kl.mean(), "neg_elbo": (recon + kl).mean()}


# evaluation ---------------------------------------------------------------------

@torch.no_grad()
def iwae_bound(model: VAE, x: torch.Tensor, k: int = 100, y: torch.Tensor | None = None,
               eps: torch.Tensor | None = None) -> torch.Tensor:
    r"""The importance-weighted bound with ``k`` samples, per image, as a positive number like the $-$ELBO.

    $-\log \frac1k \sum_{i=1}^k w_i$ with $w_i = p(x \mid z_i)\, p(z_i) / q(z_i \mid x)$,
    $z_i \sim q(z \mid x)$ (Burda et al., 2016), computed with ``logsumexp``
    over the $k$ log-weights. With $k = 1$ it is the one-sample $-$ELBO
    (whose KL is estimated by $\log q(z) - \log p(z)$ at the sample); it
    does not increase, on average, as $k$ grows, and tends to $-\log p(x)$
    (here: the grey-level cross-entropy's version of it). ``eps`` (k, B, D)
    fixes the noise.

    Shapes:
        x: (B, 1, 28, 28), y: (B,) -> (B,)
    """
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a dlbook.vae.VAE; got {type(model).__name__}")
    _check_unit_interval(_check_images(x))
    k = check_int(k, "k", 1)
    mu, logvar = model.encode(x, y)  # (B, D)
    B, D = mu.shape
    if eps is None:
        eps = torch.randn(k, B, D, dtype=mu.dtype, device=mu.device)
    elif tuple(eps.shape) != (k, B, D):
        raise ValueError(f"eps must have shape (k, B, D) = ({k}, {B}, {D}); got {tuple(eps.shape)}")
    z = reparameterize(mu, logvar, eps)  # (k, B, D)
    yk = None if y is None else y.repeat(k)  # (k * B,)
    logits = model.decode(z.reshape(k * B, D), yk)  # (k * B, 1, 28, 28)
    log_px_z = -bernoulli_nll(logits, x.repeat(k, 1, 1, 1)).view(k, B)  # (k, B)
    # log w = log p(x|z) + log p(z) - log q(z|x)
    log_w = log_px_z + log_normal(z) - log_normal(z, mu, logvar)  # (k, B)
    return -(torch.logsumexp(log_w, dim=0) - math.log(k))  # (B,)


@torch.no_grad()
def reconstruction_error(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The summed squared error between each image and its reconstruction
    ($\\sigma$ of the model's logits; a :class:`VAE` decodes its $\\mu$): the
    anomaly score of an autoencoder. The model runs in evaluation mode.

    Shapes:
        x: (N, 1, 28, 28) -> (N,)
    """
    _check_images(x)
    batch_size = check_int(batch_size, "batch_size", 1)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = []
    try:
        for part in x.split(batch_size):
            part = part.to(device)
            if isinstance(model, VAE):
                logits = model.decode(model.encode(part)[0])
            else:
                logits = model(part)
            scores.append((torch.sigmoid(logits.float()) - part).pow(2).flatten(1).sum(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(scores)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    r"""How many latent dimensions the encoder uses: those whose mean
    $\mu_d(x)$ varies across the images with variance above ``threshold``
    (Burda et al.'s activity statistic). An inactive dimension's $q$ is the
    prior for every image: it has collapsed.

    Shapes:
        mu: (N, D) -> an int
    """
    check_tensor(mu, "mu", floating=True)
    if mu.dim() != 2 or mu.shape[0] < 2:
        raise ValueError(f"mu must have shape (N, D) with N >= 2; got {tuple(mu.shape)}")
    threshold = check_float(threshold, "threshold", 0.0)
    return int((mu.var(0) > threshold).sum())


# the simplest baselines ---------------------------------------------------------

class PCA:
    """Principal component analysis with ``d`` components: the best linear
    code of size ``d`` for squared error, the baseline of an autoencoder.

    ``fit`` takes the top eigenvectors of the training images' covariance
    (computed in float64). ``reconstruct`` projects and maps back.

    Shapes:
        x: (N, 1, 28, 28) -> encode: (N, d) -> decode: (N, 1, 28, 28)
    """

    def __init__(self, d: int):
        self.d = check_int(d, "d", 1)
        self.mean: torch.Tensor | None = None
        self.components: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> "PCA":
        flat = _check_images(x).flatten(1).double()  # (N, 784)
        if flat.shape[0] < 2:
            raise ValueError(f"PCA needs at least 2 images; got {flat.shape[0]}")
        self.mean = flat.mean(0)  # (784,)
        centered = flat - self.mean
        cov = centered.T @ centered / (flat.shape[0] - 1)  # (784, 784)
        _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
        self.components = vectors[:, -self.d:].flip(1).T.contiguous()  # (d, 784), largest first
        return self

    def _fitted(self) -> None:
        if self.components is None:
            raise RuntimeError("fit the PCA first: PCA(d).fit(x_train)")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._fitted()
        return ((_check_images(x).flatten(1).double() - self.mean) @ self.components.T).to(x.dtype)  # (N, d)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._fitted()
        return (z.double() @ self.components + self.mean).view(-1, *IMAGE_SHAPE).to(z.dtype)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """The summed squared error per image, (N,)."""
        return (self.reconstruct(x) - x).pow(2).flatten(1).sum(1)


def pixel_bernoulli(x_train: torch.Tensor) -> torch.Tensor:
    r"""Every pixel an independent Bernoulli variable: the maximum-likelihood
    probabilities under grey-level cross-entropy, smoothed.

    The cross-entropy $-\sum_n [x_n \log p + (1 - x_n)\log(1 - p)]$ is
    smallest at $p = \bar x$, the pixel's mean; the estimate is
    $(\sum_n x_n + 1) / (N + 2)$ (Laplace's rule), so that a pixel never
    inked in training does not get probability 0.

    Shapes:
        x_train: (N, 1, 28, 28) -> (1, 28, 28)
    """
    _check_unit_interval(_check_images(x_train, "x_train"), "x_train")
    x = x_train.double()
    return ((x.sum(0) + 1) / (x.shape[0] + 2)).to(x_train.dtype)


def pixel_bernoulli_nll(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The grey-level cross-entropy of each image under independent pixels
    with probabilities ``p``: the $-$log-likelihood baseline of the VAE.

    Shapes:
        p: (1, 28, 28), x: (N, 1, 28, 28) -> (N,)
    """
    check_tensor(p, "p", floating=True)
    if tuple(p.shape) != IMAGE_SHAPE or p.min() <= 0 or p.max() >= 1:
        raise ValueError(f"p must be probabilities strictly between 0 and 1 of shape (1, 28, 28); got "
                         f"shape {tuple(p.shape)}")
    _check_unit_interval(_check_images(x))
    logits = torch.logit(p.double()).expand(x.shape)
    return bernoulli_nll(logits, x.double()).to(x.dtype)


# VQ-VAE -------------------------------------------------------------------------

class VectorQuantizer(nn.Module):
    r"""Replace each code vector by its nearest codebook vector (van den Oord et al., 2017).

    For encoder outputs $z_e$ (one ``code_dim`` vector per position), the
    index $k^* = \arg\min_k \lVert z_e - e_k \rVert$ picks $z_q = e_{k^*}$.
    The argmin has no gradient, so the forward pass returns
    $z_e + \mathrm{sg}(z_q - z_e)$ ($\mathrm{sg}$: stop gradient), which
    equals $z_q$ but passes the decoder's gradient to $z_e$ unchanged (the
    straight-through estimator). Two losses train the rest: the codebook
    loss $\lVert \mathrm{sg}(z_e) - z_q\rVert^2$ moves the chosen vectors
    towards the codes, the commitment loss $\lVert z_e -
    \mathrm{sg}(z_q)\rVert^2$ (weighted by ``commitment``) keeps the
    encoder near its choices. Both are summed over the code's entries and
    positions and averaged over the batch.

    Shapes:
        z_e: (B, code_dim, H, W) -> z_q (B, code_dim, H, W), indices (B, H, W),
        codebook_loss (), commitment_loss ()
    """

    def __init__(self, num_codes: int, code_dim: int, commitment: float = 0.25):
        super().__init__()
        self.num_codes = check_int(num_codes, "num_codes", 1)
        self.code_dim = check_int(code_dim, "code_dim", 1)
        self.commitment = check_float(commitment, "commitment", 0.0)
        self.codebook = nn.Embedding(self.num_codes, self.code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / self.num_codes, 1.0 / self.num_codes)

    def forward(self, z_e: torch.Tensor):
        check_tensor(z_e, "z_e", floating=True)
        if z_e.dim() != 4 or z_e.shape[1] != self.code_dim:
            raise ValueError(f"z_e must have shape (B, {self.code_dim}, H, W); got {tuple(z_e.shape)}")
        B, C, H, W = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, C)  # (B*H*W, C)
        e = self.codebook.weight  # (K, C)
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.T + e.pow(2).sum(1)  # (B*H*W, K)
        indices = dist.argmin(1)  # (B*H*W,)
        z_q = self.codebook(indices).view(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)
        codebook_loss = (z_q - z_e.detach()).pow(2).flatten(1).sum(1).mean()
        commitment_loss = (z_e - z_q.detach()).pow(2).flatten(1).sum(1).mean()
        z_st = z_e + (z_q - z_e).detach()  # the value of z_q, the gradient of z_e
        return z_st, indices.view(B, H, W), codebook_loss, self.commitment * commitment_loss


class VQVAE(nn.Module):
    """A small VQ-VAE: two stride-2 convolutions to a (code_dim, 7, 7) map,
    :class:`VectorQuantizer`, two stride-2 transposed convolutions back to
    logits. ``forward`` returns (logits, indices, codebook_loss, commitment_loss).

    Shapes:
        x: (B, 1, 28, 28) -> logits (B, 1, 28, 28), indices (B, 7, 7)
    """

    def __init__(self, num_codes: int = 64, code_dim: int = 16, channels: int = 32, commitment: float = 0.25):
        super().__init__()
        c = check_int(channels, "channels", 1)
        d = check_int(code_dim, "code_dim", 1)
        self.encoder = nn.Sequential(nn.Conv2d(1, c, 4, 2, 1), nn.ReLU(),  # (B, c, 14, 14)
                                     nn.Conv2d(c, d, 4, 2, 1))  # (B, d, 7, 7)
        self.quantizer = VectorQuantizer(num_codes, d, commitment)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(d, c, 4, 2, 1), nn.ReLU(),  # (B, c, 14, 14)
                                     nn.ConvTranspose2d(c, 1, 4, 2, 1))  # (B, 1, 28, 28)

    def forward(self, x: torch.Tensor):
        z_e = self.encoder(_check_images(x))  # (B, d, 7, 7)
        z_q, indices, codebook_loss, commitment_loss = self.quantizer(z_e)
        return self.decoder(z_q), indices, codebook_loss, commitment_loss

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Logits of the images whose codes are ``indices`` (B, 7, 7)."""
        z_q = self.quantizer.codebook(indices).permute(0, 3, 1, 2)  # (B, d, 7, 7)
        return self.decoder(z_q)


def vqvae_step(model: VQVAE, batch) -> dict:
    """The VQ-VAE's step: reconstruction (:func:`bernoulli_nll`, per image) +
    codebook loss + weighted commitment loss; also returns each term."""
    x, _ = _images_of(batch)
    logits, _, codebook_loss, commitment_loss = model(x)
    recon = bernoulli_nll(logits, x).mean()
    return {"loss": recon + codebook_loss + commitment_loss, "recon": recon,
            "codebook": codebook_loss, "commitment": commitment_loss}


def code_usage(indices: torch.Tensor, num_codes: int) -> tuple[int, float]:
    """How many codebook entries ``indices`` use, and the perplexity
    $\\exp(H)$ of their frequencies (the number of equally used codes that
    would give the same entropy).

    Shapes:
        indices: any integer shape -> (int, float)
    """
    check_tensor(indices, "indices")
    num_codes = check_int(num_codes, "num_codes", 1)
    counts = torch.bincount(indices.flatten().long(), minlength=num_codes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return int((counts > 0).sum()), float(entropy.exp())


# pictures -------------------------------------------------------------------------

@torch.no_grad()
def latent_grid(model: VAE, n: int = 15, span: float = 0.95) -> torch.Tensor:
    """Decoded images on an n x n grid of a 2-D latent space, at the
    Gaussian quantiles of evenly spaced probabilities in [1 - span, span]
    (so that the grid covers the prior evenly), top row largest $z_2$.

    Shapes:
        -> (n * n, 1, 28, 28), row by row
    """
    if not isinstance(model, VAE) or model.latent_dim != 2 or model.conditional:
        raise ValueError("latent_grid needs an unconditional VAE with a 2-D latent space")
    n = check_int(n, "n", 2)
    span = check_float(span, "span", 0.5, 1.0, open_max=True)
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(1 - span, span, n))  # (n,)
    z1, z2 = q.repeat(n), q.flip(0).repeat_interleave(n)  # (n*n,), rows from the top
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.sigmoid(model.decode(torch.stack([z1, z2], 1).to(device))).cpu()
    finally:
        model.train(was_training)
