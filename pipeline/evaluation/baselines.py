"""The baselines of the paper's Table I: Random (training clips), Mirror (the speaker's own motion) and
Delay Mirror (the speaker delayed by the lag of peak speaker -> listener cross-correlation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mirror(speaker) -> np.ndarray:
    """Mirror baseline: the speaker's own motion (paper: "outputs the same head movements as the speaker")."""
    return np.array(speaker, dtype=np.float64, copy=True)


def delay_mirror(speaker_full, start: int, length: int, lag: int) -> np.ndarray:
    """Delay Mirror baseline: output frame t = speaker_full[start + t - lag], indices < 0 held at frame 0.

    `speaker_full` is one whole segment [T_full, C], so the context before `start` supplies the delayed
    frames when it exists; `lag` is the positive lag of peak speaker -> listener velocity
    cross-correlation on training data (`pooled_cross_correlation`; ~1.6 s in the paper).
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
