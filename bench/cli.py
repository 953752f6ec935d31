"""Command line: `facebench SUBCOMMAND ...` (also `python -m bench`): assembles bench/commands/.

Each command module has register(subparsers) and keeps the imports that load numpy, onnx, pyarrow or
pandas inside its handlers, so `facebench --help` stays fast. User errors become one line on stderr
and exit status 2, never a traceback. What happens to a run's results file is bench.runs.
"""
from __future__ import annotations

import argparse
import signal
import sys

from bench.commands import batch, compare, fleet, models, pipeline, run, runtimes, show
from bench.errors import UserError
from bench.exits import EXIT_INTERRUPTED, EXIT_USER_ERROR, ignore_stop_signals

COMMANDS = (run, runtimes, show, models, batch, compare, pipeline, fleet)  # in the order `--help` lists them


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.handler(args) or 0
    except UserError as exc:
        print(f"facebench: error: {exc}", file=sys.stderr)  # one line, never wrapped
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside a sweep (which handles its own)
        ignore_stop_signals()
        print("facebench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _raise_interrupt(signum, frame):
    ignore_stop_signals()
    raise KeyboardInterrupt(f"signal {signum}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facebench", description="Throughput benchmarks for InsightFace models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
