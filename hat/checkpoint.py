"""Reading HAT checkpoints: pick the weights, infer the architecture, load strictly.

A BasicSR checkpoint holds ``params_ema`` and/or ``params``; other tools save a bare
``state_dict`` (sometimes with DDP's ``module.`` prefix). Every read uses
``torch.load(..., weights_only=True)``, so a checkpoint cannot run code.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping, Optional, Union

import torch

from hat.archs.hat_arch import HAT, NUM_FEAT

StateDict = dict[str, torch.Tensor]

#: Keys every HAT checkpoint has; their absence means "not a HAT checkpoint".
REQUIRED_KEYS = (
    'conv_first.weight',
    'layers.0.residual_group.blocks.0.attn.relative_position_bias_table',
    'layers.0.residual_group.blocks.0.conv_block.cab.0.weight',
    'layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight',
    'layers.0.residual_group.blocks.0.mlp.fc1.weight',
    'layers.0.residual_group.overlap_attn.relative_position_bias_table',
    'conv_last.weight',
)

#: Keys tried in order when a checkpoint file holds several networks (BasicSR's layout).
PARAM_KEYS = ('params_ema', 'params')

#: Buffers derived from the window size; filled from the model when a checkpoint lacks them.
DERIVED_BUFFERS = ('relative_position_index_SA', 'relative_position_index_OCA')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as, or does not match, the requested HAT."""


def read_state_dict(path: Union[str, os.PathLike], param_key: Optional[str] = None) -> StateDict:
    """Load the weights in ``path``: ``param_key`` if given, else ``params_ema``, ``params``, or a bare state_dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path!r}; pass the path of a .pth file')
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        raise CheckpointError(f'cannot read {path!r} as a PyTorch weights file (loaded with weights_only=True): '
                              f'{error}') from error
    if not isinstance(content, Mapping):
        raise CheckpointError(f'{path!r} holds a {type(content).__name__}, not a state_dict')
    keys = [param_key] if param_key else PARAM_KEYS
    for key in keys:
        if isinstance(content.get(key), Mapping):
            content = content[key]
            break
    else:
        if param_key:
            raise CheckpointError(f'{path!r} has no {param_key!r} entry; it has: {sorted(content)[:10]}')
    state_dict = {_strip_prefix(k): v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise CheckpointError(f'{path!r} contains no tensors at the top level or under {list(PARAM_KEYS)}; '
                              f'its entries are: {sorted(content)[:10]}')
    return state_dict


def _strip_prefix(key: str) -> str:
    return key[len('module.'):] if key.startswith('module.') else key


def _require(state_dict: Mapping[str, Any], keys) -> None:
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise CheckpointError(f'not a HAT checkpoint: missing keys {missing} '
                              f'(first keys present: {list(state_dict)[:5]})')


def _square_side(count: int, what: str) -> int:
    side = math.isqrt(count)
    if side * side != count:
        raise CheckpointError(f'{what} has {count} entries, which is not a square: not a HAT checkpoint')
    return side


def _ratio_for(total: int, part: int, what: str) -> int:
    """The integer ``r`` with ``total // r == part`` (the original's ``num_feat // ratio``)."""
    if part >= 1 and total // (total // part) == part:
        return total // part
    for ratio in range(1, total + 1):
        if total // ratio == part:
            return ratio
    raise CheckpointError(f'cannot infer {what}: {part} channels do not come from {total} by an integer ratio')


