"""`facebench fix-batch`: rewrite an InsightFace export into a true dynamic-batch model.

Old SCRFD exports run at batch > 1 only after patching the input, and then mix frames
(reference/models.md §2, §7). The rewrite follows the current scrfd_head.py export:
input dim 0 symbolic; Transpose [2,3,0,1] -> [0,2,3,1]; Reshape [-1,K] or [1,-1,K] ->
[0,-1,K]; neck Resize `sizes` [1,C,H,W] taken from the tensor the Resize output is added
to; outputs [N, HW*A, K] with batched names. In any family a Reshape [1, ...] or a
Flatten axis 0 on a tensor whose dim 0 is the batch (a traced `x.view(1, -1)`, as in trained
MobileFaceNet exports) keeps dim 0 instead: [0, ...] / axis 1, the same values at batch 1.
Every rewrite is verified on ONNX Runtime CPU (each frame of a batch through the fixed
model against the frame alone through the original) before anything is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from bench.comparator import Tolerance, compare_outputs
from bench.domain import DETECTOR, EMBEDDER, random_frames
from bench.errors import ModelFileError, UserError
from bench.fileio import writable_folder, write_atomically
from bench.models.counting import CountingError, static_shapes
from bench.models.layout import (
    BATCH_INTERLEAVING_PERM,
    NCHW_TO_NHWC,
    OUTPUT_KINDS,
    BatchLayout,
    analyze_batch_layout,
    consumer_map,
    constant_values,
    dims_of,
    graph_inputs,
)

BATCH_DIM = "N"
DETECTOR_STRIDES = [8, 16, 32]
DEFAULT_SIZE = {f.name: f.default_size for f in (DETECTOR, EMBEDDER)}
# Per-frame outputs of a correct rewrite match the original up to kernel blocking noise.
VERIFY_TOLERANCE = 1e-4  # of max(1, largest reference value)
_VERIFY = Tolerance(atol=VERIFY_TOLERANCE, rtol=VERIFY_TOLERANCE)


@dataclass
class FixReport:
    in_path: str
    out_path: str
    family: str
    rewrites: list[str]  # one line per node or tensor changed
    output_names: dict[str, str]  # original output name -> name in the fixed model
    input_shape: list[int | str]  # of the fixed model
    verify_batch: int
    frames_checked: int  # frames compared batch-vs-alone, over all checks
    max_abs_diff: float
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        renamed = {old: new for old, new in self.output_names.items() if old != new}
        return [
            f"{self.family} {self.in_path} -> {self.out_path}: input {self.input_shape}",
            f"rewrote {len(self.rewrites)} node(s)/tensor(s)" + (f"; renamed outputs {renamed}" if renamed else ""),
            *self.notes,
            f"verified {self.frames_checked} frames at batch {self.verify_batch}: max |diff| {self.max_abs_diff:.3g}",
        ]


@dataclass
class Rewrite:
    model: onnx.ModelProto
    rewrites: list[str]
    output_names: dict[str, str]


def fix_batch(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    input_size: int | None = None,
    verify_batch: int = 4,
    images: list[np.ndarray] | None = None,
) -> FixReport:
    """Rewrite, check and verify; write OUT only when every check passes."""
    in_path, out_path = Path(in_path), Path(out_path)
    _check_paths(in_path, out_path)
    if verify_batch < 2:
        raise UserError(f"verify batch {verify_batch} cannot show frames mixing; use 2 or more")
    original = _load(in_path)
    layout = analyze_batch_layout(original)
    _refuse_unfixable(layout, in_path, input_size)

    try:
        rewrite = rewrite_batch(original, input_size)
    except UserError:
        raise
    except Exception as exc:  # shape inference on a graph it half understands
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{in_path}: rewrite failed ({first}); nothing written") from exc
    _run_onnx_checks(rewrite.model)
    images, frames_note = _real_frames(images)
    max_abs, frames, notes = verify_rewrite(original, rewrite, layout, input_size, verify_batch, images)
    try:
        write_atomically(out_path, rewrite.model.SerializeToString())
    except OSError as exc:  # e.g. the disk filled up while verifying
        raise UserError(f"{out_path}: cannot write the rewrite ({exc.strerror or exc}); free space or choose another OUT") from None
    notes.append(frames_note)
    if not rewrite.rewrites:
        notes.insert(0, "already batch-correct: nothing rewritten; wrote the verified copy")
    return FixReport(
        in_path=str(in_path), out_path=str(out_path), family=layout.family,
        rewrites=rewrite.rewrites, output_names=rewrite.output_names,
        input_shape=dims_of(graph_inputs(rewrite.model)[0]), verify_batch=verify_batch,
        frames_checked=frames, max_abs_diff=max_abs, notes=notes,
    )


def naive_batch_patch(model: onnx.ModelProto) -> onnx.ModelProto:
    """Only make dim 0 symbolic, as in insightface #2879: it runs at batch > 1 but mixes frames."""
    patched = _copy(model)
    _set_dim(graph_inputs(patched)[0], 0, BATCH_DIM)
    for out in patched.graph.output:
        if out.type.tensor_type.shape.dim:
            _set_dim(out, 0, BATCH_DIM)
    del patched.graph.value_info[:]  # stale batch-1 shapes would make runtimes refuse
    return patched


