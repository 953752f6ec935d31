"""Parameter, MAC and op counts read from an ONNX graph (replicas and real files alike).

MACs are counted at one concrete input shape. The model-pack exports compute shapes at run
time (Shape -> Gather -> Unsqueeze -> Concat into Resize `sizes`), which ONNX shape inference
alone leaves unknown; such shape subgraphs are folded to constants with numpy at that shape
and inference runs again, until every Conv/Gemm/MatMul shape is known or nothing more folds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import onnx
import numpy as np
from onnx import TensorProto, helper, numpy_helper

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
# Float operands that are resize factors, not learned weights.
NON_WEIGHT_OPERANDS = {"Resize": {1, 2, 3}, "Upsample": {1}}
# Float initializers up to this size stay in the skeleton that shape inference sees (they may be
# resize scales); bigger ones are weights and only their shapes matter.
SMALL_CONSTANT = 16
# Ops that compute shapes: cheap to evaluate on constants (never on image-sized tensors).
SHAPE_OPS = {"Shape", "Constant", "Gather", "Unsqueeze", "Squeeze", "Slice", "Concat", "Cast", "Identity", "Floor",
             "Ceil", "Add", "Sub", "Mul", "Div", "ConstantOfShape", "Range", "ReduceProd", "Equal", "Where"}
MAX_FOLD_ROUNDS = 8
MAX_FOLDED_ELEMENTS = 64  # a folded value larger than this is data, not a shape


class CountingError(ValueError):
    """A figure that cannot be derived from the graph (the caller stores null with this reason)."""


def count_params(model: onnx.ModelProto) -> int:
    """Elements of float initializers: learned weights, with BN folded or not as the file has them.
    Integer shape constants and float resize scales/roi do not count."""
    weight_uses, factor_uses = set(), set()
    for node in model.graph.node:
        skip = NON_WEIGHT_OPERANDS.get(node.op_type, set())
        for position, name in enumerate(node.input):
            (factor_uses if position in skip else weight_uses).add(name)
    return sum(
        math.prod(init.dims)
        for init in model.graph.initializer
        if init.data_type in FLOAT_TYPES and (init.name in weight_uses or init.name not in factor_uses)
    )


def count_macs(model: onnx.ModelProto, input_shape: Sequence[int] | None = None) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul for one frame.

    The image input is fixed to batch 1; ``input_shape`` (full shape, e.g. (1, 3, 640, 640)) sets
    its other dims, and its batch entry is ignored. Without it every dim other than the batch must
    already be static. Raises CountingError when a shape stays unknown."""
    graph = static_shape_graph(_skeleton(model, input_shape))
    shapes = _known_shapes(graph)
    return sum(_node_macs(node, shapes) for node in graph.node if node.op_type in ("Conv", "Gemm", "MatMul"))


def static_shapes(model: onnx.ModelProto, input_shape: Sequence[int]) -> dict[str, list[int | None]]:
    """Every tensor's shape at batch 1 and this input shape, through run-time shape subgraphs."""
    return _known_shapes(static_shape_graph(_skeleton(model, input_shape)))


def static_shape_graph(skeleton: onnx.ModelProto) -> onnx.GraphProto:
    """Shape inference, folding run-time shape subgraphs into constants between rounds."""
    for _ in range(MAX_FOLD_ROUNDS):
        inferred = _infer(skeleton)
        if not _fold_shape_ops(skeleton, inferred.graph):
            return inferred.graph
    return _infer(skeleton).graph


def _infer(skeleton: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(skeleton, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CountingError(f"ONNX shape inference fails ({first})") from exc


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type in the main graph, most frequent first."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


# ---- helpers -----------------------------------------------------------------------------


def _skeleton(model: onnx.ModelProto, input_shape: Sequence[int] | None) -> onnx.ModelProto:
    """A copy without weight data (weights become typed inputs) and with a concrete input, so
    shape inference is cheap even for a 175 MB model."""
    source = model.graph
    initializer_names = {init.name for init in source.initializer}
    graph = onnx.GraphProto(name=source.name)
    graph.node.extend(source.node)
    data_inputs = [value for value in source.input if value.name not in initializer_names]
    if not data_inputs:
        raise CountingError("model has no data input")
    for index, value in enumerate(data_inputs):
        graph.input.append(_concrete_input(value, input_shape if index == 0 else None))
    for init in source.initializer:
        if init.data_type in FLOAT_TYPES and math.prod(init.dims) > SMALL_CONSTANT:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            graph.initializer.append(init)
    # Declared output shapes may describe another input size (the 2021 export keeps 640's).
    graph.output.extend(
        helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, None) for value in source.output
    )
    skeleton = onnx.ModelProto(ir_version=model.ir_version, graph=graph)
    skeleton.opset_import.extend(model.opset_import)
    return skeleton


def _concrete_input(value: onnx.ValueInfoProto, input_shape: Sequence[int] | None) -> onnx.ValueInfoProto:
    tensor_type = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if input_shape is not None:
        if len(input_shape) != len(dims):
            raise CountingError(f"input_shape {tuple(input_shape)} does not match the rank of input {value.name!r} ({len(dims)})")
        dims = [int(d) for d in input_shape]
    dims[0] = 1  # MACs are counted per frame
    if any(d is None or d <= 0 for d in dims):
        raise CountingError(f"input {value.name!r} has symbolic dims {dims}; pass input_shape")
    return helper.make_tensor_value_info(value.name, tensor_type.elem_type, dims)


def _known_shapes(graph: onnx.GraphProto) -> dict[str, list[int | None]]:
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int:
    def shape(name: str) -> list[int]:
        dims = shapes.get(name)
        if dims is None or any(d is None for d in dims):
            raise CountingError(f"shape of {name!r} (at {node.op_type} {node.name!r}) is unknown")
        return dims

    output = shape(node.output[0])
    if node.op_type == "Conv":  # each output element: C_in/groups * kH * kW
        return math.prod(output) * math.prod(shape(node.input[1])[1:])
    a = shape(node.input[0])
    if node.op_type == "Gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return math.prod(output) * (a[0] if trans_a else a[1])
    return math.prod(output) * a[-1]  # MatMul


def _fold_shape_ops(skeleton: onnx.ModelProto, inferred: onnx.GraphProto) -> bool:
    """Replace shape-computing nodes whose value is now known by initializers; True if any."""
    shapes = _known_shapes(inferred)
    values = {init.name: numpy_helper.to_array(init) for init in skeleton.graph.initializer}
    opset = next((op.version for op in skeleton.opset_import if op.domain in ("", "ai.onnx")), 11)
    folded: dict[str, np.ndarray] = {}
    kept = []
    for node in skeleton.graph.node:
        result = _evaluate(node, values, shapes, opset) if node.op_type in SHAPE_OPS else None
        if result is None:
            kept.append(node)
            continue
        for name, value in zip(node.output, result):
            values[name] = folded[name] = value
    if not folded:
        return False
    del skeleton.graph.node[:]
    skeleton.graph.node.extend(kept)
    skeleton.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in folded.items())
    return True


