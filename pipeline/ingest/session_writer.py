"""Writing an imported session in the corpus input contract (README "Input contract").

Media enter the corpus as hard links (no copy of hours of video; the build only accepts files whose
resolved path lies inside the corpus, so a symbolic link to the Zoom folder would be refused) or as
copies where the file system cannot link. A drifting track is replaced by a FLAC resampled onto the
video clock, and a layout-split session gets its own cut of the video. Each session folder appears
whole (`atomic_folder`): a killed import leaves nothing a build would read.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.fsutil import (
    atomic_folder,
    atomic_path,
    link_or_copy,
    write_json_atomic,
    write_text_atomic,
)
from pipeline.media.audio import decode_audio, ffmpeg_exe
from schemas.inputs import PARTICIPANTS_CROP, PARTICIPANTS_REQUIRED

log = logging.getLogger(__name__)

REPORT_FILE = "import_report.json"
CORRECTED_RATE = 16000  # the build decodes every track at 16 kHz (FBank and SSL), so nothing is lost


@dataclass(frozen=True)
class ParticipantRow:
    participant_id: str
    track: Path  # the file to place in the session (original or drift-corrected)
    crop: tuple[int, int, int, int]
    audio_offset_s: float


def place_file(src: Path, dst: Path, media: str) -> str:
    """Hard link (`media == "link"`, falling back to a copy across file systems) or copy; returns
    what was done, for the report."""
    if media == "link":
        return link_or_copy(src, dst)
    shutil.copyfile(src, dst)
    return "copy"


def write_drift_corrected(track: Path, dst: Path, drift_ppm: float) -> None:
    """`track` resampled so that one second of it lasts one second of video: the lag then stays at
    the track's offset over the whole call (lag = offset + drift * track time, README)."""
    import soundfile as sf

    wave = decode_audio(track, sample_rate=CORRECTED_RATE)
    stretch = 1.0 + drift_ppm * 1e-6
    n_out = int(np.floor(wave.size * stretch))
    pos = np.arange(n_out, dtype=np.float64) / stretch  # track sample read at each output (video) sample
    corrected = np.interp(pos, np.arange(wave.size), wave.astype(np.float64)).astype(np.float32)
    with atomic_path(dst) as tmp:
        sf.write(tmp, corrected, CORRECTED_RATE, format="FLAC", subtype="PCM_24")


def cut_video(src: Path, dst: Path, start_s: float, end_s: float) -> None:
    """Frames of `src` from `start_s` to `end_s` re-encoded (H.264), without audio: a layout's own
    video for a split session (input seeking is frame-accurate when transcoding)."""
    from pipeline.sample.encoders import BITEXACT_ARGS, video_codec_args

    with atomic_path(dst) as tmp:
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-protocol_whitelist", "file",
               "-ss", f"{start_s:.6f}", "-i", f"file:{src.resolve()}", "-t", f"{end_s - start_s:.6f}",
               "-map", "0:v:0", *video_codec_args(), *BITEXACT_ARGS, "-an", "-f", "mp4", str(tmp)]
        done = subprocess.run(cmd, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg could not cut {src} at {start_s:g}-{end_s:g} s: "
                               f"{done.stderr.decode(errors='replace')[-500:]}")


def participants_csv(video_name: str, rows: Sequence[ParticipantRow], audio_names: dict[str, str]) -> str:
    """participants.csv text: one row per person, all on the shared gallery video."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*PARTICIPANTS_REQUIRED, *PARTICIPANTS_CROP, "audio_offset_s"])
    for row in rows:
        writer.writerow([row.participant_id, video_name, audio_names[row.participant_id], *row.crop,
                         f"{row.audio_offset_s:.6f}"])
    return buf.getvalue()


def write_session(session_dir: Path, video: Path, rows: Sequence[ParticipantRow], report: dict[str, Any],
                  media: str, cut: tuple[float, float] | None = None) -> dict[str, str]:
    """The session folder, whole or not at all; returns how each medium got there."""
    placed: dict[str, str] = {}
    with atomic_folder(session_dir) as stage:
        if cut is None:
            video_name = "video" + video.suffix.lower()
            placed[video_name] = place_file(video, stage / video_name, media)
        else:
            video_name = "video.mp4"
            cut_video(video, stage / video_name, *cut)
            placed[video_name] = f"cut {cut[0]:.3f}-{cut[1]:.3f} s"
        audio_names = {}
        for row in rows:
            name = f"audio_{row.participant_id}{row.track.suffix.lower()}"
            placed[name] = place_file(row.track, stage / name, media)
            audio_names[row.participant_id] = name
        write_text_atomic(stage / "participants.csv", participants_csv(video_name, rows, audio_names))
        write_json_atomic(stage / REPORT_FILE, {**report, "placed": placed})
    return placed
