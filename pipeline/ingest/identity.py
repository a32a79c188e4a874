"""Who is who in a gallery recording: which tile shows the owner of each participant's own audio track.

A person's mouth moves when they talk, and their own track is loudest (above the other's bleed) when
they talk. So for every participant x tile pair we correlate
  - the tile's mouth opening: FaceMesh inner-lip distance (landmarks 13/14) over the eye-corner
    distance (33/263), averaged over `smooth_s` (a talking mouth is open more of the time);
  - the participant's own-voice dominance: their track's speech-band level minus the loudest other
    track's (bleed sits ~20 dB below its source, so only the owner's talk stands out), gated to where
    their track holds speech, averaged over the same window;
on a few stretches spread over the call (only those are decoded: a one-hour call costs the same as a
one-minute one). The assignment with the highest summed correlation wins (Hungarian algorithm).
Only positive correlations count towards an assignment: in a dialogue one person's voice goes
against the other's mouth (turn-taking), and a listener's nods move the lip landmarks of a closed
mouth, so negative scores are not evidence of identity (with them, still mouths scored z 2.5).

Confidence: the margin between the best and the second-best assignment, in units of its noise. The
noise is measured, not assumed: correlations between mouth opening of one stretch and speech of
ANOTHER stretch (unrelated by construction, same smoothness) give the spread `null_sd` of a
stretch's correlation under no synchrony; a mean over K stretches has spread null_sd / sqrt(K), and a
margin that swaps m participants sums 2m such terms, so z = margin / (null_sd * sqrt(2m / K)).
confidence = erf(z / sqrt(2)), the probability that noise alone gives a smaller margin than this one
(0: no evidence either way; 0.99: z = 2.58). Below `min_confidence`, or when an assigned pair does not
correlate positively, or a tile shows a face in too few frames, the result is not confident and
`require_confident` refuses it, asking for the mapping by hand.
"""

from __future__ import annotations

import logging
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.common.errors import MediaError
from pipeline.common.logs import progress
from pipeline.conversation.voice_activity import FRAME_S, LEVEL_FLOOR_DB, band_levels
from pipeline.media.audio import check_samples, ffmpeg_exe

log = logging.getLogger(__name__)

AUDIO_SR = 16_000
LIP_UPPER, LIP_LOWER, EYE_OUTER_R, EYE_OUTER_L = 13, 14, 33, 263
SPEECH_GATE_DB = -30.0  # a track holds speech where it is within this of its loud level
DOMINANCE_CAP_DB = 30.0
SEEK_PREROLL_S = 2.0
AUDIO_MARGIN_S = 1.0  # audio decoded around each stretch: room for the lag search and smoothing


class IdentityError(MediaError):
    kind = "identity"


@dataclass(frozen=True)
class IdentitySettings:
    """What is analysed and what counts as enough evidence."""

    analysis_s: float = 60.0  # seconds of the call analysed in all, in `n_stretches` stretches
    n_stretches: int = 4  # spread evenly over the call (2 at least: the noise comes from stretch pairs)
    min_stretch_s: float = 4.0  # a shorter call gets fewer, contiguous stretches
    fps: float = 25.0  # frames analysed per second inside the stretches (syllables are 5-7 Hz)
    smooth_s: float = 0.4  # both signals are averaged over this window before correlating
    max_lag_s: float = 0.2  # mouth-to-voice lag searched (a mouth leads its sound by ~0-100 ms)
    min_confidence: float = 0.99  # below: refuse and ask for the mapping
    min_face_fraction: float = 0.5  # of the analysed frames, a tile must show a face in this many
    null_sd_floor: float = 0.05  # the noise is never taken as smaller than this (few stretch pairs)


@dataclass(frozen=True)
class TileAssignment:
    """The mapping and its evidence.

    confidence: erf(z / sqrt 2) of the margin z between the best and second-best assignment in noise
    units (module docstring), in [0, 1]; 0.99 means noise alone would give a smaller margin 99 % of
    the time. scores: per participant, the mean correlation with each tile's mouth opening."""

    tile_of: dict[str, int]
    confidence: float
    scores: dict[str, list[float]]
    evidence: dict = field(default_factory=dict)
    confident: bool = False


