r"""One training loop for the whole book.

:func:`fit` repeats a *step* on batches from a loader. A step is a small
function ``step(model, batch) -> dict`` that returns scalars, at least
``"loss"``:

* With an ``optimizer``, :func:`fit` does the update itself: it
  back-propagates the step's ``"loss"``, clips the gradient if asked, and
  steps the optimizer and the scheduler. :func:`supervised` is that kind of
  step: $\hat y = f(x)$, ``loss_fn(y_hat, y)``.
* Without one, the step updates its own optimizers (a GAN's discriminator
  and generator steps, k critic steps per generator step) with
  :func:`gradient_step`, and :func:`fit` only records, evaluates and
  checkpoints.

The run is measured in ``epochs`` (passes over a loader with a length) or
in ``max_steps`` (any iterable, also one without a length, such as random
windows of a text). Everything a step returns is recorded in a
:class:`History`, averaged per logging interval under ``train_<name>``,
together with every named evaluation (``val_<name>``, ``test_<name>``, or
any function of the model). Extra objects with state (an EMA, a
discriminator, a second optimizer) go in ``state=``: they are checkpointed
with the model and restored on resume. A checkpoint is only ever resumed by
the same run: see :func:`fit`.

Three examples::

    # supervised: fit owns the optimizer
    fit(model, train_loader, step=supervised(F.cross_entropy), optimizer=opt,
        epochs=8, evals={"val": val_loader})

    # a GAN: the step updates both networks itself
    fit(generator, loader, step=gan_step, max_steps=5000,
        state={"D": critic, "opt_g": opt_g, "opt_d": opt_d}, eval_every=500)

    # a DDPM: fit owns the optimizer, an EMA follows the weights
    ema = EMA(unet, decay=0.999)
    fit(unet, loader, step=ddpm_step, optimizer=opt, max_steps=20_000,
        after_step=ema.update, state={"ema": ema})
"""

from __future__ import annotations

import contextlib
import functools
import linecache
import math
import numbers
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ._checks import check_bool, check_device, check_int
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .device import amp_dtype, autocast, get_device, grad_scaler
from .fingerprint import describe, digest, tensor_digest
from .paths import checkpoints_dir
from .profiles import get_profile

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Step = Callable[[nn.Module, Any], Mapping[str, Any]]
CHECKPOINT_FORMAT = "dlbook-run-4"


class TrainingError(RuntimeError):
    """Training cannot go on: a loss or another recorded value is not finite."""


def checkpoint_path(name: str) -> Path:
    """Where a chapter keeps the checkpoint of its run ``name``.

    ``DLBOOK_CHECKPOINTS`` or ``<cache root>/checkpoints``; the file name
    carries the profile, so a smoke run never resumes a full one.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise ValueError(f"checkpoint name must be a plain file name (letters, digits, '_', '-', '.'); got {name!r}")
    return checkpoints_dir() / f"{name}-{get_profile()}.pt"


# batches ----------------------------------------------------------------------

def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move a batch to ``device``: a tensor, a (named) tuple, list or dict of
    them, or any object with a ``.to(device)`` method (a graph). Other values
    (numbers, strings, ``None``) are returned as they are."""
    device = check_device(device)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(to_device(b, device) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if callable(getattr(batch, "to", None)):
        return batch.to(device)
    return batch


def _batch_size(batch: Any) -> int:
    """The length of the first tensor in a batch (1 when there is none)."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.dim() else 1
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        if isinstance(item, torch.Tensor) and item.dim():
            return len(item)
    return 1


# steps ------------------------------------------------------------------------

def _is_classification(y_hat: torch.Tensor, y: torch.Tensor) -> bool:
    return y_hat.dim() == 2 and y.dim() == 1 and not torch.is_floating_point(y)


def _tensor_text(t: torch.Tensor) -> str:
    """``float32 [8, 5]``, and the device when it is not the CPU: for error messages."""
    where = "" if t.device.type == "cpu" else f" on {t.device}"
    return f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}{where}"


def _describe_batch(batch: Any, names: tuple[str, ...] | None = None) -> str:
    """The dtypes and shapes in a batch, such as ``(x: float32 [8, 5], y: int64 [8])``."""
    if isinstance(batch, torch.Tensor):
        return _tensor_text(batch)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        names = batch._fields
    if isinstance(batch, (list, tuple)):
        parts = [_describe_batch(b) for b in batch[:8]]
        if names is not None and len(names) == len(batch):
            parts = [f"{n}: {p}" for n, p in zip(names, parts)]
        parts += [f"... ({len(batch)} items)"] if len(batch) > 8 else []
        return f"({', '.join(parts)})" if isinstance(batch, tuple) else f"[{', '.join(parts)}]"
    if isinstance(batch, dict):
        return "{" + ", ".join(f"{k!r}: {_describe_batch(v)}" for k, v in list(batch.items())[:8]) + (
            ", ..." if len(batch) > 8 else "") + "}"
    text = repr(batch)
    return text if len(text) <= 200 else f"a {type(batch).__name__}"


def _callable_name(fn) -> str:
    """``cross_entropy``, ``CrossEntropyLoss()``, ``cross_entropy(label_smoothing=0.1)``, ``my_step``."""
    if isinstance(fn, functools.partial):
        args = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in fn.keywords.items()]
        return f"{_callable_name(fn.func)}({', '.join(args)})"
    if isinstance(fn, nn.Module):
        return f"{type(fn).__name__}()"
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def _class_index_loss(loss_fn) -> tuple[bool, int]:
    """Whether ``loss_fn`` takes class indices as targets (cross-entropy,
    negative log-likelihood), and its ``ignore_index``."""
    keywords: dict = {}
    while isinstance(loss_fn, functools.partial):
        keywords = {**loss_fn.keywords, **keywords}
        loss_fn = loss_fn.func
    if loss_fn is F.cross_entropy or loss_fn is F.nll_loss:
        return True, keywords.get("ignore_index", -100)
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return True, loss_fn.ignore_index
    return False, -100


class LabelError(ValueError):
    """Labels that a cross-entropy (or NLL) loss cannot take: of another dtype
    than int64, or not a class of the model. The message names the label,
    the number of classes and the batch."""


def _check_class_labels(y_hat: Any, y: Any, ignore_index: int, batch) -> None:
    """The class indices a cross-entropy (or NLL) loss is about to get, checked before it.

    Float or int32 labels of the labels' shape, and labels outside
    ``0..K-1`` (other than ``ignore_index``), are refused with the label,
    ``K`` and the batch. Class probabilities (``y`` shaped like ``y_hat``)
    and shapes the loss refuses itself are left to the loss.

    It runs at every step, in training and in :func:`evaluate`: a bad label
    can sit in any batch, and on a GPU the loss meets it with a device-side
    assert that leaves the CUDA context unusable. The cost is one min/max of
    the labels and one synchronisation per batch, which :func:`fit` pays
    anyway for its check of a non-finite loss.
    """
    if not (isinstance(y_hat, torch.Tensor) and isinstance(y, torch.Tensor)) or y_hat.dim() == 0:
        return
    batched = y_hat.dim() >= 2
    classes = y_hat.shape[1] if batched else y_hat.shape[0]
    label_shape = (y_hat.shape[:1] + y_hat.shape[2:]) if batched else torch.Size()
    if y.shape != label_shape:
        return
    where = (f"The batch: (x: {_describe_batch(batch[0])}, y: {_tensor_text(y)}); "
             f"the model's output y_hat: {_tensor_text(y_hat)}.")
    if y.dtype not in (torch.int64, torch.uint8):
        dtype = str(y.dtype).removeprefix("torch.")
        raise LabelError(f"the labels y are {dtype}; cross-entropy wants class indices (int64): use y.long(). "
                         f"{where}")
    if y.numel() == 0:
        return
    low, high = torch.aminmax(y)
    if not bool((low < 0) | (high >= classes)):  # the one synchronisation
        return
    counted = y[y != ignore_index]
    if counted.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(counted))
    if low >= 0 and high < classes:
        return
    bad = high if high >= classes else low
    at = ", ".join(str(i) for i in (y == bad).nonzero()[0].tolist())
    ignored = f" (a label to ignore must equal ignore_index, here {ignore_index})" if bad < 0 else ""
    raise LabelError(f"label {bad} (y[{at}]) is not a class of this model: its output has {classes} classes "
                     f"(dim {1 if batched else 0} of y_hat), so labels must lie in 0..{classes - 1}{ignored}. "
                     f"{where}")


@dataclass(frozen=True)
class Supervised:
    """The supervised step: ``y_hat = model(x)``, ``loss = loss_fn(y_hat, y)``.

    For classifiers (``y_hat`` of shape (B, K), integer ``y`` of shape (B,))
    it also returns the accuracy, ``acc``. With a cross-entropy or NLL loss
    (``F.cross_entropy``, ``F.nll_loss``, ``nn.CrossEntropyLoss``,
    ``nn.NLLLoss``, or a ``functools.partial`` of one) the labels are checked
    before the loss: int64 (or uint8, which torch also takes) class indices
    in ``0..K-1``, or ``ignore_index`` (a :class:`LabelError` otherwise).
    """

    loss_fn: LossFn = F.cross_entropy

    def __call__(self, model: nn.Module, batch) -> dict:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            got = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
            raise ValueError(f"the supervised step expects (x, y) batches; got {got}")
        x, y = batch
        y_hat = model(x)
        class_indices, ignore_index = _class_index_loss(self.loss_fn)
        if class_indices:
            _check_class_labels(y_hat, y, ignore_index, batch)
        out = {"loss": self.loss_fn(y_hat, y)}
        if _is_classification(y_hat, y):
            out["acc"] = (y_hat.argmax(1) == y).float().mean()
        return out


def supervised(loss_fn: LossFn = F.cross_entropy) -> Supervised:
    """A supervised step with ``loss_fn(y_hat, y)`` (default cross-entropy)."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function loss_fn(y_hat, y); got {type(loss_fn).__name__}")
    return Supervised(loss_fn)


