"""The aggregate step: per-session segments -> speaker-disjoint splits -> tensor shards.

Runs once per change of the corpus or settings. Per-recording outputs are only read, never
rewritten, so adding a session leaves every earlier recording's features byte-identical.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.shards import SHARD_FORMAT_VERSION
from schemas.tables import SEGMENTS_SCHEMA, SPLITS, validate_segments

from .config import BuildConfig
from .constants import FBANK_FRAMES_PER_HEAD, HEAD_HOP_S, head_feature_columns
from .fsutil import atomic_path, write_json_atomic
from .shards import RunningStats, ShardWriter, spec_metadata
from .splits import assign_splits


@dataclass
class SessionInputs:
    """Everything the aggregate needs from one processed session (paths are absolute)."""

    session_id: str
    segments_table: Path
    head_tables: dict[str, Path]
    fbank_tables: dict[str, Path]
    stats: dict = field(default_factory=dict)


def load_registry(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _segment_arrays(seg: pd.Series, heads: dict[str, pd.DataFrame], fbanks: dict[str, np.ndarray],
                    head_cols: list[str], fbank_dtype: str) -> dict[str, np.ndarray]:
    a = int(round(seg["start_s"] / HEAD_HOP_S))
    n = int(seg["n_frames"])

    def head(pid: str) -> tuple[np.ndarray, np.ndarray]:
        table = heads[pid].iloc[a:a + n]
        values = table[head_cols].to_numpy(np.float32)
        valid = table["valid"].to_numpy(bool)
        if len(values) < n:  # beyond the end of the video: invalid frames
            values = np.vstack([values, np.full((n - len(values), len(head_cols)), np.nan, np.float32)])
            valid = np.concatenate([valid, np.zeros(n - len(valid), bool)])
        return values, valid

    listener, listener_valid = head(seg["listener_id"])
    speaker, speaker_valid = head(seg["speaker_id"])
    fb = fbanks[seg["speaker_id"]][a * FBANK_FRAMES_PER_HEAD:(a + n) * FBANK_FRAMES_PER_HEAD]
    return {
        "listener_head": listener, "speaker_head": speaker,
        "listener_valid": listener_valid.astype(np.uint8), "speaker_valid": speaker_valid.astype(np.uint8),
        "speech_fbank": fb.reshape(n, FBANK_FRAMES_PER_HEAD, -1).astype(fbank_dtype),
    }


def build_dataset(sessions: list[SessionInputs], dataset_dir: str | Path, cfg: BuildConfig, *,
                  build_id: str, redraw: bool = False) -> dict:
    """Assign splits, write shards, segments.parquet and normalization.json; return a summary."""
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    parts = [pd.read_parquet(s.segments_table) for s in sessions]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise RuntimeError("no usable segments in any session: see rejected.csv and the session reports")
    segments = pd.concat(parts, ignore_index=True)
    registry_path = dataset_dir / "splits_registry.json"
    ds = cfg.dataset
    result = assign_splits(segments, mode=ds.disjoint, ratios=ds.ratios, seed=ds.seed,
                           registry=load_registry(registry_path), redraw=redraw)
    write_json_atomic(registry_path, result.registry)
    segments["split"] = segments["segment_id"].map(result.segment_split)
    segments = segments[segments["split"].notna()].copy()
    segments = segments.sort_values(["session_id", "start_s", "listener_id"], kind="stable").reset_index(drop=True)

    head_cols = head_feature_columns(cfg.head.channels)
    spec = {"format_version": SHARD_FORMAT_VERSION, "head_columns": head_cols, "head_fps": 12.5,
            "fbank_frames_per_head": FBANK_FRAMES_PER_HEAD, "fbank_bins": cfg.audio.fbank_bins,
            "fbank_dtype": ds.fbank_dtype, "build_id": build_id}
    shard_root = dataset_dir / "shards" / build_id
    if shard_root.exists():  # leftovers of a killed attempt at this same build
        shutil.rmtree(shard_root)
    by_session = {s.session_id: s for s in sessions}
    head_stats = RunningStats(len(head_cols))
    fbank_stats = RunningStats(cfg.audio.fbank_bins)
    shard_col = np.empty(len(segments), dtype=object)
    offset_col = np.zeros(len(segments), dtype=np.int64)
    for split in SPLITS:
        writer = ShardWriter(shard_root, split, max_bytes=ds.shard_mb << 20, metadata=spec_metadata(spec))
        rows = np.flatnonzero(segments["split"].to_numpy() == split)
        current, heads, fbanks = None, {}, {}
        for i in rows:
            seg = segments.iloc[i]
            if seg["session_id"] != current:  # segments are sorted by session: load each once
                current = seg["session_id"]
                inputs = by_session[current]
                heads = {p: pd.read_parquet(path) for p, path in inputs.head_tables.items()}
                fbanks = {p: np.load(path, mmap_mode="r") for p, path in inputs.fbank_tables.items()}
            arrays = _segment_arrays(seg, heads, fbanks, head_cols, ds.fbank_dtype)
            name, offset = writer.add(arrays)
            shard_col[i] = f"shards/{build_id}/{name}"
            offset_col[i] = offset
            if split == "train":
                for role in ("listener", "speaker"):
                    head_stats.update(arrays[f"{role}_head"][arrays[f"{role}_valid"].astype(bool)])
                fbank_stats.update(arrays["speech_fbank"].astype(np.float32))
        writer.close()
    segments["shard"] = shard_col
    segments["offset"] = offset_col
    segments["n_frames"] = segments["n_frames"].astype(np.int32)
    segments["invalid_frac"] = segments["invalid_frac"].astype(np.float32)
    table = validate_segments(pa.Table.from_pandas(segments[SEGMENTS_SCHEMA.names], schema=SEGMENTS_SCHEMA,
                                                   preserve_index=False))
    normalization = {"source": "train split, valid frames of listener and speaker heads",
                     "head_columns": head_cols, "head": head_stats.result(),
                     "speech_fbank": fbank_stats.result()}
    write_json_atomic(dataset_dir / "normalization.json", normalization)
    with atomic_path(dataset_dir / "segments.parquet") as tmp:
        pq.write_table(table, tmp)
    for old in (dataset_dir / "shards").iterdir():  # older builds are unreferenced now
        if old.is_dir() and old.name != build_id:
            shutil.rmtree(old, ignore_errors=True)
    per_split = segments.assign(dur=segments["end_s"] - segments["start_s"]).groupby("split")
    return {
        "build_id": build_id,
        "n_segments": int(len(segments)),
        "segments_per_split": {s: int(per_split.size().get(s, 0)) for s in SPLITS},
        "hours_per_split": {s: float(per_split["dur"].sum().get(s, 0.0)) / 3600 for s in SPLITS},
        "listeners_per_split": {s: sorted(segments.loc[segments.split == s, "listener_id"].unique().tolist())
                                for s in SPLITS},
        "excluded": result.excluded.to_dict("records") if len(result.excluded) else [],
        "split_report": result.report,
        "registry": result.registry,
    }
