"""Reading a Zoom recording folder by Zoom's own file names (pipeline.ingest.zoom_files): which video,
which tracks, which ids, and the refusals that come before any decoding."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipeline.common.settings import SettingError, add_setting_arguments, config_from_arguments
from pipeline.ingest.config import ImportConfig
from pipeline.ingest.zoom_files import (
    ImportRefused,
    default_session_id,
    find_zoom_files,
    participant_ids,
)

LOCAL = "2026-11-20 10.00.00 Listening study 81234567890"


def _folder(root: Path, names: list[str], name: str = LOCAL) -> Path:
    folder = root / name
    for rel in names:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return folder


TRACKS = ["Audio Record/audioAkiraSato31415926.m4a", "Audio Record/audioMeiTanaka27182818.m4a"]


def test_local_recording(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["zoom_0.mp4", "audio_only.m4a", "playback.m3u", "chat.txt", *TRACKS])
    files = find_zoom_files(folder)
    assert files.kind == "local"
    assert files.video.name == "zoom_0.mp4" and files.mixed_audio.name == "audio_only.m4a"
    assert sorted(files.tracks) == ["AkiraSato", "MeiTanaka"]
    assert set(files.other_files) == {"playback.m3u", "chat.txt"}


def test_cloud_gallery_is_taken_and_speaker_view_refused(tmp_path: Path) -> None:
    cloud = ["GMT20261120-100000_Recording_gvo_1280x720.mp4", "GMT20261120-100000_Recording_avo_1280x720.mp4",
             "GMT20261120-100000_Recording.m4a", *TRACKS]
    files = find_zoom_files(_folder(tmp_path, cloud, "cloud"))
    assert files.kind == "cloud" and "_gvo_" in files.video.name
    speaker_only = _folder(tmp_path, [cloud[1], cloud[2], *TRACKS], "speaker")
    with pytest.raises(ImportRefused, match="speaker .*view"):
        find_zoom_files(speaker_only)
    with pytest.raises(ImportRefused, match="speaker"):
        find_zoom_files(_folder(tmp_path, cloud, "cloud2"), video=cloud[1])


@pytest.mark.parametrize(("names", "match"), [
    (["zoom_0.mp4", "audio_only.m4a"], "no per-participant audio"),
    (["audio_only.m4a", *TRACKS], "no Zoom video"),
    (["zoom_0.mp4", "zoom_1.mp4", *TRACKS], "choose one with --video"),
    (["zoom_0.mp4", *TRACKS, "Audio Record/audioAkiraSato99999999.m4a"], "left and rejoined"),
])
def test_refusals_name_what_is_missing(tmp_path: Path, names: list[str], match: str) -> None:
    with pytest.raises(ImportRefused, match=match):
        find_zoom_files(_folder(tmp_path, names))


def test_video_choice_and_link_out_of_the_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["zoom_0.mp4", "zoom_1.mp4", *TRACKS])
    assert find_zoom_files(folder, video="zoom_1.mp4").video.name == "zoom_1.mp4"
    outside = tmp_path / "secret.m4a"
    outside.write_bytes(b"x")
    (folder / "Audio Record" / "audioEve12345678.m4a").symlink_to(outside)
    with pytest.raises(ImportRefused, match="outside the Zoom folder"):
        find_zoom_files(folder)


def test_participant_ids_from_names_and_table(tmp_path: Path) -> None:
    assert participant_ids(["AkiraSato", "MeiTanaka"], None) == {"AkiraSato": "AkiraSato", "MeiTanaka": "MeiTanaka"}
    table = tmp_path / "people.csv"
    table.write_text("zoom_name,participant_id\nAkiraSato,P07\n佐藤,P08\n", encoding="utf-8")
    assert participant_ids(["AkiraSato", "佐藤"], table) == {"AkiraSato": "P07", "佐藤": "P08"}
    with pytest.raises(ImportRefused, match="no safe participant id"):
        participant_ids(["佐藤", "MeiTanaka"], None)
    bad = tmp_path / "bad.csv"
    bad.write_text("zoom_name,participant_id\nAkiraSato,../x\n", encoding="utf-8")
    with pytest.raises(ImportRefused, match="line 2"):
        participant_ids(["AkiraSato"], bad)
    same = tmp_path / "same.csv"
    same.write_text("zoom_name,participant_id\nAkiraSato,P1\nMeiTanaka,P1\n", encoding="utf-8")
    with pytest.raises(ImportRefused, match="one participant id"):
        participant_ids(["AkiraSato", "MeiTanaka"], same)


def test_session_id_from_zoom_folder_name(tmp_path: Path) -> None:
    assert default_session_id(tmp_path / LOCAL) == "zoom-20261120-100000-81234567890"
    assert default_session_id(tmp_path / "my call (2)") == "my-call-2"


def test_settings_become_options() -> None:
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser, ImportConfig)
    cfg = config_from_arguments(ImportConfig, parser.parse_args(
        ["--tile-order", "B,A", "--on-layout-change", "split", "--min-identity-confidence", "0.5", "--overwrite"]))
    assert cfg.tile_order == ("B", "A") and cfg.on_layout_change == "split" and cfg.overwrite
    assert cfg.min_identity_confidence == 0.5
    assert config_from_arguments(ImportConfig, parser.parse_args([])) == ImportConfig()
    with pytest.raises(SettingError, match="--session-id"):
        config_from_arguments(ImportConfig, parser.parse_args(["--session-id", "a/b"]))


def test_refused_table_cells_are_spreadsheet_safe(tmp_path: Path, monkeypatch) -> None:
    """refused.csv quotes folder names a user chose: a name that starts a formula stays text."""
    import csv

    from pipeline.ingest.zoom import import_zoom_folders

    monkeypatch.chdir(tmp_path)
    (tmp_path / "=HYPERLINK(1)").mkdir()
    done, refused = import_zoom_folders([Path("=HYPERLINK(1)")], tmp_path / "corpus")
    assert not done and len(refused) == 1
    with open(tmp_path / "corpus" / "imports" / "refused.csv", newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["zoom_dir"] == "'=HYPERLINK(1)" and row["reason"].startswith("'=HYPERLINK(1)")
