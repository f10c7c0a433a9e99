"""dlbook.fingerprint: descriptions that are the same in every process and
change when what they describe changes."""

import functools
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dlbook.fingerprint import describe, digest, optimizer_settings, tensor_digest

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


THINGS = {
    "tensor": lambda: torch.arange(6.0).reshape(2, 3),
    "array": lambda: np.arange(6),
    "module": lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Dropout(0.1)),
    "partial": lambda: functools.partial(scale, factor=3.0),
    "lambda": lambda: (lambda x: x + 1),
    "dataclass": lambda: Config(2.0),
    "object": lambda: Plain([1, 2.5, "x"]),
    "optimizer": lambda: torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=1e-3),
}

SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, TESTS)
    import json
    import test_fingerprint as t
    from dlbook.fingerprint import describe
    print(json.dumps({name: describe(make()) for name, make in t.THINGS.items()}))
''')


def test_descriptions_are_the_same_in_another_process():
    here = {name: describe(make()) for name, make in THINGS.items()}
    out = subprocess.run([sys.executable, "-c", SCRIPT.replace("TESTS", repr(str(ROOT / "tests")))], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    there = json.loads(out)
    assert there == here
    assert not any(" at 0x" in text for text in here.values())


@pytest.mark.parametrize("a, b", [
    (torch.zeros(3), torch.tensor([0.0, 0.0, 1e-7])),
    (torch.zeros(3), torch.zeros(3, dtype=torch.float64)),
    (torch.zeros(6), torch.zeros(2, 3)),
    (nn.Sequential(nn.Linear(2, 3), nn.ReLU()), nn.Sequential(nn.Linear(2, 3), nn.GELU())),
    (nn.Dropout(0.1), nn.Dropout(0.2)),
    (functools.partial(scale, factor=3.0), functools.partial(scale, factor=4.0)),
    (Config(1.0), Config(2.0)),
    (Plain(1), Plain(2)),
    ({"a": 1}, {"a": 2}),
    ([1, 2], (1, 2)),
    (1, 1.0),
])
def test_a_change_changes_the_description(a, b):
    assert describe(a) != describe(b)


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
