"""HATModel: BasicSR's SRModel with HAT's test-time behaviour (any size, optional tiles)."""
from __future__ import annotations

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY

from hat.tiling import tiled_forward


def super_resolve(net: torch.nn.Module, lq: torch.Tensor, scale: int, tile_opt: dict | None = None) -> torch.Tensor:
    """Run ``net`` on ``lq`` whole, or tile by tile when ``tile_opt`` (``{tile_size, tile_pad}``) is given."""
    if not tile_opt:
        return net(lq)
    align = getattr(net, 'window_size', 1)
    return tiled_forward(net, lq, scale, int(tile_opt['tile_size']), int(tile_opt.get('tile_pad', 32)), align)


@MODEL_REGISTRY.register()
class HATModel(SRModel):
    """SR model for HAT; validation and testing take any image size, and tiles if ``tile`` is set."""

    def test(self):
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = super_resolve(net, self.lq, self.opt['scale'], self.opt.get('tile'))
        net.train(was_training)
