"""Who the sample participants are and what they look like: six looks made from two real photos.

Faces: six participants are made from TWO photos (skimage's astronaut = NASA public-domain portrait
of Eileen Collins; matplotlib's Grace Hopper sample photo) by photo choice, mirroring, scale,
position and colour tint; each look also carries the participant's mean voice pitch. FaceMesh runs
once per photo; its landmarks give the renderer its depth map (`pipeline.sample.render`).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from pipeline.features.head.tracking import FaceMeshTracker

# FaceMesh indices on the face oval: the face's extent when placing a photo in a tile
FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234,
             251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)

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
def photo_bgr(name: str) -> np.ndarray:
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
def photo_landmarks(name: str) -> np.ndarray:
    """FaceMesh (static image mode) landmarks of a photo: (468, 3) in pixels; z in width units x width."""
    lm = face_landmarks_px(photo_bgr(name))
    if lm is None:
        raise RuntimeError(f"FaceMesh found no face in the {name} photo")
    return lm


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
    """(pitch, yaw, roll) of the rotation taking landmark set `ref` to `cur`, in the ground truth's
    conventions (`pipeline.sample.motion`): orthogonal Procrustes on FaceMesh landmarks in pixels
    (FaceMesh z points away). Calibrates the renderer and lets tests read the planted nods back."""
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

