"""Exercises of the Transformer chapter."""

from __future__ import annotations

import math
import random

import torch
from torch import nn

from . import LAYER_OPS, Wrong, exercise, forbid, forbid_ops, is_int


def _decoder_params(d_model: int, d_ff: int) -> int:
    attention = 4 * (d_model * d_model + d_model)  # W^Q, W^K, W^V, W^O with biases
    ffn = d_model * d_ff + d_ff + d_ff * d_model + d_model
    norms = 3 * 2 * d_model  # gain and bias of three LayerNorms
    return 2 * attention + ffn + norms


@exercise(
    "transformer.decoder_layer_params",
    "Write decoder_layer_params(d_model, num_heads, d_ff): the number of parameters of "
    "transformer.DecoderLayer(d_model, num_heads, d_ff) (every linear layer and LayerNorm has its "
    "bias). Derive it from the layer's structure; building layers to count them is not allowed.",
    "Two attentions (masked self-attention and cross-attention), each with four d_model x d_model "
    "projections and their biases: 2 * 4 * (d^2 + d). The feed-forward network: d*d_ff + d_ff + "
    "d_ff*d + d. Three LayerNorms, each with a gain and a bias per feature: 3 * 2d. The number of "
    "heads does not appear: the heads split the projected vectors, they add no weights. With "
    "d_ff = 4d the feed-forward network holds half of the weights and each attention a quarter.",
)
def _decoder_layer_params(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function decoder_layer_params(d_model, num_heads, d_ff).")
    from .. import attention, transformer

    rule = "derive the count from the structure; build no layers"
    # The rule on three levels. By name, so that the hint names the layer the answer built. At the
    # level of the operators that make a parameter's storage (LAYER_OPS: torch.empty and the inits
    # that follow it, clone, ...), which no pre-bound name escapes: an __init__ saved before the
    # check, a layer class not named here (a 1x1 nn.Conv1d has nn.Linear's parameters, a GroupNorm(1, d)
    # a LayerNorm's), skip_init, the meta device, a deep copy of a layer built earlier, torch.ops.aten
    # called directly. A layer built *before* the check runs no operator when its parameters are
    # counted, so the sizes are also drawn afresh on every check: a table of counts prepared
    # earlier cannot pass. Banning these operators costs a right answer nothing: it computes
    # with Python integers and never reaches torch. (A size guard, refusing tensors of more than
    # some number of elements on large random sizes, would let tiny layers through, and counts
    # of tiny layers fit the polynomial.)
    draw = random.Random()
    cases = [(64, 4, 256), (32, 2, 64), (48, 8, 100), (16, 1, 16), (128, 16, 512)]
    for _ in range(5):
        nh = draw.randint(1, 16)
        cases.append((nh * draw.randint(1, 48), nh, draw.randint(1, 2048)))
    layers = (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, attention.MultiHeadAttention, transformer.DecoderLayer,
              nn.TransformerDecoderLayer)
    for d, nh, d_ff in cases:
        with forbid(rule, *((layer, "__init__") for layer in layers)), forbid_ops(rule, *LAYER_OPS):
            got = answer(d, nh, d_ff)
        if not is_int(got):
            raise Wrong(f"for d_model={d}, num_heads={nh}, d_ff={d_ff} you return {got!r}; return a whole "
                        f"number.")
        want = _decoder_params(d, d_ff)
        if got == want:
            continue
        attention_block = 4 * (d * d + d)
        if got == want - attention_block:
            raise Wrong("you counted one attention. A decoder layer has two: which one reads the encoder?")
        if got == want - 2 * d or got == want - 4 * d:
            raise Wrong("check the LayerNorms: how many are there in a decoder layer?")
        if got == want - 3 * d:
            raise Wrong("a LayerNorm has a gain *and* a bias for every feature.")
        if got == want - 6 * d:
            raise Wrong("the LayerNorms have parameters too.")
        if got == 8 * d * d + 2 * d * d_ff:
            raise Wrong("the linear layers have biases: every one of them adds one number per output.")
        if any(got == want + extra for extra in (8 * d * d * (nh - 1), 2 * attention_block * (nh - 1))) and nh > 1:
            raise Wrong("how many weights do the heads add? Look at what splitting into heads does to "
                        "the projections.")
        raise Wrong(f"for d_model={d}, num_heads={nh}, d_ff={d_ff} your count is {got}; it is off by "
                    f"{want - got}. List the layer's linear layers and LayerNorms one by one.")


def _prefix_mask(T: int, P: int) -> torch.Tensor:
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j < P) | (j <= i)


