"""Tensor shard contract.

Per split, `<out>/dataset/shards/<build>/<split>-NNNNN.safetensors`, each holding frame-major
arrays of whole segments concatenated along the frame axis (12.5 fps head frames):

    listener_head   [F, 18] float32   NaN where no pose is known (held poses are stored, see below)
    speaker_head    [F, 18] float32   NaN where no pose is known
    listener_valid  [F]     uint8     1: an observed pose (a loss target / metric frame)
    speaker_valid   [F]     uint8
    listener_interpolated [F] uint8   1: the face was lost; the last observed pose is held (input only)
    speaker_interpolated  [F] uint8
    speech_fbank    [F, 8, 80] float32|float16   speaker FBank, 8 frames per head frame
    listener_backchannel [F] uint8    1: the listener is producing a backchannel in this frame
    speaker_talk    [F]     uint8     1: the speaker is talking in this frame (turn annotations)

Head frame k covers [k * 0.08, (k + 1) * 0.08) s, the time of its 8 FBank frames; a flag is 1
when an annotated talk span overlaps that interval. A listener's talk that is no backchannel
never lies inside a segment (it ends the listener stretch), so `listener_backchannel` is all the
listener's talk there is.

Held frames (a face lost for at most `--max-gap-s`, `interpolated` in the head table) carry the last
observed pose as a causal fill for model inputs, with `*_valid` = 0: they are never loss targets and
never metric frames.

A segment lives in exactly one shard: rows `offset .. offset + n_frames` (see segments.parquet).

SSL features live in their own shard sets, one per (model, mode), so adding a model adds files and
rewrites nothing: `<out>/dataset/ssl/<model_tag>-<mode>/<shard_set>/<split>-NNNNN.safetensors`
with one tensor `ssl [F, 4, L, D]` (float16 by default; 4 SSL frames of 20 ms per head frame,
L hidden states, D dims) and `index.parquet` (segment_id, shard, offset). `manifest.json` names
the sets and their specs (model id, weights sha256, transformers version, mode, layers, dtype).
Shard metadata (string-only in safetensors) records the feature spec as JSON under `"spec"`.
Big tensors stay out of Parquet: safetensors files are memory-mapped and read lazily.
"""

from __future__ import annotations

SHARD_TENSORS = ("listener_head", "speaker_head", "listener_valid", "speaker_valid", "speech_fbank",
                 "listener_backchannel", "speaker_talk", "listener_interpolated", "speaker_interpolated")
SHARD_FORMAT_VERSION = 3  # 2: listener_backchannel, speaker_talk; 3: *_interpolated, held frames not valid


SSL_SHARD_TENSORS = ("ssl",)


def check_shard_tensors(names: list[str], path: str, expected: tuple[str, ...] | None = None) -> None:
    missing = [t for t in (expected or SHARD_TENSORS) if t not in names]
    if missing:
        raise ValueError(f"{path}: shard lacks tensor(s) {missing}; has {sorted(names)}")
