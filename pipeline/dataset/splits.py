"""Speaker-disjoint train / valid / test assignment that stays put as the corpus grows.

The paper splits so that listeners never overlap between sets (paper §IV). "listener" mode does
exactly that; "person" mode is stricter (nobody appears in two splits in any role). A registry of
participant → split is persisted so adding sessions never moves anybody already assigned: moving
people would leak test identities into training of models built from an earlier release.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

SPLITS: tuple[str, str, str] = ("train", "valid", "test")
REGISTRY_VERSION = 1
_REQUIRED = ("segment_id", "session_id", "listener_id", "speaker_id", "start_s", "end_s")
_LISTED = 8  # sessions named per linked group in a warning

log = logging.getLogger(__name__)


class SplitError(RuntimeError):
    """`strict`: a split that should hold data is empty."""


@dataclass
class SplitResult:
    """Outcome of `assign_splits`.

    `segments`: copy of the included segments with a `split` column; `segment_split`: the same as
    a Series indexed by segment_id; `registry`: JSON-serialisable assignments to persist;
    `excluded`: segments left out (`segment_id, reason`); `report`: per-split numbers.
    """

    segments: pd.DataFrame
    segment_split: pd.Series
    registry: dict
    excluded: pd.DataFrame
    report: dict = field(default_factory=dict)


def validate_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative numbers summing to 1 (±1e-6) with train > 0."""
    vals = tuple(float(r) for r in ratios)
    if len(vals) != 3:
        raise ValueError(f"ratios must be (train, valid, test), got {ratios!r}")
    if any(not math.isfinite(r) or r < 0 for r in vals):
        raise ValueError(f"ratios must be finite and >= 0, got {ratios!r}")
    if abs(sum(vals) - 1.0) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {ratios!r} (sum {sum(vals)!r})")
    if vals[0] <= 0:
        raise ValueError(f"train ratio must be > 0, got {ratios!r}")
    return vals  # type: ignore[return-value]


def assign_splits(
    segments: pd.DataFrame,
    *,
    mode: Literal["listener", "person"] = "listener",
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    registry: dict | None = None,
    redraw: bool = False,
    strict: bool = False,
) -> SplitResult:
    """Assign every segment to train / valid / test, disjoint by person, balanced by duration.

    Units: "listener" mode — each listener id (a segment follows its listener; speakers may be in
    any split). "person" mode — connected components of the graph linking all participants of
    each session; a component (all its segments, any role) lies in one split.

    Balancing: new units are placed largest total segment duration first (ties: sha256 of
    seed and unit id), each into the split with the largest relative deficit
    (target - current) / target, target = ratio x total duration (registered units included;
    ties: train, valid, test). With >= 3 fresh units every split with ratio > 0 gets one.
    Durations are summed in integer microseconds so input row order cannot change the result.

    Growth: participants in `registry["assignments"]` never move; in person mode a component
    with registered members inherits their split. A session whose admission would join
    registered participants of different splits (sessions taken in id order) is excluded with a
    reason instead. A registry drawn with another mode / seed / ratios raises ValueError unless
    `redraw=True`, which ignores the registry and draws afresh.

    A split with ratio > 0 left empty (fewer units than splits, e.g. sessions linking everybody into
    one group in person mode) is explained in `report["warnings"]` and the log; `strict` raises
    `SplitError` instead.
    """
    if mode not in ("listener", "person"):
        raise ValueError(f"mode must be 'listener' or 'person', got {mode!r}")
    ratio_t = validate_ratios(ratios)
    seed = int(seed)
    segs = _check_segments(segments)
    fixed = {} if (registry is None or redraw) else _check_registry(registry, mode, seed, ratio_t)

    dur_us = ((segs["end_s"] - segs["start_s"]) * 1e6).round().astype("int64")
    checked = segs.assign(_dur_us=dur_us)
    segs, unit_of, members, bad_sessions = _split_units(checked, mode, fixed)
    excluded_rows: list[tuple[str, str]] = []
    excluded_s = 0.0
    if bad_sessions:
        dropped = checked.loc[checked["session_id"].isin(bad_sessions)]
        excluded_rows = [(sid, bad_sessions[sess]) for sid, sess in
                         zip(dropped["segment_id"], dropped["session_id"], strict=True)]
        excluded_s = float((dropped["end_s"] - dropped["start_s"]).sum())
    seg_unit = segs["listener_id"].map(unit_of)
    unit_dur = segs.groupby(seg_unit.to_numpy())["_dur_us"].sum().to_dict()
    unit_split, new_units = _place_units(unit_dur, members, fixed, ratio_t, seed)

    assignments = dict(fixed)
    for unit, split in unit_split.items():
        for p in members[unit]:
            assignments.setdefault(p, split)

    out = segs.drop(columns="_dur_us").copy()
    out["split"] = pd.Series([unit_split[u] for u in seg_unit], index=out.index, dtype=str)
    out = out.sort_values("segment_id", kind="stable").reset_index(drop=True)
    excluded = pd.DataFrame(sorted(excluded_rows), columns=["segment_id", "reason"]).astype(str)
    new_registry = {
        "version": REGISTRY_VERSION,
        "mode": mode,
        "seed": seed,
        "ratios": list(ratio_t),
        "assignments": dict(sorted(assignments.items())),
    }
    report = _report(
        out, excluded, excluded_s, bad_sessions, unit_split, members, ratio_t, new_units, mode, seed
    )
    report["warnings"] = _empty_split_warnings(segs, report, members, mode)
    for warning in report["warnings"]:
        if strict:
            raise SplitError(f"--strict: {warning}")
        log.warning("%s", warning)
    return SplitResult(
        segments=out,
        segment_split=pd.Series(out["split"].to_numpy(), index=out["segment_id"].to_numpy(), name="split"),
        registry=new_registry,
        excluded=excluded,
        report=report,
    )


