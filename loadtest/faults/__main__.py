"""python -m loadtest.faults run [--short] [--only a,b] [--out DIR] [--stack-file PATH] — see docs/reliability.md.

Injects each fault into the running stack (`make up`) under load and checks what it cost. Exit status: 0 when
every row passed or was skipped, 1 when a row failed (the message names it and what failed), 2 when the
stack is not there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadtest.faults.suite import ROWS


def only(raw: str) -> list[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {', '.join(unknown) or repr(raw)}; choose from "
                                         f"{', '.join(ROWS)}")
    return [n for n in ROWS if n in names]  # the run's order, whatever order they were given in


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.faults", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="inject every fault under load, print and write the table")
    run.add_argument("--short", action="store_true", help="shorter loads and holds: what CI runs (about 2 min)")
    run.add_argument("--only", type=only, default=list(ROWS), metavar="A,B",
                     help=f"comma-separated faults to run (default all): {', '.join(ROWS)}")
    run.add_argument("--out", type=Path, help="report folder (default loadtest/reports/<UTC timestamp>-faults)")
    run.add_argument("--stack-file", help="stack.json written by `make up` (default $STACK_FILE, "
                     "$STACK_VAR/stack.json, var/stack.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from loadtest.faults import suite
    from loadtest.stack import StackError

    try:
        rows, out = suite.run(args.only, args.short, args.out, suite.stack_file(args.stack_file))
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the rows have put back what they changed (mail server, mounts) on the way out
        print("interrupted: no table written", file=sys.stderr)
        return 130
    return suite.print_summary(rows, out)


if __name__ == "__main__":
    sys.exit(main())
