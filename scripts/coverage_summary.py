"""Print the line and the branch coverage of a `coverage json` report, apart (coverage's own
total mixes the two)."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path, encoding="utf-8") as report:
        totals = json.load(report)["totals"]
    lines = 100 * totals["covered_lines"] / max(1, totals["num_statements"])
    branches = 100 * totals["covered_branches"] / max(1, totals["num_branches"])
    print(f"lines {lines:.1f}% ({totals['covered_lines']}/{totals['num_statements']}), "
          f"branches {branches:.1f}% ({totals['covered_branches']}/{totals['num_branches']})")


if __name__ == "__main__":
    main(sys.argv[1])
