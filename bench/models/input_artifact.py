"""Input-format artifacts: the model with its preprocessing at the front of the graph.

For a uint8 format the graph input becomes the frame as delivered, followed by
Cast -> (Transpose NHWC->NCHW) -> (channel flip BGR->RGB) -> Sub mean -> Mul 1/std,
then the original graph. Built over any precision artifact (the fp16 / int8 file keeps
its own float input behind these nodes), cached like the precision artifacts.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.domain import InputFormat
from bench.models.precision import _cached, make_fp16

_NORMALISED = "facebench_normalised_input"  # the original input, now computed inside the graph
BUILDER_VERSION = 1


def make_input_artifact(src_path: str | os.PathLike, fmt: InputFormat, mean: float, std: float,
                        cache_dir: str | os.PathLike) -> Path:
    """`src_path` taking `fmt` frames; a float-nchw format is the source itself."""
    src = Path(src_path)
    if fmt.is_float:
        return src
    if not fmt.carries_pixels:  # fp16-nchw: FP16 I/O, the normalised tensor as float16 in and out
        return make_fp16(src, cache_dir, keep_io_types=False)
    settings = {"format": fmt.name, "mean": float(mean), "std": float(std), "builder": BUILDER_VERSION,
                "onnx": onnx.__version__}

    def build(source: Path, out: Path) -> None:
        onnx.save(with_preprocessing(onnx.load(str(source)), fmt, mean, std), str(out))

    return _cached(src, fmt.name, settings, cache_dir, build)


def with_preprocessing(model: onnx.ModelProto, fmt: InputFormat, mean: float, std: float) -> onnx.ModelProto:
    """`model` with its (single) image input replaced by `fmt` frames and the nodes that normalise them."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    original = next(i for i in graph.input if i.name not in initializers)
    name = original.name
    for node in graph.node:  # the original input is now an internal tensor
        node.input[:] = [_NORMALISED if x == name else x for x in node.input]
    for output in graph.output:  # a graph that passes its input through (never for these models)
        if output.name == name:
            raise ValueError(f"{name} is also a graph output; cannot move preprocessing into the graph")

    dims = [_copy_dim(d) for d in original.type.tensor_type.shape.dim]
    n, c, h, w = dims
    frame_dims = [n, c, h, w] if fmt.layout == "nchw" else [n, h, w, c]
    frames = helper.make_tensor_value_info(name, TensorProto.UINT8, None)
    frames.type.tensor_type.shape.dim.extend(frame_dims)
    normalised = onnx.ValueInfoProto()
    normalised.CopyFrom(original)
    normalised.name = _NORMALISED

    nodes, current = [helper.make_node("Cast", [name], ["fb_cast"], to=TensorProto.FLOAT, name="fb_cast")], "fb_cast"
    if fmt.layout == "nhwc":
        nodes.append(helper.make_node("Transpose", [current], ["fb_nchw"], perm=[0, 3, 1, 2], name="fb_nchw"))
        current = "fb_nchw"
    constants = [numpy_helper.from_array(np.array([mean], dtype=np.float32), "fb_mean"),
                 numpy_helper.from_array(np.array([1.0 / std], dtype=np.float32), "fb_inv_std")]
    if fmt.channels == "bgr":  # the model takes RGB
        constants.append(numpy_helper.from_array(np.array([2, 1, 0], dtype=np.int64), "fb_rgb_order"))
        nodes.append(helper.make_node("Gather", [current, "fb_rgb_order"], ["fb_rgb"], axis=1, name="fb_rgb"))
        current = "fb_rgb"
    nodes += [helper.make_node("Sub", [current, "fb_mean"], ["fb_centred"], name="fb_centred"),
              helper.make_node("Mul", ["fb_centred", "fb_inv_std"], [_NORMALISED], name="fb_scaled")]

    graph.input.remove(original)
    graph.input.insert(0, frames)
    graph.value_info.append(normalised)
    graph.initializer.extend(constants)
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    return model


def _copy_dim(dim) -> onnx.TensorShapeProto.Dimension:
    copy = onnx.TensorShapeProto.Dimension()
    copy.CopyFrom(dim)
    return copy
