r"""The Transformer: encoder and decoder layers, an encoder-decoder model with
greedy and beam-search decoding, a character-level GPT with a key-value
cache, BERT's masked language modelling, and a small vision transformer.

Everything is built on :mod:`dlbook.attention` (chapter 4): its
:class:`~dlbook.attention.MultiHeadAttention` does every attention here.
Shapes use the book's legend: B batch, T sequence length (T_src and T_tgt
for the source and target of a sequence-to-sequence model), d_model the
model width, nh heads, hs head size, V the size of a vocabulary, K
classes, C channels, H and W height and width, P the patch side.

The main pieces::

    layer = EncoderLayer(d_model=64, num_heads=4, d_ff=256, norm_first=True)
    y = layer(x, key_padding_mask=pad)                     # (B, T, d_model)
    model = Seq2SeqTransformer(src_vocab_size, tgt_vocab_size)
    logits = model(src, tgt[:, :-1])                       # teacher forcing
    y_hat = greedy_decode(model, src, max_len=11, bos_id=BOS, eos_id=EOS)
    gpt = GPT(GPTConfig(vocab_size=65, block_size=64))
    text = generate(gpt, prompt, 200, temperature=0.8, top_k=10)
    bert = MiniBERT(vocab_size=65); vit = ViT()

Steps for :func:`dlbook.fit`: :func:`seq2seq_step`, :func:`lm_step`,
:func:`mlm_step` (the ViT trains with :func:`dlbook.supervised`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_bool, check_float, check_int, check_tensor, describe
from .attention import MultiHeadAttention, SinusoidalEncoding, causal_mask

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}
IGNORE_INDEX = -100  # F.cross_entropy's default: targets with this value are left out of the loss


def _check_ids(x, name: str, dims: int = 2) -> torch.Tensor:
    """``x`` when it is an integer tensor of token ids with ``dims`` dimensions."""
    check_tensor(x, name)
    if x.dim() != dims or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        want = "(B, T)" if dims == 2 else f"{dims}-D"
        raise ValueError(f"{name} must be a {want} tensor of integer token ids; got dtype {x.dtype}, "
                         f"shape {tuple(x.shape)}")
    return x


def _check_activation(activation) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}; got {describe(activation)}")
    return activation


def _check_seq(x, name: str, d_model: int) -> torch.Tensor:
    check_tensor(x, name, floating=True)
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{name} must have shape (B, T, d_model={d_model}); got {tuple(x.shape)}")
    return x


# the position-wise feed-forward network ------------------------------------------

class FeedForward(nn.Module):
    r"""The position-wise feed-forward network: one small MLP applied to every position alike.

    $$\operatorname{FFN}(x) = \phi(x W_1 + b_1)\, W_2 + b_2,$$

    with $W_1$ of shape (d_model, d_ff) (``up_proj``), $W_2$ of shape
    (d_ff, d_model) (``down_proj``) and $\phi$ ReLU (the original
    Transformer) or GELU (BERT, GPT). Dropout acts on the hidden layer.

    Shapes:
        x: (..., d_model) -> (..., d_model)
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu",
                 bias: bool = True):
        super().__init__()
        self.d_model, self.d_ff = check_int(d_model, "d_model", 1), check_int(d_ff, "d_ff", 1)
        self.activation = _check_activation(activation)
        bias = check_bool(bias, "bias")
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)  # W_1
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)  # W_2
        self.dropout = nn.Dropout(check_float(dropout, "dropout", 0.0, 1.0, open_max=True))

    def extra_repr(self) -> str:
        return f"activation={self.activation}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", floating=True)
        if x.shape[-1] != self.d_model:
            raise ValueError(f"x must end in d_model={self.d_model}; got shape {tuple(x.shape)}")
        hidden = ACTIVATIONS[self.activation](self.up_proj(x))  # (..., d_ff)
        return self.down_proj(self.dropout(hidden))  # (..., d_model)


# encoder and decoder layers ----------------------------------------------------------

class EncoderLayer(nn.Module):
    r"""One Transformer encoder layer: self-attention, then the feed-forward network,
    each in a residual connection with layer normalization.

    Post-norm (the paper's, ``norm_first=False``), with sublayers $f_1$ =
    self-attention and $f_2$ = feed-forward:

    $$h = \operatorname{LN}_1\big(x + f_1(x)\big), \qquad y = \operatorname{LN}_2\big(h + f_2(h)\big);$$

    pre-norm (``norm_first=True``):

    $$h = x + f_1\big(\operatorname{LN}_1(x)\big), \qquad y = h + f_2\big(\operatorname{LN}_2(h)\big).$$

    Dropout acts on each sublayer's output before the sum, on the attention
    weights, and inside the feed-forward network, as in
    ``nn.TransformerEncoderLayer``, whose weights :meth:`load_torch_weights` copies.

    ``forward(x, *, attn_mask=None, key_padding_mask=None, is_causal=False,
    cache=None, layer=0)`` takes the masks of
    :class:`~dlbook.attention.MultiHeadAttention` (``attn_mask``: True = may
    attend; ``key_padding_mask``: True = padding) and its key-value cache
    (a :class:`KVCache` and the index of this layer in it).

    Shapes:
        x: (B, T, d_model) -> (B, T, d_model)
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0,
                 activation: str = "relu", norm_first: bool = False, eps: float = 1e-5, bias: bool = True,
                 use_torch_sdpa: bool = False):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", 1)
        self.norm_first = check_bool(norm_first, "norm_first")
        dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        eps = check_float(eps, "eps", 0.0)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, bias, use_torch_sdpa)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.norm1 = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"

    def forward(self, x: torch.Tensor, *, attn_mask: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, is_causal: bool = False,
                cache: "KVCache | None" = None, layer: int = 0) -> torch.Tensor:
        _check_seq(x, "x", self.d_model)

        def attend(h):
            return self.dropout(self.self_attn(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                               is_causal=is_causal, cache=cache,
                                               layer=layer))  # (B, T, d_model)

        if self.norm_first:
            x = x + attend(self.norm1(x))  # x + f_1(LN_1(x))
            return x + self.dropout(self.ffn(self.norm2(x)))  # h + f_2(LN_2(h))
        x = self.norm1(x + attend(x))  # LN_1(x + f_1(x))
        return self.norm2(x + self.dropout(self.ffn(x)))  # LN_2(h + f_2(h))

    @torch.no_grad()
    def load_torch_weights(self, layer: nn.TransformerEncoderLayer) -> "EncoderLayer":
        """Copy the weights of an ``nn.TransformerEncoderLayer`` of the same
        sizes, ``norm_first`` and activation; return self."""
        if not isinstance(layer, nn.TransformerEncoderLayer):
            raise TypeError(f"layer must be an nn.TransformerEncoderLayer; got {type(layer).__name__}")
        _check_same_design(self, layer)
        self.self_attn.load_torch_weights(layer.self_attn)
        _copy_ffn_and_norms(self, layer, 2)
        return self


class DecoderLayer(nn.Module):
    r"""One Transformer decoder layer: masked self-attention, cross-attention
    to the encoder's output (the *memory*), then the feed-forward network,
    each in a residual connection with layer normalization.

    In the cross-attention the queries come from the decoder and the keys
    and values from the memory: $\operatorname{Attention}(h W^Q, m W^K, m W^V)$.
    Post-norm (``norm_first=False``):

    $$h_1 = \operatorname{LN}_1(y + f_1(y)),\quad h_2 = \operatorname{LN}_2(h_1 + f_2(h_1, m)),\quad
    \text{out} = \operatorname{LN}_3(h_2 + f_3(h_2));$$

    pre-norm: $h_1 = y + f_1(\operatorname{LN}_1(y))$, $h_2 = h_1 +
    f_2(\operatorname{LN}_2(h_1), m)$, $\text{out} = h_2 + f_3(\operatorname{LN}_3(h_2))$
    (the memory is not normalized here: the encoder's final norm did it).

    ``forward(y, memory, *, attn_mask=None, key_padding_mask=None,
    is_causal=True, memory_key_padding_mask=None, need_weights=False)``:
    the self-attention is causal by default (position t sees targets
    0..t), ``attn_mask`` and ``key_padding_mask`` act on it,
    ``memory_key_padding_mask`` (True = padding) on the cross-attention.
    With ``need_weights`` it also returns the cross-attention weights.
    :meth:`load_torch_weights` copies an ``nn.TransformerDecoderLayer``.

    Shapes:
        y: (B, T_tgt, d_model), memory: (B, T_src, d_model) -> (B, T_tgt, d_model),
        and weights (B, nh, T_tgt, T_src) with need_weights
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float = 0.0,
                 activation: str = "relu", norm_first: bool = False, eps: float = 1e-5, bias: bool = True,
                 use_torch_sdpa: bool = False):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", 1)
        self.norm_first = check_bool(norm_first, "norm_first")
        dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        eps = check_float(eps, "eps", 0.0)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, bias, use_torch_sdpa)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout, bias, use_torch_sdpa)
        self.ffn = FeedForward(d_model, d_ff, dropout, activation, bias)
        self.norm1 = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"

    def forward(self, y: torch.Tensor, memory: torch.Tensor, *, attn_mask: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None, is_causal: bool = True,
                memory_key_padding_mask: torch.Tensor | None = None, need_weights: bool = False):
        _check_seq(y, "y", self.d_model)
        _check_seq(memory, "memory", self.d_model)
        need_weights = check_bool(need_weights, "need_weights")
        weights = None

        def masked_self(h):
            return self.dropout(self.self_attn(h, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                               is_causal=is_causal))  # (B, T_tgt, d_model)

        def cross(h):
            nonlocal weights
            out = self.cross_attn(h, memory, key_padding_mask=memory_key_padding_mask,
                                  need_weights=need_weights)  # queries from h, keys and values from memory
            if need_weights:
                out, weights = out  # weights (B, nh, T_tgt, T_src)
            return self.dropout(out)

        if self.norm_first:
            y = y + masked_self(self.norm1(y))
            y = y + cross(self.norm2(y))
            y = y + self.dropout(self.ffn(self.norm3(y)))
        else:
            y = self.norm1(y + masked_self(y))
            y = self.norm2(y + cross(y))
            y = self.norm3(y + self.dropout(self.ffn(y)))
        return (y, weights) if need_weights else y  # (B, T_tgt, d_model)

    @torch.no_grad()
    def load_torch_weights(self, layer: nn.TransformerDecoderLayer) -> "DecoderLayer":
        """Copy the weights of an ``nn.TransformerDecoderLayer`` of the same
        sizes, ``norm_first`` and activation; return self."""
        if not isinstance(layer, nn.TransformerDecoderLayer):
            raise TypeError(f"layer must be an nn.TransformerDecoderLayer; got {type(layer).__name__}")
        _check_same_design(self, layer)
        self.self_attn.load_torch_weights(layer.self_attn)
        self.cross_attn.load_torch_weights(layer.multihead_attn)
        _copy_ffn_and_norms(self, layer, 3)
        return self


