"""A fleet's results without any scheduler: the layout under one prefix, the manifest, the
machines' progress events and the gathering of their files.

    PREFIX/RUN_ID/MACHINE.parquet   one machine's points (facebench run --machine MACHINE --out ...)
    PREFIX/RUN_ID/fleet.json        the manifest: suite, options, machines asked for and their states

Ray (bench/launchers/fleet.py) is one way to fill it; a Slurm array or a Kubernetes indexed Job
running `facebench run --out PREFIX/RUN_ID/` on each machine is another. Nothing here imports Ray.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import store
from bench.errors import UserError

MANIFEST_NAME = "fleet.json"
EVENT_PREFIX = "facebench-event "  # a `facebench run --events` line the fleet's driver reads
# A machine's states, in the manifest and the driver's table.
QUEUED, RUNNING, DONE, FAILED, STOPPED = "queued", "running", "done", "failed", "stopped"
LEFT_OUT, NOTHING_TO_RUN = "left out", "nothing to run"
FINISHED = (DONE, NOTHING_TO_RUN)  # nothing left to measure there (a machine left out may be resumed)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    import uuid

    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def machine_location(run_folder: str, machine: str) -> str:
    return store.join_location(run_folder, f"{machine}.parquet")


def manifest_location(run_folder: str) -> str:
    return store.join_location(run_folder, MANIFEST_NAME)


def machine_name(label: str | None, facts: dict[str, Any], node_id: str) -> str:
    """The node's facebench-machine label, else its hardware and node id (two machines of one model stay apart)."""
    if label:
        return _slug(label)
    hardware = facts.get("gpu_name") or facts.get("cpu_model") or "machine"
    return f"{_slug(str(hardware))[:32]}-{node_id[:8]}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "machine"


# --------------------------------------------------------------------------- the manifest


@dataclass
class MachineEntry:
    """One machine of the fleet as the manifest records it."""

    name: str
    node_id: str | None = None
    state: str = QUEUED
    reason: str | None = None  # why failed, left out or with nothing to run
    points_done: int = 0
    points_planned: int | None = None
    current: str | None = None  # the point being measured
    last_fps: float | None = None
    first_point_s: float | None = None  # from the fleet's start to this machine's first point
    started_utc: str | None = None
    finished_utc: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # version, commit, lock, runtimes, hardware


@dataclass
class Manifest:
    run_id: str
    suite_name: str
    suite_toml: str  # the suite's text: every machine runs exactly this
    run_options: list[str]  # the `facebench run` options every machine gets (--models, --batches, ...)
    driver: dict[str, Any]  # the driver's facebench version, commit and lock
    selection: dict[str, Any]  # --machines / --accelerator as asked
    runtimes: list[str] = field(default_factory=list)  # the suite's, to tell a machine with nothing to run
    allow_mixed: bool = False
    created_utc: str = field(default_factory=utc_now)
    machines: dict[str, MachineEntry] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        machines = {name: MachineEntry(**entry) for name, entry in data.pop("machines", {}).items()}
        return cls(**data, machines=machines)

    def unfinished(self) -> list[MachineEntry]:
        return [m for m in self.machines.values() if m.state not in FINISHED]


def write_manifest(run_folder: str, manifest: Manifest) -> None:
    store.write_bytes(manifest_location(run_folder), manifest.to_json().encode())


def exists(location: str) -> bool:
    if not store.is_uri(location):
        return Path(location).is_file()
    import pyarrow.fs as pafs

    fs, path = store.filesystem_for(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_manifest(run_folder: str) -> Manifest:
    location = manifest_location(run_folder)
    try:
        text = _read_text(location)
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{run_folder}: no {MANIFEST_NAME} there; pass the PREFIX/RUN_ID a facebench fleet run "
                        "printed") from None
    except OSError as exc:
        raise UserError(f"{location}: cannot read it ({exc.strerror or exc})") from None
    try:
        return Manifest.from_json(text)
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{location}: not a facebench fleet manifest ({exc}); pass the PREFIX/RUN_ID a facebench "
                        "fleet run printed") from None


def _read_text(location: str) -> str:
    if not store.is_uri(location):
        return Path(location).read_text()
    fs, path = store.filesystem_for(location)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode()
    except OSError as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            raise FileNotFoundError(location) from None
        raise UserError(f"{location}: cannot read it ({str(exc).splitlines()[0]})") from None


# --------------------------------------------------------------------------- a machine's events


def point_events(runner, planned, total: int) -> None:
    """`facebench run --events`: one line per event on stdout for the fleet's driver to read."""
    def emit(event: dict[str, Any]) -> None:
        print(EVENT_PREFIX + json.dumps(event), flush=True)

    done = 0

    def on_row(row, repeat):
        nonlocal done
        done += 1
        point = f"{row['model']} {row['runtime']} {row['precision']} b{row['batch']} c{row.get('concurrency') or 1}"
        emit({"event": "point", "done": done, "planned": total, "point": point, "status": row["status"],
              "fps": row.get("fps"), "reason": row.get("reason")})
    emit({"event": "planned", "planned": total})
    runner.on_row = on_row
    runner.run(planned)


def parse_event(line: str) -> dict[str, Any] | None:
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        return json.loads(line[len(EVENT_PREFIX):])
    except ValueError:
        return None


# --------------------------------------------------------------------------- gathering


@dataclass
class Gathered:
    rows: list[dict[str, Any]]  # every machine's rows, the machine column filled
    files: dict[str, str]  # machine -> its file
    notes: list[str]  # what the manifest says is missing


def gather(run_folder: str) -> Gathered:
    """Verify and merge the machines' files under `run_folder` (from any scheduler). Raises UserError."""
    files: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for location in store.find_result_files([run_folder]):
        table, check = store.read_table(location)
        if check.checksum_ok is False:
            raise UserError(f"{check.note}; restore it or move it out of {run_folder}")
        machine = _file_machine(location, table.column("machine").to_pylist())
        if machine in files:
            raise UserError(f"{location} and {files[machine]} both hold machine {machine}; keep one of them")
        files[machine] = location
        rows += [{**row, "machine": machine} for row in table.to_pylist()]
    return Gathered(rows, files, _manifest_notes(run_folder, files))


def _file_machine(location: str, names: list[str | None]) -> str:
    """The machine a file holds: its machine column (set by --machine), else the file's name."""
    named = set(filter(None, names))
    if len(named) > 1:
        raise UserError(f"{location} holds several machines ({', '.join(sorted(named))}); a fleet file holds one")
    return named.pop() if named else Path(store.location_name(location)).stem


def _manifest_notes(run_folder: str, files: dict[str, str]) -> list[str]:
    try:
        manifest = read_manifest(run_folder)
    except UserError:
        return []  # no manifest: a Ray-less fleet (Slurm array, indexed Job)
    notes = []
    for entry in manifest.machines.values():
        if entry.state != DONE:
            held = "its finished points are here" if entry.name in files else "no points"
            notes.append(f"{entry.name}: {entry.state}" + (f" ({entry.reason})" if entry.reason else "") + f"; {held}")
    return notes
