"""Embedded sample corpus: synthetic two-party "video calls" with planted listener behaviour.

The product's default job builds this corpus, and an end-to-end test trains on it, so the planted
speaker -> listener structure is real: listeners nod (pitch down 8-15 deg and back) 0.7-0.9 s after
the speaker's phrase ends (probability 0.85) and around their own backchannels. The nods are rendered
into real face photos and are visible to MediaPipe FaceMesh.

Corpus layout (the pipeline's input contract)::

    <corpus>/sessions/<sid>/participants.csv   participant_id,video,audio[,crop_x,crop_y,crop_w,crop_h][,audio_offset_s]
    <corpus>/sessions/<sid>/<pid>.mp4 | gallery.mp4, <pid>.wav | .m4a | .mp3
    <corpus>/sessions/<sid>/turns.csv | turns.eaf | turns.TextGrid   (exactly one)
    <corpus>/ground_truth/<sid>.npz            rendered head motion per participant (video frame rate)
    <corpus>/ground_truth/<sid>.json           turns, phrases, backchannels, planted nods, parameters
    <corpus>/README.md, <corpus>/.complete.json

This module orchestrates; the parts are `dialogue` (who talks when), `motion` (head motion, planted
nods; angle conventions), `speech` (voices), `faces` / `render` (video), `encoders` (bit-exact
files), `annotation_files` and `corpus_files` (participants.csv, ground truth, README).
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.fsutil import atomic_folder, write_json_atomic, write_text_atomic
from pipeline.common.logs import progress
from pipeline.sample.annotation_files import ANNOTATION_FILES, annotation_text
from pipeline.sample.corpus_files import (
    corpus_readme,
    ground_truth_paths,
    participants_csv,
    write_ground_truth,
)
from pipeline.sample.dialogue import make_script, talk_intervals
from pipeline.sample.encoders import (
    AUDIO_FORMATS,
    encode_video,
    resolve_audio_format,
    video_codec_args,
    write_audio,
)
from pipeline.sample.faces import ParticipantLook, default_look, photo_landmarks
from pipeline.sample.motion import MOTION_COLUMNS, make_motion
from pipeline.sample.render import HeadRenderer, gallery_frames, gallery_rects, solo_frames
from pipeline.sample.speech import make_speech_track

GENERATOR_VERSION = 3  # bump whenever generated content changes (idempotence markers compare it)

SOLO_SIZE, GALLERY_SIZE = (480, 360), (960, 360)
QUICK_SOLO_SIZE, QUICK_GALLERY_SIZE = (320, 240), (640, 240)
QUICK_DURATION_S = 40.0
COMPLETE_MARKER = ".complete.json"


def rng_stream(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent, stable random stream per (seed, keys); never uses Python's salted hash()."""
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


@dataclass(frozen=True)
class SampleSession:
    """Everything that determines a sample session's bytes (see `make_session` for the options)."""

    session_id: str
    looks: tuple[ParticipantLook, ...]
    annotation: str
    layout: str
    fps: float
    duration_s: float
    audio_format: str  # resolved: an available encoder
    seed: int
    frame_size: tuple[int, int]
    annotation_unit: str
    audio_offset_column: bool

    @property
    def pids(self) -> list[str]:
        return [lk.participant_id for lk in self.looks]

    def rng(self, *keys: str | int) -> np.random.Generator:
        return rng_stream(self.seed, self.session_id, *keys)

    def params(self) -> dict[str, Any]:
        """Recorded in the ground truth; a rebuild is skipped when they are identical."""
        return {"generator_version": GENERATOR_VERSION, "session_id": self.session_id,
                "participants": [asdict(lk) for lk in self.looks], "annotation": self.annotation,
                "layout": self.layout, "fps": float(self.fps), "duration_s": float(self.duration_s),
                "audio_format": self.audio_format, "seed": int(self.seed), "frame_size": list(self.frame_size),
                "annotation_unit": self.annotation_unit, "audio_offset_column": bool(self.audio_offset_column),
                "video_codec": video_codec_args()[1]}


@dataclass
class _Media:
    """What the media jobs produced: file names, tiles, renderers (their geometry goes into the ground
    truth) and timings."""

    audio_files: dict[str, str]
    video_files: dict[str, str] = field(default_factory=dict)
    rects: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    renderers: dict[str, HeadRenderer] = field(default_factory=dict)
    tiles_rendered: int = 0
    media_s: float = 0.0