def _check_same_design(ours, theirs) -> None:
    if ours.norm_first != theirs.norm_first:
        raise ValueError(f"norm_first differs: ours {ours.norm_first}, theirs {theirs.norm_first}")
    theirs_activation = {F.relu: "relu", F.gelu: "gelu"}.get(theirs.activation)
    if theirs_activation != ours.ffn.activation:
        raise ValueError(f"the activations differ: ours {ours.ffn.activation!r}, theirs {theirs.activation}")
    if (theirs.linear1.in_features, theirs.linear1.out_features) != (ours.ffn.d_model, ours.ffn.d_ff):
        raise ValueError(f"the feed-forward sizes differ: ours ({ours.ffn.d_model}, {ours.ffn.d_ff}), theirs "
                         f"({theirs.linear1.in_features}, {theirs.linear1.out_features})")


def _copy_ffn_and_norms(ours, theirs, n_norms: int) -> None:
    for mine, other in ((ours.ffn.up_proj, theirs.linear1), (ours.ffn.down_proj, theirs.linear2),
                        *((getattr(ours, f"norm{i}"), getattr(theirs, f"norm{i}")) for i in range(1, n_norms + 1))):
        mine.weight.copy_(other.weight)
        if (mine.bias is None) != (other.bias is None):
            raise ValueError("one has biases and the other not: build both with the same bias=")
        if mine.bias is not None:
            mine.bias.copy_(other.bias)
    for i in range(1, n_norms + 1):
        getattr(ours, f"norm{i}").eps = getattr(theirs, f"norm{i}").eps


# the encoder-decoder Transformer -----------------------------------------------

class Seq2SeqTransformer(nn.Module):
    r"""The encoder-decoder Transformer of "Attention is all you need", small.

    Source and target tokens are embedded (times $\sqrt{d_\text{model}}$, as
    in the paper), the sinusoidal encoding is added, the encoder's layers
    read the source, and the decoder's layers read the target *shifted
    right* (it starts with BOS) with masked self-attention and attend to
    the encoder's output with cross-attention; a linear layer gives the
    next-token logits. With ``norm_first`` each stack ends with a
    LayerNorm. ``pad_id`` marks source padding (masked in every attention
    that reads the source).

    * :meth:`encode`: ``src`` -> memory (B, T_src, d_model)
    * :meth:`decode`: ``tgt``, memory -> logits (B, T_tgt, V_tgt), and with
      ``need_weights`` the cross-attention weights of every decoder layer
    * ``forward(src, tgt)``: both (training with teacher forcing)

    Shapes:
        src: (B, T_src) ids, tgt: (B, T_tgt) ids -> (B, T_tgt, V_tgt)
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, d_model: int = 128, num_heads: int = 4,
                 num_encoder_layers: int = 2, num_decoder_layers: int = 2, d_ff: int | None = None,
                 dropout: float = 0.1, norm_first: bool = True, activation: str = "relu", max_len: int = 256,
                 pad_id: int = 0):
        super().__init__()
        self.src_vocab_size = check_int(src_vocab_size, "src_vocab_size", 1)
        self.tgt_vocab_size = check_int(tgt_vocab_size, "tgt_vocab_size", 1)
        self.d_model = check_int(d_model, "d_model", 2)
        d_ff = 4 * d_model if d_ff is None else check_int(d_ff, "d_ff", 1)
        self.pad_id = check_int(pad_id, "pad_id", 0)
        self.norm_first = check_bool(norm_first, "norm_first")
        layer = dict(d_model=d_model, num_heads=num_heads, d_ff=d_ff, dropout=dropout, activation=activation,
                     norm_first=norm_first, use_torch_sdpa=True)
        self.src_embed = nn.Embedding(src_vocab_size, d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, d_model)
        self.position = SinusoidalEncoding(d_model, check_int(max_len, "max_len", 1))
        self.dropout = nn.Dropout(dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(**layer) for _ in range(
            check_int(num_encoder_layers, "num_encoder_layers", 1)))
        self.decoder_layers = nn.ModuleList(DecoderLayer(**layer) for _ in range(
            check_int(num_decoder_layers, "num_decoder_layers", 1)))
        self.encoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, tgt_vocab_size)
        for table in (self.src_embed, self.tgt_embed):  # times sqrt(d_model): entries of size about 1,
            nn.init.normal_(table.weight, std=d_model**-0.5)  # like the position encoding's

    def padding_mask(self, src: torch.Tensor) -> torch.Tensor:
        """True where ``src`` is padding. Shapes: (B, T_src) -> (B, T_src)."""
        return _check_ids(src, "src") == self.pad_id

    def _embed(self, ids: torch.Tensor, table: nn.Embedding, name: str) -> torch.Tensor:
        _check_ids(ids, name)
        if ids.numel() and (ids.min() < 0 or ids.max() >= table.num_embeddings):
            raise ValueError(f"{name} holds ids outside 0..{table.num_embeddings - 1}")
        x = table(ids) * math.sqrt(self.d_model)  # (B, T, d_model)
        return self.dropout(self.position(x))

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """The encoder's output, the *memory*. Shapes: (B, T_src) -> (B, T_src, d_model)."""
        pad = self.padding_mask(src)  # (B, T_src)
        x = self._embed(src, self.src_embed, "src")  # (B, T_src, d_model)
        for layer in self.encoder_layers:
            x = layer(x, key_padding_mask=pad)
        return self.encoder_norm(x)

    def decode(self, tgt: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor | None = None,
               need_weights: bool = False):
        """Next-token logits for every target position, each seeing the
        targets up to itself and the whole memory.

        Shapes:
            tgt: (B, T_tgt), memory: (B, T_src, d_model), memory_padding:
            (B, T_src) -> (B, T_tgt, V_tgt), and a list of (B, nh, T_tgt,
            T_src) weights, one per layer, with need_weights
        """
        y = self._embed(tgt, self.tgt_embed, "tgt")  # (B, T_tgt, d_model)
        all_weights = []
        for layer in self.decoder_layers:
            y = layer(y, memory, is_causal=True, memory_key_padding_mask=memory_padding,
                      need_weights=need_weights)
            if need_weights:
                y, weights = y
                all_weights.append(weights)
        logits = self.head(self.decoder_norm(y))  # (B, T_tgt, V_tgt)
        return (logits, all_weights) if need_weights else logits

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        _check_same_batch(src, "src", _check_ids(tgt, "tgt"), "tgt")
        memory = self.encode(src)  # (B, T_src, d_model)
        return self.decode(tgt, memory, self.padding_mask(src))  # (B, T_tgt, V_tgt)


