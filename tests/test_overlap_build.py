"""`--train-stride-s` through a real build: overlapping windows exist in train only, and valid/test,
the split registry and the tiling of every stretch stay as without them."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from pipeline.dataset.loader import LHGDataset

from .helpers import families_run, run_build


def test_train_stride_adds_overlapping_windows_to_train_only(built_dataset, sample_corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built_dataset, out)
    before = pd.read_parquet(out / "dataset" / "segments.parquet")
    registry = json.loads((out / "dataset" / "splits_registry.json").read_text())["assignments"]
    result = run_build(corpus=str(sample_corpus), out=str(out), train_stride_s=1.0, overwrite=True)
    assert result.status.name == "SUCCESS", result.summary_text
    assert sorted(set(families_run(result))) == ["BuildSplits", "SessionSegments"], result.summary_text
    after = pd.read_parquet(out / "dataset" / "segments.parquet")
    extra = after[after["overlap_extra"]]
    assert len(extra) and set(extra["split"]) == {"train"}
    assert json.loads((out / "dataset" / "splits_registry.json").read_text())["assignments"] == registry
    cols = ["segment_id", "split", "start_s", "end_s", "stretch_id"]
    pd.testing.assert_frame_equal(after.loc[~after["overlap_extra"], cols].reset_index(drop=True),
                                  before[cols].reset_index(drop=True))
    # every window lies inside its stretch: between the first start and last end of the stretch's tiling
    tiling = after[~after["overlap_extra"]].groupby("stretch_id").agg(lo=("start_s", "min"), hi=("end_s", "max"))
    bounds = tiling.loc[extra["stretch_id"]]
    assert (extra["start_s"].to_numpy() >= bounds["lo"].to_numpy() - 1e-9).all()
    assert (extra["end_s"].to_numpy() <= bounds["hi"].to_numpy() + 1e-9).all()
    train = LHGDataset(out / "dataset", "train", speech=False)
    row = int(train.segments.index[train.segments["overlap_extra"]][0])
    assert train[row]["listener_head"].shape[0] == 137
