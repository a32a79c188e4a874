"""Kaldi-style log-mel filterbank (FBank) features of the speaker's audio.

Kaldi defaults used across speech toolkits - 25 ms povey window, 10 ms shift, 80 mel bins (Kaldi mel
scale, 20 Hz .. Nyquist), pre-emphasis 0.97, per-frame DC removal, dither 0 (reproducible), power
spectrum, natural log with a float32-eps floor.

Frame rule (no look-ahead, exact alignment with 12.5 fps head frames): the waveform is left-padded
with 240 zero samples and framed without centring, so FBank frame j covers original samples
[160*j - 240, 160*j + 160). Frames 8k..8k+7 therefore end inside head frame k = [1280k, 1280(k+1))
and never see audio after it. The output is truncated to whole head frames: 8 * floor(N / 1280) rows.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pipeline.media.audio import decode_audio
from schemas.conventions import (
    FBANK_BINS,
    FBANK_FRAMES_PER_HEAD,
    FBANK_HOP_SAMPLES,
    FBANK_WIN_SAMPLES,
    HEAD_HOP_SAMPLES,
    SAMPLE_RATE,
)

FBANK_LEFT_PAD = FBANK_WIN_SAMPLES - FBANK_HOP_SAMPLES  # 240
FBANK_FFT = 512
FBANK_LOW_HZ = 20.0
PREEMPHASIS = 0.97


def _mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


@functools.lru_cache(maxsize=4)
def kaldi_mel_banks(n_bins: int = FBANK_BINS, n_fft: int = FBANK_FFT, sample_rate: int = SAMPLE_RATE,
                    low_hz: float = FBANK_LOW_HZ, high_hz: float | None = None) -> np.ndarray:
    """Triangular filters equally spaced on Kaldi's mel scale, triangles defined in mel (as Kaldi)."""
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    mel_lo, mel_hi = _mel(np.float64(low_hz)), _mel(np.float64(high_hz))
    delta = (mel_hi - mel_lo) / (n_bins + 1)
    fft_mel = _mel(np.arange(n_fft // 2 + 1) * sample_rate / n_fft)
    banks = np.zeros((n_bins, n_fft // 2 + 1), dtype=np.float64)
    for b in range(n_bins):
        left, centre, right = mel_lo + b * delta, mel_lo + (b + 1) * delta, mel_lo + (b + 2) * delta
        up = (fft_mel - left) / (centre - left)
        down = (right - fft_mel) / (right - centre)
        banks[b] = np.maximum(0.0, np.minimum(up, down))
    banks[:, -1] = 0.0  # Kaldi drops the Nyquist bin
    return banks.astype(np.float32)


def povey_window(n: int = FBANK_WIN_SAMPLES) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1))) ** 0.85


def compute_fbank(wave: np.ndarray, *, n_bins: int = FBANK_BINS) -> np.ndarray:
    """Log-mel FBank [8 * n_head_frames, n_bins] float32 following the frame rule above."""
    n_head = len(wave) // HEAD_HOP_SAMPLES
    n_frames = n_head * FBANK_FRAMES_PER_HEAD
    if n_frames == 0:
        return np.zeros((0, n_bins), np.float32)
    padded = np.concatenate([np.zeros(FBANK_LEFT_PAD, np.float32), wave.astype(np.float32)])
    window = povey_window().astype(np.float32)
    banks = kaldi_mel_banks(n_bins)
    eps = np.finfo(np.float32).eps
    out = np.empty((n_frames, n_bins), np.float32)
    step = 4096  # frames per block: bounded memory for hour-long audio
    for a in range(0, n_frames, step):
        b = min(n_frames, a + step)
        idx = (np.arange(a, b)[:, None] * FBANK_HOP_SAMPLES) + np.arange(FBANK_WIN_SAMPLES)[None, :]
        frames = padded[idx].astype(np.float64)
        frames -= frames.mean(axis=1, keepdims=True)
        frames[:, 1:] -= PREEMPHASIS * frames[:, :-1]
        frames[:, 0] -= PREEMPHASIS * frames[:, 0]
        frames *= window
        power = np.abs(np.fft.rfft(frames, n=FBANK_FFT, axis=1)) ** 2
        out[a:b] = np.log(np.maximum(power.astype(np.float32) @ banks.T, eps))
    return out


def fbank_for_file(path: str | Path, *, offset_s: float = 0.0, n_bins: int = FBANK_BINS) -> np.ndarray:
    return compute_fbank(decode_audio(path, offset_s=offset_s), n_bins=n_bins)
