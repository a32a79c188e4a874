"""Objective LHG metrics and the Random / Mirror / Delay Mirror baselines (paper §III-D, §V).

The paper names its metrics but not their exact conventions; the public reference code has more than
one variant of several of them. Every ambiguous choice is therefore a documented keyword argument, so a
reported number can always say which convention produced it.

Data convention shared by all metric functions: arrays in raw units (head angles in degrees), shape
[N, T, C] (N samples, T frames, C channels, typically pitch/yaw/roll), computed in float64, no NaNs
(the caller guarantees it). Windows are non-overlapping, taken from the start, remainder dropped
(`split_windows`). Shapes are validated and mismatches raise ValueError naming expected and given.

Only numpy, scipy and scikit-learn are used so evaluation runs without torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import linalg
from scipy.ndimage import label, uniform_filter1d
from sklearn.cluster import KMeans

from schemas.conventions import HEAD_FPS

# Paper §III-D: L2 and Var on 125-frame (10 s) windows, FD, P-FD and SI on 25-frame (2 s) windows.
L2_WINDOW = 125
VAR_WINDOW = 125
FD_WINDOW = 25
SI_WINDOW = 25

L2_CONVENTIONS = ("mse", "euclidean")
WINDOW_MODES = ("per_window", "pooled")
PCC_MODES = ("per_sequence", "pooled")

# 1.4826 * MAD is a consistent estimator of the standard deviation of Gaussian noise.
MAD_TO_SIGMA = 1.4826


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _as_ntc(x, name: str) -> np.ndarray:
    """Float64 [N, T, C] view of `x`; anything else is a caller bug worth a clear message."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected an array of shape [N, T, C], got shape {arr.shape}")
    return arr


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape [N, T, C], got {a.shape} and {b.shape}"
        )


def _check_mode(mode: str, allowed: tuple[str, ...], what: str) -> None:
    if mode not in allowed:
        raise ValueError(f"unknown {what} {mode!r}; expected one of {allowed}")


def _is_constant(x: np.ndarray, axis: int) -> np.ndarray:
    """Numerically constant along `axis` (a float ramp's diff is not bit-exact constant)."""
    scale = np.maximum(1.0, np.max(np.abs(x), axis=axis))
    return np.ptp(x, axis=axis) <= 1e-12 * scale


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis; NaN where either side is (numerically) constant."""
    ac = a - a.mean(axis=-1, keepdims=True)
    bc = b - b.mean(axis=-1, keepdims=True)
    num = np.sum(ac * bc, axis=-1)
    den = np.sqrt(np.sum(ac * ac, axis=-1) * np.sum(bc * bc, axis=-1))
    valid = ~(_is_constant(a, -1) | _is_constant(b, -1)) & (den > 0)
    r = np.full(num.shape, np.nan)
    r[valid] = num[valid] / den[valid]
    return np.clip(r, -1.0, 1.0)


def _nanmean_or_nan(values: np.ndarray) -> float:
    """Mean over the defined values; NaN (without a RuntimeWarning) when none is defined."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


# --------------------------------------------------------------------------------------------------
# windows, L2, variation
# --------------------------------------------------------------------------------------------------


def split_windows(x, length: int) -> np.ndarray:
    """Non-overlapping windows from the start, remainder dropped: [N, T, C] -> [N*floor(T/length), length, C].

    Dropping (not padding) the remainder keeps every window a real `length`-frame excerpt, as the
    paper's fixed 125- and 25-frame windows assume.
    """
    arr = _as_ntc(x, "x")
    length = int(length)
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    n, t, c = arr.shape
    if t < length:
        raise ValueError(f"sequence length T={t} is shorter than the window of {length} frames")
    k = t // length
    return arr[:, : k * length].reshape(n * k, length, c)


