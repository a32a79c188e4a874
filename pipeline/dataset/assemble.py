"""The aggregate step: per-session segments -> speaker-disjoint splits -> tensor shards.

Runs once per change of the corpus or settings. Per-recording outputs are only read, never
rewritten, so adding a session leaves every earlier recording's features byte-identical.
`assemble_build` is the whole step as BuildSplits runs it: it gathers the typed records of a build
plan, writes rejected.csv, the dataset, the data card and the build marker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.common.fsutil import atomic_path, remove_other_folders, stable_hash, write_json_atomic
from pipeline.config import BuildConfig
from pipeline.conversation.segments import span_frames
from pipeline.dataset.manifest import MANIFEST_FILE, read_manifest
from pipeline.dataset.normalization import NORMALIZATION_FILE
from pipeline.dataset.plan import BuildPlan, WorkLayout
from pipeline.dataset.shards import SHARD_SET_DONE, RunningStats, file_entry, write_shard_set
from pipeline.dataset.splits import assign_splits
from pipeline.dataset.ssl_sets import SSLSet, collect_ssl_sets, write_ssl_sets
from schemas.conventions import FBANK_FRAMES_PER_HEAD, HEAD_HOP_S, head_feature_columns
from schemas.records import RecordingKey, RecordingRecord, Rejection, SessionRecord
from schemas.shards import SHARD_FORMAT_VERSION
from schemas.tables import SEGMENTS_SCHEMA, SPLITS, validate_segments, validate_talk

log = logging.getLogger(__name__)


@dataclass
class SessionInputs:
    """Everything the aggregate needs from one processed session (paths are absolute)."""

    session_id: str
    segments_table: Path
    head_tables: dict[str, Path]
    fbank_tables: dict[str, Path]
    talk_table: Path | None = None  # talk spans with kind (talk | backchannel): the per-frame flags
    stats: dict = field(default_factory=dict)


def load_registry(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_talk(inputs: SessionInputs) -> dict[tuple[str, str], list[tuple[float, float]]]:
    """(participant, kind) -> talk spans of one session, from its talk table."""
    if inputs.talk_table is None:
        raise RuntimeError(f"session {inputs.session_id}: its record names no talk table (made by an older "
                           f"version); rebuild the session")
    table = validate_talk(pq.read_table(inputs.talk_table), str(inputs.talk_table)).to_pandas()
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for p, s, e, kind in zip(table["participant_id"], table["start_s"], table["end_s"], table["kind"], strict=True):
        spans.setdefault((str(p), str(kind)), []).append((float(s), float(e)))
    return spans


def _segment_arrays(seg: Mapping[str, Any], heads: dict[str, pd.DataFrame], fbanks: dict[str, np.ndarray],
                    talk: dict[tuple[str, str], list[tuple[float, float]]], head_cols: list[str],
                    fbank_dtype: str) -> dict[str, np.ndarray]:
    a = int(round(seg["start_s"] / HEAD_HOP_S))
    n = int(seg["n_frames"])

    def head(pid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (values, observed, held): a held pose (face lost, last pose kept) is an input, not a target."""
        table = heads[pid].iloc[a:a + n]
        values = table[head_cols].to_numpy(np.float32)
        held = table["interpolated"].to_numpy(bool) & table["valid"].to_numpy(bool)
        observed = table["valid"].to_numpy(bool) & ~held
        if len(values) < n:  # beyond the end of the video: invalid frames
            values = np.vstack([values, np.full((n - len(values), len(head_cols)), np.nan, np.float32)])
            observed, held = (np.concatenate([x, np.zeros(n - len(x), bool)]) for x in (observed, held))
        return values, observed, held

    listener, listener_valid, listener_held = head(seg["listener_id"])
    speaker, speaker_valid, speaker_held = head(seg["speaker_id"])
    fb = fbanks[seg["speaker_id"]][a * FBANK_FRAMES_PER_HEAD:(a + n) * FBANK_FRAMES_PER_HEAD]
    return {
        "listener_head": listener, "speaker_head": speaker,
        "listener_valid": listener_valid.astype(np.uint8), "speaker_valid": speaker_valid.astype(np.uint8),
        "listener_interpolated": listener_held.astype(np.uint8), "speaker_interpolated": speaker_held.astype(np.uint8),
        "speech_fbank": fb.reshape(n, FBANK_FRAMES_PER_HEAD, -1).astype(fbank_dtype),
        "listener_backchannel": span_frames(talk.get((seg["listener_id"], "backchannel"), []), a, n),
        "speaker_talk": span_frames(talk.get((seg["speaker_id"], "talk"), [])
                                    + talk.get((seg["speaker_id"], "backchannel"), []), a, n),
    }


