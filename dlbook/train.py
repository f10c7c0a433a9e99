"""One training loop for the whole book.

:func:`fit` trains a model for a number of epochs with a progress bar per
epoch, records a history of metrics, optionally uses mixed precision, and
optionally writes a checkpoint after every epoch from which an interrupted
run resumes exactly where it stopped.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .device import autocast, get_device, grad_scaler
from .io import atomic_torch_save, safe_torch_load
from .paths import checkpoints_dir
from .profiles import get_profile

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def checkpoint_path(name: str) -> Path:
    """Where a chapter keeps the checkpoint of its run ``name``.

    ``DLBOOK_CHECKPOINTS`` or ``<user cache>/checkpoints``; the file name
    carries the profile, so a smoke run never resumes a full one.
    """
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"checkpoint name must be a plain file name; got {name!r}")
    return checkpoints_dir() / f"{name}-{get_profile()}.pt"


@dataclass
class History:
    """The metrics :func:`fit` recorded, one dict per evaluation.

    Each record has ``epoch`` (fractional when evaluating several times an
    epoch), ``step``, ``seconds`` (training time so far, evaluation
    excluded), ``train_loss`` and, for classifiers, ``train_acc``; with a
    validation loader also ``val_loss`` and ``val_acc``.
    """

    records: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]

    def __iter__(self):
        return iter(self.records)

    def column(self, key: str) -> list:
        """All recorded values of ``key``, in order."""
        return [r[key] for r in self.records if key in r]

    def first_reaching(self, key: str, value: float) -> dict | None:
        """The first record whose ``key`` is at least ``value``, or ``None``."""
        for r in self.records:
            if r.get(key, -math.inf) >= value:
                return r
        return None

    def best(self, key: str) -> dict:
        """The record with the largest ``key``."""
        rows = [r for r in self.records if key in r]
        if not rows:
            raise KeyError(f"no record has {key!r}; keys: {sorted(self.records[0]) if self.records else []}")
        return max(rows, key=lambda r: r[key])

    @property
    def last(self) -> dict:
        return self.records[-1]


def _is_classification(y_hat: torch.Tensor, y: torch.Tensor) -> bool:
    return y_hat.dim() == 2 and y.dim() == 1 and not torch.is_floating_point(y)


def _to(batch, device: torch.device):
    return [t.to(device, non_blocking=True) for t in batch]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, loss_fn: LossFn = F.cross_entropy,
             device: torch.device | str | None = None, amp: bool = True) -> dict:
    """Mean loss (and accuracy, for classifiers) of ``model`` over ``loader``.

    The model is put in evaluation mode and restored to its previous mode.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_loss, correct, count, classify = 0.0, 0, 0, False
    try:
        for x, y in loader:
            x, y = _to((x, y), device)
            with autocast(device, enabled=amp):
                y_hat = model(x)
                loss = loss_fn(y_hat, y)
            n = len(y)
            total_loss += loss.float().item() * n
            count += n
            if _is_classification(y_hat, y):
                classify = True
                correct += (y_hat.argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got an empty loader")
    out = {"loss": total_loss / count}
    if classify:
        out["acc"] = correct / count
    return out


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


def _fingerprint(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, epochs: int,
                 steps_per_epoch: int) -> dict:
    """What must match for a checkpoint to be resumed by this run."""
    settings = {k: v for k, v in optimizer.defaults.items()
                if isinstance(v, (bool, int, float, str, type(None))) or
                (isinstance(v, tuple) and all(isinstance(i, (int, float)) for i in v))}
    return {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "optimizer": type(optimizer).__name__,
        "optimizer_settings": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(settings.items())},
        "scheduler": type(scheduler).__name__ if scheduler is not None else None,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
    }


