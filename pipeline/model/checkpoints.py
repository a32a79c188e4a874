"""Checkpoint folders on disk: written as one unit, switched atomically, checked when read.

A checkpoint is a folder of `model.safetensors` (weights), `config.json` ({"model": ModelConfig,
"extra": ...}), optionally `train_state.pt` (optimiser, scheduler, RNG, log; read with
`weights_only=True`) and `checksums.json` (the sha256 of each of them). A folder is written complete
under `.checkpoints/<name>-<unique>/` next to its name, then the name (`last`, `best`) becomes a
relative symlink to it, replaced with `os.replace` (atomic on POSIX): a reader or a resumed run sees
the old folder or the new one, never a mix. The superseded folder is removed afterwards; folders of a
killed save (no link points to them) go at the next `sweep_checkpoints`. A name that is still a
plain folder (written before this scheme) is moved aside as `.checkpoints/<name>.legacy` just before
its first switch and put back by `sweep_checkpoints` if a kill struck in between.

Reading checks everything a damaged or edited file could break and names the file: the JSON, the
checksums, the safetensors header, the tensors against the configured model, finiteness, and the
training state's keys.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from pipeline.common.errors import InputError
from pipeline.common.fsutil import FILE_MODE, sha256_file

log = logging.getLogger(__name__)

CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_CONFIG = "config.json"
CHECKPOINT_TRAIN_STATE = "train_state.pt"
CHECKPOINT_CHECKSUMS = "checksums.json"
UNITS_DIR = ".checkpoints"  # the real folders; `last`, `best` ... are symlinks into it
LEGACY_SUFFIX = ".legacy"
CHECKSUM_FORMAT = "lhg-checkpoint-sha256-v1"
TRAIN_STATE_KEYS = ("epoch", "best_val", "optimizer", "scheduler", "rng")


class CheckpointError(InputError):
    """A checkpoint file is missing, damaged or inconsistent; the message names the file."""

    kind = "checkpoint"


class NonFiniteWeightsError(CheckpointError):
    """The weights hold NaN or inf: the model cannot produce meaningful output."""

    kind = "non_finite"


# ---------------------------------------------------------------------------------------------------------
# writing: one unit, then an atomic switch of the name


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, write: Callable[[Path], None]) -> str:
    """Write one file of a unit, flush it to disk -> its sha256."""
    write(path)
    os.chmod(path, FILE_MODE)  # safetensors creates 0600; outputs are uniform
    _fsync(path)
    return sha256_file(path)


def _switch_link(link: Path, unit: Path) -> Path | None:
    """Point `link` at `unit` atomically -> the folder it pointed at before (None if none)."""
    old: Path | None = None
    if link.is_symlink():
        old = link.parent / os.readlink(link)
    elif link.is_dir():  # a plain folder from before this scheme: moved aside, put back by a sweep if killed
        old = link.parent / UNITS_DIR / (link.name + LEGACY_SUFFIX)
        os.rename(link, old)
    tmp = link.parent / f".{link.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(unit, link.parent), tmp)
    os.replace(tmp, link)
    _fsync(link.parent)
    return old


def _remove_unit(unit: Path) -> None:
    shutil.rmtree(unit, ignore_errors=True)


def publish_checkpoint(folder: str | Path, files: dict[str, Callable[[Path], None]], label: str = "") -> Path:
    """Write a checkpoint whose files are made by `files` ({name: writer(path)}) and make `folder` (a
    name like `run/last`) point at it in one atomic step -> `folder`. A kill at any point leaves
    `folder` as it was or complete with the new files."""
    folder = Path(folder)
    units = folder.parent / UNITS_DIR
    units.mkdir(parents=True, exist_ok=True)
    unit = units / f"{folder.name}{label}-{uuid.uuid4().hex[:8]}"
    unit.mkdir()
    sums = {name: _write_file(unit / name, write) for name, write in files.items()}
    text = json.dumps({"format": CHECKSUM_FORMAT, "sha256": sums}, indent=2, sort_keys=True) + "\n"
    _write_file(unit / CHECKPOINT_CHECKSUMS, lambda p: p.write_text(text, encoding="utf-8"))
    _fsync(unit)
    old = _switch_link(folder, unit)
    if old is not None and old.resolve() not in _linked_units(folder.parent):
        _remove_unit(old)
    return folder


def _linked_units(parent: Path) -> set[Path]:
    """Unit folders some symlink in `parent` points at (resolved)."""
    return {p.resolve() for p in parent.iterdir() if p.is_symlink()}


def sweep_checkpoints(parent: str | Path) -> list[str]:
    """Clear what a killed save left in `parent` -> names removed. Call only while no other process
    writes checkpoints there (training holds the run folder's lock): a moved-aside plain folder whose
    name is missing is put back, then every unit no symlink points at and every link temporary goes."""
    parent = Path(parent)
    units = parent / UNITS_DIR
    if not units.is_dir():
        return []
    for legacy in units.glob("*" + LEGACY_SUFFIX):
        name = parent / legacy.name[: -len(LEGACY_SUFFIX)]
        if not name.exists() and not name.is_symlink():
            os.rename(legacy, name)
            log.warning("%s: restored the checkpoint a killed save had moved aside", name)
    removed = []
    for tmp in parent.glob(".*.link-*"):  # a link made but not yet switched in: its unit goes too
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    linked = _linked_units(parent)
    for unit in sorted(units.iterdir()):
        if unit.resolve() not in linked:
            _remove_unit(unit)
            removed.append(f"{UNITS_DIR}/{unit.name}")
    if removed:
        log.warning("%s: removed %d leftovers of an interrupted checkpoint save: %s", parent, len(removed),
                    ", ".join(removed))
    return removed


# ---------------------------------------------------------------------------------------------------------
# reading, each step naming the file it found wanting


def real_folder(folder: str | Path) -> Path:
    """The unit a name links to, resolved once: every file of one load then comes from the same save,
    even while a training run switches the name to a newer one."""
    folder = Path(folder)
    return folder.resolve() if folder.is_symlink() and folder.exists() else folder


def _existing(folder: Path, name: str) -> Path:
    if folder.is_symlink() and not folder.exists():
        raise CheckpointError(folder, f"link to {os.readlink(folder)}, which does not exist")
    path = folder / name
    if not path.is_file():
        raise CheckpointError(path, f"missing: a checkpoint folder holds {CHECKPOINT_WEIGHTS}, {CHECKPOINT_CONFIG} "
                                    f"and {CHECKPOINT_CHECKSUMS}")
    return path


def read_config(folder: str | Path) -> dict:
    """`config.json` as {"model": {...}, "extra": {...}}; the model part is checked by the caller."""
    path = _existing(Path(folder), CHECKPOINT_CONFIG)
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(path, f"not UTF-8 text (byte {err.start}): expected the JSON model config") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(path, f"not valid JSON ({err.msg}): expected the model config",
                              where=f"line {err.lineno}, column {err.colno}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict) \
            or not isinstance(meta.get("extra", {}), dict):
        raise CheckpointError(path, 'expected a JSON object {"model": {ModelConfig fields}, "extra": {...}}')
    return meta


def read_checksums(folder: str | Path) -> dict[str, str] | None:
    """{file name: sha256} from `checksums.json`; None for a folder written before checksums."""
    path = Path(folder) / CHECKPOINT_CHECKSUMS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(path, f"not valid JSON ({err}): expected the sha256 of each file") from None
    sums = data.get("sha256") if isinstance(data, dict) else None
    if not isinstance(sums, dict) or data.get("format") != CHECKSUM_FORMAT or CHECKPOINT_WEIGHTS not in sums:
        raise CheckpointError(path, f'expected {{"format": "{CHECKSUM_FORMAT}", "sha256": {{file: hex}}}} '
                              f"naming at least {CHECKPOINT_WEIGHTS}")
    return sums


def _checksum_faults(folder: Path, names: tuple[str, ...] | None = None) -> list[tuple[Path, str]]:
    """(file, what is wrong) for each file (of `names`, default all listed) whose sha256 differs."""
    sums = read_checksums(folder)
    if sums is None:
        return [(folder / CHECKPOINT_CHECKSUMS, "missing (a checkpoint written before checksums): integrity unknown")]
    faults = []
    for name, expected in sorted(sums.items()):
        path = folder / name
        if names is not None and name not in names:
            continue
        if not path.is_file():
            faults.append((path, f"listed in {CHECKPOINT_CHECKSUMS} but missing"))
        elif (found := sha256_file(path)) != expected:
            faults.append((path, f"sha256 {found[:16]}... differs from {expected[:16]}... recorded in "
                                 f"{CHECKPOINT_CHECKSUMS}: the file was damaged or changed after it was written"))
    return faults


def checksum_problems(folder: str | Path) -> list[str]:
    """Files whose sha256 differs from `checksums.json` (or that it lists but are gone)."""
    return [f"{path}: {message}" for path, message in _checksum_faults(Path(folder))]


def verify_sums(folder: Path, names: tuple[str, ...]) -> None:
    """Raise on the first of `names` whose checksum differs; a folder without checksums (written before
    them) is read with a warning."""
    if not (folder / CHECKPOINT_CHECKSUMS).is_file():
        log.warning("%s: no %s (written before checksums): its files cannot be verified", folder,
                    CHECKPOINT_CHECKSUMS)
        return
    for path, message in _checksum_faults(folder, names):
        raise CheckpointError(path, message)


def read_tensors(folder: str | Path, map_location: str = "cpu") -> dict:
    """The tensors of `model.safetensors`; a truncated or foreign file is named, not a library error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _existing(Path(folder), CHECKPOINT_WEIGHTS)
    try:
        return load_file(str(path), device=map_location)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(path, f"not a readable safetensors file (truncated or damaged?): {err}") from None


def non_finite_tensors(tensors: dict) -> dict[str, int]:
    """{tensor name: count of NaN/inf values} for every floating tensor that has any."""
    import torch

    bad = {}
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad[name] = int((~torch.isfinite(t)).sum())
    return bad


def check_finite(tensors: dict, path: Path) -> None:
    bad = non_finite_tensors(tensors)
    if bad:
        names = ", ".join(f"{k} ({n})" for k, n in sorted(bad.items())[:5]) + (" ..." if len(bad) > 5 else "")
        raise NonFiniteWeightsError(path, f"{len(bad)} tensors hold NaN or inf values: {names}")


def load_train_state(folder: str | Path, *, verify: bool = True) -> dict:
    """`train_state.pt` (verified against `checksums.json` when present), unpickled with
    `weights_only=True`: only tensors and plain containers, never arbitrary objects."""
    import torch

    folder = real_folder(folder)
    path = folder / CHECKPOINT_TRAIN_STATE
    if not path.is_file():
        raise CheckpointError(path, "missing: the folder has weights but not the optimiser state a resume needs")
    if verify:
        verify_sums(folder, (CHECKPOINT_TRAIN_STATE,))
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged archive; all mean the same
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(path, f"not a readable training state (a torch.save archive of tensors and "
                              f"numbers): {type(err).__name__}: {first}") from None
    missing = [k for k in TRAIN_STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(path, f"training state lacks {missing}: expected {list(TRAIN_STATE_KEYS)}")
    return state


def verify_checkpoint(folder: str | Path) -> list[str]:
    """Every problem of a checkpoint folder, each naming its file; [] when it loads and is intact."""
    from pipeline.model.network import load_checkpoint

    folder = real_folder(folder)
    if not folder.exists():
        what = f"link to missing {os.readlink(folder)}" if folder.is_symlink() else "does not exist"
        return [f"{folder}: {what}"]
    try:
        faults = _checksum_faults(folder)
    except CheckpointError as err:
        faults = [(Path(err.path), err.message)]
    problems = [f"{path}: {message}" for path, message in faults]
    damaged = {path.name for path, _ in faults}
    if CHECKPOINT_WEIGHTS not in damaged and CHECKPOINT_CONFIG not in damaged:
        try:
            load_checkpoint(folder, verify=False)
        except CheckpointError as err:
            problems.append(str(err))
    if (folder / CHECKPOINT_TRAIN_STATE).is_file() and CHECKPOINT_TRAIN_STATE not in damaged:
        try:
            load_train_state(folder, verify=False)
        except CheckpointError as err:
            problems.append(str(err))
    return problems
