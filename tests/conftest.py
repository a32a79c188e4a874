"""Shared fixtures: the read-only real test data next to the repository, and real face photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """`../shared/testdata` (real media made by others); skip when a fresh clone lacks it."""
    if not TESTDATA.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """Real frontal face photo shipped with scikit-image (512x512), as OpenCV BGR."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="session")
def grace_hopper_bgr() -> np.ndarray:
    """Real face photo shipped with matplotlib (512x600 portrait), as OpenCV BGR."""
    import cv2
    from matplotlib import cbook

    image = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """The embedded sample corpus in quick mode (3 sessions x 40 s, 6 participants), built once."""
    from pipeline.sample.generate import make_sample_corpus

    path = tmp_path_factory.mktemp("corpus")
    make_sample_corpus(path, quick=True)
    return path


@pytest.fixture(scope="session")
def built_dataset(sample_corpus, tmp_path_factory) -> Path:
    """BuildSplits output for the sample corpus (real Luigi, Dask, MediaPipe, ffmpeg). Read-only:
    tests that change it work on a copy."""
    from .helpers import run_build

    out = tmp_path_factory.mktemp("out")
    result = run_build(corpus=str(sample_corpus), out=str(out))
    assert result.status.name == "SUCCESS", result.summary_text
    return out
