"""Participant tracks placed on the video timeline (offset, drift) on generated Zoom-like folders with
known truth; unrelated audio and silence are refused, never guessed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.ingest.alignment import (
    AlignmentError,
    align_track,
    align_tracks,
    align_waves,
    sliding_ncc,
)
from pipeline.media.audio import decode_audio
from pipeline.sample.zoom_folder import ZoomSample, make_zoom_folder
from schemas.conventions import HEAD_HOP_S, SAMPLE_RATE

OFFSET_TARGET_S = 0.020  # the target for the audio offset error
SAMPLE_S = 1.0 / SAMPLE_RATE
SMALL = {"duration_s": 20.0, "fps": 10.0, "frame_size": (192, 108)}  # tiny video: alignment reads audio only


@pytest.fixture(scope="module")
def folder_a(tmp_path_factory: pytest.TempPathFactory) -> ZoomSample:
    """A drifting track (+200 ppm, starts 0.35 s into the video) and one started 1.25 s before it."""
    return make_zoom_folder(tmp_path_factory.mktemp("zoom_a"), seed=0, **SMALL,
                            offsets_s={"Akira Sato": 0.35, "Mei Tanaka": -1.25}, drift_ppm={"Akira Sato": 200.0})


@pytest.fixture(scope="module")
def folder_b(tmp_path_factory: pytest.TempPathFactory) -> ZoomSample:
    """A track 2.4 s late with a slight clock difference, and one drifting 3000 ppm (90 ms over 30 s,
    more than one head frame)."""
    return make_zoom_folder(tmp_path_factory.mktemp("zoom_b"), seed=1, **{**SMALL, "duration_s": 30.0},
                            offsets_s={"Akira Sato": 2.4}, drift_ppm={"Akira Sato": -80.0, "Mei Tanaka": 3000.0})


def _aligned(sample: ZoomSample, reference: str) -> list[tuple[dict, object]]:
    truth = sample.truth()
    tracks = [sample.folder / p["audio"] for p in truth["participants"]]
    return list(zip(truth["participants"], align_tracks(tracks, sample.folder / reference), strict=True))


def _drift_tolerance_s(result, track_s: float) -> float:
    """Each refined window lag is located to better than one 16 kHz sample (parabolic peak on the
    waveform correlation); a line through lags that far off, spanning `span` seconds of track, misses
    the slope by at most 2 samples / span, i.e. 2 samples * track / span over the whole track."""
    used = [w.track_time_s for w in result.windows if w.used]
    span = max(used) - min(used)
    return 2 * SAMPLE_S * track_s / span


@pytest.mark.parametrize("reference", ["zoom_0.mp4", "audio_only.m4a"])
def test_offsets_and_drift_recovered(folder_a: ZoomSample, folder_b: ZoomSample, reference: str) -> None:
    for sample in (folder_a, folder_b):
        for truth, result in _aligned(sample, reference):
            assert result.confident, result.reason
            assert abs(result.offset_s - truth["audio_offset_s"]) <= OFFSET_TARGET_S
            # the method is far better than the target: a few samples at most
            assert abs(result.offset_s - truth["audio_offset_s"]) <= 4 * SAMPLE_S
            tol = _drift_tolerance_s(result, truth["track_duration_s"])
            assert abs(result.drift_over_track_s - truth["drift_over_track_s"]) <= tol, (truth, result)
            assert len([w for w in result.windows if w.used]) >= 3


def test_drift_sign_size_and_warning(folder_a: ZoomSample, folder_b: ZoomSample) -> None:
    """+200 ppm (4 ms over 20 s) and -80 ppm: right sign, not flagged; no drift: ~0, not flagged;
    3000 ppm: 90 ms over 30 s, more than one head frame: flagged."""
    results = {t["drift_ppm"]: r for s in (folder_a, folder_b) for t, r in _aligned(s, "audio_only.m4a")}
    assert results[200.0].drift_ppm > 0 and results[-80.0].drift_ppm < 0
    assert results[3000.0].drift_over_track_s > HEAD_HOP_S and results[3000.0].drift_warning
    for ppm in (200.0, -80.0, 0.0):
        assert not results[ppm].drift_warning, ppm
    assert abs(results[0.0].drift_over_track_s) <= _drift_tolerance_s(results[0.0], 21.25)


def test_unrelated_track_is_refused(folder_a: ZoomSample, folder_b: ZoomSample) -> None:
    """Another call's track (speech-like, so its envelope matches by chance on short windows)."""
    other = folder_b.folder / folder_b.truth()["participants"][0]["audio"]
    result = align_track(other, folder_a.folder / "zoom_0.mp4")
    assert not result.confident and result.offset_s is None and result.drift_ppm is None
    assert "windows match the reference" in result.reason
    report = json.loads(json.dumps(result.to_dict()))  # the evidence goes into an import report as is
    assert report["confident"] is False and len(report["windows"]) == 5
    with pytest.raises(AlignmentError) as err:
        result.require()
    assert str(other) in str(err.value)


def test_silence_is_refused(folder_a: ZoomSample) -> None:
    ref = decode_audio(folder_a.folder / "audio_only.m4a")
    noise_floor = np.random.default_rng(0).standard_normal(ref.size).astype(np.float32) * 10 ** (-62 / 20)
    for name, wave in (("noise floor", noise_floor), ("zeros", np.zeros_like(ref))):
        result = align_waves(wave, ref, track=name)
        assert not result.confident and result.offset_s is None, name
        assert name in str(pytest.raises(AlignmentError, result.require).value)


def test_sliding_ncc_is_pearson() -> None:
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(400)
    seg = ref[100:160] * 2.5 + 7.0
    ncc = sliding_ncc(seg, ref)
    k = 37
    assert np.isclose(ncc[k], np.corrcoef(seg, ref[k:k + 60])[0, 1])
    assert int(np.argmax(ncc)) == 100 and np.isclose(ncc.max(), 1.0)


def test_missing_track_names_the_file(folder_a: ZoomSample, tmp_path: Path) -> None:
    from pipeline.common.errors import MediaError

    with pytest.raises(MediaError, match="not found"):
        align_track(tmp_path / "audioNobody123.m4a", folder_a.folder / "audio_only.m4a")
