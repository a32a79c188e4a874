"""What defines SSL features: the modes, the frame rule, stored dtypes, layer selection and the spec.

Frame rule (all modes): 16 kHz mono input left-padded with 80 zeros; frame j covers original samples
[320j-80, 320j+320); exactly 4*floor(N/1280) frames (whole 80 ms head frames), 50 fps. The modes are
described in `pipeline.features.speech_ssl.extract`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from schemas.conventions import HEAD_HOP_SAMPLES, SAMPLE_RATE, SSL_FRAMES_PER_HEAD

if TYPE_CHECKING:
    from pipeline.features.speech_ssl.loading import LoadedSSL

SSL_FPS = SAMPLE_RATE * SSL_FRAMES_PER_HEAD // HEAD_HOP_SAMPLES  # 50
SSL_HOP_SAMPLES = HEAD_HOP_SAMPLES // SSL_FRAMES_PER_HEAD  # 320
MODES = ("none", "attention", "strict")
DTYPES = ("float16", "bfloat16", "float32")
SPEC_VERSION = "ssl-v1"


def ssl_num_frames(n_samples: int) -> int:
    """Frames output for a recording of `n_samples`: whole head frames only (4 per 1280 samples)."""
    return SSL_FRAMES_PER_HEAD * (int(n_samples) // HEAD_HOP_SAMPLES)


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Decode the uint16 bfloat16 bit patterns returned for dtype="bfloat16"."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def storage_dtype(dtype: str) -> Any:
    """The numpy dtype holding `dtype` ("bfloat16" is kept as its uint16 bit patterns)."""
    return {"float16": np.float16, "float32": np.float32, "bfloat16": np.uint16}[dtype]


def to_numpy(t: Any, dtype: str) -> np.ndarray:
    """A torch tensor as the stored numpy array of `dtype` (see `storage_dtype`)."""
    import torch

    t = t.detach().float().cpu()
    if dtype == "float32":
        return t.numpy()
    if dtype == "float16":
        return t.to(torch.float16).numpy()
    return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


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
    check_mode(loaded, mode)
    sel = layer_list(loaded, layers)
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
        spec.update(window_frames=frames_in(window_s), gn="cumulative", pos_conv="past+current taps")
    else:
        spec.update(
            chunk_frames=frames_in(chunk_s),
            context_frames=frames_in(context_s),
            gn="whole-recording",
            pos_conv="full",
            attention="causal" if mode == "attention" else "bidirectional",
        )
    return spec


def frames_in(seconds: float) -> int:
    """Whole SSL frames in `seconds` (at least one)."""
    return max(1, int(round(seconds * SSL_FPS)))


def check_mode(loaded: LoadedSSL, mode: str) -> None:
    """A known mode that this model supports (WavLM: bidirectional only)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if loaded.kind == "wavlm" and mode != "none":
        raise NotImplementedError(
            "WavLM's relative position bias has no causal variant here: only mode='none' is supported"
        )


def layer_list(loaded: LoadedSSL, layers: list[int] | None) -> list[int]:
    """Hidden-state indices to keep (None = all; negative counts from the end), checked."""
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


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