def _step_name(step) -> str:
    if isinstance(step, Supervised):
        return f"supervised({_callable_name(step.loss_fn)})"
    return _callable_name(step)


# errors at the first step -----------------------------------------------------

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _raised_by_torch(err: BaseException) -> bool:
    """Whether ``err`` came out of torch (an operation that failed), not from
    a ``raise`` in the book's or the reader's own code."""
    tb = err.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if filename.startswith(_TORCH_DIR):
        return True
    return not linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def _is_uninitialized(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return isinstance(weight, nn.parameter.UninitializedParameter)


def _expectation(module: nn.Module, inp: torch.Tensor | None) -> tuple[str, bool] | None:
    """What a Linear, convolution or embedding expects of its input, and
    whether ``inp`` disagrees; ``None`` for other layers."""
    if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)) or _is_uninitialized(module):
        return None
    dtype = str(module.weight.dtype).removeprefix("torch.")
    # float64 meets float32 weights only by mistake; bfloat16/float16 inputs are what autocast gives
    wrong_dtype = inp is not None and (not inp.is_floating_point() or (
        (inp.dtype == torch.float64) != (module.weight.dtype == torch.float64)))
    if isinstance(module, nn.Linear):
        expects = f"{dtype} input with {module.in_features} features (its last dimension)"
        wrong = inp is not None and (wrong_dtype or inp.dim() == 0 or inp.shape[-1] != module.in_features)
        return expects, wrong
    if isinstance(module, nn.modules.conv._ConvNd):
        n = len(module.kernel_size)
        spatial = ", ".join(("L",) if n == 1 else ("H", "W") if n == 2 else ("D", "H", "W"))
        expects = f"{dtype} input (B, {module.in_channels}, {spatial}) with {module.in_channels} channels"
        wrong = inp is not None and (wrong_dtype or inp.dim() not in (n + 1, n + 2)
                                     or inp.shape[-(n + 1)] != module.in_channels)
        return expects, wrong
    if isinstance(module, nn.Embedding):
        expects = f"integer ids in 0..{module.num_embeddings - 1}"
        wrong = inp is not None and (inp.is_floating_point() or inp.dtype == torch.bool or (
            inp.numel() > 0 and not inp.is_meta and (int(inp.min()) < 0 or int(inp.max()) >= module.num_embeddings)))
        return expects, wrong
    return None


def _input_text(module: nn.Module, inp: torch.Tensor) -> str:
    text = _tensor_text(inp)
    if isinstance(module, nn.Embedding) and inp.numel() and not inp.is_floating_point() and not inp.is_meta:
        text += f" with ids {int(inp.min())}..{int(inp.max())}"
    return text


