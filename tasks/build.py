"""Luigi wiring for the dataset build. Thin: every computation lives in `pipeline/`.

    MakeSampleCorpus                       (only when no --corpus is given)
    HeadFeatures   one per participant video/tile   (batched: a batch fans out over Dask)
    AudioFeatures  one per participant audio        (batched likewise)
    SessionSegments one per session: turns -> floor -> listener segments
    BuildSplits    the aggregate: splits, shards, normalisation, rejected.csv, data card

Every output path encodes the content hash of its inputs and the stage's config version, so
`complete()` (outputs exist) can be trusted: changed media or settings produce new paths.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import luigi
import numpy as np
import pandas as pd

from pipeline.common.errors import CorpusLayoutError, InputError
from pipeline.common.fsutil import atomic_path, sha256_file, stable_hash, write_json_atomic
from pipeline.config import BuildConfig, DatasetConfig, HeadConfig, SessionConfig, SSLConfig
from pipeline.corpus.layout import FileHashCache, ParticipantEntry, discover_sessions, read_session
from pipeline.features.jobs import run_audio_job, run_head_job, run_ssl_job
from pipeline.features.ssl.checkpoints import (
    CheckpointError,
    checkpoint_sha256,
    model_tag,
    resolve_checkpoint,
)

from .dask_runner import run_jobs

DEFAULT_OUT = "lhg_out"
logger = logging.getLogger(__name__)


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _record(target: luigi.LocalTarget) -> dict:
    return json.loads(Path(target.path).read_text())


def save_config(out: str, cfg: BuildConfig) -> str:
    """Store the settings under `work/configs/<hash>.json`; tasks carry only the short hash."""
    config_id = stable_hash(cfg.to_dict(), 10)
    path = Path(out) / "work" / "configs" / f"{config_id}.json"
    if not path.exists():
        write_json_atomic(path, cfg.to_dict())
    return config_id


class _StageTask(luigi.Task):
    """Common parameters: where the corpus is, where outputs go, and the build settings."""

    corpus = luigi.Parameter()
    out = luigi.Parameter()
    config_id = luigi.Parameter(description="hash of the BuildConfig stored in work/configs/ by BuildSplits")

    @property
    def cfg(self) -> BuildConfig:
        cached = getattr(self, "_cfg", None)
        if cached is None:
            path = self.work / "configs" / f"{self.config_id}.json"
            cached = self._cfg = BuildConfig.from_dict(json.loads(path.read_text()))
        return cached

    @property
    def work(self) -> Path:
        return Path(self.out) / "work"


class _RecordingTask(_StageTask):
    """One participant recording per key `session/participant/inputhash`; batched over keys."""

    key = luigi.Parameter(batch_method=",".join)
    max_batch_size = 1000
    stage = ""
    suffix = ""

    def keys(self) -> list[str]:
        return sorted(self.key.split(","))

    def _paths(self, key: str) -> tuple[Path, Path]:
        """(record, data file) of one key; ids may contain dots, so names are joined, not suffixed."""
        session_id, participant_id, input_hash = key.split("/")
        folder = self.work / self.stage / session_id
        stem = f"{participant_id}-{input_hash}-{self.cfg.stage_version(self.stage)}"
        return folder / f"{stem}.json", folder / f"{stem}{self.suffix}"

    def output(self):
        return [luigi.LocalTarget(str(self._paths(k)[0])) for k in self.keys()]

    def media_fields(self, entry: ParticipantEntry) -> dict:
        """The job's stage-specific inputs for one participant."""
        raise NotImplementedError

    def job(self, key: str) -> dict:
        session_id, participant_id, _ = key.split("/")
        entry = read_session(self.corpus, session_id).participant(participant_id)
        record, table = self._paths(key)
        return {"session_id": session_id, "participant_id": participant_id,
                "config": self.cfg.to_dict()[self.stage], "out_table": str(table),
                "out_record": str(record), **self.media_fields(entry)}

    def inline(self) -> bool:
        return False

    def run(self):
        jobs = [self.job(k) for k in self.keys() if not Path(self._paths(k)[0]).exists()]
        for record in run_jobs(self.job_fn, jobs, inline=self.inline()):
            self.set_status_message(f"{record['session_id']}/{record['participant_id']}: {record['status']}")


class HeadFeatures(_RecordingTask):
    stage, suffix, job_fn = "head", ".parquet", staticmethod(run_head_job)

    def media_fields(self, entry: ParticipantEntry) -> dict:
        return {"video": str(entry.video), "crop": list(entry.crop) if entry.crop else None}


