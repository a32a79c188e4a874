"""Turn readers (CSV / ELAN / TextGrid), validation messages, floor and backchannel rules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.common.errors import AnnotationError
from pipeline.conversation.annotations import read_turns
from pipeline.conversation.floor import derive_floor, find_backchannels

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"

TURNS = [
    ("A", 0.5, 4.25, "こんにちは"),
    ("B", 3.9, 4.3, "はい"),
    ("B", 4.8, 9.0, "そうですね"),
    ("A", 9.5, 12.0, "ええ"),
]


# ---------------------------------------------------------------------------------------------
# writers for the three formats
# ---------------------------------------------------------------------------------------------


def write_csv(path: Path, turns=TURNS, header="participant_id,start_s,end_s,label") -> Path:
    lines = [header] + [f"{p},{s},{e},{lab}" for p, s, e, lab in turns]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def eaf_text(turns=TURNS, tiers=("A", "B"), extra_tier: str = "") -> str:
    slots, tier_xml = [], {t: [] for t in tiers}
    for i, (p, s, e, lab) in enumerate(turns):
        slots.append(f'<TIME_SLOT TIME_SLOT_ID="ts{2 * i + 1}" TIME_VALUE="{round(s * 1000)}"/>')
        slots.append(f'<TIME_SLOT TIME_SLOT_ID="ts{2 * i + 2}" TIME_VALUE="{round(e * 1000)}"/>')
        tier_xml[p].append(
            f'<ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a{i + 1}" TIME_SLOT_REF1="ts{2 * i + 1}" '
            f'TIME_SLOT_REF2="ts{2 * i + 2}"><ANNOTATION_VALUE>{lab}</ANNOTATION_VALUE>'
            f"</ALIGNABLE_ANNOTATION></ANNOTATION>"
        )
    body = "".join(
        f'<TIER TIER_ID="{t}" LINGUISTIC_TYPE_REF="default-lt">{"".join(x)}</TIER>'
        for t, x in tier_xml.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<ANNOTATION_DOCUMENT FORMAT="3.0" VERSION="3.0">\n'
        '<HEADER MEDIA_FILE="" TIME_UNITS="milliseconds"/>\n'
        f"<TIME_ORDER>{''.join(slots)}</TIME_ORDER>\n{body}{extra_tier}\n"
        '<LINGUISTIC_TYPE LINGUISTIC_TYPE_ID="default-lt" TIME_ALIGNABLE="true"/>\n</ANNOTATION_DOCUMENT>\n'
    )


def _tier_intervals(turns, pid, xmax):
    spans = sorted((s, e, lab) for p, s, e, lab in turns if p == pid)
    out, t = [], 0.0
    for s, e, lab in spans:
        if s > t:
            out.append((t, s, ""))
        out.append((s, e, lab))
        t = e
    if t < xmax:
        out.append((t, xmax, ""))
    return out


def textgrid_long(turns=TURNS, tiers=("A", "B"), xmax=13.0, point_tier=True) -> str:
    items = []
    for n, pid in enumerate(tiers, 1):
        ivs = _tier_intervals(turns, pid, xmax)
        lines = [
            f"    item [{n}]:",
            '        class = "IntervalTier"',
            f'        name = "{pid}"',
            "        xmin = 0",
            f"        xmax = {xmax}",
            f"        intervals: size = {len(ivs)}",
        ]
        for k, (s, e, lab) in enumerate(ivs, 1):
            lines += [
                f"        intervals [{k}]:",
                f"            xmin = {s}",
                f"            xmax = {e}",
                f'            text = "{lab}"',
            ]
        items.append("\n".join(lines))
    if point_tier:
        n = len(tiers) + 1
        items.append(
            f'    item [{n}]:\n        class = "TextTier"\n        name = "events"\n        xmin = 0\n'
            f"        xmax = {xmax}\n        points: size = 1\n        points [1]:\n"
            '            number = 2.5\n            mark = "laugh"'
        )
    size = len(items)
    return (
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\n'
        f"xmin = 0\nxmax = {xmax}\ntiers? <exists>\nsize = {size}\nitem []:\n" + "\n".join(items) + "\n"
    )


def textgrid_short(turns=TURNS, tiers=("A", "B"), xmax=13.0) -> str:
    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", str(xmax), "<exists>"]
    out.append(str(len(tiers) + 1))
    for pid in tiers:
        ivs = _tier_intervals(turns, pid, xmax)
        out += ['"IntervalTier"', f'"{pid}"', "0", str(xmax), str(len(ivs))]
        for s, e, lab in ivs:
            out += [str(s), str(e), f'"{lab}"']
    out += ['"TextTier"', '"events"', "0", str(xmax), "1", "2.5", '"laugh"']
    return "\n".join(out) + "\n"


def expected_table() -> pd.DataFrame:
    rows = sorted(TURNS, key=lambda r: (r[1], r[0]))
    return pd.DataFrame(rows, columns=["participant_id", "start_s", "end_s", "label"])


def assert_same(df: pd.DataFrame, labels: bool = True) -> None:
    exp = expected_table()
    cols = ["participant_id", "start_s", "end_s"] + (["label"] if labels else [])
    assert list(df.columns) == ["participant_id", "start_s", "end_s", "label"]
    assert df["participant_id"].tolist() == exp["participant_id"].tolist()
    assert df["start_s"].dtype == "float64" and df["end_s"].dtype == "float64"
    pd.testing.assert_frame_equal(
        df[cols].reset_index(drop=True), exp[cols], check_dtype=False, check_exact=False, atol=1e-9
    )


# ---------------------------------------------------------------------------------------------
# formats agree
# ---------------------------------------------------------------------------------------------


def test_three_formats_parse_to_the_same_table(tmp_path):
    csv_df = read_turns(write_csv(tmp_path / "turns.csv"), ["A", "B"])
    (tmp_path / "t.eaf").write_text(eaf_text(), encoding="utf-8")
    eaf_df = read_turns(tmp_path / "t.eaf", ["A", "B"])
    (tmp_path / "long.TextGrid").write_text(textgrid_long(), encoding="utf-8")
    long_df = read_turns(tmp_path / "long.TextGrid", ["A", "B"])
    (tmp_path / "short.TextGrid").write_text(textgrid_short(), encoding="utf-8")
    short_df = read_turns(tmp_path / "short.TextGrid", ["A", "B"])
    (tmp_path / "u16.TextGrid").write_bytes(textgrid_long().encode("utf-16"))  # BOM + UTF-16
    u16_df = read_turns(tmp_path / "u16.TextGrid")
    for df in (csv_df, eaf_df, long_df, short_df, u16_df):
        assert_same(df)


def test_csv_without_label_column_and_speaker_alias(tmp_path):
    p = tmp_path / "turns.csv"
    p.write_text("speaker,start_s,end_s\nB,4.8,9.0\nA,0.5,4.25\n", encoding="utf-8")
    df = read_turns(p)
    assert df["participant_id"].tolist() == ["A", "B"]
    assert df["label"].tolist() == ["", ""]


@pytest.mark.skipif(not (TESTDATA / "synth_ja_dialogue").is_dir(), reason="shared testdata absent")
def test_shared_ground_truth_formats_agree():
    base = TESTDATA / "synth_ja_dialogue" / "turns_ground_truth"
    tables = [
        read_turns(base.with_suffix(s), ["A", "B"], duration_s=19.5) for s in (".csv", ".TextGrid", ".eaf")
    ]
    for df in tables[1:]:
        pd.testing.assert_frame_equal(
            df[["participant_id", "start_s", "end_s"]],
            tables[0][["participant_id", "start_s", "end_s"]],
            check_exact=False,
            atol=1e-6,
        )
    assert len(tables[0]) == 5
    assert tables[1]["label"].eq("speech").all()
    # the one overlap (A 8.4-11.75, B 11.5-15.515): A keeps the floor until it stops
    floor = derive_floor(tables[0], ["A", "B"])
    assert floor["holder_id"].tolist() == ["A", "B", "A", "B", "A"]
    assert floor.loc[3, "start_s"] == pytest.approx(11.75)


# ---------------------------------------------------------------------------------------------
# format details
# ---------------------------------------------------------------------------------------------


def test_eaf_participant_attribute_and_ref_tiers(tmp_path):
    text = eaf_text().replace('TIER_ID="A"', 'TIER_ID="speaker 1" PARTICIPANT="A"')
    ref_tier = (
        '<TIER TIER_ID="gloss" LINGUISTIC_TYPE_REF="ref-lt" PARENT_REF="B"><ANNOTATION>'
        '<REF_ANNOTATION ANNOTATION_ID="r1" ANNOTATION_REF="a2"><ANNOTATION_VALUE>x</ANNOTATION_VALUE>'
        "</REF_ANNOTATION></ANNOTATION></TIER>"
    )
    text = text.replace("</ANNOTATION_DOCUMENT>", ref_tier + "</ANNOTATION_DOCUMENT>")
    p = tmp_path / "t.eaf"
    p.write_text(text, encoding="utf-8")
    assert_same(read_turns(p, ["A", "B"]))


def test_textgrid_blank_intervals_and_point_tiers_are_not_talk(tmp_path):
    turns = [*TURNS, ("A", 12.0, 12.5, "   ")]
    p = tmp_path / "t.TextGrid"
    p.write_text(textgrid_long(turns), encoding="utf-8")
    assert_same(read_turns(p, ["A", "B"]))


def test_same_participant_overlaps_merge_and_zero_turn_participant_ok(tmp_path):
    p = write_csv(tmp_path / "turns.csv", [("A", 0.0, 2.0, "x"), ("A", 1.5, 3.0, "y"), ("A", 3.0, 4.0, "")])
    df = read_turns(p, ["A", "B"])
    assert df[["participant_id", "start_s", "end_s", "label"]].values.tolist() == [["A", 0.0, 4.0, "x | y"]]


# ---------------------------------------------------------------------------------------------
# errors name file and place
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ("participant_id,start,end_s\nA,0,1\n", "line 1", "missing column"),
        ("participant_id,start_s,end_s\nA,0,1\nB,zero,2\n", "line 3", "must be a number"),
        ("participant_id,start_s,end_s\nA,0,nan\n", "line 2", "finite"),
        ("participant_id,start_s,end_s\nA,0,inf\n", "line 2", "finite"),
        ("participant_id,start_s,end_s\nA,-1,2\n", "line 2", ">= 0"),
        ("participant_id,start_s,end_s\nA,0,1\n\nA,3,3\n", "line 4", "end must be after start"),
        ("participant_id,start_s,end_s\nA,0,1\nC,1,2\n", "line 3", "unknown participant 'C'"),
        ("participant_id,start_s,end_s\nA,0,1\nB,1,30\n", "line 3", "beyond the recording"),
        ("participant_id,start_s,end_s\nA,0,1\nB,1,\"" + "x" * 200_000 + "\"\n", "line 3", "not valid CSV"),
        ("x" * 100_000 + ",start_s,end_s\n", "line 1", "found 'xxxxx"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, body, where, words):
    p = tmp_path / "turns.csv"
    p.write_text(body, encoding="utf-8")
    with pytest.raises(AnnotationError) as ei:
        read_turns(p, ["A", "B"], duration_s=20.0)
    msg = str(ei.value)
    assert str(p) in msg and f"({where})" in msg and words in msg, msg
    assert ei.value.where == where
    assert len(msg) < 500  # input text is quoted and cut, never copied whole into a report


def test_duration_tolerance_is_half_a_second(tmp_path):
    p = write_csv(tmp_path / "turns.csv", [("A", 0.0, 20.4, "")])
    assert len(read_turns(p, duration_s=20.0)) == 1


def test_eaf_unknown_tier_lists_known_ids(tmp_path):
    p = tmp_path / "t.eaf"
    p.write_text(eaf_text().replace('"B"', '"Bob"'), encoding="utf-8")
    with pytest.raises(AnnotationError) as ei:
        read_turns(p, ["A", "B"])
    msg = str(ei.value)
    assert str(p) in msg and "tier 'Bob'" in msg and "['A', 'B']" in msg


def test_eaf_bad_times_name_tier_and_annotation(tmp_path):
    text = eaf_text().replace('TIME_VALUE="4800"', 'TIME_VALUE="9500"')  # B's a3 now ends before start
    p = tmp_path / "t.eaf"
    p.write_text(text.replace('TIME_VALUE="9000"', 'TIME_VALUE="4800"'), encoding="utf-8")
    with pytest.raises(AnnotationError) as ei:
        read_turns(p, ["A", "B"])
    assert "tier 'B', annotation 'a3'" in str(ei.value) and "end must be after start" in str(ei.value)

    p.write_text(eaf_text().replace('TIME_SLOT_REF2="ts2"', 'TIME_SLOT_REF2="nope"'), encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"tier 'A', annotation 'a1'.*TIME_SLOT_REF2"):
        read_turns(p)

    p.write_text(eaf_text().replace('TIME_VALUE="500"', 'TIME_VALUE="half"'), encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"annotation 'a1'.*milliseconds"):
        read_turns(p)

    p.write_text("<ANNOTATION_DOCUMENT><TIER>", encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"line 1.*not well-formed"):
        read_turns(p)


def test_textgrid_errors_name_tier_interval_and_line(tmp_path):
    text = textgrid_long()
    lines = text.splitlines()
    # B's second interval is its first talk, 3.9-4.3 s: make its xmax non-numeric
    idx = next(i for i, ln in enumerate(lines) if ln.strip() == "xmax = 4.3")
    lines[idx] = "            xmax = 4.3x"
    p = tmp_path / "t.TextGrid"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(AnnotationError) as ei:
        read_turns(p)
    msg = str(ei.value)
    assert str(p) in msg and "tier 'B', interval 2" in msg and f"line {idx + 1}" in msg and "4.3x" in msg

    p.write_text(textgrid_long().replace('name = "B"', 'name = "Bob"'), encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"tier 'Bob'.*\['A', 'B'\]"):
        read_turns(p, ["A", "B"])

    p.write_text(textgrid_long().replace("xmax = 9.0", "xmax = 4.0", 1), encoding="utf-8")
    with pytest.raises(AnnotationError, match=r"tier 'B', interval 4, line \d+.*end must be after start"):
        read_turns(p)

    p.write_text(
        textgrid_short().replace('"IntervalTier"\n"B"\n0\n13.0\n5', '"IntervalTier"\n"B"\n0\n13.0\n9')
    )
    with pytest.raises(AnnotationError, match="tier 'B'"):
        read_turns(p)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "turns.rttm"
    p.write_text("", encoding="utf-8")
    with pytest.raises(AnnotationError, match="unsupported"):
        read_turns(p)


# ---------------------------------------------------------------------------------------------
# floor and backchannels
# ---------------------------------------------------------------------------------------------


def turns_df(rows) -> pd.DataFrame:
    return pd.DataFrame(
        [(p, float(s), float(e), "") for p, s, e in rows],
        columns=["participant_id", "start_s", "end_s", "label"],
    )


def floor_rows(rows, ids=("A", "B"), **kw):
    return [tuple(r) for r in derive_floor(turns_df(rows), list(ids), **kw).itertuples(index=False)]


def test_short_backchannel_does_not_take_the_floor():
    rows = [("A", 0, 10), ("B", 3, 3.5), ("B", 7, 7.8)]
    assert floor_rows(rows) == [("A", 0.0, 10.0)]
    bc = find_backchannels(turns_df(rows), derive_floor(turns_df(rows), ["A", "B"]))
    assert bc.values.tolist() == [["B", 3.0, 3.5, "A"], ["B", 7.0, 7.8, "A"]]


def test_bid_at_threshold_takes_the_floor_when_holder_stops():
    assert floor_rows([("A", 0, 5), ("B", 4.5, 5.3)]) == [("A", 0.0, 5.0)]  # 0.8 s: backchannel
    assert floor_rows([("A", 0, 5), ("B", 4.5, 5.5)]) == [("A", 0.0, 5.0), ("B", 5.0, 5.5)]  # 1.0 s
    assert find_backchannels(turns_df([("A", 0, 5), ("B", 4.5, 5.5)])).empty


def test_overlap_keeps_floor_with_current_holder_and_long_silence_has_no_holder():
    # a 1 s pause before A's next bid stays with B (rule 4), unless floor_hold_s is shorter
    assert floor_rows([("A", 0, 5), ("B", 4, 9), ("A", 10, 12)]) == [("A", 0.0, 5.0), ("B", 5.0, 10.0),
                                                                    ("A", 10.0, 12.0)]
    assert floor_rows([("A", 0, 5), ("B", 4, 9), ("A", 10, 12)], floor_hold_s=0.5) == [
        ("A", 0.0, 5.0), ("B", 5.0, 9.0), ("A", 10.0, 12.0)]
    # a silence longer than floor_hold_s belongs to nobody, as does the time after the last bid
    assert floor_rows([("A", 0, 5), ("B", 8.5, 12)]) == [("A", 0.0, 5.0), ("B", 8.5, 12.0)]
    # a long bid entirely inside the holder's never gets the floor
    assert floor_rows([("A", 0, 10), ("B", 2, 6)]) == [("A", 0.0, 10.0)]


def test_short_utterance_after_a_long_silence_takes_the_floor():
    rows = [("A", 0, 5), ("B", 9, 9.5), ("A", 9.3, 9.6)]
    assert floor_rows(rows) == [("A", 0.0, 5.0), ("B", 9.0, 9.5)]
    assert find_backchannels(turns_df(rows))[["participant_id", "start_s"]].values.tolist() == [["A", 9.3]]


def test_pause_merging():
    assert floor_rows([("A", 0, 3), ("A", 3.4, 6)]) == [("A", 0.0, 6.0)]
    assert floor_rows([("A", 0, 3), ("A", 3.6, 6)], floor_hold_s=0.0) == [("A", 0.0, 3.0), ("A", 3.6, 6.0)]
    assert floor_rows([("A", 0, 3), ("A", 3.6, 6)], merge_gap_s=1.0, floor_hold_s=0.0) == [("A", 0.0, 6.0)]
    # two short spurts merged across a short pause form a 1.2 s bid: not a backchannel
    rows = [("A", 0, 10), ("B", 9.5, 9.8), ("B", 10.1, 10.7)]
    assert floor_rows(rows) == [("A", 0.0, 10.0), ("B", 10.0, 10.7)]


@pytest.mark.parametrize("pause_s", [0.6, 1.0, 1.5, 2.0, 2.9])
def test_speaker_keeps_the_floor_across_pauses_nobody_takes(pause_s):
    """A monologue with one pause: the floor is kept for any pause up to floor_hold_s (3 s)."""
    rows = [("A", 0.0, 4.0), ("A", 4.0 + pause_s, 9.0)]
    assert floor_rows(rows) == [("A", 0.0, 9.0)]
    # the listener's "un" in that pause is a backchannel, never the floor
    with_un = [*rows, ("B", 4.0 + pause_s / 4, 4.0 + pause_s / 4 + 0.4)]
    assert floor_rows(with_un) == [("A", 0.0, 9.0)]
    bc = find_backchannels(turns_df(with_un), derive_floor(turns_df(with_un), ["A", "B"]))
    assert bc[["participant_id", "holder_id"]].values.tolist() == [["B", "A"]]


@pytest.mark.parametrize("pause_s", [3.5, 6.0])
def test_a_pause_longer_than_floor_hold_ends_the_floor(pause_s):
    rows = [("A", 0.0, 4.0), ("A", 4.0 + pause_s, 9.0 + pause_s)]
    assert floor_rows(rows) == [("A", 0.0, 4.0), ("A", 4.0 + pause_s, 9.0 + pause_s)]
    # a shorter setting ends it earlier; nobody holds the silence
    assert floor_rows(rows[:1] + [("A", 5.5, 9.0)], floor_hold_s=1.0) == [("A", 0.0, 4.0), ("A", 5.5, 9.0)]
    # a backchannel in a long pause still takes no floor (it follows A's talk within floor_hold_s)
    assert floor_rows([*rows, ("B", 4.5, 5.0)]) == floor_rows(rows)


def test_backchannel_in_a_pause_before_the_other_takes_the_floor():
    # B says "un" in A's pause and then takes the turn: A holds until B's real turn starts
    rows = [("A", 0.0, 5.0), ("B", 5.4, 5.8), ("B", 6.5, 12.0)]
    assert floor_rows(rows) == [("A", 0.0, 6.5), ("B", 6.5, 12.0)]
    assert find_backchannels(turns_df(rows))["start_s"].tolist() == [5.4]


def test_three_participants_one_holder_at_a_time():
    rows = [("A", 0, 5), ("B", 4, 8), ("C", 4.5, 9), ("C", 6, 6.2)]
    assert floor_rows(rows, ids=("A", "B", "C")) == [("A", 0.0, 5.0), ("B", 5.0, 8.0), ("C", 8.0, 9.0)]


def test_floor_rejects_unknown_participant_and_allows_empty():
    with pytest.raises(ValueError, match="not in participant_ids"):
        derive_floor(turns_df([("Z", 0, 1)]), ["A", "B"])
    assert derive_floor(turns_df([]), ["A", "B"]).empty
