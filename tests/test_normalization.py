"""One standardisation, applied by the dataset loader and undone on generated output."""

from __future__ import annotations

import json

import numpy as np

from pipeline.dataset.normalization import NORMALIZATION_FILE, Normalization

STATS = {"head": {"mean": [10.0, -3.0, 0.5], "std": [4.0, 0.25, 2.0]},
         "speech_fbank": {"mean": [1.0, 2.0], "std": [3.0, 5.0]}}


def test_apply_and_undo(tmp_path):
    (tmp_path / NORMALIZATION_FILE).write_text(json.dumps(STATS))
    norm = Normalization.from_json(tmp_path / NORMALIZATION_FILE)
    np.testing.assert_array_equal(norm.head.std, Normalization.from_dict(STATS).head.std)
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32) * 20
    z = norm.head.apply(x)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z, (x - np.float32([10.0, -3.0, 0.5])) / np.float32([4.0, 0.25, 2.0]))
    # undo inverts apply up to float32 rounding of the two operations (a few ulps of |x| + |mean|)
    bound = 4 * np.finfo(np.float32).eps * (np.abs(x) + np.abs(norm.head.mean))
    assert np.all(np.abs(norm.head.undo(z) - x) <= bound)
    np.testing.assert_array_equal(norm.speech_fbank.apply(np.float32([[4.0, 7.0]])), np.float32([[1.0, 1.0]]))
