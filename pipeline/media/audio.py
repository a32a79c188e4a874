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
    if not np.all(np.isfinite(wave)):
        raise MediaError(path, "decoded audio contains NaN/inf samples")
    shift = int(round(offset_s * sample_rate))
    if shift > 0:
        wave = np.concatenate([np.zeros(shift, np.float32), wave])
    elif shift < 0:
        wave = wave[-shift:]
    return wave
