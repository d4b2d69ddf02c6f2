"""Load the networks ``hat-lam`` compares: HAT weight files, BasicSR registry networks, spandrel files.

``-m`` takes one of

- a HAT weight file (``.pth``/``.safetensors``; the variant is read from the weights),
- a BasicSR option file (``.yml``/``.yaml``) whose ``network_g`` names any architecture in
  BasicSR's registry (SwinIR, RCAN, EDSR, RRDBNet, HAT ...) and whose
  ``path.pretrain_network_g`` holds its weights (``param_key_g``, ``strict_load_g`` honoured),
- any other weight file spandrel recognises, when spandrel is installed (``pip install spandrel``),

optionally prefixed with ``LABEL=`` to name its row in figures (default: the file's stem).
Networks that need input sides of a multiple (SwinIR's window) are wrapped to pad the input
by replicating its edges and crop the output, so any image size works.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from hat.weights.checkpoint import CheckpointError, load_hat, read_network

PathLike = Union[str, os.PathLike]

OPTION_EXTENSIONS = ('.yml', '.yaml')

#: Side of the probe input whose output tells a network's scale.
PROBE_SIDE = 16


class NetworkLoadError(ValueError):
    """A ``-m`` argument that cannot be loaded as a network (message names the file and the fix)."""


@dataclass
class Network:
    """A loaded SR network and what the analysis needs to know about it."""

    label: str
    module: nn.Module
    scale: int
    kind: str
    source: str
    min_size: int = 1


class PadToMultiple(nn.Module):
    """Run ``net`` on the input padded (edges replicated) to sides that are multiples of ``multiple``; crop
    the output to the input's own size times the scale."""

    def __init__(self, net: nn.Module, multiple: int):
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        out = self.net(F.pad(x, (0, pad_w, 0, pad_h), mode='replicate') if pad_h or pad_w else x)
        scale = out.shape[-2] // (h + pad_h)
        return out[..., :h * scale, :w * scale]


def split_label(spec: str) -> tuple[str, str]:
    """``LABEL=PATH`` -> (LABEL, PATH); a bare PATH is labelled with its stem."""
    label, sep, path = spec.partition('=')
    if sep and label and not Path(spec).exists():
        return label, path
    return Path(spec).stem, spec


def load_network(spec: str, device: Union[str, torch.device] = 'cpu') -> Network:
    """Load ``spec`` (see the module docstring) in eval mode on ``device`` and measure its scale."""
    label, path_text = split_label(spec)
    path = Path(path_text)
    if not path.is_file():
        raise NetworkLoadError(f'model {path_text!r} does not exist (expected a HAT weight file, a BasicSR option '
                               f'file with network_g and path.pretrain_network_g, or a file spandrel loads)')
    if path.suffix.lower() in OPTION_EXTENSIONS:
        module, kind, multiple, minimum = _from_options(path)
    else:
        module, kind, multiple, minimum = _from_weights(path)
    if multiple > 1:
        module = PadToMultiple(module, multiple)
    module = module.eval().to(device)
    return Network(label=label, module=module, scale=measure_scale(module, path), kind=kind, source=str(path),
                   min_size=minimum)


def measure_scale(module: nn.Module, path: Path) -> int:
    """The integer factor by which ``module`` enlarges a probe input (refused if not a square integer upscale)."""
    first = next(iter(module.parameters()), None)
    device = first.device if first is not None else torch.device('cpu')
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    channels = _in_channels(module)
    with torch.no_grad():
        out = module(torch.rand(1, channels, PROBE_SIDE, PROBE_SIDE, device=device, dtype=dtype))
    if out.ndim != 4 or out.shape[-1] != out.shape[-2] or out.shape[-1] % PROBE_SIDE:
        raise NetworkLoadError(f'{path}: the network turned a {PROBE_SIDE}x{PROBE_SIDE} input into '
                               f'{tuple(out.shape)}, not an integer upscale; LAM needs an SR network')
    return out.shape[-1] // PROBE_SIDE