def _check_same_batch(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{a_name} and {b_name} must hold the same number of sequences; got {len(a)} and "
                         f"{len(b)}")


def _check_decoding(model, src, max_len, bos_id, eos_id):
    if not isinstance(model, Seq2SeqTransformer):
        raise TypeError(f"model must be a Seq2SeqTransformer; got {type(model).__name__}")
    _check_ids(src, "src")
    if len(src) == 0:
        raise ValueError("src is an empty batch")
    max_len = check_int(max_len, "max_len", 1)
    V = model.tgt_vocab_size
    bos_id, eos_id = check_int(bos_id, "bos_id", 0), check_int(eos_id, "eos_id", 0)
    if bos_id >= V or eos_id >= V:
        raise ValueError(f"bos_id and eos_id must be target ids below {V}; got {bos_id} and {eos_id}")
    return max_len, bos_id, eos_id


@torch.no_grad()
def greedy_decode(model: Seq2SeqTransformer, src: torch.Tensor, max_len: int, bos_id: int,
                  eos_id: int, *, prefix: torch.Tensor | None = None) -> torch.Tensor:
    r"""Greedy decoding: at every step append the most probable next token,
    $\hat y_t = \arg\max_v p(v \mid \hat y_{<t}, x)$, until EOS or ``max_len`` tokens.

    ``prefix`` (BOS and the first tokens, forced) makes the decoder continue
    a given start instead of BOS alone: the returned ids then begin with
    the prefix's tokens (without its BOS), and ``max_len`` counts them.
    The model is evaluated in evaluation mode (its mode is restored).
    Padding is never generated; after a sequence's EOS its remaining
    positions hold ``model.pad_id``.

    Shapes:
        src: (B, T_src), prefix: (B, 1 + n) -> (B, L) target ids without the BOS, L <= max_len
    """
    max_len, bos_id, eos_id = _check_decoding(model, src, max_len, bos_id, eos_id)
    if prefix is None:
        prefix = torch.full((len(src), 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1)
    _check_ids(prefix, "prefix")
    if len(prefix) != len(src) or prefix.shape[1] < 1 or prefix.shape[1] > max_len + 1:
        raise ValueError(f"prefix must have shape (B={len(src)}, 1 to max_len + 1 = {max_len + 1}); got "
                         f"{tuple(prefix.shape)}")
    if not bool((prefix[:, 0] == bos_id).all()):
        raise ValueError(f"prefix must start with bos_id={bos_id} in every row")
    if prefix.min() < 0 or prefix.max() >= model.tgt_vocab_size:
        raise ValueError(f"prefix holds ids outside 0..{model.tgt_vocab_size - 1}")
    was_training = model.training
    model.eval()
    try:
        memory = model.encode(src)  # (B, T_src, d_model)
        padding = model.padding_mask(src)
        ys = prefix.to(src.device)  # (B, 1 + n)
        done = (ys[:, 1:] == eos_id).any(1)  # (B,)
        for _ in range(max_len + 1 - ys.shape[1]):
            if done.all():
                break
            logits = model.decode(ys, memory, padding)[:, -1]  # (B, V): the next token only
            logits[:, model.pad_id] = -math.inf  # padding is never generated
            next_id = logits.argmax(-1)  # (B,)
            next_id = torch.where(done, torch.full_like(next_id, model.pad_id), next_id)
            ys = torch.cat([ys, next_id[:, None]], dim=1)  # (B, t + 1)
            done |= next_id == eos_id
        return ys[:, 1:]
    finally:
        model.train(was_training)


@torch.no_grad()
def beam_search(model: Seq2SeqTransformer, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int,
                beam_size: int = 4, length_penalty: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Beam search: keep the ``beam_size`` most probable partial outputs at every step.

    Each hypothesis $y_{1..t}$ has the score $\sum_{s \le t} \log p(y_s \mid
    y_{<s}, x)$. At each step every live hypothesis is extended by every
    token, and the ``beam_size`` highest scores among all extensions are
    kept; a hypothesis that has produced EOS is finished and keeps its
    score. At the end the best hypothesis by score $/\,L^{\alpha}$ is
    returned ($L$ its length including EOS, $\alpha$ = ``length_penalty``;
    0 compares plain log-probabilities). With ``beam_size=1`` this is
    :func:`greedy_decode`.

    Shapes:
        src: (B, T_src) -> ids (B, L) without the BOS, L <= max_len, and
        their log-probabilities (B,) (before the length penalty)
    """
    max_len, bos_id, eos_id = _check_decoding(model, src, max_len, bos_id, eos_id)
    k = check_int(beam_size, "beam_size", 1)
    alpha = check_float(length_penalty, "length_penalty", 0.0)
    V = model.tgt_vocab_size
    if k > V - 1:  # padding is never generated: V - 1 tokens can extend a hypothesis
        raise ValueError(f"beam_size ({k}) cannot exceed the {V - 1} target tokens other than padding")
    was_training = model.training
    model.eval()
    try:
        B, device = len(src), src.device
        memory = model.encode(src).repeat_interleave(k, dim=0)  # (B*k, T_src, d_model)
        padding = model.padding_mask(src).repeat_interleave(k, dim=0)  # (B*k, T_src)
        ys = torch.full((B * k, 1), bos_id, dtype=torch.long, device=device)  # (B*k, 1)
        scores = torch.full((B, k), -math.inf, device=device)
        scores[:, 0] = 0.0  # one live hypothesis to start with, so the k beams do not repeat it
        done = torch.zeros(B * k, dtype=torch.bool, device=device)
        lengths = torch.zeros(B * k, device=device)
        for _ in range(max_len):
            logits = model.decode(ys, memory, padding)[:, -1].float()  # (B*k, V)
            logits[:, model.pad_id] = -math.inf  # padding is never generated
            log_p = torch.log_softmax(logits, dim=-1)
            # a finished hypothesis continues only with padding, at no cost
            log_p[done] = -math.inf
            log_p[done, model.pad_id] = 0.0
            total = (scores.reshape(B * k, 1) + log_p).reshape(B, k * V)  # (B, k*V)
            scores, index = total.topk(k, dim=-1)  # (B, k)
            beam, token = index // V, index % V  # which hypothesis, which token
            rows = (torch.arange(B, device=device)[:, None] * k + beam).reshape(-1)  # (B*k,)
            ys = torch.cat([ys[rows], token.reshape(-1, 1)], dim=1)  # (B*k, t + 1)
            lengths = lengths[rows] + (~done[rows]).float()
            done = done[rows] | (token.reshape(-1) == eos_id)
            if done.all():
                break
        final = scores / lengths.reshape(B, k).clamp(min=1) ** alpha  # (B, k)
        best = final.argmax(-1)  # (B,)
        picked = torch.arange(B, device=device) * k + best
        return ys[picked, 1:], scores[torch.arange(B, device=device), best]
    finally:
        model.train(was_training)


@torch.no_grad()
def sequence_log_prob(model: Seq2SeqTransformer, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    r"""$\log p(y \mid x) = \sum_t \log p(y_t \mid y_{<t}, x)$ of whole target sequences.

    ``tgt`` starts with BOS; positions holding ``model.pad_id`` (after EOS)
    are left out of the sum. The probabilities are those the decoders use:
    the softmax over every token but padding.

    Shapes:
        src: (B, T_src), tgt: (B, T_tgt) -> (B,)
    """
    if not isinstance(model, Seq2SeqTransformer):
        raise TypeError(f"model must be a Seq2SeqTransformer; got {type(model).__name__}")
    _check_ids(src, "src")
    _check_ids(tgt, "tgt")
    if tgt.shape[1] < 2:
        raise ValueError(f"tgt must hold BOS and at least one token; got shape {tuple(tgt.shape)}")
    was_training = model.training
    model.eval()
    try:
        logits = model(src, tgt[:, :-1]).float()  # (B, T_tgt - 1, V)
        logits[..., model.pad_id] = -math.inf  # as in the decoders: padding is never generated
        log_p = torch.log_softmax(logits, dim=-1)
        y = tgt[:, 1:]
        picked = log_p.gather(-1, y[..., None])[..., 0]  # (B, T_tgt - 1)
        return torch.where(y != model.pad_id, picked, 0.0).sum(-1)
    finally:
        model.train(was_training)


# the synthetic task: dates in words to ISO form --------------------------------------

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
DATE_FORMATS = ("23 march 1994", "march 23, 1994", "23/03/1994", "mar 23 1994",
                "the twenty third of march, nineteen ninety four", "march the twenty third, nineteen ninety four")
FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
TARGET_TOKENS = (PAD, BOS, EOS, *"0123456789-")


def _number_words(n: int) -> list[str]:
    """0 <= n < 100 in words: 42 -> ['forty', 'two']."""
    if n < 20:
        return [_ONES[n]]
    return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])


def _ordinal_words(n: int) -> list[str]:
    """1 <= n <= 31 as an ordinal in words: 23 -> ['twenty', 'third']."""
    words = _number_words(n)
    last = words[-1]
    if last in _ORDINAL:
        words[-1] = _ORDINAL[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return words


def _year_words(year: int) -> list[str]:
    """1900..2099 as spoken: 1994 -> nineteen ninety four, 1905 -> nineteen oh five,
    1900 -> nineteen hundred, 2000 -> two thousand, 2007 -> two thousand and seven,
    2023 -> twenty twenty three."""
    century, rest = divmod(year, 100)
    if century == 20 and rest < 10:
        return ["two", "thousand"] + (["and", _ONES[rest]] if rest else [])
    head = _number_words(century)
    if rest == 0:
        return head + ["hundred"]
    if rest < 10:
        return head + ["oh", _ONES[rest]]
    return head + _number_words(rest)


def date_source(date: dt.date, fmt: int) -> list[str]:
    """The tokens of ``date`` written in format ``fmt`` (an index into
    :data:`DATE_FORMATS`): words and punctuation are tokens, numbers are
    written digit by digit. ``date_source(date(1994, 3, 23), 1)`` is
    ``['march', '2', '3', ',', '1', '9', '9', '4']``."""
    if not isinstance(date, dt.date):
        raise TypeError(f"date must be a datetime.date; got {type(date).__name__}")
    fmt = check_int(fmt, "fmt", 0)
    if fmt >= len(DATE_FORMATS):
        raise ValueError(f"fmt must be below {len(DATE_FORMATS)}; got {fmt}")
    month, day, year = MONTHS[date.month - 1], list(str(date.day)), list(str(date.year))
    if fmt == 0:
        return day + [month] + year
    if fmt == 1:
        return [month] + day + [","] + year
    if fmt == 2:
        return list(f"{date.day:02d}") + ["/"] + list(f"{date.month:02d}") + ["/"] + year
    if fmt == 3:
        return [month[:3]] + day + year
    spoken_day, spoken_year = _ordinal_words(date.day), _year_words(date.year)
    if fmt == 4:
        return ["the"] + spoken_day + ["of", month, ","] + spoken_year
    return [month, "the"] + spoken_day + [","] + spoken_year


def _source_tokens() -> tuple[str, ...]:
    words = set("0123456789/,") | {"the", "of", "oh", "and", "hundred", "thousand"}
    words |= set(MONTHS) | {m[:3] for m in MONTHS} | set(_ONES[1:]) | set(_TENS[2:])
    words |= {w for n in range(1, 32) for w in _ordinal_words(n)}
    return (PAD, *sorted(words))


SOURCE_TOKENS = _source_tokens()
_SOURCE_ID = {t: i for i, t in enumerate(SOURCE_TOKENS)}
_TARGET_ID = {t: i for i, t in enumerate(TARGET_TOKENS)}
DATE_PAD_ID, DATE_BOS_ID, DATE_EOS_ID = (_TARGET_ID[t] for t in (PAD, BOS, EOS))
DATE_TARGET_LEN = 12  # BOS, 10 characters of yyyy-mm-dd, EOS


def _all_dates() -> list[dt.date]:
    n = (LAST_DATE - FIRST_DATE).days + 1
    return [FIRST_DATE + dt.timedelta(days=i) for i in range(n)]


def date_split(split: str) -> list[dt.date]:
    """The dates of one split: every date of 1900-2099, shuffled once (seed
    0) and cut 80% / 10% / 10% into ``"train"``, ``"val"`` and ``"test"``.
    No date of one split occurs in another, in any format."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test'; got {describe(split)}")
    dates = _all_dates()
    order = torch.randperm(len(dates), generator=torch.Generator().manual_seed(0)).tolist()
    n_train, n_val = int(0.8 * len(dates)), int(0.1 * len(dates))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(dates))}
    lo, hi = bounds[split]
    return [dates[i] for i in order[lo:hi]]