def l2_error(gen, gt, *, window: int = L2_WINDOW, convention: str = "mse") -> float:
    """L2 error between generated and ground-truth sequences on `window`-frame windows.

    convention="mse": mean over windows of the mean squared error per element (mean over frames and
    channels). With this convention an independent baseline scores about Var(gen) + Var(GT) (plus the
    squared mean offset), which is what the paper's Table I shows: Random 35.15 ≈ 18.77 + 15.87.
    convention="euclidean": mean per-frame Euclidean norm of the difference vector (units, not units²).
    """
    _check_mode(convention, L2_CONVENTIONS, "L2 convention")
    g = _as_ntc(gen, "gen")
    r = _as_ntc(gt, "gt")
    _same_shape(g, r, "gen", "gt")
    diff = split_windows(g, window) - split_windows(r, window)
    if convention == "mse":
        return float(np.mean(np.mean(diff**2, axis=(1, 2))))
    return float(np.mean(np.linalg.norm(diff, axis=2)))


def variation(x, *, window: int = VAR_WINDOW) -> float:
    """Var.: variance over time per channel (ddof=0) inside each window, mean over channels and windows.

    Per-window variance measures how much the head moves within 10 s, not offsets between people.
    """
    w = split_windows(x, window)
    return float(np.mean(np.var(w, axis=1, ddof=0)))


# --------------------------------------------------------------------------------------------------
# Fréchet distances
# --------------------------------------------------------------------------------------------------


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance of two Gaussians: |mu1-mu2|² + tr(S1 + S2 - 2 sqrtm(S1 S2)).

    As in the reference FID code: when sqrtm is not finite (near-singular product) eps·I is added to
    both covariances and the square root retried; a tiny imaginary part from round-off is dropped, a
    large one (> 1e-3 relative to the trace scale) raises. Tiny negative results are clipped to 0.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,):
        raise ValueError(f"means must be 1-D vectors of the same length, got {mu1.shape} and {mu2.shape}")
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"covariances must be [{d}, {d}] to match the means, got {s1.shape} and {s2.shape}")

    with warnings.catch_warnings():
        # Singular products are expected (still windows, constant channels); the result is checked below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(d) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if not np.all(np.isfinite(covmean)):
        raise ValueError("sqrtm(S1 S2) is not finite even after adding eps*I to the covariances")
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(np.trace(covmean).real)))
        if np.max(np.abs(np.diagonal(covmean).imag)) > 1e-3 * scale:
            raise ValueError(
                f"sqrtm(S1 S2) has a large imaginary component ({np.max(np.abs(covmean.imag)):.3g})"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def _gaussian_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance with frames as samples (rows); ddof=1 as np.cov in the reference code."""
    return frames.mean(axis=0), np.atleast_2d(np.cov(frames, rowvar=False))


def _fd_frames(g: np.ndarray, r: np.ndarray, window: int, mode: str) -> float:
    """FD between [N, T, D] arrays; shared by `fd` and `paired_fd`."""
    _check_mode(mode, WINDOW_MODES, "FD mode")
    if int(window) < 2:
        raise ValueError(f"FD needs windows of at least 2 frames for a covariance, got {window}")
    gw = split_windows(g, window)
    rw = split_windows(r, window)
    if mode == "pooled":
        d = gw.shape[2]
        return frechet_distance(*_gaussian_stats(gw.reshape(-1, d)), *_gaussian_stats(rw.reshape(-1, d)))
    values = [frechet_distance(*_gaussian_stats(a), *_gaussian_stats(b)) for a, b in zip(gw, rw, strict=True)]
    return float(np.mean(values))


def fd(gen, gt, *, window: int = FD_WINDOW, mode: str = "per_window") -> float:
    """Gaussian FD (the paper's "FID") of head frames, frames as samples.

    mode="per_window": FD between window i of `gen` and window i of `gt` (aligned pairs, 25 frames each
    by default), averaged over windows; mode="pooled": one FD between all windowed frames of each side
    (the same frames as per_window, remainder dropped). Covariances use ddof=1. Per-window values are
    biased upwards by small-sample covariance noise: compare numbers only under the same window.
    """
    g = _as_ntc(gen, "gen")
    r = _as_ntc(gt, "gt")
    _same_shape(g, r, "gen", "gt")
    return _fd_frames(g, r, window, mode)


def paired_fd(gen, gt, speaker, *, window: int = FD_WINDOW, mode: str = "per_window") -> float:
    """P-FD: FD of per-frame concatenations [speaker_t, listener_t], GT pair vs generated pair.

    Scores whether the listener moves appropriately *given* the speaker, which plain FD cannot see.
    `speaker` must share N and T with `gen`/`gt`; its channel count may differ.
    """
    g = _as_ntc(gen, "gen")
    r = _as_ntc(gt, "gt")
    s = _as_ntc(speaker, "speaker")
    _same_shape(g, r, "gen", "gt")
    if s.shape[:2] != g.shape[:2]:
        raise ValueError(f"speaker must have the same [N, T] as gen/gt {g.shape[:2]}, got {s.shape[:2]}")
    return _fd_frames(np.concatenate([s, g], axis=2), np.concatenate([s, r], axis=2), window, mode)


# --------------------------------------------------------------------------------------------------
# style index
# --------------------------------------------------------------------------------------------------


def fit_clusters(reference, *, k: int = 8, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """k-means centres [k, C] fitted on pooled reference (ground-truth) frames, deterministic by `seed`."""
    frames = _as_ntc(reference, "reference")
    frames = frames.reshape(-1, frames.shape[2])
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if frames.shape[0] < k:
        raise ValueError(f"need at least k={k} reference frames to fit clusters, got {frames.shape[0]}")
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(frames)
    return np.asarray(km.cluster_centers_, dtype=np.float64)


def _assign(frames: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Euclidean) for each row of `frames`; ties -> lowest index."""
    d2 = np.sum((frames[:, None, :] - centers[None, :, :]) ** 2, axis=2)
    return np.argmin(d2, axis=1)


def _entropy_bits(labels: np.ndarray, k: int) -> float:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p))) + 0.0  # + 0.0 turns -0.0 into 0.0


