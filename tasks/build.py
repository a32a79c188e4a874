"""Luigi wiring for the dataset build. Thin: every computation lives in `pipeline/`.

    MakeSampleCorpus                       (only when no --corpus is given)
    HeadFeatures   one per participant video/tile   (batched: a batch fans out over Dask)
    AudioFeatures  one per participant audio        (batched likewise)
    SSLFeatures    one per (participant audio, SSL model)
    AutomaticTurns one per session without a turns file: talk spans from each participant's audio
                   (also for sessions with one, as the reference of AnnotationQA)
    AnnotationQA   one per session with a human turns file: its turns against each track's voice activity
    SessionSegments one per session: turns -> floor -> listener segments
    BuildSplits    the aggregate: splits, shards, normalisation, rejected.csv, data card

Every output path encodes the content hash of its inputs and the stage's config version, so
`complete()` (outputs exist) can be trusted: changed media or settings produce new paths. The
parameters of BuildSplits are generated from the config dataclasses (tasks/params.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import luigi

from pipeline.common.fsutil import output_lock, sweep_stale_temporaries
from pipeline.common.runtime import uses_gpu
from pipeline.config import (
    AnnotationQAConfig,
    AutoTurnsConfig,
    BuildConfig,
    BuildOptions,
    DatasetConfig,
    HeadConfig,
    SessionConfig,
    SSLConfig,
    load_config,
    save_config,
)
from pipeline.config import build_config as make_build_config
from pipeline.corpus.layout import read_session_cached
from pipeline.dataset.plan import (
    BuildPlan,
    SessionPlan,
    SSLModel,
    WorkLayout,
    plan_build,
    recording_jobs,
    refuse_other_settings,
)
from pipeline.features.jobs import run_audio_job, run_head_job, run_ssl_job
from schemas.records import RecordingKey, RecordingRecord

from .dask_runner import gpu_resources, run_jobs
from .params import option_values, settings_mixin

log = logging.getLogger(__name__)

BUILD_CLASSES = (BuildOptions, HeadConfig, SessionConfig, DatasetConfig, SSLConfig, AutoTurnsConfig,
                 AnnotationQAConfig)
BuildSettings = settings_mixin("BuildSettings", *BUILD_CLASSES)


class DatasetTarget(luigi.LocalTarget):
    """A build marker that counts only while every file of the dataset is there with its size: a
    deleted or truncated shard makes the build run again and rewrite what is missing."""

    def exists(self) -> bool:
        from pipeline.dataset.manifest import dataset_problems

        if not super().exists():
            return False
        problems = dataset_problems(Path(self.path).parent, bounds=False)  # sizes only: no-op runs stay fast
        for problem in problems[:5]:
            log.warning("dataset incomplete, rebuilding: %s", problem)
        return not problems


class _StageTask(luigi.Task):
    """Common parameters: where the corpus is, where outputs go, and the build settings."""

    corpus = luigi.Parameter()
    out = luigi.Parameter()
    config_id = luigi.Parameter(description="hash of the BuildConfig stored in work/configs/ by BuildSplits")

    @property
    def cfg(self) -> BuildConfig:
        return load_config(self.out, self.config_id)

    @property
    def layout(self) -> WorkLayout:
        return WorkLayout.of(self.out, self.cfg)


class _RecordingTask(_StageTask):
    """One participant recording per key `session/participant/inputhash`; batched over keys."""

    key = luigi.Parameter(batch_method=",".join)
    max_batch_size = 1000
    stage = ""  # and job_fn: the pipeline.features.jobs function of the stage

    def keys(self) -> list[RecordingKey]:
        return [RecordingKey.parse(k) for k in sorted(self.key.split(","))]

    def ssl_model(self) -> SSLModel | None:
        return None

    def output(self):
        tag = self.ssl_model().model_tag if self.ssl_model() else ""
        return [luigi.LocalTarget(str(self.layout.recording(self.stage, k, tag)[0])) for k in self.keys()]

    def inline(self) -> bool:
        return False

    def dask_resources(self) -> dict[str, float] | None:
        """Dask worker resources each job asks for (None: any worker)."""
        return None

    def run(self):
        jobs = recording_jobs(self.stage, self.keys(), self.corpus, self.layout, self.ssl_model())
        resources = self.dask_resources()  # not `resources`: Luigi's own scheduler resources
        for record in run_jobs(self.job_fn, [job.to_dict() for job in jobs], inline=self.inline() and not resources,
                               resources=resources):
            self.set_status_message(f"{record['session_id']}/{record['participant_id']}: {record['status']}")


class HeadFeatures(_RecordingTask):
    stage, job_fn = "head", staticmethod(run_head_job)


class AudioFeatures(_RecordingTask):
    stage, job_fn = "audio", staticmethod(run_audio_job)


class SSLFeatures(_RecordingTask):
    """One (recording, model, mode): batched per model and mode, so a worker loads each model once."""

    stage, job_fn = "ssl", staticmethod(run_ssl_job)
    model = luigi.Parameter(description="checkpoint directory or HF id as given by the user")
    model_dir = luigi.Parameter(description="resolved local checkpoint directory")
    model_tag = luigi.Parameter(description="readable name + weights hash, part of output paths")

    def ssl_model(self) -> SSLModel:
        return SSLModel(self.model, self.model_dir, self.model_tag)

    def inline(self) -> bool:
        """A GPU is driven by this process; CPU work fans out over Dask workers."""
        return uses_gpu(self.cfg.ssl.device)

    def dask_resources(self) -> dict[str, float] | None:
        """On a cluster with GPU workers (`dask worker --resources GPU=1`) the jobs go to those workers."""
        return gpu_resources(self.cfg.ssl.device)


class AutomaticTurns(_StageTask):
    """Turns of a session without a turns file, from each participant's own audio (cached by `turns_key`)."""

    session_id = luigi.Parameter()
    turns_key = luigi.Parameter(description="hash of the session's audio contents and offsets")

    def output(self):
        return luigi.LocalTarget(str(self.layout.turns(SessionPlan(self.session_id, "", (), (), self.turns_key))[0]))

    def run(self):
        from pipeline.conversation.turns_stage import derive_session_turns

        record, table = self.layout.turns(SessionPlan(self.session_id, "", (), (), self.turns_key))
        derive_session_turns(read_session_cached(self.corpus, self.session_id), self.cfg.turns, table, record)