def date_examples(n: int, split: str = "train", *, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random examples of the date task from ``split`` (:func:`date_split`):
    a date of the split in a random format of :data:`DATE_FORMATS` (the
    source, padded with id 0 to the longest), and its ISO form
    ``yyyy-mm-dd`` between BOS and EOS (the target).

    Shapes:
        -> src (n, T_src) ids of :data:`SOURCE_TOKENS`, tgt (n, 12) ids of
        :data:`TARGET_TOKENS`
    """
    n = check_int(n, "n", 1)
    dates = date_split(split)
    pick = torch.randint(len(dates), (n,), generator=generator).tolist()
    fmts = torch.randint(len(DATE_FORMATS), (n,), generator=generator).tolist()
    sources = [[_SOURCE_ID[t] for t in date_source(dates[i], f)] for i, f in zip(pick, fmts)]
    T_src = max(len(s) for s in sources)
    src = torch.zeros(n, T_src, dtype=torch.long)  # (n, T_src), 0 = padding
    for row, s in enumerate(sources):
        src[row, :len(s)] = torch.tensor(s)
    tgt = torch.tensor([[DATE_BOS_ID] + [_TARGET_ID[c] for c in dates[i].isoformat()] + [DATE_EOS_ID]
                        for i in pick])  # (n, 12)
    return src, tgt


def decode_source(ids) -> str:
    """Source ids back to text (padding dropped). Shapes: (T_src,) -> str."""
    ids = _check_ids(torch.as_tensor(ids), "ids", dims=1).tolist()
    if any(not 0 <= i < len(SOURCE_TOKENS) for i in ids):
        raise ValueError(f"ids must lie in 0..{len(SOURCE_TOKENS) - 1}")
    return " ".join(SOURCE_TOKENS[i] for i in ids if i != 0)


def decode_target(ids) -> str:
    """Target ids back to text, up to the first EOS (BOS and padding dropped).
    Shapes: (L,) -> str."""
    ids = _check_ids(torch.as_tensor(ids), "ids", dims=1).tolist()
    if any(not 0 <= i < len(TARGET_TOKENS) for i in ids):
        raise ValueError(f"ids must lie in 0..{len(TARGET_TOKENS) - 1}")
    out = []
    for i in ids:
        if i == DATE_EOS_ID:
            break
        if i not in (DATE_PAD_ID, DATE_BOS_ID):
            out.append(TARGET_TOKENS[i])
    return "".join(out)


def exact_match(y_hat: torch.Tensor, tgt: torch.Tensor, eos_id: int = DATE_EOS_ID,
                pad_id: int = DATE_PAD_ID) -> torch.Tensor:
    """Whether each decoded sequence equals its target up to and including EOS.

    ``y_hat`` comes from :func:`greedy_decode` or :func:`beam_search` (no
    BOS); ``tgt`` is the target with its BOS. Shapes: (B, L), (B, T_tgt) -> (B,) bool.
    """
    _check_ids(y_hat, "y_hat")
    _check_ids(tgt, "tgt")
    _check_same_batch(y_hat, "y_hat", tgt, "tgt")
    want = tgt[:, 1:]
    L = max(y_hat.shape[1], want.shape[1])
    a = F.pad(y_hat, (0, L - y_hat.shape[1]), value=pad_id)
    b = F.pad(want, (0, L - want.shape[1]), value=pad_id)
    return (a == b).all(dim=1)


class LayerStackLM(nn.Module):
    """A causal language model made of :class:`EncoderLayer` s, for experiments on the stack itself.

    Token and learned position embeddings, ``num_layers`` encoder layers
    run with a causal mask (post-norm or pre-norm, ``norm_first``), a final
    LayerNorm in the pre-norm case (nothing else normalizes the output of a
    pre-norm stack), and a linear head. :class:`GPT` is the same kind of
    model with GPT-2's block, initialization and a key-value cache.

    Shapes:
        idx: (B, T), T <= block_size -> (B, T, V)
    """

    def __init__(self, vocab_size: int, norm_first: bool, num_layers: int = 12, d_model: int = 64,
                 num_heads: int = 4, block_size: int = 64):
        super().__init__()
        self.vocab_size = check_int(vocab_size, "vocab_size", 1)
        self.norm_first = check_bool(norm_first, "norm_first")
        self.tok_embed = nn.Embedding(vocab_size, check_int(d_model, "d_model", 1))
        self.pos_embed = nn.Embedding(check_int(block_size, "block_size", 1), d_model)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, 4 * d_model, norm_first=norm_first, use_torch_sdpa=True)
            for _ in range(check_int(num_layers, "num_layers", 1)))
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _check_ids(idx, "idx")
        T = idx.shape[1]
        if T > self.pos_embed.num_embeddings or T == 0:
            raise ValueError(f"idx must hold 1 to block_size={self.pos_embed.num_embeddings} positions; got {T}")
        if idx.min() < 0 or idx.max() >= self.vocab_size:
            raise ValueError(f"idx holds ids outside 0..{self.vocab_size - 1}")
        positions = torch.arange(T, device=idx.device)
        h = self.tok_embed(idx) + self.pos_embed(positions)  # (B, T, d_model)
        for layer in self.layers:
            h = layer(h, is_causal=True)
        return self.head(self.norm(h))  # (B, T, V)


# a character-level GPT ---------------------------------------------------------

@dataclass
class GPTConfig:
    """The sizes of a :class:`GPT` (nanoGPT's names, with the book's ``d_model``).

    ``block_size`` is the context length T: the most tokens the model reads
    at once (it has one learned position embedding per position).
    """

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            check_int(getattr(self, name), name, 1)
        check_float(self.dropout, "dropout", 0.0, 1.0, open_max=True)
        check_bool(self.bias, "bias")
        if self.d_model % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide d_model ({self.d_model})")


class KVCache:
    """The keys and values that every layer of a :class:`GPT` has computed so far.

    Generating token t+1, the keys and values of tokens 0..t do not change
    (causal attention: an earlier token never sees a later one), so each
    layer keeps them and computes only the new token's. ``len(cache)`` is
    the number of positions held.

    Shapes:
        keys[l], values[l]: (B, nh, len(cache), hs)
    """

    def __init__(self, n_layer: int):
        n_layer = check_int(n_layer, "n_layer", 1)
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def __len__(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions' keys and values of ``layer``; return all of that layer's.

        Shapes: k, v: (B, nh, T_new, hs) -> (B, nh, len + T_new, hs) each
        """
        if not (isinstance(layer, int) and 0 <= layer < len(self.keys)):
            raise ValueError(f"layer must be an integer in 0..{len(self.keys) - 1}; got {describe(layer)}")
        check_tensor(k, "k", floating=True)
        check_tensor(v, "v", floating=True)
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"k and v must have shapes (B, nh, T_new, hs) with the same B, nh, T_new; got "
                             f"{tuple(k.shape)} and {tuple(v.shape)}")
        old = self.keys[layer]
        if old is not None and (old.shape[:2] != k.shape[:2] or old.shape[3] != k.shape[3]):
            raise ValueError(f"the new keys {tuple(k.shape)} do not continue the cached ones {tuple(old.shape)}")
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)  # (B, nh, T_past + T_new, hs)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class GPTBlock(EncoderLayer):
    r"""A GPT block: a pre-norm :class:`EncoderLayer` with causal self-attention
    and a GELU feed-forward network of width 4 d_model,
    $h = x + \operatorname{attn}(\operatorname{LN}_1(x))$, $y = h + \operatorname{FFN}(\operatorname{LN}_2(h))$.

    ``forward(x, cache=None, layer=0)``: query i attends to keys j <= i;
    with a :class:`KVCache` the new positions sit after the cached ones.
    The attention runs in PyTorch's fused ``F.scaled_dot_product_attention``.

    Shapes:
        x: (B, T, d_model) -> (B, T, d_model)
    """

    def __init__(self, config: GPTConfig):
        super().__init__(config.d_model, config.n_head, 4 * config.d_model, config.dropout, "gelu",
                         norm_first=True, bias=config.bias, use_torch_sdpa=True)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        return super().forward(x, is_causal=True, cache=cache, layer=layer)


