"""Benchmark: legacy FaceMesh vs MediaPipe FaceLandmarker (.task), each with and without One-Euro.

Usage:
    .venv/bin/python bench/bench_face_models.py            # subsample: a couple of minutes on 2 cores
    .venv/bin/python bench/bench_face_models.py --full     # every photo, every video, full length

Measures, in one run, for each landmark model and each with the One-Euro filter
(`pipeline.features.head.smoothing`, settings as in HeadConfig or --min-cutoff/--beta):

- AFLW MAE: mean absolute pitch/yaw/roll error (deg) on the labelled photos of the shared AFLW2000
  subset, angles re-expressed in AFLW's Euler order, the usual |angle| <= 99 deg protocol. Photos
  are single frames, so the filter cannot change this number.
- jitter: median |delta pitch| per 80 ms head frame (deg) on the shared real talking-face videos
  (LivePortrait + SadTalker): the frame-to-frame noise a model sees as "motion".
- lag: delay (ms) of the measured roll behind the true roll of a rendered face rolling
  10 deg at 1.3 Hz (30 fps, the sample corpus' renderer), from the phase of a sinusoid fit.

Ratios are against the FaceMesh baseline of the same run. Needs ../shared/testdata (the data is
never copied into the repository); the .task model is ../shared/testdata/mediapipe_models/.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("GLOG_minloglevel", "2")

import argparse  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from pipeline.config import HeadConfig  # noqa: E402
from pipeline.features.head.frame_features import head_features_from_track  # noqa: E402
from pipeline.features.head.tracking import FaceMeshTracker, pose_from_image, track_video  # noqa: E402
from schemas.conventions import HEAD_HOP_S  # noqa: E402

TESTDATA = REPO.parent / "shared" / "testdata"
TASK = TESTDATA / "mediapipe_models" / "face_landmarker.task"
ROLL_DEG, ROLL_HZ = 10.0, 1.3


@dataclass(frozen=True)
class Variant:
    name: str
    task: Path | None
    smoothing: str


def aflw_mae(task: Path | None, limit: int | None) -> tuple[float, int]:
    """Mean over pitch/yaw/roll of the MAE (deg) in AFLW's Euler order, and the images scored."""
    from scipy.spatial.transform import Rotation

    folder = TESTDATA / "aflw2000_subset"
    truth = pd.read_csv(folder / "ground_truth_pose_deg.csv").iloc[:limit]
    errors = []
    with FaceMeshTracker(static_image_mode=True, task_model=task) as tracker:
        for name, pitch, yaw, roll in truth[["image", "pitch_deg", "yaw_deg", "roll_deg"]].itertuples(index=False):
            gt = np.array([-pitch, -yaw, -roll])  # AFLW signs are opposite to ours (SOURCES.md)
            pose = pose_from_image(cv2.imread(str(folder / name)), tracker=tracker)
            if pose is None or np.any(np.abs(gt) > 99) or abs(pose[3] - 0.5) > 0.2 or abs(pose[4] - 0.5) > 0.2:
                continue
            p, y, r = np.radians(pose[:3])  # ours: R = Rz(-roll) Ry(-yaw) Rx(pitch); AFLW: Rx Ry Rz
            matrix = Rotation.from_euler("ZYX", [-r, -y, p]).as_matrix()
            x, yy, z = np.degrees(Rotation.from_matrix(matrix).as_euler("XYZ"))
            errors.append(np.abs(np.array([x, -yy, -z]) - gt))
    return float(np.mean(errors)), len(errors)


def trimmed(video: Path, seconds: float | None, tmp: Path) -> Path:
    """The first ``seconds`` of a video (re-encoded, every frame kept), or the video itself."""
    if seconds is None:
        return video
    import imageio_ffmpeg

    out = tmp / f"{video.stem}_{seconds:g}s.mp4"
    if not out.exists():
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(video),
                        "-t", str(seconds), "-an", "-c:v", "libx264", "-crf", "16", "-preset", "veryfast",
                        str(out)], check=True)
    return out