def assign_tiles(video: str | Path, tiles: Sequence[tuple[int, int, int, int]], tracks: Mapping[str, str | Path],
                 offsets_s: Mapping[str, float], *, start_s: float = 0.0, end_s: float | None = None,
                 settings: IdentitySettings = IdentitySettings(),
                 face_model: str | Path | None = None) -> TileAssignment:
    """Which tile (index into `tiles`, x, y, w, h in video pixels) shows each participant of `tracks`
    (participant id -> own audio file, placed at video time `offsets_s[id]` like
    decode_audio(offset_s=...)), from lip-voice synchrony within [start_s, end_s] of the video."""
    video = Path(video)
    fps_v, width, height, duration = _video_info(video)
    _check_inputs(video, tiles, tracks, offsets_s, width, height)
    end = duration if end_s is None else min(float(end_s), duration)
    stretches = plan_stretches(float(start_s), end, settings)
    if len(stretches) < 2:
        raise IdentityError(video, f"{end - start_s:.1f} s between t={start_s:.1f}s and t={end:.1f}s is too short "
                            f"to tell who is who (needs {2 * settings.min_stretch_s:.0f} s)")
    pids = sorted(tracks)
    times, mouths, faces = _mouth_series(video, tiles, stretches, fps_v, settings, face_model)
    levels = {p: [_track_levels(Path(tracks[p]), float(offsets_s[p]), a, b) for a, b in stretches] for p in pids}
    speech = _speech_dominance(levels, pids)
    return _decide(pids, stretches, times, mouths, faces, speech, settings)


def require_confident(assignment: TileAssignment, video: Path) -> TileAssignment:
    """The assignment, or an IdentityError naming the video, the evidence and how to map by hand."""
    if assignment.confident:
        return assignment
    scores = "; ".join(f"{p}: [{', '.join(f'{s:+.3f}' for s in row)}]" for p, row in assignment.scores.items())
    guess = ", ".join(f"{p} -> tile {t}" for p, t in assignment.tile_of.items())
    raise IdentityError(video, f"cannot tell which gallery tile is whom from lip-voice synchrony "
                        f"({assignment.evidence.get('reason', '')}; confidence {assignment.confidence:.3f} < "
                        f"{assignment.evidence.get('min_confidence')}); synchrony scores per tile {scores}; "
                        f"best guess {guess}. Give the mapping by hand: import-zoom --tile-order with the "
                        f"participant ids in tile order (left tile first), or each participant's tile as "
                        f"crop_x,crop_y,crop_w,crop_h in the session's participants.csv")


def plan_stretches(start_s: float, end_s: float, st: IdentitySettings) -> list[tuple[float, float]]:
    """`n_stretches` equal stretches centred on evenly spread points of [start_s, end_s], at most
    analysis_s in all; fewer (contiguous) when the range is short."""
    span = end_s - start_s
    k = int(min(st.n_stretches, max(0, math.floor(span / st.min_stretch_s))))
    if k == 0:
        return []
    length = min(st.analysis_s / st.n_stretches, span / k)
    out = []
    for i in range(k):
        centre = start_s + (i + 0.5) * span / k
        out.append((round(centre - length / 2, 6), round(centre + length / 2, 6)))
    return out


def _video_info(video: Path) -> tuple[float, int, int, float]:
    import cv2

    if not video.is_file():
        raise IdentityError(video, "video file not found")
    cap = cv2.VideoCapture(str(video))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    if not (fps > 0 and math.isfinite(fps)) or width <= 0 or height <= 0 or n <= 0:
        raise IdentityError(video, f"expected a video stream OpenCV can read (fps={fps}, size={width}x{height}, "
                            f"frames={n})")
    return fps, width, height, n / fps


def _check_inputs(video: Path, tiles: Sequence[tuple[int, int, int, int]], tracks: Mapping[str, str | Path],
                  offsets_s: Mapping[str, float], width: int, height: int) -> None:
    for i, (x, y, w, h) in enumerate(tiles):
        if w < 16 or h < 16 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise IdentityError(video, f"tile {i} x={x},y={y},w={w},h={h} does not fit inside the {width}x{height} "
                                "frame (or is under 16 px)")
    if len(tracks) < 2 or len(tracks) > len(tiles):
        raise IdentityError(video, f"expected 2 or more participant tracks and at least as many tiles; got "
                            f"{len(tracks)} tracks and {len(tiles)} tiles")
    for pid, path in tracks.items():
        if not Path(path).is_file():
            raise IdentityError(path, f"audio track of participant {pid!r} not found")
        if pid not in offsets_s or not math.isfinite(float(offsets_s[pid])):
            raise IdentityError(path, f"no finite audio offset given for participant {pid!r} (offsets_s)")


