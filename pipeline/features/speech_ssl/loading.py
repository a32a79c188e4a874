"""Loading a HuBERT / wav2vec 2.0 / WavLM checkpoint and reading the submodules our forward uses.

`ModelArch` introspects the Hugging Face model once (conv encoder geometry, positional convolution,
GroupNorm parameters, transformer layers), so the encoder code (`encoder.py`) works on any of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipeline.common.runtime import resolve_device
from pipeline.features.speech_ssl.checkpoints import (
    CheckpointError,
    checkpoint_sha256,
    resolve_checkpoint,
    weight_files,
)
from pipeline.features.speech_ssl.options import SSL_HOP_SAMPLES

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
    def arch(self) -> ModelArch:
        """The submodules our forward uses, introspected on first use."""
        if self._arch is None:
            self._arch = ModelArch(self)
        return self._arch


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
    dev = resolve_device(device)
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
        device=str(dev),
    )
    try:
        _ = loaded.arch
    except ValueError as e:
        raise SSLModelError(f"{name_or_path}: {e}; {expected}") from e
    return loaded


class ModelArch:
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
