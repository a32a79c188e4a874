"""Head-movement activity: a hysteresis detector on vertical head velocity, calibrated on training
clips, and F1 / precision / recall / accuracy of generated vs ground-truth activity (paper III-D)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import label, uniform_filter1d

from schemas.conventions import HEAD_FPS

# 1.4826 * MAD is a consistent estimator of the standard deviation of Gaussian noise.
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class ActivityDetector:
    """Hysteresis detector on vertical (pitch) head velocity; thresholds in units/s (e.g. deg/s).

    `high` starts activity, `low` extends it; `smooth_frames` is the centred moving average applied to
    the velocity, `bridge_frames` the longest inactive gap filled between active runs, `min_frames` the
    shortest active run kept. The paper only says thresholds were set empirically (§III-D).
    """

    high: float
    low: float
    smooth_frames: int = 3
    min_frames: int = 2
    bridge_frames: int = 2

    def __post_init__(self) -> None:
        if not (0.0 <= self.low <= self.high) or not np.isfinite(self.high):
            raise ValueError(f"need finite thresholds 0 <= low <= high, got low={self.low}, high={self.high}")
        if self.smooth_frames < 1 or self.min_frames < 1 or self.bridge_frames < 0:
            raise ValueError(
                "need smooth_frames >= 1, min_frames >= 1, bridge_frames >= 0, got "
                f"{self.smooth_frames}, {self.min_frames}, {self.bridge_frames}"
            )

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _smoothed_velocity(signal: np.ndarray, smooth_frames: int, fps: float) -> np.ndarray:
    """Central-difference velocity (np.gradient × fps), then a centred moving average (edges: nearest)."""
    v = np.gradient(signal) * float(fps)
    if smooth_frames > 1:
        v = uniform_filter1d(v, size=smooth_frames, mode="nearest")
    return v


def calibrate_activity(
    signals: Iterable, *, k_high: float = 2.0, k_low: float = 1.0, fps: float = HEAD_FPS, **kw
) -> ActivityDetector:
    """Thresholds from a robust noise scale of training clips: high = k_high·σ, low = k_low·σ.

    σ = 1.4826 × median(|v - median(v)|) over the smoothed vertical velocities of all frames pooled;
    the median ignores the (sparse, large) nods, so σ tracks everyday jitter. `signals` yields 1-D
    vertical-angle clips of any length (clips shorter than 2 frames are skipped). Extra keyword
    arguments (smooth_frames, min_frames, bridge_frames) go to `ActivityDetector`.
    """
    smooth = int(kw.get("smooth_frames", ActivityDetector.smooth_frames))
    parts = []
    for i, sig in enumerate(signals):
        arr = np.asarray(sig, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"signal {i}: expected a 1-D vertical-angle series, got shape {arr.shape}")
        if arr.shape[0] >= 2:
            parts.append(_smoothed_velocity(arr, smooth, fps))
    if not parts:
        raise ValueError("calibrate_activity got no clip with at least 2 frames")
    v = np.concatenate(parts)
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(v - np.median(v))))
    if not sigma > 0.0:
        raise ValueError("robust velocity scale is 0 (constant signals?): cannot set thresholds")
    return ActivityDetector(high=k_high * sigma, low=k_low * sigma, **kw)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each True run."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _detect_row(signal: np.ndarray, det: ActivityDetector, fps: float) -> np.ndarray:
    if signal.shape[0] < 2:
        raise ValueError(f"activity detection needs at least 2 frames, got {signal.shape[0]}")
    speed = np.abs(_smoothed_velocity(signal, det.smooth_frames, fps))
    strong = speed >= det.high
    weak = speed >= det.low
    # hysteresis: keep each contiguous >= low run that contains at least one >= high frame
    labels, _ = label(weak)
    seeds = np.unique(labels[strong])
    active = np.isin(labels, seeds[seeds > 0])
    # bridge short interior gaps between active runs
    runs = _runs(active)
    for (_, end), (start, _) in zip(runs[:-1], runs[1:], strict=True):
        if start - end <= det.bridge_frames:
            active[end:start] = True
    # drop runs too short to be a movement
    for start, end in _runs(active):
        if end - start < det.min_frames:
            active[start:end] = False
    return active


def detect_activity(signal, detector: ActivityDetector, *, fps: float = HEAD_FPS) -> np.ndarray:
    """Per-frame head-movement activity (bool) of a 1-D vertical-angle series or an [N, T] batch.

    Order of operations: |smoothed velocity| >= high marks active; active runs extend over contiguous
    frames with |v| >= low (hysteresis); inactive gaps of <= bridge_frames between active runs are
    filled (the zero crossing at the bottom of a nod); runs shorter than min_frames are removed.
    """
    arr = np.asarray(signal, dtype=np.float64)
    if arr.ndim == 1:
        return _detect_row(arr, detector, fps)
    if arr.ndim == 2:
        out = np.zeros(arr.shape, dtype=bool)
        for i, row in enumerate(arr):
            out[i] = _detect_row(row, detector, fps)
        return out
    raise ValueError(f"expected a 1-D signal [T] or a batch [N, T], got shape {arr.shape}")


def activity_scores(pred_active, gt_active) -> dict[str, float]:
    """F1 / precision / recall / accuracy of predicted vs GT activity, pooled over all frames; act = pred rate.

    Precision, recall and F1 are 0.0 when undefined (no predicted positives, no GT positives, or both
    zero), so a silent generator scores 0 rather than NaN.
    """
    p = np.asarray(pred_active, dtype=bool)
    g = np.asarray(gt_active, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"pred_active and gt_active must have the same shape, got {p.shape} and {g.shape}")
    if p.size == 0:
        raise ValueError("activity_scores got empty masks")
    tp = int(np.sum(p & g))
    fp = int(np.sum(p & ~g))
    fn = int(np.sum(~p & g))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "accuracy": float(np.mean(p == g)),
        "act": float(np.mean(p)),
    }
