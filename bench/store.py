"""The result store: the one owner of the Parquet schema.

One row per point, flattened from its bench.results.PointResult here and nowhere else
(`flatten`); a point measured several times is one row combined from its repeats. Every write
rewrites the whole file atomically (temporary file in the same folder, fsync, rename), so a
reader never sees half a file and an interrupted run keeps every finished point. docs/results-schema.md documents the columns.
"""
from __future__ import annotations

import dataclasses
import errno
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bench.errors import UserError
from bench.measure.stats import median_interval, median_item
from bench.results import PointResult

SCHEMA_VERSION = 2  # 2: concurrency is the requests in flight measured; concurrency_requested the axis

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()

# Ordered: identity, machine, model, runtime, point, cold start, steady state, checks, telemetry.
COLUMNS: dict[str, pa.DataType] = {
    "schema_version": _I, "run_id": _S, "timestamp_utc": _S, "suite": _S, "kind": _S,
    "harness_version": _S, "git_commit": _S,
    "host": _S, "machine_id": _S, "cpu_model": _S, "cpu_cores": _I, "cpu_threads": _I,
    "memory_gb": _F, "os": _S, "python_version": _S, "gpu_name": _S, "gpu_driver": _S,
    "cuda_version": _S, "packages_json": _S,
    "cpu_vendor": _S, "cpu_family": _I, "cpu_model_number": _I, "cpu_stepping": _I, "cpu_isa": _S,
    "cpu_base_mhz": _F, "cpu_max_mhz": _F, "cpu_sockets": _I, "cpu_virtualized": _B,
    "lock_file": _S, "lock_sha256": _S, "machine": _S, "fleet_mixed": _S,
    "model": _S, "model_source": _S, "model_path": _S, "model_sha256": _S, "family": _S,
    "input_name": _S, "input_shape": _S, "input_size": _I, "params": _I,
    "macs_per_frame": _I, "flops_per_frame": _I, "macs_note": _S,
    "runtime": _S, "device": _S, "runtime_version": _S, "runtime_options_json": _S, "options_variant": _S,
    "threads": _I, "mode": _S, "timer": _S,
    "precision": _S, "precision_effective": _S, "int8_recipe": _S,
    "input_format": _S, "input_bytes_per_frame": _I, "input_buffers": _I, "input_pool_bytes": _I,
    "batch": _I, "concurrency": _I, "concurrency_requested": _I, "in_flight_mean": _F,
    "process_start_ms": _F, "cold_read_ms": _F, "cold_compile_ms": _F,
    "cold_first_infer_ms": _F, "cold_total_ms": _F, "cold_warm_cache_total_ms": _F,
    "warmup_iterations": _I, "warmup_s": _F,
    "iterations": _I, "frames": _I, "windows": _I, "wall_s": _F,
    "fps": _F, "ms_per_frame": _F, "fps_compute": _F, "window_spread_pct": _F,
    "repeats": _I, "fps_ci_low": _F, "fps_ci_high": _F, "repeats_json": _S,
    "lat_mean_ms": _F, "lat_p50_ms": _F, "lat_p90_ms": _F, "lat_p95_ms": _F,
    "lat_p99_ms": _F, "lat_min_ms": _F, "lat_max_ms": _F, "lat_cov_pct": _F,
    "h2d_ms": _F, "compute_ms": _F, "d2h_ms": _F, "enqueue_ms": _F,
    "gflops_achieved": _F,
    "peak_gemm_gflops": _F, "peak_conv_gflops": _F, "pct_gemm_peak": _F, "pct_conv_peak": _F,
    "peak_memory_copy_gbps": _F, "peak_h2d_gbps": _F, "h2d_gbps": _F, "pct_h2d_peak": _F,
    "datasheet_peak_tflops": _F,
    "verdict": _S, "warnings": _S,
    "contamination_checked": _B, "contamination_passed": _B,
    "contamination_max_abs": _F, "contamination_max_rel": _F,
    "parity_checked": _B, "parity_passed": _B, "parity_summary": _S, "parity_json": _S,
    "parity_metric": _S, "parity_value": _F, "parity_gate": _F, "parity_direction": _S,
    "parity_identity_faces": _I, "parity_identity_rank1": _F, "parity_identity_margin_min": _F,
    "parity_identity_lost": _I,
    "cpu_percent": _F, "peak_rss_mb": _F, "other_cpu_percent": _F, "cpu_steal_percent": _F,
    "gpu_util_mean": _F, "gpu_mem_util_mean": _F, "gpu_mem_peak_mb": _F,
    "gpu_power_mean_w": _F, "gpu_energy_mj_per_frame": _F, "gpu_sm_clock_mean_mhz": _F,
    "gpu_sm_clock_min_mhz": _F, "gpu_temp_max_c": _F, "gpu_clock_events": _S,
    "frames_total": _I, "faces_total": _I, "faces_per_s": _F, "stages_json": _S,
    "status": _S, "reason": _S,
}
SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype in COLUMNS.items()])
POINT_KEY = ("model_sha256", "model", "runtime", "precision", "input_format", "options_variant", "concurrency_requested",
             "batch", "kind")
