"""Where a participant's own audio track sits on the video's timeline: offset and clock drift.

Zoom's per-participant tracks are not aligned to the video (README "From a Zoom recording"), and a
track recorded on another clock drifts. Each track carries its owner's voice and some of the other
person's, so it correlates with the call's mixed audio (the video's audio or ``audio_only.m4a``).
Coarse to fine, at several places of the call:

1. a 100 Hz log-energy envelope (10 ms frames, slow trend removed) of both; the track's envelope
   (its middle, at most `global_span_s`) against the whole reference gives the lag to ~10 ms;
2. the track is cut into `n_windows` windows from its start to its end; each window's envelope is
   matched again near that lag (room for drift), giving a lag and a correlation peak per window;
3. in each window the loudest `refine_s` of waveform (both low-passed at 1 kHz, so a little drift
   inside the stretch costs no coherence) is matched within +-`refine_search_s` of the envelope lag,
   with sub-sample (parabolic) peak interpolation;
4. lag = offset + drift * track time, fitted over the windows that correlate and agree.

The lag convention is participants.csv's `audio_offset_s`: video time at which the track's first
sample plays. A track that correlates nowhere (unrelated audio, silence) is refused with its peak
values as evidence; the estimate is never a guess.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from pipeline.common.errors import MediaError
from pipeline.media.audio import decode_audio
from schemas.conventions import HEAD_HOP_S, SAMPLE_RATE

log = logging.getLogger(__name__)

ENVELOPE_RATE = 100  # Hz: 10 ms frames


class AlignmentError(MediaError):
    kind = "alignment"


@dataclass(frozen=True)
class AlignmentSettings:
    """How the search runs and what counts as evidence (defaults suit calls of seconds to hours)."""

    n_windows: int = 5  # places along the track where the lag is measured
    max_window_s: float = 30.0  # envelope window length cap
    global_span_s: float = 120.0  # track envelope used for the first, call-wide lag
    max_offset_s: float = 600.0  # |offset| searched
    max_drift_ppm: float = 5000.0  # drift the window search and the drift compensation allow
    refine_s: float = 1.5  # waveform stretch per window
    refine_search_s: float = 0.02  # waveform search around the envelope lag (2 envelope frames)
    refine_cutoff_hz: float = 1000.0
    # A window is evidence when its envelope AND its waveform match. The envelope alone is weak:
    # unrelated speech-like tracks reach 0.7 on 5 s windows; their low-passed waveforms stay < 0.1.
    min_envelope_peak: float = 0.5
    min_waveform_peak: float = 0.5
    min_windows: int = 2  # matching windows needed for a confident result (and a drift estimate)
    warn_drift_s: float = HEAD_HOP_S  # one head frame: more drift than this over a call misplaces the audio


@dataclass(frozen=True)
class WindowLag:
    """The lag measured at one place of the track (the evidence an import report shows)."""

    window_start_s: float  # track time span of the window
    window_end_s: float
    track_time_s: float  # track time the lag belongs to (centre of the stretch it was measured on)
    envelope_lag_s: float
    envelope_peak: float
    lag_s: float  # refined lag when the waveform agreed, else the envelope lag
    waveform_peak: float | None
    refined: bool
    used: bool = True
    note: str = ""


@dataclass(frozen=True)
class TrackAlignment:
    """Offset and drift of one track against the reference, or a refusal with its reason."""

    track: str
    reference: str
    confident: bool
    offset_s: float | None  # video time of the track's first sample
    drift_ppm: float | None  # lag growth, microseconds per track second
    drift_over_track_s: float | None  # lag change from the track's first to its last sample
    drift_warning: bool  # |drift over the track| above one head frame
    track_duration_s: float
    global_lag_s: float
    global_peak: float
    max_residual_s: float | None
    windows: tuple[WindowLag, ...] = field(default_factory=tuple)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def require(self) -> TrackAlignment:
        """This result, or an AlignmentError naming the track and why it could not be placed."""
        if not self.confident:
            raise AlignmentError(self.track, self.reason)
        return self


def log_energy_envelope(wave: np.ndarray, sr: int = SAMPLE_RATE, rate: int = ENVELOPE_RATE) -> np.ndarray:
    """Log energy per 1/rate s frame minus its 1 s moving average: speech on/offsets, not loudness,
    so a track's own voice and the other's quieter bleed both line up with the mix."""
    hop = sr // rate
    n = wave.size // hop
    frames = wave[: n * hop].astype(np.float64).reshape(n, hop)
    env = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-10)
    box = np.ones(rate)
    trend = np.convolve(env, box, mode="same") / np.convolve(np.ones(n), box, mode="same")  # no edge dip
    return env - trend


def sliding_ncc(segment: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Pearson correlation of `segment` with every same-length slice of `ref` (k = 0 .. len(ref) -
    len(segment)); 0 where the slice is constant."""
    m = segment.size
    s = segment.astype(np.float64) - segment.mean()
    s_norm = float(np.sqrt(np.sum(s * s)))
    if m == 0 or ref.size < m or s_norm == 0.0:
        return np.zeros(max(0, ref.size - m + 1))
    r = ref.astype(np.float64)
    c = signal.correlate(r, s / s_norm, mode="valid", method="fft")
    cs = np.concatenate([[0.0], np.cumsum(r)])
    cs2 = np.concatenate([[0.0], np.cumsum(r * r)])
    total = cs[m:] - cs[:-m]
    var = np.maximum(cs2[m:] - cs2[:-m] - total * total / m, 0.0)
    ok = var > 1e-12 * m
    out = np.zeros_like(c)
    out[ok] = c[ok] / np.sqrt(var[ok])
    return out


