"""The one device resolver and the one thread limit shared by training, evaluation, SSL and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.common.runtime import WORKER_ENV, resolve_device, uses_gpu

torch = pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda:1")  # named devices pass through unchecked
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None) == resolve_device("") == auto
    assert uses_gpu("auto") is (auto.type == "cuda")
    assert uses_gpu("cpu") is False and uses_gpu("cuda") is True and uses_gpu("cuda:1") is True


def _limits_in_child(env: dict[str, str], arg: str) -> dict:
    """Run limit_threads in a fresh process (it changes process-wide state) and report what it set."""
    code = (
        "import json, os, torch, cv2\n"
        "from pipeline.common.runtime import limit_threads\n"
        f"n = limit_threads({arg})\n"
        "print(json.dumps({'n': n, 'torch': torch.get_num_threads(), 'cv2': cv2.getNumThreads(),\n"
        "                  'env': {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS',\n"
        "                                                         'GLOG_minloglevel')}}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in WORKER_ENV}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_limit_threads_defaults_to_one_thread_per_worker():
    got = _limits_in_child({}, "")
    assert got["n"] == 1 and got["torch"] == 1 and got["cv2"] == 1
    assert got["env"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLOG_minloglevel": "2"}


def test_limit_threads_respects_the_environment_and_an_explicit_count():
    assert _limits_in_child({"OMP_NUM_THREADS": "2"}, "")["torch"] == 2  # a user's choice wins
    got = _limits_in_child({}, "2")
    assert got["n"] == 2 and got["torch"] == 2 and got["env"]["MKL_NUM_THREADS"] == "2"