# Rows written before input formats (or without one: pipelines) fed normalised float NCHW tensors.
# Rows written before the concurrency axis (and pipelines) had one request in flight.
_FILLS = {"input_format": "float-nchw", "options_variant": "default", "concurrency": 1}  # options: no [sweep_options] then
# Rows written before requests in flight were measured recorded the requested concurrency only.
_FILLED_FROM = {"concurrency_requested": "concurrency"}
STATUSES = ("ok", "skipped", "failed")


def flatten(result: PointResult) -> dict[str, Any]:
    """The point's row: every column of the schema, null where the result has no figure."""
    row: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "status": result.status, "reason": result.reason,
                           "process_start_ms": result.process_start_ms}
    if result.environment:
        env = result.environment
        row.update(run_id=env.run_id, suite=env.suite, timestamp_utc=env.timestamp_utc, **env.machine)
    row.update(_fields(result.model))
    point = result.point
    row.update(_fields(point, leave=("runtime_versions", "concurrency")), concurrency_requested=point.concurrency,
               concurrency=point.concurrency,
               runtime_version=_json(point.runtime_versions) if point.runtime_versions is not None else None)
    if result.session:
        row.update(_fields(result.session, leave=("options",)), runtime_options_json=_json(result.session.options))
    if result.cold_start:
        cold = result.cold_start
        row.update(cold_read_ms=cold.read_ms, cold_compile_ms=cold.compile_ms, cold_first_infer_ms=cold.first_infer_ms,
                   cold_total_ms=cold.total_ms, cold_warm_cache_total_ms=cold.warm_cache_total_ms)
    for part in (result.inputs, result.cpu):
        if part:
            row.update(_fields(part))
    if result.steady:
        row.update(_fields(result.steady, leave=("latency", "warnings", "in_flight_max")))
        if result.steady.in_flight_max:
            row["concurrency"] = result.steady.in_flight_max  # what ran, not what was asked
        if result.steady.latency:
            row.update({f"lat_{name}": value for name, value in _fields(result.steady.latency).items()})
    if result.gpu:
        row.update(_fields(result.gpu, leave=("warnings",)))
    if result.peaks:
        row.update(_fields(result.peaks, leave=("note",)))
    if result.contamination:
        check = result.contamination
        row.update(contamination_checked=True, contamination_passed=bool(check.passed),
                   contamination_max_abs=float(check.max_abs_diff), contamination_max_rel=float(check.max_rel_diff))
    if result.parity:
        row.update(_parity_fields(result.parity))
    if result.pipeline:
        row.update(_fields(result.pipeline, leave=("stages",)), stages_json=_json(result.pipeline.stages))
    row["warnings"] = "; ".join(result.warnings) or None
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise ValueError(f"fields not in the results schema: {sorted(unknown)}")
    return {name: row.get(name) for name in COLUMNS}


def _fields(part, leave: tuple[str, ...] = ()) -> dict[str, Any]:
    """A part's fields by name (not recursing, unlike dataclasses.asdict), less those in `leave`."""
    return {f.name: getattr(part, f.name) for f in dataclasses.fields(part) if f.name not in leave}


