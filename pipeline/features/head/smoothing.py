"""Causal smoothing of the head-pose track: the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012).

Why One-Euro: landmark jitter is largest when the head is still, where a low cutoff removes it,
while a fixed low-pass would delay every nod; One-Euro raises its cutoff with the filtered speed
(``cutoff = min_cutoff + beta * |speed|``), so it smooths still stretches hard and follows fast
motion with little lag. It uses only past samples, so features stay usable for online models.

Units: the speed is measured per second in degrees for pitch/yaw/roll and in hundredths for
x, y (1 % of the tile) and z (1 % size change), so one ``beta`` suits all six channels.
The filter restarts after every gap (NaN), so it never carries a state across missing frames.
"""

from __future__ import annotations

import math

import numpy as np

ANGLE_CHANNELS = frozenset({"pitch", "yaw", "roll"})
DERIVATIVE_CUTOFF_HZ = 1.0  # the speed estimate's own low-pass, as in the paper's reference code
SMOOTHING_MODES = ("none", "one_euro")


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


def one_euro(values: np.ndarray, dt: float, min_cutoff_hz: float, beta: float,
             speed_unit: float = 1.0) -> np.ndarray:
    """One-Euro filter of a regularly sampled series; NaNs are kept and restart the filter.

    ``speed_unit``: the series' value that counts as 1 in ``beta * |speed|``.
    """
    if min_cutoff_hz <= 0 or beta < 0 or dt <= 0:
        raise ValueError(f"one_euro needs min_cutoff_hz > 0, beta >= 0, dt > 0; got {min_cutoff_hz}, {beta}, {dt}")
    out = np.full(len(values), np.nan)
    alpha_d = _alpha(DERIVATIVE_CUTOFF_HZ, dt)
    previous: float | None = None
    speed = 0.0
    for k, x in enumerate(np.asarray(values, dtype=np.float64)):
        if not math.isfinite(x):
            previous = None
            continue
        if previous is None:
            previous, speed = x, 0.0
        else:
            speed += alpha_d * ((x - previous) / dt - speed)
            cutoff = min_cutoff_hz + beta * abs(speed) / speed_unit
            previous += _alpha(cutoff, dt) * (x - previous)
        out[k] = previous
    return out


def smooth_channel(name: str, values: np.ndarray, dt: float, mode: str, min_cutoff_hz: float,
                   beta: float) -> np.ndarray:
    """Apply the configured smoothing ``mode`` to one static channel."""
    if mode == "none":
        return values
    if mode != "one_euro":
        raise ValueError(f"smoothing must be one of {SMOOTHING_MODES}, got {mode!r}")
    unit = 1.0 if name in ANGLE_CHANNELS else 0.01
    return one_euro(values, dt, min_cutoff_hz, beta, speed_unit=unit)
