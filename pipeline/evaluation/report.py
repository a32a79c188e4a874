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
    for name, vals in results["table"].items():
        cells = []
        for col, _ in COLUMNS:
            text = _fmt(vals.get(col))
            cells.append(f"**{text}**" if best.get(col) == name else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    cfg = results["config"]
    det = results["activity_detector"]
    dm = results["delay_mirror"]
    samples = results["samples"]
    lines = [
        "# Listening head generation: evaluation",
        "",
        f"{samples['used']} {cfg['split']} samples of {cfg['eval_frames']} frames "
        f"({cfg['eval_frames'] / HEAD_FPS:.2f} s) generated after {cfg['context_frames']} frames "
        f"({cfg['context_frames'] / HEAD_FPS:.2f} s) of ground-truth context "
        f"({samples['long_enough']} of {samples['split_segments']} segments are long enough). "
        f"Dataset build `{results['dataset']['build_id']}`.",
        "",
        markdown_table(results),
        "",
        "Bold = best per column among methods (lowest for ↓, highest for ↑, closest to Ground Truth for "
        "Var, SI and Act.). All metrics use head angles (pitch, yaw, roll) in degrees.",
        "",
        "## Conventions",
        "",
        f"- L2 ({cfg['l2_convention']}) and Var (variance over time, mean over channels) on "
        f"{cfg['long_window']}-frame windows.",
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
        "",
        "## Models",
        "",
    ]
    for name, info in results["models"].items():
        lines.append(f"- **{name}**: {info['arch']}, {info['speech']}"
                     + (f" (`{info['ssl_set']}`)" if info.get("ssl_set") else "")
                     + f", epoch {info.get('epoch')}, generation RTF {info['rtf']:.3g}; `{info['checkpoint']}`")
        if info.get("layer_weights"):
            lines.append(f"  - SSL layer weights: {', '.join(f'{w:.3f}' for w in info['layer_weights'])}")
    if not results["models"]:
        lines.append("- (baselines only)")
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


def write_report(out_dir: Path, results: dict, figures: dict[str, np.ndarray], *, vertical: int) -> None:
    """Write figures, table.csv, report.md and results.json (last: its presence marks a finished report)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_cross_correlation(results, out_dir / "cross_correlation.png")
    gt = figures[GROUND_TRUTH]
    # the samples with the most ground-truth vertical motion show nods best
    n_fig = min(results["config"]["figure_samples"], gt.shape[0])
    order = np.argsort(-gt[..., vertical].std(axis=1), kind="stable")[:n_fig]
    names = []
    for rank, sample in enumerate(sorted(order.tolist())):
        name = f"trajectory_{rank}.png"
        plot_trajectories(figures, sample, results["samples"]["segment_ids"][sample], out_dir / name, vertical)
        names.append(name)
    results["figures"] = {"cross_correlation": "cross_correlation.png", "trajectories": names}
    write_text_atomic(out_dir / "table.csv", table_csv(results))
    write_text_atomic(out_dir / "report.md", render_markdown(results))
    write_json_atomic(out_dir / "results.json", results)
