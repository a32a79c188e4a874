"""Gap handling, unwrapping and Savitzky–Golay derivatives on synthetic tracks (no video needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.features.head.frame_features import head_features_from_track
from pipeline.features.head.tracking import RawTrack
from schemas.conventions import HEAD_FEATURE_COLUMNS, HEAD_HOP_S, PAPER5_CHANNELS, head_feature_columns


def _track(pose: np.ndarray, missing: list[int] | range = ()) -> RawTrack:
    pose = np.array(pose, dtype=np.float64)
    detected = np.ones(len(pose), dtype=bool)
    detected[list(missing)] = False
    pose[~detected] = np.nan
    return RawTrack(
        time_s=np.arange(len(pose)) * HEAD_HOP_S,
        pose=pose,
        detected=detected,
        source_fps=25.0,
        n_decoded=2 * len(pose),
        width=640,
        height=360,
    )


def _ramp(n: int, slope_per_s: float = 10.0) -> np.ndarray:
    """All six channels rise linearly, each with its own offset."""
    t = np.arange(n) * HEAD_HOP_S
    return np.column_stack([slope_per_s * t + k for k in range(6)])


def test_columns_and_dtypes() -> None:
    frame = head_features_from_track(_track(_ramp(20)))
    assert list(frame.columns) == ["time_s", "detected", "interpolated", "valid", *HEAD_FEATURE_COLUMNS]
    assert frame["time_s"].dtype == np.float64
    assert all(frame[c].dtype == bool for c in ("detected", "interpolated", "valid"))
    assert all(frame[c].dtype == np.float32 for c in HEAD_FEATURE_COLUMNS)
    assert len(HEAD_FEATURE_COLUMNS) == 18


def test_paper_five_channel_variant() -> None:
    frame = head_features_from_track(_track(_ramp(20)), channels=PAPER5_CHANNELS)
    assert list(frame.columns[4:]) == head_feature_columns(PAPER5_CHANNELS)
    assert len(frame.columns[4:]) == 15


def test_short_gap_holds_the_last_pose_and_is_flagged() -> None:
    missing = range(20, 26)  # 6 frames = 0.48 s <= 0.5 s
    frame = head_features_from_track(_track(_ramp(50), missing))
    truth = _ramp(50)
    assert frame["interpolated"].to_numpy().nonzero()[0].tolist() == list(missing)
    assert not frame["detected"].iloc[20:26].any()
    np.testing.assert_allclose(frame.loc[20:25, "pitch"], truth[19, 0], rtol=1e-6)  # held, not interpolated
    assert (frame.loc[20:25, ["d_pitch", "dd_pitch"]] == 0.0).all().all()  # a held pose does not move
    assert frame["valid"].iloc[20:26].all()
    # observed frames whose SG window would reach into the fill have no derivatives
    for row in (17, 18, 19, 26, 27, 28):
        assert np.isnan(frame.loc[row, "d_pitch"]) and not frame.loc[row, "valid"]
    np.testing.assert_allclose(frame.loc[3:16, "d_yaw"], 10.0, rtol=1e-4)
    np.testing.assert_allclose(frame.loc[29:46, "d_yaw"], 10.0, rtol=1e-4)


def test_rows_up_to_the_end_of_a_gap_never_depend_on_frames_after_it() -> None:
    """Changing the frames after a gap must not change any row before them (causal fill)."""
    missing = range(20, 24)
    before = head_features_from_track(_track(_ramp(40), missing))
    changed_pose = _ramp(40)
    changed_pose[24:] += 25.0
    after = head_features_from_track(_track(changed_pose, missing))
    pd.testing.assert_frame_equal(before.iloc[:24], after.iloc[:24])
    assert not before.iloc[24:].equals(after.iloc[24:])


def test_long_gap_holds_only_max_gap_then_stays_invalid() -> None:
    missing = range(20, 30)  # 10 frames = 0.8 s > 0.5 s
    frame = head_features_from_track(_track(_ramp(50), missing))
    assert frame["interpolated"].to_numpy().nonzero()[0].tolist() == list(range(20, 26))
    assert frame.loc[26:29, HEAD_FEATURE_COLUMNS].isna().all().all()
    assert not frame["valid"].iloc[26:30].any()
    # SG window 7 -> half-width 3: rows 17..19 and 30..32 touch missing/filled frames
    for row in (17, 18, 19, 30, 31, 32):
        assert np.isnan(frame.loc[row, "d_pitch"]) and np.isnan(frame.loc[row, "dd_pitch"])
        assert np.isfinite(frame.loc[row, "pitch"])
        assert not frame.loc[row, "valid"]
    for row in (16, 33):
        assert frame.loc[row, "valid"]
        assert frame.loc[row, "d_pitch"] == pytest.approx(10.0, rel=1e-4)


def test_leading_gaps_stay_empty_and_trailing_gaps_are_held() -> None:
    frame = head_features_from_track(_track(_ramp(30), [0, 1, 28, 29]))
    assert frame.loc[0:1, "pitch"].isna().all()
    assert frame["interpolated"].to_numpy().nonzero()[0].tolist() == [28, 29]
    valid_rows = frame.index[frame["valid"] & ~frame["interpolated"]].tolist()
    assert valid_rows == list(range(5, 25))  # 3 frames after the first and before the last observation


def test_max_gap_setting() -> None:
    missing = range(10, 14)
    assert head_features_from_track(_track(_ramp(40), missing), max_gap_s=0.5)["interpolated"].sum() == 4
    assert head_features_from_track(_track(_ramp(40), missing), max_gap_s=0.3)["interpolated"].sum() == 3
    assert head_features_from_track(_track(_ramp(40), missing), max_gap_s=0.0)["interpolated"].sum() == 0


def test_angles_are_unwrapped_across_180() -> None:
    n = 30
    yaw = 150.0 + 100.0 * np.arange(n) * HEAD_HOP_S  # 150 → 382 deg, wraps at 180 and 360
    wrapped = (yaw + 180.0) % 360.0 - 180.0
    pose = np.column_stack([np.zeros(n), wrapped, wrapped, np.zeros((n, 3))])
    frame = head_features_from_track(_track(pose, [12, 13]))  # a short gap right at the wrap
    seen = frame["detected"]
    np.testing.assert_allclose(frame.loc[seen, "yaw"], yaw[seen], atol=1e-4)
    np.testing.assert_allclose(frame.loc[seen, "roll"], yaw[seen], atol=1e-4)
    valid = frame["valid"] & seen
    np.testing.assert_allclose(frame.loc[valid, "d_yaw"], 100.0, rtol=1e-4)
    np.testing.assert_allclose(frame.loc[valid, "dd_yaw"], 0.0, atol=1e-2)


def test_savgol_derivatives_of_a_quadratic_are_exact() -> None:
    n = 40
    t = np.arange(n) * HEAD_HOP_S
    a, b, c = 3.0, -2.0, 0.5
    pose = np.column_stack([a * t**2 + b * t + c] * 6)
    frame = head_features_from_track(_track(pose))
    inner = frame["valid"].to_numpy()
    assert inner.sum() == n - 6
    np.testing.assert_allclose(frame.loc[inner, "d_x"], (2 * a * t + b)[inner], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(frame.loc[inner, "dd_x"], 2 * a, rtol=1e-5)


def test_runs_shorter_than_the_window_have_no_derivatives() -> None:
    missing = [*range(0, 10), *range(15, 30)]  # a 5-frame island between long gaps
    frame = head_features_from_track(_track(_ramp(30), missing))
    assert frame.loc[10:14, "pitch"].notna().all()
    assert frame.loc[10:14, "d_pitch"].isna().all()
    assert not frame.loc[~frame["interpolated"], "valid"].any()


def test_empty_track() -> None:
    frame = head_features_from_track(_track(np.zeros((0, 6))))
    assert isinstance(frame, pd.DataFrame) and len(frame) == 0
    assert list(frame.columns[4:]) == HEAD_FEATURE_COLUMNS
