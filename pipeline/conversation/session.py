"""One session from parsed inputs to listener segments: turns -> floor -> segments -> validity.

`process_session` is the per-session step of a build: it takes the session's parsed layout and the
records of its per-recording features, and writes the segment tables plus a `SessionRecord`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.errors import AnnotationError, InputError, MediaError
from pipeline.common.fsutil import atomic_path, write_json_atomic
from pipeline.config import SessionConfig
from pipeline.conversation.annotations import read_turns
from pipeline.conversation.floor import classify_bids, derive_floor, find_backchannels, talk_table
from pipeline.conversation.segments import cut_listener_segments, drop_invalid_segments, listener_stretches
from pipeline.conversation.turns_stage import AutoTurnsRecord
from pipeline.corpus.layout import ParticipantEntry, SessionSpec
from schemas.conventions import FBANK_FRAMES_PER_HEAD, HEAD_HOP_S
from schemas.records import RecordingRecord, Rejection, SessionRecord
from schemas.tables import TALK_SCHEMA, validate_talk

log = logging.getLogger(__name__)

# why a cut segment was dropped (the `reason` of the dropped table; invalid-head reasons start with INVALID_HEAD)
QUARANTINED = "participant media quarantined"
AUDIO_SHORT = "speaker audio does not cover the segment"
INVALID_HEAD = "invalid head frames"


@dataclass
class SessionSegments:
    segments: pd.DataFrame  # kept segments (segment_id, session_id, listener_id, speaker_id, ...)
    dropped: pd.DataFrame  # segment rows with a `reason`
    stats: dict
    talk: pd.DataFrame  # every annotated talk span with its kind (talk | backchannel)


def build_session_segments(session_id: str, turns_path: str | Path, all_participant_ids: list[str],
                           head_tables: Mapping[str, pd.DataFrame], fbank_frames: Mapping[str, int],
                           cfg: SessionConfig, audio_start_s: Mapping[str, float] | None = None) -> SessionSegments:
    """Cut listener segments for the participants whose head and audio features both exist.

    `head_tables` maps participant id -> head feature table (12.5 fps, `time_s`, `valid`);
    `fbank_frames` maps participant id -> number of FBank frames of their audio, `audio_start_s` the
    video time their audio starts playing (a positive `audio_offset_s`; before it the FBank is padding).
    Segments need the listener's and the speaker's head and the speaker's speech over their whole span. Turns of
    participants whose media were quarantined still shape the floor, but such people cannot be the
    listener or speaker of a segment. An annotated id missing from participants.csv is an error.
    """
    participant_ids = sorted(head_tables)
    everyone = sorted(all_participant_ids)
    duration_s = max(float(len(t)) * HEAD_HOP_S for t in head_tables.values())
    turns = read_turns(turns_path, participant_ids=everyone, duration_s=duration_s)
    rules = dict(merge_gap_s=cfg.merge_gap_s, backchannel_max_s=cfg.backchannel_max_s,
                 floor_hold_s=cfg.floor_hold_s)
    floor = derive_floor(turns, everyone, **rules)
    backchannels = find_backchannels(turns, floor, participant_ids=everyone, **rules)
    bids = classify_bids(turns, everyone, **rules)
    interjections = pd.DataFrame([b[:3] for b in bids if not b[3]], columns=["participant_id", "start_s", "end_s"])
    cut = cut_listener_segments(floor, everyone, session_id=session_id, min_s=cfg.min_segment_s,
                                max_s=cfg.max_segment_s, interjections=interjections, rule=cfg.cut_rule,
                                stride_s=cfg.train_stride_s)
    usable = cut["listener_id"].isin(participant_ids) & cut["speaker_id"].isin(participant_ids)
    dropped_parts = [cut[~usable].assign(reason=QUARANTINED)]
    cut = cut[usable]
    end_frame = np.round(cut["end_s"].to_numpy() / HEAD_HOP_S).astype(int)
    starts = audio_start_s or {}
    has_audio = np.array([fbank_frames.get(s, 0) >= e * FBANK_FRAMES_PER_HEAD and t0 >= starts.get(s, 0.0) - 1e-9
                          for s, e, t0 in zip(cut["speaker_id"], end_frame, cut["start_s"], strict=True)], dtype=bool)
    dropped_parts.append(cut[~has_audio].assign(reason=AUDIO_SHORT))
    kept, dropped_invalid = drop_invalid_segments(cut[has_audio], head_tables,
                                                  max_invalid_frac=cfg.max_invalid_frac)
    dropped_parts.append(dropped_invalid)
    dropped = pd.concat([d for d in dropped_parts if len(d)], ignore_index=True) if any(
        len(d) for d in dropped_parts) else pd.DataFrame(columns=[*cut.columns, "reason"])
    talk = (turns["end_s"] - turns["start_s"]).groupby(turns["participant_id"]).sum()
    longest = max((f1 - f0 for *_, f0, f1 in listener_stretches(floor, everyone, interjections)), default=0)
    floor_time = (floor["end_s"] - floor["start_s"]).groupby(floor["holder_id"]).sum()
    stats = {
        "duration_s": duration_s,
        "n_turns": int(len(turns)),
        "n_backchannels": int(len(backchannels)),
        "talk_s": {k: float(v) for k, v in talk.items()},
        "floor_s": {k: float(v) for k, v in floor_time.items()},
        "unannotated_media_participants": sorted(set(participant_ids) - set(turns["participant_id"])),
        "participants_without_media": sorted(set(everyone) - set(participant_ids)),
        "n_segments": int((~kept["overlap_extra"]).sum()),
        "n_overlap_extra": int(kept["overlap_extra"].sum()),
        "n_stretches": int(cut["stretch_id"].nunique()),
        "longest_stretch_s": round(longest * HEAD_HOP_S, 3),
        "turns_end_s": float(turns["end_s"].max()) if len(turns) else 0.0,
        "n_dropped": int(len(dropped)),
        "dropped_reasons": {str(k): int(v) for k, v in dropped["reason"].value_counts().items()}
        if len(dropped) else {},
    }
    return SessionSegments(kept.reset_index(drop=True), dropped.reset_index(drop=True), stats,
                           talk_table(turns, bids))


def no_segment_problem(spec: SessionSpec, result: SessionSegments, heads: Mapping[str, pd.DataFrame],
                       fbank_frames: Mapping[str, int], quarantined: Mapping[str, Path],
                       cfg: SessionConfig) -> InputError:
    """Why a session gave no segment, naming the file to fix: the turn file when no listener stretch
    is long enough, else the media whose faults dropped every segment cut (all causes in the reason).

    `quarantined` maps a participant whose media were quarantined to the quarantined file.
    """
    stats, turns = result.stats, spec.turns_path
    dropped = result.dropped[~result.dropped["overlap_extra"].astype(bool)]  # count each stretch's tiling once
    if not stats["n_turns"]:
        return AnnotationError(turns, f"no talk annotated (no turns), so no listener stretch of >= "
                                      f"{cfg.min_segment_s:g} s and no segment")
    if dropped.empty:
        return AnnotationError(turns, f"no listener stretch of >= {cfg.min_segment_s:g} s: the longest is "
                                      f"{stats['longest_stretch_s']:g} s; the turns end at {stats['turns_end_s']:g} s",
                               f"t=0-{stats['turns_end_s']:g} s")
    causes = [*_quarantine_causes(dropped, quarantined), *_audio_causes(spec, dropped, fbank_frames),
              *_head_causes(spec, dropped, heads, stats["turns_end_s"])]
    if not causes:  # a drop reason without an explanation here: say it as recorded
        return AnnotationError(turns, f"all {len(dropped)} segment(s) cut from the turns were dropped: "
                                      + "; ".join(sorted(set(dropped["reason"]))))
    _, path, where, error, _ = max(causes, key=lambda c: c[0])  # the file behind most drops
    texts = "; ".join(c[4] for c in causes)
    return error(path, f"all {len(dropped)} segment(s) cut from the turns were dropped: {texts}", where or None)


Cause = tuple[int, Path, str, type[InputError], str]  # (segments dropped, file, where, error kind, text)


def _quarantine_causes(dropped: pd.DataFrame, quarantined: Mapping[str, Path]) -> list[Cause]:
    rows = dropped[dropped["reason"] == QUARANTINED]
    out = []
    for pid, path in sorted(quarantined.items()):
        n = int(((rows["listener_id"] == pid) | (rows["speaker_id"] == pid)).sum())
        if n:
            out.append((n, path, "", MediaError, f"{n} need {pid}, whose {path.name} was quarantined (see its row)"))
    return out


def _audio_causes(spec: SessionSpec, dropped: pd.DataFrame, fbank_frames: Mapping[str, int]) -> list[Cause]:
    rows = dropped[dropped["reason"] == AUDIO_SHORT]
    out = []
    for pid, group in rows.groupby("speaker_id", sort=True):
        entry = spec.participant(str(pid))
        audio_end = fbank_frames.get(str(pid), 0) * HEAD_HOP_S / FBANK_FRAMES_PER_HEAD
        audio_start = max(0.0, entry.audio_offset_s)
        span = f"{float(group['start_s'].min()):g}-{float(group['end_s'].max()):g} s"
        out.append((len(group), entry.audio, f"t={audio_start:.2f}-{audio_end:.2f} s", MediaError,
                    f"{len(group)} need speech of {pid} over {span} but audio {entry.audio.name} plays from "
                    f"{audio_start:.2f} s to {audio_end:.2f} s on the video timeline "
                    f"(audio_offset_s {entry.audio_offset_s:g})"))
    return out


def _head_causes(spec: SessionSpec, dropped: pd.DataFrame, heads: Mapping[str, pd.DataFrame],
                 turns_end_s: float) -> list[Cause]:
    """Per participant whose head frames are invalid in the dropped segments: the video ends too early,
    or the face is missing too often."""
    rows = dropped[dropped["reason"].str.startswith(INVALID_HEAD)]
    out = []
    for pid in sorted(set(rows["listener_id"]) | set(rows["speaker_id"])):
        mine = rows[(rows["listener_id"] == pid) | (rows["speaker_id"] == pid)]
        valid = heads[pid]["valid"].to_numpy(bool) if pid in heads else np.zeros(0, bool)
        frames = [k for a, b in zip(mine["start_s"], mine["end_s"], strict=True)
                  for k in range(int(round(a / HEAD_HOP_S)), int(round(b / HEAD_HOP_S)))]
        bad = sum(1 for k in frames if k >= len(valid) or not valid[k])
        if not bad:
            continue
        video, video_end = spec.participant(pid).video, len(valid) * HEAD_HOP_S
        if video_end < float(mine["end_s"].max()):
            where, text = f"t={video_end:.2f} s", (f"video {video.name} of {pid} ends at {video_end:.2f} s, "
                                                   f"the turns run to {turns_end_s:g} s")
        else:
            where, text = "", f"video {video.name} of {pid}: no usable face in {bad} of {len(frames)} head frames"
        out.append((len(mine), video, where, MediaError, f"{len(mine)} with {pid}: {text}"))
    return out


def _usable_tables(records: list[RecordingRecord]) -> dict[str, Path]:
    """participant id -> data file of the recordings that were not quarantined."""
    return {r.participant_id: r.data_file for r in records if r.ok}


def _audio_coverage_problem(entry: ParticipantEntry, video_s: float, audio_end_s: float, min_coverage: float) -> MediaError | None:
    """A participant's audio must play over most of their video: 0.1 s of audio for a 40 s call, or an
    offset that puts it after the video, is a wrong file, not a quiet participant."""
    start = max(0.0, entry.audio_offset_s)
    covered = max(0.0, min(audio_end_s, video_s) - start)
    if video_s <= 0 or covered >= min_coverage * video_s:
        return None
    return MediaError(entry.audio, f"audio {entry.audio.name} plays from {start:.2f} s to {audio_end_s:.2f} s on the "
                                   f"video timeline (audio_offset_s {entry.audio_offset_s:g}), {covered / video_s:.0%} "
                                   f"of the {video_s:.2f} s video {entry.video.name}; expected at least "
                                   f"{min_coverage:.0%} (--min-audio-coverage)", f"t={start:.2f}-{audio_end_s:.2f} s")


def _segments_or_problem(spec: SessionSpec, head_paths: dict[str, Path], fbank_paths: dict[str, Path],
                         cfg: SessionConfig) -> tuple[SessionSegments | None, InputError | None, str]:
    """`(segments, None, "")`, or `(None, why the session is quarantined, at which stage)`."""
    usable = sorted(set(head_paths) & set(fbank_paths))
    if len(usable) < 2:
        return None, MediaError(spec.root, f"fewer than two participants with usable video and audio "
                                           f"(usable: {usable or 'none'})"), "session"
    heads = {p: pd.read_parquet(head_paths[p]) for p in usable}
    fbanks = {p: int(np.load(fbank_paths[p], mmap_mode="r").shape[0]) for p in usable}
    for pid in usable:
        problem = _audio_coverage_problem(spec.participant(pid), len(heads[pid]) * HEAD_HOP_S,
                                          fbanks[pid] * HEAD_HOP_S / FBANK_FRAMES_PER_HEAD, cfg.min_audio_coverage)
        if problem is not None:
            return None, problem, "session"
    try:
        result = build_session_segments(spec.session_id, spec.turns_path, spec.participant_ids, heads, fbanks, cfg,
                                        {p: max(0.0, spec.participant(p).audio_offset_s) for p in usable})
    except InputError as exc:
        return None, exc, "turns"
    if not result.stats["n_segments"]:  # nothing to learn from: quarantined, naming what to fix
        quarantined = {p: (spec.participant(p).audio if p in head_paths else spec.participant(p).video)
                       for p in spec.participant_ids if p not in usable}
        return None, no_segment_problem(spec, result, heads, fbanks, quarantined, cfg), "segments"
    return result, None, ""


def process_session(spec: SessionSpec, head: list[RecordingRecord], audio: list[RecordingRecord],
                    cfg: SessionConfig, out_record: str | Path, auto_turns: AutoTurnsRecord | None = None
                    ) -> SessionRecord:
    """Cut one session's listener segments and write `<out_record>` (JSON) plus its Parquet tables.

    A session without a turns file uses `auto_turns` (the automatic-turns stage's record). A session
    with fewer than two usable participants, with unusable turn annotations, whose automatic turns
    were rejected, or that yields no segment is rejected (recorded with the file to fix and the
    reason), never a crash.
    """
    out_record = Path(out_record)
    head_paths, fbank_paths = _usable_tables(head), _usable_tables(audio)
    usable = sorted(set(head_paths) & set(fbank_paths))
    tables = {"head_tables": {p: str(head_paths[p]) for p in usable},
              "fbank_tables": {p: str(fbank_paths[p]) for p in usable}}
    if spec.turns_path is None:
        if auto_turns is None:
            raise ValueError(f"session {spec.session_id} has no turns file: pass its automatic turns")
        if not auto_turns.ok:
            record = SessionRecord(spec.session_id, "rejected", **tables, rejection=auto_turns.rejection)
            write_json_atomic(out_record, record.to_dict())
            return record
        spec = replace(spec, turns_path=Path(auto_turns.turns_table))  # read like a human turns CSV
    result, problem, stage = _segments_or_problem(spec, head_paths, fbank_paths, cfg)
    if result is None:
        record = SessionRecord(spec.session_id, "rejected", **tables,
                               rejection=Rejection.from_error(problem, spec.session_id, stage=stage))
        log.warning("quarantined session %s (%s): %s", spec.session_id, stage, problem)
    else:
        segments_path = out_record.with_suffix(".parquet")
        with atomic_path(segments_path) as tmp:
            result.segments.to_parquet(tmp, index=False)
        dropped_path = out_record.with_suffix(".dropped.parquet")
        text_columns = {c: str for c in result.dropped.columns if result.dropped[c].dtype == object}
        with atomic_path(dropped_path) as tmp:
            result.dropped.astype(text_columns).to_parquet(tmp, index=False)
        talk_path = out_record.with_suffix(".talk.parquet")
        talk = validate_talk(pa.Table.from_pandas(result.talk, schema=TALK_SCHEMA, preserve_index=False),
                             str(talk_path))
        with atomic_path(talk_path) as tmp:
            pq.write_table(talk, tmp)
        record = SessionRecord(spec.session_id, "ok", **tables, segments_table=str(segments_path),
                               dropped_table=str(dropped_path), talk_table=str(talk_path), stats=result.stats)
    write_json_atomic(out_record, record.to_dict())
    return record
