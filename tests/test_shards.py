"""Shards and loader: round trip of segment tensors through safetensors and segments.parquet."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.common.fsutil import atomic_path
from pipeline.dataset.loader import LHGDataset
from pipeline.dataset.shards import RunningStats, ShardWriter


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        np.save(tmp, np.zeros(3))
        assert tmp.suffix == ".npy"
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_running_stats_match_numpy_and_skip_nan():
    rng = np.random.default_rng(1)
    data = rng.normal(3, 2, (1000, 4))
    stats = RunningStats(4)
    stats.update(data[:300])
    stats.update(np.vstack([data[300:], np.full((5, 4), np.nan)]))
    res = stats.result()
    np.testing.assert_allclose(res["mean"], data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(res["std"], data.std(0), rtol=1e-9)


def test_shard_round_trip_through_loader(tmp_path):
    rng = np.random.default_rng(0)
    writer = ShardWriter(tmp_path / "shards" / "b1", "train", max_bytes=40_000)
    rows, originals = [], {}
    for i, n in enumerate([80, 100, 120, 90]):
        arrays = {
            "listener_head": rng.normal(size=(n, 18)).astype(np.float32),
            "speaker_head": rng.normal(size=(n, 18)).astype(np.float32),
            "listener_valid": np.ones(n, np.uint8), "speaker_valid": np.ones(n, np.uint8),
            "speech_fbank": rng.normal(size=(n, 8, 80)).astype(np.float16),
            "listener_backchannel": (np.arange(n) % 7 == 0).astype(np.uint8),
            "speaker_talk": (np.arange(n) % 3 > 0).astype(np.uint8),
            "listener_interpolated": np.zeros(n, np.uint8), "speaker_interpolated": np.zeros(n, np.uint8),
        }
        arrays["listener_head"][5] = np.nan
        arrays["listener_valid"][5] = 0
        arrays["listener_valid"][7] = 0  # a held pose: finite values, an input but not a target
        arrays["listener_interpolated"][7] = 1
        name, offset = writer.add(arrays)
        originals[f"seg{i}"] = arrays
        rows.append({"segment_id": f"seg{i}", "split": "train", "shard": f"shards/b1/{name}", "offset": offset,
                     "n_frames": n})
    written = writer.close()
    assert len(written) >= 2  # the size bound started new shards
    pd.DataFrame(rows).to_parquet(tmp_path / "segments.parquet")
    (tmp_path / "normalization.json").write_text(json.dumps({
        "head": {"mean": [0.0] * 18, "std": [1.0] * 18},
        "speech_fbank": {"mean": [0.0] * 80, "std": [1.0] * 80}}))
    ds = LHGDataset(tmp_path, "train")
    assert len(ds) == 4
    for i in range(4):
        item = ds[i]
        orig = originals[item["segment_id"]]
        n = len(orig["speaker_head"])
        assert tuple(item["listener_head"].shape) == (n, 18)
        assert tuple(item["speech"].shape) == (n, 8, 80)
        np.testing.assert_allclose(item["speaker_head"].numpy(), orig["speaker_head"], rtol=1e-6)
        assert not bool(item["listener_valid"][5]) and float(item["listener_head"][5].abs().sum()) == 0.0
        np.testing.assert_allclose(item["speech"].numpy(), orig["speech_fbank"].astype(np.float32))
        for flag in ("listener_backchannel", "speaker_talk", "listener_interpolated", "speaker_interpolated"):
            assert item[flag].dtype == torch.bool and item[flag].numpy().tolist() == orig[flag].astype(bool).tolist()
        assert not bool(item["listener_valid"][7]) and bool(item["listener_interpolated"][7])
        np.testing.assert_allclose(item["listener_head"][7].numpy(), orig["listener_head"][7], rtol=1e-6)


def test_loader_names_missing_frame_flags_of_an_older_shard_format(tmp_path):
    writer = ShardWriter(tmp_path / "shards" / "b1", "train", max_bytes=1 << 20)
    n = 10
    name, offset = writer.add({"listener_head": np.zeros((n, 18), np.float32),
                               "speaker_head": np.zeros((n, 18), np.float32),
                               "listener_valid": np.ones(n, np.uint8), "speaker_valid": np.ones(n, np.uint8),
                               "speech_fbank": np.zeros((n, 8, 80), np.float32)})
    writer.close()
    pd.DataFrame([{"segment_id": "s", "split": "train", "shard": f"shards/b1/{name}", "offset": offset,
                   "n_frames": n}]).to_parquet(tmp_path / "segments.parquet")
    (tmp_path / "normalization.json").write_text(json.dumps({
        "head": {"mean": [0.0] * 18, "std": [1.0] * 18}, "speech_fbank": {"mean": [0.0] * 80, "std": [1.0] * 80}}))
    with pytest.raises(ValueError, match=r"lacks tensor\(s\) \['listener_backchannel', 'speaker_talk', "
                                         r"'listener_interpolated', 'speaker_interpolated'\]"):
        LHGDataset(tmp_path, "train")[0]


def test_held_head_frames_are_inputs_not_targets():
    """A face lost for a moment: the head table holds the last pose (`interpolated`, still `valid`);
    the shards keep the held values for model inputs but mark them not valid (never a loss target or
    a metric frame) and flag them."""
    from pipeline.dataset.assemble import _segment_arrays

    n = 10
    cols = [f"c{i}" for i in range(18)]
    table = pd.DataFrame(np.arange(n * 18, dtype=np.float32).reshape(n, 18), columns=cols)
    table["valid"] = True
    table["interpolated"] = False
    table.loc[4:5, "interpolated"] = True  # held pose
    table.loc[8, "valid"] = False  # a longer gap: no pose at all
    table.loc[8, cols] = np.nan
    seg = pd.Series({"segment_id": "s", "listener_id": "L", "speaker_id": "S", "start_s": 0.0, "n_frames": n})
    arrays = _segment_arrays(seg, {"L": table, "S": table}, {"S": np.zeros((n * 8, 80), np.float32)}, {}, cols,
                             "float32")
    assert arrays["listener_valid"].tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 0, 1]
    assert arrays["listener_interpolated"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert np.isfinite(arrays["listener_head"][4:6]).all() and np.isnan(arrays["listener_head"][8]).all()
