"""The 90-hour dry run (bench/paper_scale.py) at 0.02x: the synthetic corpus has the paper's structure
and every stage runs on the real pipeline code, so the bench cannot rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.conversation.annotations import read_turns
from pipeline.conversation.floor import find_backchannels
from schemas.conventions import HEAD_HOP_S

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("paper_scale", REPO / "bench" / "paper_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_scale"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(bench, tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("paper_scale")
    return work, {stage: bench.run_stage(stage, 0.02, work) for stage in bench.STAGES}


def test_corpus_has_the_papers_shape(bench):
    people, sessions = bench.corpus_shape(1.0)
    assert (people, sessions) == (24, 180)
    assert sessions * bench.PAPER["session_s"] / 3600 == 90.0
    drawn = bench.synth_sessions(1.0)
    assert len(drawn) == 180 and all(len(set(s.participants)) == 2 for s in drawn)
    taking_part = pd.Series([p for s in drawn for p in s.participants]).value_counts()
    assert len(taking_part) == 24 and taking_part.max() - taking_part.min() <= 1  # 360 seats over 24 people


def test_turns_have_a_floor_structure(bench, tmp_path):
    session = bench.synth_sessions(0.02)[0]
    path = tmp_path / "turns.csv"
    rows = bench.session_turns(session)
    path.write_text("participant_id,start_s,end_s\n" + "".join(f"{p},{s},{e}\n" for p, s, e in rows))
    turns = read_turns(path, participant_ids=session.participants, duration_s=bench.PAPER["session_s"])
    talk = (turns["end_s"] - turns["start_s"]).groupby(turns["participant_id"]).sum()
    assert set(talk.index) == set(session.participants)
    assert talk.min() > 0.25 * talk.sum()  # both people hold the floor for a good part of the call
    assert len(find_backchannels(turns, participant_ids=session.participants)) > 50  # aizuchi in the pauses


def test_head_table_is_a_head_stage_table(bench):
    session = bench.synth_sessions(0.02)[0]
    table = bench.head_table(session, session.participants[0])
    assert len(table) == round(bench.PAPER["session_s"] / HEAD_HOP_S)
    assert {"time_s", "valid", "interpolated", *bench.HEAD_FEATURE_COLUMNS} <= set(table.columns)
    assert 0.9 < table["valid"].mean() < 1.0  # short face dropouts only


def test_every_stage_runs_on_the_dry_run_corpus(dry_run):
    work, rows = dry_run
    assert rows["plan"]["sessions"] == 4 and rows["plan"]["rejected"] == 0
    segments = pd.concat([pd.read_parquet(p) for p in sorted((work / "segments").glob("*.parquet"))])
    assert rows["segment"]["segments"] == int((~segments["overlap_extra"]).sum()) > 100
    seconds = segments["end_s"] - segments["start_s"]
    assert seconds.min() >= 6.0 - 1e-9 and seconds.max() <= 11.0 + 1e-9  # the paper's 6-11 s rule
    split = pd.read_parquet(work / "split_segments.parquet")
    assert sum(rows["split"][s] for s in ("train", "valid", "test")) == len(split) == rows["index"]["rows"]
    for name in ("valid", "test"):  # listener-disjoint (paper §IV)
        assert not set(split.loc[split["split"] == name, "listener_id"]) & set(
            split.loc[split["split"] == "train", "listener_id"])
    assert not split.loc[split["split"] != "train", "overlap_extra"].any()
    assert rows["noop"]["all_complete"] is True
    assert all(row["peak_mb"] > 0 and row["cpu_s"] >= 0 for row in rows.values())


def test_copied_segment_tables_match_segmenting(bench, dry_run, tmp_path):
    """Above 3x the bench copies a repeated conversation's segments: they must be what segmenting gives."""
    work, _ = dry_run
    first = bench.synth_sessions(0.02)[0]
    again = bench.SyntheticSession("s99999", ("P900", "P901"), first.seed)
    bench.write_corpus([again], tmp_path / "corpus")
    bench.stage_segment(tmp_path, [again], bench.Clock())
    made = pd.read_parquet(tmp_path / "segments" / "s99999.parquet")
    copied = bench._copy_segments(pd.read_parquet(work / "segments" / f"{first.session_id}.parquet"), first, again)
    pd.testing.assert_frame_equal(made, copied)


def test_report_fits_growth_exponents(bench):
    assert bench.growth_exponent([1, 10], [2.0, 20.0]) == pytest.approx(1.0)
    assert bench.growth_exponent([1, 10], [2.0, 200.0]) == pytest.approx(2.0)
    rows = [{"stage": "split", "scale": s, "cpu_s": t, "peak_mb": 100.0} for s, t in ((0.1, 1), (1, 1), (10, 10))]
    table = bench.report(rows, [0.1, 1, 10])
    assert "| split | 1.00 | 1.00 | 10.00 | 1.00 | 100 |" in table
    json.dumps(rows)


def test_bisection_lookups_agree_with_full_scans(bench, tmp_path):
    """The floor and bid lookups bisect rows in time order and scan rows in any other order: on a
    paper-like session both must name the same holders and kinds."""
    from pipeline.conversation.floor import classify_bids, derive_floor, talk_table

    session = bench.synth_sessions(0.02)[1]
    path = tmp_path / "turns.csv"
    path.write_text("participant_id,start_s,end_s\n" + "".join(f"{p},{s},{e}\n" for p, s, e in
                                                                bench.session_turns(session)))
    turns, people = read_turns(path), list(session.participants)
    floor = derive_floor(turns, people)
    shuffled = floor.sample(frac=1, random_state=0).reset_index(drop=True)
    ordered = find_backchannels(turns, floor, participant_ids=people)
    assert (ordered["holder_id"] != "").mean() > 0.9
    pd.testing.assert_frame_equal(ordered, find_backchannels(turns, shuffled, participant_ids=people))
    bids = classify_bids(turns, people)
    reversed_bids = bids[::-1]  # out of start order: the scan
    pd.testing.assert_frame_equal(talk_table(turns, bids), talk_table(turns, reversed_bids))
