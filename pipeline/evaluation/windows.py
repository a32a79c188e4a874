"""Evaluation windows: every test listener stretch that is long enough gives one or more windows.

A window is `context_frames + eval_frames` consecutive frames (12 + 125 = 10.96 s by default) in
which the listener and the speaker are valid everywhere. Segments are cut from longer listening
stretches (README "Evaluation"), and no segment is longer than one window, so windows are drawn
from stretches, not segments: a stretch is a run of temporally adjacent segments of one session,
listener and speaker (the next segment starts where the previous one ends), or the segments sharing
a `stretch_id` when segments.parquet has that column. Windows are laid out greedily from the start
of each stretch, `stride` frames apart (non-overlapping when stride = window length); a window that
would contain an invalid frame is moved to start just after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.conventions import HEAD_HOP_S

# two segments are adjacent when the gap between them is below half a head frame
ADJACENT_TOL_S = 0.5 * HEAD_HOP_S


@dataclass(frozen=True)
class Stretch:
    """Adjacent segments of one listener/speaker pair; `positions` index the split's segments table."""

    session_id: str
    listener_id: str
    speaker_id: str
    start_s: float
    positions: tuple[int, ...]
    n_frames: int


@dataclass(frozen=True)
class Window:
    """`length` frames of stretch `stretch` from frame `offset` (session time `start_s`)."""

    stretch: int
    offset: int
    length: int
    start_s: float
    segment_id: str  # the segment the window starts in (for reading the report)

    @property
    def window_id(self) -> str:
        return f"{self.segment_id}+{self.offset}"


def _runs(group: pd.DataFrame) -> list[list[int]]:
    """Positions of adjacent segments (sorted by start time) in runs."""
    runs: list[list[int]] = []
    prev_end = None
    for pos, row in group.sort_values("start_s", kind="stable").iterrows():
        if prev_end is not None and abs(float(row["start_s"]) - prev_end) < ADJACENT_TOL_S:
            runs[-1].append(int(pos))
        else:
            runs.append([int(pos)])
        prev_end = float(row["end_s"])
    return runs


def listener_stretches(segments: pd.DataFrame) -> list[Stretch]:
    """Stretches of a split's segments table (index = position in the split), in a stable order."""
    if segments.empty:
        return []
    if "stretch_id" in segments.columns:
        runs = [g.sort_values("start_s", kind="stable").index.tolist()
                for _, g in segments.groupby("stretch_id", sort=True)]
    else:
        keys = ["session_id", "listener_id", "speaker_id"]
        runs = [run for _, g in segments.groupby(keys, sort=True) for run in _runs(g)]
    stretches = []
    for run in runs:
        first = segments.loc[run[0]]
        ends = [_first_frame(segments.loc[p]) + int(segments.loc[p, "n_frames"]) for p in run]
        stretches.append(Stretch(str(first["session_id"]), str(first["listener_id"]), str(first["speaker_id"]),
                                 float(first["start_s"]), tuple(run), max(ends) - _first_frame(first)))
    return sorted(stretches, key=lambda s: (s.session_id, s.start_s, s.listener_id))


def window_offsets(valid: np.ndarray, length: int, stride: int) -> list[int]:
    """Greedy window starts in a validity mask: every window all valid, consecutive starts >= `stride`
    apart; a window hitting an invalid frame restarts just after that frame."""
    valid = np.asarray(valid, dtype=bool)
    if length < 1 or stride < 1:
        raise ValueError(f"window length and stride must be >= 1, got {length} and {stride}")
    # bad_before[i] = number of invalid frames in valid[:i]
    bad_before = np.concatenate([[0], np.cumsum(~valid)])
    offsets, start = [], 0
    while start + length <= valid.size:
        if bad_before[start + length] == bad_before[start]:
            offsets.append(start)
            start += stride
        else:
            last_bad = start + int(np.flatnonzero(~valid[start:start + length])[-1])
            start = last_bad + 1
    return offsets


def _first_frame(row: pd.Series) -> int:
    """Session head-frame index of a segment's first frame (as the shards are cut)."""
    return int(round(float(row["start_s"]) / HEAD_HOP_S))


def place_items(items: list[dict], starts: list[int]) -> dict:
    """One stretch's arrays: each loader item placed at its frame offset `starts[i]` on the stretch's
    timeline (overlapping segments share frames; frames no segment covers stay invalid)."""
    n = max(s + len(it["listener_head"]) for s, it in zip(starts, items, strict=True))
    out: dict = {"segment_of_frame": np.full(n, -1), "segment_ids": [it["segment_id"] for it in items]}
    for key, value in items[0].items():
        if key == "segment_id":
            continue
        value = np.asarray(value)
        out[key] = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
    for i, (start, item) in enumerate(zip(starts, items, strict=True)):
        length = len(item["listener_head"])
        for key, value in item.items():
            if key != "segment_id":
                out[key][start:start + length] = np.asarray(value)
        out["segment_of_frame"][start:start + length] = np.where(
            out["segment_of_frame"][start:start + length] < 0, i, out["segment_of_frame"][start:start + length])
    return out


def stretch_arrays(data, stretch: Stretch) -> dict:
    """A stretch's loader arrays on one timeline (`data` is an LHGDataset in numpy mode)."""
    rows = [data.segments.loc[p] for p in stretch.positions]
    first = _first_frame(rows[0])
    return place_items([data[p] for p in stretch.positions], [_first_frame(r) - first for r in rows])


def _segment_at(arrays: dict, offset: int) -> str:
    return arrays["segment_ids"][int(arrays["segment_of_frame"][offset])]


def eligible_windows(data, length: int, stride: int) -> tuple[list[Stretch], list[Window]]:
    """Every window of `length` valid frames in the split (heads-only `data` keeps this cheap)."""
    stretches = listener_stretches(data.segments)
    windows = []
    for k, stretch in enumerate(stretches):
        if stretch.n_frames < length:
            continue
        arrays = stretch_arrays(data, stretch)
        valid = arrays["listener_valid"] & arrays["speaker_valid"]
        for offset in window_offsets(valid, length, stride):
            windows.append(Window(k, offset, length, stretch.start_s + offset * HEAD_HOP_S,
                                  _segment_at(arrays, offset)))
    return stretches, windows


def valid_runs(data, min_frames: int, key: str = "listener_head") -> list[np.ndarray]:
    """`key` arrays of every maximal run of >= `min_frames` frames, listener and speaker valid, in the
    split's stretches: the Random baseline draws its clips from these, so it can answer windows
    longer than any one segment."""
    runs = []
    for stretch in listener_stretches(data.segments):
        if stretch.n_frames < min_frames:
            continue
        arrays = stretch_arrays(data, stretch)
        valid = np.concatenate([[False], arrays["listener_valid"] & arrays["speaker_valid"], [False]])
        edges = np.flatnonzero(np.diff(valid.astype(np.int8)))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if b - a >= min_frames:
                runs.append(arrays[key][a:b])
    return runs
