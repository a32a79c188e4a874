"""Read the built dataset as torch tensors, one segment at a time, from memory-mapped shards.

    ds = LHGDataset("lhg_out/dataset", split="train")
    item = ds[0]
    item["listener_head"]  # [T, 18] float32 (normalised with train statistics unless normalize=False)
    item["speaker_head"]   # [T, 18]
    item["speech"]         # [T, 8, 80] speaker FBank (float32, normalised; the stored dtype, raw, with
                           # normalize_speech=False: the trainer normalises on the device)
    item["listener_valid"], item["speaker_valid"]  # [T] bool: observed poses (loss targets, metric frames)
    item["listener_interpolated"], item["speaker_interpolated"]  # [T] bool: face lost, last pose held
                                                                   # (a causal input fill; not valid)
    item["listener_backchannel"]  # [T] bool: the listener is producing a backchannel (aizuchi)
    item["speaker_talk"]           # [T] bool: the speaker is talking (turn annotations)

    ds = LHGDataset("lhg_out/dataset", "train", ssl="japanese-hubert-base-1a2b3c4d5e-attention",
                    ssl_layers=[0, 6, 12])
    ds[0]["ssl"]           # [T, 4, L, D] speaker SSL hidden states (see manifest.json for the names),
                           # in the stored dtype (float16 / bfloat16: converted on the device, not here)

Shards are memory-mapped (`MappedShard`): an item reads only its own rows, and with `ssl_layers` only
those hidden states (the layer index is applied to the mapped view before anything is copied). The
dataset pickles without its open maps, so DataLoader worker processes open their own.

The first 12 frames (0.96 s, `pipeline.model.network.CONTEXT_FRAMES`: 1 s at 12.5 fps rounded down, so
12 + 125 evaluation frames fit the longest 137-frame segment) of every segment are context for the
model and excluded from its loss; that is the trainer's business, the loader returns whole segments.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common.errors import CorruptOutputError
from pipeline.dataset.manifest import VERIFY_HINT, read_manifest, read_segments
from pipeline.dataset.normalization import NORMALIZATION_FILE, Normalization
from schemas.shards import check_shard_tensors
from schemas.tables import SPLITS

# safetensors dtype codes -> numpy (BF16 as its uint16 bit patterns: numpy has no bfloat16)
_NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
                 "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32,
                 "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}


MAX_OPEN_SHARDS = 64  # per process: a paper-size SSL set has thousands of shards, a process ~1024 descriptors


class MappedShard:
    """A safetensors file's tensors as read-only numpy views of one memory map: indexing a view reads
    only the bytes of the selected elements (rows of one segment, hidden states of the used layers)."""

    def __init__(self, path: Path):
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= size - 8:
                raise ValueError(f"header length {n} does not fit a file of {size} bytes")
            header = json.loads(f.read(n))
        data = np.asarray(np.memmap(path, dtype=np.uint8, mode="r"))[8 + n:]  # plain views; they keep the map
        self.tensors: dict[str, np.ndarray] = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype, shape = np.dtype(_NUMPY_DTYPES[entry["dtype"]]), tuple(int(d) for d in entry["shape"])
            begin, end = (int(v) for v in entry["data_offsets"])
            if end - begin != math.prod(shape) * dtype.itemsize or not 0 <= begin <= end <= data.size:
                raise ValueError(f"tensor {name!r} {entry['dtype']}{list(shape)} does not fit bytes {begin}..{end} "
                                 f"of {data.size}")
            self.tensors[name] = data[begin:end].view(dtype).reshape(shape)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]


class LHGDataset:
    """Map-style dataset (works with torch DataLoader) over one split of a built dataset."""

    def __init__(self, dataset_dir: str | Path, split: str = "train", *, normalize: bool = True,
                 as_torch: bool = True, ssl: str | None = None, ssl_layers: list[int] | None = None,
                 speech: bool = True, normalize_speech: bool | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.dataset_dir = Path(dataset_dir)
        table = read_segments(self.dataset_dir)
        self.segments = table[table["split"] == split].reset_index(drop=True)
        # per-item lookups as plain arrays: a pandas row access costs more than reading a segment's heads
        self._where = (self.segments["segment_id"].tolist(), self.segments["shard"].tolist(),
                       self.segments["offset"].to_numpy(np.int64), self.segments["n_frames"].to_numpy(np.int64))
        self.normalize = normalize
        # False: FBank in its stored dtype, not standardised (the trainer does that on the device)
        self.normalize_speech = normalize if normalize_speech is None else normalize_speech
        self.as_torch = as_torch
        self.load_speech = speech  # False: heads only (baselines, calibration: no FBank reads)
        self._norm = Normalization.from_json(self.dataset_dir / NORMALIZATION_FILE)
        self._handles: dict[str, MappedShard] = {}
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

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (DataLoader workers) without the open memory maps: each process maps the shards itself."""
        return {**self.__dict__, "_handles": {}}

    @staticmethod
    def available_ssl(dataset_dir: str | Path) -> dict[str, dict]:
        """SSL feature sets in a built dataset: name -> spec (model, weights hash, mode, layers, dtype)."""
        return {name: entry["spec"] for name, entry in read_manifest(dataset_dir)["ssl"].items()}

    def __len__(self) -> int:
        return len(self.segments)

    def _shard(self, name: str, expected: tuple[str, ...] | None = None) -> MappedShard:
        handle = self._handles.pop(name, None)
        if handle is not None:
            self._handles[name] = handle  # most recently used last
        else:
            if len(self._handles) >= MAX_OPEN_SHARDS:  # each map holds a file descriptor
                del self._handles[next(iter(self._handles))]  # items are copies: nothing else uses it
            path = self.dataset_dir / name
            try:
                handle = MappedShard(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CorruptOutputError(path, f"not a readable shard ({type(exc).__name__}: {exc}); "
                                               + VERIFY_HINT.format(self.dataset_dir)) from None
            check_shard_tensors(list(handle.tensors), str(path), expected)
            self._handles[name] = handle
        return handle

    def __getitem__(self, index: int) -> dict[str, Any]:
        segment_ids, shards, offsets, n_frames = self._where
        shard = self._shard(shards[index])
        a, b = int(offsets[index]), int(offsets[index] + n_frames[index])
        listener, speaker = shard["listener_head"][a:b], shard["speaker_head"][a:b]
        item: dict[str, Any] = {"segment_id": segment_ids[index]}
        if self.normalize:
            listener, speaker = self._norm.head.apply(listener), self._norm.head.apply(speaker)
        item["listener_head"] = np.nan_to_num(listener, nan=0.0).astype(np.float32)
        item["speaker_head"] = np.nan_to_num(speaker, nan=0.0).astype(np.float32)
        if self.load_speech:
            speech = shard["speech_fbank"][a:b]
            item["speech"] = (self._norm.speech_fbank.apply(speech.astype(np.float32)) if self.normalize_speech
                              else np.array(speech))
        item["listener_valid"] = shard["listener_valid"][a:b].astype(bool) & np.isfinite(listener).all(1)
        item["speaker_valid"] = shard["speaker_valid"][a:b].astype(bool) & np.isfinite(speaker).all(1)
        for flag in ("listener_backchannel", "speaker_talk", "listener_interpolated", "speaker_interpolated"):
            item[flag] = shard[flag][a:b].astype(bool)
        if self.ssl is not None:
            item["ssl"] = self._ssl_rows(index, b - a)
        return self._to_torch(item) if self.as_torch else item

    def _ssl_rows(self, index: int, n_frames: int) -> np.ndarray:
        """The segment's SSL rows, only `ssl_layers` read from the map; stored dtype (bfloat16 as uint16 bits
        in torch mode, decoded to float32 in numpy mode, which has no bfloat16)."""
        mapped = self._shard(self._ssl_shard[index], ("ssl",))["ssl"]
        a = int(self._ssl_offset[index])
        rows = mapped[a:a + n_frames]  # a view: nothing read yet
        if self.ssl_layers is None:
            feats = np.array(rows)
        else:
            bad = [layer for layer in self.ssl_layers if not -rows.shape[2] <= layer < rows.shape[2]]
            if bad:
                raise ValueError(f"ssl_layers {bad} out of range: SSL set {self.ssl!r} stores {rows.shape[2]} "
                                 "hidden states")
            feats = rows[:, :, list(self.ssl_layers)]  # gathers only these layers' bytes
        if self._ssl_bf16 and not self.as_torch:
            from pipeline.features.speech_ssl import bf16_to_float32

            return bf16_to_float32(feats)
        return feats

    def _to_torch(self, item: dict[str, Any]) -> dict[str, Any]:
        import torch

        out = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
               for k, v in item.items()}
        if "ssl" in out and self._ssl_bf16:
            out["ssl"] = out["ssl"].view(torch.bfloat16)  # the stored bit patterns, reinterpreted (no copy)
        return out
