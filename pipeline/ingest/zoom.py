"""From a Zoom recording folder to a corpus session with no hand work (README "From a Zoom recording").

`import_zoom` runs the decisions in the order their evidence needs:

1. files, by Zoom's own names (`zoom_files`): the gallery video, the mixed audio, one own track per
   person, participant ids from the track names (or the --participants table);
2. alignment (`alignment`): each track's offset and drift against the video's mixed audio;
3. tiles (`tiles`): the gallery layout(s) over the call; a change is refused or split;
4. who is who (`identity`): which tile moves its mouth with which track, with a confidence;
5. the session folder(s) (`session_writer`) and ``import_report.json`` with every decision and its
   evidence, so a reviewer sees why each crop and offset was chosen.

Nothing is guessed: each step that lacks evidence stops with `ImportRefused` (or the step's own
error) saying what to pass by hand. Importing the same folder again with the same settings is a
no-op; the record of each import is kept in ``<corpus>/imports/<session_id>.json``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.common.errors import InputError, MediaError
from pipeline.common.fsutil import file_entry, write_csv_atomic, write_json_atomic
from pipeline.common.logs import progress
from pipeline.common.settings import SettingError
from pipeline.corpus.layout import MAX_AUDIO_OFFSET_S
from pipeline.ingest.alignment import TrackAlignment, align_tracks
from pipeline.ingest.config import ImportConfig
from pipeline.ingest.session_writer import REPORT_FILE, ParticipantRow, write_drift_corrected, write_session
from pipeline.ingest.zoom_files import (
    ImportRefused,
    ZoomFiles,
    default_session_id,
    find_zoom_files,
    participant_ids,
)

log = logging.getLogger(__name__)

IMPORTER_VERSION = 1
IMPORTS_FOLDER = "imports"
REFUSED_FILE = "refused.csv"
N_PARTICIPANTS = 2  # the build cuts listener segments of two-party calls
IDENTITY_ESCALATIONS = 2  # a doubtful who-is-who is retried on 2x, then 4x the stretches where the call allows


@dataclass(frozen=True)
class ImportResult:
    session_ids: tuple[str, ...]
    record: Path  # <corpus>/imports/<session_id>.json
    report: dict[str, Any]
    already_imported: bool = False


def import_record_path(corpus: str | Path, session_id: str) -> Path:
    return Path(corpus) / IMPORTS_FOLDER / f"{session_id}.json"


def import_zoom(zoom_dir: str | Path, corpus: str | Path, cfg: ImportConfig | None = None) -> ImportResult:
    """Write ``<corpus>/sessions/<id>/`` (one per layout when splitting) from a Zoom folder."""
    cfg = cfg or ImportConfig()
    corpus = Path(corpus)
    files = find_zoom_files(zoom_dir, video=cfg.video)
    session_id = cfg.session_id or default_session_id(files.folder)
    ids = participant_ids(sorted(files.tracks), cfg.participants or None)
    if len(ids) != N_PARTICIPANTS:
        raise ImportRefused(files.folder / "Audio Record", f"{len(ids)} participant tracks ({sorted(files.tracks)}): "
                                                           f"the pipeline takes two-party calls")
    source = _source_entries(files)
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items() if k != "overwrite"}
    earlier = _earlier_import(corpus, session_id, source, settings, cfg.overwrite)
    if earlier is not None:
        return earlier
    steps = progress(total=4, desc=f"import {session_id}", unit="step")
    alignments = _align(files, ids)
    steps.update()
    spans = _layouts(files, cfg)
    steps.update()
    report: dict[str, Any] = {
        "importer_version": IMPORTER_VERSION, "session_id": session_id, "settings": settings,
        "source": {"folder": str(files.folder.resolve()), "kind": files.kind, "files": source,
                   "video": files.video.name, "tracks": {ids[n]: p.name for n, p in files.tracks.items()},
                   "zoom_names": {ids[n]: n for n in files.tracks}, "unused": list(files.other_files)},
        "alignment": {pid: a.to_dict() for pid, a in alignments.items()},
        "layouts": [_span_dict(s) for s in spans], "warnings": [], "turns": "none: automatic turns in the build",
    }
    with tempfile.TemporaryDirectory(prefix=".import-", dir=_scratch(corpus)) as scratch:
        tracks = _tracks_on_video_clock(files, ids, alignments, cfg, Path(scratch), report)
        assignments = [_assign(files, span, tracks, cfg) for span in spans]
        report["identity"] = assignments
        steps.update()
        written = _write_sessions(corpus, session_id, files, spans, assignments, tracks, cfg, report)
        steps.update()
    steps.close()
    report["sessions"] = written
    record = import_record_path(corpus, session_id)
    write_json_atomic(record, report)
    log.info("imported %s -> %s", files.folder, ", ".join(f"sessions/{s}" for s in written))
    return ImportResult(tuple(written), record, report)


def import_zoom_folders(zoom_dirs: list[Path], corpus: str | Path,
                        cfg: ImportConfig | None = None) -> tuple[list[ImportResult], list[dict[str, str]]]:
    """Import each folder; a refused one is logged and listed in ``<corpus>/imports/refused.csv``
    (folder, kind, reason) and never stops the others."""
    cfg = cfg or ImportConfig()
    if cfg.session_id and len(zoom_dirs) > 1:
        raise SettingError("--session-id names one session: give one Zoom folder with it")
    done, refused = [], []
    for folder in progress(zoom_dirs, desc="Zoom folders", unit="folder", total=len(zoom_dirs)):
        try:
            done.append(import_zoom(folder, corpus, cfg))
        except InputError as exc:
            log.error("%s: import refused: %s", folder, exc)
            refused.append({"zoom_dir": str(folder), "kind": exc.kind, "reason": str(exc)})
    table = Path(corpus) / IMPORTS_FOLDER / REFUSED_FILE
    if refused:
        write_csv_atomic(table, refused, input_text=True)  # reasons quote file names
    else:
        table.unlink(missing_ok=True)
    return done, refused


def _scratch(corpus: Path) -> Path:
    """Temporary files live in the corpus (same file system: hard links into the session work)."""
    corpus.mkdir(parents=True, exist_ok=True)
    return corpus


def _source_entries(files: ZoomFiles) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file the import reads: the fingerprint a re-import compares."""
    used = [files.video, *([files.mixed_audio] if files.mixed_audio else []), *files.tracks.values()]
    return {p.relative_to(files.folder).as_posix(): file_entry(p) for p in used}


