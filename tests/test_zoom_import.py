"""The Zoom importer end to end on generated Zoom-like folders with known truth (issue targets:
crop IoU >= 0.9 with the true tile, audio offset error <= 20 ms, drift detected, layout changes and
speaker view and low confidence refused, a re-import is a no-op)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from pipeline.corpus.layout import read_session
from pipeline.ingest.config import ImportConfig
from pipeline.ingest.tiles import iou
from pipeline.ingest.zoom import import_zoom
from pipeline.ingest.zoom_files import ImportRefused
from pipeline.sample.zoom_folder import ZoomSample, make_zoom_folder

OFFSETS = {"AkiraSato": 0.62, "MeiTanaka": 1.87}
DRIFT = {"MeiTanaka": 4000.0}  # ~ +90 ms over the ~22 s track: above one head frame, so corrected
OFFSET_TOLERANCE_S = 0.020  # the target


def rows(session: Path) -> dict[str, dict[str, str]]:
    with open(session / "participants.csv", newline="", encoding="utf-8") as fh:
        return {r["participant_id"]: r for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> ZoomSample:
    return make_zoom_folder(tmp_path_factory.mktemp("zoom"), seed=3, duration_s=24.0, offsets_s=OFFSETS,
                            drift_ppm=DRIFT, names=("Mei Tanaka", "Akira Sato"))


@pytest.fixture(scope="module")
def imported(gallery: ZoomSample, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    return corpus, import_zoom(gallery.folder, corpus)


def test_crops_offsets_and_identity_match_the_truth(gallery: ZoomSample, imported) -> None:
    corpus, result = imported
    truth = gallery.truth()
    (sid,) = result.session_ids
    assert sid.startswith("zoom-20261120-100000-")
    session = corpus / "sessions" / sid
    got = rows(session)
    tiles = truth["layouts"][0]["tiles"]
    for p in truth["participants"]:
        pid = p["participant_id"]
        row = got[pid]
        crop = [int(row[k]) for k in ("crop_x", "crop_y", "crop_w", "crop_h")]
        assert iou(crop, tiles[pid]) >= 0.9, (pid, crop, tiles[pid])
        assert abs(float(row["audio_offset_s"]) - p["audio_offset_s"]) <= OFFSET_TOLERANCE_S, (pid, row)
    report = json.loads((session / "import_report.json").read_text())
    assert report["identity"][0]["method"] == "audio-visual synchrony"
    assert report["alignment"]["MeiTanaka"]["drift_warning"] and not report["alignment"]["AkiraSato"]["drift_warning"]
    assert got["MeiTanaka"]["audio"].endswith(".flac") and got["AkiraSato"]["audio"].endswith(".m4a")
    assert any("MeiTanaka" in w and "corrected" in w for w in report["warnings"])
    # the video is a hard link, not a copy; the session is a valid input (no turns: automatic turns)
    assert (session / "video.mp4").stat().st_ino == (gallery.folder / "zoom_0.mp4").stat().st_ino
    spec = read_session(corpus, sid)
    assert sorted(spec.participant_ids) == ["AkiraSato", "MeiTanaka"]


def test_drift_correction_puts_the_track_on_the_video_clock(gallery: ZoomSample, imported) -> None:
    """Aligned again, the corrected track has no drift left (the bound is the alignment's own
    sub-frame precision over the track, far below the 80 ms that triggered the correction)."""
    from pipeline.ingest.alignment import align_track

    corpus, result = imported
    session = corpus / "sessions" / result.session_ids[0]
    again = align_track(session / rows(session)["MeiTanaka"]["audio"], gallery.folder / "zoom_0.mp4").require()
    assert abs(again.drift_over_track_s) < 0.010, again
    assert abs(again.offset_s - OFFSETS["MeiTanaka"]) <= OFFSET_TOLERANCE_S


def test_reimport_is_a_noop_and_a_taken_id_is_refused(gallery: ZoomSample, imported) -> None:
    corpus, result = imported
    session = corpus / "sessions" / result.session_ids[0]
    before = (session / "participants.csv").stat().st_mtime_ns
    again = import_zoom(gallery.folder, corpus)
    assert again.already_imported and again.session_ids == result.session_ids
    assert (session / "participants.csv").stat().st_mtime_ns == before
    handmade = corpus / "sessions" / "handmade"
    handmade.mkdir()
    (handmade / "participants.csv").write_text("participant_id,video,audio\n", encoding="utf-8")
    with pytest.raises(ImportRefused, match="not made by import-zoom.*--overwrite"):
        import_zoom(gallery.folder, corpus, ImportConfig(session_id="handmade", tile_order=("AkiraSato", "MeiTanaka")))
    assert (handmade / "participants.csv").read_text(encoding="utf-8") == "participant_id,video,audio\n"


def test_layout_change_refused_with_its_time_or_split(tmp_path: Path) -> None:
    change_s = 11.3
    sample = make_zoom_folder(tmp_path / "zoom", seed=5, duration_s=24.0, layout_change_at_s=change_s)
    truth = sample.truth()
    with pytest.raises(ImportRefused, match=r"layout changes at 11\.[23]\d s"):
        import_zoom(sample.folder, tmp_path / "corpus")
    result = import_zoom(sample.folder, tmp_path / "corpus", ImportConfig(on_layout_change="split",
                                                                          tile_order=("AkiraSato", "MeiTanaka")))
    assert len(result.session_ids) == 2
    for k, sid in enumerate(result.session_ids):
        session = tmp_path / "corpus" / "sessions" / sid
        layout = truth["layouts"][k]
        cap = cv2.VideoCapture(str(session / "video.mp4"))
        n_frames = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        cap.release()
        assert abs(n_frames / truth["fps"] - (layout["end_s"] - layout["start_s"])) <= 3 / truth["fps"], (sid, n_frames)
        for pid, row in rows(session).items():
            crop = [int(row[c]) for c in ("crop_x", "crop_y", "crop_w", "crop_h")]
            assert iou(crop, layout["tiles"][pid]) >= 0.9, (sid, pid, crop)
            true_offset = next(p["audio_offset_s"] for p in truth["participants"] if p["participant_id"] == pid)
            assert abs(float(row["audio_offset_s"]) - (true_offset - layout["start_s"])) <= 3 / truth["fps"]


def test_cli_refuses_speaker_view_and_goes_on(tmp_path: Path) -> None:
    sample = make_zoom_folder(tmp_path / "zoom", seed=2, duration_s=12.0, view="speaker")
    empty = tmp_path / "not a recording"
    empty.mkdir()
    corpus = tmp_path / "corpus"
    done = subprocess.run([sys.executable, "-m", "pipeline", "import-zoom", str(sample.folder), str(empty),
                           "--corpus", str(corpus)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "speaker" in done.stderr and "zoom_0.mp4" in done.stderr
    with open(corpus / "imports" / "refused.csv", newline="", encoding="utf-8") as fh:
        refused = {Path(r["zoom_dir"]).name: r for r in csv.DictReader(fh)}
    assert set(refused) == {sample.folder.name, empty.name}
    assert "speaker" in refused[sample.folder.name]["reason"] and "no Zoom video" in refused[empty.name]["reason"]
    assert not (corpus / "sessions").exists() or not any((corpus / "sessions").iterdir())


def test_low_confidence_is_refused_then_a_tile_order_imports(tmp_path: Path) -> None:
    """Faces whose mouths never move give no lip-voice evidence: the importer stops and asks."""
    from pipeline.ingest.identity import IdentityError

    sample = make_zoom_folder(tmp_path / "zoom", seed=4, duration_s=20.0, still_mouths=True)
    with pytest.raises(IdentityError, match=r"after 5 stretches, 20 s analysed.*--tile-order"):
        import_zoom(sample.folder, tmp_path / "corpus")
    assert not (tmp_path / "corpus" / "sessions").exists() or not any((tmp_path / "corpus" / "sessions").iterdir())
    tiles = sample.truth()["layouts"][0]["tiles"]
    order = tuple(sorted(tiles, key=lambda pid: tiles[pid][0]))  # left tile first
    result = import_zoom(sample.folder, tmp_path / "corpus", ImportConfig(tile_order=order))
    session = tmp_path / "corpus" / "sessions" / result.session_ids[0]
    for pid, row in rows(session).items():
        assert iou([int(row[c]) for c in ("crop_x", "crop_y", "crop_w", "crop_h")], tiles[pid]) >= 0.9
    assert result.report["identity"][0]["method"] == "--tile-order"


def test_luigi_import_then_build_with_automatic_turns(gallery: ZoomSample, tmp_path: Path) -> None:
    """The README's Zoom walk-through: ImportZoom, then BuildSplits on that corpus with no hand work."""
    import pandas as pd

    from tasks import ImportZoom

    from .helpers import families_run, run_build, run_luigi

    corpus, out = tmp_path / "corpus", tmp_path / "out"
    task = ImportZoom(zoom_dir=str(gallery.folder), corpus=str(corpus))
    assert run_luigi(task).status.name == "SUCCESS"
    assert families_run(run_luigi(ImportZoom(zoom_dir=str(gallery.folder), corpus=str(corpus)))) == []
    (sid,) = json.loads(Path(task.output().path).read_text())["sessions"]
    result = run_build(corpus=str(corpus), out=str(out))
    assert result.status.name == "SUCCESS", result.summary_text
    dataset = out / "dataset"
    assert len(pd.read_csv(dataset / "rejected.csv")) == 0
    assert (pd.read_parquet(dataset / "segments.parquet")["session_id"] == sid).sum() > 0
    assert (dataset / "annotations" / f"{sid}.TextGrid").is_file()
    assert "1 of 1 session(s) use automatic turns" in (dataset / "data_card.md").read_text()


def test_undecodable_track_is_named(gallery: ZoomSample, tmp_path: Path, caplog) -> None:
    """A broken track is the error, not a reason to re-align everything against the mixed audio."""
    import shutil

    from pipeline.common.errors import MediaError

    folder = tmp_path / gallery.folder.name
    shutil.copytree(gallery.folder, folder)
    track = next((folder / "Audio Record").glob("audioMeiTanaka*.m4a"))
    track.write_bytes(b"\x00" * 4096)
    with pytest.raises(MediaError) as caught:
        import_zoom(folder, tmp_path / "corpus")
    assert caught.value.path == str(track)
    assert "no usable audio stream" not in caplog.text
