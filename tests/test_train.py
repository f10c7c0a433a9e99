"""dlbook.train: fit with steps, evaluations, state and hooks; evaluate;
History; EMA; checkpoints that resume exactly and only the same run."""

import collections
import math
import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
from dlbook import train
from dlbook.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dlbook.data import BatchLoader

ROOT = Path(__file__).resolve().parents[1]


def mlp(hidden=16, dropout=0.0, act=nn.ReLU):
    return nn.Sequential(nn.Linear(2, hidden), act(), nn.Dropout(dropout), nn.Linear(hidden, 3))


def sgd(model, lr=0.1):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def fit(model, loader, **kwargs):
    """fit on the CPU in float32, quietly, 3 epochs of SGD unless told otherwise."""
    if "max_steps" not in kwargs:
        kwargs.setdefault("epochs", 3)
    if "optimizer" not in kwargs and "step" not in kwargs:
        kwargs["optimizer"] = sgd(model)
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("amp", False)
    kwargs.setdefault("progress", False)
    return train.fit(model, loader, **kwargs)


@pytest.fixture
def loaders(toy_classification):
    x, y = toy_classification
    return BatchLoader(x, y, batch_size=40, shuffle=True), BatchLoader(x, y, batch_size=100)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def clone_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


# fit learns -------------------------------------------------------------------

