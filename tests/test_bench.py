"""dlbook.bench: what the timing sections measure, tested without timing anything.

Clocks are faked (time.perf_counter), the GPU is faked (torch.cuda), and
memory is checked against allocations of a known size.
"""

import itertools
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from dlbook import bench


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter: each call returns the next of the given readings."""
    def install(readings):
        it = iter(readings)
        monkeypatch.setattr(bench.time, "perf_counter", lambda: next(it))
    return install


@pytest.fixture
def fake_cuda(monkeypatch):
    """Record every torch.cuda.synchronize(device) call."""
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return calls


# count_parameters -----------------------------------------------------------------------

def test_count_parameters_agrees_with_a_formula_and_skips_frozen():
    conv = nn.Conv2d(3, 8, 5)
    assert bench.count_parameters(conv) == 8 * (3 * 25 + 1)
    conv.bias.requires_grad_(False)
    assert bench.count_parameters(conv) == 8 * 3 * 25
    assert bench.count_parameters(nn.ReLU()) == 0


def test_count_parameters_counts_a_shared_parameter_once():
    layer = nn.Linear(4, 4)
    assert bench.count_parameters(nn.Sequential(layer, nn.ReLU(), layer)) == 20


@pytest.mark.parametrize("model", [None, "model", nn.Linear(2, 2).state_dict(), [nn.Linear(2, 2)]])
def test_count_parameters_needs_a_module(model):
    with pytest.raises(TypeError, match="nn.Module"):
        bench.count_parameters(model)


# median_time -----------------------------------------------------------------------------

def test_median_time_is_the_median_of_the_timed_calls(clock):
    calls = []
    # start/stop readings of three calls: 0.5 s, 0.1 s, 0.3 s
    clock([10.0, 10.5, 20.0, 20.1, 30.0, 30.3])
    assert bench.median_time(lambda: calls.append(1), 3) == pytest.approx(0.3)
    assert len(calls) == 3 + 1  # one warm-up call, untimed


def test_median_of_an_even_number_averages_the_middle_two(clock):
    clock([0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 100.0])
    assert bench.median_time(lambda: None, 4, warmup=0) == pytest.approx(2.5)


@pytest.mark.parametrize("warmup, repeats", [(0, 1), (1, 1), (3, 2), (np.int64(2), np.int64(3))])
def test_warmup_calls_come_first_and_are_not_timed(monkeypatch, warmup, repeats):
    events = []
    ticks = itertools.count()

    def perf_counter():
        events.append("clock")
        return float(next(ticks))

    monkeypatch.setattr(bench.time, "perf_counter", perf_counter)
    bench.median_time(lambda: events.append("call"), repeats, warmup=warmup)
    assert events == ["call"] * warmup + ["clock", "call", "clock"] * repeats


def test_cuda_is_synchronised_around_every_timed_call(fake_cuda, clock):
    clock(range(100))
    bench.median_time(lambda: fake_cuda.append("call"), 2, warmup=1, device="cuda:1")
    cuda1 = torch.device("cuda:1")
    assert fake_cuda == ["call", cuda1, "call", cuda1, cuda1, "call", cuda1]


def test_no_synchronisation_on_the_cpu(fake_cuda, monkeypatch, clock):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    clock(range(100))
    bench.median_time(lambda: None, 3, device="cpu")
    assert fake_cuda == []


@pytest.mark.parametrize("initialized, synced", [(True, True), (False, False)])
def test_without_a_device_cuda_is_synchronised_when_in_use(fake_cuda, monkeypatch, clock, initialized, synced):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized)
    clock(range(100))
    bench.median_time(lambda: None, 2)
    assert len(fake_cuda) == (4 if synced else 0)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((lambda: None, 0), {}, ValueError, "repeats"),
    ((lambda: None, 2.0), {}, ValueError, "repeats"),
    ((lambda: None, True), {}, ValueError, "repeats"),
    ((lambda: None, 3), dict(warmup=-1), ValueError, "warmup"),
    ((None, 3), {}, TypeError, "fn must be callable"),
    ((torch.ones(2), 3), {}, TypeError, "fn must be callable"),
    ((lambda: None, 3), dict(device="gpu"), ValueError, "device"),
    ((lambda: None, 3), dict(device=0), TypeError, "device"),
])
def test_median_time_bad_input(args, kwargs, error, match):
    calls = []
    with pytest.raises(error, match=match):
        bench.median_time(*args, **kwargs)
    assert calls == []


# peak_memory -------------------------------------------------------------------------------

FLOAT32 = 4  # bytes


@pytest.mark.parametrize("n", [250_000, 1_000_000, 4_000_000])
def test_peak_memory_of_one_allocation_is_its_size(n):
    peak = bench.peak_memory(lambda: torch.empty(n))
    assert type(peak) is int
    assert n * FLOAT32 <= peak <= n * FLOAT32 * 1.01 + 4096


def test_peak_memory_counts_what_is_held_at_once():
    n = 500_000

    def one_at_a_time():
        for _ in range(4):
            x = torch.ones(n)
            del x

    def all_at_once():
        return [torch.ones(n) for _ in range(4)]

    single = bench.peak_memory(one_at_a_time)
    assert n * FLOAT32 <= single < 2 * n * FLOAT32
    assert 4 * n * FLOAT32 <= bench.peak_memory(all_at_once) < 5 * n * FLOAT32


def test_peak_memory_of_a_temporary_inside_a_computation():
    n = 1_000_000
    x = torch.ones(n)
    # x * 2 makes a temporary of n floats; sum() returns one float
    peak = bench.peak_memory(lambda: (x * 2).sum())
    assert n * FLOAT32 <= peak < 1.1 * n * FLOAT32
    assert bench.peak_memory(lambda: None) == 0


def test_peak_memory_prints_nothing():
    """The profiler's library logs to the process's stderr, which a notebook shows."""
    code = "import torch; from dlbook import bench; print(bench.peak_memory(lambda: torch.empty(1000)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4000" and done.stderr == ""


def test_peak_memory_on_cuda_uses_the_allocator_statistics(monkeypatch):
    held = {"now": 1_000, "peak": 1_000}

    def allocate(nbytes):
        held["now"] += nbytes
        held["peak"] = max(held["peak"], held["now"])

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: held.update(peak=held["now"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: held["now"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: held["peak"])
    held["peak"] = 50_000  # an earlier peak, which must not count

    def fn():
        allocate(300)
        allocate(-300)
        allocate(200)

    assert bench.peak_memory(fn, device="cuda") == 300


@pytest.mark.parametrize("fn, device, error, match", [
    (None, "cpu", TypeError, "fn"),
    (lambda: None, "mps", ValueError, "CPU or a CUDA"),
    (lambda: None, "tpu", ValueError, "device"),
])
def test_peak_memory_bad_input(fn, device, error, match):
    with pytest.raises(error, match=match):
        bench.peak_memory(fn, device=device)


# compare_sizes and Comparison -----------------------------------------------------------------

@pytest.fixture
def fake_median(monkeypatch):
    """median_time replaced: one call, whose result is the 'time'; the repeats are recorded."""
    repeats = []

    def median_time(fn, n, device=None):
        repeats.append(n)
        return fn()

    monkeypatch.setattr(bench, "median_time", median_time)
    return repeats


def test_compare_sizes_times_each_function_at_each_size(fake_median):
    inputs = []

    def make_input(size):
        inputs.append(size)
        return size, 1e-3

    result = bench.compare_sizes({"ours": lambda n, unit: 4 * n * unit, "PyTorch": lambda n, unit: n * unit},
                                 [2, np.int64(8)], make_input, repeats=lambda size: 10 // size,
                                 size_label="image size")
    assert inputs == [2, 8]  # one input per size, shared by the functions
    assert fake_median == [5, 5, 1, 1]
    assert result.quantity == "time" and result.sizes == (2, 8) and result.size_label == "image size"
    assert result.values == {"ours": pytest.approx((0.008, 0.032)), "PyTorch": pytest.approx((0.002, 0.008))}
    assert [(s, name, r) for s, name, _, r in result.rows()] == [
        (2, "ours", pytest.approx(4.0)), (2, "PyTorch", 1.0), (8, "ours", pytest.approx(4.0)), (8, "PyTorch", 1.0)]
    assert str(result).splitlines() == [
        "image size  what      time  × best",
        "         2  ours      8 ms       4",
        "         2  PyTorch   2 ms       1",
        "         8  ours     32 ms       4",
        "         8  PyTorch   8 ms       1",
    ]
    assert result.markdown().splitlines()[:3] == [
        "| image size | what | time | × best |", "|---:|---|---:|---:|", "| 2 | ours | 8 ms | 4 |"]


def test_compare_sizes_in_rounds_takes_turns_and_keeps_every_round(monkeypatch):
    calls = []

    def median_time(fn, n, device=None):  # the 'time' is the order of the call
        calls.append(fn())
        return float(len(calls))

    monkeypatch.setattr(bench, "median_time", median_time)
    result = bench.compare_sizes({"ours": lambda n: ("ours", n), "torch": lambda n: ("torch", n)},
                                 [4, 8], lambda n: n, repeats=3, rounds=3)
    assert calls == [("ours", 4), ("torch", 4)] * 3 + [("ours", 8), ("torch", 8)] * 3  # in turn
    assert result.rounds == {"ours": ((1.0, 3.0, 5.0), (7.0, 9.0, 11.0)),
                             "torch": ((2.0, 4.0, 6.0), (8.0, 10.0, 12.0))}
    assert result.values == {"ours": (3.0, 9.0), "torch": (4.0, 10.0)}  # the median of the rounds
    assert result.ratios("ours", "torch") == [(0.5, 0.75, 5 / 6), (7 / 8, 0.9, 11 / 12)]
    lines = str(result).splitlines()
    assert lines[0].split()[-2:] == ["3", "rounds"]
    assert lines[1].endswith("1–5 s") and lines[4].endswith("8–12 s")
    assert max(len(line) for line in lines) <= bench.WIDTH
    assert result.markdown().splitlines()[1] == "|---:|---|---:|---:|---:|"
    with pytest.raises(KeyError, match="not one of"):
        result.ratios("ours", "jax")


def test_one_round_has_one_ratio_per_size(fake_median):
    result = bench.compare_sizes({"a": lambda n: 2.0 * n, "b": lambda n: 1.0 * n}, [1, 2], lambda n: n)
    assert result.rounds is None and result.ratios("a", "b") == [(2.0,), (2.0,)]


def test_rounds_bad_input():
    with pytest.raises(ValueError, match="rounds"):
        bench.compare_sizes({"a": len}, [8], lambda n: [0] * n, rounds=0)
    with pytest.raises(ValueError, match="times only"):
        bench.compare_sizes({"a": lambda n: torch.empty(n)}, [8], lambda n: n, measure="memory", rounds=2)
    with pytest.raises(ValueError, match="rounds must hold"):
        bench.Comparison("time", (8,), {"a": (1.0,)}, rounds={"a": ((),)})
    with pytest.raises(ValueError, match="at most 36 characters"):
        bench.Comparison("time", (8,), {"x" * 30: (1.0,)}, "image size", rounds={"x" * 30: ((1.0,),)})


def test_compare_sizes_passes_a_single_input_as_one_argument(fake_median):
    result = bench.compare_sizes({"len": lambda x: float(len(x))}, [3], lambda n: list(range(n)), repeats=1)
    assert result.values == {"len": (3.0,)}


def test_compare_sizes_measures_memory():
    result = bench.compare_sizes({"one copy": lambda n: torch.empty(n), "two copies": lambda n: torch.empty(2 * n)},
                                 [1_000, 100_000], lambda n: n, measure="memory")
    assert result.quantity == "memory"
    assert result.values["one copy"] == (4_000.0, 400_000.0)
    assert result.values["two copies"] == (8_000.0, 800_000.0)
    lines = str(result).splitlines()
    assert lines[0].split() == ["size", "what", "peak", "memory", "×", "best"]
    assert lines[3].split() == ["100000", "one", "copy", "391", "KiB", "1"]


@pytest.mark.parametrize("value, quantity, text", [
    (2.5, "time", "2.5 s"), (0.0123, "time", "12.3 ms"), (4.56e-5, "time", "45.6 µs"), (3e-9, "time", "3 ns"),
    (512, "memory", "512 B"), (4096, "memory", "4 KiB"), (3 * 2**20, "memory", "3 MiB"), (2**31, "memory", "2 GiB"),
])
def test_units(value, quantity, text):
    assert bench._format(value, quantity) == text


@pytest.mark.parametrize("quantity, values", [("time", (1.5e-10, 1234.5)), ("memory", (0.0, 1.5e12))])
def test_table_fits_the_books_column(quantity, values):
    names = ("x" * 37, "y" * 3)
    result = bench.Comparison(quantity, (8, 1_000_000), {n: values[::k] for n, k in zip(names, (1, -1))},
                              "image size H = W")
    assert max(len(line) for line in str(result).splitlines()) <= bench.WIDTH


def test_ratio_to_a_zero_best():
    result = bench.Comparison("memory", (8,), {"none": (0.0,), "some": (4096.0,)})
    assert [r[3] for r in result.rows()] == [1.0, float("inf")]
    assert str(result).splitlines()[2].split()[-1] == "inf"


def test_names_too_long_for_the_table_are_refused():
    with pytest.raises(ValueError, match="at most 53 characters"):
        bench.Comparison("time", (8,), {"x" * 38: (1.0,)}, "image size H = W")
    with pytest.raises(ValueError, match="fits 79 columns"):
        bench.compare_sizes({"x" * 50: len}, [8], lambda n: n, size_label="size label")


@pytest.mark.parametrize("args, match", [
    (("speed", (8,), {"a": (1.0,)}), "quantity"),
    (("time", (8, 16), {"a": (1.0,)}), "one number per size"),
    (("time", (8,), {}), "one number per size"),
])
def test_comparison_checks_itself(args, match):
    with pytest.raises(ValueError, match=match):
        bench.Comparison(*args)


def test_plot_is_log_log_with_labels_and_a_legend():
    result = bench.Comparison("time", (8, 16, 32), {"ours": (1e-3, 4e-3, 0.0), "PyTorch": (1e-4, 2e-4, 4e-4)},
                              "image size")
    fig = result.plot(title="Convolution")
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_title() == "Convolution"
    assert ax.get_xlabel() == "image size" and ax.get_ylabel() == "time per call (ms)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ours", "PyTorch"]
    assert list(ax.get_xticks()) == [8, 16, 32]
    ours = ax.get_lines()[0].get_ydata()
    assert ours[:2] == pytest.approx([1.0, 4.0]) and np.isnan(ours[2])  # zero: left out of a log axis
    memory = bench.Comparison("memory", (1, 2), {"a": (2**20, 2**21)}).plot()
    assert memory.axes[0].get_ylabel() == "peak memory (MiB)"
    assert list(memory.axes[0].get_lines()[0].get_ydata()) == [1.0, 2.0]
    assert memory.axes[0].get_title() == "Peak memory against size"


@pytest.mark.parametrize("args, kwargs, error, match", [
    (({}, [8], lambda n: n), {}, TypeError, "fns"),
    (([lambda x: x], [8], lambda n: n), {}, TypeError, "fns"),
    (({"a": 3}, [8], lambda n: n), {}, TypeError, "callable"),
    (({"": len}, [8], lambda n: n), {}, ValueError, "names"),
    (({3: len}, [8], lambda n: n), {}, ValueError, "names"),
    (({"a": len}, [], lambda n: n), {}, ValueError, "sizes"),
    (({"a": len}, 8, lambda n: n), {}, ValueError, "sizes"),
    (({"a": len}, "8", lambda n: n), {}, ValueError, "sizes"),
    (({"a": len}, [8, 0], lambda n: n), {}, ValueError, "size"),
    (({"a": len}, [8, 2.5], lambda n: n), {}, ValueError, "size"),
    (({"a": len}, [8, 8], lambda n: n), {}, ValueError, "repeat"),
    (({"a": len}, [8], None), {}, TypeError, "make_input"),
    (({"a": len}, [8], lambda n: n), dict(measure="speed"), ValueError, "measure"),
    (({"a": len}, [8], lambda n: n), dict(repeats=0), ValueError, "repeats"),
    (({"a": len}, [8], lambda n: n), dict(size_label=3), TypeError, "size_label"),
])
def test_compare_sizes_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        bench.compare_sizes(*args, **kwargs)


# seconds_per_epoch -------------------------------------------------------------------------------

def test_seconds_per_epoch_scales_the_median_step(monkeypatch):
    steps = []

    def median_time(fn, n, device=None):
        fn()
        steps.append(n)
        return 0.02

    monkeypatch.setattr(bench, "median_time", median_time)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    assert bench.seconds_per_epoch(model, 7, batch_size=100, n_train=1_000) == pytest.approx(0.2)
    assert steps == [7]


def test_seconds_per_epoch_trains_a_copy(native_bf16):
    """The step runs in the precision fit would use on this kind of CPU; the model passed is untouched."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dtypes = []
    model[1].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    seconds = bench.seconds_per_epoch(model, 2, batch_size=8, n_train=80, input_shape=(3, 4, 4), num_classes=5)
    assert seconds > 0
    # a first pass checks the output's shape; then the warm-up and the two timed steps
    assert dtypes[1:] == [torch.bfloat16 if native_bf16 else torch.float32] * 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and next(model.parameters()).device.type == "cpu"


