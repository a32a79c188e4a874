"""Every hidden layer of HuBERT / wav2vec 2.0 (/ WavLM) at 50 fps, causal and non-causal, for long
recordings with bounded memory.

We run our own forward over the Hugging Face model's submodules (conv feature encoder, feature
projection, positional convolution, each layer's q/k/v/out projections, layer norms, feed-forward) so
that all modes share one code path and differ only in (a) the self-attention mask, (b) which taps of
the positional convolution are used and (c) where the GroupNorm statistics of the first conv layer
come from. Hub transformers cannot express (b) or (c), and silently ignore causal flags on some models
(measured with transformers 5.x), which is why we do not rely on them.

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
keys/values of the last W-1 frames) is carried, :class:`StreamingSSL` gives the same features (up to float rounding, ~1e-6) for any push sizes, and
offline extraction is that stream fed in large pushes.

Large (pre-LN) models use a LayerNorm in every conv layer instead of GroupNorm: there (c) does not apply.
WavLM (relative position bias) supports only mode ``none``, through its own encoder layers.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.features.ssl.checkpoints import (
    CheckpointError,
    checkpoint_sha256,
    resolve_checkpoint,
    weight_files,
)
from schemas.conventions import HEAD_HOP_SAMPLES, SAMPLE_RATE, SSL_FRAMES_PER_HEAD

SSL_FPS = SAMPLE_RATE * SSL_FRAMES_PER_HEAD // HEAD_HOP_SAMPLES  # 50
SSL_HOP_SAMPLES = HEAD_HOP_SAMPLES // SSL_FRAMES_PER_HEAD  # 320
MODES = ("none", "attention", "strict")
DTYPES = ("float16", "bfloat16", "float32")
SPEC_VERSION = "ssl-v1"

_MODEL_CLASSES = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model", "wavlm": "WavLMModel"}


class SSLModelError(CheckpointError):
    """The SSL model cannot be loaded; the message names the path/id and what was expected."""


@dataclass
class LoadedSSL:
    """A loaded model plus everything that identifies its outputs (for cache keys and shard metadata)."""

    model: Any
    config: Any
    model_id: str
    kind: str
    weights_sha256: str
    transformers_version: str
    num_hidden_states: int
    hidden_size: int
    device: str
    _arch: Any = field(default=None, repr=False)

    @property
    def arch(self) -> _Arch:
        if self._arch is None:
            self._arch = _Arch(self)
        return self._arch


# ----------------------------------------------------------------------------------------------- helpers


def limit_torch_threads(n: int | None = None) -> int:
    """Set torch intra-op threads (workers call this with 1 so N processes do not oversubscribe cores)."""
    import torch

    n = int(n or os.cpu_count() or 1)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set, or parallel work started: harmless
        torch.set_num_interop_threads(1)
    return n


def ssl_num_frames(n_samples: int) -> int:
    """Frames output for a recording of `n_samples`: whole head frames only (4 per 1280 samples)."""
    return SSL_FRAMES_PER_HEAD * (int(n_samples) // HEAD_HOP_SAMPLES)


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Decode the uint16 bfloat16 bit patterns returned for dtype="bfloat16"."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _select_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_ssl_model(name_or_path: str, *, device: str | None = None) -> LoadedSSL:
    """Load a HuBERT/wav2vec2/WavLM model from a local directory or the offline HF cache, eval, no grad.

    `device` None or "auto" picks cuda when available, else cpu.
    """
    expected = (
        "expected a directory (or a Hugging Face id already in the local cache) with config.json and "
        "model.safetensors / pytorch_model.bin weights of a HuBERT, wav2vec2 or WavLM model"
    )
    try:
        directory = resolve_checkpoint(name_or_path)
    except CheckpointError as e:
        raise SSLModelError(f"{e}; {expected}") from None
    safe = weight_files(directory)[0].suffix == ".safetensors"
    try:
        import torch
        import transformers

        config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
        kind = config.model_type
        if kind not in _MODEL_CLASSES:
            raise SSLModelError(f"{name_or_path}: model_type {kind!r} is not supported; {expected}")
        cls = getattr(transformers, _MODEL_CLASSES[kind])
        model = cls.from_pretrained(
            str(directory), local_files_only=True, use_safetensors=safe, dtype=torch.float32
        )
    except SSLModelError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SSLModelError(f"{name_or_path}: failed to load ({type(e).__name__}: {e}); {expected}") from e
    dev = _select_device(device)
    model.to(dev).eval().requires_grad_(False)
    sha = checkpoint_sha256(directory)
    loaded = LoadedSSL(
        model=model,
        config=config,
        model_id=name_or_path,
        kind=kind,
        weights_sha256=sha,
        transformers_version=transformers.__version__,
        num_hidden_states=config.num_hidden_layers + 1,
        hidden_size=config.hidden_size,
        device=dev,
    )
    try:
        _ = loaded.arch
    except ValueError as e:
        raise SSLModelError(f"{name_or_path}: {e}; {expected}") from e
    return loaded


def ssl_spec(
    loaded: LoadedSSL,
    mode: str,
    *,
    window_s: float = 15.0,
    chunk_s: float = 30.0,
    context_s: float = 5.0,
    layers: list[int] | None = None,
    dtype: str = "float16",
    autocast: str | None = None,
) -> dict:
    """Everything that changes the output values, for cache keys and shard metadata.

    Settings that do not change values are left out (the push size of strict mode, the window size of the
    bidirectional modes' ``window_s``), so caches are not invalidated for nothing.
    """
    _check_mode(loaded, mode)
    sel = _layer_list(loaded, layers)
    spec: dict = {
        "spec_version": SPEC_VERSION,
        "model_id": loaded.model_id,
        "kind": loaded.kind,
        "weights_sha256": loaded.weights_sha256,
        "transformers_version": loaded.transformers_version,
        "mode": mode,
        "layers": sel,
        "num_hidden_states": loaded.num_hidden_states,
        "hidden_size": loaded.hidden_size,
        "dtype": dtype,
        "autocast": autocast,
        "fps": SSL_FPS,
        "frame_rule": "left-pad 80 zeros, hop 320, frame j = samples [320j-80, 320j+320), 4*floor(N/1280) frames",
    }
    if mode == "strict":
        spec.update(window_frames=_frames(window_s), gn="cumulative", pos_conv="past+current taps")
    else:
        spec.update(
            chunk_frames=_frames(chunk_s),
            context_frames=_frames(context_s),
            gn="whole-recording",
            pos_conv="full",
            attention="causal" if mode == "attention" else "bidirectional",
        )
    return spec


def _frames(seconds: float) -> int:
    return max(1, int(round(seconds * SSL_FPS)))


def _check_mode(loaded: LoadedSSL, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if loaded.kind == "wavlm" and mode != "none":
        raise NotImplementedError(
            "WavLM's relative position bias has no causal variant here: only mode='none' is supported"
        )


def _layer_list(loaded: LoadedSSL, layers: list[int] | None) -> list[int]:
    n = loaded.num_hidden_states
    if layers is None:
        return list(range(n))
    out = []
    for i in layers:
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise ValueError(f"layer {i} out of range for {n} hidden states")
        out.append(j)
    return out


# ------------------------------------------------------------------------------------------ architecture


class _Arch:
    """The HF submodules and derived constants our forward uses (read once per model)."""

    def __init__(self, loaded: LoadedSSL):
        import torch

        m = loaded.model
        cfg = loaded.config
        self.kind = loaded.kind
        self.device = torch.device(loaded.device)
        self.convs = list(m.feature_extractor.conv_layers)
        self.group_norm = cfg.feat_extract_norm == "group"
        kernels, strides = list(cfg.conv_kernel), list(cfg.conv_stride)
        self.hop = math.prod(strides)
        rf, jump = 1, 1
        for k, s in zip(kernels, strides, strict=True):
            rf += (k - 1) * jump
            jump *= s
        self.rf = rf
        self.pad = rf - self.hop
        if self.hop != SSL_HOP_SAMPLES or self.pad < 0:
            raise ValueError(
                f"conv encoder hop {self.hop} / receptive field {rf}: need hop {SSL_HOP_SAMPLES}"
            )
        self.k0, self.s0 = kernels[0], strides[0]
        self.l0_per_frame = self.hop // self.s0
        self.fp = m.feature_projection
        enc = m.encoder
        self.enc = enc
        self.stable = bool(getattr(cfg, "do_stable_layer_norm", False))
        self.layers = list(enc.layers)
        pce = enc.pos_conv_embed
        self.pos_module = pce
        conv = pce.conv
        self.pos_k = conv.kernel_size[0]
        self.pos_p = conv.padding[0]
        self.pos_groups = conv.groups
        self.pos_future = self.pos_k - 1 - self.pos_p  # 63 for kernel 128
        with torch.no_grad():
            w = conv.weight.detach().clone()  # weight-norm parametrisation evaluated once
        self.pos_w_causal = w[:, :, : self.pos_p + 1].contiguous()  # taps looking at t-p..t
        self.pos_bias = None if conv.bias is None else conv.bias.detach().clone()
        self.pos_bn = getattr(pce, "batch_norm", None)
        self.pos_act = pce.activation
        self.num_heads = cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        if self.group_norm:
            gn = self.convs[0].layer_norm
            self.gn_eps = gn.eps
            self.gn_w = gn.weight.detach()[None, :, None]
            self.gn_b = gn.bias.detach()[None, :, None]


# ----------------------------------------------------------------------------------------- conv encoder


class _CumGN:
    """Running per-channel float64 sums of the first conv layer's output (strict mode's GroupNorm)."""

    def __init__(self, channels: int, device: Any):
        import torch

        self.s1 = torch.zeros(channels, dtype=torch.float64, device=device)
        self.s2 = torch.zeros(channels, dtype=torch.float64, device=device)
        self.count = 0


def _padded_slice(wave: np.ndarray, pad: int, a: int, b: int) -> np.ndarray:
    """Samples [a, b) of the waveform left-padded with `pad` zeros, without building the padded copy."""
    a0, b0 = a - pad, b - pad
    if a0 >= 0:
        return wave[a0:b0]
    return np.concatenate([np.zeros(min(-a0, b - a), dtype=np.float32), wave[max(0, a0) : max(0, b0)]])


def _cnn_segment(arch: _Arch, seg: Any, gn: Any, first_l0: int) -> Any:
    """Conv encoder + feature projection of one padded-sample segment -> [n_frames, D] float32."""
    with _fp32(arch):
        return _cnn_segment_fp32(arch, seg.float(), gn, first_l0)


def _cnn_segment_fp32(arch: _Arch, seg: Any, gn: Any, first_l0: int) -> Any:
    """`_cnn_segment` without autocast.

    `gn` is None (layer-norm encoder, or the model's own GroupNorm over this segment), a (mean, rstd)
    pair (whole-recording statistics) or a `_CumGN` (cumulative statistics; `first_l0` = index of this
    segment's first first-layer frame, which must equal the frames already accumulated).
    """
    import torch

    h = seg[None, None, :]
    if arch.group_norm:
        c0 = arch.convs[0]
        y = c0.conv(h)
        if isinstance(gn, _CumGN):
            assert gn.count == first_l0, (gn.count, first_l0)
            n_new = ((seg.shape[0] - arch.rf) // arch.hop + 1) * arch.l0_per_frame
            y64 = y[0].to(torch.float64)
            c1 = torch.cumsum(y64, dim=-1).add_(gn.s1[:, None])
            c2 = torch.cumsum(y64.square_(), dim=-1).add_(gn.s2[:, None])
            del y64
            # carry the sums over the frames this segment consumes (the rest is recomputed next time)
            gn.s1, gn.s2 = c1[:, n_new - 1].clone(), c2[:, n_new - 1].clone()
            gn.count = first_l0 + n_new
            cnt = torch.arange(first_l0 + 1, first_l0 + 1 + y.shape[-1], device=y.device, dtype=torch.float64)
            mean = c1.div_(cnt)
            rstd = c2.div_(cnt).sub_(mean * mean).clamp_(min=0.0).add_(arch.gn_eps).rsqrt_()
            y = (y - mean.to(y.dtype)[None]) * rstd.to(y.dtype)[None]
            del mean, rstd, c1, c2
        elif gn is not None:
            mean, rstd = gn
            y = (y - mean) * rstd
        else:
            y = torch.nn.functional.group_norm(y, y.shape[1], eps=arch.gn_eps)
        y = y * arch.gn_w.to(y.dtype) + arch.gn_b.to(y.dtype)
        h = c0.activation(y)
        rest = arch.convs[1:]
    else:
        rest = arch.convs
    for layer in rest:
        h = layer(h)
    x = h[0].transpose(0, 1)
    fp = arch.fp
    if getattr(fp, "layer_norm", None) is not None and getattr(fp, "feat_proj_layer_norm", True):
        x = fp.layer_norm(x)
    return fp.projection(x)


def _gn_whole_stats(arch: _Arch, wave: np.ndarray, block_l0: int = 16_000) -> Any:
    """Per-channel mean and 1/std of the first conv layer over the whole padded recording, in chunks.

    Matches the model's GroupNorm (one group per channel, biased variance) on the whole recording.
    """
    import torch

    n_pad = wave.shape[0] + arch.pad
    total = (n_pad - arch.k0) // arch.s0 + 1
    conv = arch.convs[0].conv
    s1 = s2 = None
    for i0 in range(0, total, block_l0):
        i1 = min(total, i0 + block_l0)
        seg = _padded_slice(wave, arch.pad, arch.s0 * i0, arch.s0 * (i1 - 1) + arch.k0)
        with _fp32(arch):
            y = conv(torch.from_numpy(np.ascontiguousarray(seg)).to(arch.device)[None, None])[0].double()
        a, b = y.sum(-1), y.square().sum(-1)
        s1, s2 = (a, b) if s1 is None else (s1 + a, s2 + b)
    mean = s1 / total
    var = (s2 / total - mean * mean).clamp(min=0.0)
    rstd = (var + arch.gn_eps).rsqrt()
    return mean.float()[None, :, None], rstd.float()[None, :, None]


class _OfflineFeatures:
    """Projected conv features of an in-memory recording for any increasing frame range.

    Keeps only the frames still needed (a rolling buffer), so context overlap is never recomputed and
    the whole-recording CNN activations are never held.
    """

    def __init__(self, arch: _Arch, wave: np.ndarray, gn: Any, block: int = 250):
        self.arch, self.wave, self.gn, self.block = arch, wave, gn, block
        self.start = 0
        self.buf = None

    def get(self, lo: int, hi: int) -> Any:
        import torch

        arch = self.arch
        end = self.start + (0 if self.buf is None else self.buf.shape[0])
        if self.buf is None or lo > end or lo < self.start:
            self.buf, self.start, end = None, lo, lo
        elif lo > self.start:
            self.buf = self.buf[lo - self.start :]
            self.start = lo
        parts = [] if self.buf is None else [self.buf]
        for f0 in range(end, hi, self.block):
            f1 = min(hi, f0 + self.block)
            seg = _padded_slice(self.wave, arch.pad, arch.hop * f0, arch.hop * (f1 - 1) + arch.rf)
            seg_t = torch.from_numpy(np.ascontiguousarray(seg)).to(arch.device)
            parts.append(_cnn_segment(arch, seg_t, self.gn, f0 * arch.l0_per_frame))
        self.buf = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        return self.buf[: hi - lo]


# -------------------------------------------------------------------------------------------- encoder


def _pos_input(arch: _Arch, x: Any) -> Any:
    return arch.pos_bn(x.transpose(0, 1)[None])[0].transpose(0, 1) if arch.pos_bn is not None else x


def _pos_causal(arch: _Arch, hist: Any, x: Any) -> Any:
    """Positional conv with only past+current taps; `hist` = last `pos_p` (normalised) inputs."""
    import torch

    xin = torch.cat([hist, x], 0).transpose(0, 1)[None]
    y = torch.nn.functional.conv1d(
        xin, arch.pos_w_causal.to(xin.dtype), arch.pos_bias, groups=arch.pos_groups
    )
    return arch.pos_act(y)[0].transpose(0, 1)


def _attention(layer: Any, arch: _Arch, x: Any, attend: Any, idx: int) -> Any:
    att = layer.attention
    n = x.shape[0]
    hd = arch.hidden // arch.num_heads
    q = att.q_proj(x).view(n, arch.num_heads, hd).transpose(0, 1)[None]
    k = att.k_proj(x).view(n, arch.num_heads, hd).transpose(0, 1)[None]
    v = att.v_proj(x).view(n, arch.num_heads, hd).transpose(0, 1)[None]
    with _fp32(arch):  # softmax in float32 (see _fp32)
        o = attend(idx, q.float(), k.float(), v.float(), att.scaling)
    return att.out_proj(o[0].transpose(0, 1).reshape(n, arch.hidden))


def _run_layers(arch: _Arch, h: Any, attend: Any, keep: list[int]) -> Any:
    """Transformer layers with a pluggable attention; returns the kept hidden states [n, len(keep), D]."""
    import torch

    out = [h] if 0 in keep else []
    last = max(keep)
    for i, layer in enumerate(arch.layers):
        if i >= last:
            break
        # residual stream and LayerNorms in float32, sublayers' linear layers under autocast (see _fp32)
        if arch.stable:
            h = h + _attention(layer, arch, _norm(arch, layer.layer_norm, h), attend, i).float()
            h = h + layer.feed_forward(_norm(arch, layer.final_layer_norm, h)).float()
            if getattr(layer, "adapter_layer", None) is not None:
                h = h + layer.adapter_layer(h).float()
        else:
            h = _norm(arch, layer.layer_norm, h + _attention(layer, arch, h, attend, i).float())
            h = _norm(arch, layer.final_layer_norm, h + layer.feed_forward(h).float())
        if i + 1 in keep:
            out.append(h)
    order = sorted(set(keep))
    stacked = torch.stack(out, 1)
    if order == keep:
        return stacked
    return stacked[:, [order.index(k) for k in keep]]


def _norm(arch: _Arch, norm: Any, x: Any) -> Any:
    with _fp32(arch):
        return norm(x.float())


def _sdpa(causal: bool) -> Any:
    import torch

    def attend(_i: int, q: Any, k: Any, v: Any, scale: float) -> Any:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)

    return attend


def _encode_window(arch: _Arch, x: Any, mode: str, keep: list[int]) -> Any:
    """One bidirectional ("none") or causal ("attention") forward over a window of features."""
    with _fp32(arch):
        h = x + arch.pos_module(x[None])[0]
        if not arch.stable:
            h = arch.enc.layer_norm(h)
    if arch.kind == "wavlm":
        return _wavlm_layers(arch, h, keep)
    return _run_layers(arch, h, _sdpa(mode == "attention"), keep)


def _wavlm_layers(arch: _Arch, h: Any, keep: list[int]) -> Any:
    import torch

    out = [h] if 0 in keep else []
    pb = None
    hb = h[None]
    for i, layer in enumerate(arch.layers):
        if i >= max(keep):
            break
        hb, pb = layer(hb, position_bias=pb)[:2]
        if i + 1 in keep:
            out.append(hb[0])
    order = sorted(set(keep))
    return torch.stack(out, 1)[:, [order.index(k) for k in keep]]


# ---------------------------------------------------------------------------------------- streaming


class StreamingSSL:
    """Exactly causal ("strict") features, pushed sample by sample or in blocks of any size.

    Carries leftover samples for the conv encoder, the GroupNorm running sums, the last 64 positional-conv
    inputs and per-layer keys/values of the last W-1 frames. Frames are emitted in whole head frames
    (4 at a time, once the head frame's last sample arrived), so the concatenation of all `push` and
    `flush` outputs equals ``extract_ssl(mode="strict")`` for any push sizes.
    """

    def __init__(
        self,
        loaded: LoadedSSL,
        *,
        window_s: float = 15.0,
        layers: list[int] | None = None,
        dtype: str = "float16",
        autocast: str | None = None,
        min_frames: int = SSL_FRAMES_PER_HEAD,
        max_block_frames: int = 1500,
        cnn_block_frames: int = 250,
        query_block: int | None = None,
    ):
        import torch

        _check_mode(loaded, "strict")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.loaded = loaded
        self.arch = arch = loaded.arch
        self.keep = _layer_list(loaded, layers)
        self.dtype = dtype
        self.autocast = autocast
        self.window = _frames(window_s)
        self.min_frames = max(1, int(min_frames))
        self.max_block = max(SSL_FRAMES_PER_HEAD, int(max_block_frames) // 4 * 4)
        self.cnn_block = max(1, int(cnn_block_frames))
        self.query_block = int(query_block or self.window)
        self.frames_done = 0
        self._buf = np.zeros(arch.pad, dtype=np.float32)  # the 80-sample left pad, then pushed audio
        self._gn = _CumGN(arch.convs[0].conv.out_channels, arch.device) if arch.group_norm else None
        dev = arch.device
        self._pos_hist = torch.zeros(arch.pos_p, arch.hidden, device=dev)
        self._kv: list = [(None, None, 0) for _ in arch.layers]  # per layer: key buf, value buf, length
        self._mask_memo: dict = {}

    def _ready_frames(self) -> int:
        """Frames in whole head frames whose samples are all in the buffer."""
        avail = (
            (self._buf.shape[0] - self.arch.rf) // self.arch.hop + 1
            if self._buf.shape[0] >= self.arch.rf
            else 0
        )
        total = (self.frames_done + avail) // SSL_FRAMES_PER_HEAD * SSL_FRAMES_PER_HEAD
        return max(0, total - self.frames_done)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append audio; return the newly completed frames [n, L, D] (n a multiple of 4, maybe 0)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, samples]) if self._buf.size else samples.copy()
        return self._to_numpy(self._process(self.min_frames))

    def flush(self) -> np.ndarray:
        """Return every remaining complete frame (leftover audio shorter than a head frame is dropped)."""
        return self._to_numpy(self._process(1))

    def _to_numpy(self, blocks: list) -> np.ndarray:
        import torch

        if not blocks:
            return np.zeros((0, len(self.keep), self.arch.hidden), dtype=storage_dtype(self.dtype))
        return _to_numpy(torch.cat(blocks, 0) if len(blocks) > 1 else blocks[0], self.dtype)

    def _process(self, min_frames: int) -> list:
        import torch

        out = []
        with torch.inference_mode(), _autocast_ctx(self.arch, self.autocast):
            while True:
                n = min(self._ready_frames(), self.max_block)
                if n < min_frames or n == 0:
                    break
                out.append(self._step(n).float())
        return out

    def _step(self, n: int) -> Any:
        import torch

        arch = self.arch
        feats = []
        for b0 in range(0, n, self.cnn_block):
            b1 = min(n, b0 + self.cnn_block)
            seg = self._buf[arch.hop * b0 : arch.hop * (b1 - 1) + arch.rf]
            seg_t = torch.from_numpy(np.ascontiguousarray(seg)).to(arch.device)
            f0 = self.frames_done + b0
            feats.append(_cnn_segment(arch, seg_t, self._gn, f0 * arch.l0_per_frame))
        self._buf = self._buf[arch.hop * n :].copy()
        x = torch.cat(feats, 0) if len(feats) > 1 else feats[0]
        with _fp32(arch):
            xb = _pos_input(arch, x)
            hist = self._pos_hist.to(xb.dtype)
            h = x + _pos_causal(arch, hist, xb)
            self._pos_hist = torch.cat([hist, xb], 0)[xb.shape[0] :].clone()
            if not arch.stable:
                h = arch.enc.layer_norm(h)
        hs = _run_layers(arch, h, self._attend, self.keep)
        self.frames_done += n
        return hs

    def _append_kv(self, i: int, k: Any, v: Any) -> tuple[Any, Any, int]:
        """Append new keys/values to layer i's buffer; return views [past..new] and the past count.

        The buffer has spare room, so small pushes write in place and the last W-1 frames are moved to
        the front only when it is full (amortised O(pushed frames), not O(W) copies per push).
        """
        import torch

        buf_k, buf_v, length = self._kv[i]
        n, w = k.shape[2], self.window
        if buf_k is None or length + n > buf_k.shape[2] or buf_k.dtype != k.dtype:
            keep = min(length, w - 1)
            cap = keep + max(n, w)
            new_k = torch.empty(*k.shape[:2], cap, k.shape[3], dtype=k.dtype, device=k.device)
            new_v = torch.empty_like(new_k)
            if keep:
                new_k[:, :, :keep] = buf_k[:, :, length - keep : length]
                new_v[:, :, :keep] = buf_v[:, :, length - keep : length]
            buf_k, buf_v, length = new_k, new_v, keep
        buf_k[:, :, length : length + n] = k
        buf_v[:, :, length : length + n] = v
        start = max(0, length - (w - 1))
        self._kv[i] = (buf_k, buf_v, length + n)
        return buf_k[:, :, start : length + n], buf_v[:, :, start : length + n], length - start

    def _masks(self, c: int, n: int, device: Any) -> list:
        """Sliding-window causal masks per query block (identical for every layer: computed once)."""
        import torch

        key = (c, n)
        if key not in self._mask_memo:
            w, out = self.window, []
            for i0 in range(0, n, self.query_block):
                i1 = min(n, i0 + self.query_block)
                k0, k1 = max(0, i0 + c - w + 1), i1 + c
                qi = torch.arange(i0 + c, i1 + c, device=device)[:, None]
                ki = torch.arange(k0, k1, device=device)[None, :]
                out.append((i0, i1, k0, k1, (ki <= qi) & (ki > qi - w)))
            self._mask_memo = {key: out}
        return self._mask_memo[key]

    def _attend(self, i: int, q: Any, k: Any, v: Any, scale: float) -> Any:
        """Sliding-window causal attention against this layer's key/value cache; updates the cache."""
        import torch

        kk, vv, c = self._append_kv(i, k, v)
        outs = [
            torch.nn.functional.scaled_dot_product_attention(
                q[:, :, i0:i1], kk[:, :, k0:k1], vv[:, :, k0:k1], attn_mask=mask, scale=scale
            )
            for i0, i1, k0, k1, mask in self._masks(c, q.shape[2], q.device)
        ]
        return torch.cat(outs, 2) if len(outs) > 1 else outs[0]


# ------------------------------------------------------------------------------------------ entry points


def storage_dtype(dtype: str) -> Any:
    """The numpy dtype holding `dtype` ("bfloat16" is kept as its uint16 bit patterns)."""
    return {"float16": np.float16, "float32": np.float32, "bfloat16": np.uint16}[dtype]


def _to_numpy(t: Any, dtype: str) -> np.ndarray:
    import torch

    t = t.detach().float().cpu()
    if dtype == "float32":
        return t.numpy()
    if dtype == "float16":
        return t.to(torch.float16).numpy()
    return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def _autocast_ctx(arch: _Arch, autocast: str | None) -> Any:
    """Mixed precision for the transformer's linear layers only (see `_fp32`)."""
    import torch

    if autocast is None:
        return contextlib.nullcontext()
    if autocast not in ("bfloat16", "float16"):
        raise ValueError(f"autocast must be None, 'bfloat16' or 'float16', got {autocast!r}")
    return torch.autocast(device_type=arch.device.type, dtype=getattr(torch, autocast))


def _fp32(arch: _Arch) -> Any:
    """A region that stays in float32 under autocast.

    Which ops autocast lowers differs by device and CPU (CPUs with AMX/AVX512-BF16 take other
    kernels), so the precision policy is explicit instead: the conv encoder on the raw waveform, every
    normalisation (GroupNorm statistics, LayerNorm), the positional convolution, the residual stream
    and the attention softmax stay in float32; only the transformer's linear layers (q/k/v/out
    projections, feed-forward) run in the low-precision dtype. Those carry the compute, and a rounding
    error there is not amplified by a mean subtraction or an exponential.
    """
    import torch

    return torch.autocast(device_type=arch.device.type, enabled=False)


def _check_wave(wave: np.ndarray) -> np.ndarray:
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
    import torch

    _check_mode(loaded, mode)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    wave = _check_wave(wave)
    keep = _layer_list(loaded, layers)
    arch = loaded.arch
    n_out = ssl_num_frames(wave.shape[0])
    if n_out == 0:
        return
    chunk = _frames(chunk_s)
    if mode == "strict":
        stream = StreamingSSL(
            loaded,
            window_s=window_s,
            layers=keep,
            dtype=dtype,
            autocast=autocast,
            min_frames=1,
            max_block_frames=chunk,
        )
        step = chunk * SSL_HOP_SAMPLES
        for a in range(0, wave.shape[0], step):
            block = stream.push(wave[a : a + step])
            if block.shape[0]:
                yield block
        block = stream.flush()
        if block.shape[0]:
            yield block
        return
    ctx = int(round(context_s * SSL_FPS))
    total = (wave.shape[0] + arch.pad - arch.rf) // arch.hop + 1  # frames of the plain forward
    right = ctx if mode == "none" else arch.pos_future
    # grad/autocast state is thread-local: enter it per window and never across a `yield`
    with torch.inference_mode(), _autocast_ctx(arch, autocast):
        gn = _gn_whole_stats(arch, wave) if arch.group_norm else None
    feats = _OfflineFeatures(arch, wave, gn)
    for a in range(0, min(total, n_out), chunk):
        b = min(total, a + chunk)
        lo, hi = max(0, a - ctx), min(total, b + right)
        with torch.inference_mode(), _autocast_ctx(arch, autocast):
            hs = _encode_window(arch, feats.get(lo, hi), mode, keep)
            block = _to_numpy(hs[a - lo : min(b, n_out) - lo], dtype)
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
    keep = _layer_list(loaded, layers)
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
