"""Objective listening-head metrics (the paper's section III-D): one import for evaluation code.

`distribution` (L2, Var, FD / P-FD, SI), `synchrony` (velocity, PCC, cross-correlation), `activity`
(detector and scores); `arrays` holds the shared [N, T, C] conventions.
"""

from pipeline.evaluation.metrics.activity import (
    ActivityDetector,
    activity_scores,
    calibrate_activity,
    detect_activity,
)
from pipeline.evaluation.metrics.arrays import split_windows
from pipeline.evaluation.metrics.distribution import (
    center_sequences,
    fd,
    fit_clusters,
    frechet_distance,
    l2_error,
    paired_fd,
    style_index,
    variation,
)
from pipeline.evaluation.metrics.synchrony import cross_correlation, pcc, pooled_cross_correlation, velocity

__all__ = [
    "ActivityDetector",
    "activity_scores",
    "calibrate_activity",
    "center_sequences",
    "cross_correlation",
    "detect_activity",
    "fd",
    "fit_clusters",
    "frechet_distance",
    "l2_error",
    "paired_fd",
    "pcc",
    "pooled_cross_correlation",
    "split_windows",
    "style_index",
    "variation",
    "velocity",
]
