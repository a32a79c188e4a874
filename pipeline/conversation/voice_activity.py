"""Voice activity of each participant from their own track, with the other person's bleed removed.

A per-participant track (e.g. Zoom's "separate audio file for each participant") also carries the
other person's voice, quieter and later, so "this track is loud" is not "this person talks". Here a
10 ms frame is a person's own talk only when (1) their track's speech-band level is active (above
the track's noise floor; a run of such frames needs one within a range of the track's speech level:
hysteresis) and (2) it exceeds, by a margin, what the other track's voice leaks into it. The leak's
delay and gain are measured per ordered pair of tracks while the other track is loud; a person
talking over the other (overlap, backchannels) stays far above that leak and is kept. Frames then
become spans: short pauses bridged, clicks dropped. The method and its measured accuracy are in the
README ("Automatic turns").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from pipeline.config import AutoTurnsConfig
from schemas.conventions import SAMPLE_RATE

log = logging.getLogger(__name__)

FRAME_S = 0.01  # decision frames: frame k covers [k * FRAME_S, (k + 1) * FRAME_S)
WINDOW_S = 0.025  # analysis window centred on each frame
BAND_HZ = (100.0, 4000.0)  # speech band: drops rumble / hum below and hiss above
LEVEL_FLOOR_DB = -100.0  # levels are clipped here (digital silence)
NOISE_PERCENTILE = 10.0  # the quietest tenth of a call is its noise floor
SPEECH_PERCENTILE = 90.0  # of the active frames: the track's speech level
LOUD_RANGE_DB = 6.0  # the other track counts as loud (bleed measured) within this of its speech level
MIN_BLEED_FRAMES = 50  # fewer loud frames than this: no bleed measured, none assumed
MAX_BLEED_SAMPLES = 20_000  # loud frames used to measure a bleed (evenly spaced): bounds the delay search
_CHUNK_FRAMES = 6000  # one minute of frames per FFT batch bounds memory on long calls


def band_levels(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-band power (linear) of each 10 ms frame (25 ms Hann window centred on the frame)."""
    hop = int(round(FRAME_S * sample_rate))
    win = int(round(WINDOW_S * sample_rate))
    n_frames = len(wave) // hop
    if n_frames == 0:
        return np.zeros(0)
    left = (win - hop) // 2
    padded = np.concatenate([np.zeros(left), np.asarray(wave, dtype=np.float64), np.zeros(win)])
    freqs = np.fft.rfftfreq(win, 1.0 / sample_rate)
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    window = np.hanning(win)
    scale = 2.0 / (window**2).sum() / win  # Parseval: mean power of a full-band signal
    power = np.empty(n_frames)
    for c0 in range(0, n_frames, _CHUNK_FRAMES):
        c1 = min(n_frames, c0 + _CHUNK_FRAMES)
        frames = np.lib.stride_tricks.sliding_window_view(padded[c0 * hop: c1 * hop + win], win)[::hop][: c1 - c0]
        spec = np.fft.rfft(frames * window, axis=1)
        power[c0:c1] = (np.abs(spec[:, band]) ** 2).sum(axis=1) * scale
    return power


def smooth_levels_db(power: np.ndarray, smooth_s: float) -> np.ndarray:
    """Moving average of frame power (centred, offline) in dB, clipped at LEVEL_FLOOR_DB."""
    width = max(1, int(round(smooth_s / FRAME_S)))
    if width > 1 and len(power):
        power = np.convolve(power, np.ones(width) / width, mode="same")
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-30)), LEVEL_FLOOR_DB)


