"""Per-channel standardisation with train-split statistics: applied to model inputs, undone on outputs.

The dataset build writes `normalization.json` (mean / std per channel of the head features and the
speaker FBank, from valid train frames); training copies it into every checkpoint, so generation
normalises and de-normalises with exactly the statistics the model was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NORMALIZATION_FILE = "normalization.json"


@dataclass(frozen=True, eq=False)  # arrays: no elementwise ==
class Standardizer:
    """(x - mean) / std per channel (last axis), float32 statistics; `undo` is its exact inverse map."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_stats(cls, stats: dict[str, Any]) -> Standardizer:
        return cls(np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def undo(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean


@dataclass(frozen=True, eq=False)  # arrays: no elementwise ==
class Normalization:
    """The standardisations of a built dataset (or a checkpoint's copy of them)."""

    head: Standardizer
    speech_fbank: Standardizer

    @classmethod
    def from_dict(cls, stats: dict[str, Any]) -> Normalization:
        """From the parsed JSON (a checkpoint's `normalization` entry)."""
        return cls(Standardizer.from_stats(stats["head"]), Standardizer.from_stats(stats["speech_fbank"]))

    @classmethod
    def from_json(cls, path: str | Path) -> Normalization:
        """From a `normalization.json` file (`<dataset>/NORMALIZATION_FILE`)."""
        return cls.from_dict(json.loads(Path(path).read_text()))