def pitch_track(video: Path, variant: Variant, cfg: HeadConfig) -> tuple[np.ndarray, np.ndarray]:
    track = track_video(video, tracker_factory=lambda: FaceMeshTracker(task_model=variant.task),
                        require_face=False)
    table = head_features_from_track(track, max_gap_s=0.0, smoothing=variant.smoothing,
                                     smoothing_min_cutoff_hz=cfg.smoothing_min_cutoff_hz,
                                     smoothing_beta=cfg.smoothing_beta)
    return table["pitch"].to_numpy(np.float64), table["roll"].to_numpy(np.float64)


def jitter(videos: list[Path], variant: Variant, cfg: HeadConfig) -> float:
    steps = [np.abs(np.diff(pitch_track(v, variant, cfg)[0])) for v in videos]
    steps = np.concatenate(steps)
    return float(np.median(steps[np.isfinite(steps)]))


def rendered_roll(tmp: Path) -> Path:
    from pipeline.sample.encoders import encode_video
    from pipeline.sample.faces import default_look
    from pipeline.sample.render import HeadRenderer

    path, fps, size = tmp / "roll.mp4", 30.0, 256
    renderer = HeadRenderer(default_look("P01"), size, size, calibrate=False)
    frames = (renderer.render(0.0, 0.0, ROLL_DEG * math.sin(2 * math.pi * ROLL_HZ * i / fps))
              for i in range(int(8 * fps)))
    encode_video(path, size, size, fps, frames)
    return path


def lag_ms(video: Path, variant: Variant, cfg: HeadConfig) -> float:
    """Delay of the measured roll behind the truth, from a least-squares sinusoid fit (after 1 s)."""
    roll = pitch_track(video, variant, cfg)[1]
    t = np.arange(len(roll)) * HEAD_HOP_S
    ok = np.isfinite(roll) & (t >= 1.0)  # skip the filter's start-up
    w = 2 * np.pi * ROLL_HZ
    design = np.column_stack([np.sin(w * t[ok]), np.cos(w * t[ok]), np.ones(ok.sum())])
    a, b, _ = np.linalg.lstsq(design, roll[ok], rcond=None)[0]
    return float(-math.atan2(b, a) / w * 1000.0)  # a sin(wt) + b cos(wt) = A sin(w (t - lag))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="all photos and videos, full length")
    parser.add_argument("--min-cutoff", type=float, default=HeadConfig().smoothing_min_cutoff_hz)
    parser.add_argument("--beta", type=float, default=HeadConfig().smoothing_beta)
    args = parser.parse_args()
    if not TESTDATA.is_dir() or not TASK.is_file():
        sys.exit(f"needs the shared test data and {TASK}")
    cv2.setNumThreads(1)
    cfg = HeadConfig(smoothing_min_cutoff_hz=args.min_cutoff, smoothing_beta=args.beta)
    videos = sorted((TESTDATA / "liveportrait").glob("*.mp4")) + sorted((TESTDATA / "sadtalker").glob("*.mp4"))
    if not args.full:
        videos = videos[::3]
    variants = [Variant("FaceMesh", None, "none"), Variant("FaceLandmarker", TASK, "none"),
                Variant("FaceMesh + One-Euro", None, "one_euro"),
                Variant("FaceLandmarker + One-Euro", TASK, "one_euro")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clips = [trimmed(v, None if args.full else 6.0, tmp) for v in videos]
        roll_video = rendered_roll(tmp)
        maes = {task: aflw_mae(task, None if args.full else 32) for task in (None, TASK)}
        for variant in variants:
            mae, n_images = maes[variant.task]
            rows.append({"variant": variant.name, "aflw_mae_deg": mae, "aflw_images": n_images,
                         "jitter_deg": jitter(clips, variant, cfg), "lag_ms": lag_ms(roll_video, variant, cfg)})
    table = pd.DataFrame(rows).set_index("variant")
    base = table.loc["FaceMesh"]
    table["mae_ratio"] = table["aflw_mae_deg"] / base["aflw_mae_deg"]
    table["jitter_ratio"] = table["jitter_deg"] / base["jitter_deg"]
    print(f"{len(clips)} real videos ({'full length' if args.full else 'first 6 s'}); One-Euro min_cutoff "
          f"{cfg.smoothing_min_cutoff_hz} Hz, beta {cfg.smoothing_beta}; lag on a {ROLL_DEG:g} deg "
          f"{ROLL_HZ} Hz roll at 30 fps")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
