"""Suites: TOML files naming models, runtimes, precisions, batches and measurement settings.

Loading validates every key against the schema below and names the offending one.
"""
from __future__ import annotations

import itertools
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.checks.parity import ParityGates
from bench.domain import (DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT, PRECISIONS, batch_problem, canonical_precision,
                          input_format)
from bench.errors import UserError
from bench.ladder import LadderRule
from bench.measure.protocol import MeasureSettings
from bench.report.model import parse_budget
from bench.runtimes.registry import get_runtime

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
MAX_REPEATS = 100
MAX_CONCURRENCY = 64
DEVICES = ("cpu", "gpu", "npu")


@dataclass(frozen=True)
class ModelRef:
    """A built-in replica name (with input size for detectors) or a path to an ONNX file."""

    name: str
    input_size: int | None = None
    path: str | None = None
    inputs: tuple[str, ...] = ()  # input formats for this model; empty: the suite's

    @property
    def label(self) -> str:
        if self.path:
            return Path(self.path).stem
        return f"{self.name}@{self.input_size}" if self.input_size else self.name


@dataclass(frozen=True)
class Checks:
    contamination: bool = True
    parity: bool = True
    # GEMM / 3x3-conv probes of each runtime and precision (cached per machine) for "% of peak".
    peak_probes: bool = True


@dataclass
class Suite:
    name: str
    models: list[ModelRef]
    runtimes: list[str]
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    # Input formats (bench.domain.INPUT_FORMATS): `input = "uint8-nhwc-bgr"` or a list, per suite or model.
    inputs: list[str] = field(default_factory=lambda: [DEFAULT_INPUT_FORMAT])
    batches: list[int] = field(default_factory=lambda: list(DEFAULT_BATCHES))
    # Optional narrower batch lists per device ("cpu", "gpu"): big batches on 2 CPU cores
    # cost minutes and show nothing new.
    batches_by_device: dict[str, list[int]] = field(default_factory=dict)
    precisions_by_runtime: dict[str, list[str]] = field(default_factory=dict)
    runtime_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [sweep_options.RUNTIME] key = [value, ...]: every combination is its own point (options_variant).
    option_sweeps: dict[str, dict[str, list]] = field(default_factory=dict)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    checks: Checks = field(default_factory=Checks)
    # [parity_gates.METRIC] precision = threshold, over bench.checks.parity.ParityGates defaults
    parity_gates: dict[str, dict[str, float]] = field(default_factory=dict)
    point_timeout_s: float = 900.0
    allow_large_batch: bool = False
    description: str = ""
    # Each point measured this many times, each in a fresh session, interleaved across points
    # (A, B, C, then A, B, C again); the point's figure is the median, with a confidence interval.
    repeats: int = 1
    # Requests in flight per point (a sweep axis like batch): ort-cpu N sessions, openvino-cpu N streams.
    concurrency: list[int] = field(default_factory=lambda: [1])
    # Batches climbed adaptively: a series stops at a plateau or a latency ceiling (bench.ladder).
    ladder: LadderRule = field(default_factory=LadderRule)
    # "p99:30ms": the report's answer line, the best configuration under it (bench.report.model).
    latency_budget: str = ""

    def batches_for(self, device: str) -> list[int]:
        return self.batches_by_device.get(device, self.batches)

    def precisions_for(self, runtime: str) -> list[str]:
        return self.precisions_by_runtime.get(runtime, self.precisions)

    def inputs_for(self, model: ModelRef) -> list[str]:
        return list(model.inputs) or self.inputs

    def option_variants(self, runtime: str) -> list[tuple[str, dict[str, Any]]]:
        """(label, options) for each combination of the runtime's swept options; one
        (DEFAULT_OPTIONS_VARIANT, its runtime_options) where nothing is swept."""
        base = dict(self.runtime_options.get(runtime, {}))
        swept = self.option_sweeps.get(runtime, {})
        if not swept:
            return [(DEFAULT_OPTIONS_VARIANT, base)]
        keys = list(swept)
        return [(" ".join(f"{k}={_option_text(v)}" for k, v in zip(keys, values)), {**base, **dict(zip(keys, values))})
                for values in itertools.product(*(swept[k] for k in keys))]



def _option_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


_TOP_KEYS = {
    "name", "description", "models", "runtimes", "precisions", "batches", "batches_by_device",
    "precisions_by_runtime", "runtime_options", "measure", "checks", "parity_gates", "point_timeout_s",
    "allow_large_batch", "repeats", "input", "sweep_options", "concurrency", "ladder", "latency_budget",
}


