"""Inspection of an ONNX file: interface, family, preprocessing, batch layout, params, MACs."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from bench.domain import FAMILIES
from bench.errors import ModelFileError
from bench.fileio import sha256_file
from bench.models.counting import CountingError, count_macs, count_params, op_counts
from bench.models.layout import BatchLayout, analyze_batch_layout
from bench.models.validate import check_image_input, validate_model_file


@dataclass
class ModelInfo:
    name: str
    path: str
    source: str  # "builtin" or "file"
    sha256: str
    file_bytes: int
    family: str
    input_name: str
    input_dims: list  # as declared: numbers or symbolic names
    input_hw: tuple[int, int]  # the size this run uses
    mean: float
    std: float
    params: int
    macs_per_frame: int | None  # None when the graph does not give it (macs_note says why)
    op_counts: dict[str, int]
    outputs: list[tuple[str, list]]
    batch_fixed: bool
    flattened_outputs: bool
    layout_notes: list[str] = field(default_factory=list)
    macs_note: str | None = None

    @property
    def flops_per_frame(self) -> int | None:
        return None if self.macs_per_frame is None else 2 * self.macs_per_frame

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, 3, *self.input_hw)

    def batch_limit_reason(self, batch: int) -> str | None:
        """Why this file cannot run `batch` frames correctly, or None."""
        if batch == 1:
            return None
        if self.flattened_outputs or self.batch_fixed:
            what = "outputs flatten the batch" if self.flattened_outputs else "batch is fixed at 1"
            return (f"{what} in {Path(self.path).name}; run 'facebench fix-batch {self.path} OUT.onnx' "
                    f"and benchmark OUT.onnx")
        return None

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_model(path: str | Path, name: str | None = None, input_size: int | None = None,
                  source: str = "file", sha256: str | None = None) -> ModelInfo:
    path = Path(path)
    model = validate_model_file(path)
    layout = analyze_batch_layout(model)
    family = _family(path, layout)
    input_value = check_image_input(path, model)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in input_value.type.tensor_type.shape.dim]
    hw = _input_hw(path, family, dims, input_size)
    mean, std = FAMILIES[family].mean, FAMILIES[family].std
    macs, macs_note = _macs_at(model, (1, 3, *hw))
    return ModelInfo(
        name=name or path.stem, path=str(path), source=source, sha256=sha256 or sha256_file(path),
        file_bytes=path.stat().st_size, family=family, input_name=input_value.name, input_dims=dims,
        input_hw=hw, mean=mean, std=std, params=count_params(model), macs_per_frame=macs,
        op_counts=op_counts(model), outputs=[(o.name, _dims(o)) for o in model.graph.output],
        batch_fixed=layout.batch_fixed, flattened_outputs=layout.flattened_outputs, layout_notes=list(layout.notes),
        macs_note=macs_note,
    )


def _macs_at(model: onnx.ModelProto, shape: tuple[int, ...]) -> tuple[int | None, str | None]:
    """MACs at the shape the point runs at; a graph that hides them gives None and the reason,
    so the point still runs."""
    try:
        return count_macs(model, shape), None
    except CountingError as exc:
        return None, f"MACs unknown at {shape[2]}x{shape[3]}: {exc}"


def _family(path: Path, layout: BatchLayout) -> str:
    if layout.family not in FAMILIES:
        found = layout.problems[0] if layout.problems else "no known output layout"
        raise ModelFileError(f"{path}: neither an SCRFD detector (6/9/10/15 outputs: scores, boxes[, keypoints]) nor an "
                             f"embedder ([N,D] output): {found}; pass an InsightFace detector or embedder")
    return layout.family


def _input_hw(path: Path, family: str, dims: list, input_size: int | None) -> tuple[int, int]:
    fixed = [d for d in dims[2:] if isinstance(d, int) and d > 0]
    if len(fixed) == 2:
        if input_size and tuple(fixed) != (input_size, input_size):
            raise ModelFileError(f"{path}: input size is fixed at {fixed[0]}x{fixed[1]}, not {input_size}; "
                                 "drop input_size or re-export with dynamic H/W")
        return fixed[0], fixed[1]
    size = input_size or FAMILIES[family].default_size
    return size, size


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]