def _split_units(segs: pd.DataFrame, mode: str, fixed: dict[str, str]
                 ) -> tuple[pd.DataFrame, dict[str, str], dict[str, list[str]], dict[str, str]]:
    """The units that move together -> (segments kept, unit of each listener, members of each unit,
    excluded session -> reason). Listener mode: one unit per listener; person mode: the components of
    the participants graph, minus sessions that would join registered participants of two splits."""
    if mode == "listener":
        unit_of = {p: p for p in segs["listener_id"].unique()}
        return segs, unit_of, {p: [p] for p in unit_of}, {}
    unit_of, members, bad_sessions = _person_components(segs, fixed)
    if bad_sessions:
        segs = segs.loc[~segs["session_id"].isin(bad_sessions)]
    return segs, unit_of, members, bad_sessions


def _place_units(unit_dur: dict[str, int], members: dict[str, list[str]], fixed: dict[str, str],
                 ratio_t: tuple[float, ...], seed: int) -> tuple[dict[str, str], list[str]]:
    """Registered units keep their split; new ones go, largest first, to the split with the largest
    relative deficit (the balancing rule of `assign_splits`) -> (unit -> split, new units in order)."""
    total = sum(unit_dur.values())
    targets = [r * total for r in ratio_t]
    current = [0, 0, 0]
    unit_split: dict[str, str] = {}
    new_units = []
    for unit, d in unit_dur.items():
        reg = {fixed[p] for p in members[unit] if p in fixed}
        if reg:
            (split,) = reg  # person components never hold two registered splits (see above)
            unit_split[unit] = split
            current[SPLITS.index(split)] += d
        else:
            new_units.append(unit)
    new_units.sort(key=lambda u: (-unit_dur[u], _seeded_key(seed, u)))
    for unit in new_units:
        best = max(
            (i for i in range(3) if ratio_t[i] > 0),
            key=lambda i: ((targets[i] - current[i]) / targets[i] if targets[i] > 0 else -math.inf, -i),
        )
        unit_split[unit] = SPLITS[best]
        current[best] += unit_dur[unit]
    return unit_split, new_units


def _seeded_key(seed: int, unit: str) -> str:
    """Tie-break independent of PYTHONHASHSEED."""
    return hashlib.sha256(f"{seed}\x00{unit}".encode()).hexdigest()


