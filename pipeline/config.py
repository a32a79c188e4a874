"""Build settings, grouped by the stage whose output they change.

Every user-facing setting is declared once here with `setting(...)` (default, allowed values, help,
check); `tasks/params.py` generates the Luigi parameters from these fields. Each stage's output path
carries `stage_version(...)`: a hash of that stage's settings plus a code version bumped whenever
the algorithm changes, so Luigi never reuses a stale result and changing one setting recomputes
exactly the outputs it affects. The hashes depend on field names and values only (not on the field
metadata), so declaring the settings here did not change any existing output path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.common.fsutil import sha256_file, stable_hash, write_json_atomic
from pipeline.common.settings import (
    SettingError,
    at_least,
    check_settings,
    field_values,
    fraction,
    greater_than,
    options,
    setting,
    split_shares,
)
from schemas.conventions import MAX_SEGMENT_S, MIN_SEGMENT_S, PAPER5_CHANNELS, STATIC_CHANNELS

# Bump when the algorithm of a stage changes (outputs of older versions are then recomputed).
CODE_VERSIONS = {"head": 2, "audio": 1, "session": 4, "dataset": 3, "ssl": 2, "turns": 1, "qa": 1}


@dataclass(frozen=True)
class HeadConfig:
    channels: tuple[str, ...] = setting(STATIC_CHANNELS, "6 static head channels (18 dims) or the paper's 5 (15)",
                                        choices={"6": STATIC_CHANNELS, "5": PAPER5_CHANNELS})
    max_gap_s: float = setting(0.5, "after a face is lost its last pose is held for up to this long (s), "
                                    "flagged interpolated (model inputs only); the rest stays invalid",
                               check=at_least(0))
    savgol_window: int = 7
    savgol_order: int = 2
    face_model: str = setting("", "optional MediaPipe FaceLandmarker .task file (default: the bundled FaceMesh)")
    face_model_sha256: str = ""  # content of that file, so swapping models recomputes head features
    smoothing: str = setting("none", "causal smoothing of the pose track: none or one_euro (One-Euro filter)",
                             option="head_smoothing", choices=("none", "one_euro"))
    smoothing_min_cutoff_hz: float = setting(0.5, "One-Euro cutoff for a still head (Hz); lower = smoother",
                                             option="head_smoothing_min_cutoff_hz", check=greater_than(0))
    smoothing_beta: float = setting(0.2, "One-Euro speed coefficient (per deg/s); higher = less lag in fast "
                                          "motion", option="head_smoothing_beta", check=at_least(0))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class AudioConfig:
    fbank_bins: int = 80


@dataclass(frozen=True)
class SessionConfig:
    merge_gap_s: float = setting(0.5, "talk spurts of one person separated by at most this pause (s) are one "
                                      "floor bid", check=at_least(0))
    backchannel_max_s: float = setting(1.0, "shorter talk during the other's floor is a backchannel (s); the "
                                            "listener's longer talk ends a listener stretch", check=at_least(0))
    floor_hold_s: float = setting(3.0, "a speaker keeps the floor across a silence up to this long (s); a "
                                       "longer silence belongs to nobody", check=at_least(0))
    cut_rule: str = setting("equal", "how a long listener stretch is cut: equal = near-equal 6-11 s pieces "
                                     "covering it; greedy = 11 s pieces, a last piece kept when >= 6 s",
                            choices=("equal", "greedy"))
    train_stride_s: float = setting(0.0, "extra overlapping 11 s training segments every this many seconds "
                                         "within a listener stretch (train split only; 0 = none)",
                                    check=at_least(0))
    min_segment_s: float = MIN_SEGMENT_S  # the paper's 6-11 s listener segments (incl. 1 s context)
    max_segment_s: float = MAX_SEGMENT_S
    max_invalid_frac: float = setting(0.1, "drop segments with a larger share of invalid head frames (0-1)",
                                      check=fraction)
    min_audio_coverage: float = setting(0.5, "quarantine a session when a participant's audio plays over less "
                                             "than this share of their video (0-1): a wrong or truncated file",
                                        check=fraction)

    def __post_init__(self) -> None:
        check_settings(self)
        if not 0 < self.min_segment_s <= self.max_segment_s:
            raise SettingError(f"segment lengths: need 0 < min_segment_s <= max_segment_s, got "
                               f"{self.min_segment_s} and {self.max_segment_s}")


@dataclass(frozen=True)
class AutoTurnsConfig:
    """Automatic turns from each participant's own track (pipeline.conversation.voice_activity), for
    sessions without a turns file.

    Its version (`stage_version("turns")`) enters only the input hash of such sessions, so sessions
    with a human turns file keep their outputs when these settings change.
    """

    smooth_s: float = setting(0.05, "automatic turns: frame energies are averaged over this window (s) before "
                                    "the activity and dominance decisions",
                              option="vad_smooth_s", check=at_least(0.01))
    floor_margin_db: float = setting(10.0, "automatic turns: a frame is active when its speech-band level is this "
                                           "far above the track's noise floor (dB)",
                                     option="vad_floor_margin_db", check=greater_than(0))
    speech_range_db: float = setting(40.0, "automatic turns: talk needs a frame no more than this far below the "
                                           "track's speech level (dB)",
                                     option="vad_speech_range_db", check=greater_than(0))
    dominance_db: float = setting(10.0, "automatic turns: a frame is a person's own talk only when their track "
                                        "exceeds the other track's measured bleed into it by this much (dB); "
                                        "capped at half the gap between the two bleed levels",
                                  option="vad_dominance_db", check=greater_than(0))
    max_bleed_delay_s: float = setting(0.5, "automatic turns: the other person's voice may reach a track up to "
                                            "this much later or earlier (s; network and playback delay)",
                                       option="vad_max_bleed_delay_s", check=at_least(0))
    min_gap_s: float = setting(0.5, "automatic turns: pauses shorter than this (s) inside one person's talk "
                                    "are bridged (as the floor rules' merge gap)",
                               option="vad_min_gap_s", check=at_least(0))
    min_talk_s: float = setting(0.12, "automatic turns: talk shorter than this (s) after bridging is dropped "
                                      "(clicks); backchannels are longer",
                                option="vad_min_talk_s", check=at_least(0))
    pad_s: float = setting(0.0, "automatic turns: each talk span is widened by this much (s) on both sides "
                                "(for annotators who mark loosely; it shortens pauses and lengthens "
                                "backchannels as the floor rules see them)",
                           option="vad_pad_s", check=at_least(0))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class AnnotationQAConfig:
    """Checks of human turn files against each participant's own track (pipeline.conversation.annotation_qa).

    Enters only the build id (which sessions a dataset holds), never a session's hash.
    """

    mode: str = setting("warn", "annotation QA of human turn files against each track's voice activity: off, "
                                "warn (log and flag in the data card) or quarantine (reject sessions with gross "
                                "disagreements)", option="annotation_qa", choices=("off", "warn", "quarantine"))
    wrong_tier_share: float = setting(0.5, "annotation QA: a tier is given to the wrong person when more than this "
                                           "share of its annotated talk lies on the other person's own speech "
                                           "while its own track is quiet (0-1)",
                                      option="qa_wrong_tier_share", check=fraction)
    max_untranscribed_s: float = setting(5.0, "annotation QA: own speech detected on a track for longer than this "
                                              "(s) without annotated talk of that person is a gross disagreement",
                                         option="qa_max_untranscribed_s", check=greater_than(0))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class DatasetConfig:
    disjoint: str = setting("listener", "listener: each person is listener in one split only; person: each "
                                        "person appears in one split only, in any role",
                            choices=("listener", "person"))
    ratios: tuple[float, float, float] = setting((0.8, 0.1, 0.1), "train,valid,test share of duration",
                                                 option="split_ratios", item=float, check=split_shares)
    seed: int = setting(0, "seed of the split draw", check=at_least(0))
    shard_mb: int = setting(256, "target size of one tensor shard (MB)", check=at_least(1))
    fbank_dtype: str = setting("float32", "storage type of the FBank features", choices=("float32", "float16"))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class SSLConfig:
    """SSL speech features; `models` are local checkpoint dirs or HF ids (see pipeline.features.speech_ssl.checkpoints)."""

    models: tuple[str, ...] = setting((), "comma-separated SSL checkpoint dirs or HF ids", option="ssl_models")
    mode: str = setting("attention", "none = bidirectional (paper's NAR), attention = masked self-attention "
                                     "(paper), strict = exactly causal", option="ssl_causal",
                        choices=("none", "attention", "strict"))
    window_s: float = setting(15.0, "strict mode: causal attention window (s)", option="ssl_window_s",
                              check=greater_than(0))
    chunk_s: float = 30.0  # none/attention: output frames per window
    context_s: float = setting(5.0, "none/attention: context around each window (s)", option="ssl_context_s",
                               check=at_least(0))
    # checked against the model's number of hidden states when the build is planned (negative = from the end)
    layers: tuple[int, ...] = setting((), "comma-separated hidden-state indices (default all)",
                                      option="ssl_layers", item=int)
    # stored as uint16 bit patterns for bfloat16
    dtype: str = setting("float16", "storage type of the SSL features", option="ssl_dtype",
                         choices=("float16", "float32", "bfloat16"))
    # mixed precision changes values: part of the key
    autocast: str = setting("", "mixed precision for the SSL forward (GPU)", option="ssl_autocast",
                            choices=("", "bfloat16", "float16"))
    device: str = setting("auto", "auto (GPU when present), cpu or cuda", option="ssl_device")

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class BuildOptions:
    """Where a build reads and writes and how it treats problems; not part of any stage version."""

    corpus: str = setting("", "corpus folder (default: generate the sample corpus into <out>/sample_corpus)")
    out: str = setting("lhg_out", "output folder")
    quick_sample: bool = setting(False, "smaller sample corpus (tests)")
    redraw: bool = setting(False, "ignore the split registry and draw afresh (needed to change --disjoint, "
                                  "--split-ratios or the split seed of an existing dataset)")
    strict: bool = setting(False, "fail on any quarantined input")
    overwrite: bool = setting(False, "replace a dataset in --out that was built with other settings (without "
                                     "it such a build is refused)")
    rehash: bool = setting(False, "hash every input file again instead of trusting cached hashes (for files "
                                  "edited in place on file systems with unreliable time stamps)")


def _scheduler_address(value: str) -> str | None:
    return None if value.strip() else "local, inline or a scheduler address such as tcp://host:8786"


@dataclass(frozen=True)
class DaskOptions:
    """Where per-recording jobs run (`[dask]` in luigi.cfg, `--dask-<name>` on the command line).

    Never part of a stage version or the build id: a cluster computes the same bytes as a local build.
    """

    scheduler: str = setting("local", "local = a LocalCluster in this process; tcp://host:8786 = an existing "
                                      "cluster (`dask scheduler`) whose workers share the corpus and --out; "
                                      "inline = no Dask", check=_scheduler_address)
    n_workers: int = setting(0, "LocalCluster worker processes; 0 = one per core (divided by Luigi --workers)",
                             check=at_least(0))
    memory_limit: str = setting("auto", "memory limit of each LocalCluster worker (Dask syntax, e.g. 4GB)")
    gpu_resource: str = setting("auto", "on a cluster: auto = SSL jobs that may use a GPU (--ssl-device auto "
                                        "or cuda) ask for the worker resource GPU=1, so only workers started "
                                        "with `dask worker --resources GPU=1` run them (with a warning and "
                                        "no request when no worker declares it); off = never ask",
                                choices=("auto", "off"))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class BuildConfig:
    head: HeadConfig = field(default_factory=HeadConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    turns: AutoTurnsConfig = field(default_factory=AutoTurnsConfig)
    qa: AnnotationQAConfig = field(default_factory=AnnotationQAConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BuildConfig:
        parts = {}
        for f in fields(cls):
            sub = dict(data.get(f.name, {}))
            for k, v in sub.items():
                if isinstance(v, list):
                    sub[k] = tuple(v)
            parts[f.name] = f.default_factory(**sub)  # type: ignore[misc]
        return cls(**parts)

    def stage_version(self, stage: str) -> str:
        """Hash of everything that changes `stage`'s output, including upstream stages."""
        upstream = {"head": ["head"], "audio": ["audio"], "session": ["head", "audio", "session"],
                    "dataset": ["head", "audio", "session", "dataset"], "ssl": ["ssl"],
                    "turns": ["turns"], "qa": ["turns", "qa"]}[stage]
        payload = {s: [CODE_VERSIONS[s], self._settings(s)] for s in upstream}
        return stable_hash(payload, 10)

    def _settings(self, stage: str) -> dict:
        settings = asdict(getattr(self, stage))
        if stage == "head" and settings["smoothing"] == "none":  # parameters of an unused filter change nothing
            settings.pop("smoothing_min_cutoff_hz")
            settings.pop("smoothing_beta")
        if stage == "qa":  # warn or quarantine acts on the same QA record (the build id carries the mode)
            settings.pop("mode")
        if stage == "ssl":  # which models is part of each output's key, not of the stage version;
            settings.pop("models")  # the device does not change the definition of the features
            settings.pop("device")
        return settings


