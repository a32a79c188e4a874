"""The automatic-turns build stage: a session folder without a turns file gets its turns from each
participant's own audio track (`auto_turns` / `voice_activity`), and they are exported for correction.

The turns are written as a turns CSV (`participant_id,start_s,end_s,label`), so the session step reads
them through `read_turns` exactly like a human file, plus a JSON record (`ok` with the table, the
timeline length and the talk per participant, or `rejected` naming the track to fix). Their cache key
(`turns_key`) is the content hashes and offsets of the session's audio files; the work path adds the
stage version (AutoTurnsConfig and the code version), so changed audio or settings recompute them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.common.errors import InputError, MediaError
from pipeline.common.fsutil import write_json_atomic, write_text_atomic
from pipeline.config import AutoTurnsConfig
from pipeline.conversation.auto_turns import TALK_LABEL, decode_tracks, spans_table, write_eaf, write_textgrid
from pipeline.conversation.voice_activity import talk_spans
from pipeline.corpus.layout import SessionSpec
from schemas.conventions import SAMPLE_RATE
from schemas.records import Rejection

log = logging.getLogger(__name__)

AUTOMATIC = "automatic"  # the `turns` entry of a session's inputs (data card) when no turns file is given


@dataclass(frozen=True)
class AutoTurnsRecord:
    """Result of the automatic-turns stage for one session (the JSON next to the turns CSV)."""

    session_id: str
    status: str  # ok | rejected
    turns_table: str = ""
    duration_s: float = 0.0  # the longest track on the session timeline
    talk_s: dict[str, float] = field(default_factory=dict)
    rejection: Rejection | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        found = {"turns_table": self.turns_table, "duration_s": self.duration_s, "talk_s": self.talk_s}
        if self.rejection is not None:
            return {"session_id": self.session_id, **self.rejection.to_record(), **found}
        return {"session_id": self.session_id, "status": self.status, **found}

    @classmethod
    def read(cls, path: str | Path) -> AutoTurnsRecord:
        import json

        data = json.loads(Path(path).read_text())
        rejection = Rejection.from_dict(data) if data["status"] == "rejected" else None
        return cls(data["session_id"], data["status"], data.get("turns_table", ""), float(data.get("duration_s", 0)),
                   {str(k): float(v) for k, v in data.get("talk_s", {}).items()}, rejection)


def turns_csv_text(turns: pd.DataFrame) -> str:
    """The turns as a turns CSV (the input contract's format), times in ms on the 10 ms frame grid."""
    lines = ["participant_id,start_s,end_s,label"]
    lines += [f"{p},{s:.3f},{e:.3f},{TALK_LABEL}" for p, s, e in
              zip(turns["participant_id"], turns["start_s"], turns["end_s"], strict=True)]
    return "\n".join(lines) + "\n"


def derive_session_turns(spec: SessionSpec, cfg: AutoTurnsConfig, out_table: str | Path,
                         out_record: str | Path) -> AutoTurnsRecord:
    """Talk spans of every participant from their own track (with its `audio_offset_s`), written as
    `out_table` (turns CSV) and `out_record` (JSON).

    A track that gives no talk at all rejects the automatic turns naming that track (a muted or wrong
    file would otherwise leave the other person holding the floor throughout); the spans found are
    still written, for annotation QA of a human turns file.
    """
    out_table = Path(out_table)
    try:
        waves = decode_tracks({p.participant_id: p.audio for p in spec.participants},
                              {p.participant_id: p.audio_offset_s for p in spec.participants})
    except InputError as exc:  # a track ffmpeg cannot decode
        pid = next((p.participant_id for p in spec.participants if p.audio == Path(exc.path)), "")
        return _write(spec, AutoTurnsRecord(spec.session_id, "rejected", rejection=Rejection.from_error(
            exc, spec.session_id, pid, stage="turns")), out_record)
    turns = spans_table(talk_spans(waves, cfg, sample_rate=SAMPLE_RATE))
    talk = (turns["end_s"] - turns["start_s"]).groupby(turns["participant_id"]).sum()
    write_text_atomic(out_table, turns_csv_text(turns))  # kept when rejected too: annotation QA reads it
    found = dict(turns_table=str(out_table), duration_s=round(max(len(w) for w in waves.values()) / SAMPLE_RATE, 3),
                 talk_s={str(k): round(float(v), 3) for k, v in talk.items()})
    for entry in spec.participants:
        if entry.participant_id not in talk.index:
            error = MediaError(entry.audio, f"automatic turns: the track {entry.audio.name} of {entry.participant_id} "
                                            f"gives no talk (no speech-band activity above its noise floor that is "
                                            f"not the other person's bleed); check the file, or add a turns file "
                                            f"(turns.csv, turns.eaf or turns.TextGrid) to the session folder")
            return _write(spec, AutoTurnsRecord(spec.session_id, "rejected", **found, rejection=Rejection.from_error(
                error, spec.session_id, entry.participant_id, stage="turns")), out_record)
    log.info("session %s: automatic turns, %d span(s), talk %s", spec.session_id, len(turns),
             ", ".join(f"{k} {v:.1f} s" for k, v in found["talk_s"].items()))
    return _write(spec, AutoTurnsRecord(spec.session_id, "ok", **found), out_record)


def _write(spec: SessionSpec, record: AutoTurnsRecord, out_record: str | Path) -> AutoTurnsRecord:
    if record.rejection is not None:
        log.warning("automatic turns of session %s: %s", spec.session_id, record.rejection.reason)
    write_json_atomic(out_record, record.to_dict())
    return record


def export_annotations(record: AutoTurnsRecord, participant_ids: list[str], folder: str | Path) -> list[Path]:
    """`<folder>/<session_id>.TextGrid` and `.eaf` of a session's automatic turns, for correction: a
    corrected file saved in the session folder as `turns.TextGrid` (or .eaf) replaces them."""
    from pipeline.conversation.annotations import read_turns

    folder = Path(folder)
    turns = read_turns(record.turns_table, participant_ids=participant_ids)
    duration = max(record.duration_s, float(turns["end_s"].max()) if len(turns) else 0.0)
    paths = [folder / f"{record.session_id}.TextGrid", folder / f"{record.session_id}.eaf"]
    write_textgrid(turns, paths[0], duration, participant_ids)
    write_eaf(turns, paths[1], participant_ids)
    return paths