# ---- refusals -----------------------------------------------------------------------


def _check_paths(in_path: Path, out_path: Path) -> None:
    if not in_path.is_file():
        raise ModelFileError(f"{in_path}: no such model file")
    if out_path.resolve() == in_path.resolve():
        raise UserError(f"OUT equals IN ({in_path}); give a different output path so the original stays intact")
    if out_path.is_dir():
        raise UserError(f"{out_path}: is a folder; give OUT as a .onnx file path")
    if not out_path.parent.is_dir():
        raise UserError(f"{out_path.parent}: output folder does not exist; create it or choose another OUT")
    writable_folder(out_path.parent, "output folder", "choose another OUT")  # before the minutes of verifying


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(exc).__name__}); check the file") from exc


def _refuse_unfixable(layout: BatchLayout, path: Path, input_size: int | None) -> None:
    if layout.family == "unknown":
        reason = layout.problems[0] if layout.problems else "unrecognised graph"
        raise UserError(f"{path}: not a SCRFD detector or embedder fix-batch knows ({reason}); nothing written")
    if layout.problems:
        raise UserError(
            f"{path}: cannot rewrite safely: {layout.problems[0]}; re-export with a dynamic batch; nothing written"
        )
    if input_size is not None:
        _check_input_size(layout, path, input_size)


def _check_input_size(layout: BatchLayout, path: Path, input_size: int) -> None:
    if layout.family == "detector" and (input_size <= 0 or input_size % 32):
        raise UserError(f"--input-size {input_size}: use a positive multiple of 32 (SCRFD strides 8/16/32)")
    fixed_hw = [d for d in layout.input_shape[2:] if isinstance(d, int)]
    if layout.family == "embedder" and fixed_hw and fixed_hw != [input_size, input_size]:
        raise UserError(f"{path}: embedder input is fixed at {layout.input_shape[2:]}; drop --input-size")


# ---- rewrite ------------------------------------------------------------------------


