"""Head features per 12.5 fps frame: static pose channels plus first and second time derivatives.

Conventions (copied into the data card)
---------------------------------------
- One row per head frame, ``time_s = k * 0.08`` from the start of the video; the pose is the pose
  AT that time, interpolated between the source frames around it (`pipeline.features.head.grid`).
  Static channels and their signs: see ``pipeline.features.head.pose``
  (pitch > 0 nose down, yaw > 0 nose toward image right, roll > 0 counter-clockwise on screen,
  x/y = face position 0..1 in the tile, z = ln(tile width / inter-ocular distance), larger =
  farther). Columns: ``time_s, detected, interpolated, valid`` then the channels, ``d_<ch>`` (per
  second) and ``dd_<ch>`` (per second squared), features as float32.
- Angles are unwrapped over time (no ±180° jumps) before anything else, so they may leave
  (-180, 180].
- Optional causal smoothing (``smoothing="one_euro"``, `pipeline.features.head.smoothing`) of the
  observed static channels, restarted after every gap; off by default.
- Missing faces are filled CAUSALLY: the first ``floor(max_gap_s / 0.08)`` frames (0.5 s: 6
  frames) after the last observed frame hold that frame's pose, with velocity and acceleration 0
  (the derivatives of a held pose), and are flagged ``interpolated`` = True. The rest of a longer
  gap, and frames before the first observation, stay NaN. A filled row depends only on frames
  before it, so changing a frame after a gap never changes the rows of the gap. Filled rows are
  meant as model INPUTS only: loss targets and metrics must use ``valid & ~interpolated``.
- Derivatives: Savitzky–Golay (window 7 = 0.56 s, order 2; measured ~3x less
  acceleration noise than raw differences) evaluated separately on each contiguous run of
  OBSERVED frames. A derivative is NaN where its window would reach past the run (i.e. touch a
  missing or filled frame, or the start/end of the video): we never difference across a gap or
  through a fill and never extrapolate at edges, so the first and last ``window // 2`` frames of
  every observed run have no derivatives.
- ``valid`` = every static channel and every derivative of the row is finite (filled rows
  included; see ``interpolated``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import savgol_filter

from pipeline.features.head.smoothing import ANGLE_CHANNELS, smooth_channel
from pipeline.features.head.tracking import RawTrack, track_video
from schemas.conventions import HEAD_HOP_S, STATIC_CHANNELS, head_feature_columns


def _unwrap_degrees(values: np.ndarray) -> np.ndarray:
    """Unwrap an angle series over its finite samples (NaNs are left in place)."""
    out = values.copy()
    finite = np.isfinite(values)
    if finite.sum() > 1:
        out[finite] = np.unwrap(values[finite], period=360.0)
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where mask is True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _held_frames(present: np.ndarray, max_gap_frames: int) -> np.ndarray:
    """Index of the observed frame each frame holds (-1 where nothing is held).

    Observed frames hold themselves; the first ``max_gap_frames`` missing frames after an
    observed frame hold it; the rest hold nothing.
    """
    index = np.arange(len(present))
    last_seen = np.maximum.accumulate(np.where(present, index, -1)) if len(present) else index
    too_far = (index - last_seen > max_gap_frames) | (last_seen < 0)
    return np.where(too_far, -1, last_seen)


def _savgol_per_run(values: np.ndarray, window: int, order: int, deriv: int, delta: float) -> np.ndarray:
    """Savitzky–Golay derivative on each finite run; NaN wherever the window leaves the run."""
    out = np.full_like(values, np.nan)
    half = window // 2
    for start, stop in _runs(np.isfinite(values)):
        if stop - start < window:
            continue
        run = savgol_filter(values[start:stop], window, order, deriv=deriv, delta=delta, mode="interp")
        out[start + half : stop - half] = run[half : stop - start - half]
    return out


def _static_channel(track: RawTrack, name: str, present: np.ndarray, hop: float,
                    smoothing: str, min_cutoff_hz: float, beta: float) -> np.ndarray:
    """One observed static channel: NaN where not present, angles unwrapped, optionally smoothed."""
    values = np.asarray(track.pose, dtype=np.float64)[:, track.channels.index(name)].copy()
    values[~present] = np.nan
    if name in ANGLE_CHANNELS:
        values = _unwrap_degrees(values)
    return smooth_channel(name, values, hop, smoothing, min_cutoff_hz, beta)


def head_features_from_track(
    track: RawTrack,
    *,
    max_gap_s: float = 0.5,
    channels: tuple[str, ...] = STATIC_CHANNELS,
    savgol_window: int = 7,
    savgol_order: int = 2,
    smoothing: str = "none",
    smoothing_min_cutoff_hz: float = 0.5,
    smoothing_beta: float = 0.2,
) -> pd.DataFrame:
    """Smooth (optional), add SG derivatives of observed runs, hold short gaps (module docstring)."""
    if savgol_window % 2 != 1 or savgol_window <= savgol_order:
        raise ValueError(f"savgol_window must be odd and > order, got {savgol_window}/{savgol_order}")
    unknown = [c for c in channels if c not in track.channels]
    if unknown:
        raise ValueError(f"channels {unknown} not in track channels {track.channels}")
    time_s = np.asarray(track.time_s, dtype=np.float64)
    hop = float(time_s[1] - time_s[0]) if len(time_s) > 1 else HEAD_HOP_S
    detected = np.asarray(track.detected, dtype=bool)
    pose = np.asarray(track.pose, dtype=np.float64)
    present = detected & np.isfinite(pose[:, [track.channels.index(c) for c in channels]]).all(axis=1)
    held = _held_frames(present, int(np.floor(max_gap_s / hop + 1e-9)))
    interpolated = ~present & (held >= 0)

    columns: dict[str, np.ndarray] = {}
    for name in channels:
        observed = _static_channel(track, name, present, hop, smoothing, smoothing_min_cutoff_hz,
                                   smoothing_beta)
        columns[name] = np.where(held >= 0, observed[np.maximum(held, 0)], np.nan)
        for deriv, prefix in ((1, "d_"), (2, "dd_")):
            derivative = _savgol_per_run(observed, savgol_window, savgol_order, deriv, hop)
            derivative[interpolated] = 0.0  # a held pose does not move
            columns[prefix + name] = derivative
    feature_names = head_feature_columns(channels)
    features = np.column_stack([columns[c] for c in feature_names]) if len(time_s) else np.zeros((0, 0))
    valid = np.isfinite(features).all(axis=1) if len(time_s) else np.zeros(0, dtype=bool)

    frame = pd.DataFrame(
        {
            "time_s": time_s,
            "detected": detected,
            "interpolated": interpolated,
            "valid": valid,
        }
    )
    for name in feature_names:
        frame[name] = columns[name].astype(np.float32)
    return frame


def extract_head_features(
    video: str | Path,
    crop: tuple[int, int, int, int] | None = None,
    *,
    tracker_factory: Any = None,
    **feature_kwargs: Any,
) -> pd.DataFrame:
    """Track one face (or one gallery tile) in a video and return its head-feature table."""
    track = track_video(video, crop=crop, tracker_factory=tracker_factory)
    return head_features_from_track(track, **feature_kwargs)
