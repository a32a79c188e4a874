"""Tile detection in Zoom gallery videos (pipeline.ingest.tiles) on generated Zoom-like folders with
known tiles: crops against the truth, the layout change time, speaker-view refusal, videos without
tiles, another background colour and a momentary redraw."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.ingest.sampled_video import sample_frames
from pipeline.ingest.tiles import LayoutError, LayoutSpan, TileSettings, detect_layouts, find_tiles, iou
from pipeline.sample.encoders import encode_video
from pipeline.sample.render import GALLERY_BG
from pipeline.sample.zoom_folder import ZoomSample, make_zoom_folder

FPS = 10.0
SIZE = (480, 272)
CHANGE_AT_S = 8.35  # between frames 83 and 84: the first frame of the new layout is 84
SOLO_FACE_VIDEO = Path("/work/shared/testdata/liveportrait/d0.mp4")
OTHER_FACE_VIDEO = Path("/work/shared/testdata/liveportrait/d3.mp4")
FACE_TASK_MODEL = Path("/work/shared/testdata/mediapipe_models/face_landmarker.task")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> ZoomSample:
    return make_zoom_folder(tmp_path_factory.mktemp("zoom") / "gallery", seed=0, duration_s=14.0, fps=FPS,
                            frame_size=SIZE, layout_change_at_s=CHANGE_AT_S)


@pytest.fixture(scope="module")
def gallery_spans(gallery: ZoomSample) -> list[LayoutSpan]:
    return detect_layouts(gallery.folder / "zoom_0.mp4")


@pytest.fixture(scope="module")
def speaker(tmp_path_factory: pytest.TempPathFactory) -> ZoomSample:
    return make_zoom_folder(tmp_path_factory.mktemp("zoom") / "speaker", seed=1, duration_s=14.0, fps=FPS,
                            frame_size=SIZE, view="speaker")


def _truth_tiles(layout: dict) -> list[tuple[int, int, int, int]]:
    """The truth's tiles in reading order (the two gallery tiles share a row)."""
    return sorted(tuple(r) for r in layout["tiles"].values())


def test_gallery_tiles_match_truth_in_both_layouts(gallery: ZoomSample, gallery_spans: list[LayoutSpan]) -> None:
    truth = gallery.truth()
    assert len(gallery_spans) == len(truth["layouts"]) == 2
    for span, layout in zip(gallery_spans, truth["layouts"], strict=True):
        expected = _truth_tiles(layout)
        assert len(span.tiles) == 2
        for found, true in zip(span.tiles, expected, strict=True):
            assert iou(found, true) >= 0.9, (span, layout)
    assert gallery_spans[0].start_s == 0.0
    assert gallery_spans[0].end_s == gallery_spans[1].start_s
    assert gallery_spans[-1].end_s == pytest.approx(truth["duration_s"])


def test_layout_change_found_to_the_frame(gallery_spans: list[LayoutSpan]) -> None:
    """Frame i shows the layout of time i/fps, so the first frame of the new layout is ceil(t*fps):
    bisection between two samples must land exactly there, within one frame period of the truth."""
    first_new = math.ceil(CHANGE_AT_S * FPS) / FPS
    assert gallery_spans[1].start_s == pytest.approx(first_new, abs=1e-6)
    assert 0.0 <= gallery_spans[1].start_s - CHANGE_AT_S < 1.0 / FPS


def test_evidence_is_json_and_names_faces(gallery_spans: list[LayoutSpan]) -> None:
    for span in gallery_spans:
        ev = json.loads(json.dumps(span.evidence))
        assert ev["samples"] >= 2 and ev["transients"] == [] and ev["faceless_tiles"] == []
        assert all(found >= 1 for found, _tried in ev["faces_found_checked"])
        # just outside a region's box every pixel is background (else it would belong to the region)
        for inside, outside in ev["border_contrast_in_out"]:
            assert outside <= TileSettings().background_tol < inside


def test_wrong_participant_count_is_refused_with_the_span(gallery: ZoomSample) -> None:
    video = gallery.folder / "zoom_0.mp4"
    with pytest.raises(LayoutError, match=r"2 tile\(s\) with a face, expected 3") as err:
        detect_layouts(video, n_participants=3)
    assert str(video) in str(err.value) and "t=0.00s.." in str(err.value)
    assert err.value.kind == "layout"


