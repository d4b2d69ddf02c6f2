"""Local Attribution Maps (LAM, Gu & Dong, CVPR 2021) and the diffusion index, for any SR network.

The definition is the LAM reference implementation's, so diffusion indices compare with
published ones:

- **Objective**: on the SR output ``y``, the gradient magnitude ``sqrt((y[i, j] - y[i+1, j])**2
  + (y[i, j] - y[i, j+1])**2)`` on the ``(H-1) x (W-1)`` grid, summed over batch, channels and
  the window's rows ``y0 .. y0+window-1`` and columns ``x0 .. x0+window-1`` (HR pixels).
- **Path**: progressive Gaussian blur, ``sigma_i = linspace(sigma, 0, fold + 1)``; step ``i``
  feeds the image blurred with kernel ``i+1`` and weighs its input gradient by the image
  filtered with ``(k[i+1] - k[i]) * fold`` (borders reflected without repeating the edge).
- **Attribution**: the mean over steps of ``gradient * path derivative`` (NaN gradients count
  as 0); the map is ``abs(sum over channels)`` divided by its maximum.
- **Diffusion index**: ``(1 - gini(map)) * 100``.

What differs from the reference is only how it is computed: the path on the device in one
go, several steps per forward (as many as the memory allows), gradients for the input only
(weights are frozen for the call), the network in eval mode, and the trailing steps whose
blur kernels are deltas to float precision (path derivative below 1e-9 of the largest) skipped,
as they add nothing measurable to the mean (which still divides by ``fold``).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hat.inference.plan import memory_budget

#: Defaults of the LAM reference implementation.
WINDOW, FOLD, SIGMA, KERNEL_SIZE = 16, 50, 1.2, 9

#: Added to each path sigma before it divides (the last one is 0: the kernel becomes a delta).
SIGMA_EPSILON = 1e-5

#: Steps whose path derivative (L1 norm of its kernel difference) is below this fraction of the
#: largest are skipped: their kernels are deltas to float precision, their products with any
#: gradient vanish (at the defaults, the last 5 of 50 steps, all below 1e-13 of the largest).
NEGLIGIBLE_STEP = 1e-9

#: Largest difference from the image at which a path input counts as the image itself (its
#: output is then the SR result returned, saving a separate forward).
SAME_INPUT = 1e-6

#: Memory one path step may take, as a multiple of the tensors its forward saves for backward
#: (the forward's own temporaries and the backward's come on top of what is saved).
SAVED_TENSOR_FACTOR = 2.5


class AttributionError(ValueError):
    """The attribution cannot be computed for this network, image and window (a usage problem)."""


@dataclass
class LAMResult:
    """What :func:`local_attribution_map` returns, all on the host.

    ``attribution`` is the signed ``(c, h, w)`` mean of gradient times path derivative (LR size),
    ``map`` the normalised ``(h, w)`` float32 map, ``sr`` the ``(c, H, W)`` output of the
    unblurred image, ``seconds`` the time of the attribution and ``batch_size`` the steps per pass.
    """

    attribution: np.ndarray
    map: np.ndarray
    di: float
    sr: np.ndarray
    seconds: float
    batch_size: int


def blur_kernels(sigma: float = SIGMA, fold: int = FOLD, size: int = KERNEL_SIZE) -> np.ndarray:
    """The ``fold + 1`` isotropic ``size x size`` Gaussian kernels of the path (float64, each summing to 1)."""
    axis = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(axis, axis)
    kernels = []
    for s in np.linspace(sigma, 0.0, fold + 1):
        kernel = np.exp(-(xx ** 2 + yy ** 2) / (2.0 * (s + SIGMA_EPSILON) ** 2))
        kernels.append(kernel / kernel.sum())
    return np.stack(kernels)


def filter_reflect101(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each ``(c, h, w)`` image with each kernel, borders reflected without repeating the
    edge (OpenCV's default): ``images`` (c, h, w), ``kernels`` (k, l, l) -> (k, c, h, w)."""
    size = kernels.shape[-1]
    pad = size // 2
    padded = F.pad(images[:, None], (pad, size - 1 - pad, pad, size - 1 - pad), mode='reflect')
    # The channels as a batch of one-channel images, every kernel an output channel: (c, k, h, w).
    return F.conv2d(padded, kernels[:, None]).transpose(0, 1).contiguous()


