"""dlbook.env: seeding and the one-line set-up."""

import random

import numpy as np
import pytest
import torch

import dlbook
from dlbook import env


@pytest.fixture(autouse=True)
def restore_determinism(monkeypatch):
    """setup() switches torch to deterministic algorithms; undo it afterwards."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # so monkeypatch restores it
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic


def _draws():
    return torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)]


def test_setup_seeds_every_generator():
    env.setup(seed=123, verbose=False)
    first = _draws()
    _draws()  # move on, so that equality below is not an accident
    env.setup(seed=123, verbose=False)
    second = _draws()
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_different_seeds_give_different_draws():
    env.setup(seed=1, verbose=False)
    a = _draws()
    env.setup(seed=2, verbose=False)
    b = _draws()
    assert not torch.equal(a[0], b[0])
    assert not np.array_equal(a[1], b[1])
    assert a[2] != b[2]


def test_seed_everything_matches_the_libraries_own_seeding():
    dlbook.seed_everything(7)
    ours = _draws()
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    assert torch.equal(ours[0], torch.rand(5))
    assert np.array_equal(ours[1], np.random.rand(5))
    assert ours[2] == [random.random() for _ in range(5)]


def test_setup_prints_two_short_lines(capsys):
    result = env.setup(seed=42)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(len(line) <= 79 for line in lines)
    line = " ".join(lines)
    for part in ("device: cpu", f"torch {torch.__version__}", f"dlbook {dlbook.__version__}",
                 "profile: smoke", "seed: 42", "precision: ", "threads"):
        assert part in line
    assert isinstance(result, env.Environment)


def test_setup_quiet(capsys):
    env.setup(seed=0, verbose=False)
    assert capsys.readouterr().out == ""


def test_setup_returns_the_environment(full_profile):
    result = env.setup(seed=5, verbose=False)
    assert result.device == torch.device("cpu")
    assert result.seed == 5
    assert result.profile == "full"
    assert result.torch == torch.__version__
    assert result.dlbook == dlbook.__version__
    assert result.threads == torch.get_num_threads()
    assert result.device_name
    d = result.as_dict()
    assert d["device"] == "cpu" and d["seed"] == 5
    assert set(d) == {"device", "device_name", "torch", "dlbook", "python", "profile", "seed", "threads",
                      "precision"}


def test_setup_deterministic_switch():
    torch.use_deterministic_algorithms(False)
    env.setup(seed=0, deterministic=False, verbose=False)
    assert not torch.are_deterministic_algorithms_enabled()
    env.setup(seed=0, verbose=False)
    assert torch.are_deterministic_algorithms_enabled()


def test_setup_device_argument_and_environment(monkeypatch):
    assert env.setup(seed=0, device="cpu", verbose=False).device == torch.device("cpu")
    monkeypatch.setenv("DLBOOK_DEVICE", "cpu")
    assert env.setup(seed=0, verbose=False).device == torch.device("cpu")
    monkeypatch.setenv("DLBOOK_DEVICE", "nonsense")
    with pytest.raises(ValueError, match="DLBOOK_DEVICE"):
        env.setup(seed=0, verbose=False)


def test_setup_rejects_a_bad_profile(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "medium")
    with pytest.raises(ValueError, match="smoke"):
        env.setup(seed=0, verbose=False)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, 0.0, "0", None, True, [0]])
def test_bad_seeds(seed):
    with pytest.raises(ValueError, match="seed"):
        env.setup(seed=seed, verbose=False)
    with pytest.raises(ValueError, match="seed"):
        dlbook.seed_everything(seed)


@pytest.mark.parametrize("seed", [0, 2**32 - 1, np.int64(3), np.uint32(9)])
def test_good_seeds(seed):
    assert dlbook.seed_everything(seed) == int(seed)
    assert type(dlbook.seed_everything(seed)) is int


@pytest.mark.parametrize("kwargs, match", [
    (dict(verbose="no"), "verbose"),  # a non-empty string would count as True
    (dict(verbose=None), "verbose"),
    (dict(deterministic=1), "deterministic"),
])
def test_setup_switches_must_be_bools(kwargs, match, capsys):
    with pytest.raises(TypeError, match=match):
        env.setup(seed=0, **kwargs)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("device, error", [(0, TypeError), ("gpu", ValueError), ("cuda:x", ValueError)])
def test_setup_bad_device(device, error):
    with pytest.raises(error, match="device|argument"):
        env.setup(seed=0, device=device, verbose=False)


def test_setup_says_whether_bf16_autocast_is_in_use(native_bf16, capsys):
    result = env.setup(seed=0, device="cpu")
    out = capsys.readouterr().out
    expected = "bfloat16 autocast" if native_bf16 else "float32 (no autocast here)"
    assert result.precision == expected and f"precision: {expected}" in out
    assert all(len(line) <= 79 for line in out.splitlines()), out


def test_precision_names_float16_with_scaling_on_an_old_gpu(monkeypatch):
    monkeypatch.setattr(env, "amp_dtype", lambda device: torch.float16)
    assert env.precision(torch.device("cuda")) == "float16 autocast with gradient scaling"
