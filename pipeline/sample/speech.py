"""Speech-like audio of the sample participants (no TTS): one mono track per participant.

A glottal-pulse source with a declining, phrase-final-falling F0 contour (speaker-specific mean F0
110-225 Hz), 5-7 Hz syllables with changing vowel formants, consonant noise bursts; a -62 dBFS
noise floor elsewhere; peak -3 dBFS. A listener's track holds only their backchannels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import signal

from pipeline.sample.motion import gaussian_bump

# Japanese vowel formants (F1, F2, F3) in Hz for a mid-pitched voice
_VOWELS = {"a": (800, 1250, 2600), "i": (300, 2250, 3000), "u": (350, 1350, 2450),
           "e": (500, 1900, 2600), "o": (500, 850, 2500), "n": (280, 1100, 2400)}
_BC_VOWELS = {"un": "un", "hai": "ai", "ee": "e", "haa": "a", "un un": "unun"}


def _glottal(phase: np.ndarray) -> np.ndarray:
    """Rosenberg-style glottal flow derivative from a cycle phase (cycles)."""
    fr = np.mod(phase, 1.0)
    tp, tn = 0.42, 0.16
    flow = np.where(fr < tp, 0.5 * (1 - np.cos(np.pi * fr / tp)),
                    np.where(fr < tp + tn, np.cos(0.5 * np.pi * (fr - tp) / tn), 0.0))
    d = np.diff(flow, prepend=flow[:1])
    return d / (np.abs(d).max() + 1e-9)


def _formant_env(freqs: np.ndarray, fmts: np.ndarray, bws: np.ndarray) -> np.ndarray:
    """Cascade 2-pole resonator magnitude: freqs (F,), fmts/bws (3, T) -> (F, T)."""
    f = freqs[:, None]
    env = np.ones((freqs.size, fmts.shape[1]))
    for i in range(fmts.shape[0]):
        F, B = fmts[i][None, :], bws[i][None, :]
        env *= F * F / np.sqrt((F * F - f * f) ** 2 + (B * f) ** 2 + 1e-9)
    return env

def synth_utterance(rng: np.random.Generator, dur_s: float, sr: int, f0_hz: float,
                    vowels: str | None = None, backchannel: bool = False) -> np.ndarray:
    """Speech-like utterance: glottal source with a declining, phrase-final-falling F0 contour,
    5-7 Hz syllables with changing vowel formants, consonant noise bursts, syllable-rate AM."""
    n = max(16, int(round(dur_s * sr)))
    t = np.arange(n) / sr
    edges, vowels = _syllables(rng, dur_s, vowels)
    u = t / dur_s
    f0 = _f0_contour(rng, t, dur_s, sr, f0_hz, edges, backchannel)
    phase = np.cumsum(f0) / sr + rng.uniform()
    src = _glottal(phase) + 0.02 * rng.standard_normal(n)
    voiced = _vowel_filter(rng, src, sr, f0_hz, edges, vowels)
    amp, noise = _articulation(rng, t, sr, edges, vowels, backchannel)
    if backchannel and vowels.startswith("a") and not vowels.startswith("u"):
        i1 = min(n, int(0.06 * sr))  # breathy "h" onset
        noise[:i1] += 0.15 * rng.standard_normal(i1) * np.hanning(i1)
    amp = np.convolve(amp, np.ones(max(1, sr // 200)) / max(1, sr // 200), mode="same")
    voiced = voiced / (np.sqrt(np.mean(voiced**2)) + 1e-9)
    y = 0.25 * voiced * amp + 0.25 * noise
    # phrase-level dynamics: slight decrescendo, soft edges
    y *= (1.0 - 0.3 * u) * np.clip(t / 0.01, 0, 1) * np.clip((dur_s - t) / 0.01, 0, 1)
    return y


def _syllables(rng: np.random.Generator, dur_s: float, vowels: str | None) -> tuple[np.ndarray, str]:
    """Syllable boundaries (5-7 per second, jittered) and their vowels (given, or drawn)."""
    rate = rng.uniform(5.0, 7.0)
    nsyl = max(1, int(round(dur_s * rate))) if vowels is None else len(vowels)
    edges = np.linspace(0.0, dur_s, nsyl + 1)
    if nsyl > 1:
        edges[1:-1] += rng.uniform(-0.25, 0.25, nsyl - 1) * (dur_s / nsyl)
    if vowels is None:
        vowels = "".join(rng.choice(list("aiueo"), size=nsyl))
        vowels = "".join(v if rng.random() > 0.08 else "n" for v in vowels)
    return edges, vowels


def _f0_contour(rng: np.random.Generator, t: np.ndarray, dur_s: float, sr: int, f0_hz: float,
                edges: np.ndarray, backchannel: bool) -> np.ndarray:
    """F0 per sample: declination + phrase-final fall + an accent on a random syllable + slow jitter."""
    u = t / dur_s
    if backchannel:
        f0 = f0_hz * (1.05 - 0.25 * u)
    else:
        fall = np.clip((t - (dur_s - 0.35)) / 0.35, 0.0, 1.0)
        f0 = f0_hz * (1.12 - 0.2 * u) * (1.0 - 0.18 * fall * fall * (3 - 2 * fall))
        acc = int(rng.integers(len(edges) - 1))
        f0 *= 1.0 + 0.12 * gaussian_bump(t, 0.5 * (edges[acc] + edges[acc + 1]), 0.08)
    jit = signal.sosfiltfilt(signal.butter(2, 8.0 / (sr / 2), output="sos"), rng.standard_normal(t.size))
    return f0 * (1.0 + 0.015 * jit / (jit.std() + 1e-9))


def _vowel_filter(rng: np.random.Generator, src: np.ndarray, sr: int, f0_hz: float, edges: np.ndarray,
                  vowels: str) -> np.ndarray:
    """The source through formant trajectories (interpolated between syllable vowels) at STFT frames."""
    n = src.size
    nper = 1 << int(math.ceil(math.log2(0.03 * sr)))
    hop = nper // 4
    freqs, times, Z = signal.stft(src, fs=sr, nperseg=nper, noverlap=nper - hop, boundary="even")
    k = 1.0 + 0.12 * np.clip((f0_hz - 160.0) / 60.0, -1.5, 1.5)
    centres = 0.5 * (edges[:-1] + edges[1:])
    targets = np.array([_VOWELS[v] for v in vowels], float).T * k  # (3, nsyl)
    fmts = np.stack([np.interp(times, centres, targets[i]) for i in range(3)])
    fmts *= 1.0 + 0.03 * rng.standard_normal((3, 1))
    bws = np.array([80.0, 110.0, 160.0])[:, None] * np.ones_like(fmts)
    env = _formant_env(freqs, fmts, bws)
    _, voiced = signal.istft(Z * env, fs=sr, nperseg=nper, noverlap=nper - hop, boundary=True)
    voiced = voiced[:n]
    if voiced.size < n:
        voiced = np.pad(voiced, (0, n - voiced.size))
    return voiced


def _articulation(rng: np.random.Generator, t: np.ndarray, sr: int, edges: np.ndarray, vowels: str,
                  backchannel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Syllable amplitude envelope and consonant noise bursts at syllable onsets."""
    n = t.size
    amp = np.zeros(n)
    noise = np.zeros(n)
    for i in range(len(edges) - 1):
        s, e = edges[i], edges[i + 1]
        cons = (i > 0 or not backchannel) and rng.random() < 0.75
        cdur = rng.uniform(0.03, 0.07) if cons else 0.0
        vs = s + cdur
        a = np.clip((t - vs) / 0.025, 0, 1) * np.clip((e - t) / 0.05, 0, 1)
        a *= (1.0 - 0.35 * (vowels[i] == "n")) * rng.uniform(0.75, 1.0)
        amp = np.maximum(amp, a)
        if cons:
            i0, i1 = int(s * sr), min(n, int((vs + 0.01) * sr))
            if i1 - i0 > 8:
                lo = rng.uniform(1500.0, 3500.0)
                hi = min(lo * rng.uniform(1.6, 2.5), 0.45 * sr)
                sos = signal.butter(2, [lo / (sr / 2), hi / (sr / 2)], btype="band", output="sos")
                burst = signal.sosfilt(sos, rng.standard_normal(i1 - i0))
                w = np.hanning(i1 - i0)
                noise[i0:i1] += burst * w * rng.uniform(0.15, 0.4) / (burst.std() + 1e-9)
    return amp, noise


