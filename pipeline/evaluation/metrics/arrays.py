"""Array conventions shared by the metrics: [N, T, C] validation, fixed windows, row-wise Pearson r.

Data convention of every metric: arrays in raw units (head angles in degrees), shape [N, T, C] (N
samples, T frames, C channels, typically pitch/yaw/roll), computed in float64, no NaNs (the caller
guarantees it). Windows are non-overlapping, taken from the start, remainder dropped
(`split_windows`). Shapes are validated and mismatches raise ValueError naming expected and given.
"""

from __future__ import annotations

import numpy as np


def as_ntc(x, name: str) -> np.ndarray:
    """Float64 [N, T, C] view of `x`; anything else is a caller bug worth a clear message."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"{name}: expected an array of shape [N, T, C], got shape {arr.shape}")
    return arr


def same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Both [N, T, C] arrays have one shape (generated vs ground truth)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape [N, T, C], got {a.shape} and {b.shape}"
        )


def check_choice(mode: str, allowed: tuple[str, ...], what: str) -> None:
    """`mode` is one of the documented conventions."""
    if mode not in allowed:
        raise ValueError(f"unknown {what} {mode!r}; expected one of {allowed}")


def _is_constant(x: np.ndarray, axis: int) -> np.ndarray:
    """Numerically constant along `axis` (a float ramp's diff is not bit-exact constant)."""
    scale = np.maximum(1.0, np.max(np.abs(x), axis=axis))
    return np.ptp(x, axis=axis) <= 1e-12 * scale


def rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis; NaN where either side is (numerically) constant."""
    ac = a - a.mean(axis=-1, keepdims=True)
    bc = b - b.mean(axis=-1, keepdims=True)
    num = np.sum(ac * bc, axis=-1)
    den = np.sqrt(np.sum(ac * ac, axis=-1) * np.sum(bc * bc, axis=-1))
    valid = ~(_is_constant(a, -1) | _is_constant(b, -1)) & (den > 0)
    r = np.full(num.shape, np.nan)
    r[valid] = num[valid] / den[valid]
    return np.clip(r, -1.0, 1.0)


def nanmean_or_nan(values: np.ndarray) -> float:
    """Mean over the defined values; NaN (without a RuntimeWarning) when none is defined."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


def split_windows(x, length: int) -> np.ndarray:
    """Non-overlapping windows from the start, remainder dropped: [N, T, C] -> [N*floor(T/length), length, C].

    Dropping (not padding) the remainder keeps every window a real `length`-frame excerpt, as the
    paper's fixed 125- and 25-frame windows assume.
    """
    arr = as_ntc(x, "x")
    length = int(length)
    if length < 1:
        raise ValueError(f"window length must be >= 1, got {length}")
    n, t, c = arr.shape
    if t < length:
        raise ValueError(f"sequence length T={t} is shorter than the window of {length} frames")
    k = t // length
    return arr[:, : k * length].reshape(n * k, length, c)
