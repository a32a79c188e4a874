"""What a build says about data it cannot use: an empty split in the aggregate step (fails under
--strict before anything is written) and entries of sessions/ that are not sessions, in the data card."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.config import BuildConfig, DatasetConfig
from pipeline.conversation.segments import cut_listener_segments
from pipeline.dataset.assemble import SessionInputs, _split_segments
from pipeline.dataset.datacard import write_data_card
from pipeline.dataset.splits import SPLITS, SplitError

# 5 sessions, 6 people, every session links two of them: one chain A-B-C-D-E-F
CHAIN = [("s1", "A", "B"), ("s2", "B", "C"), ("s3", "C", "D"), ("s4", "D", "E"), ("s5", "E", "F")]


def chain_sessions(tmp_path) -> list[SessionInputs]:
    sessions = []
    for sid, a, b in CHAIN:
        floor = pd.DataFrame({"holder_id": [a, b], "start_s": [0.0, 20.0], "end_s": [20.0, 40.0]})
        seg = cut_listener_segments(floor, [a, b], session_id=sid).assign(invalid_frac=0.0)
        seg.to_parquet(tmp_path / f"{sid}.parquet")
        sessions.append(SessionInputs(sid, tmp_path / f"{sid}.parquet", {}, {}))
    return sessions


def test_person_disjoint_chain_fails_under_strict_before_writing(tmp_path):
    sessions = chain_sessions(tmp_path)
    cfg = BuildConfig(dataset=DatasetConfig(disjoint="person"))
    out = tmp_path / "dataset"
    out.mkdir()
    with pytest.raises(SplitError, match=r"--strict: --disjoint person: valid and test are empty: the 6 "
                                         r"participants form 1 group"):
        _split_segments(sessions, out, cfg, redraw=False, strict=True)
    assert not (out / "splits_registry.json").exists()
    segments, result = _split_segments(sessions, out, cfg, redraw=False)
    assert set(segments["split"]) == {"train"}
    (warning,) = result.report["warnings"]
    assert "{A, B, C, D, E, F} via s1 (A, B), s2 (B, C), s3 (C, D), s4 (D, E), s5 (E, F)" in warning
    assert "without s1, s2, s3, s4, s5 it would split up" in warning  # a chain: every session is a link


def test_data_card_names_the_empty_split_cause_and_skipped_entries(tmp_path):
    sessions = chain_sessions(tmp_path)
    cfg = BuildConfig(dataset=DatasetConfig(disjoint="person"))
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    segments, result = _split_segments(sessions, dataset, cfg, redraw=False)
    segments.to_parquet(dataset / "segments.parquet")
    per_split = {s: segments[segments["split"] == s] for s in SPLITS}
    summary = {
        "build_id": "b1", "corpus": str(tmp_path), "config": cfg.to_dict(), "inputs": {}, "sessions": {},
        "rejected": [], "ssl": {}, "split_report": result.report,
        "segments_per_split": {s: len(d) for s, d in per_split.items()},
        "hours_per_split": {s: float((d["end_s"] - d["start_s"]).sum()) / 3600 for s, d in per_split.items()},
        "listeners_per_split": {s: sorted(d["listener_id"].unique()) for s, d in per_split.items()},
        "skipped_entries": [{"name": ".s6", "reason": "hidden folder (name starts with '.'): not read"},
                            {"name": "a|b.txt", "reason": "a file, not a session folder"}],
    }
    card = write_data_card(dataset, summary).read_text()
    summary_part = card.split("## Features")[0]
    assert "**Empty split.** --disjoint person: valid and test are empty" in summary_part
    quarantine = card.split("## Quarantined inputs")[1].split("## Configuration")[0]
    assert "None." in quarantine and "not read as sessions" in quarantine
    assert "| '.s6' | hidden folder" in quarantine and "| 'a/b.txt' | a file, not a session folder |" in quarantine
