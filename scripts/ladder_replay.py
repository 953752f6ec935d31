"""Replay the adaptive ladder's rule (bench.ladder) on a full-ladder results file, for several K.

    python scripts/ladder_replay.py results/full.parquet [--steps 1,2,3,4] [--plateau-pct 5]

For each series (model, runtime, precision, input, options, concurrency) and each K: where the
ladder would have stopped, how many batches it would have skipped, and the share of the series'
best frames/s it would have missed. This is how the default K = 2 was chosen (docs/journal.md).
"""
from __future__ import annotations

import argparse
from itertools import groupby

from bench import store
from bench.ladder import LadderRule, points_from_rows, stop_reason

SERIES = ("model", "runtime", "precision", "input_format", "options_variant", "concurrency")


def replay(rows, rule: LadderRule) -> tuple[int | None, int, float]:
    """(first skipped batch or None, batches skipped, % of the best frames/s missed)."""
    measured = sorted(points_from_rows(rows), key=lambda p: p.batch)
    kept = []
    for point in measured:
        if stop_reason(rule, kept, point.batch):
            skipped = [p for p in measured if p.batch >= point.batch]
            best, reached = max(p.fps for p in measured), max(p.fps for p in kept)
            return point.batch, len(skipped), (1 - reached / best) * 100
        kept.append(point)
    return None, 0, 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--steps", default="1,2,3,4")
    parser.add_argument("--plateau-pct", type=float, default=5.0)
    args = parser.parse_args()
    rows = [r for f in args.files for r in store.read_rows(f) if r.get("kind") == "model"]
    key = lambda r: tuple(str(r.get(c)) for c in SERIES)
    for series, group in groupby(sorted(rows, key=key), key=key):
        group = list(group)
        if not points_from_rows(group):
            continue  # nothing measured (failed or skipped runtime)
        curve = " ".join(f"{p.batch}:{p.fps:.1f}" for p in sorted(points_from_rows(group), key=lambda p: p.batch))
        print(f"{' '.join(series[:2])} c{series[5]}  frames/s by batch  {curve}")
        for steps in (int(s) for s in args.steps.split(",")):
            stop, skipped, missed = replay(group, LadderRule(plateau_pct=args.plateau_pct, steps=steps))
            where = f"stops before {stop}, skips {skipped}, misses {missed:.1f}% of the best" if stop else "runs every batch"
            print(f"  K={steps}: {where}")


if __name__ == "__main__":
    main()
