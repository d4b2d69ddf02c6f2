"""The one inference engine: ``hat-upscale`` (through ``Upscaler``) and validation or testing from an
option file (``HATModel.test``) both run images through :class:`InferenceEngine`, so both get the same
guarantees and the same pixels: tiles planned by :class:`~hat.inference.plan.TilePlan`, out-of-memory
halving, the x8 self-ensemble, and an fp32 redo of half-precision results with NaN/inf."""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Optional

import torch

from hat.archs.banded import BAND_TOKENS, banded_view
from hat.inference.plan import TileOutOfMemoryError, TilePlan, TileSpec, count_tiles, tiled_forward
from hat.inference.precision import precision_name

#: The eight dihedral transforms of the self-ensemble: (transpose, flip height, flip width).
TTA_TRANSFORMS = [(t, fh, fw) for t in (False, True) for fh in (False, True) for fw in (False, True)]


class InferenceEngine:
    """Runs ``model`` (eval mode, on ``device``) on NCHW float tensors, under autocast below float32; ``tile``,
    ``tile_pad``: see :class:`~hat.inference.plan.TilePlan`. Where inference chooses HAT's banded mode: a HAT
    runs as a banded view sharing its weights (``banded_view``), so the caller's model keeps its own mode."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype = torch.float32,
                 tile: TileSpec = 'auto', tile_pad: int = 32, tta: bool = False, band_tokens: int = BAND_TOKENS):
        self.model, self.device, self.dtype, self.tta = banded_view(model, band_tokens), device, dtype, tta
        self.plan = TilePlan(self.model, device, dtype, tile, tile_pad, tta)
        self.last_tile: Optional[int] = None  # the tile the last image finished with (None: whole)

    def count_passes(self, h: int, w: int) -> int:
        """Network passes for an ``h x w`` image at its first tile (x8 with the ensemble): a progress total."""
        tile = self.plan.first_tile(h, w)
        passes = 1 if tile is None else count_tiles(h, w, tile)
        return passes * (len(TTA_TRANSFORMS) if self.tta else 1)

    def run(self, x: torch.Tensor, on_pass: Optional[Callable[[], None]] = None) -> torch.Tensor:
        """``x`` ``(b, c, h, w)`` -> float32 ``(b, c, h * scale, w * scale)`` on the host (only tiles go to the
        device), unclipped; ``on_pass`` is called after every network pass (tile, ensemble transform)."""
        x = x.cpu()
        out = self._run_tiles(x, self.dtype, on_pass)
        if self.dtype != torch.float32 and not torch.isfinite(out).all():
            warnings.warn(f'{precision_name(self.dtype)} produced NaN/inf for this image; redoing it in fp32',
                          stacklevel=2)
            out = self._run_tiles(x, torch.float32, on_pass)
        return out

    def _run_tiles(self, x: torch.Tensor, dtype: torch.dtype, on_pass) -> torch.Tensor:
        """``x`` tile by tile from the planned tile; on out-of-memory halve the tile and start over."""
        h, w = x.shape[-2:]
        tile = self.plan.first_tile(h, w)
        while True:
            self.last_tile = tile
            size = tile if tile is not None else max(h, w)
            try:
                return tiled_forward(lambda t: self._forward(t, dtype, on_pass), x, self.plan.scale, size,
                                     self.plan.tile_pad, align=self.plan.window)
            except TileOutOfMemoryError as error:
                tile = self.plan.halved(size, error)
                if self.device.type == 'cuda':
                    torch.cuda.empty_cache()

    @torch.no_grad()
    def _forward(self, tile: torch.Tensor, dtype: torch.dtype, on_pass) -> torch.Tensor:
        """One tile through the network (each ensemble transform and its inverse); float32 on the device."""
        tile = tile.to(self.device)
        transforms = TTA_TRANSFORMS if self.tta else TTA_TRANSFORMS[:1]
        total = None
        for transform in transforms:
            half = contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(self.device.type, dtype)
            with half:
                out = _dihedral(self.model(_dihedral(tile, *transform)).float(), *transform, inverse=True)
            total = out if total is None else total + out
            if on_pass is not None:
                on_pass()
        return total / len(transforms)


def _dihedral(x: torch.Tensor, transpose: bool, flip_h: bool, flip_w: bool, inverse: bool = False) -> torch.Tensor:
    """One transform of the ensemble (flips, then the transpose) on ``x``, or with ``inverse`` its undoing."""
    if transpose and inverse:
        x = x.transpose(-2, -1)
    flips = [dim for dim, flip in ((-2, flip_h), (-1, flip_w)) if flip]
    x = x.flip(flips) if flips else x
    return x.transpose(-2, -1) if transpose and not inverse else x