def _check_segments(segments: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _REQUIRED if c not in segments.columns]
    if missing:
        raise ValueError(f"segments lack columns {missing}")
    segs = segments.copy()
    for c in ("segment_id", "session_id", "listener_id", "speaker_id"):
        segs[c] = segs[c].astype(str)
    dup = segs["segment_id"][segs["segment_id"].duplicated()]
    if len(dup):
        raise ValueError(f"duplicate segment ids, e.g. {dup.iloc[0]!r}")
    if (segs["end_s"] <= segs["start_s"]).any():
        raise ValueError("segments must have end_s > start_s")
    return segs


def _check_registry(
    registry: dict, mode: str, seed: int, ratios: tuple[float, float, float]
) -> dict[str, str]:
    """Return the registry's assignments if it was drawn with the requested settings."""
    if registry.get("version") != REGISTRY_VERSION:
        raise ValueError(
            f"split registry version must be {REGISTRY_VERSION}, found {registry.get('version')!r}"
        )
    reg_ratios = tuple(float(r) for r in registry.get("ratios", ()))
    same = (
        registry.get("mode") == mode
        and registry.get("seed") == seed
        and len(reg_ratios) == 3
        and all(abs(a - b) <= 1e-9 for a, b in zip(reg_ratios, ratios, strict=True))
    )
    if not same:
        raise ValueError(
            f"split registry was drawn with mode={registry.get('mode')!r}, seed={registry.get('seed')!r}, "
            f"ratios={registry.get('ratios')!r}, but this run asks for mode={mode!r}, seed={seed!r}, "
            f"ratios={list(ratios)!r}. Use the registry's settings to keep existing assignments, or pass "
            f"redraw=True to draw all splits afresh (participants may change split)."
        )
    assignments = registry.get("assignments", {})
    bad = {p: s for p, s in assignments.items() if s not in SPLITS}
    if bad:
        raise ValueError(f"split registry has unknown split names {bad}; expected one of {SPLITS}")
    return {str(p): str(s) for p, s in assignments.items()}


