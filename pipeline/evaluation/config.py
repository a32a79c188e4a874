"""Evaluation settings (the paper's Table I protocol), apart from the evaluation code so the Luigi
task can declare its parameters from them without importing scipy / scikit-learn."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from pipeline.common.settings import setting
from schemas.conventions import CONTEXT_FRAMES


@dataclass(frozen=True)
class EvalConfig:
    split: str = setting("test", "split to evaluate (train/valid for diagnostics only)",
                         choices=("test", "valid", "train"))
    n_samples: int = setting(400, "test samples (the paper: 400 of 10 s)")
    context_frames: int = CONTEXT_FRAMES  # 0.96 s of ground truth fed first
    eval_frames: int = setting(125, "generated frames per sample (125 = 10 s; default: the preset's)",
                               preset_override=True)
    window_stride: int = setting(0, "frames between the starts of windows in one listener stretch "
                                    "(0 = context + eval frames: non-overlapping; default: the preset's)",
                                 preset_override=True)
    long_window: int = setting(125, "L2 / Var window (frames; default: the preset's)", preset_override=True)
    short_window: int = setting(25, "FID / P-FID / SI window (frames)")
    l2_convention: str = setting("mse", "L2 as mean squared error or Euclidean distance per frame",
                                 choices=("mse", "euclidean"))
    fd_mode: str = setting("per_window", "FID / P-FID: mean over windows or one pooled distance",
                           choices=("per_window", "pooled"))
    var_mode: str = setting("pooled", "Var: variance of all evaluated frames pooled, or mean of per-window "
                                      "variances", choices=("pooled", "per_window"))
    angle_centering: str = setting("per_sequence", "each sample's mean angle removed, or angles as measured "
                                                   "(L2, FID, Var, SI, P-FID)", choices=("per_sequence", "raw"))
    si_clusters: int = setting(8, "SI: k-means clusters")
    si_mode: str = setting("pooled", "SI: one histogram of all windows (the reference) or mean over windows",
                           choices=("pooled", "per_window"))
    pcc_mode: str = setting("per_sequence", "PCC: mean over sequences or pooled",
                            choices=("per_sequence", "pooled"))
    activity_channel: str = setting("pitch", "activity detector signal: pitch angle, or vertical head position "
                                             "y (the paper's wording)", choices=("pitch", "y"))
    # thresholds in robust standard deviations of train listener velocity
    activity_k_high: float = setting(3.0, "activity detector: start threshold (robust SDs of listener velocity)")
    activity_k_low: float = setting(1.5, "activity detector: end threshold (robust SDs of listener velocity)")
    xcorr_max_lag_s: float = 3.0
    advance: int = setting(1, "frames kept per generation step (1..3; 1 = feed back t+1 only)")
    batch_size: int = 32
    device_models: int = setting(0, "checkpoints on the device at once (0 = all); fewer: they wait in host "
                                    "memory and visit the device that many at a time for each batch")
    seed: int = setting(0, "evaluation seed (sampling, Random, k-means); EvaluateLHG also trains with it")
    device: str = setting("auto", "auto (GPU when present), cpu or cuda")
    figure_samples: int = 3
    video_samples: int = setting(2, "side-by-side MP4s (speaker, ground truth, every method) to render")
    rtf_samples: int = setting(3, "samples generated one at a time (batch 1) to measure the real-time factor")

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.eval_frames < max(self.long_window, self.short_window):
            raise ValueError(f"eval_frames={self.eval_frames} is shorter than a metric window "
                             f"(long_window={self.long_window}, short_window={self.short_window})")
        if self.n_samples < 1 or self.context_frames < 1:
            raise ValueError("n_samples and context_frames must be >= 1")
        if min(self.window_stride, self.video_samples, self.rtf_samples, self.device_models) < 0:
            raise ValueError("window_stride, video_samples, rtf_samples and device_models must be >= 0")

    @property
    def window_frames(self) -> int:
        return self.context_frames + self.eval_frames

    @property
    def stride_frames(self) -> int:
        """Frames between window starts (non-overlapping when window_stride is 0)."""
        return self.window_stride or self.window_frames


EVAL_PRESETS = {
    "paper": EvalConfig(),
    # The sample corpus (3 sessions of 2 min) has about 1 min of test listening in 6-11 s stretches:
    # 5 s samples, a window every 8 frames (0.64 s, overlapping), give >= 30 samples there (README).
    "tiny": EvalConfig(eval_frames=62, long_window=62, window_stride=8),
}


def eval_preset(name: str, **overrides) -> EvalConfig:
    """The preset's EvalConfig (presets shared with TrainLHG's --preset; unknown ones = the paper's)."""
    return replace(EVAL_PRESETS.get(name, EVAL_PRESETS["paper"]), **overrides)
