"""``python -m dlbook.data``: fill the data folder, for instance before going offline.

    python -m dlbook.data fetch --all        everything the notebooks and the tests read
    python -m dlbook.data fetch mnist cora   only these cache files

The folder is ``DLBOOK_DATA``, else dlbook's user cache (``~/.cache/dlbook``
on Linux). Files that are there are verified against their SHA-256; missing
ones are downloaded with a progress bar, from the mirrors of
``DLBOOK_MIRRORS`` first, then from the official sources. ``--all`` also
keeps the official Planetoid files and writes the ``SHA256SUMS`` files
(:func:`dlbook.data.fetch_all`). Exit status 0 when every file asked for is
there and good, 1 when one is not (each named, with how to fix it), 2 for
a usage error.
"""

from __future__ import annotations

import argparse
import sys

from .cache import fetch
from .folder import fetch_all
from .formats import DataError
from .sources import SOURCES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlbook.data",
        description="Fill dlbook's data folder (DLBOOK_DATA, else the user cache): verify what is there, "
                    "download what is missing.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fetch_parser = commands.add_parser(
        "fetch", help="verify or download data sets",
        description=f"Verify or download data sets: --all, or one or more of {', '.join(SOURCES)}.")
    fetch_parser.add_argument("names", nargs="*", metavar="NAME", help="a data set: " + ", ".join(SOURCES))
    fetch_parser.add_argument("--all", action="store_true",
                              help="every data set, the official Planetoid files and the SHA256SUMS files: "
                                   "all that the notebooks and the tests read")
    args = parser.parse_args(argv)
    if args.all == bool(args.names):
        fetch_parser.error("give --all or data set names (one of the two)")
    unknown = [n for n in args.names if n not in SOURCES]
    if unknown:
        fetch_parser.error(f"unknown data set {unknown[0]!r}: choose from {', '.join(SOURCES)}")
    try:
        if args.all:
            fetch_all()
        else:
            for name in args.names:
                print(f"{fetch(name)}: SHA-256 verified", flush=True)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
