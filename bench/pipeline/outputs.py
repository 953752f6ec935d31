"""What the pipeline found, for people to look at: `--save-detections FILE` (one row per face,
Parquet or JSON) and `--save-annotated DIR` (every picture with its boxes, scores and landmarks
drawn, plus contact sheets of the aligned 112x112 crops).

They come from one untimed pass over the same frames after the benchmark row is saved, so
the timed runs never carry the bookkeeping and a failed write never costs the measurement.
Paths are checked in `check_outputs`, before anything is loaded.
"""
from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from bench.errors import UserError
from bench.fileio import write_atomically
from bench.face.align import ALIGNED_SIZE

# The five SCRFD keypoints, in model order (the order of the ArcFace template).
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
DETECTION_SUFFIXES = (".parquet", ".json")
SHEET_COLUMNS, SHEET_ROWS = 10, 10  # crops per contact sheet: 10 x 10
SYNTHETIC_PICTURES = 4  # synthetic frames repeat a pool of 4 pictures (run.synthetic_frames)
_LANDMARK_BGR = ((255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255))  # as insightface draws them


@dataclass
class OutputRequest:
    """The command's output flags."""

    detections: Path | None = None
    annotated: Path | None = None
    with_embeddings: bool = False
    crops: Path | None = None  # each aligned face as its own 112x112 PNG (identity faces for `run --images`)

    @property
    def wanted(self) -> bool:
        return self.detections is not None or self.annotated is not None or self.crops is not None


@dataclass
class RunLabels:
    """The columns every face of one run shares."""

    runtime: str
    precision: str
    precision_effective: str | None
    detector: str
    embedder: str
    run_id: str
    fixed_boxes: bool  # True: stand-in boxes (synthetic frames, replica detector), not detections


@dataclass
class FaceRecord:
    """One row of --save-detections: a face, where it is (original image pixels) and what made it."""

    source: str  # the image file, or "synthetic"
    frame: int  # index of the frame in the run
    face: int  # index of the face in its frame, best score first
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    landmarks: dict[str, float | None]  # left_eye_x, left_eye_y, ... (None: the detector has no keypoints)
    embedding_norm: float  # L2 norm of the aligned crop's embedding before normalising
    labels: RunLabels
    embedding: list[float] | None = None  # the L2-normalised embedding, with --save-embeddings

    def flat(self, with_embedding: bool) -> dict:
        """One flat row in the file's column order (column_types)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("landmarks", "labels")}
        values |= self.landmarks | asdict(self.labels) | {"fixed_box": self.labels.fixed_boxes}
        return {name: values[name] for name in column_types(with_embedding)}


@dataclass
class OutputSummary:
    faces: int = 0
    frames: int = 0
    pictures: int = 0
    sheets: int = 0
    lines: list[str] = field(default_factory=list)  # what was written where, for the console


# ---------------------------------------------------------------- checks before the benchmark


def check_outputs(request: OutputRequest, images_dir: str | None, results_out: str | None = None) -> None:
    """Refuse outputs that cannot be written, before anything runs (UserError names the fix)."""
    if request.with_embeddings and request.detections is None:
        raise UserError("--save-embeddings adds the embedding column to --save-detections FILE; give that too")
    if request.detections is not None:
        path = request.detections
        if path.suffix.lower() not in DETECTION_SUFFIXES:
            raise UserError(f"--save-detections {path}: name the file .parquet or .json")
        if path.is_dir():
            raise UserError(f"--save-detections {path}: is a folder; give a file name ending .parquet or .json")
        if results_out is not None and Path(results_out).resolve() == path.resolve():
            raise UserError(f"--save-detections {path} is also the --out results file; give the faces their own file")
        _check_writable_folder(path.parent, f"--save-detections {path}", "choose a writable place for the file")
    for flag, folder in (("--save-annotated", request.annotated), ("--save-crops", request.crops)):
        if folder is None:
            continue
        if images_dir is not None and folder.resolve() == Path(images_dir).resolve():
            raise UserError(f"{flag} {folder}: is the --images folder; choose another folder "
                            "so the pictures are never overwritten")
        _check_writable_folder(folder, f"{flag} {folder}", "choose a writable folder")


def _check_writable_folder(folder: Path, flag: str, fix: str) -> None:
    """Create the folder and write a probe file: permissions alone say nothing to root."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{flag}: cannot write in {folder} ({exc.strerror or exc}); {fix}") from None


