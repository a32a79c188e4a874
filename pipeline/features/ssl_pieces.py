"""SSL features stored once: only the frames that segments use, streamed straight into a shard file.

All-layer SSL features are large (13 x 768 fp16 per 20 ms: ~3.6 GB per audio hour). Keeping a whole
recording in `work/` and copying every segment's rows into dataset shards stored them twice, plus
the parts of the call no segment uses. Instead an SSL job is given the *spans* its recording is
needed for (the head frames of the segments in which that participant speaks, merged) and writes
those rows, and only those, into one safetensors file: a *piece*. The dataset's SSL set hard-links
the pieces (pipeline.dataset.ssl_sets), so the bytes exist once on disk.

Spans are half-open head-frame ranges `[a, b)`; head frame `i` holds SSL frames `4i .. 4i+3`
(schemas.conventions.SSL_FRAMES_PER_HEAD), the layout the loader reads (`ssl`: [T, 4, L, D]).
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import MediaError
from pipeline.common.fsutil import atomic_path
from schemas.conventions import HEAD_HOP_S, SSL_FRAMES_PER_HEAD

Span = tuple[int, int]

# numpy storage dtype -> safetensors dtype code (bfloat16 is held as uint16 bit patterns)
_SAFETENSORS_CODES = {"float16": "F16", "float32": "F32", "bfloat16": "BF16"}


def merge_spans(ranges: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans covering `ranges` (overlapping or touching ranges join)."""
    merged: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in ranges if b > a):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def span_offsets(spans: Sequence[Span]) -> list[int]:
    """Row of each span's first frame inside the piece (the spans' rows are stored back to back)."""
    offsets, row = [], 0
    for a, b in spans:
        offsets.append(row)
        row += b - a
    return offsets


def piece_row(spans: Sequence[Span], offsets: Sequence[int], start: int, n_frames: int) -> int:
    """Row in the piece of head frame `start`, whose `n_frames` frames must lie inside one span."""
    i = bisect.bisect_right(spans, start, key=lambda span: span[0]) - 1
    if i < 0 or start + n_frames > spans[i][1]:
        raise KeyError(f"head frames {start}..{start + n_frames} are not inside one stored span")
    return offsets[i] + start - spans[i][0]


def require_spans_within(spans: Sequence[Span], n_ssl_frames: int, audio: str | Path) -> None:
    """Segments must lie inside the audio: a span past its end is bad input (the recording is cut short)."""
    if spans and spans[-1][1] * SSL_FRAMES_PER_HEAD > n_ssl_frames:
        end_s = n_ssl_frames / SSL_FRAMES_PER_HEAD * HEAD_HOP_S
        need_s = spans[-1][1] * HEAD_HOP_S
        raise MediaError(audio, f"the audio ends at {end_s:.2f} s on the session timeline, but its segments need "
                                f"speech until {need_s:.2f} s; expected audio covering every segment",
                         f"t={end_s:.2f} s")


def kept_rows(blocks: Iterable[np.ndarray], spans: Sequence[Span]) -> Iterator[tuple[int, np.ndarray]]:
    """(first SSL frame, rows) of the blocks' frames that fall inside `spans`, in order.

    Stops consuming `blocks` after the last span: later audio is never computed."""
    ssl_spans = [(a * SSL_FRAMES_PER_HEAD, b * SSL_FRAMES_PER_HEAD) for a, b in spans]
    if not ssl_spans:
        return
    position, i = 0, 0
    for block in blocks:
        end = position + len(block)
        while i < len(ssl_spans) and ssl_spans[i][0] < end:
            a, b = max(ssl_spans[i][0], position), min(ssl_spans[i][1], end)
            if b > a:
                yield a, block[a - position:b - position]
            if ssl_spans[i][1] > end:
                break  # this span goes on in the next block
            i += 1
        if i == len(ssl_spans):
            return
        position = end


def write_piece(path: str | Path, rows: Iterable[tuple[int, np.ndarray]], n_head_frames: int,
                state_shape: tuple[int, int], dtype: str, metadata: dict[str, str],
                check: Callable[[np.ndarray, int], None] | None = None) -> dict[str, Any]:
    """Stream `rows` (from `kept_rows`) into a safetensors file holding `ssl`: [n_head_frames, 4, L, D].

    safetensors is a JSON header then raw bytes, so the header (whose shape is known in advance) is
    written first and the rows follow with plain writes: an hour of features never sits in RAM.
    `check(rows, first_frame)` vets each block before it is stored. Returns the file's size and sha256.
    """
    from pipeline.features.speech_ssl.options import storage_dtype

    np_dtype = np.dtype(storage_dtype(dtype))
    shape = [n_head_frames, SSL_FRAMES_PER_HEAD, *state_shape]
    n_bytes = int(np.prod(shape)) * np_dtype.itemsize
    header = json.dumps({"__metadata__": metadata, "ssl": {"dtype": _SAFETENSORS_CODES[dtype], "shape": shape,
                                                          "data_offsets": [0, n_bytes]}},
                        separators=(",", ":"), sort_keys=True).encode()
    header += b" " * (-len(header) % 8)  # the format aligns the data to 8 bytes
    digest = hashlib.sha256()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in (len(header).to_bytes(8, "little"), header):
            f.write(chunk)
            digest.update(chunk)
        written = 0
        for first, block in rows:
            block = np.ascontiguousarray(block, dtype=np_dtype)
            if check is not None:
                check(block, first)
            data = block.tobytes()
            f.write(data)
            digest.update(data)
            written += len(data)
        if written != n_bytes:
            raise RuntimeError(f"{path}: SSL piece got {written} bytes of features, expected {n_bytes}")
        size = f.tell()
    return {"bytes": size, "sha256": digest.hexdigest()}
