"""Two runs never write one output folder at once: the second fails at once, naming the first."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pipeline.common.fsutil import OutputLockedError, output_lock

HOLDER = textwrap.dedent("""
    import sys
    from pipeline.common.fsutil import output_lock
    with output_lock(sys.argv[1], "BuildSplits"):
        print("locked", flush=True)
        sys.stdin.readline()  # hold until the test says so
""")


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    folder = tmp_path / "dataset"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"{folder} is being written by another run "
                                                    rf"\(BuildSplits: pid {holder.pid} on .*\); wait for it"):
            with output_lock(folder, "BuildSplits"):
                pass
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    with output_lock(folder, "BuildSplits"):  # released when the holder ended
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "dataset"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=60)
    with output_lock(folder, "BuildSplits") as path:
        assert path.read_text().startswith("BuildSplits: pid ")
