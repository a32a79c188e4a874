"""Side-by-side MP4s of evaluation samples: the speaker, the ground-truth listener and every method's
listener, each a face photo warped by the pose sequence as the sample corpus renders its people
(`pipeline.sample.render`), with the speaker's audio when the corpus is at hand.

Listener behaviour is judged by watching it: a table says how far a nod is from the truth, a video
shows whether it lands where a person would nod. Panels show every frame of the window, context
included (a bar under the panels marks it); baselines carry head angles only, so their panels keep
the listener's context position.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import cv2
import numpy as np

from pipeline.common.fsutil import atomic_path
from pipeline.evaluation.config import EvalConfig
from pipeline.evaluation.windows import Stretch, Window
from schemas.conventions import HEAD_FPS, HEAD_HOP_S, SAMPLE_RATE

log = logging.getLogger(__name__)

PANEL_W, PANEL_H, LABEL_H, BAR_H = 160, 192, 22, 8
MAX_SHIFT = 0.15  # tile fractions: a tracking jump must not throw the face out of its panel
MAX_ANGLE = 40.0  # degrees: beyond this a 2.5-D warp of a frontal photo tears
ANGLES = ("pitch", "yaw", "roll")


def render_poses(head: np.ndarray, head_columns: list[str], angle_ref: np.ndarray, *,
                 hold_from: int | None = None) -> np.ndarray:
    """[T, 6] renderer poses (pitch, yaw, roll deg; dx, dy tile fractions; scale) from raw head rows.

    Angles are relative to `angle_ref` (the photo already shows a person's resting pose; the listener
    panels share one reference so offsets between methods stay visible). Position and scale are
    relative to the sequence's mean (people sit anywhere in their tiles); `hold_from` keeps them at
    their mean over frames < hold_from (methods that predict angles only).
    """
    col = {c: head_columns.index(c) for c in ("pitch", "yaw", "roll", "x", "y", "z") if c in head_columns}
    t = head.shape[0]
    out = np.zeros((t, 6), np.float64)
    out[:, 5] = 1.0
    for i, c in enumerate(("pitch", "yaw", "roll")):
        out[:, i] = np.clip(head[:, col[c]] - angle_ref[i], -MAX_ANGLE, MAX_ANGLE)
    src = slice(0, hold_from) if hold_from else slice(0, t)
    for i, c in ((3, "x"), (4, "y")):
        if c in col:
            values = head[:, col[c]] if not hold_from else np.full(t, head[src, col[c]].mean())
            out[:, i] = np.clip(values - values.mean(), -MAX_SHIFT, MAX_SHIFT)
    if "z" in col and not hold_from:  # z = ln(tile width / face size): larger z, smaller face
        out[:, 5] = np.exp(-np.clip(head[:, col["z"]] - head[:, col["z"]].mean(), -0.3, 0.3))
    return out


def _label(canvas: np.ndarray, text: str, x: int) -> None:
    cv2.putText(canvas, text[:22], (x + 4, LABEL_H - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1,
                cv2.LINE_AA)


def panel_frames(renderers: list, poses: list[np.ndarray], labels: list[str], context_frames: int):
    """Frames (H, W, 3 BGR) of panels side by side; the buffer is reused between frames."""
    width, height = PANEL_W * len(renderers), LABEL_H + PANEL_H + BAR_H
    canvas = np.zeros((height, width, 3), np.uint8)
    t_total = poses[0].shape[0]
    for t in range(t_total):
        canvas[:] = 24
        for i, (renderer, pose, label) in enumerate(zip(renderers, poses, labels, strict=True)):
            _label(canvas, label, i * PANEL_W)
            canvas[LABEL_H:LABEL_H + PANEL_H, i * PANEL_W:(i + 1) * PANEL_W] = renderer.render(*pose[t])
        done = int(round(width * (t + 1) / t_total))
        colour = (60, 160, 230) if t < context_frames else (90, 200, 90)  # orange: context, green: generated
        canvas[LABEL_H + PANEL_H:, :done] = colour
        yield canvas


def _encode(path: Path, frames, width: int, height: int, audio: np.ndarray | None) -> int:
    """H.264 MP4 of the frames at the head frame rate, with AAC audio when given."""
    from pipeline.media.audio import ffmpeg_exe
    from pipeline.sample.encoders import BITEXACT_ARGS, encode_video

    if audio is None:
        return encode_video(path, width, height, HEAD_FPS, frames)
    import soundfile as sf

    silent, wav = path.with_suffix(".video.mp4"), path.with_suffix(".audio.wav")
    try:
        n = encode_video(silent, width, height, HEAD_FPS, frames)
        sf.write(wav, np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        with atomic_path(path) as tmp:
            cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", str(silent), "-i", str(wav),
                   "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-b:a", "96k", *BITEXACT_ARGS,
                   "-f", "mp4", str(tmp)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"ffmpeg failed muxing {path}: {done.stderr[-2000:]}")
        return n
    finally:
        silent.unlink(missing_ok=True)
        wav.unlink(missing_ok=True)


class SpeakerAudio:
    """The speaker's audio of a window, read from the corpus the dataset was built from."""

    def __init__(self, corpus: Path | None):
        self.corpus = corpus
        self._waves: dict[tuple[str, str], np.ndarray] = {}

    @classmethod
    def for_dataset(cls, dataset_dir: Path, corpus: str | Path | None) -> SpeakerAudio:
        """`corpus`, else the corpus recorded in the dataset's build record, else none."""
        if corpus is None:
            from pipeline.dataset.manifest import read_manifest

            manifest = read_manifest(dataset_dir)
            record = dataset_dir / f"build-{manifest.get('build_id')}.json"
            if record.is_file():
                corpus = json.loads(record.read_text()).get("corpus")
        return cls(Path(corpus) if corpus else None)

    def clip(self, session_id: str, speaker_id: str, start_s: float, n_frames: int) -> tuple[np.ndarray | None, str]:
        """(16 kHz samples of the window or None, where the audio came from or why there is none)."""
        from pipeline.corpus.layout import read_session
        from pipeline.media.audio import decode_audio
        from pipeline.sample.encoders import ffmpeg_encoders

        if self.corpus is None or not (self.corpus / "sessions" / session_id).is_dir():
            return None, f"silent: session {session_id} not found in the corpus ({self.corpus})"
        if "aac" not in ffmpeg_encoders():
            return None, "silent: this ffmpeg has no AAC encoder"
        key = (session_id, speaker_id)
        try:
            entry = read_session(self.corpus, session_id).participant(speaker_id)
            if key not in self._waves:
                self._waves[key] = decode_audio(entry.audio, offset_s=entry.audio_offset_s)
        except Exception as exc:  # any unreadable corpus input: the video is still worth having, silent
            return None, f"silent: {type(exc).__name__}: {exc}"
        wave = self._waves[key]
        a, n = int(round(start_s * SAMPLE_RATE)), int(round(n_frames * HEAD_HOP_S * SAMPLE_RATE))
        out = np.zeros(n, np.float32)
        part = wave[a:a + n]
        out[:len(part)] = part
        return out, f"speaker {speaker_id}'s audio ({entry.audio.name})"


