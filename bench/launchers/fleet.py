"""The fleet launcher: one `facebench run` per machine of a Ray cluster, never a measurement itself.

Each machine offers one `facebench_machine` slot; its task holds the whole slot, so no machine
runs two benchmarks at once, whichever fleet run submitted them. The task checks the machine
against the driver (facebench version, commit, lock), runs `facebench run --events` in a
subprocess (worker isolation, ladder, checks, repeats and resume as in a local run) that copies
its results file to the bucket after every point, and streams the run's events back to the
driver. Ray is imported here only, lazily; the layout and manifest are bench.fleet_store's.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from bench import env, fleet_store, store
from bench.errors import UserError
from bench.runtimes.registry import all_statuses

MACHINE_RESOURCE = "facebench_machine"
MACHINE_LABEL = "facebench-machine"
NODE_ID_LABEL = "ray.io/node-id"
ACCELERATOR_LABEL = "ray.io/accelerator-type"
IDENTITY = ("harness_version", "git_commit", "lock_sha256")  # what must match the driver's
STOP_GRACE_S = 60  # after Ctrl-C: how long a machine gets to save and upload what it finished


def import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the cluster
    try:
        import ray
    except ImportError:
        raise UserError("facebench fleet needs Ray: install the fleet extra (pip install --require-hashes "
                        "-r locks/fleet.txt, which make test does)") from None
    return ray


# --------------------------------------------------------------------------- the cluster


@dataclass
class Node:
    node_id: str
    labels: dict[str, str]

    @property
    def label(self) -> str | None:
        return self.labels.get(MACHINE_LABEL)


def connect(address: str | None):
    """Ray, connected to the cluster at `address` (else RAY_ADDRESS); one line when none answers there."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address == "auto":
        raise UserError("no Ray cluster given: pass --address HEAD:6379 or set RAY_ADDRESS "
                        "(start one with ray start --head, docs/fleet.md)")
    _reachable(address)
    ray = import_ray()
    stop_handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--address {address}: cannot join the Ray cluster there ({str(exc).splitlines()[0]}); "
                        "check the address and that ray start --head runs there") from None
    finally:
        signal.signal(signal.SIGTERM, stop_handler)  # ray.init installs sys.exit: SIGTERM must stop the fleet cleanly
    return ray


def _reachable(address: str) -> None:
    """Ray waits long for an absent head; a plain connect says at once."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise UserError(f"--address {address}: no Ray cluster answers there; start one with ray start --head "
                        "or pass the head's HOST:6379 (docs/fleet.md)") from None


def fleet_nodes(ray, selectors: dict[str, str], accelerator: str | None) -> list[Node]:
    """The live nodes that offer a facebench_machine slot and carry every label asked for."""
    wanted = {**selectors, **({ACCELERATOR_LABEL: accelerator} if accelerator else {})}
    offering = [Node(n["NodeID"], dict(n.get("Labels") or {})) for n in ray.nodes()
                if n.get("Alive") and n.get("Resources", {}).get(MACHINE_RESOURCE)]
    if not offering:
        raise UserError(f"no machine in the cluster offers the {MACHINE_RESOURCE} resource; on each machine run "
                        f"ray start --address=HEAD:6379 --resources='{{\"{MACHINE_RESOURCE}\": 1}}'")
    chosen = [n for n in offering if all(n.labels.get(k) == v for k, v in wanted.items())]
    if not chosen:
        asked = ",".join(f"{k}={v}" for k, v in wanted.items())
        raise UserError(f"none of the {len(offering)} machines carries {asked}; see their labels with ray status "
                        "-v or drop the selection")
    return chosen


# --------------------------------------------------------------------------- on the machine


@dataclass
class MachineTask:
    """What one machine is asked to run."""

    name: str
    target: str  # the machine's results file in the bucket
    suite_name: str
    suite_toml: str
    run_options: list[str]
    runtimes: list[str]  # the suite's, to tell a machine with nothing to run
    driver: dict[str, Any]
    allow_mixed: bool = False
    resume: bool = False  # continue the target file


def describe_machine() -> dict[str, Any]:
    """This machine's facebench, lock, runtimes and hardware, before anything runs."""
    machine = env.fingerprint()
    facts = {k: machine.get(k) for k in (*IDENTITY, "lock_file", "host", "machine_id", "cpu_model", "gpu_name")}
    facts["runtimes"] = [s.name for s in all_statuses() if s.available]
    return facts


