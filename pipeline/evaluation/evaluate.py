"""Evaluate listener-head generators the way the paper's Table I does (paper III-D and V).

For every test sample (a segment's first `context_frames + eval_frames` frames, all valid) each
trained checkpoint generates the listener's head autoregressively after the ground-truth context,
and three baselines answer too: Random (a random training clip), Mirror (the speaker's own motion)
and Delay Mirror (the speaker delayed by the lag that maximises the speaker -> listener angular
velocity cross-correlation on the training split). All metrics use the head angles (pitch, yaw,
roll, degrees) of the evaluated frames only; their conventions are in `pipeline.evaluation.metrics` and are
settings here, recorded in results.json. Seeded: the same checkpoints, data and config give the
same numbers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pipeline.evaluation.metrics as metrics
from pipeline.common.errors import InputError
from pipeline.dataset.normalization import Normalization
from pipeline.evaluation import baselines
from pipeline.evaluation.config import EvalConfig
from schemas.conventions import HEAD_FPS

log = logging.getLogger(__name__)

BASELINES = ("Random", "Mirror", "Delay Mirror")
ANGLES = ("pitch", "yaw", "roll")


# ---------------------------------------------------------------------------------------------------------
# data


@dataclass
class HeadClips:
    """Raw (unnormalised) head features of whole segments, one [T_i, D] array per segment."""

    segment_ids: list[str]
    listener: list[np.ndarray]
    speaker: list[np.ndarray]


def _open(dataset_dir: Path, split: str, ssl: str | None = None, *, speech: bool = False):
    """Raw (unnormalised) numpy view of a split; heads only unless the speech is needed."""
    from pipeline.dataset.loader import LHGDataset

    return LHGDataset(dataset_dir, split, normalize=False, as_torch=False, ssl=ssl, speech=speech)


def valid_clips(dataset_dir: Path, split: str) -> HeadClips:
    """Segments of a split whose listener and speaker frames are all valid (baselines, calibration)."""
    data = _open(dataset_dir, split)
    clips = HeadClips([], [], [])
    for i in range(len(data)):
        item = data[i]
        if item["listener_valid"].all() and item["speaker_valid"].all():
            clips.segment_ids.append(item["segment_id"])
            clips.listener.append(item["listener_head"])
            clips.speaker.append(item["speaker_head"])
    return clips


def select_samples(dataset_dir: Path, cfg: EvalConfig) -> tuple[list[int], dict]:
    """Positions (in the split) of the evaluation samples: segments long enough for context + eval frames
    whose first frames are all valid; a seeded draw of `n_samples` when there are more."""
    data = _open(dataset_dir, cfg.split)
    need = cfg.context_frames + cfg.eval_frames
    long_enough = [i for i in range(len(data)) if int(data.segments.loc[i, "n_frames"]) >= need]
    usable = []
    for i in long_enough:
        item = data[i]
        if item["listener_valid"][:need].all() and item["speaker_valid"][:need].all():
            usable.append(i)
    if not usable:
        raise InputError(str(dataset_dir), f"no {cfg.split} segment has {need} valid frames "
                         f"({cfg.context_frames} context + {cfg.eval_frames} evaluated); "
                         f"{len(data)} segments, {len(long_enough)} long enough")
    if len(usable) > cfg.n_samples:
        rng = np.random.default_rng(cfg.seed)
        usable = sorted(rng.choice(usable, size=cfg.n_samples, replace=False).tolist())
    info = {"split_segments": len(data), "long_enough": len(long_enough), "used": len(usable),
            "frames_per_sample": need}
    return usable, info


def load_sample_heads(dataset_dir: Path, cfg: EvalConfig, positions: list[int]) -> tuple[list[str], np.ndarray,
                                                                                         np.ndarray]:
    """-> (segment ids, listener [N, C+E, D], speaker [N, C+E, D]), raw units."""
    data = _open(dataset_dir, cfg.split)
    need = cfg.context_frames + cfg.eval_frames
    items = [data[i] for i in positions]
    return ([it["segment_id"] for it in items], np.stack([it["listener_head"][:need] for it in items]),
            np.stack([it["speaker_head"][:need] for it in items]))


# ---------------------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_folder(path: str | Path) -> Path:
    """A checkpoint folder (config.json + model.safetensors), or a training run folder (its `best/`)."""
    from pipeline.model.network import CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS

    path = Path(path)
    for folder in (path, path / "best"):
        if (folder / CHECKPOINT_CONFIG).is_file() and (folder / CHECKPOINT_WEIGHTS).is_file():
            return folder
    raise InputError(str(path), f"not a checkpoint: expected {CHECKPOINT_CONFIG} and {CHECKPOINT_WEIGHTS} "
                     "here or in best/ (a TrainLHG run folder)")


def _comparable(spec: dict | None) -> dict | None:
    return None if spec is None else {k: v for k, v in spec.items() if k != "chunking_check"}


def matching_ssl_set(dataset_dir: Path, features: dict, where: str) -> str | None:
    """The dataset's SSL feature set equal to the one the checkpoint was trained on (None for FBank)."""
    if features.get("speech", "fbank") == "fbank":
        return None
    from pipeline.dataset.loader import LHGDataset

    wanted = _comparable(features.get("ssl"))
    sets = LHGDataset.available_ssl(dataset_dir)
    for name, spec in sorted(sets.items()):
        if _comparable(spec) == wanted:
            return name
    raise InputError(where, f"trained on SSL features {wanted.get('model') if wanted else '?'} "
                     f"({wanted.get('mode') if wanted else '?'} mode, weights "
                     f"{(wanted or {}).get('weights_sha256', '')[:12]}); the dataset {dataset_dir} has "
                     f"{sorted(sets) or 'none'}: build it with BuildSplits --ssl-models <that checkpoint> "
                     "--ssl-causal <that mode>")


