"""Run the test suite: unit tests, the notebooks under nbval, the site tests.

    python tools/run_tests.py [pytest arguments]

Notebooks run in the smoke profile with nbval (``--nbval-lax``: only cells
marked ``# NBVAL_CHECK_OUTPUT`` compare their outputs), each notebook in one
worker (``--dist loadfile``). Models, checkpoints and results that tests
write go to a temporary folder, never into the user's cache or results/.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    import pytest

    os.chdir(ROOT)
    os.environ.setdefault("DLBOOK_PROFILE", "smoke")
    os.environ.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory(prefix="dlbook-test-") as tmp:
        for var in ("DLBOOK_MODELS", "DLBOOK_CHECKPOINTS", "DLBOOK_RESULTS"):
            os.environ[var] = str(Path(tmp) / var.lower())
        args = ["--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-rfEs"]
        if any(a.startswith("-n") for a in argv):
            args += ["--dist", "loadfile"]
        paths = [a for a in argv if not a.startswith("-")]
        return int(pytest.main(args + argv + ([] if paths else ["tests", "notebooks"])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
