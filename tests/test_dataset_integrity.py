"""A dataset is complete only when every file its manifest lists is there, unaltered: shard sets
appear whole or not at all, missing or cut files make the build run again, flipped bits are found
by `python -m pipeline verify`, and damaged files are named when read."""

from __future__ import annotations

import os
import shutil
import stat

import numpy as np
import pandas as pd
import pytest

from pipeline.common.errors import CorruptOutputError
from pipeline.common.fsutil import FILE_MODE, sweep_stale_temporaries
from pipeline.dataset.manifest import dataset_problems, read_manifest
from pipeline.dataset.shards import ShardWriter, shard_set_problems, write_shard_set

from .helpers import run_build, snapshot


def _segments(n: int) -> pd.DataFrame:
    return pd.DataFrame({"segment_id": [f"s~p~{i:07d}" for i in range(n)], "session_id": "s",
                         "split": ["train", "valid", "test"] * (n // 3) + ["train"] * (n % 3),
                         "overlap_extra": False})


def _write(folder, segments, calls: list | None = None, fail_at: int | None = None):
    def make(seg, _tables):
        if calls is not None:
            calls.append(seg["segment_id"])
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("killed")
        return {"x": np.full((5, 2), int(seg["segment_id"][-7:]), np.float32)}

    return write_shard_set(segments, folder, load_session=lambda sid: None, make_arrays=make,
                           max_bytes=64, spec={"test": 1})


def test_shards_get_the_permissions_of_every_other_output(tmp_path):
    writer = ShardWriter(tmp_path, "train")
    writer.add({"x": np.zeros((3, 2), np.float32)})
    writer.close()
    shard = tmp_path / "train-00000.safetensors"
    assert stat.S_IMODE(shard.stat().st_mode) == FILE_MODE  # safetensors alone creates 0600
    assert 0o666 & ~_umask() == FILE_MODE


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_interrupted_shard_set_leaves_nothing_under_its_name(tmp_path):
    folder = tmp_path / "shards" / "abc"
    calls: list = []
    with pytest.raises(RuntimeError, match="killed"):
        _write(folder, _segments(9), calls, fail_at=7)
    assert not folder.exists()  # the half-written set never had the final name
    assert list((tmp_path / "shards").iterdir()) == []  # and its staging folder is gone
    index = _write(folder, _segments(9))
    assert len(index) == 9 and not shard_set_problems(folder, checksums=True)


def test_a_complete_set_is_reused_and_a_damaged_one_rebuilt(tmp_path):
    folder = tmp_path / "abc"
    _write(folder, _segments(9))
    before = snapshot(folder)
    calls: list = []
    _write(folder, _segments(9), calls)
    assert calls == []  # reused: nothing recomputed
    shards = sorted(folder.glob("*.safetensors"))
    shards[0].unlink()
    with open(shards[1], "r+b") as f:
        f.truncate(10)
    assert len(shard_set_problems(folder)) == 2
    _write(folder, _segments(9), calls)
    assert len(calls) == 9 and snapshot(folder) == before


def test_a_killed_writers_staging_folder_is_swept(tmp_path):
    import subprocess
    import sys

    code = ("import os, sys; from pathlib import Path; from pipeline.common.fsutil import atomic_folder\n"
            "with atomic_folder(Path(sys.argv[1])) as d:\n"
            "    (d / 'train-00000.safetensors').write_bytes(b'x' * 100)\n"
            "    os._exit(0)  # killed inside the write: no cleanup runs")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "abc")], check=True)  # its pid is dead now
    assert len(list(tmp_path.iterdir())) == 1
    assert sweep_stale_temporaries(tmp_path) == (1, 100)
    assert list(tmp_path.iterdir()) == []


def test_checksums_cover_every_file_and_find_flipped_bits(built_dataset, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built_dataset, out)
    dataset = out / "dataset"
    files = read_manifest(dataset)["files"]
    assert "segments.parquet" in files and "normalization.json" in files
    shards = [name for name in files if name.endswith(".safetensors")]
    assert shards and all(len(files[n]["sha256"]) == 64 for n in shards)
    assert dataset_problems(dataset, checksums=True) == []

    victim = dataset / shards[0]
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0x40  # one bit of a stored value: the file still loads
    victim.write_bytes(bytes(data))
    assert dataset_problems(dataset) == []  # sizes alone cannot see it
    assert dataset_problems(dataset, checksums=True) == [
        f"{victim}: sha256 differs from the one recorded when it was written (altered or corrupt)"]
    from pipeline.cli import main

    assert main(["verify", str(dataset)]) == 1
    assert main(["verify", "--quick", str(dataset)]) == 0
    from pipeline.evaluation.config import EvalConfig
    from pipeline.evaluation.evaluate import evaluate

    assert victim.name.startswith("test-")  # a split the evaluation reads
    with pytest.raises(CorruptOutputError, match=r"the dataset is damaged:\n  .*test-00000\.safetensors: sha256"):
        evaluate(dataset, {}, tmp_path / "eval", EvalConfig(video_samples=0))  # no numbers from flipped bits


def test_a_missing_shard_makes_the_build_run_again(built_dataset, sample_corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built_dataset, out)
    dataset = out / "dataset"
    before = snapshot(dataset / "shards")
    shard = sorted((dataset / "shards").rglob("*.safetensors"))[-1]
    shard.unlink()  # as a concurrent run that removed the shard folder did
    assert dataset_problems(dataset) == [f"{shard}: missing"]
    result = run_build(corpus=str(sample_corpus), out=str(out))
    assert result.status.name == "SUCCESS", result.summary_text
    assert snapshot(dataset / "shards") == before and dataset_problems(dataset, checksums=True) == []


def test_damaged_outputs_are_named_when_read(built_dataset, tmp_path):
    from pipeline.dataset.loader import LHGDataset

    dataset = tmp_path / "dataset"
    shutil.copytree(built_dataset / "dataset", dataset)
    shard = dataset / LHGDataset(dataset, "train").segments["shard"].iloc[0]
    shard.write_bytes(b"\x00" * 5)
    with pytest.raises(CorruptOutputError, match=rf"{shard}: not a readable shard .*pipeline verify"):
        LHGDataset(dataset, "train")[0]
    (dataset / "segments.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(CorruptOutputError, match=r"segments\.parquet: not a readable Parquet table"):
        LHGDataset(dataset, "train")
    (dataset / "manifest.json").write_text("{")
    with pytest.raises(CorruptOutputError, match=r"manifest\.json: not a readable manifest"):
        read_manifest(dataset)


def test_a_full_disk_names_the_output_being_written(tmp_path):
    from pipeline.common.fsutil import atomic_path

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    target = tmp_path / "features.npy"
    with pytest.raises(OSError, match=r"No space left on device while writing: '.*features\.npy'"), \
            atomic_path(target), open("/dev/full", "wb", buffering=0) as full:
        full.write(b"x" * 4096)  # a real ENOSPC, with no file name in the error
    assert list(tmp_path.iterdir()) == []