def generate_for_checkpoint(folder: Path, dataset_dir: Path, cfg: EvalConfig, positions: list[int],
                            head_columns: list[str]) -> tuple[np.ndarray, dict]:
    """Streaming generation for every sample -> (listener [N, C+E, D] raw units, checkpoint info)."""
    import torch

    from pipeline.common.logs import progress
    from pipeline.common.runtime import resolve_device
    from pipeline.model.network import generate, load_checkpoint

    device = resolve_device(cfg.device)
    model, extra = load_checkpoint(folder, map_location=str(device))
    features = extra.get("features", {})
    trained_cols = features.get("head_columns", head_columns)
    if list(trained_cols) != list(head_columns):
        raise InputError(str(folder), f"trained on head columns {trained_cols}, the dataset has {head_columns}")
    ssl_set = matching_ssl_set(dataset_dir, features, str(folder))
    layers = features.get("ssl_layers") or None
    data = _open(dataset_dir, cfg.split, ssl=ssl_set, speech=ssl_set is None)
    if layers:
        data.ssl_layers = layers
    norm = Normalization.from_dict(extra["normalization"])
    need = cfg.context_frames + cfg.eval_frames
    outputs = []
    started = time.perf_counter()
    bar = progress(total=len(positions), desc=f"generating ({folder.name})", unit="sample")
    for b in range(0, len(positions), cfg.batch_size):
        items = [data[i] for i in positions[b:b + cfg.batch_size]]
        speaker = np.stack([norm.head.apply(it["speaker_head"][:need]) for it in items])
        listener = np.stack([norm.head.apply(it["listener_head"][:cfg.context_frames]) for it in items])
        if ssl_set is None:
            speech = np.stack([norm.speech_fbank.apply(it["speech"][:need]) for it in items])
        else:
            speech = np.stack([it["ssl"][:need] for it in items])
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)  # noqa: E731
        out = generate(model, as_t(speech), as_t(speaker), as_t(listener), context_frames=cfg.context_frames,
                       advance=cfg.advance)
        outputs.append(norm.head.undo(out.float().cpu().numpy()))
        bar.update(len(items))
    bar.close()
    seconds = time.perf_counter() - started
    info = {"checkpoint": str(folder.resolve()), "arch": model.cfg.arch, "speech": model.cfg.speech,
            "ssl_set": ssl_set, "epoch": extra.get("epoch"), "valid_loss": extra.get("valid_loss"),
            "generation_s": round(seconds, 3),
            "rtf": round(seconds / (len(positions) * need / HEAD_FPS), 5)}
    if model.cfg.speech == "ssl_wa":
        info["layer_weights"] = [round(float(w), 5) for w in model.layer_weights().detach().cpu()]
    return np.concatenate(outputs).astype(np.float64), info


