"""Per-group feature maps and a window-border blockiness score (``hat-lam --features``).

Window attention mixes pixels only inside a window, so features can show steps along window
borders (SwinIR's early groups do; HAT's overlapping cross-attention lets windows see their
neighbours). For each residual group (HAT's RHAGs, SwinIR's RSTBs: the network's ``layers``)
this records the mean absolute activation over channels as an image, and

    blockiness = mean |f(p) - f(q)| over neighbour pairs (p, q) across a window border
                 / mean |f(p) - f(q)| over all other neighbour pairs

(differences averaged over channels; borders at multiples of the window size from the top-left
corner, the unshifted partition). 1.0 means no blocking; above 1, features jump at borders.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hat.analysis.lam import AttributionError
from hat.analysis.networks import PadToMultiple, attention_window


@dataclass
class GroupFeatures:
    """One residual group's output: its name, mean absolute activation ``(h, w)`` and blockiness."""

    name: str
    activation: np.ndarray
    blockiness: float


def core_network(net: nn.Module) -> nn.Module:
    """The network inside the padding wrapper ``hat-lam`` may have put around it."""
    return net.net if isinstance(net, PadToMultiple) else net


def residual_groups(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The residual groups of ``net``: the modules of its ``layers`` list (HAT, SwinIR and their kin)."""
    layers = getattr(core_network(net), 'layers', None)
    if not isinstance(layers, (nn.ModuleList, nn.Sequential)) or len(layers) == 0:
        raise AttributionError(f'{type(core_network(net)).__name__} has no residual groups in a `layers` list '
                               f'(as HAT and SwinIR do); feature maps need one')
    return [(f'layers.{i}', layer) for i, layer in enumerate(layers)]


def window_size_of(net: nn.Module) -> int:
    """The attention window of ``net`` (its ``window_size`` attribute)."""
    size = attention_window(core_network(net))
    if size is None:
        raise AttributionError(f'{type(core_network(net)).__name__} has no window_size; the blockiness score '
                               f'needs the attention window')
    return size


def as_feature_map(output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A group's output as ``(c, h, w)``: token sequences ``(1, h*w, c)`` are folded back to the image grid."""
    if output.ndim == 4:
        return output[0]
    h, w = size
    return output[0].transpose(0, 1).reshape(-1, h, w)


def blockiness(features: np.ndarray, window: int) -> float:
    """Mean absolute neighbour difference across window borders over that elsewhere (``features``: (c, h, w))."""
    across_w = np.abs(features[:, :, 1:] - features[:, :, :-1]).mean(axis=0)
    across_h = np.abs(features[:, 1:, :] - features[:, :-1, :]).mean(axis=0)
    border_w = (np.arange(1, features.shape[2]) % window) == 0
    border_h = (np.arange(1, features.shape[1]) % window) == 0
    at_border = np.concatenate([across_w[:, border_w].ravel(), across_h[border_h, :].ravel()])
    elsewhere = np.concatenate([across_w[:, ~border_w].ravel(), across_h[~border_h, :].ravel()])
    if at_border.size == 0 or not elsewhere.mean() > 0:
        return float('nan')
    return float(at_border.mean() / elsewhere.mean())


def group_features(net: nn.Module, lr: torch.Tensor) -> list[GroupFeatures]:
    """Run ``net`` once on ``lr`` (1, c, h, w) and summarise every residual group's output."""
    window = window_size_of(net)
    h, w = lr.shape[-2:]
    if min(h, w) <= window:
        raise AttributionError(f'the LR image is {w}x{h}: window borders need both sides above the window size '
                               f'{window}; use a larger image')
    captured: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            size = args[1] if len(args) > 1 else output.shape[-2:]
            captured[name] = as_feature_map(output.detach(), tuple(size)).float().cpu()
        return hook

    groups = residual_groups(net)
    handles = [module.register_forward_hook(keeper(name)) for name, module in groups]
    try:
        with torch.no_grad():
            net.eval()(lr)
    finally:
        for handle in handles:
            handle.remove()
    results = []
    for name, _ in groups:
        features = captured[name][:, :h, :w].numpy()
        results.append(GroupFeatures(name=name, activation=np.abs(features).mean(axis=0),
                                     blockiness=blockiness(features, window)))
    return results
