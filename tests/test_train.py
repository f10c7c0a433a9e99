"""dlbook.train: fit, evaluate, History, checkpoints and exact resumption."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlbook
from dlbook import train
from dlbook.data import BatchLoader
from dlbook.io import safe_torch_load

ROOT = Path(__file__).resolve().parents[1]


def mlp(hidden=16, dropout=0.0):
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 3))


def fit(model, loader, **kwargs):
    kwargs.setdefault("epochs", 3)
    kwargs.setdefault("optimizer", torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    return train.fit(model, loader, device="cpu", amp=False, progress=False, **kwargs)


@pytest.fixture
def loaders(toy_classification):
    x, y = toy_classification
    return BatchLoader(x, y, batch_size=40, shuffle=True), BatchLoader(x, y, batch_size=100)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def clone_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# fit learns -------------------------------------------------------------------

def test_fit_learns_a_toy_problem(loaders):
    torch.manual_seed(0)
    model = mlp()
    train_loader, val_loader = loaders
    before = train.evaluate(model, val_loader)
    history = fit(model, train_loader, epochs=5, val_loader=val_loader)
    assert len(history) == 5
    losses = history.column("train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert history.last["train_acc"] > 0.95 and history.last["val_acc"] > 0.95
    assert history.last["val_loss"] < before["loss"] and before["acc"] < 0.9
    assert history.column("epoch") == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert history.column("step") == [6, 12, 18, 24, 30]
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
    history = fit(model, loader, epochs=20, loss_fn=F.mse_loss, val_loader=loader,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert "train_acc" not in history.last and "val_acc" not in history.last
    assert history.last["val_loss"] < 1e-3 < history[0]["train_loss"]


def test_fit_with_autocast_on_a_bf16_cpu(monkeypatch, loaders):
    """amp=True takes the mixed-precision path where the CPU has native bf16."""
    monkeypatch.setattr(dlbook.device, "cpu_has_native_bf16", lambda: True)
    torch.manual_seed(0)
    model = mlp()
    dtypes = []
    model.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    history = train.fit(model, loaders[0], epochs=4, device="cpu", progress=False,
                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    assert set(dtypes) == {torch.bfloat16}
    assert model[0].weight.dtype == torch.float32  # weights stay in float32
    assert history.last["train_acc"] > 0.9


def test_progress_bar_goes_to_stdout(loaders, capsys):
    torch.manual_seed(0)
    model = mlp()
    train.fit(model, loaders[0], epochs=2, device="cpu", amp=False, desc="toy",
              optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    out = capsys.readouterr().out
    assert "toy epoch 1/2" in out and "toy epoch 2/2" in out and "loss=" in out


def test_fit_uses_the_default_device(loaders):
    torch.manual_seed(0)
    model = mlp()
    train.fit(model, loaders[0], epochs=1, progress=False,
              optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert next(model.parameters()).device == dlbook.get_device()


def test_evals_per_epoch(loaders):
    torch.manual_seed(0)
    model = mlp()
    history = fit(model, loaders[0], epochs=2, evals_per_epoch=3, val_loader=loaders[1])
    assert len(history) == 6
    assert history.column("epoch") == [0.3333, 0.6667, 1.0, 1.3333, 1.6667, 2.0]
    assert history.column("step") == [2, 4, 6, 8, 10, 12]
    assert len(history.column("val_acc")) == 6


def test_evals_per_epoch_equal_to_the_number_of_steps(loaders):
    torch.manual_seed(0)
    history = fit(mlp(), loaders[0], epochs=1, evals_per_epoch=6)
    assert history.column("step") == [1, 2, 3, 4, 5, 6]


def test_evals_per_epoch_more_than_steps(toy_classification):
    x, y = toy_classification
    loader = BatchLoader(x, y, batch_size=120)  # 2 steps an epoch
    torch.manual_seed(0)
    try:
        history = fit(mlp(), loader, epochs=1, evals_per_epoch=4)
    except ValueError:
        return
    assert len(history) == 4


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


def test_evaluate_matches_a_manual_computation(loaders, toy_classification):
    torch.manual_seed(0)
    model = mlp()
    x, y = toy_classification
    out = train.evaluate(model, loaders[1], device="cpu")
    with torch.no_grad():
        y_hat = model(x)
    assert out["loss"] == pytest.approx(F.cross_entropy(y_hat, y).item(), rel=1e-5)
    assert out["acc"] == pytest.approx((y_hat.argmax(1) == y).sum().item() / len(y))
    assert torch.is_grad_enabled()  # evaluate's no_grad ends with it


# History ----------------------------------------------------------------------

def test_history_methods():
    h = train.History([
        {"epoch": 1, "train_loss": 1.0, "val_acc": 0.5},
        {"epoch": 2, "train_loss": 0.5},
        {"epoch": 3, "train_loss": 0.7, "val_acc": 0.9},
        {"epoch": 4, "train_loss": 0.2, "val_acc": 0.8},
    ])
    assert len(h) == 4 and h[1]["epoch"] == 2 and [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert h.column("val_acc") == [0.5, 0.9, 0.8]
    assert h.column("nothing") == []
    assert h.first_reaching("val_acc", 0.8)["epoch"] == 3
    assert h.first_reaching("val_acc", 0.5)["epoch"] == 1  # "at least"
    assert h.first_reaching("val_acc", 0.95) is None
    assert h.best("val_acc")["epoch"] == 3
    assert h.best("train_loss")["epoch"] == 1  # the largest value
    assert h.last["epoch"] == 4
    with pytest.raises(KeyError, match="val_loss"):
        h.best("val_loss")
    with pytest.raises(KeyError):
        train.History().best("x")
    with pytest.raises(IndexError):
        train.History().last


# argument validation ----------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=-1), "epochs"), (dict(epochs=1.5), "epochs"), (dict(epochs=True), "epochs"),
    (dict(epochs="3"), "epochs"),
    (dict(scheduler_interval="step"), "scheduler_interval"),
    (dict(evals_per_epoch=0), "evals_per_epoch"), (dict(evals_per_epoch=1.5), "evals_per_epoch"),
])
def test_fit_validates_arguments(loaders, kwargs, match):
    model = mlp()
    kwargs.setdefault("epochs", 1)
    with pytest.raises(ValueError, match=match):
        fit(model, loaders[0], **kwargs)


def test_fit_needs_a_sized_non_empty_loader(toy_classification):
    x, y = toy_classification
    model = mlp()
    with pytest.raises(ValueError, match="length"):
        fit(model, ((x[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)))
    with pytest.raises(ValueError, match="empty"):
        fit(model, BatchLoader(x[:3], y[:3], batch_size=4, drop_last=True))


def test_zero_epochs_trains_nothing(loaders):
    model = mlp()
    before = clone_state(model)
    assert len(fit(model, loaders[0], epochs=0)) == 0
    assert state_equal(before, model.state_dict())


def test_max_grad_norm_clips_the_update(toy_classification):
    x, y = toy_classification
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    loader = BatchLoader(x * 100, y, batch_size=240)  # one big step with a large gradient
    fit(model, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), max_grad_norm=1e-3)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)


# schedulers -------------------------------------------------------------------

@pytest.mark.parametrize("interval, n_steps", [("batch", 12), ("epoch", 2)])
def test_scheduler_interval(loaders, interval, n_steps):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    fit(model, loaders[0], epochs=2, optimizer=optimizer, scheduler=scheduler, scheduler_interval=interval)
    assert len(loaders[0]) == 6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** n_steps)


def test_onecycle_per_batch_ends_at_its_minimum(loaders):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=2 * 6 + 1)
    fit(model, loaders[0], epochs=2, optimizer=optimizer, scheduler=scheduler)
    assert scheduler.last_epoch == 12
    assert optimizer.param_groups[0]["lr"] < 0.1 / 25


# checkpoints ------------------------------------------------------------------

def test_checkpoint_path(monkeypatch, tmp_path, isolated_env):
    monkeypatch.setenv("DLBOOK_CHECKPOINTS", str(tmp_path / "ck"))
    assert train.checkpoint_path("lenet") == tmp_path / "ck" / "lenet-smoke.pt"
    monkeypatch.setenv("DLBOOK_PROFILE", "full")
    assert train.checkpoint_path("lenet") == tmp_path / "ck" / "lenet-full.pt"
    monkeypatch.delenv("DLBOOK_CHECKPOINTS")
    assert train.checkpoint_path("lenet") == tmp_path / "user-cache" / "checkpoints" / "lenet-full.pt"
    monkeypatch.setenv("DLBOOK_PROFILE", "bogus")
    with pytest.raises(ValueError, match="smoke"):
        train.checkpoint_path("lenet")


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", None, 3, ["x"]])
def test_checkpoint_path_rejects_bad_names(name):
    with pytest.raises(ValueError, match="checkpoint name"):
        train.checkpoint_path(name)


def test_checkpoint_written_atomically_after_every_epoch(loaders, tmp_path, monkeypatch):
    saves = []
    real_save = train.atomic_torch_save

    def spy(obj, path):
        saves.append((obj["epoch"], len(obj["history"]), Path(path)))
        return real_save(obj, path)

    monkeypatch.setattr(train, "atomic_torch_save", spy)
    path = tmp_path / "ck" / "run.pt"
    torch.manual_seed(0)
    model = mlp()
    history = fit(model, loaders[0], epochs=3, checkpoint=path)
    assert saves == [(1, 1, path), (2, 2, path), (3, 3, path)]
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]  # no temp files
    state = safe_torch_load(path)
    assert {"fingerprint", "epoch", "seconds", "model", "optimizer", "scheduler", "scaler",
            "history", "rng"} <= set(state)
    assert state["epoch"] == 3 and state["history"] == history.records
    assert state_equal(state["model"], model.state_dict())


class Untouchable:
    """A loader that must not be iterated."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __iter__(self):
        raise AssertionError("fit iterated the loader of a finished run")


