"""Listening-head-generation models (paper §III-A/B): LSTM-Transformer and Transformer baseline.

One generation step = one head frame t (80 ms). Its input is the concatenation of the speaker's speech
frames for that head frame (8 FBank frames or 4 SSL frames), the speaker head m_t^u [18] and the
listener (agent) head m_t^a [18]; its output is the listener head for t+1..t+3 ([3, 18]).
Head vectors are seen through ``LHGModel.head_view``: the static channels as stored, the first and
second derivatives recomputed as causal frame differences (the dataset's Savitzky-Golay derivatives
are centred and would reveal frames t+1..t+3, the very targets, under teacher forcing).

- ``arch="lstm_transformer"``: MetaFormer blocks ``x + LSTM(LN(x))``, ``x + MLP(LN(x))`` with a
  unidirectional LSTM as token mixer and no positional encoding. Streaming carries (h, c) per block:
  constant work per step.
- ``arch="transformer"``: pre-LN blocks ``x + CausalSelfAttention(LN(x))``, ``x + MLP(LN(x))`` with
  sinusoidal positional encoding added after the input projection. Streaming keeps a growing KV cache
  (work per step grows with the number of frames seen).

``forward`` runs a whole sequence with teacher forcing (causal); ``step`` runs one frame from a state
returned by ``init_state``; the two agree to float precision (tests/test_model.py).

Checkpoints are ``model.safetensors`` + ``config.json`` (+ checksums; a training run adds its
``train_state.pt``, read with ``weights_only=True``): no arbitrary unpickling anywhere.

This module imports torch at the top: only training/inference code imports it. It stays one file on
purpose (over the ~400-line guideline): the whole model, both architectures and streaming, reads in one place.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.checkpoints import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_TRAIN_STATE,
    CHECKPOINT_WEIGHTS,
    CheckpointError,
    check_finite,
    publish_checkpoint,
    read_config,
    read_tensors,
    real_folder,
    verify_sums,
)
from schemas.conventions import (
    CONTEXT_FRAMES,  # context excluded from the loss: 12 frames (0.96 s), see schemas/conventions.py
    FBANK_BINS,
    FBANK_FRAMES_PER_HEAD,
    HEAD_DIM,
    SSL_FRAMES_PER_HEAD,
)

ARCHS = ("lstm_transformer", "transformer")
SPEECH_KINDS = ("fbank", "ssl_concat", "ssl_wa")


# ---------------------------------------------------------------------------------------------------------
# configuration


@dataclass
class ModelConfig:
    """Hyper-parameters of an LHG model (JSON-serialisable). Defaults = paper size (N=20, width 1280)."""

    arch: str = "lstm_transformer"
    n_blocks: int = 20
    width: int = 1280
    mlp_ratio: int = 4
    dropout: float = 0.1
    n_heads: int = 16  # transformer only
    max_len: int = 4096  # transformer only: positional-encoding table (and KV cache) length
    head_dim: int = HEAD_DIM
    out_frames: int = 3
    speech: str = "fbank"
    speech_frames: int | None = None  # default: 8 (fbank, 10 ms) or 4 (ssl, 20 ms) per head frame
    speech_bins: int = FBANK_BINS  # fbank only
    ssl_layers: int | None = None  # L: number of SSL hidden states (ssl only)
    ssl_dim: int | None = None  # D: SSL hidden size (ssl only)
    # Head derivative channels are recomputed from the static channels by backward differences
    # (`LHGModel.head_view`): the stored ones are centred Savitzky-Golay derivatives that look 3 frames
    # ahead, which would hand the model its own targets under teacher forcing and the speaker's future.
    causal_deltas: bool = True
    delta_gains: list[float] | None = None  # 2 x n_static: normalised-units gains for d then dd (None = 1)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.speech not in SPEECH_KINDS:
            raise ValueError(f"speech must be one of {SPEECH_KINDS}, got {self.speech!r}")
        if self.speech_frames is None:
            self.speech_frames = FBANK_FRAMES_PER_HEAD if self.speech == "fbank" else SSL_FRAMES_PER_HEAD
        if self.speech != "fbank" and (not self.ssl_layers or not self.ssl_dim):
            raise ValueError(f"speech={self.speech!r} needs ssl_layers (L) and ssl_dim (D)")
        if self.arch == "transformer" and self.width % self.n_heads:
            raise ValueError(f"width {self.width} is not divisible by n_heads {self.n_heads}")
        if self.causal_deltas and self.head_dim % 3:
            raise ValueError(f"causal_deltas needs head_dim = 3 x static channels, got {self.head_dim}")
        if self.delta_gains is not None and len(self.delta_gains) != 2 * (self.head_dim // 3):
            raise ValueError(f"delta_gains needs {2 * (self.head_dim // 3)} values, got {len(self.delta_gains)}")

    @property
    def speech_shape(self) -> tuple[int, ...]:
        """Shape of the speech input for ONE head frame (without batch/time)."""
        if self.speech == "fbank":
            return (self.speech_frames, self.speech_bins)
        return (self.speech_frames, self.ssl_layers, self.ssl_dim)

    @property
    def speech_in_dim(self) -> int:
        if self.speech == "fbank":
            return self.speech_frames * self.speech_bins
        if self.speech == "ssl_concat":
            return self.speech_frames * self.ssl_layers * self.ssl_dim
        return self.speech_frames * self.ssl_dim  # ssl_wa

    @property
    def in_dim(self) -> int:
        return self.speech_in_dim + 2 * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------------------
# building blocks


class SpeechEncoder(nn.Module):
    """Per-head-frame speech features -> flat vector. Works on any leading dims ([B,T,...] or [B,...])."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.speech
        self.frame_shape = cfg.speech_shape
        if self.kind == "ssl_wa":
            # one logit per SSL layer, init 0 -> uniform average; softmax keeps the weights summing to 1
            self.layer_logits = nn.Parameter(torch.zeros(cfg.ssl_layers))

    def layer_weights(self) -> torch.Tensor:
        if self.kind != "ssl_wa":
            raise AttributeError(f"layer weights exist only for speech='ssl_wa' (this model: {self.kind!r})")
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.frame_shape)
        if tuple(x.shape[-n:]) != self.frame_shape:
            raise ValueError(f"speech input must end with {self.frame_shape}, got {tuple(x.shape)}")
        if self.kind == "ssl_wa":
            w = self.layer_weights().to(x.dtype)
            x = torch.einsum("...fld,l->...fd", x, w)  # [...,4,D]
            return x.flatten(-2)
        return x.flatten(-n)


