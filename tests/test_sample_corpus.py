"""The embedded sample corpus: input contract, determinism, and planted nods visible to FaceMesh."""

from __future__ import annotations

import csv
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

import pipeline.sample.generate as sc
from pipeline.features.head.tracking import FaceMeshTracker
from pipeline.media.audio import ffmpeg_exe
from pipeline.sample.corpus_files import ground_truth_paths, load_ground_truth
from pipeline.sample.faces import default_look, face_landmarks_px, relative_rotation_deg
from pipeline.sample.motion import MOTION_COLUMNS

SESSIONS = ("s01", "s02", "s03")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sc.make_sample_corpus(tmp_path_factory.mktemp("corpus") / "sample", quick=True, seed=0)


def _participants(session: Path) -> list[dict[str, str]]:
    with open(session / "participants.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---- minimal readers for the three annotation formats (the pipeline has its own) ----------------

def _read_csv(path: Path) -> list[tuple[str, float, float, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["participant_id", "start_s", "end_s", "label"]
    return [(r["participant_id"], float(r["start_s"]), float(r["end_s"]), r["label"]) for r in rows]


def _read_eaf(path: Path) -> list[tuple[str, float, float, str]]:
    root = ET.parse(path).getroot()
    assert root.get("FORMAT") == "3.0"
    assert root.find("HEADER").get("TIME_UNITS") == "milliseconds"
    slots = {ts.get("TIME_SLOT_ID"): int(ts.get("TIME_VALUE")) for ts in root.iter("TIME_SLOT")}
    out = []
    for tier in root.iter("TIER"):
        for ann in tier.iter("ALIGNABLE_ANNOTATION"):
            out.append((tier.get("TIER_ID"), slots[ann.get("TIME_SLOT_REF1")] / 1000.0,
                        slots[ann.get("TIME_SLOT_REF2")] / 1000.0, ann.findtext("ANNOTATION_VALUE")))
    return out


def _read_textgrid(path: Path) -> tuple[list[tuple[str, float, float, str]], float]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith('File type = "ooTextFile"')
    xmax = float(re.search(r"^xmax = ([\d.]+)", text, re.M).group(1))
    out = []
    for block in re.split(r"\n    item \[\d+\]:\n", text)[1:]:
        assert 'class = "IntervalTier"' in block
        name = re.search(r'name = "(.*)"', block).group(1)
        ivs = re.findall(r'intervals \[\d+\]:\n\s+xmin = ([\d.]+) \n\s+xmax = ([\d.]+) \n\s+text = "(.*)" ', block)
        n = int(re.search(r"intervals: size = (\d+)", block).group(1))
        assert len(ivs) == n
        # intervals tile [xmin, xmax]; empty ones fill the gaps
        assert float(ivs[0][0]) == 0.0 and abs(float(ivs[-1][1]) - xmax) < 1e-9
        for (_, e, _), (s, _, _) in zip(ivs, ivs[1:], strict=False):
            assert float(e) == float(s)
        out += [(name, float(s), float(e), lab) for s, e, lab in ivs if lab]
    return out, xmax


def _read_annotation(session: Path) -> list[tuple[str, float, float, str]]:
    found = [p for p in (session / n for n in ("turns.csv", "turns.eaf", "turns.TextGrid")) if p.exists()]
    assert len(found) == 1, f"exactly one turn annotation expected in {session}, got {found}"
    p = found[0]
    if p.suffix == ".csv":
        return _read_csv(p)
    if p.suffix == ".eaf":
        return _read_eaf(p)
    return _read_textgrid(p)[0]


def _probe_audio(path: Path) -> tuple[str, int, int, float]:
    """(codec, rate, channels, decoded seconds) using the ffmpeg binary only."""
    exe = ffmpeg_exe()
    info = subprocess.run([exe, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    m = re.search(r"Audio: (\w+).*?, (\d+) Hz, (mono|stereo)", info)
    assert m, info
    raw = subprocess.run([exe, "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-"],
                         capture_output=True, check=True).stdout
    n = len(raw) // 4
    return m.group(1), int(m.group(2)), 1 if m.group(3) == "mono" else 2, n / int(m.group(2))


# ---- contract ---------------------------------------------------------------------------------

def test_layout_and_contract(corpus: Path) -> None:
    sessions = sorted(p.name for p in (corpus / "sessions").iterdir())
    assert sessions == list(SESSIONS)
    assert (corpus / "README.md").exists() and (corpus / sc.COMPLETE_MARKER).exists()
    assert not list((corpus / "sessions").rglob("*.tmp-*")), "no temporary files left"
    all_pids, kinds, layouts = set(), set(), set()
    for sid in SESSIONS:
        sdir = corpus / "sessions" / sid
        rows = _participants(sdir)
        assert len(rows) == 2
        header = list(rows[0])
        assert header[:3] == ["participant_id", "video", "audio"]
        assert set(header[3:]) <= {"crop_x", "crop_y", "crop_w", "crop_h", "audio_offset_s"}
        for r in rows:
            assert (sdir / r["video"]).is_file() and (sdir / r["audio"]).is_file()
        all_pids |= {r["participant_id"] for r in rows}
        kinds |= {p.suffix for p in sdir.glob("turns.*")}
        layouts.add("gallery" if "crop_x" in header else "solo")
        # ground truth is outside sessions/
        assert not list(sdir.glob("*.npz")) and not list(sdir.glob("*.json"))
        gt = load_ground_truth(corpus, sid)
        assert set(gt["motion"]) == {r["participant_id"] for r in rows}
    assert len(all_pids) >= 4
    assert kinds == {".csv", ".eaf", ".TextGrid"}
    assert layouts == {"solo", "gallery"}


def test_annotations_match_ground_truth(corpus: Path) -> None:
    for sid in SESSIONS:
        gt = load_ground_truth(corpus, sid)
        got = sorted(_read_annotation(corpus / "sessions" / sid), key=lambda r: (r[1], r[0]))
        want = sorted(((p, s, e, lab) for p, s, e, lab in gt["annotation_rows"]), key=lambda r: (r[1], r[0]))
        assert [r[0] for r in got] == [r[0] for r in want]
        assert np.allclose([r[1:3] for r in got], [r[1:3] for r in want], atol=1e-3)
        assert [r[3] for r in got] == [r[3] for r in want]
        # backchannels are annotated as talk and lie inside the other participant's turn
        for b in gt["backchannels"]:
            assert 0.3 - 1e-6 <= b["end_s"] - b["start_s"] <= 0.8 + 1e-6
            assert any(t["participant_id"] != b["participant_id"] and t["start_s"] <= b["start_s"]
                       and b["end_s"] <= t["end_s"] for t in gt["turns"])
        # alternation and balance: each participant holds the floor a fair share of the time
        turns = gt["turns"]
        assert all(a["participant_id"] != b["participant_id"] for a, b in zip(turns, turns[1:], strict=False))
        held = {p: sum(t["end_s"] - t["start_s"] for t in turns if t["participant_id"] == p) for p in gt["participants"]}
        total = sum(held.values())
        assert total > 0.6 * gt["duration_s"]
        assert all(0.25 < v / total < 0.75 for v in held.values()), held


def test_audio_decodes_at_expected_format(corpus: Path) -> None:
    expected = {"s01": ("pcm_s16le", 16000, 1), "s02": ("aac", 48000, 2), "s03": ("mp3", 44100, 1)}
    for sid in SESSIONS:
        sdir = corpus / "sessions" / sid
        gt = load_ground_truth(corpus, sid)
        for r in _participants(sdir):
            codec, rate, ch, dur = _probe_audio(sdir / r["audio"])
            if gt["audio_format"] != "wav44k_stereo":  # the mp3 fallback when libmp3lame is missing
                assert (codec, rate, ch) == expected[sid]
            assert abs(dur - gt["duration_s"]) < 0.1, (sid, r["audio"], dur)


def test_listener_audio_holds_only_backchannels(corpus: Path) -> None:
    gt = load_ground_truth(corpus, "s01")
    sdir = corpus / "sessions" / "s01"
    for r in _participants(sdir):
        pid = r["participant_id"]
        y, sr = sf.read(sdir / r["audio"])
        assert 10 ** (-4 / 20) < np.abs(y).max() <= 10 ** (-2.5 / 20)  # peak ~ -3 dBFS
        own_bc = [(b["start_s"], b["end_s"]) for b in gt["backchannels"] if b["participant_id"] == pid]
        for t in gt["turns"]:
            for s, e in t["phrases"]:
                seg = y[int(s * sr):int(e * sr)]
                rms_db = 20 * np.log10(np.sqrt(np.mean(seg**2)) + 1e-12)
                if t["participant_id"] == pid:
                    assert rms_db > -30, (pid, s, rms_db)
                elif not any(bs < e + 0.05 and be > s - 0.05 for bs, be in own_bc):
                    assert rms_db < -50, (pid, s, rms_db)


def test_video_frames_and_rate(corpus: Path) -> None:
    for sid in SESSIONS:
        sdir = corpus / "sessions" / sid
        gt = load_ground_truth(corpus, sid)
        for r in _participants(sdir):
            cap = cv2.VideoCapture(str(sdir / r["video"]))
            try:
                assert cap.isOpened()
                assert abs(cap.get(cv2.CAP_PROP_FPS) - gt["fps"]) < 1e-3
                assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == gt["n_frames"]
                w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            finally:
                cap.release()
            if "crop_x" in r:
                x, y, cw, ch = (int(r[k]) for k in ("crop_x", "crop_y", "crop_w", "crop_h"))
                assert x >= 0 and y >= 0 and x + cw <= w and y + ch <= h
                assert tuple(gt["rects"][r["participant_id"]]) == (x, y, cw, ch)
            assert gt["motion"][r["participant_id"]].shape == (gt["n_frames"], len(MOTION_COLUMNS))
        codec = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(sdir / _participants(sdir)[0]["video"])],
                               capture_output=True, text=True).stderr
        assert "Video: h264" in codec or "Video: mpeg4" in codec
        assert "yuv420p" in codec


def test_planted_nods_follow_phrase_ends(corpus: Path) -> None:
    for sid in SESSIONS:
        gt = load_ground_truth(corpus, sid)
        nods = [n for n in gt["nods"] if n["index_in_group"] == 0]
        assert len(nods) >= 4
        for n in nods:
            assert 8.0 <= n["amplitude_deg"] <= 15.0 and 0.4 <= n["dur_s"] <= 0.6
            if n["cause"] == "phrase_end":
                assert 0.6 - 1e-6 <= n["start_s"] - n["trigger_s"] <= 1.0 + 1e-6
                assert n["trigger_s"] in gt["phrase_ends"][next(p for p in gt["participants"]
                                                                if p != n["participant_id"])]


# ---- determinism, idempotence, incremental sessions ----------------------------------------------

@pytest.mark.parametrize(("annotation", "layout", "audio_format"),
                         [("csv", "solo", "wav16k"), ("eaf", "gallery", "m4a"), ("TextGrid", "solo", "mp3")])
def test_make_session_is_deterministic(tmp_path: Path, annotation: str, layout: str, audio_format: str) -> None:
    size = (192, 144) if layout == "solo" else (400, 160)
    kw = {"annotation": annotation, "layout": layout, "fps": 25.0, "duration_s": 6.0,
          "audio_format": audio_format, "seed": 7, "frame_size": size}
    a = sc.make_session(tmp_path / "a", "x01", ["P01", "P04"], **kw)
    b = sc.make_session(tmp_path / "b", "x01", ["P01", "P04"], **kw)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:  # annotations, participants.csv, audio AND video: byte-identical
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ga, gb = ground_truth_paths(tmp_path / "a", "x01"), ground_truth_paths(tmp_path / "b", "x01")
    assert ga[1].read_bytes() == gb[1].read_bytes()
    c = sc.make_session(tmp_path / "c", "x01", ["P01", "P04"], **{**kw, "seed": 8})
    ann = next(p.name for p in a.glob("turns.*"))
    assert (a / ann).read_bytes() != (c / ann).read_bytes()


def test_idempotent_and_incremental(corpus: Path) -> None:
    files = sorted(p for p in (corpus / "sessions").rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    assert sc.make_sample_corpus(corpus, quick=True, seed=0) == corpus
    assert {p: p.stat().st_mtime_ns for p in files} == before
    new = sc.make_session(corpus, "s99", ["P01", "P06"], annotation="csv", duration_s=5.0, frame_size=(160, 120))
    assert new == corpus / "sessions" / "s99" and (new / "participants.csv").exists()
    assert {p: p.stat().st_mtime_ns for p in files} == before
    again = sc.make_session(corpus, "s99", ["P01", "P06"], annotation="csv", duration_s=5.0, frame_size=(160, 120))
    assert again == new
    import shutil

    shutil.rmtree(new)  # leave the shared corpus as other tests expect it
    for p in ground_truth_paths(corpus, "s99"):
        p.unlink()


# ---- FaceMesh sees the faces and the planted nods ----------------------------------------------------

def _video_tiles(corpus: Path):
    for sid in SESSIONS:
        sdir = corpus / "sessions" / sid
        for r in _participants(sdir):
            rect = None
            if r.get("crop_x"):
                rect = tuple(int(r[k]) for k in ("crop_x", "crop_y", "crop_w", "crop_h"))
            yield sid, r["participant_id"], sdir / r["video"], rect


def test_facemesh_detects_faces_and_nods(corpus: Path) -> None:
    for sid, pid, video, rect in _video_tiles(corpus):
        gt = load_ground_truth(corpus, sid)
        motion = gt["motion"][pid]
        fps = gt["fps"]
        nods = [n for n in gt["nods"] if n["participant_id"] == pid and n["index_in_group"] == 0]
        nod_frames = {int(round(n["start_s"] * fps)) for n in nods} | {int(round(n["peak_s"] * fps)) for n in nods}
        step = max(1, int(round(fps / 5)))  # ~5 sampled frames per second + every nod start / peak
        wanted = set(range(0, gt["n_frames"], step)) | nod_frames
        lms: dict[int, np.ndarray | None] = {}
        cap = cv2.VideoCapture(str(video))
        with FaceMeshTracker() as fm:
            i = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if i in wanted:
                    if rect is not None:
                        x, y, w, h = rect
                        frame = frame[y:y + h, x:x + w]
                    lms[i] = face_landmarks_px(frame, fm)
                i += 1
        cap.release()
        rate = np.mean([v is not None for v in lms.values()])
        assert rate >= 0.98, (sid, pid, rate)
        # Procrustes pitch relative to the frame closest to zero ground-truth pitch
        idx = sorted(k for k, v in lms.items() if v is not None)
        ref = min(idx, key=lambda k: abs(motion[k, 1]) + abs(motion[k, 2]) + abs(motion[k, 3]))
        pitch = {k: relative_rotation_deg(lms[ref], lms[k])[0] for k in idx}
        truth = np.array([motion[k, 1] for k in idx])
        meas = np.array([pitch[k] for k in idx])
        assert np.corrcoef(truth, meas)[0, 1] > 0.8, (sid, pid)
        deltas = []
        for n in nods:
            i0, ip = int(round(n["start_s"] * fps)), int(round(n["peak_s"] * fps))
            if i0 in pitch and ip in pitch:
                deltas.append(pitch[ip] - pitch[i0])
        assert deltas, (sid, pid)
        # a planted nod (pitch down 8-15 deg) reads as a clear positive (nose-down) pitch change
        assert np.mean(deltas) > 5.0 and np.mean(np.array(deltas) > 2.0) >= 0.8, (sid, pid, deltas)


def test_extra_sessions_add_new_people() -> None:
    specs = sc.default_session_specs(60.0, quick=True, extra_sessions=2)
    assert [s["session_id"] for s in specs] == ["s01", "s02", "s03", "s04", "s05"]
    people = [p for s in specs for p in s["participants"]]
    assert len(people) == len(set(people)) == 10 and people[-4:] == ["P07", "P08", "P09", "P10"]
    assert default_look("P07").f0_hz != default_look("P08").f0_hz  # other voices
