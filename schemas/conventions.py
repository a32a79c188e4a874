"""Frame-rate and feature-layout conventions shared by every stage.

All time grids derive from these numbers, so head, FBank and SSL frames stay aligned exactly:
one head frame = 80 ms = 8 FBank frames (10 ms) = 4 SSL frames (20 ms); the paper's head features
are sampled at 12.5 fps.
"""

from __future__ import annotations

import math

HEAD_FPS = 12.5
HEAD_HOP_S = 1.0 / HEAD_FPS  # 0.08 s

SAMPLE_RATE = 16_000
HEAD_HOP_SAMPLES = 1280  # 0.08 s at 16 kHz

FBANK_BINS = 80
FBANK_HOP_SAMPLES = 160  # 10 ms
FBANK_WIN_SAMPLES = 400  # 25 ms
FBANK_FRAMES_PER_HEAD = HEAD_HOP_SAMPLES // FBANK_HOP_SAMPLES  # 8
SSL_FRAMES_PER_HEAD = 4  # 20 ms hop

# Static head channels. The paper's "18 dims" = 6 static x (value, first, second derivative):
# pitch/yaw/roll/x/y plus z (relative depth from face scale), see data card. The 5-channel
# variant (15 dims) is available through the `channels` setting.
STATIC_CHANNELS: tuple[str, ...] = ("pitch", "yaw", "roll", "x", "y", "z")
PAPER5_CHANNELS: tuple[str, ...] = ("pitch", "yaw", "roll", "x", "y")


def head_feature_columns(channels: tuple[str, ...] = STATIC_CHANNELS) -> list[str]:
    """Static channels, then first derivatives `d_<ch>`, then second derivatives `dd_<ch>`."""
    return [*channels, *(f"d_{c}" for c in channels), *(f"dd_{c}" for c in channels)]


HEAD_FEATURE_COLUMNS: list[str] = head_feature_columns()
HEAD_DIM = len(HEAD_FEATURE_COLUMNS)  # 18

# The paper's 1 s of ground-truth context at the start of every segment. 1 s at 12.5 fps = 12.5
# frames; we take floor(12.5) = 12 so that the context never reaches past 1 s of ground truth (the
# 13th frame starts at 0.96 s and ends at 1.04 s, i.e. it already belongs to the generated part).
# Training (loss mask), evaluation and generation all use CONTEXT_FRAMES.
CONTEXT_S = 1.0
CONTEXT_FRAMES = int(math.floor(CONTEXT_S * HEAD_FPS))  # 12

# Listener segments are 6-11 s long including the context (the paper); the defaults of
# pipeline.config.SessionConfig.min_segment_s / max_segment_s.
MIN_SEGMENT_S = 6.0
MAX_SEGMENT_S = 11.0
