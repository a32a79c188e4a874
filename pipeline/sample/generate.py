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

Faces: six participants are made from TWO photos (skimage's astronaut = NASA public-domain portrait
of Eileen Collins; matplotlib's Grace Hopper sample photo) by photo choice, mirroring, scale,
position and colour tint. Head motion is rendered as a 2.5-D warp: FaceMesh runs once on the photo,
its landmark depths plus an ellipsoidal head bulk give a depth map, and every frame the head surface
is rotated by (pitch, yaw), projected orthographically, rolled / scaled / translated in the image
plane and blended into the static background with a soft head mask. The forward displacement field
is inverted by fixed-point iteration on a coarse grid and applied with one `cv2.remap`.

Angle conventions of the ground truth (degrees, relative to the photo's own pose):
pitch > 0 = nose down, yaw > 0 = nose towards image right (+x), roll > 0 = counter-clockwise in the
displayed image. x, y = head pivot position in tile coordinates (fractions of tile width / height),
scale = image-plane scale factor (1 = photo size).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import time
import uuid
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import signal

from pipeline.common.fsutil import atomic_path, write_json_atomic, write_text_atomic
from pipeline.features.head.pose import FaceMeshTracker
from pipeline.media.audio import ffmpeg_exe

GENERATOR_VERSION = 3  # bump whenever generated content changes (idempotence markers compare it)

MOTION_COLUMNS: tuple[str, ...] = ("time", "pitch", "yaw", "roll", "x", "y", "scale")

_FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234,
              251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)


# --------------------------------------------------------------------------------------------------
# ffmpeg helpers
# --------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def ffmpeg_encoders() -> frozenset[str]:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


def video_codec_args() -> list[str]:
    """Deterministic H.264 (libx264, one thread, fixed parameters); MPEG-4 part 2 as a fallback."""
    if "libx264" in ffmpeg_encoders():
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                "-threads", "1", "-x264-params", "threads=1:lookahead-threads=1:sliced-threads=0",
                "-g", "50"]
    return ["-c:v", "mpeg4", "-q:v", "4", "-pix_fmt", "yuv420p", "-threads", "1"]


_BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
             "-map_metadata", "-1", "-map_chapters", "-1"]


# --------------------------------------------------------------------------------------------------
# Looks: six participants from two photos
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParticipantLook:
    """How a participant looks and sounds. `photo` is "astronaut" (skimage) or "grace_hopper"
    (matplotlib); `face_frac` = forehead-to-chin height as a fraction of the tile height; `center`
    = face centre in tile fractions; `tint` = BGR gains; `f0_hz` = mean voice pitch."""

    participant_id: str
    photo: str = "astronaut"
    mirror: bool = False
    face_frac: float = 0.42
    center: tuple[float, float] = (0.5, 0.45)
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    f0_hz: float = 180.0


DEFAULT_LOOKS: dict[str, ParticipantLook] = {
    "P01": ParticipantLook("P01", "astronaut", False, 0.42, (0.50, 0.45), (1.00, 1.00, 1.00), 205.0),
    "P02": ParticipantLook("P02", "grace_hopper", False, 0.50, (0.50, 0.47), (1.00, 1.00, 1.00), 175.0),
    "P03": ParticipantLook("P03", "astronaut", True, 0.48, (0.46, 0.47), (0.80, 0.95, 1.15), 120.0),
    "P04": ParticipantLook("P04", "grace_hopper", True, 0.54, (0.54, 0.45), (1.15, 1.00, 0.85), 150.0),
    "P05": ParticipantLook("P05", "astronaut", False, 0.38, (0.55, 0.44), (0.90, 1.12, 0.90), 225.0),
    "P06": ParticipantLook("P06", "grace_hopper", True, 0.46, (0.47, 0.48), (0.78, 0.92, 1.08), 112.0),
}


def default_look(participant_id: str) -> ParticipantLook:
    """The built-in look for P01..P06; other ids get a look derived from a hash of the id."""
    if participant_id in DEFAULT_LOOKS:
        return DEFAULT_LOOKS[participant_id]
    h = zlib.crc32(participant_id.encode())
    base = list(DEFAULT_LOOKS.values())[h % len(DEFAULT_LOOKS)]
    gains = tuple(round(0.85 + 0.3 * ((h >> (8 * i)) & 0xFF) / 255.0, 3) for i in range(3))
    return ParticipantLook(participant_id, base.photo, bool((h >> 3) & 1), base.face_frac, base.center,
                           gains, 110.0 + float((h >> 5) % 120))


@lru_cache(maxsize=4)
def _photo(name: str) -> np.ndarray:
    """BGR uint8 photo."""
    if name == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    if name == "grace_hopper":
        import matplotlib.cbook as cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            buf = np.frombuffer(f.read(), np.uint8)
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    raise ValueError(f"unknown photo {name!r} (astronaut | grace_hopper)")


@lru_cache(maxsize=4)
def _photo_landmarks(name: str) -> np.ndarray:
    """FaceMesh (static image mode) landmarks of a photo: (468, 3) in pixels; z in width units x width."""
    lm = face_landmarks_px(_photo(name))
    if lm is None:
        raise RuntimeError(f"FaceMesh found no face in the {name} photo")
    return lm


# --------------------------------------------------------------------------------------------------
# 2.5-D head renderer
# --------------------------------------------------------------------------------------------------

