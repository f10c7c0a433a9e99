"""The Transformer chapter's exercises: right answers pass, typical wrong
ones get a hint that never gives the solution away, and the rules are
enforced."""

import copy
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


def _beam(scores, log_p):
    B, k, V = log_p.shape
    total = (scores[:, :, None] + log_p).reshape(B, k * V)
    new, index = total.topk(k, dim=-1)
    return new, index // V, index % V


def _beam_own_best(scores, log_p):  # every hypothesis extended by its own best token
    best, token = log_p.max(-1)
    new, order = (scores + best).sort(-1, descending=True)
    return new, order, token.gather(1, order)


def _beam_no_scores(scores, log_p):
    return _beam(torch.zeros_like(scores), log_p)


def _beam_swapped(scores, log_p):
    new, beam, token = _beam(scores, log_p)
    B, k, V = log_p.shape
    index = beam * V + token
    return new, index % k, index // k


def _beam_unsorted(scores, log_p):
    new, beam, token = _beam(scores, log_p)
    return new.flip(-1), beam.flip(-1), token.flip(-1)


def _cached(q, kc, vc, kn, vn):
    k, v = torch.cat([kc, kn], 1), torch.cat([vc, vn], 1)
    w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1)
    return w @ v, k, v


def _cached_old_only(q, kc, vc, kn, vn):
    out, k, v = _cached(q, kc, vc, kn, vn)
    if kc.shape[1] == 0:
        return out, k, v
    w = torch.softmax(q @ kc.transpose(1, 2) / math.sqrt(q.shape[-1]), -1)
    return w @ vc, k, v


def _cached_unscaled(q, kc, vc, kn, vn):
    _, k, v = _cached(q, kc, vc, kn, vn)
    return torch.softmax(q @ k.transpose(1, 2), -1) @ v, k, v


def _cached_prepended(q, kc, vc, kn, vn):
    out, _, _ = _cached(q, kc, vc, kn, vn)
    return out, torch.cat([kn, kc], 1), torch.cat([vn, vc], 1)


def _cached_sdpa(q, kc, vc, kn, vn):
    k, v = torch.cat([kc, kn], 1), torch.cat([vc, vn], 1)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v), k, v


def _cached_dlbook(q, kc, vc, kn, vn):
    from dlbook import attention
    k, v = torch.cat([kc, kn], 1), torch.cat([vc, vn], 1)
    out = attention.scaled_dot_product_attention(q, k, v)
    return (out[0] if isinstance(out, tuple) else out), k, v


