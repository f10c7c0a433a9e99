r"""Recurrent networks from scratch: the RNN cell, the LSTM and the GRU.

Shapes use the book's legend: B batch, T sequence length, C input
features; ``hidden`` is the size of the state $h$ (and of the LSTM's
cell $c$). The weights are laid out as PyTorch's, so that
:meth:`Recurrent.load_torch_weights` can copy those of ``nn.RNN``,
``nn.LSTM`` or ``nn.GRU`` (one layer, one direction):

* ``weight_ih`` (G * hidden, C) and ``weight_hh`` (G * hidden, hidden),
  ``bias_ih`` and ``bias_hh`` (G * hidden,), with G = 1 (RNN), 4 (LSTM:
  gates i, f, g, o in that order) or 3 (GRU: r, z, n).

Each cell is a pure function of one step; the modules run it over the
sequence with a Python loop, one step after the other, which is what
makes a recurrent network sequential.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_float, check_int, check_tensor, describe
from .attention import _check_token_ids


def _check_step(x, h, weight_ih, weight_hh, gates: int, **biases) -> None:
    check_tensor(x, "x", floating=True)
    check_tensor(h, "h", floating=True)
    check_tensor(weight_ih, "weight_ih", floating=True)
    check_tensor(weight_hh, "weight_hh", floating=True)
    hidden = weight_hh.shape[-1]
    if weight_ih.dim() != 2 or weight_ih.shape[0] != gates * hidden or x.shape[-1] != weight_ih.shape[1]:
        raise ValueError(f"weight_ih must have shape ({gates} * hidden, C) = ({gates * hidden}, {x.shape[-1]}); "
                         f"got {tuple(weight_ih.shape)}")
    if tuple(weight_hh.shape) != (gates * hidden, hidden):
        raise ValueError(f"weight_hh must have shape ({gates} * hidden, hidden); got {tuple(weight_hh.shape)}")
    if x.dim() != 2 or h.dim() != 2 or h.shape != (x.shape[0], hidden):
        raise ValueError(f"x must have shape (B, C) and h (B, hidden={hidden}); got {tuple(x.shape)} and "
                         f"{tuple(h.shape)}")
    for name, bias in biases.items():
        if bias is None:
            continue
        check_tensor(bias, name, floating=True)
        if tuple(bias.shape) != (gates * hidden,):
            raise ValueError(f"{name} must have shape ({gates} * hidden,) = ({gates * hidden},); got "
                             f"{tuple(bias.shape)}")


def _affine(x, weight, bias):
    """x W^T + b (no bias when ``bias`` is None)."""
    y = x @ weight.T
    return y if bias is None else y + bias


def rnn_cell(x: torch.Tensor, h: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
             bias_ih: torch.Tensor | None = None, bias_hh: torch.Tensor | None = None) -> torch.Tensor:
    r"""One step of the simple (Elman) RNN: $h_t = \tanh(x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh})$.

    Shapes:
        x: (B, C), h: (B, hidden) -> (B, hidden)
    """
    _check_step(x, h, weight_ih, weight_hh, 1, bias_ih=bias_ih, bias_hh=bias_hh)
    return torch.tanh(_affine(x, weight_ih, bias_ih) + _affine(h, weight_hh, bias_hh))


def lstm_cell(x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], weight_ih: torch.Tensor,
              weight_hh: torch.Tensor, bias_ih: torch.Tensor | None = None,
              bias_hh: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One step of the LSTM.

    $$i = \sigma(\cdot), \; f = \sigma(\cdot), \; g = \tanh(\cdot), \; o = \sigma(\cdot), \quad
    \text{each of } x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh} \text{ (its quarter)},$$
    $$c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t).$$

    The input gate $i$ decides how much of the candidate $g$ is written,
    the forget gate $f$ how much of the old cell is kept ($f = 1$ keeps
    it all), the output gate $o$ how much of the cell is shown.

    Shapes:
        x: (B, C), state: (h, c), each (B, hidden) -> (h, c), each (B, hidden)
    """
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"state must be a pair (h, c); got {type(state).__name__}")
    h, c = state
    _check_step(x, h, weight_ih, weight_hh, 4, bias_ih=bias_ih, bias_hh=bias_hh)
    check_tensor(c, "c", floating=True)
    if c.shape != h.shape:
        raise ValueError(f"h and c must have the same shape; got {tuple(h.shape)} and {tuple(c.shape)}")
    gates = _affine(x, weight_ih, bias_ih) + _affine(h, weight_hh, bias_hh)  # (B, 4 * hidden)
    i, f, g, o = gates.chunk(4, dim=-1)  # each (B, hidden)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c