def _track_levels(path: Path, offset_s: float, t0: float, t1: float) -> np.ndarray:
    """Speech-band level (dB, 10 ms frames) of a track on the video timeline from t0 - AUDIO_MARGIN_S
    to t1 + AUDIO_MARGIN_S; only that stretch is decoded (ffmpeg input seek). Before the track's start
    and after its end the level is LEVEL_FLOOR_DB."""
    a, b = t0 - AUDIO_MARGIN_S, t1 + AUDIO_MARGIN_S
    n = int(round((b - a) * AUDIO_SR))
    wave = np.zeros(n, np.float32)
    track_a = a - offset_s  # track time of the first wanted sample
    skip = max(0.0, track_a)
    # An input seek alone lands up to ~20 ms off on AAC (priming, packet edges; measured 1-21 ms), so
    # seek the input to SEEK_PREROLL_S before the stretch and drop the rest exactly after decoding.
    coarse = max(0.0, skip - SEEK_PREROLL_S)
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", *(["-ss", f"{coarse:.6f}"] if coarse > 0 else []),
           "-i", f"file:{path.resolve()}", "-ss", f"{skip - coarse:.6f}", "-t", f"{b - offset_s - skip:.6f}",
           "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(AUDIO_SR), "pipe:1"]
    if b - offset_s > skip:
        done = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            raise IdentityError(path, "expected an audio stream ffmpeg can decode; ffmpeg said: "
                                + (detail[-1] if detail else "no output"))
        got = np.frombuffer(done.stdout, np.float32)
        check_samples(got, path, AUDIO_SR)
        lead = int(round((skip - track_a) * AUDIO_SR))
        got = got[: max(0, n - lead)]
        wave[lead:lead + got.size] = got
    return 10.0 * np.log10(np.maximum(band_levels(wave, AUDIO_SR), 10 ** (LEVEL_FLOOR_DB / 10)))


def _speech_dominance(levels: Mapping[str, list[np.ndarray]], pids: list[str]) -> dict[str, list[np.ndarray]]:
    """Per participant and stretch: own level minus the loudest other track's (each track's level
    relative to its own loud level, the 95th percentile over the analysed audio), 0..DOMINANCE_CAP_DB,
    0 where the own track holds no speech."""
    loud = {p: float(np.percentile(np.concatenate(levels[p]), 95)) for p in pids}
    out: dict[str, list[np.ndarray]] = {p: [] for p in pids}
    for k in range(len(levels[pids[0]])):
        rel = {p: levels[p][k] - loud[p] for p in pids}
        for p in pids:
            other = np.max([rel[q] for q in pids if q != p], axis=0)
            dom = np.clip(rel[p] - other, 0.0, DOMINANCE_CAP_DB) * (rel[p] > SPEECH_GATE_DB)
            out[p].append(dom)
    return out


def _analysis_frames(a: float, b: float, fps: float, fps_v: float) -> np.ndarray:
    """Video frame indices analysed in [a, b): the frames nearest to a grid at `fps`."""
    grid = a + np.arange(int(math.floor((b - a) * fps))) / fps
    return np.unique(np.round(grid * fps_v).astype(np.int64))


