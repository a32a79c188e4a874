"""Training the listener head model on the dataset shards (teacher forcing, paper settings).

Paper (IV): Huber loss, AdamW (lr 5e-6, weight decay 1e-2), cosine annealing, 100 epochs, batch
45; the first 1 s of every segment is context (model input, no loss). We use 12 frames (0.96 s) of
context: 12.5 frames is not a whole number, and 12 + 125 evaluation frames = 137 = the longest
segment (10.96 s). Padding and invalid target frames are masked out of the loss.

Resumable: after every epoch `last/` holds the weights (safetensors + JSON), `train_state.pt`
(optimizer, scheduler, RNG, epoch, log rows; loaded with `weights_only=True`, no arbitrary
unpickling) and their checksums, published as one unit (`pipeline.model.checkpoints`). A run killed
at any moment, even inside a save, restarted with the same settings continues and ends with the same
weights as an uninterrupted run (CPU, fixed seed); a damaged or inconsistent `last/` is refused with
the file and what is wrong, never silently restarted.

`log.csv` has one row per epoch: train/valid loss, learning rate, epoch seconds (incl. validation),
`segments_per_s` (training loop only), `loader_share` (the loop's time spent waiting for batches),
`world_size` (processes under torchrun) and `effective_batch` (the global batch, `batch_size`).
Precision (bf16 autocast + TF32 on a GPU by default) and the epoch loop: `pipeline.model.epoch`;
data-parallel training under torchrun: `pipeline.model.distributed`.
Checkpoints carry `features` (head columns, speech type, SSL feature spec) so evaluation can refuse a
dataset with other inputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.fsutil import output_lock, write_json_atomic
from pipeline.common.runtime import resolve_device
from pipeline.common.settings import at_least, check_settings, setting
from pipeline.dataset.normalization import NORMALIZATION_FILE
from pipeline.model import batches as data_path
from pipeline.model.batches import collate
from pipeline.model.checkpoints import CHECKPOINT_TRAIN_STATE, CheckpointError
from pipeline.model.distributed import (
    RankBatches,
    ValidBatches,
    barrier,
    broadcast,
    join_process_group,
    rank_device,
    rank_seed,
    ranks_from_environment,
    wrap,
)
from pipeline.model.epoch import (
    PRECISIONS,
    apply_precision,
    batch_loss,  # noqa: F401  (its home before pipeline.model.epoch)
    evaluate_loss,
    resolve_precision,
    train_epoch,
)
from pipeline.model.run_folder import read_log, resumable, save_epoch, write_log
from schemas.conventions import CONTEXT_FRAMES

log = logging.getLogger(__name__)


def _loader_setting(default: int, help: str, lowest: int) -> Any:
    """A `setting` left out of TrainConfig equality: resuming compares settings, and these change no result."""
    spec = setting(default, help, check=at_least(lowest))
    return field(default=default, metadata=spec.metadata, compare=False)


@dataclass(frozen=True)
class TrainConfig:
    arch: str = setting("lstm_transformer", "the paper's LSTM-Transformer or its Transformer baseline",
                        choices=("lstm_transformer", "transformer"))
    speech: str = setting("fbank", "speech input: FBank, or the SSL features (all layers concatenated or "
                                   "weighted average)", choices=("fbank", "ssl_concat", "ssl_wa"))
    ssl_set: str = ""  # feature set name (LHGDataset.available_ssl) for ssl_* speech
    ssl_layers: tuple[int, ...] = ()  # () = all stored hidden states
    n_blocks: int = 20
    width: int = 1280
    n_heads: int = 16
    dropout: float = 0.1
    epochs: int = setting(100, "training epochs (default: the preset's)", preset_override=True)
    batch_size: int = 45  # the global (effective) batch per optimiser step, for any number of processes
    lr: float = 5e-6
    # the ssl_wa layer-weight logits move at most ~lr per Adam step: at the paper's 5e-6 they stay
    # within a few tenths of their start (uniform weights) however long one trains
    layer_weight_lr: float = setting(0.0, "learning rate of the SSL layer-weight logits (ssl_wa); "
                                          "0 = the model's lr (the paper)")
    weight_decay: float = 1e-2
    huber_delta: float = 1.0
    context_frames: int = CONTEXT_FRAMES
    seed: int = setting(0, "training seed (initialisation, batch order, dropout)")
    device: str = setting("auto", "auto (GPU when present), cpu or cuda")
    # numeric precision (pipeline.model.epoch); a run stores what it resolved to ("bfloat16" / "off")
    amp: str = setting("auto", "precision: auto = bf16 autocast + TF32 on a GPU, float32 on CPU; bfloat16 = "
                               "autocast on any device; off = float32 (TF32 off too)", choices=PRECISIONS)
    # torch.compile of the training forward: faster on a GPU, a long first step, no change of meaning
    compile: bool = field(default=False, compare=False, metadata=setting(
        False, "torch.compile the model for training (GPU-oriented: compiling costs minutes)").metadata)
    # how the batches are read: no effect on the results (identical batches for any value), so a run
    # may resume with other values (compare=False)
    loader_workers: int = _loader_setting(-1, "DataLoader worker processes; -1 = auto: 0 on CPU (the model's "
                                              "threads use the cores), min(8, cores - 1) on a GPU", -1)
    loader_prefetch: int = _loader_setting(2, "batches each loader worker prepares ahead", 1)
    # std (normalised units) of Gaussian noise added to the listener-head input while training: the
    # model cannot lean on a perfect history it will not have when generating (not in the paper: 0)
    listener_noise: float = 0.0
    # loss weight of the derivative output channels relative to the static ones. With causal deltas the
    # predicted derivatives are auxiliary (generation feeds back the statics and recomputes them), and
    # their frame differences are mostly noise that would otherwise outweigh the statics 2:1 (paper: 1)
    derivative_weight: float = 1.0

    def __post_init__(self) -> None:
        check_settings(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["ssl_layers"] = tuple(data.get("ssl_layers", ()))
        if data.get("amp") == "":  # earlier versions: "" = float32
            data["amp"] = "off"
        return cls(**data)


PRESETS = {
    "paper": TrainConfig(),
    # trains on the embedded sample corpus on CPU in a few minutes
    # Small data: the derivative outputs (auxiliary with causal deltas) are down-weighted and the
    # listener history is noised, or the model copies its own history and overshoots when generating
    # (sample corpus: PCC, precision and L2 then beat every baseline, see tests/test_evaluate.py).
    "tiny": TrainConfig(n_blocks=2, width=64, n_heads=4, dropout=0.0, epochs=40, batch_size=8, lr=2e-3,
                        derivative_weight=0.1, listener_noise=0.2),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def delta_gains(train_set, n_static: int) -> list[float]:
    """Gains giving the model's causal difference channels unit variance on the training split.

    `LHGModel.head_view` replaces the stored derivatives by d = g_d * diff(statics) and
    dd = g_dd * diff(d) (normalised units). Raw frame differences of noisy channels (face scale,
    position) are far larger than the stored smoothed derivatives, and would swamp the loss unless
    scaled; here g_d = 1 / std(diff(statics)) and g_dd = 1 / std(diff(g_d * diff(statics))) per
    channel, over consecutive valid frames of every train listener and speaker.
    """
    diffs1, diffs2 = [], []
    for i in range(len(train_set)):
        item = train_set[i]
        for head, valid in ((item["listener_head"], item["listener_valid"]),
                            (item["speaker_head"], item["speaker_valid"])):
            s = np.asarray(head)[:, :n_static]
            v = np.asarray(valid, dtype=bool)
            ok1 = v[1:] & v[:-1]
            d = np.diff(s, axis=0)
            diffs1.append(d[ok1])
            diffs2.append(np.diff(d, axis=0)[ok1[1:] & ok1[:-1]])
    d1 = np.concatenate(diffs1)
    g_d = 1.0 / np.maximum(d1.std(axis=0), 1e-6)
    g_dd = 1.0 / np.maximum((np.concatenate(diffs2) * g_d).std(axis=0), 1e-6)
    return [float(v) for v in np.concatenate([g_d, g_dd])]


def model_config_for(cfg: TrainConfig, sample: dict, gains: list[float] | None = None):
    from pipeline.model.network import ModelConfig

    speech = sample["speech"] if cfg.speech == "fbank" else sample["ssl"]
    if cfg.speech == "fbank":
        extra = {"speech_frames": int(speech.shape[-2]), "speech_bins": int(speech.shape[-1])}
    else:
        extra = {"speech_frames": int(speech.shape[-3]), "ssl_layers": int(speech.shape[-2]),
                 "ssl_dim": int(speech.shape[-1])}
    return ModelConfig(arch=cfg.arch, n_blocks=cfg.n_blocks, width=cfg.width, n_heads=cfg.n_heads,
                       dropout=cfg.dropout, speech=cfg.speech, delta_gains=gains, **extra)


def open_split(dataset_dir: str | Path, split: str, cfg: TrainConfig):
    from pipeline.dataset.loader import LHGDataset

    if cfg.speech == "fbank":  # raw FBank in its stored dtype: `to_device` standardises it on the device
        return LHGDataset(dataset_dir, split, normalize_speech=False)
    return LHGDataset(dataset_dir, split, ssl=cfg.ssl_set or None, ssl_layers=list(cfg.ssl_layers) or None)


def feature_spec(dataset_dir: str | Path, cfg: TrainConfig) -> dict:
    """What the model's inputs are, stored with every checkpoint so evaluation can check it gets the same."""
    from pipeline.dataset.manifest import read_manifest

    manifest = read_manifest(dataset_dir)
    ssl = manifest["ssl"][cfg.ssl_set]["spec"] if cfg.speech != "fbank" else None
    return {"head_columns": manifest["head_columns"], "speech": cfg.speech, "ssl_set": cfg.ssl_set,
            "ssl_layers": list(cfg.ssl_layers), "ssl": ssl}