def gru_cell(x: torch.Tensor, h: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
             bias_ih: torch.Tensor | None = None, bias_hh: torch.Tensor | None = None) -> torch.Tensor:
    r"""One step of the GRU.

    $$r = \sigma(x_t W_{ir}^\top + b_{ir} + h_{t-1} W_{hr}^\top + b_{hr}), \quad
    z = \sigma(x_t W_{iz}^\top + b_{iz} + h_{t-1} W_{hz}^\top + b_{hz}),$$
    $$n = \tanh\big(x_t W_{in}^\top + b_{in} + r \odot (h_{t-1} W_{hn}^\top + b_{hn})\big), \qquad
    h_t = (1 - z) \odot n + z \odot h_{t-1}.$$

    The update gate $z$ does the work of the LSTM's forget and input gates
    at once: what is kept ($z$) and what is written ($1 - z$) add up to one.
    The reset gate $r$ decides how much of the old state the candidate reads.

    Shapes:
        x: (B, C), h: (B, hidden) -> (B, hidden)
    """
    _check_step(x, h, weight_ih, weight_hh, 3, bias_ih=bias_ih, bias_hh=bias_hh)
    gi = _affine(x, weight_ih, bias_ih)  # (B, 3 * hidden)
    gh = _affine(h, weight_hh, bias_hh)  # (B, 3 * hidden)
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


class Recurrent(nn.Module):
    """The common part of :class:`RNN`, :class:`LSTM` and :class:`GRU`:
    the weights (initialised as PyTorch does, uniform in
    $\\pm 1/\\sqrt{\\text{hidden}}$) and the loop over time.

    ``forward(x, state=None)`` returns ``(outputs, state)``: the state
    after every step, and the last state (for the LSTM the pair (h, c)).

    Shapes:
        x: (B, T, C) -> outputs (B, T, hidden), state (B, hidden) or a pair
    """

    GATES = 1
    TORCH_CLASS: type = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.input_size = check_int(input_size, "input_size", 1)
        self.hidden_size = check_int(hidden_size, "hidden_size", 1)
        G = self.GATES * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(G)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(G)) if bias else None
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"

    def cell(self, x: torch.Tensor, state):
        raise NotImplementedError

    def initial_state(self, x: torch.Tensor):
        return x.new_zeros(x.shape[0], self.hidden_size)  # (B, hidden)

    def forward(self, x: torch.Tensor, state=None):
        check_tensor(x, "x", floating=True)
        if x.dim() != 3 or x.shape[-1] != self.input_size or x.shape[1] == 0:
            raise ValueError(f"x must have shape (B, T, C={self.input_size}) with T >= 1; got {tuple(x.shape)}")
        state = self.initial_state(x) if state is None else state
        outputs = []
        for t in range(x.shape[1]):  # one step after the other
            state = self.cell(x[:, t], state)
            outputs.append(state[0] if isinstance(state, tuple) else state)  # (B, hidden)
        return torch.stack(outputs, dim=1), state  # (B, T, hidden)

    @torch.no_grad()
    def load_torch_weights(self, module: nn.Module) -> "Recurrent":
        """Copy the weights of a one-layer, one-direction ``nn.RNN``, ``nn.LSTM``
        or ``nn.GRU`` (the same kind as this module); return self."""
        if type(module) is not self.TORCH_CLASS:
            raise TypeError(f"{type(self).__name__} loads an {self.TORCH_CLASS.__name__}; got "
                            f"{type(module).__name__}")
        if module.num_layers != 1 or module.bidirectional or getattr(module, "proj_size", 0):
            raise ValueError("only one layer, one direction and no projection")
        if (module.input_size, module.hidden_size) != (self.input_size, self.hidden_size):
            raise ValueError(f"sizes differ: {type(module).__name__}({module.input_size}, {module.hidden_size}) "
                             f"and {type(self).__name__}({self.input_size}, {self.hidden_size})")
        if module.bias != (self.bias_ih is not None):
            raise ValueError("one has biases and the other not: build both with the same bias=")
        if isinstance(module, nn.RNN) and module.nonlinearity != "tanh":
            raise ValueError("the RNN cell here uses tanh; got nonlinearity='relu'")
        self.weight_ih.copy_(module.weight_ih_l0)
        self.weight_hh.copy_(module.weight_hh_l0)
        if module.bias:
            self.bias_ih.copy_(module.bias_ih_l0)
            self.bias_hh.copy_(module.bias_hh_l0)
        return self


