"""Per-recording units of work, run on Dask workers (or inline).

Each job writes its data file, then a small JSON *record* (the Luigi completion marker) with
status `ok` or `rejected`; both writes are atomic, so a killed job leaves nothing that counts as
done. Bad input (an `InputError`) becomes a `rejected` record with the reason - the quarantine -
while anything else (a bug, out of memory) propagates and fails the task loudly.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import InputError, MediaError
from pipeline.common.fsutil import atomic_path, write_json_atomic
from pipeline.common.logs import progress, quiet_native_logs, quiet_third_party
from pipeline.common.runtime import limit_threads
from pipeline.features.speech_ssl.options import SSL_FPS
from schemas.conventions import HEAD_HOP_S, SSL_FRAMES_PER_HEAD


def prepare_worker() -> None:
    """One compute thread per worker process (parallelism comes from workers), native logs quiet."""
    limit_threads()
    # A LocalCluster's workers also inherit the `luigi` process's filtered stderr
    # (pipeline.common.logs.filter_native_stderr); workers of a remote cluster only get this.
    quiet_native_logs()
    if _in_dask_worker():
        quiet_third_party()
        # a batch that ends early cancels its other jobs; each cancellation logs a WARNING in its worker
        logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


def rejected_record(job: dict[str, Any], stage: str, exc: InputError) -> dict[str, Any]:
    return {"status": "rejected", "stage": stage, "session_id": job["session_id"],
            "participant_id": job.get("participant_id", ""), "kind": exc.kind, "file": exc.path,
            "where": exc.where or "", "reason": exc.message}


def run_head_job(job: dict[str, Any]) -> dict[str, Any]:
    """Head features for one participant's video (tile): Parquet table + record."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.features.head.frame_features import extract_head_features
    from pipeline.features.head.tracking import FaceMeshTracker
    from schemas.tables import head_features_schema, validate_table

    prepare_worker()
    cfg = job["config"]
    started = time.perf_counter()
    factory = (lambda: FaceMeshTracker(task_model=cfg["face_model"])) if cfg.get("face_model") else None
    try:
        crop = tuple(job["crop"]) if job.get("crop") else None
        table = extract_head_features(
            job["video"], crop=crop, tracker_factory=factory, max_gap_s=cfg["max_gap_s"],
            channels=tuple(cfg["channels"]),
            savgol_window=cfg["savgol_window"], savgol_order=cfg["savgol_order"],
            smoothing=cfg["smoothing"], smoothing_min_cutoff_hz=cfg["smoothing_min_cutoff_hz"],
            smoothing_beta=cfg["smoothing_beta"])
        require_plausible_pose(table, job["video"], tuple(cfg["channels"]))
    except InputError as exc:
        record = rejected_record(job, "head", exc)
    else:
        arrow = validate_table(pa.Table.from_pandas(table, preserve_index=False),
                               head_features_schema(tuple(cfg["channels"])), job["video"])
        with atomic_path(job["out_table"]) as tmp:
            pq.write_table(arrow, tmp, compression="zstd")
        n = len(table)
        record = {"status": "ok", "stage": "head", "session_id": job["session_id"],
                  "participant_id": job["participant_id"], "table": Path(job["out_table"]).name,
                  "n_frames": n, "duration_s": n * HEAD_HOP_S,
                  "detected_frac": float(table["detected"].mean()) if n else 0.0,
                  "valid_frac": float(table["valid"].mean()) if n else 0.0,
                  "seconds": round(time.perf_counter() - started, 3), "worker_pid": os.getpid()}
    write_json_atomic(job["out_record"], record)
    return record