def test_fit_learns_a_toy_problem(loaders):
    torch.manual_seed(0)
    model = mlp()
    train_loader, val_loader = loaders
    before = train.evaluate(model, val_loader, amp=False)
    history = fit(model, train_loader, epochs=5, evals={"val": val_loader})
    assert len(history) == 5
    losses = history.column("train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert history.last["train_acc"] > 0.95 and history.last["val_acc"] > 0.95
    assert history.last["val_loss"] < before["loss"] and before["acc"] < 0.9
    assert history.column("epoch") == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert history.column("step") == [6, 12, 18, 24, 30]
    assert history.series("val_acc") == ([6, 12, 18, 24, 30], history.column("val_acc"))
    assert history.series("no such key") == ([], [])
    seconds = history.column("seconds")
    assert all(s >= 0 for s in seconds) and seconds == sorted(seconds)
    assert set(history.last) == {"epoch", "step", "seconds", "train_loss", "train_acc", "val_loss", "val_acc"}
    assert model.training  # fit leaves the model in training mode


def test_fit_regression_has_no_accuracy():
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    model = nn.Linear(3, 1)
    loader = BatchLoader(x, y[:, None], batch_size=16)
    history = fit(model, loader, epochs=20, step=train.supervised(F.mse_loss), evals={"val": loader},
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert "train_acc" not in history.last and "val_acc" not in history.last
    assert history.last["val_loss"] < 1e-3 < history[0]["train_loss"]


def test_training_means_are_means_over_the_interval():
    """train_<key> is the mean of what the step returned since the previous record."""
    seen = []

    def step(model, batch):
        (x,) = batch
        loss = model(x).pow(2).mean()
        seen.append(loss.item() if not loss.requires_grad else loss.detach().item())
        return {"loss": loss, "twice": 2 * loss.detach(), "number": len(seen)}

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    loader = BatchLoader(torch.randn(40, 4), batch_size=8)  # 5 steps an epoch
    history = fit(model, loader, step=step, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                  log_every=2)
    assert history.column("step") == [2, 4, 5, 6, 8, 10]
    assert history.column("train_number") == [1.5, 3.5, 5.0, 6.0, 7.5, 9.5]
    assert history.column("train_loss") == pytest.approx([sum(seen[0:2]) / 2, sum(seen[2:4]) / 2, seen[4],
                                                          seen[5], sum(seen[6:8]) / 2, sum(seen[8:10]) / 2])
    assert history.column("train_twice") == pytest.approx([2 * v for v in history.column("train_loss")])


def test_fit_autocasts_exactly_where_the_cpu_computes_bf16(native_bf16, loaders):
    torch.manual_seed(0)
    model = mlp()
    dtypes = []
    model.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    history = train.fit(model, loaders[0], epochs=4, device="cpu", progress=False, optimizer=sgd(model))
    assert set(dtypes) == ({torch.bfloat16} if native_bf16 else {torch.float32})
    assert model[0].weight.dtype == torch.float32  # weights stay in float32
    assert history.last["train_acc"] > 0.9


def test_amp_false_computes_in_float32_on_every_cpu(native_bf16, loaders):
    model = mlp()
    dtypes = []
    model.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    fit(model, loaders[0], epochs=1)
    assert set(dtypes) == {torch.float32}


def test_one_progress_bar_per_call(loaders, capsys):
    torch.manual_seed(0)
    model = mlp()
    train.fit(model, loaders[0], epochs=3, device="cpu", amp=False, desc="toy", optimizer=sgd(model),
              evals={"val": loaders[1]}, evals_per_epoch=2)
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"one bar, closed once: {out!r}"
    final = out.split("\r")[-1]
    assert final.startswith("toy epoch 3/3: 100%") and "18/18" in final
    assert "loss=" in final and "val_acc=" in final
    assert all(len(line) <= 79 for line in out.replace("\r", "\n").splitlines())


def test_progress_false_prints_nothing(loaders, capsys):
    fit(mlp(), loaders[0], epochs=2)
    assert capsys.readouterr().out == ""


def test_fit_uses_the_default_device(loaders):
    model = mlp()
    train.fit(model, loaders[0], epochs=1, progress=False, optimizer=sgd(model))
    assert next(model.parameters()).device.type == dlbook.get_device().type


# when to record ---------------------------------------------------------------

def test_evals_per_epoch(loaders):
    torch.manual_seed(0)
    history = fit(mlp(), loaders[0], epochs=2, evals_per_epoch=3, evals={"val": loaders[1]})
    assert history.column("epoch") == [0.3333, 0.6667, 1.0, 1.3333, 1.6667, 2.0]
    assert history.column("step") == [2, 4, 6, 8, 10, 12]
    assert len(history.column("val_acc")) == 6


def test_evals_per_epoch_equal_to_the_number_of_steps(loaders):
    history = fit(mlp(), loaders[0], epochs=1, evals_per_epoch=6)
    assert history.column("step") == [1, 2, 3, 4, 5, 6]


def test_evals_per_epoch_more_than_steps_is_refused(toy_classification):
    x, y = toy_classification
    loader = BatchLoader(x, y, batch_size=120)  # 2 steps an epoch
    with pytest.raises(ValueError, match="evals_per_epoch=4 is more than the 2 steps"):
        fit(mlp(), loader, epochs=1, evals_per_epoch=4)


def test_eval_every_and_log_every(loaders):
    history = fit(mlp(), loaders[0], epochs=3, eval_every=4, log_every=3, evals={"val": loaders[1]})
    assert history.column("step") == [3, 4, 6, 8, 9, 12, 15, 16, 18]
    evaluated = [r["step"] for r in history if "val_loss" in r]
    assert evaluated == [4, 8, 12, 16, 18]  # and the last step always


class Windows:
    """An endless loader without a length: random batches from the global generator."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size = x, y, batch_size

    def __iter__(self):
        while True:
            i = torch.randint(0, len(self.x), (self.batch_size,))
            yield self.x[i], self.y[i]


class Empty:
    """A loader without a length that yields nothing."""

    def __iter__(self):
        return iter(())


def test_max_steps_with_a_loader_without_length(toy_classification):
    x, y = toy_classification
    torch.manual_seed(0)
    model = mlp()
    history = fit(model, Windows(x, y, 32), max_steps=25, eval_every=10, evals={"val": BatchLoader(x, y)})
    assert history.column("step") == [10, 20, 25]
    assert "epoch" not in history.last
    assert history.last["val_acc"] > 0.9


def test_max_steps_default_records_a_tenth_of_the_run(toy_classification):
    x, y = toy_classification
    history = fit(mlp(), Windows(x, y, 8), max_steps=30)
    assert history.column("step") == list(range(3, 31, 3))


def test_max_steps_starts_a_sized_loader_again(loaders):
    seen = collections.Counter()

    class Counting(BatchLoader):
        def __iter__(self):
            seen["passes"] += 1
            return super().__iter__()

    x, y = loaders[0].tensors
    loader = Counting(x, y, batch_size=40, shuffle=True)  # 6 steps a pass
    history = fit(mlp(), loader, max_steps=15, eval_every=5)
    assert history.column("step") == [5, 10, 15]
    assert history.column("epoch") == [0.8333, 1.6667, 2.5]
    assert seen["passes"] == 3


def test_epochs_need_a_loader_with_a_length(toy_classification):
    x, y = toy_classification
    with pytest.raises(ValueError, match="max_steps"):
        fit(mlp(), Windows(x, y, 8), epochs=1)


def test_zero_epochs_trains_nothing(loaders):
    model = mlp()
    before = clone_state(model)
    assert len(fit(model, loaders[0], epochs=0)) == 0
    assert state_equal(before, model.state_dict())


# steps, evaluations, state, hooks ---------------------------------------------

def test_named_evaluations_loaders_and_functions(loaders):
    modes = []

    def weight_norm(model):
        modes.append(model.training)
        return {"norm": sum(p.norm() ** 2 for p in model.parameters()).sqrt()}

    torch.manual_seed(0)
    model = mlp(dropout=0.2)
    history = fit(model, loaders[0], epochs=2, evals={"val": loaders[1], "test": loaders[1], "weights": weight_norm})
    assert {"val_loss", "val_acc", "test_loss", "test_acc", "weights_norm"} <= set(history.last)
    assert history.last["val_loss"] == history.last["test_loss"]  # the same loader
    assert modes == [False, False] and model.training  # evaluated in eval mode, restored


class TwoPart(nn.Module):
    """A "generator" and a "critic" updated by the step itself."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))


def own_update_step(opt_body, opt_head, n_head_steps=2):
    """k updates of the head, then one of the body (like k critic steps per generator step)."""

    def step(model, batch):
        x, y = batch
        for _ in range(n_head_steps):
            loss_head = F.cross_entropy(model(x), y)
            train.gradient_step(opt_head, loss_head)
        loss_body = F.cross_entropy(model(x), y)
        train.gradient_step(opt_body, loss_body)
        return {"loss": loss_body.detach(), "loss_head": loss_head.detach()}

    return step


def test_a_step_that_updates_its_own_optimizers(loaders):
    torch.manual_seed(0)
    model = TwoPart()
    opt_body = torch.optim.SGD(model.body.parameters(), lr=0.1)
    opt_head = torch.optim.Adam(model.head.parameters(), lr=0.01)
    before = clone_state(model)
    head_steps = []
    opt_head.register_step_post_hook(lambda *a: head_steps.append(1))
    history = fit(model, loaders[0], epochs=2, step=own_update_step(opt_body, opt_head),
                  state={"opt_body": opt_body, "opt_head": opt_head},
                  evals={"val": loaders[1]}, eval_step=train.supervised())
    assert len(head_steps) == 2 * 12  # two head updates a step
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert {"train_loss", "train_loss_head", "val_loss", "val_acc"} <= set(history.last)
    assert history.last["val_acc"] > 0.9


def test_a_loader_evaluation_of_an_own_update_step_needs_an_eval_step(loaders):
    model = TwoPart()
    step = own_update_step(torch.optim.SGD(model.body.parameters(), lr=0.1),
                           torch.optim.SGD(model.head.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="eval_step"):
        fit(model, loaders[0], step=step, evals={"val": loaders[1]})


def test_after_step_runs_after_every_update(loaders):
    calls = []
    model = mlp()
    fit(model, loaders[0], epochs=2, after_step=lambda m: calls.append(m is model))
    assert calls == [True] * 12


def test_after_step_clips_weights_like_a_wgan_critic(loaders):
    model = mlp()

    def clip(m):
        with torch.no_grad():
            for p in m.parameters():
                p.clamp_(-0.01, 0.01)

    fit(model, loaders[0], epochs=1, after_step=clip)
    assert max(p.abs().max().item() for p in model.parameters()) <= 0.01


def test_stop_when_ends_the_run_where_it_says_and_evaluates_there(loaders):
    torch.manual_seed(0)
    model, reference = mlp(), mlp()
    reference.load_state_dict(model.state_dict())
    seen = []

    def rule(history):
        seen.append(len(history))
        return len(seen) == 8  # after the 8th step

    torch.manual_seed(1)
    history = fit(model, loaders[0], epochs=3, evals={"val": loaders[1]}, stop_when=rule)
    assert len(seen) == 8
    assert history.column("step") == [6, 8]  # epoch 1's record, then the step it stopped at
    assert "val_acc" in history.last and "train_loss" in history.last
    torch.manual_seed(1)  # the weights are those of a run of 8 steps
    fit(reference, loaders[0], max_steps=8)
    assert state_equal(model.state_dict(), reference.state_dict())


def test_stop_when_sees_the_record_of_its_step_and_adds_evaluations_to_it(loaders):
    # Logged every 2 steps, evaluated every 6: stopping at step 4 (a log point)
    # evaluates there, in the same record.
    history = fit(mlp(), loaders[0], epochs=3, log_every=2, evals={"val": loaders[1]},
                  stop_when=lambda h: len(h) > 0 and h.last["step"] == 4)
    assert history.column("step") == [2, 4]
    assert "val_loss" not in history[0] and "val_loss" in history[1]


def test_a_stopped_run_resumes_as_finished(loaders, tmp_path, capsys):
    path = tmp_path / "run.pt"

    def rule(history):
        return len(history) > 0 and history.last["step"] >= 6

    torch.manual_seed(0)
    first = fit(mlp(), loaders[0], epochs=3, stop_when=rule, checkpoint=path)
    assert first.column("step") == [6]
    torch.manual_seed(0)
    model = mlp()
    again = fit(model, loaders[0], epochs=3, stop_when=rule, checkpoint=path)
    assert "stopped early" in capsys.readouterr().out
    assert without_seconds(again) == without_seconds(first)
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="stop_when"):
        fit(mlp(), loaders[0], epochs=3, stop_when=lambda h: False, checkpoint=path)


def test_state_modules_are_moved_with_the_model(loaders, monkeypatch):
    moved = []
    critic = nn.Linear(2, 1)
    monkeypatch.setattr(critic, "to", lambda device: moved.append(torch.device(device)) or critic)
    fit(mlp(), loaders[0], epochs=1, state={"critic": critic})
    assert moved == [torch.device("cpu")]


# schedulers and clipping ------------------------------------------------------

@pytest.mark.parametrize("interval, n_steps", [("step", 12), ("epoch", 2)])
def test_scheduler_interval(loaders, interval, n_steps):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    fit(model, loaders[0], epochs=2, optimizer=optimizer, scheduler=scheduler, scheduler_interval=interval)
    assert len(loaders[0]) == 6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** n_steps)


def test_onecycle_per_step_ends_at_its_minimum(loaders):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=2 * 6 + 1)
    fit(model, loaders[0], epochs=2, optimizer=optimizer, scheduler=scheduler)
    assert scheduler.last_epoch == 12
    assert optimizer.param_groups[0]["lr"] < 0.1 / 25


