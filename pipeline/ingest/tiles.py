"""Where each participant's tile is in a Zoom gallery-view video, and when the layout changes.

Zoom's gallery view draws equal-sized tiles on a flat dark background (README "From a Zoom
recording"); their place depends on the window size and the participant count, so it is measured:

1. **Sampled frames.** About `sample_every_s` apart (at least `min_samples`, at most `max_samples`
   over the video). A frame is reached by decoding forward when it is at most `grab_ahead_s` ahead,
   else by a frame-accurate seek (OpenCV seeks to the keyframe before and decodes up to the frame):
   forward decoding costs every frame in between, a seek at most one keyframe interval, so sparse
   samples of an hour cost a fraction of decoding it.
2. **Background colour** per video: the most common colour of the frame's outer ring over a few
   samples, never a built-in value (themes and encoders differ). A ring that is not mostly one
   colour means there is no gallery background (a solo camera video, a full-frame speaker view).
3. **Tiles of a frame** = connected regions of pixels that differ from the background by more than
   `background_tol`, whose bounding box covers at least `min_tile_area_frac` of the frame. Holes
   (dark hair, a name label's black box) do not matter because only a region's outer extent counts,
   and a label sits inside its tile, so it neither splits nor shrinks it.
4. **Layouts over time.** Neighbouring samples with the same tiles (each matched with IoU >=
   `same_layout_iou`) share a layout. Between two samples that differ, frames are bisected until
   the first frame of the new layout is found: a change time is exact to the frame (error < one
   frame period) instead of one sample step. A layout lasting under `max_transient_s` (a redraw,
   a black frame, a moment of something else) is measured the same way and folded into the next
   span, with its times in the evidence: brief redraws are common and harmless, and the evidence
   keeps them visible. A layout that lasts less than one sample step between two samples of the
   same layout is not seen at all.
5. **Refusals** (LayoutError naming the file and times): the active-speaker view, recognised by
   tiles of very different sizes (gallery tiles are all equal; `max_tile_area_ratio`) or by tiles
   whose contents swap (a tile's picture becomes what another tile showed one sample earlier);
   a span whose number of tiles with a face differs from `n_participants` (someone joined, a
   screen share, a camera off); no background or no tile at all.
6. **Faces.** Each tile is confirmed by FaceMesh (static mode, on the crop) on up to
   `face_checks` frames of the span; a tile needs a face in at least `min_face_share` of them.
   Tiles without a face (an observer with the camera off) are left out and named in the evidence.

A span's tile is the per-coordinate median over its samples, robust to a sample where content at
the tile's edge happens to match the background or where the speaking highlight widens it.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.common.errors import MediaError
from pipeline.common.logs import progress

log = logging.getLogger(__name__)

Rect = tuple[int, int, int, int]  # x, y, w, h in pixels of the full frame


class LayoutError(MediaError):
    kind = "layout"


@dataclass(frozen=True)
class TileSettings:
    """Sampling and thresholds; the defaults sample an hour every 10 s (360 frames)."""

    sample_every_s: float = 10.0  # sampled frames, not every frame
    min_samples: int = 12  # a short video is sampled more densely
    max_samples: int = 400  # a very long video is sampled more sparsely
    grab_ahead_s: float = 3.0  # decode forward up to this far, seek beyond
    background_tol: int = 12  # max |channel - background| (0-255) still counted as background
    min_background_ring: float = 0.5  # share of the frame's outer ring that must be background
    min_tile_area_frac: float = 0.01  # a tile's box covers at least this share of the frame
    min_tile_fill: float = 0.5  # share of a tile's box that differs from the background
    same_layout_iou: float = 0.85  # two samples share a layout when every tile matches this well
    max_tile_area_ratio: float = 1.5  # gallery tiles are equal; above this: active-speaker view
    swap_ratio: float = 0.5  # a tile "swapped" when it resembles another tile's last picture this much closer
    max_transient_s: float = 2.0  # shorter layouts are folded into the next span (kept in evidence)
    face_checks: int = 4  # frames per span on which every tile is checked for a face
    min_face_share: float = 0.5  # share of those frames in which a tile must show a face


@dataclass(frozen=True)
class LayoutSpan:
    start_s: float  # video time of the first frame with this layout
    end_s: float  # video time where the next layout starts (or the video ends)
    tiles: tuple[Rect, ...]  # one per participant, reading order (left->right, top->bottom)
    evidence: dict = field(default_factory=dict)  # JSON-able, goes into import_report.json


@dataclass
class _Run:
    """Frames [start_frame, next run's start) that show one tile set; samples seen inside it."""

    start_frame: int
    rects: tuple[Rect, ...]
    samples: list[tuple[int, tuple[Rect, ...]]] = field(default_factory=list)  # (frame, rects)
    transients: list[dict] = field(default_factory=list)


class _Video:
    """Frame-accurate access to chosen frames, decoding forward or seeking (whichever is cheaper)."""

    def __init__(self, path: Path, grab_ahead_s: float):
        if not path.is_file():
            raise LayoutError(path, "video file not found", "t=0.00s")
        # OpenCV's FFmpeg backend reads its open options from the environment at each open: local files only
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "protocol_whitelist;file")
        self.path, self.cap = path, cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0) if self.cap.isOpened() else 0.0
        self.n_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.cap.isOpened() else 0
        if not (self.fps > 0 and math.isfinite(self.fps)) or self.n_frames <= 0:
            self.cap.release()
            raise LayoutError(path, f"cannot read as a video (fps={self.fps:g}, frames={self.n_frames}; "
                              "expected a readable video stream)", "t=0.00s")
        self.grab_ahead = max(1, int(round(grab_ahead_s * self.fps)))
        self.next_index, self.seeks, self.stepped = 0, 0, 0  # stepped: frames decoded by grab()/read()

    def frame(self, index: int) -> np.ndarray | None:
        """Frame `index` (BGR) or None when it cannot be decoded (past a truncated end)."""
        ahead = index - self.next_index
        if ahead < 0 or ahead > self.grab_ahead:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self.seeks += 1
        else:
            for _ in range(ahead):
                self.stepped += 1
                if not self.cap.grab():
                    return None
        ok, img = self.cap.read()
        self.stepped += 1
        self.next_index = index + 1
        return img if ok else None

    def time(self, index: int) -> float:
        return index / self.fps

    def close(self) -> None:
        self.cap.release()