def run_audio_job(job: dict[str, Any]) -> dict[str, Any]:
    """FBank for one participant's audio, on the session (video) timeline: .npy + record."""
    from pipeline.features.fbank import fbank_for_file

    prepare_worker()
    started = time.perf_counter()
    try:
        fbank = fbank_for_file(job["audio"], offset_s=job["offset_s"], n_bins=job["config"]["fbank_bins"])
        require_finite(fbank, job["audio"], "FBank", frames_per_s=100.0)
    except InputError as exc:
        record = rejected_record(job, "audio", exc)
    else:
        with atomic_path(job["out_table"]) as tmp:
            np.save(tmp, fbank)
        record = {"status": "ok", "stage": "audio", "session_id": job["session_id"],
                  "participant_id": job["participant_id"], "table": Path(job["out_table"]).name,
                  "n_fbank_frames": int(len(fbank)), "duration_s": len(fbank) / 100.0,
                  "seconds": round(time.perf_counter() - started, 3)}
    write_json_atomic(job["out_record"], record)
    return record


_SSL_MODELS: dict[tuple[str, str], Any] = {}


def run_ssl_job(job: dict[str, Any]) -> dict[str, Any]:
    """Every hidden layer of one SSL model for the frames of one participant's audio that segments use
    (`job["spans"]`, pipeline.features.ssl_pieces): a safetensors piece [T, 4, L, D] + record.

    The model is loaded once per worker process and reused across recordings. A checkpoint that
    cannot be loaded is a configuration error, not bad input: it raises and fails the task.
    """
    from pipeline.features.speech_ssl import iter_ssl, load_ssl_model, ssl_num_frames
    from pipeline.features.ssl_pieces import kept_rows, require_spans_within, write_piece
    from pipeline.media.audio import decode_audio

    prepare_worker()
    cfg = job["config"]
    started = time.perf_counter()
    cache_key = (job["model_dir"], cfg["device"])
    if cache_key not in _SSL_MODELS:
        import torch  # noqa: F401 - imported first, so limit_threads() sizes its pools before any work

        limit_threads()
        _SSL_MODELS[cache_key] = load_ssl_model(job["model_dir"], device=cfg["device"])
    loaded = _SSL_MODELS[cache_key]
    spans = [(int(a), int(b)) for a, b in job["spans"]]
    n_kept = sum(b - a for a, b in spans)
    try:
        wave = decode_audio(job["audio"], offset_s=job["offset_s"])
        n_frames = ssl_num_frames(len(wave))
        require_spans_within(spans, n_frames, job["audio"])
        options = {"mode": cfg["mode"], "window_s": cfg["window_s"], "context_s": cfg["context_s"],
                   "layers": list(cfg["layers"]) or None, "dtype": cfg["dtype"],
                   "autocast": cfg.get("autocast") or None}
        n_states = len(cfg["layers"]) or loaded.num_hidden_states
        blocks = _frames_progress(iter_ssl(loaded, wave, chunk_s=cfg["chunk_s"], **options), n_frames,
                                  f"  SSL {job['session_id']}/{job['participant_id']}")
        stored = write_piece(job["out_table"], kept_rows(blocks, spans), n_kept, (n_states, loaded.hidden_size),
                             cfg["dtype"], {"model_tag": job["model_tag"], "mode": cfg["mode"]},
                             check=lambda rows, first: require_finite(rows, job["audio"], "SSL",
                                                                      frames_per_s=SSL_FPS, first_frame=first))
    except InputError as exc:
        record = rejected_record(job, "ssl", exc)
    else:
        check = chunking_check(loaded, wave, cfg["chunk_s"], options) if job.get("self_check") else None
        record = {"status": "ok", "stage": "ssl", "session_id": job["session_id"],
                  "participant_id": job["participant_id"], "table": Path(job["out_table"]).name,
                  "shape": [n_kept * SSL_FRAMES_PER_HEAD, n_states, loaded.hidden_size], "dtype": cfg["dtype"],
                  "spans": [list(span) for span in spans], "recording_ssl_frames": n_frames, "stored": stored,
                  "model": job["model"], "model_tag": job["model_tag"], "mode": cfg["mode"],
                  "chunking_check": check, "seconds": round(time.perf_counter() - started, 3),
                  "worker_pid": os.getpid()}
    write_json_atomic(job["out_record"], record)
    return record


