"""Who holds the conversational floor, and which short talk spurts are backchannels (the floor rules).

Listener segments are cut from floor intervals (the paper: listener behaviour while the other party
holds the turn), so these rules decide what a segment is; they are copied into the data card.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection

import pandas as pd


def derive_floor(
    turns: pd.DataFrame,
    participant_ids: Collection[str],
    *,
    merge_gap_s: float = 0.5,
    backchannel_max_s: float = 1.0,
) -> pd.DataFrame:
    """Who holds the conversational floor, as `holder_id, start_s, end_s` rows (no row = nobody).

    Rules, in order (these go into the data card):

    1. Floor bids. Per participant, talk spurts separated by a pause <= `merge_gap_s` are merged
       into one bid spanning first start to last end.
    2. Backchannels. A bid shorter than `backchannel_max_s` is a backchannel (aizuchi such as
       "はい", "うん") and never takes the floor when it overlaps in time a floor-taking bid of
       another participant. Bids >= `backchannel_max_s` always take part in the floor. Short
       bids are examined in start order; a short bid that overlaps no other participant's
       floor-taking bid (e.g. a short answer in silence) takes the floor itself, and a later
       short bid overlapping it is then a backchannel.
    3. Holding. Time is cut at every floor-taking bid boundary. While the current holder's bid
       continues, the holder keeps the floor, whoever else talks (no interruption switch, however
       long the overlap). When the holder's bid ends, the floor passes at that instant to the
       other participant whose running bid started earliest (ties: longer remaining bid, then
       participant id order). A bid that starts and ends inside another's holding never gets the
       floor.
    4. Silence. Time covered by nobody's floor-taking bid belongs to nobody: no row. Adjacent
       intervals of the same holder are joined.

    Works for any number of participants; exactly one holder at a time.
    """
    bids = _classified_bids(turns, participant_ids, merge_gap_s, backchannel_max_s)
    taking = [b for b in bids if not b[3]]
    order = {p: i for i, p in enumerate(sorted({str(p) for p in participant_ids}))}
    taking.sort(key=lambda b: (b[1], b[2], b[0]))
    cuts = sorted({t for b in taking for t in (b[1], b[2])})
    rows: list[tuple[str, float, float]] = []
    holder: str | None = None
    active: list[tuple[str, float, float, bool]] = []
    nxt = 0
    for a, z in zip(cuts, cuts[1:], strict=False):
        # Sweep: bids covering [a, z) are those started at or before a and ending after a.
        while nxt < len(taking) and taking[nxt][1] <= a:
            active.append(taking[nxt])
            nxt += 1
        active = [b for b in active if b[2] >= z]
        if not active:
            holder = None
            continue
        if holder is None or not any(b[0] == holder for b in active):
            best = min(active, key=lambda b: (b[1], -b[2], order.get(b[0], len(order)), b[0]))
            holder = best[0]
        if rows and rows[-1][0] == holder and rows[-1][2] == a:
            rows[-1] = (holder, rows[-1][1], z)
        else:
            rows.append((holder, a, z))
    return pd.DataFrame(
        {
            "holder_id": pd.Series([r[0] for r in rows], dtype=str),
            "start_s": pd.Series([r[1] for r in rows], dtype="float64"),
            "end_s": pd.Series([r[2] for r in rows], dtype="float64"),
        }
    )


def find_backchannels(
    turns: pd.DataFrame,
    floor: pd.DataFrame | None = None,
    *,
    participant_ids: Collection[str] | None = None,
    merge_gap_s: float = 0.5,
    backchannel_max_s: float = 1.0,
) -> pd.DataFrame:
    """Backchannel bids (rule 2 of `derive_floor`) as `participant_id, start_s, end_s, holder_id`.

    Use the same `merge_gap_s` / `backchannel_max_s` as for `derive_floor`. `holder_id` is the
    floor holder the backchannel overlaps most in `floor` ("" if none or `floor` not given), so
    counts can be reported per listener and per speaker.
    """
    if participant_ids is None:
        participant_ids = sorted({str(p) for p in turns["participant_id"]})
    bids = _classified_bids(turns, participant_ids, merge_gap_s, backchannel_max_s)
    rows = []
    for p, s, e, is_bc in bids:
        if not is_bc:
            continue
        holder = ""
        if floor is not None and len(floor):
            best = 0.0
            for h, fs, fe in zip(floor["holder_id"], floor["start_s"], floor["end_s"], strict=True):
                ov = min(e, fe) - max(s, fs)
                if h != p and ov > best:
                    best, holder = ov, str(h)
        rows.append((p, s, e, holder))
    return pd.DataFrame(
        {
            "participant_id": pd.Series([r[0] for r in rows], dtype=str),
            "start_s": pd.Series([r[1] for r in rows], dtype="float64"),
            "end_s": pd.Series([r[2] for r in rows], dtype="float64"),
            "holder_id": pd.Series([r[3] for r in rows], dtype=str),
        }
    )


def _classified_bids(
    turns: pd.DataFrame, participant_ids: Collection[str], merge_gap_s: float, backchannel_max_s: float
) -> list[tuple[str, float, float, bool]]:
    """Floor bids `(participant, start, end, is_backchannel)` in start order (rules 1 and 2)."""
    if merge_gap_s < 0 or backchannel_max_s < 0:
        raise ValueError("merge_gap_s and backchannel_max_s must be >= 0")
    known = {str(p) for p in participant_ids}
    missing = sorted({str(p) for p in turns["participant_id"]} - known)
    if missing:
        raise ValueError(f"turns name participants {missing} not in participant_ids {sorted(known)}")
    bids: list[tuple[str, float, float]] = []
    for pid, grp in turns.groupby("participant_id", sort=True):
        spans = sorted(zip(grp["start_s"].astype(float), grp["end_s"].astype(float), strict=True))
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s - cur_e <= merge_gap_s + 1e-9:
                cur_e = max(cur_e, e)
            else:
                bids.append((str(pid), cur_s, cur_e))
                cur_s, cur_e = s, e
        bids.append((str(pid), cur_s, cur_e))
    bids.sort(key=lambda b: (b[1], b[2], b[0]))

    def is_short(b: tuple[str, float, float]) -> bool:
        return (b[2] - b[1]) < backchannel_max_s - 1e-9

    # Per participant, floor-taking bids as parallel sorted start / end lists (they never overlap
    # within one participant, so ends are sorted too and one bisect finds the only candidate).
    starts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for p, s, e in bids:
        if not is_short((p, s, e)):
            starts.setdefault(p, []).append(s)
            ends.setdefault(p, []).append(e)

    def overlaps_other(b: tuple[str, float, float]) -> bool:
        for q in starts:
            if q == b[0]:
                continue
            i = bisect.bisect_left(starts[q], b[2])  # bids of q starting before b ends
            if i > 0 and ends[q][i - 1] > b[1]:
                return True
        return False

    backchannel: set[tuple[str, float, float]] = set()
    for b in bids:  # start order: an earlier accepted short bid can make a later one a backchannel
        if not is_short(b):
            continue
        if overlaps_other(b):
            backchannel.add(b)
        else:
            i = bisect.bisect_left(starts.setdefault(b[0], []), b[1])
            starts[b[0]].insert(i, b[1])
            ends.setdefault(b[0], []).insert(i, b[2])
    return [(p, s, e, (p, s, e) in backchannel) for p, s, e in bids]

