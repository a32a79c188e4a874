"""Typed build records: one rejection constructor, JSON round trips in the on-disk shape."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.common.errors import AnnotationError, NoFaceError
from schemas.records import RecordingKey, RecordingRecord, Rejection, SessionRecord
from schemas.tables import REJECTED_COLUMNS


def test_rejection_from_an_input_error_is_a_rejected_csv_row():
    exc = NoFaceError(Path("/c/s1/a.mp4"), "no face in 98% of frames", "frames 0-120")
    row = Rejection.from_error(exc, "s1", "A", stage="head")
    assert list(row.to_dict()) == REJECTED_COLUMNS
    assert row.to_dict() == {"session_id": "s1", "participant_id": "A", "stage": "head", "kind": "no_face",
                             "file": "/c/s1/a.mp4", "where": "frames 0-120", "reason": "no face in 98% of frames"}
    assert row.to_record()["status"] == "rejected"
    assert Rejection.from_dict(row.to_record()) == row


def test_recording_record_reads_ok_and_rejected_records(tmp_path):
    ok = {"status": "ok", "stage": "head", "session_id": "s.1", "participant_id": "P.1", "table": "P.1-x.parquet",
          "n_frames": 10}
    (tmp_path / "ok.json").write_text(json.dumps(ok))
    rec = RecordingRecord.read(tmp_path / "ok.json")
    assert rec.ok and rec.data_file == tmp_path / "P.1-x.parquet" and rec.details == {"n_frames": 10}
    bad = Rejection.from_error(AnnotationError("t.csv", "unknown id ZZ", "line 3"), "s.1", "P.1", "audio")
    (tmp_path / "bad.json").write_text(json.dumps(bad.to_record()))
    rec = RecordingRecord.read(tmp_path / "bad.json")
    assert not rec.ok and rec.rejection == bad and rec.details == {}
    assert str(RecordingKey.parse("s.1/P.1/abc")) == "s.1/P.1/abc"


def test_session_record_keeps_the_json_shape():
    ok = {"session_id": "s1", "status": "ok", "head_tables": {"A": "/w/a.parquet"}, "fbank_tables": {"A": "/w/a.npy"},
          "segments_table": "/w/s1.parquet", "dropped_table": "/w/s1.dropped.parquet",
          "talk_table": "/w/s1.talk.parquet", "stats": {"n_turns": 3}}
    assert SessionRecord.from_dict(ok).to_dict() == ok
    rejected = {"session_id": "s1", "status": "rejected", "head_tables": {}, "fbank_tables": {}, "stage": "turns",
                "participant_id": "", "kind": "annotation", "file": "/c/s1/turns.csv", "where": "line 2",
                "reason": "end before start"}
    record = SessionRecord.from_dict(rejected)
    assert record.to_dict() == rejected and record.rejection.stage == "turns" and not record.ok
