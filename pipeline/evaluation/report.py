"""The evaluation report: table.csv, report.md (laid out like the paper's Table I), results.json and
the two figures (speaker -> listener cross-correlation, paper Fig. 2; pitch trajectories, Fig. 3)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from pipeline.common.fsutil import atomic_path, write_json_atomic, write_text_atomic
from schemas.conventions import HEAD_FPS

# (column, goal): "min"/"max" = lower/higher is better; "gt" = closest to the ground-truth row is best
COLUMNS: list[tuple[str, str]] = [
    ("L2", "min"), ("FID", "min"), ("Var", "gt"), ("SI", "gt"), ("P-FID", "min"), ("PCC", "max"),
    ("F1", "max"), ("Pre", "max"), ("Rec", "max"), ("Acc", "max"), ("Act", "gt"),
]
ARROWS = {"min": " ↓", "max": " ↑", "gt": ""}
GROUND_TRUTH = "Ground Truth"


def best_per_column(table: dict[str, dict]) -> dict[str, str]:
    """Method holding the best value of each column (ties: first listed); the GT row never competes."""
    best = {}
    for col, goal in COLUMNS:
        target = table.get(GROUND_TRUTH, {}).get(col)
        scored = []
        for name, vals in table.items():
            value = vals.get(col)
            if name == GROUND_TRUTH or value is None or not math.isfinite(value):
                continue
            if goal == "gt":
                if target is None:
                    continue
                scored.append((abs(value - target), name))
            else:
                scored.append((value if goal == "min" else -value, name))
        if scored:
            best[col] = min(scored, key=lambda s: s[0])[1]
    return best


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def table_csv(results: dict) -> str:
    buf = io.StringIO()
    buf.write("method," + ",".join(col for col, _ in COLUMNS) + "\n")
    for name, vals in results["table"].items():
        cells = ["" if vals.get(col) is None else repr(float(vals[col])) for col, _ in COLUMNS]
        buf.write(f"\"{name}\"," + ",".join(cells) + "\n")
    return buf.getvalue()


def markdown_table(results: dict) -> str:
    best = best_per_column(results["table"])
    header = "| Method | " + " | ".join(col + ARROWS[goal] for col, goal in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    non_finite = results.get("non_finite") or {}
    for name, vals in results["table"].items():
        cells = []
        for col, _ in COLUMNS:
            text = _fmt(vals.get(col))
            cells.append(f"**{text}**" if best.get(col) == name else text)
        label = f"{name} (non-finite)" if name in non_finite else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _samples_line(results: dict) -> str:
    cfg, samples = results["config"], results["samples"]
    overlap = "non-overlapping" if samples["stride_frames"] >= samples["frames_per_sample"] else \
        f"overlapping (a window every {samples['stride_frames']} frames; overlapping windows are not independent)"
    return (f"{samples['used']} {cfg['split']} samples (of {samples['eligible']} eligible windows) of "
            f"{cfg['eval_frames']} frames ({cfg['eval_frames'] / HEAD_FPS:.2f} s) generated after "
            f"{cfg['context_frames']} frames ({cfg['context_frames'] / HEAD_FPS:.2f} s) of ground-truth context. "
            f"Windows are {overlap}, with every frame valid, from {samples['long_enough']} of "
            f"{samples['stretches']} listener stretches ({samples['stretch_source']}) long enough for "
            f"{samples['frames_per_sample']} frames; {samples['split_segments']} segments in the split. "
            f"Dataset build `{results['dataset']['build_id']}`.")


def conventions_lines(results: dict) -> list[str]:
    cfg, det, dm = results["config"], results["activity_detector"], results["delay_mirror"]
    centred = "centred per sequence (each sample's mean angle removed)" if cfg["angle_centering"] == \
        "per_sequence" else "raw (as measured, no centring)"
    return [
        f"- Angles {centred} for L2, FID, Var, SI and P-FID.",
        f"- L2 ({cfg['l2_convention']}) on {cfg['long_window']}-frame windows; Var {cfg['var_mode']} "
        f"(variance {'of all evaluated frames together' if cfg['var_mode'] == 'pooled' else 'within each window, mean over windows'}, "
        "mean over channels).",
        f"- FID and P-FID: Gaussian Fréchet distance, frames as samples, {cfg['fd_mode']}, "
        f"{cfg['short_window']}-frame windows; P-FID on [speaker, listener] per frame.",
        f"- SI: entropy (bits) of k-means cluster use, k = {cfg['si_clusters']} fitted on ground-truth frames "
        f"(seed {cfg['seed']}), {cfg['si_mode']} over {cfg['short_window']}-frame windows (max "
        f"{math.log2(cfg['si_clusters']):.2f}).",
        f"- PCC: Pearson correlation of generated vs ground-truth angular velocity, {cfg['pcc_mode']}.",
        f"- Activity detector on {det['channel']} velocity: high {det['high']:.3g} / low {det['low']:.3g} "
        f"{det['units']} (k = {cfg['activity_k_high']} / {cfg['activity_k_low']} robust SDs of "
        f"{det['calibrated_on']}), smoothing {det['smooth_frames']} frames, min run {det['min_frames']}, "
        f"bridged gaps {det['bridge_frames']}.",
        f"- Delay Mirror lag: {dm['lag_frames']} frames = {dm['lag_s']:.2f} s (the positive lag with the "
        "highest speaker -> listener angular-velocity cross-correlation on the train split).",
    ]


def alternatives_lines(results: dict) -> list[str]:
    """The columns whose convention differs in the literature, under every convention, and the paper's
    Table I identity L2 ≈ Var(method) + Var(GT)."""
    alt = results.get("conventions")
    if not alt:
        return []
    cols = alt["columns"]
    lines = ["## Every convention", "",
             "The same samples under each convention found in the literature (Table I above uses the "
             "settings listed under Conventions).", "",
             "| Method | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, row in alt["rows"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    lines += ["", "Table I arithmetic: L2 / (Var(method) + Var(GT)) with L2 and Var under the same centring. "
              "An independent baseline with the ground truth's mean scores 1 (the paper: Random 35.15 / "
              "(18.77 + 15.87) = 1.01).", ""]
    variants = list(next(iter(alt["arithmetic"].values()), {}))
    lines += ["| Method | " + " | ".join(variants) + " |", "|" + "---|" * (len(variants) + 1)]
    for name, row in alt["arithmetic"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(v)) for v in variants) + " |")
    return lines + [""]


def non_finite_lines(results: dict) -> list[str]:
    """One warning per model whose weights or generated output hold NaN/inf (its metrics are NaN)."""
    return [f"**Non-finite output: {name}** (`{results['models'][name]['checkpoint']}`): {note['detail']}"
            + (f" (windows: {', '.join(note['windows'][:10])}{' ...' if len(note['windows']) > 10 else ''})"
               if note.get("windows") else "")
            + ". Its metrics are not computed (NaN, shown as -)."
            for name, note in (results.get("non_finite") or {}).items()]


def model_lines(results: dict) -> list[str]:
    lines = []
    for name, info in results["models"].items():
        ssl = f" (`{info['ssl_set']}`, {info.get('ssl_model')}, SSL mode {info.get('ssl_mode')})" \
            if info.get("ssl_set") else ""
        lines.append(f"- **{name}**: {info['arch']}, {info['speech']}{ssl}, epoch {info.get('epoch')}; "
                     f"`{info['checkpoint']}`")
        if info.get("non_finite"):
            lines.append(f"  - NON-FINITE ({info['non_finite']['source']}): {info['non_finite']['detail']}")
        if info.get("rtf_batch1") is not None:
            with_feat = info.get("rtf_batch1_with_features")
            lines.append(f"  - RTF (batch 1, {info['rtf_device']}, seconds of compute per generated second, "
                         f"{info['rtf_includes']}): {info['rtf_batch1']:.3g} model only, "
                         + (f"{with_feat:.3g}" if with_feat is not None else "-") + f" with features "
                         f"({info['rtf_features']}). Batched evaluation throughput: "
                         f"{info['throughput_rtf']:.3g} s per generated s.")
        if info.get("layer_weights"):
            weights = ", ".join(f"{w:.3f}" for w in info["layer_weights"])
            lines.append(f"  - Learned SSL layer weights (layer 0 = CNN output): {weights}")
            bound, reach = info.get("layer_logit_travel_bound"), info.get("layer_weight_reachable")
            if bound is not None and reach:
                lines.append(f"  - Caveat: at layer-weight lr {info['layer_weight_lr']:.3g} each logit could move "
                             f"at most ~{bound:.3g} from 0 in the steps trained, so no weight could leave "
                             f"[{reach[0]:.3f}, {reach[1]:.3f}]: near-uniform weights then say little about "
                             "which layers matter (TrainLHG --layer-weight-lr).")
    if not results["models"]:
        lines.append("- (baselines only)")
    sets = results["dataset"].get("ssl_sets") or {}
    lines += ["", "SSL feature sets in the dataset: " + ("; ".join(
        f"`{n}` = {s.get('model_id')}, mode {s.get('mode')}" for n, s in sets.items()) or "none") + "."]
    return lines


def render_markdown(results: dict) -> str:
    warnings = non_finite_lines(results)
    lines = ["# Listening head generation: evaluation", "", _samples_line(results), "", markdown_table(results), "",
             *[line for w in warnings for line in (w, "")],
             "Bold = best per column among methods (lowest for ↓, highest for ↑, closest to Ground Truth for "
             "Var, SI and Act.). All metrics use head angles (pitch, yaw, roll) in degrees.", "",
             "## Conventions", "", *conventions_lines(results), "", *alternatives_lines(results),
             "## Models", "", *model_lines(results), "", "## Videos", ""]
    videos = results.get("videos") or []
    lines += [f"- [{v['file']}]({v['file']}): {v['window_id']}; panels {', '.join(v['panels'])}; {v['audio']}"
              for v in videos] or ["- (none: --video-samples 0)"]
    lines += ["", "## Figures", "", "![cross-correlation](cross_correlation.png)", ""]
    lines += [f"![trajectory {i}]({p})" for i, p in enumerate(results.get("figures", {}).get("trajectories", []))]
    return "\n".join(lines) + "\n"


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_cross_correlation(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xc = results["cross_correlation"]
    lags_s = np.asarray(xc["lags_frames"]) / HEAD_FPS
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, curve in xc.items():
        if name == "lags_frames":
            continue
        y = np.array([np.nan if v is None else v for v in curve], dtype=float)
        ax.plot(lags_s, y, lw=2.4 if name == GROUND_TRUTH else 1.4, color="k" if name == GROUND_TRUTH else None,
                label=name)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_xlabel("lag (s): listener after speaker >0")
    ax.set_ylabel("cross-correlation of angular velocity")
    ax.set_title("Speaker -> listener head velocity cross-correlation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_trajectories(figures: dict[str, np.ndarray], sample: int, segment_id: str, path: Path,
                      vertical: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, arr in figures.items():
        y = arr[sample, :, vertical]
        t = np.arange(len(y)) / HEAD_FPS
        style = {"speaker": dict(color="0.55", ls="--", label="Partner (speaker)"),
                 GROUND_TRUTH: dict(color="k", lw=2.2, label="Ground truth listener")}.get(name, {"label": name})
        ax.plot(t, y, **style)
    ax.set_xlabel("time after context (s)")
    ax.set_ylabel("pitch (deg)")
    ax.set_title(f"Nodding direction, {segment_id}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def write_report(out_dir: Path, results: dict, figures: dict[str, np.ndarray], *, picks: list[int],
                 vertical: int) -> None:
    """Write figures, table.csv, report.md and results.json (last: its presence marks a finished report).
    `picks` = the samples to plot (those with the most ground-truth vertical motion show nods best)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_cross_correlation(results, out_dir / "cross_correlation.png")
    names = []
    for rank, sample in enumerate(picks):
        name = f"trajectory_{rank}.png"
        plot_trajectories(figures, sample, results["samples"]["window_ids"][sample], out_dir / name, vertical)
        names.append(name)
    results["figures"] = {"cross_correlation": "cross_correlation.png", "trajectories": names}
    write_text_atomic(out_dir / "table.csv", table_csv(results))
    write_text_atomic(out_dir / "report.md", render_markdown(results))
    write_json_atomic(out_dir / "results.json", results)
