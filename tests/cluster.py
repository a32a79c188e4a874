"""A real Dask cluster on localhost: `dask scheduler` and `dask worker` processes, as a user starts them
on several machines (README "Building across machines"). Used by tests/test_dask_cluster.py and
bench/bench_dask_cluster.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0


def dask_cli() -> str | None:
    """The `dask` command of this Python environment (workers must run the same code), else on PATH."""
    beside = Path(sys.executable).with_name("dask")
    return str(beside) if beside.is_file() else shutil.which("dask")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessCluster:
    """A scheduler plus worker processes (one single-threaded process each), stopped by `close()`.

    Every process runs in its own process group, so `close()` also ends a worker's nanny child.
    Logs go to `<logdir>/<name>.log`.
    """

    def __init__(self, logdir: Path, cli: str | None = None) -> None:
        self.cli = cli or dask_cli()
        if self.cli is None:
            raise FileNotFoundError("the `dask` command-line tool is not installed in this environment")
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.procs: dict[str, subprocess.Popen] = {}
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", self.address.rsplit(":", 1)[1],
                                  "--no-dashboard"])

    def _start(self, name: str, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(self.logdir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen([self.cli, *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                                                cwd=REPO, start_new_session=True)

    def add_worker(self, name: str, resources: str = "") -> None:
        """Start `dask worker <scheduler> --nworkers 1 --nthreads 1` (with `--resources` when given)."""
        extra = ["--resources", resources] if resources else []
        self._start(name, ["worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                           "--name", name, "--memory-limit", "0", *extra])

    def wait_for_workers(self, n: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until the scheduler lists exactly `n` workers (fails with the logs when it does not)."""
        from distributed import Client

        deadline = time.monotonic() + timeout_s
        with Client(self.address, timeout=timeout_s) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) != n:
                dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"Dask cluster at {self.address}: expected {n} worker(s); exited: {dead}; "
                                       f"logs in {self.logdir}")
                time.sleep(0.2)

    def stop(self, name: str, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group of `name`, SIGKILL after `timeout_s`."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        """Workers first, then the scheduler; safe to call twice."""
        for name in [n for n in self.procs if n != "scheduler"] + ["scheduler"]:
            if name in self.procs:
                self.stop(name)


# Differ legitimately between two builds of one corpus: who held the dataset's write lock (pid, time), and
# in the per-recording records under work/ how long a job took and in which process; records also name
# their files under --out. Everything else must be the same bytes.
NOT_COMPARED = {".lock"}
VOLATILE_RECORD_KEYS = {"seconds", "worker_pid"}


def build_differences(local_out: Path, other_out: Path) -> list[str]:
    """Files of two builds' outputs that differ beyond what may: all of dataset/ on both sides, and each
    file the other build wrote under work/ (the local --out may hold more, e.g. from other runs)."""
    local, other = Path(local_out), Path(other_out)
    names = {_relative(p, other) for p in other.rglob("*") if p.is_file()}
    names |= {_relative(p, local) for p in (local / "dataset").rglob("*") if p.is_file()}
    return sorted(name for name in names if name.split("/")[0] in ("dataset", "work")
                  and Path(name).name not in NOT_COMPARED
                  and _comparable(local / name, local) != _comparable(other / name, other))


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _comparable(path: Path, out: Path) -> object:
    if not path.is_file():
        return None
    data = path.read_bytes()
    if not (path.suffix == ".json" and "work" in path.relative_to(out).parts[:1]):
        return data
    record = json.loads(data.decode().replace(str(out), "<out>"))
    return {k: v for k, v in record.items() if k not in VOLATILE_RECORD_KEYS} if isinstance(record, dict) else record


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