def load_suite(path: str | Path) -> Suite:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: suite file not found; pass a TOML suite such as suites/quick.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the suite ({exc.__class__.__name__}); check the path and its permissions") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: malformed TOML ({exc}); fix the syntax at that line") from None
    return parse_suite(data, default_name=path.stem, where=str(path))


def parse_suite(data: dict[str, Any], default_name: str, where: str) -> Suite:
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key '{sorted(unknown)[0]}'; known keys: {', '.join(sorted(_TOP_KEYS))}")
    suite = Suite(
        name=_typed(data, "name", str, where, default_name),
        description=_typed(data, "description", str, where, ""),
        models=[_model_ref(entry, where) for entry in _typed(data, "models", list, where, [])],
        runtimes=_str_list(data, "runtimes", where, []),
        precisions=_str_list(data, "precisions", where, ["fp32"]),
        inputs=_input_formats(data, where) or [DEFAULT_INPUT_FORMAT],
        batches=_int_list(data, "batches", where, list(DEFAULT_BATCHES)),
        batches_by_device={k: _int_list({k: v}, k, f"{where} [batches_by_device]", [])
                           for k, v in _typed(data, "batches_by_device", dict, where, {}).items()},
        precisions_by_runtime={k: _str_list({k: v}, k, f"{where} [precisions_by_runtime]", [])
                               for k, v in _typed(data, "precisions_by_runtime", dict, where, {}).items()},
        runtime_options=_typed(data, "runtime_options", dict, where, {}),
        option_sweeps=_option_sweeps(_typed(data, "sweep_options", dict, where, {}), where),
        measure=_dataclass_from(MeasureSettings, _typed(data, "measure", dict, where, {}), f"{where} [measure]"),
        checks=_dataclass_from(Checks, _typed(data, "checks", dict, where, {}), f"{where} [checks]"),
        parity_gates=_parity_gates(_typed(data, "parity_gates", dict, where, {}), where),
        point_timeout_s=float(_typed(data, "point_timeout_s", (int, float), where, 900.0)),
        allow_large_batch=_typed(data, "allow_large_batch", bool, where, False),
        repeats=_typed(data, "repeats", int, where, 1),
        concurrency=_int_list(data, "concurrency", where, [1]),
        ladder=_dataclass_from(LadderRule, _typed(data, "ladder", dict, where, {}), f"{where} [ladder]"),
        latency_budget=_typed(data, "latency_budget", str, where, ""),
    )
    validate(suite, where)
    return suite


