"""Per-frame talk flags in a real build of the sample corpus: `listener_backchannel` and `speaker_talk`
match the annotated talk, and no listener talk other than backchannels lies inside a segment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.conversation.annotations import read_turns
from pipeline.dataset.loader import LHGDataset
from schemas.conventions import HEAD_HOP_S


def expected_flags(spans: list[tuple[float, float]], start_s: float, n: int) -> np.ndarray:
    """Frame k of a segment covers [start + 0.08 k, start + 0.08 (k + 1)); 1 where a span overlaps it."""
    lo = start_s + np.arange(n) * HEAD_HOP_S
    hi = lo + HEAD_HOP_S
    out = np.zeros(n, bool)
    for s, e in spans:
        out |= (lo < e - 1e-6) & (hi > s + 1e-6)
    return out


def session_turns(corpus: Path) -> dict[str, pd.DataFrame]:
    turns = {}
    for folder in sorted((corpus / "sessions").iterdir()):
        path = next(p for p in folder.iterdir() if p.stem == "turns")
        turns[folder.name] = read_turns(path)
    return turns


def test_frame_flags_follow_the_annotations(built_dataset, sample_corpus):
    dataset = built_dataset / "dataset"
    turns = session_turns(sample_corpus)
    planted = {sid: json.loads((sample_corpus / "ground_truth" / f"{sid}.json").read_text())["backchannels"]
               for sid in turns}
    n_backchannel_frames = n_frames = 0
    for split in ("train", "valid", "test"):
        ds = LHGDataset(dataset, split, speech=False)
        for i in range(len(ds)):
            row, item = ds.segments.iloc[i], ds[i]
            n = int(row["n_frames"])
            start, end = float(row["start_s"]), float(row["end_s"])
            t = turns[row["session_id"]]
            lst, spk = t[t["participant_id"] == row["listener_id"]], t[t["participant_id"] == row["speaker_id"]]
            assert tuple(item["listener_backchannel"].shape) == (n,) and tuple(item["speaker_talk"].shape) == (n,)
            # the listener's talk inside a segment is short (backchannels only) ...
            inside = lst[(lst["start_s"] < end) & (lst["end_s"] > start)]
            assert ((inside["end_s"] - inside["start_s"]) < 1.0).all(), inside
            # ... and flagged exactly where it is, as are the planted backchannels
            got = item["listener_backchannel"].numpy()
            want = expected_flags(list(zip(inside["start_s"], inside["end_s"], strict=True)), start, n)
            np.testing.assert_array_equal(got, want)
            bcs = [(b["start_s"], b["end_s"]) for b in planted[row["session_id"]]
                   if b["participant_id"] == row["listener_id"] and b["start_s"] < end and b["end_s"] > start]
            assert not (expected_flags(bcs, start, n) & ~got).any()
            talk = expected_flags(list(zip(spk["start_s"], spk["end_s"], strict=True)), start, n)
            np.testing.assert_array_equal(item["speaker_talk"].numpy(), talk)
            n_backchannel_frames += int(got.sum())
            n_frames += n
    assert n_backchannel_frames > 0 and n_backchannel_frames < 0.2 * n_frames
    seg = pd.read_parquet(dataset / "segments.parquet")
    assert seg["stretch_id"].notna().all() and not seg["overlap_extra"].any()