def require_finite(values: np.ndarray, path: str | Path, what: str, *, frames_per_s: float,
                   first_frame: int = 0) -> None:
    """Features are checked before they are stored: a NaN/inf would poison every batch it lands in.
    bfloat16 features stored as uint16 bit patterns count as non-finite when their exponent is all ones."""
    arr = np.asarray(values)
    bad = (arr & 0x7F80) == 0x7F80 if arr.dtype == np.uint16 else ~np.isfinite(arr)  # uint16: bfloat16 bits
    if bad.any():
        rows = bad.reshape(len(arr), -1).any(axis=1)
        t = (first_frame + int(np.argmax(rows))) / frames_per_s
        raise MediaError(path, f"{what} features are not finite from {t:.2f} s ({int(rows.sum())} frames): the "
                               "recording (or the model's precision) produced NaN/inf; not stored", f"t={t:.2f} s")


ANGLE_LIMIT_DEG = 180.0  # Euler angles (pipeline.features.head.pose) lie in [-180, 180]


def require_plausible_pose(table: Any, path: str | Path, channels: tuple[str, ...]) -> None:
    """Head poses are checked before they are stored: a valid frame has finite static channels and
    angles inside [-180, 180] degrees; anything else means a broken decoder or landmark output."""
    valid = table["valid"].to_numpy(bool)
    for name in channels:
        values = table[name].to_numpy(np.float64)
        limit = ANGLE_LIMIT_DEG if name in ("pitch", "yaw", "roll") else np.inf
        bad = valid & ~(np.isfinite(values) & (np.abs(values) <= limit))
        if bad.any():
            first = int(np.argmax(bad))
            t = float(table["time_s"].iloc[first])
            raise MediaError(path, f"head {name} is {values[first]!r} at {t:.2f} s ({int(bad.sum())} frames); "
                                   f"expected a finite value{f' within ±{limit:g}°' if np.isfinite(limit) else ''}",
                             f"t={t:.2f} s")


def _in_dask_worker() -> bool:
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def _frames_progress(blocks: Iterable[np.ndarray], n_frames: int, desc: str) -> Iterator[np.ndarray]:
    """Seconds of one recording done, for long recordings computed in this process (a GPU run);
    Dask workers draw no bars (their stderr is shared by all workers)."""
    if _in_dask_worker():
        yield from blocks
        return
    with progress(total=n_frames, desc=desc, unit="s", unit_scale=1 / SSL_FPS, leave=False) as bar:
        for block in blocks:
            bar.update(len(block))
            yield block


def chunking_check(loaded: Any, wave: np.ndarray, chunk_s: float, options: dict, *,
                   excerpt_s: float = 90.0) -> dict[str, float]:
    """Measure the long-input computation against one unchunked pass on an excerpt.

    `strict` must be exact (streaming with carried state); `none`/`attention` use overlapping
    windows whose difference from one pass depends on the context. Reported in the data card.
    """
    from pipeline.features.speech_ssl import extract_ssl

    excerpt = wave[: int(excerpt_s * 16000)]
    chunk = min(chunk_s, excerpt_s / 3)  # at least three windows over the excerpt
    exact = {**options, "dtype": "float32", "autocast": None}
    chunked = extract_ssl(loaded, excerpt, chunk_s=chunk, **exact)
    one_pass = extract_ssl(loaded, excerpt, chunk_s=excerpt_s * 2, **exact)
    diff = np.abs(chunked - one_pass)
    return {"excerpt_s": round(len(excerpt) / 16000, 2), "chunk_s": chunk, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "feature_rms": float(np.sqrt(np.mean(one_pass**2)))}


STAGE_LABELS = {run_head_job: "head features", run_audio_job: "FBank", run_ssl_job: "SSL features"}


def stage_label(fn: Callable[[dict], dict], jobs: list[dict[str, Any]]) -> str:
    """Progress-bar name of a batch: the stage, plus the model for SSL features."""
    label = STAGE_LABELS.get(fn, getattr(fn, "__name__", "jobs"))
    if fn is run_ssl_job and jobs:
        label += f" ({jobs[0]['model_tag']}, {jobs[0]['config']['mode']})"
    return label
