"""Reading the corpus input contract (defined in `schemas/inputs.py`): one folder per session.

    <corpus>/sessions/<session_id>/
        participants.csv   participant_id,video,audio[,crop_x,crop_y,crop_w,crop_h][,audio_offset_s]
        turns.csv | turns.eaf | turns.TextGrid   (at most one; none: automatic turns from the audio)
        <media files>      paths in participants.csv are relative to the session folder

`participant_id` names a person and is stable across sessions. `crop_*` is the pixel rectangle
of this participant's tile when several people share one gallery-view video. `audio_offset_s`
is the video time at which the audio file's first sample plays (default 0).
Session and participant ids must be safe file-name tokens (letters, digits, `._-`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.common.errors import CorpusLayoutError, quote_input
from pipeline.common.fsutil import sha256_file, write_json_atomic
from schemas.inputs import PARTICIPANTS_CROP as CROP_COLUMNS
from schemas.inputs import PARTICIPANTS_OPTIONAL as OPTIONAL_COLUMNS
from schemas.inputs import PARTICIPANTS_REQUIRED as REQUIRED_COLUMNS
from schemas.inputs import SAFE_ID, TURN_FILES

log = logging.getLogger(__name__)

# Media are opened by path, never through a list that names other files: ffmpeg follows playlists
# and concat lists to anything they name, so such inputs are refused by name and by content.
PLAYLIST_SUFFIXES = (".m3u", ".m3u8", ".pls", ".ffconcat", ".sdp", ".txt", ".xspf")
HLS_TAGS = (b"#EXTM3U", b"#EXT-X-")  # anywhere in the first bytes
LIST_HEADERS = (b"ffconcat version", b"[playlist]", b"<?xml")  # at the start
SNIFF_BYTES = 4096
MAX_AUDIO_OFFSET_S = 3600.0  # |audio_offset_s| bound: larger values are typos that would allocate GiB of silence


@dataclass(frozen=True)
class ParticipantEntry:
    participant_id: str
    video: Path
    audio: Path
    crop: tuple[int, int, int, int] | None = None
    audio_offset_s: float = 0.0


@dataclass(frozen=True)
class SessionSpec:
    session_id: str
    root: Path
    participants: tuple[ParticipantEntry, ...]
    turns_path: Path | None  # None: no turns file, turns are derived from each participant's audio

    @property
    def automatic_turns(self) -> bool:
        return self.turns_path is None

    @property
    def participant_ids(self) -> list[str]:
        return [p.participant_id for p in self.participants]

    def participant(self, participant_id: str) -> ParticipantEntry:
        return next(p for p in self.participants if p.participant_id == participant_id)


def check_safe_id(value: str, what: str, path: Path, where: str | None = None) -> str:
    if not SAFE_ID.match(value or "") or value in {".", ".."}:
        raise CorpusLayoutError(path, f"unsafe {what} {value!r}: expected letters, digits, '.', '_' or '-' "
                                "(no path separators or spaces, at most 128 characters)", where)
    return value


def discover_sessions(corpus: str | Path) -> list[str]:
    """Session folder names, sorted; unsafe names are returned too so they get quarantined.

    Hidden entries and anything that is no folder are not sessions: they are skipped with a warning
    naming each (`skipped_entries`, also listed in the data card).
    """
    root = Path(corpus) / "sessions"
    if not root.is_dir():
        raise CorpusLayoutError(root, "corpus has no 'sessions/' folder (expected <corpus>/sessions/<session_id>/)")
    skipped = skipped_entries(corpus)
    if skipped:
        named = "; ".join(f"{quote_input(e['name'])}: {e['reason']}" for e in skipped[:SKIPPED_LOGGED])
        more = f"; and {len(skipped) - SKIPPED_LOGGED} more (listed in the data card)" \
            if len(skipped) > SKIPPED_LOGGED else ""
        log.warning("%s: skipped %d entr%s that are not session folders: %s%s", root, len(skipped),
                    "y" if len(skipped) == 1 else "ies", named, more)
    return sorted(p.name for p in root.iterdir() if _is_session_folder(p))


SKIPPED_LOGGED = 10  # entries named in the warning; the data card lists all


def _is_session_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def skipped_entries(corpus: str | Path) -> list[dict[str, str]]:
    """`{"name", "reason"}` of every entry of `<corpus>/sessions/` that is not read as a session, sorted."""
    root = Path(corpus) / "sessions"
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if _is_session_folder(path):
            continue
        if path.name.startswith("."):
            what = "folder" if path.is_dir() else "file"
            reason = f"hidden {what} (name starts with '.'): not read; if it is a session, rename it"
        elif path.is_symlink() and not path.exists():
            reason = "a link that points nowhere, not a session folder"
        else:
            reason = "a file, not a session folder"
        out.append({"name": path.name, "reason": reason})
    return out


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every symbolic link resolved, lies inside `root` (also resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _check_inside_corpus(path: Path, corpus: Path, what: str, report: Path, where: str | None = None) -> None:
    """Containment by resolved path: a symbolic link may point anywhere inside the corpus, never out of it."""
    if not _inside(path, corpus):
        raise CorpusLayoutError(report, f"{what} resolves outside the corpus ({path.resolve()}); symbolic links "
                                f"must stay inside {corpus.resolve()}", where)


def _check_not_playlist(path: Path, value: str, csv_path: Path, where: str) -> None:
    """Refuse playlists and concat lists (by suffix and by content, e.g. playlist text saved as .mp4)."""
    refuse = f"media file {quote_input(value)} is a playlist or file list, not media"
    if path.suffix.lower() in PLAYLIST_SUFFIXES:
        raise CorpusLayoutError(csv_path, f"{refuse} (suffix {path.suffix}); name the media file itself", where)
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(LIST_HEADERS) or any(tag in head for tag in HLS_TAGS):
        raise CorpusLayoutError(csv_path, f"{refuse} (its content is playlist text); lists may name files "
                                "outside the corpus, so they are refused", where)


def _resolve_media(session_dir: Path, value: str, csv_path: Path, where: str, corpus: Path) -> Path:
    if not value:
        raise CorpusLayoutError(csv_path, "empty media path", where)
    rel = Path(value)
    if rel.is_absolute() or ".." in rel.parts:
        raise CorpusLayoutError(csv_path, f"media path {quote_input(value)} must be relative to the session folder",
                                where)
    path = session_dir / rel
    if not path.is_file():
        raise CorpusLayoutError(csv_path, f"media file {quote_input(value)} not found in {session_dir}", where)
    _check_inside_corpus(path, corpus, f"media file {quote_input(value)}", csv_path, where)
    _check_not_playlist(path, value, csv_path, where)
    return path


def _participants_text(csv_path: Path) -> str:
    """participants.csv as text: UTF-8 (with or without BOM) or UTF-16 with BOM; anything else is refused
    with the line and byte that cannot be decoded."""
    data = csv_path.read_bytes()
    encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CorpusLayoutError(csv_path, f"not {encoding.upper().replace('-SIG', '')} text: byte {exc.start} "
                                f"(0x{data[exc.start]:02x}) cannot be decoded; save the file as UTF-8",
                                f"line {line}") from None


def _parse_float(raw: str, column: str, csv_path: Path, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise CorpusLayoutError(csv_path, f"column {column}: expected a number, got {raw!r}", where) from None
    if not math.isfinite(value):
        raise CorpusLayoutError(csv_path, f"column {column}: expected a finite number, got {raw!r}", where)
    return value


def _csv_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line number, row)]) of participants.csv; CSV syntax errors name the line."""
    with io.StringIO(_participants_text(csv_path), newline="") as f:
        reader = csv.DictReader(f)
        try:
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [(reader.line_num, row) for row in reader]
        except csv.Error as exc:  # e.g. a field over the csv module's size limit, a NUL byte
            raise CorpusLayoutError(csv_path, f"not valid CSV: {exc}", f"line {reader.reader.line_num}") from None
    return header, rows