def make_speech_track(script: dict[str, Any], pid: str, sr: int, f0_hz: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Mono float track of one participant: own phrases and backchannels over a low noise floor,
    peak-normalised to -3 dBFS."""
    n = int(round(script["duration_s"] * sr))
    y = np.zeros(n)
    for tr in script["turns"]:
        if tr["participant_id"] != pid:
            continue
        for s, e in tr["phrases"]:
            seg = synth_utterance(rng, e - s, sr, f0_hz * rng.uniform(0.95, 1.05))
            i0 = int(round(s * sr))
            y[i0:i0 + seg.size] += seg[: max(0, n - i0)]
    for b in script["backchannels"]:
        if b["participant_id"] != pid:
            continue
        seg = synth_utterance(rng, b["end_s"] - b["start_s"], sr, f0_hz * 0.95,
                              vowels=_BC_VOWELS.get(b["label"], "un"), backchannel=True)
        i0 = int(round(b["start_s"] * sr))
        y[i0:i0 + seg.size] += seg[: max(0, n - i0)]
    peak = float(np.abs(y).max())
    if peak > 0:
        y *= 10 ** (-3 / 20) / peak
    floor = signal.sosfilt(signal.butter(1, min(4000.0, 0.4 * sr) / (sr / 2), output="sos"), rng.standard_normal(n))
    y += floor / (floor.std() + 1e-9) * 10 ** (-62 / 20)
    return np.clip(y, -1.0, 1.0)