def _person_components(
    segs: pd.DataFrame, fixed: dict[str, str]
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Union participants session by session (sorted ids); refuse sessions that would join splits.

    Returns (participant -> unit id, unit id -> sorted members, excluded session -> reason).
    The unit id is the smallest member id, so it does not depend on row order.
    """
    parent: dict[str, str] = {}
    split_of: dict[str, str | None] = {}  # root -> registered split of the component

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    people_of: dict[str, set[str]] = {}
    for col in ("listener_id", "speaker_id"):
        for sess, p in zip(segs["session_id"], segs[col], strict=True):
            people_of.setdefault(sess, set()).add(p)
    bad: dict[str, str] = {}
    for sess in sorted(people_of):
        people = sorted(people_of[sess])
        for p in people:
            if p not in parent:
                parent[p] = p
                split_of[p] = fixed.get(p)
        roots = {find(p) for p in people}
        splits = {split_of[r] for r in roots} - {None}
        if len(splits) > 1:
            named = {p: fixed[p] for p in people if p in fixed}
            via = sorted(
                f"{p}->{split_of[find(p)]}"
                for p in people
                if p not in fixed and split_of[find(p)] is not None
            )
            bad[sess] = (
                f"session {sess} would join participants registered in different splits "
                f"({', '.join(f'{p}: {s}' for p, s in sorted(named.items()))}"
                f"{'; linked via ' + ', '.join(via) if via else ''}); excluded so that nobody moves split "
                f"and splits stay person-disjoint"
            )
            continue
        root = min(roots)
        for r in roots:
            parent[r] = root
        split_of[root] = next(iter(splits), None)
    # Participants seen only in excluded sessions stay out of every unit.
    used = {p for sess, ps in people_of.items() if sess not in bad for p in ps}
    members: dict[str, list[str]] = {}
    for p in sorted(used):
        members.setdefault(find(p), []).append(p)
    unit_of: dict[str, str] = {}
    named_members: dict[str, list[str]] = {}
    for ms in members.values():
        uid = ms[0]
        named_members[uid] = ms
        for p in ms:
            unit_of[p] = uid
    return unit_of, named_members, bad


def _report(
    out: pd.DataFrame,
    excluded: pd.DataFrame,
    excluded_s: float,
    bad_sessions: dict[str, str],
    unit_split: dict[str, str],
    members: dict[str, list[str]],
    ratios: tuple[float, float, float],
    new_units: list[str],
    mode: str,
    seed: int,
) -> dict:
    dur = out["end_s"] - out["start_s"]
    total = float(dur.sum())
    per_split = {}
    for i, split in enumerate(SPLITS):
        m = out["split"] == split
        units = sorted(u for u, s in unit_split.items() if s == split)
        per_split[split] = {
            "n_segments": int(m.sum()),
            "duration_s": round(float(dur[m].sum()), 3),
            "ratio": round(float(dur[m].sum()) / total, 4) if total > 0 else 0.0,
            "target_ratio": ratios[i],
            "n_units": len(units),
            "participants": sorted(p for u in units for p in members[u]),
            "listeners": sorted(out.loc[m, "listener_id"].unique().tolist()),
        }
    return {
        "mode": mode,
        "seed": seed,
        "total_duration_s": round(total, 3),
        "splits": per_split,
        "new_units": sorted(new_units),
        "n_excluded": int(len(excluded)),
        "excluded_duration_s": round(excluded_s, 3),
        "excluded_sessions": dict(sorted(bad_sessions.items())),
    }


def _empty_split_warnings(segs: pd.DataFrame, report: dict, members: dict[str, list[str]], mode: str) -> list[str]:
    """Why a split with ratio > 0 got no segment, and what to do (empty when none is empty)."""
    splits = report["splits"]
    empty = [s for s in SPLITS if splits[s]["target_ratio"] > 0 and not splits[s]["n_segments"]]
    if not empty or segs.empty:
        return []
    wanted = sum(1 for s in SPLITS if splits[s]["target_ratio"] > 0)
    which = f"{' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty"
    if mode == "listener":
        return [f"--disjoint listener: {which}: {len(members)} listener(s) for {wanted} splits with a share > 0, "
                f"and a listener goes to one split whole. Add sessions with other listeners, or give the empty "
                f"split(s) a share of 0 (--split-ratios)."]
    people_of: dict[str, set[str]] = {}
    for col in ("listener_id", "speaker_id"):
        for sess, p in zip(segs["session_id"], segs[col], strict=True):
            people_of.setdefault(str(sess), set()).add(str(p))
    groups = [_group_text(ms, people_of) for _, ms in sorted(members.items())]
    return [f"--disjoint person: {which}: the {sum(map(len, members.values()))} participants form "
            f"{len(members)} group(s) of people linked by shared sessions, for {wanted} splits, and a group goes "
            f"to one split whole: {'; '.join(groups)}. Use --disjoint listener (each person is listener in one "
            f"split only, the paper's rule), or add sessions whose participants appear in no other session."]


def _group_text(group: list[str], people_of: dict[str, set[str]]) -> str:
    """`{A, B, C} via s1 (A, B), s2 (B, C); s2 alone links ...`: a group, the sessions linking it, and the
    sessions without which it would fall apart (those are what ties otherwise separate people)."""
    sessions = sorted(s for s, ps in people_of.items() if ps & set(group))
    listed = ", ".join(f"{s} ({', '.join(sorted(people_of[s]))})" for s in sessions[:_LISTED])
    more = f" and {len(sessions) - _LISTED} more" if len(sessions) > _LISTED else ""
    bridges = [s for s in sessions if not _connected(group, {o: people_of[o] for o in sessions if o != s})]
    tail = f"; without {', '.join(bridges[:_LISTED])} it would split up" if bridges else ""
    return f"{{{', '.join(group)}}} via {listed}{more}{tail}"


def _connected(people: list[str], sessions: dict[str, set[str]]) -> bool:
    """Whether `sessions` (id -> participants) link all of `people` into one group."""
    sessions_of: dict[str, list[str]] = {}
    for sess, ps in sessions.items():
        for p in ps:
            sessions_of.setdefault(p, []).append(sess)
    reached, frontier = {people[0]}, [people[0]]
    while frontier:
        for sess in sessions_of.get(frontier.pop(), []):
            new = sessions[sess] - reached
            reached |= new
            frontier += sorted(new)
    return set(people) <= reached
