"""python -m loadtest run|sizing — see docs/loadtest.md."""

from __future__ import annotations

import argparse
import sys


def _positive(kind):
    def parse(raw: str):
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {raw}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    p.add_argument("--stack-file", help="stack description written by `make up` (default var/stack.json)")
    p.add_argument("--out", help="report folder (default loadtest/reports/<UTC timestamp>)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the scenarios and write a report (about 4 minutes by default)")
    run.add_argument("--duration", type=_positive(float), help="seconds per scenario (default: per-scenario)")
    run.add_argument("--rate", type=_positive(float), help="baseline rate and target rate for the advice (req/s)")
    run.add_argument("--scenarios", default="",
                     help="comma-separated: baseline,exhaustion,timeout,lock,signup (default: all), or the user "
                          "classes of --locustfile (default: all of them)")
    run.add_argument("--target", help="base URL of any app behind nginx + fcgipool (needs --locustfile)")
    run.add_argument("--locustfile", help="your own locust scenarios (contract: docs/loadtest.md)")
    run.add_argument("--status-url", help="the pool's status page (default: TARGET/pool-status)")
    run.add_argument("--request-log", help="the target pool's --request-log file, if readable here: exact "
                                           "occupancy and waits per request")
    run.add_argument("--access-log", help="the target nginx's JSON access log (log_format stack_json), likewise")
    run.add_argument("--smoke", action="store_true", help="a short CI run (under 60 s)")
    run.add_argument("--background-budget", type=_positive(float),
                     help="the pool's --background-timeout in seconds, if the stack does not report it")
    run.add_argument("--p99-ms", type=_positive(float), default=100.0, help="target p99 wait for the advice")
    run.add_argument("--memory-mb", type=_positive(float), default=2048.0, help="memory budget for the workers")

    sz = sub.add_parser("sizing", help="sweep worker counts and rates, compare the model with measurements")
    sz.add_argument("--target-rps", type=_positive(float), help="rate the pool must sustain (default: measured)")
    sz.add_argument("--p99-ms", type=_positive(float), default=100.0, help="target p99 wait in ms")
    sz.add_argument("--memory-mb", type=_positive(float), default=2048.0, help="memory budget for the workers")
    sz.add_argument("--workers", default="", help="comma-separated worker counts to sweep (default: around now)")
    sz.add_argument("--loads", default="0.5,0.65,0.8", help="offered load per worker count (fractions)")
    sz.add_argument("--step-seconds", type=_positive(float), default=12.0,
                    help="seconds per sweep point (slow points run up to 3x longer to collect 400 requests)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from pathlib import Path

    import locust  # noqa: F401 - patches the standard library for gevent before any socket exists

    from loadtest.stack import StackError
    from loadtest.userfile import LocustfileError

    out = Path(args.out) if args.out else None
    try:
        if args.command == "run":
            from loadtest import runner

            names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
            cfg = runner.RunConfig(
                scenarios=names or None, duration=args.duration, rate=args.rate, smoke=args.smoke,
                budget=args.background_budget, target_p99_ms=args.p99_ms, memory_mb=args.memory_mb, out_dir=out,
                stack_file=args.stack_file, target=args.target, locustfile=args.locustfile,
                status_url=args.status_url, request_log=args.request_log, access_log=args.access_log)
            folder, results = runner.run(cfg)
            print("\n".join(results.summary_lines()))
            print(f"report: {folder}/index.html")
            hard_failures = [c for c in results.checks if c.hard and c.ok is False]
            return 1 if hard_failures else 0
        from loadtest import sweep

        folder, sweep_results = sweep.run(args, out)
        print("\n".join(sweep_results.summary_lines()))
        print(f"report: {folder}/index.html")
        return 0
    except (StackError, LocustfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
