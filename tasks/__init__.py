"""Thin Luigi tasks wiring `pipeline/` functions into the incremental dataset build."""

from .build import AudioFeatures, BuildSplits, HeadFeatures, MakeSampleCorpus, SessionSegments, SSLFeatures

__all__ = ["AudioFeatures", "BuildSplits", "HeadFeatures", "MakeSampleCorpus", "SessionSegments", "SSLFeatures"]
