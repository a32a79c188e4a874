"""What a Zoom recording folder holds, read from Zoom's own file names (README "From a Zoom recording").

- Local recording: ``zoom_0.mp4`` or ``video<digits>.mp4`` (the view the recorder chose), the mixed
  ``audio_only.m4a`` / ``audio<digits>.m4a``, and with "Record a separate audio file for each
  participant" the subfolder ``Audio Record/`` with ``audio<Name><digits>.m4a`` per person.
- Cloud download: ``*_gvo_*.mp4`` / ``gallery*.mp4`` (gallery view), ``*_avo_*.mp4`` /
  ``active_speaker*.mp4`` (speaker view), ``*.m4a`` (mixed audio only), ``*.vtt``; no per-person audio.

The build needs each participant's own voice and one gallery video, so a folder without per-person
tracks or with a speaker view only is refused here, by name, before any decoding. Only regular files
inside the folder are taken (a link pointing out of it is refused), so an import reads nothing the
user did not hand it.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.errors import InputError
from schemas.inputs import SAFE_ID

TRACK_FOLDER = "audio record"  # Zoom writes "Audio Record"; matched case-insensitively
LOCAL_VIDEO = re.compile(r"^(zoom_\d+|video\d+)\.mp4$", re.IGNORECASE)
GALLERY_VIDEO = re.compile(r"(_gvo_|^gallery).*\.mp4$", re.IGNORECASE)
SPEAKER_VIDEO = re.compile(r"(_avo_|^active_?speaker).*\.mp4$", re.IGNORECASE)
MIXED_AUDIO = re.compile(r"^(audio_only|audio\d+)\.m4a$", re.IGNORECASE)
TRACK_NAME = re.compile(r"^audio(?P<name>.+?)(?P<digits>\d+)\.(m4a|aac|wav|mp3)$", re.IGNORECASE)
ZOOM_FOLDER_NAME = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2})\.(\d{2})\.(\d{2}) .*?(\d{9,11})$")


class ImportRefused(InputError):
    """The Zoom folder cannot become a session without a decision the importer will not guess."""

    kind = "import"


@dataclass(frozen=True)
class ZoomFiles:
    folder: Path
    kind: str  # "local" or "cloud"
    video: Path
    mixed_audio: Path | None
    tracks: dict[str, Path]  # Zoom name (from the file name) -> the person's own track
    other_files: tuple[str, ...] = field(default_factory=tuple)  # seen and not used (chat, playlists, ...)


def _regular_files(folder: Path) -> list[Path]:
    """Regular files directly in `folder`, sorted; a link resolving outside the Zoom folder is refused."""
    root = folder.resolve()
    out = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        real = path.resolve()
        if path.is_symlink() and not real.is_relative_to(root):
            raise ImportRefused(path, f"a link to {real}, outside the Zoom folder: copy the file in instead")
        if real.is_file():
            out.append(path)
    return out


def find_zoom_files(folder: str | Path, *, video: str = "") -> ZoomFiles:
    """The recording's video, mixed audio and per-person tracks, or ImportRefused saying what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImportRefused(folder, "not a folder: expected a Zoom recording folder (zoom_0.mp4, Audio Record/ ...)")
    top = _regular_files(folder)
    names = [p.name for p in top]
    track_dir = next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == TRACK_FOLDER), None)
    tracks = _tracks(track_dir) if track_dir is not None else {}
    local = [p for p in top if LOCAL_VIDEO.match(p.name)]
    gallery = [p for p in top if GALLERY_VIDEO.search(p.name)]
    speaker = [p for p in top if SPEAKER_VIDEO.search(p.name)]
    kind = "cloud" if (gallery or speaker) and not local else "local"
    candidates = local or gallery
    if video:
        chosen = [p for p in top if p.name == video]
        if not chosen:
            raise ImportRefused(folder, f"--video {video!r}: no such file in the folder (videos: "
                                        f"{[p.name for p in local + gallery + speaker]})")
        if SPEAKER_VIDEO.search(video):
            raise ImportRefused(chosen[0], _SPEAKER_VIEW)
        candidates = chosen
    if not candidates:
        if speaker:
            raise ImportRefused(speaker[0], _SPEAKER_VIEW)
        raise ImportRefused(folder, f"no Zoom video (zoom_0.mp4, video<digits>.mp4, *_gvo_*.mp4 or gallery*.mp4) "
                                    f"among {names}")
    if len(candidates) > 1:
        raise ImportRefused(folder, f"{len(candidates)} videos ({[p.name for p in candidates]}): a paused and "
                                    "resumed recording is one session per file; choose one with --video")
    if not tracks:
        raise ImportRefused(folder, "no per-participant audio ('Audio Record/audio<Name><digits>.m4a'): the "
                                    "build needs each person's own voice; record locally with 'Record a "
                                    "separate audio file for each participant'")
    mixed = [p for p in top if MIXED_AUDIO.match(p.name)] or [p for p in top if p.suffix.lower() == ".m4a"]
    used = {candidates[0].name, *(p.name for p in mixed[:1])}
    return ZoomFiles(folder, kind, candidates[0], mixed[0] if mixed else None, tracks,
                     tuple(n for n in names if n not in used))