class RNN(Recurrent):
    """The simple RNN over a sequence (:func:`rnn_cell` at every step).

    Shapes:
        x: (B, T, C) -> outputs (B, T, hidden), h (B, hidden)
    """

    GATES = 1
    TORCH_CLASS = nn.RNN

    def cell(self, x, h):
        return rnn_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class LSTM(Recurrent):
    """The LSTM over a sequence (:func:`lstm_cell` at every step); the state is (h, c).

    ``forget_bias`` is added to the forget gate's part of ``bias_ih`` after
    the uniform initialisation (1 is a common choice: the gate starts
    mostly open, so the cell starts by remembering).

    Shapes:
        x: (B, T, C) -> outputs (B, T, hidden), (h, c) each (B, hidden)
    """

    GATES = 4
    TORCH_CLASS = nn.LSTM

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, forget_bias: float = 0.0):
        super().__init__(input_size, hidden_size, bias)
        forget_bias = check_float(forget_bias, "forget_bias")
        if forget_bias:
            if self.bias_ih is None:
                raise ValueError("forget_bias needs bias=True")
            with torch.no_grad():
                self.bias_ih[hidden_size:2 * hidden_size] += forget_bias

    def initial_state(self, x):
        zeros = x.new_zeros(x.shape[0], self.hidden_size)  # (B, hidden)
        return zeros, zeros.clone()

    def cell(self, x, state):
        return lstm_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRU(Recurrent):
    """The GRU over a sequence (:func:`gru_cell` at every step).

    Shapes:
        x: (B, T, C) -> outputs (B, T, hidden), h (B, hidden)
    """

    GATES = 3
    TORCH_CLASS = nn.GRU

    def cell(self, x, h):
        return gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


def gradient_through_time(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r"""How strongly the last state depends on each input: $\|\partial L / \partial x_t\|$ for every t.

    $L$ is the sum of the last hidden state $h_T$; the gradient reaches
    $x_t$ through $T - t$ steps of the recurrence. Gradients that shrink
    (or grow) geometrically as $t$ moves back are vanishing (exploding).
    ``model`` is a recurrent module returning ``(outputs, state)``
    (:class:`RNN`, :class:`LSTM`, :class:`GRU` or PyTorch's, batch first).

    The norm is taken in float64: a float32 gradient of 1e-25 is a normal
    number, but its square is not, and a float32 norm of such entries would
    come out as exactly 0 where the gradient is merely tiny.

    Shapes:
        x: (B, T, C) -> (T,) float64, the norm over the batch and the features
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a recurrent nn.Module returning (outputs, state); got {describe(model)}")
    check_tensor(x, "x", floating=True)
    if x.dim() != 3:
        raise ValueError(f"x must have shape (B, T, C); got {tuple(x.shape)}")
    x = x.detach().clone().requires_grad_(True)
    result = model(x)
    if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[0], torch.Tensor) \
            or tuple(result[0].shape[:2]) != tuple(x.shape[:2]):
        raise TypeError(f"model must return (outputs (B, T, hidden), state), as rnn.RNN and nn.LSTM(..., "
                        f"batch_first=True) do; {type(model).__name__} does not")
    outputs = result[0]  # (B, T, hidden)
    outputs[:, -1].sum().backward()
    return x.grad.double().norm(dim=(0, 2))  # (T,): squares of tiny float32 values underflow


class LSTMClassifier(nn.Module):
    """Token embedding, PyTorch's ``nn.LSTM`` (the same computation as
    :class:`LSTM`, in fast C++), and a linear read-out of the last state.

    Shapes:
        x: (B, T) token ids -> (B, K)
    """

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 32, hidden_size: int = 64):
        super().__init__()
        self.embed = nn.Embedding(check_int(vocab_size, "vocab_size", 1), check_int(embed_dim, "embed_dim", 1))
        self.lstm = nn.LSTM(embed_dim, check_int(hidden_size, "hidden_size", 1), batch_first=True)
        self.head = nn.Linear(hidden_size, check_int(num_classes, "num_classes", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        if x.dim() != 2 or x.is_floating_point() or x.dtype == torch.bool:
            raise ValueError(f"x must be a (B, T) tensor of token ids; got dtype {x.dtype}, shape {tuple(x.shape)}")
        _check_token_ids(x, self.embed.num_embeddings)
        outputs, _ = self.lstm(self.embed(x))  # (B, T, hidden)
        return self.head(outputs[:, -1])  # (B, K)
