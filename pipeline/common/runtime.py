"""Where compute runs: the torch device for a setting, and how many threads a process may use.

One place for both, so training, evaluation, SSL extraction and the Dask workers agree on what
"auto" means and never oversubscribe the cores (parallelism comes from worker processes, not from
BLAS / OpenMP / torch thread pools inside each of them).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

AUTO_DEVICES = (None, "", "auto")

# Thread pools sized by environment variables: they are read when the library loads, so a worker
# process must have them before its first import of numpy / OpenCV / torch.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# MediaPipe / TFLite C++ logging floods the console with per-graph warnings.
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
# The environment of a single-threaded worker process (Dask LocalCluster workers).
WORKER_ENV: dict[str, str] = {**{var: "1" for var in THREAD_ENV_VARS}, **QUIET_ENV}


def resolve_device(name: str | None = "auto") -> torch.device:
    """The torch device for a setting: "auto" (or None / "") = CUDA when present, else CPU; any other
    name ("cpu", "cuda", "cuda:1", ...) goes to `torch.device` as is."""
    import torch

    if name in AUTO_DEVICES:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def uses_gpu(name: str | None) -> bool:
    """Whether a device setting ends up on a CUDA GPU (imports torch only for "auto")."""
    if name in AUTO_DEVICES:
        return resolve_device(name).type == "cuda"
    return str(name).startswith("cuda")


def limit_threads(n: int | None = None) -> int:
    """Cap this process's compute threads; returns the count applied.

    `n` None means the environment's OMP_NUM_THREADS, else 1 (a worker: one thread, parallelism from
    processes). The BLAS / OpenMP variables are set only where unset (a user's choice wins; they matter
    for libraries loaded later), OpenCV gets the count, and torch too when this process has imported
    it (intra-op threads = count, one inter-op thread). Safe to call before every job.
    """
    count = max(1, int(n if n is not None else os.environ.get("OMP_NUM_THREADS") or 1))
    for var in THREAD_ENV_VARS:
        os.environ.setdefault(var, str(count))
    for var, value in QUIET_ENV.items():
        os.environ.setdefault(var, value)
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
        with contextlib.suppress(RuntimeError):  # already set, or parallel work started: harmless
            torch.set_num_interop_threads(1)
    return count