def test_max_grad_norm_clips_the_update(toy_classification):
    x, y = toy_classification
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    loader = BatchLoader(x * 100, y, batch_size=240)  # one big step with a large gradient
    fit(model, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), max_grad_norm=1e-3)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


def test_gradient_step_clips_and_updates():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    train.gradient_step(opt, (model(100 * torch.randn(8, 2)) ** 2).mean(), max_grad_norm=0.5)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(ValueError, match="scalar loss tensor"):
        train.gradient_step(opt, torch.tensor(1.0))


# garbage in: clear errors, and no training on it ------------------------------

def test_a_nan_loss_stops_training_before_the_update(loaders):
    x, y = loaders[0].tensors
    x = x.clone()
    x[100] = float("nan")  # one poisoned example, in the third batch of an unshuffled loader
    torch.manual_seed(0)
    model = mlp()
    updates = []
    with pytest.raises(train.TrainingError, match=r"step 3: loss = nan.*learning rate") as err:
        fit(model, BatchLoader(x, y, batch_size=40), after_step=lambda m: updates.append(clone_state(m)))
    assert "inputs" in str(err.value)
    assert len(updates) == 2 and state_equal(updates[-1], model.state_dict())  # the bad step changed nothing
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_any_non_finite_value_a_step_returns_stops_training(loaders):
    def step(model, batch):
        return {"loss": torch.tensor(1.0), "loss_d": torch.tensor(float("inf"))}

    with pytest.raises(train.TrainingError, match="step 1: loss_d = inf"):
        fit(mlp(), loaders[0], step=step)


@pytest.mark.parametrize("setting, value", [("lr", float("nan")), ("lr", float("inf")), ("lr", -0.1),
                                            ("momentum", float("nan")), ("weight_decay", float("inf"))])
def test_nonsense_optimizer_settings_are_refused(loaders, setting, value):
    model = mlp()
    optimizer = sgd(model)
    optimizer.param_groups[0][setting] = value
    with pytest.raises(ValueError, match=setting if setting != "lr" else "learning rate|lr"):
        fit(model, loaders[0], optimizer=optimizer)


def test_an_optimizer_of_another_model_is_refused(loaders):
    model, other = mlp(), mlp()
    with pytest.raises(ValueError, match="none of the model's parameters"):
        fit(model, loaders[0], optimizer=sgd(other))
    mixed = torch.optim.SGD(list(model.parameters()) + list(other.parameters()), lr=0.1)
    with pytest.raises(ValueError, match="belong neither to the model"):
        fit(model, loaders[0], optimizer=mixed)


def test_an_optimizer_over_a_state_module_is_accepted(loaders):
    model, critic = mlp(), nn.Linear(2, 1)
    optimizer = torch.optim.SGD(list(model.parameters()) + list(critic.parameters()), lr=0.1)
    fit(model, loaders[0], optimizer=optimizer, state={"critic": critic}, epochs=1)


