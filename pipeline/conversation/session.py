"""One session from parsed inputs to listener segments: turns -> floor -> segments -> validity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import SessionConfig
from pipeline.conversation.segments import cut_listener_segments, drop_invalid_segments
from pipeline.conversation.turns import derive_floor, find_backchannels, read_turns
from schemas.conventions import FBANK_FRAMES_PER_HEAD, HEAD_HOP_S


@dataclass
class SessionSegments:
    segments: pd.DataFrame  # kept segments (segment_id, session_id, listener_id, speaker_id, ...)
    dropped: pd.DataFrame  # segment rows with a `reason`
    stats: dict


def build_session_segments(session_id: str, turns_path: str | Path, all_participant_ids: list[str],
                           head_tables: Mapping[str, pd.DataFrame], fbank_frames: Mapping[str, int],
                           cfg: SessionConfig) -> SessionSegments:
    """Cut listener segments for the participants whose head and audio features both exist.

    `head_tables` maps participant id -> head feature table (12.5 fps, `time_s`, `valid`);
    `fbank_frames` maps participant id -> number of FBank frames of their audio. Segments need the
    listener's and the speaker's head and the speaker's speech over their whole span. Turns of
    participants whose media were quarantined still shape the floor, but such people cannot be the
    listener or speaker of a segment. An annotated id missing from participants.csv is an error.
    """
    participant_ids = sorted(head_tables)
    everyone = sorted(all_participant_ids)
    duration_s = max(float(len(t)) * HEAD_HOP_S for t in head_tables.values())
    turns = read_turns(turns_path, participant_ids=everyone, duration_s=duration_s)
    floor = derive_floor(turns, everyone, merge_gap_s=cfg.merge_gap_s, backchannel_max_s=cfg.backchannel_max_s)
    backchannels = find_backchannels(turns, floor, merge_gap_s=cfg.merge_gap_s,
                                     backchannel_max_s=cfg.backchannel_max_s)
    cut = cut_listener_segments(floor, everyone, session_id=session_id, min_s=cfg.min_segment_s,
                                max_s=cfg.max_segment_s)
    usable = cut["listener_id"].isin(participant_ids) & cut["speaker_id"].isin(participant_ids)
    dropped_parts = [cut[~usable].assign(reason="participant media quarantined")]
    cut = cut[usable]
    end_frame = np.round(cut["end_s"].to_numpy() / HEAD_HOP_S).astype(int)
    has_audio = np.array([fbank_frames.get(s, 0) >= e * FBANK_FRAMES_PER_HEAD
                          for s, e in zip(cut["speaker_id"], end_frame, strict=True)], dtype=bool)
    dropped_parts.append(cut[~has_audio].assign(reason="speaker audio shorter than segment"))
    kept, dropped_invalid = drop_invalid_segments(cut[has_audio], head_tables,
                                                  max_invalid_frac=cfg.max_invalid_frac)
    dropped_parts.append(dropped_invalid)
    dropped = pd.concat([d for d in dropped_parts if len(d)], ignore_index=True) if any(
        len(d) for d in dropped_parts) else pd.DataFrame(columns=[*cut.columns, "reason"])
    talk = (turns["end_s"] - turns["start_s"]).groupby(turns["participant_id"]).sum()
    floor_time = (floor["end_s"] - floor["start_s"]).groupby(floor["holder_id"]).sum()
    stats = {
        "duration_s": duration_s,
        "n_turns": int(len(turns)),
        "n_backchannels": int(len(backchannels)),
        "talk_s": {k: float(v) for k, v in talk.items()},
        "floor_s": {k: float(v) for k, v in floor_time.items()},
        "unannotated_media_participants": sorted(set(participant_ids) - set(turns["participant_id"])),
        "participants_without_media": sorted(set(everyone) - set(participant_ids)),
        "n_segments": int(len(kept)),
        "n_dropped": int(len(dropped)),
        "dropped_reasons": {str(k): int(v) for k, v in dropped["reason"].value_counts().items()}
        if len(dropped) else {},
    }
    return SessionSegments(kept.reset_index(drop=True), dropped.reset_index(drop=True), stats)
