"""Both conventions wherever the literature differs, side by side, and the paper's Table I arithmetic.

Table I is computed with one set of conventions (EvalConfig); this module recomputes the columns whose
definition varies between papers and public code under every alternative, so a reader can compare our
numbers with any of them: Var pooled or per window, angles raw or centred per sequence, SI pooled or
per window, the activity detector on pitch or on vertical head position (y). It also checks the
identity an independent baseline obeys under MSE L2, L2 ≈ Var(method) + Var(GT), which the paper's
numbers satisfy (Random 35.15 ≈ 18.77 + 15.87).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import pipeline.evaluation.metrics as metrics
from pipeline.evaluation.config import EvalConfig

VAR_VARIANTS = [(mode, centering) for mode in ("pooled", "per_window") for centering in ("raw", "per_sequence")]


@dataclass
class Evaluated:
    """Evaluated frames [N, E, C] of every sample, raw units; channels = pitch, yaw, roll, then y if stored."""

    channels: list[str]
    gt: np.ndarray
    speaker: np.ndarray
    outputs: dict[str, np.ndarray]

    def angles(self, arr: np.ndarray, centering: str) -> np.ndarray:
        return metrics.center_sequences(arr[..., :3], mode=centering)

    def signal(self, arr: np.ndarray, channel: str) -> np.ndarray:
        return arr[..., self.channels.index(channel)]


def _label(mode: str, centering: str) -> str:
    return f"Var {mode.replace('_', '-')}, {'centred' if centering == 'per_sequence' else 'raw'}"


def alternatives(ev: Evaluated, detectors: dict, cfg: EvalConfig) -> dict:
    """{"columns": [...], "rows": {method: {column: value}}, "arithmetic": {method: {variant: ratio}}}."""
    rows: dict[str, dict[str, float]] = {}
    centers = {c: metrics.fit_clusters(ev.angles(ev.gt, c), k=cfg.si_clusters, seed=cfg.seed)
               for c in ("raw", "per_sequence")}
    gt_active = {ch: metrics.detect_activity(ev.signal(ev.gt, ch), det) for ch, det in detectors.items()}
    for name, arr in {"Ground Truth": ev.gt, **ev.outputs}.items():
        row: dict[str, float] = {}
        for mode, centering in VAR_VARIANTS:
            row[_label(mode, centering)] = metrics.variation(ev.angles(arr, centering), window=cfg.long_window,
                                                             mode=mode)
        for centering in ("raw", "per_sequence"):
            a = ev.angles(arr, centering)
            tag = "centred" if centering == "per_sequence" else "raw"
            if name != "Ground Truth":
                row[f"L2 {tag}"] = metrics.l2_error(a, ev.angles(ev.gt, centering), window=cfg.long_window,
                                                    convention=cfg.l2_convention)
            for si_mode in ("pooled", "per_window"):
                row[f"SI {si_mode.replace('_', '-')}, {tag}"] = metrics.style_index(
                    a, centers[centering], window=cfg.short_window, mode=si_mode)
        for ch, det in detectors.items():
            active = metrics.detect_activity(ev.signal(arr, ch), det)
            scores = metrics.activity_scores(active, gt_active[ch])
            if name != "Ground Truth":
                row[f"F1 ({ch})"] = scores["f1"]
            row[f"Act ({ch})"] = scores["act"]
        rows[name] = row
    columns = list(dict.fromkeys(col for row in rows.values() for col in row))
    return {"columns": columns, "rows": rows, "arithmetic": arithmetic(rows)}


def arithmetic(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """L2 / (Var(method) + Var(GT)) per method and Var convention (L2 raw or centred to match): 1 means
    the method behaves like an independent draw with the ground truth's mean under that convention."""
    gt = rows["Ground Truth"]
    out: dict[str, dict[str, float]] = {}
    for name, row in rows.items():
        if name == "Ground Truth":
            continue
        out[name] = {}
        for mode, centering in VAR_VARIANTS:
            label = _label(mode, centering)
            l2 = row["L2 centred" if centering == "per_sequence" else "L2 raw"]
            denom = row[label] + gt[label]
            out[name][label] = l2 / denom if denom > 0 else float("nan")
    return out
