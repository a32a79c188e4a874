"""BuildSplits wall time per recorded hour and peak memory, on the generated sample corpus.

    .venv/bin/python bench/bench_build.py [--quick] [--workdir DIR]

Runs the real CLI (`luigi --module pipeline BuildSplits`) in a subprocess, three times: a cold
build, a no-op re-run (should run no task) and, as the in-run baseline, decode-only time of the
same media (every video frame read with OpenCV, every audio file decoded) - the floor any build
must pay. Prints seconds per recorded hour and the ratio to the decode baseline, plus peak RSS
of the largest process (the Luigi process or one Dask worker).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def decode_only_seconds(corpus: Path) -> tuple[float, float]:
    """Seconds to decode every video frame and audio file once; and recorded hours (per participant)."""
    import cv2

    from pipeline.corpus.layout import discover_sessions, read_session
    from pipeline.media.audio import decode_audio

    started = time.perf_counter()
    hours = 0.0
    for sid in discover_sessions(corpus):
        spec = read_session(corpus, sid)
        for video in sorted({p.video for p in spec.participants}):
            cap = cv2.VideoCapture(str(video))
            while cap.grab():
                cap.retrieve()
            cap.release()
        for p in spec.participants:
            hours += len(decode_audio(p.audio)) / 16000 / 3600
    return time.perf_counter() - started, hours


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small corpus (40 s sessions)")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lhg-bench-"))
    corpus, out = work / "corpus", work / "out"
    from pipeline.sample.generate import make_sample_corpus

    t = time.perf_counter()
    make_sample_corpus(corpus, quick=args.quick)
    print(f"sample corpus generated in {time.perf_counter() - t:.1f} s at {corpus}")
    decode_s, hours = decode_only_seconds(corpus)
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "BuildSplits", "--corpus", str(corpus),
           "--out", str(out), "--local-scheduler"]
    timings = []
    for label in ("cold build", "no-op re-run"):
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        timings.append(time.perf_counter() - t)
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-4000:])
            raise SystemExit(f"{label} failed")
        ran = "ran successfully" in done.stdout + done.stderr
        print(f"{label}: {timings[-1]:.1f} s (tasks ran: {ran})")
    peak_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"recorded participant-hours: {hours:.4f} h")
    print(f"decode-only baseline: {decode_s:.1f} s = {decode_s / hours / 60:.1f} min per recorded hour")
    print(f"cold build: {timings[0]:.1f} s = {timings[0] / hours / 60:.1f} min per recorded hour, "
          f"{timings[0] / decode_s:.1f}x the decode-only baseline")
    print(f"no-op re-run: {timings[1]:.1f} s")
    print(f"peak RSS of the largest child process: {peak_children_mb:.0f} MB")


if __name__ == "__main__":
    main()
