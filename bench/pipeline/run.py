"""The staged face pipeline: frames -> SCRFD -> NMS -> alignment -> ArcFace embeddings.

Runtime-agnostic: the detector and embedder are plain callables taking a batch in
the pipeline's input format (float32 NCHW by default, or uint8 frames for a model
that normalises them itself) and returning outputs by name in model order (a Session's `infer`).
Five stages, each timed on its own: decode/resize (pulling frames, letterbox,
blob), detector, decode+NMS, alignment (warp + embedder blob), embedder.
With overlap every stage runs in its own thread joined by bounded queues, so a
model stage never waits for the CPU work of the next batch; without it the
stages run one after another, which is the baseline the overlap gain is against.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.domain import DETECTOR, EMBEDDER, FLOAT_NCHW, InputFormat, random_frames
from bench.errors import UserError
from bench.measure.stats import median_item
from bench.face.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_faces
from bench.face.decode import Detections, decode_scrfd
from bench.face.preprocess import letterbox_batch, model_batch

try:
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None

Infer = Callable[[np.ndarray], Mapping[str, np.ndarray]]  # a Session's infer
STAGES = ("decode/resize", "detector", "decode+NMS", "alignment", "embedder")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_DONE = object()  # end-of-stream marker passed down the queues


@dataclass
class PipelineResult:
    frames: int
    faces: int
    wall_s: float
    stage_s: dict[str, float]  # busy seconds of each stage
    overlap: bool
    batch: int
    det_size: int
    # Last batch's frames (all frames with keep_all): detections in frame pixels,
    # L2-normalised embeddings and the run index of the frame each embedding belongs to.
    detections: list[Detections] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 512), np.float32))
    face_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp))
    aligned: np.ndarray | None = None  # last batch's aligned crops (K,112,112,3) uint8
    embedding_norms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # before normalising

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def stage_share(self) -> dict[str, float]:
        """Each stage's fraction of the summed stage time (sums to 1)."""
        total = sum(self.stage_s.values())
        return {k: (v / total if total else 0.0) for k, v in self.stage_s.items()}

    @property
    def stage_ms_per_frame(self) -> dict[str, float]:
        return {k: 1e3 * v / max(self.frames, 1) for k, v in self.stage_s.items()}

    @property
    def stage_busy(self) -> dict[str, float]:
        """Fraction of the wall time each stage was working; a model stage near 1 never idles."""
        return {k: (v / self.wall_s if self.wall_s else 0.0) for k, v in self.stage_s.items()}

    def summary(self) -> dict[str, float | int | bool]:
        """Flat numbers for reports and rows."""
        row: dict[str, float | int | bool] = {
            "frames": self.frames,
            "faces": self.faces,
            "wall_s": self.wall_s,
            "frames_per_s": self.frames_per_s,
            "faces_per_s": self.faces_per_s,
            "overlap": self.overlap,
            "batch": self.batch,
            "det_size": self.det_size,
        }
        for name in STAGES:
            row[f"{name}_ms_per_frame"] = self.stage_ms_per_frame[name]
            row[f"{name}_share"] = self.stage_share[name]
        return row


@dataclass
class _Batch:
    first: int  # run index of the batch's first frame
    frames: list[np.ndarray]
    blob: np.ndarray | None = None
    scales: np.ndarray | None = None
    det_outputs: Mapping[str, np.ndarray] | None = None  # by name, model order
    detections: list[Detections] = field(default_factory=list)
    aligned: np.ndarray | None = None
    face_blob: np.ndarray | None = None
    face_frame: np.ndarray | None = None
    embeddings: np.ndarray | None = None  # L2-normalised
    norms: np.ndarray | None = None  # each embedding's L2 norm before normalising: a sanity figure


BatchHook = Callable[[_Batch], None]


# ---------------------------------------------------------------- frame sources


def synthetic_frames(n: int, seed: int = 0, height: int = 720, width: int = 1280,
                     pool: int = 4) -> Iterator[np.ndarray]:
    """n RGB uint8 frames cycling through a small pool, so making them costs nothing per frame."""
    rng = np.random.default_rng(seed)
    frames = list(random_frames(rng, min(pool, n), (height, width, 3), dtype="uint8"))
    return (frames[i % len(frames)] for i in range(n))


