"""dlbook as a reader installs it: a wheel, installed (not editable) by the
chapters' install cell into an environment that already has torch, as on
Colab or Kaggle.

The wheel is built once per session from a copy of the sources (so nothing
is written into the checkout). The environment is a fresh virtual
environment that sees the packages of this one (torch, numpy, ...) but not
dlbook, as a platform's preinstalled packages: a .pth file points at a
folder of links to them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

import dlbook
from dlbook import yardstick
from tools import badges

ROOT = Path(__file__).resolve().parents[1]
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, env=env, **kwargs)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _copy_sources(source: Path) -> Path:
    """What a build of dlbook reads, copied into ``source``."""
    source.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "dlbook", source / "dlbook", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return source


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    source = _copy_sources(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", out, source])
    wheels = list(out.glob("dlbook-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def platform_env(tmp_path_factory) -> Path:
    """A virtual environment whose preinstalled packages are this one's, dlbook left out. Returns its python."""
    root = tmp_path_factory.mktemp("platform")
    preinstalled = root / "preinstalled"
    preinstalled.mkdir()
    for entry in SITE_PACKAGES.iterdir():
        name = entry.name.lower()
        if name.startswith(("dlbook", "__editable__")) or name.endswith(".pth") or name == "__pycache__":
            continue
        (preinstalled / entry.name).symlink_to(entry)
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "preinstalled.pth").write_text(f"{preinstalled}\n")
    return python


def _in_env(python: Path, code: str, cwd: Path) -> str:
    """Run ``code`` in the platform environment, away from the checkout (which is not on its path)."""
    return _run([python, "-c", code], cwd=cwd).stdout


def test_wheel_metadata_has_the_packages_version(wheel):
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        fields = dict(line.split(": ", 1) for line in zf.read(metadata).decode().splitlines() if ": " in line)
    assert fields["Name"] == "dlbook"
    assert fields["Version"] == dlbook.__version__
    assert wheel.name.startswith(f"dlbook-{dlbook.__version__}-")


def test_wheel_holds_every_module_of_the_sources(wheel):
    with zipfile.ZipFile(wheel) as zf:
        packed = {n for n in zf.namelist() if n.startswith("dlbook/") and n.endswith(".py")}
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "dlbook").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources - packed == set(), "modules missing from the wheel (pyproject.toml's packages list?)"


def test_the_wheel_ships_the_judges_weights_with_their_checksum(wheel):
    """The yardstick's judge is package data: every install measures with the same weights."""
    with zipfile.ZipFile(wheel) as zf:
        blob = zf.read("dlbook/judge_mnist.pt")
    assert hashlib.sha256(blob).hexdigest() == yardstick.JUDGE_SHA256


def test_the_sdist_ships_the_judges_weights(tmp_path):
    source = _copy_sources(tmp_path / "source")
    out = tmp_path / "sdist"
    built = _run([sys.executable, "-c", "import sys, setuptools.build_meta as backend; "
                  "print(backend.build_sdist(sys.argv[1]))", out], cwd=source).stdout.split()[-1]
    with tarfile.open(out / built) as tar:
        found = [m for m in tar.getmembers() if m.name.endswith("/dlbook/judge_mnist.pt")]
        assert len(found) == 1, "dlbook/judge_mnist.pt is missing from the sdist"
        blob = tar.extractfile(found[0]).read()
    assert hashlib.sha256(blob).hexdigest() == yardstick.JUDGE_SHA256


def test_the_install_cell_keeps_the_platforms_torch_and_every_module_imports(wheel, platform_env, tmp_path):
    python = platform_env
    before = _in_env(python, "import torch, importlib.util; print(torch.__version__, torch.__file__); "
                             "print(importlib.util.find_spec('dlbook'))", tmp_path).split("\n")
    torch_before = before[0]
    assert before[1] == "None", "dlbook is visible in the fresh environment before it is installed"
    # the install cell's own pip arguments, with the local wheel in place of the git requirement
    done = _run([python, "-m", "pip", *badges.PIP_ARGS, wheel], cwd=tmp_path)
    assert "Uninstalling" not in done.stdout + done.stderr
    after = _in_env(python, "import torch; print(torch.__version__, torch.__file__)", tmp_path).strip()
    assert after == torch_before, "installing dlbook changed the platform's torch"
    report = json.loads(_in_env(python, """
import importlib, json, pkgutil
import dlbook
names = [m.name for m in pkgutil.walk_packages(dlbook.__path__, "dlbook.")]
for name in names:
    importlib.import_module(name)
from dlbook import yardstick
yardstick.load_judge("cpu")  # its weights are there, and their SHA-256 matches
print(json.dumps({"file": dlbook.__file__, "version": dlbook.__version__, "modules": names,
                  "judge": str(yardstick.JUDGE_PATH)}))
""", tmp_path))
    purelib = Path(_in_env(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])", tmp_path).strip())
    assert Path(report["file"]).parent == purelib / "dlbook", "dlbook was not imported from the installed wheel"
    assert report["version"] == dlbook.__version__
    assert Path(report["judge"]) == purelib / "dlbook" / "judge_mnist.pt"
    sources = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in (ROOT / "dlbook").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources - {"dlbook"} <= set(report["modules"])
    assert not (purelib / "torch").exists(), "pip installed a second torch into the environment"


def test_the_license_is_an_spdx_expression_and_the_build_backend_reads_it(wheel):
    """PEP 639: `license = "MIT"` (a table is deprecated: setuptools 77+ warns on every install)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    assert project["build-system"]["requires"] == ["setuptools>=77"]  # the first to read an SPDX license
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines()


def test_make_venv_builds_dlbook_with_a_setuptools_that_reads_the_license():
    """make venv installs dlbook with --no-build-isolation: the venv's own setuptools builds it."""
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    major = int(pins["setuptools"].split(".")[0])
    assert major >= 77
    assert "--no-build-isolation -e ." in (ROOT / "Makefile").read_text(encoding="utf-8")
