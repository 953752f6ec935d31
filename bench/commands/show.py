"""`facebench show`: the tables of existing results files."""
from __future__ import annotations

import sys

from bench.console import console


def register(sub) -> None:
    show = sub.add_parser("show", help="print the tables of existing results files")
    show.add_argument("files", nargs="+")
    show.add_argument("--latency-budget", metavar="[pXX:]MS",
                      help="add the best configuration under this latency (30ms: p99; p95:30ms)")
    show.set_defaults(handler=cmd_show)


def cmd_show(args) -> int:
    from bench import store
    from bench.report.model import build_report_model, parse_budget
    from bench.report.tables import print_tables

    budget = parse_budget(args.latency_budget)  # a bad budget is one line before any file is read
    rows = []
    for path in args.files:
        table, check = store.read_table(path)
        if check.note:
            print(f"facebench: warning: {check.note}", file=sys.stderr)  # one line, never wrapped
        rows += table.to_pylist()
    if not rows:
        console.print("no points in these files")
        return 0
    print_tables(build_report_model(rows, budget, ["machine_id", "machine"]), console)  # a fleet's machines apart
    return 0
