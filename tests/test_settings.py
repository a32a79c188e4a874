"""One source of settings: Luigi parameters generated from the config dataclasses, TrainLHG / EvaluateLHG
passing every dataset setting on, validation before any work, and the rules that refuse to replace a
dataset built with other settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import luigi
import pytest

from pipeline.common.settings import Option, SettingError, options
from pipeline.config import BuildConfig, dataset_conflicts
from pipeline.evaluation.config import EvalConfig
from pipeline.model.train import PRESETS, TrainConfig
from schemas.conventions import PAPER5_CHANNELS
from tasks import BuildSplits, EvaluateLHG, TrainLHG
from tasks.build import BUILD_CLASSES
from tasks.train import DATASET_RENAME

REPO = Path(__file__).resolve().parents[1]

TASK_SETTINGS = [  # task, the config classes its parameters come from, how dataset options are named there
    (BuildSplits, BUILD_CLASSES, {}),
    (TrainLHG, (*BUILD_CLASSES, TrainConfig), DATASET_RENAME),
    (EvaluateLHG, (*BUILD_CLASSES, EvalConfig, TrainConfig), DATASET_RENAME),
]


@pytest.mark.parametrize(("task_cls", "config_classes", "rename"), TASK_SETTINGS)
def test_generated_parameters_carry_the_field_default_and_help(task_cls, config_classes, rename):
    params = dict(task_cls.get_params())
    seen = set()
    for cls in config_classes:
        for opt in options(cls):
            name = rename.get(opt.name, opt.name) if cls in BUILD_CLASSES else opt.name
            if name in seen:  # EvaluateLHG: one --seed / --device for training and evaluation (EvalConfig's)
                continue
            seen.add(name)
            param = params[name]
            assert opt.spec.help and param.description.startswith(opt.spec.help), (name, param.description)
            if opt.spec.preset_override:
                assert param._default is None  # unset = the preset's value
                continue
            assert opt.value(param._default) == opt.default, name  # unset = the dataclass default
            assert opt.value(param.parse(opt.text(opt.default))) == opt.default, name  # the CLI spelling
            if opt.spec.choices is not None:
                assert param._choices == set(opt.spec.choices), name


def test_unset_parameters_give_the_dataclass_defaults(tmp_path):
    out = str(tmp_path / "out")
    assert BuildSplits(out=out).build_config() == BuildConfig()
    assert TrainLHG(out=out).train_config() == PRESETS["paper"] == TrainConfig()
    assert EvaluateLHG(out=out).eval_config() == EvalConfig()


def test_stage_versions_did_not_move():
    """Existing work/ outputs stay valid: their paths carry these hashes (recorded before the settings moved
    into field metadata; head, session, dataset and ssl moved on purpose with code versions head 2, session 4,
    dataset 3, ssl 2: SSL pieces hold only the frames segments use). The automatic-turns settings (section `turns`) enter no other stage's version: they reach
    only the input hash of sessions without a turns file, so sessions with human turns keep their outputs."""
    default = BuildSplits(out="unused").build_config()
    stages = ("head", "audio", "session", "dataset", "ssl", "turns", "qa")
    assert {s: default.stage_version(s) for s in stages} == {
        "head": "1f237add4d", "audio": "7357f5e147", "session": "e4ad5c4630", "dataset": "a604834e83",
        "ssl": "152d4d6bc9", "turns": "91b6be0f3f", "qa": "1481f13126"}
    for tuned, moved in ((BuildSplits(out="unused", vad_dominance_db=12.0), {"turns", "qa"}),
                         (BuildSplits(out="unused", qa_wrong_tier_share=0.7), {"qa"}),
                         (BuildSplits(out="unused", annotation_qa="quarantine"), set())):
        cfg = tuned.build_config()
        assert {s for s in stages if cfg.stage_version(s) != default.stage_version(s)} == moved
    other = BuildSplits(out="unused", channels="5", ssl_models="a", ssl_causal="strict", ssl_layers="0,2").build_config()
    assert {s: other.stage_version(s) for s in ("head", "session", "dataset", "ssl")} == {
        "head": "64a1433aab", "session": "0290cc7511", "dataset": "18404d3c77", "ssl": "3706096d07"}


def test_parameters_of_an_unused_smoothing_filter_recompute_nothing():
    off = BuildSplits(out="unused").build_config()
    tuned_off = BuildSplits(out="unused", head_smoothing_beta=0.9, head_smoothing_min_cutoff_hz=2.0).build_config()
    assert tuned_off.stage_version("head") == off.stage_version("head")
    on = BuildSplits(out="unused", head_smoothing="one_euro").build_config()
    tuned_on = BuildSplits(out="unused", head_smoothing="one_euro", head_smoothing_beta=0.9).build_config()
    assert len({off.stage_version("head"), on.stage_version("head"), tuned_on.stage_version("head")}) == 3


def _other_value(opt: Option, tmp_path: Path):
    """A valid value different from the default, for every BuildSplits option."""
    face = tmp_path / "face.task"
    face.write_bytes(b"a FaceLandmarker model")
    special = {"split_ratios": "0.7,0.2,0.1", "face_model": str(face), "corpus": str(tmp_path / "corpus"),
               "out": str(tmp_path / "out"), "ssl_models": "m1,m2", "ssl_layers": "0,2", "ssl_device": "cpu"}
    if opt.name in special:
        return special[opt.name]
    if opt.spec.choices is not None:
        return next(text for text, value in opt.spec.choices.items() if value != opt.default)
    if opt.kind is bool:
        return not opt.default
    if opt.kind in (int, float):
        return opt.default + (1 if opt.kind is int else 0.25)
    raise AssertionError(f"add a test value for the new option {opt.flag}")


def test_train_and_evaluate_pass_every_build_setting(tmp_path):
    build_options = [opt for cls in BUILD_CLASSES for opt in options(cls)]
    assert {o.name for o in build_options} == set(BuildSplits.get_param_names())
    values = {opt.name: _other_value(opt, tmp_path) for opt in build_options}
    build = BuildSplits(**values)
    assert build.build_config() != BuildConfig()
    renamed = {DATASET_RENAME.get(name, name): value for name, value in values.items()}
    train = TrainLHG(**renamed, preset="tiny", seed=7)
    evaluate = EvaluateLHG(**renamed, preset="tiny", seed=7)
    for required in (train.requires(), evaluate._build(), evaluate._train().requires()):
        assert required.param_kwargs == build.param_kwargs
    assert build.param_kwargs["seed"] == 1 and train.train_config().seed == 7  # split seed vs training seed


@pytest.mark.parametrize(("params", "flag"), [
    ({"split_ratios": "0.5,0.5"}, "--split-ratios"),
    ({"split_ratios": "0.8,0.1,0.2"}, "--split-ratios"),
    ({"split_ratios": "0.8,x,0.1"}, "--split-ratios"),
    ({"max_gap_s": float("nan")}, "--max-gap-s"),
    ({"max_gap_s": -1.0}, "--max-gap-s"),
    ({"max_invalid_frac": 1.5}, "--max-invalid-frac"),
    ({"merge_gap_s": float("inf")}, "--merge-gap-s"),
    ({"ssl_window_s": 0.0}, "--ssl-window-s"),
    ({"ssl_layers": "0,x"}, "--ssl-layers"),
    ({"shard_mb": 0}, "--shard-mb"),
    ({"face_model": "/no/such/model.task"}, "--face-model"),
])
def test_invalid_settings_fail_when_a_task_is_created(tmp_path, params, flag):
    for task_cls in (BuildSplits, TrainLHG, EvaluateLHG):
        with pytest.raises(SettingError, match=re.escape(flag)):
            task_cls(corpus=str(tmp_path / "corpus"), out=str(tmp_path / "out"), **params)
    assert not (tmp_path / "out").exists()


def test_invalid_setting_on_the_command_line_runs_nothing(sample_corpus, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "BuildSplits", "--corpus", str(sample_corpus),
           "--out", str(out), "--split-ratios", "0.5,0.5", "--local-scheduler"]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "LHG_DASK_SCHEDULER": "inline"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    assert "--split-ratios 0.5,0.5: expected three non-negative numbers" in done.stdout + done.stderr
    assert not (out / "work").exists()  # no HeadFeatures (or anything else) ran


def test_segment_lengths_are_checked():
    with pytest.raises(SettingError, match="min_segment_s <= max_segment_s"):
        replace(BuildConfig().session, min_segment_s=12.0)


def _with(cfg: BuildConfig, **sections) -> BuildConfig:
    return replace(cfg, **{name: replace(getattr(cfg, name), **values) for name, values in sections.items()})


def test_which_setting_changes_conflict_with_a_stored_dataset():
    base = BuildConfig()
    (conflict,) = dataset_conflicts(base, _with(base, head={"channels": PAPER5_CHANNELS}), redraw=False)
    assert conflict.option == "--channels" and "built with 6" in conflict.message and "asks for 5" in conflict.message
    # split settings only under --redraw (which draws the splits afresh)
    (split,) = dataset_conflicts(base, _with(base, dataset={"seed": 3}), redraw=False)
    assert split.splits and split.option == "--seed"
    assert dataset_conflicts(base, _with(base, dataset={"seed": 3, "disjoint": "person"}), redraw=True) == []
    # SSL: adding models is incremental; dropping one or changing how features are computed is not
    hubert = _with(base, ssl={"models": ("hubert",)})
    assert dataset_conflicts(base, _with(base, ssl={"models": ("hubert",), "mode": "strict"}), redraw=False) == []
    assert dataset_conflicts(hubert, _with(base, ssl={"models": ("hubert", "w2v")}), redraw=False) == []
    (dropped,) = dataset_conflicts(hubert, base, redraw=False)
    assert dropped.option == "--ssl-models" and "drop hubert" in dropped.message
    (mode,) = dataset_conflicts(hubert, _with(hubert, ssl={"mode": "strict"}), redraw=False)
    assert mode.option == "--ssl-causal"
    assert dataset_conflicts(hubert, _with(hubert, ssl={"device": "cpu"}), redraw=False) == []  # same values


def test_generated_parameters_are_luigi_parameters_of_the_right_type():
    params = dict(BuildSplits.get_params())
    assert isinstance(params["channels"], luigi.ChoiceParameter)
    assert isinstance(params["max_gap_s"], luigi.FloatParameter)
    assert isinstance(params["shard_mb"], luigi.IntParameter)
    assert isinstance(params["redraw"], luigi.BoolParameter)
    assert params["split_ratios"]._default == "0.8,0.1,0.1" and params["ssl_layers"]._default == ""
    assert isinstance(dict(TrainLHG.get_params())["epochs"], luigi.OptionalIntParameter)
