"""Where each participant's tile is in a Zoom gallery-view video, and when the layout changes.

Zoom's gallery view draws equal-sized tiles on a flat dark background (README "From a Zoom
recording"); where they are depends on the window size and the participant count, so it is measured:

1. **Sampled frames**, about `sample_every_s` apart (at least `min_samples`, at most `max_samples`),
   decoded in one forward pass (`pipeline.ingest.sampled_video`: decode forward or seek, whichever is measured cheaper).
2. **Background colour** per video: the most common colour of the outer ring of the first samples,
   never a built-in value (themes and encoders differ). A ring that is not mostly one colour means
   there is no gallery background (a camera video, a full-frame speaker view): refused.
3. **Tiles of a frame** = connected regions that differ from the background by more than
   `background_tol`, whose box covers `min_tile_area_frac` of the frame. Only a region's outer
   extent counts, so holes (dark hair, a name label's box inside the tile) neither split nor shrink it.
4. **Layouts over time.** Neighbouring samples with the same tiles (IoU >= `same_layout_iou` each)
   share a layout. Between two that differ, frames are bisected down to the first frame of the new
   layout: a change time is exact to the frame (error < one frame period), not to the sample step.
   A layout shorter than `max_transient_s` (a redraw, a black frame) is folded into the next span
   and listed in its evidence: brief redraws are common and harmless, and stay visible. A layout
   lasting less than a sample step between two samples of one layout is not seen.
5. **Refusals** (LayoutError with the file and times): the active-speaker view, by tiles of very
   different sizes (gallery tiles are equal; `max_tile_area_ratio`) or by tiles whose pictures swap
   (a tile now looks like another tile's last sample, `swap_ratio`); a span whose number of tiles
   with a face is not `n_participants` (someone joined, a screen share); no tile at all.
6. **Faces.** FaceMesh (static mode, on the crop) checks each tile on a run's samples 1, 2, 4, 8, ...
   (at most `face_checks`): a handful of calls however long the span. A tile needs a face in
   `min_face_share` of them; faceless tiles (an observer with the camera off) are left out and named.

A span's tile is the per-coordinate median over its samples: robust to a sample where content at the
tile's edge matches the background, or where the active-speaker highlight widens the tile.

Limits (checked on generated and composited recordings only): tiles must be at least 2 px apart
(compression smears colour 1-2 px past a tile's edge; a 1 px gap joined two tiles into one);
content that matches the background along a whole tile edge in every sample (a dark room) shrinks
the tile; the background comes from the first 9 samples; times assume a fixed frame rate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.common.errors import MediaError
from pipeline.common.logs import progress
from pipeline.ingest.sampled_video import SampledVideo, sample_frames

log = logging.getLogger(__name__)

Rect = tuple[int, int, int, int]  # x, y, w, h in pixels of the full frame
BACKGROUND_SAMPLES = 9  # first sampled frames whose outer rings give the background colour
UNEQUAL_TILES_PX = 4  # face tiles differing more in width or height are logged (Zoom's are equal)


class LayoutError(MediaError):
    kind = "layout"


@dataclass(frozen=True)
class TileSettings:
    """Sampling and thresholds. The defaults sample an hour every 10 s (361 frames): measured 37 s per
    hour of 640x360 video on a loaded 2-core machine, 0.29x a full decode of the same file."""

    sample_every_s: float = 10.0  # sampled frames, not every frame
    min_samples: int = 12  # a short video is sampled more densely
    max_samples: int = 400  # a very long video is sampled more sparsely
    grab_ahead_s: float = 3.0  # always decode forward up to this far; beyond, whichever is measured cheaper
    seek: str = "auto"  # one of SEEK_POLICIES: "auto" (measured), "always" or "never" (decode forward only)
    background_tol: int = 12  # max |channel - background| (0-255) still counted as background
    min_background_ring: float = 0.5  # share of the frame's outer ring that must be background
    min_tile_area_frac: float = 0.01  # a tile's box covers at least this share of the frame
    min_tile_fill: float = 0.5  # share of a tile's box that differs from the background
    same_layout_iou: float = 0.85  # two samples share a layout when every tile matches this well
    max_tile_area_ratio: float = 1.5  # gallery tiles are equal; above this: active-speaker view
    swap_ratio: float = 0.5  # a tile "swapped" when it resembles another tile's last picture this much closer
    max_transient_s: float = 2.0  # shorter layouts are folded into the next span (kept in evidence)
    face_checks: int = 8  # most frames per span on which every tile is checked for a face
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
    faces: list[list[int]] = field(default_factory=list)  # per tile: [frames with a face, frames checked]
    borders: list[list[float]] = field(default_factory=list)  # per checked tile: border contrast (inside, outside)
    transients: list[dict] = field(default_factory=list)


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


def _border_contrast(diff: np.ndarray, rect: Rect, width: int = 2) -> list[float]:
    """Mean difference from the background on the tile's inner and outer `width`-pixel borders: a
    clear tile has a high inside and an outside near the encoder's noise."""
    x, y, w, h = rect
    inner = np.ones((h, w), bool)
    inner[width:-width, width:-width] = False
    y0, x0 = max(0, y - width), max(0, x - width)
    outer = np.ones((min(diff.shape[0], y + h + width) - y0, min(diff.shape[1], x + w + width) - x0), bool)
    outer[y - y0:y - y0 + h, x - x0:x - x0 + w] = False
    return [round(float(diff[y:y + h, x:x + w][inner].mean()), 2),
            round(float(diff[y0:y0 + outer.shape[0], x0:x0 + outer.shape[1]][outer].mean()), 2) if outer.any() else 0.0]


