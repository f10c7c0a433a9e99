"""dlbook.fingerprint: descriptions that are the same in every process and
change when what they describe changes."""

import functools
import json
import os
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dlbook.fingerprint import code_description, describe, digest, function_source, optimizer_settings, tensor_digest

ROOT = Path(__file__).resolve().parents[1]


def scale(x, factor=2.0):
    return x * factor


@dataclass
class Config:
    beta: float = 1.0


class Plain:
    def __init__(self, a):
        self.a = a
        self._private = object()


class Scaled(nn.Module):
    """A user module: a setting kept privately, a buffer, a submodule."""

    def __init__(self, scale=2.0):
        super().__init__()
        self._scale = scale
        self.register_buffer("offset", torch.arange(3.0))
        self.inner = nn.Linear(3, 3)

    def forward(self, x):
        return self.inner(x) * self._scale + self.offset


# A function made by exec, without a file: inspect cannot read its source, so its
# code object is described; its constant set {"a", "b", "c"} is ordered by string
# hashes, which differ between processes.
_NO_FILE: dict = {}
exec(compile("def pick(x):\n    return 1 if x in {'a', 'b', 'c'} else torch.relu(torch.zeros(1))\n",
             "<string>", "exec"), {"torch": torch}, _NO_FILE)


def _gpt():
    from dlbook.transformer import GPT, GPTConfig

    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8))


THINGS = {
    "tensor": lambda: torch.arange(6.0).reshape(2, 3),
    "array": lambda: np.arange(6),
    "module": lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Dropout(0.1)),
    "partial": lambda: functools.partial(scale, factor=3.0),
    "lambda": lambda: (lambda x: x + 1),
    "dataclass": lambda: Config(2.0),
    "object": lambda: Plain([1, 2.5, "x"]),
    "optimizer": lambda: torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=1e-3),
    "loss module": lambda: nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0]), label_smoothing=0.1),
    "user module": lambda: Scaled(3.0),
    "torch layers": lambda: nn.ModuleList([nn.LSTM(2, 3), nn.TransformerEncoderLayer(4, 2, 8), nn.Conv2d(1, 2, 3)]),
    "dlbook GPT": _gpt,
}

# code_description of each: the same in every process, too
CODE = {
    "user module": lambda: Scaled(),
    "torch only": lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU()),
    "dlbook GPT": _gpt,
    "supervised step": lambda: __import__("dlbook.train").train.supervised(),
    "closure": lambda: (lambda x: scale(x, 3.0)),
    "no source": lambda: _NO_FILE["pick"],
}

SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, TESTS)
    import json
    import test_fingerprint as t
    from dlbook.fingerprint import describe
    from dlbook.fingerprint import code_description
    print(json.dumps({name: describe(make()) for name, make in t.THINGS.items()}))
    print(json.dumps({name: code_description(make()) for name, make in t.CODE.items()}))
