"""Thin Luigi tasks wiring `pipeline/` functions into the incremental dataset build, training and evaluation."""

from .build import AudioFeatures, BuildSplits, HeadFeatures, MakeSampleCorpus, SessionSegments, SSLFeatures
from .evaluate import EvaluateLHG
from .train import TrainLHG

__all__ = ["AudioFeatures", "BuildSplits", "EvaluateLHG", "HeadFeatures", "MakeSampleCorpus", "SessionSegments",
           "SSLFeatures", "TrainLHG"]