def test_seconds_per_epoch_full_precision_when_asked(native_bf16):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    dtypes = []
    model[1].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    bench.seconds_per_epoch(model, 1, batch_size=4, n_train=4, input_shape=(4,), num_classes=2, amp=False)
    assert set(dtypes) == {torch.float32}


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((nn.Linear(4, 2), 0), dict(input_shape=(4,), num_classes=2), ValueError, "steps"),
    ((nn.Linear(4, 2), 1.5), dict(input_shape=(4,), num_classes=2), ValueError, "steps"),
    (("model", 1), {}, TypeError, "nn.Module"),
    ((nn.Linear(4, 2), 1), dict(batch_size=0, input_shape=(4,)), ValueError, "batch_size"),
    ((nn.Linear(4, 2), 1), dict(input_shape=()), ValueError, "input_shape"),
    ((nn.Linear(4, 2), 1), dict(input_shape=(4, -1)), ValueError, "input_shape"),
    ((nn.Linear(4, 2), 1), dict(input_shape=(4,), amp="no"), TypeError, "amp"),
    ((nn.Linear(4, 2), 1), dict(input_shape=(4,), num_classes=10), ValueError, r"expected \(128, 10\)"),
    ((nn.Linear(4, 2), 1), dict(input_shape=(1, 28, 28)), ValueError, "cannot take a batch of shape"),
])
def test_seconds_per_epoch_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        bench.seconds_per_epoch(*args, **kwargs)


