"""Device selection, mixed precision and DataLoader settings.

The order of preference is CUDA, then Apple MPS, then the CPU. The
environment variable ``DLBOOK_DEVICE`` (``cuda``, ``cuda:1``, ``mps`` or
``cpu``) overrides the choice.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Iterator

import torch

from ._checks import check_bool, check_device

KNOWN_DEVICE_TYPES = ("cuda", "mps", "cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _available(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        return device.index is None or device.index < torch.cuda.device_count()
    if device.type == "mps":
        return _mps_available()
    return False


def _check_present(device: torch.device, who: str) -> torch.device:
    """``device`` unless it names a CUDA GPU this machine does not have.

    torch would only warn and run in float32 there, while :func:`amp_dtype`
    would claim float16: refused, as :func:`get_device` refuses it.
    """
    if device.type == "cuda" and not _available(device):
        have = (f"it has {torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available()
                else "CUDA is not available")
        raise ValueError(f"{who}({str(device)!r}): this machine has no such device ({have}); "
                         f"use dlbook.get_device() or 'cpu'")
    return device


def get_device(name: str | None = None) -> torch.device:
    """Return the device to compute on.

    Args:
        name: ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"cpu"``. When omitted,
            ``DLBOOK_DEVICE`` is used if set; otherwise the best available
            device (CUDA, then MPS, then CPU).

    Raises:
        ValueError: for a device name that is not one of the above, or a
            device that this machine does not have.
    """
    source = "argument"
    if name is None:
        name = os.environ.get("DLBOOK_DEVICE", "").strip() or None
        source = "DLBOOK_DEVICE"
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(name, (str, torch.device)):
        raise TypeError(f"{source}: expected a device name such as 'cpu' or 'cuda', or a torch.device; "
                        f"got {type(name).__name__}")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{source}: expected one of {', '.join(KNOWN_DEVICE_TYPES)} "
            f"(optionally cuda:N); got {name!r}"
        ) from err
    if device.type not in KNOWN_DEVICE_TYPES:
        raise ValueError(
            f"{source}: expected one of {', '.join(KNOWN_DEVICE_TYPES)}; got {name!r}"
        )
    if not _available(device):
        raise ValueError(
            f"{source} asks for {name!r}, but this machine has no such device "
            f"(CUDA available: {torch.cuda.is_available()}, "
            f"MPS available: {_mps_available()}). Unset DLBOOK_DEVICE or pick another."
        )
    return device


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the GPU or CPU behind ``device``."""
    device = _check_present(check_device(device), "device_name")
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple GPU ({platform.machine()})"
    return _cpu_name()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bfloat16 in hardware.

    On x86: the AVX-512 BF16 or AMX-BF16 instructions. oneDNN's own check
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes for plain
    AVX-512, where it emulates bfloat16; it is used only on other CPUs (ARM,
    where it looks for the BF16 extension).

    Without native bfloat16, autocast makes training several times *slower*,
    so :func:`amp_dtype` keeps float32.
    """
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        flags = _x86_bf16_flags()
        if flags is not None:
            return bool(flags)
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(checker()) if checker is not None else False
    except RuntimeError:
        return False


def _x86_bf16_flags() -> set[str] | None:
    """Which of the native bfloat16 instruction sets this x86 CPU has, or
    ``None`` when torch cannot tell (then oneDNN's check decides)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:
        return None
    try:
        found = capabilities()
    except RuntimeError:
        return None
    return {name for name in ("avx512_bf16", "amx_bf16") if found.get(name)}


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced-precision dtype autocast uses on ``device``, or ``None``.

    CUDA: bfloat16 where the GPU supports it, otherwise float16 (which needs
    a gradient scaler, see :func:`grad_scaler`). CPU: bfloat16 only when the
    CPU computes it natively. MPS and everything else: ``None`` (float32).

    Raises:
        ValueError: for a CUDA device this machine does not have.
    """
    device = _check_present(check_device(device), "amp_dtype")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True) -> Iterator[torch.dtype | None]:
    """Mixed precision where it pays, a no-op elsewhere.

    Use ``enabled=False`` for full precision, for example in parity checks.
    Yields the dtype in use (``None`` means float32).

    Raises:
        ValueError: for a CUDA device this machine does not have, also
            with ``enabled=False`` (torch would only warn and disable
            autocast, while this would yield float16 as the dtype in use).
    """
    device = _check_present(check_device(device), "autocast")
    dtype = amp_dtype(device) if check_bool(enabled, "enabled") else None
    if dtype is None:
        yield None
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield dtype


def grad_scaler(device: torch.device | str, enabled: bool = True) -> torch.amp.GradScaler:
    """A gradient scaler that is active only for float16 autocast on CUDA.

    Float16 has a narrow exponent range, so small gradients underflow to zero
    unless the loss is scaled up first; bfloat16 and float32 need no scaling.
    A disabled scaler passes ``scale``, ``step`` and ``update`` through.

    Raises:
        ValueError: for a CUDA device this machine does not have.
    """
    device = _check_present(check_device(device), "grad_scaler")
    active = check_bool(enabled, "enabled") and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type if active else "cpu", enabled=active)


def loader_kwargs(device: torch.device | str) -> dict:
    """DataLoader settings suited to ``device``.

    CUDA: page-locked memory (faster host-to-GPU copies) and worker processes.
    CPU and MPS: no workers, since the main process has the cores to itself.
    """
    device = check_device(device)
    if device.type == "cuda":
        workers = min(4, os.cpu_count() or 1)
        return {"pin_memory": True, "num_workers": workers, "persistent_workers": workers > 0}
    return {"pin_memory": False, "num_workers": 0}
