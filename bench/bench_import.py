"""The Zoom import on a generated call of several minutes: how long per hour of call, against decoding.

    .venv/bin/python bench/bench_import.py                 # a 6 min gallery call (~3 min to generate)
    .venv/bin/python bench/bench_import.py --minutes 60    # the issue's one-hour call (~25 min to generate)

The folder comes from `pipeline.sample.zoom_folder.make_zoom_folder` (640x360 gallery, two tracks with
offsets and one drifting). The import (`pipeline.ingest.zoom.import_zoom`: alignment, tile
detection, who-is-who, writing the session with hard links and a drift-corrected track) is timed
against a baseline measured in the same run: decoding every audio file the import reads (the video's
audio and both tracks) once with ffmpeg, which any import must do. Printed: seconds, seconds per
hour of call, the ratio to the baseline, and whether the result matches the truth (crops IoU,
offset error).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.ingest.tiles import iou  # noqa: E402
from pipeline.ingest.zoom import import_zoom  # noqa: E402
from pipeline.media.audio import decode_audio  # noqa: E402
from pipeline.sample.zoom_folder import make_zoom_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--keep", type=Path, default=None, help="generate into / reuse this folder")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-import-"))
    t0 = time.perf_counter()
    sample = make_zoom_folder(root / "zoom", seed=11, duration_s=60 * args.minutes,
                              offsets_s={"AkiraSato": 0.8, "MeiTanaka": -0.4}, drift_ppm={"MeiTanaka": 150.0})
    print(f"generated a {args.minutes:g} min call in {time.perf_counter() - t0:.0f} s: {sample.folder}")
    truth = sample.truth()
    audio = [sample.folder / "zoom_0.mp4", *(sample.folder / p["audio"] for p in truth["participants"])]
    t0 = time.perf_counter()
    for path in audio:
        decode_audio(path)
    baseline = time.perf_counter() - t0
    corpus = root / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    t0 = time.perf_counter()
    result = import_zoom(sample.folder, corpus)
    took = time.perf_counter() - t0
    per_hour = took / (args.minutes / 60)
    print(f"baseline (decode the 3 audio streams): {baseline:.1f} s")
    print(f"import: {took:.1f} s = {per_hour / 60:.1f} min per hour of call = {took / baseline:.1f}x the baseline")
    session = corpus / "sessions" / result.session_ids[0]
    with open(session / "participants.csv", newline="", encoding="utf-8") as fh:
        rows = {r["participant_id"]: r for r in csv.DictReader(fh)}
    tiles = truth["layouts"][0]["tiles"]
    for p in truth["participants"]:
        row = rows[p["participant_id"]]
        crop = [int(row[k]) for k in ("crop_x", "crop_y", "crop_w", "crop_h")]
        err_ms = 1000 * (float(row["audio_offset_s"]) - p["audio_offset_s"])
        print(f"{p['participant_id']}: crop IoU {iou(crop, tiles[p['participant_id']]):.3f}, "
              f"offset error {err_ms:+.1f} ms, track {row['audio']}")
    print(f"identity confidence: {result.report['identity'][0].get('confidence')}")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