def build_dataset(sessions: list[SessionInputs], dataset_dir: str | Path, cfg: BuildConfig, *,
                  build_id: str, redraw: bool = False, ssl_sets: list[SSLSet] | None = None,
                  strict: bool = False, extra_files: list[str] | None = None) -> dict:
    """Assign splits, write shards, segments.parquet, normalization.json and manifest.json
    (which also lists `extra_files`, paths relative to `dataset_dir` written before, e.g. annotations)."""
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    segments, result = _split_segments(sessions, dataset_dir, cfg, redraw=redraw, strict=strict)
    # Head/FBank shards are keyed by what they hold (segments, splits, per-session inputs, settings),
    # not by the build id, so adding an SSL model reuses them untouched.
    core_id = stable_hash([cfg.stage_version("dataset"), sorted(str(s.segments_table.name) for s in sessions),
                           segments[["segment_id", "split", "n_frames"]].astype(str).to_numpy().tolist()], 12)
    head_cols = head_feature_columns(cfg.head.channels)
    index, norm_path = _write_core_shards(segments, sessions, dataset_dir / "shards" / core_id, cfg, head_cols)
    location = index.set_index("segment_id")
    segments["shard"] = [f"shards/{core_id}/{name}" for name in location.loc[segments["segment_id"], "shard"]]
    segments["offset"] = location.loc[segments["segment_id"], "offset"].to_numpy(np.int64)
    segments["n_frames"] = segments["n_frames"].astype(np.int32)
    segments["invalid_frac"] = segments["invalid_frac"].astype(np.float32)
    table = validate_segments(pa.Table.from_pandas(segments[SEGMENTS_SCHEMA.names], schema=SEGMENTS_SCHEMA,
                                                   preserve_index=False))
    manifest_ssl = write_ssl_sets(segments, dataset_dir, ssl_sets or [], core_id)

    write_json_atomic(dataset_dir / NORMALIZATION_FILE, json.loads(norm_path.read_text()))
    with atomic_path(dataset_dir / "segments.parquet") as tmp:
        pq.write_table(table, tmp)
    files = {name: file_entry(dataset_dir / name)
             for name in ("segments.parquet", NORMALIZATION_FILE, *(extra_files or []))}
    for folder in [f"shards/{core_id}", *(m["dir"] for m in manifest_ssl.values())]:
        listed = json.loads((dataset_dir / folder / SHARD_SET_DONE).read_text())["files"]
        files.update({f"{folder}/{name}": entry for name, entry in listed.items()})
    # the settings are stored so a later build with other settings is refused (pipeline.dataset.plan);
    # `files` (size, sha256 of everything the dataset consists of) is what `pipeline verify` checks
    write_json_atomic(dataset_dir / MANIFEST_FILE, {"build_id": build_id, "shard_set": core_id,
                                                    "head_columns": head_cols, "ssl": manifest_ssl,
                                                    "config": cfg.to_dict(), "files": dict(sorted(files.items()))})
    remove_other_folders(dataset_dir / "shards", {core_id})  # older builds are unreferenced now
    # hours count listening time once: the overlapping training windows add segments, not hours
    tiling = segments[~segments["overlap_extra"]]
    per_split = tiling.assign(dur=tiling["end_s"] - tiling["start_s"]).groupby("split")
    n_per_split = segments.groupby("split").size()
    return {
        "build_id": build_id,
        "shard_set": core_id,
        "n_segments": int(len(segments)),
        "segments_per_split": {s: int(n_per_split.get(s, 0)) for s in SPLITS},
        "overlap_extra_segments": int(segments["overlap_extra"].sum()),
        "hours_per_split": {s: float(per_split["dur"].sum().get(s, 0.0)) / 3600 for s in SPLITS},
        "listeners_per_split": {s: sorted(segments.loc[segments.split == s, "listener_id"].unique().tolist())
                                for s in SPLITS},
        "excluded": result.excluded.to_dict("records") if len(result.excluded) else [],
        "split_report": result.report,
        "registry": result.registry,
        "ssl": {name: {**m, **_ssl_storage(dataset_dir / m["dir"])} for name, m in manifest_ssl.items()},
    }