class AnnotationQA(_StageTask):
    """A human turns file checked against the voice activity of each participant's own track."""

    session_id = luigi.Parameter()
    qa_key = luigi.Parameter(description="automatic-turns key and turns-file hash of the session")

    def plan(self) -> SessionPlan:
        return SessionPlan(self.session_id, "", (), (), qa_key=self.qa_key)

    def requires(self):
        return AutomaticTurns(session_id=self.session_id, turns_key=self.plan().voice_key, corpus=self.corpus,
                              out=self.out, config_id=self.config_id)

    def output(self):
        return luigi.LocalTarget(str(self.layout.qa(self.plan())))

    def run(self):
        from pipeline.conversation.annotation_qa import run_annotation_qa
        from pipeline.conversation.turns_stage import AutoTurnsRecord

        run_annotation_qa(read_session_cached(self.corpus, self.session_id), AutoTurnsRecord.read(self.input().path),
                          self.cfg.qa, self.output().path)


class SessionSegments(_StageTask):
    session_id = luigi.Parameter()
    session_hash = luigi.Parameter()
    head_keys = luigi.ListParameter()
    audio_keys = luigi.ListParameter()
    turns_key = luigi.Parameter(default="", description="automatic turns of a session without a turns file")

    def requires(self):
        common = {"corpus": self.corpus, "out": self.out, "config_id": self.config_id}
        needs = {"head": [HeadFeatures(key=k, **common) for k in self.head_keys],
                 "audio": [AudioFeatures(key=k, **common) for k in self.audio_keys]}
        if self.turns_key:
            needs["turns"] = AutomaticTurns(session_id=self.session_id, turns_key=self.turns_key, **common)
        return needs

    def output(self):
        plan = SessionPlan(self.session_id, self.session_hash, tuple(self.head_keys), tuple(self.audio_keys),
                           self.turns_key)
        return luigi.LocalTarget(str(self.layout.session(plan)))

    def run(self):
        from pipeline.conversation.session import process_session
        from pipeline.conversation.turns_stage import AutoTurnsRecord

        records = {stage: [RecordingRecord.read(t.path) for group in self.input()[stage] for t in group]
                   for stage in ("head", "audio")}
        auto = AutoTurnsRecord.read(self.input()["turns"].path) if self.turns_key else None
        process_session(read_session_cached(self.corpus, self.session_id), records["head"], records["audio"],
                        self.cfg.session, self.output().path, auto)


