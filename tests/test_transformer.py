"""dlbook.transformer: parity with PyTorch's layers, the key-value cache,
decoding, the masking rule, shapes and validation."""

import datetime as dt
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
from dlbook import attention as A
from dlbook import transformer as tr

ATOL = 1e-5


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# the feed-forward network ------------------------------------------------------------

def test_feed_forward_is_the_same_mlp_at_every_position():
    ffn = tr.FeedForward(8, 32, activation="gelu")
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        whole = ffn(x)
        one_by_one = torch.stack([ffn(x[:, t]) for t in range(5)], dim=1)
        by_hand = F.gelu(x @ ffn.up_proj.weight.T + ffn.up_proj.bias) @ ffn.down_proj.weight.T + ffn.down_proj.bias
    assert whole.shape == (2, 5, 8)
    assert torch.allclose(whole, one_by_one, atol=ATOL)
    assert torch.allclose(whole, by_hand, atol=ATOL)


def test_feed_forward_validation():
    with pytest.raises(ValueError, match="activation"):
        tr.FeedForward(8, 16, activation="tanh")
    with pytest.raises(ValueError, match="d_ff"):
        tr.FeedForward(8, 0)
    with pytest.raises(ValueError, match="d_model=8"):
        tr.FeedForward(8, 16)(torch.randn(2, 3, 4))
    with pytest.raises(TypeError):
        tr.FeedForward(8, 16)([1.0] * 8)


# encoder and decoder layers: parity with PyTorch --------------------------------------

def _torch_encoder(norm_first, activation="relu", d=16, nh=4, d_ff=32):
    layer = nn.TransformerEncoderLayer(d, nh, d_ff, dropout=0.0, activation=activation, norm_first=norm_first,
                                       batch_first=True)
    with torch.no_grad():  # biases and norms away from their initial 0 and 1
        for name, p in layer.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("norm_first, activation, training",
                         list(itertools.product([False, True], ["relu", "gelu"], [False, True])))
def test_encoder_layer_matches_torch(norm_first, activation, training):
    ref = _torch_encoder(norm_first, activation).train(training)
    ours = tr.EncoderLayer(16, 4, 32, activation=activation, norm_first=norm_first).load_torch_weights(ref)
    ours.train(training)
    x = torch.randn(3, 7, 16)
    pad = A.padding_mask(torch.tensor([7, 5, 2]))
    with torch.no_grad():
        expected = ref(x, src_key_padding_mask=pad)
        got = ours(x, key_padding_mask=pad)
    real = ~pad  # PyTorch's fast path (evaluation mode) may leave padded positions at 0
    assert (got[real] - expected[real]).abs().max() < ATOL


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_with_attention_mask_and_gradients_match_torch(norm_first):
    ref = _torch_encoder(norm_first).train()
    ours = tr.EncoderLayer(16, 4, 32, norm_first=norm_first).load_torch_weights(ref)
    x1 = torch.randn(2, 6, 16, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    allowed = torch.rand(6, 6) > 0.4
    allowed[:, 0] = True
    expected = ref(x1, src_mask=~allowed)  # PyTorch's boolean mask: True = may NOT attend
    got = ours(x2, attn_mask=allowed)
    assert (got - expected).abs().max() < ATOL
    weights = torch.randn_like(got)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-4)
    causal_ref = ref(x1, src_mask=nn.Transformer.generate_square_subsequent_mask(6), is_causal=True)
    assert (ours(x2, is_causal=True) - causal_ref).abs().max() < ATOL


@pytest.mark.parametrize("norm_first, training", list(itertools.product([False, True], [False, True])))
def test_decoder_layer_matches_torch(norm_first, training):
    ref = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, norm_first=norm_first, batch_first=True)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "bias" in name or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    ref.train(training)
    ours = tr.DecoderLayer(16, 4, 32, norm_first=norm_first).load_torch_weights(ref).train(training)
    y, memory = torch.randn(3, 6, 16), torch.randn(3, 9, 16)
    memory_pad = A.padding_mask(torch.tensor([9, 4, 6]))
    tgt_pad = A.padding_mask(torch.tensor([6, 6, 3]))
    with torch.no_grad():
        expected = ref(y, memory, tgt_mask=~A.causal_mask(6), tgt_is_causal=True,
                       tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=memory_pad)
        got, weights = ours(y, memory, key_padding_mask=tgt_pad, memory_key_padding_mask=memory_pad,
                            need_weights=True)
    assert (got - expected).abs().max() < ATOL
    assert weights.shape == (3, 4, 6, 9)
    assert torch.all(weights[1, :, :, 4:] == 0)  # no weight on the padded memory
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 6), atol=ATOL)