def test_layer_costs_counts_multiply_adds_by_hand():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2, groups=1),
                          nn.Flatten(), nn.Linear(4 * 3 * 3, 5))
    costs = bench.layer_costs(model.train(), torch.zeros(7, 2, 8, 8))
    assert [c.output_shape for c in costs] == [(3, 8, 8), (4, 3, 3), (5,)]
    assert [c.multiply_adds for c in costs] == [3 * 64 * 2 * 9, 4 * 9 * 3 * 9, 5 * 36]
    assert [c.parameters for c in costs] == [3 * 18 + 3, 4 * 27 + 4, 5 * 36 + 5]
    assert costs.multiply_adds == sum(c.multiply_adds for c in costs)
    assert model.training  # the mode is restored
    assert all(len(line) <= 79 for line in str(costs).splitlines())


def test_layer_costs_grouped_convolution_and_bad_input():
    grouped = nn.Conv2d(4, 8, 3, groups=2)
    (cost,) = bench.layer_costs(grouped, torch.zeros(1, 4, 5, 5))
    assert cost.multiply_adds == 8 * 9 * (4 // 2) * 9
    with pytest.raises(ValueError, match="batch"):
        bench.layer_costs(grouped, torch.zeros(4))
    with pytest.raises(TypeError, match="Module"):
        bench.layer_costs(lambda x: x, torch.zeros(1, 4, 5, 5))


def test_growth_exponent_is_the_slope_on_log_log_axes():
    sizes = [1024, 2048, 4096, 8192]
    assert bench.growth_exponent(sizes, [3e-6 * n**2 for n in sizes]) == pytest.approx(2.0)
    assert bench.growth_exponent([10, 1000], [5.0, 50.0]) == pytest.approx(0.5)
    # least squares, not first-to-last: a bent curve gets the fitted slope
    y = np.log([1.0, 2.0, 8.0])
    expected = np.polyfit(np.log([1, 2, 4]), y, 1)[0]
    assert bench.growth_exponent([1, 2, 4], [1.0, 2.0, 8.0]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="positive"):
        bench.growth_exponent([1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        bench.growth_exponent([1], [1.0])


def test_shape_table_follows_the_batch_and_skips_placeholders():
    layers = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Identity(), nn.ReLU(), nn.Dropout(0.0), nn.Flatten(),
                           nn.Linear(4 * 6 * 6, 10), nn.Dropout(0.5), nn.BatchNorm1d(10))
    layers.train()
    table = bench.shape_table(layers, torch.zeros(2, 1, 8, 8))
    assert [(s.kind, s.output_shape, s.parameters) for s in table] == [
        ("Conv2d", (2, 4, 6, 6), 40), ("ReLU", (2, 4, 6, 6), 0), ("Flatten", (2, 144), 0),
        ("Linear", (2, 10), 1450), ("Dropout", (2, 10), 0), ("BatchNorm1d", (2, 10), 20)]
    assert all(m.training for m in layers)  # run in eval mode (dropout 0.5 off), modes restored
    lines = str(table).splitlines()
    assert lines[3] == "Linear            (2, 10)                1,450 parameters"
    assert max(map(len, lines)) <= 79


def test_shape_table_bad_input():
    with pytest.raises(TypeError, match="nn.Sequential"):
        bench.shape_table(nn.Conv2d(1, 1, 3), torch.zeros(1, 1, 5, 5))
    with pytest.raises(TypeError, match=r"layers\[1\]"):
        bench.shape_table([nn.ReLU(), "relu"], torch.zeros(1, 2))
    with pytest.raises(ValueError, match="batch tensor"):
        bench.shape_table(nn.Sequential(nn.ReLU()), torch.zeros(3))
