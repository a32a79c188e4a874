"""The seeded dialogue of a sample session: who talks when, in phrases, with listener backchannels.

Two participants alternate holding the floor (turns of ~4-20 s made of 1-3 s phrases separated by
0.15-0.4 s pauses; 0.2-1.0 s gaps, occasional short overlaps), balanced so each holds the floor
about half the time. The listener produces short backchannels ("un", "hai", ...; 0.3-0.8 s), mostly
just after the speaker's phrase ends. All times are rounded to milliseconds, so annotations and
ground truth agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BACKCHANNEL_LABELS: tuple[str, ...] = ("un", "hai", "ee", "haa", "un un")
TALK_LABEL = "talk"


def _r3(v: float) -> float:
    return round(float(v), 3)


def make_script(pids: Sequence[str], duration_s: float, rng: np.random.Generator) -> dict[str, Any]:
    """Seeded two-party dialogue: alternating turns made of phrases, gaps / short overlaps between
    turns, and listener backchannels (mostly just after the speaker's phrase ends)."""
    if len(pids) != 2:
        raise ValueError("the sample dialogue has exactly two participants")
    turns = _make_turns(pids, duration_s, rng)
    backchannels = _make_backchannels(turns, pids, rng)
    return {"participants": list(pids), "duration_s": float(duration_s), "turns": turns,
            "backchannels": backchannels}


def _turn_target(lead: float, rng: np.random.Generator) -> float:
    """Length of the next turn. Mostly 6-12 s turns (the paper's 6-11 s listener segments), some long
    ones; a participant far ahead (`lead`, seconds of floor) gets a short one, keeping the balance."""
    if lead > 6.0:
        return rng.uniform(3.5, 7.0)
    if lead < -6.0:
        return rng.uniform(9.0, 15.0)
    if rng.random() < 0.7:
        return rng.uniform(5.0, 10.0)
    return rng.uniform(10.0, 17.0)


def _phrases(t: float, target: float, end_limit: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Phrases of one turn starting at `t` until the turn reaches `target` s (or `end_limit`)."""
    phrases: list[tuple[float, float]] = []
    p = t
    while True:
        d = rng.uniform(1.0, 3.0)
        if p + d > end_limit:
            d = end_limit - p
            if d >= 0.8:
                phrases.append((_r3(p), _r3(p + d)))
            break
        phrases.append((_r3(p), _r3(p + d)))
        if phrases[-1][1] - phrases[0][0] >= target:
            break
        p = p + d + rng.uniform(0.15, 0.4)
    return phrases


def _make_turns(pids: Sequence[str], duration_s: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    floor = [0.0, 0.0]
    cur = int(rng.integers(2))
    t = float(rng.uniform(0.5, 1.2))
    end_limit = duration_s - 0.6
    while t < end_limit - 2.5:
        target = _turn_target(floor[cur] - floor[1 - cur], rng)
        phrases = _phrases(t, target, end_limit, rng)
        if not phrases or phrases[-1][1] - phrases[0][0] < 2.5:
            break
        turns.append({"participant_id": pids[cur], "start_s": phrases[0][0], "end_s": phrases[-1][1],
                      "phrases": [list(x) for x in phrases]})
        floor[cur] += phrases[-1][1] - phrases[0][0]
        gap = -rng.uniform(0.1, 0.4) if rng.random() < 0.12 else rng.uniform(0.2, 1.0)
        t = phrases[-1][1] + gap
        cur = 1 - cur
    return turns


def _make_backchannels(turns: list[dict[str, Any]], pids: Sequence[str],
                       rng: np.random.Generator) -> list[dict[str, Any]]:
    backchannels: list[dict[str, Any]] = []
    for turn in turns:
        listener = pids[1] if turn["participant_id"] == pids[0] else pids[0]
        last_end = -1.0
        cands: list[tuple[float, float | None]] = []
        for s, e in turn["phrases"][:-1]:
            if rng.random() < 0.4:  # near a phrase end
                cands.append((e + rng.uniform(0.05, 0.45), e))
            if rng.random() < 0.08:  # occasionally mid-phrase
                cands.append((rng.uniform(s, e), None))
        for start, trigger in sorted(cands, key=lambda c: c[0]):
            dur = rng.uniform(0.3, 0.8)
            label = BACKCHANNEL_LABELS[int(rng.integers(len(BACKCHANNEL_LABELS)))]
            if start < last_end + 0.3 or start + dur > turn["end_s"] - 0.5:
                continue
            backchannels.append({"participant_id": listener, "start_s": _r3(start), "end_s": _r3(start + dur),
                                 "label": label, "phrase_end_s": None if trigger is None else _r3(trigger)})
            last_end = start + dur
    backchannels.sort(key=lambda b: (b["start_s"], b["participant_id"]))
    return backchannels


def talk_intervals(script: dict[str, Any], unit: str = "turn") -> list[tuple[str, float, float, str]]:
    """Annotated talk: one interval per turn (unit="turn") or per phrase (unit="ipu"), plus every
    backchannel (annotated as talk with its token as label). Sorted by start time."""
    rows: list[tuple[str, float, float, str]] = []
    for turn in script["turns"]:
        if unit == "turn":
            rows.append((turn["participant_id"], turn["start_s"], turn["end_s"], TALK_LABEL))
        elif unit == "ipu":
            rows.extend((turn["participant_id"], s, e, TALK_LABEL) for s, e in turn["phrases"])
        else:
            raise ValueError(f"unit must be 'turn' or 'ipu', not {unit!r}")
    rows.extend((b["participant_id"], b["start_s"], b["end_s"], b["label"]) for b in script["backchannels"])
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows
