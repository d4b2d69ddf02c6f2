"""Where tiles are planned: tile geometry, blended tiled inference, and the memory one HAT forward needs.

Tile context is moved out to the window grid (a tile sees the whole image's attention windows) and
outputs are blended with weights falling linearly to zero across it, so no seam is left. The memory
coefficients were fitted to fp32 CPU forwards and are checked in tests/test_memory_budget.py;
docs/upscale.md ("Large images: tiles") explains the model.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import torch

from hat.archs.banded import MemoryLayout, body_band_rows, head_band_rows, memory_layout
from hat.archs.hat_arch import window_padding
from hat.inference.available_memory import host_available_memory

#: Fraction of free GPU memory a tile may plan to use (the caching allocator's fragmentation and
#: cuDNN workspaces need the rest; out-of-memory still halves the tile).
GPU_BUDGET_FRACTION = 0.7

#: Fraction of available host memory a tile may plan to use on CPU (there is no recoverable
#: out-of-memory error on CPU, so stay well clear of it).
CPU_BUDGET_FRACTION = 0.5

#: Banded inference: full-size body maps alive at the peak, band temporaries per band pixel (in
#: embed_dim units, besides the MLP's hidden layer), head temporaries per head-band pixel (in
#: head_features * scale**2 units).
BODY_MAPS = 3.2
BAND_FLOATS = 7.5
HEAD_FLOATS = 2.0

#: Whole-image inference: embed_dim-wide maps alive at the body's peak.
WHOLE_MAPS = 14.5

#: Words of PyTorch's allocation failures: CUDA's, and the CPU allocator's under a ulimit or cgroup limit.
_OUT_OF_MEMORY_MESSAGES = ('out of memory', "can't allocate memory", 'not enough memory', 'cannot allocate memory')

TileSpec = Union[int, str, None]


class TileOutOfMemoryError(RuntimeError):
    """A tile did not fit in the device's memory; retry with a smaller ``tile_size``."""


