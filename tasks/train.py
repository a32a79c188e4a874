"""`TrainLHG`: train the listener model on a built dataset (thin wrapper over pipeline.model.train).

TrainLHG takes every BuildSplits setting and passes them to the BuildSplits it requires, so it
trains on exactly the dataset those settings describe (a dataset in --out built with other settings
is refused, never silently rebuilt). Its --seed is the training seed; the dataset's split seed is
--split-seed here.

Under torchrun every process runs this task (`torchrun ... -m luigi --module pipeline TrainLHG
--local-scheduler --no-lock`, README "Training at scale"): the processes train data-parallel and only
rank 0 writes DONE.json. The dataset must be built before: several processes building it at once
would collide.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.common.fsutil import stable_hash, write_json_atomic
from pipeline.common.settings import field_values
from pipeline.model.distributed import ranks_from_environment
from pipeline.model.train import PRESETS, TrainConfig

from .build import BUILD_CLASSES, BuildSplits
from .params import option_values, settings_mixin

DATASET_RENAME = {"seed": "split_seed"}  # --seed is the training seed in TrainLHG and EvaluateLHG
DatasetSettings = settings_mixin("DatasetSettings", *BUILD_CLASSES, rename=DATASET_RENAME)


class TrainSettings(settings_mixin("TrainConfigSettings", TrainConfig)):
    """TrainConfig's settings plus the preset they override."""

    preset = luigi.ChoiceParameter(choices=sorted(PRESETS), default="paper", positional=False,
                                   description="paper settings, or tiny (the sample corpus on a CPU in minutes)")


def dataset_task(task: luigi.Task) -> BuildSplits:
    """The BuildSplits of a task that mixes in DatasetSettings: the same settings, BuildSplits' names."""
    return BuildSplits(**option_values(task, *BUILD_CLASSES, rename=DATASET_RENAME))


class TrainLHG(TrainSettings, DatasetSettings, luigi.Task):
    """`luigi --module pipeline TrainLHG --preset tiny` trains on the sample corpus (CPU, minutes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        dataset = self.requires()  # checks the dataset settings now, before anything is scheduled
        if ranks_from_environment().distributed and not dataset.complete():
            raise RuntimeError(f"TrainLHG under torchrun needs the dataset built first, by one process: "
                               f"luigi --module pipeline BuildSplits --out {self.out} ... (the same settings)")

    def requires(self):
        return dataset_task(self)

    def train_config(self) -> TrainConfig:
        from pipeline.model.train import preset

        ssl_set = self._ssl_set() if self.speech != "fbank" else ""
        return preset(self.preset, ssl_set=ssl_set, **field_values(TrainConfig, option_values(self, TrainConfig)))

    def _ssl_set(self) -> str:
        from pipeline.dataset.assemble import ssl_set_for

        if not self.ssl_models:
            raise ValueError(f"--speech {self.speech} needs --ssl-models")
        return ssl_set_for(Path(self.out) / "dataset", self.ssl_models.split(",")[0].strip(), self.ssl_causal)

    def run_dir(self) -> Path:
        build = Path(self.requires().output().path).stem  # changes whenever the dataset does
        key = [build, self.preset, self.arch, self.speech, self.ssl_models, self.ssl_causal, self.epochs,
               self.seed]
        if self.layer_weight_lr:  # only when set, so existing run folders keep their names
            key.append(self.layer_weight_lr)
        return Path(self.out) / "models" / f"{self.preset}-{self.arch}-{self.speech}-{stable_hash(key, 10)}"

    def output(self):
        return luigi.LocalTarget(str(self.run_dir() / "DONE.json"))

    def run(self):
        from pipeline.model.train import train

        run_dir = self.run_dir()
        summary = train(Path(self.out) / "dataset", run_dir, self.train_config())
        if ranks_from_environment().main:  # the other processes of a torchrun return without writing
            write_json_atomic(run_dir / "DONE.json", {k: v for k, v in summary.items() if k != "history"})
