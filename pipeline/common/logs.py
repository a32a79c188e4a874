"""Console output: logging setup, progress bars, and silencing MediaPipe/TFLite chatter.

Modules log through ``logging.getLogger(__name__)`` and never configure handlers; the entry points
(``python -m pipeline`` and the ``luigi`` command, see ``tasks.console``) call
``configure_logging``. Log lines go through ``tqdm.write`` so they never tear a progress bar.

Settings (environment variables win over the ``[lhg]`` section of luigi.cfg):

- ``LHG_LOG_LEVEL``: DEBUG, INFO (default), WARNING or ERROR; ``python -m pipeline --log-level``
  wins over it. Third-party loggers (distributed, transformers, urllib3, ...) stay at WARNING
  unless this asks for less.
- ``LHG_PROGRESS``: ``auto`` (default: bars on; on a non-terminal stderr, such as a CI log, a bar
  redraws at most every 30 s so a stage writes a handful of lines), ``on`` (redraw every 0.5 s
  everywhere) or ``off``.

MediaPipe 0.10.21 logs through C++ absl before ``absl::InitializeLog``: neither GLOG_minloglevel,
TF_CPP_MIN_LOG_LEVEL nor absl's Python verbosity reach it, and it writes straight to file
descriptor 2 from native threads (every process, Dask workers included, several lines per tracker).
``filter_native_stderr`` therefore filters fd 2 itself: known INFO/WARNING lines of absl and TFLite
are dropped, everything else (errors, tracebacks, bars) passes through unchanged and in order.
Child processes (Dask LocalCluster workers, Luigi worker forks) inherit the filtered descriptor.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any

LOG_LEVEL_ENV = "LHG_LOG_LEVEL"
PROGRESS_ENV = "LHG_PROGRESS"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PROGRESS_MODES = ("auto", "on", "off")
OWN_LOGGERS = ("pipeline", "tasks")
# Chatty at INFO; their warnings and errors still show.
THIRD_PARTY_LOGGERS = ("distributed", "dask", "tornado", "asyncio", "luigi", "transformers", "huggingface_hub",
                       "urllib3", "filelock", "fsspec", "matplotlib", "PIL", "numba", "absl", "torch")
_HANDLER_NAME = "lhg-console"
_progress_mode = "auto"


def resolve_level(level: str | int | None = None, *, fallback: str | None = None) -> int:
    """The logging level: `level` (an explicit choice, e.g. a CLI flag), else ``LHG_LOG_LEVEL``, else
    `fallback` (a config file), else INFO."""
    for value, source in ((level, "--log-level"), (os.environ.get(LOG_LEVEL_ENV), LOG_LEVEL_ENV),
                          (fallback, "[lhg] log_level")):
        if isinstance(value, int):
            return value
        if value:
            name = value.strip().upper()
            if name not in LEVELS:
                raise ValueError(f"{source}: expected one of {', '.join(LEVELS)}, got {value!r}")
            return getattr(logging, name)
    return logging.INFO


class TqdmHandler(logging.Handler):
    """Writes records to the current stderr through ``tqdm.write``, which redraws open bars below."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def configure_logging(level: str | int | None = None, *, fallback: str | None = None,
                      progress: str | None = None) -> int:
    """Console logging for our loggers (idempotent); returns the level used (see ``resolve_level``).

    `progress` is the configured bar mode; ``LHG_PROGRESS`` overrides it.
    """
    resolved = resolve_level(level, fallback=fallback)
    set_progress_mode(progress)
    handler = TqdmHandler()
    handler.set_name(_HANDLER_NAME)
    detail = " %(name)s" if resolved <= logging.DEBUG else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s{detail} %(message)s", "%H:%M:%S"))
    for name in OWN_LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(resolved)
        logger.propagate = False  # a root handler set up by Luigi or a library must not print twice
    quiet_third_party(resolved)
    return resolved


