"""The generated Zoom-like local recording folder: Zoom's layout and names, what the video shows, the
per-participant tracks (offset, bleed), truth outside the folder, and byte-for-byte determinism."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.media.audio import decode_audio, ffmpeg_exe
from pipeline.sample.render import GALLERY_BG
from pipeline.sample.zoom_folder import (
    MOUTH_LEAD_S,
    TRUTH_FILE,
    ZOOM_GENERATOR_VERSION,
    ZoomSample,
    make_zoom_folder,
    mouth_opening,
    participant_id,
)
from schemas.conventions import SAMPLE_RATE

ARGS = {"seed": 0, "duration_s": 16.0, "fps": 10.0, "frame_size": (320, 180), "layout_change_at_s": 10.0,
        "offsets_s": {"Akira Sato": 0.5, "Mei Tanaka": -0.75}}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> ZoomSample:
    return make_zoom_folder(tmp_path_factory.mktemp("zoom") / "a", **ARGS)


def _frame(video: Path, t: float, fps: float) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, int(round(t * fps)))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def _near(img: np.ndarray, bgr: tuple[int, int, int], tol: int = 10) -> np.ndarray:
    return np.all(np.abs(img.astype(int) - np.array(bgr)) <= tol, axis=-1)


def test_folder_layout_like_zoom(gallery: ZoomSample) -> None:
    folder = gallery.folder
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d\.\d\d\.\d\d .+ \d{11}", folder.name)
    assert gallery.truth_path == folder.parent / TRUTH_FILE  # truth is never inside the recording
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["zoom_0.mp4", "audio_only.m4a", "playback.m3u", "chat.txt", "Audio Record"])
    tracks = sorted(p.name for p in (folder / "Audio Record").iterdir())
    assert [re.fullmatch(r"audio([A-Za-z]+)\d{8}\.m4a", n).group(1) for n in tracks] == ["AkiraSato", "MeiTanaka"]
    assert "zoom_0.mp4" in (folder / "playback.m3u").read_text().splitlines()
    assert "From Akira Sato to Everyone:" in (folder / "chat.txt").read_text() or \
        "From Mei Tanaka to Everyone:" in (folder / "chat.txt").read_text()
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(folder / "zoom_0.mp4")],
                          capture_output=True, text=True).stderr
    assert re.search(r"Video: h264", info) and re.search(r"Audio: aac", info), info
    cap = cv2.VideoCapture(str(folder / "zoom_0.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == 10.0 and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 160
    cap.release()


def test_gallery_tiles_labels_and_layout_change(gallery: ZoomSample) -> None:
    truth = gallery.truth()
    assert truth["view"] == "gallery" and truth["layout_change_at_s"] == 10.0
    first, second = truth["layouts"]
    assert (first["start_s"], first["end_s"], second["start_s"], second["end_s"]) == (0.0, 10.0, 10.0, 16.0)
    for pid in ("AkiraSato", "MeiTanaka"):
        assert second["tiles"][pid][2] < first["tiles"][pid][2]  # the window shrank
    for layout, t in ((first, 2.0), (second, 12.5)):
        frame = _frame(gallery.folder / "zoom_0.mp4", t, truth["fps"])
        outside = np.ones(frame.shape[:2], bool)
        for pid, (x, y, w, h) in layout["tiles"].items():
            outside[max(0, y - 3):y + h + 3, max(0, x - 3):x + w + 3] = False
            tile = frame[y + 2:y + h - 2, x + 2:x + w - 2]
            assert _near(tile, GALLERY_BG).mean() < 0.3, (pid, t)  # a picture, not background
            label = frame[y + h - 16:y + h - 2, x + 2:x + min(w, 70)]
            assert (label.max(axis=-1) < 50).mean() > 0.2 and (label.min(axis=-1) > 180).any(), (pid, t)
        assert _near(frame[outside], GALLERY_BG).mean() > 0.95


def _talking(spans: list[list], pid: str, times: np.ndarray) -> np.ndarray:
    mask = np.zeros(times.size, bool)
    for who, start, end, _label in spans:
        if who == pid:
            mask |= (times >= start) & (times < end)
    return mask


def test_tracks_offset_length_and_bleed(gallery: ZoomSample) -> None:
    """Each track starts at its offset, lasts until the video ends, and holds the other's voice about
    `bleed_db` below its own (RMS where only one of them talks, on the video timeline)."""
    truth = gallery.truth()
    pids = [p["participant_id"] for p in truth["participants"]]
    for part in truth["participants"]:
        pid, off = part["participant_id"], part["audio_offset_s"]
        other = pids[1 - pids.index(pid)]
        wave = decode_audio(gallery.folder / part["audio"], offset_s=off)  # now on the video timeline
        times = np.arange(wave.size) / SAMPLE_RATE
        own, theirs = _talking(truth["talk_spans"], pid, times), _talking(truth["talk_spans"], other, times)
        inside = times >= max(0.0, off)
        rms = {k: float(np.sqrt(np.mean(wave[m & inside].astype(np.float64) ** 2)))
               for k, m in (("own", own & ~theirs), ("bleed", theirs & ~own))}
        level_db = 20 * np.log10(rms["bleed"] / rms["own"])
        assert abs(level_db - truth["bleed_db"]) < 6.0, (pid, level_db)
        assert abs(decode_audio(gallery.folder / part["audio"]).size / SAMPLE_RATE
                   - (truth["duration_s"] - off)) < 0.03


def test_speaker_view_swaps_tiles(tmp_path: Path) -> None:
    sample = make_zoom_folder(tmp_path, seed=2, duration_s=20.0, fps=5.0, frame_size=(192, 108), view="speaker")
    truth = sample.truth()
    layouts = truth["layouts"]
    assert truth["view"] == "speaker" and len(layouts) >= 2
    speakers = []
    for lay in layouts:
        (big, big_rect), (_small, small_rect) = sorted(lay["tiles"].items(), key=lambda kv: -kv[1][2] * kv[1][3])
        assert big_rect[2] * big_rect[3] > 4 * small_rect[2] * small_rect[3]
        speakers.append(big)
    assert all(a != b for a, b in zip(speakers, speakers[1:], strict=False))  # tiles swap with the speaker
    first_turn = truth["turns"][0]["participant_id"]
    assert speakers[0] == first_turn


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    args = {**ARGS, "duration_s": 6.0, "fps": 5.0, "frame_size": (192, 108), "layout_change_at_s": 3.0,
            "drift_ppm": {"Mei Tanaka": 150.0}}
    first, again = make_zoom_folder(tmp_path / "a", **args), make_zoom_folder(tmp_path / "b", **args)
    files = sorted(p.relative_to(first.folder) for p in first.folder.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.folder) for p in again.folder.rglob("*") if p.is_file())
    for rel in files:
        assert (first.folder / rel).read_bytes() == (again.folder / rel).read_bytes(), rel
    assert first.truth_path.read_bytes() == again.truth_path.read_bytes()
    other = make_zoom_folder(tmp_path / "c", **{**args, "seed": 1})
    assert (other.folder / "audio_only.m4a").read_bytes() != (first.folder / "audio_only.m4a").read_bytes()


@pytest.mark.parametrize("kwargs, match", [
    ({"view": "active"}, "view must be"),
    ({"offsets_s": {"Nobody": 1.0}}, "unknown participant"),
    ({"view": "speaker", "layout_change_at_s": 3.0}, "layout_change_at_s"),
    ({"names": ("A B", "AB")}, "two display names"),
    ({"offsets_s": {"Akira Sato": 29.5}}, "under 1 s of track"),
    ({"still_mouths": "yes"}, "still_mouths must be"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_zoom_folder(tmp_path, **kwargs)


def test_participant_id_from_display_name() -> None:
    assert participant_id("Akira Sato") == "AkiraSato" and participant_id("Jean-Luc O'Neil") == "JeanLucONeil"


def test_cli_sample_zoom(tmp_path: Path) -> None:
    from pipeline.cli import main

    assert main(["sample-zoom", str(tmp_path), "--duration", "6", "--fps", "5", "--size", "192x108",
                 "--offset", "Mei Tanaka=0.4", "--drift", "AkiraSato=-25"]) == 0
    truth = (tmp_path / TRUTH_FILE).read_text()
    parts = {p["participant_id"]: p for p in json.loads(truth)["participants"]}
    assert parts["MeiTanaka"]["audio_offset_s"] == 0.4 and parts["AkiraSato"]["drift_ppm"] == -25.0
    assert main(["sample-zoom", str(tmp_path / "x"), "--offset", "Nobody=1"]) == 2
    with pytest.raises(SystemExit):
        main(["sample-zoom", str(tmp_path), "--offset", "no-number"])


def test_mouths_follow_own_voice() -> None:
    """The mouth is closed in silence, opens on loud speech and leads the sound by MOUTH_LEAD_S."""
    sr, fps = 16000, 25.0
    voice = np.full(3 * sr, 1e-4)
    voice[sr:2 * sr] = 0.5 * np.sin(2 * np.pi * 200 * np.arange(sr) / sr)  # speech from 1 s to 2 s
    mouth = mouth_opening(voice, sr, fps, 3.0)
    times = np.arange(mouth.size) / fps
    assert mouth.shape == (75,) and mouth.min() >= 0.0 and mouth.max() <= 1.0
    assert np.all(mouth[(times < 0.8) | (times > 2.2)] == 0.0)
    assert np.all(mouth[(times > 1.1) & (times < 1.9)] == 1.0)
    first_open = times[np.argmax(mouth > 0)]
    assert 1.0 - MOUTH_LEAD_S - 0.1 < first_open < 1.0  # the mouth opens before the sound starts


def test_still_mouths_option(gallery: ZoomSample, tmp_path: Path) -> None:
    assert gallery.truth()["generator_version"] == ZOOM_GENERATOR_VERSION == 2
    assert gallery.truth()["still_mouths"] is False
    args = {**ARGS, "duration_s": 4.0, "fps": 5.0, "frame_size": (192, 108), "layout_change_at_s": None}
    moving, still = make_zoom_folder(tmp_path / "m", **args), make_zoom_folder(tmp_path / "s", **args, still_mouths=True)
    assert still.truth()["still_mouths"] is True
    assert (moving.folder / "zoom_0.mp4").read_bytes() != (still.folder / "zoom_0.mp4").read_bytes()
    assert (moving.folder / "audio_only.m4a").read_bytes() == (still.folder / "audio_only.m4a").read_bytes()
