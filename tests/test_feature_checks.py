"""Features are checked before they are stored: non-finite values quarantine the recording, naming the
file and the time, and leave no output file behind."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.common.errors import MediaError
from pipeline.features.jobs import _write_npy_blocks, require_finite


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
    out = tmp_path / "ssl.npy"
    job = {"out_table": str(out), "audio": "a.wav", "session_id": "s", "participant_id": "p"}
    good = np.ones((50, 2, 3), np.float16)
    bad = good.copy()
    bad[10] = np.inf
    with pytest.raises(MediaError, match=r"SSL features are not finite from 1\.20 s"):
        _write_npy_blocks(job, iter([good, bad]), (100, 2, 3), np.dtype(np.float16))
    assert list(tmp_path.iterdir()) == []
    _write_npy_blocks(job, iter([good, good]), (100, 2, 3), np.dtype(np.float16))
    assert np.load(out).shape == (100, 2, 3)
