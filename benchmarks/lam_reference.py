"""LAM as its reference implementation computes it, for benchmarks only: the baseline ``hat-lam`` is compared with.

The same definition as ``hat.analysis.lam`` (see its docstring), computed the reference's way:
the blur path with NumPy and OpenCV (``cv2.filter2D``, float32 image, float64 kernels), then the
steps one at a time with batch 1, each a forward and a backward with the network's weights
requiring gradients (their gradients accumulate, as the reference never clears them), the input
gradient copied back to NumPy, NaN set to 0 and multiplied by the path derivative; the map is the
NumPy mean over steps, ``abs`` of its channel sum over its maximum, and the diffusion index
``(1 - gini) * 100``. Drive it with ``benchmarks/original_hat.py``'s ``OriginalHAT`` to time the
reference formulation of both the attribution and the network.
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import torch
from torch import nn


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """An isotropic ``size x size`` Gaussian (sigma plus 1e-5) summing to 1, on the axis ``-size//2+1 .. size//2``."""
    axis = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(axis, axis)
    kernel = np.exp(-(xx ** 2 + yy ** 2) / (2.0 * (sigma + 1e-5) ** 2))
    return kernel / np.sum(kernel)


def blur_path_numpy(image_hwc: np.ndarray, sigma: float, fold: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The path's inputs and derivatives, each ``(fold, c, h, w)`` float32, filtered by OpenCV."""
    sigmas = np.linspace(sigma, 0, fold + 1)
    kernels = [gaussian_kernel(size, s) for s in sigmas]
    h, w, c = image_hwc.shape
    inputs = np.zeros((fold, h, w, c))
    derivatives = np.zeros((fold, h, w, c))
    for i in range(fold):
        inputs[i] = cv2.filter2D(image_hwc, -1, kernels[i + 1]).reshape(h, w, c)
        derivatives[i] = cv2.filter2D(image_hwc, -1, (kernels[i + 1] - kernels[i]) * fold).reshape(h, w, c)
    return (np.moveaxis(inputs, 3, 1).astype(np.float32), np.moveaxis(derivatives, 3, 1).astype(np.float32))


def gradient_objective(sr: torch.Tensor, row: int, column: int, window: int) -> torch.Tensor:
    """Summed forward-difference gradient magnitude of ``sr`` in the window at (row, column)."""
    height, width = sr.shape[2], sr.shape[3]
    down = torch.pow(sr[:, :, :height - 1, :] - sr[:, :, 1:, :], 2)
    right = torch.pow(sr[:, :, :, :width - 1] - sr[:, :, :, 1:], 2)
    magnitude = torch.pow(down[:, :, :, :-1] + right[:, :, :-1, :], 0.5)
    return magnitude[:, :, row:row + window, column:column + window].sum()


def gini_numpy(values: np.ndarray) -> float:
    """Gini coefficient as LAM computes it (shifted non-negative, plus 1e-7, sorted)."""
    array = values.flatten().astype(np.float64)
    if np.amin(array) < 0:
        array -= np.amin(array)
    array += 0.0000001
    array = np.sort(array)
    n = array.shape[0]
    index = np.arange(1, n + 1)
    return float(np.sum((2 * index - n - 1) * array) / (n * np.sum(array)))


def reference_lam(model: nn.Module, lr_chw: np.ndarray, x: int, y: int, window: int = 16, fold: int = 50,
                  sigma: float = 1.2, size: int = 9, device: str = 'cpu') -> tuple[np.ndarray, float, float]:
    """(normalised map, DI, seconds) of ``model`` on the float32 ``(c, h, w)`` LR image, the reference's way."""
    start = time.perf_counter()
    model = model.to(device)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    inputs, derivatives = blur_path_numpy(np.moveaxis(lr_chw, 0, 2), sigma, fold, size)
    weighted = np.zeros_like(inputs)
    results = []
    for i in range(fold):
        image = torch.from_numpy(inputs[i]).to(device).requires_grad_(True)
        result = model(image[None])
        gradient_objective(result, y, x, window).backward()
        grad = image.grad.cpu().numpy()
        grad[np.isnan(grad)] = 0.0
        weighted[i] = grad * derivatives[i]
        results.append(result.detach())
    if device != 'cpu':
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    flat = np.abs(weighted.mean(axis=0).sum(axis=0))
    attribution_map = flat / flat.max()
    return attribution_map, (1 - gini_numpy(attribution_map)) * 100, seconds
