"""Exercises of the VAE chapter."""

from __future__ import annotations

import contextlib
import math
import random

import torch
from torch import nn

from . import LAYER_OPS, Wrong, exercise, forbid, forbid_functions, forbid_ops, is_int, module_functions


def _fresh_generator() -> torch.Generator:
    """A generator seeded anew at every check: a table of answers cannot pass."""
    return torch.Generator().manual_seed(random.SystemRandom().randrange(2**31))


def _kl_reference(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    mu_q, logvar_q, mu_p, logvar_p = (t.double() for t in (mu_q, logvar_q, mu_p, logvar_p))
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1).sum(-1)


def _forbid_library_kl():
    """Every library KL: torch.distributions' (all its registered pairs) and dlbook.vae's functions."""
    import torch.distributions.kl as kl

    from .. import vae

    rule = "derive the KL yourself; no torch.distributions KL and nothing from dlbook.vae"
    return forbid_functions(rule, *module_functions(kl), *module_functions(vae))


@exercise(
    "vae.kl_two_gaussians",
    "Write kl_diag(mu_q, logvar_q, mu_p, logvar_p): KL(q || p) for two Gaussians with diagonal "
    "covariances, q = N(mu_q, exp(logvar_q)) and p = N(mu_p, exp(logvar_p)), summed over the last "
    "dimension. Derive it: no torch.distributions, nothing from dlbook.vae.",
    "Per dimension, KL = log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2, "
    "that is 0.5 * (logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1), summed "
    "over the dimensions: E_q[log q - log p], where E_q[(z - mu_p)^2] = sigma_q^2 + (mu_q - mu_p)^2. With "
    "mu_p = 0 and logvar_p = 0 it is the VAE's KL term. It is not symmetric: swapping q and p changes it.",
)
def _kl_two_gaussians(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function kl_diag(mu_q, logvar_q, mu_p, logvar_p).")
    gen = _fresh_generator()
    shapes = [(5, 3), (7,), (2, 4, 6), (1, 1), (3, 20)]
    for shape, dtype in zip(shapes, (torch.float64, torch.float32, torch.float64, torch.float64, torch.float32)):
        mu_q, mu_p = (2 * torch.randn(shape, generator=gen, dtype=dtype) for _ in range(2))
        logvar_q, logvar_p = (1.5 * torch.randn(shape, generator=gen, dtype=dtype) for _ in range(2))
        with _forbid_library_kl():
            got = answer(mu_q, logvar_q, mu_p, logvar_p)
        right = _kl_reference(mu_q, logvar_q, mu_p, logvar_p)
        where = f"for inputs of shape {shape}"
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor.")
        if tuple(got.shape) == shape and len(shape) > 0 and shape[-1] > 1:
            raise Wrong(f"{where} you return one number per dimension (shape {tuple(got.shape)}); sum them over "
                        f"the last dimension: the KL of independent dimensions adds up.")
        if tuple(got.shape) != tuple(right.shape):
            raise Wrong(f"{where} the result should have shape {tuple(right.shape)} (one KL per row); yours has "
                        f"shape {tuple(got.shape)}.")
        got = got.detach().double()
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        if torch.allclose(got, right, rtol=tol, atol=tol):
            continue
        reversed_ = _kl_reference(mu_p, logvar_p, mu_q, logvar_q)
        if torch.allclose(got, reversed_, rtol=tol, atol=tol):
            raise Wrong("you computed KL(p || q), not KL(q || p): the expectation is taken under q, "
                        "the first distribution.")
        if torch.allclose(got, 2 * right, rtol=tol, atol=tol) or torch.allclose(got, right / 2, rtol=tol, atol=tol):
            raise Wrong("off by a factor of 2: check the factor in front of the log-densities of a Gaussian.")
        if (got < -tol).any():
            raise Wrong("your KL is negative for some rows; a KL divergence never is. Check the signs.")
        raise Wrong(f"{where} the values are wrong. Write KL(q || p) = E_q[log q(z) - log p(z)] for one "
                    f"dimension, and use E_q[(z - mu_p)^2] = Var_q(z) + (E_q[z] - mu_p)^2. Is logvar a "
                    f"variance's log, or a standard deviation's?")
    # q = p gives 0: checked on the last inputs
    with _forbid_library_kl():
        zero = answer(mu_q, logvar_q, mu_q, logvar_q)
    if not isinstance(zero, torch.Tensor) or zero.detach().abs().max() > 1e-4:
        raise Wrong("the KL of a distribution from itself must be 0.")


def _forbid_transposed_layers():
    """Building layers (and so reading their output size), convolutions, and dlbook.vae's size formula."""
    from .. import cnn, vae

    rule = "derive the sizes; build no layers and call no convolution or size function"
    stack = contextlib.ExitStack()
    stack.enter_context(forbid(rule, (nn.ConvTranspose2d, "__init__"), (nn.Conv2d, "__init__")))
    stack.enter_context(forbid_functions(rule, *module_functions(vae), *module_functions(cnn)))
    stack.enter_context(forbid_ops(rule, *LAYER_OPS, "conv"))
    return stack


def _transposed_size(H, k, s, p, op):
    return (H - 1) * s - 2 * p + k + op


@exercise(
    "vae.doubling_layer",
    "Write doubling(k): the (stride, padding, output_padding) of a transposed convolution with a k x k "
    "kernel that turns every H x H input into exactly 2H x 2H (as a decoder goes from 7x7 to 14x14 and "
    "from 14x14 to 28x28). PyTorch requires padding >= 0 and output_padding < stride. Derive it for any "
    "k >= 1: build no layers.",
    "The output is (H - 1) S - 2P + k + P_out. For it to be 2H for every H, the slope in H must be 2, so "
    "S = 2, and what is left must vanish: k - 2 - 2P + P_out = 0. With 0 <= P_out < 2, P_out = k mod 2 "
    "(an odd kernel needs one more row) and P = (k - 2 + P_out) / 2: k = 4 gives (2, 1, 0), k = 3 gives "
    "(2, 1, 1), k = 5 gives (2, 2, 1), k = 1 gives (2, 0, 1).",
)
def _doubling_layer(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function doubling(k) that returns (stride, padding, output_padding).")
    draw = random.Random()
    kernels = [4, 3, 1, 2, 5] + [draw.randint(6, 15) for _ in range(4)]
    for k in kernels:
        with _forbid_transposed_layers():
            got = answer(k)
        if not isinstance(got, (tuple, list)) or len(got) != 3 or not all(is_int(v) for v in got):
            raise Wrong(f"for k = {k} you return {got!r}; return three whole numbers (stride, padding, "
                        f"output_padding).")
        s, p, op = (int(v) for v in got)
        if s < 1 or p < 0 or op < 0:
            raise Wrong(f"for k = {k}: the stride must be at least 1, the paddings at least 0.")
        if op >= s:
            raise Wrong(f"for k = {k}: PyTorch refuses an output_padding that is not smaller than the stride.")
        sizes = [_transposed_size(H, k, s, p, op) for H in (1, 7, 14)]
        if sizes != [2, 14, 28]:
            if s != 2:
                raise Wrong(f"for k = {k} the output of a 7x7 input is {sizes[1]}x{sizes[1]}. How does the "
                            f"output size grow with H, and how fast must it grow to double every H?")
            raise Wrong(f"for k = {k} the output of a 7x7 input is {sizes[1]}x{sizes[1]}, not 14x14: the "
                        f"growth is right, the constant is not. What do padding and output_padding each add?")
    # the derivation agrees with PyTorch's layer (built here, outside the rule)
    s, p, op = answer(3)
    layer = nn.ConvTranspose2d(1, 1, 3, stride=s, padding=p, output_padding=op)
    with torch.no_grad():
        if layer(torch.zeros(1, 1, 7, 7)).shape[-1] != 14:
            raise Wrong("for k = 3 PyTorch's layer does not give 14x14.")


LOGSUMEXP_OPS = ("logsumexp", "logaddexp", "logcumsumexp", "softmax")


def _forbid_logsumexp():
    from .. import vae

    # numpy's ufuncs need no rule: an answer computed outside torch has no gradient, which the check asks for
    rule = "no logsumexp, logaddexp or softmax, in torch or elsewhere, and nothing from dlbook.vae"
    targets = list(module_functions(vae))
    try:
        import scipy.special

        targets.append((scipy.special, "logsumexp"))
        targets.append((scipy.special, "softmax"))
        targets.append((scipy.special, "log_softmax"))
    except ImportError:
        pass
    stack = contextlib.ExitStack()
    stack.enter_context(forbid_functions(rule, *targets))
    stack.enter_context(forbid_ops(rule, *LOGSUMEXP_OPS))
    return stack


def _bound_reference(log_w: torch.Tensor) -> torch.Tensor:
    return -(torch.logsumexp(log_w.double(), 0) - math.log(log_w.shape[0]))


@exercise(
    "vae.iwae_from_log_weights",
    "Write neg_iwae(log_w): given the log importance weights log w_i = log p(x, z_i) - log q(z_i | x) "
    "of k samples for each of B images, shape (k, B), return the importance-weighted bound as a positive "
    "number per image, -log((1/k) sum_i w_i), shape (B,). The log-weights of real images are around "
    "-100 and below: exp underflows. No logsumexp, logaddexp or softmax; the gradient must reach log_w.",
    "Subtract the largest log-weight m of each image first: log((1/k) sum_i exp(l_i)) = m + "
    "log(sum_i exp(l_i - m)) - log k, where every exp(l_i - m) is at most 1 and the largest is exactly 1, so "
    "nothing underflows to log(0) or overflows. The gradient of the bound with respect to l_i is "
    "-w_i / sum_j w_j: the samples are weighted by their normalized importance, and the max itself "
    "contributes no net gradient (its two appearances cancel).",
)
def _iwae_from_log_weights(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function neg_iwae(log_w).")
    gen = _fresh_generator()
    cases = [(1, 3, 0.0, 1.0, torch.float64), (10, 4, -3.0, 2.0, torch.float64), (100, 5, -110.0, 5.0, torch.float32),
             (50, 3, -3000.0, 200.0, torch.float64), (7, 6, 800.0, 30.0, torch.float32),
             (100, 2, -2000.0, 0.0, torch.float32)]
    for k, B, center, spread, dtype in cases:
        log_w = (center + spread * torch.randn(k, B, generator=gen, dtype=torch.float64)).to(dtype)
        log_w.requires_grad_(True)
        with _forbid_logsumexp():
            got = answer(log_w)
        where = f"for k = {k} samples of {B} images (log-weights near {center:g})"
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor computed from log_w.")
        if tuple(got.shape) != (B,):
            raise Wrong(f"{where} the result should have shape ({B},), one bound per image; yours has shape "
                        f"{tuple(got.shape)}. Which dimension holds the samples?")
        right = _bound_reference(log_w.detach())
        value = got.detach().double()
        if not torch.isfinite(value).all():
            raise Wrong(f"{where} you get {value.tolist()[:3]}...: exp of such log-weights underflows "
                        f"(or overflows). Can you take something out of the sum before exponentiating?")
        tol = 1e-9 * max(1.0, abs(center)) if dtype == torch.float64 else 1e-5 * max(1.0, abs(center)) + 1e-4
        if not torch.allclose(value, right, rtol=0, atol=tol):
            if torch.allclose(value, -right, rtol=0, atol=tol):
                raise Wrong("the sign: the bound is asked for as a positive number, like the -ELBO.")
            if torch.allclose(value, right - math.log(k), rtol=0, atol=tol) and k > 1:
                raise Wrong(f"{where} you are off by log k: a mean of the weights, not their sum.")
            if torch.allclose(value, -log_w.detach().double().mean(0), rtol=0, atol=tol) and k > 1:
                raise Wrong(f"{where} you averaged the logs of the weights: the log of the mean comes first.")
            if abs(center) > 50:
                raise Wrong(f"{where} the values are wrong: exp of log-weights this far from 0 underflows (or "
                            f"overflows), and what is left is rounding. Can you take something out of the sum "
                            f"before exponentiating?")
            raise Wrong(f"{where} the values are wrong.")
        if got.grad_fn is None:
            raise Wrong("no gradient reaches log_w: compute the bound with torch operations on log_w itself.")
        (grad,) = torch.autograd.grad(got.sum(), log_w)
        expected = -torch.softmax(log_w.detach().double(), 0)
        if not torch.allclose(grad.double(), expected, atol=1e-4):
            raise Wrong(f"{where} the value is right but its gradient is not: did something detach a part of "
                        f"the computation?")


def _every_log_prob(dist) -> list[tuple]:
    """(class, "log_prob") of every distribution in torch.distributions that defines its own."""
    found, todo = [], [dist.Distribution]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "log_prob" in vars(cls) and (cls, "log_prob") not in found:
            found.append((cls, "log_prob"))
    return found


def _log_weights_reference(model, x, eps) -> torch.Tensor:
    from .. import vae

    mu, logvar = model.encode(x)  # (B, D)
    z = mu + (0.5 * logvar).exp() * eps  # (k, B, D)
    k, B, D = eps.shape
    logits = model.decode(z.reshape(k * B, D))
    log_px_z = -vae.bernoulli_nll(logits, x.repeat(k, 1, 1, 1)).view(k, B)
    return log_px_z + vae.log_normal(z) - vae.log_normal(z, mu, logvar)  # (k, B)


@exercise(
    "vae.log_weights",
    "Write log_weights(model, x, eps): the log importance weights log w_i = log p(x | z_i) + log p(z_i) - "
    "log q(z_i | x) of a dlbook.vae.VAE for a batch x of B images (grey levels, shape (B, 1, 28, 28)), "
    "with z_i = mu + sigma * eps_i drawn through the reparameterization from the given standard-normal "
    "noise eps of shape (k, B, D). Return shape (k, B). Use model.encode (it returns mu and log sigma^2) "
    "and model.decode (Bernoulli logits); p(x | z) is the chapter's Bernoulli decoder (cross-entropy "
    "summed over the pixels), p(z) = N(0, I). Nothing else from dlbook.vae and nothing from "
    "torch.distributions (the check enforces it).",
    "mu, logvar = model.encode(x); z = mu + exp(logvar / 2) * eps broadcasts to (k, B, D); decode the k*B "
    "codes at once and take log p(x|z) = -sum_j [softplus(l_j) - x_j l_j] per image (the cross-entropy "
    "with its sign flipped, stable for any logit). The two Gaussian log-densities are "
    "-1/2 sum_d [log 2pi + log s_d^2 + (z_d - m_d)^2 / s_d^2]; in their difference the log 2pi terms "
    "cancel, and under q the last term is just eps_d^2. With neg_iwae of Exercise 3 on top, this is "
    "vae.iwae_bound.",
)
def _log_weights_check(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function log_weights(model, x, eps).")
    import torch.distributions as dist

    from .. import vae

    rule = "build the weights from model.encode and model.decode; nothing else from dlbook.vae or " \
           "torch.distributions"
    gen = _fresh_generator()
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
    try:
        models = [vae.mlp_vae(3, hidden=(16,)).double(), vae.mlp_vae(5, hidden=(8, 8)).double()]
    finally:
        torch.random.set_rng_state(torch_state)
    for model, (k, B) in zip(models * 2, [(4, 3), (1, 2), (6, 1), (3, 5)]):
        model.eval()
        x = torch.rand(B, 1, 28, 28, generator=gen, dtype=torch.float64)
        eps = torch.randn(k, B, model.latent_dim, generator=gen, dtype=torch.float64)
        where = f"for k = {k} samples of B = {B} images, a {model.latent_dim}-D latent"
        public = [(m, n) for m, n in module_functions(vae) if not n.startswith("_")]  # encode's helpers stay
        targets = [*public, (vae.VAE, "forward"), (vae.VAE, "sample"), *_every_log_prob(dist)]
        with torch.no_grad(), forbid_functions(rule, *targets):
            got = answer(model, x.clone(), eps.clone())
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor.")
        if tuple(got.shape) != (k, B):
            raise Wrong(f"{where} the result should have shape ({k}, {B}): one log-weight per sample and "
                        f"image; yours has shape {tuple(got.shape)}.")
        with torch.no_grad():
            want = _log_weights_reference(model, x, eps)
            mu, logvar = model.encode(x)
            z = mu + (0.5 * logvar).exp() * eps
            log_pz, log_qz = vae.log_normal(z), vae.log_normal(z, mu, logvar)
        value = got.double()
        if torch.allclose(value, want, atol=1e-6):
            continue
        D = model.latent_dim
        const = 0.5 * D * math.log(2 * math.pi)  # with or without the normalizing constant
        if any(torch.allclose(value, want + log_qz + c, atol=1e-6) for c in (0.0, const)):
            raise Wrong(f"{where} you return log p(x, z): the weight divides by the proposal q(z | x) that "
                        f"drew z.")
        if any(torch.allclose(value, want - log_pz - c, atol=1e-6) for c in (0.0, const)):
            raise Wrong(f"{where} the prior p(z) is missing from the weight: w = p(x | z) p(z) / q(z | x).")
        if any(torch.allclose(value, want + s * 0.5 * D * math.log(2 * math.pi), atol=1e-6) for s in (1, -1)):
            raise Wrong(f"{where} you are off by a constant: one of the two Gaussian log-densities has its "
                        f"normalizing constant and the other has not.")
        z_wrong = mu + logvar * eps
        with torch.no_grad():
            logits = model.decode(z_wrong.reshape(-1, D))
            lp = -vae.bernoulli_nll(logits, x.repeat(k, 1, 1, 1)).view(k, B)
            alt = lp + vae.log_normal(z_wrong) - vae.log_normal(z_wrong, mu, logvar)
        if torch.allclose(value, alt, atol=1e-4):
            raise Wrong(f"{where} the encoder returns log sigma^2, not sigma: sigma = exp(logvar / 2).")
        log_px_z = want - log_pz + log_qz
        if torch.allclose(value - (want - log_px_z), log_px_z / 784, atol=1e-6):
            raise Wrong(f"{where} log p(x | z) is a sum over the 784 pixels, not a mean.")
        raise Wrong(f"{where} your log-weights differ from the right ones by up to "
                    f"{(value - want).abs().max():.3g}; check each of the three terms on one image.")
