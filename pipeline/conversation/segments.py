"""Listener segments: 6–11 s stretches of one participant listening while another holds the floor.

Everything is computed in whole head frames (80 ms, `HEAD_HOP_S`) so segment bounds land exactly on
the head / FBank / SSL grids and never drift through float arithmetic.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd

from schemas.conventions import HEAD_HOP_S, MAX_SEGMENT_S, MIN_SEGMENT_S

SEGMENT_COLUMNS = ["segment_id", "session_id", "listener_id", "speaker_id", "start_s", "end_s", "n_frames",
                   "stretch_id", "overlap_extra"]
CUT_RULES = ("equal", "greedy")
# Ids may contain '_' (schemas.inputs.SAFE_ID), so fields joined by '_' were ambiguous: session `k` with
# participant `x_L1` and session `k_x` with `L1` both gave `k_x_L1_...`. '~' is outside SAFE_ID, plain in file
# names, CSV, JSON and shells (mid-word), and not the '+' that evaluation window ids append.
SEGMENT_ID_SEP = "~"
OVERLAP_SUFFIX = "_o"
_EPS = 1e-9


def segment_id(session_id: str, listener_id: str, start_frame: int, *, overlap_extra: bool = False) -> str:
    """`<session>~<listener>~<start frame, 7 digits>[_o]`: unique per session, listener and start frame.

    Stretch ids have the same form (the stretch's first frame). The separator never occurs in an id.
    """
    for what, value in (("session id", session_id), ("listener id", listener_id)):
        if SEGMENT_ID_SEP in value:
            raise ValueError(f"{what} {value!r} contains {SEGMENT_ID_SEP!r}, the segment id separator")
    tail = OVERLAP_SUFFIX if overlap_extra else ""
    return f"{session_id}{SEGMENT_ID_SEP}{listener_id}{SEGMENT_ID_SEP}{start_frame:07d}{tail}"


def parse_segment_id(value: str) -> tuple[str, str, int, bool]:
    """`(session_id, listener_id, start_frame, overlap_extra)` of a `segment_id` (or stretch id)."""
    parts = value.split(SEGMENT_ID_SEP)
    frame = parts[-1].removesuffix(OVERLAP_SUFFIX)
    if len(parts) != 3 or not frame.isdigit():
        raise ValueError(f"not a segment id: {value!r} (expected session~listener~frame[{OVERLAP_SUFFIX}])")
    return parts[0], parts[1], int(frame), parts[-1].endswith(OVERLAP_SUFFIX)


def frame_of(t: float, hop_s: float = HEAD_HOP_S, *, up: bool) -> int:
    """Frame index of time `t` snapped up (ceil) or down (floor), tolerant to float noise."""
    return math.ceil(t / hop_s - _EPS) if up else math.floor(t / hop_s + _EPS)


def frame_time(k: int, hop_s: float = HEAD_HOP_S) -> float:
    """Time of frame `k`, rounded to 1 ns so 3 * 0.08 reads 0.24."""
    return round(k * hop_s, 9)


def split_frames(n: int, min_frames: int, max_frames: int, rule: str = "equal") -> list[int]:
    """Piece lengths (frames) for a stretch of `n` frames; see `cut_listener_segments`."""
    if rule not in CUT_RULES:
        raise ValueError(f"cut rule must be one of {CUT_RULES}, got {rule!r}")
    if n < min_frames or n <= 0:
        return []
    k = math.ceil(n / max_frames)
    if rule == "greedy" or n // k < min_frames:
        rest = n - (k - 1) * max_frames
        return [max_frames] * (k - 1) + ([rest] if rest >= min_frames else [])
    q, r = divmod(n, k)
    return [q + 1] * r + [q] * (k - r)


def span_frames(spans: list[tuple[float, float]], f0: int, n: int, hop_s: float = HEAD_HOP_S) -> np.ndarray:
    """uint8 [n]: 1 where head frame f0 + i (covering [t, t + hop_s)) overlaps one of the time spans."""
    out = np.zeros(n, dtype=np.uint8)
    for s, e in spans:
        a = max(frame_of(float(s), hop_s, up=False) - f0, 0)
        z = min(frame_of(float(e), hop_s, up=True) - f0, n)
        if z > a:
            out[a:z] = 1
    return out


def listener_stretches(
    floor: pd.DataFrame,
    participant_ids: Collection[str],
    interjections: pd.DataFrame | None = None,
    *,
    hop_s: float = HEAD_HOP_S,
) -> list[tuple[str, str, int, int]]:
    """`(listener, speaker, first_frame, end_frame)` of every listener stretch, in time order.

    A floor interval held by S is a stretch for every other participant L, cut at L's
    interjections (`participant_id, start_s, end_s`: L's own talk that is no backchannel,
    overlapping S's talk or not). Stretches are snapped inward to the frame grid.
    """
    people = sorted({str(p) for p in participant_ids})
    talk: dict[str, list[tuple[float, float]]] = {p: [] for p in people}
    if interjections is not None:
        for p, s, e in zip(interjections["participant_id"], interjections["start_s"], interjections["end_s"],
                           strict=True):
            talk.setdefault(str(p), []).append((float(s), float(e)))
    out = []

    def emit(listener: str, speaker: str, a: float, z: float) -> None:
        f0, f1 = frame_of(a, hop_s, up=True), frame_of(z, hop_s, up=False)
        if f1 > f0:
            out.append((listener, speaker, f0, f1))

    spans = {p: sorted(t) for p, t in talk.items()}
    # where a floor interval's scan may start: past spans ending before it (when ends rise with starts,
    # as for one person's merged talk; else from the first span), so the pass is not floor x talk
    ends = {p: [e for _, e in t] for p, t in spans.items()}
    rising = {p: all(a <= b for a, b in zip(e, e[1:], strict=False)) for p, e in ends.items()}
    for holder, start, end in zip(floor["holder_id"], floor["start_s"], floor["end_s"], strict=True):
        speaker, z = str(holder), float(end)
        if speaker not in people:
            raise ValueError(f"floor holder {speaker!r} is not in participant_ids {people}")
        for listener in (p for p in people if p != speaker):
            cursor = float(start)
            mine = spans[listener]
            for i in range(bisect.bisect_right(ends[listener], cursor) if rising[listener] else 0, len(mine)):
                s, e = mine[i]
                if e <= cursor:
                    continue
                if s >= z:
                    break
                emit(listener, speaker, cursor, s)
                cursor = max(cursor, e)
            if cursor < z:
                emit(listener, speaker, cursor, z)
    return sorted(out, key=lambda r: (r[2], r[0]))


def cut_listener_segments(
    floor: pd.DataFrame,
    participant_ids: Collection[str],
    *,
    session_id: str,
    min_s: float = MIN_SEGMENT_S,
    max_s: float = MAX_SEGMENT_S,
    hop_s: float = HEAD_HOP_S,
    interjections: pd.DataFrame | None = None,
    rule: str = "equal",
    stride_s: float = 0.0,
) -> pd.DataFrame:
    """Cut every listener stretch (`listener_stretches`) into listener segments.

    Rule (data card): a stretch of n frames (start rounded UP, end DOWN to the `hop_s` grid; the
    length includes the 1 s model context) shorter than min_frames = ceil(min_s / hop_s) gives no
    segment. Otherwise, with max_frames = floor(max_s / hop_s) and k = ceil(n / max_frames):
    `equal` splits it into k consecutive near-equal pieces (the first n mod k one frame longer),
    unless the shortest would be below min_frames, then it is cut like `greedy`; `greedy` takes
    k-1 pieces of exactly max_frames from the start and keeps the remainder when it is at least
    min_frames. `segment_id` is `session~listener~start frame` (`segment_id()`); every segment
    carries the `stretch_id` of its stretch (same form, the stretch's first frame).

    `stride_s` > 0 adds overlapping segments (`overlap_extra` True, id suffix `_o`): windows of
    max_frames starting every stride (rounded to whole frames) after the stretch start, while they
    fit in the stretch, unless a tiling piece is the same window. They are meant for training
    only; the aggregate keeps them in the train split and drops them elsewhere.
    """
    if hop_s <= 0 or min_s <= 0 or max_s < min_s or stride_s < 0:
        raise ValueError(f"need hop_s > 0, 0 < min_s <= max_s, stride_s >= 0, got {hop_s=}, {min_s=}, {max_s=}, "
                         f"{stride_s=}")
    min_frames = frame_of(min_s, hop_s, up=True)
    max_frames = frame_of(max_s, hop_s, up=False)
    if max_frames < min_frames:
        raise ValueError(f"no whole number of {hop_s} s frames lies in [{min_s}, {max_s}] s")
    stride = max(int(round(stride_s / hop_s)), 1) if stride_s > 0 else 0
    rows = []
    for listener, speaker, f0, f1 in listener_stretches(floor, participant_ids, interjections, hop_s=hop_s):
        stretch_id = segment_id(session_id, listener, f0)
        pieces, s = [], f0
        for n in split_frames(f1 - f0, min_frames, max_frames, rule):
            pieces.append((s, n, False))
            s += n
        if stride:
            tiled = set(pieces)
            pieces += [(s, max_frames, True) for s in range(f0 + stride, f1 - max_frames + 1, stride)
                       if (s, max_frames, False) not in tiled]
        rows += [(segment_id(session_id, listener, s, overlap_extra=extra), session_id, listener, speaker,
                  frame_time(s, hop_s), frame_time(s + n, hop_s), n, stretch_id, extra) for s, n, extra in pieces]
    df = pd.DataFrame(rows, columns=SEGMENT_COLUMNS).astype(
        {"segment_id": str, "session_id": str, "listener_id": str, "speaker_id": str, "start_s": "float64",
         "end_s": "float64", "n_frames": "int64", "stretch_id": str, "overlap_extra": bool})
    df = df.sort_values(["start_s", "listener_id", "segment_id"], kind="stable").reset_index(drop=True)
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
