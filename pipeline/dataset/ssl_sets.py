"""SSL feature sets of a build: which frames each recording is needed for, and the set of hard-linked pieces.

Storage is paid once (README, "SSL features"): an SSL job stores only the frames of its recording
that segments use, as one safetensors *piece* (pipeline.features.ssl_pieces), and the dataset's SSL
set `ssl/<set name>/<set id>/` holds hard links to those pieces plus an index (segment -> piece,
row). Adding a session adds its pieces and links the others again (no bytes copied); adding a
model adds its own pieces and leaves every other set untouched.

The frames a recording is needed for (its *spans*) come from the session's segments: the head
frames of every segment in which that participant is the speaker. They are part of the SSL job's
key, so a change of segmentation recomputes the pieces of the sessions it changes, and only those.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common.errors import CorruptOutputError
from pipeline.common.fsutil import (
    atomic_folder,
    atomic_path,
    file_entry,
    file_problem,
    link_or_copy,
    remove_other_folders,
    stable_hash,
    write_json_atomic,
)
from pipeline.dataset.plan import BuildPlan, SSLModel, WorkLayout
from pipeline.dataset.shards import SHARD_SET_DONE, shard_set_problems
from pipeline.features.ssl_pieces import Span, merge_spans, piece_row, span_offsets
from schemas.conventions import HEAD_HOP_S, SSL_FRAMES_PER_HEAD
from schemas.records import RecordingKey, RecordingRecord, Rejection, SessionRecord

log = logging.getLogger(__name__)


def start_frames(segments: pd.DataFrame) -> np.ndarray:
    """Each segment's first head frame on its session's timeline."""
    return np.rint(segments["start_s"].to_numpy(np.float64) / HEAD_HOP_S).astype(np.int64)


def speaker_spans(segments: pd.DataFrame) -> dict[str, list[Span]]:
    """participant -> merged head-frame spans of the segments in which they speak."""
    starts = start_frames(segments)
    ends = starts + segments["n_frames"].to_numpy(np.int64)
    spans: dict[str, list[Span]] = {}
    for speaker in sorted(set(segments["speaker_id"].astype(str))):
        mine = (segments["speaker_id"].astype(str) == speaker).to_numpy()
        spans[speaker] = merge_spans(zip(starts[mine].tolist(), ends[mine].tolist(), strict=True))
    return spans


@dataclass(frozen=True)
class SSLPiece:
    """One recording's SSL job input: the key (audio content + spans) and the spans themselves."""

    key: RecordingKey
    spans: list[Span]


def plan_ssl_pieces(plan: BuildPlan, layout: WorkLayout) -> list[SSLPiece]:
    """The SSL jobs of a build whose sessions are processed: one per recording that speaks in a segment.

    Each piece's spans are written to `layout.ssl_spans(key)` (content-addressed, so rewriting is a
    no-op), where the job reads them. Rejected sessions and silent participants need no SSL at all.
    """
    pieces = []
    for session in plan.sessions:
        record = SessionRecord.read(layout.session(session))
        if not record.ok:
            continue
        spans = speaker_spans(pd.read_parquet(record.segments_table, columns=["speaker_id", "start_s", "n_frames"]))
        for text in session.audio_keys:
            audio = RecordingKey.parse(text)
            if not spans.get(audio.participant_id):
                continue
            mine = spans[audio.participant_id]
            key = RecordingKey(audio.session_id, audio.participant_id, stable_hash([audio.input_hash, mine], 16))
            path = layout.ssl_spans(key)
            if not path.is_file():
                write_json_atomic(path, {"audio_key": text, "spans": [list(s) for s in mine]})
            pieces.append(SSLPiece(key, mine))
    return pieces


@dataclass
class SSLSet:
    """One (model, mode) feature set: `pieces[(session_id, participant_id)]` = the ok record of its piece."""

    name: str
    spec: dict
    pieces: dict[tuple[str, str], RecordingRecord]


def ssl_set_spec(model: SSLModel, records: list[RecordingRecord]) -> dict:
    """The one description of an SSL feature set (manifest, shard metadata, checkpoints, data card).

    `model.spec` is `pipeline.features.speech_ssl.ssl_spec` (what defines the values); added here:
    where the model came from and what the extraction measured (stored shape, chunking check).
    """
    shapes = {tuple(r.details["shape"][1:]) for r in records if r.ok}
    checks = [r.details["chunking_check"] for r in records if r.ok and r.details.get("chunking_check")]
    n_states, dim = shapes.pop() if len(shapes) == 1 else (None, None)
    return {**model.spec, "model": model.model, "model_tag": model.model_tag, "hidden_states": n_states, "dim": dim,
            "frames_per_head_frame": SSL_FRAMES_PER_HEAD, "chunking_check": checks[:1]}