def validate(suite: Suite, where: str) -> None:
    """Checks that need no registry: batch bounds and precision names."""
    if not suite.models:
        raise UserError(f"{where}: no models; add [[models]] entries or pass --models")
    if not suite.runtimes:
        raise UserError(f"{where}: no runtimes; add runtimes = [...] or pass --runtimes")
    all_batches = set(suite.batches).union(*suite.batches_by_device.values())
    for batch in sorted(all_batches):
        problem = batch_problem(batch, suite.allow_large_batch)
        if problem:
            raise UserError(f"{where}: {problem}")
    precisions = set(suite.precisions).union(*suite.precisions_by_runtime.values())
    for precision in sorted(precisions):
        if precision not in PRECISIONS:
            raise UserError(f"{where}: unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    _check_fp16_io(suite, where)
    for device in suite.batches_by_device:
        if device not in DEVICES:
            raise UserError(f"{where} [batches_by_device]: unknown device '{device}'; use {', '.join(DEVICES)}")
    if not 1 <= suite.repeats <= MAX_REPEATS:
        raise UserError(f"{where}: repeats {suite.repeats} is out of range; use 1..{MAX_REPEATS} (5 is a good gate)")
    if suite.point_timeout_s <= 0:
        raise UserError(f"{where}: point_timeout_s must be positive (seconds)")
    if not suite.concurrency:
        raise UserError(f"{where}: concurrency is empty; give requests in flight per point, e.g. concurrency = [1, 2]")
    for n in suite.concurrency:
        if not 1 <= n <= MAX_CONCURRENCY:
            raise UserError(f"{where}: concurrency {n} is out of range; use 1..{MAX_CONCURRENCY} requests in flight")
    ladder = suite.ladder
    if ladder.steps < 1 or ladder.plateau_pct < 0 or ladder.latency_ceiling_ms < 0:
        raise UserError(f"{where} [ladder]: steps must be 1 or more, plateau_pct and latency_ceiling_ms "
                        "0 or more (e.g. steps = 2, plateau_pct = 5.0)")
    if suite.latency_budget:
        parse_budget(suite.latency_budget, f"{where}: latency_budget")
    _validate_measure(suite.measure, where)
    _validate_runtimes(suite, where)


def _validate_measure(m: MeasureSettings, where: str) -> None:
    positive = ("warmup_min_iterations", "warmup_max_iterations", "window_min_iterations", "stable_windows",
                "max_windows", "input_buffers", "window_s", "stability_pct")
    for key in positive:
        if getattr(m, key) <= 0:
            raise UserError(f"{where} [measure]: {key} must be positive")
    if m.input_pool_mb < 0:
        raise UserError(f"{where} [measure]: input_pool_mb cannot be negative (0: input_buffers buffers)")
    if m.warmup_s < 0:
        raise UserError(f"{where} [measure]: warmup_s cannot be negative")
    if m.seed < 0:  # numpy's generators take none
        raise UserError(f"{where} [measure]: seed {m.seed} cannot be negative; use 0 or a positive whole number")
    if m.max_windows < m.stable_windows:
        raise UserError(f"{where} [measure]: max_windows ({m.max_windows}) must be at least stable_windows ({m.stable_windows})")


def _check_fp16_io(suite: Suite, where: str) -> None:
    """fp16-nchw is the FP32 model converted to FP16 with FP16 I/O: over an fp16, bf16 or int8 artifact
    it cannot be built (nor compute in BF16), so the combination is refused here rather than failed at every point."""
    formats = set(suite.inputs).union(*(ref.inputs for ref in suite.models))
    if "fp16-nchw" not in formats:
        return
    clashing = sorted({p for r in suite.runtimes for p in suite.precisions_for(r)} & {"fp16", "bf16", "int8"})
    if clashing:
        raise UserError(f"{where}: input fp16-nchw already computes in FP16 from the FP32 model and cannot be combined "
                        f"with precision {', '.join(clashing)}; measure it with precisions = [\"fp32\"] "
                        "(a suite of its own, or --precisions fp32)")


def _validate_runtimes(suite: Suite, where: str) -> None:
    """Runtime names everywhere they appear, and each runtime's options (keys, kinds, values)."""
    for name in [*suite.runtimes, *suite.precisions_by_runtime, *suite.runtime_options, *suite.option_sweeps]:
        get_runtime(name)
    for name, options in suite.runtime_options.items():
        get_runtime(name).Options.parse(options, name, where)  # typed here, so no worker meets a bad value
    for name in suite.option_sweeps:
        for _, options in suite.option_variants(name):
            get_runtime(name).Options.parse(options, name, f"{where} [sweep_options]")


def _option_sweeps(tables: dict[str, Any], where: str) -> dict[str, dict[str, list]]:
    """[sweep_options.RUNTIME] tables whose every value is a non-empty list of values to sweep."""
    sweeps = {}
    for runtime, table in tables.items():
        place = f"{where} [sweep_options.{runtime}]"
        if not isinstance(table, dict):
            raise UserError(f"{place}: must be a table of option = [values], e.g. prefer_nhwc = [false, true]")
        for key, values in table.items():
            if not isinstance(values, list) or not values:
                raise UserError(f"{place}: '{key}' must be a non-empty list of values to sweep, "
                                f"e.g. {key} = [{_option_text(values)}]; a single value belongs in [runtime_options.{runtime}]")
        sweeps[runtime] = dict(table)
    return sweeps


def override(suite: Suite, *, models: list[ModelRef] | None = None, runtimes: list[str] | None = None,
             precisions: list[str] | None = None, batches: list[int] | None = None,
             repeats: int | None = None, inputs: list[str] | None = None,
             concurrency: list[int] | None = None, full_ladder: bool = False,
             latency_budget: str | None = None) -> Suite:
    """Command-line options narrow or replace what the suite says."""
    changes: dict[str, Any] = {}
    if models:
        changes["models"] = models
    if runtimes:
        changes["runtimes"] = runtimes
    if precisions:
        changes["precisions"] = precisions
        changes["precisions_by_runtime"] = {}
    if batches:
        changes["batches"] = batches
        changes["batches_by_device"] = {}
    if repeats is not None:
        changes["repeats"] = repeats
    if inputs:  # the command line's formats replace the suite's and every model's
        changes["inputs"] = [input_format(name, "--input").name for name in inputs]
        changes["models"] = [replace(ref, inputs=()) for ref in changes.get("models", suite.models)]
    if concurrency:
        changes["concurrency"] = concurrency
    if full_ladder:
        changes["ladder"] = replace(suite.ladder, adaptive=False)
    if latency_budget:
        changes["latency_budget"] = latency_budget
    updated = replace(suite, **changes)
    validate(updated, "command line")
    return updated


def parse_model_arg(text: str) -> ModelRef:
    """`scrfd_10g@320`, `arcface_r50`, or a path to an .onnx file."""
    text = text.strip()
    name, _, size = text.partition("@")
    if size and not size.isdigit():
        raise UserError(f"model '{text}': input size after @ must be a number, e.g. scrfd_10g@320")
    input_size = int(size) if size else None
    # Built-in names contain dots (scrfd_2.5g), so only .onnx or a folder separator means a file.
    if name.endswith(".onnx") or "/" in name or os.sep in name:
        return ModelRef(name=_file_label(name, input_size), path=name, input_size=input_size)
    return ModelRef(name=name, input_size=input_size)


def _file_label(path: str, input_size: int | None) -> str:
    """A file's points are told apart by size too: the same file at 320 and 640 are two models."""
    stem = Path(path).stem
    return f"{stem}@{input_size}" if input_size else stem


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise UserError(f"--{what} '{text}': expected comma-separated whole numbers, e.g. 1,2,4")
    return values


def _parity_gates(tables: dict[str, Any], where: str) -> dict[str, dict[str, float]]:
    from dataclasses import fields as dataclass_fields

    metrics = [f.name for f in dataclass_fields(ParityGates)]
    gates = {}
    for metric, per_precision in tables.items():
        if metric not in metrics:
            raise UserError(f"{where} [parity_gates]: unknown metric '{metric}'; use one of {', '.join(metrics)}")
        if not isinstance(per_precision, dict):
            raise UserError(f"{where} [parity_gates.{metric}]: give a table of precision = threshold, e.g. fp16 = 0.999")
        for precision, value in per_precision.items():
            if canonical_precision(precision) not in PRECISIONS or isinstance(value, bool) \
                    or not isinstance(value, (int, float)):
                raise UserError(f"{where} [parity_gates.{metric}]: '{precision} = {value!r}' must name a precision "
                                f"({', '.join(PRECISIONS)}) and a number")
        gates[metric] = {canonical_precision(p): float(v) for p, v in per_precision.items()}
    return gates


def _model_ref(entry: Any, where: str) -> ModelRef:
    if isinstance(entry, str):
        return parse_model_arg(entry)
    if not isinstance(entry, dict):
        raise UserError(f"{where}: each [[models]] entry must be a table with name or path")
    unknown = set(entry) - {"name", "input_size", "path", "input"}
    if unknown:
        raise UserError(f"{where} [[models]]: unknown key '{sorted(unknown)[0]}'; use name, input_size, path or input")
    if "path" not in entry and "name" not in entry:
        raise UserError(f"{where} [[models]]: entry without name or path; give one of them")
    size = entry.get("input_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise UserError(f"{where} [[models]] {entry.get('name') or entry['path']}: "
                        "input_size must be a positive integer such as 320")
    inputs = tuple(_input_formats(entry, f"{where} [[models]] {entry.get('name') or entry['path']}"))
    if "path" in entry:
        return ModelRef(name=entry.get("name") or _file_label(str(entry["path"]), size), path=str(entry["path"]),
                        input_size=size, inputs=inputs)
    return ModelRef(name=entry["name"], input_size=size, inputs=inputs)


def _input_formats(table: dict, where: str) -> list[str]:
    """`input = "FORMAT"` or `input = ["FORMAT", ...]`, each a known input format ([] when absent)."""
    value = table.get("input", [])
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where}: key 'input' must be an input format or a list of them, e.g. input = \"uint8-nhwc-bgr\"")
    return [input_format(name, f"{where}: input").name for name in names]


def _typed(data: dict, key: str, kind, where: str, default):
    if key not in data:
        return default
    value = data[key]
    # TOML booleans are ints in Python: never accept one where a number or list is meant.
    wrong_bool = isinstance(value, bool) and kind is not bool
    if wrong_bool or not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else "number"
        raise UserError(f"{where}: key '{key}' must be a {expected}, got {type(value).__name__}")
    return value


def _str_list(data: dict, key: str, where: str, default: list[str]) -> list[str]:
    value = _typed(data, key, list, where, default)
    if not all(isinstance(item, str) for item in value):
        raise UserError(f"{where}: key '{key}' must be a list of strings")
    return list(value)


def _int_list(data: dict, key: str, where: str, default: list[int]) -> list[int]:
    value = _typed(data, key, list, where, default)
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        raise UserError(f"{where}: key '{key}' must be a list of whole numbers")
    return list(value)


def _dataclass_from(cls, values: dict[str, Any], where: str):
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{where}: unknown key '{key}'; known keys: {', '.join(known)}")
        default = getattr(cls(), key)
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, (type(default), int)):
            raise UserError(f"{where}: key '{key}' must be a {type(default).__name__}, got {type(value).__name__}")
    return cls(**values)
