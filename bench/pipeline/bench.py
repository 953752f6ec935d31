"""`facebench pipeline`: load the detector and embedder on one runtime, run the staged
pipeline sequentially and overlapped, and turn the comparison into a PointResult.

Validation (models, runtime, frames, batch) happens in `prepare`, before anything is
loaded or written, so bad input costs nothing and leaves no file behind.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench import env
from bench.domain import DEFAULT_INPUT_FORMAT, InputFormat, input_format
from bench.errors import UserError
from bench.measure.protocol import spread_pct
from bench.measure.stats import median_item
from bench.models import zoo
from bench.models.info import ModelInfo
from bench.models.input_artifact import make_input_artifact
from bench.pipeline import outputs
from bench.pipeline.run import (IMAGE_SUFFIXES, STAGES, OverlapComparison, PipelineResult, image_paths, read_rgb,
                                run_pipeline, synthetic_frames)
from bench.results import (CpuTelemetry, Environment, GpuTelemetry, ModelFacts, PipelineFigures, PointIdentity,
                           PointResult, SessionSettings, SteadyState)
from bench.runtimes.registry import get_runtime
from bench.session import LoadRequest
from bench.suite import ModelRef, parse_model_arg
from bench.telemetry.cpu import CpuSampler
from bench.telemetry.nvml import open_gpu_sampler

SUITE_NAME = "pipeline"
PRECISION = "fp32"
SYNTHETIC_HW = (720, 1280)  # a 720p camera frame
Status = Callable[[str], None]


@dataclass
class PipelineRequest:
    """What the user asked for (the command's arguments)."""

    det: str
    rec: str
    runtime: str
    images: str | None = None
    synthetic: int | None = None
    det_size: int | None = None
    batch: int = 1
    rec_batch: int = 8
    faces_per_frame: int = 4  # fixed boxes per frame where real detections mean nothing
    repeats: int = 1
    queue_depth: int = 2
    seed: int = 0
    input_format: str = DEFAULT_INPUT_FORMAT  # how frames reach both models (bench.domain.INPUT_FORMATS)
    outputs: outputs.OutputRequest = field(default_factory=outputs.OutputRequest)
    out: str | None = None  # the results file or folder (--out), which the outputs must not replace


@dataclass
class PipelineSetup:
    """The validated plan: resolved models, the runtime and the batch sizes that will run."""

    request: PipelineRequest
    det: ModelInfo
    rec: ModelInfo
    runtime: Any  # bench.runtimes.base.Runtime
    batch: int
    rec_batch: int
    synthetic_faces: int | None  # None: use what the detector finds
    frame_paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def format(self) -> InputFormat:
        return input_format(self.request.input_format, "--input")

    @property
    def source(self) -> str:
        return "images" if self.request.images else "synthetic"

    def make_frames(self) -> Iterator[np.ndarray]:
        """A fresh frame stream; image files are decoded lazily inside the decode/resize stage."""
        if self.frame_paths:
            return (read_rgb(p) for p in self.frame_paths)
        height, width = SYNTHETIC_HW
        return synthetic_frames(self.request.synthetic, seed=self.request.seed, height=height, width=width)


@dataclass
class ModeTelemetry:
    """The samplers' figures over one run."""

    cpu: CpuTelemetry | None = None
    gpu: GpuTelemetry | None = None


@dataclass
class ModeRun:
    """One mode's run and the telemetry sampled during it."""

    result: PipelineResult
    telemetry: ModeTelemetry


# ---------------------------------------------------------------- validation


def prepare(request: PipelineRequest, status: Status = lambda _: None) -> PipelineSetup:
    """Check the request and resolve models and runtime; raises UserError with the fix."""
    _check_numbers(request)
    input_format(request.input_format, "--input")  # an unknown format is refused before anything loads
    frame_paths = _frame_paths(request)
    outputs.check_outputs(request.outputs, request.images, request.out)
    runtime = _available_runtime(request.runtime)
    status(f"preparing {request.det}")
    det = _resolve(request.det, "--det", "detector", request.det_size)
    status(f"preparing {request.rec}")
    rec = _resolve(request.rec, "--rec", "embedder", None)
    notes: list[str] = []
    batch = _runnable_batch(det, request.batch, "detector", notes)
    rec_batch = _runnable_batch(rec, request.rec_batch, "embedder", notes)
    synthetic_faces = None
    if request.synthetic is not None:
        synthetic_faces = request.faces_per_frame
    elif det.source == "builtin":  # a replica's random weights give meaningless boxes
        synthetic_faces = request.faces_per_frame
        notes.append(f"{det.name} is a replica with random weights: its boxes mean nothing, so every frame "
                     f"gets {synthetic_faces} fixed faces; pass a real SCRFD .onnx file to embed real faces")
    return PipelineSetup(request, det, rec, runtime, batch, rec_batch, synthetic_faces, frame_paths, notes)


def _check_numbers(request: PipelineRequest) -> None:
    if request.images is None and request.synthetic is None:
        raise UserError("give the frames: --images DIR (a folder of pictures) or --synthetic N (N random frames)")
    if request.images is not None and request.synthetic is not None:
        raise UserError("give either --images DIR or --synthetic N, not both")
    for flag, value in (("--synthetic", request.synthetic), ("--batch", request.batch),
                        ("--rec-batch", request.rec_batch), ("--repeats", request.repeats)):
        if value is not None and value <= 0:
            raise UserError(f"{flag} {value}: must be a positive whole number")
    if request.faces_per_frame < 0:
        raise UserError(f"--faces-per-frame {request.faces_per_frame}: must be 0 or more")
    if request.det_size is not None and (request.det_size <= 0 or request.det_size % 32):
        raise UserError(f"--det-size {request.det_size}: must be a positive multiple of 32, e.g. 320 or 640")


def _frame_paths(request: PipelineRequest) -> list[Path]:
    if request.images is None:
        return []
    folder = Path(request.images)
    if not folder.is_dir():
        raise UserError(f"--images {folder}: no such folder; pass a folder of .jpg/.png pictures")
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
        raise UserError(f"--images {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder; "
                        "add pictures or use --synthetic N")
    return image_paths(folder)


def _available_runtime(name: str):
    runtime = get_runtime(name)  # UserError for an unknown name
    ok, reason = runtime.available()
    if not ok:
        raise UserError(f"runtime '{name}' is unavailable here: {reason}; see facebench runtimes")
    return runtime


def _resolve(text: str, flag: str, family: str, det_size: int | None) -> ModelInfo:
    ref = parse_model_arg(text)
    if det_size is not None:
        if ref.input_size is not None and ref.input_size != det_size:
            raise UserError(f"{flag} {text} and --det-size {det_size} disagree; give the size once")
        ref = ModelRef(name=ref.name, input_size=det_size, path=ref.path)
    if ref.path and not Path(ref.path).is_file():
        raise UserError(f"{flag} {ref.path}: no such model file; pass an .onnx file or a built-in name "
                        "(facebench models list)")
    info = zoo.resolve(ref)
    if info.family != family:
        raise UserError(f"{flag} {text} is {_A[info.family]}, not {_A[family]}; pass {_EXAMPLE[family]}")
    return info


_A = {"detector": "a detector", "embedder": "an embedder"}
_EXAMPLE = {"detector": "an SCRFD detector, e.g. scrfd_500m@640", "embedder": "an ArcFace embedder, e.g. arcface_mbf"}


def _runnable_batch(info: ModelInfo, batch: int, role: str, notes: list[str]) -> int:
    """The batch the file can run correctly: files fixed at 1 or with flattened outputs run at 1."""
    reason = info.batch_limit_reason(batch)
    if reason is None:
        return batch
    notes.append(f"{role} runs at batch 1, not {batch}: {reason}")
    return 1


# ---------------------------------------------------------------- running


def load_session(runtime, info: ModelInfo, batch: int, fmt: InputFormat):
    """`info` on `runtime`, taking `fmt` batches (a uint8 format loads the artifact that normalises)."""
    path = make_input_artifact(info.path, fmt, info.mean, info.std, zoo.cache_dir() / "artifacts")
    request = LoadRequest(model_path=str(path), input_name=info.input_name,
                          input_shape=fmt.shape(batch, info.input_hw), precision=PRECISION,
                          input_dtype=fmt.dtype, cache_dir=str(zoo.cache_dir()))
    return runtime.load(request)


@dataclass
class PipelineOutcome:
    comparison: OverlapComparison
    telemetry: dict[str, ModeTelemetry]  # "sequential" / "overlapped" -> the samplers' figures of the median run
    settings: dict[str, dict[str, Any]]  # "detector" / "embedder" -> the session's effective settings
    notes: list[str] = field(default_factory=list)  # e.g. why there is no GPU telemetry
    overlapped_fps_runs: list[float] = field(default_factory=list)  # every repeat: the point's noise


@dataclass
class SessionPair:
    """The detector and embedder sessions, kept open after the benchmark for the output pass."""

    det: Any = None
    rec: Any = None

    def load(self, setup: PipelineSetup, status: Status) -> None:
        status(f"loading {setup.det.name} (batch {setup.batch}) on {setup.runtime.name}")
        self.det = load_session(setup.runtime, setup.det, setup.batch, setup.format)
        status(f"loading {setup.rec.name} (batch {setup.rec_batch}) on {setup.runtime.name}")
        self.rec = load_session(setup.runtime, setup.rec, setup.rec_batch, setup.format)

    def close(self) -> None:
        for session in (self.rec, self.det):
            if session is not None:
                session.close()
        self.det = self.rec = None

    def __enter__(self) -> SessionPair:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_benchmark(setup: PipelineSetup, status: Status = lambda _: None,
                  sessions: SessionPair | None = None) -> PipelineOutcome:
    """Load both models, warm up, then alternate sequential and overlapped runs.

    Given `sessions`, they stay loaded for the caller (who closes them); else they close here.
    """
    if sessions is None:
        with SessionPair() as own:
            return run_benchmark(setup, status, own)
    sessions.load(setup, status)
    det, rec = sessions.det, sessions.rec
    gpu, notes = _open_gpu_sampler(setup.runtime.uses_cuda)
    try:
        median, overlapped_runs = _compare(setup, det.infer, rec.infer, gpu, status)
    finally:
        if gpu is not None:
            gpu.close()
    return PipelineOutcome(
        comparison=OverlapComparison(sequential=median[False].result, overlapped=median[True].result),
        telemetry={"sequential": median[False].telemetry, "overlapped": median[True].telemetry},
        settings={"detector": det.describe(), "embedder": rec.describe()},
        notes=notes,
        overlapped_fps_runs=overlapped_runs,
    )


def save_outputs(setup: PipelineSetup, sessions: SessionPair, outcome: PipelineOutcome, run_id: str,
                 status: Status = lambda _: None) -> outputs.OutputSummary:
    """--save-detections / --save-annotated: one untimed pass over the same frames."""
    labels = outputs.RunLabels(
        runtime=setup.runtime.name, precision=PRECISION,
        precision_effective=outcome.settings.get("detector", {}).get("precision_effective"),
        detector=setup.det.name, embedder=setup.rec.name, run_id=run_id,
        fixed_boxes=setup.synthetic_faces is not None)
    paths = [str(p) for p in setup.frame_paths]

    def run_pass(on_batch) -> None:
        status(f"saving what the pipeline found: {_frames_label(setup)}")
        run_pipeline(setup.make_frames(), sessions.det.infer, sessions.rec.infer, det_size=setup.det.input_hw[0],
                     batch=setup.batch, overlap=False, synthetic_faces=setup.synthetic_faces,
                     rec_batch=setup.rec_batch, on_batch=on_batch, input_format=setup.format)

    return outputs.save_outputs(setup.request.outputs, run_pass, labels,
                                sources=(lambda i: paths[i]) if paths else (lambda i: "synthetic"),
                                max_pictures=None if paths else outputs.SYNTHETIC_PICTURES)


def _open_gpu_sampler(uses_cuda: bool):
    """(NVML sampler or None, notes): NVIDIA runtimes get utilisation, memory and power per run."""
    if not uses_cuda:
        return None, []
    sampler, reason = open_gpu_sampler()
    return sampler, ([] if sampler else [f"no GPU telemetry: {reason}"])


def _compare(setup: PipelineSetup, det_infer, rec_infer, gpu, status: Status) -> tuple[dict[bool, ModeRun], list[float]]:
    """compare_overlap with samplers around every run, so utilisation belongs to one mode."""
    kwargs = dict(det_size=setup.det.input_hw[0], batch=setup.batch, synthetic_faces=setup.synthetic_faces,
                  rec_batch=setup.rec_batch, queue_depth=setup.request.queue_depth, input_format=setup.format)
    status("warming up")
    run_pipeline(itertools.islice(setup.make_frames(), setup.batch), det_infer, rec_infer, overlap=False, **kwargs)
    # Modes alternate so warm-up and background load fall on both alike; each keeps its median run
    # (as a model point keeps its median repeat: store.combine_repeats), with that run's own figures.
    runs: dict[bool, list[ModeRun]] = {False: [], True: []}
    for repeat in range(setup.request.repeats):
        for overlap in (False, True):
            mode = "overlapped" if overlap else "sequential"
            status(f"{mode} run {repeat + 1}/{setup.request.repeats}: {_frames_label(setup)}")
            runs[overlap].append(_sampled_run(lambda: run_pipeline(setup.make_frames(), det_infer, rec_infer,
                                                                   overlap=overlap, **kwargs), gpu))
    median = {overlap: median_item(mode_runs, key=lambda run: run.result.frames_per_s)
              for overlap, mode_runs in runs.items()}
    return median, [run.result.frames_per_s for run in runs[True]]


def _frames_label(setup: PipelineSetup) -> str:
    count = len(setup.frame_paths) if setup.frame_paths else setup.request.synthetic
    return f"{count} frames, batch {setup.batch}"


def _sampled_run(run: Callable[[], PipelineResult], gpu) -> ModeRun:
    cpu = CpuSampler()
    cpu.window_started()
    if gpu is not None:
        gpu.reset()  # this run's figures only
        gpu.window_started()
    frames = 0
    try:
        result = run()
        frames = result.frames
    finally:
        cpu.window_stopped()
        telemetry = ModeTelemetry(cpu=cpu.figures())
        if gpu is not None:
            gpu.window_stopped()
            gpu.add_frames(frames)
            telemetry.gpu = gpu.figures()
    return ModeRun(result, telemetry)


# ---------------------------------------------------------------- results


def point_identity(setup: PipelineSetup) -> PointIdentity:
    return PointIdentity(runtime=setup.runtime.name, precision=PRECISION, batch=setup.batch,
                         device=setup.runtime.device, kind="pipeline", input_format=setup.format.name,
                         runtime_versions=setup.runtime.versions(),
                         input_bytes_per_frame=setup.format.bytes_per_frame(setup.det.input_hw))


def environment(run_id: str) -> Environment:
    return Environment(run_id=run_id, suite=SUITE_NAME, machine=env.fingerprint(),
                       timestamp_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def detector_facts(setup: PipelineSetup) -> ModelFacts:
    """The row's model is the detector, with the shape it is fed; the embedder is in stages_json."""
    return ModelFacts.of(setup.det, input_dims=setup.format.shape(setup.batch, setup.det.input_hw))


def ok_result(setup: PipelineSetup, outcome: PipelineOutcome, run_id: str) -> PointResult:
    over = outcome.comparison.overlapped
    det_settings = outcome.settings.get("detector", {})
    telemetry = outcome.telemetry.get("overlapped", ModeTelemetry())
    runs = outcome.overlapped_fps_runs
    steady = SteadyState(fps=over.frames_per_s, frames=over.frames, wall_s=over.wall_s,
                         ms_per_frame=1e3 / over.frames_per_s if over.frames_per_s else None,
                         # Spread of the repeats, like a model point's window spread: compare's gate needs it.
                         window_spread_pct=spread_pct(runs) if len(runs) > 1 else None)
    figures = PipelineFigures(stages=stages_summary(setup, outcome), frames_total=over.frames,
                              faces_total=over.faces, faces_per_s=over.faces_per_s)
    session = SessionSettings.of(det_settings, "host", det_settings.get("precision_effective"),
                                 recorded=outcome.settings)
    return PointResult(point_identity(setup), detector_facts(setup), session=session, steady=steady,
                       cpu=telemetry.cpu, gpu=telemetry.gpu, pipeline=figures, notes=setup.notes + outcome.notes,
                       environment=environment(run_id))


def failed_result(setup: PipelineSetup, run_id: str, exc: BaseException) -> PointResult:
    text = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")
    return PointResult.failed(point_identity(setup), detector_facts(setup), reason,
                              pipeline=PipelineFigures(stages=pipeline_config(setup)), notes=list(setup.notes),
                              environment=environment(run_id))


def stages_summary(setup: PipelineSetup, outcome: PipelineOutcome) -> dict[str, Any]:
    """stages_json: where the time goes (the sequential run, whose stages add up to its wall time),
    each stage's busy time when overlapped, both throughputs and the overlap gain."""
    comparison = outcome.comparison
    seq, over = comparison.sequential, comparison.overlapped
    stages = {
        name: {
            "ms_per_frame": seq.stage_ms_per_frame[name],
            "share": seq.stage_share[name],
            "overlapped_ms_per_frame": over.stage_ms_per_frame[name],
            "overlapped_busy": over.stage_busy[name],
        }
        for name in STAGES
    }
    telemetry = outcome.telemetry
    return {
        "stages": stages,
        "stage_order": list(STAGES),
        "sequential_fps": seq.frames_per_s, "overlapped_fps": over.frames_per_s,
        "sequential_faces_per_s": seq.faces_per_s, "overlapped_faces_per_s": over.faces_per_s,
        "sequential_wall_s": seq.wall_s, "overlapped_wall_s": over.wall_s,
        "overlap_gain": comparison.gain,
        "gpu_util_sequential": _gpu_util(telemetry.get("sequential")),
        "gpu_util_overlapped": _gpu_util(telemetry.get("overlapped")),
        **pipeline_config(setup),
    }


def _gpu_util(telemetry: ModeTelemetry | None) -> float | None:
    return telemetry.gpu.gpu_util_mean if telemetry and telemetry.gpu else None


def pipeline_config(setup: PipelineSetup) -> dict[str, Any]:
    """What ran besides the detector (whose fields are the row's model columns)."""
    return {
        "source": setup.source, "det_size": setup.det.input_hw[0],
        "batch": setup.batch, "requested_batch": setup.request.batch,
        "rec_batch": setup.rec_batch, "queue_depth": setup.request.queue_depth,
        "synthetic_faces_per_frame": setup.synthetic_faces, "repeats": setup.request.repeats,
        **input_summary(setup),
        "embedder": {"model": setup.rec.name, "sha256": setup.rec.sha256, "path": setup.rec.path,
                     "params": setup.rec.params, "macs_per_frame": setup.rec.macs_per_frame},
    }


def input_summary(setup: PipelineSetup) -> dict[str, Any]:
    """What the models are fed and where normalisation runs: on the host (inside decode/resize and
    alignment) for float-nchw, inside both models' graphs (the detector and embedder stages) for uint8."""
    fmt = setup.format
    return {"input_format": fmt.name, "normalisation": "model" if fmt.carries_pixels else "host",
            "detector_bytes_per_frame": fmt.bytes_per_frame(setup.det.input_hw),
            "embedder_bytes_per_face": fmt.bytes_per_frame(setup.rec.input_hw)}
