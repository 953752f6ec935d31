"""Precision artifacts built from one FP32 ONNX, and the frames that calibrate them.

Every variant is a new file in a cache folder, named by the source's sha256, the
variant and a digest of the settings that built it, so a changed recipe (or a new
converter version, or other calibration frames) never reuses a stale artifact:

- fp16: weights and compute in FP16, inputs and outputs kept FP32, via
  onnxconverter-common (the maintained converter; TensorRT 11 takes its precision
  from the ONNX, runtimes.md 3.3).
- bf16: the same graph as fp16 with every FP16 tensor BF16 (weights rounded from the
  FP32 source, not from FP16), at opset 22 where Conv takes BF16; for TensorRT, whose
  strongly typed 11.x networks compute in the ONNX's types (OpenVINO computes BF16 from
  its precision hint over the FP32 graph instead).
- int8: QDQ from onnxruntime.quantization.quantize_static, per-channel weights,
  calibrated on recorded frames, Sigmoid outputs (SCRFD scores) kept float, with the
  recipe chosen for the target (int8_recipe_for): symmetric S8S8 for TensorRT and for
  CPUs with an INT8 dot product (VNNI, AMX, Arm), U8S8 with 7-bit weights on x86 without.
- simplified: onnxslim (or onnxsim when that is what is installed).
- OpenVINO IR: make_openvino_ir, the model as ov.save_model writes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter

from bench import env
from bench.domain import EMBEDDER, Family
from bench.domain import family as model_family
from bench.errors import ModelFileError, UserError
from bench.face.images import resize_bilinear, to_blob
from bench.fileio import sha256_file
from bench.models.layout import analyze_batch_layout

# The precisions make_artifact builds (OpenVINO IR has its own maker, make_openvino_ir).
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "simplified")

DEFAULT_CALIBRATION_FRAMES = 32

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# --------------------------------------------------------------------------- artifacts

def make_artifact(src_path: str | os.PathLike, precision: str, cache_dir: str | os.PathLike,
                  calibration_frames: np.ndarray | None = None, int8_recipe: "Int8Recipe | None" = None) -> Path:
    """Path to `src_path` converted to `precision`, built into `cache_dir` unless cached.

    fp32 is the source itself. For int8 without frames, synthetic face-like frames
    shaped for the model are used (see calibration_frames); without a recipe, the one
    for this machine's CPU.
    """
    src = Path(src_path)
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if not src.is_file():
        raise ModelFileError(f"model file not found: {src}")
    if precision == "fp32":
        return src
    if precision == "fp16":
        return make_fp16(src, cache_dir)
    if precision == "bf16":
        return make_bf16(src, cache_dir)
    if precision == "int8":
        return make_int8(src, cache_dir, calibration_frames, int8_recipe)
    return make_simplified(src, cache_dir)


def make_fp16(src_path: str | os.PathLike, cache_dir: str | os.PathLike, keep_io_types: bool = True) -> Path:
    """FP16 weights and compute with FP32 inputs and outputs (Casts at the edges); with
    keep_io_types=False the graph's inputs and outputs are float16 too (FP16 I/O)."""
    from onnxconverter_common import __version__ as converter_version
    from onnxconverter_common import float16

    settings = {"converter": "onnxconverter-common", "version": converter_version, "keep_io_types": keep_io_types}

    def build(src: Path, out: Path) -> None:
        with warnings.catch_warnings():
            # It warns for every weight below FP16's range that it flushes to +-1e-7: expected.
            warnings.filterwarnings("ignore", message=".*will be truncated to.*")
            model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=keep_io_types)
        onnx.save(model, str(out))

    return _cached(Path(src_path), "fp16" if keep_io_types else "fp16-io", settings, cache_dir, build)


# The first opset whose Conv (and pooling) accept bfloat16.
_MIN_BF16_OPSET = 22


