"""Who holds the conversational floor, and which short talk spurts are backchannels (the floor rules).

Listener segments are cut from floor intervals (the paper: listener behaviour while the other party
holds the turn), so these rules decide what a segment is; they are copied into the data card.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection

import pandas as pd

Bid = tuple[str, float, float, bool]  # participant, start_s, end_s, is_backchannel
_EPS = 1e-9


def derive_floor(
    turns: pd.DataFrame,
    participant_ids: Collection[str],
    *,
    merge_gap_s: float = 0.5,
    backchannel_max_s: float = 1.0,
    floor_hold_s: float = 3.0,
) -> pd.DataFrame:
    """Who holds the conversational floor, as `holder_id, start_s, end_s` rows (no row = nobody).

    Rules, in order (these go into the data card):

    1. Floor bids. Per participant, talk spurts separated by a pause <= `merge_gap_s` are merged
       into one bid spanning first start to last end.
    2. Backchannels. A bid shorter than `backchannel_max_s` is a backchannel (aizuchi such as
       "はい", "うん") and never takes the floor when it overlaps a floor-taking bid of another
       participant or starts less than `floor_hold_s` after one ended (a short "un" in the
       speaker's pause). Bids >= `backchannel_max_s` always take part in the floor. Short bids are
       examined in start order; a short bid that meets no other participant's floor-taking bid
       that way (e.g. a short answer after a long silence) takes the floor itself.
    3. Holding. While the current holder's bid continues, the holder keeps the floor, whoever
       else talks (no interruption switch, however long the overlap). When the holder's bid
       ends, the floor passes at that instant to the other participant whose running bid started
       earliest (ties: longer remaining bid, then participant id order). A bid that starts and
       ends inside another's holding never gets the floor.
    4. Pauses. A silence (no floor-taking bid; backchannels do not count) of at most
       `floor_hold_s` belongs to whoever held the floor before it: a speaker keeps the floor
       across pauses until somebody, possibly the speaker again, takes it. A longer silence, and
       the silence after the last bid, belongs to nobody (no row).
    5. Adjacent intervals of the same holder are joined.

    Works for any number of participants; exactly one holder at a time.
    """
    bids = _classified_bids(turns, participant_ids, merge_gap_s, backchannel_max_s, floor_hold_s)
    order = {p: i for i, p in enumerate(sorted({str(p) for p in participant_ids}))}
    rows = _hold_pauses(_sweep_holders([b for b in bids if not b[3]], order), floor_hold_s)
    return pd.DataFrame(
        {
            "holder_id": pd.Series([r[0] for r in rows], dtype=str),
            "start_s": pd.Series([r[1] for r in rows], dtype="float64"),
            "end_s": pd.Series([r[2] for r in rows], dtype="float64"),
        }
    )


def _sweep_holders(taking: list[Bid], order: dict[str, int]) -> list[tuple[str, float, float]]:
    """Rule 3: the holder of every stretch covered by floor-taking bids (silences left out)."""
    taking = sorted(taking, key=lambda b: (b[1], b[2], b[0]))
    cuts = sorted({t for b in taking for t in (b[1], b[2])})
    rows: list[tuple[str, float, float]] = []
    holder: str | None = None
    active: list[Bid] = []
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
        rows.append((holder, a, z))
    return _join(rows)


def _hold_pauses(rows: list[tuple[str, float, float]], floor_hold_s: float) -> list[tuple[str, float, float]]:
    """Rules 4 and 5: a silence of at most `floor_hold_s` goes to the holder before it."""
    held = [
        (h, s, nxt[1] if nxt[1] - e <= floor_hold_s + _EPS else e)
        for (h, s, e), nxt in zip(rows, rows[1:], strict=False)
    ]
    return _join(held + rows[len(held):])


def _join(rows: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    out: list[tuple[str, float, float]] = []
    for h, s, e in rows:
        if out and out[-1][0] == h and abs(out[-1][2] - s) <= _EPS:
            out[-1] = (h, out[-1][1], e)
        else:
            out.append((h, s, e))
    return out


def find_backchannels(
    turns: pd.DataFrame,
    floor: pd.DataFrame | None = None,
    *,
    participant_ids: Collection[str] | None = None,
    merge_gap_s: float = 0.5,
    backchannel_max_s: float = 1.0,
    floor_hold_s: float = 3.0,
) -> pd.DataFrame:
    """Backchannel bids (rule 2 of `derive_floor`) as `participant_id, start_s, end_s, holder_id`.

    Use the same settings as for `derive_floor`. `holder_id` is the floor holder the backchannel
    overlaps most in `floor` ("" if none or `floor` not given), so counts can be reported per
    listener and per speaker.
    """
    if participant_ids is None:
        participant_ids = sorted({str(p) for p in turns["participant_id"]})
    bids = _classified_bids(turns, participant_ids, merge_gap_s, backchannel_max_s, floor_hold_s)
    holders = _FloorLookup(floor)
    rows = [(p, s, e, holders.most_overlapped(p, s, e)) for p, s, e, is_bc in bids if is_bc]
    return pd.DataFrame(
        {
            "participant_id": pd.Series([r[0] for r in rows], dtype=str),
            "start_s": pd.Series([r[1] for r in rows], dtype="float64"),
            "end_s": pd.Series([r[2] for r in rows], dtype="float64"),
            "holder_id": pd.Series([r[3] for r in rows], dtype=str),
        }
    )


class _FloorLookup:
    """Which floor holder a span overlaps most, in time proportional to the rows it overlaps.

    Floor rows come in time order and never overlap (`derive_floor`), so the rows a span overlaps are
    one run found by bisection; rows in any other order are scanned whole. Either way the first row
    (in table order) with the largest positive overlap wins, so both give the same holder.
    """

    def __init__(self, floor: pd.DataFrame | None) -> None:
        empty = floor is None or not len(floor)
        self.holders = [] if empty else [str(h) for h in floor["holder_id"]]
        self.starts = [] if empty else [float(x) for x in floor["start_s"]]
        self.ends = [] if empty else [float(x) for x in floor["end_s"]]
        self.ordered = all(a <= b for a, b in zip(self.starts, self.starts[1:], strict=False)) and all(
            a <= b for a, b in zip(self.ends, self.ends[1:], strict=False))

    def most_overlapped(self, participant: str, s: float, e: float) -> str:
        """The holder (not `participant`) of the row overlapping [s, e] most; "" when none overlaps."""
        lo, hi = (bisect.bisect_right(self.ends, s), bisect.bisect_left(self.starts, e)) if self.ordered \
            else (0, len(self.holders))
        best, holder = 0.0, ""
        for i in range(lo, hi):
            ov = min(e, self.ends[i]) - max(s, self.starts[i])
            if self.holders[i] != participant and ov > best:
                best, holder = ov, self.holders[i]
        return holder


def classify_bids(
    turns: pd.DataFrame,
    participant_ids: Collection[str],
    *,
    merge_gap_s: float = 0.5,
    backchannel_max_s: float = 1.0,
    floor_hold_s: float = 3.0,
) -> list[Bid]:
    """Floor bids `(participant, start, end, is_backchannel)` in start order (rules 1 and 2)."""
    return _classified_bids(turns, participant_ids, merge_gap_s, backchannel_max_s, floor_hold_s)


def _merged_bids(turns: pd.DataFrame, merge_gap_s: float) -> list[tuple[str, float, float]]:
    """Rule 1: per participant, spurts separated by at most `merge_gap_s` form one bid."""
    bids: list[tuple[str, float, float]] = []
    for pid, grp in turns.groupby("participant_id", sort=True):
        spans = sorted(zip(grp["start_s"].astype(float), grp["end_s"].astype(float), strict=True))
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s - cur_e <= merge_gap_s + _EPS:
                cur_e = max(cur_e, e)
            else:
                bids.append((str(pid), cur_s, cur_e))
                cur_s, cur_e = s, e
        bids.append((str(pid), cur_s, cur_e))
    bids.sort(key=lambda b: (b[1], b[2], b[0]))
    return bids


def _classified_bids(
    turns: pd.DataFrame,
    participant_ids: Collection[str],
    merge_gap_s: float,
    backchannel_max_s: float,
    floor_hold_s: float,
) -> list[Bid]:
    """Floor bids `(participant, start, end, is_backchannel)` in start order (rules 1 and 2)."""
    if merge_gap_s < 0 or backchannel_max_s < 0 or floor_hold_s < 0:
        raise ValueError("merge_gap_s, backchannel_max_s and floor_hold_s must be >= 0")
    known = {str(p) for p in participant_ids}
    missing = sorted({str(p) for p in turns["participant_id"]} - known)
    if missing:
        raise ValueError(f"turns name participants {missing} not in participant_ids {sorted(known)}")
    bids = _merged_bids(turns, merge_gap_s)

    def is_short(b: tuple[str, float, float]) -> bool:
        return (b[2] - b[1]) < backchannel_max_s - _EPS

    # Per participant, floor-taking bids as parallel sorted start / end lists (they never overlap
    # within one participant, so ends are sorted too and one bisect finds the only candidate).
    starts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for p, s, e in bids:
        if not is_short((p, s, e)):
            starts.setdefault(p, []).append(s)
            ends.setdefault(p, []).append(e)

    def meets_other(b: tuple[str, float, float]) -> bool:
        """b overlaps another's floor-taking bid or starts within `floor_hold_s` after one ended."""
        for q in starts:
            if q == b[0]:
                continue
            i = bisect.bisect_left(starts[q], b[2])  # bids of q starting before b ends
            if i > 0 and ends[q][i - 1] + floor_hold_s > b[1] + _EPS:
                return True
        return False

    backchannel: set[tuple[str, float, float]] = set()
    for b in bids:  # start order: an earlier accepted short bid can make a later one a backchannel
        if not is_short(b):
            continue
        if meets_other(b):
            backchannel.add(b)
        else:
            i = bisect.bisect_left(starts.setdefault(b[0], []), b[1])
            starts[b[0]].insert(i, b[1])
            ends.setdefault(b[0], []).insert(i, b[2])
    return [(p, s, e, (p, s, e) in backchannel) for p, s, e in bids]


TALK_KINDS = ("talk", "backchannel")


def talk_table(turns: pd.DataFrame, bids: list[Bid]) -> pd.DataFrame:
    """Every annotated talk span as `participant_id, start_s, end_s, kind` (kind: talk | backchannel).

    A span is a backchannel when the bid it belongs to (rule 1) is one (rule 2). The dataset uses
    this table for the per-frame `listener_backchannel` and `speaker_talk` flags.
    """
    by_person: dict[str, list[Bid]] = {}
    for b in bids:
        by_person.setdefault(b[0], []).append(b)
    lookups = {p: _BidLookup(mine) for p, mine in by_person.items()}
    rows = []
    for p, s, e in zip(turns["participant_id"].astype(str), turns["start_s"].astype(float),
                       turns["end_s"].astype(float), strict=True):
        bid = lookups[p].first_containing(s, e) if p in lookups else None
        if bid is None:
            raise ValueError(f"talk span {p} {s}-{e} s lies in no floor bid")
        rows.append((p, s, e, TALK_KINDS[int(bid[3])]))
    rows.sort(key=lambda r: (r[1], r[0], r[2]))
    return pd.DataFrame({
        "participant_id": pd.Series([r[0] for r in rows], dtype=str),
        "start_s": pd.Series([r[1] for r in rows], dtype="float64"),
        "end_s": pd.Series([r[2] for r in rows], dtype="float64"),
        "kind": pd.Series([r[3] for r in rows], dtype=str),
    })


class _BidLookup:
    """The first of one person's bids (in list order) that contains a span, by bisection.

    One person's bids are disjoint and in start order (rule 1), so ends rise with starts and the
    containing bids are a run just before the first bid starting after the span; bids in any other
    order are scanned whole, with the same answer.
    """

    def __init__(self, bids: list[Bid]) -> None:
        self.bids = bids
        self.starts = [b[1] - _EPS for b in bids]
        self.ordered = all(a[1] <= b[1] and a[2] <= b[2] for a, b in zip(bids, bids[1:], strict=False))

    def first_containing(self, s: float, e: float) -> Bid | None:
        if not self.ordered:
            return next((b for b in self.bids if b[1] - _EPS <= s and e <= b[2] + _EPS), None)
        found = None
        j = bisect.bisect_right(self.starts, s) - 1  # the last bid starting at or before s (with tolerance)
        while j >= 0 and e <= self.bids[j][2] + _EPS:  # ends fall going back: stop at the first too short
            found, j = self.bids[j], j - 1
        return found
