"""Every model file passes through here before any runtime sees it.

Checks size, ONNX parse, opset, the input tensor (rank 4, float, sane dimensions)
and external data (present, confined to the model's folder). Problems raise
ModelFileError with one line naming the file and the fix.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import TensorProto

from bench.errors import ModelFileError

MAX_FILE_BYTES = 4 * 2**30
MIN_OPSET, MAX_OPSET = 7, 26
MAX_DIM = 8192  # larger spatial sizes are absurd for these families
# A serialized ModelProto starts with the tag of one of its fields (ir_version, producer, graph...).
MODEL_PROTO_TAGS = {0x08, 0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x4A, 0x72, 0x7A}


def validate_model_file(path: str | Path) -> onnx.ModelProto:
    """Return the parsed model (external data not loaded) or raise ModelFileError."""
    path = Path(path)
    _check_file(path)
    model = _parse(path)
    _check_opset(path, model)
    _check_external_data(path, model)
    _load_small_external_tensors(path, model)
    check_image_input(path, model)
    return model


def _check_file(path: Path) -> None:
    try:
        path.stat()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found; check the path") from None
    except OSError as exc:  # a folder on the way this user may not enter, a symlink loop
        raise ModelFileError(f"{path}: cannot reach the file ({exc.strerror}); check the path and its folders' permissions") from None
    if not path.is_file():
        raise ModelFileError(f"{path}: not a regular file; pass the .onnx file itself")
    if not os.access(path, os.R_OK):
        raise ModelFileError(f"{path}: cannot read the file (permission denied); fix its permissions")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path}: empty file (0 bytes); the download or copy did not finish")
    if size > MAX_FILE_BYTES:
        raise ModelFileError(f"{path}: {size / 2**30:.1f} GiB is larger than any supported model; pass the right file")
    with path.open("rb") as handle:
        if handle.read(1)[0] not in MODEL_PROTO_TAGS:
            raise ModelFileError(f"{path}: not an ONNX file (wrong leading bytes); pass a .onnx model")


def _parse(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelFileError(f"{path}: not a valid ONNX file, truncated or damaged ({type(exc).__name__}); re-export or re-copy it") from None
    if not model.graph.node:
        raise ModelFileError(f"{path}: ONNX graph has no nodes (truncated or not a model); re-export or re-copy it")
    return model


def _check_opset(path: Path, model: onnx.ModelProto) -> None:
    default = [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")]
    if not default:
        raise ModelFileError(f"{path}: no default ONNX opset import; re-export with a standard opset")
    if not MIN_OPSET <= default[0] <= MAX_OPSET:
        raise ModelFileError(f"{path}: opset {default[0]} outside the supported {MIN_OPSET}..{MAX_OPSET}; re-export with opset 11-21")


def _check_external_data(path: Path, model: onnx.ModelProto) -> None:
    folder = path.parent.resolve()
    for tensor in _external_tensors(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), None)
        if not location:
            raise ModelFileError(f"{path}: tensor {tensor.name} has external data without a location; re-export the model")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise ModelFileError(f"{path}: external data '{location}' points outside the model's folder; refusing to read it")
        if not target.is_file():
            raise ModelFileError(f"{path}: external data file '{location}' is missing; copy it next to the model")


# External tensors up to this size are read in: shape constants (Reshape targets, Resize sizes) that
# inspection and counting need; weights stay on disk, only their dims matter.
SMALL_EXTERNAL_BYTES = 4096


def _load_small_external_tensors(path: Path, model: onnx.ModelProto) -> None:
    from onnx.external_data_helper import load_external_data_for_tensor

    for tensor in _external_tensors(model):
        length = next((int(e.value) for e in tensor.external_data if e.key == "length"), None)
        if length is None or length > SMALL_EXTERNAL_BYTES:
            continue
        try:
            load_external_data_for_tensor(tensor, str(path.parent))
        except Exception as exc:  # truncated data file
            raise ModelFileError(f"{path}: external data of tensor {tensor.name} cannot be read ({type(exc).__name__}); "
                                 "re-copy the model with its data file") from None
        tensor.data_location = TensorProto.DEFAULT
        del tensor.external_data[:]


def _external_tensors(model: onnx.ModelProto):
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            yield tensor
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == TensorProto.EXTERNAL:
                yield attr.t


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: old exports also list initializers as inputs."""
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def check_image_input(path, model: onnx.ModelProto) -> onnx.ValueInfoProto:
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise ModelFileError(f"{path}: {len(inputs)} inputs; facebench expects one image input [N,3,H,W]")
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise ModelFileError(f"{path}: input '{inputs[0].name}' is {TensorProto.DataType.Name(tensor_type.elem_type)}, not a float image tensor")
    dims = tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelFileError(f"{path}: input '{inputs[0].name}' has rank {len(dims)}; expected an image tensor [N,3,H,W]")
    if dims[1].HasField("dim_value") and dims[1].dim_value != 3:
        raise ModelFileError(f"{path}: input '{inputs[0].name}' has {dims[1].dim_value} channels; expected 3 (RGB)")
    for dim in dims:
        if dim.HasField("dim_value") and not 0 < dim.dim_value <= MAX_DIM:
            raise ModelFileError(f"{path}: input dimension {dim.dim_value} is absurd; expected 1..{MAX_DIM}")
    return inputs[0]
