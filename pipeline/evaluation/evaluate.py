"""Evaluate listener-head generators the way the paper's Table I does (paper III-D and V).

Every test sample is a window of `context_frames + eval_frames` frames, all valid, taken from a
test listener stretch (`pipeline.evaluation.windows`: several per long stretch). Each trained
checkpoint generates the listener's head autoregressively after the ground-truth context, and three
baselines answer too: Random (a random training clip), Mirror (the speaker's own motion) and Delay
Mirror (the speaker delayed by the lag that maximises the speaker -> listener angular velocity
cross-correlation on the training split). The windows are read once for all of them
(`pipeline.evaluation.inputs`). Metrics use the evaluated frames only; their conventions
are settings (EvalConfig), recorded in results.json, and every alternative convention is reported
beside them (`pipeline.evaluation.conventions`). Seeded: the same checkpoints, data and config give
the same numbers (the measured run times aside). A model with NaN/inf weights or generated frames is
reported (`non_finite`, metrics NaN) rather than scored, and the others are evaluated as usual.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pipeline.evaluation.metrics as metrics
from pipeline.common.errors import InputError
from pipeline.dataset.manifest import MANIFEST_FILE, read_manifest, require_intact
from pipeline.evaluation import baselines
from pipeline.evaluation.config import EvalConfig
from pipeline.evaluation.conventions import Evaluated, alternatives
from pipeline.evaluation.generation import checkpoint_folder, generate_all, generator_info, load_generator
from pipeline.evaluation.report import COLUMNS
from pipeline.evaluation.windows import Stretch, Window, eligible_windows, valid_runs
from pipeline.model.checkpoints import NonFiniteWeightsError
from schemas.conventions import HEAD_FPS

log = logging.getLogger(__name__)

BASELINES = ("Random", "Mirror", "Delay Mirror")
ANGLES = ("pitch", "yaw", "roll")
ACTIVITY_CHANNELS = ("pitch", "y")

__all__ = ["EvalConfig", "evaluate", "select_windows"]


# ---------------------------------------------------------------------------------------------------------
# data


@dataclass
class HeadClips:
    """Raw (unnormalised) head features of whole segments, one [T_i, D] array per segment."""

    segment_ids: list[str]
    listener: list[np.ndarray]
    speaker: list[np.ndarray]


def _open(dataset_dir: Path, split: str):
    """Raw (unnormalised) heads-only numpy view of a split."""
    from pipeline.dataset.loader import LHGDataset

    return LHGDataset(dataset_dir, split, normalize=False, as_torch=False, speech=False)


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


def select_windows(dataset_dir: Path, cfg: EvalConfig) -> tuple[list[Stretch], list[Window], dict]:
    """Evaluation windows: every window of context + eval frames, all valid, in the split's listener
    stretches; a seeded draw of `n_samples` (kept in stretch order) when there are more."""
    data = _open(dataset_dir, cfg.split)
    need = cfg.window_frames
    stretches, eligible = eligible_windows(data, need, cfg.stride_frames)
    long_enough = [s for s in stretches if s.n_frames >= need]
    if not eligible:
        longest = max((s.n_frames for s in stretches), default=0)
        raise InputError(str(dataset_dir), f"no {cfg.split} listener stretch has {need} consecutive valid frames "
                         f"({cfg.context_frames} context + {cfg.eval_frames} evaluated); {len(data)} segments in "
                         f"{len(stretches)} stretches, {len(long_enough)} long enough, the longest {longest} frames")
    chosen = eligible
    if len(eligible) > cfg.n_samples:
        rng = np.random.default_rng(cfg.seed)
        chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=cfg.n_samples, replace=False))]
    info = {"split_segments": len(data), "stretches": len(stretches), "long_enough": len(long_enough),
            "eligible": len(eligible), "used": len(chosen), "frames_per_sample": need,
            "stride_frames": cfg.stride_frames,
            "stretch_source": "stretch_id" if "stretch_id" in data.segments.columns else "adjacent segments"}
    return stretches, chosen, info


# ---------------------------------------------------------------------------------------------------------
# metrics


def method_metrics(gen: np.ndarray, ev: Evaluated, gt_active: np.ndarray, centers: np.ndarray, detector: Any,
                   cfg: EvalConfig) -> dict[str, float]:
    """Table I columns for one method (`gen` = its evaluated frames [N, E, C], raw units)."""
    active = metrics.detect_activity(ev.signal(gen, cfg.activity_channel), detector)
    scores = metrics.activity_scores(active, gt_active)
    g, r = ev.angles(gen, cfg.angle_centering), ev.angles(ev.gt, cfg.angle_centering)
    s = ev.angles(ev.speaker, cfg.angle_centering)
    return {
        "L2": metrics.l2_error(g, r, window=cfg.long_window, convention=cfg.l2_convention),
        "FID": metrics.fd(g, r, window=cfg.short_window, mode=cfg.fd_mode),
        "Var": metrics.variation(g, window=cfg.long_window, mode=cfg.var_mode),
        "SI": metrics.style_index(g, centers, window=cfg.short_window, mode=cfg.si_mode),
        "P-FID": metrics.paired_fd(g, r, s, window=cfg.short_window, mode=cfg.fd_mode),
        "PCC": metrics.pcc(gen[..., :3], ev.gt[..., :3], mode=cfg.pcc_mode),
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
    """What the train split fixes for an evaluation: the activity detectors (per signal), the speaker ->
    listener cross-correlation and the Delay Mirror lag chosen on it, and the Random baseline's clips."""

    listener: list[np.ndarray]  # fully valid train listener segments, metric channels (raw units)
    random_pool: list[np.ndarray]  # all-valid train listener runs (stretches) long enough for a window
    detectors: dict[str, Any]
    max_lag: int
    lags: np.ndarray
    curve: np.ndarray
    delay_lag: int


