"""Our forward over the Hugging Face submodules: conv feature encoder, GroupNorm statistics, positional
convolution, transformer layers, and the precision policy.

All modes share this code and differ only in (a) the self-attention function passed to `run_layers`,
(b) which taps of the positional convolution are used (`pos_causal` keeps past + current) and (c)
where the first conv layer's GroupNorm statistics come from (the segment, the whole recording, or
cumulative sums: `cnn_segment`'s `gn`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from pipeline.features.speech_ssl.loading import ModelArch


def autocast_region(arch: ModelArch, autocast: str | None) -> Any:
    """Mixed precision for the transformer's linear layers only (see `fp32_region`)."""
    import torch

    if autocast is None:
        return contextlib.nullcontext()
    if autocast not in ("bfloat16", "float16"):
        raise ValueError(f"autocast must be None, 'bfloat16' or 'float16', got {autocast!r}")
    return torch.autocast(device_type=arch.device.type, dtype=getattr(torch, autocast))


def fp32_region(arch: ModelArch) -> Any:
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


class CumulativeGN:
    """Running per-channel float64 sums of the first conv layer's output (strict mode's GroupNorm)."""

    def __init__(self, channels: int, device: Any):
        import torch

        self.s1 = torch.zeros(channels, dtype=torch.float64, device=device)
        self.s2 = torch.zeros(channels, dtype=torch.float64, device=device)
        self.count = 0


def padded_slice(wave: np.ndarray, pad: int, a: int, b: int) -> np.ndarray:
    """Samples [a, b) of the waveform left-padded with `pad` zeros, without building the padded copy."""
    a0, b0 = a - pad, b - pad
    if a0 >= 0:
        return wave[a0:b0]
    return np.concatenate([np.zeros(min(-a0, b - a), dtype=np.float32), wave[max(0, a0) : max(0, b0)]])


def cnn_segment(arch: ModelArch, seg: Any, gn: Any, first_l0: int) -> Any:
    """Conv encoder + feature projection of one padded-sample segment -> [n_frames, D] float32."""
    with fp32_region(arch):
        return _cnn_segment_fp32(arch, seg.float(), gn, first_l0)


def _cnn_segment_fp32(arch: ModelArch, seg: Any, gn: Any, first_l0: int) -> Any:
    """`cnn_segment` without autocast.

    `gn` is None (layer-norm encoder, or the model's own GroupNorm over this segment), a (mean, rstd)
    pair (whole-recording statistics) or a `CumulativeGN` (cumulative statistics; `first_l0` = index of
    this segment's first first-layer frame, which must equal the frames already accumulated).
    """
    import torch

    h = seg[None, None, :]
    if arch.group_norm:
        c0 = arch.convs[0]
        y = c0.conv(h)
        if isinstance(gn, CumulativeGN):
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


def whole_recording_gn_stats(arch: ModelArch, wave: np.ndarray, block_l0: int = 16_000) -> Any:
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
        seg = padded_slice(wave, arch.pad, arch.s0 * i0, arch.s0 * (i1 - 1) + arch.k0)
        with fp32_region(arch):
            y = conv(torch.from_numpy(np.ascontiguousarray(seg)).to(arch.device)[None, None])[0].double()
        a, b = y.sum(-1), y.square().sum(-1)
        s1, s2 = (a, b) if s1 is None else (s1 + a, s2 + b)
    mean = s1 / total
    var = (s2 / total - mean * mean).clamp(min=0.0)
    rstd = (var + arch.gn_eps).rsqrt()
    return mean.float()[None, :, None], rstd.float()[None, :, None]


class OfflineFeatures:
    """Projected conv features of an in-memory recording for any increasing frame range.

    Keeps only the frames still needed (a rolling buffer), so context overlap is never recomputed and
    the whole-recording CNN activations are never held.
    """

    def __init__(self, arch: ModelArch, wave: np.ndarray, gn: Any, block: int = 250):
        self.arch, self.wave, self.gn, self.block = arch, wave, gn, block
        self.start = 0
        self.buf = None

    def get(self, lo: int, hi: int) -> Any:
        """Features of frames [lo, hi); `lo` never decreases between calls."""
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
            seg = padded_slice(self.wave, arch.pad, arch.hop * f0, arch.hop * (f1 - 1) + arch.rf)
            seg_t = torch.from_numpy(np.ascontiguousarray(seg)).to(arch.device)
            parts.append(cnn_segment(arch, seg_t, self.gn, f0 * arch.l0_per_frame))
        self.buf = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        return self.buf[: hi - lo]


def pos_input(arch: ModelArch, x: Any) -> Any:
    """The positional convolution's input: after its batch norm, for models that have one."""
    return arch.pos_bn(x.transpose(0, 1)[None])[0].transpose(0, 1) if arch.pos_bn is not None else x


def pos_causal(arch: ModelArch, hist: Any, x: Any) -> Any:
    """Positional conv with only past+current taps; `hist` = last `pos_p` (normalised) inputs."""
    import torch

    xin = torch.cat([hist, x], 0).transpose(0, 1)[None]
    y = torch.nn.functional.conv1d(
        xin, arch.pos_w_causal.to(xin.dtype), arch.pos_bias, groups=arch.pos_groups
    )
    return arch.pos_act(y)[0].transpose(0, 1)


def _attention(layer: Any, arch: ModelArch, x: Any, attend: Any, idx: int) -> Any:
    att = layer.attention
    n = x.shape[0]
    hd = arch.hidden // arch.num_heads
    q = att.q_proj(x).view(n, arch.num_heads, hd).transpose(0, 1)[None]
    k = att.k_proj(x).view(n, arch.num_heads, hd).transpose(0, 1)[None]
    v = att.v_proj(x).view(n, arch.num_heads, hd).transpose(0, 1)[None]
    with fp32_region(arch):  # softmax in float32 (see fp32_region)
        o = attend(idx, q.float(), k.float(), v.float(), att.scaling)
    return att.out_proj(o[0].transpose(0, 1).reshape(n, arch.hidden))


def run_layers(arch: ModelArch, h: Any, attend: Any, keep: list[int]) -> Any:
    """Transformer layers with a pluggable attention; returns the kept hidden states [n, len(keep), D]."""
    import torch

    out = [h] if 0 in keep else []
    last = max(keep)
    for i, layer in enumerate(arch.layers):
        if i >= last:
            break
        # residual stream and LayerNorms in float32, sublayers' linear layers under autocast
        # (see fp32_region)
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


def _norm(arch: ModelArch, norm: Any, x: Any) -> Any:
    with fp32_region(arch):
        return norm(x.float())


def _sdpa(causal: bool) -> Any:
    import torch

    def attend(_i: int, q: Any, k: Any, v: Any, scale: float) -> Any:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)

    return attend


def encode_window(arch: ModelArch, x: Any, mode: str, keep: list[int]) -> Any:
    """One bidirectional ("none") or causal ("attention") forward over a window of features."""
    with fp32_region(arch):
        h = x + arch.pos_module(x[None])[0]
        if not arch.stable:
            h = arch.enc.layer_norm(h)
    if arch.kind == "wavlm":
        return _wavlm_layers(arch, h, keep)
    return run_layers(arch, h, _sdpa(mode == "attention"), keep)


def _wavlm_layers(arch: ModelArch, h: Any, keep: list[int]) -> Any:
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