# ---------------------------------------------------------------- collecting faces


def face_records(batch, labels: RunLabels, sources: Callable[[int], str], with_embeddings: bool) -> list[FaceRecord]:
    """FaceRecords of one finished pipeline batch (bench.pipeline.run._Batch)."""
    records = []
    offset = 0  # embeddings are concatenated over the batch's frames, in frame order
    for i, found in enumerate(batch.detections):
        frame = batch.first + i
        for k in range(len(found)):
            x1, y1, x2, y2 = (float(v) for v in found.boxes[k])
            records.append(FaceRecord(
                source=sources(frame), frame=frame, face=k, x1=x1, y1=y1, x2=x2, y2=y2,
                score=float(found.scores[k]), landmarks=_landmark_columns(found.kps, k),
                embedding_norm=float(batch.norms[offset + k]), labels=labels,
                embedding=[float(v) for v in batch.embeddings[offset + k]] if with_embeddings else None))
        offset += len(found)
    return records


def _landmark_columns(kps: np.ndarray | None, k: int) -> dict[str, float | None]:
    columns: dict[str, float | None] = {}
    for p, name in enumerate(LANDMARKS):
        columns[f"{name}_x"] = None if kps is None else float(kps[k, p, 0])
        columns[f"{name}_y"] = None if kps is None else float(kps[k, p, 1])
    return columns


