"""Every hidden layer of HuBERT / wav2vec 2.0 (/ WavLM) at 50 fps, causal and non-causal, for long
recordings with bounded memory.

We run our own forward over the Hugging Face model's submodules (conv feature encoder, feature
projection, positional convolution, each layer's q/k/v/out projections, layer norms, feed-forward) so
that all modes share one code path and differ only in (a) the self-attention mask, (b) which taps of
the positional convolution are used and (c) where the GroupNorm statistics of the first conv layer
come from. Hub transformers cannot express (b) or (c), and some models silently ignore causal flags,
which is why we do not rely on them. The parts: `loading` (model + submodules), `encoder` (the
forward and its precision policy), `streaming` (strict mode, pushed audio), `options` (modes, frame
rule, dtypes, spec); this module is the offline entry point.

Frame rule (all modes)
----------------------
Input is 16 kHz mono float32. The waveform is left-padded with 80 zero samples (no other padding, no
centring). The conv encoder (receptive field 400 samples, hop 320) then yields frame j covering original
samples [320j-80, 320j+320): frames 4k..4k+3 end inside head frame k = [1280k, 1280k+1280) and never
see audio after it. Output: exactly 4*floor(N/1280) frames (later frames are dropped), as an array
[n_frames, L, D]: L selected hidden states (default all num_hidden_layers+1, in the order of
transformers' ``output_hidden_states=True`` tuple: for post-LN base models the transformer input after
the encoder LayerNorm, then each layer's output; for pre-LN "stable layer norm" models the input
before any LayerNorm, then each layer's output, the last one taken BEFORE the encoder's final LayerNorm,
as transformers 5.x does), D the hidden size. Stored float16 by default; "float32"; "bfloat16" is
returned as a ``np.uint16`` array holding the raw bfloat16 bit patterns (numpy has no bfloat16; use
:func:`bf16_to_float32`).

Modes
-----
``none`` (the paper's non-causal "NAR" features): bidirectional self-attention, the model's full
positional convolution, and the first conv layer's GroupNorm (base models) normalised with per-channel
mean/variance over the WHOLE recording (a cheap first pass over the first conv layer). Long recordings
are defined by windows: output frames are cut into windows of ``chunk_s`` (default 30 s = 1500 frames),
each computed by one forward over the window plus ``context_s`` (default 5 s = 250 frames) of left and
right context (clipped at the recording edges), with zero padding of the positional convolution at the
edges of that span, as the plain forward does at sequence edges. A recording of at most one window is
exactly the plain transformers forward of the padded waveform. Every frame depends on future audio.

``attention`` (the paper's "causal" setting: self-attention masked to the past only): causal
self-attention, but the positional convolution and GroupNorm as in the model. It LEAKS the future: the
positional convolution (kernel 128) sees the next 63 frames (1.26 s), and the GroupNorm statistics come
from the whole recording, so every frame depends slightly on all later audio. Long recordings: windows
of ``chunk_s`` output frames, each computed over ``context_s`` of left context and exactly the
positional convolution's look-ahead (63 frames) of right context, GroupNorm statistics from the whole
recording. A recording of at most one window is one causal-attention pass over the whole recording.

``strict`` (exactly causal): frame j depends only on original samples before 320j+320. Self-attention
is causal over a sliding window of ``window_s`` (default 15 s = W = 750 frames: query t attends keys
t-W+1..t, at every layer); the positional convolution keeps only the taps that look at the current and
the 64 previous frames (taps 0..64 of 128; taps 65..127 look 1..63 frames ahead and are dropped); the
first conv layer's GroupNorm uses CUMULATIVE per-channel statistics: mean and (biased) variance over
that layer's output frames 0..i for frame i (the leading zero pad included), carried as running float64
sums. Consequence at the very start of a recording: first-layer frames that see only the zero pad
have zero variance and normalise to exactly the GroupNorm bias, and the statistics of the first tens of
milliseconds come from very little audio, so the first frames differ from what the model saw in
training (whole-utterance statistics); as audio accumulates (seconds) the statistics settle to the
recording's own running statistics. Frozen corpus statistics would avoid this start-up effect but
tie features to one corpus; cumulative statistics need nothing but the recording. Because every piece
is causal and the state (leftover samples, running sums, the last 64 positional-conv inputs, per-layer
keys/values of the last W-1 frames) is carried, :class:`StreamingSSL` gives the same features (up to
float rounding, ~1e-6) for any push sizes, and offline extraction is that stream fed in large pushes.

Large (pre-LN) models use a LayerNorm in every conv layer instead of GroupNorm: there (c) does not apply.
WavLM (relative position bias) supports only mode ``none``, through its own encoder layers.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.features.speech_ssl.encoder import (
    OfflineFeatures,
    autocast_region,
    encode_window,
    whole_recording_gn_stats,
)
from pipeline.features.speech_ssl.loading import LoadedSSL, ModelArch
from pipeline.features.speech_ssl.options import (
    SSL_FPS,
    SSL_HOP_SAMPLES,
    check_dtype,
    check_mode,
    frames_in,
    layer_list,
    ssl_num_frames,
    storage_dtype,
    to_numpy,
)
from pipeline.features.speech_ssl.streaming import StreamingSSL


def _check_wave(wave: np.ndarray) -> np.ndarray:
    """1-D float32 audio, contiguous."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected 1-D mono 16 kHz audio, got shape {wave.shape}")
    return np.ascontiguousarray(wave, dtype=np.float32)


