"""Shared helpers for the end-to-end tests: run a build in-process and inspect what ran."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import luigi

from tasks.dask_runner import close_client


def run_luigi(task: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    # every task family in the summary (Luigi lists 5 by default): `families_run` reads it
    luigi.configuration.get_config().set("execution_summary", "summary_length", "0")
    result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    close_client()
    return result


def run_build(**params) -> luigi.execution_summary.LuigiRunResult:
    from tasks import BuildSplits

    return run_luigi(BuildSplits(**params))


def families_run(result) -> list[str]:
    """Task families listed under 'ran successfully' in Luigi's summary (one entry per line)."""
    text = result.summary_text
    if "ran successfully" not in text:
        return []
    block = text.split("ran successfully:")[1].split("\n\n")[0]
    return [line.strip().lstrip("- ").split("(")[0].split(" ")[-1] for line in block.splitlines()[1:] if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextmanager
def task_failures() -> Iterator[dict[str, BaseException]]:
    """Collect the exception of every task that fails while the block runs (task family -> exception)."""
    found: dict[str, BaseException] = {}

    def record(task: luigi.Task, exc: BaseException) -> None:
        found[task.get_task_family()] = exc

    luigi.Task.event_handler(luigi.Event.FAILURE)(record)
    try:
        yield found
    finally:
        luigi.Task._event_callbacks[luigi.Task][luigi.Event.FAILURE].discard(record)
