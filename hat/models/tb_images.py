"""Validation crops in TensorBoard (``val.tb_images: N``): bicubic, SR and GT side by side at each validation.

The first N images of each validation set give one fixed centre crop each (the same pixels every time),
logged as ``val_images/<dataset>/<image>`` so artefacts can be watched appearing over training.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

#: Side of the logged crop in HR pixels (smaller images give their whole shorter side).
CROP_SIDE = 192
#: White columns between the three panels.
GAP = 4


def centre_crop_box(height: int, width: int, scale: int) -> tuple[int, int, int]:
    """(top, left, side) of the centre square, on the LR pixel grid so bicubic, SR and GT show the same area."""
    side = min(CROP_SIDE, height, width) // scale * scale
    top = (height - side) // 2 // scale * scale
    left = (width - side) // 2 // scale * scale
    return top, left, side


def comparison_strip(lq: torch.Tensor, sr: torch.Tensor, gt: Optional[torch.Tensor], scale: int) -> np.ndarray:
    """HWC uint8 RGB: the centre crop upscaled from LR by bicubic, the SR crop and the GT crop (if any)."""
    top, left, side = centre_crop_box(sr.shape[-2], sr.shape[-1], scale)
    small = lq[..., top // scale:(top + side) // scale, left // scale:(left + side) // scale].float()
    bicubic = F.interpolate(small, scale_factor=scale, mode='bicubic', align_corners=False)
    panels = [bicubic, sr[..., top:top + side, left:left + side]]
    if gt is not None:
        panels.append(gt[..., top:top + side, left:left + side])
    gap = torch.ones(1, 3, side, GAP)
    row = torch.cat([p for panel in panels for p in (panel[:1, :3].float().cpu(), gap)][:-1], dim=-1)
    return (row[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


class ValidationImages:
    """Logs the strips of the first ``count`` images of one validation pass to a SummaryWriter."""

    def __init__(self, count: int, tb_logger: Any, dataset_name: str, current_iter: Any, scale: int):
        self.count = count if tb_logger is not None else 0
        self.tb_logger, self.dataset_name, self.current_iter, self.scale = tb_logger, dataset_name, current_iter, scale
        self.seen = 0

    def add(self, image_name: str, visuals: dict) -> None:
        """Log this image's strip if it is among the first ``count`` of the pass."""
        if self.seen < self.count:
            strip = comparison_strip(visuals['lq'], visuals['result'], visuals.get('gt'), self.scale)
            self.tb_logger.add_image(f'val_images/{self.dataset_name}/{image_name}', strip, self.current_iter,
                                     dataformats='HWC')
        self.seen += 1