def test_resuming_a_finished_run_trains_nothing(loaders, tmp_path, capsys):
    path = tmp_path / "run.pt"
    torch.manual_seed(0)
    model = mlp()
    history = fit(model, loaders[0], epochs=3, checkpoint=path)
    trained = clone_state(model)
    torch.manual_seed(1)
    again = mlp()  # other initial weights
    resumed = fit(again, Untouchable(len(loaders[0])), epochs=3, checkpoint=path)
    assert resumed.records == history.records
    assert state_equal(again.state_dict(), trained)
    assert "Resumed from" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["model", "epochs", "optimizer", "steps"])
def test_checkpoint_of_another_run_is_refused(loaders, toy_classification, tmp_path, change):
    path = tmp_path / "run.pt"
    torch.manual_seed(0)
    fit(mlp(), loaders[0], epochs=2, checkpoint=path)
    model = mlp(hidden=8) if change == "model" else mlp()
    kwargs = dict(epochs=3 if change == "epochs" else 2, checkpoint=path)
    if change == "optimizer":
        kwargs["optimizer"] = torch.optim.Adam(model.parameters())
    loader = loaders[0]
    if change == "steps":
        x, y = toy_classification
        loader = BatchLoader(x, y, batch_size=80)
    with pytest.raises(ValueError) as err:
        fit(model, loader, **kwargs)
    assert str(path) in str(err.value) and "different run" in str(err.value)