# ---------------------------------------------------------------------------------------------------------
# metrics for one method


def method_metrics(gen: np.ndarray, gt: np.ndarray, speaker: np.ndarray, gt_active: np.ndarray,
                   centers: np.ndarray, detector: metrics.ActivityDetector, cfg: EvalConfig,
                   vertical: int) -> dict[str, float]:
    """Table I columns for one method; arrays are the evaluated frames' angles [N, E, 3] in degrees."""
    active = metrics.detect_activity(gen[..., vertical], detector)
    scores = metrics.activity_scores(active, gt_active)
    return {
        "L2": metrics.l2_error(gen, gt, window=cfg.long_window, convention=cfg.l2_convention),
        "FID": metrics.fd(gen, gt, window=cfg.short_window, mode=cfg.fd_mode),
        "Var": metrics.variation(gen, window=cfg.long_window),
        "SI": metrics.style_index(gen, centers, window=cfg.short_window, mode=cfg.si_mode),
        "P-FID": metrics.paired_fd(gen, gt, speaker, window=cfg.short_window, mode=cfg.fd_mode),
        "PCC": metrics.pcc(gen, gt, mode=cfg.pcc_mode),
        "F1": scores["f1"], "Pre": scores["precision"], "Rec": scores["recall"], "Acc": scores["accuracy"],
        "Act": scores["act"],
    }