def image_paths(directory: str | Path) -> list[Path]:
    paths = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {directory}")
    return paths


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to HxWx3 RGB uint8."""
    if cv2 is not None:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"cannot decode image {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    from skimage import io  # optional fallback without OpenCV

    img = io.imread(path)
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    return np.ascontiguousarray(img, dtype=np.uint8)


def image_frames(directory: str | Path) -> Iterator[np.ndarray]:
    """Frames decoded lazily, so decoding is timed inside the decode/resize stage."""
    return (read_rgb(p) for p in image_paths(directory))


@lru_cache(maxsize=32)
def synthetic_detections(frame_hw: tuple[int, int], count: int) -> Detections:
    """count square faces on a grid over the frame, landmarks at the template positions."""
    if count <= 0:
        return Detections.empty()
    h, w = frame_hw
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    cell = min(h / rows, w / cols)
    side = 0.8 * cell
    k = np.arange(count)
    x1 = (k % cols) * cell + 0.1 * cell
    y1 = (k // cols) * cell + 0.1 * cell
    boxes = np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.float32)
    kps = (ARCFACE_TEMPLATE[None] * np.float32(side / ALIGNED_SIZE) + boxes[:, None, :2]).astype(np.float32)
    return Detections(boxes, np.ones(count, np.float32), kps)


def box_landmarks(boxes: np.ndarray) -> np.ndarray:
    """Template landmarks stretched into each box, for detectors without keypoints."""
    size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    return (boxes[:, None, :2] + ARCFACE_TEMPLATE[None] / ALIGNED_SIZE * size).astype(np.float32)


# ---------------------------------------------------------------- stages


def _make_stages(det_infer: Infer, rec_infer: Infer, det_size: int, batch: int,
                 synthetic_faces: int | None, rec_batch: int | None,
                 score_threshold: float, nms_threshold: float,
                 fmt: InputFormat = FLOAT_NCHW) -> list[Callable[[_Batch], _Batch]]:
    def preprocess(b: _Batch) -> _Batch:
        # Zero canvases fill a short last batch: a session loaded at a fixed batch needs a full one.
        canvases, b.scales = letterbox_batch(b.frames, det_size, rows=batch)
        b.blob = model_batch(canvases, fmt, DETECTOR.mean, DETECTOR.std)
        return b

    def detect(b: _Batch) -> _Batch:
        b.det_outputs = det_infer(b.blob)
        b.blob = None
        return b

    def postprocess(b: _Batch) -> _Batch:
        for i, frame in enumerate(b.frames):
            found = decode_scrfd(b.det_outputs, (det_size, det_size), frame=i,
                                 score_threshold=score_threshold, nms_threshold=nms_threshold)
            found = found.scaled(b.scales[i])
            if synthetic_faces is not None:  # replicas' random boxes mean nothing
                found = synthetic_detections(frame.shape[:2], synthetic_faces)
            b.detections.append(found)
        b.det_outputs = None
        return b

    def align(b: _Batch) -> _Batch:
        crops, owners = [], []
        for i, (frame, found) in enumerate(zip(b.frames, b.detections)):
            if len(found):
                kps = found.kps if found.kps is not None else box_landmarks(found.boxes)
                crops.append(align_faces(frame, kps))
                owners.append(np.full(len(found), b.first + i, np.intp))
        b.aligned = np.concatenate(crops) if crops else np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), np.uint8)
        b.face_frame = np.concatenate(owners) if owners else np.zeros(0, np.intp)
        b.face_blob = model_batch(b.aligned, fmt, EMBEDDER.mean, EMBEDDER.std)
        return b

    def embed(b: _Batch) -> _Batch:
        b.embeddings, b.norms = _l2_normalise(_embed_chunks(rec_infer, b.face_blob, rec_batch))
        b.face_blob = None
        return b

    return [preprocess, detect, postprocess, align, embed]


def _embed_chunks(rec_infer: Infer, blob: np.ndarray, rec_batch: int | None) -> np.ndarray:
    """All faces in one call, or in chunks of exactly rec_batch (last one zero-padded)."""
    if len(blob) == 0:
        return np.zeros((0, 512), np.float32)
    if rec_batch is None:
        return _embeddings(rec_infer(blob))
    out = []
    for start in range(0, len(blob), rec_batch):
        chunk = blob[start:start + rec_batch]
        real = len(chunk)
        if real < rec_batch:
            chunk = np.concatenate([chunk, np.zeros((rec_batch - real,) + chunk.shape[1:], chunk.dtype)])
        out.append(_embeddings(rec_infer(chunk))[:real])
    return np.concatenate(out)


def _embeddings(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The embedder's first output: ArcFace exports have one, named differently by each export."""
    return np.asarray(next(iter(outputs.values())), np.float32)


def _l2_normalise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit-length rows, each row's norm before)."""
    if x.ndim != 2:
        x = x.reshape(x.shape[0], -1)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.finfo(np.float32).tiny), norm[:, 0].astype(np.float32)


# ---------------------------------------------------------------- runners


def _batches(frames: Iterable[np.ndarray], batch: int) -> Callable[[], object]:
    """A pull function returning the next _Batch of frames, or _DONE."""
    it = iter(frames)
    first = itertools.count(0, batch)

    def pull():
        chunk = list(itertools.islice(it, batch))
        return _Batch(next(first), chunk) if chunk else _DONE

    return pull


def _run_sequential(pull, stages, sink) -> list[float]:
    busy = [0.0] * len(stages)
    while True:
        t0 = time.perf_counter()
        item = pull()  # frame decoding belongs to the first stage
        if item is _DONE:
            busy[0] += time.perf_counter() - t0
            return busy
        for k, stage in enumerate(stages):
            item = stage(item)
            t1 = time.perf_counter()
            busy[k] += t1 - t0
            t0 = t1
        sink(item)