def test_speaker_view_is_refused(speaker: ZoomSample) -> None:
    video = speaker.folder / "zoom_0.mp4"
    with pytest.raises(LayoutError, match="speaker view") as err:
        detect_layouts(video)
    assert str(video) in str(err.value)


def test_speaker_view_swap_is_refused_even_with_equal_size_allowance(speaker: ZoomSample) -> None:
    """The second sign of the speaker view: a tile's picture becomes what the other tile showed."""
    assert len(speaker.truth()["layouts"]) >= 2  # the speakers change within the clip
    with pytest.raises(LayoutError, match="tiles swap with the active speaker"):
        detect_layouts(speaker.folder / "zoom_0.mp4", settings=TileSettings(max_tile_area_ratio=1e6))


def test_uniform_video_has_no_tiles(tmp_path: Path) -> None:
    video = tmp_path / "uniform.mp4"
    encode_video(video, 320, 180, FPS, (np.full((180, 320, 3), 60, np.uint8) for _ in range(30)))
    with pytest.raises(LayoutError, match="no tiles") as err:
        detect_layouts(video)
    assert str(video) in str(err.value)


def test_camera_video_has_no_gallery_background() -> None:
    if not SOLO_FACE_VIDEO.is_file():
        pytest.skip(f"{SOLO_FACE_VIDEO} not present")
    with pytest.raises(LayoutError, match="no gallery background"):
        detect_layouts(SOLO_FACE_VIDEO)


def test_unreadable_video_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "zoom_0.mp4"
    bad.write_text("not a video")
    with pytest.raises(LayoutError, match="zoom_0.mp4"):
        detect_layouts(bad)


def _recoloured(video: Path, tiles: list[tuple[int, int, int, int]], colour: tuple[int, int, int],
                seconds: float, black_from_s: float, black_s: float):
    """The first `seconds` of `video` with everything outside `tiles` painted `colour`, and a black
    stretch (a redraw) of `black_s` from `black_from_s`."""
    cap = cv2.VideoCapture(str(video))
    inside = np.zeros((SIZE[1], SIZE[0]), bool)
    for x, y, w, h in tiles:
        inside[y:y + h, x:x + w] = True
    for i in range(int(seconds * FPS)):
        ok, frame = cap.read()
        assert ok
        frame[~inside] = colour
        if black_from_s <= i / FPS < black_from_s + black_s:
            frame[:] = 0
        yield frame
    cap.release()


def test_other_background_colour_and_a_momentary_redraw(gallery: ZoomSample, tmp_path: Path) -> None:
    first = gallery.truth()["layouts"][0]
    tiles = _truth_tiles(first)
    colour = (96, 48, 72)  # BGR, far from the generator's dark grey
    video = tmp_path / "recoloured.mp4"
    encode_video(video, SIZE[0], SIZE[1], FPS, _recoloured(gallery.folder / "zoom_0.mp4", tiles, colour, 8.0, 3.0, 0.3))
    spans = detect_layouts(video, settings=TileSettings(min_samples=16))
    assert len(spans) == 1
    assert all(iou(f, t) >= 0.9 for f, t in zip(spans[0].tiles, tiles, strict=True))
    bg = np.array(spans[0].evidence["background_bgr"])
    assert np.abs(bg - np.array(colour)).max() <= TileSettings().background_tol
    assert np.abs(bg - np.array(GALLERY_BG)).max() > TileSettings().background_tol
    (redraw,) = spans[0].evidence["transients"]
    assert redraw["start_s"] == pytest.approx(3.0) and redraw["end_s"] == pytest.approx(3.3)


