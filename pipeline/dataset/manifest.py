"""The built dataset's table of contents, and its check.

`manifest.json` names the shard sets, the settings of the build and every file the dataset consists
of with its size and sha256. A dataset is complete when every listed file exists with its size;
`verify_dataset` also re-hashes (`python -m pipeline verify DATASET`) and checks that every segment
in `segments.parquet` lies inside a listed shard. Readers open the manifest and the segment table
through `read_manifest` / `read_segments`, so a damaged file is named, not a library error.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common.errors import CorruptOutputError
from pipeline.common.fsutil import file_problem

if TYPE_CHECKING:
    import pandas as pd

MANIFEST_FILE = "manifest.json"
SEGMENTS_FILE = "segments.parquet"
VERIFY_HINT = "run `python -m pipeline verify {}` to check the whole dataset, then rebuild it"


def read_manifest(dataset_dir: str | Path) -> dict[str, Any]:
    """The manifest of a built dataset; CorruptOutputError naming the file when it is unusable."""
    path = Path(dataset_dir) / MANIFEST_FILE
    if not path.is_file():
        raise CorruptOutputError(path, f"missing: {dataset_dir} is no built dataset (run BuildSplits)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or "ssl" not in manifest:
            raise ValueError("not a manifest object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptOutputError(path, f"not a readable manifest ({exc}); "
                                       + VERIFY_HINT.format(dataset_dir)) from None
    return manifest


def read_segments(dataset_dir: str | Path) -> pd.DataFrame:
    """segments.parquet of a built dataset; CorruptOutputError naming the file when it is unusable."""
    import pandas as pd

    path = Path(dataset_dir) / SEGMENTS_FILE
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise CorruptOutputError(path, "missing: " + VERIFY_HINT.format(dataset_dir)) from None
    except Exception as exc:  # pyarrow raises several unrelated types for damaged files
        raise CorruptOutputError(path, f"not a readable Parquet table ({type(exc).__name__}: {exc}); "
                                       + VERIFY_HINT.format(dataset_dir)) from None


def shard_rows(path: Path) -> dict[str, int]:
    """Rows (first dimension) of every tensor in a safetensors file, from its header alone."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100 << 20:
            raise ValueError(f"header of {size} bytes")
        header = json.loads(f.read(size))
    return {name: int(meta["shape"][0]) for name, meta in header.items() if name != "__metadata__"}


def dataset_problems(dataset_dir: str | Path, *, checksums: bool = False, ssl_sets: set[str] | None = None,
                     splits: set[str] | None = None, bounds: bool = True) -> list[str]:
    """Everything wrong with a built dataset (empty list: intact). Sizes always; segment bounds (every
    segment inside its shards' rows) when `bounds`; sha256 of every listed file when `checksums`
    (reads every byte once), except shards of SSL sets not in `ssl_sets` and of splits not in
    `splits` when those are given (a training run hashes only what it reads)."""
    dataset_dir = Path(dataset_dir)
    try:
        manifest = read_manifest(dataset_dir)
    except CorruptOutputError as exc:
        return [str(exc)]
    files = manifest.get("files")
    if not files:
        return [f"{dataset_dir / MANIFEST_FILE}: lists no files (written by an older version); rebuild the dataset"]
    ssl_dirs = {entry["dir"] + "/": name for name, entry in manifest["ssl"].items()}

    def hashed(name: str) -> bool:
        if not checksums:
            return False
        ssl_set = next((set_name for d, set_name in ssl_dirs.items() if name.startswith(d)), None)
        if ssl_set is not None:  # SSL pieces are per recording, not per split
            return ssl_sets is None or ssl_set in ssl_sets
        shard_of = Path(name).name.split("-")[0] if name.endswith(".safetensors") else None
        return splits is None or shard_of is None or shard_of in splits

    problems = [p for name, entry in files.items()
                if (p := file_problem(dataset_dir / name, entry, checksums=hashed(name)))]
    if problems or not bounds:
        return problems
    return _segment_problems(dataset_dir, manifest, set(files))


def _segment_problems(dataset_dir: Path, manifest: dict, listed: set[str]) -> list[str]:
    """Every segment lies in a listed shard, inside its rows, and has its SSL rows in every SSL set."""
    import pandas as pd

    try:
        segments = read_segments(dataset_dir)
    except CorruptOutputError as exc:
        return [str(exc)]
    indexes = {"": segments[["segment_id", "shard", "offset", "n_frames"]]}
    for name, entry in manifest["ssl"].items():
        index = pd.read_parquet(dataset_dir / entry["dir"] / "index.parquet")
        joined = segments[["segment_id", "n_frames"]].merge(index, on="segment_id", how="left")
        if joined["shard"].isna().any():
            return [f"{dataset_dir / entry['dir']}: SSL set {name} lacks segment(s) "
                    f"{joined.loc[joined['shard'].isna(), 'segment_id'].head(3).tolist()}"]
        indexes[name] = joined.assign(shard=entry["dir"] + "/" + joined["shard"])
    problems = []
    for name, table in indexes.items():
        for shard, rows in table.groupby("shard"):
            if shard not in listed:
                problems.append(f"{dataset_dir / shard}: used by {len(rows)} segment(s) but not in {MANIFEST_FILE}")
                continue
            try:
                n_rows = min(shard_rows(dataset_dir / shard).values())
            except (OSError, ValueError, KeyError, struct.error) as exc:
                problems.append(f"{dataset_dir / shard}: unreadable safetensors header ({exc})")
                continue
            end = int((rows["offset"] + rows["n_frames"]).max())
            if end > n_rows:
                problems.append(f"{dataset_dir / shard}: holds {n_rows} frames, its segments need {end}"
                                f"{' (SSL set ' + name + ')' if name else ''}")
    return problems


def require_intact(dataset_dir: str | Path, *, splits: set[str], ssl_sets: set[str] | None = None) -> None:
    """Refuse to train on or evaluate a dataset whose files are missing or altered: flipped bits in a
    shard otherwise give numbers that look like results. Hashes the shards of `splits` (and of the SSL
    sets in `ssl_sets`; None: all) and every index and table."""
    problems = dataset_problems(dataset_dir, checksums=True, ssl_sets=ssl_sets, splits=splits)
    if problems:
        raise CorruptOutputError(Path(dataset_dir) / MANIFEST_FILE, "the dataset is damaged:\n  "
                                 + "\n  ".join(problems[:10]) + "\ndelete the files named and run BuildSplits again: it "
                                 "rewrites them")