def train_references(dataset_dir: Path, cfg: EvalConfig, channel_idx: list[int],
                     channels: list[str]) -> TrainReferences:
    train = valid_clips(dataset_dir, "train")
    if not train.listener:
        raise InputError(str(dataset_dir), "the train split has no fully valid segment (baselines need one)")
    train_lis = [x[:, channel_idx].astype(np.float64) for x in train.listener]
    train_spk = [x[:, channel_idx[:3]].astype(np.float64) for x in train.speaker]
    detectors = {ch: metrics.calibrate_activity([x[:, channels.index(ch)] for x in train_lis],
                                                k_high=cfg.activity_k_high, k_low=cfg.activity_k_low)
                 for ch in ACTIVITY_CHANNELS if ch in channels}
    max_lag = int(round(cfg.xcorr_max_lag_s * HEAD_FPS))
    lags, train_curve = metrics.pooled_cross_correlation(train_spk, [x[:, :3] for x in train_lis], max_lag=max_lag)
    positive = (lags >= 1) & np.isfinite(train_curve)
    if not positive.any():
        raise InputError(str(dataset_dir), "speaker -> listener cross-correlation undefined on the train split")
    delay_lag = int(lags[positive][int(np.argmax(train_curve[positive]))])
    pool = [x[:, channel_idx].astype(np.float64) for x in valid_runs(_open(dataset_dir, "train"), cfg.eval_frames)]
    if not pool:
        raise InputError(str(dataset_dir), f"no train listener stretch has {cfg.eval_frames} valid frames in a row "
                         "(the Random baseline draws clips of that length)")
    return TrainReferences(train_lis, pool, detectors, max_lag, lags, train_curve, delay_lag)


def metric_tables(ev: Evaluated, detectors: dict[str, Any], cfg: EvalConfig,
                  max_lag: int) -> tuple[dict[str, dict], dict[str, Any]]:
    """Table I rows (ground truth first, then every method) and speaker -> listener cross-correlation
    curves within the evaluated windows."""
    detector = detectors[cfg.activity_channel]
    gt_angles = ev.angles(ev.gt, cfg.angle_centering)
    centers = metrics.fit_clusters(gt_angles, k=cfg.si_clusters, seed=cfg.seed)
    gt_active = metrics.detect_activity(ev.signal(ev.gt, cfg.activity_channel), detector)
    table = {"Ground Truth": {
        "Var": metrics.variation(gt_angles, window=cfg.long_window, mode=cfg.var_mode),
        "SI": metrics.style_index(gt_angles, centers, window=cfg.short_window, mode=cfg.si_mode),
        "Act": float(gt_active.mean())}}
    for name, gen in ev.outputs.items():
        table[name] = method_metrics(gen, ev, gt_active, centers, detector, cfg)
    xmax = min(max_lag, ev.gt.shape[1] - 2)
    speaker = ev.speaker[..., :3]
    xcorr: dict[str, Any] = {"lags_frames": list(range(-xmax, xmax + 1))}
    xcorr["Ground Truth"] = metrics.cross_correlation(speaker, ev.gt[..., :3], max_lag=xmax)[1]
    for name, gen in ev.outputs.items():
        xcorr[name] = metrics.cross_correlation(speaker, gen[..., :3], max_lag=xmax)[1]
    return table, xcorr


# ---------------------------------------------------------------------------------------------------------
# the whole evaluation


def _metric_channels(head_columns: list[str], cfg: EvalConfig, where: str) -> list[str]:
    missing = [c for c in ANGLES if c not in head_columns]
    if cfg.activity_channel not in head_columns:
        missing.append(cfg.activity_channel)
    if missing:
        raise InputError(where, f"head columns lack {missing}")
    return [*ANGLES, *(["y"] if "y" in head_columns else [])]