def activity(levels_db: np.ndarray, cfg: AutoTurnsConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(strong, weak, speech level): weak frames rise `floor_margin_db` above the noise floor; strong
    ones are also within `speech_range_db` of the track's speech level. A span needs a strong frame
    and extends over the weak frames around it (hysteresis), so soft onsets and decays stay in."""
    if not len(levels_db):
        return np.zeros(0, bool), np.zeros(0, bool), LEVEL_FLOOR_DB
    floor = float(np.percentile(levels_db, NOISE_PERCENTILE))
    weak = levels_db > floor + cfg.floor_margin_db
    if not weak.any():
        return weak, weak, floor
    speech = float(np.percentile(levels_db[weak], SPEECH_PERCENTILE))
    return weak & (levels_db > speech - cfg.speech_range_db), weak, speech


def hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """The runs of `weak` frames that hold at least one `strong` frame."""
    keep = np.zeros_like(weak)
    for s, e in _runs(weak):
        if strong[s:e].any():
            keep[s:e] = True
    return keep


class Bleed(NamedTuple):
    """The other track's voice in this track: `lag` frames later, `gain_db` quieter (negative)."""

    lag: int
    gain_db: float


def delayed(x: np.ndarray, lag: int, fill: float) -> np.ndarray:
    """`x` delayed by `lag` frames (advanced when negative), the gap filled with `fill`."""
    n = len(x)
    out = np.full(n, fill, dtype=x.dtype)
    if lag >= 0:
        out[lag:] = x[: n - lag]
    else:
        out[:lag] = x[-lag:]
    return out


def measure_bleed(own_db: np.ndarray, other_db: np.ndarray, other_speech_db: float,
                  max_delay_s: float) -> Bleed | None:
    """Delay and gain of the other track's voice in this one, measured while the other track is loud.

    A leak is a delayed, scaled copy: at the true delay the level difference to the other track is
    nearly constant, so the delay (within +-`max_delay_s`) is the one with the smallest interquartile
    range of that difference, and the gain its median (robust to the minority of frames where this
    person talks too). None when the other track is never loud enough to measure.
    """
    loud = np.flatnonzero(other_db > other_speech_db - LOUD_RANGE_DB)
    if len(loud) < MIN_BLEED_FRAMES:
        return None
    loud = loud[:: max(1, len(loud) // MAX_BLEED_SAMPLES)]
    max_lag = int(round(max_delay_s / FRAME_S))
    best: tuple[float, int] | None = None
    for lag in sorted(range(-max_lag, max_lag + 1), key=abs):
        t = loud[(loud + lag >= 0) & (loud + lag < len(own_db))]
        if len(t) < MIN_BLEED_FRAMES:
            continue
        q1, q3 = np.percentile(own_db[t + lag] - other_db[t], [25, 75])
        if best is None or q3 - q1 < best[0] - 1e-9:
            best = (float(q3 - q1), lag)
    if best is None:
        return None
    lag = best[1]
    t = loud[(loud + lag >= 0) & (loud + lag < len(own_db))]
    return Bleed(lag, float(np.median(own_db[t + lag] - other_db[t])))


def own_talk_frames(levels: Mapping[str, np.ndarray], cfg: AutoTurnsConfig,
                    *, suppress_bleed: bool = True) -> dict[str, np.ndarray]:
    """Per participant, the frames that are their own talk (active and above the others' bleed)."""
    ids = sorted(levels)
    n = max((len(v) for v in levels.values()), default=0)
    db = {p: np.pad(levels[p], (0, n - len(levels[p])), constant_values=LEVEL_FLOOR_DB) for p in ids}
    strong, weak, speech = {}, {}, {}
    for p in ids:
        strong[p], weak[p], speech[p] = activity(db[p], cfg)
    if not suppress_bleed:
        return {p: hysteresis(strong[p], weak[p]) for p in ids}
    dominant = dominance(db, speech, cfg)
    return {p: hysteresis(strong[p] & dominant[p], weak[p] & dominant[p]) for p in ids}


def dominance(db: Mapping[str, np.ndarray], speech: Mapping[str, float], cfg: AutoTurnsConfig) -> dict[str, np.ndarray]:
    """Per participant, the frames where their track stands above every other track's bleed into it.

    Where only the other person talks, this track sits at the bleed gain below the (delayed) other
    track; where only this person talks, it sits far above. The cut lies `dominance_db` above the
    bleed, or half-way between the two tracks' bleed gains when they leak into each other strongly.
    """
    ids = sorted(db)
    bleed = {(p, q): measure_bleed(db[p], db[q], speech[q], cfg.max_bleed_delay_s)
             for p in ids for q in ids if p != q}
    out = {}
    for p in ids:
        keep = np.ones(len(db[p]), bool)
        for q in ids:
            into_p, into_q = bleed.get((p, q)), bleed.get((q, p))
            if q == p or into_p is None:
                continue
            g_out = into_q.gain_db if into_q is not None else LEVEL_FLOOR_DB
            margin = min(cfg.dominance_db, max(0.0, (-g_out - into_p.gain_db) / 2.0))
            keep &= db[p] > delayed(db[q], into_p.lag, LEVEL_FLOOR_DB) + into_p.gain_db + margin
            log.debug("bleed %s -> %s: %+d ms, %.1f dB, margin %.1f dB", q, p, into_p.lag * 10,
                      into_p.gain_db, margin)
        out[p] = keep
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame indices of the True runs."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def frames_to_spans(mask: np.ndarray, cfg: AutoTurnsConfig) -> list[tuple[float, float]]:
    """Talk spans in seconds: pauses < `min_gap_s` bridged, spurts < `min_talk_s` dropped, then
    each span widened by `pad_s` (clipped to the track) and overlapping spans joined."""
    runs = _runs(mask)
    bridged: list[list[int]] = []
    max_gap = int(round(cfg.min_gap_s / FRAME_S))
    for s, e in runs:
        if bridged and s - bridged[-1][1] < max_gap:
            bridged[-1][1] = e
        else:
            bridged.append([s, e])
    min_len = int(round(cfg.min_talk_s / FRAME_S))
    pad = int(round(cfg.pad_s / FRAME_S))
    spans: list[list[int]] = []
    for s, e in bridged:
        if e - s < min_len:
            continue
        s, e = max(0, s - pad), min(len(mask), e + pad)
        if spans and s <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], e)
        else:
            spans.append([s, e])
    return [(round(s * FRAME_S, 2), round(e * FRAME_S, 2)) for s, e in spans]


def spans_to_frames(spans: list[tuple[float, float]], n_frames: int) -> np.ndarray:
    """The 10 ms frames covered by spans (a frame counts when its centre lies inside a span)."""
    mask = np.zeros(n_frames, bool)
    centres = (np.arange(n_frames) + 0.5) * FRAME_S
    for s, e in spans:
        mask |= (centres >= s) & (centres < e)
    return mask


def talk_spans(waves: Mapping[str, np.ndarray], cfg: AutoTurnsConfig | None = None, *,
               sample_rate: int = SAMPLE_RATE, suppress_bleed: bool = True) -> dict[str, list[tuple[float, float]]]:
    """Each participant's talk spans (seconds) from their own track, all tracks on one timeline."""
    cfg = cfg or AutoTurnsConfig()
    if not waves:
        return {}
    levels = {p: smooth_levels_db(band_levels(w, sample_rate), cfg.smooth_s) for p, w in waves.items()}
    own = own_talk_frames(levels, cfg, suppress_bleed=suppress_bleed)
    return {p: frames_to_spans(own[p], cfg) for p in sorted(own)}


def frame_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Frame-level talk precision, recall and F1 (a track with no talk and none found scores 1)."""
    n = max(len(pred), len(truth))
    pred = np.pad(pred, (0, n - len(pred)))
    truth = np.pad(truth, (0, n - len(truth)))
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