class AudioFeatures(_RecordingTask):
    stage, suffix, job_fn = "audio", ".npy", staticmethod(run_audio_job)

    def media_fields(self, entry: ParticipantEntry) -> dict:
        return {"audio": str(entry.audio), "offset_s": entry.audio_offset_s}


class SSLFeatures(_RecordingTask):
    """One (recording, model, mode): batched per model and mode, so a worker loads each model once."""

    stage, suffix, job_fn = "ssl", ".npy", staticmethod(run_ssl_job)
    model = luigi.Parameter(description="checkpoint directory or HF id as given by the user")
    model_dir = luigi.Parameter(description="resolved local checkpoint directory")
    model_tag = luigi.Parameter(description="readable name + weights hash, part of output paths")

    def _paths(self, key: str) -> tuple[Path, Path]:
        session_id, participant_id, input_hash = key.split("/")
        folder = self.work / "ssl" / f"{self.model_tag}-{self.cfg.ssl.mode}" / session_id
        stem = f"{participant_id}-{input_hash}-{self.cfg.stage_version('ssl')}"
        return folder / f"{stem}.json", folder / f"{stem}{self.suffix}"

    def inline(self) -> bool:
        """A GPU is driven by this process; CPU work fans out over Dask workers."""
        device = self.cfg.ssl.device
        if device == "auto":
            import torch

            return torch.cuda.is_available()
        return device.startswith("cuda")

    def media_fields(self, entry: ParticipantEntry) -> dict:
        return {"audio": str(entry.audio), "offset_s": entry.audio_offset_s, "model": self.model,
                "model_dir": self.model_dir, "model_tag": self.model_tag}

    def job(self, key: str) -> dict:
        # the first recording of a batch also measures chunked vs one-pass features (data card)
        return {**super().job(key), "self_check": key == self.keys()[0]}


class SessionSegments(_StageTask):
    session_id = luigi.Parameter()
    session_hash = luigi.Parameter()
    head_keys = luigi.ListParameter()
    audio_keys = luigi.ListParameter()

    def requires(self):
        common = {"corpus": self.corpus, "out": self.out, "config_id": self.config_id}
        return {"head": [HeadFeatures(key=k, **common) for k in self.head_keys],
                "audio": [AudioFeatures(key=k, **common) for k in self.audio_keys]}

    def output(self):
        name = f"{self.session_id}-{self.session_hash}-{self.cfg.stage_version('session')}.json"
        return luigi.LocalTarget(str(self.work / "sessions" / name))

    def _usable_tables(self, stage: str) -> dict[str, str]:
        """participant id -> data file of the recordings of `stage` that were not quarantined."""
        tables = {}
        for target in (t for group in self.input()[stage] for t in group):
            rec = _record(target)
            if rec["status"] == "ok":
                tables[rec["participant_id"]] = str(Path(target.path).parent / rec["table"])
        return tables

    def run(self):
        from pipeline.conversation.session import build_session_segments

        spec = read_session(self.corpus, self.session_id)
        head_paths, fbank_paths = self._usable_tables("head"), self._usable_tables("audio")
        usable = sorted(set(head_paths) & set(fbank_paths))
        record = {"session_id": self.session_id, "head_tables": {p: head_paths[p] for p in usable},
                  "fbank_tables": {p: fbank_paths[p] for p in usable}}
        if len(usable) < 2:
            record.update(status="rejected", stage="session", participant_id="", kind="media", file=str(spec.root),
                          where="", reason=f"fewer than two participants with usable video and audio "
                                           f"(usable: {usable or 'none'})")
        else:
            heads = {p: pd.read_parquet(head_paths[p]) for p in usable}
            fbanks = {p: int(np.load(fbank_paths[p], mmap_mode="r").shape[0]) for p in usable}
            try:
                result = build_session_segments(self.session_id, spec.turns_path, spec.participant_ids, heads,
                                                fbanks, self.cfg.session)
            except InputError as exc:
                record.update(status="rejected", stage="turns", participant_id="", kind=exc.kind, file=exc.path,
                              where=exc.where or "", reason=exc.message)
            else:
                table_path = Path(self.output().path).with_suffix(".parquet")
                with atomic_path(table_path) as tmp:
                    result.segments.to_parquet(tmp, index=False)
                dropped_path = Path(self.output().path).with_suffix(".dropped.parquet")
                with atomic_path(dropped_path) as tmp:
                    result.dropped.astype({c: str for c in result.dropped.columns
                                           if result.dropped[c].dtype == object}).to_parquet(tmp, index=False)
                record.update(status="ok", segments_table=str(table_path), dropped_table=str(dropped_path),
                              stats=result.stats)
        if record["status"] == "rejected":
            logger.warning("quarantined session %s (%s): %s", self.session_id, record["stage"], record["reason"])
        write_json_atomic(self.output().path, record)


