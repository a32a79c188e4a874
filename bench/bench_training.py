"""Training throughput (segments/s) and the data loader's share of step time, on a built dataset.

    .venv/bin/python bench/bench_training.py                       # builds the quick sample corpus first
    .venv/bin/python bench/bench_training.py --dataset lhg_out/dataset --sizes tiny,mid,paper

For each (size, architecture) it runs `pipeline.model.train.train` for `--epochs` epochs (FBank input,
CPU unless --device) and reports the last epoch's segments/s and loader share from the run's
log.csv (the first epoch is warm-up). The in-run baseline is the loader alone: one pass over the
train split through the same DataLoader and collate function, no model. Ratio = loader-only
segments/s / training segments/s (how many times slower than reading the data training is).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZES = {
    "tiny": dict(n_blocks=2, width=64, n_heads=4),
    "mid": dict(n_blocks=4, width=256, n_heads=8),
    "paper": dict(n_blocks=20, width=1280, n_heads=16),
}


def build_sample(workdir: Path) -> Path:
    out = workdir / "out"
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "BuildSplits", "--quick-sample", "--out", str(out)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return out / "dataset"


def loader_only(dataset: Path, batch_size: int) -> float:
    from torch.utils.data import DataLoader

    from pipeline.model.train import collate, open_split, preset

    data = open_split(dataset, "train", preset("tiny"))
    started = time.perf_counter()
    count = 0
    for batch in DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate):
        count += len(batch["segment_id"])
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, help="a built dataset folder (default: build the quick sample)")
    parser.add_argument("--sizes", default="tiny,mid")
    parser.add_argument("--archs", default="lstm_transformer,transformer")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from pipeline.model.train import preset, train

    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or build_sample(Path(tmp))
        baseline = loader_only(dataset, args.batch_size)
        print(f"dataset {dataset}; threads {torch.get_num_threads()}; loader only: {baseline:.1f} segments/s")
        rows = []
        for size in args.sizes.split(","):
            for arch in args.archs.split(","):
                cfg = replace(preset("tiny"), arch=arch, epochs=args.epochs, batch_size=args.batch_size,
                              device=args.device, **SIZES[size])
                summary = train(dataset, Path(tmp) / f"run-{size}-{arch}", cfg, progress=False)
                last = summary["history"][-1]
                row = {"size": size, "arch": arch, "segments_per_s": last["segments_per_s"],
                       "loader_share": last["loader_share"], "epoch_s": last["seconds"],
                       "loader_only_ratio": round(baseline / last["segments_per_s"], 1)}
                rows.append(row)
                print(f"{size:6s} {arch:17s} {row['segments_per_s']:8.2f} segments/s  loader share "
                      f"{row['loader_share']:.3f}  epoch {row['epoch_s']:.1f} s  "
                      f"(loader-only / training = {row['loader_only_ratio']}x)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"loader_only_segments_per_s": baseline, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
