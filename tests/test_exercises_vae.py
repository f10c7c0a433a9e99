"""The VAE chapter's exercises: right answers pass, typical wrong ones get a
hint that never gives the solution away, and the rules are enforced."""

import math

import numpy as np
import pytest
import scipy.special
import torch
from scipy.special import logsumexp as sp_logsumexp
# names bound before any check, as a reader's notebook may have bound them
from torch.distributions import kl_divergence
from torch.nn import ConvTranspose2d

from dlbook import exercises, vae
from dlbook.vae import gaussian_kl
from exercise_helpers import assert_fails_with_hint, assert_passes, check, wrong_cases


# The right answers, as a reader would write them ---------------------------------

def _kl(mu_q, logvar_q, mu_p, logvar_p):
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1).sum(-1)


def _doubling(k):
    op = k % 2
    return 2, (k - 2 + op) // 2, op


def _neg_iwae(log_w):
    m = log_w.max(0).values  # (B,)
    return -(m + (log_w - m).exp().sum(0).log() - math.log(log_w.shape[0]))


def _log_weights(model, x, eps):
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps  # (k, B, D)
    k, B, D = eps.shape
    logits = model.decode(z.reshape(k * B, D))
    xs = x.repeat(k, 1, 1, 1)
    log_px_z = -(torch.nn.functional.softplus(logits) - xs * logits).flatten(1).sum(1).view(k, B)
    log_pz = -0.5 * (z ** 2).sum(-1)
    log_qz = -0.5 * (logvar + eps ** 2).sum(-1)
    return log_px_z + log_pz - log_qz


def _log_weights_no_q(model, x, eps):
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps
    return _log_weights(model, x, eps) - 0.5 * (logvar + eps ** 2).sum(-1)


def _log_weights_no_prior(model, x, eps):
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps
    return _log_weights(model, x, eps) + 0.5 * (z ** 2).sum(-1)


def _log_weights_one_constant(model, x, eps):
    return _log_weights(model, x, eps) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)


def _log_weights_library(model, x, eps):
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    k, B, D = eps.shape
    logits = model.decode(z.reshape(k * B, D))
    log_px_z = -vae.bernoulli_nll(logits, x.repeat(k, 1, 1, 1)).view(k, B)
    return log_px_z + p.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)


def _log_weights_low_rank(model, x, eps):  # a Gaussian log-density under another name
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * eps
    k, B, D = eps.shape
    zeros = torch.zeros(D, 1, dtype=mu.dtype)
    q = torch.distributions.LowRankMultivariateNormal(mu, zeros, logvar.exp())
    p = torch.distributions.LowRankMultivariateNormal(torch.zeros_like(mu), zeros, torch.ones_like(mu))
    logits = model.decode(z.reshape(k * B, D))
    xs = x.repeat(k, 1, 1, 1)
    log_px_z = -(torch.nn.functional.softplus(logits) - xs * logits).flatten(1).sum(1).view(k, B)
    return log_px_z + p.log_prob(z) - q.log_prob(z)


def _log_weights_via_iwae(model, x, eps):
    return -vae.iwae_bound(model, x, k=eps.shape[0], eps=eps).expand(eps.shape[0], -1)


RIGHT = {
    "vae.kl_two_gaussians": _kl,
    "vae.doubling_layer": _doubling,
    "vae.iwae_from_log_weights": _neg_iwae,
    "vae.log_weights": _log_weights,
}


def _kl_distributions(mu_q, logvar_q, mu_p, logvar_p):
    q = torch.distributions.Normal(mu_q, (0.5 * logvar_q).exp())
    p = torch.distributions.Normal(mu_p, (0.5 * logvar_p).exp())
    return kl_divergence(q, p).sum(-1)


def _kl_std_as_var(mu_q, logvar_q, mu_p, logvar_p):  # exp(logvar) read as a standard deviation
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() ** 2 + (mu_q - mu_p) ** 2) / logvar_p.exp() ** 2 - 1).sum(-1)


def _naive_iwae(log_w):
    return -(log_w.exp().mean(0).log())


def _neg_iwae_detached(log_w):
    m = log_w.max(0).values
    return -(m + (log_w - m).exp().sum(0).log().detach() - math.log(log_w.shape[0]))


