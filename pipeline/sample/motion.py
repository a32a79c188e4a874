"""Head motion of a sample participant, with the planted listener nods a model should learn.

Everyone has smooth idle motion; the speaker moves more while talking, with emphasis dips and turns
at phrase ends. The LISTENER NODS (pitch down 8-15 deg and back, 0.4-0.6 s per nod, 1-2 nods)
0.7-0.9 s after the speaker's phrase ends (probability 0.85) and around their own backchannels.

Angle conventions of the ground truth (degrees, relative to the photo's own pose):
pitch > 0 = nose down, yaw > 0 = nose towards image right (+x), roll > 0 = counter-clockwise in the
displayed image. x, y = head pivot position in tile coordinates (fractions of tile width / height),
scale = image-plane scale factor (1 = photo size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import signal

MOTION_COLUMNS: tuple[str, ...] = ("time", "pitch", "yaw", "roll", "x", "y", "scale")


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, cutoff_hz: float, std: float) -> np.ndarray:
    """Low-pass Gaussian noise (zero-phase Butterworth below `cutoff_hz`) scaled to standard deviation `std`."""
    pad = int(fps * 4)
    x = rng.standard_normal(n + 2 * pad)
    sos = signal.butter(2, min(cutoff_hz / (fps / 2), 0.95), output="sos")
    y = signal.sosfiltfilt(sos, x)[pad:pad + n]
    sd = float(y.std()) or 1.0
    return y / sd * std


def gaussian_bump(t: np.ndarray, center: float, sigma: float) -> np.ndarray:
    """exp(-(t - center)^2 / 2 sigma^2): a smooth accent (head dips here, pitch accents in speech)."""
    return np.exp(-0.5 * ((t - center) / sigma) ** 2)


def _nod_shape(t: np.ndarray, start: float, dur: float) -> np.ndarray:
    """One nod: a raised-cosine pulse from 0 to 1 and back over [start, start + dur]."""
    u = (t - start) / dur
    return np.where((u >= 0) & (u <= 1), 0.5 * (1.0 - np.cos(2.0 * np.pi * np.clip(u, 0, 1))), 0.0)


def plan_nods(script: dict[str, Any], pid: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Planted listener nods of `pid`: after the other speaker's phrase ends (p=0.85, delay 0.7-0.9 s)
    and around the participant's own backchannels (p=0.8). Nods never overlap each other and never
    fall inside the participant's own turns."""
    own_turns = [(tr["start_s"] - 0.3, tr["end_s"] + 0.3) for tr in script["turns"] if tr["participant_id"] == pid]
    cands: list[tuple[float, str, float]] = []
    for tr in script["turns"]:
        if tr["participant_id"] == pid:
            continue
        for _s, e in tr["phrases"]:
            if rng.random() < 0.85:
                cands.append((e + rng.uniform(0.7, 0.9), "phrase_end", e))
    for b in script["backchannels"]:
        if b["participant_id"] == pid and rng.random() < 0.8:
            cands.append((b["start_s"] + rng.uniform(-0.2, 0.1), "backchannel", b["start_s"]))
    nods: list[dict[str, Any]] = []
    busy: list[tuple[float, float]] = []
    for start, cause, trig in sorted(cands, key=lambda c: c[0]):
        n = 1 if rng.random() < 0.6 else 2
        durs = rng.uniform(0.4, 0.6, size=n)
        amp0 = rng.uniform(8.0, 15.0)
        amps = [amp0] + [amp0 * rng.uniform(0.6, 0.9) for _ in range(n - 1)]
        end = start + float(durs.sum())
        if start < 0.2 or end > script["duration_s"] - 0.2:
            continue
        if any(start < b1 + 0.1 and end > b0 - 0.1 for b0, b1 in busy + own_turns):
            continue
        busy.append((start, end))
        s = start
        for k in range(n):
            nods.append({"participant_id": pid, "start_s": round(s, 4), "dur_s": round(float(durs[k]), 4),
                         "peak_s": round(s + float(durs[k]) / 2, 4), "amplitude_deg": round(float(amps[k]), 3),
                         "cause": cause, "trigger_s": trig, "index_in_group": k})
            s += float(durs[k])
    return nods


def make_motion(script: dict[str, Any], pid: str, fps: float, n_frames: int,
                rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(n_frames, 7) array of MOTION_COLUMNS and the planted nods of participant `pid`."""
    t = np.arange(n_frames) / fps
    off = {"pitch": rng.uniform(-3, 3), "yaw": rng.uniform(-4, 4), "roll": rng.uniform(-2, 2)}
    pitch = off["pitch"] + _smooth_noise(rng, n_frames, fps, 0.35, 1.2)
    yaw = off["yaw"] + _smooth_noise(rng, n_frames, fps, 0.3, 1.8)
    roll = off["roll"] + _smooth_noise(rng, n_frames, fps, 0.3, 1.0)
    dx = _smooth_noise(rng, n_frames, fps, 0.2, 0.008)
    dy = _smooth_noise(rng, n_frames, fps, 0.2, 0.005)
    scale = np.exp(_smooth_noise(rng, n_frames, fps, 0.15, 0.012))

    # speaking: more motion inside own turns, emphasis dips / turns at phrase ends
    speak = np.zeros(n_frames)
    for tr in script["turns"]:
        if tr["participant_id"] != pid:
            continue
        speak[(t >= tr["start_s"]) & (t < tr["end_s"])] = 1.0
        for _s, e in tr["phrases"]:
            pitch += rng.uniform(3.0, 6.0) * gaussian_bump(t, e - 0.12, 0.14)
            yaw += rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 4.0) * gaussian_bump(t, e - 0.2, 0.25)
    k = max(1, int(0.3 * fps))
    speak = np.convolve(speak, np.ones(k) / k, mode="same")
    pitch += speak * _smooth_noise(rng, n_frames, fps, 1.5, 1.5)
    yaw += speak * _smooth_noise(rng, n_frames, fps, 1.2, 3.0)
    roll += speak * _smooth_noise(rng, n_frames, fps, 1.0, 1.2)
    dx += speak * _smooth_noise(rng, n_frames, fps, 0.8, 0.006)

    nods = plan_nods(script, pid, rng)
    for nd in nods:
        pitch += nd["amplitude_deg"] * _nod_shape(t, nd["start_s"], nd["dur_s"])
    pitch = np.clip(pitch, -20.0, 25.0)
    yaw = np.clip(yaw, -15.0, 15.0)
    roll = np.clip(roll, -12.0, 12.0)
    return np.stack([t, pitch, yaw, roll, dx, dy, scale], axis=1), nods