def quiet_third_party(level: int = logging.INFO) -> None:
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def quiet_native_logs() -> None:
    """Environment for native libraries that honour it (glog builds of MediaPipe, TensorFlow Lite);
    set before they load. mediapipe 0.10.21 itself needs ``filter_native_stderr``."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# --------------------------------------------------------------------------- progress bars


def set_progress_mode(mode: str | None) -> None:
    global _progress_mode
    if mode:
        _progress_mode = _check_mode(mode, "progress")


def _check_mode(mode: str, source: str) -> str:
    value = mode.strip().lower()
    if value not in PROGRESS_MODES:
        raise ValueError(f"{source}: expected one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
    return value


def progress_mode() -> str:
    env = os.environ.get(PROGRESS_ENV)
    return _check_mode(env, PROGRESS_ENV) if env else _progress_mode


def progress(iterable: Iterable | None = None, *, desc: str, total: float | None = None, unit: str = "it",
             leave: bool = True, **kwargs: Any):
    """A tqdm bar on stderr (done/total, elapsed, ETA) following ``LHG_PROGRESS``.

    When disabled the bar is still returned and accepts update/close/set_postfix, so callers need
    no branches.
    """
    from tqdm import tqdm

    stream = sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    mode = progress_mode()
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=stream, disable=mode == "off",
                mininterval=0.5 if tty or mode == "on" else 30.0, dynamic_ncols=tty, **kwargs)


# --------------------------------------------------------------------------- native stderr filter

_NOISE = re.compile(
    rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.+-]+:\d+\] "  # absl/glog INFO and WARNING records
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR")
_NOISE_LITERALS = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
                   b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
# every prefix of an absl/glog record header ("W0000 00:00:1795985536.250217    7089 file.cc:114] ")
_ABSL_HEADER_PREFIX = re.compile(
    rb"[IW](?:\d{0,3}|\d{4}(?: (?:[\d:.]*|\d\d:\d\d:\d+\.\d+ +(?:\d*|\d+ [\w.+-]*(?::\d*\]?)?)))?)")
_MAX_UNDECIDED = 1024


def _may_become_noise(partial: bytes) -> bool:
    """An unterminated line that could still turn out to be noise is held back until decided."""
    if len(partial) >= _MAX_UNDECIDED:
        return False
    return any(lit.startswith(partial) for lit in _NOISE_LITERALS) or bool(_ABSL_HEADER_PREFIX.fullmatch(partial))


class LineFilter:
    """Streaming filter: bytes in, bytes out, with noise lines removed.

    Lines end at b"\\n" or b"\\r" (progress bars redraw with b"\\r" and must not wait for a newline).
    An unterminated piece is passed on at once unless it could still become a noise line.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._state = "start"  # start of a line | "pass": rest of a kept line | "drop": rest of a noise line

    def feed(self, data: bytes) -> bytes:
        if self._state == "pass" and not self._pending and (_NOISE.match(data) or _may_become_noise(data)):
            self._state = "start"  # a native record written while a bar (no line end) is on screen
        data, self._pending = self._pending + data, b""
        out = []
        while data:
            cut = min((i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0), default=-1)
            piece, data = (data, b"") if cut < 0 else (data[:cut + 1], data[cut + 1:])
            ended = cut >= 0
            if self._state == "start":
                if _NOISE.match(piece):
                    self._state = "drop"
                elif not ended and _may_become_noise(piece):
                    self._pending = piece
                    break
                else:
                    self._state = "pass"
            if self._state == "pass":
                out.append(piece)
            if ended:
                self._state = "start"
        return b"".join(out)

    def flush(self) -> bytes:
        pending, self._pending = self._pending, b""
        return b"" if _NOISE.match(pending) else pending


_installed: dict[str, Any] = {}


def filter_native_stderr() -> bool:
    """Route fd 2 of this process (and its future children) through ``LineFilter``; once per process.

    Returns False when not possible (no real fd 2, e.g. under some IDEs). At exit the original stderr
    is restored and everything still in the pipe is written out.
    """
    if _installed.get("pid") == os.getpid():
        return True
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return False
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    line_filter = LineFilter()

    def pump() -> None:
        while chunk := _read(read_end):
            try:
                kept = line_filter.feed(chunk)
            except Exception:  # a filter bug must never block the process's stderr: pass it through
                kept = chunk
            _write_all(original, kept)
        _write_all(original, line_filter.flush())

    thread = threading.Thread(target=pump, name="lhg-stderr-filter", daemon=True)
    thread.start()
    _installed.update(pid=os.getpid(), original=original, read_end=read_end, thread=thread)
    atexit.register(_restore_stderr)
    return True


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:  # the console went away: nothing left to show it on
            return


def _restore_stderr() -> None:
    """Put the real stderr back on fd 2 and drain the pipe (children may still hold it for a moment)."""
    if _installed.get("pid") != os.getpid():  # a forked child: the parent owns the pump
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os.dup2(_installed["original"], 2)
    _installed["thread"].join(timeout=5.0)
    _installed.clear()