class Crashing:
    """Wraps a loader; raises after `after` batches of epoch `epoch` (1-based)."""

    def __init__(self, inner, epoch, after):
        self.inner, self.epoch, self.after, self.seen = inner, epoch, after, 0

    def __len__(self):
        return len(self.inner)

    def __iter__(self):
        self.seen += 1
        for i, batch in enumerate(self.inner):
            if self.seen == self.epoch and i == self.after:
                raise KeyboardInterrupt("simulated crash")
            yield batch


def _resumable_run(loader, path, seed_model=0):
    torch.manual_seed(seed_model)
    model = mlp(dropout=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=4 * 6)
    history = fit(model, loader, epochs=4, optimizer=optimizer, scheduler=scheduler, checkpoint=path)
    return model, history


def test_interrupted_run_resumes_exactly_in_process(loaders, tmp_path):
    torch.manual_seed(123)
    reference, ref_history = _resumable_run(loaders[0], tmp_path / "a.pt")
    torch.manual_seed(123)
    with pytest.raises(KeyboardInterrupt):
        _resumable_run(Crashing(loaders[0], epoch=3, after=2), tmp_path / "b.pt")
    assert safe_torch_load(tmp_path / "b.pt")["epoch"] == 2
    torch.manual_seed(999)  # the restarted process is in another random state
    model, history = _resumable_run(loaders[0], tmp_path / "b.pt", seed_model=5)
    assert state_equal(model.state_dict(), reference.state_dict())
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(history) == strip(ref_history)


# THE test: a process killed mid-training and restarted ------------------------