def test_a_missing_device_is_refused_before_training(loaders, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no such device"):
        fit(mlp(), loaders[0], device="cuda")


BAD_ARGUMENTS = [
    (dict(epochs=-1), ValueError, "epochs"), (dict(epochs=1.5), ValueError, "epochs"),
    (dict(epochs=True), ValueError, "epochs"), (dict(epochs="3"), ValueError, "epochs"),
    (dict(epochs=1, max_steps=5), ValueError, "exactly one"), (dict(epochs=None), ValueError, "exactly one"),
    (dict(max_steps=-3, epochs=None), ValueError, "max_steps"),
    (dict(scheduler_interval="batch"), ValueError, "scheduler_interval"),
    (dict(evals_per_epoch=0), ValueError, "evals_per_epoch"), (dict(evals_per_epoch=1.5), ValueError, "evals_per_epoch"),
    (dict(eval_every=0), ValueError, "eval_every"), (dict(eval_every=2, evals_per_epoch=2), ValueError, "not both"),
    (dict(log_every=-1), ValueError, "log_every"),
    (dict(max_grad_norm=-1), ValueError, "max_grad_norm"), (dict(max_grad_norm=0), ValueError, "max_grad_norm"),
    (dict(max_grad_norm=float("nan")), ValueError, "max_grad_norm"), (dict(max_grad_norm=True), ValueError, "max_grad_norm"),
    (dict(optimizer="adam"), TypeError, "torch.optim.Optimizer"),
    (dict(step="supervised"), TypeError, "step must be a function"),
    (dict(scheduler=3), TypeError, "scheduler"),
    (dict(after_step=3), TypeError, "after_step"), (dict(stop_when=True), TypeError, "stop_when"),
    (dict(state={"ema": 3}), TypeError, "state_dict"),
    (dict(evals={"Val": []}), ValueError, "evaluation names"), (dict(evals={"train": []}), ValueError, "evaluation names"),
    (dict(evals={"val_set": []}), ValueError, "evaluation names"), (dict(evals={"val": 3}), TypeError, "loader or a function"),
    (dict(config=[1, 2]), TypeError, "config"),
    (dict(device="tpu"), ValueError, "cuda"),
    # a switch that is not True or False ("no" would count as true: a bar, or mixed precision)
    (dict(progress="no"), TypeError, "progress must be True or False; got 'no'"),
    (dict(progress=None), TypeError, "progress must be True or False"),
    (dict(amp="no"), TypeError, "amp must be True or False; got 'no'"),
    (dict(amp=1), TypeError, "amp must be True or False; got 1"),
    (dict(checkpoint=123), TypeError, r"checkpoint must be a path \(str or os.PathLike\) or None; got int$"),
    (dict(checkpoint=["run.pt"]), TypeError, "checkpoint must be a path"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD_ARGUMENTS, ids=[str(a[0]) for a in BAD_ARGUMENTS])
def test_fit_validates_arguments(loaders, kwargs, error, match):
    model = mlp()
    before = clone_state(model)
    kwargs = {"epochs": 1, "optimizer": sgd(model), "device": "cpu", "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        train.fit(model, loaders[0], **kwargs)
    assert state_equal(before, model.state_dict())


def test_fit_validates_model_loader_and_step(loaders, toy_classification):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        train.fit(lambda x: x, loaders[0], epochs=1, optimizer=sgd(mlp()))
    with pytest.raises(TypeError, match="iterable"):
        fit(mlp(), 3)
    with pytest.raises(ValueError, match="needs an optimizer"):
        train.fit(mlp(), loaders[0], epochs=1, device="cpu")
    x, y = toy_classification
    with pytest.raises(ValueError, match="empty"):
        fit(mlp(), BatchLoader(x[:3], y[:3], batch_size=4, drop_last=True))
    with pytest.raises(ValueError, match="no batches"):
        fit(mlp(), Empty(), max_steps=3)


@pytest.mark.parametrize("returned, error, match", [
    (lambda loss: loss, TypeError, "must return a dict"),
    (lambda loss: {"kl": loss}, ValueError, "must return a 'loss'"),
    (lambda loss: {"loss": loss.detach()}, ValueError, "requires grad"),
    (lambda loss: {"loss": loss, "per_example": torch.zeros(3)}, ValueError, r"shape \(3,\)"),
    (lambda loss: {"loss": loss, "note": "hello"}, ValueError, "scalar"),
    (lambda loss: {"loss": loss, 3: loss}, ValueError, "keys must be names"),
])
def test_what_a_step_returns_is_checked(loaders, returned, error, match):
    def step(model, batch):
        x, y = batch
        return returned(F.cross_entropy(model(x), y))

    model = mlp()
    with pytest.raises(error, match=match):
        fit(model, loaders[0], step=step, optimizer=sgd(model))


def test_supervised_step_checks_its_batch():
    with pytest.raises(ValueError, match=r"\(x, y\) batches; got a tuple of 3"):
        train.supervised()(mlp(), (torch.zeros(2, 2), torch.zeros(2), torch.zeros(2)))
    with pytest.raises(TypeError, match="loss_fn"):
        train.supervised("mse")


# the first batch: errors in the reader's words -------------------------------

def _labelled(y, n=16, width=2):
    """An unshuffled loader of ``n`` random inputs with the labels ``y``, 8 a batch."""
    return BatchLoader(torch.randn(n, width, generator=torch.Generator().manual_seed(0)), y, batch_size=8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_labels_of_another_dtype_are_refused_before_the_loss(native_bf16, dtype):
    model = mlp()
    before = clone_state(model)
    y = (torch.arange(16) % 3).to(dtype)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ValueError) as err:
        train.fit(model, _labelled(y), epochs=1, optimizer=sgd(model), device="cpu", progress=False)
    message = str(err.value)
    assert isinstance(err.value, train.LabelError)
    assert message.startswith("The first batch (step 1) could not go through the step (supervised(cross_entropy)): "
                              f"the labels y are {name}; cross-entropy wants class indices (int64): use y.long().")
    assert f"(x: float32 [8, 2], y: {name} [8])" in message and "y_hat:" in message
    assert "expected target dtype" not in message
    assert state_equal(before, model.state_dict())  # refused before any update


def test_class_probabilities_are_not_labels(native_bf16):
    """A float target shaped like the output is a distribution over classes, which cross-entropy takes."""
    model = mlp()
    probabilities = torch.softmax(torch.randn(16, 3), dim=1)
    history = train.fit(model, _labelled(probabilities), epochs=1, optimizer=sgd(model), device="cpu",
                        progress=False, step=train.supervised(F.cross_entropy))
    assert "train_acc" not in history.last and math.isfinite(history.last["train_loss"])


def test_a_label_that_is_not_a_class_is_named_with_the_batch(native_bf16):
    model = mlp()  # 3 classes
    y = torch.arange(16) % 3
    y[5] = 9
    before = clone_state(model)
    with pytest.raises(ValueError) as err:
        train.fit(model, _labelled(y), epochs=1, optimizer=sgd(model), device="cpu", progress=False)
    message = str(err.value)
    assert message.startswith("The first batch (step 1) could not go through the step (supervised(cross_entropy)): "
                              "label 9 (y[5]) is not a class of this model: its output has 3 classes (dim 1 of "
                              "y_hat), so labels must lie in 0..2.")
    assert "The batch: (x: float32 [8, 2], y: int64 [8])" in message and "out of bounds" not in message
    assert state_equal(before, model.state_dict())


def test_a_bad_label_in_a_later_batch_names_its_step(native_bf16):
    y = torch.arange(24) % 3
    y[17] = -1  # the third batch of 8
    updates = []
    with pytest.raises(train.LabelError, match=r"^step 3: label -1 \(y\[1\]\) is not a class of this model.*"
                                               r"must lie in 0\.\.2 \(a label to ignore must equal ignore_index, "
                                               r"here -100\)"):
        fit(mlp(), _labelled(y, n=24), epochs=1, amp=True, after_step=lambda m: updates.append(1))
    assert len(updates) == 2


@pytest.mark.parametrize("loss_fn, ignored", [
    (F.cross_entropy, -100), (nn.CrossEntropyLoss(), -100), (partial(F.cross_entropy, ignore_index=3), 3),
    (nn.CrossEntropyLoss(ignore_index=-1), -1),
])
def test_ignore_index_is_not_a_bad_label(loss_fn, ignored):
    y = torch.arange(16) % 3
    y[::4] = ignored
    model = mlp()
    history = fit(model, _labelled(y), epochs=1, step=train.supervised(loss_fn), optimizer=sgd(model))
    assert math.isfinite(history.last["train_loss"])
    y[1] = 7
    with pytest.raises(train.LabelError, match=r"label 7 \(y\[1\]\) is not a class"):
        fit(model, _labelled(y), epochs=1, step=train.supervised(loss_fn), optimizer=sgd(model))


def test_nll_labels_are_checked_too_and_in_evaluate():
    model = nn.Sequential(nn.Linear(2, 3), nn.LogSoftmax(dim=1))
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(train.LabelError, match=r"^label 3 \(y\[3\]\) is not a class.*3 classes"):
        train.evaluate(model, [(torch.randn(4, 2), y)], train.supervised(F.nll_loss))
    with pytest.raises(train.LabelError, match=r"labels y are float32"):
        train.supervised(nn.NLLLoss())(model, (torch.randn(4, 2), y.float()))


@pytest.mark.parametrize("named", [True, False])
def test_an_input_of_the_wrong_width_names_the_batch_and_the_layer(native_bf16, named):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)) if named else nn.Linear(4, 3)
    layer = "Linear '0'" if named else "Linear"
    before = clone_state(model)
    loader = BatchLoader(torch.randn(16, 5), torch.arange(16) % 3, batch_size=8)
    with pytest.raises(RuntimeError) as err:
        train.fit(model, loader, epochs=1, optimizer=sgd(model), device="cpu", progress=False)
    assert str(err.value) == (
        "The first batch (step 1) could not go through the step (supervised(cross_entropy)): "
        "batch = (x: float32 [8, 5], y: int64 [8]); "
        f"the model's first layer {layer} expects float32 input with 4 features (its last dimension), "
        "but its input is float32 [8, 5]. "
        "PyTorch said: mat1 and mat2 shapes cannot be multiplied (8x5 and 4x3).")
    assert type(err.value) is RuntimeError
    assert isinstance(err.value.__cause__, RuntimeError)  # the original, chained
    assert str(err.value.__cause__) == "mat1 and mat2 shapes cannot be multiplied (8x5 and 4x3)"
    assert state_equal(before, model.state_dict())


def test_a_mismatch_deeper_in_the_model_names_that_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))  # for 7x7 inputs
    loader = BatchLoader(torch.randn(16, 1, 8, 8), torch.arange(16) % 3, batch_size=8)
    with pytest.raises(RuntimeError, match=r"batch = \(x: float32 \[8, 1, 8, 8\], y: int64 \[8\]\); the model's "
                                           r"layer Linear '3' expects float32 input with 100 features \(its last "
                                           r"dimension\), but its input is float32 \[8, 144\]\. PyTorch said: "):
        fit(model, loader, epochs=1)
    channels = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 3))
    with pytest.raises(RuntimeError, match=r"the model's first layer Conv2d '0' expects float32 input "
                                           r"\(B, 3, H, W\) with 3 channels, but its input is float32 \[8, 1, 8, 8\]"):
        fit(channels, loader, epochs=1)
    embedding = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3))
    tokens = BatchLoader(torch.arange(48).reshape(16, 3) % 13, torch.arange(16) % 3, batch_size=8)
    with pytest.raises(IndexError, match=r"first layer Embedding '0' expects integer ids in 0\.\.9, but its "
                                         r"input is int64 \[8, 3\] with ids 0\.\.12\. PyTorch said: index out of range"):
        fit(embedding, tokens, epochs=1)