class GPT(nn.Module):
    """A decoder-only Transformer language model (GPT-2's design, nanoGPT's size).

    Token embedding plus a learned position embedding, ``n_layer``
    :class:`GPTBlock` s, a final LayerNorm and a linear layer to the
    vocabulary that shares its weight with the token embedding. Weights are
    initialized as in GPT-2: normal with std 0.02, and the projections that
    write into the residual stream with 0.02 / sqrt(2 n_layer).

    ``forward(idx, cache=None)`` returns the next-token logits at every
    position. With a :class:`KVCache`, ``idx`` holds only the new tokens:
    they are placed after the ``len(cache)`` cached positions, and the
    cache grows by their keys and values.

    Shapes:
        idx: (B, T) token ids, len(cache) + T <= block_size -> (B, T, V)
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig; got {type(config).__name__}")
        self.config = config
        self.tok_embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embed = nn.Embedding(config.block_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(GPTBlock(config) for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_embed.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("out_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        _check_ids(idx, "idx")
        B, T = idx.shape
        past = 0 if cache is None else len(cache)
        if past + T > self.config.block_size or T == 0:
            raise ValueError(f"the model reads 1 to block_size={self.config.block_size} positions; got "
                             f"{T} new tokens after {past} cached ones")
        if idx.min() < 0 or idx.max() >= self.config.vocab_size:
            raise ValueError(f"idx holds ids outside 0..{self.config.vocab_size - 1}")
        positions = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.dropout(self.tok_embed(idx) + self.pos_embed(positions))  # (B, T, d_model)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        return self.lm_head(self.norm(x))  # (B, T, V)


def sampling_distribution(logits: torch.Tensor, temperature: float = 1.0,
                          top_k: int | None = None) -> torch.Tensor:
    r"""The distribution a sampler draws the next token from.

    $p_i \propto \exp(z_i / \tau)$ over the ``top_k`` largest logits $z_i$
    (all of them when ``top_k`` is None), 0 elsewhere. A temperature
    $\tau < 1$ sharpens the distribution, $\tau > 1$ flattens it;
    $\tau = 0$ puts all the mass on the largest logit (greedy).

    Shapes:
        logits: (..., V) -> (..., V), rows summing to 1
    """
    check_tensor(logits, "logits", floating=True)
    temperature = check_float(temperature, "temperature", 0.0)
    V = logits.shape[-1]
    logits = logits.float()
    if top_k is not None:
        top_k = check_int(top_k, "top_k", 1)
        if top_k < V:
            kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1): the k-th largest
            logits = logits.masked_fill(logits < kth, -math.inf)
    if temperature == 0.0:
        return F.one_hot(logits.argmax(-1), V).float()
    return torch.softmax(logits / temperature, dim=-1)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from :func:`sampling_distribution` (argmax at temperature 0).

    Shapes:
        logits: (B, V) -> (B,)
    """
    check_tensor(logits, "logits", floating=True)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, V); got {tuple(logits.shape)}")
    if check_float(temperature, "temperature", 0.0) == 0.0:
        return logits.argmax(-1)
    probs = sampling_distribution(logits, temperature, top_k)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue every sequence of ``idx`` by ``max_new_tokens`` sampled tokens.

    Without the cache each step runs the model over the last ``block_size``
    tokens and keeps the last position's logits (nanoGPT's loop). With
    the cache the first step reads the prompt (its last ``block_size``
    tokens) and stores every layer's keys and values; each later step
    feeds only the newest token. The learned position embeddings are
    absolute, so a full cache cannot slide along the text: when it holds
    ``block_size`` positions it is rebuilt from the last ``block_size // 2``
    tokens. Up to ``block_size`` tokens in all, both ways compute the same
    logits. The model is evaluated in evaluation mode (its mode is restored).

    Shapes:
        idx: (B, T) -> (B, T + max_new_tokens)
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a GPT; got {type(model).__name__}")
    _check_ids(idx, "idx")
    if idx.shape[1] == 0:
        raise ValueError("idx must hold at least one token (a prompt)")
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", 0)
    use_cache = check_bool(use_cache, "use_cache")
    block = model.config.block_size
    was_training = model.training
    model.eval()
    try:
        cache = None
        for _ in range(max_new_tokens):
            if not use_cache:
                logits = model(idx[:, -block:])[:, -1]  # (B, V)
            elif cache is not None and len(cache) < block:
                logits = model(idx[:, -1:], cache)[:, -1]  # only the newest token is new
            else:  # first step, or the cache is full: read the context afresh
                keep = block if cache is None else max(1, block // 2)
                cache = KVCache(model.config.n_layer)
                logits = model(idx[:, -keep:], cache)[:, -1]
            next_id = sample_next(logits, temperature, top_k, generator)  # (B,)
            idx = torch.cat([idx, next_id[:, None]], dim=1)  # (B, T + 1)
        return idx
    finally:
        model.train(was_training)


@torch.no_grad()
def loss_by_position(model: nn.Module, loader) -> torch.Tensor:
    r"""A language model's mean cross-entropy at each position of its windows.

    Position t (0-based) predicts the token after t + 1 tokens of context:
    $\ell_t = -\frac{1}{N}\sum_n \log p(y_{n,t} \mid x_{n,\le t})$ over the N
    windows of ``loader`` (batches ``(x, y)`` as for :func:`lm_step`), in
    nats, computed in float32 in evaluation mode (the mode is restored).

    Shapes:
        batches x, y: (B, T) -> (T,)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        total, n = None, 0
        for batch in loader:
            x, y = _check_batch(batch, 2, "loss_by_position")
            logits = model(x).float()  # (B, T, V)
            loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")  # (B, T)
            if total is not None and loss.shape[1] != total.shape[0]:
                raise ValueError(f"every window must have the same length; got {loss.shape[1]} after "
                                 f"{total.shape[0]}")
            total = loss.sum(0) if total is None else total + loss.sum(0)
            n += len(x)
        if total is None:
            raise ValueError("loader gave no batches")
        return total / n
    finally:
        model.train(was_training)


# BERT: masked language modelling -------------------------------------------------

def mask_tokens(ids: torch.Tensor, *, mask_id: int, vocab_size: int, p: float = 0.15,
                can_mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking for masked language modelling: the 80/10/10 rule.

    Every position where ``can_mask`` is True (not [CLS] or [SEP]) is
    chosen for prediction with probability ``p``. A chosen position is
    replaced by ``mask_id`` with probability 0.8, by a random token of
    ``0 .. vocab_size - 1`` with probability 0.1, and left as it is with
    probability 0.1. The targets are the original tokens at the chosen
    positions and -100 (ignored by ``F.cross_entropy``) elsewhere.

    Shapes:
        ids: (B, T) -> inputs (B, T), targets (B, T)
    """
    _check_ids(ids, "ids")
    mask_id, vocab_size = check_int(mask_id, "mask_id", 0), check_int(vocab_size, "vocab_size", 1)
    p = check_float(p, "p", 0.0, 1.0)
    if can_mask is None:
        can_mask = torch.ones_like(ids, dtype=torch.bool)
    check_tensor(can_mask, "can_mask")
    if can_mask.dtype != torch.bool or can_mask.shape != ids.shape:
        raise ValueError(f"can_mask must be a boolean tensor of the shape of ids {tuple(ids.shape)}; got "
                         f"{can_mask.dtype}, {tuple(can_mask.shape)}")
    chosen = (torch.rand(ids.shape, generator=generator) < p).to(ids.device) & can_mask  # (B, T)
    r = torch.rand(ids.shape, generator=generator).to(ids.device)  # which of the three fates
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator).to(ids.device)
    inputs = torch.where(chosen & (r < 0.8), torch.full_like(ids, mask_id), ids)  # 80%: [MASK]
    inputs = torch.where(chosen & (r >= 0.8) & (r < 0.9), random_ids, inputs)  # 10%: a random token
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))  # 10%: unchanged, still predicted
    return inputs, targets


