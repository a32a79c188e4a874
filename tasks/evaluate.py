"""`EvaluateLHG`: the paper's Table I, figures and JSON for trained checkpoints (thin wrapper over
pipeline.evaluation.evaluate). Without --checkpoints it trains one model through TrainLHG first, so

    luigi --module pipeline EvaluateLHG --preset tiny

runs the whole chain on the sample corpus: build, train, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline.common.fsutil import stable_hash
from pipeline.common.settings import field_values
from pipeline.evaluation.config import EvalConfig

from .build import BuildSplits
from .params import mixin_values, option_values, settings_mixin
from .train import DatasetSettings, TrainLHG, TrainSettings, dataset_task


def parse_checkpoints(text: str) -> dict[str, str]:
    """"name=path,path2" -> {name: path, <run folder name>: path2} (order kept, names unique)."""
    named: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        name, _, path = entry.rpartition("=") if "=" in entry else ("", "", entry)
        if not name:
            p = Path(path.rstrip("/"))
            name = p.parent.name if p.name in ("best", "last") else p.name
        if name in named:
            raise ValueError(f"--checkpoints: method name {name!r} given twice; use name=path")
        named[name] = path
    return named


def method_label(speech: str, arch: str, ssl_models: str) -> str:
    """Table I style row name: FBank / <SSL model> [w/WA], plus the architecture when it is the baseline."""
    if speech == "fbank":
        label = "FBank"
    else:
        model = Path(ssl_models.split(",")[0].strip().rstrip("/")).name or "SSL"
        label = model + (" w/WA" if speech == "ssl_wa" else "")
    return label + (" (Transformer)" if arch == "transformer" else "")


EvalSettings = settings_mixin("EvalSettings", EvalConfig)


class EvaluateLHG(EvalSettings, TrainSettings, DatasetSettings, luigi.Task):
    """Evaluate checkpoints + Random / Mirror / Delay Mirror baselines into `<out>/eval/<name>/`.

    Takes every BuildSplits setting (the dataset), TrainLHG's (used when --checkpoints is empty) and
    EvalConfig's; --seed and --device serve training and evaluation.
    """

    checkpoints = luigi.Parameter(default="", description="comma-separated [name=]checkpoint or TrainLHG run "
                                                           "folders; empty = train one with the TrainLHG settings")
    name = luigi.Parameter(default="report", description="report folder under <out>/eval/")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._build()  # checks the dataset settings now, before anything is scheduled
        self.eval_config().validate()

    def _build(self) -> BuildSplits:
        return dataset_task(self)

    def _train(self) -> TrainLHG:
        return TrainLHG(**mixin_values(self, TrainSettings), **mixin_values(self, DatasetSettings))

    def requires(self):
        return [self._build()] + ([] if self.checkpoints else [self._train()])

    def eval_config(self) -> EvalConfig:
        from pipeline.evaluation.config import eval_preset

        return eval_preset(self.preset, **field_values(EvalConfig, option_values(self, EvalConfig)))

    def methods(self) -> dict[str, str]:
        if self.checkpoints:
            return parse_checkpoints(self.checkpoints)
        return {method_label(self.speech, self.arch, self.ssl_models): str(self._train().run_dir())}

    def report_dir(self) -> Path:
        return Path(self.out) / "eval" / self.name

    def output(self):
        return luigi.LocalTarget(str(self.report_dir() / "results.json"))

    def input_key(self) -> str | None:
        """Hash of everything the report depends on; None while a checkpoint does not exist yet."""
        from pipeline.common.errors import InputError
        from pipeline.corpus.layout import FileHashCache
        from pipeline.evaluation.generation import checkpoint_folder
        from pipeline.model.network import CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS

        cache = FileHashCache(Path(self.out) / "eval" / ".file_hashes.json")
        weights = {}
        for name, path in self.methods().items():
            try:
                folder = checkpoint_folder(path)
            except InputError:  # not trained yet
                return None
            weights[name] = [cache.sha256(folder / CHECKPOINT_WEIGHTS), cache.sha256(folder / CHECKPOINT_CONFIG)]
        cache.save()
        return stable_hash([self._build().build_id(), weights, self.eval_config().to_dict()], 16)

    def complete(self) -> bool:
        """Done when results.json exists and was made from the same checkpoints, dataset and settings."""
        path = Path(self.output().path)
        if not path.is_file():
            return False
        try:
            stored = json.loads(path.read_text()).get("input_key")
        except (OSError, ValueError):
            return False
        return stored is not None and stored == self.input_key()

    def run(self):
        from pipeline.evaluation.evaluate import evaluate

        key = self.input_key()
        evaluate(Path(self.out) / "dataset", self.methods(), self.report_dir(), self.eval_config(),
                 extra_info={"input_key": key}, corpus=self._build().corpus_dir)
