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
        expected = rf"{folder} is being written by another run \(BuildSplits: pid {holder.pid} on .*\); wait for it"
        with pytest.raises(OutputLockedError, match=expected), output_lock(folder, "BuildSplits"):
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


def test_stale_temporaries_of_dead_writers_are_swept(tmp_path):
    import os
    import time

    from pipeline.common.fsutil import _HOST, atomic_path, sweep_stale_temporaries

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    work = tmp_path / "work" / "ssl"
    work.mkdir(parents=True)
    leftover = work / f"a.tmp-{_HOST}-{dead.pid}-0123abcd.npy"
    leftover.write_bytes(b"x" * 1000)
    mine = work / f"b.tmp-{_HOST}-{os.getpid()}-0123abcd.npy"
    mine.write_bytes(b"y")
    foreign_new = work / "c.tmp-ffffffff-1-0123abcd.npy"
    foreign_new.write_bytes(b"z")
    foreign_old = work / "d.tmp-ffffffff-1-0123abcd.npy"
    foreign_old.write_bytes(b"z")
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(foreign_old, (week_ago, week_ago))
    assert sweep_stale_temporaries(tmp_path) == (2, 1001)
    assert sorted(p.name for p in work.iterdir()) == [mine.name, foreign_new.name]
    with atomic_path(work / "e.npy") as tmp:  # the writer's own temporary is named so a sweep can judge it
        assert f".tmp-{_HOST}-{os.getpid()}-" in tmp.name
        tmp.write_bytes(b"1")
        assert sweep_stale_temporaries(tmp_path) == (0, 0)