def _in_channels(module: nn.Module) -> int:
    """Input channels of ``module``: those of its first convolution (3 if it has none)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    return 3


def _from_weights(path: Path) -> tuple[nn.Module, str, int, int]:
    """A HAT weight file, else whatever spandrel recognises."""
    try:
        model = load_hat(path)
    except CheckpointError as hat_error:
        try:
            import spandrel
        except ImportError:
            raise NetworkLoadError(f'{path} is not a HAT checkpoint ({hat_error}); for other architectures give '
                                   f'a BasicSR option file, or install spandrel (pip install spandrel)') from None
        try:
            descriptor = spandrel.ModelLoader().load_from_file(str(path))
        except Exception as error:  # spandrel raises many types for files it does not know
            raise NetworkLoadError(f'{path} is neither a HAT checkpoint ({hat_error}) nor a file spandrel '
                                   f'recognises ({error}); for other architectures give a BasicSR option file') \
                from None
        needs = descriptor.size_requirements
        return (descriptor.model, f'spandrel {descriptor.architecture.name}', max(1, needs.multiple_of),
                max(1, needs.minimum))
    return model, 'HAT', 1, 1


def _from_options(path: Path) -> tuple[nn.Module, str, int, int]:
    """The ``network_g`` of a BasicSR option file, built from BasicSR's registry, with its pretrained weights."""
    try:
        options = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, yaml.YAMLError):
        raise NetworkLoadError(f'{path} is not a readable YAML option file') from None
    if not isinstance(options, Mapping) or not isinstance(options.get('network_g'), Mapping):
        raise NetworkLoadError(f'{path} has no network_g section; write network_g: {{type: SwinIR, ...}}')
    network_options = dict(options['network_g'])
    kind = network_options.pop('type', None)
    paths = options.get('path') or {}
    weights = paths.get('pretrain_network_g') if isinstance(paths, Mapping) else None
    if not weights:
        raise NetworkLoadError(f'{path} has no path.pretrain_network_g: an attribution map of random weights means '
                               f'nothing; name the trained weights there')
    weights = Path(os.path.expanduser(str(weights)))
    if not weights.is_absolute() and not weights.exists():
        weights = path.parent / weights
    if not weights.is_file():
        raise NetworkLoadError(f'{path}: path.pretrain_network_g {str(weights)!r} does not exist')
    net = _build_registered(kind, network_options, path)
    state_dict = read_network(weights, paths.get('param_key_g', 'params')).state_dict
    try:
        net.load_state_dict(_strip_module_prefix(state_dict), strict=bool(paths.get('strict_load_g', True)))
    except RuntimeError as error:
        raise NetworkLoadError(f'{weights} does not fit the {kind} of {path}: '
                               f'{str(error).splitlines()[0]}') from None
    multiple = (attention_window(net) or 1) if kind != 'HAT' else 1
    return net, f'BasicSR {kind}', multiple, 1


def attention_window(net: nn.Module) -> Optional[int]:
    """The attention window of ``net``: its own ``window_size``, else its first submodule's (None if none has one)."""
    for module in net.modules():
        size = getattr(module, 'window_size', None)
        if isinstance(size, int) and size > 0:
            return size
    return None


def _build_registered(kind: Any, network_options: dict, path: Path) -> nn.Module:
    """Build ``kind`` from BasicSR's architecture registry (every basicsr and hat architecture)."""
    import basicsr.archs  # noqa: F401  (fills the registry with basicsr's architectures)
    from basicsr.utils.registry import ARCH_REGISTRY

    import hat  # noqa: F401  (registers HAT)

    try:
        constructor = ARCH_REGISTRY.get(kind)
    except KeyError:
        known = ', '.join(sorted(name for name, _ in ARCH_REGISTRY))
        raise NetworkLoadError(f'{path}: network_g type {kind!r} is not in BasicSR\'s registry (known: {known})') \
            from None
    try:
        return constructor(**network_options)
    except TypeError as error:
        raise NetworkLoadError(f'{path}: network_g does not build a {kind}: {error}') from None


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix DataParallel-saved weights carry (BasicSR does the same)."""
    return {key[len('module.'):] if key.startswith('module.') else key: value for key, value in state_dict.items()}
