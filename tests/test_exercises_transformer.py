"""The Transformer chapter's exercises: right answers pass, typical wrong
ones get a hint that never gives the solution away, and the rules are
enforced."""

import math

import pytest
import torch
from torch import nn

from dlbook import exercises
from dlbook import transformer as tr
from exercise_helpers import assert_fails_with_hint, assert_passes, check, wrong_cases


# The right answers, as a reader would write them ---------------------------------

def _params(d, nh, d_ff):
    attention = 4 * (d * d + d)
    return 2 * attention + (d * d_ff + d_ff + d_ff * d + d) + 3 * 2 * d


def _prefix(T, P):
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j < P) | (j <= i)


def _top_p(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep_sorted = sorted_probs.cumsum(-1) - sorted_probs < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -math.inf)


RIGHT = {
    "transformer.decoder_layer_params": _params,
    "transformer.prefix_lm_mask": _prefix,
    "transformer.top_p": _top_p,
    "transformer.changed_fraction": lambda p, V: p * (0.8 + 0.1 * (1 - 1 / V)),
}


def _top_p_exclusive(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    keep = torch.zeros_like(sorted_probs, dtype=torch.bool).scatter(-1, order, sorted_probs.cumsum(-1) < p)
    return logits.masked_fill(~keep, -math.inf)


def _top_p_least(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1)
    keep_sorted = sorted_probs.cumsum(-1) - sorted_probs < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, -math.inf)


def _top_p_rescaled(logits, p):
    out = _top_p(logits, p)
    return torch.log_softmax(out, dim=-1)


WRONG = {
    "transformer.decoder_layer_params": [
        (lambda d, nh, f: _params(d, nh, f) - 4 * (d * d + d), "which one reads the encoder"),
        (lambda d, nh, f: _params(d, nh, f) - 2 * d, "how many are there"),
        (lambda d, nh, f: _params(d, nh, f) - 3 * d, "gain *and* a bias"),
        (lambda d, nh, f: _params(d, nh, f) - 6 * d, "LayerNorms have parameters"),
        (lambda d, nh, f: 8 * d * d + 2 * d * f, "biases"),
        (lambda d, nh, f: _params(d, nh, f) + 8 * d * d * (nh - 1), "heads add"),
        (lambda d, nh, f: float(_params(d, nh, f)), "whole"),
        (lambda d, nh, f: _params(d, nh, f) + 1, "off by"),
        (lambda d, nh, f: sum(p.numel() for p in tr.DecoderLayer(d, nh, f).parameters()), "build no layers"),
        (lambda d, nh, f: sum(p.numel() for p in nn.TransformerDecoderLayer(d, nh, f).parameters()),
         "build no layers"),
        (lambda d, nh, f: sum(p.numel() for p in nn.Linear(d, d).parameters()), "build no layers"),
        (3, "function"),
    ],
    "transformer.prefix_lm_mask": [
        (lambda T, P: ~_prefix(T, P), "inverted"),
        (lambda T, P: _prefix(T, P).T, "transposed"),
        (lambda T, P: torch.ones(T, T, dtype=torch.bool).tril(), "causal mask"),
        (lambda T, P: _prefix(T, P) | (torch.arange(T)[:, None] < P), "generated tokens"),
        (lambda T, P: _prefix(T, P).int(), "boolean"),
        (lambda T, P: _prefix(T, P).tolist(), "tensor"),
        (lambda T, P: _prefix(T, P)[:-1], "shape"),
        (lambda T, P: (torch.arange(T)[None, :] <= P) | torch.ones(T, T, dtype=torch.bool).tril(), "differs"),
        ("mask", "function"),
    ],
    "transformer.top_p": [
        (_top_p_exclusive, "too few"),
        (_top_p_least, "you keep"),
        (lambda logits, p: logits, "every token"),
        (_top_p_rescaled, "changed"),
        (lambda logits, p: _top_p(logits, p)[:1], "shape"),
        (lambda logits, p: _top_p(logits, p).masked_fill(torch.isinf(_top_p(logits, p)), -1e9), "every token"),
        (1, "function"),
    ],
    "transformer.changed_fraction": [
        (lambda p, V: 0.9 * p, "sometimes the original"),
        (lambda p, V: 0.8 * p, "usually different"),
        (lambda p, V: p, "some are kept"),
        (lambda p, V: p * (0.8 + 0.1 * (1 - 1 / (V + 3))), "V tokens of the vocabulary"),
        (lambda p, V: 0.15, "some are kept"),
        (lambda p, V: "0.135", "sometimes the original"),
        (lambda p, V: [p], "number"),
        (0.135, "function"),
    ],
}

# What a hint must never print: the explanation's key facts
SECRETS = {
    "transformer.decoder_layer_params": ["2 * 4 * (d^2 + d)", "3 * 2d"],
    "transformer.prefix_lm_mask": ["(j < n_prompt) | (j <= i)"],
    "transformer.top_p": ["cumsum minus its own probability < p"],
    "transformer.changed_fraction": ["p_mask * (0.8 + 0.1 * (1 - 1/V))", "13.5%"],
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


def test_the_right_answers_agree_with_the_package():
    for d, nh, f in [(64, 4, 256), (16, 2, 48)]:
        assert _params(d, nh, f) == sum(p.numel() for p in tr.DecoderLayer(d, nh, f).parameters())
    assert torch.equal(_prefix(6, 0), torch.ones(6, 6, dtype=torch.bool).tril())
    assert bool(_prefix(5, 5).all())


def test_the_rule_is_enforced_and_lifted_afterwards(capsys):
    real = (nn.Linear.__init__, nn.LayerNorm.__init__)
    result, out = check("transformer.decoder_layer_params",
                        lambda d, nh, f: sum(p.numel() for p in tr.DecoderLayer(d, nh, f).parameters()), capsys)
    assert not result.passed and "build no layers" in out
    assert (nn.Linear.__init__, nn.LayerNorm.__init__) == real
    assert sum(p.numel() for p in nn.Linear(3, 2).parameters()) == 8


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out
