"""`python -m cnnjax.sweep summarize ROOT`: tables and plots of a sweep's runs or of a search's
trials."""

from __future__ import annotations

import argparse
import pathlib
import sys

from cnnjax.sweep.root_record import SEARCH_FILE
from cnnjax.sweep.summary import summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnjax.sweep")
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summarize", help="a sweep: write ROOT/summary.{md,csv} and "
                                  "ROOT/curves.png; a search: its trials table and Optuna's plots")
    summary.add_argument("root", type=pathlib.Path)
    args = parser.parse_args(argv)
    try:
        if (args.root / SEARCH_FILE).is_file():
            from cnnjax.sweep.search_summary import summarize_search  # imports Optuna

            print(summarize_search(args.root))
            return 0
        rows = summarize(args.root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((args.root / "summary.md").read_text())
    over_seeds = args.root / "summary_over_seeds.md"
    if over_seeds.is_file():
        print("over seeds (mean, standard deviation, count):\n" + over_seeds.read_text())
    print(f"{len(rows)} runs; wrote {args.root}/summary.md, summary.csv, curves.png"
          + (", summary_over_seeds.md, summary_over_seeds.csv" if over_seeds.is_file() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