class HeadRenderer:
    """Renders one participant's tile (H x W, BGR) for a given head pose.

    Pose: pitch, yaw, roll in degrees; dx, dy translation in tile fractions; scale factor.
    """

    def __init__(self, look: ParticipantLook, width: int, height: int, grid_step: int = 4,
                 calibrate: bool = True):
        self.look, self.w, self.h, self.f = look, int(width), int(height), int(grid_step)
        photo = _photo(look.photo).astype(np.float32)
        lm = _photo_landmarks(look.photo).copy()
        ph, pw = photo.shape[:2]
        if look.mirror:
            photo = photo[:, ::-1]
            lm[:, 0] = (pw - 1) - lm[:, 0]
        photo = photo * np.asarray(look.tint, np.float32)[None, None, :]
        self.photo = np.clip(photo, 0, 255).astype(np.uint8)

        face_h = float(np.linalg.norm(lm[152, :2] - lm[10, :2]))
        s = look.face_frac * self.h / face_h
        oval = lm[list(_FACE_OVAL)]
        fc = 0.5 * (oval[:, :2].min(0) + oval[:, :2].max(0))
        tx = look.center[0] * self.w - s * fc[0]
        ty = look.center[1] * self.h - s * fc[1]
        self.look_scale = s
        # base (tile) coordinates -> photo coordinates
        self._inv_a = np.array([1.0 / s, -tx / s, 1.0 / s, -ty / s])  # px = a0*x + a1, py = a2*y + a3

        pts = np.empty_like(lm)
        pts[:, 0] = s * lm[:, 0] + tx
        pts[:, 1] = s * lm[:, 1] + ty
        pts[:, 2] = -s * lm[:, 2]  # toward camera positive
        oval_t = pts[list(_FACE_OVAL)]
        fw = float(oval_t[:, 0].max() - oval_t[:, 0].min())
        fh = float(oval_t[:, 1].max() - oval_t[:, 1].min())
        cx = float(0.5 * (oval_t[:, 0].min() + oval_t[:, 0].max()))
        cy = float(0.5 * (oval_t[:, 1].min() + oval_t[:, 1].max()))
        self.face_w, self.face_h, self.face_c = fw, fh, (cx, cy)

        # coarse grid (pixel centres consistent with cv2.resize INTER_LINEAR)
        gw, gh = -(-self.w // self.f), -(-self.h // self.f)
        self.gw, self.gh = gw, gh
        self.sx_step, self.sy_step = self.w / gw, self.h / gh
        gx = (np.arange(gw) + 0.5) * self.sx_step - 0.5
        gy = (np.arange(gh) + 0.5) * self.sy_step - 0.5
        X, Y = np.meshgrid(gx, gy)
        self.X, self.Y = X.astype(np.float32), Y.astype(np.float32)

        # depth: ellipsoidal bulk + landmark relief inside the face hull
        from scipy.interpolate import griddata

        rx, ry = 0.62 * fw, 0.72 * fh
        r2 = ((X - cx) / rx) ** 2 + ((Y - cy - 0.05 * fh) / ry) ** 2
        bulk = 0.45 * fw * np.sqrt(np.clip(1.0 - r2, 0.0, None))
        edge = float(np.median(oval_t[:, 2]))
        relief = griddata(pts[:, :2], np.clip(pts[:, 2] - edge, 0.0, None), (X, Y), method="linear",
                          fill_value=0.0)
        depth = bulk + np.nan_to_num(relief)
        sig = max(0.5, 0.02 * fw / self.f)
        depth = cv2.GaussianBlur(depth.astype(np.float32), (0, 0), sig)
        self.depth = depth.astype(np.float32)

        # pivot: behind the face, a little below its centre (nods rotate about the upper neck)
        self.pivot = np.array([cx, cy + 0.18 * fh, -0.45 * fw], np.float32)
        # head mask: 1 over the head (face + hair), smooth fall-off to the static background
        hr2 = ((X - cx) / (0.95 * fw)) ** 2 + ((Y - cy + 0.05 * fh) / (0.95 * fh)) ** 2
        r = np.sqrt(hr2)
        t = np.clip((r - 1.0) / 0.9, 0.0, 1.0)
        self.mask = (1.0 - t * t * (3.0 - 2.0 * t)).astype(np.float32)
        # A 2.5-D pitch of a photo reads larger to FaceMesh than the same yaw (measured: x1.2-1.8,
        # asymmetric up/down; yaw and roll read ~x1). Calibrate the pitch gain per look so that a
        # landmark Procrustes fit on the rendered frames reports the ground-truth pitch.
        self.pitch_gain = (1.0, 1.0)
        if calibrate:
            self.pitch_gain = _pitch_gain(self)

    def pivot_position(self, dx: float = 0.0, dy: float = 0.0) -> tuple[float, float]:
        """Head pivot in tile fractions for translation (dx, dy)."""
        return (float(self.pivot[0] / self.w + dx), float(self.pivot[1] / self.h + dy))

    def maps(self, pitch: float, yaw: float, roll: float, dx: float = 0.0, dy: float = 0.0,
             scale: float = 1.0, iters: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution (map_x, map_y) into the tinted photo for cv2.remap."""
        pitch = pitch * (self.pitch_gain[0] if pitch >= 0 else self.pitch_gain[1])
        p, q, r = (math.radians(v) for v in (pitch, yaw, roll))
        cp, sp, cq, sq, cr, sr = math.cos(p), math.sin(p), math.cos(q), math.sin(q), math.cos(r), math.sin(r)
        X, Y, Z = self.X, self.Y, self.depth
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
        fx = px + scale * x3 + dx * self.w
        fy = py + scale * y3 + dy * self.h
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
               scale: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
        mapx, mapy = self.maps(pitch, yaw, roll, dx, dy, scale)
        return cv2.remap(self.photo, mapx, mapy, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_REFLECT101)


def face_landmarks_px(img: np.ndarray, tracker: FaceMeshTracker | None = None) -> np.ndarray | None:
    """FaceMesh landmarks of a BGR image as (468, 3) pixels (z scaled by the width), or None.

    Pass an open `FaceMeshTracker` to reuse it (tracking mode across video frames); without one a
    static-image tracker is opened for this image only.
    """
    if tracker is not None:
        return tracker.process(img)
    with FaceMeshTracker(static_image_mode=True) as own:
        return own.process(img)


def relative_rotation_deg(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in this module's conventions of the rotation taking landmark set `ref` to
    `cur` (orthogonal Procrustes on FaceMesh landmarks in pixels; FaceMesh z points away)."""
    a = ref * np.array([1.0, 1.0, -1.0])
    b = cur * np.array([1.0, 1.0, -1.0])
    a, b = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    pitch = math.degrees(math.asin(float(np.clip(rot[1, 2], -1, 1))))
    yaw = math.degrees(math.asin(float(np.clip(rot[0, 2], -1, 1))))
    roll = math.degrees(math.asin(float(np.clip(rot[0, 1], -1, 1))))
    return pitch, yaw, roll


_CALIBRATION: dict[tuple[Any, ...], tuple[float, float]] = {}


def _pitch_gain(r: HeadRenderer, probe_deg: float = 10.0) -> tuple[float, float]:
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


# --------------------------------------------------------------------------------------------------
# Dialogue script
# --------------------------------------------------------------------------------------------------

BACKCHANNEL_LABELS: tuple[str, ...] = ("un", "hai", "ee", "haa", "un un")
TALK_LABEL = "talk"


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent, stable random stream per (seed, keys); never uses Python's salted hash()."""
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def make_script(pids: Sequence[str], duration_s: float, rng: np.random.Generator) -> dict[str, Any]:
    """Seeded two-party dialogue: alternating turns made of phrases, gaps / short overlaps between
    turns, and listener backchannels (mostly just after the speaker's phrase ends).

    All times are rounded to milliseconds, so annotations and ground truth agree exactly."""
    if len(pids) != 2:
        raise ValueError("the sample dialogue has exactly two participants")
    r3 = lambda v: round(float(v), 3)  # noqa: E731
    turns: list[dict[str, Any]] = []
    floor = [0.0, 0.0]
    cur = int(rng.integers(2))
    t = float(rng.uniform(0.5, 1.2))
    end_limit = duration_s - 0.6
    while t < end_limit - 2.5:
        lead = floor[cur] - floor[1 - cur]
        # mostly 6-12 s turns (the paper's 6-11 s listener segments), some long ones; keep the
        # floor balanced between the two participants
        if lead > 6.0:
            target = rng.uniform(3.5, 7.0)
        elif lead < -6.0:
            target = rng.uniform(9.0, 15.0)
        elif rng.random() < 0.7:
            target = rng.uniform(5.0, 10.0)
        else:
            target = rng.uniform(10.0, 17.0)
        phrases: list[tuple[float, float]] = []
        p = t
        while True:
            d = rng.uniform(1.0, 3.0)
            if p + d > end_limit:
                d = end_limit - p
                if d >= 0.8:
                    phrases.append((r3(p), r3(p + d)))
                break
            phrases.append((r3(p), r3(p + d)))
            if phrases[-1][1] - phrases[0][0] >= target:
                break
            p = p + d + rng.uniform(0.15, 0.4)
        if not phrases or phrases[-1][1] - phrases[0][0] < 2.5:
            break
        turns.append({"participant_id": pids[cur], "start_s": phrases[0][0], "end_s": phrases[-1][1],
                      "phrases": [list(x) for x in phrases]})
        floor[cur] += phrases[-1][1] - phrases[0][0]
        gap = -rng.uniform(0.1, 0.4) if rng.random() < 0.12 else rng.uniform(0.2, 1.0)
        t = phrases[-1][1] + gap
        cur = 1 - cur

    backchannels: list[dict[str, Any]] = []
    for turn in turns:
        listener = pids[1] if turn["participant_id"] == pids[0] else pids[0]
        last_end = -1.0
        cands: list[tuple[float, float | None]] = []
        for s, e in turn["phrases"][:-1]:
            if rng.random() < 0.4:  # near a phrase end
                cands.append((e + rng.uniform(0.05, 0.45), e))
            if rng.random() < 0.08:  # occasionally mid-phrase
                cands.append((rng.uniform(s, e), None))
        for start, trigger in sorted(cands, key=lambda c: c[0]):
            dur = rng.uniform(0.3, 0.8)
            label = BACKCHANNEL_LABELS[int(rng.integers(len(BACKCHANNEL_LABELS)))]
            if start < last_end + 0.3 or start + dur > turn["end_s"] - 0.5:
                continue
            backchannels.append({"participant_id": listener, "start_s": r3(start), "end_s": r3(start + dur),
                                 "label": label, "phrase_end_s": None if trigger is None else r3(trigger)})
            last_end = start + dur
    backchannels.sort(key=lambda b: (b["start_s"], b["participant_id"]))
    return {"participants": list(pids), "duration_s": float(duration_s), "turns": turns,
            "backchannels": backchannels}


def talk_intervals(script: dict[str, Any], unit: str = "turn") -> list[tuple[str, float, float, str]]:
    """Annotated talk: one interval per turn (unit="turn") or per phrase (unit="ipu"), plus every
    backchannel (annotated as talk with its token as label). Sorted by start time."""
    rows: list[tuple[str, float, float, str]] = []
    for turn in script["turns"]:
        if unit == "turn":
            rows.append((turn["participant_id"], turn["start_s"], turn["end_s"], TALK_LABEL))
        elif unit == "ipu":
            rows.extend((turn["participant_id"], s, e, TALK_LABEL) for s, e in turn["phrases"])
        else:
            raise ValueError(f"unit must be 'turn' or 'ipu', not {unit!r}")
    rows.extend((b["participant_id"], b["start_s"], b["end_s"], b["label"]) for b in script["backchannels"])
    rows.sort(key=lambda r: (r[1], r[0]))
    return rows


# --------------------------------------------------------------------------------------------------
# Head motion
# --------------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, n: int, fps: float, cutoff_hz: float, std: float) -> np.ndarray:
    pad = int(fps * 4)
    x = rng.standard_normal(n + 2 * pad)
    sos = signal.butter(2, min(cutoff_hz / (fps / 2), 0.95), output="sos")
    y = signal.sosfiltfilt(sos, x)[pad:pad + n]
    sd = float(y.std()) or 1.0
    return y / sd * std


def _bump(t: np.ndarray, center: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - center) / sigma) ** 2)


