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
    device = torch.device(device)
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
    """True when the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX).

    Without it, PyTorch emulates bfloat16 on the CPU and autocast makes
    training several times *slower*, so :func:`amp_dtype` keeps float32.
    """
    checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(checker()) if checker is not None else False
    except RuntimeError:
        return False


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced-precision dtype autocast uses on ``device``, or ``None``.

    CUDA: bfloat16 where the GPU supports it, otherwise float16 (which needs
    a gradient scaler, see :func:`grad_scaler`). CPU: bfloat16 only when the
    CPU computes it natively. MPS and everything else: ``None`` (float32).
    """
    device = torch.device(device)
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
    """
    device = torch.device(device)
    dtype = amp_dtype(device) if enabled else None
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
    """
    device = torch.device(device)
    active = enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type if active else "cpu", enabled=active)


def loader_kwargs(device: torch.device | str) -> dict:
    """DataLoader settings suited to ``device``.

    CUDA: page-locked memory (faster host-to-GPU copies) and worker processes.
    CPU and MPS: no workers, since the main process has the cores to itself.
    """
    device = torch.device(device)
    if device.type == "cuda":
        workers = min(4, os.cpu_count() or 1)
        return {"pin_memory": True, "num_workers": workers, "persistent_workers": workers > 0}
    return {"pin_memory": False, "num_workers": 0}
