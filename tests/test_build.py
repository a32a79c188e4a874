"""End-to-end BuildSplits through real Luigi, Dask, MediaPipe and ffmpeg on a generated corpus:
outputs and contracts, no-op re-run, incremental add, quarantine, strict mode, kill and resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.common.errors import CorruptOutputError
from pipeline.dataset.loader import LHGDataset
from pipeline.dataset.manifest import read_manifest, require_intact
from pipeline.dataset.plan import plan_build
from pipeline.evaluation.evaluate import EvalConfig, evaluate
from pipeline.model.network import load_checkpoint
from schemas.conventions import HEAD_DIM
from schemas.tables import SEGMENTS_SCHEMA
from tasks import BuildSplits, TrainLHG

from .helpers import families_run, run_build, run_luigi, snapshot, task_failures

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(sample_corpus) -> Path:
    return sample_corpus


@pytest.fixture(scope="module")
def built(built_dataset) -> Path:
    return built_dataset


def test_dataset_contract(built, corpus):
    dataset = built / "dataset"
    seg = pd.read_parquet(dataset / "segments.parquet")
    assert list(seg.columns[: len(SEGMENTS_SCHEMA.names)]) == SEGMENTS_SCHEMA.names
    assert set(seg["split"]) == {"train", "valid", "test"}, seg["split"].value_counts()
    lengths = seg["end_s"] - seg["start_s"]
    assert lengths.between(6.0 - 1e-6, 11.0 + 1e-6).all()
    assert np.allclose(seg["n_frames"], np.round(lengths / 0.08))
    # listener-disjoint: each listener in exactly one split
    assert (seg.groupby("listener_id")["split"].nunique() == 1).all()
    assert (seg["listener_id"] != seg["speaker_id"]).all()
    for split in ("train", "valid", "test"):
        ds = LHGDataset(dataset, split)
        item = ds[0]
        t = item["listener_head"].shape[0]
        assert tuple(item["speaker_head"].shape) == (t, HEAD_DIM)
        assert tuple(item["speech"].shape) == (t, 8, 80)
        assert item["listener_valid"].float().mean() > 0.9
    card = (dataset / "data_card.md").read_text()
    assert "How 18 dimensions were resolved" in card and "$" not in card.split("```json")[0]
    for png in ("segment_lengths.png", "participant_activity.png"):
        assert (dataset / png).stat().st_size > 5000
    rejected = pd.read_csv(dataset / "rejected.csv")
    assert len(rejected) == 0, rejected
    # per-recording work ran on Dask worker processes (a real LocalCluster), not in this process
    pids = {json.loads(p.read_text())["worker_pid"] for p in (built / "work" / "head").rglob("*.json")}
    assert pids and os.getpid() not in pids
    norm = json.loads((dataset / "normalization.json").read_text())
    assert len(norm["head"]["mean"]) == HEAD_DIM and "train" in norm["source"]


def test_second_run_runs_nothing_and_changes_nothing(built, corpus):
    before = snapshot(built)
    result = run_build(corpus=str(corpus), out=str(built))
    assert result.status.name == "SUCCESS"
    assert families_run(result) == [], result.summary_text
    assert snapshot(built) == before


def test_incremental_add_and_quarantine(built, corpus, tmp_path):
    from pipeline.sample.generate import make_session

    corpus2 = tmp_path / "corpus"
    shutil.copytree(corpus, corpus2)
    out = tmp_path / "out"
    shutil.copytree(built, out)
    # the copied work folder is keyed by content, so nothing recomputes for the old sessions
    work_before = {k: v for k, v in snapshot(out / "work").items() if k != "file_hashes.json"}
    registry_before = json.loads((out / "dataset" / "splits_registry.json").read_text())["assignments"]
    # ids with dots are legal and must not confuse file naming
    make_session(corpus2, "s.90", ["P.07", "P08"], annotation="csv", duration_s=30.0, seed=90)
    # a damaged session: truncated video and an annotation naming an unknown participant
    bad = corpus2 / "sessions" / "s91"
    shutil.copytree(corpus2 / "sessions" / "s.90", bad)
    video = next(bad.glob("*.mp4"))
    video.write_bytes(video.read_bytes()[:2000])
    (bad / "turns.csv").write_text("participant_id,start_s,end_s\nP.07,0,5\nZZ,5,9\n")
    # unreadable audio for one participant: that recording is quarantined, the session has one usable person
    deaf = corpus2 / "sessions" / "s92"
    shutil.copytree(corpus2 / "sessions" / "s.90", deaf)
    audio = sorted(p for p in deaf.iterdir() if p.suffix in {".wav", ".m4a", ".mp3"})[0]
    audio.write_bytes(b"RIFF....WAVEfmt garbage" * 50)
    result = run_build(corpus=str(corpus2), out=str(out))
    assert result.status.name == "SUCCESS", result.summary_text
    run_families = families_run(result)
    assert "BuildSplits" in run_families and "SessionSegments" in run_families
    work_after = snapshot(out / "work")
    for name, blob in work_before.items():
        assert work_after[name] == blob, f"{name} was rewritten"
    new_work = set(work_after) - set(work_before) - {"file_hashes.json"}
    assert new_work and all(any(s in n for s in ("s.90", "s91", "s92")) for n in new_work), sorted(new_work)
    registry = json.loads((out / "dataset" / "splits_registry.json").read_text())["assignments"]
    assert all(registry[p] == s for p, s in registry_before.items())
    assert {"P.07", "P08"} <= set(registry)
    rejected = pd.read_csv(out / "dataset" / "rejected.csv")
    assert (rejected["session_id"] == "s91").any(), rejected
    files = " ".join(rejected["file"].astype(str))
    assert video.name in files  # the truncated video, named
    assert ((rejected["session_id"] == "s92") & (rejected["stage"] == "audio")).any()
    assert audio.name in files
    assert ((rejected["session_id"] == "s92") & (rejected["stage"] == "session")).any()
    seg = pd.read_parquet(out / "dataset" / "segments.parquet")
    assert (seg["session_id"] == "s.90").any() and not seg["session_id"].isin(["s91", "s92"]).any()
    card = (out / "dataset" / "data_card.md").read_text()
    assert "s91" in card.split("## Quarantined inputs")[1]
    # strict mode fails instead of quarantining
    strict = run_build(corpus=str(corpus2), out=str(out), strict=True, seed=0)
    assert strict.status.name != "SUCCESS"


def test_kill_and_resume(corpus, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "BuildSplits", "--corpus", str(corpus),
           "--out", str(out), "--local-scheduler"]
    env = {**os.environ, "LHG_DASK_SCHEDULER": "inline"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "work" / "head").rglob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in (out / "work").rglob("*.json") if p.name != "file_hashes.json"}
    assert finished, "the build was killed before finishing any recording"
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    assert not list(out.rglob("*.tmp-*")), "temporary files left behind"
    assert len(pd.read_parquet(out / "dataset" / "segments.parquet")) > 0


def test_other_settings_never_replace_a_dataset(built, corpus, tmp_path):
    """BuildSplits or TrainLHG with other settings into the same --out are refused before any work, naming
    the stored and the requested value; the dataset and its build marker stay as they were."""
    out = tmp_path / "out"
    shutil.copytree(built, out)
    before = snapshot(out / "dataset")
    assert len(list((out / "dataset").glob("build-*.json"))) == 1
    for task in (BuildSplits(corpus=str(corpus), out=str(out), channels="5"),
                 TrainLHG(corpus=str(corpus), out=str(out), channels="5", preset="tiny", epochs=1)):
        with task_failures() as failed:
            result = run_luigi(task)
        assert result.status.name != "SUCCESS"
        assert families_run(result) == [], result.summary_text  # nothing was extracted
        message = str(failed["BuildSplits"])
        assert "--channels: the dataset was built with 6, this run asks for 5" in message, message
        assert "--overwrite" in message and "another --out" in message
        assert snapshot(out / "dataset") == before


def test_setting_change_recomputes_only_affected_stages(built, corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    refused = run_build(corpus=str(corpus), out=str(out), max_invalid_frac=0.2)
    assert refused.status.name != "SUCCESS" and families_run(refused) == []
    result = run_build(corpus=str(corpus), out=str(out), max_invalid_frac=0.2, overwrite=True)
    assert result.status.name == "SUCCESS", result.summary_text
    assert sorted(set(families_run(result))) == ["BuildSplits", "SessionSegments"], result.summary_text
    assert len(list((out / "dataset").glob("build-*.json"))) == 1  # the replaced build's marker is gone
    # an edited annotation recomputes that session (and the aggregate) only
    corpus2 = tmp_path / "corpus"
    shutil.copytree(corpus, corpus2)
    turns = corpus2 / "sessions" / "s01" / "turns.csv"
    turns.write_text(turns.read_text().rstrip("\n").rsplit("\n", 1)[0] + "\n")  # drop the last turn
    before = snapshot(out / "work" / "head")
    result = run_build(corpus=str(corpus2), out=str(out), max_invalid_frac=0.2)
    assert result.status.name == "SUCCESS", result.summary_text
    # and the annotation QA of the edited file (its voice activity is reused)
    assert sorted(families_run(result)) == ["AnnotationQA", "BuildSplits", "SessionSegments"], result.summary_text
    assert "1 SessionSegments" in result.summary_text
    assert snapshot(out / "work" / "head") == before


def test_person_disjoint_needs_redraw_then_holds(built, corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    refused = run_build(corpus=str(corpus), out=str(out), disjoint="person")
    assert refused.status.name != "SUCCESS"  # the listener-mode registry must not be silently replaced
    result = run_build(corpus=str(corpus), out=str(out), disjoint="person", redraw=True)
    assert result.status.name == "SUCCESS", result.summary_text
    seg = pd.read_parquet(out / "dataset" / "segments.parquet")
    roles = pd.concat([seg[["listener_id", "split"]].set_axis(["pid", "split"], axis=1),
                       seg[["speaker_id", "split"]].set_axis(["pid", "split"], axis=1)])
    assert (roles.groupby("pid")["split"].nunique() == 1).all()
    assert set(seg["split"]) == {"train", "valid", "test"}


def tiny_ssl_checkpoint(folder: Path, kind: str) -> Path:
    """A random-weight HuBERT / wav2vec 2.0 with the real frame geometry (400-sample field, 320 hop)."""
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                  num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, feat_extract_norm="group")
    model = HubertModel(HubertConfig(**common)) if kind == "hubert" else Wav2Vec2Model(Wav2Vec2Config(**common))
    model.save_pretrained(folder)
    return folder


def assert_ssl_stored_once(out: Path, corpus: Path, name: str, checkpoint: Path) -> None:
    """The set's pieces are hard links of the SSL jobs' outputs, which hold only the frames segments use,
    and a segment's rows equal a one-pass extraction of its speaker's audio at its frames."""
    from pipeline.corpus.layout import read_session_cached
    from pipeline.features.speech_ssl import extract_ssl, load_ssl_model
    from pipeline.media.audio import decode_audio

    set_dir = out / "dataset" / read_manifest(out / "dataset")["ssl"][name]["dir"]
    pieces = sorted(set_dir.rglob("*.safetensors"))
    work = {p.stat().st_ino: p for p in (out / "work" / "ssl").rglob("*.safetensors")}
    assert pieces and all(p.stat().st_ino in work for p in pieces)  # one copy of the bytes on disk
    assert not list((out / "work" / "ssl").rglob("*.npy"))  # no whole-recording intermediates
    segments = pd.read_parquet(out / "dataset" / "segments.parquet")
    data = LHGDataset(out / "dataset", "train", ssl=name, as_torch=False, normalize=False)
    loaded = load_ssl_model(str(checkpoint), device="cpu")
    for seg in segments[segments["split"] == "train"].head(3).itertuples():
        entry = read_session_cached(corpus, seg.session_id).participant(seg.speaker_id)
        wave = decode_audio(entry.audio, offset_s=entry.audio_offset_s)
        one_pass = extract_ssl(loaded, wave, mode="strict", dtype="float32")
        a = int(round(seg.start_s / 0.08)) * 4
        expected = one_pass[a:a + 4 * seg.n_frames].reshape(seg.n_frames, 4, *one_pass.shape[1:])
        got = data[int(np.flatnonzero(data.segments["segment_id"] == seg.segment_id)[0])]["ssl"].astype(np.float32)
        # float16 storage: half an ulp (2^-11 relative) of rounding, plus float32 noise of another thread count
        rms = float(np.sqrt(np.mean(expected ** 2)))
        assert np.all(np.abs(got - expected) <= 2.0 ** -11 * np.abs(expected) + 2.0 ** -24 + 1e-5 * rms)
    records = [json.loads(r.read_text()) for r in (out / "work" / "ssl").rglob("*.json")]
    stored, recorded = sum(r["shape"][0] for r in records), sum(r["recording_ssl_frames"] for r in records)
    assert 0 < stored < recorded  # audio no segment uses is not kept


def test_ssl_features_add_models_without_rewriting(built, corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    hubert = tiny_ssl_checkpoint(tmp_path / "tiny-hubert", "hubert")
    wav2vec = tiny_ssl_checkpoint(tmp_path / "tiny-wav2vec2", "wav2vec2")
    core_before = snapshot(out / "dataset" / "shards")

    result = run_build(corpus=str(corpus), out=str(out), ssl_models=str(hubert), ssl_causal="strict")
    assert result.status.name == "SUCCESS", result.summary_text
    assert sorted(set(families_run(result))) == ["BuildSplits", "SSLFeatures"], result.summary_text
    assert snapshot(out / "dataset" / "shards") == core_before  # head/FBank shards untouched
    sets = LHGDataset.available_ssl(out / "dataset")
    (name,) = sets
    assert sets[name]["mode"] == "strict" and sets[name]["hidden_states"] == 3 and sets[name]["dim"] == 32
    check = sets[name]["chunking_check"][0]
    assert check["max_abs_diff"] <= 1e-4 * max(1.0, check["feature_rms"])  # strict chunking is exact
    for split in ("train", "valid", "test"):
        item = LHGDataset(out / "dataset", split, ssl=name)[0]
        assert tuple(item["ssl"].shape) == (item["listener_head"].shape[0], 4, 3, 32)
        assert bool(item["ssl"].abs().sum() > 0)
    subset = LHGDataset(out / "dataset", "train", ssl=name, ssl_layers=[0, 2])[0]["ssl"]
    assert tuple(subset.shape[2:]) == (2, 32)
    first_ssl = snapshot(out / "dataset" / "ssl")
    assert_ssl_stored_once(out, corpus, name, hubert)
    card = (out / "dataset" / "data_card.md").read_text()
    assert name in card and "exactly causal" in card

    # the model trains on those features through the same task users run (weighted average over layers)
    train_task = TrainLHG(corpus=str(corpus), out=str(out), preset="tiny", epochs=2, speech="ssl_wa",
                          ssl_models=str(hubert), ssl_causal="strict")
    trained = run_luigi(train_task)
    assert families_run(trained) == ["TrainLHG"], trained.summary_text
    model, extra = load_checkpoint(train_task.run_dir() / "best")
    assert model.cfg.speech == "ssl_wa" and model.cfg.ssl_layers == 3 and model.cfg.ssl_dim == 32
    assert extra["features"]["ssl_set"] == name and extra["features"]["ssl"]["mode"] == "strict"
    assert abs(float(model.layer_weights().detach().sum()) - 1.0) < 1e-6
    # ... and is evaluated on the same SSL feature set, found by its spec
    report = evaluate(out / "dataset", {"HuBERT w/WA": train_task.run_dir()}, tmp_path / "eval",
                      EvalConfig(eval_frames=62, long_window=62, n_samples=5))
    assert report["models"]["HuBERT w/WA"]["ssl_set"] == name
    assert len(report["models"]["HuBERT w/WA"]["layer_weights"]) == 3
    assert report["table"]["HuBERT w/WA"]["L2"] > 0

    both = f"{hubert},{wav2vec}"
    result = run_build(corpus=str(corpus), out=str(out), ssl_models=both, ssl_causal="strict")
    assert result.status.name == "SUCCESS", result.summary_text
    assert sorted(set(families_run(result))) == ["BuildSplits", "SSLFeatures"], result.summary_text
    assert "6 SSLFeatures" in result.summary_text  # only the new model's recordings
    after = snapshot(out / "dataset" / "ssl")
    assert all(after[k] == v for k, v in first_ssl.items())  # the first model's shards are untouched
    assert len(LHGDataset.available_ssl(out / "dataset")) == 2

    # a new session adds its own pieces: no other piece is recomputed or rewritten, the sets are re-linked
    from pipeline.sample.generate import make_session

    pieces_before = {p: (p.stat().st_ino, p.read_bytes()) for p in (out / "work" / "ssl").rglob("*.safetensors")}
    corpus2 = tmp_path / "corpus"
    shutil.copytree(corpus, corpus2)
    make_session(corpus2, "s90", ["P07", "P08"], annotation="csv", duration_s=30.0, seed=90)
    result = run_build(corpus=str(corpus2), out=str(out), ssl_models=both, ssl_causal="strict")
    assert result.status.name == "SUCCESS", result.summary_text
    assert "4 SSLFeatures" in result.summary_text  # two new recordings x two models
    assert all((p.stat().st_ino, p.read_bytes()) == v for p, v in pieces_before.items())
    segments = pd.read_parquet(out / "dataset" / "segments.parquet")
    new = segments[segments["session_id"] == "s90"].iloc[0]
    data = LHGDataset(out / "dataset", new["split"], ssl=name)
    item = data[int(np.flatnonzero(data.segments["segment_id"] == new["segment_id"])[0])]
    assert tuple(item["ssl"].shape) == (new["n_frames"], 4, 3, 32) and bool(item["ssl"].abs().sum() > 0)

    # a flipped bit in an SSL piece stops training on that set (pieces belong to no split: always hashed)
    piece = next((out / "dataset" / read_manifest(out / "dataset")["ssl"][name]["dir"]).rglob("*.safetensors"))
    raw = bytearray(piece.read_bytes())
    raw[-1] ^= 0x40
    piece.write_bytes(bytes(raw))
    with pytest.raises(CorruptOutputError, match=re.escape(piece.name)):
        require_intact(out / "dataset", splits={"train", "valid"}, ssl_sets={name})

    broken = tmp_path / "not-a-model"
    broken.mkdir()
    failed = run_build(corpus=str(corpus), out=str(out), ssl_models=str(broken))
    assert failed.status.name != "SUCCESS"
    with pytest.raises(RuntimeError, match=r"not-a-model: no config.json"):
        plan_build(str(corpus), str(out), BuildSplits(corpus=str(corpus), out=str(out),
                                                      ssl_models=str(broken)).build_config())
