"""Video of the sample participants: a 2.5-D warp of a face photo per head pose, tiled solo or as a
gallery.

Head motion is rendered as a 2.5-D warp: FaceMesh runs once on the photo, its landmark depths plus
an ellipsoidal head bulk give a depth map, and every frame the head surface is rotated by (pitch,
yaw), projected orthographically, rolled / scaled / translated in the image plane and blended into
the static background with a soft head mask. The forward displacement field is inverted by
fixed-point iteration on a coarse grid and applied with one `cv2.remap`.

Mouth opening (`render(..., mouth_open=0..1)`): before the head rotation, the lower lip, jaw and chin
(located by the photo's FaceMesh lip landmarks) move down by up to `MOUTH_DROP` of the face height
with a smooth local weight, so the gap between the inner lips stretches open; that gap is then
darkened like a mouth's inside. `mouth_open=0` takes exactly the pose-only path (same bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from pipeline.features.head.tracking import FaceMeshTracker
from pipeline.sample.faces import (
    FACE_OVAL,
    ParticipantLook,
    face_landmarks_px,
    photo_bgr,
    photo_landmarks,
    relative_rotation_deg,
)

GALLERY_BORDER = 8
GALLERY_BG = (24, 24, 24)  # BGR, Zoom-like dark gallery background
MOUTH_DROP = 0.12  # jaw drop at mouth_open=1, in forehead-to-chin heights (a ~2 cm opening)
MOUTH_DARK = (40, 30, 70)  # BGR of the mouth's inside
MOUTH_DARK_ALPHA = 0.85  # how much of the opening is covered by it
# FaceMesh lip landmarks: inner upper / lower lip (middle), inner mouth corners, chin
LIP_UPPER, LIP_LOWER, MOUTH_LEFT, MOUTH_RIGHT, CHIN = 13, 14, 78, 308, 152


class HeadRenderer:
    """Renders one participant's tile (H x W, BGR) for a given head pose.

    Pose: pitch, yaw, roll in degrees; dx, dy translation in tile fractions; scale factor.
    """

    def __init__(self, look: ParticipantLook, width: int, height: int, grid_step: int = 4,
                 calibrate: bool = True):
        self.look, self.w, self.h, self.f = look, int(width), int(height), int(grid_step)
        pts = self._place_photo(look)
        oval_t = pts[list(FACE_OVAL)]
        fw = float(oval_t[:, 0].max() - oval_t[:, 0].min())
        fh = float(oval_t[:, 1].max() - oval_t[:, 1].min())
        cx = float(0.5 * (oval_t[:, 0].min() + oval_t[:, 0].max()))
        cy = float(0.5 * (oval_t[:, 1].min() + oval_t[:, 1].max()))
        self.face_w, self.face_h = fw, fh
        X, Y = self._make_grid()
        self.depth = self._depth_map(pts, X, Y, fw, fh, cx, cy)
        # pivot: behind the face, a little below its centre (nods rotate about the upper neck)
        self.pivot = np.array([cx, cy + 0.18 * fh, -0.45 * fw], np.float32)
        # head mask: 1 over the head (face + hair), smooth fall-off to the static background
        hr2 = ((X - cx) / (0.95 * fw)) ** 2 + ((Y - cy + 0.05 * fh) / (0.95 * fh)) ** 2
        r = np.sqrt(hr2)
        t = np.clip((r - 1.0) / 0.9, 0.0, 1.0)
        self.mask = (1.0 - t * t * (3.0 - 2.0 * t)).astype(np.float32)
        self.lips = pts[[LIP_UPPER, LIP_LOWER, MOUTH_LEFT, MOUTH_RIGHT], :2].astype(np.float64)
        self.jaw = _jaw_weight(pts, X, Y, fh) * np.float32(MOUTH_DROP * fh)  # drop in px at mouth_open=1
        # A 2.5-D pitch of a photo reads larger to FaceMesh than the same yaw (measured: x1.2-1.8,
        # asymmetric up/down; yaw and roll read ~x1). Calibrate the pitch gain per look so that a
        # landmark Procrustes fit on the rendered frames reports the ground-truth pitch.
        self.pitch_gain = (1.0, 1.0)  # render() reads it while calibrating
        if calibrate:
            self.pitch_gain = _pitch_gain(self)

    def _place_photo(self, look: ParticipantLook) -> np.ndarray:
        """Tint / mirror the photo and place its face in the tile; returns the landmarks in tile
        pixels (z toward the camera) and keeps the tile -> photo mapping for `maps`."""
        photo = photo_bgr(look.photo).astype(np.float32)
        lm = photo_landmarks(look.photo).copy()
        pw = photo.shape[1]
        if look.mirror:
            photo = photo[:, ::-1]
            lm[:, 0] = (pw - 1) - lm[:, 0]
        photo = photo * np.asarray(look.tint, np.float32)[None, None, :]
        self.photo = np.clip(photo, 0, 255).astype(np.uint8)

        face_h = float(np.linalg.norm(lm[152, :2] - lm[10, :2]))
        s = look.face_frac * self.h / face_h
        oval = lm[list(FACE_OVAL)]
        fc = 0.5 * (oval[:, :2].min(0) + oval[:, :2].max(0))
        tx = look.center[0] * self.w - s * fc[0]
        ty = look.center[1] * self.h - s * fc[1]
        # base (tile) coordinates -> photo coordinates
        self._inv_a = np.array([1.0 / s, -tx / s, 1.0 / s, -ty / s])  # px = a0*x + a1, py = a2*y + a3

        pts = np.empty_like(lm)
        pts[:, 0] = s * lm[:, 0] + tx
        pts[:, 1] = s * lm[:, 1] + ty
        pts[:, 2] = -s * lm[:, 2]  # toward camera positive
        return pts

    def _make_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Coarse grid (pixel centres consistent with cv2.resize INTER_LINEAR); float64 X, Y."""
        gw, gh = -(-self.w // self.f), -(-self.h // self.f)
        self.sx_step, self.sy_step = self.w / gw, self.h / gh
        gx = (np.arange(gw) + 0.5) * self.sx_step - 0.5
        gy = (np.arange(gh) + 0.5) * self.sy_step - 0.5
        X, Y = np.meshgrid(gx, gy)
        self.X, self.Y = X.astype(np.float32), Y.astype(np.float32)
        return X, Y

    def _depth_map(self, pts: np.ndarray, X: np.ndarray, Y: np.ndarray, fw: float, fh: float, cx: float,
                   cy: float) -> np.ndarray:
        """Depth on the grid: ellipsoidal bulk + landmark relief inside the face hull, lightly blurred."""
        from scipy.interpolate import griddata

        rx, ry = 0.62 * fw, 0.72 * fh
        r2 = ((X - cx) / rx) ** 2 + ((Y - cy - 0.05 * fh) / ry) ** 2
        bulk = 0.45 * fw * np.sqrt(np.clip(1.0 - r2, 0.0, None))
        edge = float(np.median(pts[list(FACE_OVAL)][:, 2]))
        relief = griddata(pts[:, :2], np.clip(pts[:, 2] - edge, 0.0, None), (X, Y), method="linear",
                          fill_value=0.0)
        depth = bulk + np.nan_to_num(relief)
        sig = max(0.5, 0.02 * fw / self.f)
        depth = cv2.GaussianBlur(depth.astype(np.float32), (0, 0), sig)
        return depth.astype(np.float32)

    def _forward(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, pose: tuple[float, ...],
                 scale: float, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
        """Where base-tile points (X, Y) with depth Z land once the head is posed (before masking)."""
        pitch, yaw, roll = pose
        pitch = pitch * (self.pitch_gain[0] if pitch >= 0 else self.pitch_gain[1])
        p, q, r = (math.radians(v) for v in (pitch, yaw, roll))
        cp, sp, cq, sq, cr, sr = math.cos(p), math.sin(p), math.cos(q), math.sin(q), math.cos(r), math.sin(r)
        px, py, pz = (float(v) for v in self.pivot)
        x0, y0, z0 = X - px, Y - py, Z - pz
        # pitch about the x axis (nose down for pitch > 0 with y pointing down, z toward camera)
        y1 = y0 * cp + z0 * sp
        z1 = -y0 * sp + z0 * cp
        # yaw about the y axis (nose toward +x for yaw > 0)
        x2 = x0 * cq + z1 * sq
        y2 = y1
        # roll in the image plane, counter-clockwise as displayed (y down)
        x3 = x2 * cr + y2 * sr
        y3 = -x2 * sr + y2 * cr
        return px + scale * x3 + dx * self.w, py + scale * y3 + dy * self.h

    def maps(self, pitch: float, yaw: float, roll: float, dx: float = 0.0, dy: float = 0.0,
             scale: float = 1.0, iters: int = 5, mouth_open: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution (map_x, map_y) into the tinted photo for cv2.remap."""
        X, Y = self.X, self.Y
        Yj = Y + np.float32(mouth_open) * self.jaw if mouth_open else Y  # jaw drop, before the head turns
        fx, fy = self._forward(X, Yj, self.depth, (pitch, yaw, roll), scale, dx, dy)
        dxf = (fx - X) * self.mask
        dyf = (fy - Y) * self.mask
        disp = np.dstack([dxf, dyf]).astype(np.float32)
        # invert q = p + D(p) by fixed-point iteration: p <- q - D(p)
        sx, sy = self.X, self.Y
        for _ in range(iters):
            mx = (sx + 0.5) / self.sx_step - 0.5
            my = (sy + 0.5) / self.sy_step - 0.5
            d = cv2.remap(disp, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            sx = self.X - d[:, :, 0]
            sy = self.Y - d[:, :, 1]
        a0, a1, a2, a3 = self._inv_a
        mapx = cv2.resize((a0 * sx + a1).astype(np.float32), (self.w, self.h), interpolation=cv2.INTER_LINEAR)
        mapy = cv2.resize((a2 * sy + a3).astype(np.float32), (self.w, self.h), interpolation=cv2.INTER_LINEAR)
        return mapx, mapy

    def render(self, pitch: float, yaw: float, roll: float, dx: float = 0.0, dy: float = 0.0,
               scale: float = 1.0, out: np.ndarray | None = None, mouth_open: float = 0.0) -> np.ndarray:
        """The tile for one pose (written into `out` when given); `mouth_open` in [0, 1] opens the
        mouth (0: closed as in the photo, the pose-only output byte for byte)."""
        if not 0.0 <= mouth_open <= 1.0:
            raise ValueError(f"mouth_open must be in [0, 1], not {mouth_open!r}")
        mapx, mapy = self.maps(pitch, yaw, roll, dx, dy, scale, mouth_open=mouth_open)
        img = cv2.remap(self.photo, mapx, mapy, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_REFLECT101)
        if mouth_open:
            self._darken_mouth(img, (pitch, yaw, roll), scale, dx, dy, mouth_open)
        return img

    def _darken_mouth(self, img: np.ndarray, pose: tuple[float, float, float], scale: float, dx: float,
                      dy: float, mouth_open: float) -> None:
        """Shade the new gap between the lips toward MOUTH_DARK, in place: an ellipse as wide as the
        posed inner mouth corners, as tall as the jaw drop, centred where the lip line went; fainter
        where the photo's lips were already apart (teeth show through)."""
        lips = self.lips.copy()
        lips[:, 1] += mouth_open * np.array([_sample(self.jaw, self, pt) for pt in self.lips])
        z = np.array([_sample(self.depth, self, pt) for pt in lips])
        fx, fy = self._forward(lips[:, 0], lips[:, 1], z, pose, scale, dx, dy)
        upper, lower, left, right = np.stack([fx, fy], axis=1)
        centre = 0.5 * (upper + lower)
        along = right - left
        half_w = 0.5 * float(np.linalg.norm(along))
        drop = mouth_open * MOUTH_DROP * self.face_h * scale
        half_h = 0.5 * drop
        if half_w < 1.0 or half_h < 0.25:
            return
        u = along / (2.0 * half_w)
        x0, x1 = (int(np.clip(v, 0, self.w)) for v in (centre[0] - half_w - 2, centre[0] + half_w + 3))
        y0, y1 = (int(np.clip(v, 0, self.h)) for v in (centre[1] - half_w - 2, centre[1] + half_w + 3))
        if x1 <= x0 or y1 <= y0:
            return
        gx, gy = np.meshgrid(np.arange(x0, x1) - centre[0], np.arange(y0, y1) - centre[1])
        e = ((gx * u[0] + gy * u[1]) / half_w) ** 2 + ((-gx * u[1] + gy * u[0]) / half_h) ** 2
        gap = abs(float(self.lips[1, 1] - self.lips[0, 1])) * scale
        strength = MOUTH_DARK_ALPHA * drop / (drop + gap)
        alpha = (strength * np.clip((1.0 - e) / 0.4, 0.0, 1.0))[:, :, None]
        patch = img[y0:y1, x0:x1].astype(np.float32)
        img[y0:y1, x0:x1] = np.round(patch * (1.0 - alpha) + np.float32(MOUTH_DARK) * alpha).astype(np.uint8)


def _jaw_weight(pts: np.ndarray, X: np.ndarray, Y: np.ndarray, face_h: float) -> np.ndarray:
    """How much of the jaw drop each base-grid point takes: 0 above the upper lip, rising to 1 across
    the lip line, 1 down the chin, fading out below it and sideways beyond the mouth. The rise spans
    at least 0.16 face heights (drop 0.12) so the drop's gradient stays under 1 and the renderer's fixed-point
    inversion of the warp converges."""
    def smooth(v: np.ndarray) -> np.ndarray:
        v = np.clip(v, 0.0, 1.0)
        return v * v * (3.0 - 2.0 * v)

    y_up, y_low, y_chin = pts[LIP_UPPER, 1], pts[LIP_LOWER, 1], pts[CHIN, 1]
    mid_x = 0.5 * (pts[MOUTH_LEFT, 0] + pts[MOUTH_RIGHT, 0])
    half_w = 0.5 * abs(pts[MOUTH_RIGHT, 0] - pts[MOUTH_LEFT, 0])
    half_rise = 0.08 * face_h
    down = smooth((Y - (y_up - half_rise)) / (y_low - y_up + 2 * half_rise)) * (1.0 - smooth((Y - y_chin) / (0.3 * face_h)))
    side = 1.0 - smooth((np.abs(X - mid_x) - 1.3 * half_w) / (1.5 * half_w))
    return (down * side).astype(np.float32)


def _sample(grid: np.ndarray, r: HeadRenderer, pt: np.ndarray) -> float:
    """Bilinear value of a coarse-grid field at a base-tile point."""
    gx = float(np.clip((pt[0] + 0.5) / r.sx_step - 0.5, 0, grid.shape[1] - 1))
    gy = float(np.clip((pt[1] + 0.5) / r.sy_step - 0.5, 0, grid.shape[0] - 1))
    i0, j0 = min(int(gy), grid.shape[0] - 2), min(int(gx), grid.shape[1] - 2)
    fy, fx = gy - i0, gx - j0
    top = grid[i0, j0] * (1 - fx) + grid[i0, j0 + 1] * fx
    bottom = grid[i0 + 1, j0] * (1 - fx) + grid[i0 + 1, j0 + 1] * fx
    return float(top * (1 - fy) + bottom * fy)


_CALIBRATION: dict[tuple[Any, ...], tuple[float, float]] = {}


def _pitch_gain(r: HeadRenderer, probe_deg: float = 10.0) -> tuple[float, float]:
    """(nose-down, nose-up) pitch gains that make FaceMesh read a `probe_deg` render as `probe_deg`;
    cached per look and tile geometry (FaceMesh on two renders costs ~0.1 s)."""
    key = (r.look.photo, r.look.mirror, r.look.face_frac, r.look.center, r.look.tint, r.w, r.h, r.f)
    if key in _CALIBRATION:
        return _CALIBRATION[key]
    gains = [1.0, 1.0]
    with FaceMeshTracker(static_image_mode=True) as fm:
        ref = face_landmarks_px(r.render(0.0, 0.0, 0.0), fm)
        for i, sgn in enumerate((1.0, -1.0)):
            cur = face_landmarks_px(r.render(sgn * probe_deg, 0.0, 0.0), fm)
            if ref is None or cur is None:
                continue
            measured = sgn * relative_rotation_deg(ref, cur)[0]
            if measured > 0:
                gains[i] = float(np.clip(probe_deg / measured, 0.4, 1.5))
    _CALIBRATION[key] = (gains[0], gains[1])
    return _CALIBRATION[key]


def gallery_rects(width: int, height: int, n: int = 2,
                  border: int = GALLERY_BORDER) -> list[tuple[int, int, int, int]]:
    """Side-by-side tiles (x, y, w, h) in a gallery frame with dark borders; widths multiples of 4."""
    tw = ((width - (n + 1) * border) // n) // 4 * 4
    th = (height - 2 * border) // 4 * 4
    x0 = (width - n * tw - (n - 1) * border) // 2
    y0 = (height - th) // 2
    return [(x0 + i * (tw + border), y0, tw, th) for i in range(n)]


def solo_frames(renderer: HeadRenderer, motion: np.ndarray) -> Iterator[np.ndarray]:
    """One tile per motion row (MOTION_COLUMNS); the same buffer is reused for every frame."""
    buf = np.empty((renderer.h, renderer.w, 3), np.uint8)
    for row in motion:
        _, pitch, yaw, roll, dx, dy, sc = row
        yield renderer.render(pitch, yaw, roll, dx, dy, sc, out=buf)


def gallery_frames(renderers: list[HeadRenderer], motions: list[np.ndarray],
                   rects: list[tuple[int, int, int, int]], width: int, height: int) -> Iterator[np.ndarray]:
    """Gallery frames: every participant's tile at its rect on a dark canvas (reused per frame)."""
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = GALLERY_BG
    for i in range(motions[0].shape[0]):
        for r, m, (x, y, w, h) in zip(renderers, motions, rects, strict=True):
            _, pitch, yaw, roll, dx, dy, sc = m[i]
            canvas[y:y + h, x:x + w] = r.render(pitch, yaw, roll, dx, dy, sc)
        yield canvas
