"""SSL pieces: only the frames segments use, streamed into a safetensors file that real readers accept."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipeline.common.errors import MediaError
from pipeline.dataset.loader import MappedShard
from pipeline.features.ssl_pieces import (
    kept_rows,
    merge_spans,
    piece_row,
    require_spans_within,
    span_offsets,
    write_piece,
)


def test_spans_merge_and_map_segment_rows():
    spans = merge_spans([(30, 40), (0, 10), (5, 12), (12, 15), (50, 50)])
    assert spans == [(0, 15), (30, 40)]  # overlapping and touching ranges join; empty ones vanish
    offsets = span_offsets(spans)
    assert offsets == [0, 15]
    assert piece_row(spans, offsets, 5, 10) == 5 and piece_row(spans, offsets, 32, 8) == 17
    with pytest.raises(KeyError):
        piece_row(spans, offsets, 10, 10)  # runs past the end of its span


@pytest.mark.parametrize("block", [1, 7, 40, 1000])
def test_kept_rows_equal_slicing_for_any_block_size(block):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((400, 2, 3)).astype(np.float32)  # 100 head frames x 4 SSL frames
    spans = [(3, 9), (10, 11), (40, 70)]
    consumed = []

    def blocks():
        for a in range(0, len(features), block):
            consumed.append(a)
            yield features[a:a + block]

    got = list(kept_rows(blocks(), spans))
    expected = np.concatenate([features[4 * a:4 * b] for a, b in spans])
    assert np.array_equal(np.concatenate([rows for _, rows in got]), expected)
    firsts = [first for first, _ in got]
    assert firsts[0] == 12 and all(0 <= f < len(features) for f in firsts)
    assert consumed[-1] < 4 * 70  # the audio after the last span is never asked for


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_piece_is_a_safetensors_file_real_readers_accept(tmp_path, dtype):
    import torch
    from safetensors.torch import load_file

    rng = np.random.default_rng(1)
    source = torch.from_numpy(rng.standard_normal((80, 3, 5)).astype(np.float32))
    stored = source.to(torch.bfloat16).view(torch.uint16).numpy() if dtype == "bfloat16" else \
        source.numpy().astype(dtype)
    spans = [(2, 6), (10, 12)]
    path = tmp_path / "piece.safetensors"
    entry = write_piece(path, kept_rows([stored[:33], stored[33:]], spans), 6, (3, 5), dtype, {"mode": "strict"})
    assert entry == {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    expected = np.concatenate([stored[8:24], stored[40:48]]).reshape(6, 4, 3, 5)
    loaded = load_file(str(path))["ssl"]  # the safetensors library itself
    assert loaded.dtype == {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    as_bits = loaded.view(torch.uint16).numpy() if dtype == "bfloat16" else loaded.numpy()
    assert np.array_equal(as_bits, expected)
    assert np.array_equal(MappedShard(path)["ssl"], expected)  # and the dataset's memory-mapped reader


def test_segments_past_the_audio_are_named_with_times():
    require_spans_within([(0, 25)], 100, "a.wav")  # 25 head frames = 100 SSL frames: fits exactly
    with pytest.raises(MediaError, match=r"a.wav.*ends at 2.00 s.*until 2.08 s"):
        require_spans_within([(0, 10), (20, 26)], 100, "a.wav")
