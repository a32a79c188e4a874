"""Build planning: corpus -> typed per-session plans, the build id, the work-folder layout, the
per-recording jobs, and the guard that refuses to replace a dataset built with other settings.

The corpus layout is read once per session and process (`read_session_cached`) and input files are
hashed once per file version (`FileHashCache`); the Luigi tasks in tasks/build.py only turn these
plans into task parameters and call back here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.errors import CorpusLayoutError, CorruptOutputError
from pipeline.common.fsutil import sha256_file, stable_hash
from pipeline.common.settings import SettingError
from pipeline.config import BuildConfig, SSLConfig, dataset_conflicts
from pipeline.conversation.turns_stage import AUTOMATIC
from pipeline.corpus.layout import FileHashCache, SessionSpec, discover_sessions, read_session_cached
from schemas.records import AudioJob, HeadJob, RecordingJob, RecordingKey, Rejection, SSLJob

log = logging.getLogger(__name__)

DATA_SUFFIX = {"head": ".parquet", "audio": ".npy", "ssl": ".safetensors"}  # ssl: pipeline.features.ssl_pieces


@dataclass(frozen=True)
class SessionPlan:
    """One session's Luigi parameters: its input hash and the keys of its recordings per stage."""

    session_id: str
    session_hash: str
    head_keys: tuple[str, ...]
    audio_keys: tuple[str, ...]
    turns_key: str = ""  # set when the session has no turns file: the key of its automatic turns
    qa_key: str = ""  # human turns under annotation QA: "<automatic turns key>-<turns file sha256[:16]>"

    @property
    def automatic_turns(self) -> bool:
        return bool(self.turns_key)

    @property
    def voice_key(self) -> str:
        """The key of the session's automatic turns (its audio), whether used as turns or for QA."""
        return self.turns_key or self.qa_key.split("-")[0]


@dataclass(frozen=True)
class SSLModel:
    """One SSL checkpoint of a build, resolved to a local folder and identified by its weights."""

    model: str  # as the user named it
    model_dir: str
    model_tag: str  # readable name + weights hash, part of output paths
    weights_sha256: str = ""
    spec: dict = field(default_factory=dict)  # value-defining spec (pipeline.features.speech_ssl.ssl_spec)

    def set_name(self, mode: str) -> str:
        return f"{self.model_tag}-{mode}"


@dataclass
class BuildPlan:
    sessions: list[SessionPlan] = field(default_factory=list)
    ssl_models: list[SSLModel] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)  # layout problems found while planning
    inputs: dict[str, dict] = field(default_factory=dict)  # session id -> input hashes, for the data card

    @property
    def fingerprint(self) -> list:
        """Everything the segments and head/FBank shards depend on (not the SSL models)."""
        return [[s.session_id, s.session_hash] for s in self.sessions] + \
            [[r.session_id, r.reason] for r in self.rejected]

    def build_id(self, cfg: BuildConfig, *, redraw: bool, strict: bool) -> str:
        """Hash of the dataset's inputs and settings: the name of the build's completion marker."""
        ssl = [[m.model_tag, cfg.ssl.mode, cfg.stage_version("ssl")] for m in self.ssl_models]
        qa = [cfg.qa.mode, cfg.stage_version("qa")] if cfg.qa.mode != "off" else []  # QA flags or rejects sessions
        return stable_hash([self.fingerprint, cfg.stage_version("dataset"), redraw, strict, ssl, qa], 12)


def plan_build(corpus: str | Path, out: str | Path, cfg: BuildConfig, *, rehash: bool = False) -> BuildPlan:
    """Read the corpus layout and hash its inputs (cached; `rehash` trusts no cached hash) into per-session plans."""
    plan = BuildPlan()
    hashes = FileHashCache(Path(out) / "work" / "file_hashes.json", rehash=rehash)
    for session_id in discover_sessions(corpus):
        try:
            spec = read_session_cached(corpus, session_id)
        except CorpusLayoutError as exc:
            plan.rejected.append(Rejection.from_error(exc, session_id, stage="layout"))
            continue
        session, inputs = _plan_session(spec, hashes, cfg)
        plan.sessions.append(session)
        plan.inputs[session_id] = inputs
    plan.ssl_models = [_plan_ssl_model(name, cfg.ssl, hashes) for name in cfg.ssl.models]
    hashes.save()
    return plan


