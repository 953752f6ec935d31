"""How often the regression gate cries wolf, and how often it catches a real slowdown.

Runs 2K facebench sweeps on this machine, one after another, each measuring three models with
`--repeats N` (interleaved): the MobileFaceNet replica as built, and two copies made slower on
purpose by extra work appended to the graph (a branch of convolutions on the input whose
result is added, multiplied by zero, to the embedding, so the runtime must compute it). Pair i
is runs 2i and 2i+1:

- false alarm: the gate at `--fail-if-slower T` fails run 2i+1's unchanged model against run 2i's;
- detection: the gate fails run 2i+1's slowed copy (given the original's identity, as if the same
  model had become slower) against run 2i's original.

The same pairs are also judged by the rule without repeats (each run's first repeat alone: slower
only beyond the two points' window spreads and gate.BETWEEN_RUN_FLOOR_PCT).

Usage: python scripts/gate_false_alarms.py [--pairs 10] [--repeats 5] [--threshold 5] [--convs 8,20]
        [--runtime ort-cpu] [--batch 1] [--out gate-runs/] [--inline]
Prints each pair's verdicts and the rates; paste them into docs/journal.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bench import store
from bench.models import zoo
from bench.report import compare, gate

REPO = Path(__file__).resolve().parents[1]
MODEL = "arcface_mbf"
MEASURE = """
[measure]
warmup_s = 0.2
warmup_min_iterations = 2
window_s = 0.3
window_min_iterations = 5
stable_windows = 3
max_windows = 8

[checks]
contamination = false
parity = false
"""


def slowed_copy(source: Path, convs: int, out: Path) -> Path:
    """`source` plus a branch of `convs` 32-channel 3x3 convolutions at half resolution on the input,
    added (times zero) to the first output: extra work the runtime cannot skip."""
    model = onnx.load(str(source))
    graph = model.graph
    rng = np.random.default_rng(convs)
    x, output = graph.input[0].name, graph.output[0].name
    nodes, inits, previous, channels = [], [], x, 3
    for i in range(convs):
        weight = numpy_helper.from_array((rng.standard_normal((32, channels, 3, 3)) * 0.05).astype(np.float32),
                                         f"slow_w{i}")
        inits.append(weight)
        nodes.append(helper.make_node("Conv", [previous, weight.name], [f"slow_c{i}"], pads=[1, 1, 1, 1],
                                      strides=[2, 2] if i == 0 else [1, 1]))
        nodes.append(helper.make_node("Relu", [f"slow_c{i}"], [f"slow_r{i}"]))
        previous, channels = f"slow_r{i}", 32
    inits.append(numpy_helper.from_array(np.zeros((1, 1), np.float32), "slow_zero"))
    renamed = f"{output}_fast"
    for node in graph.node:
        node.output[:] = [renamed if o == output else o for o in node.output]
    nodes += [helper.make_node("GlobalAveragePool", [previous], ["slow_gap"]),
              helper.make_node("Flatten", ["slow_gap"], ["slow_flat"]),
              helper.make_node("ReduceMean", ["slow_flat"], ["slow_mean"], axes=[1], keepdims=1),
              helper.make_node("Mul", ["slow_mean", "slow_zero"], ["slow_nothing"]),
              helper.make_node("Add", [renamed, "slow_nothing"], [output])]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    path = out / f"{MODEL}-slow{convs}.onnx"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run_sweep(suite: Path, out: Path, repeats: int, inline: bool) -> Path:
    command = [sys.executable, "-m", "bench", "run", str(suite), "--repeats", str(repeats), "--out", str(out)]
    result = subprocess.run(command + (["--inline"] if inline else []), cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"facebench run failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return out


def rows_of(path: Path, model: str, original: dict) -> list[dict]:
    """The rows of one model, under the original model's identity (so compare matches them)."""
    rows = [r for r in store.read_rows(path) if r["model"] == model and r["status"] == "ok"]
    return [{**r, "model": original["model"], "model_sha256": original["model_sha256"]} for r in rows]