def _peak(ncc: np.ndarray) -> tuple[float, float]:
    """(fractional index, value) of the maximum, parabolic interpolation between neighbours."""
    k = int(np.argmax(ncc))
    if 0 < k < ncc.size - 1:
        a, b, c = ncc[k - 1], ncc[k], ncc[k + 1]
        den = a - 2 * b + c
        if den < 0:
            return k + 0.5 * (a - c) / den, float(b)
    return float(k), float(ncc[k])


def _ref_slice(ref: np.ndarray, start: int, length: int) -> np.ndarray:
    """ref[start:start+length], zero-padded where it runs off either end."""
    out = np.zeros(length, dtype=np.float64)
    lo, hi = max(0, start), min(ref.size, start + length)
    if hi > lo:
        out[lo - start:hi - start] = ref[lo:hi]
    return out


def _locate(segment: np.ndarray, ref: np.ndarray, centre: float, half: int) -> tuple[float, float]:
    """Where `segment` starts in `ref` (fractional index), searched within `centre` +- `half`;
    returns (position, correlation)."""
    start = int(np.floor(centre)) - half
    ncc = sliding_ncc(segment, _ref_slice(ref, start, segment.size + 2 * half + 1))
    k, value = _peak(ncc)
    return start + k, value


def align_tracks(tracks: list[str | Path], reference: str | Path,
                 settings: AlignmentSettings | None = None) -> list[TrackAlignment]:
    """Align every participant track to one reference (the video, or the mixed audio); the
    reference is decoded once."""
    ref = decode_audio(reference)
    return [align_waves(decode_audio(t), ref, SAMPLE_RATE, settings, track=str(t), reference=str(reference))
            for t in tracks]


def align_track(track: str | Path, reference: str | Path,
                settings: AlignmentSettings | None = None) -> TrackAlignment:
    """Offset and drift of the audio file `track` against the audio of `reference` (16 kHz decode)."""
    return align_tracks([track], reference, settings)[0]


def align_waves(track_wave: np.ndarray, ref_wave: np.ndarray, sr: int = SAMPLE_RATE,
                settings: AlignmentSettings | None = None, *, track: str = "track",
                reference: str = "reference") -> TrackAlignment:
    """`align_track` on decoded mono waves at `sr` (names are for the evidence and messages)."""
    st = settings or AlignmentSettings()
    env_t, env_r = log_energy_envelope(track_wave, sr), log_energy_envelope(ref_wave, sr)
    dur = track_wave.size / sr
    base = {"track": track, "reference": reference, "track_duration_s": round(dur, 6)}
    if not np.any(track_wave):
        return _refusal(base, 0.0, 0.0, (), "the track is digital silence")
    if env_t.size < 2 * ENVELOPE_RATE or env_r.size < 2 * ENVELOPE_RATE:
        return _refusal(base, 0.0, 0.0, (), "track or reference shorter than 2 s: nothing to correlate")
    lag0, peak0 = _global_lag(env_t, env_r, st)
    lo, hi = max(0.0, -lag0), min(dur, env_r.size / ENVELOPE_RATE - lag0)
    if hi - lo < 1.0:
        return _refusal(base, lag0, peak0, (), f"best envelope lag {lag0:+.2f} s leaves under 1 s of overlap "
                        f"with the reference (envelope peak {peak0:.2f})")
    w = min(st.max_window_s, (hi - lo) / max(1, st.n_windows))
    starts = np.linspace(lo, hi - w, st.n_windows) if st.n_windows > 1 else np.array([lo + (hi - lo - w) / 2])
    windows = [_envelope_window(float(s), w, lag0, env_t, env_r, st, dur) for s in starts]
    slope0 = _first_slope(windows, st)
    energy = _frame_energy(track_wave, sr)
    windows = [_refine(wl, slope0, energy, track_wave, ref_wave, sr, st) if wl.used else wl for wl in windows]
    windows = _drop_inconsistent(windows, st, dur)
    return _fit(base, lag0, peak0, windows, st, dur)


