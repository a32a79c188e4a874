"""Checkpoints survive kills and damage: a save killed at any step leaves the old or the new checkpoint,
never a mix; a resumed run ends with the uninterrupted run's weights or refuses, naming the file;
flipped bits, damaged JSON / safetensors / training state and NaN weights are named, not library
errors; evaluation reports a model with non-finite weights or output instead of crashing."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

import pipeline.model.checkpoints as checkpoints  # noqa: E402
import pipeline.model.run_folder as run_folder  # noqa: E402
import pipeline.model.train as train_module  # noqa: E402
from pipeline.model.checkpoints import (  # noqa: E402
    CheckpointError,
    NonFiniteWeightsError,
    load_train_state,
    sweep_checkpoints,
    verify_checkpoint,
)
from pipeline.model.network import LHGModel, ModelConfig, load_checkpoint, save_checkpoint  # noqa: E402
from pipeline.model.train import preset, train  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train ~50x faster on one thread than on cores shared with other work; every run of
    this module uses the same count, so the bit-exact comparisons hold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SimulatedKill(BaseException):
    """Raised from a patched write step: like SIGKILL, no `except Exception` handler of ours sees it."""


# the durable steps of a checkpoint save and of an epoch's end, in the order they happen
DURABLE_STEPS = [(checkpoints, "_write_file"), (checkpoints, "_switch_link"), (checkpoints, "_remove_unit"),
                 (run_folder, "write_log"), (train_module, "write_log")]


def kill_at(monkeypatch, n: int) -> list[int]:
    """Make the n-th durable step (0-based, counted over DURABLE_STEPS) raise SimulatedKill."""
    calls = [0]
    for module, name in DURABLE_STEPS:
        real = getattr(module, name)

        def step(*args, _real=real, _name=name, **kwargs):
            if calls[0] == n:
                raise SimulatedKill(f"killed at step {n} ({_name})")
            calls[0] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, step)
    return calls


# ---------------------------------------------------------------------------------------------------------
# the checkpoint folder alone (no dataset)


def tiny_model(seed: int) -> LHGModel:
    torch.manual_seed(seed)
    return LHGModel(ModelConfig(arch="lstm_transformer", n_blocks=1, width=16, n_heads=2, dropout=0.0))


def save(model: LHGModel, folder: Path, epoch: int) -> None:
    state = {"epoch": epoch, "best_val": 1.0, "optimizer": {}, "scheduler": {}, "rng": torch.get_rng_state()}
    save_checkpoint(model, folder, {"epoch": epoch}, train_state=state)


def same_weights(model: LHGModel, folder: Path) -> bool:
    saved = load_file(str(folder / "model.safetensors"))
    return all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch):
    old, new = tiny_model(0), tiny_model(1)
    outcomes = []
    for n in range(20):
        folder = tmp_path / f"k{n}" / "last"
        save(old, folder, epoch=0)
        with monkeypatch.context() as m:
            kill_at(m, n)
            try:
                save(new, folder, epoch=1)
            except SimulatedKill:
                killed = True
            else:
                killed = False
        assert verify_checkpoint(folder) == [], n  # complete and intact whatever the kill point
        epoch = load_train_state(folder)["epoch"]
        _, extra = load_checkpoint(folder)
        assert extra["epoch"] == epoch and same_weights(new if epoch == 1 else old, folder), n
        outcomes.append(epoch)
        sweep_checkpoints(folder.parent)
        assert [p.name for p in (folder.parent / ".checkpoints").iterdir()] == [folder.resolve().name]
        if not killed:
            break
    # kills before the switch keep the old checkpoint, after it the new one; the last run was not killed
    assert outcomes == sorted(outcomes) and outcomes[0] == 0 and outcomes[-1] == 1 and len(outcomes) >= 6


def test_sweep_removes_a_link_made_but_not_switched_in_and_its_unit(tmp_path):
    folder = tmp_path / "last"
    save(tiny_model(0), folder, epoch=0)
    kept = folder.resolve()
    orphan = tmp_path / ".checkpoints" / "last-epoch0001-deadbeef"
    shutil.copytree(kept, orphan)
    (tmp_path / ".last.link-0123abcd").symlink_to(Path(".checkpoints") / orphan.name)  # killed before os.replace
    assert sorted(sweep_checkpoints(tmp_path)) == [".checkpoints/" + orphan.name, ".last.link-0123abcd"]
    assert folder.resolve() == kept and [p.name for p in (tmp_path / ".checkpoints").iterdir()] == [kept.name]


def test_flipped_bits_are_named(tmp_path):
    folder = tmp_path / "last"
    save(tiny_model(0), folder, epoch=0)
    assert verify_checkpoint(folder) == []
    import stat

    from pipeline.common.fsutil import FILE_MODE

    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {FILE_MODE}  # safetensors alone: 0600
    for name in ("model.safetensors", "train_state.pt"):
        path = folder / name
        data = bytearray(path.read_bytes())
        data[len(data) - 100] ^= 0x01  # inside the tensor data: the file still parses
        path.write_bytes(bytes(data))
    problems = verify_checkpoint(folder)
    assert len(problems) == 2 and all("sha256" in p for p in problems), problems
    from pipeline.cli import main

    assert main(["verify", str(folder)]) == 1 and main(["verify", str(tmp_path)]) == 1  # a checkpoint, a run
    assert {Path(p.split(": ")[0]).name for p in problems} == {"model.safetensors", "train_state.pt"}
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 .* differs"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match=r"train_state\.pt: sha256 .* differs"):
        load_train_state(folder)


def _bad_json(folder: Path) -> None:
    (folder / "config.json").write_text('{"model": {"arch": "lstm_transformer",')


def _no_model_key(folder: Path) -> None:
    (folder / "config.json").write_text('{"extra": {}}')


def _unknown_model_key(folder: Path) -> None:
    meta = json.loads((folder / "config.json").read_text())
    meta["model"]["wdith"] = 3
    (folder / "config.json").write_text(json.dumps(meta))


def _truncated_weights(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:50])


def _garbage_state(folder: Path) -> None:
    (folder / "train_state.pt").write_bytes(b"PK\x03\x04 not really a zip archive")


def _state_without_rng(folder: Path) -> None:
    torch.save({"epoch": 0, "best_val": 1.0, "optimizer": {}, "scheduler": {}}, folder / "train_state.pt")


DAMAGES = {  # damage -> (file named, what the message says was expected)
    "bad_json": (_bad_json, "config.json", r"line 1, column \d+\): not valid JSON"),
    "no_model_key": (_no_model_key, "config.json", r'expected a JSON object \{"model"'),
    "unknown_model_key": (_unknown_model_key, "config.json", r"unknown ModelConfig keys: \['wdith'\]"),
    "truncated_weights": (_truncated_weights, "model.safetensors", "not a readable safetensors file"),
    "garbage_state": (_garbage_state, "train_state.pt", "not a readable training state"),
    "state_without_rng": (_state_without_rng, "train_state.pt", r"lacks \['rng'\]"),
}


STRUCTURAL = ("bad_json", "no_model_key")  # config.json is parsed before the checksums are compared


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("with_checksums", [True, False], ids=["checksums", "legacy"])
def test_damaged_files_are_named(tmp_path, damage, with_checksums):
    apply, name, expected = DAMAGES[damage]
    folder = tmp_path / "last"
    save(tiny_model(0), folder, epoch=0)
    if not with_checksums:  # a folder written before checksums: the structural checks alone must name it
        (folder / "checksums.json").unlink()
    apply(folder)
    load = load_train_state if name == "train_state.pt" else load_checkpoint
    if with_checksums and damage not in STRUCTURAL:  # well-formed but changed: the checksum names it
        expected = r"sha256 .* differs"
    with pytest.raises(CheckpointError, match=expected) as err:
        load(folder)
    assert Path(err.value.path).name == name, str(err.value)
    assert any(name in p for p in verify_checkpoint(folder)), verify_checkpoint(folder)


def test_non_finite_weights_are_refused_at_load(tmp_path):
    model = tiny_model(0)
    with torch.no_grad():
        model.out_proj.weight[0, 0] = float("nan")
        model.in_proj.bias[1] = float("inf")
    save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(NonFiniteWeightsError, match=r"2 tensors hold NaN or inf.*in_proj\.bias \(1\)") as err:
        load_checkpoint(tmp_path / "ckpt")
    assert Path(err.value.path).name == "model.safetensors"
    assert any("NaN or inf" in p for p in verify_checkpoint(tmp_path / "ckpt"))


def test_plain_folder_from_before_is_read_and_put_back_if_a_switch_was_killed(tmp_path):
    folder = tmp_path / "best"
    save(tiny_model(0), folder, epoch=0)
    plain = tmp_path / "plain"
    shutil.copytree(folder, plain)
    (plain / "checksums.json").unlink()
    folder.unlink()
    shutil.rmtree(tmp_path / ".checkpoints")
    plain.rename(folder)  # a plain folder without checksums, as written before this scheme
    assert load_checkpoint(folder)[1] == {"epoch": 0}
    assert any("checksums.json: missing" in p for p in verify_checkpoint(folder))
    # a kill between moving it aside and linking the new unit: the sweep puts it back
    (tmp_path / ".checkpoints").mkdir()
    folder.rename(tmp_path / ".checkpoints" / "best.legacy")
    sweep_checkpoints(tmp_path)
    assert folder.is_dir() and not folder.is_symlink() and load_checkpoint(folder)[1] == {"epoch": 0}
    save(tiny_model(1), folder, epoch=1)  # the first switch replaces it by a link
    assert folder.is_symlink() and verify_checkpoint(folder) == []
    assert [p.name for p in (tmp_path / ".checkpoints").iterdir()] == [folder.resolve().name]


# ---------------------------------------------------------------------------------------------------------
# training: kill anywhere, resume exactly or refuse

SMALL = preset("tiny", n_blocks=1, width=16, n_heads=2, epochs=2)


@pytest.fixture(scope="module")
def runs(built_dataset, tmp_path_factory) -> dict[str, Path]:
    """An uninterrupted 2-epoch run and one stopped after its first epoch (copied by each test)."""
    root = tmp_path_factory.mktemp("runs")
    dataset = built_dataset / "dataset"
    train(dataset, root / "straight", SMALL, progress=False)
    train(dataset, root / "first", SMALL, progress=False, stop_after_epochs=1)
    return {"dataset": dataset, "straight": root / "straight", "first": root / "first"}


def assert_same_run(expected: Path, run: Path) -> None:
    for name in ("last", "best"):
        a, b = load_file(str(expected / name / "model.safetensors")), load_file(str(run / name / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        assert verify_checkpoint(run / name) == [], name
    cols = ["epoch", "train_loss", "valid_loss", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(expected / "log.csv")[cols], pd.read_csv(run / "log.csv")[cols])
    linked = {(run / n).resolve().name for n in ("last", "best")}
    assert {p.name for p in (run / ".checkpoints").iterdir()} == linked  # nothing left over


def test_training_killed_at_any_step_of_an_epoch_end_resumes_exactly(runs, tmp_path, monkeypatch):
    kill_points = 0
    while True:
        run = tmp_path / f"kill{kill_points}"
        shutil.copytree(runs["first"], run, symlinks=True)
        with monkeypatch.context() as m:
            kill_at(m, kill_points)
            try:
                train(runs["dataset"], run, SMALL, progress=False)
            except SimulatedKill:
                pass
            else:
                break
        assert verify_checkpoint(run / "last") == [] and verify_checkpoint(run / "best") == []
        train(runs["dataset"], run, SMALL, progress=False)  # resume
        assert_same_run(runs["straight"], run)
        kill_points += 1
    # best unit (weights, config, checksums), its switch, the old best's removal, the same for last
    # (plus train_state), then log.csv: at least 8 durable steps, every one a kill point above
    assert kill_points >= 8, kill_points


def test_resume_from_a_plain_folder_without_checksums_continues_exactly(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["first"], run, symlinks=False)  # last/ and best/ as plain folders
    for name in ("last", "best"):
        (run / name / "checksums.json").unlink()
    shutil.rmtree(run / ".checkpoints")
    train(runs["dataset"], run, SMALL, progress=False)
    assert_same_run(runs["straight"], run)


def _weights_ahead_of_state(run: Path, runs: dict) -> None:
    """What a kill between the old code's separate writes left: epoch-1 weights, epoch-0 optimiser state."""
    last = run / "last"
    state = (last / "train_state.pt").read_bytes()
    last.unlink()
    shutil.copytree(runs["straight"] / "last", last)
    (last / "train_state.pt").write_bytes(state)
    (last / "checksums.json").unlink()


