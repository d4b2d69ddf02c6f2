"""Tiled inference agrees with whole-image inference: no seams, any tile size."""
import numpy as np
import pytest
import torch

from hat import HAT
from hat.inference.plan import TileOutOfMemoryError, count_tiles, iter_tiles, tiled_forward
from tests.conftest import TINY_CONFIG, sample_photo, to_tensor


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).square().mean().item()
    return float('inf') if mse == 0 else 10 * np.log10(1 / mse)


@pytest.fixture(scope='module')
def model(synth_weights):
    net = HAT(**TINY_CONFIG).eval()
    net.load_state_dict(synth_weights.synth_state_dict(net.state_dict(), 3))
    return net


@pytest.mark.parametrize('photo,tile_size', [('astronaut', 48), ('coffee', 37)])
def test_tiled_matches_whole_at_pad_32(model, photo, tile_size):
    x = to_tensor(sample_photo(photo)[100:191, 150:251])  # 91 x 101: not a window multiple
    with torch.no_grad():
        whole = model(x)
        tiled = tiled_forward(model, x, 2, tile_size, 32, align=model.window_size)
    assert tiled.shape == whole.shape
    assert psnr(tiled, whole) >= 50


def test_tiles_cover_the_image_once(model):
    tiles = list(iter_tiles(50, 70, 32, 8, align=8))
    assert len(tiles) == count_tiles(50, 70, 32) == 6
    covered = torch.zeros(50, 70, dtype=torch.int32)
    for t in tiles:
        covered[t.y0:t.y1, t.x0:t.x1] += 1
        assert t.ey0 % 8 == 0 and t.ex0 % 8 == 0
        assert t.ey0 <= t.y0 and t.ey1 >= t.y1 and t.ex0 <= t.x0 and t.ex1 >= t.x1
    assert torch.equal(covered, torch.ones_like(covered))


def test_constant_image_stays_constant_across_tile_borders():
    # With an identity "network", blending must reproduce the input exactly: weights sum to 1.
    x = torch.rand(1, 3, 45, 61)
    out = tiled_forward(lambda t: t.repeat_interleave(2, -1).repeat_interleave(2, -2), x, 2, 16, 5)
    assert torch.allclose(out, x.repeat_interleave(2, -1).repeat_interleave(2, -2), atol=1e-6)


def test_out_of_memory_becomes_a_clear_error():
    def fn(_):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')

    with pytest.raises(TileOutOfMemoryError, match=r'tile_size=64.*does not fit.*smaller tile_size'):
        tiled_forward(fn, torch.rand(1, 3, 100, 100), 2, 64, 16)


def test_cpu_allocation_failure_becomes_the_same_clear_error():
    def fn(_):
        torch.empty(2 ** 50, dtype=torch.uint8)  # the CPU allocator's RuntimeError, as under ulimit -v

    with pytest.raises(TileOutOfMemoryError, match=r'tile_size=64.*does not fit in memory on cpu'):
        tiled_forward(fn, torch.rand(1, 3, 100, 100), 2, 64, 16)

    def python_fn(_):
        raise MemoryError()

    with pytest.raises(TileOutOfMemoryError):
        tiled_forward(python_fn, torch.rand(1, 3, 100, 100), 2, 64, 16)


def test_other_errors_pass_through():
    def fn(_):
        raise ValueError('boom')

    with pytest.raises(ValueError, match='boom'):
        tiled_forward(fn, torch.rand(1, 3, 10, 10), 2, 8)


@pytest.mark.parametrize('size,pad', [(0, 8), (8, -1)])
def test_bad_tile_arguments(size, pad):
    with pytest.raises(ValueError, match='tile_size must be a positive|tile_pad must be >= 0'):
        tiled_forward(lambda t: t, torch.rand(1, 3, 10, 10), 1, size, pad)


def test_tiles_start_on_the_window_grid():
    # Encode each pixel's coordinates in its value, so the tiles handed to fn reveal their origin.
    h, w = 70, 90
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    x = torch.stack([rows, cols]).unsqueeze(0)
    origins = []

    def fn(tile):
        origins.append((int(tile[0, 0, 0, 0]), int(tile[0, 1, 0, 0])))
        return tile

    out = tiled_forward(fn, x, 1, 25, 10, align=16)
    assert torch.allclose(out, x)
    assert len(origins) == count_tiles(h, w, 25)
    assert all(y % 16 == 0 and x0 % 16 == 0 for y, x0 in origins), origins