class NotEnoughMemoryError(MemoryError):
    """Not even the smallest tile and the image's result fit in the memory available."""


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA and CPU allocation failures (``torch.OutOfMemoryError``, ``MemoryError``,
    the CPU allocator's ``RuntimeError``)."""
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(words in message for words in _OUT_OF_MEMORY_MESSAGES)


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Tile:
    """One tile: its core ``[y0, y1) x [x0, x1)`` and the core plus context ``[ey0, ey1) x [ex0, ex1)``."""

    y0: int
    y1: int
    x0: int
    x1: int
    ey0: int
    ey1: int
    ex0: int
    ex1: int


def iter_tiles(h: int, w: int, tile_size: int, tile_pad: int, align: int = 1) -> Iterator[Tile]:
    """Tiles covering an ``h x w`` image row by row; context is clipped at the image border and its
    edges moved outwards to multiples of ``align`` (the window size for HAT)."""
    if tile_size < 1:
        raise ValueError(f'tile_size must be a positive number of pixels, got {tile_size}')
    if tile_pad < 0:
        raise ValueError(f'tile_pad must be >= 0, got {tile_pad}')
    for y0 in range(0, h, tile_size):
        for x0 in range(0, w, tile_size):
            y1, x1 = min(y0 + tile_size, h), min(x0 + tile_size, w)
            yield Tile(y0, y1, x0, x1, _floor(y0 - tile_pad, align), _ceil(y1 + tile_pad, align, h),
                       _floor(x0 - tile_pad, align), _ceil(x1 + tile_pad, align, w))


def _floor(value: int, align: int) -> int:
    return max(value // align * align, 0)


def _ceil(value: int, align: int, limit: int) -> int:
    return min(-(-value // align) * align, limit)


def count_tiles(h: int, w: int, tile_size: int) -> int:
    """Number of tiles :func:`iter_tiles` yields."""
    return -(-h // tile_size) * -(-w // tile_size)


def _ramp(start: int, core_start: int, core_end: int, end: int, scale: int, device) -> torch.Tensor:
    """1-D blend weights over ``[start, end) * scale``: 1 on the core, linear to ~0 at a context edge."""
    pos = torch.arange(start * scale, end * scale, device=device, dtype=torch.float32) + 0.5
    weight = torch.ones_like(pos)
    left, right = (core_start - start) * scale, (end - core_end) * scale
    if left:
        weight = torch.minimum(weight, (pos - start * scale) / left)
    if right:
        weight = torch.minimum(weight, (end * scale - pos) / right)
    return weight


def tiled_forward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, tile_size: int,
                  tile_pad: int = 32, align: int = 1) -> torch.Tensor:
    """Apply ``fn`` (``(b, c, h, w) -> (b, c', h*scale, w*scale)``) to ``x`` tile by tile, blended, as float32
    on ``x``'s device; raises :class:`TileOutOfMemoryError` if a tile does not fit."""
    b, _, h, w = x.shape
    out: Optional[torch.Tensor] = None
    weight_sum = torch.zeros(h * scale, w * scale, device=x.device, dtype=torch.float32)
    for t in iter_tiles(h, w, tile_size, tile_pad, align):
        try:
            result = fn(x[..., t.ey0:t.ey1, t.ex0:t.ex1])
        except Exception as error:
            if is_out_of_memory(error):
                raise TileOutOfMemoryError(
                    f'a {t.ey1 - t.ey0}x{t.ex1 - t.ex0} tile (tile_size={tile_size}, tile_pad={tile_pad}) does not '
                    f'fit in memory on {x.device}; use a smaller tile_size') from error
            raise
        if out is None:
            out = torch.zeros(b, result.shape[1], h * scale, w * scale, device=x.device, dtype=torch.float32)
        weight = _ramp(t.ey0, t.y0, t.y1, t.ey1, scale, x.device)[:, None] \
            * _ramp(t.ex0, t.x0, t.x1, t.ex1, scale, x.device)[None, :]
        ys, xs = slice(t.ey0 * scale, t.ey1 * scale), slice(t.ex0 * scale, t.ex1 * scale)
        out[..., ys, xs] += result.to(device=x.device, dtype=torch.float32) * weight
        weight_sum[ys, xs] += weight
    return out / weight_sum


# ----------------------------------------------------------------------------- memory terms
def forward_floats(layout: MemoryLayout, h: int, w: int) -> float:
    """Peak floats of one inference forward (batch 1) on an ``h x w`` input, padded to the window here."""
    c, scale, ws = layout.embed_dim, layout.upscale, layout.window_size
    h, w = h + window_padding(h, ws), w + window_padding(w, ws)
    head_maps = HEAD_FLOATS * layout.head_features * scale ** 2
    kept = c + 2 * layout.in_chans * scale ** 2  # the body's output and two output-sized images
    scores = 0 if layout.fused else 2.25 * layout.num_heads * layout.overlap_size ** 2  # explicit attention
    if layout.band_tokens is None:  # whole-image inference
        return h * w * max(WHOLE_MAPS * c + scores, kept + head_maps)
    band_rows = min(body_band_rows(layout.band_tokens, 1, w, ws), h)
    head_rows = min(head_band_rows(layout.band_tokens, 1, w) + 2, h)
    body = h * w * BODY_MAPS * c + band_rows * w * (BAND_FLOATS * c + 2 * layout.mlp_hidden + scores)
    return max(body, h * w * kept + head_rows * w * head_maps)


def bytes_per_float(dtype: torch.dtype, device: torch.device) -> float:
    """Average bytes per activation for a compute ``dtype`` on ``device``: 4 in fp32, estimates under autocast
    (3 on CUDA: LayerNorm and softmax outputs stay 32-bit; 6 for bf16 on CPU, whose peak is erratic unbanded)."""
    if dtype == torch.float32:
        return 4.0
    return 3.0 if device.type == 'cuda' else 6.0


def memory_budget(device: torch.device) -> int:
    """Bytes a tile may plan to use on ``device``: a fraction of the free GPU memory (this process's cached
    blocks included), or of what the host, its cgroup and ulimits still allow (``host_available_memory``)."""
    if device.type == 'cuda':
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((torch.cuda.mem_get_info(device)[0] + cached) * GPU_BUDGET_FRACTION)
    return int(host_available_memory() * CPU_BUDGET_FRACTION)


# ----------------------------------------------------------------------------- the plan
class TilePlan:
    """How one network runs images on one device: the first tile, what a tile costs, the smaller tile after
    out-of-memory. ``tile``: ``'auto'`` (the whole image if it fits the memory budget, else the largest tile
    that does), a size in input pixels (at least one window), or None (the whole image, unplanned)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype = torch.float32,
                 tile: TileSpec = 'auto', tile_pad: int = 32, tta: bool = False):
        if tile is not None and tile != 'auto' and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
            raise ValueError(f"tile must be a positive number of pixels, 'auto' or None; got {tile!r}")
        if tile_pad < 0:
            raise ValueError(f'tile_pad must be >= 0, got {tile_pad}')
        self.model, self.device, self.tile, self.tile_pad, self.tta = model, device, tile, tile_pad, tta
        self.window, self.scale, self.in_chans = int(model.window_size), int(model.upscale), int(model.in_chans)
        self.float_bytes = bytes_per_float(dtype, device)

    def tile_bytes(self, h: int, w: int) -> float:
        """Estimated peak memory of one forward on an ``h x w`` tile (context included; with the x8
        ensemble's running sum and current output)."""
        floats = forward_floats(memory_layout(self.model), h, w)
        if self.tta:
            floats += 2 * (h + window_padding(h, self.window)) * (w + window_padding(w, self.window)) \
                * self.in_chans * self.scale ** 2
        return floats * self.float_bytes

    def result_bytes(self, h: int, w: int) -> int:
        """The blended float32 result of an ``h x w`` image and its weights (kept on the host)."""
        return (self.in_chans + 1) * h * w * self.scale ** 2 * 4

    def tile_input(self, tile: int, h: int, w: int) -> tuple[int, int]:
        """Size of a ``tile``'s input in an ``h x w`` image: context reaches ``tile_pad`` past each edge,
        moved out to windows."""
        return min(h, tile + 2 * self.tile_pad + 2 * self.window), min(w, tile + 2 * self.tile_pad + 2 * self.window)

    def largest_tile(self, h: int, w: int, budget: float) -> Optional[int]:
        """Largest window-multiple tile whose input fits ``budget`` bytes; None when the whole image
        fits; never less than one window (out-of-memory halving handles the rest)."""
        if self.tile_bytes(h, w) <= budget:
            return None
        tile = self.window
        while tile + self.window < max(h, w) and self.tile_bytes(*self.tile_input(tile + self.window, h, w)) <= budget:
            tile += self.window
        return tile

    def first_tile(self, h: int, w: int) -> Optional[int]:
        """The tile an ``h x w`` image starts with (None: whole image in one pass); raises
        :class:`NotEnoughMemoryError` when even its result and the smallest tile exceed the budget."""
        if self.tile is None:
            return None
        if self.tile != 'auto':
            tile = max(self.tile, self.window)  # smaller tiles would only be padded up to a window
            return None if tile >= max(h, w) else tile
        budget = memory_budget(self.device)
        if self.device.type == 'cpu':
            budget -= self.result_bytes(h, w)  # the blended result lives next to the tiles
        tile = self.largest_tile(h, w, budget)
        smallest = self.tile_bytes(*self.tile_input(self.window, h, w))
        if tile is not None and smallest > budget:
            where = 'the host' if self.device.type == 'cpu' else str(self.device)
            raise NotEnoughMemoryError(
                f'a {w}x{h} image does not fit in the memory of {where}: its x{self.scale} result alone needs '
                f'{_gib(self.result_bytes(h, w))} on the host and the smallest tile {_gib(smallest)} more, but '
                f'only {_gib(memory_budget(self.device))} may be used now; free memory, use a smaller image '
                f'or a machine with more memory')
        return tile

    def halved(self, size: int, error: TileOutOfMemoryError) -> int:
        """The tile to retry with after ``size`` ran out of memory: half, in whole windows, at least one
        window; raises a clear :class:`TileOutOfMemoryError` when ``size`` was already one window."""
        smaller = max(size // 2 // self.window * self.window, self.window)
        if smaller >= size:
            elsewhere = ' or use --device cpu' if self.device.type == 'cuda' else ''
            raise TileOutOfMemoryError(
                f'even a {size}px tile does not fit in memory on {self.device}; free memory{elsewhere}, or use a '
                f'smaller tile and tile pad (--tile/--tile-pad; tile_size/tile_pad under tile: in an option '
                f'file)') from error
        warnings.warn(f'out of memory with {size}px tiles on {self.device}; retrying with {smaller}px', stacklevel=3)
        return smaller


def _gib(n_bytes: float) -> str:
    return f'{n_bytes / 2 ** 30:.2f} GiB'
