"""Who is who in a gallery recording: each participant's own track is matched to the tile whose mouth
moves with it (generated Zoom-like folders with known tiles), refused when the mouths never move, and
bad inputs are named. Also: the sample renderer's mouth opening, and that it leaves the pose-only
output (the main sample corpus) byte for byte unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.ingest.identity import (
    IdentityError,
    IdentitySettings,
    TileAssignment,
    assign_tiles,
    plan_stretches,
    require_confident,
)
from pipeline.sample.faces import DEFAULT_LOOKS
from pipeline.sample.render import HeadRenderer
from pipeline.sample.zoom_folder import ZoomSample, make_zoom_folder

FOLDER_ARGS = {"duration_s": 20.0, "offsets_s": {"Akira Sato": 0.6, "Mei Tanaka": -0.4}}
SETTINGS = IdentitySettings(fps=12.5)  # the slower end of the allowed density keeps this file quick


@pytest.fixture(scope="module")
def talking(tmp_path_factory: pytest.TempPathFactory) -> ZoomSample:
    return make_zoom_folder(tmp_path_factory.mktemp("talking"), seed=0, **FOLDER_ARGS)


@pytest.fixture(scope="module")
def names_swapped(tmp_path_factory: pytest.TempPathFactory) -> ZoomSample:
    """Mei Tanaka sits in the left tile here, so the answer is not always 'first id -> left tile'."""
    return make_zoom_folder(tmp_path_factory.mktemp("swapped"), seed=3, names=("Mei Tanaka", "Akira Sato"),
                            **FOLDER_ARGS)


@pytest.fixture(scope="module")
def still(tmp_path_factory: pytest.TempPathFactory) -> ZoomSample:
    return make_zoom_folder(tmp_path_factory.mktemp("still"), seed=0, still_mouths=True, **FOLDER_ARGS)


def _inputs(sample: ZoomSample) -> tuple[Path, list[tuple[int, int, int, int]], dict[str, Path], dict[str, float],
                                         dict[str, int]]:
    """Video, tiles left to right, tracks, offsets and the true tile index of each participant."""
    truth = sample.truth()
    layout = truth["layouts"][0]["tiles"]
    order = sorted(layout, key=lambda pid: layout[pid][0])
    tracks = {p["participant_id"]: sample.folder / p["audio"] for p in truth["participants"]}
    offsets = {p["participant_id"]: p["audio_offset_s"] for p in truth["participants"]}
    return (sample.folder / truth["video"], [tuple(layout[p]) for p in order], tracks, offsets,
            {pid: order.index(pid) for pid in order})


@pytest.fixture(scope="module")
def results(talking: ZoomSample, names_swapped: ZoomSample) -> dict[str, tuple[TileAssignment, dict[str, int]]]:
    out = {}
    for key, sample in (("talking", talking), ("names_swapped", names_swapped)):
        video, tiles, tracks, offsets, true_tile = _inputs(sample)
        out[key] = (assign_tiles(video, tiles, tracks, offsets, settings=SETTINGS), true_tile)
    return out


@pytest.mark.parametrize("key", ["talking", "names_swapped"])
def test_tracks_matched_to_their_tiles(results: dict, key: str) -> None:
    assignment, true_tile = results[key]
    assert assignment.tile_of == true_tile
    assert assignment.confident and assignment.confidence >= SETTINGS.min_confidence
    assert require_confident(assignment, Path("x.mp4")) is assignment
    for pid, tile in true_tile.items():  # its own tile's mouth goes with the voice; the other's does not more
        assert assignment.scores[pid][tile] > 0 and assignment.scores[pid][tile] == max(assignment.scores[pid])
    ev = assignment.evidence
    assert len(ev["stretches_s"]) == SETTINGS.n_stretches and ev["frames_analysed"] > 0
    assert min(ev["frames_with_face"]) >= SETTINGS.min_face_fraction * ev["frames_analysed"]
    assert abs(ev["lag_s"]) <= SETTINGS.max_lag_s


def test_both_orders_occur(results: dict) -> None:
    assert results["talking"][1] != results["names_swapped"][1]


def test_swapped_tiles_give_swapped_mapping(names_swapped: ZoomSample, results: dict) -> None:
    video, tiles, tracks, offsets, true_tile = _inputs(names_swapped)
    swapped = assign_tiles(video, tiles[::-1], tracks, offsets, settings=SETTINGS)
    assert swapped.tile_of == {pid: 1 - t for pid, t in true_tile.items()} and swapped.confident
    straight = results["names_swapped"][0]
    assert {p: s[::-1] for p, s in swapped.scores.items()} == straight.scores


def test_still_mouths_refused(still: ZoomSample) -> None:
    video, tiles, tracks, offsets, _ = _inputs(still)
    assignment = assign_tiles(video, tiles, tracks, offsets, settings=SETTINGS)
    assert not assignment.confident and assignment.confidence < SETTINGS.min_confidence
    assert assignment.evidence["reason"]
    with pytest.raises(IdentityError, match="--tile-order.*crop_x") as err:
        require_confident(assignment, video)
    assert str(video) in str(err.value) and "AkiraSato" in str(err.value)


def test_bad_inputs_named(talking: ZoomSample, tmp_path: Path) -> None:
    video, tiles, tracks, offsets, _ = _inputs(talking)
    gone = {**tracks, "AkiraSato": tmp_path / "audioAkiraSato0.m4a"}
    with pytest.raises(IdentityError, match="audioAkiraSato0.m4a.*AkiraSato.*not found"):
        assign_tiles(video, tiles, gone, offsets)
    outside = [tiles[0], (tiles[1][0] + 100, *tiles[1][1:])]
    with pytest.raises(IdentityError, match=r"zoom_0\.mp4.*tile 1 .*does not fit inside the 640x360 frame"):
        assign_tiles(video, outside, tracks, offsets)
    with pytest.raises(IdentityError, match="offset"):
        assign_tiles(video, tiles, tracks, {"AkiraSato": 0.6})
    with pytest.raises(IdentityError, match="video file not found"):
        assign_tiles(tmp_path / "none.mp4", tiles, tracks, offsets)
    with pytest.raises(IdentityError, match="too short"):
        assign_tiles(video, tiles, tracks, offsets, start_s=2.0, end_s=8.0)


def test_stretches_spread_over_a_long_call() -> None:
    """An hour costs what a minute costs: four 15 s stretches spread over the call, not its start."""
    st = IdentitySettings()
    stretches = plan_stretches(0.0, 3600.0, st)
    assert len(stretches) == 4 and all(b - a == pytest.approx(15.0) for a, b in stretches)
    assert stretches[0][0] > 300 and stretches[-1][1] < 3300 and stretches[-1][0] > 2400
    short = plan_stretches(0.0, 20.0, st)  # a short call: contiguous stretches inside it
    assert len(short) == 4 and short[0][0] >= 0.0 and short[-1][1] <= 20.0


# The hashes of one pose-only frame per photo, computed on main BEFORE mouths were added: the default
# mouth_open=0 must keep the renderer's output (and so the main sample corpus) byte for byte.
POSE_ONLY_SHA256 = {"P01": "f0c07d55f03d998433d679da2e2ea99abd86ddf877a1227b44c532ed5994204b",
                    "P02": "c88fce98ce3c0e3d298aca72729740eb0f7a0de43c62444c2a4e7fd88e39d7e0"}


@pytest.mark.parametrize("pid", sorted(POSE_ONLY_SHA256))
def test_renderer_default_output_unchanged_and_mouth_opens(pid: str) -> None:
    from pipeline.features.head.tracking import FaceMeshTracker

    r = HeadRenderer(DEFAULT_LOOKS[pid], 304, 168, calibrate=False)
    pose = (4.0, -6.0, 2.0, 0.01, -0.02, 1.03)
    closed = r.render(*pose).copy()
    assert hashlib.sha256(closed.tobytes()).hexdigest() == POSE_ONLY_SHA256[pid]
    assert np.array_equal(r.render(*pose, mouth_open=0.0), closed)
    opened = r.render(*pose, mouth_open=1.0).copy()
    top = int(r.lips[:, 1].min() - 0.25 * r.face_h)  # the forehead, eyes and nose do not move
    assert np.array_equal(opened[:top], closed[:top]) and not np.array_equal(opened, closed)
    with FaceMeshTracker(static_image_mode=True) as fm:
        gaps = []
        for img in (closed, opened):
            lm = fm.process(img)
            assert lm is not None  # FaceMesh still finds the face with the mouth open
            gaps.append(np.linalg.norm(lm[13, :2] - lm[14, :2]) / np.linalg.norm(lm[33, :2] - lm[263, :2]))
    # the jaw drops 0.12 face heights (~0.3 eye distances); FaceMesh must see at least a tenth of it
    assert gaps[1] - gaps[0] > 0.03, gaps
    with pytest.raises(ValueError, match="mouth_open"):
        r.render(*pose, mouth_open=1.5)