def _split_segments(sessions: list[SessionInputs], dataset_dir: Path, cfg: BuildConfig, *, redraw: bool,
                    strict: bool = False):
    """All sessions' segments with their split (kept ones only, sorted by session and time); the registry is saved."""
    parts = [pd.read_parquet(s.segments_table) for s in sessions]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise RuntimeError("no usable segments in any session: see rejected.csv and the session reports")
    segments = pd.concat(parts, ignore_index=True)
    registry_path = dataset_dir / "splits_registry.json"
    ds = cfg.dataset
    extra = segments["overlap_extra"].to_numpy(bool)
    # splits are drawn on the tiling only, so the overlap stride never changes shares or the registry
    result = assign_splits(segments[~extra], mode=ds.disjoint, ratios=ds.ratios, seed=ds.seed,
                           registry=load_registry(registry_path), redraw=redraw, strict=strict)
    write_json_atomic(registry_path, result.registry)
    segments["split"] = segments["segment_id"].map(result.segment_split)
    stretch_split = segments[~extra].groupby("stretch_id")["split"].first()
    # an overlapping window takes its stretch's split and is kept in train only: never across splits
    segments.loc[extra, "split"] = segments.loc[extra, "stretch_id"].map(stretch_split).where(
        lambda s: s == "train")
    segments = segments[segments["split"].notna()].copy()
    segments = segments.sort_values(["session_id", "start_s", "listener_id"], kind="stable").reset_index(drop=True)
    return segments, result


def _write_core_shards(segments: pd.DataFrame, sessions: list[SessionInputs], core_folder: Path, cfg: BuildConfig,
                       head_cols: list[str]) -> tuple[pd.DataFrame, Path]:
    """Head/FBank shards and their train-split normalisation statistics (reused when already complete)."""
    ds = cfg.dataset
    spec = {"format_version": SHARD_FORMAT_VERSION, "head_columns": head_cols, "head_fps": 12.5,
            "fbank_frames_per_head": FBANK_FRAMES_PER_HEAD, "fbank_bins": cfg.audio.fbank_bins,
            "fbank_dtype": ds.fbank_dtype, "shard_set": core_folder.name}
    by_session = {s.session_id: s for s in sessions}
    head_stats = RunningStats(len(head_cols))
    fbank_stats = RunningStats(cfg.audio.fbank_bins)

    def load_core(session_id: str):
        inputs = by_session[session_id]
        return ({p: pd.read_parquet(path) for p, path in inputs.head_tables.items()},
                {p: np.load(path, mmap_mode="r") for p, path in inputs.fbank_tables.items()}, load_talk(inputs))

    def accumulate(arrays: dict[str, np.ndarray]) -> None:
        for role in ("listener", "speaker"):
            head_stats.update(arrays[f"{role}_head"][arrays[f"{role}_valid"].astype(bool)])
        fbank_stats.update(arrays["speech_fbank"].astype(np.float32))

    index = write_shard_set(
        segments, core_folder, load_session=load_core,
        make_arrays=lambda seg, t: _segment_arrays(seg, t[0], t[1], t[2], head_cols, ds.fbank_dtype),
        max_bytes=ds.shard_mb << 20, spec=spec, on_train=accumulate,
        extra_files=lambda: {NORMALIZATION_FILE: {
            "source": "train split, valid frames of listener and speaker heads", "head_columns": head_cols,
            "head": head_stats.result(), "speech_fbank": fbank_stats.result()}})
    norm_path = core_folder / NORMALIZATION_FILE
    return index, norm_path


def _ssl_storage(folder: Path) -> dict:
    """Bytes of an SSL set's pieces, and whether they are hard links (stored once with work/) or copies."""
    pieces = [p.stat() for p in folder.rglob("*.safetensors")]
    return {"bytes": sum(st.st_size for st in pieces), "hard_linked": all(st.st_nlink > 1 for st in pieces)}


# ---- gathering a build's records ------------------------------------------------------------------------


def collect_sessions(plan: BuildPlan, layout: WorkLayout) -> tuple[list[SessionRecord], list[Rejection]]:
    """Every planned session's record, and the rejections of the plan, its recordings and sessions."""
    records, rejected = [], list(plan.rejected)
    for session in plan.sessions:
        for stage, keys in (("head", session.head_keys), ("audio", session.audio_keys)):
            for key in keys:
                rec = RecordingRecord.read(layout.recording(stage, RecordingKey.parse(key))[0])
                if rec.rejection is not None:
                    rejected.append(rec.rejection)
        record = SessionRecord.read(layout.session(session))
        records.append(record)
        if record.rejection is not None:
            rejected.append(record.rejection)
    return records, rejected


