"""dlbook.vae: parity with PyTorch, golden numbers, the bounds' properties, shapes and validation."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
from dlbook import vae
from dlbook.data import BatchLoader


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def images(B=4, generator=None):
    """Grey levels in [0, 1], with exact zeros and ones as MNIST has."""
    x = torch.rand(B, 1, 28, 28, generator=generator)
    x[x < 0.3] = 0.0
    x[x > 0.9] = 1.0
    return x


# the transposed convolution ------------------------------------------------------

CASES = [  # C_in, C_out, H, W, kh, kw, stride, padding, output_padding
    (1, 1, 3, 3, 3, 3, 1, 0, 0), (1, 1, 3, 3, 3, 3, 2, 0, 0), (2, 3, 4, 5, 3, 2, 2, 1, 1),
    (3, 2, 7, 7, 4, 4, 2, 1, 0), (4, 1, 5, 6, 5, 5, 3, 2, 2), (1, 5, 2, 3, 1, 1, 2, 0, 1),
    (6, 4, 7, 7, 3, 3, (2, 1), (1, 0), (1, 0)), (2, 2, 1, 1, 3, 3, 2, 1, 1), (8, 16, 7, 7, 4, 4, 2, 1, 0),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose2d_matches_pytorch(case, bias):
    C_in, C_out, H, W, kh, kw, s, p, op = case
    x = torch.randn(3, C_in, H, W)
    w = torch.randn(C_in, C_out, kh, kw)
    b = torch.randn(C_out) if bias else None
    expected = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op)
    got = vae.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_conv_transpose2d_matches_the_module_and_its_gradients():
    layer = nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1, output_padding=1)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    expected = layer(x)
    x2 = x.detach().clone().requires_grad_()
    w2 = layer.weight.detach().clone().requires_grad_()
    got = vae.conv_transpose2d(x2, w2, layer.bias.detach(), stride=2, padding=1, output_padding=1)
    assert torch.allclose(got, expected, atol=1e-5)
    g = torch.randn_like(expected)
    expected.backward(g)
    got.backward(g)
    assert torch.allclose(x2.grad, x.grad, atol=1e-5)
    assert torch.allclose(w2.grad, layer.weight.grad, atol=1e-4)


def test_conv_transpose2d_in_float64_to_float_precision():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    got = vae.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert got.dtype == torch.float64
    assert torch.allclose(got, F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), atol=1e-12)


@pytest.mark.parametrize("s, p", [(1, 0), (2, 0), (2, 1), (3, 1)])
def test_conv_transpose_is_the_adjoint_of_the_convolution(s, p):
    """<conv(a), b> = <a, conv_transpose(b)> with the same weight, stride and padding."""
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)  # conv: 3 -> 4 channels; transposed: 4 -> 3
    a = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    conv_a = F.conv2d(a, w, stride=s, padding=p)
    b = torch.randn_like(conv_a)
    # output_padding restores the rows the convolution's floor dropped
    op = (9 + 2 * p - 3) % s
    back = vae.conv_transpose2d(b, w, stride=s, padding=p, output_padding=op)
    assert back.shape == a.shape
    assert math.isclose((conv_a * b).sum().item(), (a * back).sum().item(), rel_tol=1e-10)


def test_conv_transpose_output_size_matches_the_layer_on_a_grid():
    checked = 0
    for H, k, s, p, op in itertools.product(range(1, 8), range(1, 6), range(1, 4), range(3), range(3)):
        if op >= s:
            with pytest.raises(ValueError, match="output_padding must be smaller"):
                vae.conv_transpose_output_size(H, k, s, p, op)
            continue
        if (H - 1) * s - 2 * p + k + op < 1:
            with pytest.raises(ValueError, match="crops everything"):
                vae.conv_transpose_output_size(H, k, s, p, op)
            continue
        layer = nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, output_padding=op, bias=False)
        with torch.no_grad():
            actual = layer(torch.zeros(1, 1, H, H)).shape[-1]
        assert vae.conv_transpose_output_size(H, k, s, p, op) == actual, (H, k, s, p, op)
        checked += 1
    assert checked > 400


@pytest.mark.parametrize("H, k, s, p, op, expected", [
    (7, 4, 2, 1, 0, 14), (14, 4, 2, 1, 0, 28), (7, 3, 2, 1, 1, 14), (7, 5, 2, 2, 1, 14), (3, 3, 1, 0, 0, 5),
])
def test_conv_transpose_output_size_golden(H, k, s, p, op, expected):
    assert vae.conv_transpose_output_size(H, k, s, p, op) == expected


def test_overlap_counts_show_the_checkerboard():
    uneven = vae.overlap_counts(4, 3, 2)  # kernel 3 not divisible by stride 2
    assert torch.equal(uneven[0, :5], torch.tensor([1.0, 1.0, 2.0, 1.0, 2.0], dtype=torch.float64))
    even = vae.overlap_counts(4, 4, 2, padding=1)  # every interior pixel covered twice per axis
    assert even.shape == (8, 8)
    assert torch.equal(even[1:-1, 1:-1], torch.full((6, 6), 4.0, dtype=torch.float64))
    assert even[0, 0] == 1 and even[0, 3] == 2  # the border lost its outer neighbours to the padding


@pytest.mark.parametrize("args, kwargs, match", [
    ((torch.zeros(1, 2, 3), torch.zeros(2, 1, 3, 3)), {}, "shape \\(B, C_in, H, W\\)"),
    ((torch.zeros(1, 2, 3, 3), torch.zeros(3, 1, 3, 3)), {}, "x has 2 channels"),
    ((torch.zeros(1, 2, 3, 3), torch.zeros(2, 1, 3)), {}, "weight must have shape"),
    ((torch.zeros(1, 2, 3, 3), torch.zeros(2, 1, 3, 3), torch.zeros(2)), {}, "bias must have shape \\(1,\\)"),
    ((torch.zeros(1, 2, 3, 3), torch.zeros(2, 1, 3, 3)), {"stride": 2, "output_padding": 2}, "smaller than"),
    ((torch.zeros(1, 2, 3, 3), torch.zeros(2, 1, 3, 3, dtype=torch.float64)), {}, "one floating dtype"),
    ((torch.zeros(1, 2, 3, 3), torch.zeros(2, 1, 3, 3)), {"stride": 0}, "stride must be an integer >= 1"),
    ((torch.zeros(1, 2, 3, 3), torch.zeros(2, 1, 3, 3)), {"padding": -1}, "padding must be an integer >= 0"),
    ((torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)), {"padding": 1}, "crops everything"),
])
def test_conv_transpose2d_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        vae.conv_transpose2d(*args, **kwargs)


# the Gaussian and the loss --------------------------------------------------------

def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(vae.gaussian_kl(mu, logvar), expected, atol=1e-12)
    assert vae.gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0  # q = p


def test_gaussian_kl_matches_a_monte_carlo_estimate():
    """KL = E_q[log q(z) - log p(z)]; the estimate from 200,000 samples is
    within 4 standard errors of the closed form."""
    gen = torch.Generator().manual_seed(1)
    mu = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -1.5, 0.7]], dtype=torch.float64)
    eps = torch.randn(200_000, 1, 3, generator=gen, dtype=torch.float64)
    z = vae.reparameterize(mu, logvar, eps)  # (n, 1, 3)
    terms = (vae.log_normal(z, mu, logvar) - vae.log_normal(z))[:, 0]  # (n,)
    se = terms.std() / math.sqrt(len(terms))
    closed = vae.gaussian_kl(mu, logvar).item()
    assert abs(terms.mean().item() - closed) < 4 * se.item()
    assert abs(terms.mean().item() - closed) > 0  # an estimate, not the formula again
    wrong = closed * 1.02  # a 2% error in the formula would be caught
    assert abs(terms.mean().item() - wrong) > 4 * se.item()


def test_log_normal_matches_torch_distributions():
    z, mu, logvar = torch.randn(3, 7, 4), torch.randn(7, 4), torch.randn(7, 4)
    expected = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    assert torch.allclose(vae.log_normal(z, mu, logvar), expected, atol=1e-5)
    assert torch.allclose(vae.log_normal(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)


def test_the_loss_is_pytorchs_example_per_image():
    """examples/vae/main.py: BCE(recon_x, x, reduction='sum') + KLD, on sigmoid outputs."""
    x = images(5)
    logits = torch.randn(5, 1, 28, 28) * 3
    mu, logvar = torch.randn(5, 20), torch.randn(5, 20)
    recon_x = torch.sigmoid(logits)
    BCE = F.binary_cross_entropy(recon_x.view(-1, 784), x.view(-1, 784), reduction="sum")
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    loss, recon, kl = vae.vae_loss(logits, x, mu, logvar)
    assert loss.shape == recon.shape == kl.shape == (5,)
    assert torch.allclose(loss.sum(), BCE + KLD, rtol=1e-5)
    assert torch.allclose(recon.sum(), BCE, rtol=1e-5) and torch.allclose(kl.sum(), KLD, rtol=1e-5)
    loss4, recon4, kl4 = vae.vae_loss(logits, x, mu, logvar, beta=4.0)
    assert torch.allclose(loss4, recon + 4 * kl) and torch.equal(recon4, recon)


def test_bernoulli_nll_is_stable_where_the_sigmoid_saturates():
    x = torch.tensor([[1.0, 0.0, 0.5]])
    logits = torch.tensor([[-200.0, 200.0, 0.0]])
    got = vae.bernoulli_nll(logits, x)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, torch.tensor([400.0 + math.log(2)]), rtol=1e-6)


def test_reparameterize_lets_the_gradient_reach_mu_and_logvar():
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    eps = torch.randn(4, 3)
    z = vae.reparameterize(mu, logvar, eps)
    z.sum().backward()
    assert torch.equal(mu.grad, torch.ones(4, 3))
    assert torch.allclose(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)
    draws = vae.reparameterize(torch.full((200_000, 1), 2.0), torch.full((200_000, 1), math.log(9.0)))
    assert abs(draws.mean().item() - 2.0) < 0.03 and abs(draws.std().item() - 3.0) < 0.03


@pytest.mark.parametrize("fn, args, match", [
    (vae.gaussian_kl, (torch.zeros(2, 3), torch.zeros(2, 4)), "one shape"),
    (vae.gaussian_kl, (torch.zeros(3), torch.zeros(3)), "one shape"),
    (vae.gaussian_kl, (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)), "floating"),
    (vae.reparameterize, (torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4)), "eps must have shape"),
    (vae.bernoulli_nll, (torch.zeros(2, 784), torch.zeros(2, 1, 28, 28)), "one shape"),
    (vae.vae_loss, (torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 28, 28), torch.zeros(3, 2),
                    torch.zeros(3, 2)), "2 images but mu 3"),
])
def test_loss_functions_bad_input(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


def test_vae_loss_refuses_a_negative_beta():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="beta must lie in \\[0.0, inf\\)"):
        vae.vae_loss(torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 28, 28), z, z, beta=-1)


# models ----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: vae.mlp_vae(8), lambda: vae.conv_vae(8, channels=(4, 8), hidden=16)])
def test_vae_shapes_and_sampling(make):
    model = make()
    x = images(3)
    out = model(x)
    assert out.logits.shape == (3, 1, 28, 28) and out.mu.shape == out.logvar.shape == out.z.shape == (3, 8)
    samples = model.sample(5)
    assert samples.shape == (5, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1


@pytest.mark.parametrize("make", [lambda: vae.mlp_autoencoder(2), lambda: vae.conv_autoencoder(3, (4, 8), 16)])
def test_autoencoder_shapes(make):
    model = make()
    z = model.encode(images(2))
    assert z.shape == (2, model.latent_dim)
    assert model.decode(z).shape == model(images(2)).shape == (2, 1, 28, 28)


def test_conditional_vae_uses_the_label():
    model = vae.cvae(4)
    x, y = images(3), torch.tensor([0, 3, 9])
    out = model(x, y)
    assert out.logits.shape == (3, 1, 28, 28)
    z = torch.zeros(2, 4)
    assert not torch.allclose(model.decode(z, torch.tensor([1, 1])), model.decode(z, torch.tensor([7, 7])))
    assert model.sample(2, torch.tensor([5, 6])).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("call, match", [
    (lambda m, c: m(images(2)[:, :, :27]), "shape \\(B, 1, 28, 28\\)"),
    (lambda m, c: m.decode(torch.zeros(2, 5)), "z must have shape \\(B, 4\\)"),
    (lambda m, c: m(images(2), torch.tensor([0, 1])), "not conditional"),
    (lambda m, c: c(images(2)), "needs the labels y"),
    (lambda m, c: c(images(2), torch.tensor([0, 10])), "labels must lie in 0..9"),
    (lambda m, c: c(images(2), torch.tensor([0.0, 1.0])), "int64 class labels of shape \\(2,\\)"),
])
def test_models_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(vae.mlp_vae(4), vae.cvae(4))


# steps and training ------------------------------------------------------------------

def test_vae_step_returns_the_terms_and_beta_weights_the_kl():
    model = vae.mlp_vae(4)
    batch = (images(8), torch.zeros(8, dtype=torch.long))
    torch.manual_seed(3)
    out = vae.VAEStep()(model, batch)
    torch.manual_seed(3)
    out4 = vae.VAEStep(beta=4.0)(model, batch)
    assert set(out) == {"loss", "recon", "kl", "neg_elbo"}
    assert torch.allclose(out["loss"], out["neg_elbo"]) and torch.allclose(out["neg_elbo"], out["recon"] + out["kl"])
    assert torch.allclose(out4["loss"], out4["recon"] + 4 * out4["kl"])
    with pytest.raises(ValueError, match="beta"):
        vae.VAEStep(beta=-0.5)


def test_fit_trains_a_vae_and_the_elbo_improves():
    gen = torch.Generator().manual_seed(0)
    x = images(256, gen)
    x[:, :, 10:18, 10:18] = 1.0  # a shared structure to learn
    loader = BatchLoader(x, torch.zeros(256, dtype=torch.long), batch_size=64, shuffle=True)
    model = vae.mlp_vae(4, hidden=(64,))
    before = dlbook.evaluate(model, loader, step=vae.VAEStep(), amp=False)["neg_elbo"]
    history = dlbook.fit(model, loader, step=vae.VAEStep(), optimizer=torch.optim.Adam(model.parameters(), 3e-3),
                         epochs=3, amp=False, progress=False)
    after = dlbook.evaluate(model, loader, step=vae.VAEStep(), amp=False)["neg_elbo"]
    assert after < before - 10
    assert "train_kl" in history.keys()


def test_reconstruction_step_and_denoising():
    model = vae.mlp_autoencoder(3, hidden=(16,))
    x = images(4)
    out = vae.ReconstructionStep()(model, (x,))
    assert set(out) == {"loss", "sse"}
    torch.manual_seed(0)
    noisy = vae.ReconstructionStep(noise_std=0.5)(model, (x,))
    assert not torch.allclose(out["loss"], noisy["loss"])
    torch.manual_seed(5)
    a = vae.add_noise(x, 0.3)
    assert a.min() >= 0 and a.max() <= 1 and not torch.equal(a, x)
    assert torch.equal(vae.add_noise(x, 0.0), x)


# the importance-weighted bound -------------------------------------------------------

@pytest.fixture
def small_vae():
    model = vae.mlp_vae(3, hidden=(32,)).double()
    model.eval()
    return model


def test_iwae_with_one_sample_is_the_one_sample_neg_elbo(small_vae):
    x = images(5).double()
    eps = torch.randn(1, 5, 3, dtype=torch.float64)
    got = vae.iwae_bound(small_vae, x, k=1, eps=eps)
    mu, logvar = small_vae.encode(x)
    z = vae.reparameterize(mu, logvar, eps[0])
    with torch.no_grad():
        recon = vae.bernoulli_nll(small_vae.decode(z), x)
    kl_estimate = vae.log_normal(z, mu, logvar) - vae.log_normal(z)
    assert torch.allclose(got, (recon + kl_estimate).detach(), atol=1e-9)


def test_iwae_decreases_with_k_and_stays_below_the_neg_elbo(small_vae):
    x = images(6).double()
    torch.manual_seed(0)
    bounds = {k: torch.stack([vae.iwae_bound(small_vae, x, k=k) for _ in range(30)]).mean(0) for k in (1, 10, 100)}
    with torch.no_grad():
        mu, logvar = small_vae.encode(x)
        neg_elbo = torch.stack([vae.vae_loss(small_vae.decode(vae.reparameterize(mu, logvar)), x, mu, logvar)[0]
                                for _ in range(3000)]).mean(0)
    assert (bounds[10] < bounds[1]).all() and (bounds[100] < bounds[10]).all()
    assert (bounds[100] < neg_elbo).all()
    assert (bounds[100] > 0).all()
    assert torch.allclose(bounds[1], neg_elbo, rtol=0.01)  # k = 1: the -ELBO, on average


def test_iwae_works_in_float32_and_for_a_conditional_vae():
    model = vae.cvae(2, hidden=(16,))
    x, y = images(3), torch.tensor([1, 2, 3])
    got = vae.iwae_bound(model, x, k=7, y=y)
    assert got.shape == (3,) and got.dtype == torch.float32 and torch.isfinite(got).all()


def test_iwae_bad_input(small_vae):
    with pytest.raises(TypeError, match="dlbook.vae.VAE"):
        vae.iwae_bound(nn.Linear(2, 2), images(2))
    with pytest.raises(ValueError, match="grey levels in \\[0, 1\\]"):
        vae.iwae_bound(small_vae, images(2).double() * 2)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        vae.iwae_bound(small_vae, images(2).double(), k=0)
    with pytest.raises(ValueError, match="eps must have shape \\(k, B, D\\) = \\(4, 2, 3\\)"):
        vae.iwae_bound(small_vae, images(2).double(), k=4, eps=torch.zeros(4, 2, 2))


# anomaly scores, PCA, the pixel baseline, collapse ------------------------------------

def test_reconstruction_error_is_the_summed_squared_error():
    model = vae.mlp_autoencoder(2, hidden=(8,))
    x = images(5)
    with torch.no_grad():
        expected = (torch.sigmoid(model(x)) - x).pow(2).flatten(1).sum(1)
    assert torch.allclose(vae.reconstruction_error(model, x, batch_size=2), expected, atol=1e-5)
    model_v = vae.mlp_vae(2, hidden=(8,))
    with torch.no_grad():
        expected_v = (torch.sigmoid(model_v.decode(model_v.encode(x)[0])) - x).pow(2).flatten(1).sum(1)
    assert torch.allclose(vae.reconstruction_error(model_v, x), expected_v, atol=1e-5)  # decodes mu: no noise


def test_pca_matches_the_svd_and_reconstructs_its_span():
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 784, generator=gen, dtype=torch.float64)
    x = (torch.randn(50, 3, generator=gen, dtype=torch.float64) @ basis + 0.5).view(50, 1, 28, 28)
    pca = vae.PCA(3).fit(x)
    assert pca.reconstruction_error(x).max() < 1e-12  # rank 3: exact
    flat = x.flatten(1) - x.flatten(1).mean(0)
    _, _, Vh = torch.linalg.svd(flat, full_matrices=False)
    assert torch.allclose((pca.components @ Vh[:3].T).abs(), torch.eye(3, dtype=torch.float64), atol=1e-8)
    fewer = vae.PCA(2).fit(x)
    assert fewer.reconstruction_error(x).sum() > 1.0
    with pytest.raises(RuntimeError, match="fit the PCA first"):
        vae.PCA(2).encode(x)


def test_pixel_bernoulli_is_the_smoothed_mean_and_its_nll():
    x = torch.zeros(8, 1, 28, 28)
    x[:4, 0, 0, 0] = 1.0
    x[:, 0, 0, 1] = 0.5
    p = vae.pixel_bernoulli(x)
    assert p[0, 0, 0].item() == pytest.approx(5 / 10) and p[0, 0, 1].item() == pytest.approx(5 / 10)
    assert p[0, 5, 5].item() == pytest.approx(1 / 10)
    nll = vae.pixel_bernoulli_nll(p, x)
    expected = F.binary_cross_entropy(p.expand_as(x).double(), x.double(), reduction="none").flatten(1).sum(1)
    assert torch.allclose(nll.double(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        vae.pixel_bernoulli_nll(torch.zeros(1, 28, 28), x)
    with pytest.raises(ValueError, match="normalize=False"):
        vae.pixel_bernoulli(x - 0.5)


def test_active_units_counts_the_dimensions_that_vary():
    mu = torch.zeros(100, 4)
    mu[:, 1] = torch.randn(100)
    mu[:, 3] = 0.01 * torch.randn(100)
    assert vae.active_units(mu) == 1
    assert vae.active_units(mu, threshold=1e-6) == 2


# VQ-VAE ----------------------------------------------------------------------------

def test_vector_quantizer_picks_the_nearest_code_and_passes_the_gradient_straight_through():
    q = vae.VectorQuantizer(5, 3)
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    z_q, idx, codebook_loss, commitment_loss = q(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = torch.cdist(flat, q.codebook.weight.detach()).argmin(1)
    assert torch.equal(idx.flatten(), nearest)
    assert torch.allclose(z_q, q.codebook.weight[idx].permute(0, 3, 1, 2))
    g = torch.randn_like(z_q)
    (z_q * g).sum().backward()
    assert torch.equal(z_e.grad, g)  # the identity's gradient
    assert q.codebook.weight.grad is None  # the codebook learns only from its own loss
    codebook_loss.backward()
    assert q.codebook.weight.grad is not None
    expected = 0.25 * (z_e.detach() - z_q.detach()).pow(2).flatten(1).sum(1).mean()
    assert torch.allclose(commitment_loss, expected)


def test_vqvae_step_and_code_usage():
    model = vae.VQVAE(num_codes=8, code_dim=4, channels=8)
    out = vae.vqvae_step(model, (images(3),))
    assert set(out) == {"loss", "recon", "codebook", "commitment"}
    _, idx, _, _ = model(images(3))
    assert idx.shape == (3, 7, 7)
    assert model.decode_indices(idx).shape == (3, 1, 28, 28)
    assert vae.code_usage(torch.tensor([0, 0, 1, 1]), 4) == (2, pytest.approx(2.0))
    with pytest.raises(ValueError, match="z_e must have shape \\(B, 4, H, W\\)"):
        model.quantizer(torch.zeros(1, 3, 2, 2))


def test_latent_grid():
    grid = vae.latent_grid(vae.mlp_vae(2, hidden=(8,)), n=4)
    assert grid.shape == (16, 1, 28, 28)
    with pytest.raises(ValueError, match="2-D latent"):
        vae.latent_grid(vae.mlp_vae(3, hidden=(8,)))


def test_sample_draws_z_where_the_generator_lives(small_vae):
    # the same z as a CPU generator draws, decoded: a CPU generator must also serve a model on a GPU
    got = small_vae.sample(5, generator=torch.Generator().manual_seed(3))
    z = torch.randn(5, small_vae.latent_dim, generator=torch.Generator().manual_seed(3)).double()
    with torch.no_grad():
        want = torch.sigmoid(small_vae.decode(z))
    assert got.shape == (5, 1, 28, 28)
    assert torch.equal(got, want)
    assert not torch.equal(got, small_vae.sample(5, generator=torch.Generator().manual_seed(4)))