def _mouth_series(video: Path, tiles: Sequence[tuple[int, int, int, int]], stretches: list[tuple[float, float]],
                  fps_v: float, st: IdentitySettings, face_model: str | Path | None
                  ) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[int]]:
    """Per stretch the analysed frame times; per tile and stretch the mouth opening (inner-lip gap over
    eye-corner distance, NaN without a face); per tile the frames with a face. One FaceMesh tracker
    per tile (video mode); only the stretches are decoded (seek, then grab up to each frame)."""
    import cv2

    from pipeline.features.head.tracking import FaceMeshTracker

    frames = [_analysis_frames(a, b, st.fps, fps_v) for a, b in stretches]
    trackers = [FaceMeshTracker(static_image_mode=False, task_model=face_model) for _ in tiles]
    openings: list[list[np.ndarray]] = [[np.full(f.size, np.nan) for f in frames] for _ in tiles]
    faces = [0] * len(tiles)
    cap = cv2.VideoCapture(str(video))
    bar = progress(desc="who is who: mouths", total=sum(f.size for f in frames), unit="frame")
    try:
        for k, idx in enumerate(frames):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx[0]))
            pos = int(idx[0])
            for j, want in enumerate(idx):
                while pos < want and cap.grab():
                    pos += 1
                ok, frame = cap.read()
                pos += 1
                bar.update(1)
                if not ok:
                    log.warning("%s: no frame at t=%.2fs (video shorter than it says?)", video, want / fps_v)
                    break
                for i, (x, y, w, h) in enumerate(tiles):
                    lm = trackers[i].process(frame[y:y + h, x:x + w], timestamp_ms=int(round(want / fps_v * 1000)))
                    if lm is not None:
                        eyes = float(np.linalg.norm(lm[EYE_OUTER_R, :2] - lm[EYE_OUTER_L, :2]))
                        openings[i][k][j] = float(np.linalg.norm(lm[LIP_UPPER, :2] - lm[LIP_LOWER, :2])) / max(eyes, 1.0)
                        faces[i] += 1
    finally:
        bar.close()
        cap.release()
        for tr in trackers:
            tr.close()
    return [f / fps_v for f in frames], openings, faces


