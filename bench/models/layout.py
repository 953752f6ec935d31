"""Batch layout of an ONNX detector or embedder: can it run batch > 1 without mixing frames?

Old InsightFace exports break batching in three ways (reference/models.md §2, §7):
the input batch is fixed at 1; the detector head flattens the batch into 2-D outputs
(Transpose [2,3,0,1] + Reshape [-1,K], which interleaves frames per spatial cell); and
constants bake batch 1 into the graph (Reshape [1,-1,K], neck Resize sizes [1,C,H,W]).
The harness reads BatchLayout to skip batch > 1 points with a reason; `fix-batch`
(bench.models.batchfix) reuses the same output-path analysis to rewrite the graph.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

NCHW_TO_NHWC = [0, 2, 3, 1]
BATCH_INTERLEAVING_PERM = [2, 3, 0, 1]  # (N,C,H,W) -> (H,W,N,C): frames interleave per cell
# Values per anchor in the output order of SCRFD exports: all scores, all boxes, all keypoints;
# 3 strides (8/16/32, 2 anchors) or 5 (8..128, 1 anchor), as insightface's SCRFD decoder reads them.
DETECTOR_K_PATTERNS = {
    6: [1] * 3 + [4] * 3, 9: [1] * 3 + [4] * 3 + [10] * 3,
    10: [1] * 5 + [4] * 5, 15: [1] * 5 + [4] * 5 + [10] * 5,
}
OUTPUT_KINDS = {1: "score", 4: "bbox", 10: "kps"}


@dataclass
class OutputPath:
    """The head tail of one detector output: ... -> Transpose -> Reshape [-> Sigmoid] -> output."""

    output: str
    k: int
    transpose: onnx.NodeProto
    reshape: onnx.NodeProto
    reshape_target: list[int] | None  # None when the target is computed at run time

    @property
    def perm(self) -> list[int]:
        return list(_attr(self.transpose, "perm", []))

    @property
    def interleaves_batch(self) -> bool:
        return self.perm == BATCH_INTERLEAVING_PERM

    @property
    def target_is_batched(self) -> bool:
        """Reshape keeps dim 0 as the batch: [0,-1,K], or a target computed at run time."""
        return self.reshape_target is None or self.reshape_target == [0, -1, self.k]


@dataclass
class BatchLayout:
    batch_fixed: bool  # input dim 0 is a number (almost always 1)
    flattened_outputs: bool  # detector outputs merge the batch into rows (2-D outputs)
    baked_batch_ops: list[str]  # names of nodes whose constants bake in batch 1
    family: str  # "detector" | "embedder" | "unknown"
    input_name: str = ""
    input_shape: list[int | str] = field(default_factory=list)  # numbers, or symbolic names
    output_paths: list[OutputPath] = field(default_factory=list)  # detectors only
    problems: list[str] = field(default_factory=list)  # what fix-batch cannot rewrite
    notes: list[str] = field(default_factory=list)  # one human line per finding
    baked_op_types: list[str] = field(default_factory=list)  # op type of each baked_batch_ops entry
    # Reshape [1, ...] / Flatten axis 0 on a tensor whose dim 0 is the batch: fix-batch keeps dim 0
    batch_one_flattens: list[onnx.NodeProto] = field(default_factory=list)

    @property
    def batch_safe(self) -> bool:
        """Nothing in the graph mixes frames at batch > 1 (the contamination check still runs).

        Graphs of an unknown family are judged only on their input and baked constants.
        """
        detector_unclear = self.family == "detector" and bool(self.problems)
        return not (self.batch_fixed or self.flattened_outputs or self.baked_batch_ops or detector_unclear)

    def skip_reason(self, batch: int) -> str | None:
        """Why the harness must not run this model at `batch`, or None when it may."""
        if batch <= 1 or self.batch_safe:
            return None
        return f"batch {batch} is unsafe for this export ({self.summary()}); repair it with `facebench fix-batch IN.onnx OUT.onnx`"

    def summary(self) -> str:
        """One short line: what stops batch > 1 from being correct."""
        parts = []
        if self.family == "unknown":
            parts.append("graph not recognised" + (f": {self.problems[0]}" if self.problems else ""))
        if self.batch_fixed:
            parts.append(f"input batch fixed at {self.input_shape[0]}")
        if self.flattened_outputs:
            parts.append("outputs flatten the batch into rows")
        if self.baked_batch_ops:
            counts = Counter(self.baked_op_types)
            ops = " + ".join(f"{n} {op}" for op, n in counts.items())
            parts.append(f"{ops} constant(s) bake in batch 1")
        return "; ".join(parts) or "batch-safe"


def analyze_batch_layout(model: onnx.ModelProto) -> BatchLayout:
    inputs = graph_inputs(model)
    if len(inputs) != 1 or _rank(inputs[0]) != 4:
        return BatchLayout(
            batch_fixed=False, flattened_outputs=False, baked_batch_ops=[], family="unknown",
            problems=[f"expected one NCHW image input, found {len(inputs)} input(s)"],
            notes=["not an image model with one NCHW input"],
        )
    image = inputs[0]
    layout = BatchLayout(
        batch_fixed=False, flattened_outputs=False, baked_batch_ops=[], family="unknown",
        input_name=image.name, input_shape=dims_of(image),
    )
    if isinstance(layout.input_shape[0], int):
        layout.batch_fixed = True
        layout.notes.append(f"input '{image.name}' has batch fixed at {layout.input_shape[0]}")

    consts = constant_values(model)
    layout.family = _classify(model, consts, layout)
    _find_baked_batch_constants(model, consts, layout)
    if layout.family == "detector":
        _judge_detector_paths(layout, consumer_map(model.graph))
    return layout


def _classify(model: onnx.ModelProto, consts: dict[str, np.ndarray], layout: BatchLayout) -> str:
    outputs = list(model.graph.output)
    if len(outputs) == 1 and _rank(outputs[0]) in (2, None):
        return "embedder"
    if len(outputs) not in DETECTOR_K_PATTERNS:
        layout.problems.append(
            f"{len(outputs)} outputs: not a SCRFD detector with 6 or 9 outputs (strides 8/16/32) or 10 or 15"
            " (strides 8..128) nor an embedder with one output"
        )
        return "unknown"
    producers = producer_map(model.graph)
    paths = []
    for out in outputs:
        declared = dims_of(out)
        declared_k = declared[-1] if declared and isinstance(declared[-1], int) else None
        path = trace_output_path(out.name, producers, consts, declared_k)
        if path is None:
            layout.problems.append(
                f"output '{out.name}' does not end in Transpose -> Reshape [-> Sigmoid] as SCRFD heads do"
            )
            return "unknown"
        paths.append(path)
    ks = [p.k for p in paths]
    if ks != DETECTOR_K_PATTERNS[len(outputs)]:
        layout.problems.append(
            f"output widths {ks} are not SCRFD's {DETECTOR_K_PATTERNS[len(outputs)]} (scores, boxes[, keypoints])"
        )
        return "unknown"
    layout.output_paths = paths
    return "detector"


def _judge_detector_paths(layout: BatchLayout, consumers: dict[str, list[onnx.NodeProto]]) -> None:
    for path in layout.output_paths:
        name = path.transpose.name or path.output
        if len(consumers.get(path.transpose.output[0], [])) != 1:
            layout.problems.append(f"Transpose '{name}' on output '{path.output}' also feeds other nodes")
        if path.perm not in (NCHW_TO_NHWC, BATCH_INTERLEAVING_PERM):
            layout.problems.append(f"Transpose '{name}' on output '{path.output}' has unknown perm {path.perm}")
        target = path.reshape_target
        if target is not None and target not in ([-1, path.k], [1, -1, path.k], [0, -1, path.k]):
            layout.problems.append(
                f"Reshape on output '{path.output}' has unknown target {target} (expected [-1,K], [1,-1,K] or [0,-1,K])"
            )
    interleaved = [p.output for p in layout.output_paths if p.interleaves_batch]
    flat = [p.output for p in layout.output_paths if p.reshape_target == [-1, p.k]]
    if interleaved or flat:
        layout.flattened_outputs = True
        detail = "Transpose [2,3,0,1] interleaves frames" if interleaved else "Reshape [-1,K] merges frames"
        layout.notes.append(f"outputs flatten the batch into rows ({detail}; {len(flat)} 2-D outputs)")


def _find_baked_batch_constants(model: onnx.ModelProto, consts: dict[str, np.ndarray], layout: BatchLayout) -> None:
    head_reshapes = {id(p.reshape) for p in layout.output_paths}
    batch_dims = None  # dim 0 of every tensor with a symbolic batch, inferred on first need
    for node in model.graph.node:
        name = node.name or node.output[0]
        if node.op_type == "Reshape" and node.input[0] not in consts:
            target = consts.get(node.input[1])
            if target is None:
                continue
            target = [int(v) for v in target.reshape(-1)]
            if len(target) >= 2 and target[0] == 1:
                _record_baked(layout, node, f"Reshape '{name}' target {target} bakes in batch 1")
                if id(node) in head_reshapes:
                    continue
                batch_dims = _batch_dims(model) if batch_dims is None else batch_dims
                if batch_dims.get(node.input[0]) == _BATCH_SYMBOL:
                    layout.batch_one_flattens.append(node)
                else:
                    layout.problems.append(
                        f"Reshape '{name}' (target {target}) bakes in batch 1 outside the output heads"
                        f" on '{node.input[0]}', whose dim 0 is not the batch"
                    )
            elif len(target) == 1 and layout.family == "embedder":
                _record_baked(layout, node, f"Reshape '{name}' target {target} merges every frame into one vector")
                layout.problems.append(f"Reshape '{name}' (target {target}) merges the batch into one vector")
        elif node.op_type == "Flatten" and int(_attr(node, "axis", 1)) == 0:
            _record_baked(layout, node, f"Flatten '{name}' with axis 0 merges every frame into one row")
            batch_dims = _batch_dims(model) if batch_dims is None else batch_dims
            if batch_dims.get(node.input[0]) == _BATCH_SYMBOL:
                layout.batch_one_flattens.append(node)
            else:
                layout.problems.append(f"Flatten '{name}' (axis 0) merges the batch into one row")
        elif node.op_type == "Resize" and len(node.input) > 3 and node.input[3]:
            sizes = consts.get(node.input[3])
            if sizes is not None and int(sizes.reshape(-1)[0]) == 1:
                sizes = [int(v) for v in sizes.reshape(-1)]
                _record_baked(layout, node, f"Resize '{name}' sizes {sizes} bake in batch 1")
                if layout.family != "detector":
                    layout.problems.append(f"Resize '{name}' (sizes {sizes}) bakes in batch 1")


_BATCH_SYMBOL = "facebench_batch"


def _batch_dims(model: onnx.ModelProto) -> dict[str, int | str]:
    """Dim 0 of every tensor once the input batch is symbolic: a tensor whose dim 0 is the symbol
    carries the batch there, so a batch-1 constant on it can keep dim 0 instead ({} when inference fails)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    image = graph_inputs(probe)[0].type.tensor_type.shape.dim[0]
    image.Clear()
    image.dim_param = _BATCH_SYMBOL
    del probe.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except Exception:  # a graph inference cannot follow: nothing is known to carry the batch
        return {}
    dims = {}
    for value in inferred.graph.value_info:
        shape = dims_of(value)
        if shape:
            dims[value.name] = shape[0]
    return dims