''')


def test_descriptions_are_the_same_in_another_process():
    here = {name: describe(make()) for name, make in THINGS.items()}
    code_here = {name: code_description(make()) for name, make in CODE.items()}
    out = subprocess.run([sys.executable, "-c", SCRIPT.replace("TESTS", repr(str(ROOT / "tests")))], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    there, code_there = map(json.loads, out.splitlines())
    assert there == here
    assert code_there == code_here
    assert not any(" at 0x" in text for text in here.values())
    assert code_here["torch only"] == "" and all(code_here[k] for k in CODE if k != "torch only")


@pytest.mark.parametrize("a, b", [
    (torch.zeros(3), torch.tensor([0.0, 0.0, 1e-7])),
    (torch.zeros(3), torch.zeros(3, dtype=torch.float64)),
    (torch.zeros(6), torch.zeros(2, 3)),
    (nn.Sequential(nn.Linear(2, 3), nn.ReLU()), nn.Sequential(nn.Linear(2, 3), nn.GELU())),
    (nn.Dropout(0.1), nn.Dropout(0.2)),
    (nn.Dropout(0.1), nn.Dropout(0.1, inplace=True)),
    (nn.CrossEntropyLoss(label_smoothing=0.0), nn.CrossEntropyLoss(label_smoothing=0.1)),
    (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(weight=torch.ones(3))),
    (nn.CrossEntropyLoss(weight=torch.ones(3)), nn.CrossEntropyLoss(weight=torch.tensor([1.0, 1.0, 2.0]))),
    (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(ignore_index=0)),
    (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum")),
    (nn.BatchNorm1d(3), nn.BatchNorm1d(3, eps=1e-3)),
    (nn.Linear(2, 3), nn.Linear(2, 3).to(torch.float64)),
    (Scaled(2.0), Scaled(3.0)),
    (functools.partial(scale, factor=3.0), functools.partial(scale, factor=4.0)),
    (Config(1.0), Config(2.0)),
    (Plain(1), Plain(2)),
    ({"a": 1}, {"a": 2}),
    ([1, 2], (1, 2)),
    (1, 1.0),
])
def test_a_change_changes_the_description(a, b):
    assert describe(a) != describe(b)


def test_a_module_is_described_by_its_state_not_its_repr():
    a, b = nn.CrossEntropyLoss(label_smoothing=0.1), nn.CrossEntropyLoss(label_smoothing=0.0)
    assert repr(a) == repr(b)  # what the description must not rely on
    assert "label_smoothing" in describe(a) and "ignore_index" in describe(a)
    # equal modules, made apart, are described alike; training mode and hooks do not count
    frozen = Scaled()
    frozen.inner.weight.requires_grad_(False)
    assert describe(Scaled()) == describe(Scaled().eval())
    other = Scaled()
    other.register_forward_hook(lambda *args: None)
    assert describe(other) == describe(Scaled())
    assert describe(frozen) != describe(Scaled())  # a frozen layer trains otherwise
    changed = Scaled()
    changed.offset[0] = 1.0  # a buffer, by content
    assert describe(changed) != describe(Scaled())
    weights = Scaled()
    with torch.no_grad():
        weights.inner.weight.add_(1.0)  # parameters by shape: fit digests the initial weights apart
    assert describe(weights) == describe(Scaled())
    # torch's layers keep settings in public attributes; their private ones may hold ids
    # (torch.compile's _torchdynamo_wrapper_id), which must not count
    a, b = nn.Linear(2, 3), nn.Linear(2, 3)
    a._wrapper_id, b._wrapper_id = id(a), id(b)
    assert describe(a) == describe(b)


def test_deep_modules_are_described_to_the_leaves():
    def deep(p):
        m = nn.Dropout(p)
        for _ in range(12):
            m = nn.Sequential(nn.Identity(), m)
        return m

    assert describe(deep(0.1)) != describe(deep(0.2))
    assert describe(deep(0.1)) == describe(deep(0.1))


def test_closures_are_described_by_what_they_captured():
    def make(beta):
        return lambda x: beta * x

    assert describe(make(1.0)) == describe(make(1.0))
    assert describe(make(1.0)) != describe(make(2.0))


def test_private_attributes_and_cycles():
    a = Plain(1)
    b = Plain(1)  # another private object: private attributes do not count
    assert describe(a) == describe(b)
    loop = Plain(None)
    loop.a = loop
    assert "cycle" in describe(loop)


def test_objects_may_describe_themselves():
    class Loader:
        def fingerprint(self):
            return "my data v1"

    class Wrapper(Loader):
        pass

    assert describe(Loader()) == describe(Wrapper()) == "fingerprint:my data v1"


def test_tensor_digest_sees_every_byte_and_dtypes_numpy_cannot_hold():
    x = torch.zeros(1000, dtype=torch.bfloat16)
    y = x.clone()
    y[999] = 1
    assert tensor_digest(x) != tensor_digest(y)
    assert tensor_digest(torch.tensor(3.0)) == tensor_digest(torch.tensor(3.0))
    assert tensor_digest(torch.zeros(0)) != tensor_digest(torch.zeros(0, 2))


def test_optimizer_settings_leave_out_the_parameters():
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.5, momentum=0.9)
    (group,) = optimizer_settings(opt)
    assert group["lr"] == 0.5 and group["momentum"] == 0.9 and "params" not in group


def test_digest_is_short_and_stable():
    assert digest("abc") == digest("abc") != digest("abd")
    assert len(digest("abc")) == 16


def test_a_digest_is_remembered_until_the_tensor_changes():
    x = torch.zeros(1000)
    first = tensor_digest(x)
    assert tensor_digest(x) == first
    x[3] = 1.0  # in place: the version counter moves
    assert tensor_digest(x) != first
    view = x[:10]
    view.add_(1.0)  # a view shares the version counter
    changed = tensor_digest(x)
    assert changed == tensor_digest(x.clone())


def test_the_memory_of_digests_forgets_dead_tensors():
    import gc

    from dlbook import fingerprint

    x = torch.ones(10)
    tensor_digest(x)
    key = id(x)
    assert key in fingerprint._DIGESTS
    del x
    gc.collect()
    assert key not in fingerprint._DIGESTS


def test_sparse_tensors_are_digested_by_their_content():
    dense = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    assert tensor_digest(dense.to_sparse()) == tensor_digest(dense.to_sparse_csr()) == tensor_digest(dense)


# code: an edited forward() or step function is a change ------------------------

NET = textwrap.dedent('''
    import torch
    from torch import nn


    def helper(x):
        return x * 2.0


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(2, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(torch.relu(helper(self.body(x))))


    def step(model, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(model(x), y)}
''')


def _module_from_file(folder: Path, source: str, name: str = "netmod"):
    """Import ``source`` from a file ``name``.py in ``folder`` (a new module object each call)."""
    import importlib.util

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _module_from_string(source: str, name: str = "netmod"):
    """Run ``source`` without a file (``exec``): inspect cannot find the source."""
    module = types.ModuleType(name)
    exec(compile(source, "<string>", "exec"), module.__dict__)
    return module


EDITS = {
    "forward": ("torch.relu(helper(", "torch.tanh(helper("),
    "helper the forward calls": ("return x * 2.0", "return x * 3.0"),
    "step": ('{"loss": nn.functional.cross_entropy(model(x), y)}',
             '{"loss": nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)}'),
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("where", ["file", "no file"])
def test_edited_code_changes_the_code_description(tmp_path, where, edit):
    old, new = EDITS[edit]
    assert NET.count(old) == 1
    load = ((lambda src, tag: _module_from_file(tmp_path / tag, src)) if where == "file" else
            (lambda src, tag: _module_from_string(src)))
    first, again, edited = load(NET, "a"), load(NET, "b"), load(NET.replace(old, new), "c")
    if where == "no file":  # the fallback: the code object, wherever it sits
        assert function_source(first.Net.forward).startswith("code ")
        moved = _module_from_string("\n\n# a comment above moves every line\n" + NET)
        assert code_description(moved.Net(), moved.step) == code_description(first.Net(), first.step)
    else:
        assert function_source(first.Net.forward).startswith("source ")
    for m in (first, again, edited):
        torch.manual_seed(0)
        m.model = m.Net()
    assert describe(first.model) == describe(edited.model)  # the same layers: only the code tells
    same = code_description(first.model, first.step)
    assert code_description(again.model, again.step) == same
    assert code_description(edited.model, edited.step) != same
    part = (first.model,) if edit != "step" else (first.step,)
    changed = (edited.model,) if edit != "step" else (edited.step,)
    assert code_description(*part) != code_description(*changed)


def test_a_notebook_class_is_read_by_its_methods(tmp_path):
    """IPython runs a cell as code compiled under a made-up file name that it
    puts in linecache: inspect finds no file for the class, but it finds
    the source of its methods."""
    import inspect
    import linecache

    def cell(source, number):
        name = f"<ipython-input-{number}-0123456789ab>"
        linecache.cache[name] = (len(source), None, source.splitlines(True), name)
        module = types.ModuleType("__main__")
        exec(compile(source, name, "exec"), module.__dict__)
        return module

    try:
        first = cell(NET, 1)
        edited = cell(NET.replace(*EDITS["forward"]), 2)
        with pytest.raises((OSError, TypeError)):
            inspect.getsource(first.Net)
        assert function_source(first.Net.forward) == (
            "source     def forward(self, x):\n        return self.head(torch.relu(helper(self.body(x))))\n")
        assert code_description(first.Net()) != code_description(edited.Net())
    finally:
        for number in (1, 2):
            linecache.cache.pop(f"<ipython-input-{number}-0123456789ab>", None)


def test_torch_code_is_not_read(monkeypatch):
    """torch's version is recorded; its source is not read (nor hashed)."""
    import inspect

    read = []
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: read.append(obj) or real(obj))
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.TransformerEncoderLayer(4, 2, 8))
    assert code_description(model, nn.functional.cross_entropy, nn.CrossEntropyLoss(), torch.tanh) == ""
    assert read == []
    assert "Scaled.forward" in code_description(nn.Sequential(Scaled()))  # a user layer inside torch's containers


# fit: a checkpoint is refused by a run whose code, loss settings or threads changed

def _toy_loader():
    from dlbook.data import BatchLoader

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=gen)
    return BatchLoader(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long(), batch_size=20, shuffle=True)


def _fit(model, checkpoint, step=None, **kwargs):
    from dlbook.train import fit, supervised

    torch.manual_seed(1)  # the same random state at the start of every run
    return fit(model, _toy_loader(), step=step or supervised(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               epochs=2, device="cpu", amp=False, progress=False, checkpoint=checkpoint, **kwargs)


def _refusal(run) -> str:
    from dlbook.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="was written by a different run") as err:
        run()
    return str(err.value).split("What differs: ")[1]


def _seeded(make):
    torch.manual_seed(0)
    return make()


def test_a_changed_loss_setting_is_not_resumed(tmp_path, capsys):
    from dlbook.train import supervised

    path = tmp_path / "ck.pt"
    model = lambda: nn.Sequential(nn.Linear(2, 3))  # noqa: E731
    _fit(_seeded(model), path, supervised(nn.CrossEntropyLoss(label_smoothing=0.0)))
    _fit(_seeded(model), path, supervised(nn.CrossEntropyLoss(label_smoothing=0.0)))  # the same run: resumed
    assert "had finished" in capsys.readouterr().out
    what = _refusal(lambda: _fit(_seeded(model), path, supervised(nn.CrossEntropyLoss(label_smoothing=0.1))))
    assert what.startswith("the step function or its settings.")
    what = _refusal(lambda: _fit(_seeded(model), path, supervised(nn.CrossEntropyLoss(weight=torch.ones(3)))))
    assert what.startswith("the step function or its settings.")


@pytest.mark.parametrize("where", ["file", "no file"])
def test_an_edited_forward_or_step_is_not_resumed(tmp_path, where, capsys):
    load = ((lambda src, tag: _module_from_file(tmp_path / tag, src)) if where == "file" else
            (lambda src, tag: _module_from_string(src)))
    first = load(NET, "first")
    path = tmp_path / "ck.pt"
    _fit(_seeded(first.Net), path, first.step)
    again = load(NET, "again")  # the cell run again, unchanged
    _fit(_seeded(again.Net), path, again.step)
    assert "had finished" in capsys.readouterr().out
    edited = load(NET.replace(*EDITS["forward"]), "forward")  # a ReLU in forward() made a tanh
    what = _refusal(lambda: _fit(_seeded(edited.Net), path, edited.step))
    assert what.startswith("the model's code changed (")  # and only that: the layers are the same
    assert "structure" not in what and "weights" not in what
    edited = load(NET.replace(*EDITS["helper the forward calls"]), "helper")
    assert _refusal(lambda: _fit(_seeded(edited.Net), path, edited.step)).startswith("the model's code changed (")
    edited = load(NET.replace(*EDITS["step"]), "step")
    what = _refusal(lambda: _fit(_seeded(edited.Net), path, edited.step))
    assert what.startswith("the step function's code changed (")


def test_another_thread_count_is_not_resumed(tmp_path, capsys):
    before = torch.get_num_threads()
    path = tmp_path / "ck.pt"
    try:
        torch.set_num_threads(1)
        _fit(_seeded(lambda: nn.Linear(2, 3)), path)
        _fit(_seeded(lambda: nn.Linear(2, 3)), path)
        assert "had finished" in capsys.readouterr().out
        torch.set_num_threads(2)
        assert torch.get_num_threads() == 2
        what = _refusal(lambda: _fit(_seeded(lambda: nn.Linear(2, 3)), path))
        assert what.startswith("the number of CPU threads (torch.get_num_threads()): the same seed gives other "
                               "bits under another thread count.")
    finally:
        torch.set_num_threads(before)


FIT_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    torch.set_num_threads(1)
    sys.path[:0] = [TESTS, FOLDER]
    import netmod
    from test_fingerprint import _fit, _seeded
    from dlbook.checkpoint import load_checkpoint
    from dlbook.train import EMA
    import dlbook

    dlbook.seed_everything(0)  # Python's and NumPy's generators too: the random state is fingerprinted
    model = _seeded(netmod.Net)
    ema = EMA(model, decay=0.9)
    _fit(model, CHECKPOINT, netmod.step, state={"ema": ema}, after_step=ema.update,
         config={"beta": 1.0}, stop_when=lambda history: False)
    print(json.dumps(load_checkpoint(CHECKPOINT)["fingerprint"]))
''')


def test_the_fingerprint_of_fit_is_the_same_in_two_fresh_processes(tmp_path):
    """Everything fit fingerprints (the model, its code, the step and its code,
    the data, the state, the hooks, the threads) is the same in two new
    processes that run the same code, whatever their string hashes."""
    _module_from_file(tmp_path, NET)
    prints = []
    for run in ("a", "b"):
        script = (FIT_SCRIPT.replace("TESTS", repr(str(ROOT / "tests"))).replace("FOLDER", repr(str(tmp_path)))
                  .replace("CHECKPOINT", repr(str(tmp_path / f"{run}.pt"))))
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="1" if run == "a" else "2")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        prints.append(json.loads(done.stdout.splitlines()[-1]))
    assert prints[0] == prints[1]
    assert {"model", "model_code", "step", "step_code", "threads"} <= prints[0].keys()
