"""Run the test suite: unit tests, the notebooks under nbval, the site tests.

    python tools/run_tests.py [pytest arguments]
    python tools/run_tests.py --preflight [pytest arguments]  # only check what the tests need

Without test paths it runs ``tests`` and ``notebooks``. Notebooks run in the
smoke profile with nbval (``--nbval-lax``: only cells marked
``# NBVAL_CHECK_OUTPUT`` compare their outputs), each notebook in one worker
(``--dist loadfile``) when there are workers (``-n``). Models, checkpoints
and results that tests write go to a temporary folder, never into the
user's cache or results/. The site tests drive Debian's Chromium: when they
are selected and it is missing, the command stops before pytest starts,
with one line saying what to install. ``--preflight`` does only that check
(with the standard library alone), so that ``make test`` can stop before it
builds anything.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATHS = ("tests", "notebooks")
SITE_TESTS = ROOT / "tests" / "test_site.py"
CHROMIUM = Path("/usr/bin/chromium")
# pytest options (of pytest, xdist and nbval) whose value may come as the next argument
VALUE_OPTIONS = frozenset({
    "-n", "--numprocesses", "--maxprocesses", "--dist", "-k", "-m", "-p", "-c", "-o", "--override-ini",
    "-W", "--pythonwarnings", "-r", "--ignore", "--ignore-glob", "--deselect", "--maxfail", "--rootdir",
    "--basetemp", "--durations", "--durations-min", "--tb", "--confcutdir", "--import-mode", "--log-level",
    "--junitxml", "--junit-xml", "--capture", "--color", "--nbval-cell-timeout", "--nbval-kernel-name",
    "--nbval-sanitize-with", "--sanitize-with", "--tx", "--rsyncdir",
})
MISSING_CHROMIUM = ("The site tests need Debian's Chromium, which is not installed: run "
                    "`sudo apt-get install chromium` (or leave them out: --ignore=tests/test_site.py).")


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


def chromium() -> str | None:
    """Debian's Chromium: /usr/bin/chromium, else ``chromium`` on the PATH; None when missing."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    return shutil.which("chromium")


def main(argv: list[str]) -> int:
    preflight = "--preflight" in argv
    options, paths = split_args([a for a in argv if a != "--preflight"])
    os.chdir(ROOT)
    if selects_site_tests(options, paths) and chromium() is None:
        print(MISSING_CHROMIUM, file=sys.stderr)
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