BUILD_SECTIONS = {"head": HeadConfig, "session": SessionConfig, "dataset": DatasetConfig, "ssl": SSLConfig,
                  "turns": AutoTurnsConfig, "qa": AnnotationQAConfig}


def build_config(values: Mapping[str, Any]) -> BuildConfig:
    """The BuildConfig for command-line values keyed by option name (e.g. a BuildSplits task's parameters).

    Raises SettingError naming the option for any unusable value.
    """
    head = field_values(HeadConfig, values)
    if head.get("face_model"):
        path = Path(head["face_model"]).resolve()
        if not path.is_file():
            raise SettingError(f"--face-model {values['face_model']}: no such file")
        head.update(face_model=str(path), face_model_sha256=_file_sha256(str(path), *_stamp(path)))
    return BuildConfig(head=HeadConfig(**head), session=SessionConfig(**field_values(SessionConfig, values)),
                       dataset=DatasetConfig(**field_values(DatasetConfig, values)),
                       ssl=SSLConfig(**field_values(SSLConfig, values)),
                       turns=AutoTurnsConfig(**field_values(AutoTurnsConfig, values)),
                       qa=AnnotationQAConfig(**field_values(AnnotationQAConfig, values)))


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """Hash once per process and file version: every task instance validates its settings."""
    return sha256_file(path)


