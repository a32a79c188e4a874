"""Data-parallel training under torchrun (2 CPU processes, gloo) gives the single-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from pipeline.dataset.loader import LHGDataset
from pipeline.model.train import preset, train

WORKER = Path(__file__).with_name("distributed_train.py")
REPO = Path(__file__).resolve().parents[1]


def test_two_processes_train_like_one_with_the_same_global_batch(built_dataset, tmp_path):
    """The same seeded global batches, split across 2 processes, with the loss normalised over the
    frames of all processes, give the weights of one process with the whole batch. The run is stopped
    after 2 of 3 epochs and resumed in the same processes (both load `last/`).

    Bound: the runs add the same float32 terms in other orders (the gradient all-reduce, per-process
    partial sums, other matrix shapes), which changes a gradient element by about n x 6e-8 relative
    (n <= batch x 137 frames x 3 targets, ~2e-4 here). Adam moves every weight by ~lr per step
    whatever the gradient's scale (|m^ / sqrt(v^)| ~ 1), so rounding moves weights by ~2e-4 lr per
    step, a few 1e-3 lr over these steps, except the rare elements whose gradient is itself at the
    rounding level: hence a bound on the mean difference, 1e-3 lr. Any difference in what a step
    computes is of order lr: a mean of per-process means instead of the global mean gives ~0.6 lr."""
    dataset = built_dataset / "dataset"
    n_train = len(LHGDataset(dataset, "train", speech=False))
    if n_train < 3:
        pytest.skip(f"the sample dataset has {n_train} train segments; the split needs 3")
    # global batches [n - 1, 1]: the first is split unevenly when n - 1 is odd, the second leaves
    # process 1 an empty share (it computes a placeholder with weight 0)
    cfg = preset("tiny", n_blocks=2, width=32, n_heads=4, epochs=3, batch_size=n_train - 1, listener_noise=0.0)
    assert cfg.dropout == 0.0  # dropout and noise draw per-process streams: equal only without them
    torch.set_num_threads(1)
    train(dataset, tmp_path / "single", cfg, progress=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), str(dataset), str(tmp_path / "ddp"), json.dumps(cfg.to_dict()), "2"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    single = load_file(str(tmp_path / "single" / "last" / "model.safetensors"))
    parallel = load_file(str(tmp_path / "ddp" / "last" / "model.safetensors"))
    assert single.keys() == parallel.keys()
    diff = torch.cat([(single[k] - parallel[k]).abs().flatten() for k in single])
    assert float(diff.mean()) <= 1e-3 * cfg.lr, (float(diff.mean()) / cfg.lr, float(diff.max()) / cfg.lr)
    one, two = pd.read_csv(tmp_path / "single" / "log.csv"), pd.read_csv(tmp_path / "ddp" / "log.csv")
    assert list(two["epoch"]) == [0, 1, 2] and (two["world_size"] == 2).all() and (one["world_size"] == 1).all()
    assert (two["effective_batch"] == cfg.batch_size).all() and (one["effective_batch"] == cfg.batch_size).all()
    # losses: float32 means of the same values, summed in another order (relative ~n x 6e-8)
    for column in ("train_loss", "valid_loss"):
        assert two[column].to_numpy() == pytest.approx(one[column].to_numpy(), rel=1e-4), column
    saved = json.loads((tmp_path / "ddp" / "last" / "config.json").read_text())["extra"]
    assert saved["distributed"] == {"world_size": 2, "effective_batch": cfg.batch_size}
    assert saved["precision"] == {"autocast": None, "tf32": False} and saved["train"]["amp"] == "off"
