"""Loader throughput at paper shapes against the raw read speed of the same shards, in one run.

    .venv/bin/python bench/bench_loader.py                     # ~1.6 GB of synthetic shards in a temp folder
    .venv/bin/python bench/bench_loader.py --segments 400 --workers 4 --keep /tmp/lhg_bench

Writes a synthetic dataset with the project's shard writer (`write_shard_set`, the real format):
segments of 6-11 s at 12.5 fps, head/FBank shards and one SSL set of 13 hidden states x 768 dims,
4 SSL frames per head frame, float16 (HuBERT base all layers, as the paper's SSL input). Then one pass
over the train split per line (best of epochs 2-3 of one loader: persistent workers already started;
raw read best of 3), batch 45 (the paper's), hot page cache:

  raw read           copy each segment's SSL rows out of the memory map into memory held per batch,
                     nothing else (the limit)
  old path           float32 in the loader: all layers read, sliced, converted (the code before)
  float16 kept       the loader now: stored dtype through collation (conversion on the device)

for 0 and N worker processes, all 13 layers and a 3-layer slice. Figures are segments/s and the ratio
to the raw read of the same layers: machine-independent comparisons, not absolute speeds.
`write_synthetic_dataset` also serves tests/test_loader_path.py (at tiny shapes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HEAD_COLUMNS = [f"h{i}" for i in range(18)]
SSL_SET = "synthetic-ssl-attention"


def _core_arrays(seg: pd.Series, fbank_dtype: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(int(seg["index"]))
    n = int(seg["n_frames"])
    listener = rng.standard_normal((n, 18)).astype(np.float32)
    listener[n // 3] = np.nan  # one frame without a pose: invalid, zero in the loader
    valid = np.ones(n, np.uint8)
    valid[n // 3] = 0
    flags = {k: (rng.random(n) < 0.2).astype(np.uint8) for k in ("listener_backchannel", "speaker_talk",
                                                                 "listener_interpolated", "speaker_interpolated")}
    return {"listener_head": listener, "speaker_head": rng.standard_normal((n, 18)).astype(np.float32),
            "listener_valid": valid, "speaker_valid": np.ones(n, np.uint8),
            "speech_fbank": (rng.standard_normal((n, 8, 80)) * 3 - 5).astype(fbank_dtype), **flags}


def _ssl_arrays(seg: pd.Series, base: np.ndarray) -> dict[str, np.ndarray]:
    k, n = int(seg["index"]), int(seg["n_frames"])
    start = (k * 7) % (len(base) - n)
    if base.dtype == np.uint16:  # bfloat16 bit patterns
        return {"ssl": base[start:start + n] ^ np.uint16(k % 50)}  # flips low mantissa bits only
    return {"ssl": base[start:start + n] + np.float16(k % 50 * 0.01)}  # distinct per segment, no RNG cost


def write_synthetic_dataset(out: Path, *, n_segments: int, layers: int = 13, dim: int = 768,
                            fbank_dtype: str = "float32", ssl_dtype: str = "float16", valid_every: int = 0,
                            frames: tuple[int, int] = (75, 138), seed: int = 0) -> str:
    """A built-dataset folder of `n_segments` random segments (6-11 s) in the real shard format, with
    one SSL set [F, 4, layers, dim] (float16, or bfloat16 stored as uint16 bits as the SSL stage does);
    every `valid_every`-th segment in the valid split; `frames`: [shortest, longest + 1) head frames.
    Returns the SSL set name."""
    from pipeline.common.fsutil import file_entry
    from pipeline.dataset.shards import write_shard_set

    rng = np.random.default_rng(seed)
    n_frames = rng.integers(*frames, n_segments)  # default 6.0-10.96 s at 12.5 fps
    segments = pd.DataFrame({"index": np.arange(n_segments), "segment_id": [f"seg{k:05d}" for k in range(n_segments)],
                             "session_id": [f"s{k // 10:04d}" for k in range(n_segments)], "n_frames": n_frames,
                             "split": ["valid" if valid_every and k % valid_every == 1 else "train"
                                       for k in range(n_segments)], "overlap_extra": False})
    spec = {"format_version": 3, "head_columns": HEAD_COLUMNS, "fbank_dtype": fbank_dtype}
    core = write_shard_set(segments, out / "shards" / "synthetic", load_session=lambda s: None,
                           make_arrays=lambda seg, _: _core_arrays(seg, fbank_dtype), max_bytes=64 << 20, spec=spec)
    base = rng.standard_normal((256, 4, layers, dim), dtype=np.float32)
    base = (base.view(np.uint32) >> 16).astype(np.uint16) if ssl_dtype == "bfloat16" else base.astype(np.float16)
    ssl_spec = {"model": "synthetic", "mode": "attention", "hidden_states": layers, "dim": dim, "dtype": ssl_dtype}
    write_shard_set(segments, out / "ssl" / SSL_SET / "set0", load_session=lambda s: None,
                    make_arrays=lambda seg, _: _ssl_arrays(seg, base), max_bytes=256 << 20, spec=ssl_spec)
    table = segments.drop(columns=["index"]).merge(core, on="segment_id")
    table["shard"] = "shards/synthetic/" + table["shard"]
    table.to_parquet(out / "segments.parquet", index=False)
    (out / "normalization.json").write_text(json.dumps({
        "head": {"mean": rng.standard_normal(18).tolist(), "std": (rng.random(18) + 0.5).tolist()},
        "speech_fbank": {"mean": (rng.standard_normal(80) - 5).tolist(), "std": (rng.random(80) * 3 + 0.5).tolist()}}))
    files = {str(p.relative_to(out)): file_entry(p) for p in sorted(out.rglob("*"))
             if p.is_file() and p.suffix in (".safetensors", ".parquet", ".json") and p.name != "manifest.json"}
    manifest = {"head_columns": HEAD_COLUMNS, "files": files,
                "ssl": {SSL_SET: {"dir": f"ssl/{SSL_SET}/set0", "spec": ssl_spec}}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return SSL_SET


class OldPath:
    """The loader before: every layer read from the shard, then sliced and converted to float32."""

    def __init__(self, dataset, layers: list[int] | None):
        self.dataset, self.layers = dataset, layers

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        ssl = item["ssl"] if self.layers is None else item["ssl"][:, :, self.layers]
        return {**item, "ssl": ssl.float()}


def raw_read(dataset, layers: list[int] | None, batch: int) -> float:
    """Segments/s copying only each segment's SSL rows (`layers` of them) out of the memory map, a batch's
    copies held until the batch is complete (as a loader holds them: fresh memory, not one reused buffer)."""
    started, held = time.perf_counter(), []
    for index in range(len(dataset)):
        mapped = dataset._shard(dataset._ssl_shard[index], ("ssl",))["ssl"]
        a = int(dataset._ssl_offset[index])
        rows = mapped[a:a + int(dataset.segments["n_frames"].iloc[index])]
        held.append(np.array(rows) if layers is None else rows[:, :, layers])
        if len(held) == batch:
            held = []
    return len(dataset) / (time.perf_counter() - started)


def loader_pass(data, workers: int, batch: int) -> float:
    """Segments/s of the faster of epochs 2 and 3 through one loader (the first starts the persistent
    workers; the best of two damps other load on a shared machine)."""
    import torch

    from pipeline.model.batches import EpochOrder, make_loader

    order = EpochOrder(len(data), 0)
    loader = make_loader(data, batch_size=batch, workers=workers, prefetch=2, device=torch.device("cpu"), seed=0,
                         order=order)
    speeds = []
    for epoch in range(3):
        order.set_epoch(epoch)
        started, count = time.perf_counter(), 0
        for batch_ in loader:
            count += len(batch_["segment_id"])
        speeds.append(count / (time.perf_counter() - started))
    return max(speeds[1:])


def run(dataset_dir: Path, workers: int, batch: int) -> list[tuple[str, int, str, float, float]]:
    from pipeline.dataset.loader import LHGDataset

    rows = []
    for layers in (None, [0, 6, 12]):
        label = "all 13" if layers is None else "3 (0,6,12)"
        new = LHGDataset(dataset_dir, "train", ssl=SSL_SET, ssl_layers=layers, speech=False)
        raw_read(new, layers, batch)  # warm the page cache and the maps
        raw = max(raw_read(new, layers, batch) for _ in range(3))
        rows.append(("raw read (the limit)", 0, label, raw, 1.0))
        old = OldPath(LHGDataset(dataset_dir, "train", ssl=SSL_SET, speech=False), layers)
        for n in (0, workers):
            for name, data in (("old path: fp32 in the loader", old), ("float16 kept", new)):
                speed = loader_pass(data, n, batch)
                rows.append((name, n, label, speed, speed / raw))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=200, help="segments to write (~8.5 MB of SSL each)")
    parser.add_argument("--workers", type=int, default=2, help="N worker processes (compared with 0)")
    parser.add_argument("--batch-size", type=int, default=45)
    parser.add_argument("--keep", type=Path, help="write the dataset here and keep it (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "dataset"
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if not (folder / "manifest.json").is_file():
            write_synthetic_dataset(folder, n_segments=args.segments)
        size = sum(p.stat().st_size for p in (folder / "ssl").rglob("*.safetensors"))
        print(f"{args.segments} segments, SSL shards {size / 1e9:.2f} GB, written in "
              f"{time.perf_counter() - started:.0f} s; batch {args.batch_size}, hot page cache")
        print(f"{'path':32s} {'workers':>7s} {'layers':>11s} {'segments/s':>11s} {'x raw':>6s}")
        for name, n, label, speed, ratio in run(folder, args.workers, args.batch_size):
            print(f"{name:32s} {n:7d} {label:>11s} {speed:11.1f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
