"""A small ONNX graph builder for the replica models.

Weights come from one seeded numpy Generator, in float32, so a 175 MB model builds in seconds
and the same seed always gives the same bytes. BatchNorm that follows a conv is folded into the
conv (which then has a bias), as in the real exports; only BNs with nothing to fold into stay as
BatchNormalization nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# The IR version each opset needs at least; onnxruntime 1.2x-1.3x load them all. The InsightFace
# exports are opset 11 / IR 6 (PyTorch 1.6-1.8), which the export-faithful replicas reproduce.
IR_VERSIONS = {11: 6, 17: 8}
IR_VERSION = IR_VERSIONS[OPSET]

Dim = int | str | None
Shape = Sequence[Dim]

# Gains for He/LeCun-style init: a conv followed by (P)ReLU keeps its output variance with gain 2,
# a linear one with gain 1.
RELU_GAIN = 2.0
LINEAR_GAIN = 1.0
# Random residual branches add variance block after block; shrinking the last conv of each branch
# keeps activations far from the FP16 maximum (models.md section 7, "FP16 headroom").
RESIDUAL_SCALE = 0.2


class GraphBuilder:
    """Appends nodes in order, tracks each tensor's channel count and names initializers
    after the torch modules they come from (``<module>.weight``, ``<module>.bias``)."""

    def __init__(self, seed: int = 0, opset: int = OPSET) -> None:
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.channels: dict[str, int] = {}
        self._op_index = 0

    # ---- graph interface -------------------------------------------------------------------

    def add_input(self, name: str, shape: Shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.channels[name] = int(shape[1])
        return name

    def add_output(self, name: str, shape: Shape | None) -> None:
        dims = None if shape is None else list(shape)
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))

    def build(self, graph_name: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, graph_name, self.inputs, self.outputs, list(self.initializers.values())
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)],
            ir_version=IR_VERSIONS[self.opset],
            producer_name="facebench-replica",
        )
        return model

    # ---- weights -----------------------------------------------------------------------------

    def constant(self, name: str, array: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def normal(self, shape: Sequence[int], std: float) -> np.ndarray:
        return self.rng.standard_normal(tuple(shape), dtype=np.float32) * np.float32(std)

    def uniform(self, shape: Sequence[int], low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, tuple(shape)).astype(np.float32)

    # ---- nodes -------------------------------------------------------------------------------

    def _node(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs) -> str:
        node_name = f"{op_type}_{self._op_index}"
        self._op_index += 1
        out = out or node_name
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=node_name, **attrs))
        if inputs and inputs[0] in self.channels:
            self.channels.setdefault(out, self.channels[inputs[0]])
        return out

    def conv(
        self,
        x: str,
        c_out: int,
        kernel: int = 3,
        stride: int = 1,
        *,
        module: str,
        groups: int = 1,
        pad: int | None = None,
        bias: bool = True,
        bias_of: str | None = None,
        gain: float = RELU_GAIN,
        scale: float = 1.0,
        bias_init: float = 0.0,
        out: str | None = None,
    ) -> str:
        """Conv with seeded weights. ``bias_of`` reuses another module's bias initializer (the real
        SCRFD files share one bias between two convs that add into the same tensor). ``scale``
        shrinks a residual branch; ``bias_init`` sets the bias mean (e.g. a classifier prior)."""
        c_in = self.channels[x]
        fan_in = c_in // groups * kernel * kernel
        weight = self.normal((c_out, c_in // groups, kernel, kernel), scale * np.sqrt(gain / fan_in))
        inputs = [x, self.constant(f"{module}.weight", weight)]
        if bias_of is not None:
            inputs.append(f"{bias_of}.bias")
        elif bias:
            inputs.append(self.constant(f"{module}.bias", bias_init + self.normal((c_out,), 0.02 * scale)))
        pad = kernel // 2 if pad is None else pad
        y = self._node(
            "Conv", inputs, out, kernel_shape=[kernel, kernel], strides=[stride, stride],
            pads=[pad] * 4, dilations=[1, 1], group=groups,
        )  # fmt: skip
        self.channels[y] = c_out
        return y

    def gemm(self, x: str, n_out: int, *, module: str, bias: bool = True, out: str | None = None) -> str:
        n_in = self.channels[x]
        weight = self.normal((n_out, n_in), np.sqrt(LINEAR_GAIN / n_in))
        inputs = [x, self.constant(f"{module}.weight", weight)]
        if bias:
            inputs.append(self.constant(f"{module}.bias", self.normal((n_out,), 0.02)))
        y = self._node("Gemm", inputs, out, transB=1)
        self.channels[y] = n_out
        return y

    def batch_norm(self, x: str, *, module: str, out: str | None = None) -> str:
        c = self.channels[x]
        names = [
            self.constant(f"{module}.weight", self.uniform((c,), 0.8, 1.2)),
            self.constant(f"{module}.bias", self.normal((c,), 0.05)),
            self.constant(f"{module}.running_mean", self.normal((c,), 0.05)),
            self.constant(f"{module}.running_var", self.uniform((c,), 0.8, 1.2)),
        ]
        return self._node("BatchNormalization", [x, *names], out, epsilon=1e-5)

    def group_norm(self, x: str, groups: int, *, module: str) -> str:
        """GroupNorm as torch exports it before opset 18: Reshape to groups, InstanceNormalization,
        Reshape back to the runtime shape, then the per-channel affine."""
        c = self.channels[x]
        grouped = self._node("Reshape", [x, self.constant("group_norm.shape", np.array([0, groups, -1], np.int64))])
        unit = self.constant(f"group_norm.{groups}.scale", np.ones(groups, np.float32))
        zero = self.constant(f"group_norm.{groups}.bias", np.zeros(groups, np.float32))
        normed = self._node("InstanceNormalization", [grouped, unit, zero], epsilon=1e-5)
        restored = self._node("Reshape", [normed, self._node("Shape", [x])])
        self.channels[restored] = c
        gamma = self.constant(f"{module}.weight", self.uniform((c, 1, 1), 0.8, 1.2))
        beta = self.constant(f"{module}.bias", self.normal((c, 1, 1), 0.05))
        return self.add(self.mul(restored, gamma), beta)

    def relu(self, x: str, out: str | None = None) -> str:
        return self._node("Relu", [x], out)

    def prelu(self, x: str, *, module: str, out: str | None = None) -> str:
        slope = self.uniform((self.channels[x], 1, 1), 0.2, 0.3)  # torch's PReLU init is 0.25
        return self._node("PRelu", [x, self.constant(f"{module}.weight", slope)], out)

    def add(self, a: str, b: str, out: str | None = None) -> str:
        return self._node("Add", [a, b], out)

    def mul(self, a: str, b: str, out: str | None = None) -> str:
        return self._node("Mul", [a, b], out)

    def sigmoid(self, x: str, out: str | None = None) -> str:
        return self._node("Sigmoid", [x], out)

    def max_pool(self, x: str, kernel: int, stride: int) -> str:
        return self._node("MaxPool", [x], kernel_shape=[kernel, kernel], strides=[stride, stride])

    def avg_pool(self, x: str, kernel: int, stride: int) -> str:
        # mmdet's avg_down: AvgPool2d(ceil_mode=True, count_include_pad=False)
        return self._node(
            "AveragePool", [x], kernel_shape=[kernel, kernel], strides=[stride, stride],
            ceil_mode=1, count_include_pad=0,
        )  # fmt: skip

    def upsample_nearest(self, x: str, factor: int = 2) -> str:
        """Nearest Resize driven by a ``scales`` initializer, not constant ``sizes``, so the graph
        carries no baked-in batch and still runs when its batch dim is patched to dynamic."""
        scales = self.constant(f"resize.scales.{factor}", np.array([1, 1, factor, factor], np.float32))
        return self._node(
            "Resize", [x, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )  # fmt: skip

    def upsample_to_sizes(self, x: str, sizes: Sequence[int]) -> str:
        """Nearest Resize to constant `sizes` [1,C,H,W], as the named static export has it (batch 1
        baked in, reference/models.md section 7)."""
        sizes_name = self.constant("resize.sizes." + "_".join(map(str, sizes)), np.array(sizes, np.int64))
        return self._resize(x, sizes_name)

    def upsample_like(self, x: str, like: str) -> str:
        """Nearest Resize to the run-time size of `like`, as torch 1.6 traced F.interpolate(size=...)
        in the model-pack exports: sizes = Concat(Shape(x)[0:2], Shape(like)[2], Shape(like)[3])."""
        height = self.unsqueeze(self.gather(self.shape(like), 2), 0)
        width = self.unsqueeze(self.gather(self.shape(like), 3), 0)
        batch_channels = self.slice(self.shape(x), 0, 2)
        return self._resize(x, self._node("Concat", [batch_channels, height, width], axis=0))

    def _resize(self, x: str, sizes: str) -> str:
        # Resize-11 needs roi and scales inputs even with sizes: one empty tensor for both.
        empty = self.constant("resize.empty", np.zeros(0, np.float32)) if self.opset < 13 else ""
        return self._node(
            "Resize", [x, empty, empty, sizes], mode="nearest", coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )  # fmt: skip

    def shape(self, x: str) -> str:
        return self._node("Shape", [x])

    def gather(self, x: str, index: int) -> str:
        return self._node("Gather", [x, self.constant(f"index.{index}", np.array(index, np.int64))], axis=0)

    def unsqueeze(self, x: str, axis: int) -> str:
        if self.opset < 13:
            return self._node("Unsqueeze", [x], axes=[axis])
        return self._node("Unsqueeze", [x, self.constant(f"axes.{axis}", np.array([axis], np.int64))])

    def slice(self, x: str, start: int, end: int) -> str:
        starts = self.constant(f"slice.{start}", np.array([start], np.int64))
        ends = self.constant(f"slice.{end}", np.array([end], np.int64))
        return self._node("Slice", [x, starts, ends, self.constant("slice.0", np.array([0], np.int64))])

    def transpose(self, x: str, perm: Sequence[int], out: str | None = None) -> str:
        return self._node("Transpose", [x], out, perm=list(perm))

    def reshape(self, x: str, shape: Sequence[int], out: str | None = None) -> str:
        key = "reshape.shape." + "_".join(str(d) for d in shape)
        return self._node("Reshape", [x, self.constant(key, np.array(shape, np.int64))], out)

    def flatten(self, x: str, features: int, out: str | None = None) -> str:
        y = self._node("Flatten", [x], out, axis=1)
        self.channels[y] = features
        return y
