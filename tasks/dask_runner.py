"""Run per-recording jobs through a Dask `distributed` client.

`[dask] scheduler` in luigi.cfg (or LHG_DASK_SCHEDULER) chooses where:
- `local` (default): a LocalCluster in this process, one single-threaded worker process per core,
  started on first use and reused by every batch of this run;
- `tcp://host:8786`: an existing cluster (many machines sharing the output folder);
- `inline`: no Dask, run in the calling process (debugging).
Luigi stays the source of truth for completion: jobs write their own atomic outputs and records.
With Luigi `--workers N`, tasks run in N child processes; each one that fans out starts its own
LocalCluster with cores / N workers, so the machine is not oversubscribed.

On a cluster, jobs that may use a GPU (SSL) ask for the worker resource `GPU=1`, so the scheduler
places them only on workers started with `dask worker --resources GPU=1` (`gpu_resources`); a
request no worker can meet would wait forever, so it fails fast instead (`run_jobs`).

Each batch shows a progress bar (done/total recordings, elapsed, ETA) and logs every quarantined
recording as it comes back.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import luigi

from pipeline.common.logs import progress
from pipeline.common.runtime import AUTO_DEVICES, WORKER_ENV
from pipeline.common.settings import SettingError, field_values
from pipeline.config import DaskOptions
from pipeline.features.jobs import stage_label

from .params import option_values, settings_mixin

log = logging.getLogger(__name__)
_CLIENT = None
GPU_REQUEST = {"GPU": 1}  # what one SSL job asks of a worker started with `dask worker --resources GPU=1`
WORKER_WAIT_S = 60.0  # how long a fresh cluster may take to have its first worker


class dask(settings_mixin("DaskSettings", DaskOptions), luigi.Config):  # noqa: N801 - section name in luigi.cfg
    """`[dask]` in luigi.cfg, `--dask-scheduler` etc. on the command line (settings: DaskOptions)."""


def dask_options() -> DaskOptions:
    """The `[dask]` settings, checked; LHG_DASK_SCHEDULER (an environment variable) wins over the scheduler."""
    values = option_values(dask(), DaskOptions)
    values["scheduler"] = os.environ.get("LHG_DASK_SCHEDULER") or values["scheduler"]
    try:
        return DaskOptions(**field_values(DaskOptions, values))
    except SettingError as exc:
        raise SettingError(f"[dask] {exc}") from None


def _scheduler() -> str:
    return dask_options().scheduler


def on_external_cluster() -> bool:
    return _scheduler() not in ("local", "inline")


def get_client():
    """The run's Dask client, created on first use (None means run inline)."""
    global _CLIENT
    choice = _scheduler()
    if choice == "inline":
        return None
    if _CLIENT is None:
        from distributed import Client, LocalCluster

        if choice == "local":
            n = dask_options().n_workers or max(1, (os.cpu_count() or 1) // max(1, luigi.interface.core().workers))
            log.info("starting a local Dask cluster: %d worker process(es)", n)
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   memory_limit=dask_options().memory_limit, env=dict(WORKER_ENV),
                                   silence_logs=logging.ERROR)  # workers' shutdown chatter is WARNING
            _CLIENT = Client(cluster)
        else:
            log.info("using the Dask cluster at %s", choice)
            _CLIENT = Client(choice)
        atexit.register(close_client)
    return _CLIENT


def workers_with(client, resources: Mapping[str, float]) -> list[str]:
    """Addresses of the cluster's workers that declare at least `resources` (`dask worker --resources`)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return [address for address, info in workers.items()
            if all(info.get("resources", {}).get(name, 0) >= amount for name, amount in resources.items())]


def gpu_resources(device: str) -> dict[str, float] | None:
    """The worker resources a batch of GPU-capable jobs (SSL, with device setting `device`) asks for.

    {"GPU": 1} on an external cluster with a worker that declares a GPU, when the device may be a GPU
    ("auto" or "cuda...") and `[dask] gpu_resource` is auto; None otherwise: a LocalCluster declares
    no resources (a request would never be met), and a cluster without GPU workers gets a warning and
    runs the jobs as it would without the setting.
    """
    options = dask_options()
    maybe_gpu = device in AUTO_DEVICES or str(device).startswith("cuda")
    if options.gpu_resource == "off" or not maybe_gpu or not on_external_cluster():
        return None
    client = get_client()
    client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    if not workers_with(client, GPU_REQUEST):
        log.warning("no worker of the Dask cluster at %s declares a GPU (`dask worker --resources GPU=1`): SSL jobs "
                    "ask for none and run %s", options.scheduler,
                    "in this process" if str(device).startswith("cuda") else "on any worker (--ssl-device auto)")
        return None
    return dict(GPU_REQUEST)


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
             desc: str | None = None, resources: Mapping[str, float] | None = None) -> Iterator[dict]:
    """Yield each job's result as it finishes, with a progress bar named `desc` (default: the stage).

    Inline for a single job (no cluster start-up cost) and with `inline` for work that owns a GPU,
    which one process should drive. `resources` (e.g. GPU_REQUEST) places every job on workers that
    declare them, even a single job; RuntimeError at once when no worker of the cluster does.
    """
    if not jobs:
        return
    label = desc or stage_label(fn, jobs)
    client = get_client() if (len(jobs) > 1 or resources) and not inline else None  # before the bar: it may log
    if client is not None and resources:
        _require_workers_with(client, resources)
    started, rejected = time.perf_counter(), 0
    with progress(total=len(jobs), desc=label, unit="recording") as bar:
        for record in _results(fn, jobs, client, resources):
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


def _require_workers_with(client, resources: Mapping[str, float]) -> None:
    """Jobs asking for resources no worker declares would wait forever: fail now, saying how to fix it."""
    client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    if not workers_with(client, resources):
        wanted = " ".join(f"{name}={amount:g}" for name, amount in resources.items())
        where = f"the Dask cluster at {_scheduler()}" if on_external_cluster() else "a local Dask cluster"
        raise RuntimeError(f"no worker of {where} declares the resources {wanted}: jobs asking for them would "
                           f"never start; start such workers with `dask worker <scheduler> --resources \"{wanted}\"` "
                           f"or set [dask] gpu_resource = off")


def _results(fn: Callable[[dict], dict], jobs: list[dict[str, Any]], client,
             resources: Mapping[str, float] | None = None) -> Iterator[dict]:
    if client is None:
        for job in jobs:
            yield fn(job)
        return
    from distributed import as_completed

    futures = client.map(fn, jobs, pure=False, resources=dict(resources) if resources else None)
    try:
        for future in as_completed(futures):
            yield future.result()
    finally:  # a failed job ends the batch: stop the others quietly instead of at interpreter exit
        pending = [f for f in futures if not f.done()]
        if pending:
            with _quiet_shutdown():
                client.cancel(pending)