def _check_header(header: list[str], csv_path: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CorpusLayoutError(csv_path, f"missing column(s) {missing}; header is "
                                f"{quote_input(','.join(header))}", "line 1")
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise CorpusLayoutError(csv_path, f"unknown column(s) {quote_input(','.join(unknown))}; allowed: "
                                f"{list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}", "line 1")


def _participant_entry(raw: dict, where: str, csv_path: Path, session_dir: Path, corpus: Path) -> ParticipantEntry:
    """One row of participants.csv, checked: id, crop rectangle, audio offset, media inside the corpus."""
    row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
    pid = check_safe_id(row["participant_id"], "participant id", csv_path, where)
    crop = None
    crop_values = [row.get(c, "") for c in CROP_COLUMNS]
    if any(crop_values):
        if not all(crop_values):
            raise CorpusLayoutError(csv_path, "crop needs all of crop_x,crop_y,crop_w,crop_h", where)
        nums = [_parse_float(v, c, csv_path, where) for v, c in zip(crop_values, CROP_COLUMNS, strict=True)]
        if any(n != int(n) for n in nums) or nums[0] < 0 or nums[1] < 0 or nums[2] <= 0 or nums[3] <= 0:
            raise CorpusLayoutError(csv_path, f"crop must be whole pixels with x,y >= 0 and w,h > 0, "
                                    f"got {crop_values}", where)
        crop = tuple(int(n) for n in nums)
    offset = _parse_float(row["audio_offset_s"], "audio_offset_s", csv_path, where) \
        if row.get("audio_offset_s") else 0.0
    if abs(offset) > MAX_AUDIO_OFFSET_S:
        raise CorpusLayoutError(csv_path, f"audio_offset_s {offset:g} s: expected at most "
                                f"{MAX_AUDIO_OFFSET_S:g} s either way", where)
    return ParticipantEntry(participant_id=pid, video=_resolve_media(session_dir, row["video"], csv_path, where, corpus),
                            audio=_resolve_media(session_dir, row["audio"], csv_path, where, corpus),
                            crop=crop, audio_offset_s=offset)


def read_session(corpus: str | Path, session_id: str) -> SessionSpec:
    """Parse and validate one session folder; raise CorpusLayoutError naming file and line."""
    corpus = Path(corpus)
    session_dir = corpus / "sessions" / session_id
    check_safe_id(session_id, "session id", session_dir)
    _check_inside_corpus(session_dir, corpus, "session folder", session_dir)
    csv_path = session_dir / "participants.csv"
    if not csv_path.is_file():
        raise CorpusLayoutError(csv_path, "missing participants.csv (columns participant_id,video,audio)")
    _check_inside_corpus(csv_path, corpus, "participants.csv", csv_path)
    header, rows = _csv_rows(csv_path)
    _check_header(header, csv_path)
    entries = [_participant_entry(raw, f"line {lineno}", csv_path, session_dir, corpus) for lineno, raw in rows]
    ids = [e.participant_id for e in entries]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CorpusLayoutError(csv_path, f"participant id(s) listed twice: {dupes}")
    if len(entries) < 2:
        raise CorpusLayoutError(csv_path, f"a session needs at least two participants, found {len(entries)}")
    _check_distinct_views(entries, csv_path)
    turn_files = [session_dir / n for n in TURN_FILES if (session_dir / n).is_file()]
    if len(turn_files) > 1:
        raise CorpusLayoutError(session_dir, f"expected at most one of {list(TURN_FILES)}, found "
                                f"{[p.name for p in turn_files]}: remove all but the one to use")
    if not turn_files:  # turns are derived from each participant's own audio during the build
        return SessionSpec(session_id, session_dir, tuple(entries), None)
    _check_inside_corpus(turn_files[0], corpus, turn_files[0].name, turn_files[0])
    return SessionSpec(session_id, session_dir, tuple(entries), turn_files[0])


def _check_distinct_views(entries: list[ParticipantEntry], csv_path: Path) -> None:
    """Two participants on the same video need different tiles: the same picture for listener and
    speaker would make the speaker's head the listener's target."""
    seen: dict[tuple, str] = {}
    for e in entries:
        view = (str(e.video.resolve()), e.crop)
        if view in seen:
            tile = f"the same tile {e.crop}" if e.crop else "no crop"
            raise CorpusLayoutError(csv_path, f"participants {seen[view]} and {e.participant_id} use the same video "
                                    f"with {tile}: give each participant their own video or tile (crop_x..crop_h)")
        seen[view] = e.participant_id


def read_session_cached(corpus: str | Path, session_id: str) -> SessionSpec:
    """`read_session`, parsed once per process while participants.csv and the session folder are unchanged.

    The planner and every recording task of a build need the same session; the cache key is the
    file's size and mtime plus the folder's mtime (which changes when files are added, removed or
    renamed), so an edited session is read afresh. Errors are not cached.
    """
    session_dir = Path(corpus) / "sessions" / session_id
    try:
        csv_stat, dir_stat = os.stat(session_dir / "participants.csv"), os.stat(session_dir)
    except OSError:
        return read_session(corpus, session_id)  # raises the layout error naming the file
    return _read_session_once(str(corpus), session_id, csv_stat.st_size, csv_stat.st_mtime_ns, dir_stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _read_session_once(corpus: str, session_id: str, *stamp: int) -> SessionSpec:
    return read_session(corpus, session_id)


class FileHashCache:
    """sha256 of input files, cached by (path, size, mtime, ctime, inode) in a JSON file.

    Output paths encode input content hashes (so changed media produce new outputs); re-hashing hours
    of video on every `luigi` invocation would cost minutes, so unchanged files reuse their stored hash.
    The change time and inode are part of the stamp because a user cannot set them: content replaced
    with the same size and modification time (`cp -p`, `rsync -t`) is hashed again. `rehash=True`
    (`--rehash`) trusts no stamp and hashes every file once in this process, for file systems
    whose time stamps cannot be trusted.
    """

    def __init__(self, cache_path: str | Path, *, rehash: bool = False):
        self.cache_path = Path(cache_path)
        self.rehash = rehash
        self._lock = threading.Lock()
        self._hashed_here: set[str] = set()
        try:
            self._entries: dict[str, list] = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            self._entries = {}
        self._dirty = False

    def sha256(self, path: str | Path) -> str:
        path = Path(path).resolve()
        st = os.stat(path)
        key = str(path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        with self._lock:
            hit = self._entries.get(key)
            trusted = not self.rehash or key in self._hashed_here
            if hit and trusted and hit[:-1] == stamp:
                return hit[-1]
        digest = sha256_file(path)
        with self._lock:
            self._entries[key] = [*stamp, digest]
            self._hashed_here.add(key)
            self._dirty = True
        return digest

    def save(self) -> None:
        with self._lock:
            if self._dirty:
                write_json_atomic(self.cache_path, self._entries)
                self._dirty = False