def _float_ratio(total: int, part: int) -> float:
    """A float ``r`` with ``int(total * r) == part``."""
    ratio = part / total
    return ratio if int(total * ratio) == part else math.nextafter(ratio, math.inf)


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """HAT constructor arguments that reproduce ``state_dict``'s layout (``img_range`` and
    ``conv_scale`` are not stored in weights and get their published defaults)."""
    _require(state_dict, REQUIRED_KEYS)
    embed_dim, in_chans = state_dict['conv_first.weight'].shape[:2]
    block_ids: dict[int, set[int]] = {}
    for key in state_dict:
        match = re.match(r'layers\.(\d+)\.residual_group\.blocks\.(\d+)\.', key)
        if match:
            block_ids.setdefault(int(match[1]), set()).add(int(match[2]))
    layers = sorted(block_ids)
    if layers != list(range(len(layers))):
        raise CheckpointError(f'residual groups are not numbered 0..n-1: {layers}')
    depths = [len(block_ids[i]) for i in layers]
    num_heads = [state_dict[f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table'].shape[1]
                 for i in layers]

    block = 'layers.0.residual_group.blocks.0.'
    window_size = (_square_side(state_dict[block + 'attn.relative_position_bias_table'].shape[0],
                                'the window bias table') + 1) // 2
    oca_side = _square_side(state_dict['layers.0.residual_group.overlap_attn.relative_position_bias_table'].shape[0],
                            'the overlapping-attention bias table')
    enlarge = oca_side + 1 - 2 * window_size
    compress = state_dict[block + 'conv_block.cab.0.weight'].shape[0]
    squeeze = state_dict[block + 'conv_block.cab.3.attention.1.weight'].shape[0]
    hidden = state_dict[block + 'mlp.fc1.weight'].shape[0]

    upsample_convs = sorted(int(m[1]) for k in state_dict if (m := re.match(r'upsample\.(\d+)\.weight$', k)))
    if not upsample_convs:
        upscale = 1
    elif state_dict[f'upsample.{upsample_convs[0]}.weight'].shape[0] == 9 * NUM_FEAT:
        upscale = 3
    else:
        upscale = 2 ** len(upsample_convs)

    config: dict[str, Any] = dict(
        in_chans=int(in_chans),
        img_size=max(64, window_size),
        embed_dim=int(embed_dim),
        depths=depths,
        num_heads=[int(h) for h in num_heads],
        window_size=window_size,
        compress_ratio=_ratio_for(embed_dim, compress, 'compress_ratio'),
        squeeze_factor=_ratio_for(embed_dim, squeeze, 'squeeze_factor'),
        conv_scale=0.01,
        overlap_ratio=_float_ratio(window_size, enlarge),
        mlp_ratio=_float_ratio(embed_dim, hidden),
        qkv_bias=block + 'attn.qkv.bias' in state_dict,
        patch_norm='patch_embed.norm.weight' in state_dict,
        upscale=upscale,
        img_range=1.0,
        upsampler='pixelshuffle',
        resi_connection='1conv' if 'conv_after_body.weight' in state_dict else 'identity',
    )
    if 'absolute_pos_embed' in state_dict:
        config.update(ape=True, img_size=_square_side(state_dict['absolute_pos_embed'].shape[1],
                                                      'absolute_pos_embed'))
    return config


def load_weights(model: HAT, state_dict: Mapping[str, torch.Tensor]) -> HAT:
    """Load ``state_dict`` into ``model`` strictly, explaining any mismatch; returns ``model``."""
    state_dict = {_strip_prefix(k): v for k, v in state_dict.items()}
    expected = model.state_dict()
    for name in DERIVED_BUFFERS:
        state_dict.setdefault(name, expected[name])
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if len(missing) > len(expected) // 2:
        raise CheckpointError(f'not a HAT checkpoint: {len(missing)} of {len(expected)} keys are missing, '
                              f'e.g. {missing[:8]}')
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
                  for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if mismatched or missing or unexpected:
        details = []
        if mismatched:
            details.append(f'{len(mismatched)} shapes differ, e.g. {mismatched[:5]}')
        if missing:
            details.append(f'missing keys {missing[:8]}')
        if unexpected:
            details.append(f'unexpected keys {unexpected[:8]}')
        raise CheckpointError('checkpoint is another HAT variant than the model: ' + '; '.join(details)
                              + '. Build the model from the checkpoint (hat.load_hat) or fix network_g.')
    model.load_state_dict(state_dict, strict=True)
    return model


def load_hat(
    source: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
    device: Union[str, torch.device] = 'cpu',
    param_key: Optional[str] = None,
    **overrides: Any,
) -> HAT:
    """Build a HAT from a checkpoint path or state_dict alone and load it strictly, in eval mode.

    ``overrides`` replace inferred arguments, e.g. ``img_range=255.`` or ``conv_scale=...``
    for checkpoints trained with other values than the published ones.
    """
    state_dict = source if isinstance(source, Mapping) else read_state_dict(source, param_key)
    config = {**infer_config(state_dict), **overrides}
    model = load_weights(HAT(**config), state_dict)
    return model.eval().to(device)
