"""The build on a real Dask cluster (`dask scheduler` + `dask worker` processes on localhost) writes the
same dataset bytes as the local build, and GPU placement of SSL jobs (`--resources GPU=1`) is honoured
or refused at once, never left waiting."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from luigi.configuration import get_config

from pipeline.config import BuildConfig, save_config
from tasks import HeadFeatures, SSLFeatures, dask_runner
from tasks.dask_runner import GPU_REQUEST, close_client, gpu_resources, run_jobs

from .cluster import ProcessCluster, build_differences, dask_cli
from .helpers import run_build


def which_worker(job: dict) -> dict:
    """A trivial job: the address of the worker that ran it (runs on the cluster's workers)."""
    from distributed import get_worker

    return {"status": "ok", "session_id": "s", "participant_id": str(job["i"]), "worker": get_worker().address}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler with two plain workers (no GPU declared), torn down even when a test fails."""
    if dask_cli() is None:
        pytest.skip("the `dask` command-line tool is not installed")
    procs = ProcessCluster(tmp_path_factory.mktemp("dask_logs"))
    try:
        procs.add_worker("cpu-0")
        procs.add_worker("cpu-1")
        procs.wait_for_workers(2)
        yield procs
    finally:
        close_client()
        procs.close()


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    """Point this process's build at the cluster (as `--dask-scheduler tcp://...` does)."""
    close_client()
    monkeypatch.setenv("LHG_DASK_SCHEDULER", cluster.address)
    yield cluster
    close_client()


def test_a_cluster_build_is_byte_identical_to_the_local_build(built_dataset, sample_corpus, on_cluster, tmp_path):
    out = tmp_path / "out"
    result = run_build(corpus=str(sample_corpus), out=str(out))
    assert result.status.name == "SUCCESS", result.summary_text
    from distributed import Client

    with Client(on_cluster.address) as client:  # the per-recording jobs really ran on the cluster's workers
        keys = client.run_on_scheduler(lambda dask_scheduler: {str(t[0]) for t in dask_scheduler.transition_log})
    assert any(k.startswith("run_head_job") for k in keys) and any(k.startswith("run_audio_job") for k in keys)
    assert (out / "dataset" / "shards").is_dir() and (out / "dataset" / "segments.parquet").is_file()
    assert build_differences(built_dataset, out) == []


def test_gpu_jobs_on_a_cluster_without_gpu_workers_fail_fast(on_cluster):
    with pytest.raises(RuntimeError, match=r"declares the resources GPU=1.*--resources"):
        list(run_jobs(which_worker, [{"i": 0}], resources=GPU_REQUEST, desc="gpu"))


def test_ssl_on_a_cluster_without_gpu_workers_asks_for_no_gpu(on_cluster, caplog):
    with caplog.at_level(logging.WARNING, logger="tasks.dask_runner"):
        assert gpu_resources("auto") is None
    assert "--resources GPU=1" in caplog.text
    assert gpu_resources("cpu") is None


def test_ssl_jobs_go_to_the_worker_that_declares_a_gpu(on_cluster, tmp_path):
    on_cluster.add_worker("gpu-0", resources="GPU=1")
    try:
        on_cluster.wait_for_workers(3)
        assert gpu_resources("auto") == GPU_REQUEST and gpu_resources("cuda:0") == GPU_REQUEST
        ran_on = {r["worker"] for r in run_jobs(which_worker, [{"i": i} for i in range(6)], resources=GPU_REQUEST,
                                                desc="gpu")}
        gpu_workers = dask_runner.workers_with(dask_runner.get_client(), GPU_REQUEST)
        assert len(gpu_workers) == 1 and ran_on == set(gpu_workers)  # one worker of three declares a GPU
        common = {"corpus": str(tmp_path), "out": str(tmp_path), "config_id": save_config(tmp_path, BuildConfig()),
                  "key": "s01/P01/0123456789abcdef"}  # the build's SSL batches ask for the GPU, head batches do not
        ssl_task = SSLFeatures(**common, model="m", model_dir=str(tmp_path), model_tag="m-0")
        assert ssl_task.dask_resources() == GPU_REQUEST and HeadFeatures(**common).dask_resources() is None
        with _dask_setting("gpu_resource", "off"):
            assert gpu_resources("auto") is None and ssl_task.dask_resources() is None
    finally:
        close_client()
        on_cluster.stop("gpu-0")
        on_cluster.wait_for_workers(2)


@contextmanager
def _dask_setting(name: str, value: str) -> Iterator[None]:
    """`[dask] name = value` in Luigi's configuration while the block runs."""
    config = get_config()
    if not config.has_section("dask"):
        config.add_section("dask")
    old = config.get("dask", name, None)
    config.set("dask", name, value)
    try:
        yield
    finally:
        if old is None:
            config.remove_option("dask", name)
        else:
            config.set("dask", name, old)


def test_a_local_cluster_never_asks_for_resources(monkeypatch):
    close_client()
    monkeypatch.setenv("LHG_DASK_SCHEDULER", "local")
    assert gpu_resources("cuda") is None and gpu_resources("auto") is None
    assert dask_runner._CLIENT is None  # deciding started no cluster