def _baselines(ref: TrainReferences, listener_n: int, speaker_full: np.ndarray, cfg: EvalConfig) -> dict:
    c, e = cfg.context_frames, cfg.eval_frames
    return {"Random": baselines.random_clips(ref.random_pool, listener_n, e, seed=cfg.seed),
            "Mirror": baselines.mirror(speaker_full[:, c:c + e]),
            "Delay Mirror": np.stack([baselines.delay_mirror(s, c, e, ref.delay_lag) for s in speaker_full])}


def _load_generators(checkpoints: dict[str, str | Path], dataset_dir: Path, cfg: EvalConfig,
                     head_columns: list[str], device) -> tuple[dict, dict]:
    """Every checkpoint loaded -> ({name: Generator}, {name: info of a model with NaN/inf weights}).

    Loaded onto the device, or into host memory when `cfg.device_models` keeps fewer there at once."""
    generators, refused = {}, {}
    staged = 0 < cfg.device_models < len(checkpoints)
    for name, path in checkpoints.items():
        if name in BASELINES or name == "Ground Truth":
            raise ValueError(f"method name {name!r} is reserved; name the checkpoint differently")
        folder = checkpoint_folder(path)
        try:
            generators[name] = load_generator(folder, dataset_dir, head_columns, "cpu" if staged else str(device))
        except NonFiniteWeightsError as err:
            refused[name] = _weights_info(folder, str(err))
            log.error("%s: %s; no window generated, its metrics are reported as NaN", name, err)
            continue
        log.info("%s: %s loaded", name, folder)
    return generators, refused


def _generate_models(checkpoints: dict[str, str | Path], dataset_dir: Path, cfg: EvalConfig,
                     stretches: list[Stretch], windows: list[Window],
                     head_columns: list[str]) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """One pass over the windows for every checkpoint -> (listener [N, C+E, D], speaker [N, C+E, D], {name:
    generated listener [N, C+E, D]}, {name: info}), raw units, all head columns.

    A model with NaN/inf weights, or whose generated frames hold NaN/inf in any window, gets no output
    here (its metrics are reported as NaN) and an info entry `non_finite` naming the checkpoint and the
    windows; the other models are evaluated as usual."""
    from pipeline.common.runtime import resolve_device

    device = resolve_device(cfg.device)
    generators, refused = _load_generators(checkpoints, dataset_dir, cfg, head_columns, device)
    listener_full, speaker_full, generated = generate_all(generators, dataset_dir, cfg, stretches, windows, device)
    full: dict[str, np.ndarray] = {}
    models_info: dict[str, dict] = {}
    for name in checkpoints:
        if name in refused:
            models_info[name] = refused[name]
            continue
        arr, info = generated[name], generator_info(generators[name], len(windows), cfg)
        bad = ~np.isfinite(arr[:, cfg.context_frames:]).all(axis=(1, 2))
        if bad.any():
            ids = [w.window_id for w, b in zip(windows, bad, strict=True) if b]
            info["non_finite"] = {"source": "output", "windows": ids, "of_windows": len(windows),
                                  "detail": f"generated NaN/inf head frames in {len(ids)} of {len(windows)} "
                                            f"windows (first: {ids[0]})"}
            log.error("%s (%s): %s; its metrics are reported as NaN", name, generators[name].folder,
                      info["non_finite"]["detail"])
        else:
            full[name] = arr
        models_info[name] = info
    return listener_full, speaker_full, full, models_info


def _weights_info(folder: Path, detail: str) -> dict:
    """Model info for a checkpoint whose weights are not finite (nothing was generated)."""
    from pipeline.model.checkpoints import read_config

    meta = read_config(folder)
    return {"checkpoint": str(folder.resolve()), "arch": meta["model"].get("arch"),
            "speech": meta["model"].get("speech"), "epoch": meta.get("extra", {}).get("epoch"),
            "non_finite": {"source": "weights", "windows": [], "detail": detail + "; no window generated"}}


def _with_non_finite_rows(table: dict, conventions: dict, models_info: dict) -> tuple[dict, dict]:
    """Table I and the conventions table with a NaN row for each model without finite output, models in
    the order given (Ground Truth and the baselines first)."""
    nan_row = {col: math.nan for col, _ in COLUMNS}
    ordered = {k: v for k, v in table.items() if k not in models_info}
    ordered.update({name: table.get(name, nan_row) for name in models_info})
    conv = {**conventions, "rows": dict(conventions["rows"]), "arithmetic": dict(conventions["arithmetic"])}
    variants = list(next(iter(conv["arithmetic"].values()), {}))
    for name in models_info:
        conv["rows"].setdefault(name, dict.fromkeys(conv["columns"], math.nan))
        conv["arithmetic"].setdefault(name, dict.fromkeys(variants, math.nan))
    return ordered, conv