@exercise(
    "transformer.prefix_lm_mask",
    "A decoder-only model reads a prompt of n_prompt tokens in both directions and generates the rest "
    "causally (a prefix language model). Write prefix_lm_mask(T, n_prompt) -> (T, T) boolean mask, "
    "True = may attend: every position may attend to all n_prompt prompt positions, and a position "
    "after the prompt also to itself and to every position before it.",
    "mask[i, j] = (j < n_prompt) | (j <= i): one line. The prompt is one block that sees itself entirely; "
    "after it the mask is the causal triangle. A prompt position must not see the generated tokens, "
    "which do not exist yet when it is read. With n_prompt = 0 this is the causal mask, with "
    "n_prompt = T full attention. T5's and UniLM's prefix language models use this mask.",
)
def _prefix_lm_mask(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function prefix_lm_mask(T, n_prompt).")
    for T, P in [(6, 2), (5, 0), (4, 4), (8, 3), (1, 1), (7, 1)]:
        got = answer(T, P)
        where = f"for T={T}, n_prompt={P}"
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor.")
        if tuple(got.shape) != (T, T):
            raise Wrong(f"{where} the mask should have shape ({T}, {T}); yours has {tuple(got.shape)}.")
        if got.dtype != torch.bool:
            raise Wrong(f"{where} the mask should be boolean; yours has dtype {got.dtype}.")
        want = _prefix_mask(T, P)
        if torch.equal(got, want):
            continue
        if torch.equal(got, ~want):
            raise Wrong("your mask is inverted: True means *may attend*.")
        if torch.equal(got, want.T):
            raise Wrong(f"{where} your mask is transposed: rows are queries, columns keys.")
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        if torch.equal(got, causal) and P > 1:
            raise Wrong(f"{where} that is the causal mask: the prompt positions should see the whole "
                        f"prompt.")
        rows = torch.arange(T)[:, None]
        if torch.equal(got, want | (rows < P)) and P < T:
            raise Wrong(f"{where} the prompt positions can see the generated tokens, which come later.")
        raise Wrong(f"{where} your mask differs from the expected one in {(got != want).sum().item()} places.")


def _top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    probs = torch.softmax(logits.double(), dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above
    keep_sorted = before < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep


@exercise(
    "transformer.top_p",
    "Nucleus (top-p) sampling draws from the smallest set of the most probable tokens whose probabilities "
    "add up to at least p. Write top_p_filter(logits, p): for logits of shape (B, V), return logits of "
    "the same shape with every token outside its row's set replaced by -inf (the others unchanged).",
    "Sort each row's probabilities in decreasing order; a token is kept when the tokens ranked above it "
    "hold less than p of the mass (cumsum minus its own probability < p), so the token that crosses p "
    "is kept too; then scatter the decision back to the original order. Unlike top-k, the number of "
    "candidates adapts: one token when the model is sure, many when it is not (Holtzman et al., 2020).",
)
def _top_p_check(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function top_p_filter(logits, p).")
    gen = torch.Generator().manual_seed(0)
    cases = [
        (torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), 0.7),
        (torch.log(torch.tensor([[0.05, 0.6, 0.1, 0.25]])), 0.8),
        (torch.log(torch.tensor([[0.9, 0.05, 0.05 - 1e-3, 1e-3]])), 0.5),
        (torch.log(torch.tensor([[0.4, 0.35, 0.25]])), 0.999),
        (3 * torch.randn(5, 12, generator=gen), 0.9),
        (torch.randn(3, 30, generator=gen), 0.5),
    ]
    for logits, p in cases:
        got = answer(logits.clone(), p)
        where = f"for p={p} and logits {[round(v, 2) for v in logits[0, :6].tolist()]}..."
        if not isinstance(got, torch.Tensor) or got.shape != logits.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise Wrong(f"{where} return a tensor of shape {tuple(logits.shape)}; got {shape}.")
        keep = _top_p(logits, p)
        kept = torch.isfinite(got)
        if torch.equal(kept, keep):
            if not torch.allclose(got[kept].double(), logits[kept].double(), atol=1e-6):
                raise Wrong(f"{where} the kept tokens are the right ones, but their logits changed: leave "
                            f"them as they were.")
            if not torch.all(got[~kept] == -math.inf):
                raise Wrong(f"{where} replace the removed tokens' logits by -inf.")
            continue
        probs = torch.softmax(logits.double(), -1)
        sorted_probs, order = probs.sort(-1, descending=True)
        exclusive = torch.zeros_like(keep).scatter(-1, order, sorted_probs.cumsum(-1) < p)
        if torch.equal(kept, exclusive):
            raise Wrong(f"{where} you keep too few tokens: the set must hold at least p of the "
                        f"probability, so the token that crosses p belongs to it.")
        if torch.equal(kept, keep.flip(-1)) or kept.sum() == keep.sum():
            raise Wrong(f"{where} you keep the right number of tokens but not the right ones: the set is "
                        f"made of the *most* probable tokens.")
        if bool(kept.all()):
            raise Wrong(f"{where} you keep every token.")
        raise Wrong(f"{where} you keep {int(kept.sum())} tokens where {int(keep.sum())} are expected.")


def _changed(p: float, V: int) -> float:
    return p * (0.8 + 0.1 * (1 - 1 / V))


@exercise(
    "transformer.changed_fraction",
    "With BERT's rule (choose each position with probability p_mask; replace a chosen token by [MASK] with "
    "probability 0.8, by a token drawn uniformly from the V tokens of the vocabulary with probability "
    "0.1, keep it with probability 0.1), what fraction of the input tokens differ from the original, on "
    "average? Write changed_fraction(p_mask, V).",
    "p_mask * (0.8 + 0.1 * (1 - 1/V)): a [MASK] always differs; a random token differs unless it happens to "
    "be the original, which it is with probability 1/V; a kept token never differs. For p_mask = 0.15 and a "
    "large vocabulary that is about 13.5% of the tokens, yet the model is asked to predict 15%: it "
    "cannot tell which of the unchanged tokens are among them, so it must keep a good representation of "
    "every token.",
)
def _changed_fraction(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function changed_fraction(p_mask, V).")
    for p, V in [(0.15, 30000), (0.15, 68), (0.5, 2), (0.3, 10), (1.0, 5), (0.0, 7)]:
        got = answer(p, V)
        try:
            got = float(got)
        except (TypeError, ValueError):
            raise Wrong(f"for p_mask={p}, V={V} you return {got!r}; return a number.") from None
        want = _changed(p, V)
        if abs(got - want) <= 1e-9:
            continue
        if p > 0:
            if abs(got - 0.9 * p) <= 1e-9:
                raise Wrong("a randomly drawn token is sometimes the original one.")
            if abs(got - 0.8 * p) <= 1e-9:
                raise Wrong("a token replaced by a random one is usually different too.")
            if abs(got - p) <= 1e-9:
                raise Wrong("not every chosen token is changed: some are kept as they are.")
            if abs(got - p * (0.8 + 0.1 * (1 - 1 / (V + 3)))) <= 1e-9:
                raise Wrong("the random token is drawn from the V tokens of the vocabulary.")
        raise Wrong(f"for p_mask={p}, V={V} your answer is {got:.6f}; follow one position through the three "
                    f"cases and ask, in each, whether the input differs from the original.")


def _beam_step(scores: torch.Tensor, log_p: torch.Tensor):
    B, k, V = log_p.shape
    total = (scores[:, :, None] + log_p).reshape(B, k * V)  # (B, k V)
    new, index = total.topk(k, dim=-1)  # (B, k), best first
    return new, index // V, index % V


@exercise(
    "transformer.beam_step",
    "Write beam_step(scores, log_p), one step of beam search. scores (B, k) holds the total "
    "log-probability of each row's k live hypotheses; log_p (B, k, V) the log-probability of every "
    "next token after each of them. Return (new_scores, beam, token), each of shape (B, k): the k "
    "most probable extensions of each row, best first, with the hypothesis each one extends and the "
    "token it appends. A hypothesis with score -inf (at the first step only one is live) must not be "
    "extended.",
    "Add each hypothesis's score to its tokens' log-probabilities, (B, k, 1) + (B, k, V), flatten the "
    "last two dimensions to k*V candidates per row, and take the top k: a flat index i is hypothesis "
    "i // V and token i % V. The k best may all extend one hypothesis and drop the others; that is "
    "how beam search can abandon the prefix greedy decoding would have followed. A -inf score stays "
    "-inf after the sum, so a dead hypothesis is only picked when fewer than k live extensions exist.",
)
def _beam_step_check(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function beam_step(scores, log_p).")
    gen = torch.Generator().manual_seed(random.randrange(2**31))
    first = torch.tensor([[0.0, -math.inf, -math.inf]]).expand(2, 3).clone()
    cases = [(first, torch.log_softmax(torch.randn(2, 3, 5, generator=gen), -1)),
             (torch.tensor([[-0.1, -3.0]]), torch.log(torch.tensor([[[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]])))]
    for B, k, V in [(3, 4, 7), (2, 2, 10), (1, 5, 6), (4, 3, 3)]:
        scores = -3 * torch.rand(B, k, generator=gen)
        cases.append((scores.sort(-1, descending=True).values,
                      torch.log_softmax(2 * torch.randn(B, k, V, generator=gen), -1)))
    for scores, log_p in cases:
        got = answer(scores.clone(), log_p.clone())
        where = f"for B, k, V = {tuple(log_p.shape)}"
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise Wrong(f"{where} return a tuple (new_scores, beam, token).")
        new, beam, token = got
        if not all(isinstance(t, torch.Tensor) and t.shape == scores.shape for t in got):
            raise Wrong(f"{where} each of new_scores, beam and token must be a tensor of shape "
                        f"{tuple(scores.shape)}.")
        want_new, want_beam, want_token = _beam_step(scores, log_p)
        if torch.allclose(new.double(), want_new.double(), atol=1e-5) and torch.equal(beam.long(), want_beam) \
                and torch.equal(token.long(), want_token):
            continue
        B, k, V = log_p.shape
        own = torch.gather(scores[:, :, None] + log_p, 2, log_p.argmax(-1, keepdim=True))[..., 0]
        if torch.allclose(new.sort(-1, descending=True).values, want_new, atol=1e-5) and not torch.allclose(
                new, want_new, atol=1e-5):
            raise Wrong(f"{where} you have the right extensions, but return them best first.")
        if torch.allclose(new.sort(-1, descending=True).values, own.sort(-1, descending=True).values, atol=1e-5):
            raise Wrong(f"{where} you extend every hypothesis by its own best token. The k best of all "
                        f"k*V extensions can take several from one hypothesis and none from another.")
        only_log_p = log_p.reshape(B, k * V).topk(k, dim=-1).values
        if torch.allclose(new, only_log_p, atol=1e-5):
            raise Wrong(f"{where} a hypothesis's score is the total log-probability of all its tokens so "
                        f"far, not only of the newest.")
        if torch.allclose(new, want_new, atol=1e-5):
            raise Wrong(f"{where} the scores are right, but beam or token is not: which hypothesis and which "
                        f"token does a flat index into the (k, V) candidates stand for?")
        raise Wrong(f"{where} your new scores are {[round(v, 3) for v in new[0].tolist()]}; work one row "
                    f"by hand: add each hypothesis's score to each of its tokens' log-probabilities, "
                    f"and keep the k largest sums.")


def _cached_attention(q, k_cache, v_cache, k_new, v_new):
    k = torch.cat([k_cache, k_new], dim=1)  # (B, t + 1, d)
    v = torch.cat([v_cache, v_new], dim=1)
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, 1, t + 1)
    return weights @ v, k, v


@exercise(
    "transformer.cached_attention",
    "Write cached_attention(q, k_cache, v_cache, k_new, v_new): one step of generation through a "
    "key-value cache, for one attention head. q, k_new and v_new, each (B, 1, d), are the query, key and "
    "value of the newest token; k_cache and v_cache, each (B, t, d), hold the keys and values of the t "
    "tokens before it, oldest first (t may be 0). Return (out, k_cache, v_cache): out (B, 1, d), the "
    "newest token's causal self-attention output, and the two caches with the newest key and value "
    "appended. Compute the attention yourself: PyTorch's and dlbook's attention functions are not "
    "allowed (the check enforces it).",
    "Append first, then attend: the newest token attends to every earlier token *and to itself*, so its "
    "query meets the t cached keys plus its own, k = cat(k_cache, k_new) along the time axis, and the "
    "output is softmax(q k^T / sqrt(d)) v over those t + 1 positions. No mask is needed: the cache holds "
    "only earlier tokens, so causality comes for free. The step costs O(t d), against O(t^2 d) for "
    "running the whole prefix again, which is what the chapter's timing measures.",
)
def _cached_attention_check(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function cached_attention(q, k_cache, v_cache, k_new, v_new).")
    from .attention import _forbid_attention

    rule = "compute the attention yourself, with no attention function from torch or dlbook"
    gen = torch.Generator().manual_seed(random.randrange(2**31))
    for B, t, d in [(2, 5, 8), (1, 0, 4), (3, 1, 16), (2, 11, 6), (1, 3, 32)]:
        q, k_new, v_new = (2 * torch.randn(B, 1, d, generator=gen) for _ in range(3))
        k_cache, v_cache = (2 * torch.randn(B, t, d, generator=gen) for _ in range(2))
        where = f"for B, t, d = {B}, {t}, {d}"
        with _forbid_attention(rule):
            got = answer(q.clone(), k_cache.clone(), v_cache.clone(), k_new.clone(), v_new.clone())
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise Wrong(f"{where} return a tuple (out, k_cache, v_cache).")
        out, k_got, v_got = got
        want, k_want, v_want = _cached_attention(q, k_cache, v_cache, k_new, v_new)
        if not all(isinstance(x, torch.Tensor) for x in got):
            raise Wrong(f"{where} out, k_cache and v_cache must be tensors.")
        if k_got.shape != k_want.shape or v_got.shape != v_want.shape:
            raise Wrong(f"{where} the caches you return have shapes {tuple(k_got.shape)} and "
                        f"{tuple(v_got.shape)}; after this step they hold t + 1 = {t + 1} positions.")
        if not (torch.equal(k_got, k_want) and torch.equal(v_got, v_want)):
            if torch.equal(k_got, torch.cat([k_new, k_cache], 1)):
                raise Wrong(f"{where} the caches keep the oldest token first: the newest goes at the end.")
            raise Wrong(f"{where} the caches you return are not the old caches with the newest key and "
                        f"value appended.")
        if out.shape != want.shape:
            raise Wrong(f"{where} out has shape {tuple(out.shape)}; expected {tuple(want.shape)}.")
        if torch.allclose(out, want, atol=1e-5):
            continue
        if t > 0:
            old_only = torch.softmax(q @ k_cache.transpose(1, 2) / math.sqrt(d), -1) @ v_cache
            if torch.allclose(out, old_only, atol=1e-5):
                raise Wrong(f"{where} your newest token attends to the earlier tokens only. Causal "
                            f"attention lets a position see itself too.")
        unscaled = torch.softmax(q @ k_want.transpose(1, 2), -1) @ v_want
        if torch.allclose(out, unscaled, atol=1e-5):
            raise Wrong(f"{where} the scores are not scaled: the chapter's attention divides them by a "
                        f"square root.")
        wrong_axis = torch.softmax(q @ k_want.transpose(1, 2) / math.sqrt(d), 1) @ v_want
        if torch.allclose(out, wrong_axis, atol=1e-5):
            raise Wrong(f"{where} the weights must sum to 1 over the keys (the last axis).")
        raise Wrong(f"{where} your output differs from the newest token's attention output by up to "
                    f"{(out - want).abs().max():.3g}; write out the scores of one query against every key "
                    f"it may see.")