def _nod_shape(t: np.ndarray, start: float, dur: float) -> np.ndarray:
    u = (t - start) / dur
    return np.where((u >= 0) & (u <= 1), 0.5 * (1.0 - np.cos(2.0 * np.pi * np.clip(u, 0, 1))), 0.0)


def plan_nods(script: dict[str, Any], pid: str, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Planted listener nods of `pid`: after the other speaker's phrase ends (p=0.85, delay 0.7-0.9 s)
    and around the participant's own backchannels (p=0.8). Nods never overlap each other and never
    fall inside the participant's own turns."""
    own_turns = [(tr["start_s"] - 0.3, tr["end_s"] + 0.3) for tr in script["turns"] if tr["participant_id"] == pid]
    cands: list[tuple[float, str, float]] = []
    for tr in script["turns"]:
        if tr["participant_id"] == pid:
            continue
        for _s, e in tr["phrases"]:
            if rng.random() < 0.85:
                cands.append((e + rng.uniform(0.7, 0.9), "phrase_end", e))
    for b in script["backchannels"]:
        if b["participant_id"] == pid and rng.random() < 0.8:
            cands.append((b["start_s"] + rng.uniform(-0.2, 0.1), "backchannel", b["start_s"]))
    nods: list[dict[str, Any]] = []
    busy: list[tuple[float, float]] = []
    for start, cause, trig in sorted(cands, key=lambda c: c[0]):
        n = 1 if rng.random() < 0.6 else 2
        durs = rng.uniform(0.4, 0.6, size=n)
        amp0 = rng.uniform(8.0, 15.0)
        amps = [amp0] + [amp0 * rng.uniform(0.6, 0.9) for _ in range(n - 1)]
        end = start + float(durs.sum())
        if start < 0.2 or end > script["duration_s"] - 0.2:
            continue
        if any(start < b1 + 0.1 and end > b0 - 0.1 for b0, b1 in busy + own_turns):
            continue
        busy.append((start, end))
        s = start
        for k in range(n):
            nods.append({"participant_id": pid, "start_s": round(s, 4), "dur_s": round(float(durs[k]), 4),
                         "peak_s": round(s + float(durs[k]) / 2, 4), "amplitude_deg": round(float(amps[k]), 3),
                         "cause": cause, "trigger_s": trig, "index_in_group": k})
            s += float(durs[k])
    return nods


def make_motion(script: dict[str, Any], pid: str, fps: float, n_frames: int,
                rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(n_frames, 7) array of MOTION_COLUMNS and the planted nods of participant `pid`."""
    t = np.arange(n_frames) / fps
    off = {"pitch": rng.uniform(-3, 3), "yaw": rng.uniform(-4, 4), "roll": rng.uniform(-2, 2)}
    pitch = off["pitch"] + _smooth_noise(rng, n_frames, fps, 0.35, 1.2)
    yaw = off["yaw"] + _smooth_noise(rng, n_frames, fps, 0.3, 1.8)
    roll = off["roll"] + _smooth_noise(rng, n_frames, fps, 0.3, 1.0)
    dx = _smooth_noise(rng, n_frames, fps, 0.2, 0.008)
    dy = _smooth_noise(rng, n_frames, fps, 0.2, 0.005)
    scale = np.exp(_smooth_noise(rng, n_frames, fps, 0.15, 0.012))

    # speaking: more motion inside own turns, emphasis dips / turns at phrase ends
    speak = np.zeros(n_frames)
    for tr in script["turns"]:
        if tr["participant_id"] != pid:
            continue
        speak[(t >= tr["start_s"]) & (t < tr["end_s"])] = 1.0
        for _s, e in tr["phrases"]:
            pitch += rng.uniform(3.0, 6.0) * _bump(t, e - 0.12, 0.14)
            yaw += rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 4.0) * _bump(t, e - 0.2, 0.25)
    k = max(1, int(0.3 * fps))
    speak = np.convolve(speak, np.ones(k) / k, mode="same")
    pitch += speak * _smooth_noise(rng, n_frames, fps, 1.5, 1.5)
    yaw += speak * _smooth_noise(rng, n_frames, fps, 1.2, 3.0)
    roll += speak * _smooth_noise(rng, n_frames, fps, 1.0, 1.2)
    dx += speak * _smooth_noise(rng, n_frames, fps, 0.8, 0.006)

    nods = plan_nods(script, pid, rng)
    for nd in nods:
        pitch += nd["amplitude_deg"] * _nod_shape(t, nd["start_s"], nd["dur_s"])
    pitch = np.clip(pitch, -20.0, 25.0)
    yaw = np.clip(yaw, -15.0, 15.0)
    roll = np.clip(roll, -12.0, 12.0)
    return np.stack([t, pitch, yaw, roll, dx, dy, scale], axis=1), nods


# --------------------------------------------------------------------------------------------------
# Speech-like audio
# --------------------------------------------------------------------------------------------------

# Japanese vowel formants (F1, F2, F3) in Hz for a mid-pitched voice
_VOWELS = {"a": (800, 1250, 2600), "i": (300, 2250, 3000), "u": (350, 1350, 2450),
           "e": (500, 1900, 2600), "o": (500, 850, 2500), "n": (280, 1100, 2400)}
_BC_VOWELS = {"un": "un", "hai": "ai", "ee": "e", "haa": "a", "un un": "unun"}


def _glottal(phase: np.ndarray) -> np.ndarray:
    """Rosenberg-style glottal flow derivative from a cycle phase (cycles)."""
    fr = np.mod(phase, 1.0)
    tp, tn = 0.42, 0.16
    flow = np.where(fr < tp, 0.5 * (1 - np.cos(np.pi * fr / tp)),
                    np.where(fr < tp + tn, np.cos(0.5 * np.pi * (fr - tp) / tn), 0.0))
    d = np.diff(flow, prepend=flow[:1])
    return d / (np.abs(d).max() + 1e-9)


def _formant_env(freqs: np.ndarray, fmts: np.ndarray, bws: np.ndarray) -> np.ndarray:
    """Cascade 2-pole resonator magnitude: freqs (F,), fmts/bws (3, T) -> (F, T)."""
    f = freqs[:, None]
    env = np.ones((freqs.size, fmts.shape[1]))
    for i in range(fmts.shape[0]):
        F, B = fmts[i][None, :], bws[i][None, :]
        env *= F * F / np.sqrt((F * F - f * f) ** 2 + (B * f) ** 2 + 1e-9)
    return env


def synth_utterance(rng: np.random.Generator, dur_s: float, sr: int, f0_hz: float,
                    vowels: str | None = None, backchannel: bool = False) -> np.ndarray:
    """Speech-like utterance: glottal source with a declining, phrase-final-falling F0 contour,
    5-7 Hz syllables with changing vowel formants, consonant noise bursts, syllable-rate AM."""
    n = max(16, int(round(dur_s * sr)))
    t = np.arange(n) / sr
    rate = rng.uniform(5.0, 7.0)
    nsyl = max(1, int(round(dur_s * rate))) if vowels is None else len(vowels)
    edges = np.linspace(0.0, dur_s, nsyl + 1)
    if nsyl > 1:
        edges[1:-1] += rng.uniform(-0.25, 0.25, nsyl - 1) * (dur_s / nsyl)
    if vowels is None:
        vowels = "".join(rng.choice(list("aiueo"), size=nsyl))
        vowels = "".join(v if rng.random() > 0.08 else "n" for v in vowels)

    # F0: declination + phrase-final fall + an accent on a random syllable + slow jitter
    u = t / dur_s
    if backchannel:
        f0 = f0_hz * (1.05 - 0.25 * u)
    else:
        fall = np.clip((t - (dur_s - 0.35)) / 0.35, 0.0, 1.0)
        f0 = f0_hz * (1.12 - 0.2 * u) * (1.0 - 0.18 * fall * fall * (3 - 2 * fall))
        acc = int(rng.integers(nsyl))
        f0 *= 1.0 + 0.12 * _bump(t, 0.5 * (edges[acc] + edges[acc + 1]), 0.08)
    jit = signal.sosfiltfilt(signal.butter(2, 8.0 / (sr / 2), output="sos"), rng.standard_normal(n))
    f0 = f0 * (1.0 + 0.015 * jit / (jit.std() + 1e-9))
    phase = np.cumsum(f0) / sr + rng.uniform()
    src = _glottal(phase) + 0.02 * rng.standard_normal(n)

    # formant trajectories at STFT frames
    nper = 1 << int(math.ceil(math.log2(0.03 * sr)))
    hop = nper // 4
    freqs, times, Z = signal.stft(src, fs=sr, nperseg=nper, noverlap=nper - hop, boundary="even")
    k = 1.0 + 0.12 * np.clip((f0_hz - 160.0) / 60.0, -1.5, 1.5)
    centres = 0.5 * (edges[:-1] + edges[1:])
    targets = np.array([_VOWELS[v] for v in vowels], float).T * k  # (3, nsyl)
    fmts = np.stack([np.interp(times, centres, targets[i]) for i in range(3)])
    fmts *= 1.0 + 0.03 * rng.standard_normal((3, 1))
    bws = np.array([80.0, 110.0, 160.0])[:, None] * np.ones_like(fmts)
    env = _formant_env(freqs, fmts, bws)
    _, voiced = signal.istft(Z * env, fs=sr, nperseg=nper, noverlap=nper - hop, boundary=True)
    voiced = voiced[:n]
    if voiced.size < n:
        voiced = np.pad(voiced, (0, n - voiced.size))

    # syllable amplitude envelope and consonant onsets
    amp = np.zeros(n)
    noise = np.zeros(n)
    for i in range(nsyl):
        s, e = edges[i], edges[i + 1]
        cons = (i > 0 or not backchannel) and rng.random() < 0.75
        cdur = rng.uniform(0.03, 0.07) if cons else 0.0
        vs = s + cdur
        a = np.clip((t - vs) / 0.025, 0, 1) * np.clip((e - t) / 0.05, 0, 1)
        a *= (1.0 - 0.35 * (vowels[i] == "n")) * rng.uniform(0.75, 1.0)
        amp = np.maximum(amp, a)
        if cons:
            i0, i1 = int(s * sr), min(n, int((vs + 0.01) * sr))
            if i1 - i0 > 8:
                lo = rng.uniform(1500.0, 3500.0)
                hi = min(lo * rng.uniform(1.6, 2.5), 0.45 * sr)
                sos = signal.butter(2, [lo / (sr / 2), hi / (sr / 2)], btype="band", output="sos")
                burst = signal.sosfilt(sos, rng.standard_normal(i1 - i0))
                w = np.hanning(i1 - i0)
                noise[i0:i1] += burst * w * rng.uniform(0.15, 0.4) / (burst.std() + 1e-9)
    if backchannel and vowels.startswith("a") and not vowels.startswith("u"):
        i1 = min(n, int(0.06 * sr))  # breathy "h" onset
        noise[:i1] += 0.15 * rng.standard_normal(i1) * np.hanning(i1)
    amp = np.convolve(amp, np.ones(max(1, sr // 200)) / max(1, sr // 200), mode="same")
    voiced = voiced / (np.sqrt(np.mean(voiced**2)) + 1e-9)
    y = 0.25 * voiced * amp + 0.25 * noise
    # phrase-level dynamics: slight decrescendo, soft edges
    y *= (1.0 - 0.3 * u) * np.clip(t / 0.01, 0, 1) * np.clip((dur_s - t) / 0.01, 0, 1)
    return y


def make_speech_track(script: dict[str, Any], pid: str, sr: int, f0_hz: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Mono float track of one participant: own phrases and backchannels over a low noise floor,
    peak-normalised to -3 dBFS."""
    n = int(round(script["duration_s"] * sr))
    y = np.zeros(n)
    for tr in script["turns"]:
        if tr["participant_id"] != pid:
            continue
        for s, e in tr["phrases"]:
            seg = synth_utterance(rng, e - s, sr, f0_hz * rng.uniform(0.95, 1.05))
            i0 = int(round(s * sr))
            y[i0:i0 + seg.size] += seg[: max(0, n - i0)]
    for b in script["backchannels"]:
        if b["participant_id"] != pid:
            continue
        seg = synth_utterance(rng, b["end_s"] - b["start_s"], sr, f0_hz * 0.95,
                              vowels=_BC_VOWELS.get(b["label"], "un"), backchannel=True)
        i0 = int(round(b["start_s"] * sr))
        y[i0:i0 + seg.size] += seg[: max(0, n - i0)]
    peak = float(np.abs(y).max())
    if peak > 0:
        y *= 10 ** (-3 / 20) / peak
    floor = signal.sosfilt(signal.butter(1, min(4000.0, 0.4 * sr) / (sr / 2), output="sos"), rng.standard_normal(n))
    y += floor / (floor.std() + 1e-9) * 10 ** (-62 / 20)
    return np.clip(y, -1.0, 1.0)


AUDIO_FORMATS: dict[str, dict[str, Any]] = {
    "wav16k": {"ext": ".wav", "sr": 16000, "channels": 1},
    "wav44k_stereo": {"ext": ".wav", "sr": 44100, "channels": 2},
    "m4a": {"ext": ".m4a", "sr": 48000, "channels": 2, "codec": ["-c:a", "aac", "-b:a", "128k"]},
    "mp3": {"ext": ".mp3", "sr": 44100, "channels": 1, "codec": ["-c:a", "libmp3lame", "-b:a", "128k"]},
}


def _resolve_audio_format(fmt: str) -> str:
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"audio_format must be one of {sorted(AUDIO_FORMATS)}, not {fmt!r}")
    if fmt == "mp3" and "libmp3lame" not in ffmpeg_encoders():
        return "wav44k_stereo"
    if fmt == "m4a" and "aac" not in ffmpeg_encoders():
        return "wav44k_stereo"
    return fmt


def write_audio(path: Path, y: np.ndarray, fmt: str) -> None:
    """Write a mono float track in format `fmt` (PCM WAV via soundfile, AAC / MP3 via ffmpeg)."""
    import soundfile as sf

    spec = AUDIO_FORMATS[fmt]
    pcm = np.round(np.clip(y, -1, 1) * 32767.0).astype(np.int16)
    if spec["channels"] == 2:
        pcm = np.stack([pcm, pcm], axis=1)
    if spec["ext"] == ".wav":
        with atomic_path(path) as tmp:
            sf.write(tmp, pcm, spec["sr"], subtype="PCM_16", format="WAV")
        return
    wav = path.with_name(f"{path.stem}.src-{uuid.uuid4().hex[:8]}.wav")
    try:
        sf.write(wav, pcm, spec["sr"], subtype="PCM_16", format="WAV")
        with atomic_path(path) as tmp:
            cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", str(wav), *spec["codec"],
                   "-ar", str(spec["sr"]), "-ac", str(spec["channels"]), *_BITEXACT, "-vn", str(tmp)]
            subprocess.run(cmd, check=True, capture_output=True)
    finally:
        wav.unlink(missing_ok=True)  # the source WAV is only a temporary


