"""Head pose from FaceMesh landmarks: the head frame built from landmark sets, and its Euler angles.

Pose conventions (copied into the data card)
--------------------------------------------
All six static channels describe the head as it appears in the image (or in one participant's
tile of a gallery video):

- ``pitch`` (degrees): > 0 when the nose points DOWN (nodding down).
- ``yaw`` (degrees): > 0 when the nose points toward the IMAGE RIGHT (the viewer's right).
- ``roll`` (degrees): > 0 when the head is tilted COUNTER-CLOCKWISE as seen by the viewer.
- ``x``, ``y``: position of the face in the image/tile, 0..1, x to the right, y down: the centroid
  of the rigid upper-face landmarks (both eye contours, both eyebrows, the nose) divided by the
  tile width and height.
- ``z``: relative depth from face scale, ``ln(tile_width / d)`` with ``d`` the 3-D distance in pixels
  between the centroids of the left and right eye contours. Larger = farther from the camera (or a
  smaller face); +0.1 means the face looks about 10 % smaller. Only differences are meaningful.

Euler order: the rotation is decomposed as ``R = Rz(roll) · Ry(yaw) · Rx(pitch)`` in the camera
frame (x right, y down, z into the scene), i.e. roll is applied last about the camera axis. Hence
rotating the image by +θ counter-clockwise adds exactly θ to roll, pitch is a nod about the head's
own left-right axis, and mirroring the image negates yaw and roll and keeps pitch. Angles lie in
(-180, 180]; callers unwrap them over time.

Method (why not solvePnP): the canonical face model MediaPipe uses for its own pose is not shipped
in the wheel, and 6-point ``solvePnP`` ITERATIVE flips roll (measured on rotated
still images). Instead the head frame is
built from the 3-D landmarks directly, with the landmark index sets MediaPipe ships at runtime:

- left-right axis: centroid of subject-left structures minus subject-right structures (eye
  contours, eyebrows, the two halves of the face oval); these sets are mirror images of each
  other in the mesh, so the difference is parallel to the head's left-right axis;
- up axis: centroid of eyes and eyebrows minus centroid of the nose, orthogonalised against the
  left-right axis (both ends lie in the midsagittal plane, and neither moves when the jaw opens);
- forward axis: their cross product.

That frame is tilted relative to MediaPipe's canonical (zero-pose) face because the eyes sit behind
the nose; ``CANONICAL_TILT_DEG`` removes the tilt. It was measured once, offline, by applying this
same construction to MediaPipe's canonical face model (mediapipe/modules/face_geometry/data/
canonical_face_model.obj); only that one number is kept, not the model.

Landmark units: pixels on all three axes, (x·W, y·H, z·W), as ``FaceMeshTracker.process``
(`pipeline.features.head.tracking`) returns them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

N_FACEMESH_LANDMARKS = 468

# Angle (degrees) by which the eyes+brows→nose "up" axis of this construction is tilted (nose
# forward of the eyes) relative to the canonical face's vertical axis. Derived once from
# MediaPipe's canonical_face_model.obj (see module docstring); a frontal canonical face then reads
# pitch = yaw = roll = 0.
CANONICAL_TILT_DEG = -32.0456

# Well-known FaceMesh indices: midline top/bottom of the face oval.
_FOREHEAD_TOP = 10
_CHIN_BOTTOM = 152
_LEFT_CHEEK_OVAL = 454  # subject's left, on the face oval

# --------------------------------------------------------------------------- landmark sets


def _vertices(edges: frozenset[tuple[int, int]]) -> np.ndarray:
    return np.array(sorted({i for edge in edges for i in edge}), dtype=np.intp)


def _split_oval(edges: frozenset[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Split the face-oval cycle at forehead and chin into (subject-left, subject-right) halves."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    halves = []
    for start in neighbours[_FOREHEAD_TOP]:
        path, previous, current = [], _FOREHEAD_TOP, start
        while current != _CHIN_BOTTOM:
            path.append(current)
            previous, current = current, next(n for n in neighbours[current] if n != previous)
        halves.append(np.array(sorted(path), dtype=np.intp))
    left, right = halves if _LEFT_CHEEK_OVAL in halves[0] else halves[::-1]
    return left, right


@dataclass(frozen=True)
class _LandmarkSets:
    left: tuple[np.ndarray, ...]  # subject-left structures (appear on the image right when frontal)
    right: tuple[np.ndarray, ...]  # their mirror images, same order
    upper: np.ndarray  # eyes + eyebrows (top end of the up axis)
    nose: np.ndarray  # bottom end of the up axis
    position: np.ndarray  # rigid upper-face points for x, y
    left_eye: np.ndarray
    right_eye: np.ndarray


@lru_cache(maxsize=1)
def _landmark_sets() -> _LandmarkSets:
    """Index sets read from MediaPipe at runtime (no vendored tables)."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    left_eye, right_eye = _vertices(fmc.FACEMESH_LEFT_EYE), _vertices(fmc.FACEMESH_RIGHT_EYE)
    left_brow, right_brow = _vertices(fmc.FACEMESH_LEFT_EYEBROW), _vertices(fmc.FACEMESH_RIGHT_EYEBROW)
    left_oval, right_oval = _split_oval(fmc.FACEMESH_FACE_OVAL)
    nose = _vertices(fmc.FACEMESH_NOSE)
    upper = np.concatenate([left_eye, right_eye, left_brow, right_brow])
    return _LandmarkSets(
        left=(left_eye, left_brow, left_oval),
        right=(right_eye, right_brow, right_oval),
        upper=upper,
        nose=nose,
        position=np.concatenate([upper, nose]),
        left_eye=left_eye,
        right_eye=right_eye,
    )