def write_videos(out_dir: Path, picks: list[int], windows: list[Window], stretches: list[Stretch],
                 head_columns: list[str], listener: np.ndarray, speaker: np.ndarray, generated: dict,
                 outputs: dict, cfg: EvalConfig, *, corpus=None,
                 dataset_dir: Path | None = None) -> list[dict]:
    """One MP4 per picked sample -> [{file, window_id, panels, audio, frames, size}]."""
    from pipeline.sample.faces import default_look
    from pipeline.sample.render import HeadRenderer

    if not picks:
        return []
    audio = SpeakerAudio.for_dataset(dataset_dir, corpus) if dataset_dir else SpeakerAudio(
        Path(corpus) if corpus else None)
    renderers: dict[str, HeadRenderer] = {}

    def renderer(pid: str) -> HeadRenderer:
        if pid not in renderers:
            renderers[pid] = HeadRenderer(default_look(pid), PANEL_W, PANEL_H)
        return renderers[pid]

    out_dir.mkdir(parents=True, exist_ok=True)
    c, e = cfg.context_frames, cfg.eval_frames
    made = []
    for rank, i in enumerate(picks):
        window, stretch = windows[i], stretches[windows[i].stretch]
        angle_idx = [head_columns.index(a) for a in ANGLES]
        ref = listener[i][:, angle_idx].mean(axis=0)
        labels = [f"speaker {stretch.speaker_id}", f"GT listener {stretch.listener_id}"]
        poses = [render_poses(speaker[i], head_columns, speaker[i][:, angle_idx].mean(axis=0)),
                 render_poses(listener[i], head_columns, ref)]
        for name, arr in outputs.items():
            if name in generated:
                poses.append(render_poses(generated[name][i], head_columns, ref))
            else:  # a baseline: angles over the evaluated frames, the listener's own context before
                head = listener[i].copy()
                head[c:c + e][:, angle_idx] = arr[i, :, :3]
                poses.append(render_poses(head, head_columns, ref, hold_from=c))
            labels.append(name)
        panels = [renderer(stretch.speaker_id), *[renderer(stretch.listener_id)] * (len(poses) - 1)]
        wave, source = audio.clip(stretch.session_id, stretch.speaker_id, window.start_s, len(poses[0]))
        name = f"sample_{rank}.mp4"
        width, height = PANEL_W * len(panels), LABEL_H + PANEL_H + BAR_H
        n = _encode(out_dir / name, panel_frames(panels, poses, labels, c), width, height, wave)
        log.info("video %s: %s, %d frames, %s", name, window.window_id, n, source)
        made.append({"file": name, "window_id": window.window_id, "panels": labels, "audio": source,
                     "frames": n, "size": [width, height]})
    return made