class _Scan:
    """The sampled pass, the bisection of changes and the face checks, over one open video."""

    def __init__(self, video: SampledVideo, settings: TileSettings, tracker: Any):
        self.video, self.s, self.tracker = video, settings, tracker
        self.bg, self.ring_share = (0, 0, 0), 0.0
        self.swaps: list[dict] = []

    def _sampled(self) -> Iterator[tuple[int, np.ndarray]]:
        for index in progress(sample_frames(self.video.n_frames, self.video.fps, self.s.sample_every_s,
                                            self.s.min_samples, self.s.max_samples), desc="tiles",
                              unit="frame", leave=False):
            img = self.video.frame(index)
            if img is None:  # a truncated end: the container declared more frames than it holds
                return
            yield index, img

    def _background(self, first: list[tuple[int, np.ndarray]]) -> None:
        """The background from the first samples' outer rings (frames the pass decodes anyway)."""
        if not first:
            raise LayoutError(self.video.path, "no video frame could be decoded (empty or corrupt video)", "t=0.00s")
        self.bg, self.ring_share = background_colour([img for _, img in first], self.s.background_tol)
        if self.ring_share < self.s.min_background_ring:
            where = _fmt_span(0.0, self.video.time(first[-1][0]))
            raise LayoutError(self.video.path, f"no gallery background: only {self.ring_share:.0%} of the frame's "
                              "edge is one colour (expected a Zoom gallery view, tiles on a plain background; "
                              "a full-frame speaker view or a camera video has none)", where)

    def runs(self) -> list[_Run]:
        sampled = self._sampled()
        first = list(islice(sampled, BACKGROUND_SAMPLES))
        self._background(first)
        runs: list[_Run] = []
        last_sigs: list[np.ndarray] | None = None
        for index, img in chain(first, sampled):
            rects = find_tiles(img, self.bg, self.s)
            sigs = [_signature(img, r) for r in rects]
            if not runs:
                runs.append(_Run(0, rects))
            elif not same_layout(runs[-1].rects, rects, self.s.same_layout_iou):
                runs += self._bisect(runs[-1].samples[-1][0], runs[-1].rects, index, rects)
            elif last_sigs is not None:
                self._check_swap(index, last_sigs, sigs)
            self._add_sample(runs[-1], index, img, rects)
            last_sigs = sigs
        return runs

    def _add_sample(self, run: _Run, index: int, img: np.ndarray, rects: tuple[Rect, ...]) -> None:
        """Record a sample; check its tiles for faces on the run's samples 1, 2, 4, 8, ... (spread
        over the run whatever its length, a few FaceMesh calls per run)."""
        k = len(run.samples)
        run.samples.append((index, rects))
        if not run.faces:
            run.faces = [[0, 0] for _ in run.rects]
        if len(rects) != len(run.rects) or (k + 1) & k or run.faces and run.faces[0][1] >= self.s.face_checks:
            return
        diff = cv2.absdiff(img, np.full_like(img, self.bg)).max(axis=2)
        for (x, y, w, h), count in zip(rects, run.faces, strict=True):
            count[1] += 1
            count[0] += self.tracker.process(np.ascontiguousarray(img[y:y + h, x:x + w])) is not None
            run.borders.append(_border_contrast(diff, (x, y, w, h)))

    def _bisect(self, lo: int, lo_rects: tuple[Rect, ...], hi: int, hi_rects: tuple[Rect, ...]) -> list[_Run]:
        """Runs that start after frame `lo` (layout `lo_rects`) up to frame `hi` (layout `hi_rects`):
        the first frame that is no longer `lo_rects`, then recursively what follows it."""
        first, first_rects, first_img = hi, hi_rects, None
        while first - lo > 1:
            mid = (lo + first) // 2
            img = self.video.frame(mid)
            rects = () if img is None else find_tiles(img, self.bg, self.s)
            if img is not None and same_layout(rects, lo_rects, self.s.same_layout_iou):
                lo = mid
            else:
                first, first_rects, first_img = mid, rects, img
        run = _Run(first, first_rects)
        if first_img is not None:
            self._add_sample(run, first, first_img, first_rects)
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
            kept[-1].faces = [[a[0] + b[0], a[1] + b[1]] for a, b in zip(kept[-1].faces, run.faces, strict=True)]
            kept[-1].borders += run.borders
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


