"""Command-line entry point ``ctiengine`` (subcommands grow with the issues)."""
from __future__ import annotations

import argparse
import sys

from engine import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctiengine")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
