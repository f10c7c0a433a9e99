"""dlbook.checkpoint: verified, atomic, safely loaded checkpoint files."""

import collections
import enum
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import dlbook.io
from dlbook import checkpoint as ck
from dlbook.checkpoint import MAGIC, CheckpointError, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip(tmp_path):
    obj = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 3, "history": [{"loss": 0.5}],
           "rng": (3, [1, 2], None), "name": "run"}
    path = save_checkpoint(obj, tmp_path / "deep" / "run.pt")
    assert path == tmp_path / "deep" / "run.pt"
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], obj["model"]["w"])
    assert {k: v for k, v in back.items() if k != "model"} == {k: v for k, v in obj.items() if k != "model"}
    assert path.read_bytes().startswith(MAGIC)
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.pt"]  # no temporary file left


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    save_checkpoint({"a": 1}, "~/x.pt")
    assert load_checkpoint("~/x.pt") == {"a": 1}


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint({"version": 1}, tmp_path / "run.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(TypeError, match=r"the value at bad is of type .*Unpicklable"):  # refused before writing
        save_checkpoint({"version": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dlbook.io.os, "fsync", full_disk)  # the write itself fails, half done
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({"version": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")


def _corrupt(kind, good: bytes, marker) -> bytes:
    payload = good[len(MAGIC) + 32:]
    if kind == "empty":
        return b""
    if kind == "header cut":
        return good[: len(MAGIC) + 10]
    if kind == "payload cut":
        return good[:-7]
    if kind == "one flipped bit":
        return good[:-50] + bytes([good[-50] ^ 0x10]) + good[-49:]
    if kind == "checksum flipped":
        return good[: len(MAGIC)] + bytes([good[len(MAGIC)] ^ 1]) + good[len(MAGIC) + 1:]
    if kind == "random bytes":
        return os.urandom(1000)
    if kind == "plain torch.save":
        return payload

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = pickle.dumps({"model": Evil()}, protocol=2)
    return MAGIC + hashlib.sha256(evil).digest() + evil


@pytest.mark.parametrize("kind", ["empty", "header cut", "payload cut", "one flipped bit", "checksum flipped",
                                  "random bytes", "plain torch.save", "malicious pickle"])
def test_every_broken_file_gives_one_error_naming_it(tmp_path, kind):
    path = save_checkpoint({"model": {"w": torch.randn(100)}}, tmp_path / "run.pt")
    marker = tmp_path / "pwned"
    path.write_bytes(_corrupt(kind, path.read_bytes(), marker))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "Delete it to start afresh" in message and "os.remove" in message
    assert "weights_only" not in message
    assert err.value.path == path
    assert not marker.exists()
    # the malicious file really would run code if loaded carelessly: the test means something
    if kind == "malicious pickle":
        with open(path, "rb") as f:
            f.read(len(MAGIC) + 32)
            pickle.load(f)
        assert marker.exists()


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("map_location, error", [("x", ValueError), (0, TypeError), ([0], TypeError)])
def test_map_location_is_checked(tmp_path, map_location, error):
    path = save_checkpoint({"w": torch.ones(2)}, tmp_path / "s.pt")
    with pytest.raises(error, match="map_location"):
        load_checkpoint(path, map_location=map_location)
    for good in ("cpu", torch.device("cpu"), None, {"cpu": "cpu"}, lambda storage, location: storage):
        assert torch.equal(load_checkpoint(path, map_location=good)["w"], torch.ones(2))


# what a checkpoint can hold: checked when it is written ---------------------------

def _same(a, b) -> bool:
    """Equal values of the same types, tensors compared by content, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.layout == b.layout and torch.equal(a.to_dense(), b.to_dense())
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


# One example of every type save_checkpoint lets through.
ALLOWED = {
    "None": None, "bool": True, "int": -3, "big int": 2 ** 100, "float": 1.5, "nan": float("nan"),
    "inf": float("-inf"), "complex": 1 - 2j, "str": "é", "bytes": b"\x00\xff", "bytearray": bytearray(b"ab"),
    "torch.Size": torch.Size([2, 3]), "torch.dtype": torch.bfloat16, "torch.device": torch.device("cpu"),
    "torch.layout": torch.sparse_coo,
    "tensor": torch.arange(6.0).reshape(2, 3), "bfloat16 tensor": torch.ones(2, dtype=torch.bfloat16),
    "int tensor": torch.arange(3), "bool tensor": torch.tensor([True, False]), "empty tensor": torch.zeros(0, 2),
    "a view": torch.arange(10.0)[2:7:2], "Parameter": nn.Parameter(torch.ones(2)),
    "sparse tensor": torch.eye(3).to_sparse(),
    "list": [1, [2, 3]], "tuple": (1, (2, "x")), "dict": {"a": 1, 2: "b", (3, 4): None, None: 0.5},
    "OrderedDict": collections.OrderedDict([("b", 1), ("a", 2)]), "set": {1, "a", (2, 3)},
    "empty containers": [[], (), {}, set()],
}


def test_the_allowed_types_are_the_ones_tested():
    tested = {type(v) for v in ALLOWED.values()}
    assert set(ck._SCALARS) | set(ck._TENSORS) <= tested


@pytest.mark.parametrize("name", list(ALLOWED))
def test_every_allowed_type_round_trips_with_weights_only(tmp_path, name):
    value = ALLOWED[name]
    path = save_checkpoint({"value": value}, tmp_path / "run.pt")
    back = load_checkpoint(path)["value"]  # torch.load(weights_only=True)
    assert _same(back, value), (back, value)


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value, expected", [
    (np.arange(6, dtype=np.float32).reshape(2, 3), torch.arange(6, dtype=torch.float32).reshape(2, 3)),
    (np.arange(10, dtype=np.int64)[::-2], torch.tensor([9, 7, 5, 3, 1])),  # negative strides
    (np.asfortranarray(np.eye(2)), torch.eye(2, dtype=torch.float64)),
    (np.array(2.5), torch.tensor(2.5, dtype=torch.float64)),  # 0-d
    (np.array([True, False]), torch.tensor([True, False])),
    (np.float64(0.25), 0.25), (np.float32(0.5), 0.5), (np.int64(7), 7), (np.uint8(255), 255), (np.bool_(True), True),
    (np.str_("x"), "x"),
    (torch.__version__, str(torch.__version__)),  # a str subclass that weights_only refuses
    (Color.RED, 1),
])
def test_numpy_values_and_subclasses_are_stored_as_what_loads_back(tmp_path, value, expected):
    readonly = np.arange(3.0)
    readonly.flags.writeable = False
    path = save_checkpoint({"value": value, "readonly": readonly, "nested": [{"v": value}]}, tmp_path / "run.pt")
    back = load_checkpoint(path)
    assert _same(back["value"], expected) and _same(back["nested"][0]["v"], expected)
    assert _same(back["readonly"], torch.arange(3.0, dtype=torch.float64))


class Point(tuple):
    pass


def _loop():
    loop = [1]
    loop.append(loop)
    return loop


@pytest.mark.parametrize("obj, where, what", [
    ({"a": object()}, "the value at a", "of type object"),
    ({"state": {"ema": {"shadow": object()}}}, r"the value at state\['ema'\]\['shadow'\]", "of type object"),
    ({"history": [{"loss": 0.5}, {"loss": slice(1)}]}, r"the value at history\[1\]\['loss'\]", "of type slice"),
    ({"x": np.array([object()])}, "the value at x", "a NumPy array of dtype object"),
    ({"x": np.array(["a", "b"])}, "the value at x", "a NumPy array of dtype <U1"),
    ({"x": np.datetime64("2020-01-01")}, "the value at x", "of type numpy.datetime64"),
    ({"x": frozenset({1})}, "the value at x", "of type frozenset"),
    ({"x": collections.defaultdict(int)}, "the value at x", "of type collections.defaultdict"),
    ({"x": collections.namedtuple("P", "a b")(1, 2)}, "the value at x", r"of type .*\.P"),
    ({"x": Point((1, 2))}, "the value at x", r"of type .*\.Point"),
    ({"x": nn.UninitializedParameter()}, "the value at x", r"a tensor of the subclass .*UninitializedParameter"),
    ({"x": nn.Linear(2, 2)}, "the value at x", r"of type torch\.nn\.modules\.linear\.Linear"),
    ({"x": {object(): 1}}, "a key of x", "of type object"),
    ({"x": {1, Color}}, "an element of the set at x", "of type .*EnumType"),
    ({"x": _loop()}, r"the value at x\[1\]", "a list that contains itself"),
    ({"a b": object()}, r"the value at \['a b'\]", "of type object"),
    (object(), "the value at the top level", "of type object"),
    ([1, object()], r"the value at \[1\]", "of type object"),
])
def test_what_cannot_be_loaded_is_refused_before_writing(tmp_path, obj, where, what):
    path = save_checkpoint({"version": 1}, tmp_path / "run.pt")
    with pytest.raises(TypeError, match=f"the checkpoint {path} was not written: {where} is {what}, which a "
                                        f"checkpoint cannot hold") as err:
        save_checkpoint(obj, path)
    assert "tensors, None, bool, int, float" in str(err.value)
    assert load_checkpoint(path) == {"version": 1}  # the old file stays, and nothing else is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_the_object_saved_is_not_changed(tmp_path):
    array = np.arange(3)
    obj = {"a": array, "b": [np.float64(1.0)]}
    save_checkpoint(obj, tmp_path / "run.pt")
    assert obj["a"] is array and type(obj["b"][0]) is np.float64


class NumpyState:
    """An extra state object whose state_dict holds NumPy values, as a user's might."""

    def __init__(self):
        self.table = np.zeros(3)
        self.count = np.int64(0)
        self.loaded = None

    def state_dict(self):
        return {"table": self.table, "count": self.count, "meta": {"steps": [np.float32(0.5)]}}

    def load_state_dict(self, state):
        self.loaded = state
        self.table, self.count = np.asarray(state["table"]), int(state["count"])


class BadState(NumpyState):
    def state_dict(self):
        return {"table": self.table, "shadow": object()}


def _fit(model, state, path):
    from dlbook.data import BatchLoader
    from dlbook.train import fit

    torch.manual_seed(0)
    x = torch.randn(40, 2)
    return fit(model, BatchLoader(x, (x[:, 0] > 0).long(), batch_size=20), optimizer=torch.optim.SGD(
        model.parameters(), lr=0.1), epochs=2, device="cpu", amp=False, progress=False, checkpoint=path,
        state={"ema": state})


def test_fit_resumes_a_state_that_holds_numpy_values(tmp_path, capsys):
    path = tmp_path / "run.pt"
    torch.manual_seed(1)
    _fit(nn.Linear(2, 2), NumpyState(), path)
    torch.manual_seed(1)
    state = NumpyState()
    _fit(nn.Linear(2, 2), state, path)  # resumed: loaded back, not refused as "tampered with"
    assert "had finished" in capsys.readouterr().out
    assert _same(state.loaded["table"], torch.zeros(3, dtype=torch.float64))
    assert state.loaded["count"] == 0 and type(state.loaded["count"]) is int
    assert state.loaded["meta"] == {"steps": [0.5]}


def test_fit_refuses_to_write_a_state_it_could_not_load(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(TypeError, match=r"the value at state\['ema'\]\['shadow'\] is of type object"):
        _fit(nn.Linear(2, 2), BadState(), path)
    assert not path.exists()


# half-written temporaries of killed writes -------------------------------------------

def _temporary(folder: Path, name: str, age: float) -> Path:
    path = folder / name
    path.write_bytes(b"half a checkpoint")
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def test_stale_temporaries_of_this_checkpoint_are_removed_at_the_next_write(tmp_path):
    stale = _temporary(tmp_path, ".run.pt.k2j_9x0a.tmp", age=3600)
    old = ck.STALE_AFTER + 5
    keep = [
        _temporary(tmp_path, ".run.pt.abcd1234.tmp", age=1),  # young: another process may be writing it
        _temporary(tmp_path, ".run.pt.old.pt.abcd1234.tmp", age=old),  # of the checkpoint run.pt.old.pt
        _temporary(tmp_path, ".other.pt.abcd1234.tmp", age=old),  # of another checkpoint
        _temporary(tmp_path, ".run.pt.abcd1234.tmp.bak", age=old),  # not a name atomic_write makes
        _temporary(tmp_path, "run.pt.abcd1234.tmp", age=old),
    ]
    (tmp_path / ".run.pt.zzzz9999.tmp").mkdir()  # a folder: never dlbook's temporary
    os.utime(tmp_path / ".run.pt.zzzz9999.tmp", (time.time() - old, time.time() - old))
    save_checkpoint({"a": 1}, tmp_path / "run.pt")
    assert not stale.exists()
    assert all(p.exists() for p in keep) and (tmp_path / ".run.pt.zzzz9999.tmp").is_dir()
    assert load_checkpoint(tmp_path / "run.pt") == {"a": 1}
    assert dlbook.io.temporaries_of(tmp_path / "run.pt") == [keep[0]]


KILLED_WRITER = textwrap.dedent('''
    import os, sys
    import dlbook.io
    from dlbook.checkpoint import save_checkpoint

    def stuck(fd):  # the payload is in the temporary, not yet renamed into place
        print("WRITING", flush=True)
        sys.stdin.readline()

    dlbook.io.os.fsync = stuck
    save_checkpoint({"step": 2}, sys.argv[1])
''')


def test_a_writer_killed_mid_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    path = save_checkpoint({"step": 1}, tmp_path / "run.pt")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout.readline() == "WRITING\n", writer.stderr.read()
        writer.send_signal(signal.SIGKILL)
        assert writer.wait() == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    (left,) = dlbook.io.temporaries_of(path)  # what a SIGKILL leaves
    assert left.name.startswith(".run.pt.") and left.name.endswith(".tmp")
    assert load_checkpoint(path) == {"step": 1}
    save_checkpoint({"step": 3}, path)  # a moment later: the temporary may still be someone's live write
    assert left.exists()
    when = time.time() - ck.STALE_AFTER - 1  # as it is once it has been left alone that long
    os.utime(left, (when, when))
    save_checkpoint({"step": 4}, path)
    assert not left.exists()
    assert load_checkpoint(path) == {"step": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]
