"""Corpus input contract: participants.csv validation names file, line and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.common.errors import CorpusLayoutError
from pipeline.corpus.layout import FileHashCache, discover_sessions, read_session, read_session_cached


def make_session(root: Path, sid: str, csv_text: str, turns: str = "turns.csv") -> Path:
    d = root / "sessions" / sid
    d.mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", "a.wav", "b.wav"):
        (d / name).write_bytes(b"x")
    (d / "participants.csv").write_text(csv_text)
    if turns:
        (d / turns).write_text("participant_id,start_s,end_s\nA,0,1\n")
    return d


GOOD = "participant_id,video,audio\nA,a.mp4,a.wav\nB,b.mp4,b.wav\n"


def test_reads_a_valid_session_with_crops_and_offsets(tmp_path):
    make_session(tmp_path, "s1", "participant_id,video,audio,crop_x,crop_y,crop_w,crop_h,audio_offset_s\n"
                 "A,a.mp4,a.wav,0,0,320,240,0.25\nB,a.mp4,b.wav,320,0,320,240,\n")
    spec = read_session(tmp_path, "s1")
    assert spec.participant_ids == ["A", "B"]
    assert spec.participant("A").crop == (0, 0, 320, 240) and spec.participant("A").audio_offset_s == 0.25
    assert spec.participant("B").audio_offset_s == 0.0
    assert spec.turns_path.name == "turns.csv"
    assert discover_sessions(tmp_path) == ["s1"]


@pytest.mark.parametrize(("csv_text", "match"), [
    ("participant_id,video\nA,a.mp4\n", r"participants.csv \(line 1\): missing column"),
    ("participant_id,video,audio\nA,a.mp4,a.wav\nA,b.mp4,b.wav\n", "listed twice"),
    ("participant_id,video,audio\nA/x,a.mp4,a.wav\nB,b.mp4,b.wav\n", r"line 2\): unsafe participant id"),
    ("participant_id,video,audio\nA,a.mp4,a.wav\nB,nothere.mp4,b.wav\n", r"line 3\): media file 'nothere.mp4'"),
    ("participant_id,video,audio\nA,../a.mp4,a.wav\nB,b.mp4,b.wav\n", "must be relative"),
    ("participant_id,video,audio,crop_x,crop_y,crop_w,crop_h\nA,a.mp4,a.wav,0,0,-5,10\nB,b.mp4,b.wav,,,,\n",
     "crop must be whole pixels"),
    ("participant_id,video,audio,audio_offset_s\nA,a.mp4,a.wav,soon\nB,b.mp4,b.wav,0\n", "expected a number"),
    ("participant_id,video,audio\nA,a.mp4,a.wav\n", "at least two participants"),
])
def test_bad_participants_csv(tmp_path, csv_text, match):
    make_session(tmp_path, "s1", csv_text)
    with pytest.raises(CorpusLayoutError, match=match):
        read_session(tmp_path, "s1")


def test_exactly_one_annotation_and_safe_session_ids(tmp_path):
    d = make_session(tmp_path, "s1", GOOD)
    (d / "turns.eaf").write_text("<x/>")
    with pytest.raises(CorpusLayoutError, match="exactly one of"):
        read_session(tmp_path, "s1")
    make_session(tmp_path, "s2", GOOD, turns="")
    with pytest.raises(CorpusLayoutError, match="found none"):
        read_session(tmp_path, "s2")
    make_session(tmp_path, "bad id", GOOD)
    with pytest.raises(CorpusLayoutError, match="unsafe session id"):
        read_session(tmp_path, "bad id")


def test_missing_sessions_folder(tmp_path):
    with pytest.raises(CorpusLayoutError, match="sessions/"):
        discover_sessions(tmp_path)


def test_hash_cache_reuses_and_notices_changes(tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"one")
    cache = FileHashCache(tmp_path / "cache.json")
    first = cache.sha256(f)
    cache.save()
    again = FileHashCache(tmp_path / "cache.json")
    assert again.sha256(f) == first
    f.write_bytes(b"two!")
    assert again.sha256(f) != first


def test_session_layout_is_parsed_once_until_it_changes(tmp_path):
    make_session(tmp_path, "s1", GOOD)
    first = read_session_cached(tmp_path, "s1")
    assert read_session_cached(tmp_path, "s1") is first  # the planner and every task share one parse
    (tmp_path / "sessions" / "s1" / "participants.csv").write_text(GOOD.replace("B,b.mp4", "Bee,b.mp4"))
    assert read_session_cached(tmp_path, "s1").participant_ids == ["A", "Bee"]
    (tmp_path / "sessions" / "s1" / "turns.csv").rename(tmp_path / "sessions" / "s1" / "turns.TextGrid")
    assert read_session_cached(tmp_path, "s1").turns_path.name == "turns.TextGrid"  # folder changed
    (tmp_path / "sessions" / "s1" / "participants.csv").unlink()
    with pytest.raises(CorpusLayoutError, match="missing participants.csv"):
        read_session_cached(tmp_path, "s1")
