"""`facebench pipeline` (registered by bench.cli)."""
from __future__ import annotations

from bench.exits import EXIT_INTERRUPTED

EXIT_FAILED = 1


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pipeline", help="end-to-end face pipeline: frames -> SCRFD -> NMS -> alignment -> ArcFace; faces/s per stage",
        description="Benchmark the whole face pipeline (letterbox, batched detector, decode + NMS 0.4, 5-point "
                    "alignment, batched embedder), one stage after another and overlapped, and write one "
                    "pipeline row to Parquet.")
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--images", metavar="DIR", help="folder of pictures (.jpg, .png, ...) used as frames")
    frames.add_argument("--synthetic", type=int, metavar="N",
                        help="N random 1280x720 frames with --faces-per-frame fixed faces each")
    parser.add_argument("--det", required=True, metavar="MODEL", help="detector: scrfd_500m@640 or an SCRFD .onnx")
    parser.add_argument("--rec", required=True, metavar="MODEL", help="embedder: arcface_mbf or an ArcFace .onnx")
    parser.add_argument("--runtime", required=True, metavar="R", help="one runtime, e.g. ort-cpu (facebench runtimes)")
    parser.add_argument("--det-size", type=int, metavar="320|640", help="detector input size (default: the model's)")
    parser.add_argument("--batch", type=int, default=1, metavar="N", help="frames per detector call (default 1)")
    parser.add_argument("--rec-batch", type=int, default=8, metavar="N",
                        help="faces per embedder call; the last call is zero-padded (default 8)")
    parser.add_argument("--faces-per-frame", type=int, default=4, metavar="K",
                        help="fixed faces per frame where detections mean nothing: synthetic frames and "
                             "replica detectors (default 4)")
    parser.add_argument("--repeats", type=int, default=3, metavar="N",
                        help="runs of each mode, alternating; the median of each counts (default 3)")
    parser.add_argument("--input", default="float-nchw", metavar="FORMAT",
                        help="how frames reach both models: float-nchw (normalised on the host, the default) or "
                             "uint8-nchw / uint8-nhwc-bgr / uint8-nhwc-rgb (8-bit frames into artifacts that "
                             "normalise inside the graph), or fp16-nchw (FP16 I/O: float16 in and out, FP16 compute)")
    parser.add_argument("--out", help="results file (.parquet) or folder (default: results/); a URI (s3://, gs://, "
                                      "file://) gets a copy when the run ends, measured locally under results/")
    parser.add_argument("--save-detections", metavar="FILE",
                        help="after the benchmark, one row per face (source image, frame, box, score, landmarks "
                             "in original pixels, embedding norm, runtime) to FILE.parquet or FILE.json")
    parser.add_argument("--save-embeddings", action="store_true",
                        help="add each face's L2-normalised embedding to --save-detections as a list column")
    parser.add_argument("--save-annotated", metavar="DIR",
                        help="after the benchmark, every picture with its boxes, scores and landmarks drawn (PNG) "
                             "and contact sheets of the aligned 112x112 crops, in DIR")
    parser.add_argument("--save-crops", metavar="DIR",
                        help="after the benchmark, every aligned 112x112 face as its own PNG in DIR: real faces "
                             "for `facebench run --images DIR` (INT8 calibration and the identity check)")
    parser.set_defaults(handler=cmd_pipeline)


def cmd_pipeline(args) -> int:
    from pathlib import Path

    from bench.console import console
    from bench.runs import Run, new_results_store, upload
    from bench.pipeline import bench as pipeline_bench
    from bench.pipeline.outputs import OutputRequest

    wanted = OutputRequest(detections=Path(args.save_detections) if args.save_detections else None,
                           annotated=Path(args.save_annotated) if args.save_annotated else None,
                           with_embeddings=args.save_embeddings,
                           crops=Path(args.save_crops) if args.save_crops else None)
    request = pipeline_bench.PipelineRequest(
        det=args.det, rec=args.rec, runtime=args.runtime, images=args.images, synthetic=args.synthetic,
        det_size=args.det_size, batch=args.batch, rec_batch=args.rec_batch, faces_per_frame=args.faces_per_frame,
        repeats=args.repeats, input_format=args.input, outputs=wanted, out=args.out)
    with console.status("checking the request") as status:
        setup = pipeline_bench.prepare(request, status=status.update)
    for note in setup.notes:
        console.print(f"[yellow]note[/] {note}", highlight=False)
    results = new_results_store(args.out, "pipeline")
    try:
        code = _measure_into(results, setup)
    finally:
        results.release()
    target = upload(args.out, Run(results=results))  # as `run --out URI`: the finished local file, copied
    if target:
        console.print(f"copied to {target}", markup=False, soft_wrap=True)
    return code


def _measure_into(results, setup) -> int:
    import uuid

    from bench.console import console
    from bench.pipeline import bench as pipeline_bench
    from bench.report.model import build_report_model
    from bench.report.tables import print_tables

    console.print(f"facebench pipeline: {setup.det.name} + {setup.rec.name} on {setup.runtime.name}, "
                  f"batch {setup.batch} -> {results.path}", highlight=False)
    run_id = uuid.uuid4().hex[:12]
    with pipeline_bench.SessionPair() as sessions:  # kept open for the output pass
        outcome = _benchmark(results, setup, sessions, run_id)
        if isinstance(outcome, int):
            return outcome
        results.add(pipeline_bench.ok_result(setup, outcome, run_id))
        print_tables(build_report_model(results.rows), console)
        console.print(f"1 pipeline point saved in {results.path}", highlight=False)
        if setup.request.outputs.wanted:
            return _save_outputs(setup, sessions, outcome, run_id, results.path)
    return 0


def _save_outputs(setup, sessions, outcome, run_id, results_path) -> int:
    """The untimed output pass, after the row is on disk (a failed write is a UserError line)."""
    from bench.console import console
    from bench.pipeline import bench as pipeline_bench

    try:
        with console.status("saving what the pipeline found") as status:
            summary = pipeline_bench.save_outputs(setup, sessions, outcome, run_id, status=status.update)
    except KeyboardInterrupt:
        console.print(f"interrupted while saving detections; the benchmark row is saved in {results_path}")
        return EXIT_INTERRUPTED
    for line in summary.lines:
        console.print(line, highlight=False)
    return 0


def _benchmark(results, setup, sessions, run_id):
    """The outcome; or an exit status once a failure is recorded (a UserError is recorded and raised)."""
    from bench.console import console, err_console
    from bench.errors import UserError
    from bench.pipeline import bench as pipeline_bench

    try:
        with console.status("starting") as status:
            return pipeline_bench.run_benchmark(setup, status=status.update, sessions=sessions)
    except KeyboardInterrupt:
        console.print(f"interrupted: nothing measured was saved in {results.path}")
        return EXIT_INTERRUPTED
    except UserError as exc:  # e.g. an image that does not decode: record it, then the one-line error
        results.add(pipeline_bench.failed_result(setup, run_id, exc))
        raise
    except Exception as exc:  # a runtime failure is a failed point, recorded as the sweep records one
        failed = pipeline_bench.failed_result(setup, run_id, exc)
        results.add(failed)
        err_console.print(f"facebench: pipeline failed: {failed.reason} (row saved in {results.path})",
                          markup=False, highlight=False)
        return EXIT_FAILED
