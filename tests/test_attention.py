"""dlbook.attention: parity with PyTorch, golden numbers, shapes and validation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
from dlbook import attention as A

ATOL = 1e-5


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def qkv(B=2, nh=3, Tq=5, Tk=7, hs=8, hv=None):
    hv = hs if hv is None else hv
    return torch.randn(B, nh, Tq, hs), torch.randn(B, nh, Tk, hs), torch.randn(B, nh, Tk, hv)


# scaled dot-product attention ----------------------------------------------------

@pytest.mark.parametrize("Tq, Tk, hs, hv", [(5, 7, 8, 8), (1, 1, 4, 4), (6, 6, 16, 3), (9, 2, 2, 5)])
def test_sdpa_matches_torch_without_mask(Tq, Tk, hs, hv):
    q, k, v = qkv(Tq=Tq, Tk=Tk, hs=hs, hv=hv)
    y, w = A.scaled_dot_product_attention(q, k, v)
    assert y.shape == (2, 3, Tq, hv) and w.shape == (2, 3, Tq, Tk)
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v), atol=ATOL)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, Tq), atol=ATOL)


@pytest.mark.parametrize("shape", [(5, 7), (2, 1, 5, 7), (2, 3, 5, 7), (1, 3, 1, 7)])
def test_sdpa_matches_torch_with_boolean_masks(shape):
    q, k, v = qkv()
    mask = torch.rand(shape) > 0.4
    y, w = A.scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(y, expected, atol=ATOL)
    assert torch.all(w[~mask.expand_as(w)] == 0)


def test_sdpa_float_mask_is_added_to_the_scores():
    q, k, v = qkv()
    bias = torch.randn(5, 7)
    y, _ = A.scaled_dot_product_attention(q, k, v, bias)
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=ATOL)


def test_sdpa_causal_and_scale_match_torch():
    q, k, v = qkv(Tq=6, Tk=6)
    y, _ = A.scaled_dot_product_attention(q, k, v, A.causal_mask(6))
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=ATOL)
    y, _ = A.scaled_dot_product_attention(q, k, v, scale=0.3)
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v, scale=0.3), atol=ATOL)


def test_sdpa_gradients_match_torch():
    q, k, v = (t.requires_grad_() for t in qkv())
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True
    A.scaled_dot_product_attention(q, k, v, mask)[0].pow(2).sum().backward()
    ours = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask).pow(2).sum().backward()
    for a, b in zip(ours, (q.grad, k.grad, v.grad)):
        assert torch.allclose(a, b, atol=ATOL)


def test_sdpa_fully_masked_row_gives_zeros_like_torch_and_finite_gradients():
    q, k, v = (t.requires_grad_() for t in qkv(B=1, nh=1, Tq=3, Tk=4))
    mask = torch.tensor([[True, False, True, False], [False] * 4, [True] * 4])
    y, w = A.scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(y[0, 0, 1], torch.zeros(8)) and torch.equal(w[0, 0, 1], torch.zeros(4))
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=ATOL)
    y.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_sdpa_float_mask_of_minus_infinity_row_gives_zeros_and_finite_gradients():
    q, k, v = (t.requires_grad_() for t in qkv(B=1, nh=1, Tq=3, Tk=4))
    mask = torch.zeros(3, 4)
    mask[1] = float("-inf")
    mask[0, 2] = float("-inf")
    y, w = A.scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(y[0, 0, 1], torch.zeros(8)) and torch.equal(w[0, 0, 1], torch.zeros(4))
    assert torch.allclose(y, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=ATOL)
    y.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_sdpa_golden_numbers():
    # one query, two keys: scores 1/sqrt(2) * (2, 0); softmax; mix the values
    q = torch.tensor([[1.0, 1.0]])
    k = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    v = torch.tensor([[10.0], [20.0]])
    y, w = A.scaled_dot_product_attention(q, k, v)
    a = math.exp(2 / math.sqrt(2)) / (math.exp(2 / math.sqrt(2)) + 1)
    assert torch.allclose(w, torch.tensor([[a, 1 - a]]), atol=1e-6)
    assert torch.allclose(y, torch.tensor([[10 * a + 20 * (1 - a)]]), atol=1e-5)


def test_sdpa_dropout_drops_weights_but_returns_them_undropped():
    q, k, v = qkv()
    torch.manual_seed(1)
    y, w = A.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    y0, w0 = A.scaled_dot_product_attention(q, k, v)
    assert torch.equal(w, w0) and not torch.allclose(y, y0)


@pytest.mark.parametrize("args, error", [
    ((torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 4)), "same head size"),
    ((torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 4)), "one row per key"),
    ((torch.randn(4), torch.randn(3, 4), torch.randn(3, 4)), "shape"),
    ((torch.randn(2, 3, 4), torch.randn(3, 3, 4), torch.randn(3, 3, 4)), "broadcast"),
])
def test_sdpa_rejects_bad_shapes(args, error):
    with pytest.raises(ValueError, match=error):
        A.scaled_dot_product_attention(*args)


def test_sdpa_rejects_bad_masks_and_arguments():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="does not broadcast"):
        A.scaled_dot_product_attention(q, k, v, torch.ones(7, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        A.scaled_dot_product_attention(q, k, v, torch.ones(5, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        A.scaled_dot_product_attention(q.tolist(), k, v)
    with pytest.raises(ValueError, match="floating"):
        A.scaled_dot_product_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="dropout_p"):
        A.scaled_dot_product_attention(q, k, v, dropout_p=1.0)
    with pytest.raises(ValueError, match="scale"):
        A.scaled_dot_product_attention(q, k, v, scale=float("nan"))


# masks ---------------------------------------------------------------------------

def test_causal_mask_square_and_aligned_to_the_end():
    assert torch.equal(A.causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    # two new queries at positions 3 and 4 of five keys
    assert torch.equal(A.causal_mask(2, 5), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match="at least as many keys"):
        A.causal_mask(4, 2)
    with pytest.raises(ValueError, match="Tq"):
        A.causal_mask(0)


def test_padding_mask():
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(A.padding_mask(torch.tensor([2, 4, 0])), expected)
    assert torch.equal(A.padding_mask([2, 4, 0]), expected)
    assert A.padding_mask([1, 2], T=5).shape == (2, 5)
    for bad in ([1.5, 2.0], [[1, 2]], [], [-1, 2], "12", [True, False]):
        with pytest.raises(ValueError):
            A.padding_mask(bad)
    with pytest.raises(ValueError, match="exceeds"):
        A.padding_mask([3, 6], T=4)


def test_local_mask():
    m = A.local_mask(5, 1)
    assert torch.equal(m.sum(1), torch.tensor([2, 3, 3, 3, 2]))
    assert torch.equal(A.local_mask(5, 1, causal=True), m & A.causal_mask(5))
    assert torch.equal(A.local_mask(4, 0), torch.eye(4, dtype=torch.bool))
    assert A.local_mask(4, 10).all()
    with pytest.raises(ValueError, match="window"):
        A.local_mask(4, -1)


def test_merge_masks_shapes_and_logic():
    kpm = A.padding_mask([3, 2], T=3)
    am = torch.tensor([[True, True, False]] * 3)
    mask = A.merge_masks(am, kpm, B=2, Tq=3, Tk=3, is_causal=True)
    assert mask.shape == (2, 1, 3, 3)
    expected0 = am & A.causal_mask(3)
    assert torch.equal(mask[0, 0], expected0)
    assert torch.equal(mask[1, 0], expected0 & torch.tensor([True, True, False]))
    assert A.merge_masks(None, None, B=2, Tq=3, Tk=3) is None
    assert A.merge_masks(torch.ones(2, 3, 4, dtype=torch.bool), None, B=2, Tq=3, Tk=4).shape == (2, 1, 3, 4)
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        A.merge_masks(torch.ones(3, 5, dtype=torch.bool), None, B=2, Tq=3, Tk=4)
    with pytest.raises(TypeError, match="boolean"):
        A.merge_masks(torch.ones(3, 4), None, B=2, Tq=3, Tk=4)
    with pytest.raises(ValueError, match="key_padding_mask"):
        A.merge_masks(None, torch.zeros(3, 4, dtype=torch.bool), B=2, Tq=3, Tk=4)
    with pytest.raises(TypeError, match="True = padding"):
        A.merge_masks(None, torch.zeros(2, 4), B=2, Tq=3, Tk=4)


# multi-head attention ------------------------------------------------------------

def pair(d_model=16, num_heads=4, bias=True):
    reference = nn.MultiheadAttention(d_model, num_heads, batch_first=True, bias=bias)
    with torch.no_grad():  # non-zero biases, so that copying them is tested too
        for p in reference.parameters():
            if p.dim() == 1:
                p.normal_()
    return A.MultiHeadAttention(d_model, num_heads, bias=bias).load_torch_weights(reference), reference


@pytest.mark.parametrize("bias", [True, False])
def test_mha_self_attention_matches_torch(bias):
    ours, reference = pair(bias=bias)
    x = torch.randn(3, 6, 16)
    expected, expected_w = reference(x, x, x, average_attn_weights=False)
    y, w = ours(x, need_weights=True)
    assert y.shape == (3, 6, 16) and w.shape == (3, 4, 6, 6)
    assert torch.allclose(y, expected, atol=ATOL)
    assert torch.allclose(w, expected_w, atol=ATOL)


def test_mha_cross_attention_with_both_masks_matches_torch():
    ours, reference = pair()
    x, memory = torch.randn(3, 5, 16), torch.randn(3, 9, 16)
    kpm = A.padding_mask([9, 4, 7])
    am = torch.rand(5, 9) > 0.3
    am[:, 0] = True  # no query without a key: nn.MultiheadAttention would give NaN
    expected, expected_w = reference(x, memory, memory, key_padding_mask=kpm, attn_mask=~am,
                                     average_attn_weights=False)
    y, w = ours(x, memory, key_padding_mask=kpm, attn_mask=am, need_weights=True)
    assert y.shape == (3, 5, 16) and w.shape == (3, 4, 5, 9)
    assert torch.allclose(y, expected, atol=ATOL)
    assert torch.allclose(w, expected_w, atol=ATOL)
    assert torch.all(w[1, :, :, 4:] == 0)  # padding gets no attention


def test_mha_separate_value_and_causal_match_torch():
    ours, reference = pair()
    x, k, v = torch.randn(2, 6, 16), torch.randn(2, 6, 16), torch.randn(2, 6, 16)
    expected = reference(x, k, v, attn_mask=~A.causal_mask(6), need_weights=False)[0]
    assert torch.allclose(ours(x, k, v, is_causal=True), expected, atol=ATOL)
    per_batch = A.causal_mask(6).expand(2, 6, 6)  # (B, Tq, Tk)
    assert torch.allclose(ours(x, k, v, attn_mask=per_batch), expected, atol=ATOL)


def test_mha_torch_sdpa_path_gives_the_same_numbers():
    ours, _ = pair()
    x, memory = torch.randn(2, 5, 16), torch.randn(2, 8, 16)
    kpm = A.padding_mask([8, 3])
    slow = ours(x, memory, key_padding_mask=kpm)
    ours.use_torch_sdpa = True
    assert torch.allclose(ours(x, memory, key_padding_mask=kpm), slow, atol=ATOL)
    assert torch.allclose(ours(x, is_causal=True), A.MultiHeadAttention.forward(ours, x, is_causal=True),
                          atol=ATOL)


def test_mha_gradients_match_torch():
    ours, reference = pair()
    x = torch.randn(2, 6, 16)
    ours(x, is_causal=True).pow(2).sum().backward()
    reference(x, x, x, attn_mask=~A.causal_mask(6), need_weights=False)[0].pow(2).sum().backward()
    w_q = reference.in_proj_weight.grad.chunk(3)[0]
    assert torch.allclose(ours.query_proj.weight.grad, w_q, atol=1e-4)
    assert torch.allclose(ours.out_proj.weight.grad, reference.out_proj.weight.grad, atol=1e-4)


def test_mha_dropout_only_in_training():
    mha = A.MultiHeadAttention(16, 4, dropout=0.5)
    x = torch.randn(2, 6, 16)
    mha.eval()
    assert torch.equal(mha(x), mha(x))
    mha.train()
    assert not torch.allclose(mha(x), mha(x))


def test_mha_split_and_merge_heads():
    mha = A.MultiHeadAttention(12, 3)
    x = torch.arange(2 * 5 * 12.0).view(2, 5, 12)
    heads = mha.split_heads(x)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[1, 2, 3], x[1, 3, 8:12])  # head 2 = features 8..11
    assert torch.equal(mha.merge_heads(heads), x)


def test_mha_one_key_is_a_linear_layer():
    mha = A.MultiHeadAttention(8, 2)
    x = torch.randn(4, 1, 8)
    expected = mha.out_proj(mha.value_proj(x))
    assert torch.allclose(mha(x), expected, atol=ATOL)


def test_mha_rejects_bad_input():
    mha = A.MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match="divide"):
        A.MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="num_heads"):
        A.MultiHeadAttention(16, 0)
    with pytest.raises(ValueError, match="dropout"):
        A.MultiHeadAttention(16, 4, dropout=1.5)
    with pytest.raises(ValueError, match="query must have shape"):
        mha(torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match="query must have shape"):
        mha(torch.randn(5, 16))
    with pytest.raises(ValueError, match="key must have shape"):
        mha(torch.randn(2, 5, 16), torch.randn(3, 5, 16))
    with pytest.raises(ValueError, match="same length"):
        mha(torch.randn(2, 5, 16), torch.randn(2, 5, 16), torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="floating"):
        mha(torch.ones(2, 5, 16, dtype=torch.long))
    with pytest.raises(TypeError, match="need_weights"):
        mha(torch.randn(2, 5, 16), need_weights="yes")
    with pytest.raises(TypeError, match="MultiheadAttention"):
        mha.load_torch_weights(nn.Linear(16, 16))
    with pytest.raises(ValueError, match="sizes differ"):
        mha.load_torch_weights(nn.MultiheadAttention(16, 2))
    with pytest.raises(ValueError, match="biases"):
        mha.load_torch_weights(nn.MultiheadAttention(16, 4, bias=False))


# positional encoding -------------------------------------------------------------

def test_sinusoidal_encoding_golden_values():
    pe = A.sinusoidal_encoding(10, 4)
    assert pe.shape == (10, 4)
    p = 3
    expected = [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]  # 10000^(-2/4) = 1/100
    assert torch.allclose(pe[p], torch.tensor(expected), atol=1e-6)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))


@pytest.mark.parametrize("k", [1, 5, -3, 40])
def test_sinusoidal_shift_is_a_linear_map_of_the_offset(k):
    pe = A.sinusoidal_encoding(100, 16).double()
    m = A.sinusoidal_shift(k, 16).double()
    lo, hi = max(0, -k), min(100, 100 - k)
    assert torch.allclose(pe[lo:hi] @ m, pe[lo + k:hi + k], atol=1e-5)
    assert torch.allclose(m @ m.T, torch.eye(16, dtype=torch.float64), atol=1e-6)  # a rotation


def test_sinusoidal_module_and_validation():
    enc = A.SinusoidalEncoding(8, max_len=20)
    x = torch.zeros(2, 5, 8)
    assert torch.equal(enc(x), A.sinusoidal_encoding(5, 8).expand(2, 5, 8))
    assert dlbook.bench.count_parameters(enc) == 0
    with pytest.raises(ValueError, match="max_len"):
        A.SinusoidalEncoding(8, max_len=0)
    with pytest.raises(ValueError, match=r"T <= 20"):
        enc(torch.zeros(1, 21, 8))
    with pytest.raises(ValueError, match="even"):
        A.sinusoidal_encoding(4, 5)
    with pytest.raises(ValueError, match="even"):
        A.sinusoidal_shift(1, 5)


# local attention -----------------------------------------------------------------

@pytest.mark.parametrize("T, window", [(23, 1), (23, 4), (16, 4), (5, 7), (1, 1), (40, 13)])
@pytest.mark.parametrize("causal", [False, True])
def test_local_attention_equals_masked_full_attention(T, window, causal):
    q, k, v = qkv(Tq=T, Tk=T, hv=5)
    full, _ = A.scaled_dot_product_attention(q, k, v, A.local_mask(T, window, causal=causal))
    y = A.local_attention(q, k, v, window, causal=causal)
    assert y.shape == full.shape
    assert torch.allclose(y, full, atol=ATOL)


def test_local_attention_gradients_match_masked_full_attention():
    q, k, v = (t.requires_grad_() for t in qkv(Tq=11, Tk=11))
    A.local_attention(q, k, v, 3).sum().backward()
    ours = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    A.scaled_dot_product_attention(q, k, v, A.local_mask(11, 3))[0].sum().backward()
    for a, b in zip(ours, (q.grad, k.grad, v.grad)):
        assert torch.allclose(a, b, atol=ATOL)


def test_local_attention_validation():
    q, k, v = qkv(Tq=6, Tk=7)
    with pytest.raises(ValueError, match="same length"):
        A.local_attention(q, k, v, 2)
    q, k, v = qkv(Tq=6, Tk=6)
    with pytest.raises(ValueError, match="window"):
        A.local_attention(q, k, v, 0)
    with pytest.raises(TypeError, match="causal"):
        A.local_attention(q, k, v, 2, causal=1)


# the lookup task and its models ------------------------------------------------------

def test_lookup_task():
    gen = torch.Generator().manual_seed(0)
    x, y = A.lookup_task(50, T=6, num_values=4, generator=gen)
    assert x.shape == (50, 7) and y.shape == (50,)
    assert x[:, :6].max() < 4 and x[:, 6].min() >= 4 and x[:, 6].max() < 10
    p = x[:, 6] - 4
    assert torch.equal(x[torch.arange(50), p], y)
    x2, _ = A.lookup_task(50, T=6, num_values=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="num_values"):
        A.lookup_task(5, num_values=1)


@pytest.mark.parametrize("mixer", ["attention", "mean"])
def test_attention_classifier_shapes(mixer):
    model = A.AttentionClassifier(20, 10, d_model=16, num_heads=2, num_layers=3, mixer=mixer)
    x = torch.randint(20, (4, 9))
    assert model(x).shape == (4, 10)
    y_hat, weights = model(x, return_weights=True)
    assert len(weights) == (3 if mixer == "attention" else 0)
    if weights:
        assert weights[0].shape == (4, 2, 9, 9)


def test_mean_mixer_ignores_order_and_attention_without_positions_is_equivariant():
    x = torch.randint(20, (3, 8))
    perm = torch.randperm(7)
    shuffled = torch.cat([x[:, :7][:, perm], x[:, 7:]], dim=1)  # the last token stays last
    for model in (A.AttentionClassifier(20, 5, d_model=16, mixer="mean", positional=False),
                  A.AttentionClassifier(20, 5, d_model=16, positional=False)):
        with torch.no_grad():
            assert torch.allclose(model(x), model(shuffled), atol=ATOL)
    model = A.AttentionClassifier(20, 5, d_model=16)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(shuffled), atol=ATOL)


def test_learned_positions_are_a_trained_table_that_breaks_the_symmetry():
    torch.manual_seed(0)
    model = A.AttentionClassifier(20, 5, d_model=16, positional="learned", max_len=8)
    table = model.position.table.weight
    assert table.shape == (8, 16) and table.requires_grad
    sinusoidal = A.AttentionClassifier(20, 5, d_model=16, positional="sinusoidal", max_len=8)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in sinusoidal.parameters()) + 8 * 16
    x = torch.randint(20, (3, 8))
    perm = torch.randperm(7)
    shuffled = torch.cat([x[:, :7][:, perm], x[:, 7:]], dim=1)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(shuffled), atol=ATOL)
        model.position.table.weight.zero_()  # a zero table is no position at all
        assert torch.allclose(model(x), model(shuffled), atol=ATOL)
    model(x).sum().backward()
    assert model.position.table.weight.grad.abs().sum() > 0
    layer = A.LearnedPositionEmbedding(4, max_len=3)
    h = torch.randn(2, 3, 4)
    assert torch.equal(layer(h), h + layer.table.weight)  # row p added at position p


def test_position_choices_and_their_errors():
    assert isinstance(A.AttentionClassifier(10, 2, d_model=8, num_heads=2).position, A.SinusoidalEncoding)
    assert A.AttentionClassifier(10, 2, d_model=8, num_heads=2, positional=False).position is None
    with pytest.raises(ValueError, match="'sinusoidal' .* 'learned' or False; got 'rope'"):
        A.AttentionClassifier(10, 2, positional="rope")
    model = A.AttentionClassifier(10, 2, d_model=8, num_heads=2, positional="learned", max_len=5)
    with pytest.raises(ValueError, match="max_len=5"):
        model(torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T <= 3, d_model=4\)"):
        A.LearnedPositionEmbedding(4, max_len=3)(torch.randn(1, 4, 4))


def test_attention_classifier_validation():
    with pytest.raises(ValueError, match="mixer"):
        A.AttentionClassifier(10, 2, mixer="lstm")
    model = A.AttentionClassifier(10, 2, d_model=8, num_heads=2)
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(2, 5))
    with pytest.raises(ValueError, match="token ids 0 .. 9.*got 10"):
        model(torch.full((2, 5), 10))
    with pytest.raises(ValueError, match="got -1"):
        model(torch.full((2, 5), -1))
    with pytest.raises(ValueError, match="max_len=256"):
        model(torch.zeros(1, 300, dtype=torch.long))
    with pytest.raises(ValueError, match="d_model"):
        A.MeanMixer(0)
    with pytest.raises(ValueError, match=r"\(B, T, d_model=8\)"):
        A.MeanMixer(8)(torch.randn(2, 5, 7))
    with pytest.raises(TypeError, match="generator"):
        A.lookup_task(4, generator="seed")


def test_split_and_merge_heads_validate():
    mha = A.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"d_model=8"):
        mha.split_heads(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"nh=2, T, hs=4"):
        mha.merge_heads(torch.randn(2, 3, 5, 4))


@pytest.mark.parametrize("use_torch_sdpa", [False, True])
def test_self_attention_through_a_cache_equals_causal_attention_over_the_whole_sequence(use_torch_sdpa):
    from dlbook.transformer import KVCache

    torch.manual_seed(0)
    mha = A.MultiHeadAttention(16, 4, use_torch_sdpa=use_torch_sdpa).eval()
    x = torch.randn(2, 7, 16)
    full = mha(x, is_causal=True)  # (B, T, d_model)
    cache = KVCache(1)
    first = mha(x[:, :3], is_causal=True, cache=cache)  # a prompt of 3, then one at a time
    rest = [mha(x[:, t:t + 1], is_causal=True, cache=cache) for t in range(3, 7)]
    assert len(cache) == 7
    torch.testing.assert_close(torch.cat([first, *rest], 1), full, atol=1e-6, rtol=1e-5)
    # two new positions at once: they see the cache and each other causally
    cache = KVCache(1)
    mha(x[:, :5], is_causal=True, cache=cache)
    torch.testing.assert_close(mha(x[:, 5:], is_causal=True, cache=cache), full[:, 5:], atol=1e-6, rtol=1e-5)


def test_a_cache_refuses_cross_attention_and_a_padding_mask_of_the_new_positions_only():
    from dlbook.transformer import KVCache

    mha = A.MultiHeadAttention(8, 2)
    x, memory = torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    with pytest.raises(ValueError, match="query only"):
        mha(x, memory, cache=KVCache(1))
    cache = KVCache(1)
    mha(x, is_causal=True, cache=cache)
    with pytest.raises(ValueError, match="cached positions too"):
        mha(x[:, :1], key_padding_mask=torch.zeros(1, 1, dtype=torch.bool), cache=cache)
