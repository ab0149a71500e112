"""`python -m cnnjax.sweep summarize ROOT`: tables and learning curves of a sweep's runs."""

from __future__ import annotations

import argparse
import pathlib
import sys

from cnnjax.sweep.summary import summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnjax.sweep")
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summarize", help="write ROOT/summary.{md,csv} and ROOT/curves.png")
    summary.add_argument("root", type=pathlib.Path)
    args = parser.parse_args(argv)
    try:
        rows = summarize(args.root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((args.root / "summary.md").read_text())
    print(f"{len(rows)} runs; wrote {args.root}/summary.md, summary.csv, curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
