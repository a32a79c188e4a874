"""Turn annotations: read CSV / ELAN / Praat files into one table, then derive who holds the floor.

Listener segments are cut from floor intervals ("listener behaviour while the other party
holds the turn"), so the readers are strict: every problem is an `AnnotationError` naming the file and
the line / tier / interval, because a silently misread turn file poisons every segment after it.
No pympi / praatio dependency: the formats we accept are small enough to parse here exactly.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.common.errors import AnnotationError

TURN_COLUMNS = ["participant_id", "start_s", "end_s", "label"]
FLOOR_COLUMNS = ["holder_id", "start_s", "end_s"]
BACKCHANNEL_COLUMNS = ["participant_id", "start_s", "end_s", "holder_id"]

# Tolerance on `duration_s`: annotation tools snap to their own grid, media durations are rounded.
DURATION_SLACK_S = 0.5

# CSV header names accepted for the participant column (the first is the documented one).
_PARTICIPANT_ALIASES = ("participant_id", "participant", "speaker", "speaker_id")


@dataclass(frozen=True)
class _Raw:
    """One annotated span before validation; `where` locates it in the file for error messages."""

    participant_id: str
    start: object
    end: object
    label: str
    where: str


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


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
        raws = _read_csv(path)
    elif suffix == ".eaf":
        raws = _read_eaf(path, known)
    elif suffix == ".textgrid":
        raws = _read_textgrid(path, known)
    else:
        raise AnnotationError(
            path, f"unsupported turn file type {path.suffix!r}: expected .csv, .eaf or .TextGrid"
        )
    rows = [_validate(path, r, known, duration_s) for r in raws]
    return _merge_same_participant(rows)


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


# ----------------------------------------------------------------------------------------------
# Floor helpers
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Validation and merging
# ----------------------------------------------------------------------------------------------


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
    path: Path, r: _Raw, known: set[str] | None, duration_s: float | None
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


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """Decode UTF-8 (optional BOM) or UTF-16 with BOM; anything else is an annotation error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(path, f"cannot read turn file: {exc}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        enc = "utf-16"
    elif data.startswith(b"\xef\xbb\xbf"):
        enc = "utf-8-sig"
    else:
        enc = "utf-8"
    try:
        return data.decode(enc)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AnnotationError(
            path,
            f"expected UTF-8 or UTF-16 text with BOM, found undecodable bytes ({exc.reason})",
            f"line {line}",
        ) from None


def _read_csv(path: Path) -> list[_Raw]:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    header: list[str] | None = None
    raws: list[_Raw] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip() for c in row]
            pcol = next((a for a in _PARTICIPANT_ALIASES if a in header), None)
            missing = [c for c in ("start_s", "end_s") if c not in header]
            if pcol is None:
                missing.insert(0, "participant_id")
            if missing:
                raise AnnotationError(
                    path,
                    f"missing column(s) {missing}: expected header participant_id,start_s,end_s[,label], "
                    f"found {header}",
                    f"line {line}",
                )
            ip, i0, i1 = header.index(pcol), header.index("start_s"), header.index("end_s")
            il = header.index("label") if "label" in header else None
            continue
        if len(row) != len(header):
            raise AnnotationError(
                path, f"expected {len(header)} fields as in the header, found {len(row)}", f"line {line}"
            )
        raws.append(
            _Raw(
                participant_id=row[ip],
                start=row[i0].strip(),
                end=row[i1].strip(),
                label=row[il] if il is not None else "",
                where=f"line {line}",
            )
        )
    if header is None:
        raise AnnotationError(
            path, "empty file: expected header participant_id,start_s,end_s[,label]", "line 1"
        )
    return raws


# ----------------------------------------------------------------------------------------------
# ELAN .eaf
# ----------------------------------------------------------------------------------------------


