"""Write segments into size-bounded safetensors shards and accumulate train statistics.

A shard set (one folder: per-split shards + `index.parquet`) is written under a temporary name and
renamed into place whole, with `_COMPLETE.json` listing every file's size and sha256: a killed or
concurrent writer never leaves a half set under the final name, and a set whose files are missing
or cut short is rebuilt instead of reused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.common.fsutil import atomic_folder, atomic_path, file_entry, file_problem, write_json_atomic
from schemas.tables import SPLITS

SHARD_SET_DONE = "_COMPLETE.json"  # {"spec": ..., "files": {name: {"bytes": n, "sha256": hex}}}


class ShardWriter:
    """Appends whole segments to the current shard; starts a new shard past `max_bytes`.

    safetensors cannot append, so a shard is buffered in memory (bounded by `max_bytes`) and
    written once, atomically.
    """

    def __init__(self, out_dir: str | Path, prefix: str, *, max_bytes: int = 256 << 20,
                 metadata: dict[str, str] | None = None):
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.metadata = metadata or {}
        self._buffer: dict[str, list[np.ndarray]] = {}
        self._bytes = 0
        self._rows = 0
        self._index = 0
        self.written: dict[str, dict[str, Any]] = {}  # file name -> {"bytes", "sha256"}

    @property
    def current_name(self) -> str:
        return f"{self.prefix}-{self._index:05d}.safetensors"

    def add(self, arrays: dict[str, np.ndarray]) -> tuple[str, int]:
        """Buffer one segment; return (shard file name, row offset) where it will live."""
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"segment arrays disagree on frame count: { {k: len(v) for k, v in arrays.items()} }")
        size = sum(a.nbytes for a in arrays.values())
        if self._rows and self._bytes + size > self.max_bytes:
            self.flush()
        for name, arr in arrays.items():
            self._buffer.setdefault(name, []).append(np.ascontiguousarray(arr))
        where = (self.current_name, self._rows)
        self._rows += lengths.pop()
        self._bytes += size
        return where

    def flush(self) -> None:
        if not self._rows:
            return
        from safetensors.numpy import save_file

        tensors = {k: np.concatenate(v) for k, v in self._buffer.items()}
        final = self.out_dir / self.current_name
        with atomic_path(final) as tmp:
            save_file(tensors, str(tmp), metadata=self.metadata)
            self.written[final.name] = file_entry(tmp)
        self._buffer, self._bytes, self._rows = {}, 0, 0
        self._index += 1

    def close(self) -> dict[str, dict[str, Any]]:
        self.flush()
        return self.written


def shard_set_problems(folder: Path, *, checksums: bool = False) -> list[str]:
    """Why the shard set in `folder` cannot be used as is (empty list: complete). Sizes always,
    sha256 when `checksums` (reads every byte)."""
    done = folder / SHARD_SET_DONE
    if not done.is_file():
        return [f"{folder}: no {SHARD_SET_DONE} (never finished)"]
    try:
        files = json.loads(done.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return [f"{done}: unreadable or from an older version (no file list)"]
    return [problem for name, entry in sorted(files.items())
            if (problem := file_problem(folder / name, entry, checksums=checksums))]


def write_shard_set(segments: pd.DataFrame, folder: Path, *, load_session: Callable[[str], Any],
                    make_arrays: Callable[[dict[str, Any], Any], dict[str, np.ndarray]], max_bytes: int, spec: dict,
                    on_train: Callable[[dict[str, np.ndarray]], None] | None = None,
                    extra_files: Callable[[], dict[str, Any]] | None = None) -> pd.DataFrame:
    """Write every segment's arrays into per-split shards under `folder`; return the index.

    `extra_files()` (called after the shards) returns JSON files to store in the set (name -> content),
    such as the statistics `on_train` gathered: they are part of the set, so never out of step with it.

    A complete set is reused as is: shard sets are keyed by what they contain, so adding an SSL
    model never rewrites the head/FBank shards or another model's shards. Callers hold the
    output lock (pipeline.common.fsutil.output_lock).
    """
    if not shard_set_problems(folder):
        return pd.read_parquet(folder / "index.parquet")
    with atomic_folder(folder) as staging:  # replaces an unfinished or damaged set of an earlier run
        index, files = _write_shards(segments, staging, load_session, make_arrays, max_bytes, spec, on_train)
        table = pd.DataFrame(index, columns=["segment_id", "shard", "offset"])
        with atomic_path(staging / "index.parquet") as tmp:
            table.to_parquet(tmp, index=False)
            files["index.parquet"] = file_entry(tmp)
        for name, content in (extra_files() if extra_files else {}).items():
            write_json_atomic(staging / name, content)
            files[name] = file_entry(staging / name)
        write_json_atomic(staging / SHARD_SET_DONE, {"spec": spec, "files": files})
    return table


def _write_shards(segments: pd.DataFrame, folder: Path, load_session, make_arrays, max_bytes: int, spec: dict,
                  on_train) -> tuple[list[dict], dict[str, dict[str, Any]]]:
    index, files = [], {}
    for split in SPLITS:
        writer = ShardWriter(folder, split, max_bytes=max_bytes, metadata=spec_metadata(spec))
        current, tables = None, None
        for seg in _rows(segments[segments["split"] == split]):
            if seg["session_id"] != current:  # segments are sorted by session: load each once
                current = seg["session_id"]
                tables = load_session(current)
            arrays = make_arrays(seg, tables)
            name, offset = writer.add(arrays)
            index.append({"segment_id": seg["segment_id"], "shard": name, "offset": offset})
            if split == "train" and on_train is not None and not seg["overlap_extra"]:
                on_train(arrays)  # overlapping windows would count their frames twice
        files.update(writer.close())
    return index, files


def _rows(frame: pd.DataFrame, chunk: int = 4096) -> Iterator[dict[str, Any]]:
    """Each row as a dict of plain values, a chunk at a time: `iterrows` builds a Series per row,
    which cost more than the rest of indexing a paper-size corpus (bench/paper_scale.py)."""
    for start in range(0, len(frame), chunk):
        yield from frame.iloc[start:start + chunk].to_dict("records")


@dataclass
class RunningStats:
    """Per-channel mean and standard deviation over finite values, in float64 (streaming)."""

    dim: int
    count: np.ndarray = field(init=False)
    total: np.ndarray = field(init=False)
    total_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.count = np.zeros(self.dim)
        self.total = np.zeros(self.dim)
        self.total_sq = np.zeros(self.dim)

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64).reshape(-1, self.dim)
        finite = np.isfinite(values)
        v = np.where(finite, values, 0.0)
        self.count += finite.sum(0)
        self.total += v.sum(0)
        self.total_sq += (v * v).sum(0)

    def result(self) -> dict[str, list[float]]:
        n = np.maximum(self.count, 1)
        mean = self.total / n
        var = np.maximum(self.total_sq / n - mean**2, 0.0)
        std = np.sqrt(var)
        std = np.where(std < 1e-8, 1.0, std)  # constant channels: leave unscaled
        return {"mean": mean.tolist(), "std": std.tolist(), "count": self.count.astype(int).tolist()}


def spec_metadata(spec: dict) -> dict[str, str]:
    return {"spec": json.dumps(spec, sort_keys=True)}
