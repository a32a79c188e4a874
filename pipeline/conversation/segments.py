"""Listener segments: 6–11 s stretches of one participant listening while another holds the floor.

Everything is computed in whole head frames (80 ms, `HEAD_HOP_S`) so segment bounds land exactly on
the head / FBank / SSL grids and never drift through float arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd

from schemas.conventions import HEAD_HOP_S, MAX_SEGMENT_S, MIN_SEGMENT_S

SEGMENT_COLUMNS = ["segment_id", "session_id", "listener_id", "speaker_id", "start_s", "end_s", "n_frames"]
_EPS = 1e-9


def frame_of(t: float, hop_s: float = HEAD_HOP_S, *, up: bool) -> int:
    """Frame index of time `t` snapped up (ceil) or down (floor), tolerant to float noise."""
    return math.ceil(t / hop_s - _EPS) if up else math.floor(t / hop_s + _EPS)


def frame_time(k: int, hop_s: float = HEAD_HOP_S) -> float:
    """Time of frame `k`, rounded to 1 ns so 3 * 0.08 reads 0.24."""
    return round(k * hop_s, 9)


def split_frames(n: int, min_frames: int, max_frames: int) -> list[int]:
    """Piece lengths (frames) for a stretch of `n` frames; see `cut_listener_segments`."""
    if n < min_frames or n <= 0:
        return []
    k = math.ceil(n / max_frames)
    if n // k < min_frames:
        return [max_frames] * (k - 1)
    q, r = divmod(n, k)
    return [q + 1] * r + [q] * (k - r)


def cut_listener_segments(
    floor: pd.DataFrame,
    participant_ids: Collection[str],
    *,
    session_id: str,
    min_s: float = MIN_SEGMENT_S,
    max_s: float = MAX_SEGMENT_S,
    hop_s: float = HEAD_HOP_S,
) -> pd.DataFrame:
    """Cut every floor interval into listener segments, one set per non-holding participant.

    Rule (data card): for a floor interval held by speaker S, every other participant L is a
    listener. The interval is snapped inward to the head-frame grid (start rounded UP, end DOWN
    to a multiple of `hop_s`), giving n frames; the length includes the 1 s model context. If
    n < ceil(min_s / hop_s) frames there is no segment. Otherwise k = ceil(n / max_frames) with
    max_frames = floor(max_s / hop_s); if the shortest of k near-equal pieces would be below
    min_frames, use k-1 pieces of exactly max_frames from the start and drop the remainder at the
    end; else split into k consecutive near-equal pieces (the first n mod k pieces one frame
    longer). `segment_id = f"{session_id}_{listener_id}_{start_frame:07d}"`.
    """
    if hop_s <= 0 or min_s <= 0 or max_s < min_s:
        raise ValueError(f"need hop_s > 0 and 0 < min_s <= max_s, got {hop_s=}, {min_s=}, {max_s=}")
    min_frames = frame_of(min_s, hop_s, up=True)
    max_frames = frame_of(max_s, hop_s, up=False)
    if max_frames < min_frames:
        raise ValueError(f"no whole number of {hop_s} s frames lies in [{min_s}, {max_s}] s")
    people = sorted({str(p) for p in participant_ids})
    rows = []
    for holder, start, end in zip(floor["holder_id"], floor["start_s"], floor["end_s"], strict=True):
        speaker = str(holder)
        if speaker not in people:
            raise ValueError(f"floor holder {speaker!r} is not in participant_ids {people}")
        f0 = frame_of(float(start), hop_s, up=True)
        f1 = frame_of(float(end), hop_s, up=False)
        pieces = split_frames(f1 - f0, min_frames, max_frames)
        for listener in people:
            if listener == speaker:
                continue
            s = f0
            for n in pieces:
                rows.append(
                    (
                        f"{session_id}_{listener}_{s:07d}",
                        session_id,
                        listener,
                        speaker,
                        frame_time(s, hop_s),
                        frame_time(s + n, hop_s),
                        n,
                    )
                )
                s += n
    df = pd.DataFrame(rows, columns=SEGMENT_COLUMNS)
    df = df.astype(
        {
            "segment_id": str,
            "session_id": str,
            "listener_id": str,
            "speaker_id": str,
            "start_s": "float64",
            "end_s": "float64",
            "n_frames": "int64",
        }
    )
    df = df.sort_values(["start_s", "listener_id"], kind="stable").reset_index(drop=True)
    if df["segment_id"].duplicated().any():
        dup = df.loc[df["segment_id"].duplicated(), "segment_id"].tolist()[:5]
        raise ValueError(f"overlapping floor intervals gave duplicate segment ids {dup}")
    return df


def drop_invalid_segments(
    segments: pd.DataFrame,
    head_valid: Mapping[str, pd.DataFrame],
    *,
    max_invalid_frac: float = 0.1,
    hop_s: float = HEAD_HOP_S,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Drop segments whose head features are too often missing; return `(kept, dropped)`.

    A frame of a segment is invalid when the listener's OR the speaker's head frame at that time
    is invalid, missing from its table, or beyond its table's end (a participant absent from
    `head_valid` is invalid throughout). A segment with invalid fraction > `max_invalid_frac` is
    dropped; `dropped` carries `invalid_frac` and a `reason`, `kept` carries `invalid_frac`.
    """
    valid = {str(p): _valid_array(p, t, hop_s) for p, t in head_valid.items()}
    fracs = np.zeros(len(segments), dtype="float64")
    reasons: list[str] = []
    for i, (lid, sid, s, e) in enumerate(
        zip(
            segments["listener_id"],
            segments["speaker_id"],
            segments["start_s"],
            segments["end_s"],
            strict=True,
        )
    ):
        f0 = int(round(float(s) / hop_s))
        f1 = int(round(float(e) / hop_s))
        n = max(f1 - f0, 0)
        bad_l = _invalid_mask(valid.get(str(lid)), f0, f1)
        bad_s = _invalid_mask(valid.get(str(sid)), f0, f1)
        bad = bad_l | bad_s
        frac = float(bad.mean()) if n else 1.0
        fracs[i] = frac
        parts = []
        for role, pid, mask in (("listener", lid, bad_l), ("speaker", sid, bad_s)):
            if str(pid) not in valid:
                parts.append(f"{role} {pid}: no head features")
            elif mask.any():
                parts.append(f"{role} {pid}: {int(mask.sum())}/{n} frames invalid")
        reasons.append(
            f"invalid head frames {frac:.1%} > {max_invalid_frac:.1%} ({'; '.join(parts) or 'empty segment'})"
        )
    out = segments.copy()
    out["invalid_frac"] = fracs
    drop = fracs > max_invalid_frac + 1e-12
    kept = out.loc[~drop].reset_index(drop=True)
    dropped = out.loc[drop].copy()
    dropped["reason"] = pd.Series(
        [r for r, d in zip(reasons, drop, strict=True) if d], index=dropped.index, dtype=str
    )
    return kept, dropped.reset_index(drop=True)