def assemble_build(plan: BuildPlan, cfg: BuildConfig, *, out: str | Path, corpus: str | Path, build_id: str,
                   redraw: bool = False, strict: bool = False) -> dict:
    """After every session and SSL job of `plan` finished: rejected.csv, the dataset, data card, build marker.

    Returns the build summary (also stored as `dataset/build-<id>.json`, the completion marker).
    """
    from pipeline.corpus.layout import skipped_entries
    from pipeline.dataset.datacard import write_data_card, write_rejected

    layout = WorkLayout.of(out, cfg)
    records, rejected = collect_sessions(plan, layout)
    qa, qa_rejected = collect_annotation_qa(plan, layout, cfg.qa.mode)
    rejected += qa_rejected
    ssl_sets, ssl_rejected = collect_ssl_sets(plan, layout)
    rejected += ssl_rejected
    # a session whose speech lacks SSL features in a set cannot feed an SSL model: it is left out whole
    left_out = {q.session_id for q in qa_rejected + ssl_rejected}
    records = [replace(r, status="rejected", stats={}) if r.session_id in left_out else r for r in records]
    dataset_dir = Path(out) / "dataset"
    write_rejected(dataset_dir / "rejected.csv", rejected)
    annotations = export_automatic_turns(plan, layout, dataset_dir)
    if rejected and strict:
        lines = "\n".join(f"  {r.session_id}/{r.participant_id}: {r.file}: {r.reason}" for r in rejected)
        raise RuntimeError(f"--strict: {len(rejected)} input(s) quarantined:\n{lines}")
    sessions = [SessionInputs(r.session_id, Path(r.segments_table), {p: Path(v) for p, v in r.head_tables.items()},
                              {p: Path(v) for p, v in r.fbank_tables.items()},
                              Path(r.talk_table) if r.talk_table else None, r.stats) for r in records if r.ok]
    summary = build_dataset(sessions, dataset_dir, cfg, build_id=build_id, redraw=redraw, ssl_sets=ssl_sets,
                            strict=strict, extra_files=annotations)
    summary.update(annotations=annotations, annotation_qa=qa, corpus=str(Path(corpus).resolve()), config=cfg.to_dict(), inputs=plan.inputs,
                   skipped_entries=skipped_entries(corpus),
                   sessions={r.session_id: r.stats for r in records}, rejected=[r.to_dict() for r in rejected])
    write_data_card(dataset_dir, summary)
    marker = dataset_dir / f"build-{build_id}.json"
    for old in dataset_dir.glob("build-*.json"):
        if old != marker:  # same settings (checked before the build): this build supersedes it
            log.info("build %s replaces build %s in %s", build_id, old.stem.removeprefix("build-"), dataset_dir)
            old.unlink()
    write_json_atomic(marker, summary)
    return summary


ANNOTATIONS_DIR = "annotations"


def collect_annotation_qa(plan: BuildPlan, layout: WorkLayout, mode: str) -> tuple[dict[str, dict], list[Rejection]]:
    """Annotation-QA records of the sessions with human turns, and (under `quarantine`) the rejections of
    those with gross disagreements; under `warn` each disagreement is logged."""
    from pipeline.conversation.annotation_qa import qa_rejection, read_qa

    found, rejected = {}, []
    for session in plan.sessions:
        if not session.qa_key:
            continue
        qa = found[session.session_id] = read_qa(layout.qa(session))
        rejection = qa_rejection(qa, mode)
        if rejection is not None:
            rejected.append(rejection)
            log.warning("quarantined session %s (annotation QA): %s", session.session_id, rejection.reason)
        for problem in qa.get("problems", []) if rejection is None else []:
            log.warning("annotation QA of session %s (%s): %s", session.session_id, qa["turns_file"],
                        problem["reason"])
    return found, rejected


def export_automatic_turns(plan: BuildPlan, layout: WorkLayout, dataset_dir: Path) -> list[str]:
    """`annotations/<session_id>.TextGrid` and `.eaf` of every session with automatic turns, for correction
    (paths relative to `dataset_dir`); exports of sessions that now have a turns file are removed."""
    from pipeline.conversation.turns_stage import AutoTurnsRecord, export_annotations

    folder = dataset_dir / ANNOTATIONS_DIR
    names = []
    for session in plan.sessions:
        if not session.automatic_turns:
            continue
        record = AutoTurnsRecord.read(layout.turns(session)[0])
        if record.ok:
            pids = sorted(plan.inputs[session.session_id]["media"])
            names += [p.relative_to(dataset_dir).as_posix() for p in export_annotations(record, pids, folder)]
    if folder.is_dir():
        for old in folder.iterdir():
            if old.relative_to(dataset_dir).as_posix() not in names:
                old.unlink()
    return sorted(names)


def ssl_set_for(dataset_dir: str | Path, model: str, mode: str) -> str:
    """The name of the dataset's SSL feature set of `model` (as the user named it) in `mode`."""
    manifest = read_manifest(dataset_dir)
    names = sorted(n for n, entry in manifest.get("ssl", {}).items()
                   if entry["spec"]["model"] == model and entry["spec"]["mode"] == mode)
    if not names:
        raise ValueError(f"no SSL features for {model} ({mode}) in {dataset_dir}")
    return names[0]