def style_index(x, centers, *, window: int = SI_WINDOW, mode: str = "per_window") -> float:
    """SI: Shannon entropy (bits) of the histogram of nearest-centre assignments of the frames.

    Centres come from `fit_clusters` on ground truth. mode="per_window": entropy per window, mean over
    windows; mode="pooled": one histogram over all windowed frames. 0 <= SI <= log2(k); a window can
    hold at most `window` distinct clusters, so per-window SI is also <= log2(window).
    """
    _check_mode(mode, WINDOW_MODES, "SI mode")
    c = np.atleast_2d(np.asarray(centers, dtype=np.float64))
    w = split_windows(x, window)
    if c.shape[1] != w.shape[2]:
        raise ValueError(f"centers have {c.shape[1]} channels but x has {w.shape[2]}")
    k = c.shape[0]
    labels = _assign(w.reshape(-1, w.shape[2]), c).reshape(w.shape[0], w.shape[1])
    if mode == "pooled":
        return _entropy_bits(labels.ravel(), k)
    return float(np.mean([_entropy_bits(row, k) for row in labels]))


# --------------------------------------------------------------------------------------------------
# velocities, PCC, cross-correlation
# --------------------------------------------------------------------------------------------------


def velocity(x, fps: float = HEAD_FPS) -> np.ndarray:
    """First difference along time times fps: [N, T, C] -> [N, T-1, C] in units per second."""
    arr = _as_ntc(x, "x")
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
    _check_mode(mode, PCC_MODES, "PCC mode")
    g = _as_ntc(gen, "gen")
    r = _as_ntc(gt, "gt")
    _same_shape(g, r, "gen", "gt")
    vg, vr = velocity(g, fps), velocity(r, fps)
    if mode == "per_sequence":
        # [N, C, T-1]: one row per (sample, channel)
        return _nanmean_or_nan(_rowwise_pearson(vg.transpose(0, 2, 1), vr.transpose(0, 2, 1)))
    c = g.shape[2]
    return _nanmean_or_nan(_rowwise_pearson(vg.reshape(-1, c).T, vr.reshape(-1, c).T))