def _get(q: queue.Queue, stop: threading.Event):
    while True:
        try:
            return q.get(timeout=0.05)
        except queue.Empty:
            if stop.is_set():
                return _DONE


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            pass


def _run_overlapped(pull, stages, sink, depth: int) -> list[float]:
    """One thread per stage, bounded queues between them; the first error stops all."""
    busy = [0.0] * len(stages)
    links = [queue.Queue(maxsize=depth) for _ in stages[1:]]
    stop, errors = threading.Event(), []

    def worker(k: int) -> None:
        receive = pull if k == 0 else (lambda: _get(links[k - 1], stop))
        send = (lambda x: _put(links[k], x, stop)) if k < len(links) else sink
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                item = receive()
                if item is _DONE:
                    break
                if k > 0:  # time spent waiting on the queue is idle, not work
                    t0 = time.perf_counter()
                item = stages[k](item)
                busy[k] += time.perf_counter() - t0
                send(item)
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)
            stop.set()
        finally:
            if k < len(links):
                _put(links[k], _DONE, stop)

    threads = [threading.Thread(target=worker, args=(k,), name=f"pipeline-{STAGES[k]}", daemon=True)
               for k in range(len(stages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return busy


def run_pipeline(
    frames: Iterable[np.ndarray],
    det_infer: Infer,
    rec_infer: Infer,
    det_size: int,
    batch: int,
    overlap: bool = True,
    synthetic_faces: int | None = None,
    *,
    rec_batch: int | None = None,
    queue_depth: int = 2,
    keep_all: bool = False,
    score_threshold: float = 0.5,
    nms_threshold: float = 0.4,
    on_batch: BatchHook | None = None,
    input_format: InputFormat = FLOAT_NCHW,
) -> PipelineResult:
    """Run RGB uint8 frames through detection, alignment and embedding; time every stage.

    batch frames go to the detector per call (the last batch is zero-padded to
    batch). Faces go to the embedder all at once per detector batch, or in
    chunks of exactly rec_batch for sessions loaded at a fixed batch. Both models are
    fed input_format batches (uint8 ones carry the pixels; the models normalise). on_batch sees
    every finished batch (frames, detections, crops, embeddings) in frame order.
    """
    if batch < 1 or queue_depth < 1:
        raise ValueError("batch and queue_depth must be >= 1")
    stages = _make_stages(det_infer, rec_infer, det_size, batch, synthetic_faces, rec_batch,
                          score_threshold, nms_threshold, input_format)
    kept: list[_Batch] = []
    counts = {"frames": 0, "faces": 0}

    def sink(b: _Batch) -> None:
        counts["frames"] += len(b.frames)
        counts["faces"] += len(b.embeddings)
        if on_batch is not None:
            on_batch(b)
        if not keep_all:
            kept.clear()
        kept.append(b)

    t0 = time.perf_counter()
    pull = _batches(frames, batch)
    busy = _run_overlapped(pull, stages, sink, queue_depth) if overlap else _run_sequential(pull, stages, sink)
    wall = time.perf_counter() - t0
    return PipelineResult(
        frames=counts["frames"],
        faces=counts["faces"],
        wall_s=wall,
        stage_s=dict(zip(STAGES, busy)),
        overlap=overlap,
        batch=batch,
        det_size=det_size,
        detections=[d for b in kept for d in b.detections],
        embeddings=np.concatenate([b.embeddings for b in kept]) if kept else np.zeros((0, 512), np.float32),
        face_frame=np.concatenate([b.face_frame for b in kept]) if kept else np.zeros(0, np.intp),
        aligned=kept[-1].aligned if kept else None,
        embedding_norms=np.concatenate([b.norms for b in kept]) if kept else np.zeros(0, np.float32),
    )


@dataclass
class OverlapComparison:
    sequential: PipelineResult
    overlapped: PipelineResult

    @property
    def gain(self) -> float:
        """Sequential wall time over overlapped wall time (>1: overlapping helps)."""
        return self.sequential.wall_s / self.overlapped.wall_s


def compare_overlap(make_frames: Callable[[], Iterable[np.ndarray]], det_infer: Infer, rec_infer: Infer,
                    det_size: int, batch: int, repeats: int = 1, **kwargs) -> OverlapComparison:
    """Run the same frames one stage after another and overlapped; keep each mode's median run
    (lower middle of an even count, by frames/s: bench.measure.stats.median_item).

    The modes alternate so warm-up and background load fall on both alike.
    """
    runs: dict[bool, list[PipelineResult]] = {False: [], True: []}
    for _ in range(repeats):
        for overlap in (False, True):
            runs[overlap].append(run_pipeline(make_frames(), det_infer, rec_infer, det_size, batch, overlap=overlap,
                                              **kwargs))
    median = {overlap: median_item(results, key=lambda r: r.frames_per_s) for overlap, results in runs.items()}
    return OverlapComparison(sequential=median[False], overlapped=median[True])
