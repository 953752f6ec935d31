"""The adaptive batch ladder: when a series of points (one runtime, precision, input format,
options variant and concurrency, batches in rising order) stops being worth climbing.

The worker asks `stop_reason` before every batch with the points measured below it (this run's,
a crashed worker's and a resumed file's alike), so the decision is made while measuring and is
the same wherever the points came from. The batches not run become skipped rows whose reason
starts with one of LADDER_REASONS, which --resume keeps (and --full-ladder measures).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

PLATEAU, CEILING = "plateau:", "latency ceiling:"
LADDER_REASONS = (PLATEAU, CEILING)


@dataclass(frozen=True)
class LadderRule:
    """`[ladder]` in a suite. The defaults are argued in docs/journal.md ("Why K = 2").

    steps = 2: two doublings of the batch (4x) that together gain under plateau_pct stop the
    ladder. One step would stop on a single noisy point (a shared machine's windows agree only
    within stability_pct = 10%, wider than 5%); model_analyzer's 4 steps would never stop a 1..64
    ladder before 32, and 32 and 64 are the points that cost the most on a CPU.
    """

    adaptive: bool = True  # false (or --full-ladder): every batch is measured
    plateau_pct: float = 5.0
    steps: int = 2
    latency_ceiling_ms: float = 0.0  # p99 of one batch above this stops the ladder; 0: no ceiling


@dataclass(frozen=True)
class LadderPoint:
    batch: int
    fps: float
    p99_ms: float | None


def point_from_row(row: dict[str, Any]) -> LadderPoint | None:
    """The ladder's view of a measured row (None for skipped and failed points)."""
    if row.get("status") != "ok" or row.get("fps") is None:
        return None
    return LadderPoint(int(row["batch"]), float(row["fps"]), row.get("lat_p99_ms"))


def points_from_rows(rows: Iterable[dict[str, Any]]) -> list[LadderPoint]:
    return [p for p in map(point_from_row, rows) if p is not None]


def stop_reason(rule: LadderRule | None, measured: Iterable[LadderPoint], batch: int) -> str:
    """Why `batch` is not measured given the points measured below it ("" to measure it)."""
    if rule is None or not rule.adaptive:
        return ""
    below = sorted((p for p in measured if p.batch < batch), key=lambda p: p.batch)
    if not below:
        return ""
    last = below[-1]
    ceiling = rule.latency_ceiling_ms
    if ceiling > 0 and last.p99_ms is not None and last.p99_ms > ceiling:
        return f"{CEILING} batch {last.batch} p99 {last.p99_ms:.0f} ms > {ceiling:g} ms"
    if len(below) <= rule.steps:
        return ""
    recent, earlier = below[-rule.steps:], below[:-rule.steps]
    reference = max(earlier, key=lambda p: p.fps)
    top = max(recent, key=lambda p: p.fps)
    gain_pct = (top.fps / reference.fps - 1.0) * 100.0 if reference.fps > 0 else 0.0
    if gain_pct >= rule.plateau_pct:
        return ""
    span = f"{recent[0].batch}..{recent[-1].batch}" if len(recent) > 1 else str(recent[0].batch)
    return f"{PLATEAU} {span} gained {gain_pct:.1f}% over {reference.batch} (< {rule.plateau_pct:g}%)"


def is_ladder_skip(reason: str | None) -> bool:
    return isinstance(reason, str) and reason.startswith(LADDER_REASONS)
