"""LAM's algorithm against its definition: footprints, global terms, a plain float64 implementation, DI."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CONFIG, sample_photo, torch_threads
from PIL import Image
from torch import nn

import hat
from hat.analysis import diffusion_index, local_attribution_map
from hat.analysis.features import blockiness, group_features
from hat.analysis.lam import AttributionError, blur_kernels, blur_path, contributing_steps, gini

SCALE = 2


class LocalNet(nn.Module):
    """One 3x3 conv in LR, then bicubic x2: each output pixel sees a known LR neighbourhood."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.conv(x), scale_factor=SCALE, mode='bicubic', align_corners=False)


class GlobalNet(LocalNet):
    """LocalNet times a per-channel gain of the global average (a channel attention): every input pixel matters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * torch.exp(10 * x.mean(dim=(2, 3), keepdim=True))


def photo_lr(side: int = 32) -> np.ndarray:
    """A real photo's HR crop downscaled x2 with PIL's bicubic, as HWC float32 in [0, 1]."""
    hr = sample_photo('astronaut')[60:60 + side * SCALE, 180:180 + side * SCALE]
    lr = Image.fromarray(np.ascontiguousarray(hr)).resize((side, side), Image.BICUBIC)
    return np.asarray(lr, dtype=np.float32) / 255.0


def lr_footprint(first: int, last: int, side: int) -> tuple[int, int]:
    """LR rows (or columns) that HR rows ``first..last`` of LocalNet depend on: bicubic's 4 taps, then the conv's 1."""
    low = math.floor((first + 0.5) / SCALE - 0.5) - 1 - 1
    high = math.floor((last + 0.5) / SCALE - 0.5) + 2 + 1
    return max(low, 0), min(high, side - 1)


def plain_lam(net: nn.Module, lr: np.ndarray, x: int, y: int, window: int, fold: int, sigma: float = 1.2,
              size: int = 9) -> np.ndarray:
    """LAM's definition step by step in float64 (OpenCV filtering, batch 1, autograd per step)."""
    axis = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(axis, axis)
    kernels = []
    for s in np.linspace(sigma, 0, fold + 1):
        k = np.exp(-(xx ** 2 + yy ** 2) / (2 * (s + 1e-5) ** 2))
        kernels.append(k / k.sum())
    image = lr.astype(np.float64)
    total = np.zeros(image.shape[::-1][:1] + image.shape[:2])
    for i in range(fold):
        blurred = cv2.filter2D(image, -1, kernels[i + 1], borderType=cv2.BORDER_REFLECT_101)
        derivative = cv2.filter2D(image, -1, (kernels[i + 1] - kernels[i]) * fold, borderType=cv2.BORDER_REFLECT_101)
        inp = torch.from_numpy(blurred.transpose(2, 0, 1).copy())[None].requires_grad_(True)
        out = net(inp)
        dh = (out[:, :, :-1, :-1] - out[:, :, 1:, :-1]) ** 2
        dw = (out[:, :, :-1, :-1] - out[:, :, :-1, 1:]) ** 2
        torch.sqrt(dh + dw)[:, :, y:y + window, x:x + window].sum().backward()
        grad = np.nan_to_num(inp.grad[0].numpy(), nan=0.0)
        total += grad * derivative.transpose(2, 0, 1)
    flat = np.abs((total / fold).sum(axis=0))
    return flat / flat.max()


def normalised64(attribution: np.ndarray) -> np.ndarray:
    """The map of a signed attribution in float64 (the returned map is float32)."""
    flat = np.abs(attribution.astype(np.float64).sum(axis=0))
    return flat / flat.max()


def test_blur_path_is_opencv_filtering_with_reflected_borders():
    image = photo_lr(20)
    inputs, derivatives = blur_path(torch.from_numpy(image.transpose(2, 0, 1).copy()), 1.2, 5, 9)
    kernels = blur_kernels(1.2, 5, 9)
    for i in range(5):
        expected = cv2.filter2D(image, -1, kernels[i + 1])
        expected_derivative = cv2.filter2D(image, -1, (kernels[i + 1] - kernels[i]) * 5)
        assert np.abs(inputs[i].numpy().transpose(1, 2, 0) - expected).max() < 1e-6
        assert np.abs(derivatives[i].numpy().transpose(1, 2, 0) - expected_derivative).max() < 1e-6
    assert np.abs(inputs[-1].numpy().transpose(1, 2, 0) - image).max() < 1e-7  # sigma 0: the image itself