class MLP(nn.Module):
    def __init__(self, width: int, ratio: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, ratio * width)
        self.fc2 = nn.Linear(ratio * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class LSTMBlock(nn.Module):
    """MetaFormer block with a unidirectional LSTM token mixer. State: (h, c), each [1, B, width]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width)
        self.lstm = nn.LSTM(cfg.width, cfg.width, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, cfg.dropout)

    def forward(self, x: torch.Tensor, state=None):
        """x [B, T, W] (T=1 when streaming) -> (y [B, T, W], new state)."""
        if state is not None:
            y, state = self._cell(self.norm1(x), state)
        else:
            y, state = self.lstm(self.norm1(x), state)
        x = x + self.drop(y)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, state

    def _cell(self, x: torch.Tensor, state):
        """T LSTM time steps from `state` with nn.LSTM's weights (gate order i, f, g, o).

        Same maths as `self.lstm`, but the input products of all T frames in one matrix product and
        the recurrence as plain GEMVs: on CPU, nn.LSTM with seq_len=1 was ~4x slower per step at
        width 1280 (bench/bench_generation.py), and a few frames at a time are no better.
        """
        h, c = state[0][0], state[1][0]
        lstm = self.lstm
        x_gates = F.linear(x if x.shape[1] > 1 else x[:, 0], lstm.weight_ih_l0, lstm.bias_ih_l0).view(*x.shape[:2], -1)
        hs = []
        for t in range(x.shape[1]):
            gates = x_gates[:, t] + F.linear(h, lstm.weight_hh_l0, lstm.bias_hh_l0)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
        return torch.stack(hs, dim=1), (h[None], c[None])

    def init_state(self, batch: int, device, dtype):
        z = torch.zeros(1, batch, self.lstm.hidden_size, device=device, dtype=dtype)
        return (z, z.clone())


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.dropout = cfg.dropout

    def _split(self, x: torch.Tensor):
        b, t, w = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, w // self.n_heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # each [B, H, T, hd]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, w = x.shape
        q, k, v = self._split(x)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, w))

    def step(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """x [B, T, W]: T new frames (1 when streaming, more from `LHGModel.prefill`) after the cached ones;
        cache {"k","v": [B,H,capacity,hd], "n": frames stored}, grown by doubling."""
        b, t, w = x.shape
        q, k, v = self._split(x)
        n = cache["n"]
        if cache["k"] is None or n + t > cache["k"].shape[2]:
            cap = max(64, 2 * n, n + t)
            kb = k.new_empty(b, self.n_heads, cap, k.shape[-1])
            vb = v.new_empty(b, self.n_heads, cap, v.shape[-1])
            if n:
                kb[:, :, :n] = cache["k"][:, :, :n]
                vb[:, :, :n] = cache["v"][:, :, :n]
            cache["k"], cache["v"] = kb, vb
        cache["k"][:, :, n:n + t] = k
        cache["v"][:, :, n:n + t] = v
        cache["n"] = n + t
        mask = None  # new frame i sees the cached frames and the new frames up to itself
        if t > 1:
            mask = torch.ones(t, n + t, dtype=torch.bool, device=x.device).tril(diagonal=n)
        y = F.scaled_dot_product_attention(q, cache["k"][:, :, :n + t], cache["v"][:, :, :n + t], attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, w))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width)
        self.attn = CausalSelfAttention(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, cfg.dropout)

    def forward(self, x: torch.Tensor, cache: dict | None = None):
        h = self.norm1(x)
        x = x + self.drop(self.attn(h) if cache is None else self.attn.step(h, cache))
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, cache

    def init_state(self, batch: int, device, dtype):
        return {"k": None, "v": None, "n": 0}


def sinusoidal_encoding(max_len: int, width: int) -> torch.Tensor:
    """Standard sin/cos positional encoding (Vaswani et al.), [max_len, width]."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    pe = torch.zeros(max_len, width)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: width // 2])
    return pe


# ---------------------------------------------------------------------------------------------------------
# model


class LHGModel(nn.Module):
    """Listener head generator. `forward` = teacher-forced full sequence; `step` = one streaming frame."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.speech_encoder = SpeechEncoder(cfg)
        self.in_proj = nn.Linear(cfg.in_dim, cfg.width)
        self.in_drop = nn.Dropout(cfg.dropout)
        block = LSTMBlock if cfg.arch == "lstm_transformer" else TransformerBlock
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_blocks))
        self.out_norm = nn.LayerNorm(cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.out_frames * cfg.head_dim)
        n_static = cfg.head_dim // 3
        gains = torch.tensor(cfg.delta_gains if cfg.delta_gains is not None else [1.0] * (2 * n_static))
        self.register_buffer("delta_gains", gains.view(2, n_static), persistent=False)
        if cfg.arch == "transformer":
            # not persistent: rebuilt from the config, never stored in the checkpoint
            self.register_buffer("pos_enc", sinusoidal_encoding(cfg.max_len, cfg.width), persistent=False)
        else:
            self.pos_enc = None

    def layer_weights(self) -> torch.Tensor:
        """Softmax weights over SSL layers (speech='ssl_wa' only); sums to 1."""
        return self.speech_encoder.layer_weights()

    def head_view(self, head: torch.Tensor) -> torch.Tensor:
        """[B,T,D] head features -> the model's view: statics kept, derivatives = causal differences.

        d_t = g_d (s_t - s_{t-1}) and dd_t = g_dd (d_t - d_{t-1}) in normalised units (training sets the
        gains so both have unit variance on the train split, `pipeline.model.train.delta_gains`); frame 0 has
        d = dd = 0. Uses only frames <= t, so teacher forcing cannot peek at the targets t+1..t+3.
        Identity when disabled.
        """
        if not self.cfg.causal_deltas:
            return head
        n = self.cfg.head_dim // 3
        s = head[..., :n]
        g = self.delta_gains.to(head.dtype)
        zero = torch.zeros_like(s[:, :1])
        d = torch.cat([zero, (s[:, 1:] - s[:, :-1]) * g[0]], dim=1)
        dd = torch.cat([zero, (d[:, 1:] - d[:, :-1]) * g[1]], dim=1)
        return torch.cat([s, d, dd], dim=-1)

    def _step_view(self, head_t: torch.Tensor, prev: tuple | None) -> tuple[torch.Tensor, tuple | None]:
        """`head_view` for one frame [B,D] given the previous frame's (statics, d); same numbers."""
        if not self.cfg.causal_deltas:
            return head_t, None
        n = self.cfg.head_dim // 3
        s = head_t[..., :n]
        g = self.delta_gains.to(head_t.dtype)
        if prev is None:
            d = torch.zeros_like(s)
            dd = torch.zeros_like(s)
        else:
            d = (s - prev[0]) * g[0]
            dd = (d - prev[1]) * g[1]
        return torch.cat([s, d, dd], dim=-1), (s, d)

    def _embed(self, speech, speaker_head, listener_head) -> torch.Tensor:
        x = torch.cat([self.speech_encoder(speech), speaker_head, listener_head], dim=-1)
        return self.in_proj(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out_proj(self.out_norm(x))
        return y.view(*y.shape[:-1], self.cfg.out_frames, self.cfg.head_dim)

    def forward(self, speech: torch.Tensor, speaker_head: torch.Tensor,
                listener_head: torch.Tensor) -> torch.Tensor:
        """speech [B,T,*speech_shape], speaker/listener head [B,T,18] -> [B,T,3,18] (heads for t+1..t+3,
        in `head_view` form)."""
        x = self._embed(speech, self.head_view(speaker_head), self.head_view(listener_head))
        t = x.shape[1]
        if self.pos_enc is not None:
            if t > self.cfg.max_len:
                raise ValueError(f"sequence of {t} frames exceeds max_len={self.cfg.max_len}")
            x = x + self.pos_enc[:t].to(x.dtype)
        x = self.in_drop(x)
        for blk in self.blocks:
            x, _ = blk(x)
        return self._head(x)

    def init_state(self, batch: int) -> dict:
        p = self.in_proj.weight
        return {"t": 0, "blocks": [blk.init_state(batch, p.device, p.dtype) for blk in self.blocks],
                "speaker": None, "listener": None}

    def step(self, speech_t: torch.Tensor, speaker_t: torch.Tensor, listener_t: torch.Tensor,
             state: dict) -> tuple[torch.Tensor, dict]:
        """One head frame: speech_t [B,*speech_shape], speaker_t/listener_t [B,18] -> ([B,3,18], state).

        The returned state is a new dict (LSTM states are replaced; the Transformer KV cache is
        updated in place and shared with the input state).
        """
        speaker_t, speaker_prev = self._step_view(speaker_t, state["speaker"])
        listener_t, listener_prev = self._step_view(listener_t, state["listener"])
        x = self._embed(speech_t, speaker_t, listener_t)[:, None]  # [B,1,W]
        t = state["t"]
        if self.pos_enc is not None:
            if t >= self.cfg.max_len:
                raise ValueError(f"step {t} exceeds max_len={self.cfg.max_len}")
            x = x + self.pos_enc[t].to(x.dtype)
        x = self.in_drop(x)
        new_blocks = []
        for blk, s in zip(self.blocks, state["blocks"], strict=True):
            x, s = blk(x, s)
            new_blocks.append(s)
        return self._head(x[:, 0]), {"t": t + 1, "blocks": new_blocks, "speaker": speaker_prev,
                                     "listener": listener_prev}


    def prefill(self, speech: torch.Tensor, speaker_head: torch.Tensor, listener_head: torch.Tensor, state: dict,
                chunk: int = 512) -> tuple[torch.Tensor, dict]:
        """T frames at once from a streaming `state`: speech [B,T,*speech_shape], heads [B,T,18] -> ([B,T,3,18],
        state after frame T-1); the same numbers as T `step` calls (up to float rounding), computed
        `chunk` frames per parallel call (a long context, or several frames per generation step)."""
        preds = []
        for a in range(0, speaker_head.shape[1], chunk):
            sl = slice(a, a + chunk)
            speaker, speaker_prev = self._chunk_view(speaker_head[:, sl], state["speaker"])
            listener, listener_prev = self._chunk_view(listener_head[:, sl], state["listener"])
            x = self._embed(speech[:, sl], speaker, listener)
            t, n = state["t"], x.shape[1]
            if self.pos_enc is not None:
                if t + n > self.cfg.max_len:
                    raise ValueError(f"step {t + n - 1} exceeds max_len={self.cfg.max_len}")
                x = x + self.pos_enc[t:t + n].to(x.dtype)
            x = self.in_drop(x)
            blocks = []
            for blk, s in zip(self.blocks, state["blocks"], strict=True):
                x, s = blk(x, s)
                blocks.append(s)
            preds.append(self._head(x))
            state = {"t": t + n, "blocks": blocks, "speaker": speaker_prev, "listener": listener_prev}
        return torch.cat(preds, dim=1), state

    def _chunk_view(self, head: torch.Tensor, prev: tuple | None) -> tuple[torch.Tensor, tuple | None]:
        """`_step_view` of frames [B,T,D] following the frame whose (statics, d) is `prev`."""
        if not self.cfg.causal_deltas:
            return head, None
        if prev is None:
            view = self.head_view(head)
        else:
            n = self.cfg.head_dim // 3
            s = head[..., :n]
            g = self.delta_gains.to(head.dtype)
            d = (s - torch.cat([prev[0][:, None], s[:, :-1]], dim=1)) * g[0]
            dd = (d - torch.cat([prev[1][:, None], d[:, :-1]], dim=1)) * g[1]
            view = torch.cat([s, d, dd], dim=-1)
        n = self.cfg.head_dim // 3
        return view, (view[:, -1, :n], view[:, -1, n:2 * n])


# ---------------------------------------------------------------------------------------------------------
# autoregressive generation


@torch.no_grad()
def generate(model: LHGModel, speech: torch.Tensor, speaker_head: torch.Tensor,
             listener_context: torch.Tensor, *, context_frames: int | None = None,
             advance: int = 1) -> torch.Tensor:
    """Autoregressive listener-head generation after `context_frames` ground-truth frames.

    speech [B,T,*speech_shape], speaker_head [B,T,18], listener_context [B,>=C,18] -> [B,T,18].
    Frames 0..C-1 of the output are the context; frames C..T-1 are generated.
    advance=1: each step feeds the previously predicted frame t and keeps output[0] (frame t+1).
    advance=k (<= out_frames): keep all k predicted frames, then feed them k steps at a time.
    The model is run in eval mode (restored afterwards).
    """
    c = listener_context.shape[1] if context_frames is None else context_frames
    b, t_total = speaker_head.shape[:2]
    if not 1 <= c <= min(t_total, listener_context.shape[1]):
        raise ValueError(f"context_frames={c} must be in 1..min(T={t_total}, context length)")
    if not 1 <= advance <= model.cfg.out_frames:
        raise ValueError(f"advance must be in 1..{model.cfg.out_frames}, got {advance}")
    was_training = model.training
    model.eval()
    try:
        out = speaker_head.new_zeros(b, t_total, model.cfg.head_dim)
        out[:, :c] = listener_context[:, :c]
        state = model.init_state(b)
        pred = None
        for t in range(c):
            pred, state = model.step(speech[:, t], speaker_head[:, t], out[:, t], state)
        t = c  # next frame to fill; `pred` holds frames t..t+out_frames-1
        while t < t_total:
            k = min(advance, t_total - t)
            out[:, t:t + k] = pred[:, :k]
            if t + k >= t_total:
                break
            for j in range(t, t + k):
                pred, state = model.step(speech[:, j], speaker_head[:, j], out[:, j], state)
            t += k
        return out
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------------------
# training targets and loss


def target_frames(listener_head: torch.Tensor, valid: torch.Tensor | None = None,
                  out_frames: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets at step t are listener frames t+1..t+out_frames.

    listener_head [B,T,D], valid [B,T] bool (None = all valid) -> (targets [B,T,K,D], mask [B,T,K]).
    mask is False past the end of the sequence and where the target frame is invalid; masked targets
    are zero.
    """
    b, t, d = listener_head.shape
    if valid is None:
        valid = torch.ones(b, t, dtype=torch.bool, device=listener_head.device)
    targets = listener_head.new_zeros(b, t, out_frames, d)
    mask = torch.zeros(b, t, out_frames, dtype=torch.bool, device=listener_head.device)
    for k in range(out_frames):
        s = k + 1
        if s >= t:
            break
        targets[:, : t - s, k] = listener_head[:, s:]
        mask[:, : t - s, k] = valid[:, s:].bool()
    targets = targets * mask[..., None]
    return targets, mask


def supervised_targets(mask: torch.Tensor, context_frames: int = CONTEXT_FRAMES) -> torch.Tensor:
    """The target elements the loss counts: valid (`mask` [B,T,K]) and after the context."""
    t, k = mask.shape[1], mask.shape[2]
    frame = torch.arange(t, device=mask.device)[:, None] + 1 + torch.arange(k, device=mask.device)[None, :]
    return mask & (frame >= context_frames)[None]


def masked_huber_loss(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *,
                      context_frames: int = CONTEXT_FRAMES, delta: float = 1.0,
                      channel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Huber (smooth-L1) loss, mean over valid target elements whose frame lies after the context.

    pred/targets [B,T,K,D], mask [B,T,K]; the target of (step t, k) is frame t+1+k. Frames
    0..context_frames-1 (the 1 s ground-truth context, 12 frames = floor(1 s x 12.5 fps)) are never
    targets, but the step that predicts the first frame after the context (t = context_frames-1)
    is trained: it is exactly the step generation starts from. Returns 0 (with grad) if nothing is valid.
    `channel_weights` [D] weights the channels (weighted mean); None = all 1.
    """
    m = supervised_targets(mask, context_frames)
    elem = F.huber_loss(pred, targets, reduction="none", delta=delta)  # [B,T,K,D]
    w = m[..., None].to(elem.dtype)
    if channel_weights is None:
        n = w.sum() * elem.shape[-1]
        return (elem * w).sum() / n.clamp(min=1.0)
    cw = channel_weights.to(elem.dtype)
    n = w.sum() * cw.sum()
    return (elem * w * cw).sum() / n.clamp(min=1e-12)


# ---------------------------------------------------------------------------------------------------------
# checkpoints (safetensors + JSON only; the folder format and its checks: pipeline.model.checkpoints)


def save_checkpoint(model: LHGModel, folder: str | Path, extra: dict | None = None, *,
                    train_state: dict | None = None) -> Path:
    """Publish `model.safetensors` (weights), `config.json` ({"model": ModelConfig, "extra": extra}),
    `train_state.pt` when given, and their checksums as one unit under the name `folder` (atomic).

    `extra` must be JSON-serialisable (normalisation stats, feature spec, training info...);
    `train_state` holds only tensors and plain containers (it is read back with weights_only=True).
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    cfg_text = json.dumps({"model": model.cfg.to_dict(), "extra": extra or {}}, indent=2)
    files = {CHECKPOINT_WEIGHTS: lambda p: save_file(tensors, str(p), metadata={"format": "pt",
                                                                                "arch": model.cfg.arch}),
             CHECKPOINT_CONFIG: lambda p: p.write_text(cfg_text, encoding="utf-8")}
    if train_state is not None:
        files[CHECKPOINT_TRAIN_STATE] = lambda p: torch.save(train_state, p)
    epoch = (extra or {}).get("epoch")
    return publish_checkpoint(folder, files, label=f"-epoch{epoch:04d}" if isinstance(epoch, int) else "")


def load_checkpoint(folder: str | Path, map_location: str = "cpu", *, verify: bool = True) -> tuple[LHGModel, dict]:
    """Rebuild the model from `config.json` and load `model.safetensors` (strict) -> (model, extra).

    Raises `CheckpointError` naming the file when a checksum differs (`verify`), the JSON or the
    safetensors file is damaged or the tensors do not fit the configured model, and
    `NonFiniteWeightsError` when a weight is NaN or inf.
    """
    folder = real_folder(folder)
    meta = read_config(folder)
    if verify:
        verify_sums(folder, (CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS))
    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(folder / CHECKPOINT_CONFIG, f'"model": {err}') from None
    model = LHGModel(cfg)
    tensors = read_tensors(folder, map_location)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(folder / CHECKPOINT_WEIGHTS, f"tensors do not fit the model in {CHECKPOINT_CONFIG}: "
                              f"{' '.join(str(err).split())[:400]}") from None
    check_finite(tensors, folder / CHECKPOINT_WEIGHTS)
    model.to(map_location)
    return model, meta.get("extra", {})
