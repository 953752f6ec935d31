"""`facebench models list | build | inspect`: the built-in replicas and any model's interface and counts."""
from __future__ import annotations

import json

from rich.table import Table

from bench.console import console


def register(sub) -> None:
    models = sub.add_parser("models", help="built-in model replicas: list, build, inspect")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="list built-in replicas").set_defaults(handler=cmd_models_list)
    build = models_sub.add_parser("build", help="build (or find cached) a replica and print its path")
    build.add_argument("name")
    build.add_argument("--input-size", type=int)
    build.add_argument("--export", default="batched", choices=("batched", "named", "pack"),
                       help="file form: batched [N,3,S,S]; named static [1,3,S,S]; pack as the model packs ship "
                            "(det_10g.onnx: [1,3,?,?], flattened numeric outputs)")
    build.set_defaults(handler=cmd_models_build)
    inspect = models_sub.add_parser("inspect", help="interface, params, MACs, FLOPs and ops of a model")
    inspect.add_argument("model", help="built-in name (scrfd_10g@320) or .onnx path")
    inspect.add_argument("--input-size", type=int)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=cmd_models_inspect)


def cmd_models_list(args) -> int:
    from bench.models.zoo import BUILTINS

    table = Table(title="built-in replicas (architecture-faithful, seeded random weights)")
    for column in ("name", "family", "input", "what"):
        table.add_column(column)
    for spec in BUILTINS.values():
        size = f"[N,3,{spec.default_size},{spec.default_size}] (@320, @640)" if spec.default_size else "[N,3,112,112]"
        table.add_row(spec.name, spec.family, size, spec.summary)
    console.print(table)
    return 0


def cmd_models_build(args) -> int:
    from bench.models.zoo import build_cached

    with console.status(f"building {args.name}"):
        info = build_cached(args.name, args.input_size, export=args.export)
    console.print(f"{info.name}: {info.path} (sha256 {info.sha256[:16]}, {info.file_bytes / 2**20:.1f} MiB)")
    return 0


def cmd_models_inspect(args) -> int:
    from bench.models import zoo
    from bench.suite import parse_model_arg

    ref = parse_model_arg(args.model)
    if args.input_size:
        ref = type(ref)(name=ref.name, input_size=args.input_size, path=ref.path)
    info = zoo.resolve(ref)
    if args.json:
        print(json.dumps({**info.to_dict(), "flops_per_frame": info.flops_per_frame}, indent=2))
        return 0
    _print_inspection(info)
    return 0


def _counting_rows(info) -> list[tuple[str, str]]:
    at = f"at {info.input_hw[0]}x{info.input_hw[1]}"
    if info.macs_per_frame is None:
        return [("MACs / frame", f"unknown {at}: {info.macs_note}")]
    return [("MACs / frame", f"{info.macs_per_frame:,} ({info.macs_per_frame / 1e9:.3f} G {at}; conv + gemm)"),
            ("FLOPs / frame", f"{info.flops_per_frame / 1e9:.3f} G (= 2 x MACs)")]


def _print_inspection(info) -> None:
    table = Table(title=f"{info.name} ({info.family})", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("file", f"{info.path} ({info.file_bytes:,} bytes)"), ("sha256", info.sha256),
        ("input", f"{info.input_name} {info.input_dims} -> runs at {info.input_hw[0]}x{info.input_hw[1]}"),
        ("preprocessing", f"RGB, (x - {info.mean}) / {info.std}"),
        ("outputs", ", ".join(f"{n} {d}" for n, d in info.outputs)),
        ("params", f"{info.params:,} ({info.params / 1e6:.2f} M)"),
        *_counting_rows(info),
        ("batch", "fixed at 1" if info.batch_fixed else "dynamic"),
        ("output layout", "flattened (frames interleave at batch > 1)" if info.flattened_outputs else "batched [N, ...]"),
        ("ops", ", ".join(f"{k} {v}" for k, v in sorted(info.op_counts.items(), key=lambda kv: -kv[1]))),
    ]
    rows += [("note", note) for note in info.layout_notes]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)
