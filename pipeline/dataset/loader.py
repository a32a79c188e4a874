"""Read the built dataset as torch tensors, one segment at a time, from memory-mapped shards.

    ds = LHGDataset("lhg_out/dataset", split="train")
    item = ds[0]
    item["listener_head"]  # [T, 18] float32 (normalised with train statistics unless normalize=False)
    item["speaker_head"]   # [T, 18]
    item["speech"]         # [T, 8, 80] speaker FBank
    item["listener_valid"], item["speaker_valid"]  # [T] bool: observed poses (loss targets, metric frames)
    item["listener_interpolated"], item["speaker_interpolated"]  # [T] bool: face lost, last pose held
                                                                   # (a causal input fill; not valid)
    item["listener_backchannel"]  # [T] bool: the listener is producing a backchannel (aizuchi)
    item["speaker_talk"]           # [T] bool: the speaker is talking (turn annotations)

    ds = LHGDataset("lhg_out/dataset", "train", ssl="japanese-hubert-base-1a2b3c4d5e-attention",
                    ssl_layers=[0, 6, 12])
    ds[0]["ssl"]           # [T, 4, L, D] speaker SSL hidden states (see manifest.json for the names)

The first 12 frames (0.96 s, `pipeline.model.network.CONTEXT_FRAMES`: 1 s at 12.5 fps rounded down, so
12 + 125 evaluation frames fit the longest 137-frame segment) of every segment are context for the
model and excluded from its loss; that is the trainer's business, the loader returns whole segments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common.errors import CorruptOutputError
from pipeline.dataset.manifest import VERIFY_HINT, read_manifest, read_segments
from pipeline.dataset.normalization import NORMALIZATION_FILE, Normalization
from schemas.shards import check_shard_tensors
from schemas.tables import SPLITS


class LHGDataset:
    """Map-style dataset (works with torch DataLoader) over one split of a built dataset."""

    def __init__(self, dataset_dir: str | Path, split: str = "train", *, normalize: bool = True,
                 as_torch: bool = True, ssl: str | None = None, ssl_layers: list[int] | None = None,
                 speech: bool = True):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.dataset_dir = Path(dataset_dir)
        table = read_segments(self.dataset_dir)
        self.segments = table[table["split"] == split].reset_index(drop=True)
        self.normalize = normalize
        self.as_torch = as_torch
        self.load_speech = speech  # False: heads only (baselines, calibration: no FBank reads)
        self._norm = Normalization.from_json(self.dataset_dir / NORMALIZATION_FILE)
        self._handles: dict[str, Any] = {}
        self.ssl = ssl
        self.ssl_layers = ssl_layers
        if ssl is not None:
            manifest = read_manifest(self.dataset_dir)
            if ssl not in manifest["ssl"]:
                raise KeyError(f"SSL feature set {ssl!r} not in {self.dataset_dir / 'manifest.json'}; "
                               f"available: {sorted(manifest['ssl'])}")
            ssl_dir = manifest["ssl"][ssl]["dir"]
            self._ssl_bf16 = manifest["ssl"][ssl]["spec"]["dtype"] == "bfloat16"
            index = pd.read_parquet(self.dataset_dir / ssl_dir / "index.parquet").set_index("segment_id")
            where = index.loc[self.segments["segment_id"]]
            self._ssl_shard = [f"{ssl_dir}/{name}" for name in where["shard"]]
            self._ssl_offset = where["offset"].to_numpy()

    @staticmethod
    def available_ssl(dataset_dir: str | Path) -> dict[str, dict]:
        """SSL feature sets in a built dataset: name -> spec (model, weights hash, mode, layers, dtype)."""
        return {name: entry["spec"] for name, entry in read_manifest(dataset_dir)["ssl"].items()}

    def __len__(self) -> int:
        return len(self.segments)

    def _shard(self, name: str, expected: tuple[str, ...] | None = None):
        handle = self._handles.get(name)
        if handle is None:
            from safetensors import safe_open

            path = self.dataset_dir / name
            try:
                handle = safe_open(str(path), framework="numpy")
            except Exception as exc:  # safetensors raises its own error types for damaged files
                raise CorruptOutputError(path, f"not a readable shard ({type(exc).__name__}: {exc}); "
                                               + VERIFY_HINT.format(self.dataset_dir)) from None
            check_shard_tensors(list(handle.keys()), str(path), expected)
            self._handles[name] = handle
        return handle

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.segments.iloc[index]
        shard = self._shard(row["shard"])
        a, b = int(row["offset"]), int(row["offset"]) + int(row["n_frames"])
        listener = shard.get_slice("listener_head")[a:b]
        speaker = shard.get_slice("speaker_head")[a:b]
        speech = shard.get_slice("speech_fbank")[a:b].astype(np.float32) if self.load_speech else None
        listener_valid = shard.get_slice("listener_valid")[a:b].astype(bool)
        speaker_valid = shard.get_slice("speaker_valid")[a:b].astype(bool)
        if self.normalize:
            listener = self._norm.head.apply(listener)
            speaker = self._norm.head.apply(speaker)
            speech = None if speech is None else self._norm.speech_fbank.apply(speech)
        item = {
            "segment_id": row["segment_id"],
            "listener_head": np.nan_to_num(listener, nan=0.0).astype(np.float32),
            "speaker_head": np.nan_to_num(speaker, nan=0.0).astype(np.float32),
            **({"speech": speech} if speech is not None else {}),
            "listener_valid": listener_valid & np.isfinite(listener).all(1),
            "speaker_valid": speaker_valid & np.isfinite(speaker).all(1),
            "listener_backchannel": shard.get_slice("listener_backchannel")[a:b].astype(bool),
            "speaker_talk": shard.get_slice("speaker_talk")[a:b].astype(bool),
            "listener_interpolated": shard.get_slice("listener_interpolated")[a:b].astype(bool),
            "speaker_interpolated": shard.get_slice("speaker_interpolated")[a:b].astype(bool),
        }
        if self.ssl is not None:
            shard = self._shard(self._ssl_shard[index], ("ssl",))
            a = int(self._ssl_offset[index])
            feats = shard.get_slice("ssl")[a:a + int(row["n_frames"])]
            if self.ssl_layers is not None:
                feats = feats[:, :, self.ssl_layers]
            if self._ssl_bf16:
                from pipeline.features.speech_ssl import bf16_to_float32

                item["ssl"] = bf16_to_float32(feats)
            else:
                item["ssl"] = feats.astype(np.float32)
        if self.as_torch:
            import torch

            item = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
                    for k, v in item.items()}
        return item