def _valid_array(pid: str, table: pd.DataFrame, hop_s: float) -> np.ndarray:
    """Boolean validity per frame index (k = time_s / hop_s); frames absent from the table are False."""
    if not {"time_s", "valid"} <= set(table.columns):
        raise ValueError(f"head table of {pid!r} needs columns time_s and valid, found {list(table.columns)}")
    t = table["time_s"].to_numpy(dtype="float64")
    k = np.rint(t / hop_s)
    if len(t) and (np.abs(t / hop_s - k).max() > 1e-3 or k.min() < 0):
        raise ValueError(f"head table of {pid!r}: time_s must be k * {hop_s} s with k >= 0")
    arr = np.zeros(int(k.max()) + 1 if len(k) else 0, dtype=bool)
    arr[k.astype(np.int64)] = table["valid"].to_numpy(dtype=bool)
    return arr


def _invalid_mask(arr: np.ndarray | None, f0: int, f1: int) -> np.ndarray:
    n = max(f1 - f0, 0)
    if arr is None:
        return np.ones(n, dtype=bool)
    mask = np.ones(n, dtype=bool)
    lo, hi = max(f0, 0), min(f1, len(arr))
    if hi > lo:
        mask[lo - f0 : hi - f0] = ~arr[lo:hi]
    return mask
