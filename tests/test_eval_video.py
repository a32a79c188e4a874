"""Side-by-side evaluation videos: a real MP4 (rendered faces, ffmpeg) that OpenCV decodes, one frame per
head frame, and a listener panel that moves exactly when its pose does."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np

from pipeline.evaluation.config import EvalConfig
from pipeline.evaluation.video import BAR_H, LABEL_H, PANEL_H, PANEL_W, write_videos
from pipeline.evaluation.windows import Stretch, Window
from schemas.conventions import HEAD_FPS, head_feature_columns

COLUMNS = head_feature_columns()
C, E = 6, 40  # 6 context + 40 evaluated frames


def _frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame.astype(np.float64))
    cap.release()
    return frames


def _motion(frames: list[np.ndarray], panel: int, a: int, b: int) -> float:
    """Mean absolute grey-level change between consecutive frames a..b inside one panel."""
    x0, x1 = panel * PANEL_W, (panel + 1) * PANEL_W
    crops = [f[LABEL_H:LABEL_H + PANEL_H, x0:x1] for f in frames[a:b]]
    return float(np.mean([np.abs(q - p).mean() for p, q in zip(crops[:-1], crops[1:], strict=True)]))


def test_video_shows_every_frame_and_moves_with_the_pose(tmp_path):
    t = C + E
    still = np.zeros((1, t, len(COLUMNS)))
    still[..., COLUMNS.index("x")] = 0.5
    still[..., COLUMNS.index("y")] = 0.45
    listener = still.copy()
    half = t // 2
    time_s = np.arange(t - half) / HEAD_FPS
    listener[0, half:, COLUMNS.index("pitch")] = 12.0 * np.sin(2 * np.pi * 1.0 * time_s)  # 1 Hz nods
    windows = [Window(0, 0, t, 3.0, "seg0")]
    stretches = [Stretch("s1", "P01", "P02", 3.0, (0,), t)]
    # a "model" that nods in the first half of the evaluated frames only
    model = still.copy()
    model[0, C:half, COLUMNS.index("pitch")] = 12.0 * np.sin(2 * np.pi * np.arange(half - C) / HEAD_FPS)
    outputs = {"Model": model[:, C:, :3]}
    cfg = EvalConfig(context_frames=C, eval_frames=E, long_window=E, short_window=20)
    made = write_videos(tmp_path, [0], windows, stretches, COLUMNS, listener, still, {"Model": model}, outputs,
                        cfg, corpus=None)
    assert made[0]["audio"].startswith("silent")
    frames = _frames(tmp_path / made[0]["file"])
    assert len(frames) == t == made[0]["frames"]
    assert frames[0].shape == (LABEL_H + PANEL_H + BAR_H, 3 * PANEL_W, 3)
    # panels: 0 speaker (still), 1 ground-truth listener (nods in the second half), 2 the model (first half)
    # Still poses render identical images, so only codec noise changes them (well under 1 grey level at
    # CRF 20); a 12-degree nod moves the face by several pixels in every frame.
    assert _motion(frames, 0, 0, t) < 1.0
    assert _motion(frames, 1, 0, half) < 1.0
    assert _motion(frames, 1, half + 1, t) > 3.0
    assert _motion(frames, 2, C + 1, half) > 3.0
    assert _motion(frames, 2, half + 1, t) < 1.0


def test_video_carries_the_speakers_audio(sample_corpus, tmp_path):
    from pipeline.media.audio import ffmpeg_exe

    t = C + E
    still = np.zeros((1, t, len(COLUMNS)))
    windows = [Window(0, 0, t, 2.0, "seg0")]
    stretches = [Stretch("s01", "P01", "P02", 2.0, (0,), t)]
    cfg = EvalConfig(context_frames=C, eval_frames=E, long_window=E, short_window=20)
    made = write_videos(tmp_path, [0], windows, stretches, COLUMNS, still, still, {}, {}, cfg,
                        corpus=sample_corpus)
    assert "P02" in made[0]["audio"], made[0]["audio"]
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / made[0]["file"])],
                           capture_output=True, text=True).stderr
    assert "Audio:" in probe and "Video:" in probe, probe
    assert len(_frames(tmp_path / made[0]["file"])) == t
