"""Distribution metrics of generated head motion (the paper's Table I): L2, Var, FD ("FID"), P-FD
("P-FID") and the style index SI.

The paper names its metrics but not their exact conventions; the public reference code has more than
one variant of several of them. Every ambiguous choice is therefore a documented keyword argument, so a
reported number can always say which convention produced it. Only numpy, scipy and scikit-learn are
used so evaluation runs without torch.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from sklearn.cluster import KMeans

from pipeline.evaluation.metrics.arrays import as_ntc, check_choice, same_shape, split_windows

# Paper §III-D: L2 and Var on 125-frame (10 s) windows, FD, P-FD and SI on 25-frame (2 s) windows.
L2_WINDOW = 125
VAR_WINDOW = 125
FD_WINDOW = 25
SI_WINDOW = 25

L2_CONVENTIONS = ("mse", "euclidean")
WINDOW_MODES = ("per_window", "pooled")


def l2_error(gen, gt, *, window: int = L2_WINDOW, convention: str = "mse") -> float:
    """L2 error between generated and ground-truth sequences on `window`-frame windows.

    convention="mse": mean over windows of the mean squared error per element (mean over frames and
    channels). With this convention an independent baseline scores about Var(gen) + Var(GT) (plus the
    squared mean offset), which is what the paper's Table I shows: Random 35.15 ≈ 18.77 + 15.87.
    convention="euclidean": mean per-frame Euclidean norm of the difference vector (units, not units²).
    """
    check_choice(convention, L2_CONVENTIONS, "L2 convention")
    g = as_ntc(gen, "gen")
    r = as_ntc(gt, "gt")
    same_shape(g, r, "gen", "gt")
    diff = split_windows(g, window) - split_windows(r, window)
    if convention == "mse":
        return float(np.mean(np.mean(diff**2, axis=(1, 2))))
    return float(np.mean(np.linalg.norm(diff, axis=2)))


VAR_MODES = ("pooled", "per_window")
CENTERINGS = ("raw", "per_sequence")


def variation(x, *, window: int = VAR_WINDOW, mode: str = "per_window") -> float:
    """Var.: variance per channel (ddof=0), mean over channels.

    mode="per_window": variance over time inside each window, mean over windows: how much the head
    moves within 10 s, blind to offsets between people. mode="pooled": one variance over all windowed
    frames (offsets between windows included). Only the pooled variance (or centred angles) keeps the
    identity of an independent baseline, MSE L2 = Var(gen) + Var(GT) + |mean difference|², that the
    paper's Table I shows (Random 35.15 ≈ 18.77 + 15.87).
    """
    check_choice(mode, VAR_MODES, "Var mode")
    w = split_windows(x, window)
    if mode == "pooled":
        return float(np.mean(np.var(w.reshape(-1, w.shape[2]), axis=0, ddof=0)))
    return float(np.mean(np.var(w, axis=1, ddof=0)))


def center_sequences(x, *, mode: str = "per_sequence") -> np.ndarray:
    """Angles with each sequence's own mean over time removed (mode="per_sequence"), or unchanged
    ("raw"). Centring removes fixed offsets between people and camera set-ups (a listener who always
    looks a little down), which otherwise count as error in L2 and as spread in pooled Var."""
    check_choice(mode, CENTERINGS, "angle centring")
    arr = as_ntc(x, "x")
    return arr - arr.mean(axis=1, keepdims=True) if mode == "per_sequence" else arr.copy()


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance of two Gaussians: |mu1-mu2|² + tr(S1 + S2 - 2 sqrtm(S1 S2)).

    As in the reference FID code: when sqrtm is not finite (near-singular product) eps·I is added to
    both covariances and the square root retried; a tiny imaginary part from round-off is dropped, a
    large one (> 1e-3 relative to the trace scale) raises. Tiny negative results are clipped to 0.
    A NaN/inf mean or covariance (from non-finite frames) gives NaN: the distance is undefined, and
    sqrtm would only fail deep inside scipy.
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
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        return float("nan")

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
    check_choice(mode, WINDOW_MODES, "FD mode")
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
    g = as_ntc(gen, "gen")
    r = as_ntc(gt, "gt")
    same_shape(g, r, "gen", "gt")
    return _fd_frames(g, r, window, mode)


def paired_fd(gen, gt, speaker, *, window: int = FD_WINDOW, mode: str = "per_window") -> float:
    """P-FD: FD of per-frame concatenations [speaker_t, listener_t], GT pair vs generated pair.

    Scores whether the listener moves appropriately *given* the speaker, which plain FD cannot see.
    `speaker` must share N and T with `gen`/`gt`; its channel count may differ.
    """
    g = as_ntc(gen, "gen")
    r = as_ntc(gt, "gt")
    s = as_ntc(speaker, "speaker")
    same_shape(g, r, "gen", "gt")
    if s.shape[:2] != g.shape[:2]:
        raise ValueError(f"speaker must have the same [N, T] as gen/gt {g.shape[:2]}, got {s.shape[:2]}")
    return _fd_frames(np.concatenate([s, g], axis=2), np.concatenate([s, r], axis=2), window, mode)


def fit_clusters(reference, *, k: int = 8, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """k-means centres [k, C] fitted on pooled reference (ground-truth) frames, deterministic by `seed`."""
    frames = as_ntc(reference, "reference")
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
    check_choice(mode, WINDOW_MODES, "SI mode")
    c = np.atleast_2d(np.asarray(centers, dtype=np.float64))
    w = split_windows(x, window)
    if c.shape[1] != w.shape[2]:
        raise ValueError(f"centers have {c.shape[1]} channels but x has {w.shape[2]}")
    k = c.shape[0]
    labels = _assign(w.reshape(-1, w.shape[2]), c).reshape(w.shape[0], w.shape[1])
    if mode == "pooled":
        return _entropy_bits(labels.ravel(), k)
    return float(np.mean([_entropy_bits(row, k) for row in labels]))
