"""Benchmark: head-pose extraction speed on a 640x360 H.264 video, on ONE core.

Usage:
    .venv/bin/python bench/bench_head_extraction.py                 # synthetic 20 s clip (astronaut)
    .venv/bin/python bench/bench_head_extraction.py --video FILE    # any face video, rescaled

Goal (issue): >= 20x real time per core at 640x360. Decode-only speed is measured in the same run
so the two numbers are comparable on whatever machine this runs on.

Cost of exact grid times: the pose at each 80 ms grid time is interpolated between the source
frames around it, so the frames on both sides of every grid time are tracked (about 83 % of the
frames at 29.97/30 fps, all at 24 fps, half at 25 fps) where nearest-frame sampling tracked
12.5 / fps of them. The run prints how many frames were tracked; use ``--fps 29.97`` to see the
common camera case.

Single core: the process pins itself to one CPU with ``os.sched_setaffinity`` (Linux), and the
thread-pool variables (OMP/OpenBLAS/MKL/TFLite-XNNPACK via OMP) are set to 1 before numpy, OpenCV
or MediaPipe load; ``cv2.setNumThreads(1)`` stops OpenCV's own pool. MediaPipe's graph still starts
a few threads, but with the affinity mask they share one core, so "x real time per core" is
video seconds / wall seconds. CPU seconds (``time.process_time``) are printed as a cross-check.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.features.head.tracking import FaceMeshTracker, track_video  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 360, 25.0


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to CPU {core}"
    return "affinity not supported here: NOT pinned"


def encode_h264(frames: list[np.ndarray] | object, path: Path, fps: float) -> None:
    """Pipe raw BGR frames into the static ffmpeg from imageio-ffmpeg (libx264, yuv420p)."""
    import imageio_ffmpeg

    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(fps), "-i", "-",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", str(path),
    ]  # fmt: skip
    with subprocess.Popen(cmd, stdin=subprocess.PIPE) as proc:
        assert proc.stdin is not None
        for frame in frames:  # type: ignore[attr-defined]
            proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError("ffmpeg failed to encode the benchmark video")


def synthetic_frames(seconds: float, fps: float = FPS):
    """Astronaut's head (webcam-like framing, face ~half the frame height) tilting and drifting."""
    from skimage import data

    head = np.ascontiguousarray(data.astronaut()[0:300, 80:380, ::-1])  # 300x300 around the face
    face = cv2.resize(head, (300, 300))
    for i in range(int(seconds * fps)):
        t = i / fps
        matrix = cv2.getRotationMatrix2D((150, 150), 12 * math.sin(2 * math.pi * 0.4 * t), 1.0)
        matrix[0, 2] += 170 + 60 * math.sin(2 * math.pi * 0.15 * t)
        matrix[1, 2] += 30 + 15 * math.sin(2 * math.pi * 0.3 * t)
        yield cv2.warpAffine(face, matrix, (WIDTH, HEIGHT), borderValue=(90, 110, 120))


def rescaled_frames(video: Path):
    """Any video letterboxed into 640x360 (aspect kept)."""
    capture = cv2.VideoCapture(str(video))
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        h, w = frame.shape[:2]
        scale = min(WIDTH / w, HEIGHT / h)
        small = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        y0, x0 = (HEIGHT - small.shape[0]) // 2, (WIDTH - small.shape[1]) // 2
        canvas[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
        yield canvas
    capture.release()


def decode_all(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    n = 0
    while capture.read()[0]:
        n += 1
    capture.release()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="face video to rescale to 640x360 (default: synthetic)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the synthetic clip")
    parser.add_argument("--fps", type=float, default=FPS, help="frame rate of the synthetic clip (e.g. 29.97)")
    args = parser.parse_args()

    pinned = pin_to_one_core()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "bench_640x360.mp4"
        source_fps = args.fps
        if args.video:
            source_fps = cv2.VideoCapture(str(args.video)).get(cv2.CAP_PROP_FPS) or FPS
            encode_h264(rescaled_frames(args.video), clip, source_fps)
        else:
            encode_h264(synthetic_frames(args.seconds, args.fps), clip, args.fps)

        decode_all(clip)  # warm the page cache and codec
        t0, c0 = time.perf_counter(), time.process_time()
        n_frames = decode_all(clip)
        decode_wall, decode_cpu = time.perf_counter() - t0, time.process_time() - c0

        t0, c0 = time.perf_counter(), time.process_time()
        with FaceMeshTracker(static_image_mode=False):
            pass
        init_wall, init_cpu = time.perf_counter() - t0, time.process_time() - c0

        t0, c0 = time.perf_counter(), time.process_time()
        track = track_video(clip)
        extract_wall, extract_cpu = time.perf_counter() - t0, time.process_time() - c0

    duration = n_frames / source_fps
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"video: {'synthetic astronaut' if not args.video else args.video.name} -> 640x360 H.264, "
        f"{n_frames} frames at {source_fps:g} fps = {duration:.1f} s; {pinned}, cv2 threads 1"
    )
    print(
        f"decode only       : {n_frames / decode_wall:8.0f} frames/s  ({duration / decode_wall:6.0f}x real time, "
        f"CPU {decode_cpu:.2f} s)"
    )
    print(
        f"head extraction   : {n_frames / extract_wall:8.0f} source frames/s, "
        f"{len(track.time_s) / extract_wall:.0f} pose frames/s at 12.5 fps, "
        f"detected {track.detected.mean():.1%}"
    )
    print(
        f"frames tracked    : {track.n_tracked} of {n_frames} ({track.n_tracked / n_frames:.0%}; "
        f"nearest-frame sampling would track {min(1.0, 12.5 / source_fps):.0%})"
    )
    print(f"extraction/decode : {extract_wall / decode_wall:8.1f}x the decode-only time")
    print(
        f"x real time / core: {duration / extract_wall:8.1f}x (wall, 1 core)   "
        f"{duration / extract_cpu:.1f}x (CPU seconds {extract_cpu:.2f})"
    )
    print(
        f"  of which FaceMesh start-up {init_wall:.2f} s wall / {init_cpu:.2f} s CPU (once per video/tile); "
        f"steady state {duration / max(extract_wall - init_wall, 1e-9):.1f}x real time per core"
    )
    print(f"peak RSS          : {peak_rss_mb:8.0f} MiB")


if __name__ == "__main__":
    main()
