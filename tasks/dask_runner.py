"""Run per-recording jobs through a Dask `distributed` client.

`[dask] scheduler` in luigi.cfg (or LHG_DASK_SCHEDULER) chooses where:
- `local` (default): a LocalCluster in this process, one single-threaded worker process per core,
  started on first use and reused by every batch of this run;
- `tcp://host:8786`: an existing cluster (many machines sharing the output folder);
- `inline`: no Dask, run in the calling process (debugging).
Luigi stays the source of truth for completion: jobs write their own atomic outputs and records.
With Luigi `--workers N`, tasks run in N child processes; each one that fans out starts its own
LocalCluster with cores / N workers, so the machine is not oversubscribed.

Each batch shows a progress bar (done/total recordings, elapsed, ETA) and logs every quarantined
recording as it comes back.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import luigi

from pipeline.common.logs import progress
from pipeline.common.runtime import WORKER_ENV
from pipeline.features.jobs import stage_label

log = logging.getLogger(__name__)
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
            log.info("starting a local Dask cluster: %d worker process(es)", n)
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   memory_limit=dask().memory_limit, env=dict(WORKER_ENV),
                                   silence_logs=logging.ERROR)  # workers' shutdown chatter is WARNING
            _CLIENT = Client(cluster)
        else:
            log.info("using the Dask cluster at %s", choice)
            _CLIENT = Client(choice)
        atexit.register(close_client)
    return _CLIENT


@contextlib.contextmanager
def _quiet_shutdown() -> Iterator[None]:
    """Closing a cluster makes distributed/tornado log benign errors about comms that are already
    closed (workers exit while the scheduler still talks to them); hide them for the shutdown only."""
    loggers = [logging.getLogger(name) for name in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def close_client(timeout_s: float = 20.0) -> None:
    """Close the client, then its LocalCluster; a slow or already broken shutdown is not an error."""
    global _CLIENT
    client, _CLIENT = _CLIENT, None
    if client is None:
        return
    cluster = client.cluster
    with _quiet_shutdown():
        for close in (client.close, cluster.close if cluster is not None else None):
            if close is None:
                continue
            try:
                close(timeout=timeout_s)
            except (TimeoutError, OSError) as exc:  # OSError covers distributed's CommClosedError
                log.debug("Dask shutdown: %s: %s", type(exc).__name__, exc)


def run_jobs(fn: Callable[[dict], dict], jobs: list[dict[str, Any]], *, inline: bool = False,
             desc: str | None = None) -> Iterator[dict]:
    """Yield each job's result as it finishes, with a progress bar named `desc` (default: the stage).

    Inline for a single job (no cluster start-up cost) and with `inline` for work that owns a GPU,
    which one process should drive.
    """
    if not jobs:
        return
    label = desc or stage_label(fn, jobs)
    client = get_client() if len(jobs) > 1 and not inline else None  # before the bar: it may log
    started, rejected = time.perf_counter(), 0
    with progress(total=len(jobs), desc=label, unit="recording") as bar:
        for record in _results(fn, jobs, client):
            if record.get("status") == "rejected":
                rejected += 1
                bar.set_postfix(quarantined=rejected)
                log.warning("quarantined %s/%s (%s): %s: %s", record["session_id"], record.get("participant_id", ""),
                               record.get("stage", ""), os.path.basename(str(record.get("file", ""))),
                               record.get("reason", ""))
            bar.update(1)
            yield record
    log.info("%s: %d recording(s) in %.0f s, %d quarantined", label, len(jobs), time.perf_counter() - started,
                rejected)


def _results(fn: Callable[[dict], dict], jobs: list[dict[str, Any]], client) -> Iterator[dict]:
    if client is None:
        for job in jobs:
            yield fn(job)
        return
    from distributed import as_completed

    futures = client.map(fn, jobs, pure=False)
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:  # a failed job ends the batch: stop the others quietly instead of at interpreter exit
        pending = [f for f in futures if not f.done()]
        if pending:
            with _quiet_shutdown():
                client.cancel(pending)
