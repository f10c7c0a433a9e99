"""Exercises of the attention chapter."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import Wrong, exercise, forbid_functions, forbid_ops

THETA = math.pi / 8  # the angle between neighbouring positions in the previous-token exercise


def _positions(T: int = 8) -> torch.Tensor:
    """Position p as the unit vector at angle p * pi/8: (T, 2)."""
    angle = torch.arange(T, dtype=torch.float64) * THETA
    return torch.stack([angle.cos(), angle.sin()], dim=1)


def _as_matrix(value, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise Wrong(f"{name} should be a tensor of shape {shape}; yours is a {type(value).__name__}.")
    if tuple(value.shape) != shape:
        raise Wrong(f"{name} should have shape {shape}; yours has {tuple(value.shape)}.")
    if not value.is_floating_point():
        raise Wrong(f"{name} should hold floating-point numbers; yours has dtype {value.dtype}.")
    value = value.detach().double()
    if not torch.isfinite(value).all():
        raise Wrong(f"every entry of {name} must be finite.")
    return value


@exercise(
    "attention.previous_token",
    "Position p is the unit vector x_p = (cos(p*pi/8), sin(p*pi/8)), p = 0..7, a row of X (8, 2). "
    "Choose W_Q and W_K (2x2) so that in softmax((X W_Q)(X W_K)^T / sqrt(2)) every query i >= 1 puts "
    "at least 0.9 of its weight on key i - 1. Answer the pair (W_Q, W_K).",
    "One solution: W_K = I and W_Q = c R, where R turns a row vector back by pi/8 (R = [[cos a, sin a], "
    "[-sin a, cos a]] with a = -pi/8) and c is large, say 100. Then q_i is c times x_(i-1), and "
    "q_i . k_j = c cos((i - 1 - j) pi/8) is largest at j = i - 1; the scale c makes the softmax sharp. "
    "The offset is a rotation whatever the position: relative positions are linear maps, as for the "
    "sinusoidal encoding. Heads that look at the previous token are found in trained language models.",
)
def _previous_token(answer) -> None:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise Wrong("answer with a pair (W_Q, W_K) of 2x2 tensors.")
    W_Q, W_K = (_as_matrix(m, name, (2, 2)) for m, name in zip(answer, ("W_Q", "W_K")))
    x = _positions()
    weights = torch.softmax((x @ W_Q) @ (x @ W_K).T / math.sqrt(2), dim=-1)  # (8, 8)
    rows = torch.arange(1, 8)
    on_previous = weights[rows, rows - 1]
    if (on_previous >= 0.9).all():
        return
    favourite = weights[rows].argmax(-1) - rows  # the offset each query prefers
    if (favourite == -1).all():
        raise Wrong(f"every query prefers the previous key, but some give it only "
                    f"{on_previous.min().item():.2f} of their weight: make the softmax sharper.")
    if (favourite == 0).all():
        raise Wrong("your queries prefer their own position. Turn each query so that it points at "
                    "the position before it.")
    if (favourite[:-1] == 1).all():  # the last query has no next position
        raise Wrong("your queries prefer the *next* position: you turned them the wrong way.")
    raise Wrong("the queries do not look at the previous key. What does q_i . k_j depend on when "
                "q_i and k_j are rotated copies of x_i and x_j?")


@exercise(
    "attention.packed_mask",
    "Several sequences of the given lengths are packed one after another into one row of length "
    "T = sum(lengths). Write packed_causal_mask(lengths) -> a (T, T) boolean mask, True = may attend, "
    "in which every token attends to itself and to the earlier tokens of its own sequence only.",
    "Give every position the number of its sequence (s = repeat_interleave(arange(n), lengths)); "
    "then allowed[i, j] = (s[i] == s[j]) & (j <= i): a block-diagonal matrix of causal triangles. "
    "Packing short sequences into one row wastes no compute on padding, and this mask keeps them from "
    "seeing each other.",
)
def _packed_mask(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function packed_causal_mask(lengths).")
    cases = [[3, 2], [1, 1, 1], [4], [2, 5, 1, 3], [6, 1]]
    for lengths in cases:
        T = sum(lengths)
        s = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        j = torch.arange(T)
        expected = (s[:, None] == s[None, :]) & (j[None, :] <= j[:, None])
        got = answer(list(lengths))
        where = f"for lengths {lengths}"
        if not isinstance(got, torch.Tensor):
            raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor.")
        if tuple(got.shape) != (T, T):
            raise Wrong(f"{where} the mask should have shape ({T}, {T}); yours has {tuple(got.shape)}.")
        if got.dtype != torch.bool:
            raise Wrong(f"{where} the mask should be boolean; yours has dtype {got.dtype}.")
        if torch.equal(got, expected):
            continue
        if torch.equal(got, ~expected):
            raise Wrong("your mask is inverted: True means *may attend*.")
        if torch.equal(got, torch.ones(T, T, dtype=torch.bool).tril()):
            raise Wrong(f"{where} the tokens of one sequence can see the earlier sequences.")
        if torch.equal(got, s[:, None] == s[None, :]):
            raise Wrong(f"{where} tokens can see later tokens of their own sequence.")
        if torch.equal(got, expected.T):
            raise Wrong(f"{where} your mask is transposed: rows are queries, columns keys.")
        raise Wrong(f"{where} your mask differs from the expected one in {(got != expected).sum().item()} "
                    f"places.")


LSTM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _lstm_cells(params, x: torch.Tensor) -> torch.Tensor:
    """The cell state after every step of a 1-unit LSTM: x (N, T) -> (N, T)."""
    from ..rnn import lstm_cell

    h = c = torch.zeros(x.shape[0], 1, dtype=torch.float64)
    cells = []
    for t in range(x.shape[1]):
        h, c = lstm_cell(x[:, t:t + 1], (h, c), *params)
        cells.append(c[:, 0])
    return torch.stack(cells, dim=1)


@exercise(
    "attention.lstm_counter",
    "Set the weights of an LSTM with one input and one hidden unit (gates i, f, g, o in PyTorch's "
    "order) so that, reading a sequence of 0s and 1s of length up to 20, its cell state c_t equals "
    "the number of 1s read so far, within 0.1. Answer (weight_ih (4, 1), weight_hh (4, 1), "
    "bias_ih (4,), bias_hh (4,)).",
    "Keep the input and forget gates wide open with large biases (i = f = sigmoid(10) ~ 1), so that "
    "c_t = c_(t-1) + g_t; let the candidate be g_t = tanh(10 x_t): 1 for a 1, 0 for a 0; and give the "
    "gates no weight from h (weight_hh = 0), so that the output does not disturb the count. A forget "
    "gate near 1 is what lets the cell carry a number, and a gradient, over many steps.",
)
def _lstm_counter(answer) -> None:
    if not isinstance(answer, (tuple, list)) or len(answer) != 4:
        raise Wrong("answer with four tensors (weight_ih, weight_hh, bias_ih, bias_hh).")
    shapes = ((4, 1), (4, 1), (4,), (4,))
    params = [_as_matrix(m, name, shape) for m, name, shape in zip(answer, LSTM_NAMES, shapes)]
    zeros = _lstm_cells(params, torch.zeros(1, 20, dtype=torch.float64))[0]
    if zeros.abs().max() > 0.1:
        raise Wrong("reading only 0s, the cell should stay at 0; yours moves. What does the candidate "
                    "g write when x = 0?")
    one = torch.cat([torch.ones(1, 1), torch.zeros(1, 19)], 1).double()
    after_one = _lstm_cells(params, one)[0]  # (20,)
    if abs(after_one[0] - 1) > 0.1:
        raise Wrong(f"after reading one 1 the cell should be 1; yours is {after_one[0].item():.2f}. "
                    f"Does a 1 add exactly 1: how open is the input gate, how large is g?")
    drift = (after_one - 1).abs().argmax()
    if abs(after_one[drift] - 1) > 0.1:
        if after_one[drift] < 1:
            raise Wrong(f"after a 1 and then 0s the cell should stay at 1; yours leaks down to "
                        f"{after_one[drift].item():.2f}. How much of the old cell does the forget "
                        f"gate keep?")
        raise Wrong(f"after a 1 and then 0s the cell should stay at 1; it grows to "
                    f"{after_one[drift].item():.2f}: something in the gates depends on h, which is "
                    f"no longer 0.")
    x = torch.randint(2, (200, 20), generator=torch.Generator().manual_seed(0)).double()
    x = torch.cat([torch.ones(1, 20, dtype=torch.float64), x])
    error = (_lstm_cells(params, x) - x.cumsum(1)).abs().max().item()
    if error > 0.1:
        raise Wrong(f"on sequences with many 1s the count is off by up to {error:.2f}. Over 20 "
                    f"steps small errors add up: is every gate that should be 0 or 1, and every "
                    f"candidate that should be 0 or 1, close enough to it?")


# PyTorch's attention at the level of functions and operators: F.scaled_dot_product_attention and
# torch.ops.aten.scaled_dot_product_attention, _scaled_dot_product_attention_math (which returns the
# weights), the fused kernels (_scaled_dot_product_flash_attention_for_cpu, _efficient_attention_...,
# _fused_sdp_choice) and nn.MultiheadAttention's fast path, _native_multi_head_attention. Below the
# torch-function level F.scaled_dot_product_attention decomposes into ordinary operators and one of
# its own, _safe_softmax (found by running each call under a TorchDispatchMode that prints
# func.overloadpacket.__name__).
ATTENTION_OPS = ("attention", "sdp", "safe_softmax")


def _forbid_torch_functions(rule: str, parts: tuple[str, ...]):
    """A torch-function mode (a context manager) that refuses every torch
    function or operator whose name contains one of ``parts``, however the answer reached it:
    F.scaled_dot_product_attention under another name, torch.ops.aten.<op>
    called directly. It runs before an operator is decomposed, so the hint
    names what the answer called; forbid_ops below it still sees the
    operators when the answer switches torch functions off."""
    from torch.overrides import TorchFunctionMode

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if any(part in name for part in parts):
                raise Wrong(f"the rule is: {rule}. Your answer called {name}.")
            return func(*args, **(kwargs or {}))

    return Mode()


def _forbid_attention(rule: str):
    """Every way to have attention weights computed for you, on three levels:
    the Python functions (refused as objects, so a name bound before the
    check, a saved method, a subclass or a deep copy of the module refuses
    too: nn.MultiheadAttention's path that returns weights is made of
    ordinary operators, as is dlbook's attention), PyTorch's attention
    functions and operators by name, and the same names among the operators."""
    import contextlib

    from .. import attention, transformer

    stack = contextlib.ExitStack()
    stack.enter_context(forbid_functions(
        rule, (nn.MultiheadAttention, "forward"), (F, "multi_head_attention_forward"),
        (F, "scaled_dot_product_attention"), (attention, "scaled_dot_product_attention"),
        (attention, "local_attention"), (attention.MultiHeadAttention, "forward"),
        (attention.MultiHeadAttention, "load_torch_weights"), (transformer.GPTBlock, "forward")))
    stack.enter_context(_forbid_torch_functions(rule, ATTENTION_OPS))
    stack.enter_context(forbid_ops(rule, *ATTENTION_OPS))
    return stack


@exercise(
    "attention.head_weights",
    "Write head_weights(mha, x, h): for an nn.MultiheadAttention mha (batch_first, with biases) and a "
    "self-attention input x of shape (B, T, d_model), return the attention weights of head h, shape "
    "(B, T, T), computed from mha.in_proj_weight and mha.in_proj_bias alone. Calling mha, PyTorch's "
    "attention functions (F.multi_head_attention_forward, F.scaled_dot_product_attention) or dlbook's is "
    "not allowed (the check enforces it).",
    "in_proj_weight stacks W^Q, W^K, W^V as rows (each (d_model, d_model), an nn.Linear weight: "
    "x @ W.T), and in_proj_bias their biases. Head h owns the output features h*hs .. (h+1)*hs - 1 of "
    "each, so q_h = x @ in_proj_weight[h*hs:(h+1)*hs].T + in_proj_bias[h*hs:(h+1)*hs], and k_h the same "
    "with the rows shifted by d_model: in_proj_weight[d_model + h*hs : d_model + (h+1)*hs]. Then the "
    "weights are softmax(q_h k_h^T / sqrt(hs)) over the keys (the last axis). The scale is the head "
    "size hs, the length of q_h and k_h, not d_model: every head is a small attention of its own, which "
    "reads all d_model input features through its own block of the projections.",
)
def _head_weights(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function head_weights(mha, x, h).")
    rule = "compute the weights from in_proj_weight and in_proj_bias yourself"
    gen = torch.Generator().manual_seed(0)
    for d_model, nh in ((12, 3), (8, 2), (16, 4)):
        mha = nn.MultiheadAttention(d_model, nh, batch_first=True)
        with torch.no_grad():
            mha.in_proj_weight.copy_(torch.randn(3 * d_model, d_model, generator=gen) / 2)
            mha.in_proj_bias.copy_(torch.randn(3 * d_model, generator=gen))
        hs = d_model // nh
        x = torch.randn(2, 5, d_model, generator=gen)  # (B, T, d_model)
        with torch.no_grad():
            _, all_heads = mha(x, x, x, need_weights=True, average_attn_weights=False)  # (B, nh, T, T)
        W, b = mha.in_proj_weight.detach().double(), mha.in_proj_bias.detach().double()
        xd = x.double()
        for h in range(nh):
            rows = slice(h * hs, (h + 1) * hs)
            q = xd @ W[:d_model][rows].T + b[:d_model][rows]  # (B, T, hs)
            k = xd @ W[d_model:2 * d_model][rows].T + b[d_model:2 * d_model][rows]
            q0, k0 = xd @ W[:d_model][rows].T, xd @ W[d_model:2 * d_model][rows].T  # without biases
            with _forbid_attention(rule):
                got = answer(mha, x, h)
            where = f"for d_model={d_model}, {nh} heads, head {h}"
            if not isinstance(got, torch.Tensor):
                raise Wrong(f"{where} you return a {type(got).__name__}; return a tensor.")
            got = _as_matrix(got, "the weights", (2, 5, 5))
            expected = all_heads[:, h].double()
            if torch.allclose(got, expected, atol=1e-4):
                continue
            if torch.allclose(got, expected.transpose(1, 2), atol=1e-4):
                raise Wrong(f"{where} your weights are transposed: rows are queries, columns keys.")
            if not torch.allclose(got.sum(-1), torch.ones(2, 5, dtype=torch.float64), atol=1e-4):
                raise Wrong(f"{where} the rows of your weights do not sum to 1: each query's weights "
                            f"are a softmax over the keys. Over which axis did you take it?")
            scales = {"no scaling": 1.0, "sqrt(d_model)": 1 / math.sqrt(d_model)}
            for name, scale in scales.items():
                if torch.allclose(got, torch.softmax(q @ k.transpose(1, 2) * scale, -1), atol=1e-4):
                    raise Wrong(f"{where} you scaled the scores with {name}. How long are the queries "
                                f"and keys of one head?")
            if torch.allclose(got, torch.softmax(q0 @ k0.transpose(1, 2) / math.sqrt(hs), -1), atol=1e-4):
                raise Wrong(f"{where} your weights are those without the biases: what does "
                            f"in_proj_bias add to the queries and keys?")
            raise Wrong(f"{where} your weights differ from head {h}'s. Which rows of in_proj_weight "
                        f"hold W^Q and W^K, and which of those rows belong to head {h}?")


@exercise(
    "attention.averaging_head",
    "Write make_averager(d_model, num_heads) returning an attention.MultiHeadAttention(d_model, "
    "num_heads) whose weights you have set so that, for every input x of shape (B, T, d_model) and "
    "every T, its output at every position is the mean of the inputs over the positions, "
    "x.mean(dim=1).",
    "Make every score of a query equal: with W^Q = 0 and b_Q = 0 every query is the zero vector, "
    "every score is 0, and the softmax gives every key the weight 1/T (W^K = 0 works as well, "
    "whatever the key bias: q . b_K is the same for every key). Then let the values and the output "
    "pass unchanged: W^V = W^O = I, biases 0. This is the model without attention of the lookup "
    "task: attention whose weights are fixed at 1/T, which cannot prefer any position.",
)
def _averaging_head(answer) -> None:
    if not callable(answer):
        raise Wrong("answer with a function make_averager(d_model, num_heads).")
    from .. import attention

    gen = torch.Generator().manual_seed(0)
    for d_model, nh in ((8, 2), (12, 3), (6, 1)):
        m = answer(d_model, nh)
        if type(m) is not attention.MultiHeadAttention:
            raise Wrong(f"make_averager({d_model}, {nh}) returns a {type(m).__name__}; return an "
                        f"attention.MultiHeadAttention.")
        if (m.d_model, m.num_heads) != (d_model, nh):
            raise Wrong(f"make_averager({d_model}, {nh}) should have d_model={d_model} and "
                        f"num_heads={nh} heads; yours has {m.d_model} and {m.num_heads}.")
        m = m.eval()
        for T in (1, 4, 9):
            x = torch.randn(3, T, d_model, generator=gen)  # (B, T, d_model)
            with torch.no_grad():
                y, w = m(x, need_weights=True)  # (B, T, d_model), (B, nh, T, T)
            expected = x.mean(dim=1, keepdim=True).expand_as(x)
            if torch.allclose(y, expected, atol=1e-5):
                continue
            if not torch.allclose(w, torch.full_like(w, 1 / T), atol=1e-5):
                zero_w = not m.query_proj.weight.detach().any()
                bias = m.query_proj.bias
                if zero_w and bias is not None and bias.detach().any():
                    raise Wrong("your query weights are 0, but the queries are not: what does the "
                                "query projection add besides its weights?")
                raise Wrong(f"for T = {T} some query gives one key a weight of "
                            f"{w.max().item():.2f} instead of 1/T. What would make all the "
                            f"scores of a query equal, whatever the keys are?")
            raise Wrong(f"for T = {T} every query weighs the positions equally, but the output is "
                        f"not the mean of the inputs: what must the value and output projections "
                        f"do with it?")