def collect_ssl_sets(plan: BuildPlan, layout: WorkLayout) -> tuple[list[SSLSet], list[Rejection]]:
    """One feature set per planned SSL model (the records of its usable pieces), and its rejections."""
    sets, rejected = [], []
    pieces = plan_ssl_pieces(plan, layout) if plan.ssl_models else []
    for model in plan.ssl_models:
        records = [RecordingRecord.read(layout.recording("ssl", piece.key, model.model_tag)[0]) for piece in pieces]
        rejected += [rec.rejection for rec in records if rec.rejection is not None]
        sets.append(SSLSet(model.set_name(layout.cfg.ssl.mode), ssl_set_spec(model, records),
                           {(rec.session_id, rec.participant_id): rec for rec in records if rec.ok}))
    return sets, rejected


def write_ssl_sets(segments: pd.DataFrame, dataset_dir: Path, ssl_sets: list[SSLSet], core_id: str) -> dict:
    """One linked set per SSL feature set over `segments`; sets (and older versions) not in this build are removed."""
    manifest_ssl = {}
    used = sorted({(s, p) for s, p in zip(segments["session_id"], segments["speaker_id"], strict=True)})
    for ssl in ssl_sets:
        missing = [f"{s}/{p}" for s, p in used if (s, p) not in ssl.pieces]
        if missing:  # sessions with a rejected piece are left out before this (pipeline.dataset.assemble)
            raise RuntimeError(f"SSL set {ssl.name}: no features for {missing[:3]}")
        pieces = {key: ssl.pieces[key] for key in used}
        set_id = stable_hash([core_id, [[*key, rec.details["stored"]["sha256"]] for key, rec in pieces.items()]], 12)
        folder = dataset_dir / "ssl" / ssl.name / set_id
        if shard_set_problems(folder):
            _link_set(segments, folder, pieces, {**ssl.spec, "shard_set": core_id})
        manifest_ssl[ssl.name] = {"dir": f"ssl/{ssl.name}/{set_id}", "spec": ssl.spec}
        remove_other_folders(dataset_dir / "ssl" / ssl.name, {set_id})
    remove_other_folders(dataset_dir / "ssl", set(manifest_ssl))
    return manifest_ssl


def _link_set(segments: pd.DataFrame, folder: Path, pieces: dict[tuple[str, str], RecordingRecord],
              spec: dict) -> None:
    """Hard-link every piece into a staging folder, index every segment's rows, publish the folder whole."""
    with atomic_folder(folder) as staging:
        files, how = {}, set()
        for (session_id, participant_id), rec in pieces.items():
            problem = file_problem(rec.data_file, rec.details["stored"], checksums=False)
            if problem:
                raise CorruptOutputError(rec.data_file, f"{problem}; delete {rec.data_file.with_suffix('.json')} "
                                                        "and build again to recompute it")
            name = f"{session_id}/{participant_id}.safetensors"
            (staging / session_id).mkdir(exist_ok=True)
            how.add(link_or_copy(rec.data_file, staging / name))
            files[name] = rec.details["stored"]
        if "copy" in how:
            log.warning("SSL features in %s are copies, not hard links (another file system?): they take twice "
                        "the disk space; keep work/ and dataset/ on one file system", folder)
        index = pd.DataFrame({"segment_id": segments["segment_id"].to_numpy(),
                              "shard": [f"{s}/{p}.safetensors" for s, p in
                                        zip(segments["session_id"], segments["speaker_id"], strict=True)],
                              "offset": _piece_rows(segments, pieces)})
        with atomic_path(staging / "index.parquet") as tmp:
            index.to_parquet(tmp, index=False)
        files["index.parquet"] = file_entry(staging / "index.parquet")
        write_json_atomic(staging / SHARD_SET_DONE, {"spec": spec, "files": files})


def _piece_rows(segments: pd.DataFrame, pieces: dict[tuple[str, str], RecordingRecord]) -> np.ndarray:
    """Row of each segment's first frame in its speaker's piece."""
    layouts = {key: (spans := [tuple(s) for s in rec.details["spans"]], span_offsets(spans))
               for key, rec in pieces.items()}
    rows = np.empty(len(segments), np.int64)
    starts = start_frames(segments)
    for i, (s, p, start, n) in enumerate(zip(segments["session_id"], segments["speaker_id"], starts,
                                             segments["n_frames"], strict=True)):
        spans, offsets = layouts[(s, p)]
        rows[i] = piece_row(spans, offsets, int(start), int(n))
    return rows