def iou(a: Rect, b: Rect) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter) if inter else 0.0


def same_layout(a: tuple[Rect, ...], b: tuple[Rect, ...], min_iou: float) -> bool:
    """Same tile count and each tile (both in reading order) overlapping its partner by `min_iou`."""
    return len(a) == len(b) and all(iou(p, q) >= min_iou for p, q in zip(a, b, strict=True))


def reading_order(rects: list[Rect]) -> tuple[Rect, ...]:
    """Rows top to bottom (a new row starts when a tile's centre is below half the row's height), then
    left to right within a row."""
    rows: list[list[Rect]] = []
    for r in sorted(rects, key=lambda r: r[1] + r[3] / 2):
        if rows and r[1] + r[3] / 2 - (rows[-1][0][1] + rows[-1][0][3] / 2) < rows[-1][0][3] / 2:
            rows[-1].append(r)
        else:
            rows.append([r])
    return tuple(r for row in rows for r in sorted(row))


def background_colour(frames: list[np.ndarray], tol: int) -> tuple[tuple[int, int, int], float]:
    """(BGR background, share of the frames' 2-pixel outer ring within `tol` of it): the ring's most
    common colour (8-level bins), refined to the median of its pixels in that bin."""
    rings = []
    for f in frames:
        rings += [f[:2].reshape(-1, 3), f[-2:].reshape(-1, 3), f[:, :2].reshape(-1, 3), f[:, -2:].reshape(-1, 3)]
    ring = np.concatenate(rings).astype(np.int32)
    bins = ring // 8
    keys = bins[:, 0] * 1024 + bins[:, 1] * 32 + bins[:, 2]
    mode = np.bincount(keys).argmax()
    colour = np.median(ring[keys == mode], axis=0)
    bg = tuple(int(round(float(c))) for c in colour)
    share = float(np.mean(np.abs(ring - np.array(bg)).max(axis=1) <= tol))
    return (bg[0], bg[1], bg[2]), share


