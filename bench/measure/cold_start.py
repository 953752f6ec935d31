"""The cold-start clock: phases a runtime names while it loads, timed here.

    phases = ColdStartTimer()
    session = runtime.load(request, phases)   # the runtime wraps read / compile / first_infer
    cold = phases.result()

A phase may be entered more than once (its times add up) and finer names (parse, build)
may nest inside the three that make the cold start; `figures_ms()` reports them all.
`fresh_process` times the same kind of cold start in a new interpreter (a warm-cache cold
start pays for the CUDA context, engine and kernels again, as a restarted service does):
`python -m bench.measure.cold_start warm-probe JSON` runs the target under a fresh clock.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from bench.session import LoadRequest

COLD_PHASES = ("read", "compile", "first_infer")
WARM_PROBE_TIMEOUT_S = 900
PROBE_TAG = "FACEBENCH_PROBE "  # the probe's result line; anything else on stdout is the libraries' chatter


@dataclass
class ColdStart:
    """Cold-start phases in milliseconds; None where a runtime cannot see a phase."""

    read_ms: float | None = None  # read / parse the model file
    compile_ms: float | None = None  # session creation, compile or engine build
    first_infer_ms: float | None = None  # first inference after load
    # GPU runtimes with engine / timing caches: the same cold start again with the caches warm.
    warm_cache_total_ms: float | None = None

    @property
    def total_ms(self) -> float:
        return sum(v for v in (self.read_ms, self.compile_ms, self.first_infer_ms) if v is not None)


class ColdStartTimer:
    """The Phases a runtime's load is given (bench.session.Phases)."""

    def __init__(self) -> None:
        self._ms: dict[str, float | None] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter_ns()
        try:
            yield
        finally:
            self._ms[phase] = (self._ms.get(phase) or 0.0) + (time.perf_counter_ns() - t0) / 1e6

    def ms(self, phase: str) -> float | None:
        return self._ms.get(phase)

    def total_ms(self) -> float | None:
        parts = [self._ms[p] for p in COLD_PHASES if self._ms.get(p) is not None]
        return sum(parts) if parts else None

    def record(self, phase: str, ms: float | None) -> None:
        self._ms[phase] = ms

    def figures_ms(self) -> dict[str, float | None]:
        """Every phase as name_ms, and total_ms."""
        return {**{f"{name}_ms": value for name, value in self._ms.items()}, "total_ms": self.total_ms()}

    def result(self) -> ColdStart:
        return ColdStart(read_ms=self.ms("read"), compile_ms=self.ms("compile"),
                         first_infer_ms=self.ms("first_infer"), warm_cache_total_ms=self.ms("warm_cache_total"))

    def fresh_process(self, target: str, request: LoadRequest, **extra: str) -> dict[str, Any]:
        """`target` ("module:function") timed in a fresh process; {"total_ms": None, "note": why} if it gave nothing."""
        payload = {"target": target, "request": asdict(request), "extra": extra}
        repo = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run([sys.executable, "-m", "bench.measure.cold_start", "warm-probe", json.dumps(payload)],
                                  capture_output=True, text=True, timeout=WARM_PROBE_TIMEOUT_S, env=env,
                                  preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        except subprocess.TimeoutExpired:
            return {"total_ms": None, "note": f"warm-cache probe exceeded {WARM_PROBE_TIMEOUT_S} s"}
        results = [line[len(PROBE_TAG):] for line in done.stdout.splitlines() if line.startswith(PROBE_TAG)]
        try:
            return json.loads(results[-1])  # kept even when the process crashed after printing it
        except (IndexError, ValueError):
            tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no result"])[-1]
            return {"total_ms": None, "note": f"warm-cache probe failed: {tail}"}


def _die_with_parent() -> None:
    """In the probe (Linux): exit when the worker that started it dies, so a killed point never
    leaves a process holding a CUDA context behind."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def probe_main(argv: list[str]) -> int:
    """`warm-probe JSON`: prints the target's phase figures and notes, tagged."""
    if len(argv) != 3 or argv[1] != "warm-probe":
        print("usage: python -m bench.measure.cold_start warm-probe JSON", file=sys.stderr)
        return 2
    data = json.loads(argv[2])
    fields = data["request"]
    request = LoadRequest(**{**fields, "input_shape": tuple(fields["input_shape"])})
    module, function = data["target"].split(":")
    phases = ColdStartTimer()
    notes = getattr(importlib.import_module(module), function)(request, phases, **data["extra"]) or {}
    print(PROBE_TAG + json.dumps({**phases.figures_ms(), **notes}), flush=True)
    os._exit(0)  # the figure is out: skip a CUDA or TensorRT teardown that might crash


if __name__ == "__main__":
    sys.exit(probe_main(sys.argv))