def cross_correlation(
    speaker, listener, *, max_lag: int, fps: float = HEAD_FPS
) -> tuple[np.ndarray, np.ndarray]:
    """Speaker→listener cross-correlation of angular velocities over lags -max_lag..max_lag (Fig. 2).

    For lag L (frames) the Pearson r between speaker velocity at t and listener velocity at t+L is
    computed per (sample, channel) over the overlapping frames and averaged over pairs where both sides
    vary; L > 0 means the listener follows the speaker. Inputs are angle sequences [N, T, C]; velocities
    are taken inside with `velocity`. Returns (integer lags, curve); a lag with no defined r is NaN.
    """
    s = _as_ntc(speaker, "speaker")
    li = _as_ntc(listener, "listener")
    _same_shape(s, li, "speaker", "listener")
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
        curve[i] = _nanmean_or_nan(_rowwise_pearson(a, b))
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
            curve[i] = _nanmean_or_nan(_rowwise_pearson(np.concatenate(a).T, np.concatenate(b).T))
    return lags, curve


def best_lag(speaker, listener, *, max_lag: int, fps: float = HEAD_FPS, positive_only: bool = True) -> int:
    """Lag (frames) maximising the speaker→listener cross-correlation: the Delay Mirror delay.

    positive_only=True searches lags >= 1 (the listener responds after the speaker); otherwise all
    lags. Ties go to the smallest (signed) lag; NaN lags are ignored.
    """
    lags, curve = cross_correlation(speaker, listener, max_lag=max_lag, fps=fps)
    keep = lags >= 1 if positive_only else np.ones_like(lags, dtype=bool)
    lags, curve = lags[keep], curve[keep]
    if lags.size == 0:
        raise ValueError("positive_only=True needs max_lag >= 1")
    if not np.any(np.isfinite(curve)):
        raise ValueError("cross-correlation is undefined at every lag (constant velocities?)")
    return int(lags[np.argmax(np.where(np.isfinite(curve), curve, -np.inf))])


# --------------------------------------------------------------------------------------------------
# head-movement activity detector
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------------


def mirror(speaker) -> np.ndarray:
    """Mirror baseline: the speaker's own motion (paper: "outputs the same head movements as the speaker")."""
    return np.array(speaker, dtype=np.float64, copy=True)


def delay_mirror(speaker_full, start: int, length: int, lag: int) -> np.ndarray:
    """Delay Mirror baseline: output frame t = speaker_full[start + t - lag], indices < 0 held at frame 0.

    `speaker_full` is one whole segment [T_full, C], so the context before `start` supplies the delayed
    frames when it exists; `lag` comes from `best_lag` on training data (~1.6 s in the paper).
    """
    s = np.asarray(speaker_full, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"speaker_full: expected shape [T_full, C], got {s.shape}")
    start, length, lag = int(start), int(length), int(lag)
    if start < 0 or length < 1:
        raise ValueError(f"need start >= 0 and length >= 1, got start={start}, length={length}")
    idx = start + np.arange(length) - lag
    if idx[-1] >= s.shape[0]:
        raise ValueError(
            f"delay_mirror needs speaker frame {idx[-1]} but speaker_full has {s.shape[0]} frames "
            f"(start={start}, length={length}, lag={lag})"
        )
    return s[np.clip(idx, 0, None)].copy()


def random_clips(pool: Sequence, n: int, length: int, *, seed: int = 0) -> np.ndarray:
    """Random baseline: n excerpts of `length` frames from training listener clips [T_i, C].

    With numpy default_rng(seed): a clip uniformly among those with T_i >= length, then a uniform start.
    """
    clips = [np.asarray(c, dtype=np.float64) for c in pool]
    if not clips:
        raise ValueError("random_clips got an empty pool")
    for i, c in enumerate(clips):
        if c.ndim != 2 or c.shape[1] != clips[0].shape[1]:
            raise ValueError(f"pool clip {i}: expected shape [T_i, {clips[0].shape[-1]}], got {c.shape}")
    length, n = int(length), int(n)
    if length < 1 or n < 0:
        raise ValueError(f"need length >= 1 and n >= 0, got length={length}, n={n}")
    eligible = [c for c in clips if c.shape[0] >= length]
    if not eligible:
        longest = max(c.shape[0] for c in clips)
        raise ValueError(f"no pool clip has at least length={length} frames (longest has {longest})")
    rng = np.random.default_rng(seed)
    out = np.empty((n, length, clips[0].shape[1]), dtype=np.float64)
    for j in range(n):
        clip = eligible[int(rng.integers(len(eligible)))]
        off = int(rng.integers(clip.shape[0] - length + 1))
        out[j] = clip[off : off + length]
    return out
