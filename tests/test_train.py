"""Training on the built shards: learning, checkpoints, resume after a kill, the TrainLHG task."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from pipeline.model.checkpoints import verify_checkpoint
from pipeline.model.network import LHGModel
from pipeline.model.train import batch_loss, collate, model_config_for, open_split, preset, train
from tasks import TrainLHG

from .helpers import families_run, run_luigi


def test_collate_pads_and_masks():
    items = [{"segment_id": "a", "listener_head": torch.ones(3, 18), "speaker_head": torch.ones(3, 18),
              "speech": torch.ones(3, 8, 80), "listener_valid": torch.ones(3, dtype=torch.bool)},
             {"segment_id": "b", "listener_head": torch.ones(5, 18), "speaker_head": torch.ones(5, 18),
              "speech": torch.ones(5, 8, 80), "listener_valid": torch.ones(5, dtype=torch.bool)}]
    batch = collate(items)
    assert tuple(batch["speech"].shape) == (2, 5, 8, 80)
    assert batch["frame_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert float(batch["listener_head"][0, 3:].abs().sum()) == 0.0


def test_tiny_training_learns_and_writes_checkpoints(built_dataset, tmp_path):
    cfg = preset("tiny", epochs=6)
    summary = train(built_dataset / "dataset", tmp_path / "run", cfg, progress=False)
    losses = [row["train_loss"] for row in summary["history"]]
    assert losses[-1] < 0.7 * losses[0], losses
    for name in ("best", "last"):
        assert (tmp_path / "run" / name / "model.safetensors").is_file()
        assert (tmp_path / "run" / name / "config.json").is_file()
        assert (tmp_path / "run" / name).is_symlink() and verify_checkpoint(tmp_path / "run" / name) == []
    assert (tmp_path / "run" / "last" / "train_state.pt").is_file()
    assert not (tmp_path / "run" / "best" / "train_state.pt").exists()  # only `last` resumes
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["epoch"]) == list(range(6)) and log["valid_loss"].notna().all()
    assert (log["segments_per_s"] > 0).all() and log["loader_share"].between(0, 1).all()


def test_resume_after_kill_matches_uninterrupted(built_dataset, tmp_path):
    cfg = preset("tiny", epochs=4)
    train(built_dataset / "dataset", tmp_path / "straight", cfg, progress=False)
    train(built_dataset / "dataset", tmp_path / "killed", cfg, progress=False, stop_after_epochs=2)
    resumed = train(built_dataset / "dataset", tmp_path / "killed", cfg, progress=False)
    assert resumed["epochs_done"] == 4
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_train_task_runs_once(built_dataset, sample_corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built_dataset, out)
    task = TrainLHG(corpus=str(sample_corpus), out=str(out), preset="tiny", epochs=2)
    result = run_luigi(task)
    assert result.status.name == "SUCCESS", result.summary_text
    assert families_run(result) == ["TrainLHG"], result.summary_text
    assert (task.run_dir() / "best" / "model.safetensors").is_file()
    again = run_luigi(TrainLHG(corpus=str(sample_corpus), out=str(out), preset="tiny", epochs=2))
    assert families_run(again) == []


def test_listener_noise_only_perturbs_training_input(built_dataset):
    data = open_split(built_dataset / "dataset", "train", preset("tiny"))
    batch = collate([data[i] for i in range(2)])
    torch.manual_seed(0)
    model = LHGModel(model_config_for(preset("tiny"), batch))
    clean, noisy = preset("tiny"), preset("tiny", listener_noise=0.5)
    model.eval()  # evaluation never adds noise
    assert float(batch_loss(model, batch, clean, "cpu")) == float(batch_loss(model, batch, noisy, "cpu"))
    model.train()
    torch.manual_seed(1)
    a = float(batch_loss(model, batch, clean, "cpu"))
    torch.manual_seed(1)
    b = float(batch_loss(model, batch, noisy, "cpu"))
    assert a != b


def test_layer_weight_logits_get_their_own_learning_rate():
    """Adam's first step moves every parameter by about its learning rate (|m̂ / sqrt(v̂)| = 1), so with
    lr 1e-6 and layer_weight_lr 0.1 the logits move ~0.1 and nothing else more than ~1e-6."""
    from pipeline.model.network import ModelConfig, masked_huber_loss, target_frames
    from pipeline.model.train import TrainConfig, parameter_groups

    torch.manual_seed(0)
    model = LHGModel(ModelConfig(arch="lstm_transformer", n_blocks=1, width=16, n_heads=2, speech="ssl_wa",
                                 ssl_layers=4, ssl_dim=8, dropout=0.0))
    cfg = TrainConfig(speech="ssl_wa", lr=1e-6, layer_weight_lr=0.1)
    groups = parameter_groups(model, cfg)
    assert len(groups) == 2 and groups[1]["lr"] == 0.1
    assert len(parameter_groups(model, TrainConfig(speech="ssl_wa"))) == 1  # 0 = the paper's single lr
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.0)
    speech = torch.randn(2, 20, 4, 4, 8)
    speech[..., 0, :] *= 5.0  # layers differ, so the logits get a gradient
    listener = torch.randn(2, 20, 18)
    targets, mask = target_frames(listener)
    masked_huber_loss(model(speech, torch.randn(2, 20, 18), listener), targets, mask, context_frames=2).backward()
    opt.step()
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters()}
    assert moved["speech_encoder.layer_logits"] > 0.05
    # float32 parameters of magnitude <= 2 resolve differences to 2.4e-7
    assert max(v for n, v in moved.items() if n != "speech_encoder.layer_logits") <= 1e-6 + 2.4e-7


def test_layer_weight_travel_bound_matches_the_paper_scale():
    """At the paper's lr 5e-6, ~113k steps (100 epochs, cosine) no softmax weight of 13 layers can leave
    roughly [0.045, 0.13]: the bound is the summed learning rate (Adam moves <= ~lr per step)."""
    from pipeline.evaluation.generation import layer_logit_travel, weight_range

    extra = {"train": {"lr": 5e-6, "layer_weight_lr": 0.0, "epochs": 100}, "steps_per_epoch": 1130, "epoch": 99}
    bound = layer_logit_travel(extra)
    assert bound == pytest.approx(5e-6 * 1130 * 50.5, rel=0.01)  # mean of the cosine schedule: 1/2
    low, high = weight_range(bound, 13)
    assert low == pytest.approx(0.045, abs=0.003) and high == pytest.approx(0.13, abs=0.005)
    assert weight_range(0.0, 13) == pytest.approx((1 / 13, 1 / 13))
    assert layer_logit_travel({"train": {}, "epoch": 3}) is None  # older checkpoints: no step count


def test_a_diverging_run_stops_before_saving_non_finite_weights(built_dataset, tmp_path):
    """lr = inf makes the first AdamW step put inf / NaN into the weights: the epoch is refused before
    anything is saved, instead of `last` silently holding a model that cannot generate."""
    from dataclasses import replace

    from pipeline.model.train import TrainingDiverged

    small = preset("tiny", n_blocks=1, width=16, n_heads=2, epochs=2, lr=float("inf"))
    with pytest.raises(TrainingDiverged, match=r"training diverged in epoch 0: .*non-finite weights in .*"
                                               r"this epoch is not saved"):
        train(built_dataset / "dataset", tmp_path / "run", small, progress=False)
    assert not (tmp_path / "run" / "last").exists() and not (tmp_path / "run" / "best").exists()
    train(built_dataset / "dataset", tmp_path / "run2", replace(small, lr=2e-3), progress=False,
          stop_after_epochs=1)  # the same settings with a sane rate train and save
    assert (tmp_path / "run2" / "last").exists()
