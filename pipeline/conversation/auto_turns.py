"""Automatic turns: talk spans from each participant's own audio track, exported for correction.

`automatic_turns` decodes every participant's track onto the session timeline and runs
`voice_activity` (own talk, the other's bleed suppressed). The writers export the spans as a Praat
TextGrid and an ELAN .eaf, one tier per participant, so an annotator corrects them in the tool they
know; both files read back through `pipeline.conversation.annotations.read_turns` to the same spans.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd

from pipeline.common.fsutil import write_text_atomic
from pipeline.common.logs import progress
from pipeline.config import AutoTurnsConfig
from pipeline.conversation.voice_activity import talk_spans
from pipeline.media.audio import decode_audio
from schemas.conventions import SAMPLE_RATE

log = logging.getLogger(__name__)

TALK_LABEL = "talk"  # text of every exported talk interval (readers take any non-blank text as talk)
_EPS = 1e-9


def automatic_turns(tracks: Mapping[str, str | Path], cfg: AutoTurnsConfig | None = None, *,
                    offsets_s: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Talk spans `participant_id, start_s, end_s` from each participant's own track.

    `tracks` maps participant id -> audio file (anything ffmpeg decodes); `offsets_s` places each
    file on the session timeline as in `decode_audio` (default 0). Sorted by start, participant.
    """
    if len(tracks) < 2:
        log.warning("automatic turns from %d track(s): the other person's bleed cannot be suppressed",
                    len(tracks))
    return spans_table(talk_spans(decode_tracks(tracks, offsets_s), cfg, sample_rate=SAMPLE_RATE))


def decode_tracks(tracks: Mapping[str, str | Path], offsets_s: Mapping[str, float] | None = None
                  ) -> dict[str, np.ndarray]:
    """Every track decoded to mono `SAMPLE_RATE` on the session timeline (`decode_audio`'s offset rule)."""
    offsets_s = offsets_s or {}
    waves = {}
    for pid in progress(sorted(tracks), desc="decode tracks", unit="track"):
        waves[pid] = decode_audio(tracks[pid], sample_rate=SAMPLE_RATE, offset_s=float(offsets_s.get(pid, 0.0)))
    return waves


def spans_table(spans: Mapping[str, list[tuple[float, float]]]) -> pd.DataFrame:
    """`participant_id, start_s, end_s` rows from per-participant spans, sorted by start, participant."""
    rows = sorted(((str(p), float(s), float(e)) for p, ss in spans.items() for s, e in ss),
                  key=lambda r: (r[1], r[0], r[2]))
    return pd.DataFrame({
        "participant_id": pd.Series([r[0] for r in rows], dtype=str),
        "start_s": pd.Series([r[1] for r in rows], dtype="float64"),
        "end_s": pd.Series([r[2] for r in rows], dtype="float64"),
    })


def _tiers(turns: pd.DataFrame, participant_ids: list[str] | None) -> dict[str, list[tuple[float, float]]]:
    """Spans per tier in time order; a participant without talk still gets an (empty) tier."""
    ids = sorted({str(p) for p in turns["participant_id"]} | set(participant_ids or []))
    tiers: dict[str, list[tuple[float, float]]] = {p: [] for p in ids}
    for p, s, e in zip(turns["participant_id"].astype(str), turns["start_s"].astype(float),
                       turns["end_s"].astype(float), strict=True):
        if not 0 <= s < e:
            raise ValueError(f"talk span of {p} must satisfy 0 <= start < end, found {s}-{e} s")
        tiers[p].append((s, e))
    for p, spans in tiers.items():
        spans.sort()
        for (_, e0), (s1, _) in zip(spans, spans[1:], strict=False):
            if s1 < e0 + _EPS:
                raise ValueError(f"talk spans of {p} overlap or touch at {s1} s: expected separate spans")
    return tiers


def _num(v: float) -> str:
    """Seconds with millisecond precision (the spans lie on a 10 ms grid), no trailing zeros."""
    return f"{v:.3f}".rstrip("0").rstrip(".") or "0"


