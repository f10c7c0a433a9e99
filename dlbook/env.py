"""Seeding and the one-line set-up every chapter starts with."""

from __future__ import annotations

import os
import platform
import random
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ._checks import check_bool, check_int
from ._version import __version__
from .device import amp_dtype, device_name, get_device
from .profiles import get_profile


def seed_everything(seed: int = 0) -> int:
    """Seed Python's ``random``, NumPy and torch (all devices).

    Raises:
        ValueError: if ``seed`` is not an integer in [0, 2**32).
    """
    seed = check_int(seed, "seed", 0)
    if seed >= 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32); got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA and MPS generators too
    return seed


def use_deterministic_algorithms() -> None:
    """Ask torch for deterministic kernels where it has them.

    ``warn_only=True``: an operation without a deterministic implementation
    warns instead of failing. cuDNN autotuning is switched off, and cuBLAS is
    told to use a fixed workspace, which its determinism requires.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


@dataclass(frozen=True)
class Environment:
    """What :func:`setup` found and did."""

    device: torch.device
    device_name: str
    torch: str
    dlbook: str
    python: str
    profile: str
    seed: int
    threads: int
    precision: str

    def as_dict(self) -> dict:
        d = asdict(self)
        d["device"] = str(self.device)
        return d

    def __str__(self) -> str:
        return (
            f"device: {self.device} ({self.device_name}), {self.threads} threads | "
            f"precision: {self.precision}\n"
            f"torch {self.torch} | dlbook {self.dlbook} | profile: {self.profile} | seed: {self.seed}"
        )


def precision(device: torch.device) -> str:
    """What :func:`dlbook.autocast` computes in on ``device``, in words."""
    dtype = amp_dtype(device)
    if dtype is None:
        return "float32 (no autocast here)"
    if dtype == torch.float16:
        return "float16 autocast with gradient scaling"
    return "bfloat16 autocast"


def setup(seed: int = 0, device: str | None = None, deterministic: bool = True,
          verbose: bool = True) -> Environment:
    """Seed everything, pick the device, and print two lines saying so (with the precision).

    It never mounts a drive, opens a browser or asks for credentials.

    Args:
        seed: the seed for Python, NumPy and torch.
        device: a device name to force; default :func:`dlbook.get_device`.
        deterministic: ask torch for deterministic algorithms.
        verbose: print the summary.
    """
    deterministic = check_bool(deterministic, "deterministic")
    verbose = check_bool(verbose, "verbose")
    seed = seed_everything(seed)
    if deterministic:
        use_deterministic_algorithms()
    dev = get_device(device)
    env = Environment(
        device=dev,
        device_name=device_name(dev),
        torch=torch.__version__,
        dlbook=__version__,
        python=platform.python_version(),
        profile=get_profile(),
        seed=seed,
        threads=torch.get_num_threads(),
        precision=precision(dev),
    )
    if verbose:
        print(env)
    return env
