"""Reading turn files, format by format: text decoding, CSV and ELAN .eaf, into raw spans.

Spans are checked and merged by `pipeline.conversation.annotations.read_turns`; here every format
problem becomes an `AnnotationError` naming the file and the line / tier / annotation. No pympi
dependency: the formats we accept are small enough to parse here exactly.
"""

from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.errors import AnnotationError, quote_input

# CSV header names accepted for the participant column (the first is the documented one).
_PARTICIPANT_ALIASES = ("participant_id", "participant", "speaker", "speaker_id")


@dataclass(frozen=True)
class RawSpan:
    """One annotated span before validation; `where` locates it in the file for error messages."""

    participant_id: str
    start: object
    end: object
    label: str
    where: str


def read_annotation_text(path: Path) -> str:
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


def _records(reader: Any, path: Path) -> Iterator[list[str]]:
    """The rows of a csv.reader; a CSV syntax error (a field over the size limit, a NUL byte) names the line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise AnnotationError(path, f"not valid CSV: {exc}", f"line {reader.line_num}") from None
        yield row


def read_csv_spans(path: Path) -> list[RawSpan]:
    """Rows under a header naming the participant (`participant_id` or an alias), `start_s`, `end_s`
    and optionally `label`; blank lines are skipped."""
    reader = csv.reader(io.StringIO(read_annotation_text(path), newline=""))
    header: list[str] | None = None
    raws: list[RawSpan] = []
    for row in _records(reader, path):
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
                    f"found {quote_input(','.join(header))}",
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
            RawSpan(
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


def read_eaf_spans(path: Path, known: set[str] | None) -> list[RawSpan]:
    """Independent tiers with ALIGNABLE_ANNOTATIONs; dependent (PARENT_REF) / REF tiers are ignored."""
    try:
        root = ET.fromstring(read_annotation_text(path).encode("utf-8"))
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
    raws: list[RawSpan] = []
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
            raws.append(RawSpan(pid, times[0], times[1], value, where))
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

