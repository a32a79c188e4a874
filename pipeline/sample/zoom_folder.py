"""A generated Zoom-like local recording folder with known truth, for the Zoom importer and its tests.

Zoom's local recording (README "From a Zoom recording") is a folder
``<YYYY-MM-DD HH.MM.SS> <Topic> <meeting id>/`` holding ``zoom_0.mp4`` (one mixed view, H.264 + AAC,
fixed frame rate), ``audio_only.m4a`` (the mixed call audio), ``playback.m3u``, ``chat.txt`` and,
with "Record a separate audio file for each participant", ``Audio Record/audio<Name><digits>.m4a``.
The per-participant tracks are not aligned to the video and carry the other person's voice at a
lower level. This module writes such a folder from the sample corpus parts (`dialogue`, `motion`,
`speech`, `render`, `encoders`) and puts ``truth.json`` NEXT TO the folder (never inside it): tile
rectangles per layout, each track's offset and drift, talk spans, view and layout change time.

Conventions (the same as participants.csv's `audio_offset_s`): a track's first sample plays at video
time `offset_s`, and one second of track time lasts ``1 + drift_ppm * 1e-6`` seconds of video time,
so the lag (video time minus track time) grows from `offset_s` by `drift_ppm` microseconds per
second of track.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.common.fsutil import atomic_folder, write_json_atomic, write_text_atomic
from pipeline.sample.dialogue import make_script, talk_intervals
from pipeline.sample.encoders import AUDIO_FORMATS, encode_video, ffmpeg_encoders, mux_audio, write_audio
from pipeline.sample.faces import DEFAULT_LOOKS, ParticipantLook, photo_landmarks
from pipeline.sample.generate import rng_stream
from pipeline.sample.motion import make_motion
from pipeline.sample.render import GALLERY_BG, HeadRenderer
from pipeline.sample.speech import make_speech_track

ZOOM_GENERATOR_VERSION = 2  # 2: mouths open with each participant's own speech
DEFAULT_NAMES = ("Akira Sato", "Mei Tanaka")
VIEWS = ("gallery", "speaker")
TRUTH_FILE = "truth.json"
AUDIO_FORMAT = "m4a"  # Zoom's tracks are AAC in M4A
TILE_BORDER = 8
RESIZED_SCALE = 0.75  # after a layout change the window is smaller: tiles shrink to 3/4, centred
LABEL_BG = (0, 0, 0)
LABEL_FG = (255, 255, 255)
MOUTH_LEAD_S = 0.04  # the mouth opens a little before the sound comes out
MOUTH_SMOOTH_S = 0.05  # envelope smoothing: keeps the 5-7 Hz syllable rhythm
MOUTH_RANGE_DB = 30.0  # below the voice's loud level by this much the mouth is closed


@dataclass(frozen=True)
class ZoomSample:
    """Where the generated recording is: the Zoom folder and its truth (outside the folder)."""

    folder: Path
    truth_path: Path

    def truth(self) -> dict[str, Any]:
        return json.loads(self.truth_path.read_text(encoding="utf-8"))


def participant_id(display_name: str) -> str:
    """Zoom's file-name form of a display name: spaces and other non-alphanumerics dropped."""
    return "".join(ch for ch in display_name if ch.isalnum())


