"""Thin Luigi tasks wiring `pipeline/` functions into the incremental dataset build."""

from .build import AudioFeatures, BuildSplits, HeadFeatures, MakeSampleCorpus, SessionSegments

__all__ = ["AudioFeatures", "BuildSplits", "HeadFeatures", "MakeSampleCorpus", "SessionSegments"]
