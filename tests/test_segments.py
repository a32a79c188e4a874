"""Listener segment cutting on the 80 ms grid, and invalid-head-frame filtering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import SessionConfig
from pipeline.conversation.segments import cut_listener_segments, drop_invalid_segments
from schemas.conventions import HEAD_HOP_S


def floor_df(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["holder_id", "start_s", "end_s"]).astype(
        {"start_s": "float64", "end_s": "float64"}
    )


def cut(length_s: float, start_s: float = 0.0, **kw) -> pd.DataFrame:
    return cut_listener_segments(
        floor_df([("A", start_s, start_s + length_s)]), ["A", "B"], session_id="s1", **kw
    )


def test_columns_and_types():
    seg = cut(8.0)
    assert list(seg.columns) == [
        "segment_id",
        "session_id",
        "listener_id",
        "speaker_id",
        "start_s",
        "end_s",
        "n_frames",
        "stretch_id",
        "overlap_extra",
    ]
    assert seg["n_frames"].dtype == "int64" and seg["overlap_extra"].dtype == bool
    assert seg["stretch_id"].tolist() == ["s1~B~0000000"] and not seg["overlap_extra"].any()
    assert seg.loc[0, ["segment_id", "session_id", "listener_id", "speaker_id"]].tolist() == [
        "s1~B~0000000",
        "s1",
        "B",
        "A",
    ]


@pytest.mark.parametrize(
    ("length_s", "expected_frames"),
    [
        (5.9, []),
        (6.0, [75]),
        (8.0, [100]),
        (11.0, [137]),  # 11 s is 137.5 frames: snapped down to 10.96 s
        (11.5, [137]),  # two pieces would be < 6 s: one 11 s (137-frame) piece, remainder dropped
        (13.0, [81, 81]),  # two of ~6.5 s
        (25.0, [104, 104, 104]),
        (23.0, [96, 96, 95]),  # 287 frames -> 3 near-equal pieces, longer ones first
    ],
)
def test_piece_lengths(length_s, expected_frames):
    seg = cut(length_s)
    assert seg["n_frames"].tolist() == expected_frames
    assert (seg["n_frames"] >= 75).all() and (seg["n_frames"] <= 137).all()
    if len(seg):  # consecutive, no gaps
        assert np.allclose(seg["start_s"].iloc[1:].to_numpy(), seg["end_s"].iloc[:-1].to_numpy())
        assert seg["start_s"].iloc[0] == 0.0


def test_frame_grid_alignment_without_float_drift():
    seg = cut(20.0, start_s=1234.05)  # start snaps up to frame 15426 (1234.08 s)
    frames_start = seg["start_s"].to_numpy() / HEAD_HOP_S
    assert np.allclose(frames_start, np.round(frames_start), atol=1e-6)
    assert seg["start_s"].iloc[0] == pytest.approx(1234.08)
    assert seg["segment_id"].iloc[0] == "s1~B~0015426"
    assert seg["end_s"].iloc[-1] <= 1254.05 + 1e-9
    n = np.round((seg["end_s"] - seg["start_s"]) / HEAD_HOP_S).astype(int)
    assert (n == seg["n_frames"]).all()
    # a floor exactly on the grid keeps its bounds (3 * 0.08 is not 0.24 in floats)
    on_grid = cut(6.0, start_s=0.24)
    assert on_grid[["start_s", "end_s", "n_frames"]].values.tolist() == [[0.24, 6.24, 75]]


def test_three_participants_and_speaker_not_listener():
    fl = floor_df([("A", 0.0, 7.0), ("B", 7.0, 20.0)])
    seg = cut_listener_segments(fl, ["A", "B", "C"], session_id="s9")
    assert sorted(set(zip(seg["listener_id"], seg["speaker_id"], strict=True))) == [
        ("A", "B"),
        ("B", "A"),
        ("C", "A"),
        ("C", "B"),
    ]
    assert (seg["listener_id"] != seg["speaker_id"]).all()
    assert seg["segment_id"].is_unique


def test_deterministic_and_row_order_independent():
    fl = floor_df([("A", 0.0, 13.3), ("B", 14.0, 40.1), ("A", 41.0, 47.5)])
    a = cut_listener_segments(fl, ["A", "B"], session_id="x")
    b = cut_listener_segments(fl.iloc[::-1].reset_index(drop=True), ["B", "A"], session_id="x")
    pd.testing.assert_frame_equal(a, b)
    assert a["segment_id"].is_unique


def test_unknown_holder_is_an_error():
    with pytest.raises(ValueError, match="not in participant_ids"):
        cut_listener_segments(floor_df([("Z", 0.0, 8.0)]), ["A", "B"], session_id="s")


def head_table(n_frames: int, invalid=()) -> pd.DataFrame:
    valid = np.ones(n_frames, dtype=bool)
    valid[list(invalid)] = False
    return pd.DataFrame({"time_s": np.arange(n_frames) * HEAD_HOP_S, "valid": valid})


def test_drop_invalid_segments():
    seg = cut_listener_segments(
        floor_df([("A", 0.0, 8.0), ("B", 8.0, 16.0), ("A", 16.0, 24.0)]), ["A", "B"], session_id="s"
    )  # 3 segments of 100 frames: [0,100), [100,200), [200,300)
    heads = {
        "A": head_table(300, invalid=range(0, 10)),  # 10 % of segment 1: kept (not > 10 %)
        # 11 % of segment 2 invalid; table ends 11 frames before segment 3 ends: both dropped
        "B": head_table(289, invalid=range(100, 111)),
    }
    kept, dropped = drop_invalid_segments(seg, heads)
    assert kept["segment_id"].tolist() == ["s~B~0000000"]
    assert kept["invalid_frac"].tolist() == [pytest.approx(0.10)]
    assert dropped["segment_id"].tolist() == ["s~A~0000100", "s~B~0000200"]
    reasons = dropped.set_index("segment_id")["reason"]
    assert "speaker B: 11/100 frames invalid" in reasons["s~A~0000100"]
    assert "listener B: 11/100 frames invalid" in reasons["s~B~0000200"]
    assert dropped["invalid_frac"].tolist() == [pytest.approx(0.11), pytest.approx(0.11)]


def test_frames_beyond_table_and_missing_participant_are_invalid():
    seg = cut(8.0)  # frames [0, 100), listener B, speaker A
    kept, dropped = drop_invalid_segments(seg, {"A": head_table(100), "B": head_table(85)})
    assert kept.empty and dropped["invalid_frac"].tolist() == [pytest.approx(0.15)]
    kept, dropped = drop_invalid_segments(seg, {"A": head_table(100)})
    assert (
        dropped["invalid_frac"].tolist() == [1.0] and "listener B: no head features" in dropped["reason"][0]
    )
    kept, dropped = drop_invalid_segments(
        seg, {"A": head_table(100), "B": head_table(100)}, max_invalid_frac=0.0
    )
    assert len(kept) == 1 and kept["invalid_frac"].tolist() == [0.0] and dropped.empty


def test_ids_with_underscores_do_not_collide_across_sessions(tmp_path):
    """Session `k` with participant `x_L1` and session `k_x` with `L1` (legal ids) cut segments with
    distinct ids and stretch ids, and get through split assignment of the build."""
    from pipeline.config import BuildConfig
    from pipeline.conversation.segments import parse_segment_id
    from pipeline.conversation.session import build_session_segments
    from pipeline.dataset.assemble import SessionInputs, _split_segments

    n = 300  # 24 s of all-valid head frames and long enough audio
    head = pd.DataFrame({"time_s": np.arange(n) * HEAD_HOP_S, "valid": np.ones(n, bool)})
    sessions, tables = [("k", ["x_L1", "S"]), ("k_x", ["L1", "S2"])], []
    for sid, (listener, speaker) in sessions:
        turns = tmp_path / f"{sid}.csv"
        turns.write_text(f"participant_id,start_s,end_s\n{speaker},0,20\n")
        result = build_session_segments(sid, turns, [listener, speaker], {listener: head, speaker: head},
                                        {listener: 8 * n, speaker: 8 * n}, SessionConfig())
        assert len(result.segments) == 2
        path = tmp_path / f"{sid}.parquet"
        result.segments.assign(invalid_frac=0.0).to_parquet(path)
        tables.append(SessionInputs(sid, path, {}, {}))
    out = tmp_path / "dataset"
    out.mkdir()
    segments = _split_segments(tables, out, BuildConfig(), redraw=False)[0]
    assert len(segments) == 4 and segments["segment_id"].is_unique
    assert segments["stretch_id"].nunique() == 2
    # 20 s of floor = 250 frames, cut into two 125-frame pieces per session
    assert set(map(parse_segment_id, segments["segment_id"])) == {
        (sid, listener, frame, False) for sid, listener in (("k", "x_L1"), ("k_x", "L1")) for frame in (0, 125)}
