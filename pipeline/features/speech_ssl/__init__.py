"""Hidden states of self-supervised speech models (HuBERT / wav2vec 2.0 / WavLM) as features.

The public surface; the modes and the frame rule are described in `extract`.
"""

from pipeline.features.speech_ssl.extract import extract_ssl, iter_ssl
from pipeline.features.speech_ssl.loading import LoadedSSL, SSLModelError, load_ssl_model
from pipeline.features.speech_ssl.options import (
    DTYPES,
    MODES,
    SSL_FPS,
    bf16_to_float32,
    ssl_num_frames,
    ssl_spec,
    storage_dtype,
)
from pipeline.features.speech_ssl.streaming import StreamingSSL

__all__ = [
    "DTYPES",
    "MODES",
    "SSL_FPS",
    "LoadedSSL",
    "SSLModelError",
    "StreamingSSL",
    "bf16_to_float32",
    "extract_ssl",
    "iter_ssl",
    "load_ssl_model",
    "ssl_num_frames",
    "ssl_spec",
    "storage_dtype",
]
