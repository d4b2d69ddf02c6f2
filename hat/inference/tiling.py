"""Tiled inference for images too large to super-resolve in one pass.

The image is cut into ``tile_size`` cores; each core is run with up to ``tile_pad`` pixels
of context on every side, and neighbouring outputs are blended with weights that fall
linearly to zero across the context band, so no seam is left where tiles meet. Used by
``HATModel`` (option ``tile: {tile_size, tile_pad}``) and by ``hat-upscale``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch


class TileOutOfMemoryError(RuntimeError):
    """A tile did not fit in the device's memory; retry with a smaller ``tile_size``."""


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
    """Tiles covering an ``h x w`` image row by row; context is clipped at the image border.

    Context edges are moved outwards to multiples of ``align``: with ``align`` set to the
    network's window size, every tile sees the same attention windows as the whole image.
    """
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


#: Words of PyTorch's allocation failures: CUDA's, and the CPU allocator's under a ulimit or cgroup limit.
_OUT_OF_MEMORY_MESSAGES = ('out of memory', "can't allocate memory", 'not enough memory', 'cannot allocate memory')


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA and CPU allocation failures (``torch.OutOfMemoryError``, ``MemoryError``,
    the CPU allocator's ``RuntimeError``)."""
    oom_type = getattr(torch, 'OutOfMemoryError', None) or getattr(torch.cuda, 'OutOfMemoryError', ())
    if isinstance(error, MemoryError) or (oom_type and isinstance(error, oom_type)):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and any(words in message for words in _OUT_OF_MEMORY_MESSAGES)


def tiled_forward(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scale: int,
    tile_size: int,
    tile_pad: int = 32,
    align: int = 1,
    on_tile: Optional[Callable[[], None]] = None,
) -> torch.Tensor:
    """Apply ``fn`` (``(b, c, h, w) -> (b, c', h*scale, w*scale)``) to ``x`` tile by tile.

    ``align``: see :func:`iter_tiles` (pass the window size for HAT). Returns a float32
    tensor on ``x``'s device. ``on_tile`` is called after each tile (for
    progress bars). Raises :class:`TileOutOfMemoryError` if a tile does not fit.
    """
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
        if on_tile is not None:
            on_tile()
    return out / weight_sum
