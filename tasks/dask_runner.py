"""Run per-recording jobs through a Dask `distributed` client.

`[dask] scheduler` in luigi.cfg (or LHG_DASK_SCHEDULER) chooses where:
- `local` (default): a LocalCluster in this process, one single-threaded worker process per core,
  started on first use and reused by every batch of this run;
- `tcp://host:8786`: an existing cluster (many machines sharing the output folder);
- `inline`: no Dask, run in the calling process (debugging).
Luigi stays the source of truth for completion: jobs write their own atomic outputs and records.
With Luigi `--workers N`, tasks run in N child processes; each one that fans out starts its own
LocalCluster with cores / N workers, so the machine is not oversubscribed.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Iterator
from typing import Any

import luigi

_CLIENT = None


class dask(luigi.Config):  # noqa: N801 - section name in luigi.cfg
    scheduler = luigi.Parameter(default="local")
    n_workers = luigi.IntParameter(default=0, description="LocalCluster worker processes; 0 = one per core")
    memory_limit = luigi.Parameter(default="auto")


def _scheduler() -> str:
    return os.environ.get("LHG_DASK_SCHEDULER") or dask().scheduler


def get_client():
    """The run's Dask client, created on first use (None means run inline)."""
    global _CLIENT
    choice = _scheduler()
    if choice == "inline":
        return None
    if _CLIENT is None:
        from distributed import Client, LocalCluster

        if choice == "local":
            n = dask().n_workers or max(1, (os.cpu_count() or 1) // max(1, luigi.interface.core().workers))
            env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   memory_limit=dask().memory_limit, env=env)
            _CLIENT = Client(cluster)
        else:
            _CLIENT = Client(choice)
        atexit.register(close_client)
    return _CLIENT


def close_client() -> None:
    global _CLIENT
    if _CLIENT is not None:
        cluster = _CLIENT.cluster
        _CLIENT.close()
        if cluster is not None:
            cluster.close()
        _CLIENT = None


def run_jobs(fn: Callable[[dict], dict], jobs: list[dict[str, Any]], *, inline: bool = False) -> Iterator[dict]:
    """Yield each job's result as it finishes (inline for a single job: no cluster start-up cost;
    `inline` for work that owns a GPU, which one process should drive)."""
    client = get_client() if len(jobs) > 1 and not inline else None
    if client is None:
        for job in jobs:
            yield fn(job)
        return
    from distributed import as_completed

    futures = client.map(fn, jobs, pure=False)
    for future in as_completed(futures):
        yield future.result()