def _global_lag(env_t: np.ndarray, env_r: np.ndarray, st: AlignmentSettings) -> tuple[float, float]:
    """Call-wide lag (s) of the track's middle (at most `global_span_s`) in the whole reference, and
    its envelope correlation."""
    span = min(env_t.size, int(st.global_span_s * ENVELOPE_RATE))
    a = (env_t.size - span) // 2
    pos, peak = _locate(env_t[a:a + span], env_r, float(a), int(st.max_offset_s * ENVELOPE_RATE))
    return (round(pos) - a) / ENVELOPE_RATE, peak


def _frame_energy(wave: np.ndarray, sr: int) -> np.ndarray:
    hop = sr // ENVELOPE_RATE
    n = wave.size // hop
    frames = wave[: n * hop].astype(np.float64).reshape(n, hop)
    return np.mean(frames * frames, axis=1)


def _envelope_window(start_s: float, w: float, lag0: float, env_t: np.ndarray, env_r: np.ndarray,
                     st: AlignmentSettings, dur: float) -> WindowLag:
    """Envelope lag of one window, searched near the call-wide lag with room for the largest drift."""
    a, wf = int(round(start_s * ENVELOPE_RATE)), int(round(w * ENVELOPE_RATE))
    half = int(np.ceil((0.1 + st.max_drift_ppm * 1e-6 * dur) * ENVELOPE_RATE))
    pos, peak = _locate(env_t[a:a + wf], env_r, a + lag0 * ENVELOPE_RATE, half)
    lag = round((pos - a) / ENVELOPE_RATE, 6)
    used = peak >= st.min_envelope_peak
    return WindowLag(round(start_s, 6), round(start_s + w, 6), round(start_s + w / 2, 6), lag, round(peak, 4), lag,
                     None, False, used, "" if used else f"envelope peak {peak:.2f} < {st.min_envelope_peak}")


def _first_slope(windows: list[WindowLag], st: AlignmentSettings) -> float:
    """Drift (s per s) from the envelope lags alone, within +-`max_drift_ppm`: the waveform stretches
    are compared on the video's clock with it, so a large drift does not smear their correlation."""
    used = [wl for wl in windows if wl.used]
    t = np.array([wl.track_time_s for wl in used])
    if len(used) < 2 or np.ptp(t) <= 0:
        return 0.0
    slope = float(np.polyfit(t, [wl.envelope_lag_s for wl in used], 1)[0])
    return float(np.clip(slope, -st.max_drift_ppm * 1e-6, st.max_drift_ppm * 1e-6))


def _refine(wl: WindowLag, slope: float, energy: np.ndarray, track_wave: np.ndarray, ref_wave: np.ndarray,
            sr: int, st: AlignmentSettings) -> WindowLag:
    """The window's loudest `refine_s` of low-passed waveform, put on the video clock with the
    first drift estimate, matched within +-`refine_search_s` of the envelope lag; kept only when the
    correlation reaches `min_waveform_peak` inside the search range."""
    a, wf = int(round(wl.window_start_s * ENVELOPE_RATE)), int(round((wl.window_end_s - wl.window_start_s) * ENVELOPE_RATE))
    r = max(1, min(wf, int(st.refine_s * ENVELOPE_RATE)))
    sums = np.convolve(energy[a:a + wf], np.ones(r), mode="valid")
    hop = sr // ENVELOPE_RATE
    s0, n = (a + (int(np.argmax(sums)) if sums.size else 0)) * hop, r * hop
    centre_s = (s0 + n / 2) / sr
    half, margin, stretch = int(round(st.refine_search_s * sr)), int(0.05 * sr), 1.0 + slope
    sos = signal.butter(4, st.refine_cutoff_hz / (sr / 2), output="sos")
    seg = signal.sosfiltfilt(sos, _ref_slice(track_wave, s0 - margin, n + 2 * margin))[margin:margin + n]
    m = int(np.floor((n - 1) * stretch)) + 1
    seg = np.interp(np.arange(m) / stretch, np.arange(n), seg)  # the stretch as the video clock heard it
    start_lag = wl.envelope_lag_s + slope * (centre_s - wl.track_time_s) - slope * n / 2 / sr
    r0 = int(np.floor(s0 + start_lag * sr)) - half  # first candidate for the stretch's start in the reference
    ref = signal.sosfiltfilt(sos, _ref_slice(ref_wave, r0 - margin, m + 2 * half + 1 + 2 * margin))
    k, peak = _peak(sliding_ncc(seg, ref[margin:margin + m + 2 * half + 1]))
    if not (0 < k < 2 * half and peak >= st.min_waveform_peak):
        why = "no peak inside the search" if not 0 < k < 2 * half else f"peak {peak:.2f} < {st.min_waveform_peak}"
        return WindowLag(**{**asdict(wl), "waveform_peak": round(peak, 4), "used": False,
                            "note": f"waveform did not confirm the envelope lag ({why})"})
    lag = (r0 + k - s0) / sr + slope * n / 2 / sr
    return WindowLag(**{**asdict(wl), "track_time_s": round(centre_s, 6), "lag_s": round(lag, 6),
                        "waveform_peak": round(peak, 4), "refined": True})