def test_an_error_of_a_custom_step_names_the_batch_and_the_models_output():
    def classify(model, batch):
        x, y = batch
        return {"loss": F.cross_entropy(model(x), y)}

    y = torch.arange(16) % 3
    y[0] = 7
    with pytest.raises(IndexError) as err:
        fit(mlp(), _labelled(y), epochs=1, step=classify)
    assert str(err.value) == ("The first batch (step 1) could not go through the step (classify): "
                              "batch = (float32 [8, 2], int64 [8]); the model's output: float32 [8, 3]. "
                              "PyTorch said: Target 7 is out of bounds.")
    assert isinstance(err.value.__cause__, IndexError)

    def checks_itself(model, batch):
        raise ValueError("the batch must hold images")

    with pytest.raises(ValueError, match=r"\(checks_itself\): batch = \(float32 \[8, 2\], int64 \[8\]\); the "
                                         r"model's first layer Linear '0' expects float32 input with 2 features "
                                         r"\(its last dimension\)\. The step said: the batch must hold images\.$"):
        model = mlp()
        fit(model, _labelled(y), epochs=1, step=checks_itself, optimizer=sgd(model))


def test_a_backward_that_fails_on_the_first_batch_is_explained():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            return self.fc(x).sigmoid().mul_(2)  # sigmoid's backward needs the output it overwrote

    with pytest.raises(RuntimeError, match=r"^The first batch \(step 1\) went through the step \(supervised\("
                                           r"cross_entropy\)\), but back-propagating its loss failed: batch = \(x: "
                                           r"float32 \[8, 2\], y: int64 \[8\]\)\. PyTorch said: one of the "
                                           r"variables needed for gradient computation has been modified") as err:
        fit(InPlace(), _labelled(torch.arange(16) % 3), epochs=1)
    assert isinstance(err.value.__cause__, RuntimeError)


def _picky_step(model, batch):
    """Doubles the width of a batch that holds class 2 only: a malformed batch, on purpose."""
    x, y = batch
    if bool((y == 2).all()):
        x = torch.cat([x, x], dim=1)
    return {"loss": F.cross_entropy(model(x), y)}


def test_only_the_first_step_of_a_call_is_explained_also_after_a_resume(tmp_path, capsys):
    y = torch.arange(48) % 3
    y[16:24] = 2  # the third batch
    path = tmp_path / "run.pt"

    def run():
        torch.manual_seed(0)
        model = mlp()
        return fit(model, _labelled(y, n=48), epochs=1, step=_picky_step, optimizer=sgd(model), eval_every=2,
                   checkpoint=path)

    with pytest.raises(RuntimeError) as err:  # step 3, not the first: torch's own error, unchanged
        run()
    assert str(err.value) == "mat1 and mat2 shapes cannot be multiplied (8x4 and 2x16)"
    assert err.value.__cause__ is None
    assert load_checkpoint(path)["step"] == 2
    with pytest.raises(RuntimeError) as err:  # resumed after step 2: step 3 is the first of this call
        run()
    assert "Resumed from" in capsys.readouterr().out
    assert str(err.value) == (
        "The first batch after resuming (step 3) could not go through the step (_picky_step): "
        "batch = (float32 [8, 2], int64 [8]); the model's first layer Linear '0' expects float32 input with 2 "
        "features (its last dimension), but its input is float32 [8, 4]. "
        "PyTorch said: mat1 and mat2 shapes cannot be multiplied (8x4 and 2x16).")


@pytest.mark.parametrize("error", [KeyboardInterrupt("stop"), train.TrainingError("diverged"),
                                   CheckpointError("run.pt", "is broken")])
def test_the_first_step_lets_interrupts_and_dlbooks_own_errors_through(error):
    def step(model, batch):
        raise error

    with pytest.raises(type(error)) as err:
        fit(mlp(), _labelled(torch.arange(16) % 3), epochs=1, step=step)
    assert err.value is error


def test_the_first_step_leaves_no_hooks_behind(loaders):
    model = mlp()
    fit(model, loaders[0], epochs=1)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="first batch"):
        fit(model, BatchLoader(torch.randn(8, 3), torch.arange(8) % 3, batch_size=4), epochs=1)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# evaluate ---------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
def test_evaluate_restores_the_mode(loaders, training):
    model = mlp(dropout=0.5)
    model.train(training)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(m.training))
    train.evaluate(model, loaders[1])
    assert seen and not any(seen)  # evaluated in eval mode
    assert model.training is training
    with pytest.raises(ValueError, match="empty"):
        train.evaluate(model, [])
    assert model.training is training


def test_evaluate_matches_a_manual_computation(native_bf16, loaders, toy_classification):
    """Like with like: the manual computation runs under the same autocast."""
    torch.manual_seed(0)
    model = mlp()
    x, y = toy_classification
    out = train.evaluate(model, loaders[1], device="cpu")
    with torch.no_grad(), dlbook.autocast("cpu") as dtype:
        y_hat = model(x)
        loss = F.cross_entropy(y_hat, y).item()
    assert dtype == (torch.bfloat16 if native_bf16 else None)
    assert out["loss"] == pytest.approx(loss, rel=1e-5)
    assert out["acc"] == pytest.approx((y_hat.argmax(1) == y).float().mean().item())
    assert torch.is_grad_enabled()  # evaluate's no_grad ends with it


def test_evaluate_weights_batches_by_their_size(toy_classification):
    x, y = toy_classification
    torch.manual_seed(0)
    model = mlp()
    uneven = BatchLoader(x, y, batch_size=100)  # 100, 100, 40
    out = train.evaluate(model, uneven, amp=False)
    with torch.no_grad():
        assert out["loss"] == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-6)


def test_evaluate_with_gradients_for_an_attack(loaders):
    """An FGSM-style step needs the gradient of the loss with respect to the input."""

    def attacked(model, batch):
        x, y = batch
        x = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        x_adv = x + 0.5 * x.grad.sign()
        return {"acc": (model(x_adv).argmax(1) == y).float().mean()}

    torch.manual_seed(0)
    model = mlp()
    fit(model, loaders[0], epochs=3)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    with pytest.raises(RuntimeError, match="does not require grad"):  # without gradients, no attack
        train.evaluate(model, loaders[1], step=attacked)
    robust = train.evaluate(model, loaders[1], step=attacked, grad=True)["acc"]
    clean = train.evaluate(model, loaders[1])["acc"]
    assert robust < clean
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())  # left as they were


# History ----------------------------------------------------------------------