def write_detections(path: Path, records: list[FaceRecord], with_embeddings: bool) -> None:
    """Parquet (typed columns, embedding a list<float32>) or JSON (a list of objects), atomically."""
    rows = [r.flat(with_embeddings) for r in records]
    if path.suffix.lower() == ".json":
        write_atomically(path, (json.dumps(rows, indent=1) + "\n").encode())
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) if kind != "list_float32" else (name, pa.list_(pa.float32()))
                        for name, kind in column_types(with_embeddings).items()])
    table = pa.Table.from_pylist(rows, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    write_atomically(path, buffer.getvalue())


def column_types(with_embedding: bool) -> dict[str, str]:
    """The detections file's columns and their pyarrow types (an empty file still has them all)."""
    columns = {"source": "string", "frame": "int64", "face": "int64",
               **{name: "float64" for name in ("x1", "y1", "x2", "y2", "score")},
               **{f"{name}_{axis}": "float64" for name in LANDMARKS for axis in "xy"},
               "embedding_norm": "float64", "fixed_box": "bool_", "runtime": "string", "precision": "string",
               "precision_effective": "string", "detector": "string", "embedder": "string", "run_id": "string"}
    if with_embedding:
        columns["embedding"] = "list_float32"
    return columns


# ---------------------------------------------------------------- pictures


class AnnotatedWriter:
    """Writes each frame with its faces drawn as it arrives, and the crops in sheets of 10 x 10."""

    def __init__(self, folder: Path, names: Callable[[int], str], max_pictures: int | None = None):
        self.folder = folder
        self.names = names  # frame index -> picture stem
        self.max_pictures = max_pictures
        self.pictures = 0
        self.sheets = 0
        self._crops: list[tuple[np.ndarray, str]] = []

    def add_batch(self, batch) -> None:
        offset = 0
        for i, (frame, found) in enumerate(zip(batch.frames, batch.detections)):
            index = batch.first + i
            drawn = self.max_pictures is None or self.pictures < self.max_pictures
            if drawn:  # beyond max_pictures the frames repeat pictures already drawn, crops and all
                self._write(f"{index:04d}-{self.names(index)}.png", draw_faces(frame, found))
                self.pictures += 1
                self._crops.extend((batch.aligned[offset + k], f"{index}#{k}") for k in range(len(found)))
            offset += len(found)
        while len(self._crops) >= SHEET_COLUMNS * SHEET_ROWS:
            self._flush_sheet()

    def finish(self) -> None:
        if self._crops:
            self._flush_sheet()

    def _flush_sheet(self) -> None:
        page = self._crops[:SHEET_COLUMNS * SHEET_ROWS]
        del self._crops[:len(page)]
        self._write(f"crops-{self.sheets:03d}.png", contact_sheet([c for c, _ in page], [n for _, n in page]))
        self.sheets += 1

    def _write(self, name: str, rgb: np.ndarray) -> None:
        write_png(self.folder / name, rgb)


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise OSError(f"PNG encoding failed for {path.name}")
    write_atomically(path, png.tobytes())


def write_crops(folder: Path, batch, names: Callable[[int], str]) -> int:
    """Each aligned face of a finished batch as FRAME-STEM-FACE.png; the number written."""
    offset = 0
    for i, found in enumerate(batch.detections):
        index = batch.first + i
        for k in range(len(found)):
            write_png(folder / f"{index:04d}-{names(index)}-{k}.png", batch.aligned[offset + k])
        offset += len(found)
    return offset


def draw_faces(frame_rgb: np.ndarray, found) -> np.ndarray:
    """A copy of the frame with every box, its index and score, and its five landmarks drawn."""
    import cv2

    canvas = np.ascontiguousarray(frame_rgb[..., ::-1])  # OpenCV draws in BGR
    line = max(1, round(max(canvas.shape[:2]) / 400))
    for k in range(len(found)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in found.boxes[k])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), (0, 255, 0), line)
        label = f"#{k} {float(found.scores[k]):.2f}"
        cv2.putText(canvas, label, (x1, max(y1 - 4 * line, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * line,
                    (0, 255, 0), line, cv2.LINE_AA)
        if found.kps is not None:
            for point, colour in zip(found.kps[k], _LANDMARK_BGR):
                cv2.circle(canvas, (int(round(float(point[0]))), int(round(float(point[1])))), line + 1,
                           colour, -1, cv2.LINE_AA)
    return np.ascontiguousarray(canvas[..., ::-1])


def contact_sheet(crops: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Crops on a grid, up to SHEET_COLUMNS across, each labelled frame#face; black between."""
    import cv2

    columns = min(SHEET_COLUMNS, len(crops))
    rows = -(-len(crops) // columns)
    cell = ALIGNED_SIZE + 2
    sheet = np.zeros((rows * cell, columns * cell, 3), np.uint8)
    for n, (crop, label) in enumerate(zip(crops, labels)):
        y, x = (n // columns) * cell + 1, (n % columns) * cell + 1
        tile = np.ascontiguousarray(crop[..., ::-1])
        cv2.putText(tile, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        sheet[y:y + ALIGNED_SIZE, x:x + ALIGNED_SIZE] = tile[..., ::-1]
    return sheet


# ---------------------------------------------------------------- the pass


def save_outputs(request: OutputRequest, run_pass: Callable[[Callable], None], labels: RunLabels,
                 sources: Callable[[int], str], max_pictures: int | None) -> OutputSummary:
    """Run the pipeline once more through `run_pass(on_batch)` and write what was asked.

    A write that fails (disk full, folder removed meanwhile) is one UserError line.
    """
    summary = OutputSummary()
    records: list[FaceRecord] = []
    pictures = None
    if request.annotated is not None:
        pictures = AnnotatedWriter(request.annotated, lambda i: Path(sources(i)).stem, max_pictures)

    crops = 0

    def on_batch(batch) -> None:
        nonlocal crops
        summary.frames += len(batch.frames)
        if request.crops is not None:
            crops += _writing(request.crops, "--save-crops",
                              lambda: write_crops(request.crops, batch, lambda i: Path(sources(i)).stem))
        if request.detections is not None:
            records.extend(face_records(batch, labels, sources, request.with_embeddings))
        if pictures is not None:
            _writing(request.annotated, "--save-annotated", lambda: pictures.add_batch(batch))
        summary.faces += len(batch.embeddings)

    run_pass(on_batch)
    if pictures is not None:
        _writing(request.annotated, "--save-annotated", pictures.finish)
        summary.pictures, summary.sheets = pictures.pictures, pictures.sheets
        summary.lines.append(f"{_count(pictures.pictures, 'annotated picture')} and "
                             f"{_count(pictures.sheets, 'contact sheet')} of aligned crops in {request.annotated}")
    if request.crops is not None:
        summary.lines.append(f"{_count(crops, 'aligned face')} saved in {request.crops}")
    if request.detections is not None:
        _writing(request.detections, "--save-detections",
                 lambda: write_detections(request.detections, records, request.with_embeddings))
        summary.lines.append(f"{_count(len(records), 'face')} in {_count(summary.frames, 'frame')} "
                             f"saved in {request.detections}")
    return summary


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _writing(where: Path, flag: str, action: Callable[[], object]):
    try:
        return action()
    except OSError as exc:
        raise UserError(f"{flag} {where}: cannot write ({exc.strerror or exc}); the benchmark row is saved, "
                        "rerun with a writable place") from None