def _drop_inconsistent(windows: list[WindowLag], st: AlignmentSettings, dur: float) -> list[WindowLag]:
    """Windows whose lag is farther from the others' median than drift could explain are not used."""
    used = [wl.lag_s for wl in windows if wl.used]
    if len(used) < 3:
        return windows
    med = float(np.median(used))
    allowed = 0.05 + st.max_drift_ppm * 1e-6 * dur
    return [wl if not wl.used or abs(wl.lag_s - med) <= allowed else
            WindowLag(**{**asdict(wl), "used": False,
                         "note": f"lag {wl.lag_s:+.3f} s is {abs(wl.lag_s - med):.3f} s from the median"})
            for wl in windows]


def _refusal(base: dict[str, Any], lag0: float, peak0: float, windows: tuple[WindowLag, ...],
             reason: str) -> TrackAlignment:
    log.warning("%s: not aligned: %s", base["track"], reason)
    return TrackAlignment(**base, confident=False, offset_s=None, drift_ppm=None, drift_over_track_s=None,
                          drift_warning=False, global_lag_s=round(lag0, 6), global_peak=round(peak0, 4),
                          max_residual_s=None, windows=windows, reason=f"cannot place the track on the video "
                          f"timeline: {reason}")


def _fit(base: dict[str, Any], lag0: float, peak0: float, windows: list[WindowLag], st: AlignmentSettings,
         dur: float) -> TrackAlignment:
    """lag = offset + drift * track time over the used windows (one window: offset only)."""
    used = [wl for wl in windows if wl.used]
    need = min(st.min_windows, len(windows))
    if len(used) < need:
        env = ", ".join(f"{wl.envelope_peak:.2f}" for wl in windows)
        wave = ", ".join("-" if wl.waveform_peak is None else f"{wl.waveform_peak:.2f}" for wl in windows)
        return _refusal(base, lag0, peak0, tuple(windows),
                        f"{len(used)} of {len(windows)} windows match the reference (envelope peaks {env}; "
                        f"waveform peaks {wave}; a match needs >= {st.min_envelope_peak} and >= "
                        f"{st.min_waveform_peak}, and {need} matches are needed): unrelated audio, silence or "
                        f"the wrong file?")
    t = np.array([wl.track_time_s for wl in used])
    lag = np.array([wl.lag_s for wl in used])
    if len(used) >= 2 and np.ptp(t) > 0:
        slope, offset = np.polyfit(t, lag, 1)
    else:
        slope, offset = None, float(lag.mean())
    resid = lag - (offset + (slope or 0.0) * t)
    drift_s = None if slope is None else float(slope) * dur
    warn = drift_s is not None and abs(drift_s) > st.warn_drift_s
    if warn:
        log.warning("%s: drifts %+.3f s over the track (more than one head frame, %.2f s)", base["track"],
                    drift_s, st.warn_drift_s)
    return TrackAlignment(**base, confident=True, offset_s=round(float(offset), 6),
                          drift_ppm=None if slope is None else round(float(slope) * 1e6, 3),
                          drift_over_track_s=None if drift_s is None else round(drift_s, 6), drift_warning=warn,
                          global_lag_s=round(lag0, 6), global_peak=round(peak0, 4),
                          max_residual_s=round(float(np.abs(resid).max()), 6), windows=tuple(windows))