def rewrite_batch(model: onnx.ModelProto, input_size: int | None = None) -> Rewrite:
    """The dynamic-batch rewrite, unchecked and unverified (fix_batch does both)."""
    fixed = _copy(model)
    layout = analyze_batch_layout(fixed)  # node references into the copy
    rewrites: list[str] = []
    image = graph_inputs(fixed)[0]
    batch_name = _batch_name(layout)
    if layout.batch_fixed:
        rewrites.append(f"input '{image.name}' dim 0: {layout.input_shape[0]} -> {batch_name}")
    _set_dim(image, 0, batch_name)
    if input_size is not None:
        for axis in (2, 3):
            if layout.input_shape[axis] != input_size:
                rewrites.append(f"input '{image.name}' dim {axis}: {layout.input_shape[axis]} -> {input_size}")
            _set_dim(image, axis, input_size)

    rewrites += _keep_batch_in_flattens(fixed, layout)
    names = {out.name: out.name for out in fixed.graph.output}
    if layout.family == "detector":
        rewrites += _rewrite_head_tails(fixed, layout)
        rewrites += _rewrite_resize_sizes(fixed, model)
        names = _batched_output_names(fixed, layout)
        rewrites += [f"output '{old}' -> '{new}'" for old, new in names.items() if old != new]
        _rename_outputs(fixed, names)

    _drop_unused_initializers(fixed)
    _sort_topologically(fixed.graph)
    _refresh_shapes(fixed, batch_name)
    return Rewrite(fixed, rewrites, names)


def _rewrite_head_tails(model: onnx.ModelProto, layout: BatchLayout) -> list[str]:
    rewrites = []
    for path in layout.output_paths:
        if path.interleaves_batch:
            for attr in path.transpose.attribute:
                if attr.name == "perm":
                    attr.CopyFrom(helper.make_attribute("perm", NCHW_TO_NHWC))
            rewrites.append(f"Transpose '{path.transpose.name}': perm {BATCH_INTERLEAVING_PERM} -> {NCHW_TO_NHWC}")
        if path.reshape_target is not None and not path.target_is_batched:
            target = [0, -1, path.k]
            name = _unique_name(model, f"{path.reshape.name or path.output}_batched_target")
            model.graph.initializer.append(numpy_helper.from_array(np.array(target, dtype=np.int64), name))
            path.reshape.input[1] = name
            rewrites.append(f"Reshape '{path.reshape.name}': target {path.reshape_target} -> {target}")
    return rewrites


def _keep_batch_in_flattens(model: onnx.ModelProto, layout: BatchLayout) -> list[str]:
    """Reshape [1, ...] -> [0, ...] and Flatten axis 0 -> 1 where dim 0 carries the batch (layout found which)."""
    consts = constant_values(model)
    rewrites = []
    for node in layout.batch_one_flattens:
        name = node.name or node.output[0]
        if node.op_type == "Flatten":
            node.attribute.remove(next(a for a in node.attribute if a.name == "axis"))
            node.attribute.append(helper.make_attribute("axis", 1))
            rewrites.append(f"Flatten '{name}': axis 0 -> 1")
            continue
        before = [int(v) for v in consts[node.input[1]].reshape(-1)]
        target = [0, *before[1:]]
        target_name = _unique_name(model, f"{name}_batched_target")
        model.graph.initializer.append(numpy_helper.from_array(np.array(target, dtype=np.int64), target_name))
        node.input[1] = target_name
        rewrites.append(f"Reshape '{name}': target {before} -> {target}")
    return rewrites


def _rewrite_resize_sizes(model: onnx.ModelProto, original: onnx.ModelProto) -> list[str]:
    """Take each batch-1 `sizes` constant from the runtime shape of the tensor it is added to."""
    consts = constant_values(model)
    known_shapes = _static_shapes(original)
    consumers = consumer_map(model.graph)
    rewrites = []
    for node in list(model.graph.node):
        if node.op_type != "Resize" or len(node.input) < 4 or node.input[3] not in consts:
            continue
        sizes = [int(v) for v in consts[node.input[3]].reshape(-1)]
        if sizes[0] != 1:
            continue
        partner = _added_partner(node.output[0], consumers, known_shapes, sizes)
        if partner is None:
            raise UserError(
                f"Resize '{node.name}' bakes sizes {sizes} and its output is not added to a tensor of that shape;"
                " fix-batch cannot derive the sizes, re-export with scales; nothing written"
            )
        shape_name = _unique_name(model, f"{node.name or node.output[0]}_runtime_sizes")
        model.graph.node.append(helper.make_node("Shape", [partner], [shape_name], name=shape_name))
        node.input[3] = shape_name
        rewrites.append(f"Resize '{node.name}': sizes {sizes} -> Shape('{partner}') at run time")
    return rewrites


