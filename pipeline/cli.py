"""Command line: ``python -m pipeline <subcommand> ...``.

Subcommands live in a registry so other modules can add theirs without touching ``main``:
call ``register_subcommand(name, help, add_arguments, handler)`` at import time of this module
(or before ``main`` runs). Handlers import their heavy dependencies lazily, so ``--help`` and
unrelated subcommands never load MediaPipe.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
HEAD_POSE_COLUMNS = ["file", "time_s", "valid", "pitch", "yaw", "roll", "x", "y", "z"]


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register_subcommand(
    name: str,
    help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    handler: Callable[[argparse.Namespace], int],
) -> None:
    """Add a subcommand; ``handler(args)`` returns the process exit code."""
    if name in SUBCOMMANDS:
        raise ValueError(f"subcommand {name!r} registered twice")
    SUBCOMMANDS[name] = Subcommand(name, help, add_arguments, handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS.values():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


def _head_pose(args: argparse.Namespace) -> int:
    """Pose per image (one row, time 0) or per 12.5 fps video frame; valid = a face was found."""
    # Quieten TFLite/absl start-up chatter so real errors stay readable.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2
    import numpy as np
    import pandas as pd

    from pipeline.common.errors import InputError, MediaError
    from pipeline.common.fsutil import atomic_path
    from pipeline.features.head.pose import FaceMeshTracker, pose_from_image, track_video

    frames: list[pd.DataFrame] = []
    failed: list[Path] = []
    image_tracker = FaceMeshTracker(static_image_mode=True)  # shared by all still images
    for path in args.files:
        try:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
                if image is None:
                    raise MediaError(path, "cannot read as an image (missing, unsupported or corrupt)")
                pose = pose_from_image(image, crop=args.crop, path=path, tracker=image_tracker)
                if pose is None:
                    print(f"warning: {path}: no face found", file=sys.stderr)
                times = np.zeros(1)
                poses = np.full((1, 6), np.nan) if pose is None else pose[None]
                valid = np.array([pose is not None])
            else:
                track = track_video(path, crop=args.crop, require_face=False)
                if not track.detected.any():
                    print(f"warning: {path}: no face found in any frame", file=sys.stderr)
                times, poses, valid = track.time_s, track.pose, track.detected
        except (InputError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
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
        print(
            f"{len(failed)} of {len(args.files)} file(s) failed: {', '.join(map(str, failed))}",
            file=sys.stderr,
        )
        return 1
    return 0


register_subcommand(
    "head-pose",
    "head pose (pitch, yaw, roll, x, y, z) of the one face in images and videos, to CSV",
    _head_pose_arguments,
    _head_pose,
)
