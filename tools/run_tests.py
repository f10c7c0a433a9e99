"""Run the test suite: unit tests, the notebooks under nbval, the site tests.

    python tools/run_tests.py [pytest arguments]
    python tools/run_tests.py --preflight [pytest arguments]  # only check what the tests need

Without test paths it runs ``tests`` and ``notebooks``. Notebooks run in the
smoke profile with nbval (``--nbval-lax``: only cells marked
``# NBVAL_CHECK_OUTPUT`` compare their outputs), each notebook in one worker
(``--dist loadfile``) when there are workers (``-n``). Models, checkpoints
and results that tests write go to a temporary folder, never into the
user's cache or results/. The site tests drive a Chromium (:func:`chromium`)
and look at Chinese text: when they are selected and Chromium or a font with
Chinese characters is missing, the command stops before pytest starts, with
one line saying what to install. ``--preflight`` does only that check (with
the standard library alone), so that ``make test`` can stop before it builds
anything.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATHS = ("tests", "notebooks")
SITE_TESTS = ROOT / "tests" / "test_site.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_VAR = "DLBOOK_CHROMIUM"
# pytest options (of pytest, xdist and nbval) whose value may come as the next argument
VALUE_OPTIONS = frozenset({
    "-n", "--numprocesses", "--maxprocesses", "--dist", "-k", "-m", "-p", "-c", "-o", "--override-ini",
    "-W", "--pythonwarnings", "-r", "--ignore", "--ignore-glob", "--deselect", "--maxfail", "--rootdir",
    "--basetemp", "--durations", "--durations-min", "--tb", "--confcutdir", "--import-mode", "--log-level",
    "--junitxml", "--junit-xml", "--capture", "--color", "--nbval-cell-timeout", "--nbval-kernel-name",
    "--nbval-sanitize-with", "--sanitize-with", "--tx", "--rsyncdir",
})
WITHOUT_SITE = "or run every other test: `make test SITE=no`"
MISSING_CHROMIUM = ("The site tests need Debian's Chromium, which is not installed: run "
                    f"`sudo apt-get install chromium` (on Ubuntu, see the README), {WITHOUT_SITE}.")
SNAP_CHROMIUM = ("The site tests cannot drive {path}, a snap (Ubuntu's Chromium): install Playwright's "
                 "own Chromium with `.venv/bin/python -m playwright install --with-deps chromium`, "
                 f"{WITHOUT_SITE}.")
BAD_CHROMIUM_VAR = (f"{CHROMIUM_VAR}={{path}} is not an executable file: set it to a Chromium or Chrome "
                    f"binary, or unset it, {WITHOUT_SITE}.")
MISSING_CJK_FONT = ("The site tests need a font with Chinese characters (without one the glossary's "
                    "Chinese column shows empty boxes): run `sudo apt-get install fonts-noto-cjk`, "
                    f"{WITHOUT_SITE}.")


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split pytest arguments into options (with their values) and test paths.

    ``-n 2`` is an option and its value, not the option ``-n`` and a path ``2``.
    """
    options, paths, value_next = [], [], False
    for arg in argv:
        if value_next:
            options.append(arg)
            value_next = False
        elif arg.startswith("-"):
            options.append(arg)
            value_next = arg in VALUE_OPTIONS
        else:
            paths.append(arg)
    return options, paths


def _values(options: list[str], name: str) -> list[str]:
    """The values given to option ``name``, as ``name=value`` or ``name value``."""
    found = [o.split("=", 1)[1] for o in options if o.startswith(name + "=")]
    found += [value for option, value in zip(options, options[1:]) if option == name]
    return found


