"""Published HAT variants: HAT-S, HAT and HAT-L at x2, x3 and x4 (the authors' option files).

``create_hat('HAT_SRx4')`` builds the network a published checkpoint of that name expects;
``create_hat('HAT-L', upscale=8)`` builds the HAT-L body at another scale (x1, x8, ...).
"""
from __future__ import annotations

from typing import Any

from hat.archs.hat_arch import HAT

#: Settings that weights do not record, as every published variant has them; ``hat.weights.checkpoint``
#: fills them in when it rebuilds a network from its weights alone.
UNRECORDED_DEFAULTS: dict[str, Any] = dict(img_size=64, conv_scale=0.01, img_range=1.0, upsampler='pixelshuffle')

#: Settings every published variant shares.
_COMMON: dict[str, Any] = dict(
    in_chans=3, window_size=16, overlap_ratio=0.5, mlp_ratio=2, resi_connection='1conv', **UNRECORDED_DEFAULTS,
)

#: Body of each family (everything but the scale).
FAMILIES: dict[str, dict[str, Any]] = {
    'HAT-S': dict(embed_dim=144, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=24, squeeze_factor=24),
    'HAT': dict(embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, compress_ratio=3, squeeze_factor=30),
    'HAT-L': dict(embed_dim=180, depths=[6] * 12, num_heads=[6] * 12, compress_ratio=3, squeeze_factor=30),
}

#: Published checkpoint layouts, e.g. ``PRESETS['HAT-S_SRx4']`` (HAT constructor arguments).
PRESETS: dict[str, dict[str, Any]] = {
    f'{family}_SRx{scale}': {**_COMMON, **body, 'upscale': scale}
    for family, body in FAMILIES.items()
    for scale in (2, 3, 4)
}

def preset_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Constructor arguments for ``name`` (``'HAT_SRx4'`` or a family ``'HAT'``), with overrides."""
    if name in PRESETS:
        config = dict(PRESETS[name])
    elif name in FAMILIES:
        config = {**_COMMON, **FAMILIES[name], 'upscale': 4}
    else:
        known = ', '.join(list(FAMILIES) + list(PRESETS))
        raise ValueError(f'unknown HAT variant {name!r}; choose one of: {known}')
    config.update(overrides)
    return config


def create_hat(name: str, **overrides: Any) -> HAT:
    """Build the published variant ``name`` (randomly initialised), e.g. ``create_hat('HAT-S', upscale=2)``."""
    return HAT(**preset_config(name, **overrides))