def bert_examples(ids: torch.Tensor, n: int, seg_len: int, vocab_size: int, p: float = 0.15, *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """``n`` pretraining examples in BERT's format, from a text of character ids.

    Segment A is ``seg_len`` characters at a random place; segment B is the
    ``seg_len`` characters that follow it (half of the examples, is_next =
    1) or ``seg_len`` characters from another random place (is_next = 0).
    The input is ``[CLS] A [SEP] B [SEP]`` with segment ids 0 for
    ``[CLS] A [SEP]`` and 1 for ``B [SEP]``, then masked by
    :func:`mask_tokens` ([CLS] and [SEP] are never chosen). The special
    ids follow the ``vocab_size`` characters: [CLS] = V, [SEP] = V + 1,
    [MASK] = V + 2.

    Shapes:
        ids: (L,) -> inputs (n, 2 seg_len + 3), segments (n, 2 seg_len + 3),
        targets (n, 2 seg_len + 3), is_next (n,)
    """
    _check_ids(ids, "ids", dims=1)
    n, seg_len = check_int(n, "n", 1), check_int(seg_len, "seg_len", 1)
    vocab_size = check_int(vocab_size, "vocab_size", 1)
    if len(ids) < 2 * seg_len + 1:
        raise ValueError(f"the text ({len(ids)} ids) is too short for two segments of {seg_len}")
    cls_id, sep_id, mask_id = vocab_size, vocab_size + 1, vocab_size + 2
    starts = torch.randint(len(ids) - 2 * seg_len, (n,), generator=generator)  # (n,)
    is_next = torch.randint(2, (n,), generator=generator)  # (n,)
    other = torch.randint(len(ids) - seg_len, (n,), generator=generator)  # a random place
    b_starts = torch.where(is_next.bool(), starts + seg_len, other)
    offsets = torch.arange(seg_len)
    a = ids[starts[:, None] + offsets]  # (n, seg_len)
    b = ids[b_starts[:, None] + offsets]  # (n, seg_len)
    cls = torch.full((n, 1), cls_id, dtype=torch.long)
    sep = torch.full((n, 1), sep_id, dtype=torch.long)
    tokens = torch.cat([cls, a, sep, b, sep], dim=1)  # (n, 2 seg_len + 3)
    segments = torch.cat([torch.zeros(n, seg_len + 2, dtype=torch.long),
                          torch.ones(n, seg_len + 1, dtype=torch.long)], dim=1)
    inputs, targets = mask_tokens(tokens, mask_id=mask_id, vocab_size=vocab_size, p=p,
                                  can_mask=tokens < vocab_size, generator=generator)
    return inputs, segments, targets, is_next


class BertBatches:
    """Endless batches of :func:`bert_examples` drawn with torch's global
    generator (fresh masks every time: *dynamic* masking), for
    ``dlbook.fit(..., max_steps=N)``.

    Shapes:
        batches of (inputs, segments, targets) (B, 2 seg_len + 3) and is_next (B,)
    """

    def __init__(self, ids: torch.Tensor, seg_len: int, batch_size: int, vocab_size: int, p: float = 0.15):
        self.ids = _check_ids(ids, "ids", dims=1)
        self.seg_len, self.batch_size = check_int(seg_len, "seg_len", 1), check_int(batch_size, "batch_size", 1)
        self.vocab_size, self.p = check_int(vocab_size, "vocab_size", 1), check_float(p, "p", 0.0, 1.0)
        if len(ids) < 2 * seg_len + 1:
            raise ValueError(f"the text ({len(ids)} ids) is too short for two segments of {seg_len}")

    def __iter__(self):
        while True:
            yield bert_examples(self.ids, self.batch_size, self.seg_len, self.vocab_size, self.p)

    def fingerprint(self) -> str:
        from .fingerprint import describe as fp

        return (f"BertBatches(ids={fp(self.ids)}, seg_len={self.seg_len}, batch_size={self.batch_size}, "
                f"vocab_size={self.vocab_size}, p={self.p})")

    def __repr__(self) -> str:
        return f"BertBatches({len(self.ids)} ids, seg_len={self.seg_len}, batch_size={self.batch_size})"


class MiniBERT(nn.Module):
    """A small BERT: a Transformer encoder pretrained by masked language
    modelling and next-sentence prediction.

    The input embedding is the sum of a token embedding (the ``vocab_size``
    characters and [CLS], [SEP], [MASK]), a segment embedding (A or B) and
    a learned position embedding, followed by LayerNorm and dropout, as in
    BERT. Then ``num_layers`` post-norm :class:`EncoderLayer` s with GELU.
    The masked-LM head (dense, GELU, LayerNorm, then a linear layer to the
    characters) predicts the character at every position; the
    next-sentence head reads the output at [CLS] through BERT's pooler
    (dense and tanh).

    Shapes:
        inputs, segments: (B, T) -> mlm logits (B, T, vocab_size), nsp logits (B, 2)
    """

    def __init__(self, vocab_size: int, *, d_model: int = 128, num_heads: int = 4, num_layers: int = 4,
                 d_ff: int | None = None, max_len: int = 128, dropout: float = 0.1):
        super().__init__()
        self.vocab_size = check_int(vocab_size, "vocab_size", 1)
        self.cls_id, self.sep_id, self.mask_id = vocab_size, vocab_size + 1, vocab_size + 2
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.tok_embed = nn.Embedding(vocab_size + 3, d_model)
        self.seg_embed = nn.Embedding(2, d_model)
        self.pos_embed = nn.Embedding(check_int(max_len, "max_len", 1), d_model)
        self.embed_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout, "gelu", norm_first=False, use_torch_sdpa=True)
            for _ in range(check_int(num_layers, "num_layers", 1)))
        self.mlm_head = nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.LayerNorm(d_model),
                                      nn.Linear(d_model, vocab_size))
        self.pooler = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh())
        self.nsp_head = nn.Linear(d_model, 2)

    def encode(self, inputs: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """The encoder's output at every position. Shapes: (B, T), (B, T) -> (B, T, d_model)."""
        _check_ids(inputs, "inputs")
        _check_ids(segments, "segments")
        if segments.shape != inputs.shape:
            raise ValueError(f"segments must have the shape of inputs {tuple(inputs.shape)}; got "
                             f"{tuple(segments.shape)}")
        T = inputs.shape[1]
        if T > self.pos_embed.num_embeddings:
            raise ValueError(f"inputs are longer ({T}) than max_len={self.pos_embed.num_embeddings}")
        if inputs.min() < 0 or inputs.max() >= self.tok_embed.num_embeddings:
            raise ValueError(f"inputs hold ids outside 0..{self.tok_embed.num_embeddings - 1}")
        if segments.min() < 0 or segments.max() > 1:
            raise ValueError("segments must hold 0 (segment A) or 1 (segment B)")
        positions = torch.arange(T, device=inputs.device)
        x = self.tok_embed(inputs) + self.seg_embed(segments) + self.pos_embed(positions)  # (B, T, d_model)
        x = self.dropout(self.embed_norm(x))
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, inputs: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(inputs, segments)  # (B, T, d_model)
        mlm_logits = self.mlm_head(h)  # (B, T, vocab_size)
        nsp_logits = self.nsp_head(self.pooler(h[:, 0]))  # (B, 2): from [CLS]
        return mlm_logits, nsp_logits


class NeighbourCounts:
    r"""Count-table baselines for masked characters: guess a token from its neighbours.

    Fitted on a training text of ids ``0 .. vocab_size - 1``, it counts how
    often each token follows each token (the *left* table, a bigram) and
    how often each token sits between each pair of tokens (the *both*
    table). :meth:`guess` predicts, at every position of a batch of
    sequences, the token the table makes most probable given the true
    neighbours: ``context="left"``, $\arg\max_c n(x_{t-1}, c)$;
    ``"both"``, $\arg\max_c n(x_{t-1}, c, x_{t+1})$; ``"none"``, the commonest
    token. Where a neighbour is missing or not in the vocabulary (a
    sequence's edge, [CLS], [SEP], [MASK]), or the pair was never seen,
    ``"both"`` backs off to the left table, then to the right neighbour
    alone ($\arg\max_c n(c, x_{t+1})$), then to the commonest token.

    Shapes:
        ids: (B, T) -> guesses (B, T)
    """

    CONTEXTS = ("none", "left", "both")

    def __init__(self, train_ids: torch.Tensor, vocab_size: int):
        train_ids = _check_ids(train_ids, "train_ids", dims=1)
        V = self.vocab_size = check_int(vocab_size, "vocab_size", 1)
        if len(train_ids) < 3:
            raise ValueError(f"train_ids must hold at least 3 ids; got {len(train_ids)}")
        if train_ids.min() < 0 or train_ids.max() >= V:
            raise ValueError(f"train_ids hold ids outside 0..{V - 1}")
        t = train_ids.long().cpu()
        self.unigram = torch.bincount(t, minlength=V)  # (V,)
        self.left = torch.bincount(t[:-1] * V + t[1:], minlength=V * V).view(V, V)  # [prev, cur]
        both = t[:-2] * V * V + t[2:] * V + t[1:-1]  # (prev, next, cur)
        self.both = torch.bincount(both, minlength=V ** 3).view(V, V, V)  # [prev, next, cur]

    def guess(self, ids: torch.Tensor, context: str = "both") -> torch.Tensor:
        _check_ids(ids, "ids")
        if context not in self.CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(self.CONTEXTS)}; got {describe(context)}")
        ids = ids.long().cpu()
        V = self.vocab_size
        guess = torch.full_like(ids, int(self.unigram.argmax()))  # (B, T): the commonest token
        if context == "none":
            return guess
        prev = torch.full_like(ids, -1)
        prev[:, 1:] = ids[:, :-1]
        nxt = torch.full_like(ids, -1)
        nxt[:, :-1] = ids[:, 1:]
        has_prev = (prev >= 0) & (prev < V)
        p = prev.clamp(0, V - 1)
        row = self.left[p]  # (B, T, V)
        use = has_prev & (row.sum(-1) > 0)
        guess = torch.where(use, row.argmax(-1), guess)
        if context == "both":
            has_next = (nxt >= 0) & (nxt < V)
            n = nxt.clamp(0, V - 1)
            # no usable left neighbour: the token that most often precedes the right one
            column = self.left[:, n].movedim(0, -1)  # (B, T, V): counts of (c, next) over c
            use = ~use & has_next & (column.sum(-1) > 0)
            guess = torch.where(use, column.argmax(-1), guess)
            row = self.both[p, n]  # (B, T, V)
            use = has_prev & has_next & (row.sum(-1) > 0)
            guess = torch.where(use, row.argmax(-1), guess)
        return guess