def train(dataset_dir: str | Path, run_dir: str | Path, cfg: TrainConfig, *, stop_after_epochs: int | None = None,
          progress: bool = True) -> dict:
    """Train (or resume) into `run_dir`; return the summary also written to `run_dir/summary.json`.

    `stop_after_epochs` ends the process early as a kill would (for resume tests). The run folder is
    locked while training (a second run into it fails at once), and leftovers of a save that a kill
    interrupted are swept first. Under torchrun (WORLD_SIZE > 1) every process calls this with the
    same settings and trains data-parallel (`pipeline.model.distributed`); only rank 0 checks the
    dataset, locks and writes the run folder, the others wait for it at the collectives.
    """
    from pipeline.dataset.manifest import require_intact
    from pipeline.model.checkpoints import sweep_checkpoints

    ranks = ranks_from_environment()
    device = rank_device(ranks, resolve_device(cfg.device))
    cfg = replace(cfg, amp=resolve_precision(cfg.amp, device))  # stored resolved: what this run used
    run_dir, dataset_dir = Path(run_dir), Path(dataset_dir)
    join_process_group(ranks, device)
    with output_lock(run_dir, "training") if ranks.main else contextlib.nullcontext():
        if ranks.main:
            sweep_checkpoints(run_dir)
            require_intact(dataset_dir, splits={"train", "valid"}, ssl_sets={cfg.ssl_set} if cfg.ssl_set else set())
        barrier(ranks)  # the others read the dataset and `last/` once they are checked and swept
        summary = _train(dataset_dir, run_dir, cfg, (device, ranks), stop_after_epochs, progress and ranks.main)
        barrier(ranks)  # and return once summary.json is written
    return summary


