"""`TrainLHG`: train the listener model on a built dataset (thin wrapper over pipeline.model.train)."""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.common.fsutil import stable_hash, write_json_atomic

from .build import DEFAULT_OUT, BuildSplits


class TrainLHG(luigi.Task):
    """`luigi --module pipeline TrainLHG --preset tiny` trains on the sample corpus (CPU, minutes)."""

    corpus = luigi.Parameter(default="", description="corpus folder (default: the sample corpus)")
    out = luigi.Parameter(default=DEFAULT_OUT)
    preset = luigi.ChoiceParameter(choices=["paper", "tiny"], default="paper")
    arch = luigi.ChoiceParameter(choices=["lstm_transformer", "transformer"], default="lstm_transformer")
    speech = luigi.ChoiceParameter(choices=["fbank", "ssl_concat", "ssl_wa"], default="fbank")
    ssl_models = luigi.Parameter(default="", description="SSL checkpoint for ssl_* speech (passed to BuildSplits)")
    ssl_causal = luigi.ChoiceParameter(choices=["none", "attention", "strict"], default="attention")
    epochs = luigi.OptionalIntParameter(default=None, description="override the preset's epochs")
    seed = luigi.IntParameter(default=0)
    device = luigi.Parameter(default="auto")
    amp = luigi.ChoiceParameter(choices=["", "bfloat16"], default="", description="mixed precision")
    quick_sample = luigi.BoolParameter(default=False)

    def requires(self):
        return BuildSplits(corpus=self.corpus, out=self.out, ssl_models=self.ssl_models,
                           ssl_causal=self.ssl_causal, quick_sample=self.quick_sample)

    def train_config(self):
        from pipeline.model.train import preset

        ssl_set = ""
        if self.speech != "fbank":
            ssl_set = self._ssl_set()
        return preset(self.preset, arch=self.arch, speech=self.speech, ssl_set=ssl_set, epochs=self.epochs,
                      seed=self.seed, device=self.device, amp=self.amp)

    def _ssl_set(self) -> str:
        from pipeline.dataset.loader import LHGDataset

        if not self.ssl_models:
            raise ValueError(f"--speech {self.speech} needs --ssl-models")
        sets = LHGDataset.available_ssl(Path(self.out) / "dataset")
        first = self.ssl_models.split(",")[0].strip()
        names = [n for n, spec in sets.items() if spec["model"] == first and spec["mode"] == self.ssl_causal]
        if not names:
            raise ValueError(f"no SSL features for {first} ({self.ssl_causal}) in {self.out}/dataset")
        return names[0]

    def run_dir(self) -> Path:
        build = Path(self.requires().output().path).stem  # changes whenever the dataset does
        key = [build, self.preset, self.arch, self.speech, self.ssl_models, self.ssl_causal, self.epochs,
               self.seed]
        return Path(self.out) / "models" / f"{self.preset}-{self.arch}-{self.speech}-{stable_hash(key, 10)}"

    def output(self):
        return luigi.LocalTarget(str(self.run_dir() / "DONE.json"))

    def run(self):
        from pipeline.model.train import train

        run_dir = self.run_dir()
        summary = train(Path(self.out) / "dataset", run_dir, self.train_config())
        write_json_atomic(run_dir / "DONE.json", {k: v for k, v in summary.items() if k != "history"})
