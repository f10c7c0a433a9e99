"""dlbook.device: device choice, mixed precision and loader settings.

The GPU branches are covered on the CPU by faking what torch reports.
"""

import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from dlbook import device as dev


@pytest.fixture
def fake(monkeypatch):
    """fake(cuda=..., n_cuda=..., bf16=..., mps=..., native_bf16=...)."""
    def apply(cuda=False, n_cuda=1, bf16=True, mps=False, native_bf16=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n_cuda if cuda else 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: native_bf16)
    return apply


# get_device ---------------------------------------------------------------

@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu"),
])
def test_preference_order(fake, cuda, mps, expected):
    fake(cuda=cuda, mps=mps)
    assert dev.get_device() == torch.device(expected)


def test_real_machine_gives_an_available_device():
    d = dev.get_device()
    assert d.type in dev.KNOWN_DEVICE_TYPES
    torch.zeros(1, device=d)


@pytest.mark.parametrize("name, expected", [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"), ("mps", "mps")])
def test_environment_override(fake, monkeypatch, name, expected):
    fake(cuda=True, n_cuda=2, mps=True)
    monkeypatch.setenv("DLBOOK_DEVICE", name)
    assert dev.get_device() == torch.device(expected)


def test_override_beats_the_preference(fake, monkeypatch):
    fake(cuda=True, mps=True)
    monkeypatch.setenv("DLBOOK_DEVICE", "cpu")
    assert dev.get_device() == torch.device("cpu")


def test_argument_beats_the_environment(fake, monkeypatch):
    fake(cuda=True)
    monkeypatch.setenv("DLBOOK_DEVICE", "cuda")
    assert dev.get_device("cpu") == torch.device("cpu")


def test_blank_environment_value_is_ignored(fake, monkeypatch):
    fake(cuda=False, mps=False)
    monkeypatch.setenv("DLBOOK_DEVICE", "  ")
    assert dev.get_device() == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", "CPU0", "xla", "meta"])
def test_unknown_device_is_a_clear_error(fake, monkeypatch, name):
    fake(cuda=True, mps=True)
    monkeypatch.setenv("DLBOOK_DEVICE", name)
    with pytest.raises(ValueError) as err:
        dev.get_device()
    message = str(err.value)
    assert "DLBOOK_DEVICE" in message and repr(name) in message
    assert all(t in message for t in ("cuda", "mps", "cpu"))


@pytest.mark.parametrize("name, kwargs", [
    ("cuda", dict(cuda=False)),
    ("cuda:2", dict(cuda=True, n_cuda=2)),
    ("mps", dict(mps=False)),
])
def test_unavailable_device_is_a_clear_error(fake, monkeypatch, name, kwargs):
    fake(**kwargs)
    monkeypatch.setenv("DLBOOK_DEVICE", name)
    with pytest.raises(ValueError) as err:
        dev.get_device()
    message = str(err.value)
    assert repr(name) in message and "no such device" in message and "DLBOOK_DEVICE" in message


def test_error_names_the_argument_when_not_from_the_environment(fake):
    fake(cuda=False)
    with pytest.raises(ValueError, match="argument"):
        dev.get_device("cuda")


# a CUDA device this machine does not have ----------------------------------

@pytest.mark.parametrize("fn, who", [
    (dev.amp_dtype, "amp_dtype"),
    (lambda d: dev.autocast(d).__enter__(), "autocast"),
    (lambda d: dev.autocast(d, enabled=False).__enter__(), "autocast"),
    (dev.grad_scaler, "grad_scaler"),
    (lambda d: dev.grad_scaler(d, enabled=False), "grad_scaler"),
    (dev.device_name, "device_name"),
])
@pytest.mark.parametrize("device", ["cuda", torch.device("cuda:0")])
def test_cuda_without_a_gpu_is_refused_not_faked(fake, fn, who, device):
    """torch disables autocast on a missing GPU (a warning, float32) while amp_dtype said float16."""
    fake(cuda=False, bf16=False)
    with pytest.raises(ValueError) as err:
        fn(device)
    assert str(err.value) == (f"{who}({str(device)!r}): this machine has no such device (CUDA is not available); "
                              f"use dlbook.get_device() or 'cpu'")


def test_a_cuda_index_beyond_the_gpus_is_refused(fake):
    fake(cuda=True, n_cuda=2, bf16=True)
    assert dev.amp_dtype("cuda:1") == torch.bfloat16
    with pytest.raises(ValueError, match=r"amp_dtype\('cuda:2'\): this machine has no such device "
                                         r"\(it has 2 CUDA device\(s\)\)"):
        dev.amp_dtype("cuda:2")


# amp_dtype ----------------------------------------------------------------

@pytest.mark.parametrize("bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_amp_dtype_cuda(fake, bf16, expected):
    fake(cuda=True, bf16=bf16)
    assert dev.amp_dtype("cuda") == expected
    assert dev.amp_dtype(torch.device("cuda:0")) == expected


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_amp_dtype_cpu_only_with_native_bf16(fake, native, expected):
    fake(native_bf16=native)
    assert dev.amp_dtype("cpu") is expected


def test_amp_dtype_mps_is_none(fake):
    fake(mps=True, native_bf16=True)
    assert dev.amp_dtype("mps") is None


def _cpuinfo_flags() -> set[str]:
    text = Path("/proc/cpuinfo").read_text()
    line = next(line for line in text.splitlines() if line.startswith("flags"))
    return set(line.split(":", 1)[1].split())


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists() or platform.machine() != "x86_64",
                    reason="needs an x86-64 Linux machine to read the CPU's flags")
def test_cpu_has_native_bf16_matches_the_cpu_flags():
    """An independent witness: the kernel's list of the CPU's instruction sets."""
    flags = _cpuinfo_flags()
    assert dev.cpu_has_native_bf16() is bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize("capabilities, mkldnn, expected", [
    ({"avx512_bf16": True, "amx_bf16": False}, True, True),
    ({"avx512_bf16": False, "amx_bf16": True}, True, True),
    # AVX-512 without BF16 (Skylake, Cascade Lake): oneDNN says yes and emulates; we say no
    ({"avx512_bf16": False, "amx_bf16": False, "avx512_f": True, "avx512_bw": True}, True, False),
    ({"avx2": True}, False, False),
])
def test_cpu_has_native_bf16_on_x86(monkeypatch, capabilities, mkldnn, expected):
    monkeypatch.setattr(dev.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn, raising=False)
    assert dev.cpu_has_native_bf16() is expected


@pytest.mark.parametrize("machine", ["aarch64", "arm64"])
@pytest.mark.parametrize("mkldnn, expected", [(lambda: True, True), (lambda: False, False)])
def test_cpu_has_native_bf16_elsewhere_asks_onednn(monkeypatch, machine, mkldnn, expected):
    monkeypatch.setattr(dev.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: pytest.fail("x86 only"), raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", mkldnn, raising=False)
    assert dev.cpu_has_native_bf16() is expected


def test_cpu_has_native_bf16_when_torch_cannot_tell(monkeypatch):
    monkeypatch.setattr(dev.platform, "machine", lambda: "x86_64")
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)

    def broken():
        raise RuntimeError("no oneDNN")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", broken, raising=False)
    assert dev.cpu_has_native_bf16() is False


# autocast -----------------------------------------------------------------

def _matmul_dtype():
    a = torch.randn(4, 4)
    return (a @ a).dtype


def test_autocast_is_a_no_op_without_native_bf16(fake):
    fake(native_bf16=False)
    with dev.autocast("cpu") as dtype:
        assert dtype is None
        assert _matmul_dtype() == torch.float32


def test_autocast_on_cpu_with_native_bf16_gives_bfloat16(fake):
    fake(native_bf16=True)
    with dev.autocast("cpu") as dtype:
        assert dtype == torch.bfloat16
        assert _matmul_dtype() == torch.bfloat16
    assert _matmul_dtype() == torch.float32  # and it ends with the block


def test_autocast_disabled_gives_float32(fake):
    fake(native_bf16=True)
    with dev.autocast("cpu", enabled=False) as dtype:
        assert dtype is None
        assert _matmul_dtype() == torch.float32


def test_autocast_on_mps_is_a_no_op(fake):
    fake(mps=True, native_bf16=True)
    with dev.autocast("mps") as dtype:
        assert dtype is None
        assert _matmul_dtype() == torch.float32


def test_autocast_exported():
    import dlbook

    assert dlbook.autocast is dev.autocast


# grad_scaler --------------------------------------------------------------

def test_grad_scaler_enabled_only_for_float16_cuda(fake):
    fake(cuda=True, bf16=False)
    assert dev.grad_scaler("cuda").is_enabled()
    assert not dev.grad_scaler("cuda", enabled=False).is_enabled()
    fake(cuda=True, bf16=True)
    assert not dev.grad_scaler("cuda").is_enabled()


@pytest.mark.parametrize("device, native", [("cpu", False), ("cpu", True), ("mps", True)])
def test_grad_scaler_disabled_elsewhere(fake, device, native):
    fake(mps=True, native_bf16=native)
    scaler = dev.grad_scaler(device)
    assert not scaler.is_enabled()
    loss = torch.tensor(3.0, requires_grad=True)
    assert scaler.scale(loss) is loss  # passes through


# loader_kwargs ------------------------------------------------------------

def test_loader_kwargs_cuda(monkeypatch):
    monkeypatch.setattr(dev.os, "cpu_count", lambda: 2)
    assert dev.loader_kwargs("cuda") == {"pin_memory": True, "num_workers": 2, "persistent_workers": True}
    monkeypatch.setattr(dev.os, "cpu_count", lambda: 64)
    assert dev.loader_kwargs("cuda")["num_workers"] == 4
    monkeypatch.setattr(dev.os, "cpu_count", lambda: None)
    assert dev.loader_kwargs("cuda")["num_workers"] == 1


@pytest.mark.parametrize("device", ["cpu", "mps", torch.device("cpu")])
def test_loader_kwargs_cpu_and_mps(device):
    assert dev.loader_kwargs(device) == {"pin_memory": False, "num_workers": 0}


def test_loader_kwargs_work_with_a_dataloader():
    ds = torch.utils.data.TensorDataset(torch.arange(10))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, **dev.loader_kwargs("cpu"))
    assert [len(b[0]) for b in loader] == [4, 4, 2]


# device_name --------------------------------------------------------------

def test_device_name():
    assert isinstance(dev.device_name("cpu"), str) and dev.device_name("cpu")
    assert "Apple" in dev.device_name("mps")


# mixed precision on this CPU and on one without native bfloat16 --------------------

def test_autocast_matmul_is_close_to_float32(native_bf16):
    """What autocast computes depends on the CPU; compare each case with its own precision."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 64, generator=gen), torch.randn(64, 64, generator=gen)
    exact = a.double() @ b.double()
    with dev.autocast("cpu") as dtype:
        got = a @ b
    assert dtype == (torch.bfloat16 if native_bf16 else None)
    assert got.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    # float32 rounds at ~1e-7 relative, bfloat16 at ~4e-3 (8 bits of mantissa)
    tol = 0.05 if native_bf16 else 1e-4
    assert torch.allclose(got.double(), exact, rtol=tol, atol=tol * exact.abs().max().item())
    with dev.autocast("cpu", enabled=False):
        assert torch.allclose((a @ b).double(), exact, rtol=1e-4, atol=1e-4)


def test_amp_dtype_and_scaler_follow_the_cpu(native_bf16):
    assert dev.amp_dtype("cpu") == (torch.bfloat16 if native_bf16 else None)
    assert not dev.grad_scaler("cpu").is_enabled()  # bfloat16 needs no loss scaling


# bad input ---------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [dev.device_name, dev.amp_dtype, dev.grad_scaler, dev.loader_kwargs,
                                lambda d: dev.autocast(d).__enter__()])
@pytest.mark.parametrize("device, error, match", [
    ("gpu", ValueError, "device name"),
    ("banana", ValueError, r"^device must be a device name: 'cpu', 'cuda', 'cuda:N' \(N = 0, 1, \.\.\.\) or "
                           r"'mps'; got 'banana'$"),
    ("", ValueError, "device name"),
    (0, TypeError, "device"),
    (None, TypeError, "device"),
    (["cpu"], TypeError, "device"),
])
def test_device_arguments_bad_input(fn, device, error, match):
    with pytest.raises(error, match=match):
        fn(device)


@pytest.mark.parametrize("fn", [lambda e: dev.autocast("cpu", enabled=e).__enter__(),
                                lambda e: dev.grad_scaler("cpu", enabled=e)])
@pytest.mark.parametrize("enabled", ["no", 0, None, 1.0])
def test_enabled_must_be_a_bool(fn, enabled):
    with pytest.raises(TypeError, match="enabled"):
        fn(enabled)


def test_numpy_bool_is_a_bool(fake):
    fake(native_bf16=True)
    with dev.autocast("cpu", enabled=np.bool_(False)) as dtype:
        assert dtype is None


@pytest.mark.parametrize("name, error", [(0, TypeError), (1.5, TypeError), (["cpu"], TypeError),
                                         ("cuda:-1", ValueError), ("cpu:x", ValueError)])
def test_get_device_bad_argument(fake, name, error):
    fake(cuda=False)
    with pytest.raises(error, match="argument"):
        dev.get_device(name)


def test_get_device_accepts_a_torch_device():
    assert dev.get_device(torch.device("cpu")) == torch.device("cpu")
