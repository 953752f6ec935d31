"""The result store: the one owner of the Parquet schema.

One row per point. Every write rewrites the whole file atomically (temporary file in
the same folder, fsync, rename), so a reader never sees half a file and an interrupted
run keeps every finished point. docs/results-schema.md documents the columns.
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import posixpath
import re
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bench.errors import UserError

SCHEMA_VERSION = 1

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()

# Ordered: identity, machine, model, runtime, point, cold start, steady state, checks, telemetry.
COLUMNS: dict[str, pa.DataType] = {
    "schema_version": _I, "run_id": _S, "timestamp_utc": _S, "suite": _S, "kind": _S,
    "harness_version": _S, "git_commit": _S,
    "host": _S, "machine_id": _S, "cpu_model": _S, "cpu_cores": _I, "cpu_threads": _I,
    "memory_gb": _F, "os": _S, "python_version": _S, "gpu_name": _S, "gpu_driver": _S,
    "cuda_version": _S, "packages_json": _S,
    "model": _S, "model_source": _S, "model_path": _S, "model_sha256": _S, "family": _S,
    "input_name": _S, "input_shape": _S, "input_size": _I, "params": _I,
    "macs_per_frame": _I, "flops_per_frame": _I,
    "runtime": _S, "device": _S, "runtime_version": _S, "runtime_options_json": _S,
    "threads": _I, "mode": _S, "timer": _S,
    "precision": _S, "precision_effective": _S, "batch": _I,
    "process_start_ms": _F, "cold_read_ms": _F, "cold_compile_ms": _F,
    "cold_first_infer_ms": _F, "cold_total_ms": _F, "cold_warm_cache_total_ms": _F,
    "warmup_iterations": _I, "warmup_s": _F,
    "iterations": _I, "frames": _I, "windows": _I, "wall_s": _F,
    "fps": _F, "ms_per_frame": _F, "fps_compute": _F, "window_spread_pct": _F,
    "lat_mean_ms": _F, "lat_p50_ms": _F, "lat_p90_ms": _F, "lat_p95_ms": _F,
    "lat_p99_ms": _F, "lat_min_ms": _F, "lat_max_ms": _F, "lat_cov_pct": _F,
    "h2d_ms": _F, "compute_ms": _F, "d2h_ms": _F, "enqueue_ms": _F,
    "gflops_achieved": _F, "verdict": _S, "warnings": _S,
    "contamination_checked": _B, "contamination_passed": _B,
    "contamination_max_abs": _F, "contamination_max_rel": _F,
    "parity_checked": _B, "parity_passed": _B, "parity_summary": _S, "parity_json": _S,
    "cpu_percent": _F, "peak_rss_mb": _F,
    "gpu_util_mean": _F, "gpu_mem_util_mean": _F, "gpu_mem_peak_mb": _F,
    "gpu_power_mean_w": _F, "gpu_energy_mj_per_frame": _F, "gpu_sm_clock_mean_mhz": _F,
    "gpu_sm_clock_min_mhz": _F, "gpu_temp_max_c": _F, "gpu_clock_events": _S,
    "frames_total": _I, "faces_total": _I, "faces_per_s": _F, "stages_json": _S,
    "status": _S, "reason": _S,
}
SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype in COLUMNS.items()])
POINT_KEY = ("model_sha256", "model", "runtime", "precision", "batch", "kind")
STATUSES = ("ok", "skipped", "failed")


def rows_checksum(table: pa.Table) -> str:
    """sha256 over the rows as canonical JSON: detects edits and damage to a file."""
    digest = hashlib.sha256()
    for row in table.to_pylist():
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def to_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    rows = list(rows)
    for row in rows:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"columns not in the results schema: {sorted(unknown)}")
    columns = {name: [row.get(name) for row in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write all rows to `path` (local path or URI) atomically, with schema version and checksum in the metadata."""
    table = to_table(rows)
    metadata = {
        b"facebench.schema_version": str(SCHEMA_VERSION).encode(),
        b"facebench.rows_sha256": rows_checksum(table).encode(),
    }
    table = table.replace_schema_metadata(metadata)
    _atomic_write(path, lambda handle: pq.write_table(table, handle))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a local path or URI atomically (plots, reports)."""
    _atomic_write(path, lambda handle: handle.write(data))


def _atomic_write(location: str | Path, write: Callable[[Any], Any]) -> None:
    if is_uri(location):
        _atomic_write_remote(str(location), write)
    else:
        _atomic_write_local(Path(location), write)


def _atomic_write_local(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_remote(uri: str, write: Callable[[Any], Any]) -> None:
    """Write to a temporary key beside the target, then move it: readers never see half an object."""
    fs, path = filesystem_for(uri)
    parent, name = posixpath.split(path)
    tmp = posixpath.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with fs.open_output_stream(tmp) as stream:
            write(stream)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def ensure_folder(location: str | Path) -> None:
    """Create a local folder or a URI folder (a no-op on object stores that have none)."""
    if is_uri(location):
        fs, path = filesystem_for(str(location))
        fs.create_dir(path, recursive=True)
    else:
        Path(location).mkdir(parents=True, exist_ok=True)


def ensure_parent(location: str | Path) -> None:
    """Create the folder that will hold `location`."""
    if is_uri(location):
        fs, path = filesystem_for(str(location))
        fs.create_dir(posixpath.dirname(path), recursive=True)
    else:
        Path(location).parent.mkdir(parents=True, exist_ok=True)


# --- locations: local paths and URIs pyarrow's filesystem layer understands ---

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB_CHARS = ("*", "?", "[")


def is_uri(location: str | Path) -> bool:
    return isinstance(location, str) and bool(_URI_RE.match(location))


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a URI such as file:///data/x.parquet or s3://bucket/key."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, ValueError) as exc:
        raise UserError(f"{uri}: cannot open this location ({_first_line(exc)}); "
                        "use a local path or a file://, s3:// or gs:// URI with credentials set") from None


def join_location(folder: str | Path, name: str) -> str:
    """`folder`/`name` for a local folder or a URI folder (keeping the URI's query, e.g. ?region=)."""
    if not is_uri(folder):
        return str(Path(folder) / name)
    parts = urlsplit(str(folder))
    return urlunsplit((parts.scheme, parts.netloc, posixpath.join(parts.path or "/", name), parts.query, ""))


def sibling_location(location: str | Path, name: str) -> str:
    """`name` in the folder that holds `location` (a local path or URI)."""
    if not is_uri(location):
        return str(Path(location).parent / name)
    parts = urlsplit(str(location))
    return urlunsplit((parts.scheme, parts.netloc, posixpath.join(posixpath.dirname(parts.path), name), parts.query, ""))


def location_name(location: str | Path) -> str:
    """The file name of a local path or URI."""
    if is_uri(location):
        return posixpath.basename(urlsplit(str(location)).path.rstrip("/"))
    return Path(location).name


def _uri_for(base_uri: str, fs_path: str) -> str:
    """A URI naming `fs_path` on the filesystem of `base_uri` (path as FileSystem.from_uri returns it)."""
    parts = urlsplit(base_uri)
    if fs_path.startswith("/"):  # file://, hdfs://host/...: the path is absolute, authority stays
        netloc, path = parts.netloc, fs_path
    else:  # s3://, gs://: the path starts with the bucket
        netloc, _, rest = fs_path.partition("/")
        path = "/" + rest
    return urlunsplit((parts.scheme, netloc, quote(path), parts.query, ""))


def find_result_files(inputs: list[str]) -> list[str]:
    """Expand files, folders (recursively: every *.parquet), globs and URIs into result files, in order.

    Raises UserError for an input that names nothing, so a typo never shrinks a comparison silently.
    """
    found: dict[str, str] = {}  # identity -> location as first given
    for item in inputs:
        for location in (_expand_uri(item) if is_uri(item) else _expand_local(item)):
            found.setdefault(location_identity(location), location)
    return list(found.values())


def location_identity(location: str | Path) -> str:
    """One key per file however it is named: a local path and its file:// URI are the same file."""
    if is_uri(location):
        parts = urlsplit(str(location))
        if parts.scheme != "file":
            return str(location)
        location = unquote(parts.path)
    return os.path.realpath(location)


def _is_result_name(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith(".")  # dot files: temporaries of atomic writes


def _expand_local(item: str) -> list[str]:
    path = Path(item).expanduser()
    if path.is_dir():
        files = sorted(str(f) for f in path.rglob("*.parquet") if _is_result_name(f.name))
        if not files:
            raise UserError(f"{item}: folder holds no .parquet results files; pass the folder facebench run wrote to")
        return files
    if path.exists():
        return [str(path)]
    if any(ch in item for ch in _GLOB_CHARS):
        matches = sorted(glob.glob(str(path), recursive=True))
        files = [f for m in matches for f in (_expand_local(m) if Path(m).is_dir() else [m])]
        if not files:
            raise UserError(f"{item}: pattern matches no files; check the path or quote the pattern")
        return files
    raise UserError(f"{item}: no such file or folder; pass results files, folders or globs")


def _expand_uri(uri: str) -> list[str]:
    fs, path = filesystem_for(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [uri]
    if info.type == pafs.FileType.Directory:
        files = _list_results(fs, path)
        if not files:
            raise UserError(f"{uri}: folder holds no .parquet results files; pass the folder facebench run wrote to")
        return [_uri_for(uri, f) for f in files]
    if any(ch in path for ch in _GLOB_CHARS):
        base = path[:min(path.index(ch) for ch in _GLOB_CHARS if ch in path)].rsplit("/", 1)[0]
        matches = [f for f in _list_results(fs, base or "/", any_name=True) if fnmatch.fnmatchcase(f, path)]
        if not matches:
            raise UserError(f"{uri}: pattern matches no files; check the URI")
        return [_uri_for(uri, f) for f in matches]
    raise UserError(f"{uri}: no such file or folder; pass results files, folders or globs")


def _list_results(fs: pafs.FileSystem, folder: str, any_name: bool = False) -> list[str]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise UserError(f"{folder}: cannot list this folder ({_first_line(exc)})") from None
    return sorted(i.path for i in infos if i.type == pafs.FileType.File
                  and (any_name or _is_result_name(posixpath.basename(i.path))))


@dataclass
class FileCheck:
    path: str
    schema_version: int | None
    checksum_ok: bool | None  # None when the file carries no checksum

    @property
    def note(self) -> str:
        if self.checksum_ok is False:
            return f"{self.path}: rows do not match the recorded checksum (the file was edited or damaged)"
        return ""


def read_table(path: str | Path) -> tuple[pa.Table, FileCheck]:
    """Read one results file (local path or URI), verifying schema version and checksum. Raises UserError.

    Older schema versions are upgraded (missing columns become nulls); newer ones are rejected.
    """
    try:
        if is_uri(path):
            fs, inner = filesystem_for(str(path))
            table = pq.read_table(inner, filesystem=fs)
        else:
            table = pq.read_table(str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: no such results file; pass a Parquet file written by facebench run") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({_first_line(exc)}); pass a file written by facebench run") from None
    meta = table.schema.metadata or {}
    version = meta.get(b"facebench.schema_version")
    if version is None or "model" not in table.column_names:
        raise UserError(f"{path}: a Parquet file but not a facebench results file (no schema version); pass a file written by facebench run")
    try:
        version = int(version)
    except ValueError:
        version = 0
    if version < 1:
        raise UserError(f"{path}: unknown results schema version {meta[b'facebench.schema_version']!r}; "
                        "pass a file written by facebench run")
    if version > SCHEMA_VERSION:
        raise UserError(f"{path}: results schema v{version} is newer than this facebench (v{SCHEMA_VERSION}); upgrade facebench")
    recorded = meta.get(b"facebench.rows_sha256")
    table = _conform(table)
    ok = None if recorded is None else rows_checksum(table) == recorded.decode()
    return table, FileCheck(str(path), version, ok)


def _conform(table: pa.Table) -> pa.Table:
    """Upgrade older files: add columns they lack as nulls, keep only known columns, in order."""
    arrays = []
    for name, dtype in COLUMNS.items():
        if name in table.column_names:
            arrays.append(table.column(name).cast(dtype))
        else:
            arrays.append(pa.nulls(table.num_rows, dtype))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    table, _ = read_table(path)
    return table.to_pylist()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def reserve_results_path(out_dir: str | Path, suite_name: str) -> Path:
    """results/<host>-<UTC time>-<suite>.parquet, created exclusively so two runs never share a file."""
    out_dir = Path(out_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{_slug(socket.gethostname())}-{stamp}-{_slug(suite_name)}"
    for attempt in range(1000):
        candidate = out_dir / (f"{base}.parquet" if attempt == 0 else f"{base}-{attempt + 1}.parquet")
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        write_rows(candidate, [])
        return candidate
    raise UserError(f"{out_dir}: could not reserve a results file name; clean the folder")


class ResultStore:
    """Rows of one run, rewritten to disk after every point."""

    def __init__(self, path: str | Path, rows: Iterable[dict[str, Any]] = ()):
        self.path = path if is_uri(path) else Path(path)
        self.rows: list[dict[str, Any]] = list(rows)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append({"schema_version": SCHEMA_VERSION, **row})
        write_rows(self.path, self.rows)

    def replace(self, keep: Iterable[dict[str, Any]]) -> None:
        self.rows = list(keep)
        write_rows(self.path, self.rows)
