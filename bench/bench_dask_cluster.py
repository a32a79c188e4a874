"""The build on a LocalCluster against the same build on an external Dask cluster, on the sample corpus.

    .venv/bin/python bench/bench_dask_cluster.py [--workers N] [--full] [--corpus DIR] [--workdir DIR]

Runs the real CLI (`luigi --module pipeline BuildSplits`) twice into two output folders: once with
`--dask-n-workers N` (a LocalCluster inside the Luigi process) and once with `--dask-scheduler
tcp://...` against a `dask scheduler` and N `dask worker --nworkers 1 --nthreads 1` processes started
here on localhost, as on machines that share a file system (README "Building across machines").
Prints the wall time of each, their ratio, and whether the two outputs are byte-identical (the
files that may legitimately differ are listed in tests/cluster.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed_build(corpus: Path, out: Path, dask_args: list[str]) -> float:
    """Seconds of one cold `BuildSplits` run with the given `--dask-...` options (exits when it fails)."""
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "BuildSplits", "--corpus", str(corpus),
           "--out", str(out), "--local-scheduler", *dask_args]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:])
        raise SystemExit(f"build failed: {' '.join(dask_args)}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2, help="worker processes on both sides")
    parser.add_argument("--full", action="store_true", help="full sample corpus (default: the quick one)")
    parser.add_argument("--corpus", default="", help="an existing corpus instead of the sample corpus")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    from tests.cluster import ProcessCluster, build_differences, dask_cli

    if dask_cli() is None:
        raise SystemExit("the `dask` command-line tool is not installed in this environment")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lhg-bench-dask-"))
    corpus = Path(args.corpus) if args.corpus else work / "corpus"
    if not args.corpus:
        from pipeline.sample.generate import make_sample_corpus

        make_sample_corpus(corpus, quick=not args.full)
    local_s = timed_build(corpus, work / "out_local", ["--dask-n-workers", str(args.workers)])
    print(f"LocalCluster, {args.workers} worker(s): {local_s:.1f} s")
    cluster = ProcessCluster(work / "dask_logs")
    try:
        for i in range(args.workers):
            cluster.add_worker(f"worker-{i}")
        started = time.perf_counter()
        cluster.wait_for_workers(args.workers)
        print(f"dask scheduler + {args.workers} dask worker(s) ready in {time.perf_counter() - started:.1f} s "
              f"(not counted below)")
        remote_s = timed_build(corpus, work / "out_cluster", ["--dask-scheduler", cluster.address])
    finally:
        cluster.close()
    print(f"external cluster, {args.workers} worker(s): {remote_s:.1f} s")
    print(f"ratio external / local: {remote_s / local_s:.2f}")
    differences = build_differences(work / "out_local", work / "out_cluster")
    print("byte-identical (dataset/ and work/ outputs): " + ("yes" if not differences else
                                                             f"NO, {len(differences)} file(s): {differences[:10]}"))
    if differences:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
