"""The training data path: segments -> padded batches (worker processes, pinned memory) -> the device.

Speech stays in its stored dtype (float16 / bfloat16 SSL, float32 or float16 FBank) through the worker
processes, the collation and the host-to-device copy, and becomes float32 (FBank: then standardised)
on the device, where it costs nothing: half the bytes to pad, pin and copy. fp16 and bf16 -> fp32 is
exact and the standardisation is the same IEEE float32 arithmetic as numpy's, so on CPU the model sees
bit for bit the values it saw when the loader converted and normalised.

Batches are the same, in order and in bytes, for any number of workers: the shuffled order is drawn
in the main process from a per-epoch seed (`EpochOrder`), the items are pure functions of their
index, and the DataLoader returns batches in order.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np

PADDED = ("listener_head", "speaker_head", "speech", "ssl", "listener_valid")
SPEECH = ("speech", "ssl")


def collate(items: list[dict]) -> dict:
    """Pad a list of segments to the longest (zeros, dtype kept); `frame_mask` marks real frames."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    batch: dict[str, Any] = {"segment_id": [it["segment_id"] for it in items]}
    for key in PADDED:
        if key in items[0]:
            batch[key] = pad_sequence([it[key] for it in items], batch_first=True)
    lengths = torch.tensor([int(it["listener_head"].shape[0]) for it in items])
    batch["frame_mask"] = torch.arange(int(lengths.max())) < lengths[:, None]
    return batch


class EpochOrder:
    """Sampler: a fresh shuffle per epoch (`set_epoch`) from `seed`, so one DataLoader with persistent
    workers serves every epoch and a resumed run replays the same order. It draws exactly as the
    per-epoch `DataLoader(shuffle=True, generator=Generator().manual_seed(seed * 100_003 + epoch))`
    of earlier versions did (one int64 for the worker base seed, then the permutation), so runs started
    before keep their order when resumed."""

    def __init__(self, n_items: int, seed: int):
        self.n_items, self.seed, self.epoch = n_items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_items

    def __iter__(self):
        import torch

        order = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=order)  # the old loader's base-seed draw
        yield from torch.randperm(self.n_items, generator=order).tolist()


def seed_worker(worker_id: int) -> None:
    """numpy and `random` in a worker seeded from torch's per-worker seed (base seed + worker id), so
    anything random an item might do is reproducible too (the dataset itself draws nothing)."""
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def worker_count(requested: int, device: Any, processes: int = 1) -> int:
    """-1 (auto): no workers on CPU, where the model's threads already use every core and the loader
    would compete with them; on a GPU min(8, cores - 1) processes keep the device fed, the cores
    shared among the `processes` training processes of this machine (torchrun)."""
    if requested >= 0:
        return requested
    return 0 if device.type == "cpu" else max(1, min(8, ((os.cpu_count() or 2) - 1) // max(processes, 1)))


def make_loader(dataset: Any, *, batch_size: int, workers: int, prefetch: int, device: Any, seed: int,
                order: EpochOrder | None = None, batches: Any = None):
    """A DataLoader over `dataset` (shuffled by `order`, else in index order) with `workers` persistent
    worker processes, `prefetch` batches queued per worker, pinned memory when the device is CUDA.
    `batches` (a batch sampler, e.g. one process's shares of the global batches) replaces
    `batch_size` and `order`."""
    import torch
    from torch.utils.data import DataLoader

    extra = {"persistent_workers": True, "prefetch_factor": prefetch, "worker_init_fn": seed_worker} \
        if workers > 0 else {}
    sizing = {"batch_sampler": batches} if batches is not None else {"batch_size": batch_size, "sampler": order}
    return DataLoader(dataset, **sizing, collate_fn=collate, num_workers=workers,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed), **extra)


def speech_standardizer(stats: dict | None, device: Any) -> tuple | None:
    """The FBank mean / std (the dataset's `normalization.json` "speech_fbank") as float32 tensors on
    the device, for `to_device`; None when the batches carry SSL features (not standardised)."""
    import torch

    if stats is None:
        return None
    return tuple(torch.tensor(np.asarray(stats[k], np.float32), device=device) for k in ("mean", "std"))


def to_device(batch: dict, device: Any, speech_norm: tuple | None = None) -> dict:
    """Tensors of a batch on the device (asynchronously from pinned memory); speech becomes float32
    there, FBank standardised with `speech_norm` (padding frames stay zero, as the loader padded them)."""
    import torch

    out = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    for key in SPEECH:
        if key in out:
            out[key] = out[key].float()
    if speech_norm is not None and "speech" in out:
        mean, std = speech_norm
        pad = ~out["frame_mask"].reshape(*out["frame_mask"].shape, *[1] * (out["speech"].dim() - 2))
        out["speech"] = ((out["speech"] - mean) / std).masked_fill(pad, 0.0)
    return out