RIGHT = {
    "transformer.beam_step": _beam,
    "transformer.cached_attention": _cached,
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
    "transformer.cached_attention": [
        (_cached_old_only, "see itself too"),
        (_cached_unscaled, "not scaled"),
        (_cached_prepended, "oldest token first"),
        (lambda *a: _cached(*a)[0], "tuple"),
        (lambda q, kc, vc, kn, vn: (_cached(q, kc, vc, kn, vn)[0], kc, vc), "t + 1"),
        (_cached_sdpa, "the rule is"),
        (_cached_dlbook, "the rule is"),
        (1, "function"),
    ],
    "transformer.beam_step": [
        (_beam_own_best, "its own best token"),
        (_beam_no_scores, "total log-probability"),
        (_beam_swapped, "flat index"),
        (_beam_unsorted, "best first"),
        (lambda s, lp: _beam(s, lp)[:2], "tuple"),
        (lambda s, lp: tuple(t[:, :1] for t in _beam(s, lp)), "shape"),
        (1, "function"),
    ],
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
    "transformer.cached_attention": ["k = cat(k_cache, k_new)", "causality comes for free"],
    "transformer.beam_step": ["hypothesis i // V and token i % V"],
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
    for answer, _ in BYPASSES:
        check("transformer.decoder_layer_params", answer, capsys)
    assert (nn.Linear.__init__, nn.LayerNorm.__init__) == real
    assert sum(p.numel() for p in nn.Linear(3, 2).parameters()) == 8
    assert _count(copy.deepcopy(EARLIER[FIXED[0]])) == _params(*FIXED[0])  # no operator rule left behind


# Every way around "build no layers" that the reviews list is refused, and the hint names the rule
# and what the answer called or ran. "got through" marks those that the check let through while it
# forbade names only.

LINEAR = nn.Linear  # a class bound before the check
LINEAR_INIT, NORM_INIT = nn.Linear.__init__, nn.LayerNorm.__init__  # __init__ saved before the check
FIXED = [(64, 4, 256), (32, 2, 64), (48, 8, 100), (16, 1, 16), (128, 16, 512)]  # the check's fixed sizes
EARLIER = {size: tr.DecoderLayer(*size) for size in FIXED}  # layers built before the check


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _from_pieces(d, d_ff, linear, norm):
    """The layer's count from the counts of its pieces, each found by building it."""
    return 8 * linear(d, d) + linear(d, d_ff) + linear(d_ff, d) + 3 * norm(d)


def _saved_init(d, nh, d_ff):  # got through
    def linear(i, o):
        m = nn.Linear.__new__(nn.Linear)
        LINEAR_INIT(m, i, o)
        return _count(m)

    def norm(n):
        m = nn.LayerNorm.__new__(nn.LayerNorm)
        NORM_INIT(m, n)
        return _count(m)
    return _from_pieces(d, d_ff, linear, norm)


def _meta_device(d, nh, d_ff):
    with torch.device("meta"):
        return _count(tr.DecoderLayer(d, nh, d_ff))


BYPASSES = [
    (lambda d, nh, f: _from_pieces(d, f, lambda i, o: _count(LINEAR(i, o)), lambda n: 2 * n), "Linear.__init__"),
    (_saved_init, "operation empty"),  # got through
    # a 1x1 convolution has a linear layer's parameters, a GroupNorm(1, d) a LayerNorm's: got through
    (lambda d, nh, f: _from_pieces(d, f, lambda i, o: _count(nn.Conv1d(i, o, 1)),
                                   lambda n: _count(nn.GroupNorm(1, n))), "operation empty"),
    (lambda d, nh, f: _count(copy.deepcopy(EARLIER[(d, nh, f)])), "operation clone"),  # got through
    (_meta_device, "DecoderLayer.__init__"),
    (lambda d, nh, f: _from_pieces(d, f, lambda i, o: _count(torch.nn.utils.skip_init(nn.Conv1d, i, o, 1)),
                                   lambda n: 2 * n), "operation empty"),  # got through
    (lambda d, nh, f: _from_pieces(d, f, lambda i, o: torch.ops.aten.empty.memory_format([o * i + o]).numel(),
                                   lambda n: 2 * n), "operation empty"),  # got through
]


@pytest.mark.parametrize("answer, called", BYPASSES)
def test_every_bypass_of_the_build_no_layers_rule_is_refused(answer, called, capsys):
    result, out = check("transformer.decoder_layer_params", answer, capsys)
    assert not result.passed, out
    assert "the rule is: derive the count from the structure; build no layers" in out, out
    assert called in out, out


def test_the_bypasses_count_right():
    """Each bypass would pass if the check let it through: its refusal is what fails it."""
    for answer, _ in BYPASSES:
        assert answer(64, 4, 256) == _params(64, 4, 256)


def test_a_table_of_counts_made_before_the_check_does_not_pass(capsys):
    """Counting a layer built earlier runs no operator; fresh random sizes fail it (it got through)."""
    result, out = check("transformer.decoder_layer_params", lambda d, nh, f: _count(EARLIER[(d, nh, f)]), capsys)
    assert not result.passed and "KeyError" in out, out


def test_every_size_the_check_draws_is_a_valid_layer():
    """The random sizes are fresh on every check, and num_heads divides d_model in each."""
    def sizes():
        seen = []
        exercises.get("transformer.decoder_layer_params").checker(
            lambda d, nh, f: seen.append((d, nh, f)) or _params(d, nh, f))
        return seen

    first, second = sizes(), sizes()
    assert first[:5] == second[:5] == FIXED and len(first) == 10
    assert all(d % nh == 0 and d >= 1 and f >= 1 for d, nh, f in first + second)
    assert first[5:] != second[5:]


@pytest.mark.parametrize("key", sorted(RIGHT))
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out