def _parity_fields(parity) -> dict[str, Any]:
    deciding = parity.deciding
    return {"parity_checked": True, "parity_passed": bool(parity.passed), "parity_summary": parity.summary(),
            "parity_json": _json(dataclasses.asdict(parity)),
            "parity_metric": deciding.metric if deciding else None,
            "parity_value": float(deciding.value) if deciding else None,
            "parity_gate": float(deciding.gate) if deciding and deciding.gate is not None else None,
            "parity_direction": deciding.direction if deciding else None,
            "parity_identity_faces": parity.identity_faces, "parity_identity_rank1": parity.identity_rank1,
            "parity_identity_margin_min": parity.identity_margin_min, "parity_identity_lost": parity.identity_lost}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    """numpy scalars as numbers; anything else JSON cannot hold (paths, enums) as text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


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


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]], exclusive: bool = False) -> None:
    """Write all rows to `path` (local path or URI) atomically, with schema version and checksum in the metadata.

    `exclusive` (local paths): raise FileExistsError instead of replacing an existing file.
    """
    table = to_table(rows)
    run_ids = list(dict.fromkeys(r for r in table.column("run_id").to_pylist() if r))
    metadata = {
        b"facebench.schema_version": str(SCHEMA_VERSION).encode(),
        b"facebench.rows_sha256": rows_checksum(table).encode(),
        b"facebench.run_ids": json.dumps(run_ids).encode(),  # every run that contributed rows, oldest first
    }
    table = table.replace_schema_metadata(metadata)
    _atomic_write(path, lambda handle: pq.write_table(table, handle), exclusive)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a local path or URI atomically (plots, reports)."""
    with _writable(path):
        _atomic_write(path, lambda handle: handle.write(data))


def write_output(location: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """write_rows to an output the user named: one that cannot be written is one line (UserError)."""
    with _writable(location):
        write_rows(location, rows)


@contextmanager
def _writable(location):
    """An output the user chose that cannot be written is their error: one line, exit 2."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"{location}: cannot write there ({exc.strerror or _first_line(exc)}); choose a writable --out") from None


def _atomic_write(location: str | Path, write: Callable[[Any], Any], exclusive: bool = False) -> None:
    if is_uri(location):
        _atomic_write_remote(str(location), write)
    else:
        _atomic_write_local(Path(location), write, exclusive)


def _atomic_write_local(path: Path, write: Callable[[Any], Any], exclusive: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        if exclusive:
            _link_exclusive(tmp, path)
        else:
            os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already after os.replace


def _link_exclusive(tmp: str, path: Path) -> None:
    """Give the finished temporary file the name `path` unless that name exists (FileExistsError).

    A hard link creates the name atomically with its content, so no reader or killed run ever
    leaves a zero-byte file behind; filesystems without hard links fall back to O_EXCL + rename.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(tmp, path)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a folder; the data itself is synced
    finally:
        os.close(fd)


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
    with _writable(location):
        if is_uri(location):
            fs, path = filesystem_for(str(location))
            fs.create_dir(path, recursive=True)
        else:
            Path(location).mkdir(parents=True, exist_ok=True)


def ensure_parent(location: str | Path) -> None:
    """Create the folder that will hold `location`."""
    with _writable(location):
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
    try:
        path.stat()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a folder on the way that this user may not enter, a symlink loop...
        raise UserError(f"{item}: cannot reach this path ({exc.strerror}); check it and its folders' permissions") from None
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
    # The checksum covers the rows as written: verify before adding columns newer versions have.
    ok = None if recorded is None else rows_checksum(table) == recorded.decode()
    table = _conform(table, path)
    return table, FileCheck(str(path), version, ok)


def _cast(column, dtype, name: str, path: str | Path):
    """A column as the schema types it; values that are not of its type (an edited file) are one line."""
    try:
        return column.cast(dtype)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise UserError(f"{path}: column '{name}' holds {column.type} values that are not {dtype} "
                        f"({_first_line(exc)}); the file was edited: use the original or measure again") from None


def _conform(table: pa.Table, path: str | Path) -> pa.Table:
    """Upgrade older files: add columns they lack as nulls, keep only known columns, in order."""
    arrays: dict[str, pa.Array] = {}
    for name, dtype in COLUMNS.items():
        if name in table.column_names:
            column = _cast(table.column(name), dtype, name, path)
            arrays[name] = pc.fill_null(column, _FILLS[name]) if name in _FILLS else column
        elif name in _FILLS:
            arrays[name] = pa.array([_FILLS[name]] * table.num_rows, dtype)
        else:
            arrays[name] = pa.nulls(table.num_rows, dtype)
    for name, source in _FILLED_FROM.items():
        arrays[name] = pc.coalesce(arrays[name], arrays[source])
    return pa.Table.from_arrays(list(arrays.values()), schema=SCHEMA)


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
            write_rows(candidate, [], exclusive=True)
        except FileExistsError:
            continue
        return candidate
    raise UserError(f"{out_dir}: could not reserve a results file name; clean the folder")


def point_key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(name) for name in POINT_KEY)


