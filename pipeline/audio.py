"""Audio decoding and Kaldi-style log-mel filterbank (FBank) features.

Decoding goes through ffmpeg (the static binary shipped by `imageio-ffmpeg`, driven with
`ffmpeg-python`), so any container, rate and channel count ffmpeg reads works: wav, m4a, mp3,
mono or stereo, 8-48 kHz. Everything is resampled to 16 kHz mono float32.

FBank (GUIDE §5): Kaldi defaults used across speech toolkits - 25 ms povey window, 10 ms shift,
80 mel bins (Kaldi mel scale, 20 Hz .. Nyquist), pre-emphasis 0.97, per-frame DC removal,
dither 0 (reproducible), power spectrum, natural log with a float32-eps floor.

Frame rule (no look-ahead, exact alignment with 12.5 fps head frames): the waveform is left-padded
with 240 zero samples and framed without centring, so FBank frame j covers original samples
[160*j - 240, 160*j + 160). Frames 8k..8k+7 therefore end inside head frame k = [1280k, 1280(k+1))
and never see audio after it. The output is truncated to whole head frames: 8 * floor(N / 1280) rows.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .constants import (
    FBANK_BINS,
    FBANK_FRAMES_PER_HEAD,
    FBANK_HOP_SAMPLES,
    FBANK_WIN_SAMPLES,
    HEAD_HOP_SAMPLES,
    SAMPLE_RATE,
)
from .errors import MediaError

FBANK_LEFT_PAD = FBANK_WIN_SAMPLES - FBANK_HOP_SAMPLES  # 240
FBANK_FFT = 512
FBANK_LOW_HZ = 20.0
PREEMPHASIS = 0.97


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def decode_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE, offset_s: float = 0.0) -> np.ndarray:
    """Decode any ffmpeg-readable audio to mono float32 at `sample_rate`.

    `offset_s` places the file on the session (video) timeline: the file's first sample plays at
    video time `offset_s`. Positive offsets prepend silence, negative ones drop the start.
    """
    import ffmpeg

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "audio file not found")
    try:
        out, _ = (
            ffmpeg.input(str(path))
            .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=sample_rate, map="0:a:0")
            .global_args("-nostdin", "-v", "error", "-xerror")
            .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise MediaError(path, "expected an audio stream ffmpeg can decode; ffmpeg said: "
                         + (detail[-1] if detail else "no output")) from None
    wave = np.frombuffer(out, dtype=np.float32).copy()
    if wave.size == 0:
        raise MediaError(path, "decoded to zero audio samples (empty or truncated file)")
    if not np.all(np.isfinite(wave)):
        raise MediaError(path, "decoded audio contains NaN/inf samples")
    shift = int(round(offset_s * sample_rate))
    if shift > 0:
        wave = np.concatenate([np.zeros(shift, np.float32), wave])
    elif shift < 0:
        wave = wave[-shift:]
    return wave


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