class _LayerTrace:
    """Hooks on the model's layers during the first step: which layer was
    running when an error came, with what input, and the model's output."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.running = None  # (name, module, input) of the layer that has begun and not finished
        self.first = None  # (name, module) of the first layer that ran
        self.finished = None  # (name, module, output) of the last layer that finished
        self.output = None  # the model's output, once it has run
        self.handles = []
        try:
            for name, module in model.named_modules():
                if next(module.children(), None) is None:  # a layer, not a container
                    self.handles.append(module.register_forward_pre_hook(functools.partial(self._enter, name)))
                    self.handles.append(module.register_forward_hook(functools.partial(self._leave, name)))
            self.handles.append(model.register_forward_hook(self._done))
        except (RuntimeError, AttributeError):  # a scripted model: no explanation, no harm
            self.remove()

    def _enter(self, name, module, args):
        inp = args[0] if args and isinstance(args[0], torch.Tensor) else None
        self.running = (name, module, inp)
        if self.first is None:
            self.first = (name, module)

    def _leave(self, name, module, args, output):
        self.running = None
        self.finished = (name, module, output if isinstance(output, torch.Tensor) else None)

    def _done(self, module, args, output):
        self.output = output if isinstance(output, torch.Tensor) else None

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles, self.running, self.finished, self.output = [], None, None, None

    def _label(self, name: str, module: nn.Module) -> str:
        """``the model's first layer Linear '0'``, ``the model's layer BatchNorm1d 'norm'``."""
        first = self.first is not None and self.first[1] is module
        return f"the model's {'first ' if first else ''}layer {type(module).__name__}" + (f" '{name}'" if name else "")

    def explain(self) -> str:
        """What the model expected, as far as the hooks saw."""
        if self.running is not None:
            name, module, inp = self.running
            label = self._label(name, module)
            got = "no tensor" if inp is None else _input_text(module, inp)
            expectation = _expectation(module, inp)
            if expectation is not None and expectation[1]:
                return f"{label} expects {expectation[0]}, but its input is {got}"
            return f"the error came from {label} ({module!r}), on its input {got}"
        if self.output is not None:
            return f"the model's output: {_tensor_text(self.output)}"
        if self.finished is not None:
            name, module, out = self.finished
            got = "no tensor" if out is None else _tensor_text(out)
            return f"the error came after {self._label(name, module)}, whose output is {got}"
        for name, module in self.model.named_modules():
            expectation = _expectation(module, None)
            if expectation is not None:
                kind = f"{type(module).__name__}" + (f" '{name}'" if name else "")
                return f"the model's first layer {kind} expects {expectation[0]}"
        return ""


def _same_kind(err: BaseException, message: str) -> BaseException:
    """A new error of ``err``'s class carrying ``message`` (else of the builtin class it derives from)."""
    try:
        new = type(err)(message)
        if str(new) == message:
            return new
    except Exception:  # noqa: BLE001 - a class with another constructor
        pass
    base = next(c for c in type(err).__mro__ if c in (RuntimeError, ValueError, TypeError, IndexError))
    return base(message)


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                  max_grad_norm: float | None = None) -> None:
    """One update of ``optimizer`` on ``loss``: zero the gradients,
    back-propagate, clip their norm to ``max_grad_norm`` if given, step.

    For steps that update their own optimizers (``fit`` without ``optimizer``).
    """
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.requires_grad:
        raise ValueError("gradient_step needs a scalar loss tensor that requires grad")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()


# history ----------------------------------------------------------------------