class MakeSampleCorpus(luigi.Task):
    """Generate the embedded sample corpus (real face photos animated with planted listener nods)."""

    corpus = luigi.Parameter()
    quick = luigi.BoolParameter(default=False)

    def output(self):
        return luigi.LocalTarget(str(Path(self.corpus) / ".complete.json"))

    def run(self):
        from pipeline.sample.corpus import make_sample_corpus

        logger.info("generating the sample corpus in %s%s", self.corpus, " (quick)" if self.quick else "")
        make_sample_corpus(self.corpus, quick=self.quick)


@dataclass
class BuildPlan:
    sessions: list[dict] = field(default_factory=list)  # SessionSegments parameters
    ssl_models: list[dict] = field(default_factory=list)  # model, model_dir, model_tag, weights_sha256
    rejected: list[dict] = field(default_factory=list)  # layout problems found while planning
    inputs: dict = field(default_factory=dict)  # session id -> input hashes, for the data card

    @property
    def fingerprint(self) -> list:
        """Everything the segments and head/FBank shards depend on (not the SSL models)."""
        return [[s["session_id"], s["session_hash"]] for s in self.sessions] + \
            [[r["session_id"], r["reason"]] for r in self.rejected]


def plan_build(corpus: str, out: str, cfg: BuildConfig) -> BuildPlan:
    """Read the corpus layout and hash its inputs (cached) into per-session task parameters."""
    plan = BuildPlan()
    hashes = FileHashCache(Path(out) / "work" / "file_hashes.json")
    for session_id in discover_sessions(corpus):
        try:
            spec = read_session(corpus, session_id)
        except CorpusLayoutError as exc:
            plan.rejected.append({"session_id": session_id, "participant_id": "", "stage": "layout",
                                  "kind": exc.kind, "file": exc.path, "where": exc.where or "",
                                  "reason": exc.message})
            continue
        head_keys, audio_keys, files = [], [], {}
        for p in spec.participants:
            video_sha, audio_sha = hashes.sha256(p.video), hashes.sha256(p.audio)
            files[p.participant_id] = {"video": p.video.name, "video_sha256": video_sha,
                                       "audio": p.audio.name, "audio_sha256": audio_sha}
            head_keys.append(f"{session_id}/{p.participant_id}/{stable_hash([video_sha, p.crop], 16)}")
            audio_keys.append(f"{session_id}/{p.participant_id}/{stable_hash([audio_sha, p.audio_offset_s], 16)}")
        turns_sha = hashes.sha256(spec.turns_path)
        layout_sha = sha256_file(spec.root / "participants.csv")
        session_hash = stable_hash([session_id, layout_sha, turns_sha, head_keys, audio_keys], 12)
        plan.sessions.append({"session_id": session_id, "session_hash": session_hash,
                              "head_keys": head_keys, "audio_keys": audio_keys})
        plan.inputs[session_id] = {"participants_csv_sha256": layout_sha, "turns": spec.turns_path.name,
                                   "turns_sha256": turns_sha, "media": files}
    for name in cfg.ssl.models:
        try:
            folder = resolve_checkpoint(name)
        except CheckpointError as exc:
            raise RuntimeError(f"--ssl-models: {exc}") from None
        digest = checkpoint_sha256(folder, hasher=hashes.sha256)
        plan.ssl_models.append({"model": name, "model_dir": str(folder), "model_tag": model_tag(name, digest),
                                "weights_sha256": digest})
    hashes.save()
    return plan