# --------------------------------------------------------------------------------------------------
# Annotation writers
# --------------------------------------------------------------------------------------------------

def _fmt_t(v: float) -> str:
    return f"{v:.3f}"


def annotation_csv(rows: list[tuple[str, float, float, str]]) -> str:
    lines = ["participant_id,start_s,end_s,label"]
    lines += [f"{p},{_fmt_t(s)},{_fmt_t(e)},{lab}" for p, s, e, lab in rows]
    return "\n".join(lines) + "\n"


def annotation_eaf(rows: list[tuple[str, float, float, str]], pids: Sequence[str], media: str) -> str:
    from xml.sax.saxutils import escape, quoteattr

    ms = sorted({int(round(v * 1000)) for _, s, e, _ in rows for v in (s, e)})
    slot = {m: f"ts{i + 1}" for i, m in enumerate(ms)}
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<ANNOTATION_DOCUMENT AUTHOR="lhg-sample-corpus" DATE="2024-01-01T00:00:00+00:00" FORMAT="3.0" '
           'VERSION="3.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           'xsi:noNamespaceSchemaLocation="http://www.mpi.nl/tools/elan/EAFv3.0.xsd">',
           '    <HEADER MEDIA_FILE="" TIME_UNITS="milliseconds">',
           f'        <MEDIA_DESCRIPTOR MEDIA_URL={quoteattr("file:///" + media)} MIME_TYPE="video/mp4" '
           f'RELATIVE_MEDIA_URL={quoteattr("./" + media)}/>',
           f'        <PROPERTY NAME="lastUsedAnnotationId">{len(rows)}</PROPERTY>',
           "    </HEADER>", "    <TIME_ORDER>"]
    out += [f'        <TIME_SLOT TIME_SLOT_ID="{slot[m]}" TIME_VALUE="{m}"/>' for m in ms]
    out.append("    </TIME_ORDER>")
    aid = 0
    for pid in pids:
        out.append(f'    <TIER LINGUISTIC_TYPE_REF="default-lt" PARTICIPANT={quoteattr(pid)} TIER_ID={quoteattr(pid)}>')
        for p, s, e, lab in rows:
            if p != pid:
                continue
            aid += 1
            out += ["        <ANNOTATION>",
                    f'            <ALIGNABLE_ANNOTATION ANNOTATION_ID="a{aid}" '
                    f'TIME_SLOT_REF1="{slot[int(round(s * 1000))]}" TIME_SLOT_REF2="{slot[int(round(e * 1000))]}">',
                    f"                <ANNOTATION_VALUE>{escape(lab)}</ANNOTATION_VALUE>",
                    "            </ALIGNABLE_ANNOTATION>", "        </ANNOTATION>"]
        out.append("    </TIER>")
    out += ['    <LINGUISTIC_TYPE GRAPHIC_REFERENCES="false" LINGUISTIC_TYPE_ID="default-lt" TIME_ALIGNABLE="true"/>',
            '    <CONSTRAINT DESCRIPTION="Time subdivision of parent annotation\'s time interval, no time gaps '
            'allowed within this interval" STEREOTYPE="Time_Subdivision"/>',
            '    <CONSTRAINT DESCRIPTION="Symbolic subdivision of a parent annotation. Annotations refering to '
            'the same parent are ordered" STEREOTYPE="Symbolic_Subdivision"/>',
            '    <CONSTRAINT DESCRIPTION="1-1 association with a parent annotation" STEREOTYPE="Symbolic_Association"/>',
            '    <CONSTRAINT DESCRIPTION="Time alignable annotations within the parent annotation\'s time interval, '
            'gaps are allowed" STEREOTYPE="Included_In"/>',
            "</ANNOTATION_DOCUMENT>"]
    return "\n".join(out) + "\n"