def _evaluate(node: onnx.NodeProto, values: dict, shapes: dict, opset: int) -> list[np.ndarray] | None:
    """The node's outputs when they follow from known constants and shapes, else None."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Shape":
        dims = shapes.get(node.input[0])
        if dims is None or any(d is None for d in dims):
            return None
        return [np.array(dims[attrs.get("start", 0):attrs.get("end")], dtype=np.int64)]
    if node.op_type == "Constant":
        if "value" not in attrs:
            return None
        return _small([numpy_helper.to_array(attrs["value"])])
    inputs = [values.get(name) if name else None for name in node.input]
    if any(value is None for value, name in zip(inputs, node.input) if name):
        return None
    if any(value is not None and value.size > MAX_FOLDED_ELEMENTS for value in inputs):
        return None  # weights or image data: not a shape computation
    try:
        result = _SHAPE_KERNELS[node.op_type](inputs, attrs, opset)
    except Exception:  # an unusual form of the op: leave it to shape inference
        return None
    return _small([np.asarray(result)])


def _small(outputs: list[np.ndarray]) -> list[np.ndarray] | None:
    return None if any(out.size > MAX_FOLDED_ELEMENTS for out in outputs) else outputs


def _axes(inputs: list, attrs: dict, position: int) -> list[int]:
    """Axes from the attribute (opset < 13) or the given input (opset >= 13)."""
    if "axes" in attrs:
        return list(attrs["axes"])
    return [int(a) for a in inputs[position].reshape(-1)] if len(inputs) > position and inputs[position] is not None else []


def _unsqueeze(inputs, attrs, opset):
    result = inputs[0]
    axes = _axes(inputs, attrs, 1)
    rank = result.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        result = np.expand_dims(result, axis)
    return result


def _squeeze(inputs, attrs, opset):
    axes = _axes(inputs, attrs, 1)
    return np.squeeze(inputs[0], axis=tuple(axes) if axes else None)


def _slice(inputs, attrs, opset):
    data = inputs[0]
    if "starts" in attrs:  # opset < 10
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = inputs[1].reshape(-1), inputs[2].reshape(-1)
        axes = inputs[3].reshape(-1) if len(inputs) > 3 and inputs[3] is not None else None
        steps = inputs[4].reshape(-1) if len(inputs) > 4 and inputs[4] is not None else None
    axes = list(range(len(starts))) if axes is None else axes
    index = [slice(None)] * data.ndim
    for i, axis in enumerate(axes):
        step = int(steps[i]) if steps is not None else 1
        index[int(axis)] = slice(int(starts[i]), int(ends[i]), step)
    return data[tuple(index)]


_ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Equal": np.equal}
_SHAPE_KERNELS = {
    "Gather": lambda i, a, o: np.take(i[0], i[1], axis=a.get("axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "Concat": lambda i, a, o: np.concatenate([v.reshape(-1) if v.ndim == 0 else v for v in i], axis=a["axis"]),
    "Cast": lambda i, a, o: i[0].astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"])),
    "Identity": lambda i, a, o: i[0],
    "Floor": lambda i, a, o: np.floor(i[0]),
    "Ceil": lambda i, a, o: np.ceil(i[0]),
    "Div": lambda i, a, o: (i[0] // i[1]) if i[0].dtype.kind in "iu" else i[0] / i[1],
    "ConstantOfShape": lambda i, a, o: np.full(
        [int(d) for d in i[0]], numpy_helper.to_array(a["value"]).reshape(-1)[0] if "value" in a else np.float32(0)),
    "Range": lambda i, a, o: np.arange(i[0], i[1], i[2]),
    "ReduceProd": lambda i, a, o: np.prod(i[0], keepdims=bool(a.get("keepdims", 1))),
    "Where": lambda i, a, o: np.where(i[0], i[1], i[2]),
    **{op: (lambda f: lambda i, a, o: f(i[0], i[1]))(f) for op, f in _ARITHMETIC.items()},
}
