"""Turn a training checkpoint into inference weights: ``python -m hat.weights.convert IN OUT``.

Keeps one network (``params_ema`` by default, else ``params``), optionally in half precision, and writes
it by OUT's suffix (``.pth`` in BasicSR's layout or ``.safetensors``) with the HAT config recorded so that
``hat.load_hat`` needs no guessing; atomically, and never over an existing file without ``--overwrite``.

    python -m hat.weights.convert experiments/HAT_SRx4/models/net_g_250000.pth HAT_SRx4.safetensors --dtype fp16
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import torch

from hat.archs.hat_arch import HAT
from hat.weights.atomic_io import OutputExistsError
from hat.weights.checkpoint import (
    FORMATS,
    CheckpointError,
    infer_config,
    load_weights,
    read_checkpoint,
    save_weights,
    variant_name,
)

#: ``--dtype`` names and the tensors' dtype; ``None`` keeps the stored precision.
DTYPES = {'keep': None, 'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


class ConvertError(Exception):
    """A user mistake: the message says what is wrong and what to do."""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m hat.weights.convert', description=__doc__.split('\n\n')[0])
    parser.add_argument('input', help='checkpoint to read (.pth or .safetensors; a training net_g_<iter>.pth works)')
    parser.add_argument('output', help='file to write: NAME.pth (BasicSR layout) or NAME.safetensors')
    parser.add_argument('--param-key', default=None,
                        help='network to keep (default: params_ema if present, else params, else the bare weights)')
    parser.add_argument('--dtype', choices=list(DTYPES), default='keep',
                        help='precision of the written weights (default: keep; fp16 halves the size, bf16 too '
                             'with fp32\'s range)')
    parser.add_argument('--config', default=None,
                        help='training option file whose network_g gives what weights do not record '
                             '(img_range, conv_scale) when they differ from the published values')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it exists')
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    return parser.parse_args(argv)


def convert(input_path: str, output_path: str, param_key: Optional[str] = None, dtype: Optional[torch.dtype] = None,
            config_overrides: Optional[dict] = None, overwrite: bool = False) -> dict:
    """Convert ``input_path`` to ``output_path``; returns what was done (variant, parameters, sizes)."""
    suffix = os.path.splitext(output_path)[1].lower()
    if suffix not in FORMATS.values():
        raise ConvertError(f'{output_path!r}: the output name must end in .pth or .safetensors (that picks the '
                           'format)')
    if os.path.isdir(output_path):
        raise ConvertError(f'{output_path!r} is a folder; give the output file name, e.g. {output_path}/model{suffix}')
    folder = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(folder):
        raise ConvertError(f'the output folder {folder!r} does not exist; create it first')
    if os.path.exists(output_path):
        if os.path.exists(input_path) and os.path.samefile(input_path, output_path):
            raise ConvertError(f'{output_path!r} is the input file; write the converted weights under another name')
        if not overwrite:
            raise ConvertError(f'{output_path!r} already exists; pass --overwrite to replace it')

    checkpoint = read_checkpoint(input_path, param_key)
    config = {**(checkpoint.config or infer_config(checkpoint.state_dict)), **(config_overrides or {})}
    try:
        model = load_weights(HAT(**config), checkpoint.state_dict)
    except TypeError as error:
        raise ConvertError(f'the network_g options do not build a HAT: {error}') from error
    # The model's keys in its order (derived buffers included, as the original's state_dict has them),
    # with the stored tensors, so that no precision is lost before the optional cast.
    state_dict = {key: checkpoint.state_dict.get(key, value) for key, value in model.state_dict().items()}
    if dtype is not None:
        state_dict = {key: _cast(key, value, dtype) for key, value in state_dict.items()}
    save_weights(output_path, state_dict, config, overwrite=overwrite)
    dtypes = sorted({str(v.dtype).removeprefix('torch.') for v in state_dict.values() if v.is_floating_point()})
    return dict(
        variant=variant_name(config), param_key=checkpoint.param_key, format=suffix[1:], dtype='/'.join(dtypes),
        num_params=sum(p.numel() for p in model.parameters()),
        size_before=os.path.getsize(input_path), size_after=os.path.getsize(output_path),
    )


def _cast(key: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if not tensor.is_floating_point():
        return tensor  # the index buffers stay integers
    cast = tensor.to(dtype)
    if not torch.isfinite(cast).all() and torch.isfinite(tensor).all():
        raise ConvertError(f'{key} has values beyond {dtype}\'s range (largest {tensor.abs().max().item():.3g}); '
                           'use --dtype bf16 or keep fp32')
    return cast


def _mib(size: int) -> str:
    return f'{size / 2 ** 20:.1f} MiB'


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        overrides = None
        if args.config:
            from hat.weights.checkpoint import network_options

            overrides = network_options(args.config)
        done = convert(args.input, args.output, args.param_key, DTYPES[args.dtype], overrides, args.overwrite)
    except (ConvertError, CheckpointError, OutputExistsError, FileNotFoundError, ValueError, OSError) as error:
        if args.debug:
            raise
        print(f'error: {error}', file=sys.stderr)
        return 2
    network = f'{done["param_key"]} of ' if done['param_key'] else ''
    print(f'{args.input}: {network}{done["variant"]}, {done["num_params"]:,} parameters, {_mib(done["size_before"])}')
    print(f'wrote {args.output}: {done["format"]}, {done["dtype"]}, {_mib(done["size_after"])} '
          f'({done["size_after"] / done["size_before"]:.2f}x the input)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