def annotation_textgrid(rows: list[tuple[str, float, float, str]], pids: Sequence[str], duration_s: float) -> str:
    def num(v: float) -> str:
        return f"{v:.3f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v))

    def q(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'

    out = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ", f"xmax = {num(duration_s)} ",
           "tiers? <exists> ", f"size = {len(pids)} ", "item []: "]
    for k, pid in enumerate(pids, 1):
        ivs: list[tuple[float, float, str]] = []
        cur = 0.0
        for _p, s, e, lab in sorted((r for r in rows if r[0] == pid), key=lambda r: r[1]):
            if s < cur - 1e-9:
                raise ValueError(f"overlapping talk of {pid} at {s}")
            if s > cur + 1e-9:
                ivs.append((cur, s, ""))
            ivs.append((s, e, lab))
            cur = e
        if cur < duration_s - 1e-9:
            ivs.append((cur, duration_s, ""))
        out += [f"    item [{k}]:", '        class = "IntervalTier" ', f"        name = {q(pid)} ",
                "        xmin = 0 ", f"        xmax = {num(duration_s)} ", f"        intervals: size = {len(ivs)} "]
        for i, (s, e, lab) in enumerate(ivs, 1):
            out += [f"        intervals [{i}]:", f"            xmin = {num(s)} ", f"            xmax = {num(e)} ",
                    f"            text = {q(lab)} "]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------------

