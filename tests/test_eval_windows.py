"""Evaluation windows: listener stretches from adjacent segments (or `stretch_id`), greedy all-valid
windows, several per long stretch, and the built sample dataset evaluated across segment borders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.config import EvalConfig
from pipeline.evaluation.evaluate import select_windows
from pipeline.evaluation.inputs import WindowReader
from pipeline.evaluation.windows import listener_stretches, place_items, window_offsets


def _segments(rows: list[tuple]) -> pd.DataFrame:
    cols = ["segment_id", "session_id", "listener_id", "speaker_id", "start_s", "end_s"]
    df = pd.DataFrame(rows, columns=cols)
    df["n_frames"] = ((df["end_s"] - df["start_s"]) / 0.08).round().astype(int)
    return df


def test_stretches_join_adjacent_segments_of_one_pair_only():
    df = _segments([
        ("a1", "s1", "A", "B", 0.0, 8.0),
        ("a2", "s1", "A", "B", 8.0, 16.0),  # adjacent: same stretch
        ("a3", "s1", "A", "B", 20.0, 28.0),  # a gap: a new stretch
        ("b1", "s1", "B", "A", 28.0, 36.0),  # other listener
        ("c1", "s2", "A", "B", 36.0, 44.0),  # other session, though "adjacent" in time
        ("a4", "s1", "A", "B", 16.0, 20.0),  # listed last, closes the gap between a2 and a3
    ])
    stretches = listener_stretches(df)
    runs = [[df.loc[p, "segment_id"] for p in s.positions] for s in stretches]
    assert runs == [["a1", "a2", "a4", "a3"], ["b1"], ["c1"]]
    assert [s.n_frames for s in stretches] == [350, 100, 100]


def test_stretch_id_column_wins_over_adjacency():
    df = _segments([("a1", "s1", "A", "B", 0.0, 8.0), ("a2", "s1", "A", "B", 8.0, 16.0)])
    df["stretch_id"] = ["x", "y"]  # the builder says these are separate stretches
    assert [len(s.positions) for s in listener_stretches(df)] == [1, 1]
    df["stretch_id"] = ["x", "x"]
    assert [s.positions for s in listener_stretches(df)] == [(0, 1)]


def test_window_offsets_greedy_valid_and_strided():
    valid = np.ones(35, bool)
    assert window_offsets(valid, 10, 10) == [0, 10, 20]
    assert window_offsets(valid, 10, 5) == [0, 5, 10, 15, 20, 25]
    valid[12] = False
    # 0..9 ok; 10..19 holds frame 12 -> restart at 13; 13..22 ok; 23..32 ok
    assert window_offsets(valid, 10, 10) == [0, 13, 23]
    assert window_offsets(np.ones(9, bool), 10, 10) == []
    with pytest.raises(ValueError):
        window_offsets(valid, 10, 0)


def test_place_items_joins_overlapping_and_gapped_segments():
    def item(sid, n, value):
        return {"segment_id": sid, "listener_head": np.full((n, 2), value, np.float32),
                "listener_valid": np.ones(n, bool)}

    out = place_items([item("a", 4, 1.0), item("b", 3, 2.0), item("c", 2, 3.0)], [0, 2, 7])
    assert out["listener_head"][:, 0].tolist() == [1, 1, 2, 2, 2, 0, 0, 3, 3]
    assert out["listener_valid"].tolist() == [True] * 5 + [False] * 2 + [True] * 2  # the gap is invalid
    assert [out["segment_ids"][i] for i in out["segment_of_frame"][[0, 3, 8]]] == ["a", "a", "c"]


def test_windows_cross_segment_borders_on_the_built_dataset(built_dataset):
    """The quick corpus' test listener has 6-7 s segments: a 137-frame window only exists across them."""
    from pipeline.dataset.loader import LHGDataset

    dataset = built_dataset / "dataset"
    data = LHGDataset(dataset, "test", normalize=False, as_torch=False, speech=False)
    assert data.segments["n_frames"].max() < 137  # no single segment could hold a default window
    stretches, windows, info = select_windows(dataset, EvalConfig())
    assert info["eligible"] >= 1 and info["used"] == len(windows) == min(info["eligible"], 400)
    w = windows[0]
    stretch = stretches[w.stretch]
    assert len(stretch.positions) >= 2
    joined = np.concatenate([data[p]["listener_head"] for p in stretch.positions])
    got = next(WindowReader(dataset, "test", []).batches(stretches, [w], 1))["listener_head"][0]
    np.testing.assert_array_equal(got, joined[w.offset:w.offset + 137])
    # overlapping windows (a window every 12 frames) give more samples from the same stretches
    _, more, info_more = select_windows(dataset, EvalConfig(window_stride=12))
    assert info_more["eligible"] > info["eligible"] and info_more["stride_frames"] == 12
    assert len({(m.stretch, m.offset) for m in more}) == len(more)


def test_paper_protocol_runs_on_the_quick_corpus(built_dataset, tmp_path):
    """137-frame windows and 125-frame Random clips exist only across segments (train segments are <= 11 s
    too): both come from stretches."""
    from pipeline.evaluation.evaluate import evaluate

    results = evaluate(built_dataset / "dataset", {}, tmp_path, EvalConfig(video_samples=0, figure_samples=1))
    assert results["samples"]["used"] == results["samples"]["eligible"] >= 1
    assert results["table"]["Random"]["L2"] > 0
