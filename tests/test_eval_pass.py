"""Evaluation at scale: the test windows are read once for every checkpoint, the baselines and the
metrics; every model's numbers are those it gets evaluated alone; bounding the models on the device
changes nothing; each model sees exactly its own hidden states of a shared SSL read."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pipeline.dataset.loader as loader  # noqa: E402
from pipeline.dataset.normalization import Normalization  # noqa: E402
from pipeline.evaluation.evaluate import EvalConfig, evaluate  # noqa: E402
from pipeline.evaluation.inputs import InputNeeds, model_view, read_layers  # noqa: E402
from pipeline.model.network import LHGModel, ModelConfig, save_checkpoint  # noqa: E402

# overlapping windows (as the tiny preset): several per stretch, so stretches fall into two batches
CFG = EvalConfig(eval_frames=62, long_window=62, short_window=25, window_stride=8, n_samples=12, batch_size=5, video_samples=0,
                 rtf_samples=1, figure_samples=1, device="cpu")


@pytest.fixture(scope="module")
def two_checkpoints(built_dataset, tmp_path_factory) -> dict[str, Path]:
    """Two tiny untrained FBank models (LSTM-Transformer and Transformer) with the dataset's statistics."""
    dataset = built_dataset / "dataset"
    manifest = json.loads((dataset / "manifest.json").read_text())
    extra = {"normalization": json.loads((dataset / "normalization.json").read_text()), "epoch": 0,
             "features": {"head_columns": manifest["head_columns"], "speech": "fbank", "ssl": None}}
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for seed, arch in enumerate(("lstm_transformer", "transformer")):
        torch.manual_seed(seed)
        model = LHGModel(ModelConfig(arch=arch, n_blocks=1, width=16, n_heads=2, dropout=0.0))
        out[arch] = save_checkpoint(model, root / arch, extra)
    return out


class CountingDataset(loader.LHGDataset):
    """The real loader, counting the segments it reads: (split, with FBank, SSL set, segment position)."""

    reads: Counter = Counter()

    def __getitem__(self, index: int):
        CountingDataset.reads[(self.segments["split"].iloc[0], self.load_speech, self.ssl, index)] += 1
        return super().__getitem__(index)


def test_the_test_split_is_read_once_for_every_checkpoint(built_dataset, two_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "LHGDataset", CountingDataset)
    CountingDataset.reads = Counter()
    results = evaluate(built_dataset / "dataset", two_checkpoints, tmp_path, CFG)
    test_reads = {k: n for k, n in CountingDataset.reads.items() if k[0] == "test"}
    assert results["samples"]["used"] > CFG.batch_size and set(results["models"]) == set(two_checkpoints)
    fbank = Counter({k[3]: n for k, n in test_reads.items() if k[1]})
    heads_only = Counter({k[3]: n for k, n in test_reads.items() if not k[1]})
    # one pass reads the chosen windows' segments with their FBank, once, for both models and the metrics
    assert fbank and max(fbank.values()) == 1, fbank
    # besides it, only the window selection scans the heads of the split, once
    assert max(heads_only.values()) == 1, heads_only


def test_each_model_scores_as_if_evaluated_alone_and_the_device_bound_changes_nothing(
        built_dataset, two_checkpoints, tmp_path):
    dataset = built_dataset / "dataset"
    both = evaluate(dataset, two_checkpoints, tmp_path / "both", CFG)
    alone = evaluate(dataset, {"transformer": two_checkpoints["transformer"]}, tmp_path / "alone", CFG)
    bounded = evaluate(dataset, two_checkpoints, tmp_path / "bounded",
                       EvalConfig(**{**CFG.to_dict(), "device_models": 1}))
    assert both["table"]["transformer"] == alone["table"]["transformer"]
    assert both["conventions"]["rows"]["transformer"] == alone["conventions"]["rows"]["transformer"]
    for name in ("Ground Truth", "Random", "Mirror", "Delay Mirror"):
        assert both["table"][name] == alone["table"][name], name
    assert bounded["table"] == both["table"] and bounded["conventions"] == both["conventions"]
    assert both["table"]["lstm_transformer"] != both["table"]["transformer"]  # two models, two answers


def test_a_shared_ssl_read_gives_each_model_its_own_hidden_states():
    rng = np.random.default_rng(0)
    stored = rng.standard_normal((3, 7, 4, 6, 5)).astype(np.float32)  # [n, T, 4, hidden states, D]
    needs = [InputNeeds(False, "hubert", (4, 1)), InputNeeds(False, "hubert", (2, 4)), InputNeeds(True)]
    read = read_layers(needs, "hubert")
    assert read == [1, 2, 4]
    assert read_layers([*needs, InputNeeds(False, "hubert", None)], "hubert") is None
    head = rng.standard_normal((3, 7, 18)).astype(np.float32)
    batch = {"listener_head": head, "speaker_head": head + 1, "ssl": {"hubert": stored[:, :, :, read]}}
    norm = Normalization.from_dict({"head": {"mean": [0.5] * 18, "std": [2.0] * 18},
                                    "speech_fbank": {"mean": [0.0] * 80, "std": [1.0] * 80}})
    for need in needs[:2]:
        speech, speaker, listener = model_view(batch, need, read, norm, context_frames=2)
        assert np.array_equal(speech, stored[:, :, :, list(need.ssl_layers)])
        assert np.array_equal(speaker, (head + 1 - 0.5) / 2.0) and listener.shape == (3, 2, 18)
    every = {**batch, "ssl": {"hubert": stored}}
    assert np.array_equal(model_view(every, needs[0], None, norm, 2)[0], stored[:, :, :, [4, 1]])
    assert np.array_equal(model_view(every, InputNeeds(False, "hubert", None), None, norm, 2)[0], stored)
