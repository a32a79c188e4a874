"""Bit-exact files from the generated media: ffmpeg encoders for video and audio, PCM WAV writing.

Reproducibility is the point: a session built twice from the same seed has byte-identical files
(single-threaded libx264 with fixed parameters, bitexact flags, no metadata), so idempotence and
caching can compare bytes.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterable
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.fsutil import atomic_path
from pipeline.media.audio import ffmpeg_exe


@lru_cache(maxsize=1)
def ffmpeg_encoders() -> frozenset[str]:
    """Names of the encoders this ffmpeg build has (libx264, aac, libmp3lame are optional)."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


def video_codec_args() -> list[str]:
    """Deterministic H.264 (libx264, one thread, fixed parameters); MPEG-4 part 2 as a fallback."""
    if "libx264" in ffmpeg_encoders():
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                "-threads", "1", "-x264-params", "threads=1:lookahead-threads=1:sliced-threads=0",
                "-g", "50"]
    return ["-c:v", "mpeg4", "-q:v", "4", "-pix_fmt", "yuv420p", "-threads", "1"]


BITEXACT_ARGS = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
             "-map_metadata", "-1", "-map_chapters", "-1"]



AUDIO_FORMATS: dict[str, dict[str, Any]] = {
    "wav16k": {"ext": ".wav", "sr": 16000, "channels": 1},
    "wav44k_stereo": {"ext": ".wav", "sr": 44100, "channels": 2},
    "m4a": {"ext": ".m4a", "sr": 48000, "channels": 2, "codec": ["-c:a", "aac", "-b:a", "128k"]},
    "mp3": {"ext": ".mp3", "sr": 44100, "channels": 1, "codec": ["-c:a", "libmp3lame", "-b:a", "128k"]},
}


def resolve_audio_format(fmt: str) -> str:
    """`fmt`, or 44.1 kHz stereo WAV when this ffmpeg lacks the encoder (mp3 / m4a)."""
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"audio_format must be one of {sorted(AUDIO_FORMATS)}, not {fmt!r}")
    if fmt == "mp3" and "libmp3lame" not in ffmpeg_encoders():
        return "wav44k_stereo"
    if fmt == "m4a" and "aac" not in ffmpeg_encoders():
        return "wav44k_stereo"
    return fmt


def write_audio(path: Path, y: np.ndarray, fmt: str) -> None:
    """Write a mono float track in format `fmt` (PCM WAV via soundfile, AAC / MP3 via ffmpeg)."""
    import soundfile as sf

    spec = AUDIO_FORMATS[fmt]
    pcm = np.round(np.clip(y, -1, 1) * 32767.0).astype(np.int16)
    if spec["channels"] == 2:
        pcm = np.stack([pcm, pcm], axis=1)
    if spec["ext"] == ".wav":
        with atomic_path(path) as tmp:
            sf.write(tmp, pcm, spec["sr"], subtype="PCM_16", format="WAV")
        return
    wav = path.with_name(f"{path.stem}.src-{uuid.uuid4().hex[:8]}.wav")
    try:
        sf.write(wav, pcm, spec["sr"], subtype="PCM_16", format="WAV")
        with atomic_path(path) as tmp:
            cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", str(wav), *spec["codec"],
                   "-ar", str(spec["sr"]), "-ac", str(spec["channels"]), *BITEXACT_ARGS, "-vn", str(tmp)]
            subprocess.run(cmd, check=True, capture_output=True)
    finally:
        wav.unlink(missing_ok=True)  # the source WAV is only a temporary


def _fps_arg(fps: float) -> str:
    """The frame rate as an exact ffmpeg rational (30000/1001, not 29.97)."""
    fr = Fraction(fps).limit_denominator(1001)
    return f"{fr.numerator}/{fr.denominator}"


def _grow_pipe(fd: int, size: int) -> None:
    """Bigger pipe buffer: a raw frame per write instead of many 64 kB hand-offs (Linux only)."""
    try:
        import fcntl

        cap = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), min(cap, max(size, 1 << 16)))
    except (OSError, ValueError, ImportError):
        pass


def encode_video(path: Path, width: int, height: int, fps: float, frames: Iterable[np.ndarray]) -> int:
    """Pipe BGR frames (an iterable of (H, W, 3) uint8) into ffmpeg; returns the frame count."""
    n = 0
    with atomic_path(path) as tmp:
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{width}x{height}", "-r", _fps_arg(fps), "-blocksize", str(width * height * 3),
               "-i", "pipe:0", *video_codec_args(), *BITEXACT_ARGS, "-an", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            assert proc.stdin is not None
            _grow_pipe(proc.stdin.fileno(), width * height * 3)
            for fr in frames:
                proc.stdin.write(memoryview(np.ascontiguousarray(fr)).cast("B"))
                n += 1
            proc.stdin.close()
            err = proc.stderr.read() if proc.stderr else b""
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed encoding {path}: {err.decode(errors='replace')[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return n


def mux_audio(video: Path, y: np.ndarray, fmt: str, out: Path) -> None:
    """`out` = the video stream of `video` (copied) plus the mono float track `y` encoded as `fmt`
    (its AAC / MP3 codec and rate): a call recording's video with its mixed audio. Bit-exact like
    `write_audio`; both streams start at time 0."""
    import soundfile as sf

    spec = AUDIO_FORMATS[fmt]
    pcm = np.round(np.clip(y, -1, 1) * 32767.0).astype(np.int16)
    wav = out.with_name(f"{out.stem}.src-{uuid.uuid4().hex[:8]}.wav")
    try:
        sf.write(wav, pcm, spec["sr"], subtype="PCM_16", format="WAV")
        with atomic_path(out) as tmp:
            cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", str(video), "-i", str(wav),
                   "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", *spec.get("codec", ["-c:a", "pcm_s16le"]),
                   "-ar", str(spec["sr"]), "-ac", str(spec["channels"]), *BITEXACT_ARGS, str(tmp)]
            subprocess.run(cmd, check=True, capture_output=True)
    finally:
        wav.unlink(missing_ok=True)
