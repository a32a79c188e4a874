"""Command line: ``python -m pipeline [--log-level LEVEL] <subcommand> ...``.

Each subcommand is an argparse subparser added in ``build_parser``; handlers import their heavy
dependencies lazily, so ``--help`` and unrelated subcommands never load MediaPipe.
The Luigi tasks have their own command: ``luigi --module pipeline BuildSplits`` (README).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.common.logs import LEVELS, configure_logging, filter_native_stderr, quiet_native_logs

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
HEAD_POSE_COLUMNS = ["file", "time_s", "valid", "pitch", "yaw", "roll", "x", "y", "z"]
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", type=str.upper, choices=LEVELS, default=None,
                        help="console detail (default INFO, or LHG_LOG_LEVEL); DEBUG also shows MediaPipe's own logs")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    head_pose = subparsers.add_parser(
        "head-pose", help=HEAD_POSE_HELP, description=HEAD_POSE_HELP + ". " + (_head_pose.__doc__ or ""))
    _head_pose_arguments(head_pose)
    head_pose.set_defaults(handler=_head_pose)
    verify = subparsers.add_parser("verify", help=VERIFY_HELP, description=VERIFY_HELP + ". " + (_verify.__doc__ or ""))
    verify.add_argument("folders", nargs="+", type=Path, metavar="FOLDER",
                        help="a built dataset (<out>/dataset), a checkpoint folder or a training run folder")
    verify.add_argument("--quick", action="store_true", help="sizes and structure only, no sha256 (no full read)")
    verify.set_defaults(handler=_verify)
    sample_zoom = subparsers.add_parser("sample-zoom", help=SAMPLE_ZOOM_HELP,
                                        description=SAMPLE_ZOOM_HELP + ". " + (_sample_zoom.__doc__ or ""))
    _sample_zoom_arguments(sample_zoom)
    sample_zoom.set_defaults(handler=_sample_zoom)
    import_zoom = subparsers.add_parser("import-zoom", help=IMPORT_ZOOM_HELP,
                                        description=IMPORT_ZOOM_HELP + ". " + (_import_zoom.__doc__ or ""))
    _import_zoom_arguments(import_zoom)
    import_zoom.set_defaults(handler=_import_zoom)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = configure_logging(args.log_level)
    quiet_native_logs()
    if level > logging.DEBUG:
        filter_native_stderr()
    return int(args.handler(args))


# --------------------------------------------------------------------------- head-pose


def _parse_crop(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H in pixels, got {text!r}") from exc
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise argparse.ArgumentTypeError(f"crop needs x,y >= 0 and w,h > 0, got {text!r}")
    return x, y, w, h


def _head_pose_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="images and/or videos")
    parser.add_argument("--csv", required=True, type=Path, help="output CSV (written atomically)")
    parser.add_argument(
        "--crop",
        type=_parse_crop,
        default=None,
        metavar="X,Y,W,H",
        help="pixel rectangle of one participant's tile (gallery video); x/y/z are tile-relative",
    )
    parser.add_argument(
        "--face-model",
        type=Path,
        default=None,
        metavar="TASK",
        help="MediaPipe FaceLandmarker .task file (default: the FaceMesh bundled with mediapipe)",
    )


HEAD_POSE_HELP = "head pose (pitch, yaw, roll, x, y, z) of the one face in images and videos, to CSV"


def _head_pose(args: argparse.Namespace) -> int:
    """Pose per image (one row, time 0) or per 12.5 fps video frame; valid = a face was found."""
    import cv2
    import numpy as np
    import pandas as pd

    from pipeline.common.errors import InputError, MediaError
    from pipeline.common.fsutil import atomic_path
    from pipeline.features.head.tracking import FaceMeshTracker, pose_from_image, track_video

    if args.face_model is not None and not args.face_model.is_file():
        log.error("--face-model %s: no such file (expected a MediaPipe FaceLandmarker .task)", args.face_model)
        return 2
    frames: list[pd.DataFrame] = []
    failed: list[Path] = []
    # shared by all still images; videos get their own tracker (tracking state is per video)
    image_tracker = FaceMeshTracker(static_image_mode=True, task_model=args.face_model)
    for path in args.files:
        try:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
                if image is None:
                    raise MediaError(path, "cannot read as an image (missing, unsupported or corrupt)")
                pose = pose_from_image(image, crop=args.crop, path=path, tracker=image_tracker)
                if pose is None:
                    log.warning("%s: no face found", path)
                times = np.zeros(1)
                poses = np.full((1, 6), np.nan) if pose is None else pose[None]
                valid = np.array([pose is not None])
            else:
                track = track_video(path, crop=args.crop, require_face=False,
                                    tracker_factory=lambda: FaceMeshTracker(task_model=args.face_model))
                if not track.detected.any():
                    log.warning("%s: no face found in any frame", path)
                times, poses, valid = track.time_s, track.pose, track.detected
        except (InputError, OSError) as exc:
            log.error("%s", exc)
            failed.append(path)
            continue
        table = pd.DataFrame(poses, columns=HEAD_POSE_COLUMNS[3:])
        table.insert(0, "valid", valid)
        table.insert(0, "time_s", times)
        table.insert(0, "file", str(path))
        frames.append(table)
    image_tracker.close()

    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=HEAD_POSE_COLUMNS)
    with atomic_path(args.csv) as tmp:
        result[HEAD_POSE_COLUMNS].to_csv(tmp, index=False, float_format="%.6f")
    if failed:
        log.error("%d of %d file(s) failed: %s", len(failed), len(args.files), ", ".join(map(str, failed)))
        return 1
    log.info("wrote %d row(s) for %d file(s) to %s", len(result), len(args.files), args.csv)
    return 0


# --------------------------------------------------------------------------- verify

VERIFY_HELP = "check that a built dataset or checkpoints are complete and unaltered (sizes, sha256)"


def _verify(args: argparse.Namespace) -> int:
    """Every file the manifest lists exists with its size and sha256, and every segment lies inside
    its shards; a checkpoint's weights match the sha256 recorded when it was saved. Exit status 1
    and one line per problem when anything is wrong."""
    from pipeline.dataset.manifest import MANIFEST_FILE, dataset_problems
    from pipeline.model.checkpoints import CHECKPOINT_CONFIG, verify_checkpoint

    failed = 0
    for folder in args.folders:
        if (folder / MANIFEST_FILE).is_file():
            problems = dataset_problems(folder, checksums=not args.quick)
        elif (folder / CHECKPOINT_CONFIG).is_file():
            problems = verify_checkpoint(folder)
        elif any((folder / name).exists() for name in ("best", "last")):  # a training run: its checkpoints
            problems = [p for name in ("best", "last") if (folder / name).exists()
                        for p in verify_checkpoint(folder / name)]
        else:
            problems = [f"{folder}: neither a dataset ({MANIFEST_FILE}) nor a checkpoint or training run"]
        for problem in problems:
            log.error("%s", problem)
        if problems:
            failed += 1
        else:
            log.info("%s: intact%s", folder, " (sizes only)" if args.quick else "")
    return 1 if failed else 0


# --------------------------------------------------------------------------- sample-zoom

SAMPLE_ZOOM_HELP = "write a generated Zoom-like local recording folder (and its truth.json next to it)"


def _name_value(text: str) -> tuple[str, float]:
    name, sep, value = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER (e.g. 'Akira Sato=0.35'), got {text!r}") from exc


def _frame_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, got {text!r}") from exc
    if w < 64 or h < 36:
        raise argparse.ArgumentTypeError(f"frame size {text!r} is too small (at least 64x36)")
    return w, h


def _sample_zoom_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dest", type=Path, metavar="DEST", help="folder to write into (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of call (default 30)")
    parser.add_argument("--view", choices=("gallery", "speaker"), default="gallery")
    parser.add_argument("--offset", type=_name_value, action="append", default=[], metavar="NAME=SECONDS",
                        help="video time at which NAME's track starts (repeatable; default 0)")
    parser.add_argument("--drift", type=_name_value, action="append", default=[], metavar="NAME=PPM",
                        help="clock drift of NAME's track, microseconds per second (repeatable; default 0)")
    parser.add_argument("--bleed-db", type=float, default=-20.0, help="other voice in each track (default -20 dB)")
    parser.add_argument("--layout-change-at", type=float, default=None, metavar="SECONDS",
                        help="gallery only: the window shrinks at this time")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--size", type=_frame_size, default=(640, 360), metavar="WxH", help="video frame size")
    parser.add_argument("--still-mouths", action="store_true",
                        help="mouths never move (who-is-who must then refuse: a test of the refusal)")


def _sample_zoom(args: argparse.Namespace) -> int:
    """Participants Akira Sato and Mei Tanaka; per-participant tracks in `Audio Record/` start at
    their offset and carry the other's voice. Deterministic: the same arguments give the same bytes."""
    from pipeline.sample.zoom_folder import make_zoom_folder

    try:
        sample = make_zoom_folder(args.dest, seed=args.seed, duration_s=args.duration, view=args.view,
                                  offsets_s=dict(args.offset), drift_ppm=dict(args.drift), bleed_db=args.bleed_db,
                                  layout_change_at_s=args.layout_change_at, fps=args.fps, frame_size=args.size,
                                  still_mouths=args.still_mouths)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    log.info("wrote %s (truth: %s)", sample.folder, sample.truth_path)
    return 0