def _record_baked(layout: BatchLayout, node: onnx.NodeProto, note: str) -> None:
    layout.baked_batch_ops.append(node.name or node.output[0])
    layout.baked_op_types.append(node.op_type)
    layout.notes.append(note)


# ---- graph helpers shared with batchfix -------------------------------------------------


def trace_output_path(
    output: str, producers: dict[str, onnx.NodeProto], consts: dict[str, np.ndarray], declared_k: int | None = None
) -> OutputPath | None:
    """Walk back from a detector output through the head tail, or None if it is not one.

    K comes from the constant Reshape target, else from the output's declared last dim.
    """
    node = producers.get(output)
    if node is not None and node.op_type == "Sigmoid":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Reshape":
        return None
    reshape = node
    node = producers.get(reshape.input[0])
    if node is not None and node.op_type == "Sigmoid":
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Transpose":
        return None
    target = consts.get(reshape.input[1])
    target_list = None if target is None else [int(v) for v in target.reshape(-1)]
    k = target_list[-1] if target_list else declared_k
    if not k or k <= 0:
        return None
    return OutputPath(output, k, node, reshape, target_list)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: old exports also list initializers as graph inputs."""
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def dims_of(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def producer_map(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def consumer_map(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by tensor name."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer
              if init.data_location != onnx.TensorProto.EXTERNAL}  # weights left on disk
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name == "value_ints":
                    values[node.output[0]] = np.array(attr.ints, dtype=np.int64)
    return values


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _rank(value: onnx.ValueInfoProto) -> int | None:
    tensor_type = value.type.tensor_type
    return len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None
