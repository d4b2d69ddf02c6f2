"""How much memory HAT inference needs, and the largest tile that fits a budget (``--tile auto``).

Activation-memory model (inference, batch 1, per input pixel after padding to the window):

    floats = 16 * embed_dim + heads * ws**2 / 4           # transformer body
           + (2.25 * heads * ows**2 if attention is explicit)
           + 64 * 3.25 * scale**2                       # pixel-shuffle reconstruction head

``heads`` is the largest ``num_heads`` entry and ``ows = ws + int(ws * overlap_ratio)``.
The body term is about sixteen ``embed_dim``-wide token tensors alive at once (residuals,
LayerNorm, qkv, attention output, MLP, the conv branch) plus the shifted-window mask
blocks; explicit attention also holds OCAB's score and probability matrices. The head holds
the last upsampling convolution's input, output and pixel-shuffled copy at ``scale**2``
times the pixels. The coefficients were fitted to peak-RSS measurements of fp32 CPU runs
(2-core machine, 128x128 inputs, embed_dim 24-180, heads 3-12, window 8/16, scale 1-4, fused
and explicit attention): the model lies within -5 % / +55 % of them, over-estimating most
where the x3/x4 head dominates, and by about 2.3x for HAT-S x4 on a 256x256 input. Bytes
per float: see :func:`bytes_per_float`.
"""
from __future__ import annotations

from typing import Optional

import torch

from hat.available_memory import host_available_memory

#: Fraction of free GPU memory a tile may plan to use (leaves room for the caching
#: allocator's fragmentation and cuDNN workspaces; out-of-memory still halves the tile).
GPU_BUDGET_FRACTION = 0.7

#: Fraction of available host memory a tile may plan to use on CPU (there is no
#: recoverable out-of-memory error on CPU, so stay well clear of it).
CPU_BUDGET_FRACTION = 0.5

#: Channels of HAT's reconstruction head (fixed by the architecture).
_HEAD_FEATURES = 64


def activation_floats_per_pixel(model: torch.nn.Module) -> float:
    """Peak live activations of one forward pass, in floats per (padded) input pixel."""
    heads = max(layer.residual_group.blocks[0].attn.num_heads for layer in model.layers)
    ws = model.window_size
    ows = ws + int(ws * model.overlap_ratio)
    fused = all(getattr(m, 'fused_attn', True) for m in model.modules())
    body = 16 * model.embed_dim + heads * ws ** 2 / 4
    if not fused:
        body += 2.25 * heads * ows ** 2
    head = _HEAD_FEATURES * 3.25 * model.upscale ** 2
    return body + head


def bytes_per_float(dtype: torch.dtype, device: torch.device) -> float:
    """Average bytes per activation for a compute ``dtype`` on ``device``.

    4 in fp32. 3 under fp16/bf16 autocast on CUDA (most activations in 16 bits, LayerNorm
    and softmax outputs in 32; an estimate, and out-of-memory still halves the tile). 12 under
    bf16 autocast on CPU: there, peak memory varied from 0.5x to 3.8x that of fp32 between
    identical runs (HAT-S x4, 128 and 256 px; the allocator keeps converted copies around).
    """
    if dtype == torch.float32:
        return 4.0
    return 3.0 if device.type == 'cuda' else 12.0


def padded_side(side: int, window: int) -> int:
    """``side`` rounded up to a multiple of the window (what the network actually runs on)."""
    return -(-side // window) * window


def tile_bytes(model: torch.nn.Module, h: int, w: int, float_bytes: float, tta: bool = False) -> float:
    """Estimated peak memory of running ``model`` on an ``h x w`` input (tile context included)."""
    ws = model.window_size
    pixels = padded_side(h, ws) * padded_side(w, ws)
    floats = activation_floats_per_pixel(model)
    if tta:
        # The ensemble's running sum and the current transformed output.
        floats += 2 * model.in_chans * model.upscale ** 2
    return pixels * floats * float_bytes


def available_memory(device: torch.device) -> int:
    """Bytes free for activations on ``device``: free GPU memory, or what the host, its container
    (cgroup) and the process's ulimits still allow (``hat.available_memory``)."""
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return host_available_memory()


def memory_budget(device: torch.device) -> int:
    """Bytes a tile may plan to use on ``device`` (a fraction of what is free now)."""
    fraction = GPU_BUDGET_FRACTION if device.type == 'cuda' else CPU_BUDGET_FRACTION
    return int(available_memory(device) * fraction)


def largest_tile(
    model: torch.nn.Module, h: int, w: int, tile_pad: int, budget: float, float_bytes: float, tta: bool = False
) -> Optional[int]:
    """Largest tile (a multiple of the window) whose padded tile fits ``budget`` bytes.

    Returns None when the whole ``h x w`` image fits, so it can run in one pass; never
    returns less than one window (the out-of-memory fallback handles the rest).
    """
    ws = model.window_size
    if tile_bytes(model, h, w, float_bytes, tta) <= budget:
        return None
    best = ws
    tile = ws
    while tile < max(h, w):
        # A tile's context reaches tile_pad past each side, moved out to window edges.
        side_h = min(h, tile + 2 * tile_pad + 2 * ws)
        side_w = min(w, tile + 2 * tile_pad + 2 * ws)
        if tile_bytes(model, side_h, side_w, float_bytes, tta) > budget:
            break
        best = tile
        tile += ws
    return best