def test_history_methods():
    h = train.History([
        {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5},
        {"epoch": 2, "train_loss": 0.5},
        {"epoch": 3, "train_loss": 0.7, "val_acc": 0.9},
        {"epoch": 4, "train_loss": 0.2, "val_acc": 0.8},
    ])
    assert len(h) == 4 and h[1]["epoch"] == 2 and [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert h.keys() == ["epoch", "train_loss", "val_acc"]
    assert h.column("val_acc") == [0.5, 0.9, 0.8]
    assert h.column("nothing") == []
    assert h.first_reaching("val_acc", 0.8)["epoch"] == 3
    assert h.first_reaching("val_acc", 0.5)["epoch"] == 1  # "at least"
    assert h.first_reaching("val_acc", 0.95) is None
    assert h.best("val_acc")["epoch"] == 3
    assert h.best("train_loss", mode="min")["epoch"] == 4
    assert h.last["epoch"] == 4
    assert "4 records" in repr(h)
    with pytest.raises(KeyError, match="val_loss"):
        h.best("val_loss")
    with pytest.raises(ValueError, match="mode"):
        h.best("val_acc", mode="largest")
    with pytest.raises(IndexError, match="empty"):
        train.History().last


# EMA and to_device ------------------------------------------------------------

def test_ema_follows_the_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = train.EMA(model, decay=0.9)
    start = clone_state(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(8, 3))  # moves the batch-norm statistics, counts a batch
    ema.update(model)
    now = model.state_dict()
    for key, value in now.items():
        if torch.is_floating_point(value):
            assert torch.allclose(ema.shadow[key], 0.9 * start[key] + 0.1 * value), key
        else:
            assert torch.equal(ema.shadow[key], value), key  # num_batches_tracked is copied
    assert ema.num_updates == 1


def test_ema_applied_to_swaps_and_restores():
    model = nn.Linear(3, 2)
    ema = train.EMA(model, decay=0.5)
    own = clone_state(model)
    with torch.no_grad():
        model.weight.add_(2.0)
    ema.update(model)
    trained = clone_state(model)
    with ema.applied_to(model):
        assert torch.allclose(model.weight, own["weight"] + 1.0)
    assert state_equal(model.state_dict(), trained)


def test_ema_state_dict_round_trip_and_checks():
    model = nn.Linear(3, 2)
    ema = train.EMA(model, decay=0.99)
    ema.update(model)
    other = train.EMA(nn.Linear(3, 2), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.99 and other.num_updates == 1 and state_equal(other.shadow, ema.shadow)
    with pytest.raises(ValueError, match="another model"):
        ema.update(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="another model"):
        train.EMA(nn.Linear(3, 3)).load_state_dict(ema.state_dict())
    for decay in (1.0, -0.1, float("nan"), "0.9", True):
        with pytest.raises(ValueError, match="decay"):
            train.EMA(model, decay=decay)


def test_to_device_handles_every_kind_of_batch():
    Pair = collections.namedtuple("Pair", "x y")

    class Graph:
        def __init__(self):
            self.moved_to = None

        def to(self, device):
            self.moved_to = device
            return self

    x = torch.zeros(2)
    graph = Graph()
    out = train.to_device({"a": (x, [x, Pair(x, x)]), "g": graph, "n": 3, "s": "text", "none": None}, "cpu")
    assert isinstance(out["a"], tuple) and isinstance(out["a"][1], list) and isinstance(out["a"][1][1], Pair)
    assert out["n"] == 3 and out["s"] == "text" and out["none"] is None
    assert graph.moved_to == torch.device("cpu")


@pytest.mark.parametrize("device", ["banana", "cuda:x", ""])
def test_to_device_names_the_devices_in_one_line(device):
    with pytest.raises(ValueError) as err:
        train.to_device((torch.zeros(2), torch.zeros(2)), device)
    message = str(err.value)
    assert message == ("device must be a device name: 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps'; "
                       f"got {device!r}")
    assert err.value.__cause__ is None and err.value.__suppress_context__  # not torch's list of 20 device types
    with pytest.raises(TypeError, match="device"):
        train.to_device(torch.zeros(2), 0)


@pytest.mark.parametrize("kwargs, match", [(dict(amp="no"), "amp must be True or False"),
                                           (dict(grad="yes"), "grad must be True or False"),
                                           (dict(device="banana"), "'cuda:N'")])
def test_evaluate_validates_its_switches(loaders, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        train.evaluate(mlp(), loaders[1], **kwargs)


# checkpoints ------------------------------------------------------------------

def test_checkpoint_path(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOOK_CHECKPOINTS", str(tmp_path / "ck"))
    assert train.checkpoint_path("lenet") == tmp_path / "ck" / "lenet-smoke.pt"
    monkeypatch.setenv("DLBOOK_PROFILE", "full")
    assert train.checkpoint_path("lenet") == tmp_path / "ck" / "lenet-full.pt"
    monkeypatch.delenv("DLBOOK_CHECKPOINTS")
    assert train.checkpoint_path("lenet") == tmp_path / "user-cache" / "checkpoints" / "lenet-full.pt"
    monkeypatch.setenv("DLBOOK_PROFILE", "bogus")
    with pytest.raises(ValueError, match="smoke"):
        train.checkpoint_path("lenet")


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", None, 3, ["x"], "a b"])
def test_checkpoint_path_rejects_bad_names(name):
    with pytest.raises(ValueError, match="checkpoint name"):
        train.checkpoint_path(name)


def test_checkpoint_written_atomically_at_every_evaluation(loaders, tmp_path, monkeypatch):
    saves = []
    real_save = train.save_checkpoint

    def spy(obj, path):
        saves.append((obj["step"], len(obj["history"]), Path(path)))
        return real_save(obj, path)

    monkeypatch.setattr(train, "save_checkpoint", spy)
    path = tmp_path / "ck" / "run.pt"
    torch.manual_seed(0)
    model = mlp()
    history = fit(model, loaders[0], epochs=3, evals_per_epoch=2, log_every=1, checkpoint=path)
    assert saves == [(3 * i, 3 * i, path) for i in range(1, 7)]  # at evaluations, not at every record
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]  # no temporary files
    state = load_checkpoint(path)
    assert state["step"] == 18 and state["history"] == history.records
    assert state_equal(state["model"], model.state_dict())


def test_checkpoint_path_with_a_tilde(loaders, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    fit(mlp(), loaders[0], epochs=1, checkpoint="~/ck.pt")
    assert (tmp_path / "home" / "ck.pt").exists()
    assert not (tmp_path / "~").exists()


class Untouchable(BatchLoader):
    """The same data as a BatchLoader, but iterating it fails the test."""

    def __iter__(self):
        raise AssertionError("fit iterated the loader of a finished run")


def test_resuming_a_finished_run_trains_nothing(loaders, tmp_path, capsys):
    path = tmp_path / "run.pt"
    x, y = loaders[0].tensors
    torch.manual_seed(0)
    model = mlp()
    history = fit(model, BatchLoader(x, y, batch_size=40, shuffle=True), epochs=3, checkpoint=path)
    trained = clone_state(model)
    torch.manual_seed(0)
    again = mlp()
    resumed = fit(again, Untouchable(x, y, batch_size=40, shuffle=True), epochs=3, checkpoint=path)
    assert resumed.records == history.records
    assert state_equal(again.state_dict(), trained)
    assert "had finished" in capsys.readouterr().out


def jitter(x, scale):
    """Augmentation for the toy data: Gaussian noise."""
    return x + scale * torch.randn_like(x)


def _run_for_change(change, loaders, path):
    """Train a run (changed in one way) with a checkpoint; return the model."""
    torch.manual_seed(1 if change == "seed" else 0)
    x, y = loaders[0].tensors
    if change == "data":
        y = y.clone()
        y[7] = (y[7] + 1) % 3
    loader = BatchLoader(x, y, batch_size=20 if change == "batch size" else 40, shuffle=True,
                         transform=partial(jitter, scale=0.2 if change == "augmentation" else 0.1))
    model = mlp(hidden=8 if change == "width" else 16, dropout=0.2 if change == "dropout" else 0.1,
                act=nn.GELU if change == "activation" else nn.ReLU)
    optimizer = (torch.optim.Adam(model.parameters()) if change == "optimizer" else
                 torch.optim.SGD(model.parameters(), lr=0.2 if change == "lr" else 0.1,
                                 weight_decay=1e-4 if change == "weight decay" else 0.0))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.3 if change == "scheduler" else 0.5)
    ema = train.EMA(model, decay=0.9 if change == "ema" else 0.99)
    step = train.supervised(F.nll_loss if change == "loss" else F.cross_entropy)
    if change == "loss":
        model.append(nn.LogSoftmax(dim=1))
    kwargs = dict(epochs=3 if change == "epochs" else 2, step=step, optimizer=optimizer, scheduler=scheduler,
                  evals={"val": loaders[1]} if change != "evals" else {"val": loaders[1], "test": loaders[1]},
                  state={"ema": ema}, after_step=ema.update, config={"beta": 2.0 if change == "config" else 1.0},
                  checkpoint=path)
    fit(model, loader, **kwargs)
    return model


CHANGES = ["activation", "dropout", "seed", "width", "optimizer", "lr", "weight decay", "scheduler", "epochs",
           "batch size", "data", "augmentation", "loss", "evals", "ema", "config"]


@pytest.mark.parametrize("change", CHANGES)
def test_a_checkpoint_is_never_resumed_by_a_changed_run(loaders, tmp_path, change):
    path = tmp_path / "run.pt"
    _run_for_change(None, loaders, path)
    with pytest.raises(CheckpointError, match="different run") as err:
        _run_for_change(change, loaders, path)
    message = str(err.value)
    assert str(path) in message and "Delete it" in message and "weights_only" not in message
    _run_for_change(None, loaders, path)  # the same run, unchanged, is resumed (finished: trains nothing)


def test_the_refusal_says_what_changed(loaders, tmp_path):
    path = tmp_path / "run.pt"
    _run_for_change(None, loaders, path)
    with pytest.raises(CheckpointError, match=r"What differs: the model's structure \(its layers, activations"):
        _run_for_change("activation", loaders, path)
    with pytest.raises(CheckpointError, match=r"What differs: the model's weights when fit started .*another seed"):
        _run_for_change("seed", loaders, path)


def _valid_checkpoint(loaders, path):
    torch.manual_seed(0)
    fit(mlp(), loaders[0], epochs=1, checkpoint=path)
    return path.read_bytes()


def _malicious_pickle_bytes(marker: Path) -> bytes:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import io as _io
    import pickle

    buffer = _io.BytesIO()
    pickle.dump({"model": Evil()}, buffer)
    return buffer.getvalue()


CORRUPTIONS = {
    "empty": lambda good, marker: b"",
    "truncated": lambda good, marker: good[: len(good) // 2],
    "header only": lambda good, marker: good[:30],
    "one flipped bit": lambda good, marker: good[:-100] + bytes([good[-100] ^ 0x01]) + good[-99:],
    "garbage": lambda good, marker: os.urandom(4096),
    "a plain torch.save file": None,  # written below
    "a malicious pickle with a valid checksum": None,
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_broken_checkpoint_gives_one_clear_error(loaders, tmp_path, kind):
    import hashlib

    from dlbook.checkpoint import MAGIC

    path = tmp_path / "run.pt"
    good = _valid_checkpoint(loaders, path)
    marker = tmp_path / "pwned"
    if kind == "a plain torch.save file":
        torch.save({"model": {}}, path)
    elif kind == "a malicious pickle with a valid checksum":
        payload = _malicious_pickle_bytes(marker)
        path.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
    else:
        path.write_bytes(CORRUPTIONS[kind](good, marker))
    torch.manual_seed(0)
    model = mlp()
    before = clone_state(model)
    with pytest.raises(CheckpointError) as err:
        fit(model, loaders[0], epochs=1, checkpoint=path)
    message = str(err.value)
    assert str(path) in message and "Delete it to start afresh" in message
    assert "weights_only" not in message and "Errno" not in message
    assert not marker.exists()
    assert state_equal(before, model.state_dict())


def test_a_checkpoint_that_is_a_folder_or_not_a_training_run(loaders, tmp_path):
    folder = tmp_path / "a-folder.pt"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        fit(mlp(), loaders[0], epochs=1, checkpoint=folder)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(folder)
    other = tmp_path / "list.pt"
    save_checkpoint([1, 2, 3], other)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        fit(mlp(), loaders[0], epochs=1, checkpoint=other)


class Crashing:
    """Wraps a loader; with ``crash=(p, k)`` raises before batch k of pass p (1-based p).

    The crash setting is private, so the crashing and the clean loader
    describe the same data to fit's fingerprint."""

    def __init__(self, inner, crash=None):
        self.inner = inner
        self._crash, self._passes = crash, 0

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        self._passes += 1
        for i, batch in enumerate(self.inner):
            if self._crash == (self._passes, i):
                raise KeyboardInterrupt("simulated crash")
            yield batch


def _epoch_run(loader, path, val):
    torch.manual_seed(0)
    model = mlp(dropout=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=4 * 6)
    history = fit(model, loader, epochs=4, optimizer=optimizer, scheduler=scheduler, checkpoint=path,
                  evals={"val": val}, evals_per_epoch=2)
    return model, optimizer, history


def test_interrupted_epoch_run_resumes_exactly_in_process(loaders, tmp_path):
    x, y = loaders[0].tensors
    make = lambda: BatchLoader(x, y, batch_size=40, shuffle=True, transform=lambda b: b + 0.1 * torch.randn_like(b))  # noqa: E731
    reference, ref_opt, ref_history = _epoch_run(Crashing(make()), tmp_path / "a.pt", loaders[1])
    with pytest.raises(KeyboardInterrupt):
        _epoch_run(Crashing(make(), crash=(3, 5)), tmp_path / "b.pt", loaders[1])
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 15  # mid-epoch 3: resumes inside the pass
    torch.manual_seed(999)  # whatever the process did in between
    model, opt, history = _epoch_run(Crashing(make()), tmp_path / "b.pt", loaders[1])
    assert state_equal(model.state_dict(), reference.state_dict())
    assert without_seconds(history) == without_seconds(ref_history)


def _step_run(loader, path, val):
    torch.manual_seed(0)
    model = TwoPart()
    opt_body = torch.optim.AdamW(model.body.parameters(), lr=0.01)
    opt_head = torch.optim.SGD(model.head.parameters(), lr=0.05, momentum=0.9)
    ema = train.EMA(model, decay=0.9)
    history = fit(model, loader, max_steps=20, eval_every=4, step=own_update_step(opt_body, opt_head),
                  state={"opt_body": opt_body, "opt_head": opt_head, "ema": ema}, after_step=ema.update,
                  evals={"val": val}, eval_step=train.supervised(), checkpoint=path)
    return model, ema, history


def test_interrupted_step_run_resumes_exactly_in_process(loaders, tmp_path):
    x, y = loaders[0].tensors
    make = lambda: BatchLoader(x, y, batch_size=40, shuffle=True)  # noqa: E731 - 6 steps a pass
    reference, ref_ema, ref_history = _step_run(Crashing(make()), tmp_path / "a.pt", loaders[1])
    with pytest.raises(KeyboardInterrupt):
        _step_run(Crashing(make(), crash=(2, 4)), tmp_path / "b.pt", loaders[1])  # dies before step 11
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 8
    model, ema, history = _step_run(Crashing(make()), tmp_path / "b.pt", loaders[1])
    assert state_equal(model.state_dict(), reference.state_dict())
    assert state_equal(ema.shadow, ref_ema.shadow) and ema.num_updates == 20
    assert without_seconds(history) == without_seconds(ref_history)


# THE test: a process killed mid-training and restarted ------------------------

SCRIPT = textwrap.dedent('''
    """Train a tiny CNN with a checkpoint; save the final state.

    --block K: after step K, print BLOCKED and wait on stdin forever (to be killed).
    mode "epochs": fit owns an AdamW and a one-cycle schedule, evaluates twice an epoch.
    mode "steps": the step updates two optimizers itself, an EMA follows, max_steps.
    """
    import argparse, sys
    import torch
    torch.set_num_threads(1)
    import torch.nn.functional as F
    from torch import nn
    import dlbook
    from dlbook.data import BatchLoader, random_shift
    from dlbook.train import EMA, fit, gradient_step, supervised

    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["epochs", "steps"])
    parser.add_argument("checkpoint")
    parser.add_argument("output")
    parser.add_argument("--block", type=int)
    args = parser.parse_args()
    BATCHES = [0]

    class Loader:
        """A BatchLoader that can stop the process between two steps."""
        def __init__(self, inner):
            self.inner = inner
        def fingerprint(self):
            return self.inner.fingerprint()
        def __len__(self):
            return len(self.inner)
        def __iter__(self):
            for batch in self.inner:
                if args.block is not None and BATCHES[0] == args.block:
                    print("BLOCKED", flush=True)
                    sys.stdin.readline()
                BATCHES[0] += 1
                yield batch

    dlbook.seed_everything(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(320, 1, 8, 8, generator=gen)  # (B, C, H, W)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()  # (B,) 4 classes
    train_loader = Loader(BatchLoader(x[64:], y[64:], batch_size=32, shuffle=True,
                                      transform=lambda b: random_shift(b, 1)))  # 8 steps a pass
    val_loader = BatchLoader(x[:64], y[:64], batch_size=32)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3))  # (B, 256)
    head = nn.Sequential(nn.Linear(256, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4))  # (B, K)
    model = nn.Sequential(body, head)
    if args.mode == "epochs":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.02, total_steps=6 * 8)
        history = fit(model, train_loader, epochs=6, optimizer=optimizer, scheduler=scheduler,
                      evals={"val": val_loader}, evals_per_epoch=2, device="cpu", amp=False,
                      checkpoint=args.checkpoint, progress=False, max_grad_norm=5.0)
        extra = {"optimizer": optimizer.state_dict(), "lr": scheduler.get_last_lr()}
    else:
        opt_body = torch.optim.AdamW(body.parameters(), lr=1e-3)
        opt_head = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
        ema = EMA(model, decay=0.9)

        def step(model, batch):
            x, y = batch
            for _ in range(2):  # two head updates for each body update
                loss_head = F.cross_entropy(model(x), y)
                gradient_step(opt_head, loss_head)
            loss = F.cross_entropy(model(x), y)
            gradient_step(opt_body, loss)
            return {"loss": loss.detach(), "loss_head": loss_head.detach()}

        history = fit(model, train_loader, max_steps=30, eval_every=5, step=step,
                      state={"opt_body": opt_body, "opt_head": opt_head, "ema": ema},
                      after_step=ema.update, evals={"val": val_loader}, eval_step=supervised(),
                      device="cpu", amp=False, checkpoint=args.checkpoint, progress=False)
        extra = {"opt_body": opt_body.state_dict(), "opt_head": opt_head.state_dict(), "ema": ema.shadow}
    records = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    torch.save({"model": model.state_dict(), "history": records, **extra}, args.output)
''')


def _start(script, tmp_path, *args, log):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = open(tmp_path / f"{log}.log", "w")
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE if log == "victim" else out, stderr=out,
                            stdin=subprocess.PIPE, text=True)


def _finish(proc, tmp_path, log):
    assert proc.wait() == 0, (tmp_path / f"{log}.log").read_text()


def _tensors_equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _tensors_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _tensors_equal(u, v, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("mode, block_after, saved_at, records", [
    ("epochs", 22, 20, 12),  # killed in epoch 3 (steps 21-22 lost); the last checkpoint was mid-epoch
    ("steps", 13, 10, 6),  # killed after step 13 of 30 (11-13 lost); the last checkpoint was mid-pass
])
def test_killed_run_restarted_ends_with_the_same_weights(tmp_path, mode, block_after, saved_at, records):
    """A real process is SIGKILLed between two steps, after its last checkpoint,
    and started again: it ends with exactly the weights, optimizer states,
    EMA and history of a run that was never interrupted.

    No clocks: the victim says when it has reached the step, then waits to be killed.
    """
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    ckpt = tmp_path / "ck" / "run.pt"
    result, ref_result = tmp_path / "result.pt", tmp_path / "reference.pt"
    reference = _start(script, tmp_path, mode, tmp_path / "ck" / "reference.pt", ref_result, log="reference")
    victim = _start(script, tmp_path, mode, ckpt, result, "--block", block_after, log="victim")
    try:
        line = victim.stdout.readline()
        assert line == "BLOCKED\n", (line, (tmp_path / "victim.log").read_text())
        victim.send_signal(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
        assert not result.exists()
        killed_state = load_checkpoint(ckpt)
        assert killed_state["step"] == saved_at
        assert [p.name for p in ckpt.parent.iterdir() if p.name.startswith(".run.pt")] == []  # no temp file
        restart = _start(script, tmp_path, mode, ckpt, result, log="restart")
        _finish(restart, tmp_path, "restart")
        _finish(reference, tmp_path, "reference")
    finally:
        for proc in (reference, victim):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ours = torch.load(result, weights_only=True)
    theirs = torch.load(ref_result, weights_only=True)
    _tensors_equal(ours, theirs)
    assert len(ours["history"]) == records
    # the restart did train: its weights moved on from the checkpoint
    assert not torch.equal(ours["model"]["0.0.weight"], killed_state["model"]["0.0.weight"])


# predictions ------------------------------------------------------------------

def test_predictions_agree_with_evaluate_and_restore_the_mode(toy_classification):
    x, y = toy_classification
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, int(y.max()) + 1))
    model.train()
    loader = BatchLoader(x, y, batch_size=100)  # 100, 100, 40
    y_hat, labels = train.predictions(model, loader, device="cpu", amp=False)
    assert y_hat.shape == y.shape and y_hat.dtype == torch.int64 and torch.equal(labels, y)
    assert model.training  # restored
    with torch.no_grad():
        assert torch.equal(y_hat, model.eval()(x).argmax(1))  # in eval mode: dropout off
    acc = train.evaluate(model, loader, device="cpu", amp=False)["acc"]
    assert (y_hat == labels).double().mean().item() == pytest.approx(acc)


def test_predictions_bad_input(toy_classification):
    x, y = toy_classification
    model = nn.Linear(x.shape[1], 3)
    with pytest.raises(ValueError, match=r"\(x, y\) batches; got a Tensor"):
        train.predictions(model, [x])
    with pytest.raises(ValueError, match="empty"):
        train.predictions(model, [])
    with pytest.raises(ValueError, match=r"scores of shape \(B, K\)"):
        train.predictions(nn.Flatten(0), [(x, y)])
    with pytest.raises(TypeError, match="nn.Module"):
        train.predictions(lambda v: v, [(x, y)])