SPLIT_FIELDS = ("disjoint", "ratios", "seed")  # --redraw may change these: it draws the splits afresh


class Conflict(NamedTuple):
    """A setting with which a build would replace a dataset built with another value."""

    option: str  # command-line flag
    message: str
    splits: bool  # a split setting: only --redraw may change it


def dataset_conflicts(stored: BuildConfig, requested: BuildConfig, *, redraw: bool) -> list[Conflict]:
    """Settings with which `requested` would replace a dataset built with `stored`.

    SSL: adding models to a dataset is the documented incremental path; removing models (their
    feature sets would be deleted) or changing how features are computed is a conflict. Split
    settings may change under `redraw`. The SSL device never changes values.
    """
    found = []
    for section, cls in BUILD_SECTIONS.items():
        old, new = getattr(stored, section), getattr(requested, section)
        for opt in options(cls):
            splits = section == "dataset" and opt.field in SPLIT_FIELDS
            if (splits and redraw) or (section == "ssl" and (opt.field == "device" or not stored.ssl.models)):
                continue
            a, b = getattr(old, opt.field), getattr(new, opt.field)
            if section == "ssl" and opt.field == "models":
                missing = [m for m in a if m not in b]
                if missing:
                    found.append(Conflict(opt.flag, f"{opt.flag}: the dataset has features of {opt.text(a)}; this "
                                          f"run asks for {opt.text(b) or 'none'} and would drop "
                                          f"{opt.text(missing)}", False))
            elif a != b:
                found.append(Conflict(opt.flag, f"{opt.flag}: the dataset was built with {opt.text(a) or '(empty)'}, "
                                      f"this run asks for {opt.text(b) or '(empty)'}", splits))
    if stored.head.face_model == requested.head.face_model and \
            stored.head.face_model_sha256 != requested.head.face_model_sha256:
        found.append(Conflict("--face-model", f"--face-model: the file changed since the dataset was built (sha256 "
                              f"{stored.head.face_model_sha256[:12]} -> {requested.head.face_model_sha256[:12]})",
                              False))
    return found


def save_config(out: str | Path, cfg: BuildConfig) -> str:
    """Store the settings under `work/configs/<hash>.json`; tasks carry only the short hash."""
    config_id = stable_hash(cfg.to_dict(), 10)
    path = Path(out) / "work" / "configs" / f"{config_id}.json"
    if not path.exists():
        write_json_atomic(path, cfg.to_dict())
    return config_id


@lru_cache(maxsize=32)
def load_config(out: str, config_id: str) -> BuildConfig:
    """The settings stored by `save_config` (content-addressed, so caching by id is safe)."""
    path = Path(out) / "work" / "configs" / f"{config_id}.json"
    return BuildConfig.from_dict(json.loads(path.read_text()))
