"""Thin Luigi tasks wiring `pipeline/` functions into the incremental dataset build."""

from .build import AudioFeatures, BuildSplits, HeadFeatures, MakeSampleCorpus, SessionSegments, SSLFeatures
from .train import TrainLHG

__all__ = ["AudioFeatures", "BuildSplits", "HeadFeatures", "MakeSampleCorpus", "SessionSegments", "SSLFeatures", "TrainLHG"]