def first_repeat_only(rows: list[dict]) -> list[dict]:
    """A row as a run without repeats would have written it: the first repeat's figures."""
    out = []
    for r in rows:
        first = json.loads(r["repeats_json"])[0]
        out.append({**r, "fps": first["fps"], "window_spread_pct": first["window_spread_pct"],
                    "repeats": None, "repeats_json": None, "fps_ci_low": None, "fps_ci_high": None})
    return out


def verdict(base_rows: list[dict], new_rows: list[dict], folder: Path, threshold: float) -> gate.GateFinding:
    base = folder / "base.parquet"
    new = folder / "new.parquet"
    store.write_rows(base, [{**r, "run_id": "base"} for r in base_rows])
    store.write_rows(new, [{**r, "run_id": "new"} for r in new_rows])
    comparison = compare.build_comparison(compare.load_results([str(base), str(new)]), "fps", "run", str(base))
    result = gate.regression_gate(comparison, threshold)
    (finding,) = result.findings
    return finding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=5.0, help="--fail-if-slower, in %%")
    parser.add_argument("--convs", default="8,20", help="extra convolutions of the two slowed copies")
    parser.add_argument("--runtime", default="ort-cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", default="gate-runs")
    parser.add_argument("--inline", action="store_true",
                        help="measure in the harness process (default: a worker process per repeat, as `facebench run`)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(zoo.build_cached(MODEL).path)
    slowed = {int(c): slowed_copy(source, int(c), out) for c in args.convs.split(",")}
    models = "".join(f'[[models]]\npath = "{p.resolve()}"\n' for p in slowed.values())
    suite = out / "gate.toml"
    suite.write_text(f'name = "gate"\nruntimes = ["{args.runtime}"]\nbatches = [{args.batch}]\n'
                     f'[[models]]\nname = "{MODEL}"\n{models}{MEASURE}')
    names = {c: p.stem for c, p in slowed.items()}

    tallies: dict[str, list[str]] = {}
    ratios: dict[int, list[float]] = {c: [] for c in slowed}
    scratch = out / "scratch"
    scratch.mkdir(exist_ok=True)
    for pair in range(args.pairs):
        base_path = run_sweep(suite, out / f"pair{pair}-a.parquet", args.repeats, args.inline)
        new_path = run_sweep(suite, out / f"pair{pair}-b.parquet", args.repeats, args.inline)
        base_rows = [r for r in store.read_rows(base_path) if r["model"] == MODEL and r["status"] == "ok"]
        original = base_rows[0]
        cases = {"same": rows_of(new_path, MODEL, original)}
        cases.update({f"slow{c}": rows_of(new_path, names[c], original) for c in slowed})
        line = [f"pair {pair}:"]
        for case, rows in cases.items():
            with_repeats = verdict(base_rows, rows, scratch, args.threshold)
            once = verdict(first_repeat_only(base_rows), first_repeat_only(rows), scratch, args.threshold)
            tallies.setdefault(f"{case} repeats", []).append(with_repeats.verdict)
            tallies.setdefault(f"{case} once", []).append(once.verdict)
            if case != "same":
                ratios[int(case[4:])].append(with_repeats.ratio.estimate)
            line.append(f"{case} {with_repeats.ratio.estimate:.3f} [{with_repeats.ratio.low:.3f}-"
                        f"{with_repeats.ratio.high:.3f}] {with_repeats.verdict} (once: {once.verdict})")
        print(" | ".join(line), flush=True)

    print(f"\n{args.pairs} pairs, {args.repeats} repeats, threshold {args.threshold:g}%, {args.runtime} "
          f"{MODEL} batch {args.batch}, {'inline' if args.inline else 'worker processes'}")
    for c, values in ratios.items():
        print(f"slowed copy with {c} extra convs: median ratio {statistics.median(values):.3f} "
              f"({(1 - statistics.median(values)) * 100:.1f}% slower)")
    for key, verdicts in tallies.items():
        counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
        failed = verdicts.count(gate.SLOWER)
        print(f"{key}: gate failed {failed}/{len(verdicts)} ({100 * failed / len(verdicts):.0f}%); {counts}")


if __name__ == "__main__":
    main()
