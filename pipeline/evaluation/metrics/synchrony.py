"""Motion synchrony metrics: angular velocity, PCC against ground truth, speaker -> listener
cross-correlation over lags (the paper's Fig. 2; its peak lag drives the Delay Mirror baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.evaluation.metrics.arrays import (
    as_ntc,
    check_choice,
    nanmean_or_nan,
    rowwise_pearson,
    same_shape,
)
from schemas.conventions import HEAD_FPS

PCC_MODES = ("per_sequence", "pooled")


def velocity(x, fps: float = HEAD_FPS) -> np.ndarray:
    """First difference along time times fps: [N, T, C] -> [N, T-1, C] in units per second."""
    arr = as_ntc(x, "x")
    if arr.shape[1] < 2:
        raise ValueError(f"velocity needs at least 2 frames, got T={arr.shape[1]}")
    return np.diff(arr, axis=1) * float(fps)


def pcc(gen, gt, *, fps: float = HEAD_FPS, mode: str = "per_sequence") -> float:
    """Pearson correlation between velocities of generated and ground-truth head angles.

    mode="per_sequence": r per (sample, channel) over time, mean over the pairs where both velocity
    series vary (a still sequence has no defined r and is skipped); NaN when none varies.
    mode="pooled": per channel over all samples' velocities concatenated (never differenced across
    samples), mean over channels that vary; NaN when none does. Scale and offset invariant.
    """
    check_choice(mode, PCC_MODES, "PCC mode")
    g = as_ntc(gen, "gen")
    r = as_ntc(gt, "gt")
    same_shape(g, r, "gen", "gt")
    vg, vr = velocity(g, fps), velocity(r, fps)
    if mode == "per_sequence":
        # [N, C, T-1]: one row per (sample, channel)
        return nanmean_or_nan(rowwise_pearson(vg.transpose(0, 2, 1), vr.transpose(0, 2, 1)))
    c = g.shape[2]
    return nanmean_or_nan(rowwise_pearson(vg.reshape(-1, c).T, vr.reshape(-1, c).T))


def cross_correlation(
    speaker, listener, *, max_lag: int, fps: float = HEAD_FPS
) -> tuple[np.ndarray, np.ndarray]:
    """Speaker→listener cross-correlation of angular velocities over lags -max_lag..max_lag (Fig. 2).

    For lag L (frames) the Pearson r between speaker velocity at t and listener velocity at t+L is
    computed per (sample, channel) over the overlapping frames and averaged over pairs where both sides
    vary; L > 0 means the listener follows the speaker. Inputs are angle sequences [N, T, C]; velocities
    are taken inside with `velocity`. Returns (integer lags, curve); a lag with no defined r is NaN.
    """
    s = as_ntc(speaker, "speaker")
    li = as_ntc(listener, "listener")
    same_shape(s, li, "speaker", "listener")
    max_lag = int(max_lag)
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    if s.shape[1] - 1 <= max_lag:
        raise ValueError(
            f"need T-1 > max_lag for overlapping velocities, got T={s.shape[1]} and max_lag={max_lag}"
        )
    vs = velocity(s, fps).transpose(0, 2, 1)  # [N, C, M]
    vl = velocity(li, fps).transpose(0, 2, 1)
    m = vs.shape[2]
    lags = np.arange(-max_lag, max_lag + 1, dtype=np.int64)
    curve = np.empty(lags.shape[0], dtype=np.float64)
    for i, lag in enumerate(lags):
        if lag >= 0:
            a, b = vs[..., : m - lag], vl[..., lag:]
        else:
            a, b = vs[..., -lag:], vl[..., : m + lag]
        curve[i] = nanmean_or_nan(rowwise_pearson(a, b))
    return lags, curve


def pooled_cross_correlation(
    speakers: Sequence, listeners: Sequence, *, max_lag: int, fps: float = HEAD_FPS
) -> tuple[np.ndarray, np.ndarray]:
    """Speaker→listener velocity cross-correlation over clips of different lengths (the training split).

    For each lag the overlapping (speaker t, listener t+L) velocity pairs of every clip are pooled and
    one Pearson r per channel is taken, then averaged over channels. Pooling weights clips by their
    overlap, so short clips at long lags cannot dominate as they do in a per-clip mean. Clips whose
    velocity is not longer than the lag add nothing at that lag.
    """
    if len(speakers) != len(listeners) or not len(speakers):
        raise ValueError(f"need as many speaker as listener clips (>= 1), got {len(speakers)} and {len(listeners)}")
    vs = [velocity(np.asarray(x, dtype=np.float64)[None], fps)[0] for x in speakers]
    vl = [velocity(np.asarray(x, dtype=np.float64)[None], fps)[0] for x in listeners]
    lags = np.arange(-int(max_lag), int(max_lag) + 1, dtype=np.int64)
    curve = np.full(lags.shape[0], np.nan)
    for i, lag in enumerate(lags):
        a, b = [], []
        for s, li in zip(vs, vl, strict=True):
            if s.shape != li.shape:
                raise ValueError(f"speaker and listener clips differ in shape: {s.shape} vs {li.shape}")
            m = s.shape[0]
            if m <= abs(lag):
                continue
            a.append(s[: m - lag] if lag >= 0 else s[-lag:])
            b.append(li[lag:] if lag >= 0 else li[: m + lag])
        if a:
            curve[i] = nanmean_or_nan(rowwise_pearson(np.concatenate(a).T, np.concatenate(b).T))
    return lags, curve