_SPEAKER_VIEW = ("speaker (active-speaker) view: the tiles swap with whoever talks, so no crop follows one "
                 "person; record in gallery view (or download the cloud recording's gallery view, *_gvo_*.mp4)")


def _tracks(track_dir: Path) -> dict[str, Path]:
    """Zoom name -> track file; two files for one name (someone rejoined) are refused."""
    out: dict[str, Path] = {}
    for path in _regular_files(track_dir):
        m = TRACK_NAME.match(path.name)
        if not m:
            continue
        name = m.group("name")
        if name in out:
            raise ImportRefused(track_dir, f"two tracks for {name!r} ({out[name].name}, {path.name}): the person "
                                           "left and rejoined; join the files or import with one of them moved out")
        out[name] = path
    return out


def default_session_id(folder: Path) -> str:
    """``zoom-<YYYYMMDD>-<HHMMSS>-<meeting id>`` from Zoom's folder name, else the name made safe."""
    m = ZOOM_FOLDER_NAME.match(folder.name)
    if m:
        y, mo, d, h, mi, s, meeting = m.groups()
        return f"zoom-{y}{mo}{d}-{h}{mi}{s}-{meeting}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", _ascii(folder.name)).strip("-.")[:120]
    if not safe or not SAFE_ID.match(safe):
        raise ImportRefused(folder, "cannot make a session id from the folder name; pass --session-id")
    return safe


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def participant_ids(zoom_names: list[str], table: str | Path | None) -> dict[str, str]:
    """Zoom name -> participant id: the --participants table where it names the person, else the
    name's letters and digits (``AkiraSato``). Names that give no safe id, or two people with one id,
    are refused with the table's format."""
    mapping = read_participant_table(Path(table)) if table else {}
    out = {}
    for name in zoom_names:
        pid = mapping.get(name) or mapping.get(_ascii(name)) or "".join(ch for ch in _ascii(name) if ch.isalnum())
        if not pid or not SAFE_ID.match(pid):
            raise ImportRefused(table or name, f"Zoom name {name!r} gives no safe participant id: add a row "
                                               f"'{name},<id>' to a --participants table (columns zoom_name,participant_id)")
        out[name] = pid
    ids = list(out.values())
    if len(set(ids)) != len(ids):
        raise ImportRefused(table or "participants", f"two Zoom names map to one participant id: {out}")
    return out


def read_participant_table(path: Path) -> dict[str, str]:
    """zoom_name -> participant_id from a CSV with those two columns (UTF-8, optional BOM)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportRefused(path, f"cannot read the participants table: {exc}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0][:2]] != ["zoom_name", "participant_id"]:
        raise ImportRefused(path, "expected the header 'zoom_name,participant_id'", "line 1")
    out = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != 2 or not SAFE_ID.match(row[1].strip()):
            raise ImportRefused(path, f"expected '<zoom name>,<id>' with a safe id (letters, digits, '._-'), "
                                      f"got {row!r}", f"line {line}")
        out[row[0].strip()] = row[1].strip()
    return out
