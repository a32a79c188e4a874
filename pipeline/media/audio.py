"""Audio decoding: any container, rate and channel count ffmpeg reads (wav, m4a, mp3, mono or stereo,
8-48 kHz) becomes 16 kHz mono float32 on the session (video) timeline.

Decoding goes through ffmpeg (the static binary shipped by `imageio-ffmpeg`, driven with
`ffmpeg-python`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.common.errors import MediaError
from schemas.conventions import SAMPLE_RATE


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
