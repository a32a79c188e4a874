"""Face landmarks from images and videos: MediaPipe trackers and the video decoding loop.

`FaceMeshTracker` wraps the legacy FaceMesh bundled with mediapipe (or a user-supplied
FaceLandmarker `.task` model) and returns pixel landmarks; `track_video` decodes only the frames
around the 12.5 fps head grid times, tracks them, turns the landmarks into pose
(`pipeline.features.head.pose`) and interpolates the pose at the grid times
(`pipeline.features.head.grid`); `pose_from_image` does the same for one still image.

Landmark units: FaceMesh returns x, y normalised by image width and height and z in image-WIDTH
units; the trackers return (x·W, y·H, z·W) so the three axes are isotropic pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.common.errors import MediaError, NoFaceError
from pipeline.features.head.grid import frame_brackets_grid, pose_at_grid
from pipeline.features.head.pose import N_FACEMESH_LANDMARKS, pose_from_landmarks, pose_from_landmarks_batch
from schemas.conventions import HEAD_HOP_S, STATIC_CHANNELS


class LandmarkTracker(Protocol):
    """Anything that turns a BGR frame into (468, 3) pixel landmarks or None (no face)."""

    def process(self, bgr: np.ndarray, timestamp_ms: int | None = None) -> np.ndarray | None: ...

    def __enter__(self) -> LandmarkTracker: ...

    def __exit__(self, *exc: object) -> None: ...


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
    """Per-grid-frame pose of one face, before gap filling and derivatives.

    ``time_s[k] = k * HEAD_HOP_S``; ``pose`` columns are STATIC_CHANNELS at exactly that time,
    NaN where no face.
    """

    time_s: np.ndarray
    pose: np.ndarray
    detected: np.ndarray
    source_fps: float
    n_decoded: int
    width: int
    height: int
    channels: tuple[str, ...] = STATIC_CHANNELS
    n_tracked: int = 0  # source frames decoded and tracked (the cost of the grid)


def _check_crop(path: Path, crop: tuple[int, int, int, int], width: int, height: int) -> None:
    x, y, w, h = crop
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise MediaError(
            path,
            f"crop rectangle x={x},y={y},w={w},h={h} does not fit inside the {width}x{height} frame",
        )


def _fmt_t(t: float) -> str:
    return f"t={t:.2f}s"


@dataclass(frozen=True)
class _VideoStream:
    """What the container says about a video, checked, and the tile to track."""

    fps: float
    declared_frames: int
    crop: tuple[int, int, int, int] | None
    tile_w: int
    tile_h: int


def _open_stream(path: Path, capture: Any, crop: tuple[int, int, int, int] | None) -> _VideoStream:
    import cv2

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
    return _VideoStream(source_fps, expected_frames, crop, tile_w, tile_h)


def track_video(
    path: str | Path,
    crop: tuple[int, int, int, int] | None = None,
    fps_out: float = 1.0 / HEAD_HOP_S,
    tracker_factory: Callable[[], LandmarkTracker] | None = None,
    require_face: bool = True,
) -> RawTrack:
    """Head pose on a regular ``fps_out`` grid (k / fps_out, from 0 to the last frame's time).

    The pose at each grid time is interpolated between the tracked frames just before and after
    it, using the frame timestamps from the container (falling back to index / frame rate);
    frames around no grid time are only ``grab()``-ed, never converted or tracked
    (`pipeline.features.head.grid`). ``crop`` (x, y, w, h) selects one participant's tile of a gallery
    video; x/y/z are then relative to that tile. Raises MediaError for unreadable or truncated
    video, NoFaceError if no frame has a face (unless ``require_face`` is False).
    """
    import cv2

    path = Path(path)
    hop = 1.0 / fps_out
    if not path.is_file():
        raise MediaError(path, "video file not found", where=_fmt_t(0.0))
    # OpenCV's FFmpeg backend reads its open options from the environment at each open: local files only
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "protocol_whitelist;file")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise MediaError(path, "cannot open as a video (expected a readable video container)", _fmt_t(0.0))
    try:
        stream = _open_stream(path, capture, crop)
        factory = tracker_factory or (lambda: FaceMeshTracker(static_image_mode=False))
        with factory() as tracker:
            decoded = _poses_of_bracketing_frames(path, capture, stream, hop, tracker)
    finally:
        capture.release()
    return _track_from_poses(path, *decoded, stream, hop, require_face)


class _PoseRows:
    """Pose of each tracked frame, converted from landmarks in batches (landmarks of a long video
    would need ~11 kB per frame; a pose row needs 48 bytes)."""

    BATCH = 256

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.rows: list[np.ndarray] = []
        self._pending: list[np.ndarray | None] = []

    def add(self, landmarks: np.ndarray | None) -> None:
        self._pending.append(landmarks)
        if len(self._pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        pose = np.full((len(self._pending), len(STATIC_CHANNELS)), np.nan)
        found = np.array([lm is not None for lm in self._pending], dtype=bool)
        if found.any():
            stacked = np.stack([lm for lm in self._pending if lm is not None])
            pose[found] = pose_from_landmarks_batch(stacked, self.width, self.height)
        self.rows.append(pose)
        self._pending = []

    def array(self) -> np.ndarray:
        self.flush()
        return np.concatenate(self.rows)


def _poses_of_bracketing_frames(path: Path, capture: Any, stream: _VideoStream, hop: float,
                                tracker: LandmarkTracker) -> tuple[list[float], list[float], np.ndarray]:
    """Decode the video once: every frame's time, and the pose of the frames around grid times.

    Returns (all frame times, tracked frame times, their poses (NaN rows: no face)). Frames that
    bracket no grid time (`pipeline.features.head.grid.frame_brackets_grid`) are only ``grab()``-ed.
    """
    import cv2

    frame_s = 1.0 / stream.fps
    frame_times: list[float] = []
    tracked_times: list[float] = []
    poses = _PoseRows(stream.tile_w, stream.tile_h)
    while capture.grab():
        index = len(frame_times)
        t_msec = capture.get(cv2.CAP_PROP_POS_MSEC)
        t = t_msec / 1000.0 if t_msec is not None and t_msec >= 0 else index * frame_s
        if frame_times and t <= frame_times[-1]:  # container without usable timestamps
            t = frame_times[-1] + frame_s
        if index == 0:
            t = max(t, 0.0)
        frame_times.append(t)
        if not frame_brackets_grid(t, frame_s, hop):
            continue
        ok, frame = capture.retrieve()
        if not ok or frame is None:
            raise MediaError(path, "frame could not be decoded (corrupt video data)", _fmt_t(t))
        if stream.crop is not None:
            x, y, w, h = stream.crop
            frame = frame[y : y + h, x : x + w]
        tracked_times.append(t)
        poses.add(tracker.process(frame, timestamp_ms=int(round(t * 1000.0))))
    return frame_times, tracked_times, poses.array()


def _check_complete(path: Path, frame_times: list[float], stream: _VideoStream) -> None:
    n_decoded = len(frame_times)
    if n_decoded == 0:
        raise MediaError(path, "no video frame could be decoded (empty or corrupt video)", _fmt_t(0.0))
    expected_frames = stream.declared_frames
    missing = expected_frames - n_decoded
    if expected_frames > 0 and missing > max(2, 0.01 * expected_frames):
        raise MediaError(
            path,
            f"truncated video: decoded {n_decoded} of {expected_frames} frames the container declares",
            _fmt_t(frame_times[-1]),
        )


def _track_from_poses(path: Path, frame_times: list[float], tracked_times: list[float],
                      frame_pose: np.ndarray, stream: _VideoStream, hop: float, require_face: bool) -> RawTrack:
    """Check the decode was complete, then pose per grid point (NaN where no face)."""
    _check_complete(path, frame_times, stream)
    last_t = frame_times[-1]
    n_grid = math.floor(last_t / hop + 1e-6) + 1
    if require_face and not np.isfinite(frame_pose).all(axis=1).any():
        where = f"t=0.00s..{last_t:.2f}s"
        raise NoFaceError(path, "no face detected in any frame (expected one visible face)", where)
    grid_s = np.arange(n_grid) * hop
    angle_columns = [STATIC_CHANNELS.index(c) for c in ("pitch", "yaw", "roll")]
    pose, detected = pose_at_grid(grid_s, np.asarray(tracked_times), frame_pose, angle_columns,
                                  1.0 / stream.fps)
    return RawTrack(
        time_s=grid_s,
        pose=pose,
        detected=detected,
        source_fps=stream.fps,
        n_decoded=len(frame_times),
        width=stream.tile_w,
        height=stream.tile_h,
        n_tracked=len(tracked_times),
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
