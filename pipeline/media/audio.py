"""Audio decoding: any container, rate and channel count ffmpeg reads (wav, m4a, mp3, mono or stereo,
8-48 kHz) becomes 16 kHz mono float32 on the session (video) timeline.

Decoding runs the static ffmpeg binary shipped by `imageio-ffmpeg` with an argument list built
here (no wrapper library: the one we used, ffmpeg-python, is unmaintained since 2019 and only
assembled this list). ffmpeg reads local files only: the input is passed as a `file:` URL, so a
name containing ':' or starting with '-' is never taken for a protocol or an option, and
`-protocol_whitelist file` stops a playlist-like input from making ffmpeg open anything else.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from pipeline.common.errors import MediaError
from schemas.conventions import SAMPLE_RATE


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def decode_command(path: Path, sample_rate: int) -> list[str]:
    """ffmpeg arguments: first audio stream of a local file -> mono float32 PCM on stdout."""
    return [ffmpeg_exe(), "-nostdin", "-v", "error", "-xerror", "-protocol_whitelist", "file",
            "-i", f"file:{path.resolve()}", "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le",
            "-ac", "1", "-ar", str(sample_rate), "pipe:1"]


# Float audio is nominally within [-1, 1]; louder files exist (a few dB over full scale after
# processing), but |x| > 64 (+36 dBFS) is a broken file whose FBank would overflow to inf / NaN.
MAX_ABS_AMPLITUDE = 64.0


def check_samples(wave: np.ndarray, path: str | Path, sample_rate: int) -> None:
    """Refuse audio with non-finite or implausibly large samples, naming the time of the first one."""
    bad = ~np.isfinite(wave)
    what = "a NaN/inf sample"
    if not bad.any():
        bad = np.abs(wave) > MAX_ABS_AMPLITUDE
        what = f"a sample beyond +-{MAX_ABS_AMPLITUDE:g} (float audio is expected within [-1, 1])"
    if bad.any():
        first = int(np.argmax(bad))
        raise MediaError(path, f"{what}: {wave[first]!r} at {first / sample_rate:.3f} s "
                               f"({int(bad.sum())} such samples)", f"t={first / sample_rate:.3f} s")


def decode_audio(path: str | Path, *, sample_rate: int = SAMPLE_RATE, offset_s: float = 0.0) -> np.ndarray:
    """Decode any ffmpeg-readable audio to mono float32 at `sample_rate`.

    `offset_s` places the file on the session (video) timeline: the file's first sample plays at
    video time `offset_s`. Positive offsets prepend silence, negative ones drop the start.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "audio file not found")
    done = subprocess.run(decode_command(path, sample_rate), capture_output=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace").strip().splitlines()
        raise MediaError(path, "expected an audio stream ffmpeg can decode; ffmpeg said: "
                         + (detail[-1] if detail else "no output"))
    wave = np.frombuffer(done.stdout, dtype=np.float32).copy()
    if wave.size == 0:
        raise MediaError(path, "decoded to zero audio samples (empty or truncated file)")
    check_samples(wave, path, sample_rate)
    shift = int(round(offset_s * sample_rate))
    if shift > 0:
        wave = np.concatenate([np.zeros(shift, np.float32), wave])
    elif shift < 0:
        wave = wave[-shift:]
    return wave
