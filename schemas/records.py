"""Typed records of the build: per-recording jobs and their results, session results, rejections.

They cross between the Luigi tasks and `pipeline/` and live on disk as small JSON files under
`<out>/work/` (the Luigi completion markers). The JSON stays flat and human-readable; it is read
and written only through these classes, so a field is named in one place.

    work/<stage>/<session>/<participant>-<inputhash>-<version>.json   RecordingRecord (head, audio)
    work/ssl/<model_tag>-<mode>/<session>/...json                     RecordingRecord (ssl)
    work/sessions/<session>-<hash>-<version>.json                     SessionRecord (+ .parquet segments,
                                                                      .dropped.parquet, .talk.parquet talk spans)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol


class InputProblem(Protocol):
    """What `pipeline.common.errors.InputError` carries (schemas import nothing from pipeline)."""

    kind: str
    path: str
    where: str | None
    message: str


@dataclass(frozen=True)
class Rejection:
    """One quarantined input: a row of `dataset/rejected.csv` (columns = these fields, in order)."""

    session_id: str
    participant_id: str
    stage: str  # layout | head | audio | ssl | session | turns | annotation_qa | segments (the session gave no segment)
    kind: str  # the InputError kind: layout, annotation, media, no_face, ...
    file: str
    where: str
    reason: str

    @classmethod
    def from_error(cls, exc: InputProblem, session_id: str, participant_id: str = "", stage: str = "") -> Rejection:
        return cls(session_id=session_id, participant_id=participant_id, stage=stage, kind=exc.kind,
                   file=str(exc.path), where=exc.where or "", reason=exc.message)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rejection:
        return cls(**{f.name: str(data.get(f.name) or "") for f in fields(cls)})

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def to_record(self) -> dict[str, str]:
        """The JSON record of a rejected job or session (status + these fields)."""
        return {"status": "rejected", **self.to_dict()}


@dataclass(frozen=True, order=True)
class RecordingKey:
    """One participant recording as a stage input: `session/participant/inputhash` (the Luigi batch key)."""

    session_id: str
    participant_id: str
    input_hash: str

    def __str__(self) -> str:
        return f"{self.session_id}/{self.participant_id}/{self.input_hash}"

    @classmethod
    def parse(cls, text: str) -> RecordingKey:
        session_id, participant_id, input_hash = text.split("/")
        return cls(session_id, participant_id, input_hash)


@dataclass(frozen=True)
class RecordingJob:
    """Inputs of one per-recording job; `pipeline.features.jobs.run_*_job` take `to_dict()`."""

    session_id: str
    participant_id: str
    config: dict[str, Any]  # the stage's settings (BuildConfig.to_dict()[stage])
    out_table: str
    out_record: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeadJob(RecordingJob):
    video: str = ""
    crop: list[int] | None = None  # gallery-view tile x, y, w, h


@dataclass(frozen=True)
class AudioJob(RecordingJob):
    audio: str = ""
    offset_s: float = 0.0


@dataclass(frozen=True)
class SSLJob(AudioJob):
    model: str = ""  # as the user named it
    model_dir: str = ""  # resolved local checkpoint
    model_tag: str = ""  # readable name + weights hash
    self_check: bool = False  # also measure chunked vs one-pass features (data card)
    spans: list[list[int]] = field(default_factory=list)  # head-frame ranges [a, b) that segments use


_RECORDING_FIELDS = ("status", "stage", "session_id", "participant_id", "table")


@dataclass(frozen=True)
class RecordingRecord:
    """Result of one per-recording job: `ok` with a data file next to the record, or `rejected`."""

    status: str
    stage: str
    session_id: str
    participant_id: str
    table: str = ""  # data file name, in the record's folder
    rejection: Rejection | None = None
    details: dict[str, Any] = field(default_factory=dict)  # stage numbers: n_frames, shape, chunking_check...
    folder: Path | None = field(default=None, compare=False)  # where the record was read from

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def data_file(self) -> Path:
        if not self.ok or self.folder is None:
            raise ValueError(f"{self.session_id}/{self.participant_id} ({self.stage}): no data file ({self.status})")
        return self.folder / self.table

    @classmethod
    def from_dict(cls, data: dict[str, Any], folder: Path | None = None) -> RecordingRecord:
        rejection = Rejection.from_dict(data) if data["status"] == "rejected" else None
        details = {k: v for k, v in data.items() if k not in _RECORDING_FIELDS and
                   (rejection is None or k not in Rejection.__dataclass_fields__)}
        return cls(status=data["status"], stage=data.get("stage", ""), session_id=data["session_id"],
                   participant_id=data.get("participant_id", ""), table=data.get("table", ""),
                   rejection=rejection, details=details, folder=folder)

    @classmethod
    def read(cls, path: str | Path) -> RecordingRecord:
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text()), folder=path.parent)


@dataclass(frozen=True)
class SessionRecord:
    """Result of one session: its segment tables (`ok`) or why it produced none (`rejected`)."""

    session_id: str
    status: str
    head_tables: dict[str, str]  # participant id -> head feature table of the usable participants
    fbank_tables: dict[str, str]
    segments_table: str = ""
    dropped_table: str = ""
    talk_table: str = ""  # every talk span with its kind (talk | backchannel): the per-frame flags
    stats: dict[str, Any] = field(default_factory=dict)
    rejection: Rejection | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"session_id": self.session_id, "head_tables": self.head_tables,
                                "fbank_tables": self.fbank_tables}
        if self.rejection is not None:
            return {**data, **self.rejection.to_record()}
        return {**data, "status": self.status, "segments_table": self.segments_table,
                "dropped_table": self.dropped_table, "talk_table": self.talk_table, "stats": self.stats}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionRecord:
        rejected = data["status"] == "rejected"
        return cls(session_id=data["session_id"], status=data["status"], head_tables=data.get("head_tables", {}),
                   fbank_tables=data.get("fbank_tables", {}), segments_table=data.get("segments_table", ""),
                   dropped_table=data.get("dropped_table", ""), talk_table=data.get("talk_table", ""),
                   stats=data.get("stats", {}),
                   rejection=Rejection.from_dict(data) if rejected else None)

    @classmethod
    def read(cls, path: str | Path) -> SessionRecord:
        return cls.from_dict(json.loads(Path(path).read_text()))
