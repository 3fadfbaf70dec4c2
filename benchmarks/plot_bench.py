"""One plot of several ``exitsearch bench`` reports (e.g. 2 threads and 1 thread).

Usage::

    python benchmarks/plot_bench.py results/<run>/bench.json results/<run>/bench-1thread.json \
        --out results/<run>/bench.png

Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from exitsearch.report.bench import plot_bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", type=Path, help="bench JSON files (--json-out)")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--title", default="", help="plot title")
    args = ap.parse_args(argv)
    try:
        docs = [json.loads(p.read_text()) for p in args.reports]
        plot_bench(docs, args.out, title=args.title)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