def fit(model: nn.Module, train_loader: Iterable, *, epochs: int,
        optimizer: torch.optim.Optimizer, loss_fn: LossFn = F.cross_entropy,
        val_loader: Iterable | None = None, scheduler=None, scheduler_interval: str = "batch",
        device: torch.device | str | None = None, amp: bool = True,
        checkpoint: str | Path | None = None, evals_per_epoch: int = 1,
        max_grad_norm: float | None = None, progress: bool = True, desc: str = "") -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        model: the network; moved to ``device``.
        train_loader: yields ``(x, y)`` batches; must have a length.
        epochs: number of passes over ``train_loader``.
        optimizer: built over ``model``'s parameters.
        loss_fn: ``loss_fn(y_hat, y)``, a scalar. Default cross-entropy.
        val_loader: evaluated ``evals_per_epoch`` times an epoch.
        scheduler: a learning-rate scheduler, stepped after every batch
            (``scheduler_interval="batch"``) or every epoch (``"epoch"``).
        device: default :func:`dlbook.get_device`.
        amp: mixed precision where it pays (see :func:`dlbook.autocast`).
        checkpoint: a file path. After every epoch the model, optimizer,
            scheduler, scaler, random generators and history are written to
            it atomically; if it exists when ``fit`` starts, training resumes
            from it, and ends with the same weights as an uninterrupted run.
        evals_per_epoch: how many times an epoch to record metrics.
        max_grad_norm: clip the gradient norm to this value.
        progress: show a tqdm progress bar per epoch.
        desc: a label for the progress bars.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer; got {epochs!r}")
    if scheduler_interval not in ("batch", "epoch"):
        raise ValueError(f"scheduler_interval must be 'batch' or 'epoch'; got {scheduler_interval!r}")
    if not isinstance(evals_per_epoch, int) or evals_per_epoch < 1:
        raise ValueError(f"evals_per_epoch must be a positive integer; got {evals_per_epoch!r}")
    try:
        steps = len(train_loader)
    except TypeError as err:
        raise ValueError("train_loader must have a length (a DataLoader or dlbook BatchLoader)") from err
    if steps == 0:
        raise ValueError("train_loader is empty")
    if evals_per_epoch > steps:
        raise ValueError(f"evals_per_epoch={evals_per_epoch} is more than the {steps} batches of an epoch")
    device = get_device() if device is None else torch.device(device)
    model.to(device)
    scaler = grad_scaler(device, enabled=amp)
    history = History()
    start_epoch, seconds = 0, 0.0
    fingerprint = _fingerprint(model, optimizer, scheduler, epochs, steps)
    checkpoint = Path(checkpoint) if checkpoint is not None else None

    if checkpoint is not None and checkpoint.exists():
        state = safe_torch_load(checkpoint, map_location=device)
        if state.get("fingerprint") != fingerprint:
            raise ValueError(
                f"The checkpoint {checkpoint} was written by a different run "
                f"({state.get('fingerprint')}); this run is {fingerprint}. Delete the "
                f"file to start afresh, or pass another checkpoint path."
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history = History(list(state["history"]))
        start_epoch, seconds = state["epoch"], state["seconds"]
        _set_rng_state(state["rng"])
        print(f"Resumed from {checkpoint} after epoch {start_epoch}/{epochs}.")

    eval_steps = {round(steps * (k + 1) / evals_per_epoch) for k in range(evals_per_epoch)}
    model.train()
    for epoch in range(start_epoch, epochs):
        bar = tqdm(train_loader, total=steps, desc=f"{desc + ' ' if desc else ''}epoch {epoch + 1}/{epochs}",
                   disable=not progress, file=sys.stdout, mininterval=1.0, leave=True,
                   dynamic_ncols=False, ncols=80,  # fits a notebook's output area on the website
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        count, classify = 0, False
        tick = time.perf_counter()
        for step, (x, y) in enumerate(bar, start=1):
            x, y = _to((x, y), device)
            with autocast(device, enabled=amp):
                y_hat = model(x)
                loss = loss_fn(y_hat, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if max_grad_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None and scheduler_interval == "batch":
                scheduler.step()
            n = len(y)
            loss_sum += loss.detach().float() * n
            count += n
            if _is_classification(y_hat, y):
                classify = True
                correct += (y_hat.detach().argmax(1) == y).sum()
            if progress and (step % max(1, steps // 10) == 0 or step == steps):
                postfix = {"loss": f"{loss_sum.item() / count:.4f}"}
                if classify:
                    postfix["acc"] = f"{correct.item() / count:.4f}"
                bar.set_postfix(postfix, refresh=False)
            if step in eval_steps:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds += time.perf_counter() - tick
                record = {"epoch": round(epoch + step / steps, 4), "step": epoch * steps + step,
                          "seconds": round(seconds, 3), "train_loss": loss_sum.item() / count}
                if classify:
                    record["train_acc"] = correct.item() / count
                if val_loader is not None:
                    for key, value in evaluate(model, val_loader, loss_fn, device, amp).items():
                        record[f"val_{key}"] = value
                    model.train()
                history.records.append(record)
                loss_sum.zero_()
                correct.zero_()
                count = 0
                tick = time.perf_counter()
        bar.close()
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        if checkpoint is not None:
            atomic_torch_save({
                "fingerprint": fingerprint,
                "epoch": epoch + 1,
                "seconds": seconds,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict(),
                "history": history.records,
                "rng": _rng_state(),
            }, checkpoint)
    return history