def make_session(corpus_dir: str | Path, session_id: str, participants: Sequence[ParticipantLook | str], *,
                 annotation: str = "csv", layout: str = "solo", fps: float = 25.0, duration_s: float = 60.0,
                 audio_format: str = "wav16k", seed: int = 0, frame_size: tuple[int, int] | None = None,
                 annotation_unit: str = "turn", audio_offset_column: bool = False, workers: int = 2) -> Path:
    """Build (or reuse) one two-party session; returns `<corpus>/sessions/<session_id>`.

    annotation: "csv" | "eaf" | "TextGrid"; layout: "solo" (one video per participant) or "gallery"
    (one video, tiles side by side, crop columns in participants.csv); audio_format: "wav16k" |
    "m4a" | "mp3" | "wav44k_stereo" (one file per participant); frame_size: (w, h) of a solo video
    or of the whole gallery frame; annotation_unit: "turn" (one interval per turn) or "ipu" (one per
    phrase); workers: threads for the media jobs. Idempotent: skipped when the session's ground-truth
    JSON records identical parameters. The session folder appears atomically (built elsewhere, then
    renamed)."""
    corpus = Path(corpus_dir)
    looks = tuple(p if isinstance(p, ParticipantLook) else default_look(p) for p in participants)
    pids = [lk.participant_id for lk in looks]
    if len(looks) != 2 or len(set(pids)) != 2:
        raise ValueError("a sample session has exactly two distinct participants")
    if annotation not in ANNOTATION_FILES:
        raise ValueError(f"annotation must be one of {sorted(ANNOTATION_FILES)}, not {annotation!r}")
    if layout not in ("solo", "gallery"):
        raise ValueError(f"layout must be 'solo' or 'gallery', not {layout!r}")
    fmt = resolve_audio_format(audio_format)
    if frame_size is None:
        frame_size = SOLO_SIZE if layout == "solo" else GALLERY_SIZE
    fw, fh = (int(v) // 4 * 4 for v in frame_size)
    spec = SampleSession(session_id, looks, annotation, layout, fps, duration_s, fmt, seed, (fw, fh),
                         annotation_unit, audio_offset_column)
    session_dir = corpus / "sessions" / session_id
    if _already_built(corpus, spec):
        return session_dir

    t_start = time.perf_counter()
    script = make_script(pids, duration_s, spec.rng("script"))
    rows = talk_intervals(script, annotation_unit)
    n_frames = int(round(duration_s * fps))
    motions, nods = {}, []
    for pid in pids:
        motions[pid], nd = make_motion(script, pid, fps, n_frames, spec.rng("motion", pid))
        nods += nd
    nods.sort(key=lambda d: (d["start_s"], d["participant_id"]))
    media = _build_session_folder(corpus, spec, script, rows, motions, workers)

    # timings vary from run to run: kept apart so the ground truth stays byte-identical
    write_json_atomic(corpus / ".build_stats" / f"{session_id}.json",
                      {"media_s": round(media.media_s, 3), "total_s": round(time.perf_counter() - t_start, 3),
                       "tiles_rendered": media.tiles_rendered,
                       "tiles_per_s": round(media.tiles_rendered / max(media.media_s, 1e-9), 1)})
    write_ground_truth(corpus, session_id, {pid: _motion_in_tile(motions[pid], media.renderers[pid]) for pid in pids},
                       _ground_truth_info(spec, script, rows, nods, media, n_frames))
    return session_dir


def _ground_truth_info(spec: SampleSession, script: dict[str, Any], rows: list[tuple[str, float, float, str]],
                       nods: list[dict[str, Any]], media: _Media, n_frames: int) -> dict[str, Any]:
    """The ground-truth JSON: what was planted (turns, phrases, backchannels, nods) and how it was made."""
    pids = spec.pids
    phrase_ends = {pid: [e for tr in script["turns"] if tr["participant_id"] == pid for _s, e in tr["phrases"]]
                   for pid in pids}
    return {"params": spec.params(), "session_id": spec.session_id, "participants": pids, "fps": float(spec.fps),
            "n_frames": n_frames, "duration_s": float(spec.duration_s), "layout": spec.layout,
            "audio_format": spec.audio_format, "annotation_file": ANNOTATION_FILES[spec.annotation],
            "rects": media.rects, "video_files": media.video_files, "audio_files": media.audio_files,
            "motion_columns": list(MOTION_COLUMNS), "turns": script["turns"],
            "backchannels": script["backchannels"], "phrase_ends": phrase_ends,
            "annotation_rows": [list(r) for r in rows], "nods": nods,
            "face_size_px": {pid: [round(media.renderers[pid].face_w, 1), round(media.renderers[pid].face_h, 1)]
                             for pid in pids}}


def _already_built(corpus: Path, spec: SampleSession) -> bool:
    """The session and its ground truth exist and were made with identical parameters."""
    npz_path, json_path = ground_truth_paths(corpus, spec.session_id)
    if (corpus / "sessions" / spec.session_id).is_dir() and npz_path.exists() and json_path.exists():
        try:
            return json.loads(json_path.read_text(encoding="utf-8")).get("params") == _jsonable(spec.params())
        except (OSError, ValueError):
            pass
    return False


def _motion_in_tile(motion: np.ndarray, renderer: HeadRenderer) -> np.ndarray:
    """Ground-truth motion: the x, y columns become the head pivot's position in tile fractions."""
    m = motion.copy()
    m[:, 4] = renderer.pivot[0] / renderer.w + m[:, 4]
    m[:, 5] = renderer.pivot[1] / renderer.h + m[:, 5]
    return m


def _build_session_folder(corpus: Path, spec: SampleSession, script: dict[str, Any],
                          rows: list[tuple[str, float, float, str]], motions: dict[str, np.ndarray],
                          workers: int) -> _Media:
    """Media, participants.csv and the turn annotation, built in a scratch folder that is then renamed
    to `sessions/<sid>` (so a session folder is never half written)."""
    staging = corpus / ".building"  # outside sessions/, where a half-built session would be discovered
    try:
        with atomic_folder(corpus / "sessions" / spec.session_id, staging_parent=staging) as build:
            media = _render_media(build, spec, script, motions, workers)
            rects = media.rects if spec.layout == "gallery" else None
            write_text_atomic(build / "participants.csv", participants_csv(
                spec.pids, media.video_files, media.audio_files, rects, spec.audio_offset_column))
            write_text_atomic(build / ANNOTATION_FILES[spec.annotation], annotation_text(
                spec.annotation, rows, spec.pids, media.video_files[spec.pids[0]], spec.duration_s))
    finally:
        with contextlib.suppress(OSError):
            staging.rmdir()
    return media


def _render_media(build: Path, spec: SampleSession, script: dict[str, Any], motions: dict[str, np.ndarray],
                  workers: int) -> _Media:
    """One audio file per participant and the video(s), on a small thread pool: the heavy parts
    (ffmpeg encoders, cv2.remap, numpy/scipy) release the GIL."""
    ext = AUDIO_FORMATS[spec.audio_format]["ext"]
    media = _Media(audio_files={pid: f"{pid}{ext}" for pid in spec.pids})
    for lk in spec.looks:
        photo_landmarks(lk.photo)  # FaceMesh on the photo once, before any thread starts
    jobs = _video_jobs(build, spec, motions, media)
    jobs += [(_audio_job, build / media.audio_files[lk.participant_id], script, lk, spec) for lk in spec.looks]
    t_media = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        futures = [pool.submit(fn, *args) for fn, *args in jobs]
        counts = [f.result() for f in futures]
    media.tiles_rendered = sum(counts) * (2 if spec.layout == "gallery" else 1)
    media.media_s = time.perf_counter() - t_media
    return media


def _video_jobs(build: Path, spec: SampleSession, motions: dict[str, np.ndarray],
                media: _Media) -> list[tuple[Any, ...]]:
    """Encoding jobs (one per participant when solo, one gallery video); fills in media's renderers,
    tiles and video file names."""
    fw, fh = spec.frame_size
    if spec.layout == "solo":
        jobs: list[tuple[Any, ...]] = []
        for lk in spec.looks:
            pid = lk.participant_id
            media.renderers[pid] = HeadRenderer(lk, fw, fh)
            media.video_files[pid] = f"{pid}.mp4"
            media.rects[pid] = (0, 0, fw, fh)
            jobs.append((encode_video, build / media.video_files[pid], fw, fh, spec.fps,
                         solo_frames(media.renderers[pid], motions[pid])))
        return jobs
    for lk, rect in zip(spec.looks, gallery_rects(fw, fh, 2), strict=True):
        media.rects[lk.participant_id] = rect
        media.renderers[lk.participant_id] = HeadRenderer(lk, rect[2], rect[3])
        media.video_files[lk.participant_id] = "gallery.mp4"
    pids = spec.pids
    frames = gallery_frames([media.renderers[p] for p in pids], [motions[p] for p in pids],
                            [media.rects[p] for p in pids], fw, fh)
    return [(encode_video, build / "gallery.mp4", fw, fh, spec.fps, frames)]


def _audio_job(path: Path, script: dict[str, Any], look: ParticipantLook, spec: SampleSession) -> int:
    y = make_speech_track(script, look.participant_id, AUDIO_FORMATS[spec.audio_format]["sr"], look.f0_hz,
                          spec.rng("audio", look.participant_id))
    write_audio(path, y, spec.audio_format)
    return 0


def default_session_specs(duration_s: float = 120.0, quick: bool = False,
                          extra_sessions: int = 0, extra_fps: float = 25.0) -> list[dict[str, Any]]:
    """The three built-in sessions: three annotation formats, solo and gallery layouts, four audio
    formats' worth of variety, six participants (P01..P06) for a person-disjoint 3-way split.

    `extra_sessions` adds plain sessions s04.. (CSV, solo, `extra_fps`, WAV) between new people P07, P08, ...:
    more voices and faces, so a model trained on the corpus can generalise across speakers (12.5 fps, the
    head-feature rate, renders and tracks half the frames of 25 fps)."""
    solo = QUICK_SOLO_SIZE if quick else SOLO_SIZE
    gal = QUICK_GALLERY_SIZE if quick else GALLERY_SIZE
    extra = [{"session_id": f"s{4 + i:02d}", "participants": [f"P{7 + 2 * i:02d}", f"P{8 + 2 * i:02d}"],
              "annotation": "csv", "layout": "solo", "fps": float(extra_fps), "audio_format": "wav16k", "frame_size": solo,
              "duration_s": duration_s} for i in range(extra_sessions)]
    return [
        {"session_id": "s01", "participants": ["P01", "P02"], "annotation": "csv", "layout": "solo",
         "fps": 25.0, "audio_format": "wav16k", "frame_size": solo, "duration_s": duration_s},
        {"session_id": "s02", "participants": ["P03", "P04"], "annotation": "eaf", "layout": "solo",
         "fps": 30.0, "audio_format": "m4a", "frame_size": solo, "duration_s": duration_s,
         "audio_offset_column": True},
        {"session_id": "s03", "participants": ["P05", "P06"], "annotation": "TextGrid", "layout": "gallery",
         "fps": 15.0, "audio_format": "mp3", "frame_size": gal, "duration_s": duration_s},
    ] + extra


def make_sample_corpus(corpus_dir: str | Path, *, duration_s: float | None = None, seed: int = 0,
                       quick: bool = False, extra_sessions: int = 0, extra_fps: float = 25.0) -> Path:
    """Build the embedded sample corpus (3 sessions, 6 participants, plus `extra_sessions`) under `corpus_dir`.

    quick=True: same structure, smaller frames and (unless `duration_s` is given) 40 s sessions (tests).
    Idempotent: returns at once when `<corpus>/.complete.json` records the same parameters;
    otherwise (re)builds the sessions whose parameters differ."""
    corpus = Path(corpus_dir)
    if duration_s is None:
        duration_s = QUICK_DURATION_S if quick else 120.0
    specs = default_session_specs(duration_s, quick, extra_sessions, extra_fps)
    marker = corpus / COMPLETE_MARKER
    wanted = _jsonable({"generator_version": GENERATOR_VERSION, "duration_s": float(duration_s), "seed": int(seed),
                        "quick": bool(quick), "sessions": specs, "video_codec": video_codec_args()[1]})
    if marker.exists():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("params") == wanted and all(
                    (corpus / "sessions" / s["session_id"]).is_dir() for s in specs):
                return corpus
        except (OSError, ValueError):
            pass
        marker.unlink()
    t0 = time.perf_counter()
    corpus.mkdir(parents=True, exist_ok=True)
    for spec in progress(specs, desc="sample corpus", unit="session"):
        kw = dict(spec)
        sid = kw.pop("session_id")
        make_session(corpus, sid, kw.pop("participants"), seed=seed, **kw)
    write_text_atomic(corpus / "README.md", corpus_readme(specs, seed, GENERATOR_VERSION))
    write_json_atomic(marker, {"params": wanted, "build_s": round(time.perf_counter() - t0, 2)})
    return corpus
