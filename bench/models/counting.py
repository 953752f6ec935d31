"""Parameter, MAC and op counts read from an ONNX graph (replicas and real files alike)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
# Float operands that are resize factors, not learned weights.
NON_WEIGHT_OPERANDS = {"Resize": {1, 2, 3}, "Upsample": {1}}
# Float initializers up to this size stay in the skeleton that shape inference sees (they may be
# resize scales); bigger ones are weights and only their shapes matter.
SMALL_CONSTANT = 16


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
    already be static."""
    inferred = onnx.shape_inference.infer_shapes(_skeleton(model, input_shape), strict_mode=True, data_prop=True)
    shapes = _known_shapes(inferred.graph)
    total = 0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            total += _node_macs(node, shapes)
    return total


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
        raise ValueError("model has no data input")
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
            raise ValueError(f"input_shape {tuple(input_shape)} does not match the rank of input {value.name!r} ({len(dims)})")
        dims = [int(d) for d in input_shape]
    dims[0] = 1  # MACs are counted per frame
    if any(d is None or d <= 0 for d in dims):
        raise ValueError(f"input {value.name!r} has symbolic dims {dims}; pass input_shape")
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
            raise ValueError(f"shape of {name!r} (input of {node.op_type} {node.name!r}) is unknown")
        return dims

    output = shape(node.output[0])
    if node.op_type == "Conv":  # each output element: C_in/groups * kH * kW
        return math.prod(output) * math.prod(shape(node.input[1])[1:])
    a = shape(node.input[0])
    if node.op_type == "Gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return math.prod(output) * (a[0] if trans_a else a[1])
    return math.prod(output) * a[-1]  # MatMul
