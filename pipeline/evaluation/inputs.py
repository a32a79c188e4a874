"""One read of the evaluation windows for every method (README "Evaluation").

The windows' inputs are read once, a batch of windows at a time, as the union of what the evaluated
checkpoints need: the heads (the metrics, the baselines and every model use them), the FBank when a
model takes FBank, and each SSL feature set a model was trained on, with only the hidden states the
models of that set use. Every model then takes its own view of the same batch (`model_view`): its
hidden states, normalised with its own training statistics. Each stretch is read once over the whole
pass (a stretch whose windows fall into two batches stays cached), so one evaluation reads the
chosen windows' segments once however many checkpoints it scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.dataset.normalization import Normalization
from pipeline.evaluation.windows import Stretch, Window, stretch_arrays

HEADS = ("listener_head", "speaker_head")


@dataclass(frozen=True)
class InputNeeds:
    """What one checkpoint reads of a window besides the heads."""

    fbank: bool = True
    ssl_set: str | None = None  # the dataset's SSL feature set (None: FBank)
    ssl_layers: tuple[int, ...] | None = None  # hidden states used (None: every stored one)


def read_layers(needs: list[InputNeeds], ssl_set: str) -> list[int] | None:
    """Hidden states to read of `ssl_set`: the union over its models (None: all, when one uses all)."""
    wanted = [n.ssl_layers for n in needs if n.ssl_set == ssl_set]
    if any(layers is None for layers in wanted):
        return None
    return sorted({layer for layers in wanted for layer in layers})


class WindowReader:
    """Streams batches of windows of a split: heads, FBank (when a model needs it), SSL rows per set.

    The first SSL set is read with the heads and the FBank in one loader item; a further SSL set has
    its own loader, whose items carry the (small) heads again."""

    def __init__(self, dataset_dir: Path, split: str, needs: list[InputNeeds]):
        from pipeline.dataset.loader import LHGDataset

        sets = sorted({n.ssl_set for n in needs if n.ssl_set is not None})
        self.fbank = any(n.fbank for n in needs)
        self.layers = {name: read_layers(needs, name) for name in sets}
        first = sets[0] if sets else None
        self.main = LHGDataset(dataset_dir, split, normalize=False, as_torch=False, speech=self.fbank, ssl=first,
                               ssl_layers=self.layers.get(first))
        self.more_ssl = {name: LHGDataset(dataset_dir, split, normalize=False, as_torch=False, speech=False,
                                          ssl=name, ssl_layers=self.layers[name]) for name in sets[1:]}
        self._first_set = first
        self._cached: tuple[int, dict] | None = None

    def _stretch(self, stretches: list[Stretch], k: int) -> dict:
        """Stretch k's arrays (heads, speech, ssl: {set: rows}); the last stretch read stays cached."""
        if self._cached is None or self._cached[0] != k:
            self._cached = None  # free the previous stretch first
            arrays = stretch_arrays(self.main, stretches[k])
            ssl = {self._first_set: arrays.pop("ssl")} if self._first_set is not None else {}
            ssl.update({name: stretch_arrays(data, stretches[k])["ssl"] for name, data in self.more_ssl.items()})
            arrays["ssl"] = ssl
            self._cached = (k, arrays)
        return self._cached[1]

    def batches(self, stretches: list[Stretch], windows: list[Window], batch_size: int) -> Iterator[dict]:
        """{"listener_head", "speaker_head", ["speech"], "ssl": {set: rows}} arrays [n, length, ...] per batch
        of `batch_size` windows, in window order (windows come sorted by stretch)."""
        for b in range(0, len(windows), batch_size):
            parts: dict[str, list] = {}
            for w in windows[b:b + batch_size]:
                arrays = self._stretch(stretches, w.stretch)
                for key in (*HEADS, *(["speech"] if self.fbank else [])):
                    parts.setdefault(key, []).append(arrays[key][w.offset:w.offset + w.length])
                for name, rows in arrays["ssl"].items():
                    parts.setdefault(f"ssl:{name}", []).append(rows[w.offset:w.offset + w.length])
            stacked = {k: np.stack(v) for k, v in parts.items()}
            yield {**{k: v for k, v in stacked.items() if not k.startswith("ssl:")},
                   "ssl": {k[4:]: v for k, v in stacked.items() if k.startswith("ssl:")}}
        self._cached = None


def model_view(batch: dict, needs: InputNeeds, read: list[int] | None, norm: Normalization,
               context_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One model's (speech, speaker, listener context) of a shared batch, normalised with its statistics;
    `read` = the hidden states the reader took of the model's SSL set (None: all)."""
    if needs.ssl_set is None:
        speech = norm.speech_fbank.apply(batch["speech"])
    else:
        speech = batch["ssl"][needs.ssl_set]
        if needs.ssl_layers is not None and (read is None or list(needs.ssl_layers) != read):
            index = list(needs.ssl_layers) if read is None else [read.index(layer) for layer in needs.ssl_layers]
            speech = np.take(speech, index, axis=-2)  # [n, T, 4, L, D]: the layer axis
    return (speech, norm.head.apply(batch["speaker_head"]),
            norm.head.apply(batch["listener_head"][:, :context_frames]))
