"""Atomic writes, content hashing, the output lock and the sweep of stale temporaries.

Every output is written to `name.tmp-<host>-<pid>-<random><ext>` in the target folder and renamed
with `os.replace`, so a killed run never leaves a partial file under a final name, and the
temporary keeps the real extension for writers that sniff it. The host and pid in the name let a
later run tell a dead writer's leftovers (removed by `sweep_stale_temporaries`) from a live one's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TMP_NAME = re.compile(r"\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}")
FOREIGN_TMP_MAX_AGE_S = 7 * 24 * 3600  # temporaries of other hosts (a remote Dask cluster) go after a week
UNNAMED_TMP_MAX_AGE_S = 24 * 3600  # temporaries named before host and pid were in the name


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Outputs get the permissions of a plain `open()` (0666 minus the umask), whatever the writer chose:
# safetensors creates its files 0600.
FILE_MODE = 0o666 & ~_process_umask()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_temporaries(root: str | Path) -> tuple[int, int]:
    """Remove temporaries under `root` left by writers that died (a SIGKILL inside a write leaves
    them, GB-sized for SSL features) -> (files removed, bytes freed). A temporary of a live process
    on this host is never touched; one from another host only when older than a week; names from
    before this scheme (no host / pid) when older than a day."""
    removed = freed = 0
    now = time.time()
    for path in list(Path(root).rglob("*.tmp-*")):  # listed first: folders are removed whole
        m = _TMP_NAME.search(path.name)
        try:
            stat = path.stat()
        except OSError:
            continue
        if m and m["host"] == _HOST:
            stale = not _pid_alive(int(m["pid"]))
        else:
            stale = now - stat.st_mtime > (FOREIGN_TMP_MAX_AGE_S if m else UNNAMED_TMP_MAX_AGE_S)
        if not stale:
            continue
        if path.is_dir():  # a shard set being written (pipeline.dataset.shards)
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path, ignore_errors=True)
            removed, freed = removed + 1, freed + size
        elif path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed, freed = removed + 1, freed + stat.st_size
    return removed, freed


def temporary_name(final: Path) -> Path:
    """Where `final` is written before its rename: same folder, same extension, writer named."""
    return final.with_name(f"{final.stem}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{final.suffix}")


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, final)
    except OSError as exc:
        if exc.filename is not None:
            raise
        # a bare "[Errno 28] No space left on device" from a writer: say which output it was
        raise OSError(exc.errno, f"{exc.strerror or exc} while writing", str(final)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(final: str | Path, staging_parent: str | Path | None = None) -> Iterator[Path]:
    """Yield an empty staging folder; if the block succeeds it replaces `final` whole (a reader never
    sees a half-written folder), else it is removed. Staged next to `final` under a hidden name that
    `sweep_stale_temporaries` recognises, or in `staging_parent` (same file system)."""
    final = Path(final)
    parent = Path(staging_parent) if staging_parent is not None else final.parent
    staging = parent / f".{final.name}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        yield staging
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an unfinished or older version of it
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link `src` at `dst` (the bytes exist once), copying where the file system cannot link
    (another device, no link support); returns "hard link" or "copy"."""
    try:
        os.link(src, dst)
        return "hard link"
    except OSError as exc:
        log.info("cannot hard-link %s to %s (%s): copying", src, dst, exc.strerror or exc)
    shutil.copyfile(src, dst)
    return "copy"


def remove_other_folders(folder: Path, keep: set[str]) -> None:
    """Remove the subfolders of `folder` not named in `keep` (older versions of a keyed output)."""
    if folder.is_dir():
        for old in folder.iterdir():
            if old.is_dir() and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(final: str | Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(final: str | Path, obj: Any) -> None:
    write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
MAX_CELL_CHARS = 1000


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: cells that would start a formula get a leading
    apostrophe (the OWASP CSV-injection rule), and input-derived text is cut to `MAX_CELL_CHARS`."""
    if not isinstance(value, str):
        return value
    if len(value) > MAX_CELL_CHARS:
        value = value[:MAX_CELL_CHARS] + "..."
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def write_csv_atomic(final: str | Path, rows: list[dict[str, Any]], fieldnames: Sequence[str] | None = None,
                     *, input_text: bool = False) -> None:
    """A CSV of `rows` (columns `fieldnames`, default the first row's keys), written atomically;
    `input_text`: cells may carry user-supplied text, so each goes through `spreadsheet_safe`."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames or rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()} if input_text else row)
    write_text_atomic(final, buf.getvalue())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """What a manifest records of one file: its size and sha256 (checked by `pipeline verify`)."""
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def file_problem(path: Path, entry: dict[str, Any], *, checksums: bool) -> str | None:
    """None when `path` has the recorded size (and sha256); else what is wrong with it."""
    if not path.is_file():
        return f"{path}: missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{path}: {size} bytes, expected {entry['bytes']} (truncated or replaced)"
    if checksums and sha256_file(path) != entry["sha256"]:
        return f"{path}: sha256 differs from the one recorded when it was written (altered or corrupt)"
    return None


def stable_hash(obj: Any, n: int = 12) -> str:
    """Short hash of a JSON-serialisable value (configs, lists of input hashes)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


LOCK_FILE = ".lock"


class OutputLockedError(RuntimeError):
    """Another run is writing the same output folder."""


@contextlib.contextmanager
def output_lock(folder: str | Path, purpose: str) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` while writing it; fail at once, naming the other run, if
    another process holds it. Two runs into one folder would otherwise remove each other's files.

    An advisory `flock` on `<folder>/.lock`: released by the kernel when the holder exits, killed
    or not, so a crash never leaves a stale lock. The file records who holds it (pid, host, start
    time, command line) for the message. Local file systems only (NFS flock support varies).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            raise OutputLockedError(f"{folder} is being written by another run ({holder}); wait for it to "
                                    "finish or use another --out") from None
        info = (f"{purpose}: pid {os.getpid()} on {socket.gethostname()}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}, command: {' '.join(sys.argv)[:300]}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
