"""Speaker-disjoint splits: disjointness, balance, determinism, stability under growth, conflicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.conversation.segments import parse_segment_id, segment_id
from pipeline.dataset.splits import SPLITS, assign_splits, validate_ratios

REPO = Path(__file__).resolve().parents[1]


def make_segments(sessions, seg_s: float = 8.0) -> pd.DataFrame:
    """sessions: (session_id, [participants], {listener: n_segments}) -> segments table."""
    rows = []
    for sess, people, counts in sessions:
        for listener, n in counts.items():
            speaker = next(p for p in people if p != listener)
            for k in range(n):
                start = round(k * seg_s, 2)
                rows.append((segment_id(sess, listener, k), sess, listener, speaker, start, start + seg_s))
    return pd.DataFrame(
        rows, columns=["segment_id", "session_id", "listener_id", "speaker_id", "start_s", "end_s"]
    )


def pair_sessions(n_people: int = 20, seed: int = 1, prefix: str = "p", chain: bool = False):
    """Sessions pairing p00-p01, p02-p03, ... (or a chain p00-p01, p01-p02, ...), varied lengths."""
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:02d}" for i in range(n_people)]
    pairs = list(zip(ids, ids[1:], strict=False)) if chain else list(zip(ids[::2], ids[1::2], strict=True))
    return [
        (f"S{prefix}{i:03d}", [a, b], {a: int(rng.integers(5, 40)), b: int(rng.integers(5, 40))})
        for i, (a, b) in enumerate(pairs)
    ]


def splits_of(result, col: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p, s in zip(result.segments[col], result.segments["split"], strict=True):
        out.setdefault(p, set()).add(s)
    return out


def test_listener_mode_disjoint_and_balanced():
    seg = make_segments(pair_sessions())
    res = assign_splits(seg)
    assert all(len(s) == 1 for s in splits_of(res, "listener_id").values())
    assert len(res.segment_split) == len(seg) and res.excluded.empty
    for split, target in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
        assert abs(res.report["splits"][split]["ratio"] - target) < 0.05, res.report["splits"]
    assert set(res.registry["assignments"]) == set(seg["listener_id"])
    json.loads(json.dumps(res.registry))  # JSON-serialisable
    assert res.segment_split.loc[seg["segment_id"].iloc[0]] in SPLITS


def test_person_mode_is_disjoint_in_any_role():
    sessions = pair_sessions(n_people=20) + [("X1", ["p00", "p03"], {"p00": 4, "p03": 4})]  # joins 2 pairs
    seg = make_segments(sessions)
    res = assign_splits(seg, mode="person")
    role_split: dict[str, set[str]] = {}
    for col in ("listener_id", "speaker_id"):
        for p, s in splits_of(res, col).items():
            role_split.setdefault(p, set()).update(s)
    assert all(len(s) == 1 for s in role_split.values())
    a = res.registry["assignments"]
    assert a["p00"] == a["p01"] == a["p02"] == a["p03"]  # one component
    # in listener mode a speaker may sit in another split than their listeners
    assert res.excluded.empty and all(res.report["splits"][s]["n_segments"] > 0 for s in SPLITS)


@pytest.mark.parametrize("mode", ["listener", "person"])
def test_every_split_non_empty_with_three_units(mode):
    if mode == "listener":
        sessions = [("s1", ["A", "B"], {"A": 30, "B": 2}), ("s2", ["C", "A"], {"C": 1})]
    else:
        sessions = [("s1", ["A", "B"], {"A": 30}), ("s2", ["C", "D"], {"C": 2}), ("s3", ["E", "F"], {"E": 1})]
    res = assign_splits(make_segments(sessions), mode=mode)
    assert all(res.report["splits"][s]["n_segments"] > 0 for s in SPLITS), res.report


def test_deterministic_and_row_order_independent():
    seg = make_segments(pair_sessions(seed=3))
    a = assign_splits(seg, seed=7)
    shuffled = seg.sample(frac=1.0, random_state=0).reset_index(drop=True)
    b = assign_splits(shuffled, seed=7)
    assert a.registry == b.registry
    pd.testing.assert_series_equal(a.segment_split.sort_index(), b.segment_split.sort_index())
    pd.testing.assert_frame_equal(a.segments, b.segments)


def test_independent_of_python_hash_seed():
    code = (
        "import json\n"
        "from tests.test_splits import make_segments\n"
        "from pipeline.dataset.splits import assign_splits\n"
        "s = [(f's{i}', [f'a{i}', f'b{i}'], {f'a{i}': 3, f'b{i}': 3}) for i in range(8)]\n"
        "print(json.dumps(assign_splits(make_segments(s), mode='person').registry, sort_keys=True))\n"
    )  # runs with cwd=REPO, so `tests` and `pipeline` import from this checkout
    outs = set()
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        outs.add(
            subprocess.run(
                [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
            ).stdout
        )
    assert len(outs) == 1


@pytest.mark.parametrize("mode", ["listener", "person"])
def test_stable_under_growth(mode):
    old = pair_sessions(n_people=16, seed=5)
    first = assign_splits(make_segments(old), mode=mode)
    registry = json.loads(json.dumps(first.registry))  # as persisted
    new = pair_sessions(n_people=8, seed=6, prefix="q")
    grown = assign_splits(make_segments(old + new), mode=mode, registry=registry)
    for p, s in first.registry["assignments"].items():
        assert grown.registry["assignments"][p] == s
    new_people = {p for _, ps, _ in new for p in ps}
    assert new_people <= set(grown.registry["assignments"])
    assert set(grown.report["new_units"]) <= new_people and grown.report["new_units"]
    # the grown corpus still meets the ratios within reason, and old segments keep their split
    for split, target in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
        assert abs(grown.report["splits"][split]["ratio"] - target) < 0.08, grown.report["splits"]
    common = first.segment_split.index
    pd.testing.assert_series_equal(first.segment_split, grown.segment_split.loc[common])


def test_registered_participants_absent_from_new_run_are_kept():
    reg = assign_splits(make_segments(pair_sessions(n_people=6))).registry
    res = assign_splits(make_segments(pair_sessions(n_people=4, prefix="z")), registry=reg)
    assert {k: v for k, v in res.registry["assignments"].items() if k in reg["assignments"]} == reg[
        "assignments"
    ]


def conflict_registry() -> dict:
    return {
        "version": 1,
        "mode": "person",
        "seed": 0,
        "ratios": [0.8, 0.1, 0.1],
        "assignments": {"A": "train", "C": "train", "B": "test", "D": "test"},
    }


def test_person_mode_conflict_excludes_linking_session():
    sessions = [
        ("s1", ["A", "C"], {"A": 5, "C": 5}),
        ("s2", ["B", "D"], {"B": 5, "D": 5}),
        ("s3", ["A", "B"], {"A": 3, "B": 3}),  # new session joins train and test people
        ("s4", ["A", "N"], {"N": 4}),  # N is new: joins A (train) ...
        ("s5", ["N", "B"], {"N": 2, "B": 2}),  # ... then links to B (test): excluded too
        ("s6", ["E", "F"], {"E": 6}),
    ]
    res = assign_splits(make_segments(sessions), mode="person", registry=conflict_registry())
    assert res.registry["assignments"] == {
        "A": "train",
        "B": "test",
        "C": "train",
        "D": "test",
        "N": "train",
        **{p: res.registry["assignments"][p] for p in ("E", "F")},
    }
    excluded_sessions = {parse_segment_id(sid)[0] for sid in res.excluded["segment_id"]}
    assert excluded_sessions == {"s3", "s5"}
    assert set(res.report["excluded_sessions"]) == {"s3", "s5"}
    reason = res.excluded.set_index("segment_id")["reason"]["s3~A~0000000"]
    assert "session s3" in reason and "A: train" in reason and "B: test" in reason
    assert "N->train" in res.report["excluded_sessions"]["s5"]
    assert not res.segments["session_id"].isin(["s3", "s5"]).any()
    assert res.report["n_excluded"] == 10 and res.report["excluded_duration_s"] == pytest.approx(80.0)


def test_registry_mismatch_needs_redraw():
    seg = make_segments(pair_sessions(n_people=10))
    reg = assign_splits(seg, seed=1).registry
    for kwargs in ({"seed": 2}, {"mode": "person", "seed": 1}, {"seed": 1, "ratios": (0.7, 0.15, 0.15)}):
        with pytest.raises(ValueError, match="redraw=True"):
            assign_splits(seg, registry=reg, **kwargs)
    fresh = assign_splits(seg, seed=2)
    redrawn = assign_splits(seg, seed=2, registry=reg, redraw=True)
    assert redrawn.registry == fresh.registry
    with pytest.raises(ValueError, match="unknown split"):
        assign_splits(seg, seed=1, registry={**reg, "assignments": {"p00": "dev"}})


@pytest.mark.parametrize(
    "ratios", [(0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (1.1, -0.05, -0.05), (0.8, 0.2), (float("nan"), 0.5, 0.5)]
)
def test_ratio_validation(ratios):
    with pytest.raises(ValueError, match="ratio"):
        validate_ratios(ratios)


def test_zero_ratio_split_stays_empty():
    res = assign_splits(make_segments(pair_sessions(n_people=10)), ratios=(0.9, 0.0, 0.1))
    assert res.report["splits"]["valid"]["n_segments"] == 0
    assert res.report["splits"]["test"]["n_segments"] > 0


def test_bad_segments_rejected():
    seg = make_segments(pair_sessions(n_people=4))
    with pytest.raises(ValueError, match="duplicate"):
        assign_splits(pd.concat([seg, seg.iloc[:1]]))
    with pytest.raises(ValueError, match="lack columns"):
        assign_splits(seg.drop(columns="speaker_id"))
    with pytest.raises(ValueError, match="mode"):
        assign_splits(seg, mode="speaker")  # type: ignore[arg-type]


def linked_corpus():
    """5 sessions, 6 people: the trios {A, B, C} and {D, E, F} meet twice each, s5 links C and D."""
    return [("s1", ["A", "B", "C"], {"A": 5, "B": 5, "C": 5}), ("s2", ["C", "A", "B"], {"A": 5, "B": 5, "C": 5}),
            ("s3", ["D", "E", "F"], {"D": 5, "E": 5, "F": 5}), ("s4", ["F", "D", "E"], {"D": 5, "E": 5, "F": 5}),
            ("s5", ["C", "D"], {"C": 5, "D": 5})]


def test_person_mode_with_one_linked_group_says_why_valid_and_test_are_empty(caplog):
    seg = make_segments(linked_corpus())
    with caplog.at_level("WARNING", logger="pipeline.dataset.splits"):
        res = assign_splits(seg, mode="person")
    assert {s: res.report["splits"][s]["n_segments"] for s in SPLITS} == {"train": len(seg), "valid": 0, "test": 0}
    (warning,) = res.report["warnings"]
    assert "valid and test are empty" in warning and "1 group(s)" in warning
    assert "{A, B, C, D, E, F} via s1 (A, B, C), s2 (A, B, C), s3 (D, E, F), s4 (D, E, F), s5 (C, D)" in warning
    assert "without s5 it would split up" in warning  # the only session joining the two trios
    assert "--disjoint listener" in warning and warning in caplog.text
    with pytest.raises(RuntimeError, match="--strict: --disjoint person: valid and test are empty"):
        assign_splits(seg, mode="person", strict=True)
    listener = assign_splits(seg, mode="listener", strict=True)  # 6 listeners for 3 splits: fine
    assert listener.report["warnings"] == [] and all(listener.report["splits"][s]["n_segments"] for s in SPLITS)


def test_too_few_listeners_for_the_splits_is_explained():
    res = assign_splits(make_segments([("s1", ["A", "B"], {"A": 5, "B": 5})]))
    (warning,) = res.report["warnings"]
    assert "test is empty" in warning and "2 listener(s) for 3 splits" in warning
    assert assign_splits(make_segments([("s1", ["A", "B"], {"A": 5, "B": 5})]),
                         ratios=(0.5, 0.5, 0.0)).report["warnings"] == []
