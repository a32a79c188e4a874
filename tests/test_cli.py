"""The two commands users type: `luigi --module pipeline ...` (exit codes, console) and
`python -m pipeline ...` (subcommands, --log-level, quiet MediaPipe). All run as real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
LUIGI = [sys.executable, "-m", "luigi"]  # the `luigi` command of this interpreter
NATIVE_NOISE = ("inference_feedback_manager", "XNNPACK delegate", "absl::InitializeLog", "landmark_projection")


def _env(**extra: str) -> dict[str, str]:
    """Our code from this checkout; no Luigi config file or log settings inherited from the caller."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LUIGI_CONFIG_PATH", "LHG_LOG_LEVEL", "LHG_PROGRESS", "LHG_DASK_SCHEDULER")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**env, **extra}


def _luigi(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LUIGI, "--module", "pipeline", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


def test_failed_build_exits_nonzero_outside_the_repository(tmp_path: Path) -> None:
    """No luigi.cfg in the working directory: Luigi's own retcode defaults (0) would report success."""
    assert not (tmp_path / "luigi.cfg").exists()
    done = _luigi(["BuildSplits", "--corpus", str(tmp_path / "no_such_corpus"), "--out", str(tmp_path / "out"),
                   "--local-scheduler"], cwd=tmp_path)
    assert done.returncode != 0, done.stderr
    assert "no_such_corpus" in done.stderr  # the reason is on the console
    assert "This progress looks :(" in done.stderr  # Luigi's summary is kept ...
    assert "DEBUG: " not in done.stderr and "Informed scheduler" not in done.stderr  # ... its chatter is not


def test_user_retcode_settings_win(tmp_path: Path) -> None:
    config = tmp_path / "mine.cfg"
    config.write_text("[core]\nlocal_scheduler = true\n[retcode]\ntask_failed = 3\n")
    done = _luigi(["BuildSplits", "--corpus", str(tmp_path / "no_such_corpus"), "--out", str(tmp_path / "out")],
                  cwd=tmp_path, LUIGI_CONFIG_PATH=str(config))
    assert done.returncode == 3, done.stderr


def _pipeline(args: list[str], cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=180)


def test_help_lists_subcommands_and_options() -> None:
    top = _pipeline(["--help"])
    assert top.returncode == 0 and "head-pose" in top.stdout and "--log-level" in top.stdout
    sub = _pipeline(["head-pose", "--help"])
    assert sub.returncode == 0 and "--crop" in sub.stdout and "--csv" in sub.stdout and "--face-model" in sub.stdout
    bad = _pipeline(["--log-level", "chatty", "head-pose", "x.png", "--csv", "x.csv"])
    assert bad.returncode == 2 and "--log-level" in bad.stderr


def test_cli_imports_nothing_heavy_before_a_handler_runs() -> None:
    code = ("import sys, pipeline.cli as c; c.build_parser(); "
            "print(','.join(m for m in ('mediapipe', 'cv2', 'torch', 'pandas', 'transformers', 'luigi', 'tasks') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


@pytest.fixture()
def photos(tmp_path: Path, astronaut_bgr: np.ndarray) -> tuple[Path, Path]:
    face, blank = tmp_path / "astronaut.png", tmp_path / "blank.png"
    cv2.imwrite(str(face), astronaut_bgr)
    cv2.imwrite(str(blank), np.full((120, 160, 3), 200, np.uint8))
    return face, blank


def test_head_pose_console_shows_our_messages_not_mediapipe_noise(tmp_path: Path, photos) -> None:
    face, blank = photos
    done = _pipeline(["head-pose", str(face), str(blank), "--csv", str(tmp_path / "pose.csv")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "blank.png: no face found" in done.stderr and "WARNING" in done.stderr
    assert not [n for n in NATIVE_NOISE if n in done.stderr], done.stderr
    # --log-level DEBUG leaves native logs alone (they are how one debugs MediaPipe itself)
    debug = _pipeline(["--log-level", "DEBUG", "head-pose", str(face), "--csv", str(tmp_path / "p.csv")],
                      cwd=tmp_path)
    assert debug.returncode == 0 and "inference_feedback_manager" in debug.stderr
    quiet = _pipeline(["head-pose", str(blank), "--csv", str(tmp_path / "q.csv")], cwd=tmp_path,
                      LHG_LOG_LEVEL="ERROR")
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr
