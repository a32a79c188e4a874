"""Listener stretches on hand-made conversations of known structure: floors across pauses,
backchannels in pauses, interjections (overlapping or not) that end a stretch, cut rules, the
training overlap stride and the split rule for overlapping windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import BuildConfig, DatasetConfig, SessionConfig
from pipeline.conversation.segments import cut_listener_segments, span_frames, split_frames
from pipeline.conversation.session import build_session_segments
from pipeline.dataset.assemble import SessionInputs, _split_segments
from schemas.conventions import HEAD_HOP_S


def write_turns(path: Path, rows) -> Path:
    path.write_text("participant_id,start_s,end_s\n" + "".join(f"{p},{s},{e}\n" for p, s, e in rows))
    return path


def session(tmp_path: Path, rows, duration_s: float = 60.0, cfg: SessionConfig | None = None, sid: str = "s1"):
    """The real session step on all-valid head tables and long enough audio."""
    n = int(round(duration_s / HEAD_HOP_S))
    head = pd.DataFrame({"time_s": np.arange(n) * HEAD_HOP_S, "valid": np.ones(n, bool)})
    return build_session_segments(sid, write_turns(tmp_path / f"{sid}.csv", rows), ["A", "B"],
                                  {"A": head, "B": head}, {"A": 8 * n, "B": 8 * n}, cfg or SessionConfig())


def covered(seg: pd.DataFrame, listener: str) -> float:
    mine = seg[(seg["listener_id"] == listener) & ~seg["overlap_extra"]]
    return float((mine["end_s"] - mine["start_s"]).sum())


def monologue_with_pauses() -> list[tuple[str, float, float]]:
    """A talks 0-40.x s in 3 s phrases separated by pauses of 0.3-2 s; B says "un" in some pauses."""
    rows, t = [], 0.0
    for pause in ([0.3, 1.2, 0.8, 2.0, 0.6, 1.5, 0.4, 1.9, 1.0, 0.7]):
        rows.append(("A", round(t, 3), round(t + 3.0, 3)))
        if pause >= 1.0:
            rows.append(("B", round(t + 3.2, 3), round(t + 3.6, 3)))  # a 0.4 s "un" in the pause
        t += 3.0 + pause
    return rows


def test_monologue_with_pauses_is_one_listener_stretch(tmp_path):
    rows = monologue_with_pauses()
    end = rows[-1][2] if rows[-1][0] == "A" else rows[-2][2]
    result = session(tmp_path, rows)
    seg = result.segments
    assert set(seg["listener_id"]) == {"B"} and seg["stretch_id"].nunique() == 1
    # the whole monologue, snapped to the grid, is covered: no pause ends the floor
    assert covered(seg, "B") == pytest.approx(np.floor(end / HEAD_HOP_S + 1e-9) * HEAD_HOP_S)
    talk = result.talk
    assert set(talk.loc[talk["participant_id"] == "B", "kind"]) == {"backchannel"}
    assert set(talk.loc[talk["participant_id"] == "A", "kind"]) == {"talk"}


def test_floor_hold_ends_a_stretch_at_a_long_silence(tmp_path):
    rows = [("A", 0.0, 10.0), ("A", 14.0, 24.0)]  # a 4 s silence: longer than floor_hold_s (3 s)
    seg = session(tmp_path, rows).segments
    assert seg["stretch_id"].nunique() == 2 and covered(seg, "B") == pytest.approx(20.0)
    assert not ((seg["start_s"] < 14.0) & (seg["end_s"] > 10.0)).any()
    held = session(tmp_path, rows, cfg=SessionConfig(floor_hold_s=5.0)).segments
    assert held["stretch_id"].nunique() == 1 and covered(held, "B") == pytest.approx(24.0)


@pytest.mark.parametrize(("b_start", "b_end"), [(8.0, 10.0), (8.0, 13.0), (11.0, 12.5)])
def test_an_interjection_ends_the_listener_stretch(tmp_path, b_start, b_end):
    """B's talk of >= 1 s while A holds the floor, overlapping A's talk or in A's pause, is never inside a
    listener segment of B; the stretch is split there."""
    rows = [("A", 0.0, 11.0), ("A", 11.5, 25.0), ("B", b_start, b_end)]
    seg = session(tmp_path, rows).segments
    b_seg = seg[seg["listener_id"] == "B"]
    assert len(b_seg) and (b_seg["speaker_id"] == "A").all()
    assert not ((b_seg["start_s"] < b_end) & (b_seg["end_s"] > b_start)).any()
    assert b_seg["stretch_id"].nunique() == 2  # before and after the interjection
    first = b_seg[b_seg["end_s"] <= b_start]
    assert first["end_s"].max() == pytest.approx(np.floor(b_start / HEAD_HOP_S + 1e-9) * HEAD_HOP_S)


def test_backchannel_stays_inside_and_is_flagged(tmp_path):
    rows = [("A", 0.0, 5.0), ("A", 6.0, 10.5), ("B", 5.2, 5.7)]  # "un" in A's 1 s pause
    result = session(tmp_path, rows)
    seg = result.segments
    assert len(seg) == 1 and seg.loc[0, "start_s"] == 0.0 and seg.loc[0, "end_s"] == pytest.approx(10.48)
    bc = result.talk[result.talk["kind"] == "backchannel"]
    flags = span_frames(list(zip(bc["start_s"], bc["end_s"], strict=True)), 0, int(seg.loc[0, "n_frames"]))
    # frame k covers [0.08 k, 0.08 (k + 1)): 5.2-5.7 s touches frames 65..71
    assert np.flatnonzero(flags).tolist() == list(range(65, 72))


def test_span_frames_grid():
    assert span_frames([(0.0, 0.08)], 0, 3).tolist() == [1, 0, 0]
    assert span_frames([(0.05, 0.09)], 0, 3).tolist() == [1, 1, 0]
    assert span_frames([(0.16, 0.40)], 2, 4).tolist() == [1, 1, 1, 0]
    assert span_frames([(0.0, 10.0)], 5, 2).tolist() == [1, 1]


@pytest.mark.parametrize(("n", "equal", "greedy"), [
    (150, [75, 75], [137]),  # 12 s: the greedy remainder (13 frames) is dropped
    (274, [137, 137], [137, 137]),
    (300, [100, 100, 100], [137, 137]),  # greedy drops 26 frames
    (350, [117, 117, 116], [137, 137, 76]),
    (149, [137], [137]),
])
def test_cut_rules(n, equal, greedy):
    assert split_frames(n, 75, 137, "equal") == equal
    assert split_frames(n, 75, 137, "greedy") == greedy
    with pytest.raises(ValueError, match="cut rule"):
        split_frames(n, 75, 137, "nearest")


def test_overlap_stride_adds_windows_inside_the_stretch_only():
    floor = pd.DataFrame({"holder_id": ["A", "A"], "start_s": [0.0, 30.0], "end_s": [24.0, 36.0]})
    seg = cut_listener_segments(floor, ["A", "B"], session_id="s", stride_s=4.0)
    base, extra = seg[~seg["overlap_extra"]], seg[seg["overlap_extra"]]
    assert base["n_frames"].tolist() == [100, 100, 100, 75]
    # windows of 137 frames every 50 frames (4 s) after the stretch start, while they fit in 300 frames
    assert extra["start_s"].tolist() == [4.0, 8.0, 12.0] and (extra["n_frames"] == 137).all()
    assert extra["segment_id"].str.endswith("_o").all() and seg["segment_id"].is_unique
    assert (extra["stretch_id"] == "s~B~0000000").all()
    assert (seg.loc[seg["start_s"] >= 30.0, "stretch_id"] == "s~B~0000375").all()
    assert not cut_listener_segments(floor, ["A", "B"], session_id="s")["overlap_extra"].any()


def test_overlapping_windows_stay_in_train_and_do_not_move_splits(tmp_path):
    """Splits are drawn on the tiling; overlapping windows follow their stretch and exist in train only."""
    tables = {}
    for stride in (0.0, 2.0):
        sessions = []
        for i, (spk, lst) in enumerate([("A", "B"), ("C", "D"), ("E", "F"), ("G", "H")]):
            floor = pd.DataFrame({"holder_id": [spk], "start_s": [0.0], "end_s": [30.0]})
            seg = cut_listener_segments(floor, [spk, lst], session_id=f"s{i}", stride_s=stride)
            seg["invalid_frac"] = 0.0
            path = tmp_path / f"s{i}-{stride}.parquet"
            seg.to_parquet(path)
            sessions.append(SessionInputs(f"s{i}", path, {}, {}))
        out = tmp_path / f"ds{stride}"
        out.mkdir()
        cfg = BuildConfig(dataset=DatasetConfig(ratios=(0.5, 0.25, 0.25)))
        tables[stride] = _split_segments(sessions, out, cfg, redraw=False)[0]
    plain, strided = tables[0.0], tables[2.0]
    extra = strided[strided["overlap_extra"]]
    assert len(extra) and set(extra["split"]) == {"train"}
    base = strided[~strided["overlap_extra"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(base[["segment_id", "split"]], plain[["segment_id", "split"]])
    # every held-out listener's stretch had windows too, and they were dropped
    held_out = set(plain.loc[plain["split"] != "train", "listener_id"])
    assert held_out and not strided.loc[strided["overlap_extra"], "listener_id"].isin(held_out).any()
