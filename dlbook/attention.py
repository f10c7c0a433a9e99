r"""Attention: scaled dot-product attention, multi-head attention, masks,
positional encoding and local-window attention.

Shapes use the book's legend: B batch, T sequence length (Tq queries, Tk
keys and values when they differ), d_model the model width, nh heads, hs
the head size ``d_model / nh``, K classes.

Two mask conventions, each named after what ``True`` means:

* an **attention mask** (``attn_mask``, :func:`causal_mask`,
  :func:`local_mask`) is boolean with ``True`` = *this query may attend to
  this key*, as in ``F.scaled_dot_product_attention``;
* a **padding mask** (``key_padding_mask``, :func:`padding_mask`) is
  boolean of shape (B, Tk) with ``True`` = *this key is padding* (ignored),
  as in ``nn.MultiheadAttention``.

A query row whose keys are all masked gets weights 0 and output 0 (as
``F.scaled_dot_product_attention`` does; ``nn.MultiheadAttention`` gives NaN).

The main pieces::

    y, weights = scaled_dot_product_attention(q, k, v, mask)   # (B, nh, Tq, hs)
    mha = MultiHeadAttention(d_model=64, num_heads=4, dropout=0.1)
    y = mha(x)                                                  # self-attention
    y = mha(x, memory, key_padding_mask=pad)                    # cross-attention
    y, weights = mha(x, is_causal=True, need_weights=True)      # (B, nh, T, T)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_bool, check_float, check_int, check_tensor, describe


# scaled dot-product attention ------------------------------------------------

def _check_mask(mask, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """``mask`` when it is a boolean or floating tensor that broadcasts to ``shape``."""
    check_tensor(mask, name)
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"{name} must be boolean (True = may attend) or floating (added to the "
                        f"scores); got dtype {mask.dtype}")
    try:
        broadcast = torch.broadcast_shapes(tuple(mask.shape), shape)
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(shape):
        raise ValueError(f"{name} of shape {tuple(mask.shape)} does not broadcast to the scores' "
                         f"shape {tuple(shape)} (..., Tq, Tk)")
    return mask


def _check_qkv(q, k, v) -> tuple[int, ...]:
    """Check q, k, v; return the shape of the scores (..., Tq, Tk)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(t, name, floating=True)
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., T, hs); got shape {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head size (last dimension); got q "
                         f"{tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"k and v must have one row per key, (..., Tk, hs); got k {tuple(k.shape)} "
                         f"and v {tuple(v.shape)}")
    try:
        lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch, head) dimensions of q {tuple(q.shape)} and k "
                         f"{tuple(k.shape)} do not broadcast") from None
    return (*lead, q.shape[-2], k.shape[-2])


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, *, dropout_p: float = 0.0,
                                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Scaled dot-product attention, written out.

    $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\Big(\frac{Q K^\top}{\sqrt{d_k}}\Big) V,$$

    that is, for query $i$: scores $s_{ij} = q_i \cdot k_j / \sqrt{d_k}$,
    weights $\alpha_{ij} = e^{s_{ij}} / \sum_{j'} e^{s_{ij'}}$ over the keys
    $j$ the mask allows, output $b_i = \sum_j \alpha_{ij} v_j$. $d_k$ is the
    head size hs (``scale`` replaces $1/\sqrt{d_k}$ when given).

    Args:
        q, k, v: queries, keys and values.
        mask: boolean, ``True`` = may attend, or floating, added to the
            scores; broadcastable to (..., Tq, Tk). A query whose keys are
            all masked (False, or -inf) gets weights 0 and output 0.
        dropout_p: dropout on the weights (pass 0 when evaluating).
        scale: the factor of the scores; default ``1 / sqrt(hs)``.

    Returns:
        ``(output, weights)``; the weights are those before dropout.

    Shapes:
        q: (..., Tq, hs), k: (..., Tk, hs), v: (..., Tk, hv)
        -> output (..., Tq, hv), weights (..., Tq, Tk)
    """
    shape = _check_qkv(q, k, v)
    dropout_p = check_float(dropout_p, "dropout_p", 0.0, 1.0, open_max=True)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else check_float(scale, "scale")
    # s_ij = q_i . k_j / sqrt(d_k)
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., Tq, Tk)
    if mask is not None:
        _check_mask(mask, "mask", shape)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    no_key = None
    if mask is not None:  # a query with no key to attend to: weights 0, not NaN
        no_key = torch.isneginf(scores).all(-1, keepdim=True)  # (..., Tq, 1)
        scores = scores.masked_fill(no_key, 0.0)  # a finite softmax (and gradient 0) there
    # alpha_ij = exp(s_ij) / sum_j' exp(s_ij')
    weights = torch.softmax(scores, dim=-1)  # (..., Tq, Tk)
    if no_key is not None:
        weights = weights.masked_fill(no_key, 0.0)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    # b_i = sum_j alpha_ij v_j
    return dropped @ v, weights  # (..., Tq, hv), (..., Tq, Tk)


# masks ------------------------------------------------------------------------

def causal_mask(Tq: int, Tk: int | None = None, *, device: torch.device | str | None = None) -> torch.Tensor:
    r"""The causal attention mask: query $i$ may attend to keys $j \le i$.

    With ``Tk > Tq`` the queries are the *last* Tq positions of the Tk
    (as when new tokens attend to cached keys): query $i$ sits at position
    $i + T_k - T_q$. ``True`` = may attend. (``F.scaled_dot_product_attention``
    with ``is_causal=True`` aligns a non-square mask at the top left instead.)

    Shapes:
        -> (Tq, Tk)
    """
    Tq = check_int(Tq, "Tq", 1)
    Tk = Tq if Tk is None else check_int(Tk, "Tk", 1)
    if Tk < Tq:
        raise ValueError(f"a causal mask needs at least as many keys as queries; got Tq={Tq}, Tk={Tk}")
    return torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - Tq)


def padding_mask(lengths, T: int | None = None) -> torch.Tensor:
    """The padding mask of a batch of sequences padded to length T: ``True`` = padding.

    Sequence b has ``lengths[b]`` real tokens, then padding. As
    ``key_padding_mask`` of :class:`MultiHeadAttention` (and of
    ``nn.MultiheadAttention``) it keeps every query from attending to padding.

    Shapes:
        lengths: (B,) -> (B, T)  (T defaults to the longest length)
    """
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"lengths must be a 1-D list or tensor of integers; got {describe(lengths)}") from err
    if lengths.dim() != 1 or lengths.numel() == 0 or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be a non-empty 1-D tensor of integers; got dtype {lengths.dtype}, "
                         f"shape {tuple(lengths.shape)}")
    if (lengths < 0).any():
        raise ValueError(f"lengths must not be negative; got {lengths.tolist()}")
    longest = int(lengths.max())
    T = longest if T is None else check_int(T, "T", 1)
    if longest > T:
        raise ValueError(f"a length ({longest}) exceeds T={T}")
    positions = torch.arange(T, device=lengths.device)  # (T,)
    return positions[None, :] >= lengths[:, None]  # (B, T)


def local_mask(T: int, window: int, *, causal: bool = False,
               device: torch.device | str | None = None) -> torch.Tensor:
    r"""The attention mask of truncated (local-window) attention.

    Query $i$ may attend to keys $j$ with $|i - j| \le$ ``window``
    (with ``causal``: $i - \text{window} \le j \le i$). ``True`` = may attend.

    Shapes:
        -> (T, T)
    """
    T, window = check_int(T, "T", 1), check_int(window, "window", 0)
    causal = check_bool(causal, "causal")
    i = torch.arange(T, device=device)[:, None]  # (T, 1) queries
    j = torch.arange(T, device=device)[None, :]  # (1, T) keys
    allowed = (j - i).abs() <= window
    return allowed & (j <= i) if causal else allowed


def merge_masks(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, *, B: int, Tq: int,
                Tk: int, is_causal: bool = False, device: torch.device | str | None = None) -> torch.Tensor | None:
    """One boolean "may attend" mask from an attention mask, a padding mask and causality.

    ``attn_mask``: boolean (True = may attend) of shape (Tq, Tk), (B, Tq, Tk)
    or (B or 1, nh or 1, Tq, Tk). ``key_padding_mask``: boolean (B, Tk),
    True = padding. ``is_causal`` adds :func:`causal_mask`. A key is
    allowed when every mask allows it. ``None`` when there is no mask.

    Shapes:
        -> (B or 1, nh or 1, Tq, Tk), or None
    """
    mask = None
    if attn_mask is not None:
        check_tensor(attn_mask, "attn_mask")
        if attn_mask.dtype != torch.bool:
            raise TypeError(f"attn_mask must be boolean (True = may attend); got dtype {attn_mask.dtype}")
        if attn_mask.dim() == 2:
            attn_mask = attn_mask[None, None]  # (1, 1, Tq, Tk)
        elif attn_mask.dim() == 3:
            attn_mask = attn_mask[:, None]  # (B, 1, Tq, Tk)
        if attn_mask.dim() != 4 or tuple(attn_mask.shape[-2:]) != (Tq, Tk) or attn_mask.shape[0] not in (1, B):
            raise ValueError(f"attn_mask must have shape (Tq, Tk), (B, Tq, Tk) or (B, nh, Tq, Tk) with "
                             f"B={B}, Tq={Tq}, Tk={Tk}; got {tuple(attn_mask.shape)}")
        mask = attn_mask
    if key_padding_mask is not None:
        check_tensor(key_padding_mask, "key_padding_mask")
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be boolean (True = padding); got dtype "
                            f"{key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (B, Tk):
            raise ValueError(f"key_padding_mask must have shape (B, Tk) = ({B}, {Tk}); got "
                             f"{tuple(key_padding_mask.shape)}")
        keys = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Tk)
        mask = keys if mask is None else mask & keys
    if check_bool(is_causal, "is_causal"):
        causal = causal_mask(Tq, Tk, device=device)[None, None]  # (1, 1, Tq, Tk)
        mask = causal if mask is None else mask & causal
    return mask


# multi-head attention ---------------------------------------------------------

class MultiHeadAttention(nn.Module):
    r"""Multi-head attention, for self- and cross-attention.

    $$\operatorname{MultiHead}(X_q, X_k, X_v) = [\text{head}_1; \dots; \text{head}_{nh}]\, W^O, \qquad
    \text{head}_h = \operatorname{Attention}(X_q W^Q_h, X_k W^K_h, X_v W^V_h).$$

    Every head has its own projections $W^Q_h, W^K_h, W^V_h$ of shape
    (d_model, hs); they are stored side by side as one ``nn.Linear`` each
    (``query_proj``, ``key_proj``, ``value_proj``: d_model -> nh * hs =
    d_model), whose output is split into heads. ``out_proj`` is $W^O$.

    Args:
        d_model: the width of the inputs and the output.
        num_heads: nh; must divide d_model (hs = d_model / nh).
        dropout: dropout on the attention weights, in training mode only.
        bias: whether the four projections have biases.
        use_torch_sdpa: compute the attention with PyTorch's fused
            ``F.scaled_dot_product_attention`` when no weights are asked
            for (faster, the same numbers up to rounding); otherwise with
            :func:`scaled_dot_product_attention`.

    ``forward(query, key=None, value=None, *, attn_mask=None,
    key_padding_mask=None, is_causal=False, need_weights=False)``:

    * self-attention: ``mha(x)`` (``key`` and ``value`` default to ``query``);
    * cross-attention: ``mha(x, memory)``: queries from x (Tq of them),
      keys and values from memory (Tk); ``value`` defaults to ``key``;
    * ``attn_mask``: boolean, True = may attend, of shape (Tq, Tk),
      (B, Tq, Tk) or (B, nh, Tq, Tk);
    * ``key_padding_mask``: boolean (B, Tk), True = padding (ignored);
    * ``is_causal``: query i attends to keys j <= i (:func:`causal_mask`);
    * ``need_weights``: also return every head's weights (not averaged);
    * ``cache``, ``layer``: self-attention only; the new keys and values
      are appended to layer ``layer`` of the cache (an object with
      ``append(layer, k, v) -> (k_all, v_all)``, such as
      :class:`dlbook.transformer.KVCache`) and the queries attend to all
      of them; with ``is_causal`` the queries sit after the cached
      positions.

    :meth:`load_torch_weights` copies the weights of an ``nn.MultiheadAttention``.

    Shapes:
        query: (B, Tq, d_model), key: (B, Tk, d_model), value: (B, Tk, d_model)
        -> (B, Tq, d_model), and weights (B, nh, Tq, Tk) with need_weights
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 use_torch_sdpa: bool = False):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", 1)
        self.num_heads = check_int(num_heads, "num_heads", 1)
        if d_model % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide d_model ({d_model})")
        self.head_size = d_model // num_heads
        self.dropout = check_float(dropout, "dropout", 0.0, 1.0, open_max=True)
        bias = check_bool(bias, "bias")
        self.use_torch_sdpa = check_bool(use_torch_sdpa, "use_torch_sdpa")
        self.query_proj = nn.Linear(d_model, d_model, bias=bias)  # W^Q of all heads, side by side
        self.key_proj = nn.Linear(d_model, d_model, bias=bias)
        self.value_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, head_size={self.head_size}, " \
               f"dropout={self.dropout}"

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d_model) -> (B, nh, T, hs): head h takes features h*hs .. (h+1)*hs - 1."""
        check_tensor(x, "x")
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, d_model={self.d_model}); got {tuple(x.shape)}")
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_size).transpose(1, 2)  # (B, nh, T, hs)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, hs) -> (B, T, d_model): the heads' outputs side by side."""
        check_tensor(x, "x")
        if x.dim() != 4 or tuple(x.shape[1:2]) + tuple(x.shape[3:]) != (self.num_heads, self.head_size):
            raise ValueError(f"x must have shape (B, nh={self.num_heads}, T, hs={self.head_size}); got "
                             f"{tuple(x.shape)}")
        B, _, T, _ = x.shape
        return x.transpose(1, 2).reshape(B, T, self.d_model)  # (B, T, d_model)

    def _check_input(self, x, name: str, B: int | None = None) -> torch.Tensor:
        check_tensor(x, name, floating=True)
        if x.dim() != 3 or x.shape[-1] != self.d_model or (B is not None and x.shape[0] != B):
            batch = "B" if B is None else str(B)
            raise ValueError(f"{name} must have shape ({batch}, T, d_model={self.d_model}); got "
                             f"{tuple(x.shape)}")
        return x

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                *, attn_mask: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None,
                is_causal: bool = False, need_weights: bool = False, cache=None, layer: int = 0):
        self._check_input(query, "query")
        B, Tq, _ = query.shape
        key = query if key is None else self._check_input(key, "key", B)
        value = key if value is None else self._check_input(value, "value", B)
        if value.shape[1] != key.shape[1]:
            raise ValueError(f"key and value must have the same length Tk; got {key.shape[1]} and {value.shape[1]}")
        need_weights = check_bool(need_weights, "need_weights")
        q = self.split_heads(self.query_proj(query))  # (B, nh, Tq, hs)
        k = self.split_heads(self.key_proj(key))  # (B, nh, Tk, hs)
        v = self.split_heads(self.value_proj(value))  # (B, nh, Tk, hs)
        if cache is not None:  # self-attention over the cached positions and the new ones
            if key is not query:
                raise ValueError("a cache holds self-attention's keys and values: call with the query only")
            k, v = cache.append(layer, k, v)  # (B, nh, T_past + Tq, hs)
        Tk = k.shape[2]
        if (key_padding_mask is not None and cache is not None
                and tuple(key_padding_mask.shape) != (B, Tk)):
            raise ValueError(f"with a cache, key_padding_mask covers the cached positions too: shape "
                             f"(B, Tk) = ({B}, {Tk}); got {tuple(key_padding_mask.shape)}")
        p = self.dropout if self.training else 0.0
        if (self.use_torch_sdpa and not need_weights and attn_mask is None and key_padding_mask is None
                and (not is_causal or Tq == Tk or Tq == 1)):
            # PyTorch's fused kernel with its own causal flag; one new query may attend to every key
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=is_causal and Tq == Tk)
            y = self.out_proj(self.merge_heads(y))  # (B, Tq, d_model)
            return y
        mask = merge_masks(attn_mask, key_padding_mask, B=B, Tq=Tq, Tk=Tk, is_causal=is_causal,
                           device=query.device)  # (B or 1, nh or 1, Tq, Tk); causal: aligned at the end
        if self.use_torch_sdpa and not need_weights:
            y, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        else:
            y, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)  # (B, nh, Tq, hs)
        y = self.out_proj(self.merge_heads(y))  # (B, Tq, d_model)
        return (y, weights) if need_weights else y

    @torch.no_grad()
    def load_torch_weights(self, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the weights of an ``nn.MultiheadAttention`` of the same size; return self.

        Its ``in_proj_weight`` (3 * d_model, d_model) holds $W^Q$, $W^K$,
        $W^V$ one under the other; ``out_proj`` is $W^O$.
        """
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be an nn.MultiheadAttention; got {type(mha).__name__}")
        if (mha.embed_dim, mha.num_heads) != (self.d_model, self.num_heads):
            raise ValueError(f"sizes differ: nn.MultiheadAttention has embed_dim={mha.embed_dim}, "
                             f"num_heads={mha.num_heads}; this one d_model={self.d_model}, "
                             f"num_heads={self.num_heads}")
        if not mha._qkv_same_embed_dim or mha.bias_k is not None:
            raise ValueError("only nn.MultiheadAttention with kdim = vdim = embed_dim and no add_bias_kv")
        if (mha.in_proj_bias is None) != (self.query_proj.bias is None):
            raise ValueError("one has biases and the other not: build both with the same bias=")
        for proj, w in zip((self.query_proj, self.key_proj, self.value_proj), mha.in_proj_weight.chunk(3)):
            proj.weight.copy_(w)
        if mha.in_proj_bias is not None:
            for proj, b in zip((self.query_proj, self.key_proj, self.value_proj), mha.in_proj_bias.chunk(3)):
                proj.bias.copy_(b)
            self.out_proj.bias.copy_(mha.out_proj.bias)
        self.out_proj.weight.copy_(mha.out_proj.weight)
        return self


# positional encoding ----------------------------------------------------------

def sinusoidal_encoding(T: int, d_model: int, base: float = 10000.0, *,
                        device: torch.device | str | None = None) -> torch.Tensor:
    r"""The sinusoidal position encoding of "Attention is all you need".

    $$PE[p, 2i] = \sin(p\, \omega_i), \quad PE[p, 2i + 1] = \cos(p\, \omega_i), \quad
    \omega_i = \text{base}^{-2i / d_\text{model}},$$

    for positions $p = 0, \dots, T - 1$ and $i = 0, \dots, d_\text{model}/2 - 1$.

    Shapes:
        -> (T, d_model)
    """
    T, d_model = check_int(T, "T", 1), check_int(d_model, "d_model", 2)
    if d_model % 2:
        raise ValueError(f"d_model must be even (sine and cosine pairs); got {d_model}")
    base = check_float(base, "base", 1.0)
    p = torch.arange(T, dtype=torch.float32, device=device)[:, None]  # (T, 1)
    # omega_i = base^(-2i / d_model)
    omega = base ** (-torch.arange(0, d_model, 2, dtype=torch.float32, device=device) / d_model)  # (d/2,)
    pe = torch.empty(T, d_model, device=device)
    pe[:, 0::2] = torch.sin(p * omega)  # (T, d/2)
    pe[:, 1::2] = torch.cos(p * omega)
    return pe


def sinusoidal_shift(k: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    r"""The matrix $M_k$ that moves a sinusoidal encoding $k$ positions on: $PE[p + k] = PE[p]\, M_k$.

    It is block diagonal, one rotation per frequency $\omega_i$:
    $[\sin \omega(p+k), \cos \omega(p+k)] = [\sin \omega p, \cos \omega p]
    \begin{pmatrix} \cos \omega k & -\sin \omega k \\ \sin \omega k & \cos \omega k \end{pmatrix}$.
    It depends on the offset $k$, not on the position $p$.

    Shapes:
        -> (d_model, d_model)
    """
    k = check_int(k, "k")
    d_model = check_int(d_model, "d_model", 2)
    if d_model % 2:
        raise ValueError(f"d_model must be even; got {d_model}")
    base = check_float(base, "base", 1.0)
    omega = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    cos, sin = torch.cos(k * omega), torch.sin(k * omega)
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    idx = torch.arange(0, d_model, 2)
    m[idx, idx], m[idx, idx + 1] = cos, -sin
    m[idx + 1, idx], m[idx + 1, idx + 1] = sin, cos
    return m.float()


class SinusoidalEncoding(nn.Module):
    """Adds the sinusoidal position encoding to a batch of sequences.

    The table is a buffer of ``max_len`` rows (it follows the module to a
    device); it has no parameters.

    Shapes:
        x: (B, T, d_model) -> (B, T, d_model), T <= max_len
    """

    def __init__(self, d_model: int, max_len: int = 1024, base: float = 10000.0):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", 2)
        self.register_buffer("pe", sinusoidal_encoding(check_int(max_len, "max_len", 1), d_model, base),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", floating=True)
        if x.dim() != 3 or x.shape[-1] != self.d_model or x.shape[1] > len(self.pe):
            raise ValueError(f"x must have shape (B, T <= {len(self.pe)}, d_model={self.d_model}); "
                             f"got {tuple(x.shape)}")
        return x + self.pe[: x.shape[1]]  # (B, T, d_model)


class LearnedPositionEmbedding(nn.Module):
    """Adds a learned vector per absolute position, a table
    ``nn.Embedding(max_len, d_model)`` trained with the rest of the network
    (as in BERT and GPT-2); there is no row for a position >= ``max_len``.

    Shapes:
        x: (B, T, d_model) -> (B, T, d_model), T <= max_len
    """

    def __init__(self, d_model: int, max_len: int = 1024):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", 1)
        self.table = nn.Embedding(check_int(max_len, "max_len", 1), d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", floating=True)
        max_len = self.table.num_embeddings
        if x.dim() != 3 or x.shape[-1] != self.d_model or x.shape[1] > max_len:
            raise ValueError(f"x must have shape (B, T <= {max_len}, d_model={self.d_model}); "
                             f"got {tuple(x.shape)}")
        positions = torch.arange(x.shape[1], device=x.device)  # (T,)
        return x + self.table(positions)  # (B, T, d_model)


# local-window attention -------------------------------------------------------

def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, *,
                    causal: bool = False, scale: float | None = None) -> torch.Tensor:
    r"""Truncated (local-window) self-attention, in time and memory linear in T.

    The same numbers as :func:`scaled_dot_product_attention` with the mask
    :func:`local_mask` (query $i$ attends to keys $|i - j| \le w$, or
    $i - w \le j \le i$ with ``causal``), without the (T, T) score matrix:
    the sequence is cut into blocks of $w$ queries, and each block scores
    only the $3w$ keys of its own block and its two neighbours,
    $(T/w) \cdot w \cdot 3w = 3wT$ scores in all.

    Shapes:
        q, k: (..., T, hs), v: (..., T, hv) -> (..., T, hv)
    """
    _check_qkv(q, k, v)
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"local attention is self-attention: q and k must have the same length; "
                         f"got {q.shape[-2]} and {k.shape[-2]}")
    w = check_int(window, "window", 1)
    causal = check_bool(causal, "causal")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else check_float(scale, "scale")
    T = q.shape[-2]
    n_blocks = -(-T // w)
    pad = n_blocks * w - T  # pad T up to a whole number of blocks
    q_blocks = F.pad(q, (0, 0, 0, pad)).unflatten(-2, (n_blocks, w))  # (..., n_blocks, w, hs)
    # every block's context: the block before, itself, the block after (3w keys)
    k_ctx = F.pad(k, (0, 0, w, w + pad)).unfold(-2, 3 * w, w)  # (..., n_blocks, hs, 3w)
    v_ctx = F.pad(v, (0, 0, w, w + pad)).unfold(-2, 3 * w, w)  # (..., n_blocks, hv, 3w)
    scores = (q_blocks @ k_ctx) * scale  # (..., n_blocks, w, 3w)
    # query i = b*w + r reads key j = b*w - w + c; keep |i - j| <= w and 0 <= j < T
    b = torch.arange(n_blocks, device=q.device)[:, None, None]
    i = b * w + torch.arange(w, device=q.device)[:, None]  # (n_blocks, w, 1)
    j = b * w - w + torch.arange(3 * w, device=q.device)  # (n_blocks, 1, 3w)
    allowed = ((i - j).abs() <= w) & (j >= 0) & (j < T)  # (n_blocks, w, 3w)
    if causal:
        allowed = allowed & (j <= i)
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)  # (..., n_blocks, w, 3w)
    y = weights @ v_ctx.transpose(-2, -1)  # (..., n_blocks, w, hv)
    return y.flatten(-3, -2)[..., :T, :]  # (..., T, hv)


# a small model for the chapter's lookup task -----------------------------------

def _check_token_ids(x: torch.Tensor, vocab_size: int, name: str = "x") -> torch.Tensor:
    """``x`` when every token id is in 0 .. vocab_size - 1; a ValueError naming the bad id otherwise."""
    if x.numel() and (x.min() < 0 or x.max() >= vocab_size):
        bad = x.min() if x.min() < 0 else x.max()
        raise ValueError(f"{name} holds token ids 0 .. {vocab_size - 1} (vocab_size={vocab_size}); got "
                         f"{int(bad)}")
    return x


def lookup_task(n: int, T: int = 16, num_values: int = 10, *,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The lookup task: T random digits, then a query "which digit is at position p?".

    Token ids: digits ``0 .. num_values - 1``; the query token for position
    p is ``num_values + p``. The answer ``y`` is the digit at position p.
    The query comes last, so a model that reads left to right must keep
    every digit until it is told which one is wanted.

    Shapes:
        -> x (n, T + 1) token ids, y (n,) in 0 .. num_values - 1
    """
    n, T = check_int(n, "n", 1), check_int(T, "T", 1)
    num_values = check_int(num_values, "num_values", 2)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {describe(generator)}")
    digits = torch.randint(num_values, (n, T), generator=generator)  # (n, T)
    p = torch.randint(T, (n,), generator=generator)  # (n,)
    x = torch.cat([digits, (num_values + p)[:, None]], dim=1)  # (n, T + 1)
    return x, digits[torch.arange(n), p]


class MeanMixer(nn.Module):
    """The no-attention baseline of :class:`AttentionClassifier`: every
    position receives the plain average of all values, $b_i = W^O \\frac{1}{T}
    \\sum_j W^V x_j$: attention with fixed weights $1/T$ and no queries or keys.

    Shapes:
        x: (B, T, d_model) -> (B, T, d_model)
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = check_int(d_model, "d_model", 1)
        self.value_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", floating=True)
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, d_model={self.d_model}); got {tuple(x.shape)}")
        mean = self.value_proj(x).mean(dim=1, keepdim=True)  # (B, 1, d_model)
        return self.out_proj(mean).expand_as(x)  # (B, T, d_model)


class AttentionClassifier(nn.Module):
    """A small attention-only network that labels a sequence from its last position.

    Token embedding plus a position code, then
    ``num_layers`` residual blocks ``x = x + mix(LayerNorm(x))``, a final
    LayerNorm and a linear read-out of the last position. ``positional`` is
    ``"sinusoidal"`` (or True: :class:`SinusoidalEncoding`), ``"learned"``
    (:class:`LearnedPositionEmbedding`) or False (none). ``mixer`` is
    ``"attention"`` (:class:`MultiHeadAttention`) or ``"mean"``
    (:class:`MeanMixer`, the baseline without attention). With
    ``return_weights=True`` the forward pass also returns the attention
    weights of every layer.

    Shapes:
        x: (B, T) token ids -> (B, K), and a list of num_layers
        (B, nh, T, T) weights with return_weights
    """

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 2, mixer: str = "attention", positional: bool | str = True,
                 max_len: int = 256):
        super().__init__()
        vocab_size, num_classes = check_int(vocab_size, "vocab_size", 1), check_int(num_classes, "num_classes", 1)
        num_layers = check_int(num_layers, "num_layers", 1)
        if mixer not in ("attention", "mean"):
            raise ValueError(f"mixer must be 'attention' or 'mean'; got {mixer!r}")
        self.mixer, self.vocab_size = mixer, vocab_size
        self.max_len = check_int(max_len, "max_len", 1)
        self.embed = nn.Embedding(vocab_size, d_model)
        if positional is True or positional == "sinusoidal":
            self.position = SinusoidalEncoding(d_model, max_len)
        elif positional == "learned":
            self.position = LearnedPositionEmbedding(d_model, max_len)
        elif positional is False:
            self.position = None
        else:
            raise ValueError(f"positional must be 'sinusoidal' (or True), 'learned' or False; got {positional!r}")
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(num_layers))
        self.mixers = nn.ModuleList(MultiHeadAttention(d_model, num_heads) if mixer == "attention"
                                    else MeanMixer(d_model) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        check_tensor(x, "x")
        if x.dim() != 2 or x.is_floating_point() or x.dtype == torch.bool:
            raise ValueError(f"x must be a (B, T) tensor of token ids; got dtype {x.dtype}, shape {tuple(x.shape)}")
        _check_token_ids(x, self.vocab_size)
        if self.position is not None and x.shape[1] > self.max_len:
            raise ValueError(f"x has T={x.shape[1]} tokens; the positional encoding of this model has "
                             f"max_len={self.max_len} rows (build it with a larger max_len)")
        h = self.embed(x)  # (B, T, d_model)
        if self.position is not None:
            h = self.position(h)
        all_weights = []
        for norm, mix in zip(self.norms, self.mixers):
            if self.mixer == "attention":
                out, weights = mix(norm(h), need_weights=True)  # (B, T, d_model), (B, nh, T, T)
                all_weights.append(weights)
            else:
                out = mix(norm(h))
            h = h + out
        y_hat = self.head(self.final_norm(h[:, -1]))  # (B, K)
        return (y_hat, all_weights) if return_weights else y_hat