def textgrid_text(turns: pd.DataFrame, duration_s: float, participant_ids: list[str] | None = None) -> str:
    """Praat long-format TextGrid: one IntervalTier per participant, blank intervals between talk."""
    tiers = _tiers(turns, participant_ids)
    last = max((e for spans in tiers.values() for _, e in spans), default=0.0)
    if duration_s + _EPS < last:
        raise ValueError(f"duration_s {duration_s} s is shorter than the last talk span (ends {last} s)")
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0",
           f"xmax = {_num(duration_s)}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for k, (pid, spans) in enumerate(tiers.items(), 1):
        intervals: list[tuple[float, float, str]] = []
        cur = 0.0
        for s, e in spans:
            if s > cur + _EPS:
                intervals.append((cur, s, ""))
            intervals.append((s, e, TALK_LABEL))
            cur = e
        if cur < duration_s - _EPS or not intervals:
            intervals.append((cur, duration_s, ""))
        name = '"' + pid.replace('"', '""') + '"'
        out += [f"    item [{k}]:", '        class = "IntervalTier"', f"        name = {name}",
                "        xmin = 0", f"        xmax = {_num(duration_s)}", f"        intervals: size = {len(intervals)}"]
        for i, (s, e, text) in enumerate(intervals, 1):
            out += [f"        intervals [{i}]:", f"            xmin = {_num(s)}", f"            xmax = {_num(e)}",
                    f'            text = "{text}"']
    return "\n".join(out) + "\n"


def eaf_text(turns: pd.DataFrame, participant_ids: list[str] | None = None, media: str = "") -> str:
    """ELAN 3.0 document: one independent tier per participant (TIER_ID = participant id), ms times.

    `media` (a path relative to the .eaf, e.g. the session video) lets ELAN open it alongside.
    """
    tiers = _tiers(turns, participant_ids)
    ms = sorted({int(round(v * 1000)) for spans in tiers.values() for s, e in spans for v in (s, e)})
    slot = {m: f"ts{i + 1}" for i, m in enumerate(ms)}
    n_spans = sum(len(spans) for spans in tiers.values())
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<ANNOTATION_DOCUMENT AUTHOR="lhg automatic turns" DATE="1970-01-01T00:00:00+00:00" FORMAT="3.0" '
           'VERSION="3.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xsi:noNamespaceSchemaLocation="http://www.mpi.nl/tools/elan/EAFv3.0.xsd">',
           '    <HEADER MEDIA_FILE="" TIME_UNITS="milliseconds">']
    if media:
        out.append(f"        <MEDIA_DESCRIPTOR MEDIA_URL={quoteattr(media)} RELATIVE_MEDIA_URL={quoteattr('./' + media)}/>")
    out += [f'        <PROPERTY NAME="lastUsedAnnotationId">{n_spans}</PROPERTY>', "    </HEADER>", "    <TIME_ORDER>"]
    out += [f'        <TIME_SLOT TIME_SLOT_ID="{slot[m]}" TIME_VALUE="{m}"/>' for m in ms]
    out.append("    </TIME_ORDER>")
    aid = 0
    for pid, spans in tiers.items():
        out.append(f'    <TIER LINGUISTIC_TYPE_REF="default-lt" PARTICIPANT={quoteattr(pid)} TIER_ID={quoteattr(pid)}>')
        for s, e in spans:
            aid += 1
            out += ["        <ANNOTATION>",
                    f'            <ALIGNABLE_ANNOTATION ANNOTATION_ID="a{aid}" '
                    f'TIME_SLOT_REF1="{slot[int(round(s * 1000))]}" TIME_SLOT_REF2="{slot[int(round(e * 1000))]}">',
                    f"                <ANNOTATION_VALUE>{escape(TALK_LABEL)}</ANNOTATION_VALUE>",
                    "            </ALIGNABLE_ANNOTATION>", "        </ANNOTATION>"]
        out.append("    </TIER>")
    out += ['    <LINGUISTIC_TYPE GRAPHIC_REFERENCES="false" LINGUISTIC_TYPE_ID="default-lt" TIME_ALIGNABLE="true"/>',
            "</ANNOTATION_DOCUMENT>"]
    return "\n".join(out) + "\n"


def write_textgrid(turns: pd.DataFrame, path: str | Path, duration_s: float,
                   participant_ids: list[str] | None = None) -> None:
    """Write `textgrid_text` atomically (UTF-8, which Praat reads)."""
    write_text_atomic(path, textgrid_text(turns, duration_s, participant_ids))


def write_eaf(turns: pd.DataFrame, path: str | Path, participant_ids: list[str] | None = None,
              media: str = "") -> None:
    """Write `eaf_text` atomically."""
    write_text_atomic(path, eaf_text(turns, participant_ids, media))
