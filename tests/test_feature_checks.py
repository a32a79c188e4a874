"""Features are checked before they are stored: non-finite values quarantine the recording, naming the
file and the time, and leave no output file behind."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.common.errors import MediaError
from pipeline.features.jobs import require_finite
from pipeline.features.ssl_pieces import kept_rows, write_piece


def test_require_finite_names_the_first_bad_time():
    fbank = np.zeros((300, 80), np.float32)
    fbank[250, 3] = np.nan
    with pytest.raises(MediaError, match=r"FBank features are not finite from 2\.50 s \(1 frames\)") as err:
        require_finite(fbank, "a.wav", "FBank", frames_per_s=100.0)
    assert err.value.path == "a.wav" and err.value.where == "t=2.50 s"
    require_finite(np.zeros((5, 2), np.float32), "a.wav", "FBank", frames_per_s=100.0)


def test_bfloat16_bit_patterns_are_checked_too():
    bits = np.full((10, 2, 4), 0x3F80, np.uint16)  # 1.0 in bfloat16
    require_finite(bits, "a.wav", "SSL", frames_per_s=50.0)
    bits[7, 1, 2] = 0x7FC0  # NaN
    with pytest.raises(MediaError, match=r"from 0\.14 s"):
        require_finite(bits, "a.wav", "SSL", frames_per_s=50.0)
    bits[7, 1, 2] = 0xFF80  # -inf
    with pytest.raises(MediaError, match=r"from 0\.14 s"):
        require_finite(bits, "a.wav", "SSL", frames_per_s=50.0)


def test_a_non_finite_block_leaves_no_file(tmp_path):
    """The SSL job's check (require_finite on each kept block, at its recording time) stops the piece."""
    out = tmp_path / "ssl.safetensors"
    good = np.ones((52, 2, 3), np.float16)
    bad = good.copy()
    bad[10] = np.inf  # SSL frame 62 of the recording: 1.24 s

    def check(rows, first):
        require_finite(rows, "a.wav", "SSL", frames_per_s=50.0, first_frame=first)

    with pytest.raises(MediaError, match=r"SSL features are not finite from 1\.24 s"):
        write_piece(out, kept_rows(iter([good, bad]), [(0, 26)]), 26, (2, 3), "float16", {}, check=check)
    assert list(tmp_path.iterdir()) == []
    write_piece(out, kept_rows(iter([good, good]), [(0, 26)]), 26, (2, 3), "float16", {}, check=check)
    assert out.stat().st_size > 26 * 4 * 2 * 3 * 2


def test_implausible_head_poses_are_refused_with_the_time():
    import pandas as pd

    from pipeline.features.jobs import require_plausible_pose

    channels = ("pitch", "yaw", "roll", "x", "y", "z")
    table = pd.DataFrame({"time_s": np.arange(5) * 0.08, "valid": [True, True, False, True, True],
                          **{c: np.zeros(5, np.float32) for c in channels}})
    table.loc[2, "yaw"] = np.nan  # not valid: a lost face, no fault
    require_plausible_pose(table, "v.mp4", channels)
    table.loc[3, "roll"] = 270.0
    with pytest.raises(MediaError, match=r"head roll is 270\.0 at 0\.24 s \(1 frames\); expected a finite value "
                                         r"within ±180°") as err:
        require_plausible_pose(table, "v.mp4", channels)
    assert err.value.where == "t=0.24 s"
    table.loc[3, "roll"] = 0.0
    table.loc[4, "x"] = np.inf
    with pytest.raises(MediaError, match=r"head x is inf at 0\.32 s"):
        require_plausible_pose(table, "v.mp4", channels)
