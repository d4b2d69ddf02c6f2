"""Window helpers, indices and masks against direct constructions of the original's definitions."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from hat.archs.hat_arch import (
    SHIFT_MASK_VALUE,
    relative_position_index_oca,
    relative_position_index_sa,
    unfold_windows,
    window_partition,
    window_reverse,
)
from tests.oracles import shifted_window_mask


@pytest.mark.parametrize('ws', [4, 8, 16])
def test_partition_and_reverse_round_trip(ws):
    x = torch.randn(2, 2 * ws, 3 * ws, 5)
    windows = window_partition(x, ws)
    assert windows.shape == (2 * 6, ws, ws, 5)
    assert torch.equal(windows[1], x[0, :ws, ws:2 * ws])  # second window of the first row
    assert torch.equal(window_reverse(windows, ws, 2 * ws, 3 * ws), x)


@pytest.mark.parametrize('ws', [2, 5, 8])
def test_sa_index_is_row_offset_times_width_plus_column_offset(ws):
    index = relative_position_index_sa(ws)
    for (i, j) in [(0, 0), (0, ws * ws - 1), (ws * ws - 1, 0), (ws + 1, 2 * ws - 1)]:
        dy = i // ws - j // ws + ws - 1
        dx = i % ws - j % ws + ws - 1
        assert index[i, j] == dy * (2 * ws - 1) + dx


@pytest.mark.parametrize('ws,ratio', [(16, 0.5), (8, 0.25), (12, 0.5), (6, 0.0)])
def test_oca_index_follows_original_formula(ws, ratio):
    ows = ws + int(ws * ratio)
    index = relative_position_index_oca(ws, ows)
    assert index.shape == (ws * ws, ows * ows)
    side = ws + ows - 1
    for q, k in itertools.product(range(0, ws * ws, 7), range(0, ows * ows, 11)):
        dy = k // ows - q // ws + ws - ows + 1
        dx = k % ows - q % ws + ws - ows + 1
        assert index[q, k] == dy * side + dx
    assert index.max() < side * side and index.min() >= -side * side


def loop_shift_mask(h, w, ws, shift):
    """The original's region labelling with slices, written out."""
    img = torch.zeros(1, h, w, 1)
    count = 0
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for hs in slices:
        for wsl in slices:
            img[:, hs, wsl, :] = count
            count += 1
    ids = window_partition(img, ws).view(-1, ws * ws)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return diff.masked_fill(diff != 0, SHIFT_MASK_VALUE).masked_fill(diff == 0, 0.0)


@pytest.mark.parametrize('h,w,ws', [(16, 24, 8), (8, 8, 8), (32, 16, 16), (12, 18, 6)])
def test_shift_mask_equals_region_labelling(h, w, ws):
    mask = shifted_window_mask(h, w, ws, ws // 2, dtype=torch.float64)
    assert torch.equal(mask, loop_shift_mask(h, w, ws, ws // 2).double())


@pytest.mark.parametrize('ws,ows', [(8, 12), (16, 24), (6, 6), (12, 18)])
def test_overlapping_windows_equal_zero_padded_unfold(ws, ows):
    b, h, w, c = 2, 2 * ws, 3 * ws, 4
    x = torch.randn(b, h, w, c)
    pad = (ows - ws) // 2
    ours = unfold_windows(F.pad(x, (0, 0, pad, pad, pad, pad)), ws, ows)
    unfolded = F.unfold(x.permute(0, 3, 1, 2), kernel_size=ows, stride=ws, padding=(ows - ws) // 2)
    expected = unfolded.view(b, c, ows * ows, -1).permute(0, 3, 2, 1).reshape(-1, ows * ows, c)
    assert torch.equal(ours, expected)