SCRIPT = textwrap.dedent('''
    """Train a tiny CNN for 6 epochs with a checkpoint; save the final state.

    --block MARKER: after batch 4 of epoch 3, touch MARKER and hang (to be killed).
    --wait GO: build everything, then wait for the file GO before calling fit
               (a restart that has already paid for its imports).
    """
    import argparse, os, time
    import torch
    torch.set_num_threads(1)
    from torch import nn
    import dlbook
    from dlbook.data import BatchLoader, random_shift
    from dlbook.train import fit

    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("output")
    parser.add_argument("--block")
    parser.add_argument("--wait")
    args = parser.parse_args()
    BLOCK_AT = (3, 4)  # (epoch, batch)

    class Loader:
        def __init__(self, inner):
            self.inner, self.epoch = inner, 0
        def __len__(self):
            return len(self.inner)
        def __iter__(self):
            self.epoch += 1
            for i, batch in enumerate(self.inner, start=1):
                yield batch
                if args.block and (self.epoch, i) == BLOCK_AT:
                    open(args.block, "w").close()
                    time.sleep(600)

    dlbook.seed_everything(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(320, 1, 8, 8, generator=gen)  # (B, C, H, W)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 0, :, :4].mean((1, 2)) > 0).long()  # (B,) 4 classes
    train_loader = Loader(BatchLoader(x[64:], y[64:], batch_size=32, shuffle=True,
                                      transform=lambda b: random_shift(b, 1)))
    val_loader = BatchLoader(x[:64], y[:64], batch_size=32)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3),  # (B, 256)
        nn.Linear(256, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4),  # (B, K)
    )
    epochs = 6
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.02,
                                                    total_steps=epochs * len(train_loader))
    while args.wait and not os.path.exists(args.wait):
        time.sleep(0.02)
    history = fit(model, train_loader, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
                  val_loader=val_loader, evals_per_epoch=2, device="cpu", amp=False,
                  checkpoint=args.checkpoint, progress=False, max_grad_norm=5.0)
    records = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "lr": scheduler.get_last_lr(), "history": records}, args.output)
''')


def _start(script, tmp_path, *args, log):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(tmp_path / f"{log}.log", "w") as out:
        return subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _finish(proc, tmp_path, log, timeout=120):
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert code == 0, (tmp_path / f"{log}.log").read_text()


def test_killed_run_restarted_ends_with_the_same_weights(tmp_path):
    """A real process, SIGKILLed in the middle of epoch 3 (two checkpoints
    written, four more batches trained and lost), then restarted: its final
    weights equal those of a run that was never interrupted, bit for bit.

    Three processes start together, so that their imports overlap: the
    uninterrupted reference, the victim, and the restart, which builds its
    model and waits for a go signal before calling fit, i.e. until the victim
    is dead.
    """
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    ckpt_dir = tmp_path / "ck"
    ckpt, marker, go = ckpt_dir / "run.pt", tmp_path / "blocked", tmp_path / "go"
    result, ref_result = tmp_path / "result.pt", tmp_path / "reference.pt"
    procs = {
        "reference": _start(script, tmp_path, ckpt_dir / "reference.pt", ref_result, log="reference"),
        "victim": _start(script, tmp_path, ckpt, result, "--block", marker, log="victim"),
        "restart": _start(script, tmp_path, ckpt, result, "--wait", go, log="restart"),
    }
    victim = procs["victim"]
    try:
        deadline = time.monotonic() + 120
        while not (ckpt.exists() and marker.exists()):  # poll for the checkpoint
            assert victim.poll() is None, (tmp_path / "victim.log").read_text()
            assert time.monotonic() < deadline, "the run never reached its checkpoint"
            time.sleep(0.02)
        assert victim.poll() is None  # still mid-run
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        assert not result.exists()
        killed_state = safe_torch_load(ckpt)
        assert killed_state["epoch"] == 2  # two epochs done; the third one's 4 batches are lost
        assert [p.name for p in ckpt_dir.iterdir() if p.name.startswith(".run.pt")] == []  # no temp file
        go.touch()  # restart
        _finish(procs["restart"], tmp_path, "restart")
        _finish(procs["reference"], tmp_path, "reference")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = (tmp_path / "restart.log").read_text()
    assert "Resumed from" in log and "after epoch 2/6" in log

    ours = torch.load(result, weights_only=True)
    theirs = torch.load(ref_result, weights_only=True)
    assert ours["model"].keys() == theirs["model"].keys()
    for key in theirs["model"]:
        assert torch.equal(ours["model"][key], theirs["model"][key]), key
    for a, b in zip(ours["optimizer"]["state"].values(), theirs["optimizer"]["state"].values()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
    assert ours["lr"] == theirs["lr"]
    assert ours["history"] == theirs["history"] and len(ours["history"]) == 12
    # the restart did train: its weights moved on from the checkpoint
    assert not torch.equal(ours["model"]["0.weight"], killed_state["model"]["0.weight"])
