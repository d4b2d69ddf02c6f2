"""Shared fixtures: reference data, sample photos and small HAT configurations."""
from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hat  # noqa: F401  (applies the basicsr compat shim before any basicsr import)

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
REFERENCE_DIR = TESTS_DIR / 'data' / 'reference'

#: A small HAT that exercises every block type (2 groups, shifted windows, OCAB) quickly.
TINY_CONFIG = dict(
    in_chans=3, img_size=64, embed_dim=24, depths=[2, 2], num_heads=[3, 3], window_size=8,
    compress_ratio=3, squeeze_factor=6, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2,
    upscale=2, img_range=1.0, upsampler='pixelshuffle', resi_connection='1conv',
)


def load_synth_weights():
    """The reference's deterministic weight recipe (tests/data/reference/synth_weights.py)."""
    spec = importlib.util.spec_from_file_location('synth_weights', REFERENCE_DIR / 'synth_weights.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_photo(name: str = 'astronaut') -> np.ndarray:
    """An RGB uint8 photo from scikit-image's bundled samples (no download)."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> 1CHW float in [0, 1]."""
    return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)


@contextlib.contextmanager
def torch_threads(count: int = 1):
    """Run torch on ``count`` intra-op threads inside the block: on a small shared machine two threads
    waiting for each other ran the tiny test models 10-25x slower; results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """One torch thread for the test (see ``torch_threads``); modules use it with ``pytestmark``."""
    with torch_threads(1):
        yield


@pytest.fixture(scope='session')
def synth_weights():
    return load_synth_weights()


@pytest.fixture(scope='session')
def python() -> str:
    return sys.executable