def test_local_network_has_zero_attribution_outside_its_footprint():
    lr = photo_lr(32)
    x, y, window = 24, 30, 8
    result = local_attribution_map(LocalNet(), lr, x, y, window=window, fold=8)
    rows = lr_footprint(y, y + window, 32)
    cols = lr_footprint(x, x + window, 32)
    outside = np.ones_like(result.map, dtype=bool)
    outside[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = False
    assert np.all(result.attribution[:, outside] == 0)
    assert np.all(result.map[outside] == 0)
    assert result.map[rows[0] + 3:rows[1] - 2, cols[0] + 3:cols[1] - 2].min() > 0  # the window's own pixels count
    assert result.map.max() == 1.0


def test_global_term_spreads_attribution_everywhere_and_raises_di():
    lr = photo_lr(32)
    local = local_attribution_map(LocalNet(), lr, 24, 30, window=8, fold=8)
    spread = local_attribution_map(GlobalNet(), lr, 24, 30, window=8, fold=8)
    assert np.all(spread.map > 0)
    assert spread.di > local.di + 5.0


def test_map_equals_a_plain_float64_step_by_step_implementation_on_tiny_hat():
    torch.manual_seed(0)
    net = hat.HAT(**TINY_CONFIG).double().eval()  # eval: no stochastic depth in the plain run either
    lr = photo_lr(24)
    with torch_threads(1):
        ours = local_attribution_map(net, lr.astype(np.float64), 14, 18, window=12, fold=5, batch_size=3)
        expected = plain_lam(net, lr, 14, 18, window=12, fold=5)
    assert ours.batch_size == 3
    assert np.abs(normalised64(ours.attribution) - expected).max() < 1e-9
    assert np.abs(ours.map - expected).max() < 1e-6
    assert abs(ours.di - diffusion_index(expected)) < 1e-4
    assert ours.sr.shape == (3, 48, 48)
    assert all(p.requires_grad for p in net.parameters())  # weights restored after the call


def test_skipped_trailing_steps_change_nothing_at_the_default_fold():
    assert contributing_steps(1.2, 50, 9) == 45  # kernels of sigma <= 0.12 are deltas to float precision
    net = LocalNet().double()
    lr = photo_lr(20)
    ours = local_attribution_map(net, lr.astype(np.float64), 10, 12, window=8, fold=50)
    expected = plain_lam(net, lr, 10, 12, window=8, fold=50)
    assert np.abs(normalised64(ours.attribution) - expected).max() < 1e-9


def test_diffusion_index_of_constant_and_single_pixel_maps():
    assert abs(diffusion_index(np.full((32, 32), 0.5)) - 100.0) < 1e-3
    single = np.zeros((32, 32))
    single[5, 7] = 1.0
    assert diffusion_index(single) < 0.2
    assert abs(gini(np.array([0.0, 0.0, 0.0, 1.0])) - 0.75) < 1e-5  # n=4: (2*4-4-1)*1 / (4*1)


def test_window_outside_the_output_and_tiny_images_are_refused():
    lr = photo_lr(16)
    with pytest.raises(AttributionError, match='not inside'):
        local_attribution_map(LocalNet(), lr, 20, 0, window=16, fold=2)
    with pytest.raises(AttributionError, match='kernel'):
        local_attribution_map(LocalNet(), lr[:4, :4], 0, 0, window=4, fold=2)


def test_blockiness_sees_steps_at_window_borders_only():
    rng = np.random.default_rng(0)
    ramp = np.broadcast_to(np.arange(32.0), (4, 32, 32)) + rng.normal(0, 0.01, (4, 32, 32))
    assert abs(blockiness(ramp, 8) - 1.0) < 0.05
    blocks = np.kron(rng.normal(size=(4, 4, 4)), np.ones((1, 8, 8))) + rng.normal(0, 0.01, (4, 32, 32))
    assert blockiness(blocks, 8) > 20


def test_group_features_cover_every_residual_group_of_tiny_hat():
    torch.manual_seed(0)
    net = hat.HAT(**TINY_CONFIG)
    lr = torch.from_numpy(photo_lr(20).transpose(2, 0, 1).copy())[None]
    groups = group_features(net, lr)
    assert [g.name for g in groups] == ['layers.0', 'layers.1']
    assert all(g.activation.shape == (20, 20) and np.isfinite(g.blockiness) for g in groups)