def test_decoder_layer_is_causal_and_reads_the_memory():
    layer = tr.DecoderLayer(8, 2, 16).eval()
    y, memory = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    changed = y.clone()
    changed[:, 3] += 1.0
    with torch.no_grad():
        out, out2 = layer(y, memory), layer(changed, memory)
        assert torch.equal(out[:, :3], out2[:, :3])  # positions before 3 do not see it
        assert not torch.allclose(out[:, 3:], out2[:, 3:])
        assert not torch.allclose(layer(y, memory + 1.0), out)
        # without the causal mask every position sees position 3
        assert not torch.allclose(layer(y, memory, is_causal=False)[:, 0], layer(changed, memory, is_causal=False)[:, 0])


def test_load_torch_weights_refuses_another_design():
    ours = tr.EncoderLayer(16, 4, 32)
    with pytest.raises(ValueError, match="norm_first"):
        ours.load_torch_weights(nn.TransformerEncoderLayer(16, 4, 32, norm_first=True, batch_first=True))
    with pytest.raises(ValueError, match="activation"):
        ours.load_torch_weights(nn.TransformerEncoderLayer(16, 4, 32, activation="gelu", batch_first=True))
    with pytest.raises(ValueError, match="feed-forward"):
        ours.load_torch_weights(nn.TransformerEncoderLayer(16, 4, 64, batch_first=True))
    with pytest.raises(ValueError, match="embed_dim"):
        ours.load_torch_weights(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True))
    with pytest.raises(TypeError):
        ours.load_torch_weights(nn.TransformerDecoderLayer(16, 4, 32, batch_first=True))
    with pytest.raises(TypeError):
        tr.DecoderLayer(16, 4, 32).load_torch_weights(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True))