def find_tiles(frame: np.ndarray, background: tuple[int, int, int], settings: TileSettings) -> tuple[Rect, ...]:
    """Tiles of one frame in reading order: boxes of connected regions that differ from the background."""
    diff = cv2.absdiff(frame, np.full_like(frame, background)).max(axis=2)
    mask = (diff > settings.background_tol).astype(np.uint8)
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    min_area = settings.min_tile_area_frac * frame.shape[0] * frame.shape[1]
    rects = []
    for x, y, w, h, count in stats[1:n]:
        if w * h >= min_area and count >= settings.min_tile_fill * w * h:
            rects.append((int(x), int(y), int(w), int(h)))
    return reading_order(rects)


def _signature(frame: np.ndarray, rect: Rect) -> np.ndarray:
    """A tile's picture at 16x9, grey, zero mean and unit variance: what it shows, not its size."""
    x, y, w, h = rect
    small = cv2.resize(cv2.cvtColor(frame[y:y + h, x:x + w], cv2.COLOR_BGR2GRAY), (16, 9),
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    return (small - small.mean()) / (small.std() + 1e-3)


def _sample_frames(n_frames: int, fps: float, s: TileSettings) -> list[int]:
    duration = n_frames / fps
    step = min(s.sample_every_s, duration / max(1, s.min_samples))
    step = max(step, duration / max(1, s.max_samples), 1.0 / fps)
    frames = sorted({min(n_frames - 1, int(round(k * step * fps))) for k in range(int(duration / step) + 1)})
    return frames if frames[-1] == n_frames - 1 else frames + [n_frames - 1]


class _Scan:
    """The sampled pass plus the bisection of changes, over one open video."""

    def __init__(self, video: _Video, background: tuple[int, int, int], settings: TileSettings):
        self.video, self.bg, self.s = video, background, settings
        self.swaps: list[dict] = []

    def tiles_at(self, index: int) -> tuple[Rect, ...] | None:
        img = self.video.frame(index)
        return None if img is None else find_tiles(img, self.bg, self.s)

    def runs(self) -> list[_Run]:
        runs: list[_Run] = []
        last_sig: tuple[tuple[Rect, ...], list[np.ndarray]] | None = None
        sampled = _sample_frames(self.video.n_frames, self.video.fps, self.s)
        for index in progress(sampled, desc="tiles", unit="frame", leave=False):
            img = self.video.frame(index)
            if img is None:  # a truncated end: the container declared more frames than it holds
                break
            rects = find_tiles(img, self.bg, self.s)
            sigs = [_signature(img, r) for r in rects]
            if not runs:
                runs.append(_Run(0, rects))
            elif not same_layout(runs[-1].rects, rects, self.s.same_layout_iou):
                runs += self._bisect(runs[-1].samples[-1][0], runs[-1].rects, index, rects)
            elif last_sig is not None:
                self._check_swap(index, last_sig[1], sigs)
            runs[-1].samples.append((index, rects))
            last_sig = (rects, sigs)
        return runs

    def _bisect(self, lo: int, lo_rects: tuple[Rect, ...], hi: int, hi_rects: tuple[Rect, ...]) -> list[_Run]:
        """Runs that start after frame `lo` (layout `lo_rects`) up to frame `hi` (layout `hi_rects`):
        the first frame that is no longer `lo_rects`, then recursively what follows it."""
        first, first_rects = hi, hi_rects
        while first - lo > 1:
            mid = (lo + first) // 2
            rects = self.tiles_at(mid)
            if rects is not None and same_layout(rects, lo_rects, self.s.same_layout_iou):
                lo = mid
            else:
                first, first_rects = mid, rects or ()
        run = _Run(first, first_rects, [(first, first_rects)] if first != hi else [])
        if first == hi or same_layout(first_rects, hi_rects, self.s.same_layout_iou):
            return [run]
        return [run] + self._bisect(first, first_rects, hi, hi_rects)

    def _check_swap(self, index: int, before: list[np.ndarray], now: list[np.ndarray]) -> None:
        """Note a swap when a tile now looks much more like another tile's last picture than its own."""
        for i, sig in enumerate(now):
            d = [float(np.abs(sig - b).mean()) for b in before]
            other = min((d[j], j) for j in range(len(d)) if j != i) if len(d) > 1 else (math.inf, -1)
            if other[0] < self.s.swap_ratio * d[i]:
                self.swaps.append({"t_s": round(self.video.time(index), 3), "tile": i, "now_like_tile": other[1],
                                   "distance_own": round(d[i], 3), "distance_other": round(other[0], 3)})


def _fold_transients(runs: list[_Run], fps: float, n_frames: int, settings: TileSettings) -> list[_Run]:
    """Fold runs shorter than `max_transient_s` into the following run (the last into the previous),
    then merge neighbours that show the same layout."""
    ends = [r.start_frame for r in runs[1:]] + [n_frames]
    kept: list[_Run] = []
    pending: list[dict] = []
    for k, (run, end) in enumerate(zip(runs, ends, strict=True)):
        short = (end - run.start_frame) / fps < settings.max_transient_s
        if short and len(runs) > 1 and (k + 1 < len(runs) or kept):
            pending.append({"start_s": round(run.start_frame / fps, 3), "end_s": round(end / fps, 3),
                            "tiles": [list(r) for r in run.rects], "samples": len(run.samples)})
            if k + 1 < len(runs):
                runs[k + 1].start_frame = run.start_frame
            continue
        run.transients += pending
        pending = []
        if kept and same_layout(kept[-1].rects, run.rects, settings.same_layout_iou):
            kept[-1].samples += run.samples
            kept[-1].transients += run.transients
        else:
            kept.append(run)
    if pending:
        kept[-1].transients += pending
    return kept


def _median_tiles(run: _Run) -> tuple[tuple[Rect, ...], list[int]]:
    """Per-coordinate median of the run's samples (those matching its tile count), and each tile's
    largest deviation from it in pixels."""
    stacks = np.array([rects for _, rects in run.samples if len(rects) == len(run.rects)], dtype=np.float64)
    if stacks.size == 0:
        return run.rects, [0] * len(run.rects)
    med = np.floor(np.median(stacks, axis=0) + 0.5).astype(int)
    spread = np.abs(stacks - med).max(axis=(0, 2)).astype(int)
    return tuple(tuple(int(v) for v in r) for r in med), [int(v) for v in spread]  # type: ignore[misc]


def _fmt_span(start_s: float, end_s: float) -> str:
    return f"t={start_s:.2f}s..{end_s:.2f}s"


def _refuse_speaker_view(path: Path, tiles: tuple[Rect, ...], swaps: list[dict], where: str,
                         settings: TileSettings) -> None:
    areas = [w * h for _, _, w, h in tiles]
    if len(areas) > 1 and max(areas) > settings.max_tile_area_ratio * min(areas):
        raise LayoutError(path, f"speaker view: one tile is {max(areas) / min(areas):.1f}x the area of another "
                          f"(tiles {[list(t) for t in tiles]}; gallery tiles are equal-sized); "
                          "record in gallery view", where)
    if swaps:
        times = sorted({s["t_s"] for s in swaps})
        listed = ", ".join(f"{t:.2f}s" for t in times[:5]) + (" ..." if len(times) > 5 else "")
        raise LayoutError(path, f"speaker view: tiles swap with the active speaker (at {listed}); "
                          "record in gallery view", where)


def _check_faces(video: _Video, run: _Run, tiles: tuple[Rect, ...], end_frame: int, tracker: Any,
                 settings: TileSettings) -> list[list[int]]:
    """[found, tried] per tile over up to `face_checks` frames spread over the run."""
    span = max(1, end_frame - run.start_frame)
    n = max(1, min(settings.face_checks, span))
    frames = sorted({run.start_frame + int((k + 0.5) * span / n) for k in range(n)})
    counts = [[0, 0] for _ in tiles]
    for index in frames:
        img = video.frame(index)
        if img is None:
            continue
        for (x, y, w, h), c in zip(tiles, counts, strict=True):
            c[1] += 1
            c[0] += tracker.process(np.ascontiguousarray(img[y:y + h, x:x + w])) is not None
    return counts


def _span(video: _Video, run: _Run, end_frame: int, swaps: list[dict], tracker: Any, n_participants: int,
          settings: TileSettings, base_evidence: dict) -> LayoutSpan:
    """One checked span: speaker view refused, faces confirmed, face tiles counted."""
    start_s, end_s = video.time(run.start_frame), video.time(end_frame)
    where = _fmt_span(start_s, end_s)
    tiles, spread = _median_tiles(run)
    if not tiles:
        raise LayoutError(video.path, "no tiles on the background (expected a Zoom gallery view)", where)
    inside = [s for s in swaps if start_s <= s["t_s"] < end_s]
    _refuse_speaker_view(video.path, tiles, inside, where, settings)
    faces = _check_faces(video, run, tiles, end_frame, tracker, settings)
    has_face = [found > 0 and found >= settings.min_face_share * tried for found, tried in faces]
    face_tiles = tuple(t for t, ok in zip(tiles, has_face, strict=True) if ok)
    if len(face_tiles) != n_participants:
        raise LayoutError(video.path, f"{len(face_tiles)} tile(s) with a face, expected {n_participants} "
                          f"(tiles {[list(t) for t in tiles]}, faces found/tried {faces}; someone joined, "
                          "a screen share or a camera off?)", where)
    evidence = dict(base_evidence, samples=len(run.samples), start_frame=run.start_frame,
                    tiles_found=[list(t) for t in tiles], tile_spread_px=spread, faces_found_tried=faces,
                    faceless_tiles=[list(t) for t, ok in zip(tiles, has_face, strict=True) if not ok],
                    transients=run.transients)
    return LayoutSpan(round(start_s, 6), round(end_s, 6), face_tiles, evidence)


def detect_layouts(video: str | Path, n_participants: int = 2, settings: TileSettings = TileSettings(),
                   face_model: str | Path | None = None) -> list[LayoutSpan]:
    """Spans in time order covering the whole video. Raises LayoutError for: speaker (active-speaker)
    view, no / wrong number of tiles with a face, unreadable video."""
    from pipeline.features.head.tracking import FaceMeshTracker

    path = Path(video)
    vid = _Video(path, settings.grab_ahead_s)
    try:
        probe = [f for f in (vid.frame(i) for i in np.linspace(0, vid.n_frames - 1, 9).astype(int))
                 if f is not None]
        if not probe:
            raise LayoutError(path, "no video frame could be decoded (empty or corrupt video)", "t=0.00s")
        bg, ring_share = background_colour(probe, settings.background_tol)
        if ring_share < settings.min_background_ring:
            raise LayoutError(path, f"no gallery background: only {ring_share:.0%} of the frame's edge is one "
                              f"colour (expected a Zoom gallery view, tiles on a plain background; "
                              "a full-frame speaker view or a camera video has none)", "t=0.00s")
        scan = _Scan(vid, bg, settings)
        runs = _fold_transients(scan.runs(), vid.fps, vid.n_frames, settings)
        base = {"background_bgr": list(bg), "background_ring_share": round(ring_share, 4), "fps": vid.fps,
                "settings": asdict(settings)}
        ends = [r.start_frame for r in runs[1:]] + [vid.n_frames]
        with FaceMeshTracker(static_image_mode=True, task_model=face_model) as tracker:
            spans = [_span(vid, run, end, scan.swaps, tracker, n_participants, settings, base)
                     for run, end in zip(runs, ends, strict=True)]
        log.info("%s: %d layout span(s), %d frames stepped, %d seeks", path.name, len(spans), vid.stepped, vid.seeks)
        for s in spans:
            s.evidence.update(frames_stepped=vid.stepped, seeks=vid.seeks, swaps_seen=len(scan.swaps))
        return spans
    finally:
        vid.close()