def _read_eaf(path: Path, known: set[str] | None) -> list[_Raw]:
    """Independent tiers with ALIGNABLE_ANNOTATIONs; dependent (PARENT_REF) / REF tiers are ignored."""
    try:
        root = ET.fromstring(_read_text(path).encode("utf-8"))
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else None
        raise AnnotationError(
            path, f"not well-formed ELAN XML: {exc}", f"line {line}" if line else None
        ) from None
    if root.tag != "ANNOTATION_DOCUMENT":
        raise AnnotationError(path, f"expected root element ANNOTATION_DOCUMENT, found {root.tag!r}")
    slots: dict[str, str | None] = {}
    for ts in root.iter("TIME_SLOT"):
        sid = ts.get("TIME_SLOT_ID")
        if sid:
            slots[sid] = ts.get("TIME_VALUE")
    raws: list[_Raw] = []
    for tier in root.findall("TIER"):
        tier_id = tier.get("TIER_ID", "")
        if tier.get("PARENT_REF"):
            continue  # dependent tier (words, glosses): its parent carries the talk span
        anns = tier.findall("ANNOTATION/ALIGNABLE_ANNOTATION")
        if not anns and tier.findall("ANNOTATION/REF_ANNOTATION"):
            continue
        pid = _eaf_participant(path, tier, tier_id, known)
        for ann in anns:
            aid = ann.get("ANNOTATION_ID", "?")
            where = f"tier {tier_id!r}, annotation {aid!r}"
            times = []
            for ref_attr in ("TIME_SLOT_REF1", "TIME_SLOT_REF2"):
                ref = ann.get(ref_attr)
                if ref is None or ref not in slots:
                    raise AnnotationError(
                        path, f"{ref_attr} must name a TIME_SLOT in TIME_ORDER, found {ref!r}", where
                    )
                val = slots[ref]
                if val is None:
                    raise AnnotationError(
                        path, f"time slot {ref!r} has no TIME_VALUE: expected aligned times in ms", where
                    )
                try:
                    ms = float(val)
                except ValueError:
                    raise AnnotationError(
                        path, f"time slot {ref!r} TIME_VALUE must be milliseconds, found {val!r}", where
                    ) from None
                times.append(ms / 1000.0 if math.isfinite(ms) else ms)
            value = ann.findtext("ANNOTATION_VALUE") or ""
            raws.append(_Raw(pid, times[0], times[1], value, where))
    return raws


def _eaf_participant(path: Path, tier: ET.Element, tier_id: str, known: set[str] | None) -> str:
    """TIER_ID is the participant id; the PARTICIPANT attribute is a fallback when ids are known."""
    if known is None:
        return tier_id
    for cand in (tier_id, (tier.get("PARTICIPANT") or "").strip()):
        if cand and cand in known:
            return cand
    raise AnnotationError(
        path,
        f"tier {tier_id!r} (PARTICIPANT={tier.get('PARTICIPANT')!r}) is not a known participant: "
        f"expected one of {sorted(known)}",
        f"tier {tier_id!r}",
    )


# ----------------------------------------------------------------------------------------------
# Praat TextGrid (long and short text formats)
# ----------------------------------------------------------------------------------------------

_TG_TOKEN = re.compile(
    r'(?P<str>"(?:[^"]|"")*")'
    r"|(?P<flag><[A-Za-z]+>)"
    r"|(?P<br>\[[^\]\n]*\]:?)"
    r"|(?P<comment>![^\n]*)"
    r"|(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?=\s|$)"
    r"|(?P<word>[^\s\"\[]+)"
    r"|(?P<ws>\s+)"
)
# Labels of the long format; skipped like Praat does. Any other bare word is an error.
_TG_LABELS = {
    "file",
    "type",
    "=",
    "object",
    "class",
    "xmin",
    "xmax",
    "tiers",
    "size",
    "item",
    "intervals",
    "points",
    "text",
    "number",
    "mark",
    "name",
    "",
}


@dataclass
class _Tok:
    kind: str  # "str" | "num" | "flag" | "word" (unexpected bare text)
    value: str
    line: int