def _train(dataset_dir: Path, run_dir: Path, cfg: TrainConfig, where: tuple, stop_after_epochs: int | None,
           progress: bool) -> dict:
    import torch

    device, ranks = where
    torch.manual_seed(cfg.seed)
    train_set, valid_set, model_cfg, extra = _inputs(dataset_dir, cfg)
    extra.update(precision=apply_precision(cfg.amp, device),
                 distributed={"world_size": ranks.world_size, "effective_batch": cfg.batch_size})
    model, optimizer, scheduler, (start_epoch, best_val, history) = _model_and_state(run_dir, cfg, model_cfg,
                                                                                   device, extra)
    net = wrap(model, ranks, device)  # trains through `net`; `model` is validated and saved
    if cfg.compile:
        net = torch.compile(net)
    speech_norm = data_path.speech_standardizer(extra["normalization"]["speech_fbank"] if cfg.speech == "fbank"
                                                else None, device)
    workers = data_path.worker_count(cfg.loader_workers, device, ranks.local_world_size)
    order = data_path.EpochOrder(len(train_set), cfg.seed)
    shares = RankBatches(len(train_set), cfg.batch_size, ranks, order)
    train_loader, valid_loader = (
        data_path.make_loader(data, batch_size=cfg.batch_size, workers=workers, prefetch=cfg.loader_prefetch,
                              device=device, seed=cfg.seed, batches=batches)
        for data, batches in ((train_set, shares), (valid_set, ValidBatches(len(valid_set), cfg.batch_size, ranks))))
    log.info("training %s/%s on %s (%s, process %d of %d, global batch %d): %d train / %d valid segments, "
             "%d loader workers, epochs %d-%d -> %s", cfg.arch, cfg.speech, device, extra["precision"],
             ranks.rank + 1, ranks.world_size, cfg.batch_size, len(train_set), len(valid_set), workers,
             start_epoch + 1, cfg.epochs, run_dir)
    bar = _progress(cfg.epochs, start_epoch, progress)
    for epoch in range(start_epoch, cfg.epochs):
        order.set_epoch(epoch)
        if ranks.rank > 0:  # the main process keeps the saved RNG stream; the others draw their own
            torch.manual_seed(rank_seed(cfg.seed, epoch, ranks.rank))
        history.append(_epoch(net, model, (train_loader, valid_loader, shares), optimizer, scheduler, cfg,
                              (device, ranks, speech_norm), epoch))
        _refuse_divergence(model, history[-1]["train_loss"], epoch, run_dir)
        if ranks.main:
            best_val = save_epoch(run_dir, model, optimizer, scheduler, extra, history, best_val,
                                   final=epoch == cfg.epochs - 1)
        best_val = broadcast(ranks, best_val)  # the others wait here while the main process saves
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{history[-1]['train_loss']:.4f}", valid=f"{history[-1]['valid_loss']:.4f}")
        if stop_after_epochs is not None and epoch + 1 >= stop_after_epochs:
            break
    if bar is not None:
        bar.close()
    return _finish(run_dir, cfg, model_cfg, history, best_val, ranks.main)