WRONG = {
    "vae.kl_two_gaussians": [
        (lambda a, b, c, d: _kl(c, d, a, b), "KL(p || q)"),
        (lambda a, b, c, d: 2 * _kl(a, b, c, d), "factor of 2"),
        (lambda a, b, c, d: 0.5 * (d - b + (b.exp() + (a - c) ** 2) / d.exp() - 1), "sum them"),
        (lambda a, b, c, d: _kl(a, b, c, d).mean(), "should have shape"),
        (_kl_std_as_var, "Hint"),  # negative somewhere, or wrong values: either hint
        (lambda a, b, c, d: gaussian_kl(a, b) + 0 * c.sum(), "the rule"),
        (lambda a, b, c, d: vae.gaussian_kl(a, b), "the rule"),
        (_kl_distributions, "the rule"),
        (lambda a, b, c, d: _kl(a, b, c, d).tolist(), "tensor"),
        (lambda a, b, c, d: -_kl(a, b, c, d), "negative"),
        (3, "function"),
    ],
    "vae.doubling_layer": [
        (lambda k: (2, 1, 0), "constant is not"),
        (lambda k: (2, k // 2, 0), "constant is not"),
        (lambda k: (1, 0, 0), "How does the output size grow"),
        (lambda k: (2, (k - 1) // 2, 2), "smaller than the stride"),
        (lambda k: (2, -1, 0), "at least 0"),
        (lambda k: (2.0, 1.0, 0.0), "three whole numbers"),
        (lambda k: (2, 1), "three whole numbers"),
        (lambda k: (2, ConvTranspose2d(1, 1, k).padding[0], 0), "build no layers"),
        (lambda k: (2, vae.conv_transpose_output_size(7, k, 2) and 1, 0), "the rule"),
        (lambda k: (2, int(torch.nn.ConvTranspose2d(1, 1, k, 2)(torch.zeros(1, 1, 7, 7)).shape[-1]), 0), "the rule"),
    ],
    "vae.log_weights": [
        (_log_weights_no_q, "divides by the proposal"),
        (_log_weights_no_prior, "prior p(z) is missing"),
        (_log_weights_one_constant, "off by a constant"),
        (_log_weights_library, "the rule"),
        (_log_weights_via_iwae, "the rule"),
        (_log_weights_low_rank, "the rule"),
        (lambda m, x, e: _log_weights(m, x, e).T, "should have shape"),
        (lambda m, x, e: _log_weights(m, x, e).tolist(), "tensor"),
        (1, "function"),
    ],
    "vae.iwae_from_log_weights": [
        (_naive_iwae, "underflows"),
        (lambda w: -_neg_iwae(w), "the sign"),
        (lambda w: _neg_iwae(w) - math.log(w.shape[0]), "off by log k"),
        (lambda w: -w.mean(0), "averaged the logs"),
        (lambda w: -torch.logsumexp(w, 0) + math.log(w.shape[0]), "the rule"),
        (lambda w: -torch.special.logsumexp(w, 0) + math.log(w.shape[0]), "the rule"),
        (lambda w: -(torch.log_softmax(w, 0)[0] - w[0]) + math.log(w.shape[0]), "the rule"),
        (lambda w: torch.from_numpy(-sp_logsumexp(w.detach().numpy(), 0) + math.log(w.shape[0])), "the rule"),
        (lambda w: torch.from_numpy(-scipy.special.logsumexp(w.detach().numpy(), 0)), "the rule"),
        # numpy computes the right value, but no gradient can reach log_w through it
        (lambda w: torch.from_numpy(-np.logaddexp.reduce(w.detach().numpy(), 0) + math.log(w.shape[0])),
         "no gradient reaches"),
        (lambda w: _neg_iwae(w).detach(), "no gradient reaches"),
        (_neg_iwae_detached, "its gradient is not"),
        (lambda w: _neg_iwae(w.T), "should have shape"),
        (lambda w: _neg_iwae(w).tolist(), "tensor"),
    ],
}

# What a hint must never print: the explanation's key facts
SECRETS = {
    "vae.kl_two_gaussians": ["log(sigma_p / sigma_q)", "0.5 * (logvar_p - logvar_q"],
    "vae.doubling_layer": ["P_out = k mod 2", "(2, 1, 0)", "(2, 1, 1)", "S = 2"],
    "vae.iwae_from_log_weights": ["Subtract the largest log-weight", "largest log-weight"],
    "vae.log_weights": ["z = mu + exp(logvar / 2) * eps", "log 2pi terms cancel"],
}


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_right_answer_passes(key, capsys):
    assert_passes(key, RIGHT[key], capsys)


@pytest.mark.parametrize("key, answer, hint", wrong_cases(WRONG))
def test_wrong_answer_fails_with_a_hint_and_no_solution(key, answer, hint, capsys):
    assert_fails_with_hint(key, answer, hint, SECRETS[key], capsys)


def test_secrets_are_really_in_the_explanations():
    for key, secrets in SECRETS.items():
        assert secrets[0] in exercises.get(key).explanation, key


def test_the_checks_use_fresh_inputs(capsys):
    """A lookup table of answers to the last check's inputs fails the next check."""
    seen = {}

    def remember(mu_q, logvar_q, mu_p, logvar_p):
        out = _kl(mu_q, logvar_q, mu_p, logvar_p)
        seen.setdefault("first", mu_q.clone())
        return out

    check("vae.kl_two_gaussians", remember, capsys)
    first = seen.pop("first")
    check("vae.kl_two_gaussians", remember, capsys)
    assert not torch.equal(first, seen["first"])


def test_the_rules_are_enforced_and_everything_is_restored(capsys):
    real = (torch.distributions.kl.kl_divergence, vae.gaussian_kl, torch.logsumexp, ConvTranspose2d.__init__)
    check("vae.kl_two_gaussians", _kl_distributions, capsys)
    check("vae.iwae_from_log_weights", lambda w: -torch.logsumexp(w, 0), capsys)
    check("vae.doubling_layer", lambda k: (2, ConvTranspose2d(1, 1, k).padding[0], 0), capsys)
    assert (torch.distributions.kl.kl_divergence, vae.gaussian_kl, torch.logsumexp, ConvTranspose2d.__init__) == real
    mu = torch.zeros(2, 3)
    assert torch.equal(vae.gaussian_kl(mu, mu), torch.zeros(2))
    assert torch.allclose(torch.logsumexp(torch.zeros(2), 0), torch.tensor(math.log(2)))
    assert ConvTranspose2d(1, 1, 3)(torch.zeros(1, 1, 2, 2)).shape == (1, 1, 4, 4)
