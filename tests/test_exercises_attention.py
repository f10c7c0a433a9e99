"""The attention chapter's exercises: right answers pass, typical wrong ones
get a hint that never gives the solution away, and the rules are enforced."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
# names bound before any check, as a reader's notebook may have bound them
from torch.nn.functional import multi_head_attention_forward as mha_forward
from torch.nn.functional import scaled_dot_product_attention as torch_sdpa

from dlbook import attention, exercises
from dlbook.attention import local_attention as our_local
from dlbook.attention import scaled_dot_product_attention as our_sdpa
from exercise_helpers import assert_fails_with_hint, assert_passes, check, wrong_cases

# The right answers, as a reader would write them ---------------------------------

A = -math.pi / 8
ROTATE_BACK = torch.tensor([[math.cos(A), math.sin(A)], [-math.sin(A), math.cos(A)]])
ROTATE_ON = ROTATE_BACK.T


def _packed(lengths):
    s = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    T = len(s)
    return (s[:, None] == s[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()


def _packed_loops(lengths):
    T = sum(lengths)
    mask = torch.zeros(T, T, dtype=torch.bool)
    start = 0
    for n in lengths:
        for i in range(start, start + n):
            for j in range(start, i + 1):
                mask[i, j] = True
        start += n
    return mask


def _counter(bias=10.0, forget=10.0, scale=10.0, w_hh=0.0):
    weight_ih = torch.tensor([[0.0], [0.0], [scale], [0.0]])
    weight_hh = torch.full((4, 1), w_hh)
    bias_ih = torch.tensor([bias, forget, 0.0, 0.0])
    return weight_ih, weight_hh, bias_ih, torch.zeros(4)


def _head_weights(mha, x, h, scale=None, bias=True, transpose=False, dim=-1, key_rows=1):
    d = mha.embed_dim
    hs = d // mha.num_heads
    W, b = mha.in_proj_weight, mha.in_proj_bias
    rows = slice(h * hs, (h + 1) * hs)
    q = x @ W[:d][rows].T + (b[:d][rows] if bias else 0)  # (B, T, hs)
    k = x @ W[key_rows * d:(key_rows + 1) * d][rows].T + (b[key_rows * d:(key_rows + 1) * d][rows] if bias else 0)
    scores = q @ k.transpose(1, 2) * (1 / math.sqrt(hs) if scale is None else scale)
    w = torch.softmax(scores, dim=dim)
    return w.transpose(1, 2) if transpose else w


def _averager(d_model, num_heads, key_instead=False):
    m = attention.MultiHeadAttention(d_model, num_heads)
    with torch.no_grad():
        zeroed = m.key_proj if key_instead else m.query_proj
        zeroed.weight.zero_()
        if not key_instead:  # with W^K = 0 the key bias may stay
            zeroed.bias.zero_()
        for proj in (m.value_proj, m.out_proj):
            proj.weight.copy_(torch.eye(d_model))
            proj.bias.zero_()
    return m


def _averager_changed(part, tensor, fill):
    def make(d_model, num_heads):
        m = _averager(d_model, num_heads)
        with torch.no_grad():
            target = getattr(getattr(m, part), tensor)
            target.copy_(fill(target))
        return m
    return make


RIGHT = {
    "attention.previous_token": (100 * ROTATE_BACK, torch.eye(2)),
    "attention.packed_mask": _packed,
    "attention.lstm_counter": _counter(),
    "attention.head_weights": _head_weights,
    "attention.averaging_head": _averager,
}


def _head_weights_all_heads(mha, x, h):
    # every head at once, as the chapter's multi_head_attention does, then pick head h
    B, T, d = x.shape
    nh = mha.num_heads
    q, k, _ = (x @ w.T + b for w, b in zip(mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)))
    q, k = (t.view(B, T, nh, d // nh).transpose(1, 2) for t in (q, k))  # (B, nh, T, hs)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // nh), dim=-1)[:, h].double()


def _via_module(mha, x, h):
    return mha(x, x, x, average_attn_weights=False)[1][:, h]


def _via_ours(mha, x, h):
    ours = attention.MultiHeadAttention(mha.embed_dim, mha.num_heads).load_torch_weights(mha)
    return ours(x, need_weights=True)[1][:, h]


def _via_sdpa(mha, x, h):
    d = mha.embed_dim
    hs = d // mha.num_heads
    q, k, v = (x @ w.T + b for w, b in zip(mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3)))
    rows = slice(h * hs, (h + 1) * hs)
    return attention.scaled_dot_product_attention(q[..., rows], k[..., rows], v[..., rows])[1]


# Typical mistakes, each with a fragment the hint must contain ------------------
WRONG = {
    "attention.previous_token": [
        ((ROTATE_BACK, torch.eye(2)), "sharper"), ((100 * torch.eye(2), torch.eye(2)), "own position"),
        ((100 * ROTATE_ON, torch.eye(2)), "wrong way"), ((torch.zeros(2, 2), torch.eye(2)), "do not look"),
        ((100 * ROTATE_BACK,), "pair"), ((100 * ROTATE_BACK, torch.eye(3)), "shape"),
        ((100 * ROTATE_BACK.tolist(), torch.eye(2)), "tensor"),
        ((torch.full((2, 2), float("inf")), torch.eye(2)), "finite"),
        ((torch.eye(2, dtype=torch.long), torch.eye(2)), "floating"),
    ],
    "attention.packed_mask": [
        (lambda lengths: ~_packed(lengths), "inverted"),
        (lambda lengths: torch.ones(sum(lengths), sum(lengths), dtype=torch.bool).tril(), "earlier sequences"),
        (lambda lengths: _packed(lengths) | _packed(lengths).T, "later tokens"),
        (lambda lengths: _packed(lengths).T, "transposed"),
        (lambda lengths: _packed(lengths).int(), "boolean"),
        (lambda lengths: _packed(lengths)[:-1], "shape"),
        (lambda lengths: _packed(lengths).tolist(), "tensor"),
        (lambda lengths: _packed(lengths) & ~torch.eye(sum(lengths), dtype=torch.bool), "differs"),
        (3, "function"),
    ],
    "attention.lstm_counter": [
        (_counter(forget=0.0), "forget gate"), (_counter(bias=0.0), "input gate"), (_counter(scale=1.0), "how large"),
        (_counter(w_hh=1.0), "depends on h"), (_counter(forget=6.0), "add up"), (_counter(forget=3.0), "leaks"),
        (_counter(scale=2.5), "many 1s"),
        ((torch.zeros(4, 1), torch.zeros(4, 1), torch.zeros(4), torch.ones(4)), "stay at 0"),
        (_counter()[:3], "four tensors"), ((torch.zeros(1, 4),) + _counter()[1:], "shape"),
    ],
    "attention.head_weights": [
        (lambda mha, x, h: _head_weights(mha, x, h, scale=1.0), "no scaling"),
        (lambda mha, x, h: _head_weights(mha, x, h, scale=mha.embed_dim ** -0.5), "sqrt(d_model)"),
        (lambda mha, x, h: _head_weights(mha, x, h, bias=False), "in_proj_bias add"),
        (lambda mha, x, h: _head_weights(mha, x, h, transpose=True), "transposed"),
        (lambda mha, x, h: _head_weights(mha, x, h, dim=1), "sum to 1"),
        (lambda mha, x, h: _head_weights(mha, x, h, key_rows=0), "which of those rows"),
        (lambda mha, x, h: _head_weights(mha, x, 0), "which of those rows"),
        (lambda mha, x, h: _head_weights(mha, x, h)[0], "shape"),
        (lambda mha, x, h: _head_weights(mha, x, h).tolist(), "tensor"),
        (_via_module, "the rule"), (_via_ours, "the rule"), (_via_sdpa, "the rule"),
        (4, "function"),
    ],
}

WRONG["attention.averaging_head"] = [
    (_averager_changed("query_proj", "bias", lambda b: torch.ones_like(b)), "besides its weights"),
    (_averager_changed("query_proj", "weight", lambda w: 3 * torch.eye(len(w))), "scores of a query equal"),
    (_averager_changed("value_proj", "bias", lambda b: torch.ones_like(b)), "value and output"),
    (_averager_changed("out_proj", "weight", lambda w: 2 * w), "value and output"),
    (lambda d_model, num_heads: _averager(d_model, 1), "num_heads"),
    (lambda d_model, num_heads: nn.MultiheadAttention(d_model, num_heads), "attention.MultiHeadAttention"),
    (4, "function"),
]

# What a hint must never print: the explanation's key facts
SECRETS = {
    "attention.previous_token": ["W_Q = c R", "a = -pi/8"],
    "attention.packed_mask": ["repeat_interleave", "(s[i] == s[j]) & (j <= i)"],
    "attention.lstm_counter": ["sigmoid(10)", "tanh(10 x_t)"],
    "attention.head_weights": ["in_proj_weight[d_model + h*hs", "softmax(q_h k_h^T / sqrt(hs))"],
    "attention.averaging_head": ["W^Q = 0", "W^V = W^O = I"],
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


@pytest.mark.parametrize("key, answer", [
    ("attention.previous_token", (100 * torch.eye(2), ROTATE_ON)),  # turn the keys on instead
    ("attention.previous_token", (200 * ROTATE_BACK.double(), torch.eye(2, dtype=torch.float64))),
    ("attention.packed_mask", _packed_loops),
    ("attention.head_weights", _head_weights_all_heads),
    ("attention.averaging_head", lambda d_model, num_heads: _averager(d_model, num_heads, key_instead=True)),
    ("attention.averaging_head", _averager_changed("key_proj", "bias", lambda b: b + 1)),
    ("attention.lstm_counter", _counter(bias=20.0, forget=15.0, scale=30.0)),
    ("attention.lstm_counter", tuple(t.double() for t in _counter())),
])
def test_other_right_answers_pass(key, answer, capsys):
    result, out = check(key, answer, capsys)
    assert result.passed, out


def test_the_rule_is_enforced_and_restored(capsys):
    real = (nn.MultiheadAttention.forward, attention.scaled_dot_product_attention,
            attention.MultiHeadAttention.forward, attention.MultiHeadAttention.load_torch_weights)
    for answer in (_via_module, _via_ours, _via_sdpa):
        check("attention.head_weights", answer, capsys)
    assert (nn.MultiheadAttention.forward, attention.scaled_dot_product_attention,
            attention.MultiHeadAttention.forward, attention.MultiHeadAttention.load_torch_weights) == real
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 3, 8)
    assert mha(x, x, x)[0].shape == (1, 3, 8)
    assert isinstance(attention.MultiHeadAttention(8, 2).load_torch_weights(mha), attention.MultiHeadAttention)


# Every way around the head_weights rule that the reviews list (names bound before the check,
# saved methods, deep copies, subclasses, torch's functional and aten paths, dlbook's own
# functions) is refused, and the hint names the rule and what the answer called. "got through"
# marks those that the check let through while it forbade names only.

MHA_FORWARD = nn.MultiheadAttention.forward
MODULE_CALL = nn.Module.__call__
OUR_FORWARD = attention.MultiHeadAttention.forward
OUR_LOAD = attention.MultiHeadAttention.load_torch_weights


class EarlierMHA(nn.MultiheadAttention):
    """A subclass made before the check."""


def _qk_eye(mha, x, h):
    """Head h's queries and keys, computed by hand, and an identity as the values: any attention
    function then returns the weights as its output."""
    d = mha.embed_dim
    hs = d // mha.num_heads
    rows = slice(h * hs, (h + 1) * hs)
    W, b = mha.in_proj_weight, mha.in_proj_bias
    q = x @ W[:d][rows].T + b[:d][rows]  # (B, T, hs)
    k = x @ W[d:2 * d][rows].T + b[d:2 * d][rows]
    B, T, _ = x.shape
    return q, k, torch.eye(T).expand(B, T, T)


def _ours(mha):
    """dlbook's MultiHeadAttention with mha's projections, copied by hand."""
    ours = attention.MultiHeadAttention(mha.embed_dim, mha.num_heads)
    with torch.no_grad():
        for proj, w, b in zip((ours.query_proj, ours.key_proj, ours.value_proj), mha.in_proj_weight.chunk(3),
                              mha.in_proj_bias.chunk(3)):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
    return ours


def _pre_bound_functional(mha, x, h):  # got through
    t = x.transpose(0, 1)  # (T, B, d_model)
    return mha_forward(t, t, t, mha.embed_dim, mha.num_heads, mha.in_proj_weight, mha.in_proj_bias, None, None,
                       False, 0.0, mha.out_proj.weight, mha.out_proj.bias, training=False, need_weights=True,
                       average_attn_weights=False)[1][:, h]


def _earlier_subclass(mha, x, h):
    m = EarlierMHA(mha.embed_dim, mha.num_heads, batch_first=True)
    m.load_state_dict(mha.state_dict())
    return m(x, x, x, average_attn_weights=False)[1][:, h]


def _loaded_by_saved_method(mha, x, h):  # got through
    ours = OUR_LOAD(attention.MultiHeadAttention(mha.embed_dim, mha.num_heads), mha)
    q, k = ours.split_heads(ours.query_proj(x)), ours.split_heads(ours.key_proj(x))  # (B, nh, T, hs)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(ours.head_size), dim=-1)[:, h]


def _sdpa_without_torch_function(mha, x, h):  # got through
    with torch._C.DisableTorchFunction():
        return torch_sdpa(*_qk_eye(mha, x, h))


BYPASSES = [
    (_pre_bound_functional, "torch.nn.functional.multi_head_attention_forward"),
    (lambda mha, x, h: MHA_FORWARD(mha, x, x, x, average_attn_weights=False)[1][:, h],
     "MultiheadAttention.forward"),  # refused before through the name F.multi_head_attention_forward
    (lambda mha, x, h: MODULE_CALL(mha, x, x, x, average_attn_weights=False)[1][:, h], "MultiheadAttention.forward"),
    (lambda mha, x, h: copy.deepcopy(mha)(x, x, x, average_attn_weights=False)[1][:, h],
     "MultiheadAttention.forward"),
    (_earlier_subclass, "MultiheadAttention.forward"),
    (lambda mha, x, h: torch_sdpa(*_qk_eye(mha, x, h)), "scaled_dot_product_attention"),  # got through
    (lambda mha, x, h: F.scaled_dot_product_attention(*_qk_eye(mha, x, h)),
     "scaled_dot_product_attention"),  # got through
    (lambda mha, x, h: torch.ops.aten.scaled_dot_product_attention(*_qk_eye(mha, x, h)),
     "scaled_dot_product_attention"),  # got through
    (lambda mha, x, h: torch.ops.aten._scaled_dot_product_attention_math.default(*_qk_eye(mha, x, h))[1],
     "_scaled_dot_product_attention_math"),  # got through: this operator returns the weights
    (lambda mha, x, h: torch._native_multi_head_attention(
        x, x, x, mha.embed_dim, mha.num_heads, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight,
        mha.out_proj.bias, need_weights=True, average_attn_weights=False)[1][:, h],
     "_native_multi_head_attention"),  # got through
    (_sdpa_without_torch_function, "_safe_softmax"),  # got through; only the operator level sees it
    (lambda mha, x, h: our_sdpa(*_qk_eye(mha, x, h))[1],
     "dlbook.attention.scaled_dot_product_attention"),  # got through
    (lambda mha, x, h: our_local(*_qk_eye(mha, x, h), window=x.shape[1]),
     "dlbook.attention.local_attention"),  # got through
    (lambda mha, x, h: OUR_FORWARD(_ours(mha), x, need_weights=True)[1][:, h], "MultiHeadAttention.forward"),
    (_loaded_by_saved_method, "MultiHeadAttention.load_torch_weights"),  # got through
]


@pytest.mark.parametrize("answer, called", BYPASSES)
def test_every_bypass_of_the_head_weights_rule_is_refused(answer, called, capsys):
    result, out = check("attention.head_weights", answer, capsys)
    assert not result.passed, out
    assert "the rule is: compute the weights from in_proj_weight and in_proj_bias yourself" in out, out
    assert called in out, out


def test_the_bypasses_compute_the_right_weights():
    """Each bypass would pass if the check let it through: its refusal is what fails it."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3, batch_first=True)
    x = torch.randn(2, 5, 12)
    for answer, _ in BYPASSES:
        for h in range(3):
            assert torch.allclose(answer(mha, x, h).double(), _head_weights(mha, x, h).double(), atol=1e-5)