_IDENTITY = ("schema_version", "run_id", "timestamp_utc", "suite", "kind", "host", "machine_id", "model",
             "model_sha256", "runtime", "device", "precision", "input_format", "options_variant", "concurrency", "batch")


def _storable(row: dict[str, Any]) -> dict[str, Any]:
    """A row the schema cannot hold would block every later write: keep it as a failed point."""
    try:
        to_table([row])
        return row
    except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        kept = {key: row.get(key) for key in _IDENTITY}
        return {**kept, "status": "failed", "reason": f"result row could not be stored: {_first_line(exc)}"}


# Figures of one repeat, kept for each repeat in repeats_json; the point's row takes them from its
# median repeat (combine_repeats).
REPEAT_FIGURES = ("fps", "frames", "iterations", "wall_s", "ms_per_frame", "lat_mean_ms", "lat_p50_ms", "lat_p90_ms",
                  "lat_p95_ms", "lat_p99_ms", "lat_min_ms", "lat_max_ms", "lat_cov_pct", "gflops_achieved",
                  "pct_gemm_peak", "pct_conv_peak", "fps_compute", "gpu_power_mean_w")
# ... and as the highest over its repeats: one shared repeat is enough to doubt the point.
REPEAT_WORST = ("other_cpu_percent", "cpu_steal_percent")
# What each repeat keeps in repeats_json: enough to combine the point again when a resumed run
# adds the repeats it misses (recorded_repeats).
REPEAT_KEPT = ("status", "reason", "timestamp_utc", "window_spread_pct", "verdict", *REPEAT_FIGURES, *REPEAT_WORST)
CHECK_PREFIXES = ("contamination_", "parity_")


def combine_repeats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One point's row from its repeats' rows (in the order measured).

    The row is the median repeat by frames/s (of an even count the lower middle one) with all its
    own figures, so fps = frames / wall_s, iterations and ms_per_frame agree whatever the number of
    repeats. Beside them: a bootstrap interval of the median frames/s over the repeats that
    finished, the other processes' CPU the highest of any repeat, the checks from the first repeat
    (the only one that runs them). Each repeat's own figures stay in repeats_json, failed repeats
    included.
    """
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return rows[0]
    combined = dict(median_item(ok, key=lambda r: r["fps"]))
    combined.update({k: v for k, v in rows[0].items() if k.startswith(CHECK_PREFIXES)})
    for column in REPEAT_WORST:
        values = [r[column] for r in ok if r.get(column) is not None]
        if values:
            combined[column] = float(max(values))
    valid = sum(r.get("verdict") == "VALID" for r in ok)
    combined["verdict"] = "VALID" if 2 * valid > len(ok) else "UNSTABLE"  # most repeats settled
    combined["timestamp_utc"] = rows[-1]["timestamp_utc"]
    combined["repeats"] = len(ok)
    if len(ok) >= 2:
        interval = median_interval([r["fps"] for r in ok])
        combined["fps_ci_low"], combined["fps_ci_high"] = interval.low, interval.high
    combined["repeats_json"] = json.dumps(
        [{"repeat": i, **{k: r.get(k) for k in REPEAT_KEPT if r.get(k) is not None}} for i, r in enumerate(rows)])
    return combined


def recorded_repeats(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the repeats a stored point was combined from, as far as repeats_json keeps them
    (each repeat's own figures over the point's other columns); a point measured once is its row."""
    try:
        kept = json.loads(row.get("repeats_json") or "[]")
    except ValueError:
        kept = []
    if not kept:
        return [row]
    blank = dict.fromkeys(REPEAT_KEPT)  # a figure a repeat did not keep is unknown, not the point's
    return [{**row, **blank, **{k: v for k, v in repeat.items() if k in COLUMNS}} for repeat in kept
            if isinstance(repeat, dict)]