def driver_identity() -> dict[str, Any]:
    machine = env.fingerprint()
    return {k: machine.get(k) for k in (*IDENTITY, "lock_file")}


def mismatch(driver: dict[str, Any], facts: dict[str, Any]) -> str | None:
    """How a machine's facebench or lock differs from the driver's, in words; None when they match."""
    names = {"harness_version": "facebench", "git_commit": "commit", "lock_sha256": "lock"}
    differ = [f"{names[k]} {_short(facts.get(k))} (driver {_short(driver.get(k))})"
              for k in IDENTITY if facts.get(k) != driver.get(k)]
    return ", ".join(differ) or None


def _short(value: Any) -> str:
    return "none" if value is None else str(value)[:12]


def run_machine(task: MachineTask) -> Iterator[dict[str, Any]]:
    """The Ray task on one machine: check it, then `facebench run` there, yielding its events."""
    facts = describe_machine()
    yield {"event": "facts", "facts": facts}
    differs = mismatch(task.driver, facts)
    if differs and not task.allow_mixed:
        yield {"event": fleet_store.LEFT_OUT, "reason": f"{differs}; install the driver's facebench with make bench "
                                                         "there, or pass --allow-mixed"}
        return
    if not set(task.runtimes) & set(facts["runtimes"]):
        yield {"event": fleet_store.NOTHING_TO_RUN,
               "reason": f"none of {', '.join(task.runtimes)} is available there"}
        return
    with tempfile.TemporaryDirectory(prefix="facebench-fleet-") as work:
        yield from _run_there(task, Path(work), differs)


def _run_there(task: MachineTask, work: Path, differs: str | None) -> Iterator[dict[str, Any]]:
    suite_path = work / f"{task.suite_name}.toml"
    suite_path.write_text(task.suite_toml)
    command = [sys.executable, "-m", "bench", "run", str(suite_path), *task.run_options, "--out", task.target,
               "--machine", task.name, "--events"]
    if differs:
        command += ["--fleet-mixed", differs]
    if task.resume:
        command += ["--resume", _fetch(task.target, work / f"{task.name}.parquet")]
    errors = work / "stderr.txt"
    with errors.open("w") as stderr:
        child = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                 preexec_fn=_die_with_parent)
    try:
        for line in child.stdout:
            event = fleet_store.parse_event(line.rstrip("\n"))
            if event:
                yield event
        code = child.wait()
    except KeyboardInterrupt:  # ray.cancel from the driver's Ctrl-C: the run saves and uploads what it finished
        code = _stop(child)
    finally:
        # However the task ends (cancelled, generator closed), the run never outlives it: a Ray worker
        # is reused, so the parent-death signal would not fire, and the slot would hold a second run.
        if child.poll() is None:
            _stop(child)
    yield {"event": "finished", "code": code, "error": _last_error(errors)}


def _stop(child: subprocess.Popen) -> int:
    """SIGINT (the run saves and uploads what it finished), then SIGKILL after STOP_GRACE_S."""
    child.send_signal(signal.SIGINT)
    try:
        return child.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


def _fetch(target: str, local: Path) -> str:
    """The machine's file from the bucket, to resume locally (its copy goes back after every point)."""
    store.write_rows(local, store.read_rows(target))
    return str(local)


