"""Face landmarks (MediaPipe FaceMesh) and head pose from them, for still images and videos.

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
in the wheel, and 6-point ``solvePnP`` ITERATIVE flips roll. Instead the head frame is
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

Landmark units: FaceMesh returns x, y normalised by image width and height and z in image-WIDTH
units; ``FaceMeshTracker.process`` returns (x·W, y·H, z·W) so the three axes are isotropic
pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.common.errors import MediaError, NoFaceError
from schemas.conventions import HEAD_HOP_S, STATIC_CHANNELS

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


class LandmarkTracker(Protocol):
    """Anything that turns a BGR frame into (468, 3) pixel landmarks or None (no face)."""

    def process(self, bgr: np.ndarray) -> np.ndarray | None: ...

    def __enter__(self) -> LandmarkTracker: ...

    def __exit__(self, *exc: object) -> None: ...


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


# --------------------------------------------------------------------------- trackers


class FaceMeshTracker:
    """One face, 468 landmarks per frame, in pixels of the frame it was given.

    Uses the legacy FaceMesh bundled in mediapipe 0.10.21 (works offline). With
    ``static_image_mode=False`` it tracks across frames (faster, steadier); use one instance per
    video and per gallery tile. A user-supplied FaceLandmarker ``.task`` model can be given as
    ``task_model``; it then runs in VIDEO mode (IMAGE mode when static).

    FaceMesh finds faces with MediaPipe's short-range detector: a face only ~10 % of the frame
    width (60 px in a 640x360 frame) was found in about a third of frames in our benchmark clip,
    so crop gallery tiles (``track_video(crop=...)``) rather than passing whole composites.
    """

    def __init__(
        self,
        static_image_mode: bool = False,
        task_model: str | Path | None = None,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ):
        self.static_image_mode = static_image_mode
        self.task_model = Path(task_model) if task_model is not None else None
        self._min_detection = min_detection_confidence
        self._min_tracking = min_tracking_confidence
        self._engine: Any = None
        self._timestamp_ms = 0

    def __enter__(self) -> FaceMeshTracker:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._engine is not None:
            return
        if self.task_model is not None:
            self._engine = self._open_task_model(self.task_model)
            return
        from mediapipe.python.solutions import face_mesh  # lazy: heavy import

        self._engine = face_mesh.FaceMesh(
            static_image_mode=self.static_image_mode,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=self._min_detection,
            min_tracking_confidence=self._min_tracking,
        )

    def _open_task_model(self, model: Path) -> Any:
        if not model.is_file():
            raise FileNotFoundError(f"FaceLandmarker model not found: {model}")
        from mediapipe.tasks.python import BaseOptions, vision

        mode = vision.RunningMode.IMAGE if self.static_image_mode else vision.RunningMode.VIDEO
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model)),
            running_mode=mode,
            num_faces=1,
            min_face_detection_confidence=self._min_detection,
            min_tracking_confidence=self._min_tracking,
        )
        return vision.FaceLandmarker.create_from_options(options)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def process(self, bgr: np.ndarray, timestamp_ms: int | None = None) -> np.ndarray | None:
        """BGR uint8 image → (468, 3) float64 landmarks (x·W, y·H, z·W) or None if no face.

        ``timestamp_ms`` is only used by a ``.task`` model in VIDEO mode (must increase); when
        omitted, successive calls are spaced 1 ms apart.
        """
        if self._engine is None:
            self.open()
        import cv2  # cvtColor is ~100x faster than a numpy channel-reversing copy

        height, width = bgr.shape[:2]
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.task_model is None:
            result = self._engine.process(rgb)
            if not result.multi_face_landmarks:
                return None
            points = result.multi_face_landmarks[0].landmark
            lm = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64)
        else:
            import mediapipe as mp

            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
            if self.static_image_mode:
                result = self._engine.detect(image)
            else:
                self._timestamp_ms = max(self._timestamp_ms + 1, timestamp_ms or 0)
                result = self._engine.detect_for_video(image, self._timestamp_ms)
            if not result.face_landmarks:
                return None
            lm = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float64)
        lm = lm[:N_FACEMESH_LANDMARKS]
        lm *= (width, height, width)
        return lm


# --------------------------------------------------------------------------- video


@dataclass
class RawTrack:
    """Per-grid-frame pose of one face, before interpolation and derivatives.

    ``time_s[k] = k * HEAD_HOP_S``; ``pose`` columns are STATIC_CHANNELS, NaN where no face.
    """

    time_s: np.ndarray
    pose: np.ndarray
    detected: np.ndarray
    source_fps: float
    n_decoded: int
    width: int
    height: int
    channels: tuple[str, ...] = STATIC_CHANNELS


def _check_crop(path: Path, crop: tuple[int, int, int, int], width: int, height: int) -> None:
    x, y, w, h = crop
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise MediaError(
            path,
            f"crop rectangle x={x},y={y},w={w},h={h} does not fit inside the {width}x{height} frame",
        )


def _fmt_t(t: float) -> str:
    return f"t={t:.2f}s"


def track_video(
    path: str | Path,
    crop: tuple[int, int, int, int] | None = None,
    fps_out: float = 1.0 / HEAD_HOP_S,
    tracker_factory: Callable[[], LandmarkTracker] | None = None,
    require_face: bool = True,
) -> RawTrack:
    """Head pose on a regular ``fps_out`` grid (k / fps_out, from 0 to the last frame's time).

    For each grid time the nearest decoded frame is used (frame timestamps from the container,
    falling back to index / frame rate); frames nearest to no grid time are only ``grab()``-ed,
    never converted or tracked. ``crop`` (x, y, w, h) selects one participant's tile of a gallery
    video; x/y/z are then relative to that tile. Raises MediaError for unreadable or truncated
    video, NoFaceError if no frame has a face (unless ``require_face`` is False).
    """
    import cv2

    path = Path(path)
    hop = 1.0 / fps_out
    if not path.is_file():
        raise MediaError(path, "video file not found", where=_fmt_t(0.0))
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise MediaError(path, "cannot open as a video (expected a readable video container)", _fmt_t(0.0))
    try:
        source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        expected_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if not (source_fps > 0 and math.isfinite(source_fps)) or width <= 0 or height <= 0:
            raise MediaError(
                path, f"no usable video stream (fps={source_fps}, size={width}x{height})", _fmt_t(0.0)
            )
        if crop is not None:
            crop = tuple(int(v) for v in crop)  # type: ignore[assignment]
            _check_crop(path, crop, width, height)
        tile_w, tile_h = (crop[2], crop[3]) if crop is not None else (width, height)
        frame_s = 1.0 / source_fps

        grid_landmarks: list[np.ndarray | None] = []  # index k = grid point k
        frame_times: list[float] = []
        factory = tracker_factory or (lambda: FaceMeshTracker(static_image_mode=False))
        with factory() as tracker:
            while capture.grab():
                index = len(frame_times)
                t_msec = capture.get(cv2.CAP_PROP_POS_MSEC)
                t = t_msec / 1000.0 if t_msec is not None and t_msec >= 0 else index * frame_s
                if frame_times and t <= frame_times[-1]:  # container without usable timestamps
                    t = frame_times[-1] + frame_s
                if index == 0:
                    t = max(t, 0.0)
                frame_times.append(t)
                # This frame is the nearest one for every grid point not yet assigned and not after
                # the midpoint to the (predicted) next frame.
                n_due = math.floor((t + 0.5 * frame_s) / hop + 1e-9) + 1 - len(grid_landmarks)
                if n_due <= 0:
                    continue
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    raise MediaError(path, "frame could not be decoded (corrupt video data)", _fmt_t(t))
                if crop is not None:
                    x, y, w, h = crop
                    frame = frame[y : y + h, x : x + w]
                landmarks = tracker.process(frame)
                grid_landmarks.extend([landmarks] * n_due)
    finally:
        capture.release()

    n_decoded = len(frame_times)
    if n_decoded == 0:
        raise MediaError(path, "no video frame could be decoded (empty or corrupt video)", _fmt_t(0.0))
    last_t = frame_times[-1]
    missing = expected_frames - n_decoded
    if expected_frames > 0 and missing > max(2, 0.01 * expected_frames):
        raise MediaError(
            path,
            f"truncated video: decoded {n_decoded} of {expected_frames} frames the container declares",
            _fmt_t(last_t),
        )
    n_grid = math.floor(last_t / hop + 1e-6) + 1
    grid_landmarks = grid_landmarks[:n_grid]
    detected = np.array([lm is not None for lm in grid_landmarks], dtype=bool)
    pose = np.full((n_grid, len(STATIC_CHANNELS)), np.nan)
    if detected.any():
        stacked = np.stack([lm for lm in grid_landmarks if lm is not None])
        pose[detected] = pose_from_landmarks_batch(stacked, tile_w, tile_h)
    elif require_face:
        where = f"t=0.00s..{last_t:.2f}s"
        raise NoFaceError(path, "no face detected in any frame (expected one visible face)", where)
    return RawTrack(
        time_s=np.arange(n_grid) * hop,
        pose=pose,
        detected=detected,
        source_fps=source_fps,
        n_decoded=n_decoded,
        width=tile_w,
        height=tile_h,
    )


def pose_from_image(
    image: np.ndarray,
    crop: tuple[int, int, int, int] | None = None,
    path: str | Path = "<image>",
    tracker: LandmarkTracker | None = None,
) -> np.ndarray | None:
    """Pose of the one face in a still image, or None if no face was found.

    Pass a static-mode ``tracker`` to reuse one FaceMesh over many images (creating one costs
    tens of milliseconds); by default a fresh static-mode tracker is used.
    """
    height, width = image.shape[:2]
    if crop is not None:
        _check_crop(Path(path), crop, width, height)
        x, y, w, h = crop
        image = image[y : y + h, x : x + w]
        height, width = h, w
    if tracker is None:
        with FaceMeshTracker(static_image_mode=True) as own_tracker:
            landmarks = own_tracker.process(image)
    else:
        landmarks = tracker.process(image)
    if landmarks is None:
        return None
    return pose_from_landmarks(landmarks, width, height)
