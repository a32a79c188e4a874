"""Chosen frames of a long video without decoding all of it: which frames to sample, and reaching
each one by decoding forward or seeking, whichever is measured cheaper.

An H.264 seek decodes from the keyframe before its target, and the container does not state the
keyframe interval. Measured on an hour-long 640x360 call sampled every 10 s: with keyframes every
2 s seeking cost 0.3x a full decode; with keyframes every 30 s, 6x (each seek decodes up to 30 s
of frames). So the first large gap is decoded forward and the next one seeked, both are timed, and
from then on each gap takes the path whose running-average cost is lower. Both paths give the same
frames (OpenCV's seek is frame-accurate on H.264); only the time differs, never the result.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.common.errors import MediaError

SEEK_POLICIES = ("auto", "always", "never")


def sample_frames(n_frames: int, fps: float, every_s: float, min_samples: int, max_samples: int) -> list[int]:
    """Frame indices about `every_s` apart (denser for a short video to reach `min_samples`, sparser
    for a long one to stay under `max_samples`), always including the first and the last frame."""
    duration = n_frames / fps
    step = min(every_s, duration / max(1, min_samples))
    step = max(step, duration / max(1, max_samples), 1.0 / fps)
    frames = sorted({min(n_frames - 1, int(round(k * step * fps))) for k in range(int(duration / step) + 1)})
    return frames if frames[-1] == n_frames - 1 else frames + [n_frames - 1]


def _running_mean(old: float | None, new: float, weight: float = 0.3) -> float:
    return new if old is None else (1 - weight) * old + weight * new


class SampledVideo:
    """Frame-accurate access to chosen frames of one video (OpenCV's FFmpeg backend, local files only).

    seek: "auto" (measured), "always" or "never" (decode forward only); gaps up to `grab_ahead_s`
    are always decoded forward. `seeks` and `stepped` (frames decoded by grab/read) count the work."""

    def __init__(self, path: str | Path, seek: str = "auto", grab_ahead_s: float = 3.0):
        if seek not in SEEK_POLICIES:
            raise ValueError(f"seek must be one of {SEEK_POLICIES}, not {seek!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise MediaError(self.path, "video file not found", "t=0.00s")
        # OpenCV's FFmpeg backend reads its open options from the environment at each open: local files only
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "protocol_whitelist;file")
        self.cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        opened = self.cap.isOpened()
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0) if opened else 0.0
        self.n_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if opened else 0
        if not (self.fps > 0 and math.isfinite(self.fps)) or self.n_frames <= 0:
            self.cap.release()
            raise MediaError(self.path, f"cannot read as a video (fps={self.fps:g}, frames={self.n_frames}; "
                             "expected a readable video stream)", "t=0.00s")
        self.policy = seek
        self.grab_ahead = max(1, int(round(grab_ahead_s * self.fps)))
        self.grab_cost: float | None = None  # seconds per grab(), running average
        self.seek_cost: float | None = None  # seconds per seek + read
        self.next_index, self.seeks, self.stepped = 0, 0, 0

    def __enter__(self) -> SampledVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _should_seek(self, ahead: int) -> bool:
        if ahead < 0 or self.policy == "always":
            return True
        if self.policy == "never" or ahead <= self.grab_ahead or self.grab_cost is None:
            return False
        return self.seek_cost is None or self.seek_cost < ahead * self.grab_cost

    def frame(self, index: int) -> np.ndarray | None:
        """Frame `index` (BGR) or None when it cannot be decoded (past a truncated end)."""
        ahead = index - self.next_index
        t0 = time.perf_counter()
        seek = self._should_seek(ahead)
        if seek:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self.seeks += 1
        elif ahead > 0:
            for _ in range(ahead):
                self.stepped += 1
                if not self.cap.grab():
                    return None
            self.grab_cost = _running_mean(self.grab_cost, (time.perf_counter() - t0) / ahead)
        ok, img = self.cap.read()
        self.stepped += 1
        if seek:
            self.seek_cost = _running_mean(self.seek_cost, time.perf_counter() - t0)
        self.next_index = index + 1
        return img if ok else None

    def time(self, index: int) -> float:
        """Video time of frame `index` (Zoom records at a fixed frame rate since client 3.5)."""
        return index / self.fps

    def close(self) -> None:
        self.cap.release()