# --------------------------------------------------------------------------- import-zoom

IMPORT_ZOOM_HELP = "turn a Zoom recording folder into a corpus session (crops, offsets, import_report.json)"


def _import_zoom_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.common.settings import add_setting_arguments
    from pipeline.ingest.config import ImportConfig

    parser.add_argument("zoom_dirs", type=Path, nargs="+", metavar="ZOOM_DIR",
                        help="Zoom recording folder(s); a refused one is listed in CORPUS/imports/refused.csv")
    parser.add_argument("--corpus", type=Path, required=True, help="corpus folder (the session goes to sessions/)")
    add_setting_arguments(parser, ImportConfig)


def _import_zoom(args: argparse.Namespace) -> int:
    """Finds the gallery video and each participant's own track, aligns the tracks, finds the tiles
    and decides who is who; refuses (exit status 2, with the reason) rather than guess."""
    from pipeline.common.settings import SettingError, config_from_arguments
    from pipeline.ingest.config import ImportConfig
    from pipeline.ingest.zoom import import_zoom_folders

    try:
        done, refused = import_zoom_folders(args.zoom_dirs, args.corpus, config_from_arguments(ImportConfig, args))
    except SettingError as exc:
        log.error("%s", exc)
        return 2
    for result in done:
        for sid in result.session_ids:
            log.info("%s: %s", "already imported" if result.already_imported else "wrote",
                     args.corpus / "sessions" / sid)
        for warning in result.report.get("warnings", []):
            log.warning("%s", warning)
    if refused:
        log.error("%d of %d folder(s) refused: see %s", len(refused), len(args.zoom_dirs),
                  args.corpus / "imports" / "refused.csv")
    return 2 if refused else 0