def test_label_box_neither_splits_nor_shrinks_a_tile() -> None:
    """Three textured tiles in two rows on a background; each has a name box (here the background colour, the hardest case) with white text
    at its bottom-left corner (Zoom's label): the boxes come back exactly, in reading order."""
    rng = np.random.default_rng(0)
    bg = (40, 40, 40)
    frame = np.full((360, 640, 3), bg, np.uint8)
    rects = [(330, 10, 300, 160), (10, 10, 300, 160), (170, 190, 300, 160)]
    for x, y, w, h in rects:
        frame[y:y + h, x:x + w] = rng.integers(90, 255, (h, w, 3), dtype=np.uint8)
        cv2.rectangle(frame, (x, y + h - 24), (x + 120, y + h - 1), bg, -1)  # hardest: box = background
        cv2.putText(frame, "Akira Sato", (x + 4, y + h - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    assert find_tiles(frame, bg, TileSettings()) == ((10, 10, 300, 160), (330, 10, 300, 160), (170, 190, 300, 160))


def test_seeking_and_decoding_forward_find_the_same_spans(gallery: ZoomSample,
                                                          gallery_spans: list[LayoutSpan]) -> None:
    """Seeks must be frame-accurate on H.264 (they decode from the keyframe before the target):
    always seeking and never seeking give the same spans, tiles and evidence."""
    video = gallery.folder / "zoom_0.mp4"
    seeking = detect_layouts(video, settings=TileSettings(seek="always", grab_ahead_s=0.0))
    forward = detect_layouts(video, settings=TileSettings(seek="never"))
    for a, b in zip(seeking, forward, strict=True):
        assert (a.start_s, a.end_s, a.tiles) == (b.start_s, b.end_s, b.tiles)
        assert {k: v for k, v in a.evidence.items() if k != "settings"} == \
            {k: v for k, v in b.evidence.items() if k != "settings"}
    assert [(s.start_s, s.tiles) for s in seeking] == [(s.start_s, s.tiles) for s in gallery_spans]


def test_face_landmarker_task_model_confirms_the_same_tiles(gallery: ZoomSample,
                                                            gallery_spans: list[LayoutSpan]) -> None:
    if not FACE_TASK_MODEL.is_file():
        pytest.skip(f"{FACE_TASK_MODEL} not present")
    spans = detect_layouts(gallery.folder / "zoom_0.mp4", face_model=FACE_TASK_MODEL)
    assert [(s.start_s, s.tiles) for s in spans] == [(s.start_s, s.tiles) for s in gallery_spans]
    assert all(found >= 1 for s in spans for found, _ in s.evidence["faces_found_checked"])


def test_sampling_stays_sparse_and_covers_the_video() -> None:
    hour = sample_frames(90_000, 25.0, 10.0, 12, 400)  # an hour at 25 fps: one frame per 10 s
    assert hour[0] == 0 and hour[-1] == 89_999 and len(hour) == 361
    assert set(np.diff(hour)) <= {250, 249}
    short = sample_frames(140, 10.0, 10.0, 12, 400)  # 14 s: denser, to reach 12 samples
    assert len(short) >= 12 and short[-1] == 139
    long = sample_frames(25 * 3600 * 10, 25.0, 10.0, 12, 400)  # 10 h: capped
    assert len(long) <= 401


def _face_band(video: Path, n: int) -> list[np.ndarray]:
    """The first `n` frames' 16:9 centre band (512x288 of a 512x512 face video)."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[112:400])
    cap.release()
    return frames


def test_real_faces_composite_with_a_window_resize(tmp_path: Path) -> None:
    """Two real camera videos as gallery tiles with name labels, on a background of another colour;
    the window shrinks at frame 83 (3.32 s at 25 fps): both layouts exact, the change at that frame."""
    if not (SOLO_FACE_VIDEO.is_file() and OTHER_FACE_VIDEO.is_file()):
        pytest.skip("liveportrait test videos not present")
    a, b = _face_band(SOLO_FACE_VIDEO, 78), _face_band(OTHER_FACE_VIDEO, 78)
    before, after = [(16, 90, 296, 166), (328, 90, 296, 166)], [(96, 110, 220, 124), (324, 110, 220, 124)]

    def frames():
        for k in range(150):
            i = k % 78 if (k // 78) % 2 == 0 else 77 - k % 78  # play forward, then backward
            frame = np.full((360, 640, 3), (46, 36, 40), np.uint8)
            for (x, y, w, h), src, name in zip(before if k < 83 else after, (a[i], b[i]), ("Kai", "Rin"), strict=True):
                frame[y:y + h, x:x + w] = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
                cv2.rectangle(frame, (x + 3, y + h - 20), (x + 50, y + h - 3), (0, 0, 0), -1)
                cv2.putText(frame, name, (x + 6, y + h - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            yield frame

    video = tmp_path / "real_gallery.mp4"
    encode_video(video, 640, 360, 25.0, frames())
    spans = detect_layouts(video)
    assert [s.start_s for s in spans] == [0.0, pytest.approx(83 / 25.0)]
    for span, truth in zip(spans, (before, after), strict=True):
        assert all(iou(f, t) >= 0.9 for f, t in zip(span.tiles, truth, strict=True)), span.tiles