def _plan_session(spec: SessionSpec, hashes: FileHashCache, cfg: BuildConfig) -> tuple[SessionPlan, dict]:
    """The session's task parameters and input hashes. A human turns file enters by its content; automatic
    turns by their key (audio content and offsets) and the turns stage version, so the automatic-turns
    settings change the hash of automatic sessions only."""
    head_keys, audio_keys, files = [], [], {}
    for p in spec.participants:
        video_sha, audio_sha = hashes.sha256(p.video), hashes.sha256(p.audio)
        files[p.participant_id] = {"video": p.video.name, "video_sha256": video_sha,
                                   "audio": p.audio.name, "audio_sha256": audio_sha}
        head_keys.append(str(RecordingKey(spec.session_id, p.participant_id, stable_hash([video_sha, p.crop], 16))))
        audio_keys.append(str(RecordingKey(spec.session_id, p.participant_id,
                                           stable_hash([audio_sha, p.audio_offset_s], 16))))
    voice_key = stable_hash([[p, f["audio_sha256"], spec.participant(p).audio_offset_s]
                             for p, f in sorted(files.items())], 16)
    turns_key = qa_key = ""
    if spec.turns_path is None:
        turns_key = voice_key
        turns_sha, turns_name = f"{turns_key}-{cfg.stage_version('turns')}", AUTOMATIC
    else:
        turns_sha, turns_name = hashes.sha256(spec.turns_path), spec.turns_path.name
        qa_key = f"{voice_key}-{turns_sha[:16]}" if cfg.qa.mode != "off" else ""
    layout_sha = sha256_file(spec.root / "participants.csv")
    session_hash = stable_hash([spec.session_id, layout_sha, turns_sha, head_keys, audio_keys], 12)
    inputs = {"participants_csv_sha256": layout_sha, "turns": turns_name, "turns_sha256": turns_sha,
              "media": files}
    return SessionPlan(spec.session_id, session_hash, tuple(head_keys), tuple(audio_keys), turns_key, qa_key), inputs


def _plan_ssl_model(name: str, cfg: SSLConfig, hashes: FileHashCache) -> SSLModel:
    from pipeline.features.speech_ssl.checkpoints import (
        CheckpointError,
        checkpoint_sha256,
        model_tag,
        resolve_checkpoint,
    )

    try:
        folder = resolve_checkpoint(name)
    except CheckpointError as exc:
        raise RuntimeError(f"--ssl-models: {exc}") from None
    digest = checkpoint_sha256(folder, hasher=hashes.sha256)
    return SSLModel(name, str(folder), model_tag(name, digest), digest, ssl_value_spec(name, folder, digest, cfg))


def ssl_value_spec(name: str, folder: Path, digest: str, cfg: SSLConfig) -> dict:
    """`ssl_spec` (what defines the feature values) from the checkpoint's config.json, without loading weights.

    Also checks mode and layers against the model before any extraction starts.
    """
    from importlib import metadata

    from pipeline.features.speech_ssl import LoadedSSL, ssl_spec

    config = json.loads((folder / "config.json").read_text())
    try:
        described = LoadedSSL(model=None, config=None, model_id=name, kind=str(config.get("model_type", "")),
                              weights_sha256=digest, transformers_version=metadata.version("transformers"),
                              num_hidden_states=int(config["num_hidden_layers"]) + 1,
                              hidden_size=int(config["hidden_size"]), device="")
        return ssl_spec(described, cfg.mode, window_s=cfg.window_s, chunk_s=cfg.chunk_s, context_s=cfg.context_s,
                        layers=list(cfg.layers) or None, dtype=cfg.dtype, autocast=cfg.autocast or None)
    except KeyError as exc:
        raise SettingError(f"--ssl-models {name}: config.json lacks {exc}; expected a HuBERT / wav2vec 2.0 / "
                           "WavLM checkpoint") from None
    except (ValueError, NotImplementedError) as exc:
        raise SettingError(f"--ssl-models {name} with --ssl-causal {cfg.mode} --ssl-layers "
                           f"{','.join(map(str, cfg.layers)) or '(all)'}: {exc}") from None


@dataclass(frozen=True)
class WorkLayout:
    """Where per-recording and per-session results live under `<out>/work`.

    Names carry the input content hash and the stage version, so a finished file is valid forever
    and changed media or settings produce new paths.
    """

    root: Path
    cfg: BuildConfig

    @classmethod
    def of(cls, out: str | Path, cfg: BuildConfig) -> WorkLayout:
        return cls(Path(out) / "work", cfg)

    def recording(self, stage: str, key: RecordingKey, model_tag: str = "") -> tuple[Path, Path]:
        """(record, data file) of one key; ids may contain dots, so names are joined, not suffixed."""
        folder = self.root / "ssl" / f"{model_tag}-{self.cfg.ssl.mode}" if stage == "ssl" else self.root / stage
        stem = f"{key.participant_id}-{key.input_hash}-{self.cfg.stage_version(stage)}"
        return folder / key.session_id / f"{stem}.json", folder / key.session_id / f"{stem}{DATA_SUFFIX[stage]}"

    def ssl_spans(self, key: RecordingKey) -> Path:
        """The head-frame spans an SSL key stands for (pipeline.dataset.ssl_sets.plan_ssl_pieces)."""
        return self.root / "ssl_spans" / key.session_id / f"{key.participant_id}-{key.input_hash}.json"

    def turns(self, session: SessionPlan) -> tuple[Path, Path]:
        """(record, turns CSV) of a session's automatic turns."""
        stem = self.root / "turns" / session.session_id / f"{session.voice_key}-{self.cfg.stage_version('turns')}"
        return stem.with_suffix(".json"), stem.with_suffix(".csv")

    def qa(self, session: SessionPlan) -> Path:
        """The annotation-QA record of a session with a human turns file."""
        return self.root / "qa" / session.session_id / f"{session.qa_key}-{self.cfg.stage_version('qa')}.json"

    def session(self, session: SessionPlan) -> Path:
        name = f"{session.session_id}-{session.session_hash}-{self.cfg.stage_version('session')}.json"
        return self.root / "sessions" / name


