"""Zoom gallery tile detection (pipeline.ingest.tiles) on generated Zoom-like folders with known tiles.

    .venv/bin/python bench/bench_tiles.py                     # 2 folders with a layout change + a 10 min call
    .venv/bin/python bench/bench_tiles.py --long-minutes 60   # speed on a full hour

Accuracy: folders from `pipeline.sample.zoom_folder.make_zoom_folder` (640x360, 25 fps) whose window
shrinks at a known time; per tile the IoU of the found crop with the true tile, per change the
found start minus the true change time (the first frame of the new layout lies in [0, 1/fps) after
it). Speed: a gallery recording without change, looped (stream copy, no re-encode) to
`--long-minutes`; `detect_layouts` against a full sequential decode (grab() of every frame) of the
same file in this run, as seconds per hour of video and their ratio.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.ingest.tiles import detect_layouts, iou  # noqa: E402
from pipeline.media.audio import ffmpeg_exe  # noqa: E402
from pipeline.sample.zoom_folder import make_zoom_folder  # noqa: E402

CHANGES = [(1, 0.565), (2, 0.3885)]  # (seed, layout change time as a fraction of the duration)


def accuracy(root: Path, duration_s: float) -> None:
    for seed, change_frac in CHANGES:
        sample = make_zoom_folder(root / f"acc{seed}", seed=seed, duration_s=duration_s,
                                  layout_change_at_s=round(change_frac * duration_s, 3))
        truth = sample.truth()
        spans = detect_layouts(sample.folder / "zoom_0.mp4")
        print(f"seed {seed}: {len(spans)} span(s) for {len(truth['layouts'])} layout(s)")
        for span, layout in zip(spans, truth["layouts"], strict=False):
            true_tiles = sorted(tuple(r) for r in layout["tiles"].values())
            ious = [round(iou(f, t), 4) for f, t in zip(span.tiles, true_tiles, strict=False)]
            err_ms = (span.start_s - layout["start_s"]) * 1000
            print(f"  {span.start_s:7.3f}-{span.end_s:7.3f} s  start error {err_ms:+6.1f} ms "
                  f"(frame {1000 / truth['fps']:.0f} ms)  IoU per tile {ious}  "
                  f"samples {span.evidence['samples']}, spread px {span.evidence['tile_spread_px']}")


def full_decode(video: Path) -> int:
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def speed(root: Path, minutes: float) -> None:
    base = make_zoom_folder(root / "speed", seed=0, duration_s=30.0)
    clip = base.folder / "zoom_0.mp4"
    long = root / "long.mp4"
    loops = max(0, int(round(minutes * 2)) - 1)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(clip),
                    "-an", "-c", "copy", str(long)], check=True)
    hours = (loops + 1) * 30.0 / 3600
    t0 = time.perf_counter()
    frames = full_decode(long)
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    spans = detect_layouts(long)
    t_tiles = time.perf_counter() - t0
    print(f"speed on {hours * 60:.1f} min of 640x360 at 25 fps ({frames} frames, keyframes every 2 s): "
          f"{len(spans)} span(s), {sum(s.evidence['samples'] for s in spans)} samples")
    print(f"  full sequential decode {t_full / hours:6.1f} s per hour of video")
    print(f"  detect_layouts         {t_tiles / hours:6.1f} s per hour of video  "
          f"(ratio {t_tiles / t_full:.2f} of the full decode)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per accuracy folder")
    ap.add_argument("--long-minutes", type=float, default=10.0, help="length of the speed case (0: skip)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the tile log line counts seeks
    with tempfile.TemporaryDirectory() as tmp:
        accuracy(Path(tmp), args.duration)
        if args.long_minutes > 0:
            speed(Path(tmp), args.long_minutes)


if __name__ == "__main__":
    main()