def blur_path(image: torch.Tensor, sigma: float = SIGMA, fold: int = FOLD,
              kernel_size: int = KERNEL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The path's inputs and derivatives for a ``(c, h, w)`` image: two ``(fold, c, h, w)`` tensors
    (computed in float64, returned in ``image``'s dtype)."""
    kernels = torch.from_numpy(blur_kernels(sigma, fold, kernel_size)).to(image.device)
    image64 = image.to(torch.float64)
    inputs = filter_reflect101(image64, kernels[1:])
    derivatives = filter_reflect101(image64, (kernels[1:] - kernels[:-1]) * fold)
    return inputs.to(image.dtype), derivatives.to(image.dtype)


def contributing_steps(sigma: float = SIGMA, fold: int = FOLD, size: int = KERNEL_SIZE) -> int:
    """How many leading path steps carry a derivative above :data:`NEGLIGIBLE_STEP` of the largest;
    the rest contribute nothing measurable to the mean."""
    kernels = blur_kernels(sigma, fold, size)
    norms = np.abs(kernels[1:] - kernels[:-1]).sum(axis=(1, 2))
    if not norms.max() > 0:
        return fold
    significant = np.nonzero(norms > NEGLIGIBLE_STEP * norms.max())[0]
    return int(significant[-1]) + 1


def window_objective(sr: torch.Tensor, x0: int, y0: int, window: int = WINDOW) -> torch.Tensor:
    """LAM's objective: the summed gradient magnitude of ``sr`` (b, c, H, W) in the window at column
    ``x0``, row ``y0`` (cut where it reaches the last row or column, as the reference does)."""
    dh = (sr[:, :, :-1, :-1] - sr[:, :, 1:, :-1]) ** 2
    dw = (sr[:, :, :-1, :-1] - sr[:, :, :-1, 1:]) ** 2
    magnitude = torch.sqrt(dh + dw)
    return magnitude[:, :, y0:y0 + window, x0:x0 + window].sum()


def normalised_map(attribution: np.ndarray) -> np.ndarray:
    """``abs(sum over channels)`` of a ``(c, h, w)`` attribution divided by its maximum, as float32."""
    flat = np.abs(attribution.sum(axis=0))
    peak = flat.max()
    if not np.isfinite(peak):
        raise AttributionError('the attribution is not finite (NaN or inf): the network overflows on this image or '
                               'along the blur path; check its weights and input range')
    if not peak > 0:
        raise AttributionError('the attribution is zero everywhere: the network\'s output in this window does not '
                               'change along the blur path (a flat window?); choose a window with edges or texture')
    return (flat / peak).astype(np.float32)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of the flattened ``values`` (shifted to be non-negative, plus 1e-7, as LAM does)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x[0] < 0:
        x = x - x[0]
    x = x + 1e-7
    n = x.size
    index = np.arange(1, n + 1)
    return float(np.sum((2 * index - n - 1) * x) / (n * np.sum(x)))


def diffusion_index(attribution_map: np.ndarray) -> float:
    """DI = ``(1 - gini(map)) * 100``: 100 when every input pixel counts alike, about 0 for one pixel."""
    return (1.0 - gini(attribution_map)) * 100.0


def check_window(x0: int, y0: int, window: int, hr_height: int, hr_width: int) -> None:
    """Refuse a window that is not wholly inside an ``hr_width x hr_height`` output."""
    if window < 1:
        raise AttributionError(f'the window must be at least 1 pixel, got {window}')
    if x0 < 0 or y0 < 0 or x0 + window > hr_width or y0 + window > hr_height:
        raise AttributionError(
            f'the {window}x{window} window at x={x0}, y={y0} is not inside the {hr_width}x{hr_height} SR image; '
            f'choose x in 0..{hr_width - window} and y in 0..{hr_height - window}')


def check_path_size(height: int, width: int, kernel_size: int) -> None:
    """Refuse an LR image too small for the blur kernel's reflected border."""
    if min(height, width) <= kernel_size // 2:
        raise AttributionError(f'the LR image is {width}x{height}: a {kernel_size}x{kernel_size} blur kernel needs '
                               f'both sides above {kernel_size // 2} pixels; use a larger image or --kernel')


@contextmanager
def frozen_eval(net: nn.Module) -> Iterator[None]:
    """Run ``net`` in eval mode with its parameters not requiring gradients; restore both afterwards."""
    was_training = net.training
    flags = [(p, p.requires_grad) for p in net.parameters()]
    net.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        net.train(was_training)


def saved_bytes_per_step(net: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``net(batch)`` and the bytes of the distinct tensors autograd saves for its backward."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(batch)
    return out, sum(seen.values())


def auto_batch_size(per_step_bytes: int, path_bytes: int, device: torch.device, steps_left: int) -> int:
    """Path steps per pass that fit the memory budget of ``device`` (as ``hat-upscale`` sizes tiles)."""
    room = memory_budget(device) - path_bytes
    fits = int(room // max(per_step_bytes * SAVED_TENSOR_FACTOR, 1))
    return max(1, min(steps_left, fits))


def local_attribution_map(
    net: nn.Module,
    lr: Union[torch.Tensor, np.ndarray],
    x: int,
    y: int,
    window: int = WINDOW,
    fold: int = FOLD,
    sigma: float = SIGMA,
    kernel_size: int = KERNEL_SIZE,
    batch_size: Optional[int] = None,
    on_steps: Optional[Callable[[int], None]] = None,
) -> LAMResult:
    """LAM of ``net`` for the ``window x window`` HR window whose top-left corner is column ``x``, row ``y``.

    ``lr`` is the ``(c, h, w)`` (or ``(1, c, h, w)``) network input in [0, 1], a tensor or an HWC
    float array; the net runs on its parameters' device and dtype. ``batch_size`` is the path steps
    per pass (None: as many as fit in memory). ``on_steps(n)`` is called after every pass with the
    steps it did (a progress bar). Raises :class:`AttributionError` for a window outside the output,
    an image too small for the kernel, or an output that is not an integer upscale of the input.
    """
    if fold < 1:
        raise AttributionError(f'fold must be at least 1, got {fold}')
    if kernel_size < 1:
        raise AttributionError(f'the kernel size must be at least 1, got {kernel_size}')
    if batch_size is not None and batch_size < 1:
        raise AttributionError(f'batch_size must be at least 1, got {batch_size}')
    first = next(iter(net.parameters()), None)
    device = first.device if first is not None else torch.device('cpu')
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    image = _as_chw(lr).to(device=device, dtype=dtype)
    check_path_size(image.shape[-2], image.shape[-1], kernel_size)
    start = time.perf_counter()
    with frozen_eval(net):
        inputs, derivatives = blur_path(image, sigma, fold, kernel_size)
        path_bytes = 2 * inputs.numel() * inputs.element_size()
        total = torch.zeros(image.shape, dtype=torch.float64, device=device)
        steps = contributing_steps(sigma, fold, kernel_size)
        step, sr = 0, None
        while step < steps:
            count = 1 if step == 0 else batch_size
            chunk = inputs[step:step + count].clone().requires_grad_(True)
            if step == 0:
                out, saved = saved_bytes_per_step(net, chunk)
                _check_output(out, image, x, y, window)
                if batch_size is None:
                    batch_size = auto_batch_size(saved, path_bytes, device, max(steps - 1, 1))
            else:
                out = net(chunk)
            (grad,) = torch.autograd.grad(window_objective(out, x, y, window), chunk)
            grad.masked_fill_(grad.isnan(), 0)  # NaN (sqrt at 0) counts as 0, as in LAM
            total += (grad * derivatives[step:step + chunk.shape[0]]).to(torch.float64).sum(dim=0)
            done = chunk.shape[0]
            step += done
            if step == steps and (chunk[-1].detach() - image).abs().max() <= SAME_INPUT:
                sr = out[-1].detach()
            del out, grad, chunk
            if on_steps is not None:
                on_steps(done if step < steps else fold - step + done)
        if sr is None:
            with torch.no_grad():
                sr = net(image[None])[0]
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    attribution = (total / fold).cpu().numpy()
    attribution_map = normalised_map(attribution)
    return LAMResult(attribution=attribution, map=attribution_map, di=diffusion_index(attribution_map),
                     sr=sr.float().cpu().numpy(), seconds=seconds, batch_size=int(batch_size))


def _as_chw(lr: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """The LR input as a ``(c, h, w)`` tensor (an ``(h, w, c)`` array or ``(1, c, h, w)`` tensor accepted)."""
    if isinstance(lr, np.ndarray):
        array = lr[..., None] if lr.ndim == 2 else lr
        lr = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    if lr.ndim == 4 and lr.shape[0] == 1:
        lr = lr[0]
    if lr.ndim != 3:
        raise AttributionError(f'expected one (c, h, w) image, got shape {tuple(lr.shape)}')
    return lr.detach()


def _check_output(out: torch.Tensor, image: torch.Tensor, x: int, y: int, window: int) -> None:
    """Refuse an output that is not an integer upscale of the input, or a window outside it."""
    (h, w), (oh, ow) = image.shape[-2:], out.shape[-2:]
    scale = oh / h
    if out.ndim != 4 or oh % h or ow % w or ow // w != oh // h or not math.isclose(scale, ow / w):
        raise AttributionError(f'the network turned a {w}x{h} input into a {ow}x{oh} output: not an integer '
                               f'upscale of it, so the window cannot be placed')
    check_window(x, y, window, oh, ow)
