"""Architecture-faithful ArcFace recogniser replicas: IResNet-50 (w600k_r50) and MobileFaceNet
(w600k_mbf, arcface_torch ``get_mbf``), reference/models.md sections 3, 5.4 and 7."""

from __future__ import annotations

import onnx

from bench.models.graph import LINEAR_GAIN, RESIDUAL_SCALE, GraphBuilder

ARCFACE_VARIANTS = ("r50", "mbf")
INPUT_NAME = "input.1"
INPUT_SIZE = 112
EMBEDDING_SIZE = 512
# Output names of the real w600k_r50.onnx and w600k_mbf.onnx (torch's default numbering).
OUTPUT_NAMES = {"r50": "683", "mbf": "516"}

IRESNET50_BLOCKS = (3, 4, 14, 3)
IRESNET_PLANES = (64, 128, 256, 512)
# get_mbf: (output channels, expansion width, stride, residual blocks) after the stem
MBF_STAGES = ((128, 128, 2, 4), (256, 256, 2, 6), (256, 512, 2, 2))
MBF_RESIDUAL_WIDTHS = (128, 256, 256)  # expansion width inside each stage's residual blocks


def build_arcface(variant: str, *, seed: int = 0) -> onnx.ModelProto:
    """Build a recogniser replica: input ``input.1`` [N,3,112,112], output [N,512]."""
    if variant not in ARCFACE_VARIANTS:
        raise ValueError(f"unknown ArcFace variant {variant!r}; expected one of {ARCFACE_VARIANTS}")
    b = GraphBuilder(seed)
    x = b.add_input(INPUT_NAME, ["N", 3, INPUT_SIZE, INPUT_SIZE])
    output = OUTPUT_NAMES[variant]
    if variant == "r50":
        _iresnet(b, x, IRESNET50_BLOCKS, output)
    else:
        _mobilefacenet(b, x, output)
    b.add_output(output, ["N", EMBEDDING_SIZE])
    return b.build(f"w600k_{variant}")


# ---- IResNet -----------------------------------------------------------------------------


def _iresnet(b: GraphBuilder, x: str, blocks: tuple[int, ...], output: str) -> str:
    x = b.prelu(b.conv(x, IRESNET_PLANES[0], 3, module="conv1"), module="prelu")
    for stage, (count, planes) in enumerate(zip(blocks, IRESNET_PLANES)):
        for index in range(count):
            x = _ibasic_block(b, x, planes, 2 if index == 0 else 1, f"layer{stage + 1}.{index}")
    # bn2 has no conv before it to fold into, so it stays a BatchNormalization node
    x = b.batch_norm(x, module="bn2")
    side = INPUT_SIZE // 16
    x = b.flatten(x, IRESNET_PLANES[-1] * side * side)
    return b.gemm(x, EMBEDDING_SIZE, module="fc", out=output)  # the features BN1d is folded in


def _ibasic_block(b: GraphBuilder, x: str, planes: int, stride: int, module: str) -> str:
    """Pre-activation block: BN, conv, PReLU, conv(stride); no activation after the add."""
    y = b.batch_norm(x, module=f"{module}.bn1")  # cannot fold forward across the conv's zero padding
    y = b.prelu(b.conv(y, planes, 3, module=f"{module}.conv1"), module=f"{module}.prelu")
    y = b.conv(y, planes, 3, stride, module=f"{module}.conv2", gain=LINEAR_GAIN, scale=RESIDUAL_SCALE)
    shortcut = x
    if stride != 1 or b.channels[x] != planes:
        shortcut = b.conv(x, planes, 1, stride, module=f"{module}.downsample.0", gain=LINEAR_GAIN)
    return b.add(y, shortcut)


# ---- MobileFaceNet -----------------------------------------------------------------------


def _mobilefacenet(b: GraphBuilder, x: str, output: str) -> str:
    x = _conv_block(b, x, 128, 3, 2, module="layers.0")
    x = _conv_block(b, x, 128, 3, 1, module="layers.1", groups=64)  # 2 channels per group
    layer = 2
    for (c_out, expansion, stride, residuals), residual_width in zip(MBF_STAGES, MBF_RESIDUAL_WIDTHS):
        x = _depthwise(b, x, c_out, expansion, stride, module=f"layers.{layer}", residual=False)
        for index in range(residuals):
            x = _depthwise(b, x, c_out, residual_width, 1, module=f"layers.{layer + 1}.layers.{index}", residual=True)
        layer += 2
    x = _conv_block(b, x, 512, 1, 1, module="conv_sep")
    # GDC: depthwise 7x7 (BN folded, no activation), flatten, Linear without bias + BN1d (folded)
    x = b.conv(x, 512, 7, groups=512, pad=0, module="features.layers.0.layers.0", gain=LINEAR_GAIN)
    x = b.flatten(x, 512)
    return b.gemm(x, EMBEDDING_SIZE, module="features.layers.2", out=output)


def _conv_block(b: GraphBuilder, x: str, c_out: int, kernel: int, stride: int, *, module: str, groups: int = 1) -> str:
    y = b.conv(x, c_out, kernel, stride, groups=groups, module=f"{module}.layers.0")
    return b.prelu(y, module=f"{module}.layers.2")


def _depthwise(
    b: GraphBuilder, x: str, c_out: int, expansion: int, stride: int, *, module: str, residual: bool
) -> str:
    """1x1 expand + PReLU, depthwise 3x3 + PReLU, linear 1x1; nothing after the linear conv or the add."""
    y = _conv_block(b, x, expansion, 1, 1, module=f"{module}.layers.0")
    y = _conv_block(b, y, expansion, 3, stride, module=f"{module}.layers.1", groups=expansion)
    scale = RESIDUAL_SCALE if residual else 1.0
    y = b.conv(y, c_out, 1, module=f"{module}.layers.2.layers.0", gain=LINEAR_GAIN, scale=scale)
    return b.add(x, y) if residual else y