def _moving_mean(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving mean ignoring NaN; NaN where under half the window is valid."""
    ok = np.isfinite(x)
    box = np.ones(max(1, width))
    total = np.convolve(np.where(ok, x, 0.0), box, mode="same")
    count = np.convolve(ok.astype(float), box, mode="same")
    return np.where(count >= 0.5 * box.size, total / np.maximum(count, 1.0), np.nan)


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Pearson correlation over the frames where both are finite (0 when either is flat), and that count."""
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < 3:
        return 0.0, n
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return (float(a @ b) / den if den > 1e-12 else 0.0), n


def _best_two(total: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Best assignment (tile per participant row) and the best one that differs from it, with sums
    (the runner-up differs in at least one pair: each pair of the best is banned in turn)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(total, maximize=True)
    best = cols[np.argsort(rows)]
    second, second_sum = best, -np.inf
    for p, t in enumerate(best):
        banned = total.copy()
        banned[p, t] = -1e9
        r2, c2 = linear_sum_assignment(banned, maximize=True)
        alt = c2[np.argsort(r2)]
        s = float(total[np.arange(len(alt)), alt].sum())
        if s > second_sum:
            second, second_sum = alt, s
    return best, float(total[np.arange(len(best)), best].sum()), second, second_sum


def _mouth_signal(opening: np.ndarray, width: int) -> np.ndarray:
    """The mouth opening averaged over `width` frames. Its level, not its frame-to-frame change: on
    our generated calls the change scored lower on talking mouths (z 4.4-4.7 vs 5.3-6.4) and higher on
    still ones (z 1.9 vs 0.6), because head motion jiggles the lip landmarks of a closed mouth."""
    return _moving_mean(opening, width)


def _speech_at(dom: np.ndarray, a: float, times: np.ndarray, st: IdentitySettings) -> np.ndarray:
    """Own-voice dominance of one stretch (10 ms frames from a - AUDIO_MARGIN_S), smoothed over
    `smooth_s`, at the given video times."""
    smooth = _moving_mean(dom, int(round(st.smooth_s / FRAME_S)))
    grid = a - AUDIO_MARGIN_S + (np.arange(dom.size) + 0.5) * FRAME_S
    return np.interp(times, grid, smooth)


def _correlations(mouths: list[list[np.ndarray]], speech: dict[str, list[np.ndarray]], pids: list[str],
                  stretches: list[tuple[float, float]], times: list[np.ndarray], lag: float,
                  st: IdentitySettings) -> tuple[np.ndarray, np.ndarray]:
    """r[k, p, t] (participant p's voice vs tile t's mouth in stretch k, voice read `lag` s later) and
    the frames each used."""
    r = np.zeros((len(stretches), len(pids), len(mouths)))
    n = np.zeros_like(r)
    for k, (a, _b) in enumerate(stretches):
        for p, pid in enumerate(pids):
            voice = _speech_at(speech[pid][k], a, times[k] + lag, st)
            for t in range(len(mouths)):
                r[k, p, t], n[k, p, t] = _corr(mouths[t][k], voice)
    return r, n


def _null_sd(mouths: list[list[np.ndarray]], speech: dict[str, list[np.ndarray]], pids: list[str],
             stretches: list[tuple[float, float]], times: list[np.ndarray], st: IdentitySettings) -> float:
    """RMS correlation between a tile's mouth opening in one stretch and a voice in ANOTHER stretch:
    the spread of a stretch's score when nothing is in sync."""
    null = []
    for k, (a, _b) in enumerate(stretches):
        for k2 in range(len(stretches)):
            if k2 == k:
                continue
            for pid in pids:
                voice = _speech_at(speech[pid][k], a, times[k], st)
                for tile_mouth in mouths:
                    size = min(voice.size, tile_mouth[k2].size)
                    null.append(_corr(tile_mouth[k2][:size], voice[:size])[0])
    return max(st.null_sd_floor, float(np.sqrt(np.mean(np.square(null))))) if null else 1.0


def _decide(pids: list[str], stretches: list[tuple[float, float]], times: list[np.ndarray],
            openings: list[list[np.ndarray]], faces: list[int], speech: dict[str, list[np.ndarray]],
            st: IdentitySettings) -> TileAssignment:
    """Scores per participant x tile at the best common lag, the best assignment and its confidence."""
    width = max(1, int(round(st.smooth_s * st.fps)))
    mouths = [[_mouth_signal(o, width) for o in tile] for tile in openings]
    lags = np.arange(-st.max_lag_s, st.max_lag_s + 1e-9, 1.0 / st.fps)
    found = []
    for lag in lags:
        r, n = _correlations(mouths, speech, pids, stretches, times, float(lag), st)
        score = (r * n).sum(0) / np.maximum(n.sum(0), 1.0)
        found.append((_best_two(np.maximum(score, 0.0))[1], float(lag), r, score))
    _, lag, r, score = max(found, key=lambda f: f[0])
    best, best_sum, second, second_sum = _best_two(np.maximum(score, 0.0))
    k_used = int(max(1, (r != 0).any(axis=(1, 2)).sum()))
    null_sd = _null_sd(mouths, speech, pids, stretches, times, st)
    swapped = max(1, int((best != second).sum()))  # participants whose tile differs in the runner-up
    z = (best_sum - second_sum) / (null_sd * math.sqrt(2.0 * swapped / k_used))
    confidence = max(0.0, math.erf(z / math.sqrt(2.0)))
    n_frames = int(sum(t.size for t in times))
    reason = _weakness(pids, best, score, faces, n_frames, confidence, st)
    evidence = {"stretches_s": [list(s) for s in stretches], "frames_analysed": n_frames,
                "frames_with_face": faces, "lag_s": round(lag, 4), "null_sd": round(null_sd, 4),
                "z": round(float(z), 3), "stretches_used": k_used,
                "second_best": {pids[p]: int(t) for p, t in enumerate(second)},
                "margin": round(best_sum - second_sum, 4),
                "per_stretch_scores": {pid: np.round(r[:, p, :], 4).tolist() for p, pid in enumerate(pids)},
                "min_confidence": st.min_confidence, "reason": reason}
    log.info("who is who: %s (confidence %.3f, z %.2f, lag %+.2f s)",
             {pids[p]: int(t) for p, t in enumerate(best)}, confidence, z, lag)
    return TileAssignment(tile_of={pid: int(best[p]) for p, pid in enumerate(pids)},
                          confidence=round(float(confidence), 6),
                          scores={pid: [round(float(v), 4) for v in score[p]] for p, pid in enumerate(pids)},
                          evidence=evidence, confident=not reason)


def _weakness(pids: list[str], best: np.ndarray, score: np.ndarray, faces: list[int], n_frames: int,
              confidence: float, st: IdentitySettings) -> str:
    """Why the evidence is not enough ('' when it is)."""
    few = [t for t in sorted(set(int(b) for b in best)) if faces[t] < st.min_face_fraction * n_frames]
    if few:
        return f"tiles {few} show a face in under {st.min_face_fraction:.0%} of the {n_frames} analysed frames"
    flat = [pid for p, pid in enumerate(pids) if score[p, best[p]] <= 0.0]
    if flat:
        return f"the voice of {flat} does not go with any tile's mouth opening"
    if confidence < st.min_confidence:
        return "the best and second-best mappings are too close for the noise in the scores"
    return ""
