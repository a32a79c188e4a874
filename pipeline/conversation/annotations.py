"""Turn annotations: read a CSV / ELAN / Praat file into one validated table of talk spans.

The readers are strict: every problem is an `AnnotationError` naming the file and the line / tier /
interval, because a silently misread turn file poisons every listener segment cut from it. The
format parsers are `turn_files` (CSV, ELAN) and `textgrid` (Praat); the floor rules are in `floor`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from pathlib import Path

import pandas as pd

from pipeline.common.errors import AnnotationError
from pipeline.conversation.textgrid import read_textgrid_spans
from pipeline.conversation.turn_files import RawSpan, read_csv_spans, read_eaf_spans

# Tolerance on `duration_s`: annotation tools snap to their own grid, media durations are rounded.
DURATION_SLACK_S = 0.5


def read_turns(
    path: str | Path,
    participant_ids: Collection[str] | None = None,
    *,
    duration_s: float | None = None,
) -> pd.DataFrame:
    """Read a turn file into `participant_id, start_s, end_s, label`, sorted by start then participant.

    Format by file name: `*.csv` (header `participant_id,start_s,end_s[,label]`; `speaker` is
    accepted for `participant_id`), `*.eaf` (ELAN: one independent tier per participant, TIER_ID =
    participant id, PARTICIPANT attribute as fallback) or `*.TextGrid` (Praat long or short text,
    UTF-8 or UTF-16 with BOM; one IntervalTier per participant; non-blank intervals are talk).

    Validation (each failure raises `AnnotationError` with file and line / tier / interval):
    non-numeric, NaN/inf or negative times, end <= start, unknown participant or tier (when
    `participant_ids` is given), end beyond `duration_s + 0.5 s` (when given). A participant with
    no turns is fine. Overlapping or touching spans of the SAME participant are merged into one
    span (labels joined with " | "); different participants may overlap freely.
    """
    path = Path(path)
    known = None if participant_ids is None else {str(p) for p in participant_ids}
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raws = read_csv_spans(path)
    elif suffix == ".eaf":
        raws = read_eaf_spans(path, known)
    elif suffix == ".textgrid":
        raws = read_textgrid_spans(path, known)
    else:
        raise AnnotationError(
            path, f"unsupported turn file type {path.suffix!r}: expected .csv, .eaf or .TextGrid"
        )
    rows = [_validate(path, r, known, duration_s) for r in raws]
    return _merge_same_participant(rows)


def _to_float(path: Path, value: object, what: str, where: str) -> float:
    """Parse one time value; non-numeric, NaN and inf are annotation errors."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AnnotationError(path, f"{what} must be a number of seconds, found {value!r}", where) from None
    if not math.isfinite(x):
        raise AnnotationError(path, f"{what} must be a finite number of seconds, found {value!r}", where)
    if x < 0:
        raise AnnotationError(path, f"{what} must be >= 0 s, found {x!r}", where)
    return x


def _validate(
    path: Path, r: RawSpan, known: set[str] | None, duration_s: float | None
) -> tuple[str, float, float, str]:
    """Check one span; return `(participant, start, end, label)`."""
    pid = r.participant_id.strip()
    if not pid:
        raise AnnotationError(path, "participant id is empty", r.where)
    if known is not None and pid not in known:
        raise AnnotationError(path, f"unknown participant {pid!r}: expected one of {sorted(known)}", r.where)
    start = _to_float(path, r.start, "start", r.where)
    end = _to_float(path, r.end, "end", r.where)
    if end <= start:
        raise AnnotationError(path, f"end must be after start, found start={start!r} end={end!r}", r.where)
    if duration_s is not None and end > duration_s + DURATION_SLACK_S:
        raise AnnotationError(
            path,
            f"end {end!r} s is beyond the recording: expected <= {duration_s:g} s "
            f"(+{DURATION_SLACK_S:g} s tolerance)",
            r.where,
        )
    return pid, start, end, r.label.strip()


def _merge_same_participant(rows: Iterable[tuple[str, float, float, str]]) -> pd.DataFrame:
    """Merge overlapping/touching spans per participant, then sort by start, participant."""
    by_pid: dict[str, list[tuple[float, float, str]]] = {}
    for pid, s, e, lab in rows:
        by_pid.setdefault(pid, []).append((s, e, lab))
    out: list[tuple[str, float, float, str]] = []
    for pid, spans in by_pid.items():
        spans.sort()
        cur_s, cur_e, labels = spans[0][0], spans[0][1], [spans[0][2]]
        for s, e, lab in spans[1:]:
            if s <= cur_e:
                cur_e = max(cur_e, e)
                labels.append(lab)
            else:
                out.append((pid, cur_s, cur_e, _join_labels(labels)))
                cur_s, cur_e, labels = s, e, [lab]
        out.append((pid, cur_s, cur_e, _join_labels(labels)))
    out.sort(key=lambda r: (r[1], r[0], r[2]))
    return pd.DataFrame(
        {
            "participant_id": pd.Series([r[0] for r in out], dtype=str),
            "start_s": pd.Series([r[1] for r in out], dtype="float64"),
            "end_s": pd.Series([r[2] for r in out], dtype="float64"),
            "label": pd.Series([r[3] for r in out], dtype=str),
        }
    )


def _join_labels(labels: list[str]) -> str:
    seen: list[str] = []
    for lab in labels:
        if lab and lab not in seen:
            seen.append(lab)
    return " | ".join(seen)
