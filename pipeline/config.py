"""Build settings, grouped by the stage whose output they change.

Each stage's output path carries `stage_version(...)`: a hash of that stage's settings plus a code
version bumped whenever the algorithm changes, so Luigi never reuses a stale result (GUIDE §6) and
changing one setting recomputes exactly the outputs it affects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from pipeline.common.fsutil import stable_hash
from schemas.conventions import STATIC_CHANNELS

# Bump when the algorithm of a stage changes (outputs of older versions are then recomputed).
CODE_VERSIONS = {"head": 1, "audio": 1, "session": 1, "dataset": 1, "ssl": 1}


@dataclass(frozen=True)
class HeadConfig:
    channels: tuple[str, ...] = STATIC_CHANNELS
    max_gap_s: float = 0.5
    savgol_window: int = 7
    savgol_order: int = 2
    face_model: str = ""  # optional MediaPipe FaceLandmarker .task file; "" = bundled FaceMesh
    face_model_sha256: str = ""  # content of that file, so swapping models recomputes head features


@dataclass(frozen=True)
class AudioConfig:
    fbank_bins: int = 80


@dataclass(frozen=True)
class SessionConfig:
    merge_gap_s: float = 0.5
    backchannel_max_s: float = 1.0
    min_segment_s: float = 6.0
    max_segment_s: float = 11.0
    max_invalid_frac: float = 0.1


@dataclass(frozen=True)
class DatasetConfig:
    disjoint: str = "listener"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    shard_mb: int = 256
    fbank_dtype: str = "float32"


@dataclass(frozen=True)
class SSLConfig:
    """SSL speech features; `models` are local checkpoint dirs or HF ids (see pipeline.features.ssl.checkpoints)."""

    models: tuple[str, ...] = ()
    mode: str = "attention"  # none | attention (paper) | strict
    window_s: float = 15.0  # strict: sliding causal attention window
    chunk_s: float = 30.0  # none/attention: output frames per window
    context_s: float = 5.0  # none/attention: audio context around each window
    layers: tuple[int, ...] = ()  # () = every hidden state
    dtype: str = "float16"  # float16 | float32 | bfloat16 (stored as uint16 bit patterns)
    autocast: str = ""  # "" | bfloat16 | float16: mixed precision on GPU (changes values: in the key)
    device: str = "auto"


@dataclass(frozen=True)
class BuildConfig:
    head: HeadConfig = field(default_factory=HeadConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)

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
                    "dataset": ["head", "audio", "session", "dataset"], "ssl": ["ssl"]}[stage]
        payload = {s: [CODE_VERSIONS[s], self._settings(s)] for s in upstream}
        return stable_hash(payload, 10)

    def _settings(self, stage: str) -> dict:
        settings = asdict(getattr(self, stage))
        if stage == "ssl":  # which models is part of each output's key, not of the stage version;
            settings.pop("models")  # the device does not change the definition of the features
            settings.pop("device")
        return settings
