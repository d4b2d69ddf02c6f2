"""BasicSR's VGG perceptual loss with weights from a local file (or random init), never downloaded.

basicsr 1.4.2's ``VGGFeatureExtractor`` loads ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` when
that file exists and otherwise asks torchvision for ImageNet weights, which downloads them. Offline
machines need the weights to come from a path named in the options. We keep basicsr's extractor and
loss unchanged and, only while one is being built, swap the torchvision VGG constructors it calls for
ones that read that path (or leave the network randomly initialised, for tests).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from basicsr.archs.vgg_arch import VGGFeatureExtractor
from basicsr.losses.basic_loss import PerceptualLoss
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn
from torchvision.models import vgg as torchvision_vgg

#: Where BasicSR users keep torchvision's VGG19 file; the recipes name this path.
DEFAULT_VGG19_PATH = 'experiments/pretrained_models/vgg19-dcbb9e9d.pth'
VGG19_URL = 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'

_SWAP_LOCK = threading.Lock()


def check_vgg_weights(weights_path: str | None, random_init: bool) -> str | None:
    """Validate the VGG weight source of the options; returns the weights path, or None for random init."""
    if random_init:
        if weights_path:
            raise ValueError(f'Give either vgg_weights_path ({weights_path}) or vgg_random_init: true, not both.')
        return None
    if not weights_path:
        raise ValueError('The perceptual loss needs VGG weights from a local file: set vgg_weights_path (e.g. '
                         f'{DEFAULT_VGG19_PATH}), or vgg_random_init: true for tests and smoke runs.')
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f'VGG weights not found at {weights_path} (looked in {path.resolve()}). Nothing is '
                                f'downloaded at run time: fetch {VGG19_URL} on a connected machine, copy it to '
                                'that path, or point vgg_weights_path at your copy.')
    return str(path)


def build_torchvision_vgg(vgg_type: str, weights_path: str | None) -> nn.Module:
    """torchvision's ``vgg_type`` with ``features`` from ``weights_path`` (None: random init); the classifier,
    which basicsr drops, stays unallocated on the meta device."""
    with torch.device('meta'):
        net = getattr(torchvision_vgg, vgg_type)(weights=None, init_weights=False)
    net.features.to_empty(device='cpu')
    if weights_path is None:
        _init_randomly(net.features)
        return net
    try:
        state_dict = torch.load(weights_path, map_location='cpu', weights_only=True)
    except Exception as err:
        raise ValueError(f'cannot read VGG weights from {weights_path}: {err}') from None
    if not isinstance(state_dict, dict):
        raise ValueError(f'{weights_path} holds a {type(state_dict).__name__}, not a torchvision {vgg_type} state_dict')
    features = {k.removeprefix('features.'): v for k, v in state_dict.items() if k.startswith('features.')}
    try:
        net.features.load_state_dict(features)
    except RuntimeError as err:
        raise ValueError(f'{weights_path} does not hold torchvision {vgg_type} weights '
                         f'(expected keys "features.N.weight/bias"): {err}') from None
    return net


def _init_randomly(features: nn.Module) -> None:
    """torchvision's VGG initialisation (He normal, fan-out, for convolutions) of the convolutional part."""
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()


class _LocalVGGConstructors:
    """Stands in for ``torchvision.models.vgg`` inside basicsr while a feature extractor is built."""

    def __init__(self, weights_path: str | None):
        self.weights_path = weights_path

    def __getattr__(self, vgg_type: str):
        if not hasattr(torchvision_vgg, vgg_type):
            raise AttributeError(vgg_type)

        def construct(**_pretrained):  # basicsr passes pretrained=True/False; the weights come from our path
            return build_torchvision_vgg(vgg_type, self.weights_path)

        return construct


@contextmanager
def vgg_weights_from(weights_path: str | None) -> Iterator[None]:
    """Within this block, basicsr's ``VGGFeatureExtractor`` takes its weights from ``weights_path`` (None: random)."""
    from hat.training.basicsr_patches import vgg_substitution

    with _SWAP_LOCK, vgg_substitution(_LocalVGGConstructors(weights_path)):
        yield


def build_vgg_feature_extractor(layer_name_list: list[str], weights_path: str | None = None,
                                random_init: bool = False, **kwargs) -> VGGFeatureExtractor:
    """basicsr's ``VGGFeatureExtractor`` with weights from ``weights_path``, or random ones if ``random_init``."""
    with vgg_weights_from(check_vgg_weights(weights_path, random_init)):
        return VGGFeatureExtractor(layer_name_list, **kwargs)


@LOSS_REGISTRY.register()
class LocalVGGPerceptualLoss(PerceptualLoss):
    """basicsr's ``PerceptualLoss`` whose VGG comes from ``vgg_weights_path`` or, for tests, ``vgg_random_init``."""

    def __init__(self, layer_weights: dict, vgg_weights_path: str | None = None, vgg_random_init: bool = False,
                 **kwargs):
        with vgg_weights_from(check_vgg_weights(vgg_weights_path, vgg_random_init)):
            super().__init__(layer_weights, **kwargs)
