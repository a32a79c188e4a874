"""Turn annotations of a sample session in the three accepted formats: CSV, ELAN .eaf, Praat TextGrid.

Each session gets exactly one of them, so the pipeline's readers (`pipeline.conversation.annotations`)
are exercised on all three; times are written in milliseconds precision, as annotation tools do.
"""

from __future__ import annotations

from collections.abc import Sequence

ANNOTATION_FILES = {"csv": "turns.csv", "eaf": "turns.eaf", "TextGrid": "turns.TextGrid"}

TalkRow = tuple[str, float, float, str]  # participant_id, start_s, end_s, label


def _fmt_t(v: float) -> str:
    return f"{v:.3f}"


def annotation_csv(rows: list[TalkRow]) -> str:
    """`participant_id,start_s,end_s,label`, one row per talk interval."""
    lines = ["participant_id,start_s,end_s,label"]
    lines += [f"{p},{_fmt_t(s)},{_fmt_t(e)},{lab}" for p, s, e, lab in rows]
    return "\n".join(lines) + "\n"


def annotation_eaf(rows: list[TalkRow], pids: Sequence[str], media: str) -> str:
    """ELAN 3.0 document: one tier per participant (TIER_ID = participant id), times in ms."""
    from xml.sax.saxutils import escape, quoteattr

    ms = sorted({int(round(v * 1000)) for _, s, e, _ in rows for v in (s, e)})
    slot = {m: f"ts{i + 1}" for i, m in enumerate(ms)}
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<ANNOTATION_DOCUMENT AUTHOR="lhg-sample-corpus" DATE="2024-01-01T00:00:00+00:00" FORMAT="3.0" '
           'VERSION="3.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xsi:noNamespaceSchemaLocation="http://www.mpi.nl/tools/elan/EAFv3.0.xsd">',
           '    <HEADER MEDIA_FILE="" TIME_UNITS="milliseconds">',
           f'        <MEDIA_DESCRIPTOR MEDIA_URL={quoteattr("file:///" + media)} MIME_TYPE="video/mp4" '
           f'RELATIVE_MEDIA_URL={quoteattr("./" + media)}/>',
           f'        <PROPERTY NAME="lastUsedAnnotationId">{len(rows)}</PROPERTY>',
           "    </HEADER>", "    <TIME_ORDER>"]
    out += [f'        <TIME_SLOT TIME_SLOT_ID="{slot[m]}" TIME_VALUE="{m}"/>' for m in ms]
    out.append("    </TIME_ORDER>")
    aid = 0
    for pid in pids:
        out.append(f'    <TIER LINGUISTIC_TYPE_REF="default-lt" PARTICIPANT={quoteattr(pid)} TIER_ID={quoteattr(pid)}>')
        for p, s, e, lab in rows:
            if p != pid:
                continue
            aid += 1
            out += ["        <ANNOTATION>",
                    f'            <ALIGNABLE_ANNOTATION ANNOTATION_ID="a{aid}" '
                    f'TIME_SLOT_REF1="{slot[int(round(s * 1000))]}" TIME_SLOT_REF2="{slot[int(round(e * 1000))]}">',
                    f"                <ANNOTATION_VALUE>{escape(lab)}</ANNOTATION_VALUE>",
                    "            </ALIGNABLE_ANNOTATION>", "        </ANNOTATION>"]
        out.append("    </TIER>")
    out += ['    <LINGUISTIC_TYPE GRAPHIC_REFERENCES="false" LINGUISTIC_TYPE_ID="default-lt" TIME_ALIGNABLE="true"/>',
            '    <CONSTRAINT DESCRIPTION="Time subdivision of parent annotation\'s time interval, no time gaps '
            'allowed within this interval" STEREOTYPE="Time_Subdivision"/>',
            '    <CONSTRAINT DESCRIPTION="Symbolic subdivision of a parent annotation. Annotations refering to '
            'the same parent are ordered" STEREOTYPE="Symbolic_Subdivision"/>',
            '    <CONSTRAINT DESCRIPTION="1-1 association with a parent annotation" STEREOTYPE="Symbolic_Association"/>',
            '    <CONSTRAINT DESCRIPTION="Time alignable annotations within the parent annotation\'s time interval, '
            'gaps are allowed" STEREOTYPE="Included_In"/>',
            "</ANNOTATION_DOCUMENT>"]
    return "\n".join(out) + "\n"


def annotation_textgrid(rows: list[TalkRow], pids: Sequence[str], duration_s: float) -> str:
    """Praat long-format TextGrid: one IntervalTier per participant, empty intervals fill the gaps."""
    def num(v: float) -> str:
        return f"{v:.3f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))

    def q(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'

    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ", f"xmax = {num(duration_s)} ",
           "tiers? <exists> ", f"size = {len(pids)} ", "item []: "]
    for k, pid in enumerate(pids, 1):
        ivs: list[tuple[float, float, str]] = []
        cur = 0.0
        for _p, s, e, lab in sorted((r for r in rows if r[0] == pid), key=lambda r: r[1]):
            if s < cur - 1e-9:
                raise ValueError(f"overlapping talk of {pid} at {s}")
            if s > cur + 1e-9:
                ivs.append((cur, s, ""))
            ivs.append((s, e, lab))
            cur = e
        if cur < duration_s - 1e-9:
            ivs.append((cur, duration_s, ""))
        out += [f"    item [{k}]:", '        class = "IntervalTier" ', f"        name = {q(pid)} ",
                "        xmin = 0 ", f"        xmax = {num(duration_s)} ", f"        intervals: size = {len(ivs)} "]
        for i, (s, e, lab) in enumerate(ivs, 1):
            out += [f"        intervals [{i}]:", f"            xmin = {num(s)} ", f"            xmax = {num(e)} ",
                    f"            text = {q(lab)} "]
    return "\n".join(out) + "\n"


def annotation_text(kind: str, rows: list[TalkRow], pids: Sequence[str], media: str, duration_s: float) -> str:
    """The annotation file of `kind` (a key of ANNOTATION_FILES); `media` is named in the ELAN header."""
    if kind == "csv":
        return annotation_csv(rows)
    if kind == "eaf":
        return annotation_eaf(rows, pids, media)
    if kind == "TextGrid":
        return annotation_textgrid(rows, pids, duration_s)
    raise ValueError(f"annotation must be one of {sorted(ANNOTATION_FILES)}, not {kind!r}")
