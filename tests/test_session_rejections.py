"""A session that yields no segment is quarantined with the file to fix and the condition that removed
its segments (the real session step on hand-made feature tables: all-valid heads, FBank of chosen length)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SessionConfig
from pipeline.conversation.session import process_session
from pipeline.corpus.layout import ParticipantEntry, SessionSpec
from schemas.conventions import HEAD_HOP_S
from schemas.records import RecordingRecord, SessionRecord


def make_session(tmp_path: Path, turns: str, *, video_s: dict[str, float], audio_s: dict[str, float],
                 offsets: dict[str, float] | None = None, rejected_audio: tuple[str, ...] = ()) -> SessionRecord:
    """Write participants' head tables / FBank arrays (100 frames per s) of the given lengths and run the
    session step."""
    root = tmp_path / "sessions" / "s1"
    root.mkdir(parents=True)
    (root / "turns.csv").write_text(turns)
    entries, head, audio = [], [], []
    for pid in sorted(video_s):
        entries.append(ParticipantEntry(pid, root / f"{pid}.mp4", root / f"{pid}.wav",
                                        audio_offset_s=(offsets or {}).get(pid, 0.0)))
        n = int(round(video_s[pid] / HEAD_HOP_S))
        pd.DataFrame({"time_s": np.arange(n) * HEAD_HOP_S, "valid": np.ones(n, bool)}).to_parquet(
            tmp_path / f"{pid}.parquet")
        np.save(tmp_path / f"{pid}.npy", np.zeros((int(round(audio_s[pid] * 100)), 80), np.float32))
        head.append(RecordingRecord("ok", "head", "s1", pid, f"{pid}.parquet", folder=tmp_path))
        audio.append(RecordingRecord("rejected", "audio", "s1", pid) if pid in rejected_audio else
                     RecordingRecord("ok", "audio", "s1", pid, f"{pid}.npy", folder=tmp_path))
    spec = SessionSpec("s1", root, tuple(entries), root / "turns.csv")
    return process_session(spec, head, audio, SessionConfig(), tmp_path / "s1.json")


A_TALKS_20_S = "participant_id,start_s,end_s\nA,0,20\n"


def test_a_normal_session_is_kept(tmp_path):
    record = make_session(tmp_path, A_TALKS_20_S, video_s={"A": 24, "B": 24}, audio_s={"A": 24, "B": 24})
    assert record.ok and record.stats["n_segments"] == 2 and record.stats["longest_stretch_s"] == 20.0


def test_header_only_turns_name_the_turn_file(tmp_path):
    record = make_session(tmp_path, "participant_id,start_s,end_s\n", video_s={"A": 24, "B": 24},
                          audio_s={"A": 24, "B": 24})
    rej = record.rejection
    assert not record.ok and rej is not None and rej.stage == "segments" and rej.kind == "annotation"
    assert Path(rej.file).name == "turns.csv" and "no talk annotated" in rej.reason


def test_no_stretch_long_enough_says_how_long_the_longest_is(tmp_path):
    turns = "participant_id,start_s,end_s\nA,0,4\nB,4.5,9\nA,9.5,13\n"
    record = make_session(tmp_path, turns, video_s={"A": 24, "B": 24}, audio_s={"A": 24, "B": 24})
    rej = record.rejection
    assert rej is not None and Path(rej.file).name == "turns.csv"
    assert "no listener stretch of >= 6 s" in rej.reason and "the turns end at 13 s" in rej.reason
    # the longest: A listens while B holds the floor from 4.5 s to 9.5 s (across the 0.5 s pause),
    # snapped inward to the 80 ms grid: frames 57..118, 61 frames = 4.88 s
    assert "the longest is 4.88 s" in rej.reason


@pytest.mark.parametrize(("audio_s", "offset", "audio_start", "audio_end", "share"),
                         [(0.1, 0.0, "0.00", "0.10", "0%"), (20.0, -30.0, "0.00", "0.00", "0%"),
                          (20.0, 25.0, "25.00", "45.00", "0%"), (10.0, 0.0, "0.00", "10.00", "42%")])
def test_audio_that_misses_most_of_the_video_names_the_audio(tmp_path, audio_s, offset, audio_start, audio_end,
                                                            share):
    """0.1 s of audio, an offset that moves the whole 20 s file before the video starts (the audio stage
    then keeps no sample: 0 FBank frames), one that starts it after the video ended (before its start
    the FBank is padding), or 10 s of a 24 s call: a wrong or truncated file, not a quiet participant."""
    fbank_s = max(audio_s + offset, 0.0)
    record = make_session(tmp_path, A_TALKS_20_S, video_s={"A": 24, "B": 24}, audio_s={"A": fbank_s, "B": 24},
                          offsets={"A": offset})
    rej = record.rejection
    assert rej is not None and rej.stage == "session" and rej.kind == "media"
    assert Path(rej.file).name == "A.wav" and rej.where == f"t={audio_start}-{audio_end} s"
    assert (f"audio A.wav plays from {audio_start} s to {audio_end} s on the video timeline "
            f"(audio_offset_s {offset:g}), {share} of the 24.00 s video A.mp4; expected at least 50%") in rej.reason


def test_segments_beyond_the_end_of_the_audio_name_the_audio(tmp_path):
    """A's audio plays 15 of 24 s (enough coverage), but A talks to 20 s: both segments need speech after
    its end."""
    record = make_session(tmp_path, A_TALKS_20_S, video_s={"A": 24, "B": 24}, audio_s={"A": 15, "B": 24},
                          offsets={"A": 3.0})
    rej = record.rejection
    assert rej is not None and rej.stage == "segments" and Path(rej.file).name == "A.wav"
    assert "all 2 segment(s)" in rej.reason and "audio A.wav plays from 3.00 s to 15.00 s" in rej.reason


def test_video_shorter_than_the_turns_names_the_video(tmp_path):
    record = make_session(tmp_path, A_TALKS_20_S, video_s={"A": 24, "B": 4.8}, audio_s={"A": 24, "B": 24})
    rej = record.rejection
    assert rej is not None and Path(rej.file).name == "B.mp4" and rej.where == "t=4.80 s"
    assert "video B.mp4 of B ends at 4.80 s, the turns run to 20 s" in rej.reason


def test_segments_needing_quarantined_media_name_that_file(tmp_path):
    """C's audio was quarantined: C holds the only floor, so no segment is usable; A and B have usable media."""
    turns = "participant_id,start_s,end_s\nC,0,20\n"
    record = make_session(tmp_path, turns, video_s={"A": 24, "B": 24, "C": 24},
                          audio_s={"A": 24, "B": 24, "C": 24}, rejected_audio=("C",))
    rej = record.rejection
    assert rej is not None and Path(rej.file).name == "C.wav"
    assert "need C, whose C.wav was quarantined" in rej.reason


def test_rejection_survives_the_record_round_trip(tmp_path):
    make_session(tmp_path, "participant_id,start_s,end_s\n", video_s={"A": 24, "B": 24}, audio_s={"A": 24, "B": 24})
    record = SessionRecord.read(tmp_path / "s1.json")
    assert record.rejection is not None and record.rejection.stage == "segments"