def swap_examples(ids: torch.Tensor, n: int, seg_len: int, vocab_size: int, *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """A small classification task for fine-tuning: was a typo made in this text?

    Each example is ``seg_len`` characters from a random place of ``ids``
    in BERT's single-segment format ``[CLS] text [SEP]`` ([CLS] = V,
    [SEP] = V + 1, segment ids all 0). In half of the examples (label 1)
    two adjacent, different characters of the text are swapped, as a typist
    does ("teh"); the other half (label 0) is the text as it is. Telling
    them apart takes knowing how words are spelled.

    Shapes:
        ids: (L,) -> inputs (n, seg_len + 2), segments (n, seg_len + 2), labels (n,)
    """
    _check_ids(ids, "ids", dims=1)
    n, seg_len = check_int(n, "n", 1), check_int(seg_len, "seg_len", 2)
    vocab_size = check_int(vocab_size, "vocab_size", 1)
    if len(ids) < seg_len + 1:
        raise ValueError(f"the text ({len(ids)} ids) is too short for segments of {seg_len}")
    starts = torch.randint(len(ids) - seg_len, (n,), generator=generator)  # (n,)
    text = ids.long().cpu()[starts[:, None] + torch.arange(seg_len)]  # (n, seg_len)
    labels = torch.randint(2, (n,), generator=generator)  # (n,)
    # a random place i with text[i] != text[i + 1]; rows without one stay unswapped (label 0)
    differs = (text[:, :-1] != text[:, 1:]).float()  # (n, seg_len - 1)
    weights = differs + 1e-12 * (differs.sum(1, keepdim=True) == 0)
    i = torch.multinomial(weights, 1, generator=generator)[:, 0]  # (n,)
    labels = labels * (differs.sum(1) > 0).long()
    rows = torch.arange(n)
    a, b = text[rows, i], text[rows, i + 1]
    swapped = text.clone()
    swapped[rows, i], swapped[rows, i + 1] = b, a
    text = torch.where(labels[:, None].bool(), swapped, text)
    cls = torch.full((n, 1), vocab_size, dtype=torch.long)
    sep = torch.full((n, 1), vocab_size + 1, dtype=torch.long)
    inputs = torch.cat([cls, text, sep], dim=1)  # (n, seg_len + 2)
    return inputs, torch.zeros_like(inputs), labels


def cls_step(model: MiniBERT, batch) -> dict:
    """A fine-tuning step of a :class:`MiniBERT` on a two-class task: the
    class is read from the [CLS] output through the pooler and the
    two-way head (the one next-sentence prediction trains); ``loss`` is
    the cross-entropy, ``acc`` the accuracy.

    Shapes:
        batch: inputs, segments (B, T); labels (B,)
    """
    inputs, segments, labels = _check_batch(batch, 3, "cls_step")
    _, logits = model(inputs, segments)  # (B, 2)
    return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(-1) == labels).float().mean()}


