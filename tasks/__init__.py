"""Thin Luigi tasks wiring `pipeline/` functions into the incremental dataset build, training and evaluation."""

from .build import AudioFeatures, BuildSplits, HeadFeatures, MakeSampleCorpus, SessionSegments, SSLFeatures
from .console import apply_retcode_defaults, launched_by_luigi_cli, setup_luigi_console
from .evaluate import EvaluateLHG
from .ingest import ImportZoom
from .train import TrainLHG

# At import, i.e. before Luigi reads [retcode] (right after importing the --module) and before any
# task runs: exit codes must not depend on finding the repository's luigi.cfg.
apply_retcode_defaults()
if launched_by_luigi_cli():
    setup_luigi_console()

__all__ = ["AudioFeatures", "BuildSplits", "EvaluateLHG", "HeadFeatures", "ImportZoom", "MakeSampleCorpus", "SessionSegments",
           "SSLFeatures", "TrainLHG"]
