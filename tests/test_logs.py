"""Console plumbing: native-log filter, log levels, progress bars, per-stage bars of the build."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.common import logs
from pipeline.common.logs import LineFilter, configure_logging, progress, resolve_level

REPO = Path(__file__).resolve().parents[1]
# verbatim lines from a MediaPipe 0.10.21 FaceMesh run
ABSL_WARNING = (b"W0000 00:00:1795985536.250217    7089 inference_feedback_manager.cc:114] Feedback manager "
                b"requires a model with a single signature inference. Disabling support for feedback tensors.\n")
XNNPACK = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
ABSL_ERROR = b"E0000 00:00:1795985536.250217    7089 calculator_graph.cc:928] INVALID_ARGUMENT: bad input\n"


def feed_all(chunks: list[bytes]) -> bytes:
    line_filter = LineFilter()
    return b"".join(line_filter.feed(c) for c in chunks) + line_filter.flush()


def test_filter_drops_known_native_info_and_warnings_only():
    out = feed_all([b"12:00:01 INFO    corpus x\n", XNNPACK, ABSL_BANNER, ABSL_WARNING, ABSL_ERROR,
                    b"WARNING: a luigi warning\n", b"Traceback (most recent call last):\n"])
    assert out == (b"12:00:01 INFO    corpus x\n" + ABSL_ERROR + b"WARNING: a luigi warning\n"
                   b"Traceback (most recent call last):\n")


def test_filter_handles_lines_split_anywhere():
    stream = b"kept 1\n" + ABSL_WARNING + b"kept 2\n" + XNNPACK + b"kept 3\n"
    for cut in range(1, len(stream)):
        assert feed_all([stream[:cut], stream[cut:]]) == b"kept 1\nkept 2\nkept 3\n", cut


def test_filter_passes_bar_redraws_at_once_and_drops_noise_written_over_a_bar():
    line_filter = LineFilter()
    assert line_filter.feed(b"\rhead features:  33%|###   | 2/6") == b"\rhead features:  33%|###   | 2/6"
    assert line_filter.feed(ABSL_WARNING) == b""  # a worker's record landing on the bar line
    assert line_filter.feed(b"\rhead features: 100%|######| 6/6\n") == b"\rhead features: 100%|######| 6/6\n"
    assert line_filter.feed(b"I") == b""  # could still become an absl INFO record: held ...
    assert line_filter.feed(b"nformed\n") == b"Informed\n"  # ... and released once it cannot


CHILD = f"import os; os.write(2, {ABSL_WARNING + XNNPACK + b'child line' + bytes([10])!r})"
INSTALLED = f"""
import os, subprocess, sys
from pipeline.common.logs import filter_native_stderr
assert filter_native_stderr()
os.write(2, {ABSL_WARNING + XNNPACK!r})  # C-level writes to fd 2, as MediaPipe's threads do
print("python line", file=sys.stderr)
subprocess.run([sys.executable, "-c", {CHILD!r}], check=True)  # inherits the filtered fd 2
raise SystemExit("fatal: shown at exit")  # printed after the pump must have drained
"""


def test_installed_filter_covers_children_and_keeps_the_last_words():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", INSTALLED], env=env, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == ["python line", "child line", "fatal: shown at exit"]


@pytest.fixture()
def restore_logging():
    names = [*logs.OWN_LOGGERS, *logs.THIRD_PARTY_LOGGERS]
    saved = {n: (logging.getLogger(n).level, logging.getLogger(n).propagate, list(logging.getLogger(n).handlers))
             for n in names}
    yield
    for name, (level, propagate, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers
    logs.set_progress_mode("auto")


def test_level_precedence_flag_then_env_then_config(monkeypatch):
    monkeypatch.delenv(logs.LOG_LEVEL_ENV, raising=False)
    assert resolve_level() == logging.INFO
    assert resolve_level(fallback="warning") == logging.WARNING
    monkeypatch.setenv(logs.LOG_LEVEL_ENV, "ERROR")
    assert resolve_level(fallback="DEBUG") == logging.ERROR
    assert resolve_level("debug", fallback="WARNING") == logging.DEBUG
    monkeypatch.setenv(logs.LOG_LEVEL_ENV, "loud")
    with pytest.raises(ValueError, match="LHG_LOG_LEVEL"):
        resolve_level()


def test_configure_logging_is_idempotent_and_quiets_libraries(restore_logging, monkeypatch, capsys):
    monkeypatch.delenv(logs.LOG_LEVEL_ENV, raising=False)
    configure_logging("INFO")
    configure_logging("INFO")
    assert len([h for h in logging.getLogger("tasks").handlers if h.get_name() == "lhg-console"]) == 1
    logging.getLogger("tasks.build").info("story line")
    logging.getLogger("distributed.scheduler").info("chatter")
    logging.getLogger("pipeline.x").debug("detail")
    err = capsys.readouterr().err
    assert err.count("story line") == 1 and "chatter" not in err and "detail" not in err


def test_progress_modes(restore_logging, monkeypatch):
    monkeypatch.delenv(logs.PROGRESS_ENV, raising=False)
    assert not progress(total=3, desc="x").disable
    logs.set_progress_mode("off")
    assert progress(total=3, desc="x").disable
    monkeypatch.setenv(logs.PROGRESS_ENV, "on")
    assert not progress(total=3, desc="x").disable
    monkeypatch.setenv(logs.PROGRESS_ENV, "sometimes")
    with pytest.raises(ValueError, match="LHG_PROGRESS"):
        progress(total=3, desc="x")


def test_stage_bar_and_quarantine_lines(tmp_path, monkeypatch, capsys, caplog):
    """A batch of real FBank jobs (one bad file): a bar with done/total and one warning naming the file."""
    from pipeline.features.jobs import run_audio_job
    from tasks.dask_runner import run_jobs

    monkeypatch.setenv("LHG_DASK_SCHEDULER", "inline")
    monkeypatch.delenv(logs.PROGRESS_ENV, raising=False)
    sf.write(tmp_path / "good.wav", np.zeros(16000, np.float32) + 1e-3, 16000)
    (tmp_path / "bad.wav").write_bytes(b"not audio" * 50)
    jobs = [{"session_id": "s01", "participant_id": p, "config": {"fbank_bins": 80}, "audio": str(tmp_path / f),
             "offset_s": 0.0, "out_table": str(tmp_path / f"{p}.npy"), "out_record": str(tmp_path / f"{p}.json")}
            for p, f in (("P01", "good.wav"), ("P02", "bad.wav"))]
    with caplog.at_level(logging.INFO, logger="tasks"):
        records = list(run_jobs(run_audio_job, jobs))
    assert [r["status"] for r in records] == ["ok", "rejected"]
    err = capsys.readouterr().err
    assert "FBank" in err and "2/2" in err and "quarantined=1" in err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "s01/P02" in warnings[0] and "bad.wav" in warnings[0]
    assert any("FBank: 2 recording(s)" in r.getMessage() for r in caplog.records)


def test_ssl_job_in_this_process_shows_seconds_done(tmp_path, monkeypatch, capsys):
    """A GPU run computes SSL features in the main process: long recordings get their own bar."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from pipeline.config import SSLConfig
    from pipeline.features.jobs import run_ssl_job

    monkeypatch.delenv(logs.PROGRESS_ENV, raising=False)
    torch.manual_seed(0)
    config = transformers.HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=4)
    transformers.HubertModel(config).eval().save_pretrained(str(tmp_path / "tiny"))
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a.wav", rng.normal(0, 0.1, 16000 * 12).astype(np.float32), 16000)
    ssl_cfg = {**asdict(SSLConfig(device="cpu", chunk_s=4.0)), "mode": "none"}
    record = run_ssl_job({"session_id": "s01", "participant_id": "P01", "config": ssl_cfg,
                          "audio": str(tmp_path / "a.wav"), "offset_s": 0.0, "model": "tiny",
                          "model_dir": str(tmp_path / "tiny"), "model_tag": "tiny-0",
                          "out_table": str(tmp_path / "f.safetensors"), "out_record": str(tmp_path / "f.json"),
                          "spans": [[0, 150]]})  # the whole 12 s
    assert record["status"] == "ok" and record["shape"][0] == 12 * 50
    err = capsys.readouterr().err
    assert "SSL s01/P01" in err and "/12.0" in err  # seconds of audio (redraws are throttled)
