"""``python -m diag``: ``analyze`` a run, a JSONL file or TensorBoard logs; ``sweep`` summarises a multirun."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="diag", description="Training diagnostics: analyze runs and sweeps."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from diag import analyze, sweep

    analyze.add_parser(sub)
    sweep.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
