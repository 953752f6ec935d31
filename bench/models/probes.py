"""Peak probes: one-operator ONNX models whose nominal FLOPs are known exactly.

Run through the same runtime, settings and precision as a sweep point, they tell what
that runtime reaches on this machine for the two operations face models are made of:
a large GEMM and a large 3x3 convolution (IResNet-50's body is 3x3 convolutions).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PROBE_OPSET = 17


@dataclass(frozen=True)
class ProbeShape:
    """A probe model's input shape and the nominal MACs of one inference."""

    kind: str  # "gemm" | "conv"
    input_shape: tuple[int, ...]
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


# Big enough to keep two cores busy for tens of ms, small enough for a 16-core GPU host.
GEMM = ProbeShape("gemm", (512, 1024), 512 * 1024 * 1024)  # [M, K] x [K, N], N = 1024
CONV_CHANNELS, CONV_HW, CONV_BATCH = 128, 28, 8
CONV = ProbeShape("conv", (CONV_BATCH, CONV_CHANNELS, CONV_HW, CONV_HW),
                  CONV_BATCH * CONV_HW * CONV_HW * CONV_CHANNELS * CONV_CHANNELS * 9)
PROBES = {probe.kind: probe for probe in (GEMM, CONV)}


def build_probe(kind: str, seed: int = 0) -> onnx.ModelProto:
    """The probe model named `kind` with seeded random weights (std so activations stay O(1))."""
    rng = np.random.default_rng(seed)
    shape = PROBES[kind].input_shape
    if kind == "gemm":
        k = shape[1]
        weight = (rng.standard_normal((k, k)) / np.sqrt(k)).astype(np.float32)
        node = helper.make_node("MatMul", ["input", "weight"], ["output"])
        out_shape = list(shape)
    else:
        c = shape[1]
        weight = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        node = helper.make_node("Conv", ["input", "weight"], ["output"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        out_shape = list(shape)
    graph = helper.make_graph(
        [node], f"{kind}_probe",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(weight, "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", PROBE_OPSET)],
                              producer_name="facebench-probe")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