def evaluate(dataset_dir: str | Path, checkpoints: dict[str, str | Path], out_dir: str | Path,
             cfg: EvalConfig = EvalConfig(), *, extra_info: dict | None = None,
             corpus: str | Path | None = None) -> dict:
    """Evaluate named checkpoints and the baselines; write the report (and the side-by-side videos,
    with the speaker's audio from `corpus` when given) into `out_dir`; return the results."""
    from pipeline.evaluation.report import write_report
    from pipeline.evaluation.video import write_videos

    cfg.validate()
    dataset_dir = Path(dataset_dir)
    require_intact(dataset_dir, splits={"train", cfg.split})  # train: the references of FD, Random, detectors
    manifest = read_manifest(dataset_dir)
    head_columns = list(manifest["head_columns"])
    channels = _metric_channels(head_columns, cfg, str(dataset_dir / MANIFEST_FILE))
    channel_idx = [head_columns.index(ch) for ch in channels]
    c, e = cfg.context_frames, cfg.eval_frames

    stretches, windows, sample_info = select_windows(dataset_dir, cfg)
    ref = train_references(dataset_dir, cfg, channel_idx, channels)
    # the windows are read once, for the metrics, the baselines and every checkpoint
    listener_full, speaker_full, full, models_info = _generate_models(checkpoints, dataset_dir, cfg, stretches,
                                                                      windows, head_columns)
    outputs = _baselines(ref, len(windows), speaker_full[..., channel_idx].astype(np.float64), cfg)
    outputs.update({name: arr[:, c:c + e][..., channel_idx] for name, arr in full.items()})

    ev = Evaluated(channels, listener_full[:, c:c + e][..., channel_idx].astype(np.float64),
                   speaker_full[:, c:c + e][..., channel_idx].astype(np.float64), outputs)
    table, xcorr = metric_tables(ev, ref.detectors, cfg, ref.max_lag)
    table, conventions = _with_non_finite_rows(table, alternatives(ev, ref.detectors, cfg), models_info)
    results = {
        "config": cfg.to_dict(),
        "dataset": {"dir": str(dataset_dir.resolve()), "build_id": manifest.get("build_id"),
                    "head_columns": head_columns, "ssl_sets": _ssl_modes(manifest)},
        "samples": {**sample_info, "segment_ids": [w.segment_id for w in windows],
                    "window_ids": [w.window_id for w in windows], "start_s": [w.start_s for w in windows]},
        "angles": list(ANGLES),
        "activity_detector": {**ref.detectors[cfg.activity_channel].to_dict(), "channel": cfg.activity_channel,
                              "units": "deg/s" if cfg.activity_channel in ANGLES else "tile heights/s",
                              "calibrated_on": f"{len(ref.listener)} fully valid train listener segments"},
        "delay_mirror": {"lag_frames": ref.delay_lag, "lag_s": ref.delay_lag / HEAD_FPS,
                         "train_curve": list(ref.curve), "lags_frames": ref.lags.tolist()},
        "models": models_info,
        "methods": list(table),  # row order (JSON objects are written with sorted keys)
        "table": table,
        "conventions": conventions,
        "non_finite": {name: info["non_finite"] for name, info in models_info.items() if "non_finite" in info},
        "cross_correlation": xcorr,
        **(extra_info or {}),
    }
    results = _clean(results)
    figures = {"speaker": ev.speaker[..., :3], "Ground Truth": ev.gt[..., :3],
               **{k: v[..., :3] for k, v in outputs.items()}}
    vertical = ANGLES.index("pitch")
    picks = _most_moving(ev.gt[..., vertical], max(cfg.figure_samples, cfg.video_samples))
    results["videos"] = write_videos(Path(out_dir), picks[:cfg.video_samples], windows, stretches,
                                     head_columns, listener_full, speaker_full, full, outputs, cfg,
                                     corpus=corpus, dataset_dir=dataset_dir)
    write_report(Path(out_dir), results, figures, picks=picks[:cfg.figure_samples], vertical=vertical)
    log.info("evaluation report (%d methods, %d samples) in %s", len(outputs), len(windows), out_dir)
    return results


def _most_moving(vertical: np.ndarray, n: int) -> list[int]:
    """The `n` samples with the most ground-truth vertical motion (nods show best), most first."""
    return np.argsort(-vertical.std(axis=1), kind="stable")[:min(n, vertical.shape[0])].tolist()


def _ssl_modes(manifest: dict) -> dict[str, dict]:
    """Every SSL feature set of the dataset: model and extraction mode (causal variants differ)."""
    return {name: {"model_id": entry["spec"].get("model_id") or entry["spec"].get("model"),
                   "mode": entry["spec"].get("mode"),
                   "layers": entry["spec"].get("layers")}
            for name, entry in sorted(manifest.get("ssl", {}).items())}
