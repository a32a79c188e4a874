"""`EvaluateLHG`: the paper's Table I, figures and JSON for trained checkpoints (thin wrapper over
pipeline.evaluation.evaluate). Without --checkpoints it trains one model through TrainLHG first, so

    luigi --module pipeline EvaluateLHG --preset tiny

runs the whole chain on the sample corpus: build, train, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline.common.fsutil import stable_hash

from .build import DEFAULT_OUT, BuildSplits
from .train import TrainLHG


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


class EvaluateLHG(luigi.Task):
    """Evaluate checkpoints + Random / Mirror / Delay Mirror baselines into `<out>/eval/<name>/`."""

    corpus = luigi.Parameter(default="", description="corpus folder (default: the sample corpus)")
    out = luigi.Parameter(default=DEFAULT_OUT)
    quick_sample = luigi.BoolParameter(default=False)
    checkpoints = luigi.Parameter(default="", description="comma-separated [name=]checkpoint or TrainLHG run "
                                                           "folders; empty = train one with the TrainLHG settings")
    name = luigi.Parameter(default="report", description="report folder under <out>/eval/")
    # used when --checkpoints is empty (passed to TrainLHG), and for SSL features of the dataset
    preset = luigi.ChoiceParameter(choices=["paper", "tiny"], default="paper")
    arch = luigi.ChoiceParameter(choices=["lstm_transformer", "transformer"], default="lstm_transformer")
    speech = luigi.ChoiceParameter(choices=["fbank", "ssl_concat", "ssl_wa"], default="fbank")
    ssl_models = luigi.Parameter(default="", description="SSL checkpoints the evaluated models were trained on")
    ssl_causal = luigi.ChoiceParameter(choices=["none", "attention", "strict"], default="attention")
    epochs = luigi.OptionalIntParameter(default=None)
    seed = luigi.IntParameter(default=0, description="training seed and evaluation seed (sampling, Random, k-means)")
    device = luigi.Parameter(default="auto")
    # evaluation settings (pipeline.evaluation.evaluate.EvalConfig)
    split = luigi.ChoiceParameter(choices=["test", "valid", "train"], default="test",
                                  description="split to evaluate (train/valid for diagnostics only)")
    n_samples = luigi.IntParameter(default=400)
    eval_frames = luigi.IntParameter(default=125, description="generated frames per sample (125 = 10 s)")
    long_window = luigi.IntParameter(default=125, description="L2 / Var window (frames)")
    short_window = luigi.IntParameter(default=25, description="FID / P-FID / SI window (frames)")
    advance = luigi.IntParameter(default=1, description="frames kept per generation step (1..3)")
    l2_convention = luigi.ChoiceParameter(choices=["mse", "euclidean"], default="mse")
    fd_mode = luigi.ChoiceParameter(choices=["per_window", "pooled"], default="per_window")
    si_clusters = luigi.IntParameter(default=8)
    si_mode = luigi.ChoiceParameter(choices=["per_window", "pooled"], default="per_window")
    pcc_mode = luigi.ChoiceParameter(choices=["per_sequence", "pooled"], default="per_sequence")
    activity_k_high = luigi.FloatParameter(default=3.0)
    activity_k_low = luigi.FloatParameter(default=1.5)

    def _build(self) -> BuildSplits:
        return BuildSplits(corpus=self.corpus, out=self.out, ssl_models=self.ssl_models, ssl_causal=self.ssl_causal,
                           quick_sample=self.quick_sample)

    def _train(self) -> TrainLHG:
        return TrainLHG(corpus=self.corpus, out=self.out, preset=self.preset, arch=self.arch, speech=self.speech,
                        ssl_models=self.ssl_models, ssl_causal=self.ssl_causal, epochs=self.epochs, seed=self.seed,
                        device=self.device, quick_sample=self.quick_sample)

    def requires(self):
        return [self._build()] + ([] if self.checkpoints else [self._train()])

    def eval_config(self):
        from pipeline.evaluation.evaluate import EvalConfig

        return EvalConfig(split=self.split, n_samples=self.n_samples, eval_frames=self.eval_frames,
                          long_window=self.long_window, short_window=self.short_window, advance=self.advance,
                          l2_convention=self.l2_convention, fd_mode=self.fd_mode, si_clusters=self.si_clusters,
                          si_mode=self.si_mode, pcc_mode=self.pcc_mode, activity_k_high=self.activity_k_high,
                          activity_k_low=self.activity_k_low, seed=self.seed, device=self.device)

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
        from pipeline.evaluation.evaluate import checkpoint_folder
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
                 extra_info={"input_key": key})