def _mean_borders(borders: list[list[float]], n_tiles: int) -> list[list[float]]:
    """Per tile (borders are recorded tile after tile, sample after sample): mean (inside, outside)."""
    per_tile = [borders[i::n_tiles] for i in range(n_tiles)] if n_tiles and len(borders) % n_tiles == 0 else []
    return [[round(float(np.mean([b[k] for b in bs])), 2) for k in (0, 1)] for bs in per_tile if bs]


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
        raise LayoutError(path, f"speaker view: tiles swap with the active speaker (at {listed}; equal-sized "
                          "tiles that swap may also be a reordered gallery); record in gallery view", where)


def _span(video: SampledVideo, run: _Run, end_frame: int, swaps: list[dict], n_participants: int,
          settings: TileSettings, base_evidence: dict) -> LayoutSpan:
    """One checked span: speaker view refused, face tiles counted."""
    start_s, end_s = video.time(run.start_frame), video.time(end_frame)
    where = _fmt_span(start_s, end_s)
    tiles, spread = _median_tiles(run)
    if not tiles:
        raise LayoutError(video.path, "no tiles on the background (expected a Zoom gallery view)", where)
    inside = [s for s in swaps if start_s <= s["t_s"] < end_s]
    _refuse_speaker_view(video.path, tiles, inside, where, settings)
    faces = run.faces or [[0, 0] for _ in tiles]
    has_face = [found > 0 and found >= settings.min_face_share * tried for found, tried in faces]
    face_tiles = tuple(t for t, ok in zip(tiles, has_face, strict=True) if ok)
    if len(face_tiles) != n_participants:
        raise LayoutError(video.path, f"{len(face_tiles)} tile(s) with a face, expected {n_participants} "
                          f"(tiles {[list(t) for t in tiles]}, faces found/checked {faces}; someone joined, "
                          "a screen share or a camera off?)", where)
    sizes = np.array([(w, h) for _, _, w, h in face_tiles])
    size_spread = [int(v) for v in sizes.max(axis=0) - sizes.min(axis=0)]
    if max(size_spread) > UNEQUAL_TILES_PX:  # gallery tiles are equal: an edge matched the background?
        log.warning("%s (%s): face tiles differ in size by %s px (w, h); check the crops", video.path, where,
                    size_spread)
    evidence = dict(base_evidence, samples=len(run.samples), start_frame=run.start_frame,
                    tiles_found=[list(t) for t in tiles], tile_spread_px=spread,
                    tile_size_spread_wh_px=size_spread, faces_found_checked=faces,
                    faceless_tiles=[list(t) for t, ok in zip(tiles, has_face, strict=True) if not ok],
                    border_contrast_in_out=_mean_borders(run.borders, len(tiles)), transients=run.transients)
    return LayoutSpan(round(start_s, 6), round(end_s, 6), face_tiles, evidence)


def detect_layouts(video: str | Path, n_participants: int = 2, settings: TileSettings = TileSettings(),
                   face_model: str | Path | None = None) -> list[LayoutSpan]:
    """Spans in time order covering the whole video. Raises LayoutError for: speaker (active-speaker)
    view, no / wrong number of tiles with a face, unreadable video."""
    from pipeline.features.head.tracking import FaceMeshTracker

    if n_participants < 1:
        raise ValueError(f"n_participants must be at least 1, not {n_participants}")
    path = Path(video)
    try:
        vid = SampledVideo(path, settings.seek, settings.grab_ahead_s)
    except MediaError as err:
        raise LayoutError(path, err.message, err.where) from err
    try:
        with FaceMeshTracker(static_image_mode=True, task_model=face_model) as tracker:
            scan = _Scan(vid, settings, tracker)
            runs = _fold_transients(scan.runs(), vid.fps, vid.n_frames, settings)
        base = {"background_bgr": list(scan.bg), "background_ring_share": round(scan.ring_share, 4),
                "fps": vid.fps, "settings": asdict(settings)}
        ends = [r.start_frame for r in runs[1:]] + [vid.n_frames]
        spans = [_span(vid, run, end, scan.swaps, n_participants, settings, base)
                 for run, end in zip(runs, ends, strict=True)]
        log.info("%s: %d layout span(s); %d frames decoded forward, %d seeks", path.name, len(spans),
                 vid.stepped, vid.seeks)
        return spans
    finally:
        vid.close()
