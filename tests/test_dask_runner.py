"""A batch that ends early (a job failed) stops its other jobs without shutdown noise on the console."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import time
    from tasks.dask_runner import run_jobs
    from pipeline.features.jobs import prepare_worker

    def job(d):
        prepare_worker()
        if d["i"] == 0:
            raise RuntimeError("boom")
        time.sleep(3)  # still running when the batch fails
        return {"status": "ok", "session_id": "s", "participant_id": str(d["i"])}

    if __name__ == "__main__":
        try:
            for _ in run_jobs(job, [{"i": i, "session_id": "s"} for i in range(6)], desc="x"):
                pass
        except RuntimeError as exc:
            print("batch failed:", exc)
""")


def test_a_failed_batch_cancels_the_rest_quietly(tmp_path):
    script = tmp_path / "batch.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "LHG_DASK_SCHEDULER": "local", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert "batch failed: boom" in done.stdout, done.stderr
    assert "CancelledError" not in done.stderr and "Traceback (most recent call last)" not in done.stderr, done.stderr
