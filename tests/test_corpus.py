"""Corpus input contract: participants.csv validation names file, line and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.common.errors import CorpusLayoutError
from pipeline.corpus.layout import (
    FileHashCache,
    discover_sessions,
    read_session,
    read_session_cached,
    skipped_entries,
)


def make_session(root: Path, sid: str, csv_text: str, turns: str = "turns.csv") -> Path:
    d = root / "sessions" / sid
    d.mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", "a.wav", "b.wav"):
        (d / name).write_bytes(b"x")
    (d / "participants.csv").write_text(csv_text)
    if turns:
        (d / turns).write_text("participant_id,start_s,end_s\nA,0,1\n")
    return d


GOOD = "participant_id,video,audio\nA,a.mp4,a.wav\nB,b.mp4,b.wav\n"


def test_reads_a_valid_session_with_crops_and_offsets(tmp_path):
    make_session(tmp_path, "s1", "participant_id,video,audio,crop_x,crop_y,crop_w,crop_h,audio_offset_s\n"
                 "A,a.mp4,a.wav,0,0,320,240,0.25\nB,a.mp4,b.wav,320,0,320,240,\n")
    spec = read_session(tmp_path, "s1")
    assert spec.participant_ids == ["A", "B"]
    assert spec.participant("A").crop == (0, 0, 320, 240) and spec.participant("A").audio_offset_s == 0.25
    assert spec.participant("B").audio_offset_s == 0.0
    assert spec.turns_path.name == "turns.csv"
    assert discover_sessions(tmp_path) == ["s1"]


@pytest.mark.parametrize(("csv_text", "match"), [
    ("participant_id,video\nA,a.mp4\n", r"participants.csv \(line 1\): missing column"),
    ("participant_id,video,audio\nA,a.mp4,a.wav\nA,b.mp4,b.wav\n", "listed twice"),
    ("participant_id,video,audio\nA/x,a.mp4,a.wav\nB,b.mp4,b.wav\n", r"line 2\): unsafe participant id"),
    ("participant_id,video,audio\nA,a.mp4,a.wav\nB,nothere.mp4,b.wav\n", r"line 3\): media file 'nothere.mp4'"),
    ("participant_id,video,audio\nA,../a.mp4,a.wav\nB,b.mp4,b.wav\n", "must be relative"),
    ("participant_id,video,audio,crop_x,crop_y,crop_w,crop_h\nA,a.mp4,a.wav,0,0,-5,10\nB,b.mp4,b.wav,,,,\n",
     "crop must be whole pixels"),
    ("participant_id,video,audio,audio_offset_s\nA,a.mp4,a.wav,soon\nB,b.mp4,b.wav,0\n", "expected a number"),
    ("participant_id,video,audio\nA,a.mp4,a.wav\n", "at least two participants"),
])
def test_bad_participants_csv(tmp_path, csv_text, match):
    make_session(tmp_path, "s1", csv_text)
    with pytest.raises(CorpusLayoutError, match=match):
        read_session(tmp_path, "s1")


def test_at_most_one_annotation_and_safe_session_ids(tmp_path):
    d = make_session(tmp_path, "s1", GOOD)
    (d / "turns.eaf").write_text("<x/>")
    with pytest.raises(CorpusLayoutError, match="at most one of"):
        read_session(tmp_path, "s1")
    make_session(tmp_path, "s2", GOOD, turns="")  # no turns file: automatic turns from the audio
    spec = read_session(tmp_path, "s2")
    assert spec.turns_path is None and spec.automatic_turns
    make_session(tmp_path, "bad id", GOOD)
    with pytest.raises(CorpusLayoutError, match="unsafe session id"):
        read_session(tmp_path, "bad id")


def test_missing_sessions_folder(tmp_path):
    with pytest.raises(CorpusLayoutError, match="sessions/"):
        discover_sessions(tmp_path)


def test_hash_cache_reuses_and_notices_changes(tmp_path):
    f = tmp_path / "v.bin"
    f.write_bytes(b"one")
    cache = FileHashCache(tmp_path / "cache.json")
    first = cache.sha256(f)
    cache.save()
    again = FileHashCache(tmp_path / "cache.json")
    assert again.sha256(f) == first
    f.write_bytes(b"two!")
    assert again.sha256(f) != first


def test_session_layout_is_parsed_once_until_it_changes(tmp_path):
    make_session(tmp_path, "s1", GOOD)
    first = read_session_cached(tmp_path, "s1")
    assert read_session_cached(tmp_path, "s1") is first  # the planner and every task share one parse
    (tmp_path / "sessions" / "s1" / "participants.csv").write_text(GOOD.replace("B,b.mp4", "Bee,b.mp4"))
    assert read_session_cached(tmp_path, "s1").participant_ids == ["A", "Bee"]
    (tmp_path / "sessions" / "s1" / "turns.csv").rename(tmp_path / "sessions" / "s1" / "turns.TextGrid")
    assert read_session_cached(tmp_path, "s1").turns_path.name == "turns.TextGrid"  # folder changed
    (tmp_path / "sessions" / "s1" / "participants.csv").unlink()
    with pytest.raises(CorpusLayoutError, match="missing participants.csv"):
        read_session_cached(tmp_path, "s1")


# --------------------------------------------------------------------------- hostile and unlucky inputs


def test_media_symlink_out_of_the_corpus_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"RIFF")
    corpus = tmp_path / "corpus"
    d = make_session(corpus, "s1", GOOD)
    (d / "b.wav").unlink()
    (d / "b.wav").symlink_to(outside / "secret.wav")
    with pytest.raises(CorpusLayoutError, match=r"line 3\): media file 'b.wav' resolves outside the corpus"):
        read_session(corpus, "s1")
    # a link that stays inside the corpus is fine
    (d / "b.wav").unlink()
    (d / "b.wav").symlink_to(d / "a.wav")
    assert read_session(corpus, "s1").participant("B").audio.name == "b.wav"


def test_session_folder_or_participants_csv_linked_out_of_the_corpus_is_refused(tmp_path):
    outside = make_session(tmp_path / "other", "real", GOOD)
    corpus = tmp_path / "corpus"
    (corpus / "sessions").mkdir(parents=True)
    (corpus / "sessions" / "s1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CorpusLayoutError, match="session folder resolves outside the corpus"):
        read_session(corpus, "s1")
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    d = make_session(corpus, "s2", GOOD)
    (d / "participants.csv").unlink()
    (d / "participants.csv").symlink_to(secret)
    with pytest.raises(CorpusLayoutError, match="participants.csv resolves outside the corpus") as err:
        read_session(corpus, "s2")
    assert "root:x" not in str(err.value)  # nothing of the outside file is echoed


@pytest.mark.parametrize(("name", "content"), [
    ("a.m3u8", b"#EXTM3U\n#EXTINF:1,\n/etc/hosts\n"),
    ("a.mp4", b"#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:10,\nfile:///etc/passwd\n"),  # playlist text named .mp4
    ("a.mp4", b"ffconcat version 1.0\nfile '/etc/passwd'\n"),
])
def test_playlists_and_concat_lists_are_refused(tmp_path, name, content):
    d = make_session(tmp_path, "s1", GOOD.replace("A,a.mp4", f"A,{name}"))
    (d / name).write_bytes(content)
    with pytest.raises(CorpusLayoutError, match=r"line 2\): media file '.*' is a playlist or file list"):
        read_session(tmp_path, "s1")


def test_participants_csv_encodings(tmp_path):
    d = make_session(tmp_path, "s1", GOOD)
    (d / "participants.csv").write_bytes(GOOD.encode("utf-16"))  # with BOM: accepted
    assert read_session(tmp_path, "s1").participant_ids == ["A", "B"]
    (d / "participants.csv").write_bytes("participant_id,video,audio\nA,a.mp4,a.wav\nBé,b.mp4,b.wav\n"
                                         .encode("latin-1"))
    with pytest.raises(CorpusLayoutError, match=r"participants.csv \(line 3\): not UTF-8 text: byte 42 \(0xe9\)"):
        read_session(tmp_path, "s1")


def test_one_video_for_two_participants_needs_two_tiles(tmp_path):
    make_session(tmp_path, "s1", "participant_id,video,audio\nA,a.mp4,a.wav\nB,a.mp4,b.wav\n")
    with pytest.raises(CorpusLayoutError, match="participants A and B use the same video with no crop"):
        read_session(tmp_path, "s1")


def test_audio_offset_is_bounded(tmp_path):
    make_session(tmp_path, "s1", "participant_id,video,audio,audio_offset_s\nA,a.mp4,a.wav,1e6\nB,b.mp4,b.wav,0\n")
    with pytest.raises(CorpusLayoutError, match=r"line 2\): audio_offset_s 1e\+06 s: expected at most 3600 s"):
        read_session(tmp_path, "s1")


def test_hidden_and_stray_entries_are_reported(tmp_path, caplog):
    make_session(tmp_path, "s1", GOOD)
    (tmp_path / "sessions" / ".s2").mkdir()
    (tmp_path / "sessions" / "notes.txt").write_text("x")
    (tmp_path / "sessions" / "gone").symlink_to(tmp_path / "nowhere")
    with caplog.at_level("WARNING"):
        assert discover_sessions(tmp_path) == ["s1"]
    assert "skipped 3 entries" in caplog.text and "'.s2': hidden folder" in caplog.text
    assert "'notes.txt': a file, not a session folder" in caplog.text and "'gone': a link that points nowhere" \
        in caplog.text
    assert [e["name"] for e in skipped_entries(tmp_path)] == [".s2", "gone", "notes.txt"]
    assert skipped_entries(tmp_path)[0]["reason"].startswith("hidden folder (name starts with '.')")


def test_every_skipped_entry_is_counted_when_the_warning_is_cut(tmp_path, caplog):
    make_session(tmp_path, "s1", GOOD)
    for i in range(12):
        (tmp_path / "sessions" / f".old{i:02d}").mkdir()
    with caplog.at_level("WARNING"):
        assert discover_sessions(tmp_path) == ["s1"]
    assert "skipped 12 entries" in caplog.text and "'.old09'" in caplog.text and "'.old10'" not in caplog.text
    assert "and 2 more (listed in the data card)" in caplog.text and len(skipped_entries(tmp_path)) == 12


def test_long_header_is_quoted_and_cut(tmp_path):
    make_session(tmp_path, "s1", "x" * 500 + "\nA\n")
    with pytest.raises(CorpusLayoutError) as err:
        read_session(tmp_path, "s1")
    assert "x" * 81 not in str(err.value) and "..." in str(err.value)


def test_rejected_csv_cells_never_become_formulas(tmp_path):
    import csv

    from pipeline.dataset.datacard import write_rejected
    from schemas.records import Rejection

    rows = [Rejection(stage="layout", session_id="=HYPERLINK(\"http://x\")", participant_id="",
                      kind="layout", file="@SUM(A1)", where="", reason="-2+3 " + "y" * 5000)]
    write_rejected(tmp_path / "rejected.csv", rows)
    with open(tmp_path / "rejected.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["session_id"].startswith("'=") and row["file"].startswith("'@") and row["reason"].startswith("'-")
    assert len(row["reason"]) < 1100


def test_content_replaced_with_same_size_and_mtime_is_hashed_again(tmp_path):
    import os

    f = tmp_path / "v.bin"
    f.write_bytes(b"one!")
    st = os.stat(f)
    cache = FileHashCache(tmp_path / "cache.json")
    first = cache.sha256(f)
    cache.save()
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"two!")  # same size
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))  # same modification time (cp -p, rsync -t)
    os.replace(replacement, f)
    assert FileHashCache(tmp_path / "cache.json").sha256(f) != first


def test_rehash_trusts_no_cached_hash(tmp_path):
    import json

    f = tmp_path / "v.bin"
    f.write_bytes(b"one!")
    cache = FileHashCache(tmp_path / "cache.json")
    cache.sha256(f)
    cache.save()
    entries = json.loads((tmp_path / "cache.json").read_text())
    (key,) = entries
    entries[key][-1] = "0" * 64  # a cached hash that no longer matches the content
    (tmp_path / "cache.json").write_text(json.dumps(entries))
    assert FileHashCache(tmp_path / "cache.json").sha256(f) == "0" * 64  # trusted by default
    assert FileHashCache(tmp_path / "cache.json", rehash=True).sha256(f) != "0" * 64


def test_csv_syntax_errors_are_quarantined_with_the_line(tmp_path):
    make_session(tmp_path, "s1", "participant_id,video,audio\nA,a.mp4,a.wav\nB,b.mp4,\"" + "x" * 200_000 + "\"\n")
    with pytest.raises(CorpusLayoutError, match=r"participants\.csv \(line 3\): not valid CSV: field larger than"):
        read_session(tmp_path, "s1")