@dataclass
class History:
    """What :func:`fit` recorded: one dict per logging point.

    Every record has ``step`` (optimizer steps so far), ``seconds`` (training
    time so far; evaluation and checkpointing excluded) and, for a loader
    with a length, ``epoch`` (fractional within an epoch). ``train_<name>``
    is the mean of what the step returned as ``<name>`` over the steps since
    the previous record. At evaluation points there is also ``<eval>_<name>``
    for every named evaluation (``val_loss``, ``val_acc``, ``test_acc``, ...).
    """

    records: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    def __repr__(self) -> str:
        return f"History({len(self.records)} records; keys: {', '.join(self.keys())})"

    def keys(self) -> list[str]:
        """Every key that some record has, in first-seen order."""
        return list(dict.fromkeys(k for r in self.records for k in r))

    def column(self, key: str) -> list:
        """All recorded values of ``key``, in order (records without it skipped)."""
        return [r[key] for r in self.records if key in r]

    def series(self, key: str) -> tuple[list, list]:
        """``(steps, values)`` of the records that hold ``key``, for plotting against the step."""
        rows = [r for r in self.records if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    def first_reaching(self, key: str, value: float) -> dict | None:
        """The first record whose ``key`` is at least ``value``, or ``None``."""
        for r in self.records:
            if r.get(key, -math.inf) >= value:
                return r
        return None

    def best(self, key: str, mode: str = "max") -> dict:
        """The record with the largest (``mode="max"``) or smallest (``"min"``) ``key``."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}")
        rows = [r for r in self.records if key in r]
        if not rows:
            raise KeyError(f"no record has {key!r}; keys: {self.keys()}")
        return (max if mode == "max" else min)(rows, key=lambda r: r[key])

    @property
    def last(self) -> dict:
        """The last record."""
        if not self.records:
            raise IndexError("the history is empty")
        return self.records[-1]


# EMA --------------------------------------------------------------------------

class EMA:
    r"""An exponential moving average of a model's weights.

    After every step, $\bar\theta \leftarrow \beta\,\bar\theta + (1 - \beta)\,\theta$
    for every floating-point entry of the state dict (parameters and
    buffers such as batch-norm statistics); integer entries are copied.
    Use it as ``fit(..., after_step=ema.update, state={"ema": ema})`` and
    evaluate with ``with ema.applied_to(model): ...``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a number in [0, 1); got {decay!r}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def fingerprint(self) -> str:
        return f"EMA(decay={self.decay})"

    def _check(self, model: nn.Module) -> dict:
        state = model.state_dict()
        if {k: v.shape for k, v in state.items()} != {k: v.shape for k, v in self.shadow.items()}:
            raise ValueError("this EMA was made for another model: the names or shapes of its weights differ")
        return state

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        for key, value in self._check(model).items():
            avg = self.shadow[key]
            if avg.device != value.device:
                avg = self.shadow[key] = avg.to(value.device)
            if torch.is_floating_point(value):
                avg.lerp_(value.detach(), 1.0 - self.decay)  # avg + (1 - decay) (value - avg)
            else:
                avg.copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s weights with the average."""
        self._check(model)
        model.load_state_dict(self.shadow)

    @contextlib.contextmanager
    def applied_to(self, model: nn.Module):
        """Within the block ``model`` holds the averaged weights; its own come back after."""
        own = {k: v.detach().clone() for k, v in self._check(model).items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("shadow", {})
        if {k: v.shape for k, v in saved.items()} != {k: v.shape for k, v in self.shadow.items()}:
            raise ValueError("the saved EMA belongs to another model: the names or shapes of its weights differ")
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        self.shadow = {k: v.detach().clone() for k, v in state["shadow"].items()}


# evaluation -------------------------------------------------------------------

def _scalars(out: Any, who: str) -> dict:
    """Check that ``out`` is a dict of scalars (numbers or one-element tensors)."""
    if not isinstance(out, Mapping):
        raise TypeError(f"{who} must return a dict of scalars such as {{'loss': loss}}; got {type(out).__name__}")
    for key, value in out.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise ValueError(f"{who} returned the key {key!r}; keys must be names such as 'loss' or 'kl'")
        is_scalar = (isinstance(value, torch.Tensor) and value.numel() == 1) or (
            isinstance(value, numbers.Real) and not isinstance(value, bool))
        if not is_scalar:
            what = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{who} returned {key!r} as {what}; every value must be a scalar")
    return dict(out)


def evaluate(model: nn.Module, loader: Iterable, step: Step | None = None, *,
             device: torch.device | str | None = None, amp: bool = True, grad: bool = False) -> dict:
    """The mean of what ``step`` returns over ``loader``, with ``model`` in evaluation mode.

    Args:
        step: default :func:`supervised` with cross-entropy (``loss`` and
            ``acc``). Its values are averaged over batches weighted by their
            size, so they are means over the examples.
        device: default: where the model's parameters are.
        amp: mixed precision where it pays (:func:`dlbook.autocast`).
        grad: compute with gradients enabled, for a step that needs them
            (an adversarial attack inside evaluation). The model's own
            gradients are left as they were.

    The model's training mode is restored afterwards.
    """
    step = supervised() if step is None else step
    if not callable(step):
        raise TypeError(f"step must be a function step(model, batch) -> dict; got {type(step).__name__}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = check_device(device)
    amp, grad = check_bool(amp, "amp"), check_bool(grad, "grad")
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    params = list(model.parameters())
    saved_grads = [p.grad for p in params] if grad else None
    if grad:  # gradients an attack computes must not add to the model's own
        for p in params:
            p.grad = None
    try:
        with torch.set_grad_enabled(grad):
            for batch in loader:
                batch = to_device(batch, device)
                with autocast(device, enabled=amp):
                    out = _scalars(step(model, batch), "the evaluation step")
                n = _batch_size(batch)
                for key, value in out.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * n
                count += n
    finally:
        model.train(was_training)
        if saved_grads is not None:
            for p, g in zip(params, saved_grads):
                p.grad = g
    if count == 0:
        raise ValueError("evaluate() got an empty loader")
    return {key: total / count for key, total in totals.items()}


def predictions(model: nn.Module, loader: Iterable, *, device: torch.device | str | None = None,
                amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The class ``model`` gives every example of ``loader`` (the argmax of
    its scores), with the labels.

    The model runs in evaluation mode, batch by batch, without gradients and
    under the same mixed precision as :func:`evaluate` (``amp``), so that
    the accuracy of these predictions is the accuracy :func:`evaluate`
    reports. Hand them to :func:`dlbook.stats.accuracy`, or the ``y_hat ==
    y`` of two models on the same examples to :func:`dlbook.stats.mcnemar`.
    The model's training mode is restored afterwards.

    Shapes:
        loader: batches (x (B, ...), y (B,)) -> y_hat (N,), y (N,), int64 on the CPU
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    amp = check_bool(amp, "amp")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = check_device(device)
    was_training = model.training
    model.eval()
    found, labels = [], []
    try:
        with torch.no_grad():
            for batch in loader:
                if not isinstance(batch, (list, tuple)) or len(batch) != 2:
                    raise ValueError(f"loader must yield (x, y) batches; got a {type(batch).__name__}"
                                     + (f" of length {len(batch)}" if isinstance(batch, (list, tuple)) else ""))
                x, y = to_device(batch, device)
                with autocast(device, enabled=amp):
                    scores = model(x)  # (B, K)
                if scores.dim() != 2 or scores.shape[0] != len(y):
                    raise ValueError(f"the model must return scores of shape (B, K) = ({len(y)}, K); "
                                     f"got {tuple(scores.shape)}")
                found.append(scores.argmax(1).cpu())
                labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not found:
        raise ValueError("predictions() got an empty loader")
    return torch.cat(found).long(), torch.cat(labels).long()


# random state -----------------------------------------------------------------

def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# argument checks --------------------------------------------------------------

def _has_len(loader) -> bool:
    try:
        len(loader)
    except TypeError:
        return False
    return True


def _check_optimizer(optimizer, model: nn.Module, state: dict) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    ours = {id(p) for p in model.parameters()}
    for obj in state.values():
        if isinstance(obj, nn.Module):
            ours |= {id(p) for p in obj.parameters()}
    theirs = [p for group in optimizer.param_groups for p in group["params"]]
    model_ids = {id(p) for p in model.parameters()}
    if not any(id(p) in model_ids for p in theirs):
        raise ValueError("the optimizer holds none of the model's parameters, so training would change "
                         "nothing: build it over this model, e.g. torch.optim.AdamW(model.parameters())")
    strangers = sum(id(p) not in ours for p in theirs)
    if strangers:
        raise ValueError(f"{strangers} of the optimizer's parameters belong neither to the model nor to a "
                         f"module in state=: was it built over another model?")
    for i, group in enumerate(optimizer.param_groups):
        for key, value in group.items():
            values = value if isinstance(value, (tuple, list)) and key != "params" else [value]
            for v in values:
                if isinstance(v, torch.Tensor) and v.numel() == 1:
                    v = v.item()
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"the optimizer's {key} is {v} (parameter group {i}); it must be a finite number")
        lr = group.get("lr")
        lr = lr.item() if isinstance(lr, torch.Tensor) else lr
        if isinstance(lr, numbers.Real) and lr < 0:
            raise ValueError(f"the optimizer's learning rate is {lr}; it must be >= 0")


_EVAL_NAME = re.compile(r"[a-z][a-z0-9_]*")


# the loop ---------------------------------------------------------------------

@dataclass
class _Plan:
    """When to log, evaluate (and checkpoint), and when to stop."""

    total: int
    epochs: int | None
    steps_per_pass: int | None
    eval_points: set[int]
    eval_every: int | None
    log_every: int | None

    def evaluates_at(self, step: int) -> bool:
        return step == self.total or step in self.eval_points or bool(self.eval_every and step % self.eval_every == 0)

    def logs_at(self, step: int) -> bool:
        return self.evaluates_at(step) or bool(self.log_every and step % self.log_every == 0)


def _make_plan(loader, epochs, max_steps, eval_every, evals_per_epoch, log_every) -> _Plan:
    if (epochs is None) == (max_steps is None):
        raise ValueError("give exactly one of epochs= (passes over a loader with a length) or max_steps=")
    sized = _has_len(loader)
    steps_per_pass = len(loader) if sized else None
    if sized and steps_per_pass == 0:
        raise ValueError("the training loader is empty (length 0)")
    if eval_every is not None and evals_per_epoch is not None:
        raise ValueError("give eval_every= (steps) or evals_per_epoch=, not both")
    eval_every = None if eval_every is None else check_int(eval_every, "eval_every", 1)
    log_every = None if log_every is None else check_int(log_every, "log_every", 1)
    eval_points: set[int] = set()
    if epochs is not None:
        epochs = check_int(epochs, "epochs", 0)
        if not sized:
            raise ValueError("epochs= needs a loader with a length; for an endless loader (random windows "
                             "of a text) give max_steps= instead")
        total = epochs * steps_per_pass
        if eval_every is None:
            k = 1 if evals_per_epoch is None else check_int(evals_per_epoch, "evals_per_epoch", 1)
            if k > steps_per_pass:
                raise ValueError(f"evals_per_epoch={k} is more than the {steps_per_pass} steps of an epoch")
            eval_points = {e * steps_per_pass + round(steps_per_pass * (i + 1) / k)
                           for e in range(epochs) for i in range(k)}
    else:
        total = check_int(max_steps, "max_steps", 0)
        if evals_per_epoch is not None:
            raise ValueError("evals_per_epoch= goes with epochs=; with max_steps= give eval_every=")
        if eval_every is None:
            eval_every = max(1, total // 10)
    return _Plan(total, epochs, steps_per_pass, eval_points, eval_every, log_every)


_COMPONENTS = {
    "model": "the model's structure (its layers, activations, dropout, sizes)",
    "model_code": "the model's code changed (a method of one of its classes, such as forward)",
    "initial_weights": "the model's weights when fit started (another seed, or a model trained before)",
    "optimizer": "the optimizer, its settings or the parameters it updates",
    "scheduler": "the learning-rate scheduler or its settings",
    "step": "the step function or its settings",
    "step_code": "the step function's code changed (or that of eval_step, after_step or stop_when)",
    "data": "the training data (its content, batch size, shuffling or augmentation)",
    "evals": "the evaluations",
    "schedule": "the length of the run, when it evaluates or logs, gradient clipping or precision",
    "random_state": "the random state when fit started (another seed)",
    "state": "the extra state (EMA, second network, second optimizer)",
    "after_step": "the after_step hook",
    "stop_when": "the stop_when rule",
    "config": "the config= values",
    "threads": "the number of CPU threads (torch.get_num_threads()): the same seed gives other bits "
               "under another thread count",
}


class _Run:
    """One call of :func:`fit`: its settings, counters, and the steps it takes."""

    def __init__(self, model, loader, *, step, optimizer, scheduler, scheduler_interval, plan, evals,
                 eval_step, state, after_step, stop_when, max_grad_norm, device, amp, checkpoint,
                 config, progress, desc):
        self.model, self.loader, self.step_fn, self.optimizer = model, loader, step, optimizer
        self.scheduler, self.scheduler_interval, self.plan = scheduler, scheduler_interval, plan
        self.evals, self.eval_step, self.state, self.after_step = evals, eval_step, state, after_step
        self.stop_when = stop_when
        self.stopped = False  # stop_when ended the run before its planned end
        self.max_grad_norm, self.device, self.amp = max_grad_norm, device, amp
        self.checkpoint, self.progress, self.desc = checkpoint, progress, desc
        # A step that runs its own backward gets autocast only where no gradient scaler is needed.
        self.step_amp = amp and (optimizer is not None or amp_dtype(device) != torch.float16)
        self.scaler = grad_scaler(device, enabled=amp and optimizer is not None)
        self.history = History()
        self.step = 0  # optimizer steps taken
        self.pass_index = 0  # passes over the loader begun
        self.pass_step = 0  # batches used in the current pass
        self.seconds = 0.0
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.first_step = True  # the first step of this call of fit (also after a resume) explains its errors
        self.fingerprint = self._fingerprint(config)

    # fingerprint and checkpoint ---------------------------------------------------

    def _fingerprint(self, config) -> dict:
        model, opt = self.model, self.optimizer
        weights = {k: tensor_digest(v) for k, v in model.state_dict().items()}
        if opt is not None:
            groups = [[tuple(p.shape) for p in g["params"]] for g in opt.param_groups]
            optimizer = describe(opt) + describe(groups)
        else:
            optimizer = "none"
        scheduler = "none" if self.scheduler is None else (
            f"{type(self.scheduler).__qualname__}:{describe(self.scheduler.state_dict())}")
        p = self.plan
        schedule = describe([p.total, p.steps_per_pass, sorted(p.eval_points), p.eval_every, p.log_every,
                             self.scheduler_interval, self.max_grad_norm, str(amp_dtype(self.device) if self.amp else None)])
        rng = _rng_state()
        rng.pop("cuda", None)
        # The code that runs: what a reader edits in a notebook cell and runs again.
        from .fingerprint import code_description
        state = {name: describe(obj) + describe(obj.state_dict()) + code_description(obj)
                 for name, obj in self.state.items()}
        parts = {
            "model": describe(model),
            "model_code": code_description(model),
            "initial_weights": describe(weights),
            "optimizer": optimizer,
            "scheduler": scheduler,
            "step": describe([self.step_fn, self.eval_step]),
            "step_code": code_description(self.step_fn, self.eval_step, self.after_step, self.stop_when),
            "data": describe(self.loader),
            "evals": describe(self.evals),
            "schedule": schedule,
            "random_state": describe(rng),
            "state": describe(state),
            "after_step": describe(self.after_step),
            "stop_when": describe(self.stop_when),
            "config": describe(config),
            "threads": describe(torch.get_num_threads()),
        }
        return {key: digest(text) for key, text in parts.items()}

    def save(self, rng_at_pass_start: dict | None) -> None:
        if self.checkpoint is None:
            return
        save_checkpoint({
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "step": self.step, "pass_index": self.pass_index, "pass_step": self.pass_step,
            "seconds": self.seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "state": {name: obj.state_dict() for name, obj in self.state.items()},
            "history": self.history.records,
            "stopped": self.stopped,
            "rng": _rng_state(),
            "rng_at_pass_start": rng_at_pass_start,
        }, self.checkpoint)

    def resume(self) -> dict | None:
        """Restore the run from its checkpoint, if there is one; return the saved random states."""
        path = self.checkpoint
        if path is None or not path.exists():
            return None
        saved = load_checkpoint(path, map_location=self.device)
        needed = {"format", "fingerprint", "step", "pass_index", "pass_step", "seconds", "model", "optimizer",
                  "scheduler", "scaler", "state", "history", "stopped", "rng", "rng_at_pass_start"}
        if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT or not needed <= saved.keys():
            raise CheckpointError(path, "is not a training checkpoint written by this version of dlbook.fit")
        theirs = saved["fingerprint"]
        changed = [k for k in self.fingerprint if not isinstance(theirs, dict) or theirs.get(k) != self.fingerprint[k]]
        if changed:
            what = "; ".join(_COMPONENTS[k] for k in changed)
            raise CheckpointError(path, f"was written by a different run. What differs: {what}. A changed run "
                                        f"must start afresh, not continue the old one")
        try:
            self.model.load_state_dict(saved["model"])
            if self.optimizer is not None:
                self.optimizer.load_state_dict(saved["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(saved["scheduler"])
            self.scaler.load_state_dict(saved["scaler"])
            for name, obj in self.state.items():
                obj.load_state_dict(saved["state"][name])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise CheckpointError(path, f"does not fit this run ({type(err).__name__})") from None
        self.history = History(list(saved["history"]))
        self.step, self.pass_index, self.pass_step = saved["step"], saved["pass_index"], saved["pass_step"]
        self.seconds, self.stopped = saved["seconds"], bool(saved["stopped"])
        return {"rng": saved["rng"], "rng_at_pass_start": saved["rng_at_pass_start"]}

    # one step ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _explained(self, batch, phase: str, first: bool):
        """Around the step (``phase="step"``) or its backward. On the first step of
        this call (``first``, also after a resume) an error says which batch went
        in, what the model expected, and what PyTorch said, as a new error of the
        same kind chained to the original.

        Later steps pass errors through unchanged (by then the batch's form and the
        model have met once), except that a :class:`LabelError` gets the step's
        number. dlbook's own TrainingError and CheckpointError, and
        KeyboardInterrupt, always pass through.
        """
        trace = _LayerTrace(self.model) if first and phase == "step" else None
        try:
            yield
        except LabelError as err:
            if first:
                when = (f"The first batch after resuming (step {self.step + 1})" if self.step
                        else "The first batch (step 1)")
                message = f"{when} could not go through the step ({_step_name(self.step_fn)}): {err}"
            else:
                message = f"step {self.step + 1}: {err}"
            raise LabelError(message) from None  # the same message with its step; nothing to chain
        except (TrainingError, CheckpointError):
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            if not first:
                raise
            when = (f"The first batch after resuming (step {self.step + 1})" if self.step
                    else "The first batch (step 1)")
            name = _step_name(self.step_fn)
            head = (f"{when} could not go through the step ({name})" if phase == "step" else
                    f"{when} went through the step ({name}), but back-propagating its loss failed")
            names = ("x", "y") if isinstance(self.step_fn, Supervised) else None
            try:  # describing must never hide the error it describes
                parts = [f"batch = {_describe_batch(batch, names)}"]
                explanation = trace.explain() if trace is not None else ""
            except Exception:  # noqa: BLE001
                parts, explanation = [f"batch = a {type(batch).__name__}"], ""
            parts += [explanation] if explanation else []
            said = str(err).strip()
            said += "" if said.endswith((".", "!", "?")) else "."
            who = "PyTorch" if _raised_by_torch(err) else "The step"
            raise _same_kind(err, f"{head}: {'; '.join(parts)}. {who} said: {said}") from err
        finally:
            if trace is not None:
                trace.remove()

    def take_step(self, batch) -> None:
        batch = to_device(batch, self.device)
        first, self.first_step = self.first_step, False
        with self._explained(batch, "step", first), autocast(self.device, enabled=self.step_amp):
            returned = self.step_fn(self.model, batch)
        out = _scalars(returned, "the step")
        if "loss" not in out:
            raise ValueError(f"the step must return a 'loss'; it returned {sorted(out)}")
        values = {k: (v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v))).reshape(())
                  for k, v in out.items()}
        stacked = torch.stack([v.to(self.device) for v in values.values()])
        if not bool(torch.isfinite(stacked).all()):
            bad = ", ".join(f"{k} = {v.item()}" for k, v in values.items() if not math.isfinite(v.item()))
            lr = ""
            if self.optimizer is not None:
                lr = f" (learning rate {self.optimizer.param_groups[0]['lr']})"
            raise TrainingError(
                f"step {self.step + 1}: {bad}. Training stopped before this update. Check the learning "
                f"rate{lr}, the inputs (any NaN or infinity?), and the loss (log of 0? division by 0?).")
        if self.optimizer is not None:
            loss = out["loss"]
            if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
                raise ValueError("with an optimizer, the step's 'loss' must be a tensor that requires grad "
                                 "(computed from the model's output, outside torch.no_grad())")
            self.optimizer.zero_grad(set_to_none=True)
            with self._explained(batch, "backward", first):
                self.scaler.scale(loss).backward()
            if self.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        if self.after_step is not None:
            self.after_step(self.model)
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.to(self.device)
        self.count += 1
        self.step += 1
        self.pass_step += 1

    # records ----------------------------------------------------------------------

    def _run_eval(self, name: str, ev) -> dict:
        if callable(ev) and not hasattr(ev, "__iter__"):
            self.model.eval()
            try:
                return _scalars(ev(self.model), f"the evaluation {name!r}")
            finally:
                self.model.train()
        return evaluate(self.model, ev, self.eval_step, device=self.device, amp=self.amp)

    def record(self, evaluating: bool) -> dict:
        record = {"step": self.step}
        if self.plan.steps_per_pass:
            record["epoch"] = round(self.step / self.plan.steps_per_pass, 4)
        record["seconds"] = round(self.seconds, 3)
        for key, total in self.sums.items():
            record[f"train_{key}"] = float(total) / self.count
        self.sums, self.count = {}, 0
        if evaluating:
            record.update(self._evaluations())
        self.history.records.append(record)
        return record

    def _evaluations(self) -> dict:
        out = {}
        for name, ev in self.evals.items():
            for key, value in self._run_eval(name, ev).items():
                out[f"{name}_{key}"] = float(value.detach() if isinstance(value, torch.Tensor) else value)
        self.model.train()
        return out

    def postfix(self) -> str:
        parts = []
        if self.count:  # the mean since the last record
            parts.append(f"loss={float(self.sums['loss']) / self.count:.4f}")
        elif self.history.records and "train_loss" in self.history.last:
            parts.append(f"loss={self.history.last['train_loss']:.4f}")
        last_eval = next((r for r in reversed(self.history.records)
                          if any(k.split("_")[0] in self.evals for k in r)), None)
        if last_eval is not None:
            shown = [k for k in last_eval if k.split("_")[0] in self.evals]
            shown = [k for k in shown if k.endswith("_acc")] or shown[:1]
            parts += [f"{k}={last_eval[k]:.4f}" for k in shown[:2]]
        return " ".join(parts)

    # the loop ---------------------------------------------------------------------

    def bar_description(self) -> str:
        label = f"{self.desc} " if self.desc else ""
        if self.plan.epochs:
            return f"{label}epoch {min(max(self.pass_index, 1), self.plan.epochs)}/{self.plan.epochs}"
        return label.strip() or "training"

    def run(self) -> History:
        saved = self.resume()
        if saved is not None:
            if self.step >= self.plan.total or self.stopped:
                how = "stopped early, by stop_when," if self.stopped else "finished"
                print(f"Resumed from {self.checkpoint}: that run had {how} after {self.step} steps; "
                      f"nothing to train.")
                return self.history
            print(f"Resumed from {self.checkpoint} after step {self.step}/{self.plan.total}"
                  + (f" (epoch {self.step / self.plan.steps_per_pass:g})" if self.plan.steps_per_pass else "") + ".")
        if self.plan.total == 0:
            return self.history
        self.model.train()
        bar = tqdm(total=self.plan.total, initial=self.step, desc=self.bar_description(), disable=not self.progress,
                   file=sys.stdout, mininterval=1.0, ncols=79, dynamic_ncols=False,  # fits the website's column
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        try:
            self._loop(bar, saved)
        finally:
            bar.close()
        return self.history

    def _loop(self, bar, saved: dict | None) -> None:
        plan = self.plan
        tick = time.perf_counter()
        while self.step < plan.total:
            if saved is not None and saved["rng_at_pass_start"] is not None:
                # Back to the start of the interrupted pass: the loader draws the same
                # order again, we skip the batches already used, then continue from
                # the random state the checkpoint saved.
                _set_rng_state(saved["rng_at_pass_start"])
                rng_at_pass_start = saved["rng_at_pass_start"]
                skip = self.pass_step
            else:
                if saved is not None:
                    _set_rng_state(saved["rng"])
                rng_at_pass_start = _rng_state()
                skip, self.pass_step = 0, 0
                self.pass_index += 1
            iterator = iter(self.loader)
            for _ in range(skip):
                next(iterator)
            if saved is not None:
                if skip:
                    _set_rng_state(saved["rng"])
                saved = None
            bar.set_description_str(self.bar_description(), refresh=False)
            used = skip
            for batch in iterator:
                used += 1
                self.take_step(batch)
                bar.update(1)
                pass_done = plan.steps_per_pass is not None and self.pass_step == plan.steps_per_pass
                if pass_done and self.scheduler is not None and self.scheduler_interval == "epoch":
                    self.scheduler.step()
                if plan.logs_at(self.step):
                    evaluating = plan.evaluates_at(self.step)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    self.seconds += time.perf_counter() - tick
                    self.record(evaluating)
                    if evaluating:
                        # A pass that just ended is saved as done, so a resume starts the next one.
                        self.save(None if pass_done else rng_at_pass_start)
                    bar.set_postfix_str(self.postfix(), refresh=False)
                    tick = time.perf_counter()
                elif self.step % max(1, plan.total // 100) == 0:
                    bar.set_postfix_str(self.postfix(), refresh=False)
                if self.stop_when is not None and self.stop_when(self.history):
                    self.stopped = True
                    # The step it stopped at is recorded, evaluated and saved like a last step.
                    if plan.logs_at(self.step) and not plan.evaluates_at(self.step):
                        self.history.records[-1].update(self._evaluations())
                    elif not plan.logs_at(self.step):
                        self.seconds += time.perf_counter() - tick
                        self.record(True)
                    self.save(None)
                    bar.set_postfix_str(self.postfix(), refresh=False)
                    return
                if self.step >= plan.total or pass_done:
                    break
            if used == 0:
                raise ValueError("the training loader yielded no batches")


def fit(model: nn.Module, loader: Iterable, *, step: Step | None = None,
        optimizer: torch.optim.Optimizer | None = None, scheduler=None, scheduler_interval: str = "step",
        epochs: int | None = None, max_steps: int | None = None,
        evals: Mapping[str, Iterable | Callable[[nn.Module], dict]] | None = None,
        evals_per_epoch: int | None = None, eval_every: int | None = None, log_every: int | None = None,
        eval_step: Step | None = None, state: Mapping[str, Any] | None = None,
        after_step: Callable[[nn.Module], None] | None = None,
        stop_when: Callable[[History], bool] | None = None, max_grad_norm: float | None = None,
        device: torch.device | str | None = None, amp: bool = True,
        checkpoint: str | Path | None = None, config: Mapping[str, Any] | None = None,
        progress: bool = True, desc: str = "") -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        model: the network; moved to ``device`` and left in training mode.
        loader: yields batches; each is moved to the device (:func:`to_device`).
        step: ``step(model, batch) -> dict`` of scalars with at least
            ``"loss"``; default :func:`supervised` (cross-entropy).
        optimizer: with one, ``fit`` back-propagates ``"loss"`` and steps it;
            without one, the step updates its own optimizers
            (:func:`gradient_step`).
        scheduler: a learning-rate scheduler, stepped after every step
            (``scheduler_interval="step"``) or every epoch (``"epoch"``).
        epochs: passes over ``loader`` (which must have a length), or
        max_steps: steps, over any iterable (started again when it ends).
        evals: named evaluations, run at every evaluation point: a loader
            (the mean of ``eval_step`` over it, see :func:`evaluate`) or a
            function ``f(model) -> dict`` (called with the model in
            evaluation mode). Recorded as ``<name>_<key>``: ``val_loss``.
        evals_per_epoch: evaluation points per epoch (default 1), or
        eval_every: an evaluation point every this many steps (default with
            ``max_steps``: a tenth of the run). The last step always is one.
        log_every: also record the training means every this many steps.
        eval_step: the step evaluations on a loader use (default ``step``;
            required when the step updates its own optimizers).
        state: objects with ``state_dict``/``load_state_dict`` (an EMA, a
            discriminator, its optimizer) saved in checkpoints and restored
            on resume. Modules in it are moved to the device.
        after_step: ``after_step(model)`` after every update (an EMA update,
            weight clipping).
        stop_when: ``stop_when(history) -> bool``, asked after every step
            (after ``after_step`` and after that step's record, if any).
            True ends the run there (early stopping): that step is recorded
            and evaluated, and the checkpoint marks the run as finished.
        max_grad_norm: clip the gradient norm (with ``optimizer``).
        device: default :func:`dlbook.get_device`; checked to exist.
        amp: mixed precision where it pays (:func:`dlbook.autocast`). A step
            that runs its own backward gets it only where no gradient scaler
            is needed (bfloat16).
        checkpoint: a file path. At every evaluation point the model,
            optimizer, scheduler, state, random generators and history are
            written to it atomically, with a checksum. If it exists when
            ``fit`` starts, training resumes from it and ends exactly as an
            uninterrupted run would (the loader's randomness must come from
            torch's global generator, as :class:`dlbook.data.BatchLoader`'s
            and ``DataLoader``'s does). It is refused, with a
            :class:`~dlbook.checkpoint.CheckpointError` naming what changed,
            unless the run is the same: the model's structure, settings and
            initial weights, the code of its classes (an edited
            ``forward``), the optimizer and scheduler and their settings,
            the step and its code, the data, the evaluations, the schedule,
            the random state at the start (the seed), the number of CPU
            threads, the state objects and ``config``.
        config: anything else that makes the run (values the step reads
            from elsewhere), for the checkpoint's fingerprint.
        progress: show one progress bar for the whole call. Its ``loss`` is
            the mean over the steps since the last record; it also shows the
            latest evaluation.
        desc: a label for the progress bar.

    Raises:
        TrainingError: at the first step whose loss (or any returned value)
            is not finite, before that step's update.
        RuntimeError, ValueError, TypeError, IndexError: when the first batch
            of the call (also after a resume) cannot go through the step or
            back: a new error of the same kind naming the batch's dtypes and
            shapes, what the model's layer expected, and PyTorch's message;
            the original error is chained. Later steps raise as they are.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"loader must be iterable (a DataLoader, a BatchLoader, a list of batches); "
                        f"got {type(loader).__name__}")
    step = supervised() if step is None else step
    if not callable(step):
        raise TypeError(f"step must be a function step(model, batch) -> dict; got {type(step).__name__}")
    state = dict(state or {})
    for name, obj in state.items():
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise TypeError(f"state[{name!r}] must have state_dict() and load_state_dict(); got {type(obj).__name__}")
    if optimizer is not None:
        _check_optimizer(optimizer, model, state)
    elif isinstance(step, Supervised):
        raise ValueError("the supervised step needs an optimizer: fit(model, loader, optimizer=...)")
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch'; got {scheduler_interval!r}")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler must be a learning-rate scheduler; got {type(scheduler).__name__}")
    if scheduler_interval == "epoch" and scheduler is not None and not _has_len(loader):
        raise ValueError("scheduler_interval='epoch' needs a loader with a length")
    if max_grad_norm is not None and (isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, numbers.Real)
                                      or not math.isfinite(max_grad_norm) or max_grad_norm <= 0):
        raise ValueError(f"max_grad_norm must be a positive number; got {max_grad_norm!r}")
    if max_grad_norm is not None and optimizer is None:
        raise ValueError("max_grad_norm= goes with optimizer=; a step with its own optimizers clips in gradient_step")
    if after_step is not None and not callable(after_step):
        raise TypeError(f"after_step must be a function after_step(model); got {type(after_step).__name__}")
    if stop_when is not None and not callable(stop_when):
        raise TypeError(f"stop_when must be a function stop_when(history) -> bool; got {type(stop_when).__name__}")
    evals = dict(evals or {})
    for name, ev in evals.items():
        if not isinstance(name, str) or not _EVAL_NAME.fullmatch(name) or name == "train" or "_" in name:
            raise ValueError(f"evaluation names are short lower-case words other than 'train', such as "
                             f"'val' or 'test'; got {name!r}")
        if not (hasattr(ev, "__iter__") or callable(ev)):
            raise TypeError(f"evals[{name!r}] must be a loader or a function f(model) -> dict; "
                            f"got {type(ev).__name__}")
        if hasattr(ev, "__iter__") and optimizer is None and eval_step is None:
            raise ValueError(f"evals[{name!r}] is a loader, but the step updates its own optimizers, so it "
                             f"cannot be evaluated by running it: pass eval_step= or a function f(model) -> dict")
    if eval_step is not None and not callable(eval_step):
        raise TypeError(f"eval_step must be a function; got {type(eval_step).__name__}")
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict; got {type(config).__name__}")
    amp, progress = check_bool(amp, "amp"), check_bool(progress, "progress")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path (str or os.PathLike) or None; got {type(checkpoint).__name__}")
    plan = _make_plan(loader, epochs, max_steps, eval_every, evals_per_epoch, log_every)
    device = get_device(None if device is None else str(device))
    model.to(device)
    for obj in state.values():
        if isinstance(obj, nn.Module):
            obj.to(device)
    if checkpoint is not None:
        checkpoint = Path(checkpoint).expanduser()
        if checkpoint.is_dir():
            raise ValueError(f"checkpoint must be a file path; {checkpoint} is a folder")
    run = _Run(model, loader, step=step, optimizer=optimizer, scheduler=scheduler,
               scheduler_interval=scheduler_interval, plan=plan, evals=evals,
               eval_step=step if eval_step is None else eval_step, state=state, after_step=after_step,
               stop_when=stop_when,
               max_grad_norm=max_grad_norm, device=device, amp=amp, checkpoint=checkpoint, config=config,
               progress=progress, desc=desc)
    return run.run()