class ResultStore:
    """Rows of one run, rewritten to disk after every point.

    A failed write (full disk, read-only folder) raises OSError but keeps the row in memory;
    the next write saves everything, and `pending` counts the points not yet on disk.
    """

    def __init__(self, path: str | Path, rows: Iterable[dict[str, Any]] = ()):
        self.path = path if is_uri(path) else Path(path)
        self.mirror: str | None = None  # a URI copied after every write (run --out s3://...; a fleet's bucket)
        self.rows: list[dict[str, Any]] = list(rows)
        self.saved = len(self.rows)  # rows in the file as of the last successful write
        self.pending = 0  # points added since then
        self._lock: WriterLock | None = None

    def add(self, result: PointResult) -> None:
        self._put(flatten(result), replaces_ok=False)

    def add_repeats(self, repeats: Sequence[PointResult], recorded: Sequence[dict[str, Any]] = ()) -> None:
        """A point of a run with repeats, from the repeats measured so far (in order), after those a
        resumed file `recorded` (recorded_repeats): one row combined from them all, which replaces
        the row of fewer repeats."""
        rows = [*recorded, *(flatten(r) for r in repeats)]
        self._put(combine_repeats(rows), replaces_ok=len(rows) > 1)

    def _put(self, row: dict[str, Any], replaces_ok: bool) -> None:
        row = _storable(row)
        key = point_key(row)
        # A point measured again (a resumed run retrying a failed point, or one skipped while its
        # runtime was unavailable) replaces its earlier row.
        self.rows = [r for r in self.rows if (r.get("status") == "ok" and not replaces_ok) or point_key(r) != key]
        self.rows.append(row)
        self.pending += 1
        self.flush()

    def flush(self) -> None:
        write_rows(self.path, self.rows)
        if self.mirror:  # not saved until the copy is too: a machine that dies keeps its points in the bucket
            write_rows(self.mirror, self.rows)
        self.saved, self.pending = len(self.rows), 0


    def claim(self) -> None:
        """Hold the writer lock of a local file for this run; UserError while another run holds it."""
        if is_uri(self.path) or self._lock:
            return
        lock = WriterLock(self.path)
        if not lock.acquire():
            raise UserError(f"{self.path}: another facebench run is writing this file; wait for it to finish "
                            "or write to another --out")
        self._lock = lock

    def release(self) -> None:
        if self._lock:
            self._lock.release()
            self._lock = None


class WriterLock:
    """An advisory lock beside a results file (.NAME.lock), held while a run writes the file.

    The kernel drops it when the holder dies, even by SIGKILL, so a stale lock file never blocks.
    """

    def __init__(self, path: Path):
        self.lock_path = path.parent / f".{path.name}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        while True:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDONLY, 0o644)  # read-only: a remount ro still works
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            if self._still_named(fd):
                self._fd = fd
                return True
            os.close(fd)  # the previous holder removed this lock file as we opened it: take a fresh one

    def _still_named(self, fd: int) -> bool:
        try:
            return os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.lock_path.unlink(missing_ok=True)  # unlink before unlocking: see _still_named
            except OSError:
                pass  # a folder turned read-only: the stale file blocks nobody once unlocked
            os.close(self._fd)
            self._fd = None