def make_bf16(src_path: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """BF16 weights and compute with FP32 inputs and outputs (Casts at the edges), ops the FP16
    converter keeps in FP32 (Resize) kept there; the graph is lifted to opset 22 first."""
    from onnxconverter_common import __version__ as converter_version

    settings = {"converter": "onnxconverter-common", "version": converter_version, "opset": _MIN_BF16_OPSET,
                "rounding": "nearest-even from fp32"}

    def build(src: Path, out: Path) -> None:
        model = onnx.load(str(src))
        if _default_opset(model) < _MIN_BF16_OPSET:
            model = onnx.version_converter.convert_version(model, _MIN_BF16_OPSET)
        onnx.save(fp16_graph_as_bf16(model), str(out))

    return _cached(Path(src_path), "bf16", settings, cache_dir, build)


def fp16_graph_as_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` (FP32) through the FP16 converter, then every FP16 type made BF16: BF16 keeps FP32's
    range, so each weight is rounded from its FP32 value (FP16 would have flushed and clamped it)."""
    from onnxconverter_common import float16

    fp32_weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer
                    if i.data_type == onnx.TensorProto.FLOAT}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will be truncated to.*")  # FP16 range, undone below
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    graph = half.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT16:
            graph.initializer[index].CopyFrom(_bf16_tensor(tensor, fp32_weights.get(tensor.name)))
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == onnx.TensorProto.FLOAT16:
                attribute.t.CopyFrom(_bf16_tensor(attribute.t))
            elif attribute.name in ("to", "dtype") and attribute.i == onnx.TensorProto.FLOAT16:
                attribute.i = onnx.TensorProto.BFLOAT16
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = onnx.TensorProto.BFLOAT16
    return half


def _bf16_tensor(tensor: onnx.TensorProto, fp32: np.ndarray | None = None) -> onnx.TensorProto:
    """`tensor` in BF16, rounded to nearest even from `fp32` where given, else from its own values."""
    import ml_dtypes  # onnx's own dependency for its 16-bit float types

    values = fp32 if fp32 is not None else onnx.numpy_helper.to_array(tensor).astype(np.float32)
    return onnx.numpy_helper.from_array(np.asarray(values, dtype=np.float32).astype(ml_dtypes.bfloat16), tensor.name)


@dataclass(frozen=True)
class Int8Recipe:
    """How quantize_static makes the INT8 artifact; its fields are part of the cache key."""

    name: str
    activation_type: str  # "int8" or "uint8"
    activation_symmetric: bool
    reduce_range: bool  # 7-bit weights
    reason: str
    weight_type: str = "int8"
    weight_symmetric: bool = True
    per_channel: bool = True
    calibrate: str = "MinMax"


INT8_RECIPES = {recipe.name: recipe for recipe in (
    Int8Recipe("s8s8", "int8", True, False,
               "symmetric INT8: TensorRT needs zero-point 0, and VNNI / AMX / Arm dot products do not saturate"),
    # ONNX Runtime's guidance for x86 without VNNI: its U8S8 kernels use VPMADDUBSW, whose
    # int16 pair sums saturate on full-range weights; 7-bit weights keep them in range.
    Int8Recipe("u8s8-reduce-range", "uint8", False, True,
               "x86 without VNNI: 7-bit weights keep VPMADDUBSW's int16 sums from saturating"),
)}
# CPU features with an INT8 dot product that accumulates in int32 (no int16 saturation).
INT8_DOT_FEATURES = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
RECIPE_ENV = "FACEBENCH_INT8_RECIPE"


def int8_recipe_for(device: str, cpu_features: Collection[str], machine: str) -> Int8Recipe:
    """The INT8 recipe for a runtime on `device` ("cpu" / "gpu") of this machine.

    $FACEBENCH_INT8_RECIPE (a name in INT8_RECIPES) overrides the choice.
    """
    forced = forced_int8_recipe()
    if forced:
        return forced
    if device == "cpu" and saturating_int8_cpu(cpu_features, machine):
        return INT8_RECIPES["u8s8-reduce-range"]
    return INT8_RECIPES["s8s8"]


def saturating_int8_cpu(cpu_features: Collection[str], machine: str) -> bool:
    """x86 without an int32-accumulating INT8 dot product: its U8S8 kernels sum pairs in int16."""
    return machine.lower() in ("x86_64", "amd64", "i686", "x86") and not INT8_DOT_FEATURES & set(cpu_features)


def forced_int8_recipe() -> Int8Recipe | None:
    """The recipe $FACEBENCH_INT8_RECIPE names (None when unset); a wrong name is the user's error."""
    forced = os.environ.get(RECIPE_ENV)
    if not forced:
        return None
    if forced not in INT8_RECIPES:
        raise UserError(f"{RECIPE_ENV}={forced!r} is not an INT8 recipe; use one of {', '.join(INT8_RECIPES)}")
    return INT8_RECIPES[forced]


def host_int8_recipe(device: str = "cpu") -> Int8Recipe:
    return int8_recipe_for(device, env.cpu_features(), platform.machine())


def int8_failure_hint(recipe_name: str | None) -> str:
    """The likely cause when INT8 misses its parity gate on this machine ("" when none is known)."""
    if saturating_int8_cpu(env.cpu_features(), platform.machine()):
        return (f"no VNNI: INT8 loses accuracy to saturation on this CPU (recipe {recipe_name or 'unknown'}); "
                "calibrate on real frames (--images) or run INT8 where VNNI/AMX exists")
    return ""


def make_int8(src_path: str | os.PathLike, cache_dir: str | os.PathLike,
              calibration_frames: np.ndarray | None = None, recipe: Int8Recipe | None = None) -> Path:
    """QDQ INT8 per `recipe` (default: this CPU's), per-channel weights, MinMax calibration."""
    import onnxruntime

    src = Path(src_path)
    recipe = recipe or host_int8_recipe()
    if calibration_frames is None:
        model = onnx.load(str(src), load_external_data=False)
        calibration_frames = calibration_frames_for(model, guess_family(model), DEFAULT_CALIBRATION_FRAMES)
    frames = np.ascontiguousarray(calibration_frames, dtype=np.float32)
    settings = {"format": "QDQ", "recipe": asdict(recipe), "pre_process": True,
                "float_outputs": ["Sigmoid"], "opsets": "used-only",
                "onnxruntime": onnxruntime.__version__,
                "frames": hashlib.sha256(frames.tobytes() + str(frames.shape).encode()).hexdigest()[:16]}

    def build(src: Path, out: Path) -> None:
        _quantize_qdq(src, out, frames, recipe)

    return _cached(src, f"int8-{recipe.name}", settings, cache_dir, build)


def make_simplified(src_path: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """The graph after onnxslim (preferred) or onnxsim: folded constants, fused no-ops."""
    tool, version, simplify = _simplifier()
    settings = {"tool": tool, "version": version}

    def build(src: Path, out: Path) -> None:
        onnx.save(simplify(onnx.load(str(src))), str(out))

    return _cached(Path(src_path), "simplified", settings, cache_dir, build)


def make_openvino_ir(src_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                     compress_to_fp16: bool = False) -> Path:
    """The model as OpenVINO IR (.xml + .bin); returns the .xml path.

    FP32 weights by default so the IR differs from the ONNX only in format (read and
    compile cost); ov.save_model's own default, FP16 weights, is compress_to_fp16=True.
    """
    import openvino as ov

    src = Path(src_path)
    if not src.is_file():
        raise ModelFileError(f"model file not found: {src}")
    weights = "f16" if compress_to_fp16 else "f32"
    digest = _settings_digest({"openvino": ov.__version__, "weights": weights})
    final_dir = Path(out_dir) / f"{src.stem}-{sha256_file(src)[:12]}-ir-{weights}-{digest}"
    xml = final_dir / f"{src.stem}.xml"
    if xml.is_file():
        return xml
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=out_dir, prefix=".ir-"))
    try:
        ov.save_model(ov.convert_model(str(src)), str(tmp_dir / xml.name), compress_to_fp16=compress_to_fp16)
        try:
            os.replace(tmp_dir, final_dir)
        except OSError:  # another process finished the same IR first
            if not xml.is_file():
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return xml


def _cached(src: Path, precision: str, settings: dict, cache_dir: str | os.PathLike,
            build: Callable[[Path, Path], None]) -> Path:
    if not src.is_file():
        raise ModelFileError(f"model file not found: {src}")
    cache = Path(cache_dir)
    target = cache / f"{src.stem}-{sha256_file(src)[:12]}-{precision}-{_settings_digest(settings)}.onnx"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    # Build under a private name, then rename: concurrent builders never see half a file.
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=f".{precision}-", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        build(src, tmp)
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def _simplifier():
    """(tool, version, ModelProto -> ModelProto) for whichever simplifier is installed."""
    try:
        import onnxslim
        return "onnxslim", onnxslim.__version__, onnxslim.slim
    except ImportError:
        pass
    try:
        import onnxsim
    except ImportError:
        raise UserError("the 'simplified' variant needs onnxslim (pip install onnxslim) or onnxsim") from None

    def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise ModelFileError("onnxsim could not validate the simplified model")
        return simplified

    return "onnxsim", onnxsim.__version__, simplify


# --------------------------------------------------------------------------- int8

def _quantize_qdq(src: Path, out: Path, frames: np.ndarray, recipe: Int8Recipe) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    with tempfile.TemporaryDirectory() as tmp:
        # Pre-processing folds constants and infers shapes so that Q/DQ pairs land on
        # the fused graph the runtime will execute.
        prepared = Path(tmp) / "prepared.onnx"
        _pre_process(src, prepared)
        model = onnx.load(str(prepared))
        quantize_static(
            str(prepared), str(out), _FrameReader(model, frames),
            quant_format=QuantFormat.QDQ, per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
            activation_type=types[recipe.activation_type], weight_type=types[recipe.weight_type],
            calibrate_method=getattr(CalibrationMethod, recipe.calibrate),
            extra_options={"ActivationSymmetric": recipe.activation_symmetric,
                           "WeightSymmetric": recipe.weight_symmetric,
                           # Scores stay float: the 0.5 threshold should not fall on an 8-bit grid.
                           "OpTypesToExcludeOutputQuantization": ["Sigmoid"]},
        )
    onnx.save(_without_unused_opsets(onnx.load(str(out))), str(out))


def _without_unused_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the ORT-internal domains pre-processing declares but no node uses.

    The artifact then claims only standard ONNX, which every consumer (TensorRT included) reads.
    """
    used = {node.domain for node in model.graph.node} | {"", "ai.onnx"}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


# Per-channel DequantizeLinear (its `axis`) needs opset 13; older exports are lifted first.
_MIN_QDQ_OPSET = 13


def _pre_process(src: Path, out: Path) -> None:
    from onnxruntime.quantization import quant_pre_process

    model = onnx.load(str(src))
    if _default_opset(model) < _MIN_QDQ_OPSET:
        model = onnx.version_converter.convert_version(model, _MIN_QDQ_OPSET)
    lifted = out.with_name("lifted.onnx")
    onnx.save(model, str(lifted))  # quant_pre_process mishandles in-memory models' weights
    # ONNX's own shape inference is enough for these CNNs; ORT's symbolic pass gives up on
    # Resize sizes computed from runtime shapes (the batched replicas' neck).
    quant_pre_process(str(lifted), str(out), skip_symbolic_shape=True)


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


class _FrameReader:
    """A CalibrationDataReader (get_next protocol) over recorded frames, in batches the model accepts."""

    def __init__(self, model: onnx.ModelProto, frames: np.ndarray):
        graph_input = _graph_inputs(model)[0]
        batch_dim = graph_input.type.tensor_type.shape.dim[0]
        batch = batch_dim.dim_value if batch_dim.HasField("dim_value") and batch_dim.dim_value > 0 else 1
        if len(frames) < batch:
            raise UserError(f"calibration needs at least {batch} frames for a batch-{batch} model")
        self._feeds = iter([{graph_input.name: frames[i:i + batch]}
                            for i in range(0, len(frames) - batch + 1, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


# --------------------------------------------------------------------------- calibration frames

def guess_family(model: onnx.ModelProto) -> str:
    """The family bench.models.layout finds; a graph it cannot place (a probe) calibrates as an embedder."""
    found = analyze_batch_layout(model).family
    return found if found != "unknown" else EMBEDDER.name


def calibration_frames_for(model: onnx.ModelProto, family: str, n: int,
                           images: Sequence | None = None, seed: int = 0) -> np.ndarray:
    """calibration_frames shaped for `model`'s input (symbolic H/W get family defaults)."""
    dims = _graph_inputs(model)[0].type.tensor_type.shape.dim
    default_size = model_family(family).default_size
    h = dims[2].dim_value or default_size
    w = dims[3].dim_value or default_size
    return calibration_frames((1, 3, h, w), family, n, images=images, seed=seed)


def calibration_frames(input_shape: Sequence[int], family: str, n: int,
                       images: Sequence | None = None, seed: int = 0) -> np.ndarray:
    """(n, 3, H, W) float32 frames normalised as `family` expects, RGB.

    With `images` (RGB uint8 arrays or file paths) the frames are those images,
    letterboxed (detector) or resized (embedder), with random crops and flips once
    the images run out. Without, synthetic face-like frames: smooth backgrounds and
    skin-toned faces with eyes, brows, nose, mouth and hair, never white noise,
    because calibration ranges from noise would not match what real frames excite.
    """
    family = model_family(family)
    h, w = int(input_shape[-2]), int(input_shape[-1])
    rng = np.random.default_rng(seed)
    if images is not None and len(images):
        loaded = [as_rgb_uint8(im) for im in images]
        pictures = [_fit(_augment(loaded[i % len(loaded)], rng, i >= len(loaded)), h, w, family)
                    for i in range(n)]
    else:
        pictures = [_synthetic_picture(rng, h, w, family) for _ in range(n)]
    return to_blob(np.stack(pictures), family.mean, family.std)


def images_in_folder(folder: str | os.PathLike) -> list[Path]:
    """Image files in `folder` (sorted), for calibration_frames(images=...)."""
    found = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not found:
        raise UserError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) in {folder}")
    return found


def as_rgb_uint8(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        image = _read_image(Path(image))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        scale = 255.0 if image.max() <= 1.0 else 1.0
        image = np.clip(image * scale, 0, 255).astype(np.uint8)
    return image


def _read_image(path: Path) -> np.ndarray:
    try:
        from skimage.io import imread
    except ImportError:
        try:
            from PIL import Image
        except ImportError:
            raise UserError("reading calibration images needs scikit-image or Pillow") from None
        return np.asarray(Image.open(path).convert("RGB"))
    return imread(path)


def _augment(image: np.ndarray, rng: np.random.Generator, vary: bool) -> np.ndarray:
    """A random crop (>= 60% a side) and maybe a flip, so reused images still add ranges."""
    if not vary:
        return image
    h, w = image.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = image[y:y + ch, x:x + cw]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _fit(image: np.ndarray, h: int, w: int, family: Family) -> np.ndarray:
    if family is EMBEDDER:  # centre square, then the full 112x112 (aligned crops are square)
        ih, iw = image.shape[:2]
        side = min(ih, iw)
        y, x = (ih - side) // 2, (iw - side) // 2
        return resize_bilinear(np.ascontiguousarray(image[y:y + side, x:x + side]), h, w)
    return _letterbox(image, h, w)


def _letterbox(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """insightface's detector fit: keep aspect, paste top-left on a zero canvas."""
    ih, iw = image.shape[:2]
    if ih / iw > h / w:
        new_h, new_w = h, int(h * iw / ih)
    else:
        new_w, new_h = w, int(w * ih / iw)
    canvas = np.zeros((h, w, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resize_bilinear(np.ascontiguousarray(image), new_h, new_w)
    return canvas


# ArcFace alignment template (models.md 3.5) as fractions of the 112x112 crop.
_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                      [41.5493, 92.3655], [70.7299, 92.2041]]) / 112.0


def _synthetic_picture(rng: np.random.Generator, h: int, w: int, family: Family) -> np.ndarray:
    canvas = _background(rng, h, w)
    if family is EMBEDDER:  # one aligned face filling the crop, as after norm_crop
        _draw_face(canvas, rng, x0=0.0, y0=0.0, size=float(min(h, w)))
    else:  # a few faces at detector scales (16 px to half the frame)
        for _ in range(rng.integers(1, 5)):
            size = float(np.exp(rng.uniform(np.log(16), np.log(min(h, w) / 2))))
            x0, y0 = rng.uniform(0, w - size), rng.uniform(0, h - size)
            _draw_face(canvas, rng, x0, y0, size)
    canvas += rng.normal(0, 3.0, canvas.shape)  # sensor noise, small beside the structure
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A muted scene: smooth shading (coarse grid upsampled) plus a few soft objects for edges."""
    grid_h, grid_w = rng.integers(2, 7), rng.integers(2, 7)
    light = rng.uniform(40, 220, (grid_h, grid_w, 1))
    tint = rng.uniform(-30, 30, (grid_h, grid_w, 3))  # real scenes are far from saturated
    coarse = np.clip(light + tint, 0, 255).astype(np.uint8)
    canvas = resize_bilinear(coarse, h, w).astype(np.float32)
    for _ in range(rng.integers(2, 8)):
        centre = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.03, 0.3) * w, rng.uniform(0.03, 0.3) * h
        colour = rng.uniform(30, 225) + rng.uniform(-30, 30, 3)
        _blend_ellipse(canvas, centre, rx, ry, colour)
    return canvas


def _draw_face(canvas: np.ndarray, rng: np.random.Generator, x0: float, y0: float, size: float) -> None:
    """Paint a face whose features sit where the ArcFace template puts them in a size-px box."""
    red = rng.uniform(110, 240)  # skin tones: red leads, green and blue follow in proportion
    skin = red * np.array([1.0, rng.uniform(0.68, 0.85), rng.uniform(0.5, 0.72)])
    hair = rng.uniform(10, 90) * np.array([1.0, 0.85, 0.7])
    dark = np.array([40.0, 30.0, 30.0])
    pts = _TEMPLATE * size + (x0, y0)
    eye_dx = pts[1, 0] - pts[0, 0]
    cx, cy = pts[2, 0], (pts[0, 1] + pts[3, 1]) / 2
    _blend_ellipse(canvas, (cx, cy - 0.28 * size), 0.42 * size, 0.36 * size, hair)  # hair above
    _blend_ellipse(canvas, (cx, cy), 0.36 * size, 0.48 * size, skin)  # face
    for eye in pts[:2]:
        _blend_ellipse(canvas, (eye[0], eye[1] - 0.07 * size), 0.11 * size, 0.025 * size, hair)  # brow
        _blend_ellipse(canvas, eye, 0.09 * size, 0.04 * size, np.array([235.0, 235.0, 230.0]))  # white
        _blend_ellipse(canvas, eye, 0.035 * size, 0.035 * size, dark)  # iris
    _blend_ellipse(canvas, (pts[2, 0], pts[2, 1] + 0.02 * size), 0.05 * size, 0.1 * size, skin * 0.8)
    mouth = pts[3:].mean(axis=0)
    lips = np.array([rng.uniform(140, 200), 70.0, 70.0])
    _blend_ellipse(canvas, mouth, 0.55 * eye_dx, 0.035 * size, lips)


def _blend_ellipse(canvas: np.ndarray, centre, rx: float, ry: float, colour: np.ndarray) -> None:
    """Alpha-blend a soft-edged ellipse (edges ~ a tenth of its radius, so never aliased)."""
    h, w = canvas.shape[:2]
    x_lo, x_hi = max(int(centre[0] - rx) - 2, 0), min(int(centre[0] + rx) + 3, w)
    y_lo, y_hi = max(int(centre[1] - ry) - 2, 0), min(int(centre[1] + ry) + 3, h)
    if x_lo >= x_hi or y_lo >= y_hi:
        return
    ys, xs = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(np.float32)
    r = np.sqrt(((xs - centre[0]) / max(rx, 0.5)) ** 2 + ((ys - centre[1]) / max(ry, 0.5)) ** 2)
    alpha = np.clip((1.0 - r) * 10.0 + 0.5, 0.0, 1.0)[:, :, None]
    region = canvas[y_lo:y_hi, x_lo:x_hi]
    region += alpha * (colour - region)