def _clean(value: Any) -> Any:
    """JSON-ready copy: arrays to lists, NaN/inf to null, floats rounded to 6 decimals."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class TrainReferences:
    """What the train split fixes for an evaluation: the activity detector, the speaker -> listener
    cross-correlation and the Delay Mirror lag chosen on it, and the clips the Random baseline draws."""

    listener: list[np.ndarray]  # fully valid train listener clips, angles only (degrees)
    detector: Any
    max_lag: int
    lags: np.ndarray
    curve: np.ndarray
    delay_lag: int


def train_references(dataset_dir: Path, cfg: EvalConfig, angle_idx: list[int]) -> TrainReferences:
    train = valid_clips(dataset_dir, "train")
    if not train.listener:
        raise InputError(str(dataset_dir), "the train split has no fully valid segment (baselines need one)")
    train_lis = [x[:, angle_idx].astype(np.float64) for x in train.listener]
    train_spk = [x[:, angle_idx].astype(np.float64) for x in train.speaker]
    vertical = ANGLES.index(cfg.activity_channel)
    detector = metrics.calibrate_activity([x[:, vertical] for x in train_lis], k_high=cfg.activity_k_high,
                                          k_low=cfg.activity_k_low)
    max_lag = int(round(cfg.xcorr_max_lag_s * HEAD_FPS))
    lags, train_curve = metrics.pooled_cross_correlation(train_spk, train_lis, max_lag=max_lag)
    positive = (lags >= 1) & np.isfinite(train_curve)
    if not positive.any():
        raise InputError(str(dataset_dir), "speaker -> listener cross-correlation undefined on the train split")
    delay_lag = int(lags[positive][int(np.argmax(train_curve[positive]))])
    return TrainReferences(train_lis, detector, max_lag, lags, train_curve, delay_lag)


def metric_tables(outputs: dict[str, np.ndarray], gt: np.ndarray, speaker: np.ndarray, detector: Any,
                  cfg: EvalConfig, max_lag: int) -> tuple[dict[str, dict], dict[str, Any]]:
    """Table I rows (ground truth first, then every method) and speaker -> listener cross-correlation
    curves within the evaluated windows."""
    vertical = ANGLES.index(cfg.activity_channel)
    e = gt.shape[1]
    centers = metrics.fit_clusters(gt, k=cfg.si_clusters, seed=cfg.seed)
    gt_active = metrics.detect_activity(gt[..., vertical], detector)
    table = {"Ground Truth": {"Var": metrics.variation(gt, window=cfg.long_window),
                              "SI": metrics.style_index(gt, centers, window=cfg.short_window, mode=cfg.si_mode),
                              "Act": float(gt_active.mean())}}
    for name, gen in outputs.items():
        table[name] = method_metrics(gen, gt, speaker, gt_active, centers, detector, cfg, vertical)
    xmax = min(max_lag, e - 2)
    xcorr: dict[str, Any] = {"lags_frames": list(range(-xmax, xmax + 1))}
    xcorr["Ground Truth"] = metrics.cross_correlation(speaker, gt, max_lag=xmax)[1]
    for name, gen in outputs.items():
        xcorr[name] = metrics.cross_correlation(speaker, gen, max_lag=xmax)[1]
    return table, xcorr


def evaluate(dataset_dir: str | Path, checkpoints: dict[str, str | Path], out_dir: str | Path,
             cfg: EvalConfig = EvalConfig(), *, extra_info: dict | None = None) -> dict:
    """Evaluate named checkpoints and the baselines; write the report into `out_dir`; return results."""
    from pipeline.evaluation.report import write_report

    cfg.validate()
    dataset_dir = Path(dataset_dir)
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    head_columns = list(manifest["head_columns"])
    missing = [c for c in ANGLES if c not in head_columns]
    if missing:
        raise InputError(str(dataset_dir / "manifest.json"), f"head columns lack {missing}")
    angle_idx = [head_columns.index(c) for c in ANGLES]
    vertical = ANGLES.index(cfg.activity_channel)
    c, e = cfg.context_frames, cfg.eval_frames

    positions, sample_info = select_samples(dataset_dir, cfg)
    ids, listener_full, speaker_full = load_sample_heads(dataset_dir, cfg, positions)
    gt = listener_full[:, c:c + e, angle_idx].astype(np.float64)
    speaker = speaker_full[:, c:c + e, angle_idx].astype(np.float64)

    ref = train_references(dataset_dir, cfg, angle_idx)
    outputs: dict[str, np.ndarray] = {}
    rng_pool = [x for x in ref.listener if len(x) >= e]
    outputs["Random"] = baselines.random_clips(rng_pool, len(ids), e, seed=cfg.seed)
    outputs["Mirror"] = baselines.mirror(speaker)
    spk_all = speaker_full[..., angle_idx].astype(np.float64)
    outputs["Delay Mirror"] = np.stack([baselines.delay_mirror(s, c, e, ref.delay_lag) for s in spk_all])
    models_info = {}
    for name, path in checkpoints.items():
        if name in outputs or name == "Ground Truth":
            raise ValueError(f"method name {name!r} is reserved; name the checkpoint differently")
        folder = checkpoint_folder(path)
        log.info("%s: generating %d samples from %s", name, len(positions), folder)
        generated, info = generate_for_checkpoint(folder, dataset_dir, cfg, positions, head_columns)
        outputs[name] = generated[:, c:c + e, angle_idx]
        models_info[name] = info

    table, xcorr = metric_tables(outputs, gt, speaker, ref.detector, cfg, ref.max_lag)
    results = {
        "config": cfg.to_dict(),
        "dataset": {"dir": str(dataset_dir.resolve()), "build_id": manifest.get("build_id"),
                    "head_columns": head_columns},
        "samples": {**sample_info, "segment_ids": ids},
        "angles": list(ANGLES),
        "activity_detector": {**ref.detector.to_dict(), "channel": cfg.activity_channel, "units": "deg/s",
                              "calibrated_on": f"{len(ref.listener)} fully valid train listener segments"},
        "delay_mirror": {"lag_frames": ref.delay_lag, "lag_s": ref.delay_lag / HEAD_FPS,
                         "train_curve": list(ref.curve), "lags_frames": ref.lags.tolist()},
        "models": models_info,
        "methods": list(table),  # row order (JSON objects are written with sorted keys)
        "table": table,
        "cross_correlation": xcorr,
        **(extra_info or {}),
    }
    results = _clean(results)
    figures = {"speaker": speaker, "Ground Truth": gt, **outputs}
    write_report(Path(out_dir), results, figures, vertical=vertical)
    log.info("evaluation report (%d methods, %d samples) in %s", len(outputs), len(ids), out_dir)
    return results