def make_zoom_folder(dest: str | Path, *, seed: int = 0, duration_s: float = 30.0, view: str = "gallery",
                     names: Sequence[str] = DEFAULT_NAMES, offsets_s: Mapping[str, float] | None = None,
                     drift_ppm: Mapping[str, float] | None = None, bleed_db: float = -20.0,
                     layout_change_at_s: float | None = None, fps: float = 25.0,
                     frame_size: tuple[int, int] = (640, 360), topic: str = "Listening study",
                     start_time: str = "2026-11-20 10.00.00", still_mouths: bool = False) -> ZoomSample:
    """Write `<dest>/<start_time> <topic> <meeting id>/` (an earlier folder of that name is replaced)
    and `<dest>/truth.json`. Deterministic: same arguments -> same bytes.

    names: the two display names; offsets_s / drift_ppm: per display name or participant id
    (default 0); bleed_db: level of the other person's voice in a track relative to their own;
    view: "gallery" (two tiles, name labels) or "speaker" (the active speaker fills the frame, the
    other is a thumbnail; tiles swap); layout_change_at_s: gallery only, the window shrinks then;
    still_mouths: the mouths never move (who-is-who from lip synchrony must then be refused)."""
    _check_arguments(view, names, duration_s, layout_change_at_s, still_mouths)
    pids = [participant_id(n) for n in names]
    offsets = _per_participant(offsets_s, names, "offsets_s")
    drifts = _per_participant(drift_ppm, names, "drift_ppm")
    if any(off > duration_s - 1.0 for off in offsets):
        raise ValueError(f"offsets_s {offsets} leave under 1 s of track inside a {duration_s:g} s call")
    fw, fh = (int(v) // 4 * 4 for v in frame_size)
    rng = rng_stream(seed, "zoom", *pids)
    meeting_id = str(int(rng.integers(81_000_000_000, 89_999_999_999)))
    digits = {pid: str(int(rng.integers(10_000_000, 99_999_999))) for pid in pids}
    folder_name = f"{start_time} {topic} {meeting_id}"

    script = make_script(pids, duration_s, rng_stream(seed, "zoom", "script"))
    sr = AUDIO_FORMATS[AUDIO_FORMAT]["sr"]
    looks = zoom_looks(pids)
    voices = {pid: make_speech_track(script, pid, sr, looks[pid].f0_hz, rng_stream(seed, "zoom", "voice", pid))
              for pid in pids}
    layouts = _layouts(view, fw, fh, pids, duration_s, layout_change_at_s, script)

    dest = Path(dest)
    with atomic_folder(dest / folder_name) as build:
        (build / "Audio Record").mkdir()
        mix = mix_voices(voices)
        mouths = {pid: mouth_opening(voices[pid], sr, fps, duration_s) * (not still_mouths) for pid in pids}
        _write_video(build, script, looks, names, layouts, mix, mouths, fps, fw, fh, duration_s, seed)
        write_audio(build / "audio_only.m4a", mix, AUDIO_FORMAT)
        tracks = {pid: f"Audio Record/audio{pid}{digits[pid]}.m4a" for pid in pids}
        for k, pid in enumerate(pids):
            y = participant_track(voices[pid], voices[pids[1 - k]], sr, offsets[k], drifts[k], bleed_db,
                                  duration_s, rng_stream(seed, "zoom", "floor", pid))
            write_audio(build / tracks[pid], y, AUDIO_FORMAT)
        write_text_atomic(build / "playback.m3u", f"#EXTM3U\n#EXTINF:{int(round(duration_s))},zoom_0.mp4\nzoom_0.mp4\n")
        write_text_atomic(build / "chat.txt", _chat_text(script, names, pids, start_time))
    truth = _truth(seed, folder_name, view, fps, (fw, fh), duration_s, sr, names, pids, tracks, offsets, drifts,
                   bleed_db, layouts, layout_change_at_s, script)
    truth["still_mouths"] = still_mouths
    write_json_atomic(dest / TRUTH_FILE, truth)
    return ZoomSample(dest / folder_name, dest / TRUTH_FILE)


def _check_arguments(view: str, names: Sequence[str], duration_s: float, change_at_s: float | None,
                     still_mouths: bool) -> None:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
    if len(names) != 2 or len({participant_id(n) for n in names}) != 2 or not all(participant_id(n) for n in names):
        raise ValueError(f"expected two display names with distinct letters/digits, got {list(names)!r}")
    if not duration_s >= 2.0:
        raise ValueError(f"duration_s must be at least 2 s, not {duration_s!r}")
    if change_at_s is not None and (view != "gallery" or not 0 < change_at_s < duration_s):
        raise ValueError("layout_change_at_s needs the gallery view and a time inside the call")
    if not isinstance(still_mouths, bool):
        raise ValueError(f"still_mouths must be True or False, not {still_mouths!r}")
    if "aac" not in ffmpeg_encoders():
        raise RuntimeError("this ffmpeg has no AAC encoder; Zoom-like .m4a files cannot be written")


def _per_participant(values: Mapping[str, float] | None, names: Sequence[str], what: str) -> list[float]:
    """Per-participant numbers keyed by display name or participant id, in `names` order (default 0)."""
    values = dict(values or {})
    keys = {n: n for n in names} | {participant_id(n): n for n in names}
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ValueError(f"{what}: unknown participant(s) {unknown}; expected some of {list(names)}")
    by_name = {keys[k]: float(v) for k, v in values.items()}
    return [by_name.get(n, 0.0) for n in names]


def zoom_looks(pids: Sequence[str]) -> dict[str, ParticipantLook]:
    """The first two built-in looks (two different photos and voices), renamed."""
    base = (DEFAULT_LOOKS["P01"], DEFAULT_LOOKS["P02"])
    return {pid: replace(lk, participant_id=pid) for pid, lk in zip(pids, base, strict=True)}


def mix_voices(voices: Mapping[str, np.ndarray]) -> np.ndarray:
    """The call's mixed audio on the video timeline: both voices, peak at -3 dBFS."""
    mix = np.sum(list(voices.values()), axis=0)
    return mix * (10 ** (-3 / 20) / max(float(np.abs(mix).max()), 1e-9))


def participant_track(own: np.ndarray, other: np.ndarray, sr: int, offset_s: float, drift_ppm: float,
                      bleed_db: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """A participant's own recording: own voice plus the other's at `bleed_db`, sampled on the
    track's clock (first sample at video time `offset_s`, 1 + drift_ppm*1e-6 video s per track s)
    until the video ends, with its own -62 dBFS noise floor (no digital silence before the call)."""
    stretch = 1.0 + drift_ppm * 1e-6
    n = int(np.floor((duration_s - offset_s) / stretch * sr))
    if n < sr:
        raise ValueError(f"offset {offset_s} s leaves less than 1 s of track inside a {duration_s} s call")
    video_pos = (offset_s + np.arange(n) / sr * stretch) * sr  # where each track sample lies, in video samples
    src = own + 10 ** (bleed_db / 20) * other
    y = np.interp(video_pos, np.arange(src.size), src, left=0.0, right=0.0)
    floor = rng.standard_normal(n)
    return y + floor / floor.std() * 10 ** (-62 / 20)


def mouth_opening(voice: np.ndarray, sr: int, fps: float, duration_s: float) -> np.ndarray:
    """Mouth opening in [0, 1] per video frame from a participant's OWN voice: its smoothed level
    envelope (syllable rhythm kept) from MOUTH_RANGE_DB below the voice's loud level (6 dB under its
    peak; closed) up to it (fully open), read MOUTH_LEAD_S after each frame's time (the mouth leads the sound)."""
    hop = sr // 100
    n = voice.size // hop
    power = np.mean(voice[: n * hop].astype(np.float64).reshape(n, hop) ** 2, axis=1)
    k = max(1, int(round(MOUTH_SMOOTH_S * 100)))
    power = np.convolve(power, np.ones(k) / k, mode="same")
    db = 10.0 * np.log10(power + 1e-12)
    loud = float(db.max()) - 6.0  # the voice's loud syllables (a listener's track holds only backchannels)
    opening = np.clip(1.0 + (db - loud) / MOUTH_RANGE_DB, 0.0, 1.0)
    times = np.arange(int(round(duration_s * fps))) / fps + MOUTH_LEAD_S
    return np.interp(times, (np.arange(n) + 0.5) / 100, opening)


@dataclass(frozen=True)
class _Layout:
    """From `start_s` on, each participant's tile; in the speaker view `tiles` changes with the speaker."""

    start_s: float
    tiles: dict[str, tuple[int, int, int, int]]


def _gallery_tiles(fw: int, fh: int, pids: Sequence[str], scale: float = 1.0) -> dict[str, tuple[int, int, int, int]]:
    """Two 16:9 tiles side by side, centred on the dark background (Zoom's gallery for two people)."""
    tw = int((fw - 3 * TILE_BORDER) / 2 * scale) // 4 * 4
    th = int(tw * 9 / 16) // 4 * 4
    x0 = (fw - 2 * tw - TILE_BORDER) // 2
    y0 = (fh - th) // 2
    return {pid: (x0 + i * (tw + TILE_BORDER), y0, tw, th) for i, pid in enumerate(pids)}


def _speaker_tiles(fw: int, fh: int, speaker: str, other: str) -> dict[str, tuple[int, int, int, int]]:
    """Active-speaker view: the speaker fills the frame below a thumbnail strip, the other is a
    thumbnail at the top right."""
    strip = fh // 5 // 4 * 4
    thumb_w = int(strip * 16 / 9) // 4 * 4
    main_h = fh - strip - TILE_BORDER
    main_w = min(fw, int(main_h * 16 / 9)) // 4 * 4
    return {speaker: ((fw - main_w) // 2, strip + TILE_BORDER, main_w, main_h // 4 * 4),
            other: (fw - thumb_w - TILE_BORDER, 0, thumb_w, strip)}


def _layouts(view: str, fw: int, fh: int, pids: Sequence[str], duration_s: float, change_at_s: float | None,
             script: dict[str, Any]) -> list[_Layout]:
    """The layouts in time order: one gallery (two with a change), or one per speaker turn."""
    if view == "gallery":
        out = [_Layout(0.0, _gallery_tiles(fw, fh, pids))]
        if change_at_s is not None:
            out.append(_Layout(float(change_at_s), _gallery_tiles(fw, fh, pids, RESIZED_SCALE)))
        return out
    out = []
    for turn in script["turns"]:
        speaker = turn["participant_id"]
        if out and speaker == next(iter(out[-1].tiles)):
            continue
        start = 0.0 if not out else float(turn["start_s"])
        out.append(_Layout(start, _speaker_tiles(fw, fh, speaker, pids[1 - pids.index(speaker)])))
    return out or [_Layout(0.0, _speaker_tiles(fw, fh, pids[0], pids[1]))]


def _draw_label(canvas: np.ndarray, rect: tuple[int, int, int, int], name: str) -> None:
    """Zoom's name label: white text on a dark box at the tile's bottom left."""
    x, y, w, h = rect
    scale = max(0.25, h / 400)  # thumbnails get the smallest legible text
    (tw, th), base = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    pad = 3
    x0, y1 = x + pad, y + h - pad
    cv2.rectangle(canvas, (x0, y1 - th - base - 2 * pad), (min(x + w - 1, x0 + tw + 2 * pad), y1), LABEL_BG, -1)
    cv2.putText(canvas, name, (x0 + pad, y1 - base - pad), cv2.FONT_HERSHEY_SIMPLEX, scale, LABEL_FG, 1,
                cv2.LINE_AA)


def _frames(layouts: list[_Layout], renderers: dict[tuple[str, int, int], HeadRenderer],
            motions: dict[str, np.ndarray], mouths: dict[str, np.ndarray], labels: dict[str, str], fw: int,
            fh: int, n_frames: int, fps: float) -> Iterator[np.ndarray]:
    """Frames of the recording: the layout of each frame's time, every tile rendered and labelled."""
    canvas = np.empty((fh, fw, 3), np.uint8)
    starts = [lay.start_s for lay in layouts]
    for i in range(n_frames):
        lay = layouts[int(np.searchsorted(starts, i / fps, side="right")) - 1]
        canvas[:] = GALLERY_BG
        for pid, (x, y, w, h) in lay.tiles.items():
            _, pitch, yaw, roll, dx, dy, sc = motions[pid][i]
            canvas[y:y + h, x:x + w] = renderers[(pid, w, h)].render(pitch, yaw, roll, dx, dy, sc,
                                                                      mouth_open=float(mouths[pid][i]))
            _draw_label(canvas, (x, y, w, h), labels[pid])
        yield canvas


@lru_cache(maxsize=16)
def _renderer(look: ParticipantLook, width: int, height: int) -> HeadRenderer:
    """Renderers are read-only once built (a depth map and a FaceMesh calibration, ~1 s): shared by
    every folder made in this process with the same look and tile size."""
    return HeadRenderer(look, width, height)


def _write_video(build: Path, script: dict[str, Any], looks: dict[str, ParticipantLook], names: Sequence[str],
                 layouts: list[_Layout], mix: np.ndarray, mouths: dict[str, np.ndarray], fps: float, fw: int,
                 fh: int, duration_s: float, seed: int) -> None:
    """zoom_0.mp4: the rendered view (H.264) with the mixed call audio (AAC)."""
    n_frames = int(round(duration_s * fps))
    motions = {pid: make_motion(script, pid, fps, n_frames, rng_stream(seed, "zoom", "motion", pid))[0]
               for pid in looks}
    for lk in looks.values():
        photo_landmarks(lk.photo)
    renderers = {(pid, w, h): _renderer(looks[pid], w, h)
                 for lay in layouts for pid, (_x, _y, w, h) in lay.tiles.items()}
    labels = {participant_id(n): n for n in names}
    silent = build / "zoom_0.video-only.mp4"
    encode_video(silent, fw, fh, fps, _frames(layouts, renderers, motions, mouths, labels, fw, fh, n_frames, fps))
    try:
        mux_audio(silent, mix, AUDIO_FORMAT, build / "zoom_0.mp4")
    finally:
        silent.unlink(missing_ok=True)


def _chat_text(script: dict[str, Any], names: Sequence[str], pids: Sequence[str], start_time: str) -> str:
    """chat.txt in Zoom's local format ("HH:MM:SS From <name> to Everyone:" then a tab-indented line)."""
    hh, mm, ss = (int(v) for v in start_time.split(" ")[1].split("."))
    t0 = hh * 3600 + mm * 60 + ss
    lines = []
    for turn, text in zip(script["turns"][:2], ("Can you hear me?", "Yes, loud and clear."), strict=False):
        t = t0 + int(turn["start_s"])
        name = names[pids.index(turn["participant_id"])]
        lines.append(f"{t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d} From {name} to Everyone:\n\t{text}")
    return "\n".join(lines) + "\n"


def _truth(seed: int, folder_name: str, view: str, fps: float, frame_size: tuple[int, int], duration_s: float,
           sr: int, names: Sequence[str], pids: Sequence[str], tracks: dict[str, str], offsets: list[float],
           drifts: list[float], bleed_db: float, layouts: list[_Layout], change_at_s: float | None,
           script: dict[str, Any]) -> dict[str, Any]:
    """What an importer should recover: tiles per layout, each track's offset and drift, who talks when."""
    participants = []
    for k, pid in enumerate(pids):
        stretch = 1.0 + drifts[k] * 1e-6
        track_s = np.floor((duration_s - offsets[k]) / stretch * sr) / sr
        participants.append({"participant_id": pid, "display_name": names[k], "audio": tracks[pid],
                             "audio_offset_s": offsets[k], "drift_ppm": drifts[k],
                             "track_duration_s": round(float(track_s), 6),
                             "drift_over_track_s": round(float(track_s * drifts[k] * 1e-6), 6)})
    ends = [lay.start_s for lay in layouts[1:]] + [float(duration_s)]
    return {"generator": "pipeline.sample.zoom_folder", "generator_version": ZOOM_GENERATOR_VERSION,
            "seed": int(seed), "folder": folder_name, "view": view, "video": "zoom_0.mp4",
            "mixed_audio": "audio_only.m4a", "fps": float(fps), "frame_size": list(frame_size),
            "duration_s": float(duration_s), "audio_sample_rate": sr, "bleed_db": float(bleed_db),
            "participants": participants, "layout_change_at_s": change_at_s,
            "layouts": [{"start_s": lay.start_s, "end_s": end, "tiles": {p: list(r) for p, r in lay.tiles.items()}}
                        for lay, end in zip(layouts, ends, strict=True)],
            "turns": script["turns"], "backchannels": script["backchannels"],
            "talk_spans": [list(r) for r in talk_intervals(script, "ipu")]}