def _added_partner(
    resized: str, consumers: dict[str, list[onnx.NodeProto]], shapes: dict[str, list[int]], sizes: list[int]
) -> str | None:
    for node in consumers.get(resized, []):
        if node.op_type not in ("Add", "Sum") or len(node.input) != 2:
            continue
        other = node.input[1] if node.input[0] == resized else node.input[0]
        if shapes.get(other, sizes) == sizes:
            return other
    return None


def _batched_output_names(model: onnx.ModelProto, layout: BatchLayout) -> dict[str, str]:
    """Old exports name outputs by number; give them the batched export's names."""
    outputs = [out.name for out in model.graph.output]
    if not all(name.isdigit() for name in outputs):
        return {name: name for name in outputs}
    strides = _output_strides(model, layout)
    names = {p.output: f"{OUTPUT_KINDS[p.k]}_{s}" for p, s in zip(layout.output_paths, strides)}
    if len(set(names.values())) != len(names):
        raise UserError(f"output strides {strides} do not form SCRFD's levels (8/16/32 or 8..128); nothing written")
    return names


def _output_strides(model: onnx.ModelProto, layout: BatchLayout) -> list[int]:
    """Stride of each output from the head's feature-map height at a concrete input size."""
    size = DEFAULT_SIZE["detector"]
    try:
        shapes = static_shapes(model, (1, 3, size, size))
    except CountingError:
        shapes = {}
    levels = len(layout.output_paths) // (3 if len(layout.output_paths) in (9, 15) else 2)
    fallback = DETECTOR_STRIDES if levels == 3 else [8, 16, 32, 64, 128]
    strides = []
    for index, path in enumerate(layout.output_paths):
        shape = shapes.get(path.transpose.input[0])
        known = shape and len(shape) == 4 and shape[2]
        strides.append(-(-size // shape[2]) if known else fallback[index % levels])
    return strides


def _rename_outputs(model: onnx.ModelProto, names: dict[str, str]) -> None:
    existing = {name for node in model.graph.node for name in node.output}
    clashes = [new for old, new in names.items() if old != new and new in existing]
    if clashes:
        raise UserError(f"cannot rename outputs: {clashes} already name tensors in the graph; nothing written")
    for node in model.graph.node:
        for seq in (node.input, node.output):
            for i, name in enumerate(seq):
                if name in names:
                    seq[i] = names[name]
    for out in model.graph.output:
        out.name = names[out.name]


def _batch_name(layout: BatchLayout) -> str:
    """Keep a symbolic batch name the export already chose; otherwise call it N."""
    dim = layout.input_shape[0]
    return dim if isinstance(dim, str) and dim != "?" else BATCH_DIM


def _refresh_shapes(model: onnx.ModelProto, batch_name: str) -> None:
    """Drop every stale batch-1 shape, re-infer, and declare outputs as [N, ..., K]."""
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    by_name = {out.name: out for out in inferred.graph.output}
    for out in model.graph.output:
        dims = dims_of(by_name[out.name]) if by_name[out.name].type.tensor_type.HasField("shape") else []
        if not dims:
            continue
        dims = [batch_name, *(d if isinstance(d, int) and d > 0 else f"{out.name}_dim{i}" for i, d in enumerate(dims[1:], 1))]
        out.type.tensor_type.shape.CopyFrom(_shape_proto(dims))


# ---- checks and verification --------------------------------------------------------


def _run_onnx_checks(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
        shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"the rewritten graph fails the ONNX checks ({first}); nothing written") from exc


def verify_rewrite(
    original: onnx.ModelProto,
    rewrite: Rewrite,
    layout: BatchLayout,
    input_size: int | None,
    batch: int,
    images: list[np.ndarray] | None,
) -> tuple[float, int, list[str]]:
    """Each frame of a batch through the rewritten model against that frame alone through `original`,
    outputs paired by name (the rewrite may rename them: `rewrite.output_names`).

    When --input-size moves a fixed-size original to a size it cannot run, the chain is:
    the same rewrite at the original size against the original, then the fixed model's
    batch against its own batch-1 outputs at the new size.
    """
    native = _square_size(layout.input_shape)
    size = input_size or native or DEFAULT_SIZE[layout.family]
    fixed = rewrite.model
    if native is None or native == size:
        max_abs, frames = _compare_per_frame(original, fixed, size, batch, images, rewrite.output_names)
        return max_abs, frames, [f"per-frame outputs match the original at {size}x{size}"]
    same_size = rewrite_batch(original, None)
    abs_native, frames_native = _compare_per_frame(original, same_size.model, native, batch, images,
                                                   same_size.output_names)
    abs_new, frames_new = _compare_per_frame(fixed, fixed, size, batch, images, {})
    return max(abs_native, abs_new), frames_native + frames_new, [
        f"per-frame outputs match the original at its {native}x{native}",
        f"at {size}x{size} (which the original cannot run) batch {batch} matches batch 1 frame by frame",
    ]


def _compare_per_frame(
    reference: onnx.ModelProto, candidate: onnx.ModelProto, size: int, batch: int, images: list[np.ndarray] | None,
    renamed: dict[str, str],
) -> tuple[float, int]:
    """Largest difference over every frame and output; `renamed` maps reference output names to the candidate's."""
    ref_session = _ort_session(reference, "the original model")
    cand_session = _ort_session(candidate, "the rewritten model")
    worst, frames = 0.0, 0
    for frames_batch in _verification_batches(size, batch, images):
        try:
            batched = _run_by_name(cand_session, frames_batch)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(
                f"the rewritten model fails at batch {batch} ({first}); the graph bakes in batch 1 where fix-batch"
                " does not rewrite; nothing written"
            ) from exc
        for i in range(batch):
            alone = _run_by_name(ref_session, frames_batch[i : i + 1], renamed)
            worst = max(worst, _frame_difference(batched, alone, i))
            frames += 1
    return worst, frames


def _frame_difference(batched: dict[str, np.ndarray], alone: dict[str, np.ndarray], index: int) -> float:
    """Frame `index` of the batch against the frame alone, output by output (by name)."""
    got = {name: array[index] for name, array in batched.items()}
    want = {}
    for name, array in alone.items():
        if name in got and got[name].size != array.size:
            raise UserError(
                f"output {name!r} of frame {index} has {got[name].size} values in the batch but {array.size} alone;"
                " the rewrite changed the layout; nothing written"
            )
        want[name] = array.reshape(got[name].shape) if name in got else array
    comparison = compare_outputs(want, got, _VERIFY)
    if not comparison.passed:
        raise UserError(
            f"frame {index} differs from the same frame alone ({comparison.summary()});"
            " the rewrite does not keep frames apart; nothing written"
        )
    return comparison.max_abs


def _real_frames(images: list[np.ndarray] | None) -> tuple[list[np.ndarray], str]:
    """The caller's frames, else scikit-image's public-domain astronaut when installed."""
    if images:
        return list(images), f"frames: random and {len(images)} given"
    try:
        from skimage import data  # optional (facebench[extras])
    except ImportError:
        return [], "frames: random only (pass images, or install facebench[extras] for a real photo)"
    return [data.astronaut()], "frames: random and skimage astronaut"


def _verification_batches(size: int, batch: int, images: list[np.ndarray] | None) -> list[np.ndarray]:
    """One batch of random frames, then the real frames, padded with random ones."""
    rng = np.random.default_rng(0)
    batches = [random_frames(rng, batch, (3, size, size))]
    real = [prepare_frame(image, size) for image in images or []]
    for start in range(0, len(real), batch):
        chunk = real[start : start + batch]
        padding = random_frames(rng, batch - len(chunk), (3, size, size))
        batches.append(np.concatenate([np.stack(chunk), padding]) if len(padding) else np.stack(chunk))
    return batches


def prepare_frame(image: np.ndarray, size: int) -> np.ndarray:
    """A real frame as model input: CHW float frames pass through; HWC RGB pixels are
    nearest-resized to size x size and normalised as SCRFD does (bench.domain.DETECTOR's mean and std)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] == 3 and image.dtype.kind == "f":
        if image.shape[1:] != (size, size):
            raise UserError(f"frame of shape {image.shape} does not match the {size}x{size} model input")
        return image.astype(np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"frame of shape {image.shape}: expected HxWx3 RGB pixels or a 3x{size}x{size} float frame")
    rows = np.arange(size) * image.shape[0] // size
    cols = np.arange(size) * image.shape[1] // size
    resized = image[rows][:, cols].astype(np.float32)
    return ((resized - DETECTOR.mean) / DETECTOR.std).transpose(2, 0, 1).copy()


def _run_by_name(session, x: np.ndarray, renamed: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """A raw ONNX Runtime session's outputs by name (`renamed` maps them to the rewritten model's)."""
    names = [o.name for o in session.get_outputs()]
    arrays = session.run(names, {session.get_inputs()[0].name: x})
    return {(renamed or {}).get(name, name): array for name, array in zip(names, arrays)}


def _ort_session(model: onnx.ModelProto, role: str):
    try:
        import onnxruntime as ort  # a runtime dependency, needed only to verify
    except ImportError as exc:
        raise UserError("fix-batch verifies with ONNX Runtime; install facebench[cpu]; nothing written") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # small shared machines; verification is not timed
    options.log_severity_level = 3  # old exports declare batch-1 output shapes: warnings only
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ONNX Runtime cannot load {role} ({first}); nothing written") from exc


# ---- small graph helpers ------------------------------------------------------------


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _set_dim(value: onnx.ValueInfoProto, axis: int, dim: int | str) -> None:
    target = value.type.tensor_type.shape.dim[axis]
    if isinstance(dim, int):
        target.dim_value = dim
    else:
        target.dim_param = dim


def _shape_proto(dims: list[int | str]) -> onnx.TensorShapeProto:
    shape = onnx.TensorShapeProto()
    for d in dims:
        entry = shape.dim.add()
        if isinstance(d, int):
            entry.dim_value = d
        else:
            entry.dim_param = d
    return shape


def _square_size(shape: list[int | str]) -> int | None:
    h, w = shape[2], shape[3]
    return h if isinstance(h, int) and h == w else None


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        return {}
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = dims_of(value)
        if dims and all(isinstance(d, int) for d in dims):
            shapes[value.name] = dims
    return shapes


def _unique_name(model: onnx.ModelProto, base: str) -> str:
    taken = {init.name for init in model.graph.initializer}
    taken |= {name for node in model.graph.node for name in (*node.input, *node.output)}
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    initializers = {init.name for init in keep}
    image = graph_inputs(model)[0].name
    inputs = [i for i in model.graph.input if i.name == image or i.name in initializers]
    del model.graph.input[:]
    model.graph.input.extend(inputs)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """New Shape nodes read tensors computed later in node order; ONNX needs producers first."""
    available = {i.name for i in graph.input} | {init.name for init in graph.initializer} | {""}
    pending = [_copy_node(n) for n in graph.node]
    ordered: list[onnx.NodeProto] = []
    while pending:
        waiting = []
        for node in pending:  # one pass keeps the original order wherever it was already valid
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise UserError("the rewritten graph reads tensors nothing produces; nothing written")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def _copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy
