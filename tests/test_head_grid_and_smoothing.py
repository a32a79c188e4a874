"""Pose at exact grid times (frame selection, interpolation) and the causal One-Euro filter."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.features.head.frame_features import head_features_from_track
from pipeline.features.head.grid import frame_brackets_grid, pose_at_grid
from pipeline.features.head.smoothing import one_euro
from pipeline.features.head.tracking import RawTrack
from schemas.conventions import HEAD_HOP_S

ANGLES = [0, 1, 2]


@pytest.mark.parametrize("fps", [24.0, 25.0, 30000 / 1001, 30.0, 60.0])
def test_every_grid_time_is_bracketed_by_tracked_frames(fps: float) -> None:
    frame_t = np.arange(int(10 * fps)) / fps
    tracked = np.array([frame_brackets_grid(t, 1 / fps, HEAD_HOP_S) for t in frame_t])
    grid = np.arange(math.floor(frame_t[-1] / HEAD_HOP_S) + 1) * HEAD_HOP_S
    kept = frame_t[tracked]
    for g in grid:
        on = np.abs(kept - g) < 1e-3
        below, above = kept[kept <= g], kept[kept >= g]
        assert on.any() or (g - below.max() < 1 / fps and above.min() - g < 1 / fps)
    # cost: at most both neighbours of every grid time (never more than the frames there are)
    assert tracked.sum() <= min(len(frame_t), 2 * len(grid))


def test_linear_motion_is_exact_at_grid_times_with_variable_frame_rate() -> None:
    rng = np.random.default_rng(0)
    frame_t = np.cumsum(rng.uniform(0.02, 0.05, 200))  # jittery VFR timestamps
    frame_t -= frame_t[0]
    truth = np.column_stack([30.0 * frame_t, -20.0 * frame_t, 5 + 0 * frame_t,
                             0.5 + 0.1 * frame_t, 0.4 + 0 * frame_t, 2.0 - 0.05 * frame_t])
    grid = np.arange(math.floor(frame_t[-1] / HEAD_HOP_S) + 1) * HEAD_HOP_S
    pose, detected = pose_at_grid(grid, frame_t, truth, ANGLES, 0.035)
    assert detected.all()
    expected = np.column_stack([30.0 * grid, -20.0 * grid, 5 + 0 * grid,
                                0.5 + 0.1 * grid, 0.4 + 0 * grid, 2.0 - 0.05 * grid])
    np.testing.assert_allclose(pose, expected, atol=1e-9)


def test_angles_are_interpolated_the_short_way_across_180() -> None:
    frame_t = np.array([0.0, 0.1])
    pose = np.zeros((2, 6))
    pose[:, 2] = [170.0, -170.0]  # 20 degrees apart through 180, not 340 through 0
    out, _ = pose_at_grid(np.array([0.05]), frame_t, pose, ANGLES, 0.1)
    assert abs(out[0, 2]) == pytest.approx(180.0)


def test_a_frame_without_face_leaves_the_grid_times_next_to_it_missing() -> None:
    frame_t = np.arange(10) / 30.0
    pose = np.ones((10, 6))
    pose[4] = np.nan  # t = 0.133 s: brackets the grid time 0.16 s
    out, detected = pose_at_grid(np.array([0.0, 0.08, 0.16, 0.24]), frame_t, pose, ANGLES, 1 / 30)
    assert detected.tolist() == [True, True, False, True]
    assert np.isnan(out[2]).all()


def test_a_frame_at_the_grid_time_is_used_alone() -> None:
    """25 fps: every other grid time falls on a frame (up to float noise: 3 * 0.08 != 0.24)."""
    frame_t = np.array([0.16, 0.24, 0.32])
    pose = np.array([[1.0] * 6, [2.0] * 6, [np.nan] * 6])  # no face in the frame after
    out, detected = pose_at_grid(np.array([3 * HEAD_HOP_S]), frame_t, pose, ANGLES, 0.04)
    assert detected[0] and out[0, 0] == 2.0


def test_one_euro_is_causal_and_keeps_a_constant() -> None:
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(0, 1, 100))
    full = one_euro(x, HEAD_HOP_S, 1.0, 0.05)
    prefix = one_euro(x[:60], HEAD_HOP_S, 1.0, 0.05)
    np.testing.assert_array_equal(full[:60], prefix)
    np.testing.assert_allclose(one_euro(np.full(20, 3.5), HEAD_HOP_S, 1.0, 0.05), 3.5)


def test_one_euro_reduces_jitter_of_a_still_head_and_restarts_after_gaps() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, 400)
    y = one_euro(x, HEAD_HOP_S, 1.0, 0.0)
    # first-order low-pass, alpha = 1 / (1 + tau / dt): the step variance shrinks well below 2*sigma^2
    assert np.median(np.abs(np.diff(y))) < 0.6 * np.median(np.abs(np.diff(x)))
    x[200] = np.nan
    y = one_euro(x, HEAD_HOP_S, 1.0, 0.0)
    assert np.isnan(y[200]) and y[201] == x[201]


def test_smoothing_setting_reaches_the_features() -> None:
    rng = np.random.default_rng(3)
    pose = rng.normal(0, 1, (60, 6))
    track = RawTrack(time_s=np.arange(60) * HEAD_HOP_S, pose=pose, detected=np.ones(60, bool),
                     source_fps=25.0, n_decoded=120, width=640, height=360)
    raw = head_features_from_track(track)
    smooth = head_features_from_track(track, smoothing="one_euro", smoothing_min_cutoff_hz=1.0)
    assert np.abs(np.diff(smooth["pitch"])).mean() < np.abs(np.diff(raw["pitch"])).mean()
    with pytest.raises(ValueError, match="smoothing"):
        head_features_from_track(track, smoothing="kalman")
