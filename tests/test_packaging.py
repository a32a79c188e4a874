"""The installed package (a wheel, not the source tree) works: `pip install .` users build datasets too.

The wheel is built offline from a copy of the repository's packages (a build inside the repository
would leave `build/` and `*.egg-info` behind) and installed with `--target`; the checks then run in
a subprocess whose only copy of our code is that folder, from a working directory outside the repo.
"""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_SHIPPED = {"tests"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the project's wheel without network access (no dependencies, no isolated build env)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for folder in REPO.iterdir():  # every top-level package, as setuptools' package discovery sees them
        if (folder / "__init__.py").is_file() and folder.name not in NOT_SHIPPED:
            shutil.copytree(folder, src / folder.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheels")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-cache-dir", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("lhg_pipeline-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def _run_installed(site: Path, cwd: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LUIGI_CONFIG_PATH")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-c", code, str(site), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


WRITE_CARD = """
import json, sys
from pathlib import Path
import pipeline
from pipeline.dataset.datacard import write_data_card
site, dataset = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
summary = json.loads(next(dataset.glob("build-*.json")).read_text())
card = write_data_card(dataset, summary)
# the code and the template came from the installed wheel, not from the source tree
for name in ("pipeline", "data_cards"):
    module = sys.modules.get(name)
    assert module is None or Path(module.__file__).resolve().is_relative_to(site), (name, module)
print(card)
"""


def test_installed_wheel_writes_a_data_card(installed: Path, built_dataset: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    source = built_dataset / "dataset"
    for path in [source / "segments.parquet", *source.glob("build-*.json")]:
        shutil.copy2(path, dataset / path.name)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = _run_installed(installed, outside, WRITE_CARD, str(dataset))
    assert done.returncode == 0, done.stderr
    card = (dataset / "data_card.md").read_text()
    assert card.startswith("# Data card: listening-head-generation dataset")
    assert "$" not in card.split("## Configuration")[0]  # every template field was filled
    assert (dataset / "segment_lengths.png").is_file()


def test_wheel_metadata_declares_what_the_code_imports(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
        names = archive.namelist()
    requires = {re.match(r"[A-Za-z0-9._-]+", r).group().lower() for r in metadata.get_all("Requires-Dist")}
    assert "tqdm" in requires  # progress bars are imported directly
    assert not {"librosa", "ffmpeg-python"} & requires  # never imported (librosa pulls numba)
    assert "data_cards/template.md" in names