def test_layers_reject_bad_input():
    enc, dec = tr.EncoderLayer(8, 2, 16), tr.DecoderLayer(8, 2, 16)
    with pytest.raises(ValueError, match="d_model=8"):
        enc(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="d_model=8"):
        enc(torch.randn(3, 8))
    with pytest.raises(ValueError, match="floating"):
        enc(torch.ones(2, 3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="memory"):
        dec(torch.randn(2, 3, 8), torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="key_padding_mask"):
        enc(torch.randn(2, 3, 8), key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_heads"):
        tr.EncoderLayer(8, 3, 16)
    with pytest.raises(TypeError, match="norm_first"):
        tr.EncoderLayer(8, 2, 16, norm_first="yes")


# the encoder-decoder model and decoding ----------------------------------------------

V_SRC, V_TGT, BOS_ID, EOS_ID = 11, 7, 1, 2


def _seq2seq(**kwargs):
    return tr.Seq2SeqTransformer(V_SRC, V_TGT, d_model=16, num_heads=2, d_ff=32, dropout=0.0, **kwargs).eval()


@pytest.mark.parametrize("norm_first", [False, True])
def test_seq2seq_shapes_causality_and_padding(norm_first):
    model = _seq2seq(norm_first=norm_first)
    src = torch.randint(1, V_SRC, (3, 6))
    src[1, 4:] = 0  # padding
    tgt = torch.randint(0, V_TGT, (3, 5))
    with torch.no_grad():
        logits = model(src, tgt)
        assert logits.shape == (3, 5, V_TGT)
        later = tgt.clone()
        later[:, 3] = (later[:, 3] + 1) % V_TGT
        assert torch.allclose(model(src, later)[:, :3], logits[:, :3], atol=ATOL)
        more_padding = F.pad(src, (0, 3))  # three more padding columns change nothing
        assert torch.allclose(model(more_padding, tgt), logits, atol=ATOL)
        memory = model.encode(src)
        logits2, weights = model.decode(tgt, memory, model.padding_mask(src), need_weights=True)
    assert memory.shape == (3, 6, 16)
    assert torch.allclose(logits2, logits, atol=ATOL)
    assert len(weights) == 2 and weights[0].shape == (3, 2, 5, 6)
    assert torch.all(weights[-1][1, :, :, 4:] == 0)


def test_seq2seq_validation():
    model = _seq2seq()
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        model(torch.full((2, 3), V_SRC), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="src_vocab_size"):
        tr.Seq2SeqTransformer(0, 5)


def test_greedy_decode_stops_at_eos_and_pads_after_it():
    torch.manual_seed(3)
    model = _seq2seq()
    src = torch.randint(1, V_SRC, (8, 5))
    y_hat = tr.greedy_decode(model, src, max_len=6, bos_id=BOS_ID, eos_id=EOS_ID)
    assert y_hat.shape[0] == 8 and y_hat.shape[1] <= 6
    for row in y_hat.tolist():
        if EOS_ID in row:
            assert all(v == model.pad_id for v in row[row.index(EOS_ID) + 1:])
    # step by step by hand: each token is the argmax given the ones before
    memory = model.encode(src)
    ys = torch.full((8, 1), BOS_ID)
    with torch.no_grad():
        for t in range(y_hat.shape[1]):
            best = model.decode(ys, memory, model.padding_mask(src))[:, -1].argmax(-1)
            done = (y_hat[:, :t] == EOS_ID).any(1)
            assert torch.equal(y_hat[~done, t], best[~done])
            ys = torch.cat([ys, y_hat[:, t:t + 1]], 1)
    assert model.training is False


def test_beam_search_with_beam_one_is_greedy():
    for s in range(3):
        torch.manual_seed(s)
        model = _seq2seq()
        src = torch.randint(1, V_SRC, (6, 4))
        greedy = tr.greedy_decode(model, src, 5, BOS_ID, EOS_ID)
        beam, scores = tr.beam_search(model, src, 5, BOS_ID, EOS_ID, beam_size=1)
        assert torch.equal(beam, greedy)
        full = torch.cat([torch.full((6, 1), BOS_ID), beam], 1)
        assert torch.allclose(scores, tr.sequence_log_prob(model, src, full), atol=1e-4)


def test_beam_search_scores_are_log_probabilities_and_beat_exhaustive_search_when_wide():
    torch.manual_seed(1)
    model = _seq2seq()
    src = torch.randint(1, V_SRC, (4, 5))
    beam, scores = tr.beam_search(model, src, 2, BOS_ID, EOS_ID, beam_size=V_TGT - 1)
    full = torch.cat([torch.full((4, 1), BOS_ID), beam], 1)
    assert torch.allclose(scores, tr.sequence_log_prob(model, src, full), atol=1e-4)
    # every output of length <= 2 (a sequence ends at its EOS): the best by exhaustive search
    best = torch.full((4,), -math.inf)
    for a, b in itertools.product(range(1, V_TGT), repeat=2):  # 0 is padding, never generated
        seq = [BOS_ID, a, model.pad_id if a == EOS_ID else b]
        if a == EOS_ID and b != 1:
            continue
        lp = tr.sequence_log_prob(model, src, torch.tensor([seq] * 4))
        best = torch.maximum(best, lp)
    assert torch.allclose(scores, best, atol=1e-4)


def test_decoding_validation():
    model = _seq2seq()
    src = torch.randint(1, V_SRC, (2, 3))
    with pytest.raises(ValueError, match="beam_size"):
        tr.beam_search(model, src, 3, BOS_ID, EOS_ID, beam_size=V_TGT)
    with pytest.raises(ValueError, match="max_len"):
        tr.greedy_decode(model, src, 0, BOS_ID, EOS_ID)
    with pytest.raises(ValueError, match="bos_id"):
        tr.greedy_decode(model, src, 3, V_TGT, EOS_ID)
    with pytest.raises(TypeError, match="Seq2SeqTransformer"):
        tr.greedy_decode(nn.Linear(2, 2), src, 3, BOS_ID, EOS_ID)


# the date task -------------------------------------------------------------------------

def test_date_sources_golden():
    d = dt.date(1994, 3, 23)
    assert tr.date_source(d, 0) == ["2", "3", "march", "1", "9", "9", "4"]
    assert tr.date_source(d, 1) == ["march", "2", "3", ",", "1", "9", "9", "4"]
    assert tr.date_source(d, 2) == list("23") + ["/"] + list("03") + ["/"] + list("1994")
    assert tr.date_source(d, 3) == ["mar", "2", "3", "1", "9", "9", "4"]
    assert " ".join(tr.date_source(d, 4)) == "the twenty third of march , nineteen ninety four"
    assert " ".join(tr.date_source(d, 5)) == "march the twenty third , nineteen ninety four"
    spoken = {dt.date(1905, 11, 1): "the first of november , nineteen oh five",
              dt.date(2000, 1, 12): "the twelfth of january , two thousand",
              dt.date(2007, 5, 30): "the thirtieth of may , two thousand and seven",
              dt.date(1900, 2, 2): "the second of february , nineteen hundred",
              dt.date(2023, 8, 31): "the thirty first of august , twenty twenty three"}
    for date, text in spoken.items():
        assert " ".join(tr.date_source(date, 4)) == text
    with pytest.raises(ValueError, match="fmt"):
        tr.date_source(d, 6)
    with pytest.raises(TypeError):
        tr.date_source("1994-03-23", 0)


def test_date_splits_are_disjoint_and_examples_decode():
    splits = {s: set(tr.date_split(s)) for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == (tr.LAST_DATE - tr.FIRST_DATE).days + 1
    assert not (splits["train"] & splits["val"] or splits["train"] & splits["test"] or splits["val"] & splits["test"])
    src, tgt = tr.date_examples(50, "test", generator=torch.Generator().manual_seed(0))
    assert tgt.shape == (50, tr.DATE_TARGET_LEN) and src.dtype == tgt.dtype == torch.long
    assert torch.all(tgt[:, 0] == tr.DATE_BOS_ID) and torch.all(tgt[:, -1] == tr.DATE_EOS_ID)
    for s, t in zip(src, tgt):
        date = dt.date.fromisoformat(tr.decode_target(t))
        assert date in splits["test"]
        assert any(tr.decode_source(s) == " ".join(tr.date_source(date, f)) for f in range(6))
    again = tr.date_examples(50, "test", generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], src) and torch.equal(again[1], tgt)
    with pytest.raises(ValueError, match="split"):
        tr.date_split("dev")


def test_exact_match():
    tgt = torch.tensor([[1, 5, 6, 2], [1, 5, 6, 2], [1, 5, 6, 2]])
    y_hat = torch.tensor([[5, 6, 2], [5, 7, 2], [5, 6, 6]])
    assert tr.exact_match(y_hat, tgt).tolist() == [True, False, False]
    assert tr.exact_match(torch.tensor([[5, 6, 2, 0, 0]]), tgt[:1]).tolist() == [True]


# steps ------------------------------------------------------------------------------------

def test_seq2seq_step_is_teacher_forced_cross_entropy():
    model = _seq2seq()
    src, tgt = torch.randint(1, V_SRC, (4, 5)), torch.randint(1, V_TGT, (4, 6))
    tgt[0, 4:] = 0
    out = tr.seq2seq_step(model, (src, tgt))
    logits = model(src, tgt[:, :-1])
    keep = tgt[:, 1:] != 0
    expected = F.cross_entropy(logits[keep], tgt[:, 1:][keep])
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    acc = (logits.argmax(-1)[keep] == tgt[:, 1:][keep]).float().mean()
    assert torch.allclose(out["acc"], acc)
    with pytest.raises(ValueError, match="2 tensors"):
        tr.seq2seq_step(model, (src,))


# the GPT and its key-value cache ----------------------------------------------------------

def _gpt(**kwargs):
    config = tr.GPTConfig(**{**dict(vocab_size=13, block_size=16, n_layer=2, n_head=2, d_model=16), **kwargs})
    return tr.GPT(config).eval()


def test_gpt_shapes_tying_and_causality():
    model = _gpt()
    idx = torch.randint(13, (3, 10))
    with torch.no_grad():
        logits = model(idx)
        assert logits.shape == (3, 10, 13)
        changed = idx.clone()
        changed[:, 6] = (changed[:, 6] + 1) % 13
        assert torch.allclose(model(changed)[:, :6], logits[:, :6], atol=ATOL)
    assert model.lm_head.weight is model.tok_embed.weight
    n = dlbook.bench.count_parameters(model)
    assert n == sum(p.numel() for p in model.parameters())  # the tied weight counts once


@pytest.mark.parametrize("chunks", [[16], [1] * 16, [5, 1, 1, 4, 5], [7, 9]])
def test_kv_cache_gives_the_logits_of_the_full_forward(chunks):
    model = _gpt()
    idx = torch.randint(13, (2, 16))
    cache = tr.KVCache(model.config.n_layer)
    with torch.no_grad():
        full = model(idx)
        pieces, start = [], 0
        for n in chunks:
            pieces.append(model(idx[:, start:start + n], cache))
            start += n
    assert len(cache) == 16
    assert cache.keys[0].shape == (2, 2, 16, 8)
    assert (torch.cat(pieces, 1) - full).abs().max() < ATOL


def test_generate_with_and_without_cache_agree_within_the_block():
    model = _gpt()
    prompt = torch.randint(13, (2, 3))
    greedy = [tr.generate(model, prompt, 13, temperature=0.0, use_cache=c) for c in (True, False)]
    assert greedy[0].shape == (2, 16) and torch.equal(greedy[0], greedy[1])
    sampled = [tr.generate(model, prompt, 13, temperature=0.9, top_k=5, use_cache=c,
                           generator=torch.Generator().manual_seed(7)) for c in (True, False)]
    assert torch.equal(sampled[0], sampled[1])
    assert torch.equal(sampled[0][:, :3], prompt)
    longer = tr.generate(model, prompt, 40, temperature=0.0)  # past the block: the cache is rebuilt
    assert longer.shape == (2, 43)
    model.train()
    tr.generate(model, prompt, 2)
    assert model.training


def test_gpt_validation():
    model = _gpt()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = tr.KVCache(2)
    with torch.no_grad():
        model(torch.zeros(1, 10, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="cached"):
        model(torch.zeros(1, 7, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="outside"):
        model(torch.full((1, 3), 13))
    with pytest.raises(ValueError, match="n_head"):
        tr.GPTConfig(d_model=10, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        tr.GPTConfig(dropout=1.0)
    with pytest.raises(TypeError, match="GPTConfig"):
        tr.GPT({"vocab_size": 5})
    with pytest.raises(ValueError, match="prompt"):
        tr.generate(model, torch.zeros(1, 0, dtype=torch.long), 3)


def test_sampling_distribution_golden_numbers():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = tr.sampling_distribution(logits)
    assert torch.allclose(p, torch.softmax(logits, -1))
    p2 = tr.sampling_distribution(logits, temperature=2.0)
    assert torch.allclose(p2, torch.softmax(logits / 2, -1))
    assert torch.equal(tr.sampling_distribution(logits, 0.0), torch.tensor([[1.0, 0, 0, 0]]))
    top2 = tr.sampling_distribution(logits, top_k=2)
    e = math.exp(1.0)
    assert torch.allclose(top2, torch.tensor([[e / (e + 1), 1 / (e + 1), 0, 0]]))
    assert tr.sampling_distribution(logits, 1e6).sub(0.25).abs().max() < 1e-4  # hot: uniform
    assert torch.equal(tr.sample_next(logits, 0.0), torch.tensor([0]))
    draws = torch.stack([tr.sample_next(logits.expand(4000, 4), top_k=2) for _ in range(1)]).flatten()
    assert set(draws.tolist()) <= {0, 1}
    assert abs((draws == 0).float().mean().item() - e / (e + 1)) < 0.03
    with pytest.raises(ValueError, match="temperature"):
        tr.sampling_distribution(logits, -1.0)
    with pytest.raises(ValueError, match="top_k"):
        tr.sampling_distribution(logits, top_k=0)


def test_lm_step_is_the_mean_cross_entropy():
    model = _gpt()
    x, y = torch.randint(13, (2, 8)), torch.randint(13, (2, 8))
    out = tr.lm_step(model, (x, y))
    logits = model(x)
    expected = torch.stack([-torch.log_softmax(logits[b, t], -1)[y[b, t]] for b in range(2) for t in range(8)]).mean()
    assert torch.allclose(out["loss"], expected, atol=1e-5)


# BERT --------------------------------------------------------------------------------------

def test_mask_tokens_follows_the_80_10_10_rule():
    V, mask_id = 50, 53
    ids = torch.randint(V, (400, 500), generator=torch.Generator().manual_seed(1))
    can = torch.ones_like(ids, dtype=torch.bool)
    can[:, 0] = False  # a [CLS] column
    inputs, targets = tr.mask_tokens(ids, mask_id=mask_id, vocab_size=V, can_mask=can,
                                     generator=torch.Generator().manual_seed(2))
    chosen = targets != tr.IGNORE_INDEX
    assert not chosen[:, 0].any() and torch.equal(inputs[:, 0], ids[:, 0])
    n = chosen.sum().item()
    assert abs(n / can.sum().item() - 0.15) < 0.003
    assert torch.equal(targets[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])  # not chosen: untouched
    masked = (inputs == mask_id) & chosen
    same = (inputs == ids) & chosen
    other = chosen & ~masked & ~same
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # a random token equals the original with probability 1/V
    assert abs(same.sum().item() / n - (0.1 + 0.1 / V)) < 0.01
    assert abs(other.sum().item() / n - 0.1 * (1 - 1 / V)) < 0.01
    assert inputs[other].max() < V and (inputs != mask_id).logical_or(chosen).all()


def test_mask_tokens_is_reproducible_and_validated():
    ids = torch.randint(10, (4, 20))
    a = tr.mask_tokens(ids, mask_id=12, vocab_size=10, generator=torch.Generator().manual_seed(0))
    b = tr.mask_tokens(ids, mask_id=12, vocab_size=10, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    none = tr.mask_tokens(ids, mask_id=12, vocab_size=10, p=0.0)
    assert torch.equal(none[0], ids) and torch.all(none[1] == tr.IGNORE_INDEX)
    with pytest.raises(ValueError, match="p must"):
        tr.mask_tokens(ids, mask_id=12, vocab_size=10, p=1.5)
    with pytest.raises(ValueError, match="can_mask"):
        tr.mask_tokens(ids, mask_id=12, vocab_size=10, can_mask=torch.ones(4, 20))


def test_bert_examples_layout():
    text = torch.arange(200) % 20  # a text whose ids say where they are, modulo 20
    inputs, segments, targets, is_next = tr.bert_examples(text, 64, 5, 20, p=0.0,
                                                          generator=torch.Generator().manual_seed(0))
    assert inputs.shape == segments.shape == targets.shape == (64, 13) and is_next.shape == (64,)
    assert torch.all(inputs[:, 0] == 20) and torch.all(inputs[:, 6] == 21) and torch.all(inputs[:, 12] == 21)
    assert segments[0].tolist() == [0] * 7 + [1] * 6
    a_last, b_first = inputs[:, 5], inputs[:, 7]
    follows = b_first == (a_last + 1) % 20
    assert torch.all(follows[is_next == 1])
    assert 10 < int(is_next.sum()) < 54
    masked, *_ = tr.bert_examples(text, 64, 5, 20, generator=torch.Generator().manual_seed(0))
    special = (inputs == 20) | (inputs == 21)
    assert torch.equal(masked[special], inputs[special])  # [CLS] and [SEP] are never masked
    with pytest.raises(ValueError, match="too short"):
        tr.bert_examples(torch.arange(10), 2, 5, 20)


def test_mini_bert_shapes_and_step():
    model = tr.MiniBERT(20, d_model=16, num_heads=2, num_layers=2, max_len=13, dropout=0.0)
    batch = tr.bert_examples(torch.arange(300) % 20, 8, 5, 20, generator=torch.Generator().manual_seed(0))
    mlm, nsp = model(batch[0], batch[1])
    assert mlm.shape == (8, 13, 20) and nsp.shape == (8, 2)
    out = tr.mlm_step(model, batch)
    assert set(out) == {"loss", "mlm_loss", "mlm_acc", "mask_acc", "nsp_acc"}
    right = mlm.argmax(-1) == batch[2]
    chosen = batch[2] != -100
    shown = chosen & (batch[0] == 22)  # [MASK] = V + 2
    assert 0 < shown.sum() < chosen.sum()  # some chosen positions are not shown as [MASK]
    assert torch.isclose(out["mlm_acc"], right[chosen].float().mean())
    assert torch.isclose(out["mask_acc"], right[shown].float().mean())
    assert torch.allclose(out["loss"], out["mlm_loss"] + F.cross_entropy(nsp, batch[3]), atol=1e-5)
    loader = tr.BertBatches(torch.arange(300) % 20, 5, 4, 20)
    first = next(iter(loader))
    assert first[0].shape == (4, 13) and "seg_len=5" in loader.fingerprint()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 14, dtype=torch.long), torch.zeros(1, 14, dtype=torch.long))
    with pytest.raises(ValueError, match="segments"):
        model(batch[0], batch[1][:, :5])


# ViT ---------------------------------------------------------------------------------------

def test_patchify_then_linear_is_a_strided_convolution():
    x = torch.randn(2, 3, 12, 8)
    conv = nn.Conv2d(3, 5, kernel_size=4, stride=4)
    patches = tr.patchify(x, 4)
    assert patches.shape == (2, 6, 48)
    with torch.no_grad():
        by_conv = conv(x).flatten(2).transpose(1, 2)  # (B, N, 5)
        by_linear = patches @ conv.weight.reshape(5, -1).T + conv.bias
    assert torch.allclose(by_linear, by_conv, atol=ATOL)
    assert torch.equal(tr.patchify(x, 4)[0, 1], x[0, :, 0:4, 4:8].reshape(-1))  # row by row
    with pytest.raises(ValueError, match="multiples"):
        tr.patchify(x, 5)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_shapes(pool):
    model = tr.ViT(patch_size=7, d_model=16, num_heads=2, num_layers=2, pool=pool)
    assert model.pos_embed.shape == (1, 17, 16)
    assert model.tokens(torch.randn(3, 1, 28, 28)).shape == (3, 17, 16)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(3, 1, 32, 32))
    with pytest.raises(ValueError, match="divide"):
        tr.ViT(patch_size=5)
    with pytest.raises(ValueError, match="pool"):
        tr.ViT(pool="max")


def test_fit_trains_the_models_under_both_precisions(native_bf16):
    """A few steps of each model through dlbook.fit reduce the loss, with
    and without bfloat16 autocast."""
    torch.manual_seed(0)
    model = tr.Seq2SeqTransformer(len(tr.SOURCE_TOKENS), len(tr.TARGET_TOKENS), d_model=32, d_ff=64,
                                  dropout=0.0)
    src, tgt = tr.date_examples(64, generator=torch.Generator().manual_seed(0))
    loader = dlbook.data.BatchLoader(src, tgt, batch_size=64)
    history = dlbook.fit(model, loader, step=tr.seq2seq_step, optimizer=torch.optim.Adam(model.parameters(), 3e-3),
                         max_steps=30, log_every=10, progress=False, device="cpu")
    losses = history.column("train_loss")
    assert losses[-1] < 0.7 * losses[0]


def test_helpers_reject_mismatched_or_wrong_input():
    model = tr.Seq2SeqTransformer(len(tr.SOURCE_TOKENS), len(tr.TARGET_TOKENS), d_model=16, num_heads=2)
    src, tgt = tr.date_examples(4, "val", generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="same number of sequences"):
        tr.exact_match(tgt[:2, 1:], tgt)
    with pytest.raises(ValueError, match="same number of sequences"):
        model(src[:2], tgt)
    gpt = tr.GPT(tr.GPTConfig(block_size=8, n_layer=1, n_head=2, d_model=16))
    with pytest.raises(TypeError, match="Seq2SeqTransformer"):
        tr.sequence_log_prob(gpt, src, tgt)
    cache = tr.KVCache(2)
    with pytest.raises(ValueError, match="layer must be"):
        cache.append(5, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    cache.append(0, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    with pytest.raises(ValueError, match="do not continue"):
        cache.append(0, torch.zeros(3, 2, 1, 4), torch.zeros(3, 2, 1, 4))
    bert = tr.MiniBERT(65, d_model=16, num_heads=2, num_layers=1)
    with pytest.raises(ValueError, match="segments must hold"):
        bert(torch.zeros(1, 5, dtype=torch.long), torch.full((1, 5), 2))


# greedy decoding from a prefix, loss by position, count baselines, the typo task ----------

def test_greedy_decode_from_a_prefix_continues_it_and_matches_a_manual_loop():
    torch.manual_seed(3)
    model = _seq2seq().eval()
    src = torch.randint(1, V_SRC, (5, 4))
    full = tr.greedy_decode(model, src, 5, BOS_ID, EOS_ID)
    # the first token greedy itself chose, as a prefix: the same output
    prefix = torch.cat([torch.full((5, 1), BOS_ID), full[:, :1]], 1)
    assert torch.equal(tr.greedy_decode(model, src, 5, BOS_ID, EOS_ID, prefix=prefix), full)
    # forced tokens (not EOS): kept, and the rest is greedy from them
    forced = torch.tensor([[BOS_ID, 3, 4]] * 5)
    out = tr.greedy_decode(model, src, 5, BOS_ID, EOS_ID, prefix=forced)
    assert torch.equal(out[:, :2], forced[:, 1:])
    with torch.no_grad():
        ys = forced
        for _ in range(3):
            logits = model.decode(ys, model.encode(src), model.padding_mask(src))[:, -1]
            logits[:, model.pad_id] = -math.inf
            ys = torch.cat([ys, logits.argmax(-1, keepdim=True)], 1)
    # up to each row's first EOS, the same tokens
    for row in range(5):
        want = ys[row, 3:].tolist()
        if EOS_ID in want:
            want = want[:want.index(EOS_ID) + 1]
        assert out[row, 2:2 + len(want)].tolist() == want


def test_greedy_decode_prefix_validation():
    model = _seq2seq()
    src = torch.randint(1, V_SRC, (2, 3))
    with pytest.raises(ValueError, match="bos_id"):
        tr.greedy_decode(model, src, 3, BOS_ID, EOS_ID, prefix=torch.tensor([[3, 4], [BOS_ID, 4]]))
    with pytest.raises(ValueError, match="prefix must have shape"):
        tr.greedy_decode(model, src, 3, BOS_ID, EOS_ID, prefix=torch.full((3, 1), BOS_ID))
    with pytest.raises(ValueError, match="outside"):
        tr.greedy_decode(model, src, 3, BOS_ID, EOS_ID, prefix=torch.tensor([[BOS_ID, V_TGT]] * 2))


def test_loss_by_position_averages_the_per_position_cross_entropy():
    torch.manual_seed(0)
    gpt = tr.GPT(tr.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=16))
    x = torch.randint(11, (10, 8))
    y = torch.randint(11, (10, 8))
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    got = tr.loss_by_position(gpt, batches)
    with torch.no_grad():
        logits = gpt(x)
    want = torch.stack([F.cross_entropy(logits[:, t], y[:, t]) for t in range(8)])
    assert got.shape == (8,)
    assert torch.allclose(got, want, atol=1e-5)
    # its mean over positions is lm_step's loss
    assert torch.allclose(got.mean(), tr.lm_step(gpt, (x, y))["loss"], atol=1e-5)
    assert gpt.training
    with pytest.raises(ValueError, match="no batches"):
        tr.loss_by_position(gpt, [])
    with pytest.raises(TypeError, match="nn.Module"):
        tr.loss_by_position(lambda x: x, batches)


def test_neighbour_counts_guess_from_the_tables():
    # text: "abcabcabd" over V = 5 (a=0, b=1, c=2, d=3; 4 never seen)
    text = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 3])
    counts = tr.NeighbourCounts(text, 5)
    assert counts.unigram.tolist() == [3, 3, 2, 1, 0]
    ids = torch.tensor([[0, 1, 2, 0, 1, 3]])
    # none: the commonest token (ties: the lowest id)
    assert counts.guess(ids, "none").tolist() == [[0] * 6]
    # left: after a comes b; after b comes c (2 times) rather than d (once); after c comes a
    assert counts.guess(ids, "left").tolist() == [[0, 1, 2, 0, 1, 2]]
    # both: (a, ?, d) was seen once as b; (c, ?, b) was seen as a; edges back off to left / none
    both = counts.guess(ids, "both")
    assert both.tolist() == [[0, 1, 2, 0, 1, 2]]
    assert counts.guess(torch.tensor([[1, 4, 0]]), "both")[0, 1].item() == 2  # (b, ?, a) never seen: left table
    # special ids (>= V) as neighbours: back off
    assert counts.guess(torch.tensor([[7, 1, 8]]), "both")[0, 1].item() == 0
    # no left neighbour but a right one: what most often precedes it (b precedes c twice)
    assert counts.guess(torch.tensor([[7, 9, 2]]), "both")[0, 1].item() == 1
    assert counts.guess(torch.tensor([[7, 9, 2]]), "left")[0, 1].item() == 0  # the left table never looks right
    with pytest.raises(ValueError, match="context"):
        counts.guess(ids, "right")
    with pytest.raises(ValueError, match="outside"):
        tr.NeighbourCounts(torch.tensor([0, 1, 5]), 5)


def test_swap_examples_swap_two_adjacent_characters_in_the_positive_half():
    text = torch.arange(200) % 7
    inputs, segments, labels = tr.swap_examples(text, 400, 10, 7, generator=torch.Generator().manual_seed(0))
    assert inputs.shape == segments.shape == (400, 12) and labels.shape == (400,)
    assert (inputs[:, 0] == 7).all() and (inputs[:, -1] == 8).all() and (segments == 0).all()
    assert 0.4 < labels.float().mean() < 0.6
    body = inputs[:, 1:-1]
    steps = (body[:, 1:] - body[:, :-1]) % 7  # 1 everywhere in the original text
    assert (steps[labels == 0] == 1).all()
    changed = (steps[labels == 1] != 1).sum(1)
    assert ((changed >= 1) & (changed <= 3)).all()


def test_cls_step_reads_the_two_way_head():
    torch.manual_seed(0)
    bert = tr.MiniBERT(7, d_model=16, num_heads=2, num_layers=1, max_len=12, dropout=0.0)
    inputs, segments, labels = tr.swap_examples(torch.arange(200) % 7, 8, 10, 7)
    out = tr.cls_step(bert, (inputs, segments, labels))
    _, logits = bert(inputs, segments)
    assert torch.allclose(out["loss"], F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="cls_step expects batches of 3"):
        tr.cls_step(bert, (inputs, segments))


def test_layer_stack_lm_is_causal_and_normalizes_a_pre_norm_output():
    torch.manual_seed(0)
    for norm_first in (False, True):
        model = tr.LayerStackLM(9, norm_first, num_layers=2, d_model=16, block_size=6).eval()
        assert isinstance(model.norm, nn.LayerNorm) == norm_first
        x = torch.randint(9, (2, 6))
        changed = x.clone()
        changed[:, 4] = (x[:, 4] + 1) % 9
        with torch.no_grad():
            a, b = model(x), model(changed)
        assert a.shape == (2, 6, 9)
        assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)  # earlier positions never see position 4
        assert not torch.allclose(a[:, 4:], b[:, 4:])
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        model(torch.full((1, 3), 9))


def test_a_gpt_block_is_a_pre_norm_gelu_encoder_layer_with_causal_attention():
    config = tr.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, d_model=16, dropout=0.0)
    torch.manual_seed(0)
    block = tr.GPTBlock(config).eval()
    assert isinstance(block, tr.EncoderLayer) and block.norm_first
    theirs = nn.TransformerEncoderLayer(16, 2, 64, dropout=0.0, activation="gelu", norm_first=True,
                                        batch_first=True).eval()
    block.load_torch_weights(theirs)
    x = torch.randn(3, 8, 16)
    expected = theirs(x, src_mask=nn.Transformer.generate_square_subsequent_mask(8), is_causal=True)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)
