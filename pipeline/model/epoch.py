"""One training epoch and the validation loss: numeric precision, the loss of a batch, and (under
torchrun) each process's share of the global batch's loss (`pipeline.model.distributed`).

Precision (`TrainConfig.amp`): "auto" = bf16 autocast on CUDA with TF32 for the float32 matmuls and
convolutions left, plain float32 on CPU (bit for bit the results of earlier versions); "bfloat16" =
autocast on any device; "off" = float32, TF32 disabled too. bf16 has float32's exponent range, so no
loss scaling is needed.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.model import batches as data_path
from pipeline.model.distributed import Ranks, all_sum, placeholder, unwrap

PRECISIONS = ("auto", "bfloat16", "off")


def resolve_precision(amp: str, device: Any) -> str:
    """The precision a setting gives on `device`: "bfloat16" or "off". "" (run folders of earlier
    versions, which trained in float32) reads as "off"."""
    if amp in ("", "off"):
        return "off"
    if amp == "auto":
        return "bfloat16" if device.type == "cuda" else "off"
    if amp == "bfloat16":
        return amp
    raise ValueError(f"amp must be one of {PRECISIONS}, got {amp!r}")


def apply_precision(precision: str, device: Any) -> dict:
    """Switch TF32 on CUDA (on unless precision is "off"); return what is recorded with every
    checkpoint: the autocast dtype (None = float32) and whether TF32 was allowed."""
    import torch

    tf32 = device.type == "cuda" and precision != "off"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return {"autocast": None if precision == "off" else precision, "tf32": tf32}


def _speech(batch: dict, cfg: Any):
    return batch["speech"] if cfg.speech == "fbank" else batch["ssl"]


def loss_terms(model: Any, batch: dict, cfg: Any, device: Any, speech_norm: tuple | None = None) -> tuple:
    """(loss, supervised target frames) of a loader batch: the mean Huber loss over the supervised
    elements and how many frames it averages (the weight of this batch in a sum over batches or
    processes). `model` may be wrapped (DistributedDataParallel, torch.compile); `speech_norm`
    (`speech_standardizer`) standardises raw FBank on the device."""
    import torch

    from pipeline.model.network import masked_huber_loss, supervised_targets, target_frames

    net = unwrap(model)
    batch = data_path.to_device(batch, device, speech_norm)
    listener = batch["listener_head"]
    valid = batch["listener_valid"] & batch["frame_mask"]
    history = listener
    if cfg.listener_noise > 0 and model.training:
        history = listener + cfg.listener_noise * torch.randn_like(listener)
    pred = model(_speech(batch, cfg), batch["speaker_head"], history)
    if net.cfg.causal_deltas:  # a target's differences need its two previous frames valid too
        valid = valid.clone()
        valid[:, 1:] &= valid[:, :-1].clone()
        valid[:, 1:] &= valid[:, :-1].clone()
    targets, mask = target_frames(net.head_view(listener), valid, out_frames=pred.shape[-2])
    weights = None
    if cfg.derivative_weight != 1.0:
        n = pred.shape[-1] // 3
        weights = torch.tensor([1.0] * n + [cfg.derivative_weight] * (pred.shape[-1] - n), device=pred.device)
    loss = masked_huber_loss(pred, targets, mask, context_frames=cfg.context_frames, delta=cfg.huber_delta,
                             channel_weights=weights)
    return loss, supervised_targets(mask, cfg.context_frames).sum()


def batch_loss(model: Any, batch: dict, cfg: Any, device: Any, speech_norm: tuple | None = None):
    """The mean loss of a loader batch (see `loss_terms`)."""
    return loss_terms(model, batch, cfg, device, speech_norm)[0]


def evaluate_loss(model: Any, loader: Any, cfg: Any, device: Any, speech_norm: tuple | None = None,
                  ranks: Ranks | None = None) -> float:
    """Segment-weighted mean of the batch losses; under torchrun each process evaluates its share of
    the single-process batches (`distributed.ValidBatches`) and the sums are added up."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            total += float(batch_loss(model, batch, cfg, device, speech_norm)) * len(batch["segment_id"])
            count += len(batch["segment_id"])
    if ranks is not None and ranks.distributed:
        total, count = all_sum(ranks, [total, count], device)
    return total / max(count, 1)


def train_epoch(model: Any, loader: Any, optimizer: Any, cfg: Any, device: Any, speech_norm: tuple | None,
                ranks: Ranks, global_sizes: list[int]) -> tuple[float, int, float]:
    """One pass over the train loader -> (summed loss x segments, segments, seconds waiting for data),
    over the global batches; `global_sizes` are their sizes (for the processes' shares)."""
    import torch

    model.train()
    total, count, load_s = 0.0, 0, 0.0
    tick = time.perf_counter()
    for step, batch in enumerate(loader):
        load_s += time.perf_counter() - tick
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bfloat16"):
            loss, frames = loss_terms(model, batch, cfg, device, speech_norm)
        size = len(batch["segment_id"])
        logged = loss
        if ranks.distributed:
            size = global_sizes[step]
            loss, logged = _share_of_global_mean(loss, frames, ranks, size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(logged.detach()) * size
        count += size
        tick = time.perf_counter()
    if ranks.distributed:
        total = all_sum(ranks, [total], device)[0]
    return total, count, load_s


def _share_of_global_mean(loss: Any, frames: Any, ranks: Ranks, global_size: int) -> tuple:
    """(what this process back-propagates, its part of the global batch's mean loss).

    The global mean is sum_r S_r / N with S_r this process's loss sum (= its mean x its frames n_r)
    and N the frames of all processes (all-reduced here, not differentiated). DistributedDataParallel
    averages the gradients over the W processes, so each back-propagates W x S_r / N: the average is
    the gradient of the global mean, as one process with the whole batch computes it. A mean of the
    per-process means would weight frames by the size of their share instead."""
    import torch.distributed as dist

    weight = frames.float() * (0.0 if placeholder(global_size, ranks) else 1.0)
    total_frames = weight.detach().clone()
    dist.all_reduce(total_frames)
    part = loss * (weight / total_frames.clamp(min=1.0))
    return part * ranks.world_size, part