def _flipped_state(run: Path, runs: dict) -> None:
    path = run / "last" / "train_state.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _missing_state(run: Path, runs: dict) -> None:
    (run / "last" / "train_state.pt").unlink()


def _broken_config(run: Path, runs: dict) -> None:
    (run / "last" / "config.json").write_text("{")


REFUSALS = {  # damage -> (file named, what is inconsistent)
    "weights_ahead_of_state": (_weights_ahead_of_state, "train_state.pt", "training state of epoch 0 but weights "
                                                                           "of epoch 1"),
    "flipped_state": (_flipped_state, "train_state.pt", "sha256 .* differs"),
    "missing_state": (_missing_state, "train_state.pt", "missing"),
    "broken_config": (_broken_config, "config.json", "not valid JSON"),
}


@pytest.mark.parametrize("damage", sorted(REFUSALS))
def test_resume_refuses_an_inconsistent_last_naming_the_file(runs, tmp_path, damage):
    apply, name, expected = REFUSALS[damage]
    run = tmp_path / "run"
    shutil.copytree(runs["first"], run, symlinks=True)
    apply(run, runs)
    with pytest.raises(CheckpointError, match=expected) as err:
        train(runs["dataset"], run, SMALL, progress=False)
    path = Path(err.value.path)  # the file in the unit `last` links to (the link is resolved once)
    assert path.name == name and path.parent == (run / "last").resolve(), str(err.value)


