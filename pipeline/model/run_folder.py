"""A training run folder between epochs: what a resume needs and how an epoch's end is saved.

`last` (weights + training state) and `best` are published as atomic units
(pipeline.model.checkpoints); `log.csv` has one row per epoch. A resume continues the very run in
the folder or refuses, naming the file and what differs.
"""

from __future__ import annotations

import csv
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from pipeline.common.fsutil import write_csv_atomic
from pipeline.model.checkpoints import CHECKPOINT_CONFIG, CHECKPOINT_TRAIN_STATE, CheckpointError


def resumable(last: Path, cfg: Any, model_cfg: Any, extra: dict) -> tuple[Any, dict]:
    """The model and training state in `last/`, checked to continue this very run exactly; any
    inconsistency is refused with the file and what differs (a silent fresh start would lose the run)."""
    from pipeline.model.checkpoints import load_train_state, real_folder
    from pipeline.model.network import load_checkpoint

    last = real_folder(last)
    model, saved = load_checkpoint(last)
    state = load_train_state(last)
    config = last / CHECKPOINT_CONFIG
    stored = type(cfg).from_dict(saved.get("train", {}))
    if stored != cfg:
        differ = ", ".join(f"{f.name} {getattr(stored, f.name)!r} (now {getattr(cfg, f.name)!r})"
                           for f in fields(cfg) if f.compare and getattr(stored, f.name) != getattr(cfg, f.name))
        raise CheckpointError(config, f"holds a run with other training settings: {differ}; resume with its "
                              "settings or use another run folder")
    if model.cfg != model_cfg or saved.get("normalization") != extra["normalization"]:
        raise CheckpointError(config, "model configuration or normalisation differs from what this dataset gives "
                              "(the dataset changed since the run started); use another run folder")
    if saved.get("epoch") != int(state["epoch"]):
        raise CheckpointError(last / CHECKPOINT_TRAIN_STATE, f"training state of epoch {int(state['epoch'])} but "
                              f"weights of epoch {saved.get('epoch')} ({config}): a save was interrupted; "
                              "remove the run folder to start again")
    return model, state


def save_epoch(run_dir: Path, model: Any, optimizer: Any, scheduler: Any, extra: dict, history: list[dict],
                best_val: float, *, final: bool) -> float:
    """Checkpoints of the epoch just finished (`history[-1]`): `best` when the valid loss improved, then
    always `last` with the training state (optimiser, scheduler, RNG, log rows), each published as one
    atomic unit; then log.csv -> the best valid loss so far.

    `best` is switched before `last`: a kill in between resumes from the previous `last`, redoes the
    epoch and publishes the same `best` again, so the two never disagree about the best loss."""
    import torch

    from pipeline.model.network import save_checkpoint

    epoch, val_loss = history[-1]["epoch"], history[-1]["valid_loss"]
    info = {**extra, "epoch": epoch, "valid_loss": val_loss}
    if val_loss < best_val or (math.isnan(val_loss) and final):
        best_val = val_loss if not math.isnan(val_loss) else best_val
        save_checkpoint(model, run_dir / "best", info)
    state = {"epoch": epoch, "best_val": best_val, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "history": history}
    save_checkpoint(model, run_dir / "last", info, train_state=state)
    write_log(run_dir / "log.csv", history)
    return best_val


def write_log(path: Path, rows: list[dict]) -> None:
    """log.csv; rows of earlier versions (resumed runs) leave the columns they lack empty."""
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        write_csv_atomic(path, [{key: row.get(key, "") for key in columns} for row in rows], columns)


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]
