"""The one interface every runtime implements: a Runtime loads a model file for one batch size
and precision into a Session (the contract in bench/session.py)."""
from __future__ import annotations

from abc import ABC, abstractmethod

from bench.runtimes.options import RuntimeOptions
from bench.session import UNTIMED, LoadRequest, Phases, Session


class Runtime(ABC):
    """A runtime family member (e.g. ort-cpu, openvino-cpu)."""

    name: str = ""
    device: str = "cpu"  # cpu | gpu | npu
    precisions: tuple[str, ...] = ("fp32",)
    precision_notes: dict[str, str] = {}  # why a precision is not run here, where a reason helps
    Options: type[RuntimeOptions] = RuntimeOptions  # what a suite's [runtime_options.NAME] may set
    uses_cuda = False  # NVML telemetry applies (NVIDIA devices only)
    concurrent = False  # runs more than one request in flight (load_concurrent)

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") or (False, reason). Must not raise; imports happen lazily here."""

    def versions(self) -> dict[str, str]:
        return {}

    def options(self, request: LoadRequest):
        """The request's options, typed (the suite checked them already; direct callers get the same check)."""
        return self.Options.parse(request.options, self.name)

    def native_precision_problem(self, precision: str) -> str:
        """Why this machine's device cannot compute `precision` natively ("" when it can, or when the
        runtime falls back on its own and the row says so); asked only once the runtime is available."""
        return ""

    def artifact_for(self, precision: str) -> str:
        """Which model artifact this runtime consumes for a precision (most: the same name)."""
        return precision

    @abstractmethod
    def load(self, request: LoadRequest, phases: Phases = UNTIMED) -> Session:
        """Load and run the first inference, each step inside its cold-start phase."""

    def load_concurrent(self, request: LoadRequest, concurrency: int, phases: Phases = UNTIMED) -> Session:
        """A session that keeps `concurrency` requests in flight (runtimes with `concurrent` override this).
        The cold start timed is the first member's: what each deployed session pays."""
        if concurrency == 1:
            return self.load(request, phases)
        raise NotImplementedError(f"{self.name} runs one request in flight only")
