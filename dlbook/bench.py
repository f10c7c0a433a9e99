"""How fast is it? The measurements behind every chapter's timing section.

- :func:`median_time`: the median wall time of a call, synchronising the
  GPU so that queued work is counted;
- :func:`peak_memory`: the most memory a call holds at once, in bytes, on
  the CPU (through the profiler) or on a CUDA GPU;
- :func:`compare_sizes`: several functions (ours against PyTorch's) on
  inputs of growing size, as a :class:`Comparison` that prints as a table
  and draws itself on log-log axes;
- :func:`growth_exponent`: the b of a cost that grows like N^b, from
  measurements at several sizes;
- :func:`seconds_per_epoch`: what one epoch of training a model costs;
- :func:`count_parameters`: trainable parameters;
- :func:`layer_costs`: parameters and multiply-adds of every convolution
  and linear layer, for one example;
- :func:`shape_table`: what each layer of a stack makes of a batch's shape.

The numbers are measured on this machine, now: run on an idle machine
when they are to be stored.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_bool, check_callable, check_device, check_int, check_module, check_str, describe
from .device import autocast, grad_scaler

QUANTITIES = ("time", "memory")
WIDTH = 79  # printed tables fit the book's column


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters (a parameter shared by two layers counts once)."""
    check_module(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _synchronize(device: torch.device | None) -> None:
    """Wait for the GPU: CUDA and MPS kernels run asynchronously, so a clock
    read right after a call would miss work that is still queued."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_time(fn: Callable[[], Any], repeats: int = 5, *, warmup: int = 1,
                device: torch.device | str | None = None) -> float:
    """The median wall time of ``fn()`` over ``repeats`` calls, in seconds.

    ``warmup`` calls come first and are not timed: a first call pays one-off
    costs (memory allocation, kernel selection). Each timed call is
    bracketed by a synchronisation of ``device``; with ``device=None``, CUDA
    is synchronised whenever it is in use. The median, unlike the mean, is
    not thrown by one call that the operating system interrupted.
    """
    check_callable(fn, "fn")
    repeats = check_int(repeats, "repeats", 1)
    warmup = check_int(warmup, "warmup", 0)
    device = None if device is None else check_device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def _quiet_profiler():
    """The profiler's library (kineto) prints two log lines to the process's
    stderr, which a notebook shows, unless its log level is set before its
    first use; the level is read once, so it is set only for that moment."""
    if "KINETO_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["KINETO_LOG_LEVEL"] = "6"  # above every level kineto logs at
    try:
        yield
    finally:
        os.environ.pop("KINETO_LOG_LEVEL", None)


def _cpu_peak_memory(fn: Callable[[], Any]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_profiler(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()  # noqa: F841 - held until the profiler stops: what fn returns counts
    # One "[memory]" record per allocation (+bytes) and per release (-bytes).
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in records:
        held += nbytes
        peak = max(peak, held)
    return peak


def peak_memory(fn: Callable[[], Any], *, device: torch.device | str = "cpu") -> int:
    """The most memory ``fn()`` holds at once beyond what was in use before, in bytes.

    On the CPU, the profiler records every tensor allocation and release
    (Python's ``tracemalloc`` does not see tensors); on CUDA, the caching
    allocator's peak statistic. What ``fn`` returns counts: it is still
    held when ``fn`` returns. Memory outside tensors (Python objects,
    oneDNN's scratch space) is not counted.

    Raises:
        ValueError: for a device other than the CPU or CUDA.
    """
    check_callable(fn, "fn")
    device = check_device(device)
    if device.type == "cpu":
        return _cpu_peak_memory(fn)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()  # noqa: F841 - held while the peak is read: what fn returns counts
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    raise ValueError(f"peak_memory measures the CPU or a CUDA device; got {str(device)!r}")


def _number(value: float) -> str:
    """Three significant digits, and never an exponent below 1000."""
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def _unit(value: float, quantity: str) -> tuple[str, float]:
    """The unit (and its size) that shows ``value`` with three or four digits."""
    units = ((("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)) if quantity == "time"
             else (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("B", 1)))
    return next(((u, s) for u, s in units if value >= s), units[-1])


def _format(value: float, quantity: str) -> str:
    """Seconds or bytes, in a unit that keeps three or four digits."""
    unit, scale = _unit(value, quantity)
    return f"{_number(value / scale)} {unit}"


def _format_range(low: float, high: float, quantity: str) -> str:
    """``low–high`` in the unit of ``high``."""
    unit, scale = _unit(high, quantity)
    return f"{_number(low / scale)}–{_number(high / scale)} {unit}"


def _ratio(value: float) -> str:
    return f"{value:.1e}" if value >= 10_000 else _number(value)


RANGE_WIDTH = 17  # the column of ranges over rounds, with its gap


def _check_widths(names, size_label: str, ranges: bool = False) -> None:
    """The printed table fits the book's column: the size and value columns
    take up to 26 characters (43 with a column of ranges over rounds),
    leaving the rest to the label and the names."""
    check_str(size_label, "size_label")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"function names must be non-empty strings; got {name!r}")
    room = WIDTH - 26 - (RANGE_WIDTH if ranges else 0)
    if len(size_label) + max(map(len, names)) > room:
        raise ValueError(f"size_label ({len(size_label)} characters) and the longest name "
                         f"({max(map(len, names))}) must together be at most {room} characters, "
                         f"so that the table fits {WIDTH} columns")


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_sizes` measured: one value per function and size.

    ``values[name][i]`` is the time in seconds (``quantity="time"``) or the
    peak memory in bytes (``"memory"``) of function ``name`` at
    ``sizes[i]``. When the measurement was repeated in several rounds,
    ``rounds[name][i]`` holds each round's value and ``values`` their
    median. ``print(comparison)`` shows a table that fits 79 columns (with
    the range over the rounds, if there were several); :meth:`markdown`
    gives the same table in Markdown; :meth:`plot` draws it.
    """

    quantity: str
    sizes: tuple[int, ...]
    values: Mapping[str, tuple[float, ...]]
    size_label: str = "size"
    rounds: Mapping[str, tuple[tuple[float, ...], ...]] | None = None

    def __post_init__(self) -> None:
        if self.quantity not in QUANTITIES:
            raise ValueError(f"quantity must be one of {', '.join(map(repr, QUANTITIES))}; got {self.quantity!r}")
        if not self.values or any(len(v) != len(self.sizes) for v in self.values.values()):
            raise ValueError(f"values must hold one number per size ({len(self.sizes)}) for each function")
        if self.rounds is not None and (set(self.rounds) != set(self.values) or any(
                len(r) != len(self.sizes) or any(len(x) == 0 for x in r) for r in self.rounds.values())):
            raise ValueError("rounds must hold, for each function of values, a non-empty tuple of values "
                             "per size")
        _check_widths(list(self.values), self.size_label, ranges=self.rounds is not None)

    def ratios(self, name: str, other: str) -> list[tuple[float, ...]]:
        """``name``'s value over ``other``'s at each size, round by round
        (one ratio per size without rounds)."""
        for n in (name, other):
            if n not in self.values:
                raise KeyError(f"{n!r} is not one of the functions compared: {', '.join(map(repr, self.values))}")
        if self.rounds is None:
            return [(a / b,) for a, b in zip(self.values[name], self.values[other])]
        return [tuple(a / b for a, b in zip(ra, rb)) for ra, rb in zip(self.rounds[name], self.rounds[other])]

    def rows(self) -> list[tuple[int, str, float, float]]:
        """``(size, name, value, times the smallest value at that size)``, size by size."""
        rows = []
        for i, size in enumerate(self.sizes):
            best = min(v[i] for v in self.values.values())
            for name, v in self.values.items():
                ratio = v[i] / best if best > 0 else (1.0 if v[i] == best else float("inf"))
                rows.append((size, name, v[i], ratio))
        return rows

    def _cells(self) -> list[tuple[str, ...]]:
        header = (self.size_label, "what", "peak memory" if self.quantity == "memory" else "time",
                  "× best")
        cells = [header] + [(str(size), name, _format(value, self.quantity), _ratio(ratio))
                            for size, name, value, ratio in self.rows()]
        if self.rounds is None:
            return cells
        n_rounds = min(len(r) for per_size in self.rounds.values() for r in per_size)
        ranges = [f"{n_rounds} rounds"] + [
            _format_range(min(self.rounds[name][self.sizes.index(size)]),
                          max(self.rounds[name][self.sizes.index(size)]), self.quantity)
            for size, name, _, _ in self.rows()]
        return [row + (r,) for row, r in zip(cells, ranges)]

    def __str__(self) -> str:
        cells = self._cells()
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        lines = []
        for row in cells:
            a, b, c, d = row[:4]
            line = f"{a:>{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}"
            if len(row) > 4:
                line += f"  {row[4]:>{widths[4]}}"
            lines.append(line.rstrip())
        return "\n".join(lines)

    def markdown(self) -> str:
        cells = self._cells()
        lines = ["| " + " | ".join(cells[0]) + " |", "|---:|---|---:|---:|" + ("---:|" if len(cells[0]) > 4 else "")]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
        return "\n".join(lines)

    def plot(self, title: str | None = None, ax=None):
        """Draw every function's values against the size on log-log axes; return the Figure."""
        import matplotlib.pyplot as plt

        from .plot import FIGSIZE

        if ax is None:
            fig, ax = plt.subplots(figsize=FIGSIZE)
        else:
            fig = ax.figure
        scale, unit = (1e3, "time per call (ms)") if self.quantity == "time" else (2**-20, "peak memory (MiB)")
        for name, v in self.values.items():
            # a zero cannot sit on a log axis: it is left out, not drawn as a tiny number
            y = [value * scale if value > 0 else float("nan") for value in v]
            ax.loglog(self.sizes, y, marker="o", label=name)
        ax.set_xticks(self.sizes, [str(s) for s in self.sizes])
        ax.minorticks_off()
        ax.set_xlabel(self.size_label)
        ax.set_ylabel(unit)
        ax.set_title(title or f"{'Time' if self.quantity == 'time' else 'Peak memory'} against {self.size_label}")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        return fig


def compare_sizes(fns: Mapping[str, Callable[..., Any]], sizes: Sequence[int],
                  make_input: Callable[[int], Any], *, measure: str = "time",
                  repeats: int | Callable[[int], int] = 5, size_label: str = "size",
                  device: torch.device | str | None = None, rounds: int = 1) -> Comparison:
    """Measure every function of ``fns`` on inputs of every size in ``sizes``.

    For each size, ``make_input(size)`` makes the input once (a tuple is
    passed as separate arguments) and each function is measured on it: the
    median time of ``repeats`` calls (:func:`median_time`; ``repeats`` may
    depend on the size: a function ``size -> int``), or its peak memory
    (:func:`peak_memory`, after one call that warms up). Run it under
    ``torch.no_grad()`` to leave autograd's bookkeeping out.

    With ``rounds`` above 1 (times only), the functions are measured in
    turn, ``rounds`` times over at each size (ours, theirs, ours, theirs,
    ...), so that a slow spell of the machine falls on all of them; the
    value is the median of the rounds' medians, and the result keeps every
    round (``Comparison.rounds``; the table shows their range).

    Example::

        cmp = compare_sizes({"ours": conv2d_unfold, "PyTorch": F.conv2d}, [8, 16, 32],
                            lambda n: (torch.randn(8, 3, n, n), weight))
        print(cmp)
        cmp.plot(title="Convolution: ours against PyTorch")
    """
    if not isinstance(fns, Mapping) or not fns:
        raise TypeError(f"fns must be a non-empty dict of name -> function; got {type(fns).__name__}")
    _check_widths(list(fns), size_label)
    for name, fn in fns.items():
        check_callable(fn, f"fns[{name!r}]")
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes:
        raise ValueError(f"sizes must be a non-empty list of positive integers; got {sizes!r}")
    sizes = tuple(check_int(s, "every size", 1) for s in sizes)
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes must not repeat; got {list(sizes)}")
    check_callable(make_input, "make_input")
    if measure not in QUANTITIES:
        raise ValueError(f"measure must be one of {', '.join(map(repr, QUANTITIES))}; got {measure!r}")
    if not callable(repeats):
        check_int(repeats, "repeats", 1)
    rounds = check_int(rounds, "rounds", 1)
    if rounds > 1 and measure != "time":
        raise ValueError(f"rounds apply to times only (a peak memory does not vary); got rounds={rounds} "
                         f"with measure={measure!r}")
    _check_widths(list(fns), size_label, ranges=rounds > 1)
    values: dict[str, list[float]] = {name: [] for name in fns}
    per_round: dict[str, list[tuple[float, ...]]] = {name: [] for name in fns}
    for size in sizes:
        args = make_input(size)
        args = args if isinstance(args, tuple) else (args,)
        if measure == "time":
            n = repeats(size) if callable(repeats) else repeats
            measured: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(rounds):
                for name, fn in fns.items():
                    measured[name].append(median_time(lambda f=fn: f(*args), n, device=device))
            for name in fns:
                values[name].append(statistics.median(measured[name]))
                per_round[name].append(tuple(measured[name]))
        else:
            for name, fn in fns.items():
                call = (lambda f=fn: f(*args))
                call()  # warm-up: one-off allocations are not the function's cost
                values[name].append(float(peak_memory(call, device="cpu" if device is None else device)))
    return Comparison(measure, sizes, {k: tuple(v) for k, v in values.items()}, size_label,
                      {k: tuple(v) for k, v in per_round.items()} if rounds > 1 else None)


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """The exponent b of ``value ~ size^b``: the slope of the least-squares
    line through the points (log size, log value), the slope on log-log
    axes. With two sizes it is log(v2 / v1) / log(s2 / s1). Pass the
    sizes over which the cost follows one law (a computation whose data
    drop out of the CPU's caches between two sizes changes its constant).

    Shapes:
        sizes: (n,), values: (n,) -> a float
    """
    if isinstance(sizes, (str, bytes)) or isinstance(values, (str, bytes)):
        raise TypeError("sizes and values must be sequences of numbers")
    s, v = [float(a) for a in sizes], [float(a) for a in values]
    if len(s) != len(v) or len(s) < 2:
        raise ValueError(f"sizes and values must have the same length, at least 2; got {len(s)} and {len(v)}")
    if min(s) <= 0 or min(v) <= 0:
        raise ValueError(f"sizes and values must be positive (they are put on log axes); got {s} and {v}")
    if len(set(s)) < 2:
        raise ValueError(f"sizes must hold at least two different sizes; got {s}")
    x, y = [math.log(a) for a in s], [math.log(a) for a in v]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)


def seconds_per_epoch(model: nn.Module, steps: int = 10, *, batch_size: int = 128,
                      n_train: int = 60_000, input_shape: Sequence[int] = (1, 28, 28),
                      num_classes: int = 10, device: torch.device | str = "cpu",
                      amp: bool = True) -> float:
    """Estimate the time of one training epoch of ``model``, in seconds.

    Times ``steps`` training steps (forward, cross-entropy loss, backward,
    AdamW update) on one random batch of ``batch_size`` inputs of shape
    ``input_shape``, with mixed precision where :func:`dlbook.autocast`
    uses it (as :func:`dlbook.fit` does), and scales the median step to
    ``n_train / batch_size`` steps. Data loading is not included. A copy
    of the model is trained: ``model`` itself does not change.

    Shapes:
        model: (B, *input_shape) -> (B, num_classes)
    """
    check_module(model)
    steps = check_int(steps, "steps", 1)
    batch_size = check_int(batch_size, "batch_size", 1)
    n_train = check_int(n_train, "n_train", 1)
    num_classes = check_int(num_classes, "num_classes", 1)
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape:
        raise ValueError(f"input_shape must be a non-empty tuple of positive integers; got {input_shape!r}")
    input_shape = tuple(check_int(n, "input_shape", 1) for n in input_shape)
    device = check_device(device)
    amp = check_bool(amp, "amp")
    model = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = grad_scaler(device, enabled=amp)
    x = torch.randn(batch_size, *input_shape, device=device)  # (B, *input_shape)
    y = torch.randint(0, num_classes, (batch_size,), device=device)  # (B,)
    with torch.no_grad():
        try:
            shape = tuple(model(x).shape)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"the model cannot take a batch of shape {tuple(x.shape)}: pass its "
                             f"input_shape (got {input_shape}). It said: {err}") from err
    if shape != (batch_size, num_classes):
        raise ValueError(f"the model maps {tuple(x.shape)} to {shape}; expected ({batch_size}, {num_classes}): "
                         f"pass its num_classes")

    def step() -> None:
        with autocast(device, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return median_time(step, steps, device=device) * n_train / batch_size


@dataclass(frozen=True)
class LayerCost:
    """One convolution or linear layer: its output shape (for one example),
    parameters, and multiply-adds for one example."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int
    multiply_adds: int


class Costs(list):
    """The :class:`LayerCost` of every convolution and linear layer, in the
    order they ran. ``print`` shows a table that fits 79 columns."""

    @property
    def multiply_adds(self) -> int:
        return sum(c.multiply_adds for c in self)

    @property
    def parameters(self) -> int:
        return sum(c.parameters for c in self)

    def __str__(self) -> str:
        total = self.multiply_adds or 1
        lines = [f"{'layer':16s} {'kind':9s} {'output':>12s} {'parameters':>11s} {'mult-adds':>13s} {'share':>6s}"]
        for c in self:
            shape = "x".join(map(str, c.output_shape))
            lines.append(f"{c.name[:16]:16s} {c.kind:9s} {shape:>12s} {c.parameters:11,d} "
                         f"{c.multiply_adds:13,d} {c.multiply_adds / total:6.1%}")
        lines.append(f"{'total':16s} {'':9s} {'':>12s} {self.parameters:11,d} {self.multiply_adds:13,d}")
        return "\n".join(lines)


@dataclass(frozen=True)
class LayerShape:
    """One layer of a stack: its class name, the shape it makes of the
    batch, and its trainable parameters."""

    kind: str
    output_shape: tuple[int, ...]
    parameters: int


class Shapes(list):
    """The :class:`LayerShape` of every layer, in order. ``print`` shows a
    table that fits 79 columns."""

    def __str__(self) -> str:
        return "\n".join(f"{s.kind:17s} {str(s.output_shape):17s} {s.parameters:10,d} parameters" for s in self)


def shape_table(layers: Sequence[nn.Module], x: torch.Tensor) -> Shapes:
    """Pass ``x`` through ``layers`` one at a time and record what each makes of it.

    ``layers`` is an ``nn.Sequential`` (or any sequence of modules applied
    in turn). The batch's shape after each layer is recorded with the
    layer's trainable parameters. Placeholders that leave the batch as it
    is (``nn.Identity``, ``nn.Dropout(0)``, which a network has where a
    variant has batch normalization or dropout) are left out of the table.
    The layers run in evaluation mode, without gradients; their modes are
    restored.

    Shapes:
        x: (B, ...) -> one row per layer, each with the batch's shape after it
    """
    if isinstance(layers, nn.Module) and not isinstance(layers, (nn.Sequential, nn.ModuleList)):
        raise TypeError(f"layers must be an nn.Sequential or a sequence of modules; got one "
                        f"{type(layers).__name__} (wrap it: nn.Sequential(module))")
    if not isinstance(layers, (nn.Sequential, nn.ModuleList, list, tuple)):
        raise TypeError(f"layers must be an nn.Sequential or a sequence of modules; got {describe(layers)}")
    layers = list(layers)
    for i, layer in enumerate(layers):
        check_module(layer, f"layers[{i}]")
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a batch tensor (B, ...); got {describe(x)}")
    modes = [layer.training for layer in layers]
    table = Shapes()
    try:
        with torch.no_grad():
            for layer in layers:
                x = layer.eval()(x)
                placeholder = isinstance(layer, nn.Identity) or (isinstance(layer, nn.Dropout) and layer.p == 0)
                if not placeholder:
                    table.append(LayerShape(type(layer).__name__, tuple(x.shape), count_parameters(layer)))
    finally:
        for layer, mode in zip(layers, modes):
            layer.train(mode)
    return table


def layer_costs(model: nn.Module, x: torch.Tensor) -> Costs:
    r"""Parameters and multiply-adds, for one example, of each ``nn.Conv2d`` and ``nn.Linear``.

    A convolution computes each of its $C_\text{out} H_\text{out} W_\text{out}$
    outputs with $(C_\text{in}/\text{groups})\, k_h k_w$ multiply-adds; a linear
    layer each of its outputs with ``in_features``. Other layers (activations,
    normalization, pooling) cost comparatively little and are not counted.
    ``x`` is a batch; the counts are divided by its size. The model runs
    once, in evaluation mode, without gradients.

    Shapes:
        x: (B, ...) -> one row per layer
    """
    check_module(model)
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a batch tensor (B, ...); got {describe(x)}")
    costs = Costs()
    names = {module: name for name, module in model.named_modules()}

    def hook(module, inputs, output):
        per_example = output[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            each = module.in_channels // module.groups * kh * kw
            kind = f"conv{kh}x{kw}"
        else:
            each = module.in_features
            kind = "linear"
        params = sum(p.numel() for p in module.parameters())
        costs.append(LayerCost(names[module] or "model", kind, tuple(per_example.shape), params,
                               per_example.numel() * each))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return costs