# the vision transformer ----------------------------------------------------------

def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping P x P patches, each flattened, row by row.

    Each patch is flattened channel first, then rows, then columns, the
    order of an ``nn.Conv2d`` kernel of size P and stride P: a linear layer
    on the patches is that convolution.

    Shapes:
        x: (B, C, H, W) -> (B, (H / P) (W / P), C P P)
    """
    check_tensor(x, "x", floating=True)
    P = check_int(patch_size, "patch_size", 1)
    if x.dim() != 4 or x.shape[2] % P or x.shape[3] % P:
        raise ValueError(f"x must have shape (B, C, H, W) with H and W multiples of patch_size={P}; got "
                         f"{tuple(x.shape)}")
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // P, P, W // P, P)  # (B, C, H/P, P, W/P, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, H/P, W/P, C, P, P)
    return x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, C P P)


class ViT(nn.Module):
    """A vision transformer: an image as a sequence of patches.

    The image is cut into P x P patches (:func:`patchify`), each projected
    to d_model by one linear layer (the patch embedding); a learned [CLS]
    vector is put in front, a learned position embedding (one vector per
    position, [CLS] included) is added, ``num_layers`` pre-norm
    :class:`EncoderLayer` s with GELU follow, and a linear layer reads the
    class from the final LayerNorm of the [CLS] output (``pool="cls"``) or
    of the mean over the patches (``pool="mean"``).

    Shapes:
        x: (B, C, H, W) -> (B, K)
    """

    def __init__(self, image_size: int = 28, patch_size: int = 7, in_channels: int = 1, num_classes: int = 10,
                 *, d_model: int = 64, num_heads: int = 4, num_layers: int = 4, d_ff: int | None = None,
                 dropout: float = 0.0, pool: str = "cls"):
        super().__init__()
        self.image_size, self.patch_size = check_int(image_size, "image_size", 1), check_int(patch_size, "patch_size", 1)
        if image_size % patch_size:
            raise ValueError(f"patch_size ({patch_size}) must divide image_size ({image_size})")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean'; got {describe(pool)}")
        self.pool = pool
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.num_patches = (image_size // patch_size) ** 2
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.patch_embed = nn.Linear(in_channels * patch_size**2, d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, self.num_patches + 1, d_model))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout, "gelu", norm_first=True, use_torch_sdpa=True)
            for _ in range(check_int(num_layers, "num_layers", 1)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, check_int(num_classes, "num_classes", 1))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The input sequence of the encoder: [CLS] and the patch embeddings, plus positions.

        Shapes: (B, C, H, W) -> (B, N + 1, d_model)
        """
        check_tensor(x, "x", floating=True)
        size = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != size:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, size))}); got {tuple(x.shape)}")
        patches = self.patch_embed(patchify(x, self.patch_size))  # (B, N, d_model)
        cls = self.cls_token.expand(len(x), -1, -1)  # (B, 1, d_model)
        return self.dropout(torch.cat([cls, patches], dim=1) + self.pos_embed)  # (B, N + 1, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tokens(x)  # (B, N + 1, d_model)
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h)
        pooled = h[:, 0] if self.pool == "cls" else h[:, 1:].mean(dim=1)  # (B, d_model)
        return self.head(pooled)  # (B, K)


# steps for dlbook.fit ----------------------------------------------------------------

def _check_batch(batch, n: int, who: str):
    if not isinstance(batch, (tuple, list)) or len(batch) != n:
        got = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise ValueError(f"{who} expects batches of {n} tensors; got {got}")
    return batch


def seq2seq_step(model: Seq2SeqTransformer, batch) -> dict:
    r"""A training step of a sequence-to-sequence model with teacher forcing.

    The decoder reads the true target shifted right, ``tgt[:, :-1]`` (BOS,
    $y_1, \dots$), and predicts ``tgt[:, 1:]`` ($y_1, \dots$, EOS) at every
    position at once; the loss is the mean cross-entropy over the
    non-padding targets, ``acc`` the fraction of them predicted right.

    Shapes:
        batch: src (B, T_src), tgt (B, T_tgt)
    """
    src, tgt = _check_batch(batch, 2, "seq2seq_step")
    logits = model(src, tgt[:, :-1])  # (B, T_tgt - 1, V)
    y = tgt[:, 1:]  # (B, T_tgt - 1)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=model.pad_id)
    real = y != model.pad_id
    acc = ((logits.argmax(-1) == y) & real).sum() / real.sum().clamp(min=1)
    return {"loss": loss, "acc": acc}


def lm_step(model: nn.Module, batch) -> dict:
    r"""A language-model step: the mean cross-entropy of the next token,
    $-\frac{1}{BT}\sum_{b,t} \log p(x_{b,t+1} \mid x_{b,\le t})$, in nats.

    Shapes:
        batch: x (B, T), y (B, T) with y[:, t] = x[:, t + 1]
    """
    x, y = _check_batch(batch, 2, "lm_step")
    logits = model(x)  # (B, T, V)
    return {"loss": F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))}


def mlm_step(model: MiniBERT, batch) -> dict:
    """A BERT pretraining step: masked-LM loss plus next-sentence loss.

    Returns ``loss`` (their sum), ``mlm_loss``, ``mlm_acc`` (accuracy at
    the positions chosen for prediction), ``mask_acc`` (accuracy at the
    chosen positions shown as [MASK], where the input does not hold the
    answer) and ``nsp_acc``.

    Shapes:
        batch: inputs, segments, targets (B, T); is_next (B,)
    """
    inputs, segments, targets, is_next = _check_batch(batch, 4, "mlm_step")
    mlm_logits, nsp_logits = model(inputs, segments)  # (B, T, V), (B, 2)
    mlm_loss = F.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
    nsp_loss = F.cross_entropy(nsp_logits, is_next)
    chosen = targets != IGNORE_INDEX
    mlm_acc = ((mlm_logits.argmax(-1) == targets) & chosen).sum() / chosen.sum().clamp(min=1)
    shown = chosen & (inputs == model.mask_id)  # (B, T): shown as [MASK]
    mask_acc = ((mlm_logits.argmax(-1) == targets) & shown).sum() / shown.sum().clamp(min=1)
    nsp_acc = (nsp_logits.argmax(-1) == is_next).float().mean()
    return {"loss": mlm_loss + nsp_loss, "mlm_loss": mlm_loss, "mlm_acc": mlm_acc, "mask_acc": mask_acc,
            "nsp_acc": nsp_acc}
