"""`facebench fleet` (one suite over every machine of a Ray cluster) and `facebench gather`
(one table and one comparison from the machines' files under a prefix, from any scheduler)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.console import console
from bench.errors import UserError

EXIT_MACHINES_FAILED = 3  # some machines failed, were left out or stopped: their rows are missing
# `facebench run` options a fleet passes to every machine as given: flag and value type (bool: a switch).
RUN_OPTIONS = (("--models", str), ("--runtimes", str), ("--precisions", str), ("--batches", str), ("--input", str),
               ("--repeats", int), ("--concurrency", str), ("--full-ladder", bool), ("--latency-budget", str),
               ("--max-worker-memory", float))


def register(subparsers) -> None:
    fleet = subparsers.add_parser("fleet", help="run a suite on every machine of a Ray cluster, results in one bucket")
    fleet.add_argument("suite", nargs="?", help="TOML suite (not with --resume, which takes the run's own)")
    fleet.add_argument("--address", help="the Ray cluster's head, HOST:6379 (default: RAY_ADDRESS)")
    fleet.add_argument("--out", metavar="PREFIX", help="s3://BUCKET/PREFIX, gs://... or file://...: each machine "
                                                     "writes PREFIX/RUN_ID/MACHINE.parquet after every point")
    fleet.add_argument("--machines", metavar="LABEL=VALUE,...", help="only the nodes carrying these labels, "
                                                                    "e.g. facebench-machine=a100-1")
    fleet.add_argument("--accelerator", metavar="TYPE", help="only nodes of this ray.io/accelerator-type, e.g. H100")
    fleet.add_argument("--allow-mixed", action="store_true",
                       help="also run machines whose facebench or lock differs from this one's (rows say how)")
    fleet.add_argument("--resume", metavar="PREFIX/RUN_ID",
                       help="measure only what each machine of that fleet run is missing")
    _add_run_options(fleet, help_text="as facebench run %s")
    fleet.set_defaults(handler=cmd_fleet)

    gather = subparsers.add_parser("gather", help="verify and merge a fleet's files (PREFIX/RUN_ID) and compare "
                                                  "the machines")
    gather.add_argument("run_folder", metavar="PREFIX/RUN_ID")
    gather.add_argument("--out", help="write the merged rows to this Parquet file (or URI)")
    gather.add_argument("--latency-budget", metavar="[pXX:]MS",
                        help="each machine's best configuration whose latency percentile meets it")
    gather.set_defaults(handler=cmd_gather)


# --------------------------------------------------------------------------- fleet


def cmd_fleet(args) -> int:
    import time

    from bench import fleet_store, store
    from bench.launchers import fleet

    began = time.monotonic()  # each machine's first_point_s counts from here
    manifest, run_folder = _resumed(args) if args.resume else _new_fleet(args)
    ray = fleet.connect(args.address)
    try:
        nodes = fleet.fleet_nodes(ray, _selectors(args.machines), args.accelerator)
        tasks = _tasks(manifest, run_folder, nodes, resume=bool(args.resume))
        if not args.resume:  # only now: a run folder with no cluster or no machine behind it would mislead
            store.ensure_folder(run_folder)
        fleet_store.write_manifest(run_folder, manifest)  # the machines asked for, all queued; unwritable: one line
        console.print(f"facebench fleet: {len(tasks)} machines -> {run_folder}", markup=False, soft_wrap=True)
        driver = fleet.FleetRun(ray, manifest, run_folder, tasks, started=began)
        interrupted = _follow(driver)
    finally:
        ray.shutdown()
    return _summary(manifest, run_folder, interrupted)


def _new_fleet(args):
    from bench import fleet_store, runs, store
    from bench.launchers import fleet
    from bench.runtimes.registry import check_names

    if not args.suite:
        raise UserError("facebench fleet needs a SUITE (or --resume PREFIX/RUN_ID)")
    if not args.out:
        raise UserError("facebench fleet needs --out s3://BUCKET/PREFIX (or gs://, file://) that every machine can write")
    if not store.is_uri(args.out):
        raise UserError(f"--out {args.out}: give a URI every machine can reach (s3://, gs://, or file:// on a shared "
                        "disk)")
    suite = runs.suite_for_run(args.suite, args)  # a suite error is one line before any machine starts
    check_names(suite.runtimes)
    _absolute_model_paths(suite)
    manifest = fleet_store.Manifest(
        run_id=fleet_store.new_run_id(), suite_name=Path(args.suite).stem, suite_toml=Path(args.suite).read_text(),
        run_options=_run_options(args), driver=fleet.driver_identity(),
        selection={"machines": args.machines, "accelerator": args.accelerator}, runtimes=suite.runtimes,
        allow_mixed=args.allow_mixed)
    return manifest, store.join_location(args.out, manifest.run_id)


def _absolute_model_paths(suite) -> None:
    """Each machine runs the suite from a folder of its own: a relative model path would name another file."""
    relative = [ref.path for ref in suite.models if ref.path and not Path(ref.path).is_absolute()]
    if relative:
        raise UserError(f"model path {relative[0]} is relative: a fleet's machines need absolute paths that exist on "
                        "every machine (e.g. /models/det_500m.onnx)")


def _resumed(args):
    from bench import fleet_store, runs

    given = [flag for flag, _ in RUN_OPTIONS if getattr(args, flag[2:].replace("-", "_")) not in (None, False)]
    if args.suite or args.out or given:
        what = "SUITE" if args.suite else ("--out" if args.out else given[0])
        raise UserError(f"--resume takes the suite, options and bucket of the fleet run it continues; drop {what}")
    run_folder = args.resume.rstrip("/")
    manifest = fleet_store.read_manifest(run_folder)
    manifest.allow_mixed = manifest.allow_mixed or args.allow_mixed  # machines left out may be let in now
    if not manifest.unfinished():
        raise UserError(f"{run_folder}: every machine finished; nothing to resume (facebench gather {run_folder})")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="facebench-fleet-suite-") as folder:
        suite_path = Path(folder) / f"{manifest.suite_name}.toml"
        suite_path.write_text(manifest.suite_toml)
        runs.suite_for_run(str(suite_path), _parsed_run_options(manifest.run_options))  # still valid here
    return manifest, run_folder




def _add_run_options(parser, help_text: str | None = None) -> None:
    for flag, kind in RUN_OPTIONS:
        helps = {"help": help_text % flag} if help_text else {}
        if kind is bool:
            parser.add_argument(flag, action="store_true", **helps)
        else:
            parser.add_argument(flag, type=kind, **helps)


def _run_options(args) -> list[str]:
    """The run options given, as `facebench run` arguments for every machine."""
    options = []
    for flag, kind in RUN_OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if kind is bool and value:
            options.append(flag)
        elif kind is not bool and value is not None:
            options += [flag, str(value)]
    return options


def _parsed_run_options(options: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _add_run_options(parser)
    return parser.parse_args(options)


def _selectors(text: str | None) -> dict[str, str]:
    selectors = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        if not (sep and key and value):
            raise UserError(f"--machines {text}: give LABEL=VALUE pairs, e.g. facebench-machine=a100-1")
        selectors[key] = value
    return selectors


def _tasks(manifest, run_folder: str, nodes, resume: bool) -> dict:
    """One task per machine: by name on resume (a replacement node takes over a lost one's name)."""
    from bench import fleet_store
    from bench.launchers import fleet

    facts = _node_facts(nodes) if any(n.label is None for n in nodes) else {}
    by_name = {}
    for node in nodes:
        name = fleet_store.machine_name(node.label, facts.get(node.node_id, {}), node.node_id)
        if name in by_name:
            raise UserError(f"nodes {by_name[name].node_id[:12]} and {node.node_id[:12]} both name themselves {name}: "
                            f"give each machine its own {fleet.MACHINE_LABEL} label (ray start --labels)")
        by_name[name] = node
    if resume:
        wanted = [m.name for m in manifest.unfinished()]
        absent = [name for name in wanted if name not in by_name]
        if absent:
            raise UserError(f"no live node for machine {', '.join(absent)}; start one with ray start "
                            f"--labels {fleet.MACHINE_LABEL}={absent[0]} (and the facebench_machine resource)")
        by_name = {name: by_name[name] for name in wanted}
    tasks = {}
    for name, node in by_name.items():
        target = fleet_store.machine_location(run_folder, name)
        before = manifest.machines.get(name) or fleet_store.MachineEntry(name)
        manifest.machines[name] = fleet_store.MachineEntry(name, node_id=node.node_id, points_done=before.points_done)
        tasks[name] = (fleet.MachineTask(
            name=name, target=target, suite_name=manifest.suite_name, suite_toml=manifest.suite_toml,
            run_options=manifest.run_options, runtimes=manifest.runtimes, driver=manifest.driver,
            allow_mixed=manifest.allow_mixed, resume=resume and fleet_store.exists(target)), node)
    return tasks


def _node_facts(nodes) -> dict:
    """Hardware of the nodes without a facebench-machine label, for their names (a tiny task each)."""
    from bench.launchers import fleet

    ray = fleet.import_ray()
    describe = ray.remote(fleet.describe_machine)
    refs = {n.node_id: describe.options(num_cpus=0, label_selector={fleet.NODE_ID_LABEL: n.node_id}).remote()
            for n in nodes if n.label is None}
    facts = {}
    for node_id, ref in refs.items():
        try:
            facts[node_id] = ray.get(ref)
        except Exception:  # a node that cannot describe itself is named by its id; its task says what fails
            facts[node_id] = {}
    return facts


class FleetProgress:
    """One row per machine, live on a terminal; elsewhere one plain line per event."""

    COLUMNS = ("machine", "state", "points", "current point", "last frames/s")

    def __init__(self, manifest):
        self.manifest = manifest
        self._live = None

    def __enter__(self):
        if console.is_terminal:
            from rich.live import Live

            self._live = Live(self._table(), console=console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live:
            self._live.update(self._table())
            self._live.__exit__(*exc)

    def changed(self, entry, event) -> None:
        if self._live:
            self._live.update(self._table())
        else:
            console.print(self._line(entry, event), markup=False, highlight=False, soft_wrap=True)

    def _table(self):
        from rich.table import Table

        from bench.report.text import fmt_number

        table = Table(title=f"fleet {self.manifest.run_id}")
        for column in self.COLUMNS:
            table.add_column(column)
        for m in self.manifest.machines.values():
            points = f"{m.points_done}/{m.points_planned if m.points_planned is not None else '?'}"
            state = m.state + (f": {m.reason}" if m.reason else "")
            table.add_row(m.name, state, points, m.current or "", fmt_number(m.last_fps))
        return table

    @staticmethod
    def _line(entry, event) -> str:
        kind = event.get("event")
        if kind == "point":
            fps = f" {event['fps']:.1f} fps" if event.get("fps") is not None else ""
            return f"{entry.name}: [{event['done']}/{event['planned']}] {event['point']}: {event['status']}{fps}"
        if kind == "facts":
            facts = event["facts"]
            return (f"{entry.name}: facebench {facts.get('harness_version')} {facts.get('git_commit') or ''}, lock "
                    f"{(facts.get('lock_sha256') or 'none')[:12]}, runtimes {', '.join(facts['runtimes'])}")
        if kind == "planned":
            return f"{entry.name}: {event['planned']} points planned"
        return f"{entry.name}: {entry.state}" + (f" ({entry.reason})" if entry.reason else "")


def _follow(driver) -> bool:
    """Run the machines with a live table (terminal) or one line per event; True when interrupted."""
    progress = FleetProgress(driver.manifest)
    driver.on_change = progress.changed
    try:
        with progress:
            driver.run()
    except KeyboardInterrupt:
        return True
    return False


def _summary(manifest, run_folder: str, interrupted: bool) -> int:
    from bench import fleet_store
    from bench.exits import EXIT_INTERRUPTED

    missing = [m for m in manifest.machines.values() if m.state != fleet_store.DONE]  # every machine, resumed or not
    for entry in missing:
        print(f"facebench: {entry.name}: {entry.state}" + (f" ({entry.reason})" if entry.reason else ""),
              file=sys.stderr)
    if interrupted or any(m.state in (fleet_store.FAILED, fleet_store.STOPPED, fleet_store.LEFT_OUT) for m in missing):
        mixed = " [--allow-mixed]" if any(m.state == fleet_store.LEFT_OUT for m in missing) else ""
        console.print(f"continue with: facebench fleet --resume {run_folder}{mixed}", markup=False, soft_wrap=True)
    console.print(f"compare with: facebench gather {run_folder}", markup=False, soft_wrap=True)
    if interrupted:
        return EXIT_INTERRUPTED
    if all(m.state == fleet_store.LEFT_OUT for m in manifest.machines.values()):
        raise UserError("every machine was left out (see the lines above); install the driver's facebench on them, "
                        f"or let them in with facebench fleet --resume {run_folder} --allow-mixed")
    failed = [m for m in missing if m.state != fleet_store.NOTHING_TO_RUN]  # nothing to run is reported, not failed
    return EXIT_MACHINES_FAILED if failed else 0


# --------------------------------------------------------------------------- gather


def cmd_gather(args) -> int:
    from bench import fleet_store, store
    from bench.report.comparison_tables import print_comparison
    from bench.report.compare import build_comparison, load_results
    from bench.report.fleet import print_fleet_answers
    from bench.report.model import parse_budget

    budget = parse_budget(args.latency_budget)
    gathered = fleet_store.gather(args.run_folder)
    for note in gathered.notes:
        print(f"facebench: note: {note}", file=sys.stderr)
    if args.out:
        store.write_output(args.out, gathered.rows)
        console.print(f"{len(gathered.rows)} rows of {len(gathered.files)} machines -> {args.out}", markup=False,
                      soft_wrap=True)
    print_fleet_answers(gathered.rows, budget, console)
    print_comparison(build_comparison(load_results(list(gathered.files.values())), by="machine"), console)
    return 0
