"""What the `luigi` command shows and returns: exit codes, logging, progress bars, quiet natives.

`luigi --module pipeline ...` imports `pipeline`, which imports this package (see
pipeline/__init__.py); both functions below run at that import, before Luigi reads its `[retcode]`
settings or starts the first task.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import luigi

# Luigi's own defaults are 0 for everything but unhandled exceptions, so a failed build "succeeds"
# wherever the repository's luigi.cfg is not read (another working directory, an installed package).
# The values leave room between codes, as Luigi's documentation suggests.
RETCODES = {"already_running": 10, "missing_data": 20, "not_run": 25, "task_failed": 30,
            "scheduling_error": 35, "unhandled_exception": 40}


def apply_retcode_defaults() -> None:
    """Set every `[retcode]` option the user's configuration leaves unset (theirs always win)."""
    config = luigi.configuration.get_config()
    if hasattr(config, "add_section") and not config.has_section("retcode"):  # the TOML parser has no sections
        config.add_section("retcode")
    for option, code in RETCODES.items():
        if not config.has_option("retcode", option):
            config.set("retcode", option, str(code))


def launched_by_luigi_cli() -> bool:
    """True in the `luigi` command (console script or `python -m luigi`), not when imported by code."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return argv0.name == "luigi" or (argv0.name == "__main__.py" and argv0.parent.name == "luigi")


class LuigiChatterFilter(logging.Filter):
    """Drop Luigi's per-task scheduling INFO lines ("Informed scheduler that task ... has status
    PENDING", one per task and status); keep its warnings, errors and the execution summary."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "Luigi Execution Summary" in record.getMessage()


def setup_luigi_console() -> None:
    """Console of a `luigi` run: our log level (LHG_LOG_LEVEL or `[lhg] log_level`), progress bars
    (LHG_PROGRESS or `[lhg] progress`), Luigi's chatter only at DEBUG, no MediaPipe/TFLite noise."""
    from pipeline.common.logs import configure_logging, filter_native_stderr, quiet_native_logs

    config = luigi.configuration.get_config()
    level = configure_logging(fallback=config.get("lhg", "log_level", None) or None,
                              progress=config.get("lhg", "progress", None) or None)
    quiet_native_logs()
    if level > logging.DEBUG:
        logging.getLogger("luigi-interface").addFilter(LuigiChatterFilter())
        filter_native_stderr()
