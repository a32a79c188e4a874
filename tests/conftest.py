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
