"""python -m loadtest.faults.phpfpm [--short] [--out DIR] [--only FAULT ...]: the PHP-FPM fault table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtest.faults import table
from loadtest.faults.phpfpm import faults
from loadtest.faults.phpfpm.runner import default_out_dir, machine, run
from loadtest.faults.phpfpm.stack import Unavailable, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.faults.phpfpm", description=__doc__)
    parser.add_argument("--short", action="store_true", help="shorter loads and holds (about 2 minutes)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report folder (default loadtest/reports/<UTC time>-phpfpm-faults/)")
    parser.add_argument("--only", nargs="+", default=(), choices=[name for name, _ in faults.FAULTS],
                        help="run only these faults")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"phpfpm faults skipped: {reason}", file=sys.stderr)
        return 0
    out = args.out or default_out_dir()
    try:
        rows = run(out, short=args.short, only=tuple(args.only))
    except Unavailable as exc:  # pragma: no cover - raced with an uninstall
        print(f"phpfpm faults skipped: {exc}", file=sys.stderr)
        return 0
    info = machine()
    print(f"{info['date']}, nproc {info['nproc']}, kernel {info['kernel']}, {info['php-fpm']}, {info['nginx']}\n")
    print(table.markdown(rows))
    print(f"written to {out}/faults.md and faults.json (logs in {out}/logs/)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