class BuildSplits(luigi.Task):
    """Build the speaker-disjoint LHG dataset: `luigi --module pipeline BuildSplits`."""

    corpus = luigi.Parameter(default="", description="corpus folder (default: generate the sample corpus)")
    out = luigi.Parameter(default=DEFAULT_OUT, description="output folder")
    disjoint = luigi.ChoiceParameter(choices=["listener", "person"], default="listener")
    split_ratios = luigi.Parameter(default="0.8,0.1,0.1", description="train,valid,test share of duration")
    seed = luigi.IntParameter(default=0)
    redraw = luigi.BoolParameter(default=False, description="ignore the split registry and draw afresh")
    strict = luigi.BoolParameter(default=False, description="fail on any quarantined input")
    shard_mb = luigi.IntParameter(default=256)
    fbank_dtype = luigi.ChoiceParameter(choices=["float32", "float16"], default="float32")
    channels = luigi.ChoiceParameter(choices=["6", "5"], default="6",
                                     description="6 static head channels (18 dims) or the paper's 5 (15)")
    max_gap_s = luigi.FloatParameter(default=0.5)
    face_model = luigi.Parameter(default="", description="optional MediaPipe FaceLandmarker .task file")
    backchannel_max_s = luigi.FloatParameter(default=1.0)
    merge_gap_s = luigi.FloatParameter(default=0.5)
    max_invalid_frac = luigi.FloatParameter(default=0.1)
    quick_sample = luigi.BoolParameter(default=False, description="smaller sample corpus (tests)")
    ssl_models = luigi.Parameter(default="", description="comma-separated SSL checkpoint dirs or HF ids")
    ssl_causal = luigi.ChoiceParameter(choices=["none", "attention", "strict"], default="attention",
                                       description="none = bidirectional (paper's NAR), attention = masked "
                                                   "self-attention (paper), strict = exactly causal")
    ssl_window_s = luigi.FloatParameter(default=15.0, description="strict mode: causal attention window")
    ssl_context_s = luigi.FloatParameter(default=5.0, description="none/attention: context around each window")
    ssl_layers = luigi.Parameter(default="", description="comma-separated hidden-state indices (default all)")
    ssl_dtype = luigi.ChoiceParameter(choices=["float16", "float32", "bfloat16"], default="float16")
    ssl_autocast = luigi.ChoiceParameter(choices=["", "bfloat16", "float16"], default="",
                                         description="mixed precision for the SSL forward (GPU)")
    ssl_device = luigi.Parameter(default="auto", description="auto (GPU when present), cpu or cuda")

    @property
    def corpus_dir(self) -> str:
        return self.corpus or str(Path(self.out) / "sample_corpus")

    def build_config(self) -> BuildConfig:
        from schemas.conventions import PAPER5_CHANNELS, STATIC_CHANNELS

        ratios = tuple(float(x) for x in self.split_ratios.split(","))
        return BuildConfig(
            head=HeadConfig(channels=STATIC_CHANNELS if self.channels == "6" else PAPER5_CHANNELS,
                            max_gap_s=self.max_gap_s, face_model=str(Path(self.face_model).resolve()) if
                            self.face_model else "",
                            face_model_sha256=sha256_file(self.face_model) if self.face_model else ""),
            session=SessionConfig(merge_gap_s=self.merge_gap_s, backchannel_max_s=self.backchannel_max_s,
                                  max_invalid_frac=self.max_invalid_frac),
            dataset=DatasetConfig(disjoint=self.disjoint, ratios=ratios, seed=self.seed, shard_mb=self.shard_mb,
                                  fbank_dtype=self.fbank_dtype),
            ssl=SSLConfig(models=tuple(m.strip() for m in self.ssl_models.split(",") if m.strip()),
                          mode=self.ssl_causal, window_s=self.ssl_window_s, context_s=self.ssl_context_s,
                          layers=tuple(int(x) for x in self.ssl_layers.split(",") if x.strip()),
                          dtype=self.ssl_dtype, autocast=self.ssl_autocast, device=self.ssl_device))

    def requires(self):
        return [] if self.corpus else [MakeSampleCorpus(corpus=self.corpus_dir, quick=self.quick_sample)]

    def plan(self) -> tuple[BuildConfig, BuildPlan, str]:
        """Settings, per-session task parameters and the build id (hash of all of them)."""
        cfg = self.build_config()
        plan = plan_build(self.corpus_dir, self.out, cfg)
        ssl = [[m["model_tag"], cfg.ssl.mode, cfg.stage_version("ssl")] for m in plan.ssl_models]
        build_id = stable_hash([plan.fingerprint, cfg.stage_version("dataset"), self.redraw, self.strict, ssl], 12)
        return cfg, plan, build_id

    def build_id(self) -> str:
        if not (Path(self.corpus_dir) / "sessions").is_dir():
            return "pending"  # the sample corpus is generated first
        return self.plan()[2]

    def output(self):
        # Planning hashes the corpus (cached by size/mtime); do it once per task instance.
        if getattr(self, "_build_id", "pending") == "pending":
            self._build_id = self.build_id()
        return luigi.LocalTarget(str(Path(self.out) / "dataset" / f"build-{self._build_id}.json"))

    def run(self):
        from pipeline.dataset.assemble import SessionInputs, SSLSet, build_dataset
        from pipeline.dataset.datacard import write_data_card, write_rejected

        cfg, plan, build_id = self.plan()
        if not getattr(self, "_announced", False):  # run() restarts once its dynamic dependencies are done
            self._announced = True
            logger.info("corpus %s: %d session(s), %d recording(s), %d with layout errors; build %s",
                        self.corpus_dir, len(plan.sessions), sum(len(s["head_keys"]) for s in plan.sessions),
                        len(plan.rejected), build_id)
        common = {"corpus": self.corpus_dir, "out": self.out, "config_id": save_config(self.out, cfg)}
        session_tasks = [SessionSegments(**common, **s) for s in plan.sessions]
        ssl_tasks = {m["model_tag"]: [SSLFeatures(**common, key=k, model=m["model"], model_dir=m["model_dir"],
                                                  model_tag=m["model_tag"])
                                      for s in plan.sessions for k in s["audio_keys"]]
                     for m in plan.ssl_models}
        # dynamic dependencies: the plan needs the corpus to exist
        yield session_tasks + [t for ts in ssl_tasks.values() for t in ts]

        records, rejected = [], list(plan.rejected)
        for task in session_tasks:
            rec = _record(task.output())
            records.append(rec)
            for group in ("head", "audio"):
                for target in (t for ts in task.input()[group] for t in ts):
                    sub = _record(target)
                    if sub["status"] == "rejected":
                        rejected.append(sub)
            if rec["status"] == "rejected":
                rejected.append(rec)
        ssl_sets = []
        for m in plan.ssl_models:
            tables: dict[str, dict[str, Path]] = {}
            shapes, checks = set(), []
            for task in ssl_tasks[m["model_tag"]]:
                target = task.output()[0]
                rec = _record(target)
                if rec["status"] == "ok":
                    tables.setdefault(rec["session_id"], {})[rec["participant_id"]] = \
                        Path(target.path).parent / rec["table"]
                    shapes.add(tuple(rec["shape"][1:]))
                    if rec.get("chunking_check"):
                        checks.append(rec["chunking_check"])
                else:
                    rejected.append(rec)
            n_states, dim = shapes.pop() if len(shapes) == 1 else (None, None)
            spec = {"model": m["model"], "model_tag": m["model_tag"], "weights_sha256": m["weights_sha256"],
                    "transformers_version": _version("transformers"), "hidden_states": n_states, "dim": dim,
                    "frames_per_head_frame": 4, "chunking_check": checks[:1],
                    **{k: v for k, v in cfg.to_dict()["ssl"].items() if k not in ("models", "device")}}
            ssl_sets.append(SSLSet(f"{m['model_tag']}-{cfg.ssl.mode}", spec, tables))
        dataset_dir = Path(self.out) / "dataset"
        write_rejected(dataset_dir / "rejected.csv", rejected)
        if rejected and self.strict:
            lines = "\n".join(f"  {r['session_id']}/{r.get('participant_id', '')}: {r['file']}: {r['reason']}"
                              for r in rejected)
            raise RuntimeError(f"--strict: {len(rejected)} input(s) quarantined:\n{lines}")
        sessions = [SessionInputs(r["session_id"], Path(r["segments_table"]),
                                  {p: Path(v) for p, v in r["head_tables"].items()},
                                  {p: Path(v) for p, v in r["fbank_tables"].items()}, r["stats"])
                    for r in records if r["status"] == "ok"]
        summary = build_dataset(sessions, dataset_dir, cfg, build_id=build_id, redraw=self.redraw, ssl_sets=ssl_sets)
        summary.update(corpus=str(Path(self.corpus_dir).resolve()), config=cfg.to_dict(), inputs=plan.inputs,
                       sessions={r["session_id"]: r.get("stats", {}) for r in records},
                       rejected=rejected)
        write_data_card(dataset_dir, summary)
        for old in dataset_dir.glob("build-*.json"):
            old.unlink()
        write_json_atomic(Path(self.out) / "dataset" / f"build-{build_id}.json", summary)
        logger.info("dataset %s: %d segments %s, %d quarantined input(s) listed in rejected.csv; see data_card.md",
                    dataset_dir, summary["n_segments"], summary["segments_per_split"], len(rejected))