class MakeSampleCorpus(luigi.Task):
    """Generate the embedded sample corpus (real face photos animated with planted listener nods)."""

    corpus = luigi.Parameter()
    quick = luigi.BoolParameter(default=False)

    def output(self):
        return luigi.LocalTarget(str(Path(self.corpus) / ".complete.json"))

    def run(self):
        from pipeline.sample.generate import make_sample_corpus

        log.info("generating the sample corpus in %s%s", self.corpus, " (quick)" if self.quick else "")
        make_sample_corpus(self.corpus, quick=self.quick)


class BuildSplits(BuildSettings, luigi.Task):
    """Build the speaker-disjoint LHG dataset: `luigi --module pipeline BuildSplits`.

    Settings are checked when the task is created, so a bad value fails before any work is
    scheduled; a dataset in --out built with other settings is refused before any extraction.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.build_config()  # raises SettingError naming the option

    @property
    def corpus_dir(self) -> str:
        return self.corpus or str(Path(self.out) / "sample_corpus")

    def build_config(self) -> BuildConfig:
        return make_build_config(option_values(self, *BUILD_CLASSES))

    def requires(self):
        return [] if self.corpus else [MakeSampleCorpus(corpus=self.corpus_dir, quick=self.quick_sample)]

    def plan(self) -> tuple[BuildConfig, BuildPlan, str]:
        """Settings, per-session task parameters and the build id (hash of all of them)."""
        cfg = self.build_config()
        plan = plan_build(self.corpus_dir, self.out, cfg, rehash=self.rehash)
        return cfg, plan, plan.build_id(cfg, redraw=self.redraw, strict=self.strict)

    def build_id(self) -> str:
        if not (Path(self.corpus_dir) / "sessions").is_dir():
            return "pending"  # the sample corpus is generated first
        return self.plan()[2]

    def output(self):
        # Planning hashes the corpus (cached by size/mtime); do it once per task instance.
        if getattr(self, "_build_id", "pending") == "pending":
            self._build_id = self.build_id()
        return DatasetTarget(str(Path(self.out) / "dataset" / f"build-{self._build_id}.json"))

    def run(self):
        from pipeline.dataset.assemble import assemble_build

        cfg, plan, build_id = self.plan()
        refuse_other_settings(Path(self.out) / "dataset", cfg, redraw=self.redraw, overwrite=self.overwrite)
        if not getattr(self, "_announced", False):  # run() restarts once its dynamic dependencies are done
            self._announced = True
            removed, freed = sweep_stale_temporaries(self.out)
            if removed:
                log.info("removed %d temporary file(s) (%.1f MB) left by killed runs in %s", removed, freed / 1e6,
                         self.out)
            log.info("corpus %s: %d session(s), %d recording(s), %d with layout errors; build %s",
                     self.corpus_dir, len(plan.sessions), sum(len(s.head_keys) for s in plan.sessions),
                     len(plan.rejected), build_id)
        common = {"corpus": self.corpus_dir, "out": self.out, "config_id": save_config(self.out, cfg)}
        # dynamic dependencies: the plan needs the corpus to exist
        yield [SessionSegments(**common, session_id=s.session_id, session_hash=s.session_hash,
                               head_keys=list(s.head_keys), audio_keys=list(s.audio_keys), turns_key=s.turns_key)
               for s in plan.sessions] + \
            [AnnotationQA(**common, session_id=s.session_id, qa_key=s.qa_key) for s in plan.sessions if s.qa_key]
        if plan.ssl_models:  # SSL jobs store only the frames segments use: they follow the segments
            from pipeline.dataset.ssl_sets import plan_ssl_pieces

            pieces = plan_ssl_pieces(plan, WorkLayout.of(self.out, cfg))
            yield [SSLFeatures(**common, key=str(p.key), model=m.model, model_dir=m.model_dir, model_tag=m.model_tag)
                   for m in plan.ssl_models for p in pieces]
        with output_lock(Path(self.out) / "dataset", "BuildSplits"):  # two runs never interleave their writes
            refuse_other_settings(Path(self.out) / "dataset", cfg, redraw=self.redraw, overwrite=self.overwrite)
            summary = assemble_build(plan, cfg, out=self.out, corpus=self.corpus_dir, build_id=build_id,
                                     redraw=self.redraw, strict=self.strict)
        log.info("dataset %s: %d segments %s, %d quarantined input(s) listed in rejected.csv; see data_card.md",
                 Path(self.out) / "dataset", summary["n_segments"], summary["segments_per_split"],
                 len(summary["rejected"]))