# --------------------------------------------------------------------------- pose


def _rot_x(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def head_axes(lm_px: np.ndarray) -> np.ndarray:
    """Head frame from landmarks, (..., 3, 3) with columns (subject-left, down, backward).

    Columns are unit vectors in the camera frame (x right, y down, z into the scene); for a
    frontal face they are close to the identity except for the canonical tilt about x.
    """
    sets = _landmark_sets()
    lm = np.asarray(lm_px, dtype=np.float64)
    lateral = sum(
        lm[..., left, :].mean(axis=-2) - lm[..., right, :].mean(axis=-2)
        for left, right in zip(sets.left, sets.right, strict=True)
    )
    down = lm[..., sets.nose, :].mean(axis=-2) - lm[..., sets.upper, :].mean(axis=-2)
    lateral = lateral / np.linalg.norm(lateral, axis=-1, keepdims=True)
    down = down - np.sum(down * lateral, axis=-1, keepdims=True) * lateral
    down = down / np.linalg.norm(down, axis=-1, keepdims=True)
    backward = np.cross(lateral, down)
    return np.stack([lateral, down, backward], axis=-1)


def rotation_to_euler(rotation: np.ndarray) -> np.ndarray:
    """(..., 3, 3) camera-frame rotation → (..., 3) pitch, yaw, roll in degrees (our signs).

    Decomposes ``R = Rz(a) · Ry(b) · Rx(c)`` with standard right-handed matrices in the
    x-right/y-down/z-forward camera frame, then maps signs: a standard +a about z turns x toward
    +y (down), i.e. clockwise on screen, so roll = -a; +b turns the nose (-z) toward -x, so
    yaw = -b; +c turns the nose toward +y (down), so pitch = +c.
    """
    r = np.asarray(rotation, dtype=np.float64)
    b = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    c = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    a = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.degrees(np.stack([c, -b, -a], axis=-1))


def pose_from_landmarks_batch(lm_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 468, 3) pixel landmarks → (N, 6) pitch, yaw, roll, x, y, z (see module docstring)."""
    lm = np.asarray(lm_px, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1] < N_FACEMESH_LANDMARKS or lm.shape[2] != 3:
        raise ValueError(f"expected (N, 468, 3) landmarks, got {lm.shape}")
    lm = lm[:, :N_FACEMESH_LANDMARKS]
    sets = _landmark_sets()
    axes = head_axes(lm) @ _rot_x(-math.radians(CANONICAL_TILT_DEG))
    angles = rotation_to_euler(axes)
    centre = lm[:, sets.position, :2].mean(axis=1)
    eye_distance = np.linalg.norm(
        lm[:, sets.left_eye].mean(axis=1) - lm[:, sets.right_eye].mean(axis=1), axis=-1
    )
    depth = np.log(width / eye_distance)
    return np.column_stack([angles, centre[:, 0] / width, centre[:, 1] / height, depth])


def pose_from_landmarks(lm_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """(468, 3) pixel landmarks → 6 floats: pitch, yaw, roll (deg), x, y (0..1), z (log scale)."""
    return pose_from_landmarks_batch(np.asarray(lm_px)[None], width, height)[0]
