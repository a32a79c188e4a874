"""Pose at exact 80 ms grid times, interpolated between the source frames around each grid time.

Why: taking the nearest source frame puts a frame of 29.97, 24 or 30 fps video up to half a frame
(17-21 ms) away from its grid time, so consecutive head frames are 67 or 100 ms apart instead of
80 ms, and every velocity is off by up to ~25 %. Interpolating between the frame at or before and
the frame at or after the grid time puts every head frame at its own time.

Which frames are tracked (the cost): a frame is decoded and tracked when a grid time lies within
one nominal frame period of its timestamp (`frame_brackets_grid`), i.e. the frames on both sides of
every grid time. That is ``min(1, 2 * 12.5 / fps)`` of the frames, fewer where a frame falls on a
grid time: about 83 % at 29.97/30 fps, all at 24 fps, 50 % at 25 fps, 42 % at 60 fps (nearest-frame
sampling tracked 12.5 / fps). Tracking dominates extraction time, so extraction costs up to ~2x
the nearest-frame version; `bench/bench_head_extraction.py` measures it.

Interpolation (`pose_at_grid`): linear in time between the two tracked frames around the grid time,
using each frame's own timestamp (so variable frame rate works); angles are unwrapped between the
two frames first. At the ends of the video, where a grid time has a frame on one side only, a frame
within `COINCIDENT_S` of it is used alone. A grid time has a
pose ("detected") only when every frame it uses has a face: one frame without a face leaves the
grid times on both sides of it missing rather than falling back to a frame further away.
"""

from __future__ import annotations

import math

import numpy as np

# A frame this close to a grid time is that grid time's pose on its own (container timestamps are
# often rounded to 1 ms).
COINCIDENT_S = 1e-3
SAME_TIME_S = 1e-6  # float noise: a frame this close to a grid time is at that time


def coincidence_tolerance(frame_s: float) -> float:
    return min(COINCIDENT_S, 0.1 * frame_s)


def frame_brackets_grid(t: float, frame_s: float, hop: float) -> bool:
    """True when a grid time k*hop (k >= 0) lies strictly within one frame period of time ``t``.

    Decided from the frame's own time and the nominal period only, so the decoder can decide while
    streaming (a frame cannot be converted after the next one is grabbed).
    """
    reach = frame_s - coincidence_tolerance(frame_s)
    first_after = max(0, math.floor((t - reach) / hop) + 1)  # first grid point > t - reach
    return first_after * hop < t + reach


def _angle_steps(values: np.ndarray, start: np.ndarray, angle_columns: list[int]) -> np.ndarray:
    """``values`` with angle columns moved by whole turns to lie within 180 deg of ``start``."""
    out = values.copy()
    for c in angle_columns:
        out[:, c] = start[:, c] + (values[:, c] - start[:, c] + 180.0) % 360.0 - 180.0
    return out


def pose_at_grid(grid_s: np.ndarray, frame_t: np.ndarray, frame_pose: np.ndarray,
                 angle_columns: list[int], frame_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Pose at each grid time from the tracked frames around it (see module docstring).

    ``frame_t`` increasing; ``frame_pose`` (n_frames, channels), NaN rows where no face.
    Returns (pose (n_grid, channels) with NaN where missing, detected (n_grid,) bool).
    """
    n_grid, n_ch = len(grid_s), frame_pose.shape[1]
    pose = np.full((n_grid, n_ch), np.nan)
    if len(frame_t) == 0 or n_grid == 0:
        return pose, np.zeros(n_grid, dtype=bool)
    tol = coincidence_tolerance(frame_s)
    n_frames = len(frame_t)
    after = np.searchsorted(frame_t, grid_s - SAME_TIME_S, side="left")  # first frame at or after g
    same = (after < n_frames) & (np.abs(frame_t[np.minimum(after, n_frames - 1)] - grid_s) <= SAME_TIME_S)
    before = np.where(same, after, after - 1)  # a frame at g brackets it from both sides
    bracketed = (before >= 0) & (after < n_frames)
    # at the ends of the video: a frame within the tolerance of g stands for it
    nearest = np.clip(np.where(after < n_frames, after, after - 1), 0, n_frames - 1)
    coincident = ~bracketed & (np.abs(frame_t[nearest] - grid_s) <= tol)
    pose[coincident] = frame_pose[nearest[coincident]]
    i, j = before[bracketed], after[bracketed]
    t0, t1 = frame_t[i], frame_t[j]
    span = np.where(t1 > t0, t1 - t0, 1.0)
    weight = ((grid_s[bracketed] - t0) / span)[:, None]
    start = frame_pose[i]
    end = _angle_steps(frame_pose[j], start, angle_columns)
    pose[bracketed] = start + weight * (end - start)
    detected = np.isfinite(pose).all(axis=1)
    pose[~detected] = np.nan
    return pose, detected