def selects_site_tests(options: list[str], paths: list[str]) -> bool:
    """True when these arguments run tests/test_site.py (``-k`` aside)."""
    def covers(path: str) -> bool:
        target = (ROOT / path.split("::")[0]).resolve()
        return target == SITE_TESTS or target in SITE_TESTS.parents

    ignored = [(ROOT / p).resolve() for p in _values(options, "--ignore")]
    if any(SITE_TESTS == p or p in SITE_TESTS.parents for p in ignored):
        return False
    return any(covers(p) for p in paths or DEFAULT_PATHS)


def _executable(path: str | os.PathLike) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _is_snap(path: str) -> bool:
    """A snap's command: under /snap/, or a link to snap itself (Ubuntu's /snap/bin/chromium)."""
    return path.startswith("/snap/") or os.path.basename(os.path.realpath(path)) == "snap"


def playwright_chromium() -> str | None:
    """The newest Chromium that ``python -m playwright install chromium`` put in its browser folder
    (``PLAYWRIGHT_BROWSERS_PATH``, else ``~/.cache/ms-playwright``), or None."""
    folder = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or os.path.expanduser("~/.cache/ms-playwright")

    def build(path: str) -> int:
        number = Path(path).relative_to(folder).parts[0].rsplit("-", 1)[-1]
        return int(number) if number.isdigit() else -1

    found = [p for p in glob.glob(os.path.join(folder, "chromium-*", "chrome-linux*", "chrome")) if _executable(p)]
    return max(found, key=build) if found else None


def chromium() -> str | None:
    """The Chromium the site tests drive, None when there is none they can use.

    In this order: the binary ``DLBOOK_CHROMIUM`` names (None when it names
    no executable file); Debian's /usr/bin/chromium; ``chromium`` on the PATH
    unless it is a snap (Ubuntu's, which Playwright cannot drive: its
    confinement keeps it out of the profile folder Playwright gives it);
    Playwright's own Chromium (:func:`playwright_chromium`).
    """
    named = os.environ.get(CHROMIUM_VAR, "").strip()
    if named:
        return named if _executable(named) else None
    if CHROMIUM.exists():
        return str(CHROMIUM)
    on_path = shutil.which("chromium")
    if on_path and not _is_snap(on_path):
        return on_path
    return playwright_chromium()


def missing_chromium() -> str:
    """The one line that says why no Chromium was found and what to do."""
    named = os.environ.get(CHROMIUM_VAR, "").strip()
    if named:
        return BAD_CHROMIUM_VAR.format(path=named)
    on_path = shutil.which("chromium")
    if on_path and _is_snap(on_path):
        return SNAP_CHROMIUM.format(path=on_path)
    return MISSING_CHROMIUM


def has_cjk_font() -> bool | None:
    """Whether fontconfig (which Chromium uses) knows a font for Chinese; None when ``fc-list`` is missing."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    done = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True, check=False)
    return done.returncode == 0 and bool(done.stdout.strip())


def preflight_problem(options: list[str], paths: list[str]) -> str | None:
    """What the selected tests need and this machine lacks, as one line; None when nothing."""
    if not selects_site_tests(options, paths):
        return None
    if chromium() is None:
        return missing_chromium()
    if has_cjk_font() is False:
        return MISSING_CJK_FONT
    return None


def main(argv: list[str]) -> int:
    preflight = "--preflight" in argv
    options, paths = split_args([a for a in argv if a != "--preflight"])
    os.chdir(ROOT)
    problem = preflight_problem(options, paths)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if preflight:
        return 0
    import pytest

    os.environ.setdefault("DLBOOK_PROFILE", "smoke")
    os.environ.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory(prefix="dlbook-test-") as tmp:
        for var in ("DLBOOK_MODELS", "DLBOOK_CHECKPOINTS", "DLBOOK_RESULTS"):
            os.environ[var] = str(Path(tmp) / var.lower())
        args = ["--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-rfEs"]
        if any(o in ("-n", "--numprocesses") or o.startswith(("-n", "--numprocesses=")) for o in options):
            args += ["--dist", "loadfile"]
        return int(pytest.main(args + options + (paths or list(DEFAULT_PATHS))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