class _TokenStream:
    """Praat text files are a sequence of numbers, strings and flags; labels only decorate them."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.toks: list[_Tok] = []
        line = 1
        pos = 0
        while pos < len(text):
            m = _TG_TOKEN.match(text, pos)
            if m is None:  # pragma: no cover - the word branch matches anything else
                raise AnnotationError(path, f"unreadable text {text[pos : pos + 20]!r}", f"line {line}")
            kind = m.lastgroup
            val = m.group()
            if kind == "str":
                self.toks.append(_Tok("str", val[1:-1].replace('""', '"'), line))
            elif kind in ("num", "flag"):
                self.toks.append(_Tok(kind, val, line))
            elif kind == "word" and val.lower().rstrip(":?") not in _TG_LABELS:
                # Kept as a token so the error names the tier / interval where it was expected.
                self.toks.append(_Tok("word", val, line))
            line += val.count("\n")
            pos = m.end()
        self.i = 0

    def _next(self, expected: str, where: str) -> _Tok:
        if self.i >= len(self.toks):
            last = self.toks[-1].line if self.toks else 1
            raise AnnotationError(self.path, f"file ends early: expected {expected}", f"{where}, line {last}")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def string(self, where: str) -> str:
        tok = self._next("a quoted string", where)
        if tok.kind != "str":
            raise AnnotationError(
                self.path, f"expected a quoted string, found {tok.value!r}", f"{where}, line {tok.line}"
            )
        return tok.value

    def number(self, what: str, where: str) -> tuple[float, int]:
        tok = self._next(f"{what} (a number)", where)
        if tok.kind != "num":
            raise AnnotationError(
                self.path, f"{what} must be a number, found {tok.value!r}", f"{where}, line {tok.line}"
            )
        return float(tok.value), tok.line

    def count(self, what: str, where: str) -> int:
        x, line = self.number(what, where)
        if x < 0 or x != int(x):
            raise AnnotationError(
                self.path, f"{what} must be a whole number >= 0, found {x!r}", f"{where}, line {line}"
            )
        return int(x)

    def flag(self, where: str) -> str:
        tok = self._next("<exists> or <absent>", where)
        if tok.kind != "flag":
            raise AnnotationError(
                self.path, f"expected <exists> or <absent>, found {tok.value!r}", f"{where}, line {tok.line}"
            )
        return tok.value

    @property
    def done(self) -> bool:
        return self.i >= len(self.toks)


def _read_textgrid(path: Path, known: set[str] | None) -> list[_Raw]:
    """Non-blank intervals of IntervalTiers are talk; TextTiers (points) are skipped."""
    ts = _TokenStream(path, _read_text(path))
    ftype = ts.string("header")
    if not ftype.startswith("ooTextFile"):
        raise AnnotationError(path, f"expected a Praat text file ('ooTextFile'), found {ftype!r}", "line 1")
    oclass = ts.string("header")
    if oclass != "TextGrid":
        raise AnnotationError(path, f"expected object class 'TextGrid', found {oclass!r}", "header")
    ts.number("xmin", "header")
    ts.number("xmax", "header")
    n_tiers = ts.count("tier count", "header") if ts.flag("header") == "<exists>" else 0
    raws: list[_Raw] = []
    for t in range(1, n_tiers + 1):
        tclass = ts.string(f"tier {t}")
        name = ts.string(f"tier {t}")
        where_t = f"tier {name!r}"
        ts.number("tier xmin", where_t)
        ts.number("tier xmax", where_t)
        if tclass == "TextTier":
            for k in range(1, ts.count("point count", where_t) + 1):
                ts.number("point time", f"{where_t}, point {k}")
                ts.string(f"{where_t}, point {k}")
            continue
        if tclass != "IntervalTier":
            raise AnnotationError(path, f"expected IntervalTier or TextTier, found {tclass!r}", where_t)
        pid = name.strip()
        if known is not None and pid not in known:
            raise AnnotationError(
                path, f"tier {name!r} is not a known participant: expected one of {sorted(known)}", where_t
            )
        for k in range(1, ts.count("interval count", where_t) + 1):
            where = f"{where_t}, interval {k}"
            x0, line = ts.number("interval xmin", where)
            x1, _ = ts.number("interval xmax", where)
            text = ts.string(where)
            if text.strip():
                raws.append(_Raw(pid, x0, x1, text, f"{where}, line {line}"))
    if not ts.done:
        tok = ts.toks[ts.i]
        raise AnnotationError(
            path, f"expected end of file after {n_tiers} tier(s), found {tok.value!r}", f"line {tok.line}"
        )
    return raws
