"""Disk paid for SSL features: bytes on disk (work/ + dataset/, each file counted once) / shard bytes.

    .venv/bin/python bench/bench_ssl_storage.py [--quick] [--workdir DIR]

Builds the generated sample corpus with a random-weight HuBERT (2 layers, width 32: the ratios do
not depend on the feature width) through the real CLI, then counts every SSL file under `work/`
and `dataset/` by inode (a hard link is one file on disk). *Shard bytes* are the bytes the dataset's
SSL set holds for its readers. The previous layout (whole recordings as .npy in `work/`, then every
segment's rows copied into per-split shards) is computed from the same build's records, for the
ratio before. Target (README): on disk / shard bytes <= 1.1. MB per call hour is also given at
the paper's shape (13 hidden states x 768, float16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER_STATES, PAPER_DIM = 13, 768


def tiny_hubert(folder: Path) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    config = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                          num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, feat_extract_norm="group")
    HubertModel(config).save_pretrained(folder)
    return folder


def disk_bytes(*folders: Path, suffixes: tuple[str, ...] = (".safetensors", ".npy")) -> int:
    """Bytes of the files under `folders`, each inode once (hard links share their bytes)."""
    seen: dict[int, int] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in suffixes:
                st = path.stat()
                seen[st.st_ino] = st.st_size
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small corpus (40 s sessions)")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lhg-bench-ssl-"))
    corpus, out = work / "corpus", work / "out"
    from pipeline.sample.generate import make_sample_corpus

    make_sample_corpus(corpus, quick=args.quick)
    model = tiny_hubert(work / "tiny-hubert")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "luigi", "--module", "pipeline", "BuildSplits", "--corpus", str(corpus),
                    "--out", str(out), "--ssl-models", str(model), "--ssl-causal", "strict", "--local-scheduler",
                    "--workers", "1"], check=True, cwd=REPO, capture_output=True)
    print(f"build with SSL: {time.perf_counter() - started:.0f} s")

    import pandas as pd

    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    (name, entry), = manifest["ssl"].items()
    set_dir = out / "dataset" / entry["dir"]
    shard_bytes = disk_bytes(set_dir)
    on_disk = disk_bytes(out / "work" / "ssl", out / "dataset" / "ssl")
    records = [json.loads(p.read_text()) for p in (out / "work" / "ssl").rglob("*.json")]
    states, dim = records[0]["shape"][1:]
    frame_bytes = states * dim * 2  # float16, one SSL frame
    recorded_frames = sum(r["recording_ssl_frames"] for r in records)
    stored_frames = sum(r["shape"][0] for r in records)
    segments = pd.read_parquet(out / "dataset" / "segments.parquet")
    per_segment = int(segments["n_frames"].sum()) * 4 * frame_bytes  # rows copied per segment (overlaps twice)
    before = recorded_frames * frame_bytes + per_segment
    summary = json.loads(next((out / "dataset").glob("build-*.json")).read_text())
    call_hours = sum(st.get("duration_s", 0) for st in summary["sessions"].values()) / 3600
    paper_scale = PAPER_STATES * PAPER_DIM / (states * dim)
    print(f"SSL set {name}: {len(records)} recording(s), {recorded_frames / 50 / 3600:.3f} h of tracks, "
          f"{call_hours:.3f} h of calls; stored frames / recorded frames = {stored_frames / recorded_frames:.2f}")
    print(f"before (whole recordings in work/ + per-segment shard copies): {before / 1e6:.1f} MB on disk, "
          f"{before / per_segment:.2f} x the per-segment shard bytes")
    print(f"now: {on_disk / 1e6:.1f} MB on disk, shard bytes {shard_bytes / 1e6:.1f} MB: "
          f"on disk / shard bytes = {on_disk / shard_bytes:.3f} (target <= 1.1); "
          f"on disk / before = {on_disk / before:.2f}")
    print(f"at the paper's shape ({PAPER_STATES} x {PAPER_DIM}, float16): {on_disk * paper_scale / 1e9 / call_hours:.1f} "
          f"GB per call hour now, {before * paper_scale / 1e9 / call_hours:.1f} GB before")


if __name__ == "__main__":
    main()
