"""Data-parallel training under `torchrun`: which process this is, the process group, the global batch
split across the processes, and the few collectives the training loop needs.

`batch_size` is the global (effective) batch, the paper's 45, whatever the number of processes: every
optimiser step consumes the same global batch of the seeded epoch order as a single process would,
cut into `world_size` contiguous shares whose sizes differ by at most one. The loss is normalised by
the global count of supervised target frames (all-reduced each step), so the averaged gradients are
those of the single-process batch up to float summation order. A process whose share of a short last
batch is empty computes a placeholder item with weight 0 (DistributedDataParallel needs every process
in every gradient reduction).
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set by torchrun for every process it starts


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Only the main process writes the run folder (checkpoints, log.csv, summary)."""
        return self.rank == 0


def ranks_from_environment(environ: dict[str, str] | None = None) -> Ranks:
    """The ranks torchrun announces in RANK / WORLD_SIZE / LOCAL_RANK; one process when WORLD_SIZE is unset."""
    env = os.environ if environ is None else environ
    if int(env.get("WORLD_SIZE") or 1) <= 1:
        return Ranks()
    try:
        ranks = Ranks(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK") or 0),
                      int(env.get("LOCAL_WORLD_SIZE") or 1))
    except (KeyError, ValueError) as err:
        raise RuntimeError(f"WORLD_SIZE={env.get('WORLD_SIZE')} but RANK / LOCAL_RANK are missing or not whole "
                           f"numbers ({err}): start distributed training with torchrun") from None
    if not 0 <= ranks.rank < ranks.world_size:
        raise RuntimeError(f"RANK={ranks.rank} is outside 0..WORLD_SIZE-1={ranks.world_size - 1}")
    return ranks


def rank_device(ranks: Ranks, device: Any) -> Any:
    """The device of this process: its own GPU (cuda:LOCAL_RANK) when training on CUDA with several processes."""
    import torch

    if device.type != "cuda" or not ranks.distributed or device.index is not None:
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise RuntimeError(f"LOCAL_RANK={ranks.local_rank} but this machine has {torch.cuda.device_count()} GPUs: "
                           "start at most one process per GPU (torchrun --nproc_per_node)")
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


def join_process_group(ranks: Ranks, device: Any) -> None:
    """Join the default process group (NCCL on CUDA, gloo on CPU) unless one process trains alone or
    the group exists (the caller's, or one an earlier `train` in this process joined). The group
    lives until the process exits: re-creating it in the same process can pair the processes up
    with the addresses they published for the previous group (torchrun's store keeps them) and hang."""
    import torch.distributed as dist

    if not ranks.distributed or dist.is_initialized():
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank,
                            world_size=ranks.world_size, **({"device_id": device} if device.type == "cuda" else {}))
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_sum(ranks: Ranks, values: list[float], device: Any) -> list[float]:
    """Element-wise sums over the processes (float64, so the order of the additions hardly matters)."""
    if not ranks.distributed:
        return list(values)
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast(ranks: Ranks, value: Any) -> Any:
    """The main process's `value` (any picklable object) on every process."""
    if not ranks.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_bounds(global_size: int, ranks: Ranks) -> tuple[int, int]:
    """[start, end) of this process's contiguous share of a global batch of `global_size` items
    (the first `global_size % world_size` shares get one item more; a share may be empty)."""
    base, extra = divmod(global_size, ranks.world_size)
    start = ranks.rank * base + min(ranks.rank, extra)
    return start, start + base + (1 if ranks.rank < extra else 0)


class RankBatches:
    """Batch sampler: the global batches of `order` (a sampler, or index order when None), each cut to
    this process's share; an empty share yields the global batch's first item as a placeholder (its
    loss gets weight 0, see `placeholder`). One process: exactly the batches of
    `DataLoader(batch_size=batch_size, sampler=order)`."""

    def __init__(self, n_items: int, batch_size: int, ranks: Ranks, order: Any = None):
        self.n_items, self.batch_size, self.ranks, self.order = n_items, batch_size, ranks, order

    def __len__(self) -> int:
        return -(-self.n_items // self.batch_size)

    def global_sizes(self) -> list[int]:
        """The size of every global batch of an epoch, in order."""
        return [min(self.batch_size, self.n_items - start) for start in range(0, self.n_items, self.batch_size)]

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.order) if self.order is not None else list(range(self.n_items))
        for start in range(0, self.n_items, self.batch_size):
            batch = indices[start:start + self.batch_size]
            lo, hi = share_bounds(len(batch), self.ranks)
            yield batch[lo:hi] if hi > lo else batch[:1]


def placeholder(global_size: int, ranks: Ranks) -> bool:
    """Whether this process's share of a global batch is empty (it computes a weight-0 placeholder)."""
    lo, hi = share_bounds(global_size, ranks)
    return hi == lo


class ValidBatches:
    """Batch sampler for validation: the single-process batches (index order, `batch_size`), every
    `world_size`-th one to this process, so the summed losses equal the single-process sum."""

    def __init__(self, n_items: int, batch_size: int, ranks: Ranks):
        starts = range(0, n_items, batch_size)
        self.batches = [list(range(s, min(s + batch_size, n_items))) for s in starts][ranks.rank::ranks.world_size]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The RNG seed of process `rank` > 0 at the start of `epoch`: dropout / noise streams that differ
    between processes and are the same after a resume (only the main process's RNG state is saved)."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank


def wrap(model: Any, ranks: Ranks, device: Any) -> Any:
    """The model wrapped in DistributedDataParallel (gradients averaged across processes during
    `backward`); one process: the model itself. Its buffers are constants, so none are broadcast."""
    if not ranks.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=ids, **no_sync)


def unwrap(model: Any) -> Any:
    """The LHGModel inside DistributedDataParallel and / or torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if inner is None:
            inner = getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner
