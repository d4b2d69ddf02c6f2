"""How much memory HAT inference needs, and the largest tile that fits a budget (``--tile auto``).

The network describes itself through ``hat.archs.banded.memory_layout`` (widths, window, scale, attention
path, band size) and ``HAT.padded_size``; this module turns that into bytes. Two regimes:

**Banded inference** (``HAT.set_banded``: ``band_tokens`` set). The
body keeps ``BODY_MAPS`` full-size ``embed_dim``-wide maps (the long skip, the group's input,
the stream and the block's output) plus temporaries for one band of whole window rows; the
reconstruction head then keeps the body's output and the preallocated output image plus one
band of its ``upscale**2``-times larger maps. Per padded ``h x w`` input, in floats::

    body = h*w * BODY_MAPS * embed_dim + band_px * (BAND_FLOATS * embed_dim + 2 * mlp_hidden)
    head = h*w * (embed_dim + 2 * in_chans * scale**2) + head_band_px * HEAD_FLOATS * head_features * scale**2
    peak = max(body, head)

with ``band_px = band_rows * w`` (``banded.body_band_rows``) and ``head_band_px`` the head's band of
rows (``2 * band_tokens / w``) plus its halo. At x4 the head's peak is the last upsampling
conv's 256-channel output next to its pixel-shuffled copy (``2 * 64 * 16`` floats per pixel).

**Whole-image inference** (``band_tokens=None``): every layer runs on
the whole image; per padded input pixel the peak is the larger of the body's and the head's::

    body = WHOLE_MAPS * embed_dim + (2.25 * heads * ows**2 if explicit)
    head = embed_dim + 2 * in_chans * scale**2 + HEAD_FLOATS * head_features * scale**2

The coefficients were fitted to the tensor memory one fp32 forward allocates on CPU (the
profiler's allocation events; tiny to HAT-sized widths, x1-x4, bands of 1024-4096 pixels:
within 10 %, see docs/benchmarks.md) and are checked against a measurement in
tests/test_memory_budget.py. Resident memory adds the allocator's slack on top (about
1.3x on glibc), which the budget fractions below leave room for. Bytes per float: see
:func:`bytes_per_float`.
"""
from __future__ import annotations

from typing import Optional

import torch

from hat.archs.banded import MemoryLayout, body_band_rows, head_band_rows, memory_layout
from hat.inference.available_memory import host_available_memory

#: Fraction of free GPU memory a tile may plan to use (leaves room for the caching
#: allocator's fragmentation and cuDNN workspaces; out-of-memory still halves the tile).
GPU_BUDGET_FRACTION = 0.7

#: Fraction of available host memory a tile may plan to use on CPU (there is no
#: recoverable out-of-memory error on CPU, so stay well clear of it).
CPU_BUDGET_FRACTION = 0.5

#: Banded inference: full-size body maps alive at the peak (the group's input, the stream and
#: the block's output, plus LayerNorm/shifted copies of a band), band temporaries per band pixel
#: (in embed_dim units, besides the MLP's hidden layer), head temporaries per head-band pixel
#: (in head_features * scale**2 units).
BODY_MAPS = 3.2
BAND_FLOATS = 7.5
HEAD_FLOATS = 2.0

#: Whole-image inference: embed_dim-wide maps alive at the body's peak.
WHOLE_MAPS = 14.5


def banded_floats(layout: MemoryLayout, h: int, w: int) -> float:
    """Peak floats of banded inference on a padded ``h x w`` input (batch 1)."""
    c, scale, ws = layout.embed_dim, layout.upscale, layout.window_size
    band_rows = body_band_rows(layout.band_tokens, 1, w, ws)
    scores = 0 if layout.fused else 2.25 * layout.num_heads * layout.overlap_size ** 2  # explicit attention
    body = h * w * BODY_MAPS * c + min(band_rows, h) * w * (BAND_FLOATS * c + 2 * layout.mlp_hidden + scores)
    head_rows = min(head_band_rows(layout.band_tokens, 1, w) + 2, h)
    head = (h * w * (c + 2 * layout.in_chans * scale ** 2)
            + head_rows * w * HEAD_FLOATS * layout.head_features * scale ** 2)
    return max(body, head)


def whole_image_floats(layout: MemoryLayout, h: int, w: int) -> float:
    """Peak floats of whole-image inference on a padded ``h x w`` input (batch 1)."""
    c, scale = layout.embed_dim, layout.upscale
    body = WHOLE_MAPS * c + (0 if layout.fused else 2.25 * layout.num_heads * layout.overlap_size ** 2)
    head = c + 2 * layout.in_chans * scale ** 2 + HEAD_FLOATS * layout.head_features * scale ** 2
    return h * w * max(body, head)


def forward_floats(model: torch.nn.Module, h: int, w: int) -> float:
    """Peak floats of one inference forward of ``model`` on an ``h x w`` input (padded to the window)."""
    layout = memory_layout(model)
    h, w = model.padded_size(h, w)
    if layout.band_tokens is not None:
        return banded_floats(layout, h, w)
    return whole_image_floats(layout, h, w)


def bytes_per_float(dtype: torch.dtype, device: torch.device) -> float:
    """Average bytes per activation for a compute ``dtype`` on ``device``.

    4 in fp32. 3 under fp16/bf16 autocast on CUDA (most activations in 16 bits, LayerNorm
    and softmax outputs in 32; an estimate, and out-of-memory still halves the tile). 6 under
    bf16 autocast on CPU: banded inference keeps the residual stream and the body's maps in
    fp32, so the peak is about fp32's (HAT x4 at 256x256: 167 MB against 177 MB), and whole-image
    runs used to vary from 0.5x to 3.8x of fp32 between identical runs; 1.5x leaves room for that.
    """
    if dtype == torch.float32:
        return 4.0
    return 3.0 if device.type == 'cuda' else 6.0


def tile_bytes(model: torch.nn.Module, h: int, w: int, float_bytes: float, tta: bool = False) -> float:
    """Estimated peak memory of running ``model`` on an ``h x w`` input (tile context included)."""
    floats = forward_floats(model, h, w)
    if tta:
        # The ensemble's running sum and the current transformed output.
        ph, pw = model.padded_size(h, w)
        floats += 2 * ph * pw * model.in_chans * model.upscale ** 2
    return floats * float_bytes


def available_memory(device: torch.device) -> int:
    """Bytes free for activations on ``device``: free GPU memory, or what the host, its container
    (cgroup) and the process's ulimits still allow (``hat.inference.available_memory``)."""
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