def _inputs(dataset_dir: Path, cfg: TrainConfig) -> tuple:
    """(train split, valid split, model config, checkpoint extra) of a checked dataset."""
    from pipeline.dataset.loader import LHGDataset

    train_set, valid_set = open_split(dataset_dir, "train", cfg), open_split(dataset_dir, "valid", cfg)
    if len(train_set) == 0:
        raise RuntimeError(f"{dataset_dir}: the train split is empty")
    normalization = json.loads((dataset_dir / NORMALIZATION_FILE).read_text())  # stored in checkpoints
    first = collate([train_set[0]])
    heads_only = LHGDataset(dataset_dir, "train", speech=False)  # gains need no speech reads
    model_cfg = model_config_for(cfg, first, delta_gains(heads_only, first["listener_head"].shape[-1] // 3))
    extra = {"train": cfg.to_dict(), "normalization": normalization, "features": feature_spec(dataset_dir, cfg),
             "dataset": str(dataset_dir.resolve()), "steps_per_epoch": math.ceil(len(train_set) / cfg.batch_size)}
    return train_set, valid_set, model_cfg, extra


def _epoch(net: Any, model: Any, loaders: tuple, optimizer: Any, scheduler: Any, cfg: TrainConfig, where: tuple,
           epoch: int) -> dict:
    """Train one epoch through `net`, step the schedule, validate `model` -> its log.csv row."""
    import torch

    train_loader, valid_loader, shares = loaders
    device, ranks, speech_norm = where
    started = time.perf_counter()
    total, count, load_s = train_epoch(net, train_loader, optimizer, cfg, device, speech_norm, ranks,
                                       shares.global_sizes())
    train_s = time.perf_counter() - started
    scheduler.step()
    train_loss = total / max(count, 1)
    # one draw from the global RNG first: the validation loader of earlier versions drew its base seed
    # there on every pass, so dropout streams (and runs resumed across versions) stay the same
    torch.empty((), dtype=torch.int64).random_()
    val_loss = evaluate_loss(model, valid_loader, cfg, device, speech_norm, ranks) \
        if len(valid_loader.dataset) else float("nan")
    return {"epoch": epoch, "train_loss": train_loss, "valid_loss": val_loss, "lr": scheduler.get_last_lr()[0],
            "seconds": round(time.perf_counter() - started, 3), "segments_per_s": round(count / train_s, 2),
            "loader_share": round(load_s / train_s, 3), "world_size": ranks.world_size,
            "effective_batch": cfg.batch_size}


def _finish(run_dir: Path, cfg: TrainConfig, model_cfg: Any, history: list[dict], best_val: float, main: bool) -> dict:
    summary = {"epochs_done": len(history), "best_valid_loss": best_val, "history": history,
               "model": model_cfg.to_dict(), "train": cfg.to_dict()}
    if main:
        write_log(run_dir / "log.csv", history)  # again: a kill after the last checkpoint switch left it behind
        log.info("training: %d of %d epochs done, best valid loss %.4f; checkpoints in %s", len(history),
                 cfg.epochs, best_val, run_dir)
        write_json_atomic(run_dir / "summary.json", summary)
    return summary


def _model_and_state(run_dir: Path, cfg: TrainConfig, model_cfg: Any, device: Any, extra: dict) -> tuple:
    """A fresh model and optimiser, or those of the last finished epoch in `run_dir` (resume)
    -> (model, optimizer, scheduler, (first epoch to run, best valid loss, log rows so far))."""
    import torch

    from pipeline.model.network import LHGModel

    last = run_dir / "last"
    start_epoch, best_val, history, state = 0, math.inf, [], None
    if last.exists() or last.is_symlink():
        model, state = resumable(last, cfg, model_cfg, extra)
        start_epoch, best_val = int(state["epoch"]) + 1, float(state["best_val"])
        history = state.get("history") or [row for row in read_log(run_dir / "log.csv")
                                           if int(row["epoch"]) < start_epoch]
        log.info("resuming %s after epoch %d", run_dir, start_epoch - 1)
    else:
        model = LHGModel(model_cfg)
    model.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            raise CheckpointError(last / CHECKPOINT_TRAIN_STATE, f"optimiser, scheduler or RNG state does not fit "
                                  f"this model and optimiser: {err}") from None
    return model, optimizer, scheduler, (start_epoch, best_val, history)


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN / inf: the epoch is not saved."""


def _refuse_divergence(model: Any, train_loss: float, epoch: int, run_dir: Path) -> None:
    """Stop before a non-finite epoch is saved: `last` keeps the previous epoch, `best` the best finite one."""
    import torch

    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if math.isfinite(train_loss) and not bad:
        return
    raise TrainingDiverged(f"{run_dir}: training diverged in epoch {epoch}: train loss {train_loss}"
                           f"{f', non-finite weights in {bad[:3]}' if bad else ''}; this epoch is not saved "
                           f"(`last` holds the previous one). Lower --lr, or check the dataset with "
                           f"`python -m pipeline verify`.")


def parameter_groups(model: Any, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: the SSL layer-weight logits at `layer_weight_lr` (when set), everything else at `lr`."""
    logits = [p for name, p in model.named_parameters() if name.endswith("layer_logits")]
    if not logits or not cfg.layer_weight_lr:
        return [{"params": list(model.parameters())}]
    ids = {id(p) for p in logits}
    return [{"params": [p for p in model.parameters() if id(p) not in ids]},
            {"params": logits, "lr": cfg.layer_weight_lr}]


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from pipeline.common.logs import progress

    return progress(total=total, initial=initial, desc="training", unit="epoch")