# ---------------------------------------------------------------------------------------------------------
# evaluation of models with non-finite weights or output


def test_frechet_distance_of_non_finite_statistics_is_nan():
    from pipeline.evaluation.metrics import frechet_distance

    cov = np.eye(2)
    assert math.isnan(frechet_distance([0.0, np.nan], cov, [0.0, 0.0], cov))
    assert math.isnan(frechet_distance([0.0, 0.0], np.full((2, 2), np.inf), [0.0, 0.0], cov))
    assert frechet_distance([1.0, 0.0], cov, [0.0, 0.0], cov) == pytest.approx(1.0)


def test_evaluation_reports_non_finite_models_and_scores_the_rest(runs, tmp_path, caplog):
    from pipeline.evaluation.evaluate import EvalConfig, evaluate

    model, extra = load_checkpoint(runs["first"] / "last")
    with torch.no_grad():
        model.out_proj.bias[0] = float("nan")
    save_checkpoint(model, tmp_path / "nan_weights", extra)
    model, extra = load_checkpoint(runs["first"] / "last")
    with torch.no_grad():  # finite weights whose products overflow float32: inf, then NaN, output
        model.out_norm.weight.fill_(1e30)
        model.out_proj.weight.fill_(1e30)
    save_checkpoint(model, tmp_path / "overflow", extra)
    cfg = EvalConfig(eval_frames=62, long_window=62, short_window=25, n_samples=4, video_samples=0,
                     rtf_samples=1, figure_samples=1)
    out = tmp_path / "eval"
    with caplog.at_level("ERROR", logger="pipeline.evaluation.evaluate"):
        results = evaluate(runs["dataset"], {"good": runs["first"], "nan": tmp_path / "nan_weights",
                                             "overflow": tmp_path / "overflow"}, out, cfg)
    table = results["table"]
    assert list(table)[-3:] == ["good", "nan", "overflow"]
    assert all(v is not None and math.isfinite(v) for v in table["good"].values()), table["good"]
    for name in ("nan", "overflow"):
        assert all(v is None for v in table[name].values()), table[name]
        assert results["models"][name]["non_finite"] == results["non_finite"][name]
        assert all(v is None for v in results["conventions"]["rows"][name].values())
    assert results["non_finite"]["nan"]["source"] == "weights"
    assert "model.safetensors" in results["non_finite"]["nan"]["detail"]
    overflow = results["non_finite"]["overflow"]
    assert overflow["source"] == "output" and overflow["windows"] == results["samples"]["window_ids"]
    assert "good" not in results["non_finite"]
    text = (out / "report.md").read_text()
    assert "**Non-finite output: overflow**" in text and overflow["windows"][0] in text
    assert "**Non-finite output: nan**" in text and "| nan (non-finite) |" in text
    csv = pd.read_csv(out / "table.csv").set_index("method")
    assert csv.loc["overflow"].isna().all() and csv.loc["good"].notna().all()
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "overflow" in logged and "nan" in logged