def recording_jobs(stage: str, keys: list[RecordingKey], corpus: str | Path, layout: WorkLayout,
                   ssl: SSLModel | None = None) -> list[RecordingJob]:
    """Jobs for the keys whose record does not exist yet (the first key of a batch also self-checks SSL)."""
    jobs: list[RecordingJob] = []
    for key in keys:
        record, table = layout.recording(stage, key, ssl.model_tag if ssl else "")
        if record.exists():
            continue
        entry = read_session_cached(corpus, key.session_id).participant(key.participant_id)
        common = dict(session_id=key.session_id, participant_id=key.participant_id,
                      config=layout.cfg.to_dict()[stage], out_table=str(table), out_record=str(record))
        if stage == "head":
            jobs.append(HeadJob(**common, video=str(entry.video), crop=list(entry.crop) if entry.crop else None))
        elif stage == "audio":
            jobs.append(AudioJob(**common, audio=str(entry.audio), offset_s=entry.audio_offset_s))
        elif ssl is not None:
            spans = json.loads(layout.ssl_spans(key).read_text())["spans"]
            jobs.append(SSLJob(**common, audio=str(entry.audio), offset_s=entry.audio_offset_s, model=ssl.model,
                               model_dir=ssl.model_dir, model_tag=ssl.model_tag, self_check=key == keys[0],
                               spans=spans))
        else:
            raise ValueError(f"stage {stage!r}: expected head, audio or ssl (with a model)")
    return jobs


class DatasetSettingsConflict(SettingError):
    """The output folder holds a dataset built with other settings (see `refuse_other_settings`)."""


def stored_build_config(dataset_dir: Path) -> BuildConfig | None:
    """The settings of the dataset in `dataset_dir`: from manifest.json, else its build marker."""
    from pipeline.dataset.manifest import MANIFEST_FILE, read_manifest

    manifest = {}
    if (dataset_dir / MANIFEST_FILE).is_file():
        try:
            manifest = read_manifest(dataset_dir)
        except CorruptOutputError as exc:  # the build rewrites it; the markers still hold the settings
            log.warning("%s", exc)
    if "config" in manifest:
        return BuildConfig.from_dict(manifest["config"])
    markers = sorted(dataset_dir.glob("build-*.json"))
    preferred = dataset_dir / f"build-{manifest.get('build_id')}.json"
    for marker in ([preferred] if preferred in markers else []) + markers:
        stored = json.loads(marker.read_text()).get("config")
        if stored:
            return BuildConfig.from_dict(stored)
    return None


def refuse_other_settings(dataset_dir: Path, requested: BuildConfig, *, redraw: bool, overwrite: bool) -> None:
    """Raise unless the dataset in `dataset_dir` (if any) was built with the requested settings.

    One `--out` holds one dataset, so TrainLHG, EvaluateLHG and users find it at a fixed place; a
    build with other settings must not silently replace it (and delete its build marker). With
    `overwrite` only split settings stay guarded: the split registry refuses them unless `redraw`,
    and that refusal should come before extraction, not after it.
    """
    if not dataset_dir.is_dir():
        return
    stored = stored_build_config(dataset_dir)
    if stored is None:
        return
    conflicts = [c for c in dataset_conflicts(stored, requested, redraw=redraw) if c.splits or not overwrite]
    if conflicts:
        lines = "\n".join(f"  {c.message}" for c in conflicts)
        raise DatasetSettingsConflict(
            f"{dataset_dir} was built with other settings:\n{lines}\n"
            "Pass the same settings (TrainLHG and EvaluateLHG accept every BuildSplits option; there the "
            "split seed is --split-seed), use another --out, or replace this dataset with --overwrite "
            "(changing --disjoint, --split-ratios or the split seed also needs --redraw).")
