"""Data-parallel training under torchrun (2 CPU processes, gloo) gives the single-process result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from pipeline.dataset.loader import LHGDataset
from pipeline.model.batches import EpochOrder
from pipeline.model.distributed import RankBatches, Ranks, ValidBatches, placeholder
from pipeline.model.epoch import resolve_precision
from pipeline.model.train import TrainConfig, preset, train

WORKER = Path(__file__).with_name("distributed_train.py")
REPO = Path(__file__).resolve().parents[1]


def run_torchrun(args: list[str], env: dict, log: Path, timeout_s: float = 300) -> tuple[int, str]:
    """torchrun in its own session (stderr to `log`), killed with every process it started if it
    outlives `timeout_s`: a collective waiting for a process that will never come would hang the test."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = -1
    return code, log.read_text() + ("" if code != -1 else f"\n(killed after {timeout_s} s)")


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
    # global batches [n - 1, 1]: the second leaves process 1 an empty share (it computes a placeholder
    # with weight 0); shares of unequal frame counts test the normalisation (uneven splits: above)
    cfg = preset("tiny", n_blocks=2, width=32, n_heads=4, epochs=3, batch_size=n_train - 1, listener_noise=0.0)
    assert cfg.dropout == 0.0  # dropout and noise draw per-process streams: equal only without them
    torch.set_num_threads(1)
    train(dataset, tmp_path / "single", cfg, progress=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    returncode, stderr = run_torchrun(["--standalone", "--nproc_per_node", "2", str(WORKER), str(dataset),
                                       str(tmp_path / "ddp"), json.dumps(cfg.to_dict()), "2"], env, tmp_path / "torchrun.log")
    assert returncode == 0, stderr[-4000:]
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


def test_the_shares_of_the_processes_make_up_the_single_process_batches():
    """Every global batch of the seeded order is cut into contiguous shares (sizes differ by at most
    one) that concatenate to it; one process gets exactly the DataLoader(batch_size, sampler) batches."""
    n, batch = 23, 7  # global batches 7, 7, 7, 2
    order = EpochOrder(n, seed=5)
    order.set_epoch(3)
    single = [b.tolist() for b in torch.utils.data.DataLoader(range(n), batch_size=batch, sampler=order)]
    assert list(RankBatches(n, batch, Ranks(), order)) == single
    for world in (2, 3, 4):
        shares = [list(RankBatches(n, batch, Ranks(rank, world), order)) for rank in range(world)]
        sizes = RankBatches(n, batch, Ranks(0, world), order).global_sizes()
        assert sizes == [7, 7, 7, 2] and all(len(s) == len(single) for s in shares)
        for step, whole in enumerate(single):
            real = [shares[r][step] for r in range(world) if not placeholder(sizes[step], Ranks(r, world))]
            assert sum(real, []) == whole and max(map(len, real)) - min(map(len, real)) <= 1
            assert len(real) == min(world, len(whole))  # the others compute a weight-0 placeholder
    valid = [ValidBatches(n, batch, Ranks(r, 3)).batches for r in range(3)]
    assert sorted(sum(valid, [])) == [list(range(s, min(s + batch, n))) for s in range(0, n, batch)]


def test_precision_defaults_and_run_folders_of_earlier_versions():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert TrainConfig().amp == "auto"
    assert resolve_precision("auto", cpu) == "off" and resolve_precision("auto", gpu) == "bfloat16"
    assert resolve_precision("off", gpu) == "off" and resolve_precision("bfloat16", cpu) == "bfloat16"
    # earlier versions stored amp "" (float32): such a run resumes as "off", which the default gives on CPU
    saved = {**TrainConfig().to_dict(), "amp": ""}
    assert TrainConfig.from_dict(saved) == TrainConfig(amp=resolve_precision("auto", cpu))
    # compile and the loader settings change no result: a run resumes with other values
    assert TrainConfig(compile=True, loader_workers=2) == TrainConfig()

