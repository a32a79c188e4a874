"""Write segments into size-bounded safetensors shards and accumulate train statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.common.fsutil import atomic_path


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
        self.written: list[Path] = []

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
        self.written.append(final)
        self._buffer, self._bytes, self._rows = {}, 0, 0
        self._index += 1

    def close(self) -> list[Path]:
        self.flush()
        return self.written


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