def _earlier_import(corpus: Path, session_id: str, source: dict, settings: dict, overwrite: bool) -> ImportResult | None:
    """The earlier result when this folder was imported with these settings; refusal when the id is
    taken by another import or by a hand-made session (unless overwrite). A session folder whose
    import was killed before its record was written still carries its own report."""
    record = import_record_path(corpus, session_id)
    session_dir = corpus / "sessions" / session_id
    if not session_dir.exists() and not record.exists():
        return None
    old = _read_json(record) or _read_json(session_dir / REPORT_FILE)
    same = old is not None and old.get("source", {}).get("files") == source and old.get("settings") == settings \
        and old.get("importer_version") == IMPORTER_VERSION and record.exists() \
        and all((corpus / "sessions" / s).is_dir() for s in old.get("sessions", []))
    if same:
        log.info("%s: already imported with these settings (%s)", session_id, record)
        return ImportResult(tuple(old["sessions"]), record, old, already_imported=True)
    if overwrite or (old is not None and old.get("source", {}).get("files") == source):
        return None  # our own earlier or unfinished import of this recording: redone
    what = "another recording" if old is not None else "a session not made by import-zoom"
    raise ImportRefused(session_dir, f"session id {session_id!r} is taken by {what}; pass another "
                                     "--session-id, or --overwrite to replace it")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _align(files: ZoomFiles, ids: dict[str, str]) -> dict[str, TrackAlignment]:
    """Each own track against the video's mixed audio (the video timeline by definition), or against
    the mixed audio file when the video has no audio stream."""
    names = sorted(files.tracks)
    try:
        results = align_tracks([files.tracks[n] for n in names], files.video)
    except MediaError as exc:
        if exc.path != str(files.video):
            raise  # a track that cannot be decoded: named by the error itself
        if files.mixed_audio is None:
            raise ImportRefused(files.video, "the video has no audio stream and there is no mixed audio "
                                             "(audio_only.m4a): nothing to align the tracks against") from None
        log.warning("%s has no usable audio stream: aligning against %s", files.video.name, files.mixed_audio.name)
        results = align_tracks([files.tracks[n] for n in names], files.mixed_audio)
    out = {}
    for name, result in zip(names, results, strict=True):
        result.require()
        log.info("%s: offset %+.3f s, drift %+.0f ppm (%.0f ms over the track)", files.tracks[name].name,
                 result.offset_s, result.drift_ppm, 1000 * (result.drift_over_track_s or 0.0))
        out[ids[name]] = result
    return out


def _layouts(files: ZoomFiles, cfg: ImportConfig) -> list[Any]:
    from pipeline.ingest.tiles import detect_layouts

    spans = detect_layouts(files.video, n_participants=N_PARTICIPANTS, face_model=cfg.face_model or None)
    if len(spans) > 1 and cfg.on_layout_change == "refuse":
        times = ", ".join(f"{s.start_s:.2f} s" for s in spans[1:])
        raise ImportRefused(files.video, f"the gallery layout changes at {times} ({len(spans)} layouts): crops "
                                         "would mix two layouts; pass --on-layout-change split for one session "
                                         "per layout")
    return spans


def _span_dict(span: Any) -> dict[str, Any]:
    return {"start_s": span.start_s, "end_s": span.end_s, "tiles": [list(t) for t in span.tiles],
            "evidence": span.evidence}


