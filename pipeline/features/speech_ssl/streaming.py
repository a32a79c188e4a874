"""Exactly causal ("strict") SSL features from audio pushed in blocks of any size (live input)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.features.speech_ssl.encoder import (
    CumulativeGN,
    autocast_region,
    cnn_segment,
    fp32_region,
    pos_causal,
    pos_input,
    run_layers,
)
from pipeline.features.speech_ssl.loading import LoadedSSL
from pipeline.features.speech_ssl.options import (
    SSL_FRAMES_PER_HEAD,
    check_dtype,
    check_mode,
    frames_in,
    layer_list,
    storage_dtype,
    to_numpy,
)


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

        check_mode(loaded, "strict")
        check_dtype(dtype)
        self.arch = arch = loaded.arch
        self.keep = layer_list(loaded, layers)
        self.dtype = dtype
        self.autocast = autocast
        self.window = frames_in(window_s)
        self.min_frames = max(1, int(min_frames))
        self.max_block = max(SSL_FRAMES_PER_HEAD, int(max_block_frames) // 4 * 4)
        self.cnn_block = max(1, int(cnn_block_frames))
        self.query_block = int(query_block or self.window)
        self.frames_done = 0
        self._buf = np.zeros(arch.pad, dtype=np.float32)  # the 80-sample left pad, then pushed audio
        self._gn = CumulativeGN(arch.convs[0].conv.out_channels, arch.device) if arch.group_norm else None
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
        return self._as_numpy(self._process(self.min_frames))

    def flush(self) -> np.ndarray:
        """Return every remaining complete frame (leftover audio shorter than a head frame is dropped)."""
        return self._as_numpy(self._process(1))

    def _as_numpy(self, blocks: list) -> np.ndarray:
        import torch

        if not blocks:
            return np.zeros((0, len(self.keep), self.arch.hidden), dtype=storage_dtype(self.dtype))
        return to_numpy(torch.cat(blocks, 0) if len(blocks) > 1 else blocks[0], self.dtype)

    def _process(self, min_frames: int) -> list:
        import torch

        out = []
        with torch.inference_mode(), autocast_region(self.arch, self.autocast):
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
            feats.append(cnn_segment(arch, seg_t, self._gn, f0 * arch.l0_per_frame))
        self._buf = self._buf[arch.hop * n :].copy()
        x = torch.cat(feats, 0) if len(feats) > 1 else feats[0]
        with fp32_region(arch):
            xb = pos_input(arch, x)
            hist = self._pos_hist.to(xb.dtype)
            h = x + pos_causal(arch, hist, xb)
            self._pos_hist = torch.cat([hist, xb], 0)[xb.shape[0] :].clone()
            if not arch.stable:
                h = arch.enc.layer_norm(h)
        hs = run_layers(arch, h, self._attend, self.keep)
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
