"""dlbook.rnn: parity with nn.RNN, nn.LSTM and nn.GRU, shapes and validation."""

import pytest
import torch
from torch import nn

from dlbook import bench, rnn

ATOL = 1e-5
KINDS = [(rnn.RNN, nn.RNN), (rnn.LSTM, nn.LSTM), (rnn.GRU, nn.GRU)]


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("ours_cls, torch_cls", KINDS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bias", [True, False])
def test_sequence_parity_with_torch(ours_cls, torch_cls, bias):
    reference = torch_cls(5, 7, batch_first=True, bias=bias)
    ours = ours_cls(5, 7, bias=bias).load_torch_weights(reference)
    x = torch.randn(3, 11, 5)  # (B, T, C)
    expected, expected_state = reference(x)
    y, state = ours(x)
    assert y.shape == (3, 11, 7)
    assert torch.allclose(y, expected, atol=ATOL)
    if ours_cls is rnn.LSTM:
        assert torch.allclose(state[0], expected_state[0][0], atol=ATOL)
        assert torch.allclose(state[1], expected_state[1][0], atol=ATOL)
    else:
        assert torch.allclose(state, expected_state[0], atol=ATOL)


@pytest.mark.parametrize("ours_cls, torch_cls", KINDS, ids=lambda c: c.__name__)
def test_parity_from_a_given_state_and_gradients(ours_cls, torch_cls):
    reference = torch_cls(4, 6, batch_first=True)
    ours = ours_cls(4, 6).load_torch_weights(reference)
    x = torch.randn(2, 9, 4)
    h0 = torch.randn(2, 6)
    state = (h0, torch.randn(2, 6)) if ours_cls is rnn.LSTM else h0
    torch_state = tuple(s[None] for s in state) if ours_cls is rnn.LSTM else h0[None]
    ours(x, state)[0].pow(2).sum().backward()
    reference(x, torch_state)[0].pow(2).sum().backward()
    assert torch.allclose(ours.weight_hh.grad, reference.weight_hh_l0.grad, atol=1e-4)
    assert torch.allclose(ours.bias_ih.grad, reference.bias_ih_l0.grad, atol=1e-4)


def test_cells_golden_numbers():
    # hidden 1, input 1, all weights 1, biases 0
    one = torch.ones(1, 1)
    x, h, c = torch.tensor([[0.5]]), torch.tensor([[0.2]]), torch.tensor([[0.3]])
    assert torch.allclose(rnn.rnn_cell(x, h, one, one), torch.tanh(torch.tensor([[0.7]])))
    s = torch.sigmoid(torch.tensor(0.7))
    h1, c1 = rnn.lstm_cell(x, (h, c), torch.ones(4, 1), torch.ones(4, 1))
    assert torch.allclose(c1, s * 0.3 + s * torch.tanh(torch.tensor(0.7)))
    assert torch.allclose(h1, s * torch.tanh(c1))
    n = torch.tanh(torch.tensor(0.5) + s * 0.2)
    assert torch.allclose(rnn.gru_cell(x, h, torch.ones(3, 1), torch.ones(3, 1)), (1 - s) * n + s * 0.2)


def test_parameter_counts_four_and_three_times_the_rnn():
    counts = {cls.__name__: bench.count_parameters(cls(10, 20)) for cls, _ in KINDS}
    assert counts["LSTM"] == 4 * counts["RNN"] and counts["GRU"] == 3 * counts["RNN"]
    for ours_cls, torch_cls in KINDS:
        assert bench.count_parameters(ours_cls(10, 20)) == bench.count_parameters(torch_cls(10, 20))


def test_forget_bias():
    lstm = rnn.LSTM(3, 5, forget_bias=1.0)
    torch.manual_seed(0)
    plain = rnn.LSTM(3, 5)
    assert torch.allclose(lstm.bias_ih[5:10] - plain.bias_ih[5:10], torch.ones(5))
    assert torch.equal(lstm.bias_ih[:5], plain.bias_ih[:5])
    with pytest.raises(ValueError, match="bias=True"):
        rnn.LSTM(3, 5, bias=False, forget_bias=1.0)


def test_gradient_through_time():
    model = rnn.RNN(3, 8)
    x = torch.randn(4, 12, 3)
    norms = rnn.gradient_through_time(model, x)
    assert norms.shape == (12,) and (norms >= 0).all()
    with torch.no_grad():
        model.weight_hh.zero_()  # no recurrence: only the last input matters
    norms = rnn.gradient_through_time(model, x)
    assert norms[-1] > 0 and torch.all(norms[:-1] == 0)
    torch_lstm = nn.LSTM(3, 8, batch_first=True)
    assert rnn.gradient_through_time(torch_lstm, x).shape == (12,)
    with pytest.raises(ValueError, match=r"\(B, T, C\)"):
        rnn.gradient_through_time(model, torch.randn(12, 3))


def test_gradient_through_time_keeps_a_tiny_gradient_from_becoming_zero():
    """A float32 gradient of about 1e-30 is representable, its square is not:
    the norm must come out tiny, not 0."""
    torch.manual_seed(0)
    model = rnn.RNN(1, 4)
    with torch.no_grad():
        model.weight_hh.copy_(0.5 * torch.eye(4))  # the gradient halves (at most) every step
        model.weight_ih.fill_(0.1)
        model.bias_ih.zero_()
        model.bias_hh.zero_()
    norms = rnn.gradient_through_time(model, torch.zeros(2, 120, 1))
    assert norms.dtype == torch.float64
    assert 0 < norms[0] < 1e-30  # 119 steps back: at most 0.5**119 ~ 1.5e-36 times the last
    assert torch.all(norms[1:] > norms[:-1])  # a straight fall, no line that ends in zeros


def test_validation():
    lstm = rnn.LSTM(4, 6)
    with pytest.raises(ValueError, match=r"\(B, T, C=4\)"):
        lstm(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="floating"):
        lstm(torch.ones(2, 5, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="loads an LSTM"):
        lstm.load_torch_weights(nn.GRU(4, 6))
    with pytest.raises(ValueError, match="one layer"):
        lstm.load_torch_weights(nn.LSTM(4, 6, num_layers=2))
    with pytest.raises(ValueError, match="sizes differ"):
        lstm.load_torch_weights(nn.LSTM(4, 7))
    with pytest.raises(ValueError, match="relu"):
        rnn.RNN(4, 6).load_torch_weights(nn.RNN(4, 6, nonlinearity="relu"))
    with pytest.raises(ValueError, match="hidden_size"):
        rnn.GRU(4, 0)
    with pytest.raises(ValueError, match="weight_ih"):
        rnn.rnn_cell(torch.randn(2, 3), torch.randn(2, 5), torch.randn(5, 4), torch.randn(5, 5))
    with pytest.raises(ValueError, match="weight_hh"):
        rnn.gru_cell(torch.randn(2, 3), torch.randn(2, 5), torch.randn(15, 3), torch.randn(5, 5))
    with pytest.raises(TypeError, match="pair"):
        rnn.lstm_cell(torch.randn(2, 3), torch.randn(2, 5), torch.randn(20, 3), torch.randn(20, 5))
    with pytest.raises(ValueError, match=r"bias_ih must have shape \(1 \* hidden,\) = \(4,\)"):
        rnn.rnn_cell(torch.randn(2, 3), torch.randn(2, 4), torch.randn(4, 3), torch.randn(4, 4),
                     torch.randn(5))
    with pytest.raises(ValueError, match="bias_hh"):
        rnn.gru_cell(torch.randn(2, 3), torch.randn(2, 4), torch.randn(12, 3), torch.randn(12, 4),
                     torch.randn(12), torch.randn(4))
    with pytest.raises(ValueError, match="T >= 1"):
        rnn.RNN(3, 4)(torch.randn(2, 0, 3))
    with pytest.raises(TypeError, match="recurrent nn.Module"):
        rnn.gradient_through_time("lstm", torch.randn(2, 5, 3))
    with pytest.raises(TypeError, match="must return"):
        rnn.gradient_through_time(nn.Linear(3, 3), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="same shape"):
        rnn.lstm_cell(torch.randn(2, 3), (torch.randn(2, 5), torch.randn(2, 4)), torch.randn(20, 3),
                      torch.randn(20, 5))


def test_lstm_classifier():
    model = rnn.LSTMClassifier(12, 5, embed_dim=8, hidden_size=6)
    x = torch.randint(12, (3, 7))
    assert model(x).shape == (3, 5)
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(3, 7))
    with pytest.raises(ValueError, match="vocab_size=12.*got 12"):
        model(torch.full((3, 7), 12))