GALLERY_BORDER = 8
GALLERY_BG = (24, 24, 24)  # BGR, Zoom-like dark gallery background


def gallery_rects(width: int, height: int, n: int = 2, border: int = GALLERY_BORDER) -> list[tuple[int, int, int, int]]:
    """Side-by-side tiles (x, y, w, h) in a gallery frame with dark borders; widths multiples of 4."""
    tw = ((width - (n + 1) * border) // n) // 4 * 4
    th = (height - 2 * border) // 4 * 4
    x0 = (width - n * tw - (n - 1) * border) // 2
    y0 = (height - th) // 2
    return [(x0 + i * (tw + border), y0, tw, th) for i in range(n)]


def _fps_arg(fps: float) -> str:
    fr = Fraction(fps).limit_denominator(1001)
    return f"{fr.numerator}/{fr.denominator}"


def _grow_pipe(fd: int, size: int) -> None:
    """Bigger pipe buffer: a raw frame per write instead of many 64 kB hand-offs (Linux only)."""
    try:
        import fcntl

        cap = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), min(cap, max(size, 1 << 16)))
    except (OSError, ValueError, ImportError):
        pass


def encode_video(path: Path, width: int, height: int, fps: float, frames: Any) -> int:
    """Pipe BGR frames (an iterable of (H, W, 3) uint8) into ffmpeg; returns the frame count."""
    n = 0
    with atomic_path(path) as tmp:
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{width}x{height}", "-r", _fps_arg(fps), "-blocksize", str(width * height * 3), "-i", "pipe:0", *video_codec_args(), *_BITEXACT,
               "-an", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            assert proc.stdin is not None
            _grow_pipe(proc.stdin.fileno(), width * height * 3)
            for fr in frames:
                proc.stdin.write(memoryview(np.ascontiguousarray(fr)).cast("B"))
                n += 1
            proc.stdin.close()
            err = proc.stderr.read() if proc.stderr else b""
            if proc.wait() != 0:
                raise RuntimeError(f"ffmpeg failed encoding {path}: {err.decode(errors='replace')[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return n


def _solo_frames(renderer: HeadRenderer, motion: np.ndarray):
    buf = np.empty((renderer.h, renderer.w, 3), np.uint8)
    for row in motion:
        _, pitch, yaw, roll, dx, dy, sc = row
        yield renderer.render(pitch, yaw, roll, dx, dy, sc, out=buf)


def _gallery_frames(renderers: list[HeadRenderer], motions: list[np.ndarray], rects, width: int, height: int):
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = GALLERY_BG
    for i in range(motions[0].shape[0]):
        for r, m, (x, y, w, h) in zip(renderers, motions, rects, strict=True):
            _, pitch, yaw, roll, dx, dy, sc = m[i]
            canvas[y:y + h, x:x + w] = r.render(pitch, yaw, roll, dx, dy, sc)
        yield canvas


# --------------------------------------------------------------------------------------------------
# Sessions and the corpus
# --------------------------------------------------------------------------------------------------

SOLO_SIZE, GALLERY_SIZE = (480, 360), (960, 360)
QUICK_SOLO_SIZE, QUICK_GALLERY_SIZE = (320, 240), (640, 240)
QUICK_DURATION_S = 40.0
COMPLETE_MARKER = ".complete.json"

ANNOTATION_FILES = {"csv": "turns.csv", "eaf": "turns.eaf", "TextGrid": "turns.TextGrid"}


def _look(p: ParticipantLook | str) -> ParticipantLook:
    return p if isinstance(p, ParticipantLook) else default_look(p)


def ground_truth_paths(corpus_dir: str | Path, session_id: str) -> tuple[Path, Path]:
    gt = Path(corpus_dir) / "ground_truth"
    return gt / f"{session_id}.npz", gt / f"{session_id}.json"


def load_ground_truth(corpus_dir: str | Path, session_id: str) -> dict[str, Any]:
    """Events (JSON) plus `motion`: {participant_id: (n_frames, 7) array of MOTION_COLUMNS}."""
    npz_path, json_path = ground_truth_paths(corpus_dir, session_id)
    info = json.loads(json_path.read_text(encoding="utf-8"))
    with np.load(npz_path) as z:
        info["motion"] = {pid: z[f"motion_{pid}"] for pid in info["participants"]}
    return info


def _session_params(session_id: str, looks: list[ParticipantLook], annotation: str, layout: str, fps: float,
                    duration_s: float, audio_format: str, seed: int, frame_size: tuple[int, int],
                    annotation_unit: str, audio_offset_column: bool) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "session_id": session_id,
            "participants": [asdict(lk) for lk in looks], "annotation": annotation, "layout": layout,
            "fps": float(fps), "duration_s": float(duration_s), "audio_format": audio_format, "seed": int(seed),
            "frame_size": list(frame_size), "annotation_unit": annotation_unit,
            "audio_offset_column": bool(audio_offset_column),
            "video_codec": video_codec_args()[1]}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def make_session(corpus_dir: str | Path, session_id: str, participants: Sequence[ParticipantLook | str], *,
                 annotation: str = "csv", layout: str = "solo", fps: float = 25.0, duration_s: float = 60.0,
                 audio_format: str = "wav16k", seed: int = 0, frame_size: tuple[int, int] | None = None,
                 annotation_unit: str = "turn", audio_offset_column: bool = False, workers: int = 2) -> Path:
    """Build (or reuse) one two-party session; returns `<corpus>/sessions/<session_id>`.

    annotation: "csv" | "eaf" | "TextGrid"; layout: "solo" (one video per participant) or "gallery"
    (one video, tiles side by side, crop columns in participants.csv); audio_format: "wav16k" |
    "m4a" | "mp3" | "wav44k_stereo" (one file per participant); frame_size: (w, h) of a solo video
    or of the whole gallery frame; annotation_unit: "turn" (one interval per turn) or "ipu" (one per
    phrase); workers: threads for the media jobs. Idempotent: skipped when the session's ground-truth JSON records identical parameters.
    The session folder appears atomically (built elsewhere, then renamed)."""
    corpus = Path(corpus_dir)
    looks = [_look(p) for p in participants]
    pids = [lk.participant_id for lk in looks]
    if len(looks) != 2 or len(set(pids)) != 2:
        raise ValueError("a sample session has exactly two distinct participants")
    if annotation not in ANNOTATION_FILES:
        raise ValueError(f"annotation must be one of {sorted(ANNOTATION_FILES)}, not {annotation!r}")
    if layout not in ("solo", "gallery"):
        raise ValueError(f"layout must be 'solo' or 'gallery', not {layout!r}")
    fmt = _resolve_audio_format(audio_format)
    if frame_size is None:
        frame_size = SOLO_SIZE if layout == "solo" else GALLERY_SIZE
    fw, fh = (int(v) // 4 * 4 for v in frame_size)
    params = _session_params(session_id, looks, annotation, layout, fps, duration_s, fmt, seed, (fw, fh),
                             annotation_unit, audio_offset_column)
    session_dir = corpus / "sessions" / session_id
    npz_path, json_path = ground_truth_paths(corpus, session_id)
    if session_dir.is_dir() and npz_path.exists() and json_path.exists():
        try:
            if json.loads(json_path.read_text(encoding="utf-8")).get("params") == _jsonable(params):
                return session_dir
        except (OSError, ValueError):
            pass

    t_start = time.perf_counter()
    script = make_script(pids, duration_s, _rng(seed, session_id, "script"))
    rows = talk_intervals(script, annotation_unit)
    n_frames = int(round(duration_s * fps))
    motions, nods = {}, []
    for pid in pids:
        motions[pid], nd = make_motion(script, pid, fps, n_frames, _rng(seed, session_id, "motion", pid))
        nods += nd
    nods.sort(key=lambda d: (d["start_s"], d["participant_id"]))

    build = corpus / ".building" / f"{session_id}-{uuid.uuid4().hex[:8]}"
    build.mkdir(parents=True)
    try:
        # Jobs: one audio file per participant and the video(s). They run on a small thread pool:
        # the heavy parts (ffmpeg encoders, cv2.remap, numpy/scipy) release the GIL.
        spec = AUDIO_FORMATS[fmt]
        audio_files = {lk.participant_id: f"{lk.participant_id}{spec['ext']}" for lk in looks}
        rects: dict[str, tuple[int, int, int, int]] = {}
        video_files: dict[str, str] = {}
        renderers: dict[str, HeadRenderer] = {}
        for lk in looks:
            _photo_landmarks(lk.photo)  # FaceMesh on the photo once, before any thread starts
        jobs: list[Any] = []
        if layout == "solo":
            for lk in looks:
                pid = lk.participant_id
                renderers[pid] = HeadRenderer(lk, fw, fh)
                video_files[pid] = f"{pid}.mp4"
                rects[pid] = (0, 0, fw, fh)
                jobs.append((encode_video, build / video_files[pid], fw, fh, fps,
                             _solo_frames(renderers[pid], motions[pid])))
        else:
            for lk, rect in zip(looks, gallery_rects(fw, fh, 2), strict=True):
                rects[lk.participant_id] = rect
                renderers[lk.participant_id] = HeadRenderer(lk, rect[2], rect[3])
                video_files[lk.participant_id] = "gallery.mp4"
            jobs.append((encode_video, build / "gallery.mp4", fw, fh, fps,
                         _gallery_frames([renderers[p] for p in pids], [motions[p] for p in pids],
                                         [rects[p] for p in pids], fw, fh)))

        def audio_job(lk: ParticipantLook) -> int:
            y = make_speech_track(script, lk.participant_id, spec["sr"], lk.f0_hz,
                                  _rng(seed, session_id, "audio", lk.participant_id))
            write_audio(build / audio_files[lk.participant_id], y, fmt)
            return 0

        jobs += [(audio_job, lk) for lk in looks]
        t_video = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
            futures = [pool.submit(fn, *args) for fn, *args in jobs]
            counts = [f.result() for f in futures]
        frames_rendered = sum(counts) * (2 if layout == "gallery" else 1)
        video_s = time.perf_counter() - t_video

        # participants.csv and the one turn annotation
        header = ["participant_id", "video", "audio"]
        if layout == "gallery":
            header += ["crop_x", "crop_y", "crop_w", "crop_h"]
        if audio_offset_column:
            header.append("audio_offset_s")
        lines = [",".join(header)]
        for pid in pids:
            vals = [pid, video_files[pid], audio_files[pid]]
            if layout == "gallery":
                vals += [str(v) for v in rects[pid]]
            if audio_offset_column:
                vals.append("0.000")
            lines.append(",".join(vals))
        write_text_atomic(build / "participants.csv", "\n".join(lines) + "\n")
        ann_name = ANNOTATION_FILES[annotation]
        if annotation == "csv":
            text = annotation_csv(rows)
        elif annotation == "eaf":
            text = annotation_eaf(rows, pids, video_files[pids[0]])
        else:
            text = annotation_textgrid(rows, pids, duration_s)
        write_text_atomic(build / ann_name, text)

        (corpus / "sessions").mkdir(parents=True, exist_ok=True)
        if session_dir.exists():
            shutil.rmtree(session_dir)
        os.replace(build, session_dir)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
        with contextlib.suppress(OSError):
            build.parent.rmdir()

    # ground truth (outside sessions/): motion arrays, then the JSON that marks the session complete
    arrays: dict[str, np.ndarray] = {"columns": np.array(MOTION_COLUMNS)}
    for pid in pids:
        m = motions[pid].copy()
        r = renderers[pid]
        m[:, 4] = r.pivot[0] / r.w + m[:, 4]
        m[:, 5] = r.pivot[1] / r.h + m[:, 5]
        arrays[f"motion_{pid}"] = m
    with atomic_path(npz_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    phrase_ends = {pid: [e for tr in script["turns"] if tr["participant_id"] == pid for _s, e in tr["phrases"]]
                   for pid in pids}
    info = {"params": params, "session_id": session_id, "participants": pids, "fps": float(fps),
            "n_frames": n_frames, "duration_s": float(duration_s), "layout": layout,
            "audio_format": fmt, "annotation_file": ann_name, "rects": rects, "video_files": video_files,
            "audio_files": audio_files, "motion_columns": list(MOTION_COLUMNS),
            "turns": script["turns"], "backchannels": script["backchannels"], "phrase_ends": phrase_ends,
            "annotation_rows": [list(r) for r in rows], "nods": nods,
            "face_size_px": {pid: [round(renderers[pid].face_w, 1), round(renderers[pid].face_h, 1)] for pid in pids}}
    # timings vary from run to run: kept apart so the ground truth stays byte-identical
    write_json_atomic(corpus / ".build_stats" / f"{session_id}.json",
                      {"media_s": round(video_s, 3), "total_s": round(time.perf_counter() - t_start, 3),
                       "tiles_rendered": frames_rendered, "tiles_per_s": round(frames_rendered / max(video_s, 1e-9), 1)})
    write_json_atomic(json_path, info)
    return session_dir


def default_session_specs(duration_s: float = 120.0, quick: bool = False,
                          extra_sessions: int = 0) -> list[dict[str, Any]]:
    """The three built-in sessions: three annotation formats, solo and gallery layouts, four audio
    formats' worth of variety, six participants (P01..P06) for a person-disjoint 3-way split.

    `extra_sessions` adds plain sessions s04.. (CSV, solo, 25 fps, WAV) between new people P07, P08, ...:
    more voices and faces, so a model trained on the corpus can generalise across speakers."""
    solo = QUICK_SOLO_SIZE if quick else SOLO_SIZE
    gal = QUICK_GALLERY_SIZE if quick else GALLERY_SIZE
    extra = [{"session_id": f"s{4 + i:02d}", "participants": [f"P{7 + 2 * i:02d}", f"P{8 + 2 * i:02d}"],
              "annotation": "csv", "layout": "solo", "fps": 25.0, "audio_format": "wav16k", "frame_size": solo,
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
                       quick: bool = False, extra_sessions: int = 0) -> Path:
    """Build the embedded sample corpus (3 sessions, 6 participants, plus `extra_sessions`) under `corpus_dir`.

    quick=True: same structure, smaller frames and (unless `duration_s` is given) 40 s sessions (tests).
    Idempotent: returns at once when `<corpus>/.complete.json` records the same parameters;
    otherwise (re)builds the sessions whose parameters differ."""
    corpus = Path(corpus_dir)
    if duration_s is None:
        duration_s = QUICK_DURATION_S if quick else 120.0
    specs = default_session_specs(duration_s, quick, extra_sessions)
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
    for spec in specs:
        kw = dict(spec)
        sid = kw.pop("session_id")
        make_session(corpus, sid, kw.pop("participants"), seed=seed, **kw)
    write_text_atomic(corpus / "README.md", corpus_readme(specs, seed))
    write_json_atomic(marker, {"params": wanted, "build_s": round(time.perf_counter() - t0, 2)})
    return corpus


def corpus_readme(specs: list[dict[str, Any]], seed: int) -> str:
    rows = "\n".join(
        f"| {s['session_id']} | {', '.join(s['participants'])} | {ANNOTATION_FILES[s['annotation']]} | {s['layout']} "
        f"| {s['fps']:g} | {s['frame_size'][0]}x{s['frame_size'][1]} | {s['audio_format']} | {s['duration_s']:g} s |"
        for s in specs)
    return f"""# Embedded sample corpus (synthetic)

Generated by `pipeline/sample_corpus.py` (generator version {GENERATOR_VERSION}, seed {seed}). Everything
here is synthetic and deterministic; it exists so the pipeline and its tests run end to end without
real recordings.

| session | participants | turn annotation | layout | fps | frame | audio | duration |
|---|---|---|---|---|---|---|---|
{rows}

## Layout
`sessions/<id>/participants.csv` (`participant_id,video,audio`, plus `crop_x,crop_y,crop_w,crop_h` for the
gallery session and `audio_offset_s` (always 0) in s02), one video per participant (solo) or one
`gallery.mp4` with two tiles side by side on a dark background (crop columns give each tile), one
audio file per participant (like Zoom's "separate audio file per participant"), and exactly one turn
annotation (`turns.csv`, ELAN `turns.eaf` or Praat `turns.TextGrid`). Videos: H.264 (libx264, yuv420p)
MP4. Ground truth lives outside `sessions/` in `ground_truth/<id>.npz` (rendered head motion per
participant at the video frame rate: {", ".join(MOTION_COLUMNS)}) and `ground_truth/<id>.json` (turns,
phrases, backchannels, phrase ends, planted nods, parameters).

## What is planted
- Dialogue: the two participants alternate holding the floor (turns of ~4-20 s made of 1-3 s phrases
  separated by 0.15-0.4 s pauses; 0.2-1.0 s gaps, occasional short overlaps), balanced so each holds the
  floor about half the time. The listener produces short backchannels ("un", "hai", "ee", ...,
  0.3-0.8 s), mostly just after the speaker's phrase ends; they are annotated as talk with their token as
  label, turns as `{TALK_LABEL}`. Backchannels must not take the floor.
- Speech: no TTS; a glottal-pulse source with a declining, phrase-final-falling F0 contour
  (speaker-specific mean F0 110-225 Hz), 5-7 Hz syllables with changing vowel formants, consonant noise
  bursts; a -62 dBFS noise floor elsewhere; peak -3 dBFS. A listener's file holds only their backchannels.
- Head motion: smooth idle motion for everyone; the speaker moves more while talking, with emphasis dips
  and turns at phrase ends. The LISTENER NODS (pitch down 8-15 deg and back, 0.4-0.6 s per nod, 1-2 nods)
  0.7-0.9 s after the speaker's phrase ends (probability 0.85) and around their own backchannels. This
  speaker -> listener structure is what a listening-head model should learn; nod times are in the
  ground truth.
- Conventions: pitch > 0 = nose down, yaw > 0 = nose towards image right, roll > 0 = counter-clockwise
  on screen, x / y = head pivot in tile fractions, scale = image-plane scale; angles are relative to
  the photo's own pose.

## Faces
Six participants (P01-P06) are made from TWO real photos, told apart by photo, horizontal mirroring,
scale, position and colour tint: the `astronaut` image shipped with scikit-image (NASA public-domain
portrait of astronaut Eileen Collins) for P01, P03, P05, and the Grace Hopper photo shipped with
matplotlib (`grace_hopper.jpg`) for P02, P04, P06. Heads are animated by a 2.5-D warp: MediaPipe
FaceMesh landmarks of the photo give a depth map that is rotated by pitch and yaw, then rolled, scaled
and translated, and blended into the static background with a soft head mask.
"""