def _die_with_parent() -> None:
    """The run stops (saving what it finished) when the Ray worker that started it dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _last_error(path: Path) -> str | None:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("facebench: error:")]
    return (errors or lines or [None])[-1]


# --------------------------------------------------------------------------- the driver


@dataclass
class FleetRun:
    """The driver's side: one task per machine, their events folded into the manifest."""

    ray: Any
    manifest: fleet_store.Manifest
    run_folder: str
    tasks: dict[str, tuple[MachineTask, Node]]
    on_change: Callable[[fleet_store.MachineEntry, dict[str, Any]], None] = lambda entry, event: None
    started: float = field(default_factory=time.monotonic)
    _pending: dict[Any, str] = field(default_factory=dict)  # generator -> machine

    def run(self) -> None:
        remote = self.ray.remote(run_machine)
        for name, (task, node) in self.tasks.items():
            options = remote.options(num_cpus=0, resources={MACHINE_RESOURCE: 1}, max_retries=0,
                                     label_selector={NODE_ID_LABEL: node.node_id})
            self._pending[options.remote(task)] = name
            self._update(name, {"event": fleet_store.QUEUED}, state=fleet_store.QUEUED)
        try:
            self._follow(deadline=None)
        except KeyboardInterrupt:
            self.stop()
            raise

    def stop(self) -> None:
        """Ctrl-C: every machine stops its run, which saves and uploads what it finished."""
        for generator in self._pending:
            self.ray.cancel(generator)
        try:
            self._follow(deadline=time.monotonic() + STOP_GRACE_S)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting; the bucket holds every point the machines finished
        for name in self._pending.values():
            self._update(name, {"event": fleet_store.STOPPED}, state=fleet_store.STOPPED)

    def _follow(self, deadline: float | None) -> None:
        while self._pending and (deadline is None or time.monotonic() < deadline):
            ready, _ = self.ray.wait(list(self._pending), num_returns=1, timeout=1.0)
            for generator in ready:
                self._next_event(generator)

    def _next_event(self, generator) -> None:
        name = self._pending[generator]
        try:
            event = self.ray.get(next(generator))
        except StopIteration:
            del self._pending[generator]
            if self.manifest.machines[name].state in (fleet_store.QUEUED, fleet_store.RUNNING):  # its last event lost
                self._update(name, {"event": fleet_store.STOPPED}, state=fleet_store.STOPPED)
            return
        except self.ray.exceptions.TaskCancelledError:
            del self._pending[generator]
            self._update(name, {"event": fleet_store.STOPPED}, state=fleet_store.STOPPED)
            return
        except self.ray.exceptions.RayError as exc:  # the node or its worker died
            del self._pending[generator]
            reason = f"lost: {str(exc).strip().splitlines()[0][:200]}"
            self._update(name, {"event": fleet_store.FAILED, "reason": reason}, state=fleet_store.FAILED, reason=reason)
            return
        self._apply(name, event)

    def _apply(self, name: str, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "facts":
            self._update(name, event, state=fleet_store.RUNNING, facts=event["facts"], started_utc=fleet_store.utc_now())
        elif kind in (fleet_store.LEFT_OUT, fleet_store.NOTHING_TO_RUN):
            self._update(name, event, state=kind, reason=event["reason"])
        elif kind == "planned":
            self._update(name, event, points_planned=event["planned"])
        elif kind == "point":
            entry = self.manifest.machines[name]
            first = entry.first_point_s if entry.first_point_s is not None else time.monotonic() - self.started
            self._update(name, event, points_done=event["done"], points_planned=event["planned"],
                         current=event["point"], last_fps=event.get("fps"), first_point_s=round(first, 1))
        elif kind == "finished":
            self._finished(name, event)

    def _finished(self, name: str, event: dict[str, Any]) -> None:
        code = event["code"]
        if code == 0:
            state, reason = fleet_store.DONE, None
        elif code == 130:
            state, reason = fleet_store.STOPPED, "interrupted"
        else:
            state, reason = fleet_store.FAILED, event.get("error") or f"facebench run exited with status {code}"
        self._update(name, event, state=state, reason=reason, current=None, finished_utc=fleet_store.utc_now())

    def _update(self, name: str, event: dict[str, Any], **changes) -> None:
        entry = self.manifest.machines[name]
        for key, value in changes.items():
            setattr(entry, key, value)
        if changes.get("state") in (*fleet_store.FINISHED, fleet_store.LEFT_OUT, fleet_store.FAILED, fleet_store.STOPPED):
            entry.finished_utc = entry.finished_utc or fleet_store.utc_now()
        try:
            fleet_store.write_manifest(self.run_folder, self.manifest)
        except UserError:
            pass  # the bucket went away for a moment: the next event writes the manifest again
        self.on_change(entry, event)