def _tracks_on_video_clock(files: ZoomFiles, ids: dict[str, str], alignments: dict[str, TrackAlignment],
                           cfg: ImportConfig, scratch: Path, report: dict[str, Any]) -> dict[str, tuple[Path, float]]:
    """participant id -> (track file, offset); a drifting track is resampled when --drift correct."""
    out = {}
    for name, path in files.tracks.items():
        pid = ids[name]
        a = alignments[pid]
        if a.drift_warning:
            drift_ms = 1000 * (a.drift_over_track_s or 0.0)
            if cfg.drift == "correct":
                corrected = scratch / f"{pid}.flac"
                write_drift_corrected(path, corrected, a.drift_ppm or 0.0)
                report["warnings"].append(f"{path.name}: drift {drift_ms:+.0f} ms over the call: corrected "
                                          f"({a.drift_ppm:+.0f} ppm), placed as FLAC on the video clock")
                path = corrected
            else:
                msg = f"{path.name}: drift {drift_ms:+.0f} ms over the call (more than one head frame), not corrected"
                log.warning("%s", msg)
                report["warnings"].append(msg)
        out[pid] = (path, float(a.offset_s or 0.0))
    return out


def _assign(files: ZoomFiles, span: Any, tracks: dict[str, tuple[Path, float]], cfg: ImportConfig) -> dict[str, Any]:
    """participant id -> tile index for one layout: --tile-order, or audio-visual synchrony."""
    if cfg.tile_order:
        if sorted(cfg.tile_order) != sorted(tracks):
            raise ImportRefused(files.folder, f"--tile-order {','.join(cfg.tile_order)}: expected each of "
                                              f"{sorted(tracks)} once")
        return {"tile_of": {pid: i for i, pid in enumerate(cfg.tile_order)}, "method": "--tile-order"}
    from pipeline.ingest.identity import IdentityError, IdentitySettings, assign_tiles, plan_stretches

    settings = IdentitySettings(min_confidence=cfg.min_identity_confidence)
    for _ in range(IDENTITY_ESCALATIONS + 1):
        result = assign_tiles(files.video, span.tiles, {p: t for p, (t, _) in tracks.items()},
                              {p: off for p, (_, off) in tracks.items()}, start_s=span.start_s, end_s=span.end_s,
                              settings=settings, face_model=cfg.face_model or None)
        if result.confident:
            return {"tile_of": dict(result.tile_of), "method": "audio-visual synchrony",
                    "confidence": result.confidence, "scores": result.scores, "evidence": result.evidence}
        more = replace(settings, analysis_s=2 * settings.analysis_s, n_stretches=2 * settings.n_stretches)
        if len(plan_stretches(span.start_s, span.end_s, more)) <= len(plan_stretches(span.start_s, span.end_s, settings)):
            break  # the call is too short to give more evidence
        log.info("who is who not confident (%.3f) on %d stretches: analysing %d", result.confidence,
                 settings.n_stretches, more.n_stretches)
        settings = more
    stretches = plan_stretches(span.start_s, span.end_s, settings)
    scores = "; ".join(f"{p}: [{', '.join(f'{s:+.3f}' for s in row)}]" for p, row in result.scores.items())
    raise IdentityError(files.video, f"cannot tell which gallery tile is whom from lip-voice synchrony in "
                        f"t={span.start_s:.1f}-{span.end_s:.1f} s ({result.evidence.get('reason', '')}; confidence "
                        f"{result.confidence:.3f} < {cfg.min_identity_confidence} after {len(stretches)} stretches, "
                        f"{sum(b - a for a, b in stretches):.0f} s analysed); scores per tile {scores}. Give the "
                        "mapping by hand: --tile-order <participant ids in tile reading order>")


def _write_sessions(corpus: Path, session_id: str, files: ZoomFiles, spans: list[Any], assignments: list[dict],
                    tracks: dict[str, tuple[Path, float]], cfg: ImportConfig, report: dict[str, Any]) -> list[str]:
    """One session for one layout; `<id>-L1`, `<id>-L2` ... with their own video cut when split."""
    written = []
    for k, (span, assignment) in enumerate(zip(spans, assignments, strict=True), start=1):
        sid = session_id if len(spans) == 1 else f"{session_id}-L{k}"
        start = 0.0 if len(spans) == 1 else span.start_s
        rows = []
        for pid in sorted(tracks):
            path, offset = tracks[pid]
            offset -= start
            if abs(offset) > MAX_AUDIO_OFFSET_S:
                raise ImportRefused(path, f"audio offset {offset:+.1f} s in layout {k} is beyond the "
                                          f"{MAX_AUDIO_OFFSET_S:g} s the input contract takes")
            rows.append(ParticipantRow(pid, path, tuple(span.tiles[assignment["tile_of"][pid]]), offset))
        session_report = {**report, "session_id": sid, "layout_index": k - 1,
                          "time_range_s": [float(span.start_s), float(span.end_s)]}
        cut = None if len(spans) == 1 else (float(span.start_s), float(span.end_s))
        write_session(corpus / "sessions" / sid, files.video, rows, session_report, cfg.media, cut)
        written.append(sid)
    return written