def iter_ssl(
    loaded: LoadedSSL,
    wave: np.ndarray,
    *,
    mode: str,
    window_s: float = 15.0,
    chunk_s: float = 30.0,
    context_s: float = 5.0,
    layers: list[int] | None = None,
    dtype: str = "float16",
    autocast: str | None = None,
) -> Iterator[np.ndarray]:
    """Consecutive blocks [n_i, L, D] whose concatenation is :func:`extract_ssl`'s output.

    Lets callers write shards incrementally so memory stays bounded for hours of audio (the full
    all-layer fp16 output of one hour alone is ~3.4 GB).
    """
    check_mode(loaded, mode)
    check_dtype(dtype)
    wave = _check_wave(wave)
    keep = layer_list(loaded, layers)
    if ssl_num_frames(wave.shape[0]) == 0:
        return
    chunk = frames_in(chunk_s)
    if mode == "strict":
        stream = StreamingSSL(loaded, window_s=window_s, layers=keep, dtype=dtype, autocast=autocast, min_frames=1,
                              max_block_frames=chunk)
        yield from _stream_blocks(stream, wave, chunk * SSL_HOP_SAMPLES)
    else:
        yield from _window_blocks(loaded.arch, wave, mode, chunk, int(round(context_s * SSL_FPS)), keep, dtype,
                                  autocast)


def _stream_blocks(stream: StreamingSSL, wave: np.ndarray, step: int) -> Iterator[np.ndarray]:
    """Strict mode offline: the stream fed in large pushes."""
    for a in range(0, wave.shape[0], step):
        block = stream.push(wave[a : a + step])
        if block.shape[0]:
            yield block
    block = stream.flush()
    if block.shape[0]:
        yield block


def _window_blocks(arch: ModelArch, wave: np.ndarray, mode: str, chunk: int, ctx: int, keep: list[int],
                   dtype: str, autocast: str | None) -> Iterator[np.ndarray]:
    """Modes none / attention: windows of `chunk` output frames, each one forward over the window plus
    `ctx` frames of left context and (none) `ctx` / (attention) the positional look-ahead of right context."""
    import torch

    n_out = ssl_num_frames(wave.shape[0])
    total = (wave.shape[0] + arch.pad - arch.rf) // arch.hop + 1  # frames of the plain forward
    right = ctx if mode == "none" else arch.pos_future
    # grad/autocast state is thread-local: enter it per window and never across a `yield`
    with torch.inference_mode(), autocast_region(arch, autocast):
        gn = whole_recording_gn_stats(arch, wave) if arch.group_norm else None
    feats = OfflineFeatures(arch, wave, gn)
    for a in range(0, min(total, n_out), chunk):
        b = min(total, a + chunk)
        lo, hi = max(0, a - ctx), min(total, b + right)
        with torch.inference_mode(), autocast_region(arch, autocast):
            hs = encode_window(arch, feats.get(lo, hi), mode, keep)
            block = to_numpy(hs[a - lo : min(b, n_out) - lo], dtype)
        yield block


def extract_ssl(
    loaded: LoadedSSL,
    wave: np.ndarray,
    *,
    mode: str,
    window_s: float = 15.0,
    chunk_s: float = 30.0,
    context_s: float = 5.0,
    layers: list[int] | None = None,
    dtype: str = "float16",
    autocast: str | None = None,
) -> np.ndarray:
    """SSL hidden states [4*floor(N/1280), L, D] of a 16 kHz mono recording (modes: module docstring)."""
    keep = layer_list(loaded, layers)
    n_out = ssl_num_frames(np.asarray(wave).shape[-1])
    out = np.empty((n_out, len(keep), loaded.hidden_size), dtype=storage_dtype(dtype))
    pos = 0
    for block in iter_ssl(
        loaded,
        wave,
        mode=mode,
        window_s=window_s,
        chunk_s=chunk_s,
        context_s=context_s,
        layers=keep,
        dtype=dtype,
        autocast=autocast,
    ):
        out[pos : pos + block.shape[0]] = block
        pos += block.shape[0]
    if pos != n_out:
        raise AssertionError(f"internal error: produced {pos} frames, expected {n_out}")
    return out