def test_every_function_and_mode_is_restored_after_the_check(capsys):
    functions = (nn.MultiheadAttention.forward, F.multi_head_attention_forward, our_sdpa, our_local, OUR_FORWARD,
                 OUR_LOAD, OUR_LOAD.__wrapped__)  # load_torch_weights is torch.no_grad's wrapper of the method
    codes = [f.__code__ for f in functions]
    for answer, _ in BYPASSES:
        check("attention.head_weights", answer, capsys)
    assert codes == [f.__code__ for f in functions]
    assert torch._C._len_torch_function_stack() == 0 and torch._C._len_torch_dispatch_stack() == 0
    assert F.scaled_dot_product_attention is torch_sdpa
    q = torch.randn(1, 3, 4)
    assert torch.allclose(torch_sdpa(q, q, q), our_sdpa(q, q, q)[0], atol=1e-6)  # no mode left behind
    assert torch.ops.aten._scaled_dot_product_attention_math(q, q, q)[1].shape == (1, 3, 3)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    assert mha_forward is F.multi_head_attention_forward and mha(q.repeat(1, 1, 2), q.repeat(1, 1, 2),
                                                                 q.repeat(1, 1, 2))[1].shape == (1, 3, 3)


@pytest.mark.parametrize("key", ["attention.packed_mask", "attention.head_weights"])
def test_student_stub_is_not_yet(key, capsys):
    def stub(*args):
        # YOUR CODE HERE
        raise NotImplementedError()

    result, out = check(key, stub, capsys)
    assert not result.passed
    assert "not yet" in out and "NotImplementedError" in out
