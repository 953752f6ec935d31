"""Architecture-faithful SCRFD replicas (reference/models.md sections 1, 5 and 7).

Layers, shapes, parameter and MAC counts follow the mmdet configs; the weights are seeded random
numbers, so the replicas time like the real detectors but find no faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from bench.models.graph import LINEAR_GAIN, RESIDUAL_SCALE, GraphBuilder

SCRFD_VARIANTS = ("500m", "2.5g", "10g", "34g")
# The forms SCRFD files ship in (fixtures/README.md, reference/models.md 6.1 and 4.3):
#   pack     the InsightFace model packs (det_500m / det_2.5g / det_10g): input [1,3,?,?], batch
#            flattened into 2-D outputs named by number, Resize sizes computed at run time; opset 11
#   named    the static named export (scrfd_500m_bnkps.onnx): [1,3,S,S], outputs score_8.. [1,HWA,K],
#            Reshape [1,-1,K] and Resize sizes [1,C,H,W] constants (batch 1 baked in); opset 11
#   batched  a dynamic-batch re-export (scrfd_10g_320_batch.onnx): [N,3,S,S], outputs [N,HWA,K]
SCRFD_EXPORTS = ("pack", "named", "batched")
EXPORT_OPSET = {"pack": 11, "named": 11, "batched": 17}
STRIDES = (8, 16, 32)
# insightface's SCRFD decoder: 3 levels with 2 anchors (6 or 9 outputs), or 5 levels with 1 (10 or 15).
LEVEL_STRIDES = {3: (8, 16, 32), 5: (8, 16, 32, 64, 128)}
LEVEL_ANCHORS = {3: 2, 5: 1}
OUTPUT_WIDTHS = {"score": 1, "bbox": 4, "kps": 10}
# torch's numeric output names in the shipped packs: (first score, bbox, kps name, step per level).
PACK_OUTPUT_NUMBERS = {"500m": (443, 446, 449, 25), "default": (448, 451, 454, 23)}
# The pack exports traced a 640 dummy, so their outputs keep 640-sized static shapes even though
# the input's H and W are symbolic (ORT then warns at other sizes, section 1.5).
PACK_TRACE_SIZE = 640
NAMED_DEFAULT_SIZE = 640

# mmdet initialises the classifier bias to the prior of p = 0.01, so untrained scores sit near
# 0.01 instead of 0.5 (which would flood decode and NMS with candidates).
CLS_PRIOR_BIAS = float(-np.log((1 - 0.01) / 0.01))
PREDICTOR_SCALE = 0.5


@dataclass(frozen=True)
class ScrfdConfig:
    backbone: str  # "mobilenet_v1" or "resnet_v1e"
    stage_blocks: tuple[int, ...]
    stage_planes: tuple[int, ...]
    neck_channels: int
    stacked_convs: int
    feat_channels: int
    scale_mode: int
    use_kps: bool
    block: str = "basic"  # ResNetV1e block: "basic" or "bottleneck"
    dw_conv: bool = False
    group_norm_groups: int = 0  # 0: BN, folded into the tower convs
    strides_share: bool = False


SCRFD_CONFIGS = {
    "500m": ScrfdConfig(
        backbone="mobilenet_v1", stage_blocks=(2, 3, 2, 6), stage_planes=(16, 16, 40, 72, 152, 288),
        neck_channels=16, stacked_convs=2, feat_channels=64, scale_mode=0, use_kps=True, dw_conv=True,
    ),
    "2.5g": ScrfdConfig(
        backbone="resnet_v1e", stage_blocks=(3, 5, 3, 2), stage_planes=(24, 48, 48, 80),
        neck_channels=24, stacked_convs=2, feat_channels=64, scale_mode=2, use_kps=True,
    ),
    "10g": ScrfdConfig(
        backbone="resnet_v1e", stage_blocks=(3, 4, 2, 3), stage_planes=(56, 88, 88, 224),
        neck_channels=56, stacked_convs=3, feat_channels=80, scale_mode=2, use_kps=True,
    ),
    "34g": ScrfdConfig(
        backbone="resnet_v1e", stage_blocks=(17, 16, 2, 8), stage_planes=(56, 56, 144, 184),
        neck_channels=128, stacked_convs=2, feat_channels=256, scale_mode=2, use_kps=False,
        block="bottleneck", group_norm_groups=32, strides_share=True,
    ),
}  # fmt: skip


def build_scrfd(
    variant: str, input_size: int | None = 640, *, seed: int = 0, export: str = "batched",
    levels: int = 3, kps: bool | None = None,
) -> onnx.ModelProto:
    """Build an SCRFD replica in one of SCRFD_EXPORTS.

    input_size: the square input (None: H and W symbolic, batched only); for the pack form, whose
    H and W are always symbolic, the size its declared output shapes were traced at.
    levels: 3 (strides 8/16/32, 2 anchors) or 5 (8..128, 1 anchor, the extra levels max-pooled
    from the last neck output as mmdet's PAFPN does). kps: keypoint outputs (default: the config's).
    """
    _check_arguments(variant, input_size, export, levels)
    config = SCRFD_CONFIGS[variant]
    strides = LEVEL_STRIDES[levels]
    use_kps = config.use_kps if kps is None else kps
    size = input_size or (NAMED_DEFAULT_SIZE if export == "named" else None)
    b = GraphBuilder(seed, opset=EXPORT_OPSET[export])
    x = b.add_input("input.1", _input_shape(size, export))
    features = _backbone(b, x, config)[1:]  # the neck starts at C3 (start_level=1)
    neck = _pafpn(b, features, config.neck_channels, _upsampler(b, export, size, config.neck_channels))
    while len(neck) < levels:  # mmdet's extra levels without extra convs: max_pool2d(kernel 1, stride 2)
        neck.append(b.max_pool(neck[-1], 1, 2))
    kinds = [kind for kind in OUTPUT_WIDTHS if kind != "kps" or use_kps]
    outputs = {kind: [] for kind in kinds}
    for level, (feature, stride) in enumerate(zip(neck, strides)):
        predictions = _head(b, feature, level, stride, config, LEVEL_ANCHORS[levels], use_kps)
        for kind in kinds:
            name = _output_name(variant, kind, level, stride, export)
            outputs[kind].append(_export_output(b, predictions[kind], kind, name, export))
    for kind, names in outputs.items():
        for name, stride in zip(names, strides):
            b.add_output(name, _output_shape(kind, stride, size, export, LEVEL_ANCHORS[levels]))
    suffix = "_bnkps" if use_kps else ""
    return b.build(f"scrfd_{variant}{suffix}")


def _check_arguments(variant: str, input_size: int | None, export: str, levels: int) -> None:
    if variant not in SCRFD_CONFIGS:
        raise ValueError(f"unknown SCRFD variant {variant!r}; expected one of {SCRFD_VARIANTS}")
    if export not in SCRFD_EXPORTS:
        raise ValueError(f"unknown export {export!r}; expected one of {SCRFD_EXPORTS}")
    if levels not in LEVEL_STRIDES:
        raise ValueError(f"levels must be 3 or 5 (insightface's SCRFD decoder), got {levels}")
    if input_size is not None and (input_size <= 0 or input_size % max(STRIDES)):
        raise ValueError(f"input_size must be a positive multiple of {max(STRIDES)}, got {input_size}")


# ---- interface ---------------------------------------------------------------------------


def _input_shape(input_size: int | None, export: str) -> list:
    if export == "pack":
        return [1, 3, "?", "?"]
    batch = "N" if export == "batched" else 1
    if input_size is None:
        return [batch, 3, "H", "W"]
    return [batch, 3, input_size, input_size]


def _output_name(variant: str, kind: str, level: int, stride: int, export: str) -> str:
    if export != "pack":
        return f"{kind}_{stride}"
    *firsts, step = PACK_OUTPUT_NUMBERS.get(variant, PACK_OUTPUT_NUMBERS["default"])
    return str(dict(zip(OUTPUT_WIDTHS, firsts))[kind] + step * level)


def _output_shape(kind: str, stride: int, input_size: int | None, export: str, anchors: int) -> list:
    width = OUTPUT_WIDTHS[kind]
    if export == "pack":
        side = -(-(input_size or PACK_TRACE_SIZE) // stride)
        return [side * side * anchors, width]
    batch = "N" if export == "batched" else 1
    if input_size is None:
        return [batch, f"anchors_{stride}", width]
    return [batch, (-(-input_size // stride)) ** 2 * anchors, width]


def _export_output(b: GraphBuilder, x: str, kind: str, name: str, export: str) -> str:
    width = OUTPUT_WIDTHS[kind]
    if export == "pack":
        # (h, w, n, c) rows: frames interleave per cell when N > 1, as in the shipped files.
        perm, target = [2, 3, 0, 1], [-1, width]
    else:
        perm, target = [0, 2, 3, 1], [1 if export == "named" else 0, -1, width]
    rows = b.reshape(b.transpose(x, perm), target, out=None if kind == "score" else name)
    return b.sigmoid(rows, out=name) if kind == "score" else rows


def _upsampler(b: GraphBuilder, export: str, size: int | None, channels: int):
    """(x, like, stride) -> x resized onto `like` (the level at `stride`), each export its own way."""
    if export == "pack":
        return lambda x, like, stride: b.upsample_like(x, like)
    if export == "named":
        return lambda x, like, stride: b.upsample_to_sizes(x, [1, channels, -(-size // stride), -(-size // stride)])
    return lambda x, like, stride: b.upsample_nearest(x)


# ---- backbones ---------------------------------------------------------------------------


def _backbone(b: GraphBuilder, x: str, config: ScrfdConfig) -> list[str]:
    if config.backbone == "mobilenet_v1":
        return _mobilenet_v1(b, x, config)
    return _resnet_v1e(b, x, config)


def _conv_dw(b: GraphBuilder, x: str, c_out: int, stride: int, module: str) -> str:
    c_in = b.channels[x]
    x = b.relu(b.conv(x, c_in, 3, stride, groups=c_in, module=f"{module}.0"))
    return b.relu(b.conv(x, c_out, 1, module=f"{module}.3"))


def _mobilenet_v1(b: GraphBuilder, x: str, config: ScrfdConfig) -> list[str]:
    planes = config.stage_planes
    x = b.relu(b.conv(x, planes[0], 3, 2, module="backbone.stem.0.0"))
    x = _conv_dw(b, x, planes[1], 1, "backbone.stem.1")
    features = []
    for stage, blocks in enumerate(config.stage_blocks):
        for index in range(blocks):
            x = _conv_dw(b, x, planes[stage + 2], 2 if index == 0 else 1, f"backbone.layer{stage + 1}.{index}")
        features.append(x)
    return features


def _resnet_v1e(b: GraphBuilder, x: str, config: ScrfdConfig) -> list[str]:
    # deep stem (3 convs, the first with stride 2) then a 2x2 max pool instead of the 3x3 one
    stem = config.stage_planes[0]
    for index, (c_out, stride) in enumerate([(stem // 2, 2), (stem // 2, 1), (stem, 1)]):
        x = b.relu(b.conv(x, c_out, 3, stride, module=f"backbone.stem.{3 * index}"))
    x = b.max_pool(x, 2, 2)
    block = _bottleneck if config.block == "bottleneck" else _basic_block
    features = []
    for stage, (blocks, planes) in enumerate(zip(config.stage_blocks, config.stage_planes)):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            x = block(b, x, planes, stride, f"backbone.layer{stage + 1}.{index}")
        features.append(x)
    return features


def _shortcut(b: GraphBuilder, x: str, c_out: int, stride: int, module: str) -> str:
    if stride == 1 and b.channels[x] == c_out:
        return x
    if stride > 1:  # avg_down: pool first, then a stride-1 projection
        x = b.avg_pool(x, stride, stride)
    return b.conv(x, c_out, 1, module=f"{module}.downsample.1", gain=LINEAR_GAIN)


def _basic_block(b: GraphBuilder, x: str, planes: int, stride: int, module: str) -> str:
    y = b.relu(b.conv(x, planes, 3, stride, module=f"{module}.conv1"))
    y = b.conv(y, planes, 3, module=f"{module}.conv2", gain=LINEAR_GAIN, scale=RESIDUAL_SCALE)
    return b.relu(b.add(y, _shortcut(b, x, planes, stride, module)))


def _bottleneck(b: GraphBuilder, x: str, planes: int, stride: int, module: str) -> str:
    c_out = planes * 4
    y = b.relu(b.conv(x, planes, 1, module=f"{module}.conv1"))
    y = b.relu(b.conv(y, planes, 3, stride, module=f"{module}.conv2"))
    y = b.conv(y, c_out, 1, module=f"{module}.conv3", gain=LINEAR_GAIN, scale=RESIDUAL_SCALE)
    return b.relu(b.add(y, _shortcut(b, x, c_out, stride, module)))


# ---- neck and head -----------------------------------------------------------------------


def _pafpn(b: GraphBuilder, features: list[str], channels: int, upsample) -> list[str]:
    """PAFPN as wired in section 7: top-down adds, fpn_convs, bottom-up downsample adds (sharing
    the fpn_conv bias of the level they add into), then pafpn_convs on levels 1 and 2."""

    def conv(x: str, kernel: int, module: str, stride: int = 1, bias_of: str | None = None) -> str:
        return b.conv(x, channels, kernel, stride, module=module, bias_of=bias_of, gain=LINEAR_GAIN)

    laterals = [conv(f, 1, f"neck.lateral_convs.{i}.conv") for i, f in enumerate(features)]
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = b.add(laterals[i - 1], upsample(laterals[i], laterals[i - 1], STRIDES[i - 1]))
    levels = [conv(lateral, 3, f"neck.fpn_convs.{i}.conv") for i, lateral in enumerate(laterals)]
    for i in range(len(levels) - 1):
        down = conv(levels[i], 3, f"neck.downsample_convs.{i}.conv", 2, bias_of=f"neck.fpn_convs.{i + 1}.conv")
        levels[i + 1] = b.add(levels[i + 1], down)
    return [levels[0]] + [conv(levels[i], 3, f"neck.pafpn_convs.{i - 1}.conv") for i in range(1, len(levels))]


def _head(
    b: GraphBuilder, x: str, level: int, stride: int, config: ScrfdConfig, anchors: int, use_kps: bool
) -> dict[str, str]:
    """One stride's tower and predictors; bbox gets the learnable Scale in NCHW (scale_mode 2)."""
    key = "" if config.strides_share else f".({stride}, {stride})"
    tower = f"bbox_head.cls_stride_convs{key}"
    for index in range(config.stacked_convs):
        x = _tower_conv(b, x, config, f"{tower}.{index}")
    width = {kind: anchors * k for kind, k in OUTPUT_WIDTHS.items()}

    def predictor(kind: str, bias_init: float = 0.0) -> str:
        return b.conv(
            x, width[kind], 3, module=f"bbox_head.stride_{kind}{key}", gain=LINEAR_GAIN,
            scale=PREDICTOR_SCALE, bias_init=bias_init,
        )  # fmt: skip

    predictions = {"score": predictor("score", CLS_PRIOR_BIAS), "bbox": predictor("bbox")}
    if config.scale_mode == 2:
        scale = b.constant(f"bbox_head.scales.{level}.scale", np.array(1.0, np.float32))
        predictions["bbox"] = b.mul(predictions["bbox"], scale)
    if use_kps:
        predictions["kps"] = predictor("kps")
    return predictions


def _tower_conv(b: GraphBuilder, x: str, config: ScrfdConfig, module: str) -> str:
    if config.dw_conv:  # depthwise 3x3 + BN + ReLU, then 1x1 to feat_channels + BN + ReLU
        c_in = b.channels[x]
        x = b.relu(b.conv(x, c_in, 3, groups=c_in, module=f"{module}.conv.0"))
        return b.relu(b.conv(x, config.feat_channels, 1, module=f"{module}.conv.3"))
    if config.group_norm_groups:
        x = b.conv(x, config.feat_channels, 3, module=f"{module}.conv", bias=False)
        return b.relu(b.group_norm(x, config.group_norm_groups, module=f"{module}.gn"))
    return b.relu(b.conv(x, config.feat_channels, 3, module=f"{module}.conv"))
