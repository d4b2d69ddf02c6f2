"""Export a HAT checkpoint to ONNX with dynamic batch, height and width: ``python -m hat.weights.export``.

Like ``HAT.forward`` the graph reflect-pads to a multiple of the window, runs the network and crops; traced
with ``torch.export`` (opset 17 or newer), window counts and padding stay symbolic. Inputs need two windows
per side (32 pixels for the published window of 16). When onnxruntime is installed the written model is
compared with PyTorch (max abs difference <= 1e-4). Needs ``pip install onnx onnxscript``.

    python -m hat.weights.export --weights HAT_SRx4.pth --output hat_x4.onnx
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from hat.archs.hat_arch import HAT, pad_to_multiple
from hat.weights.atomic_io import write_bytes_atomic
from hat.weights.checkpoint import load_hat

#: Oldest opset accepted; 18 is the dynamo exporter's default.
MIN_OPSET = 17
DEFAULT_OPSET = 18
TOLERANCE = 1e-4


class PaddedHAT(nn.Module):
    """``HAT.forward`` in export-friendly form: ``HAT.forward`` checks, pads and crops outside the
    compiled graph (``torch.compiler.disable``); here the same padding and crop are traced."""

    def __init__(self, net: HAT):
        super().__init__()
        self.net = net

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[-2:]
        scale = self.net.upscale
        return self.net.forward_padded(pad_to_multiple(lr, self.net.window_size))[..., :h * scale, :w * scale]


def min_side(net: HAT) -> int:
    """Smallest input side the exported graph takes (two windows)."""
    return 2 * net.window_size


def export_onnx(net: HAT, output: Path, opset: int = DEFAULT_OPSET, overwrite: bool = False) -> Path:
    """Write ``net`` (eval mode, float32, CPU) as an ONNX model with input ``lr`` and output ``sr``."""
    if opset < MIN_OPSET:
        raise ValueError(f'opset {opset} is too old: use --opset {MIN_OPSET} or newer')
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f'{output} already exists; pass --overwrite to replace it')
    net = net.float().cpu().eval()
    side = min_side(net)
    example = torch.rand(2, net.in_chans, side + net.window_size + 3, side + 5)  # sizes that need padding
    dims = {0: torch.export.Dim('batch', min=1), 2: torch.export.Dim('height', min=side),
            3: torch.export.Dim('width', min=side)}
    with torch.no_grad():
        program = torch.onnx.export(PaddedHAT(net).eval(), (example,), dynamo=True, opset_version=opset,
                                    input_names=['lr'], output_names=['sr'], dynamic_shapes={'lr': dims},
                                    verbose=False)
    write_bytes_atomic(output, program.model_proto.SerializeToString(), overwrite=overwrite)
    return output


def check_onnx(path: Path, net: HAT, sizes: Sequence[tuple[int, int]], batch: int = 2) -> float:
    """Max abs difference between onnxruntime and PyTorch over random inputs of ``sizes``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    net = net.float().cpu().eval()
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for h, w in sizes:
        x = torch.rand(batch, net.in_chans, h, w, generator=generator)
        with torch.no_grad():
            expected = net(x)
        (got,) = session.run(['sr'], {'lr': x.numpy()})
        if got.shape != tuple(expected.shape):
            raise RuntimeError(f'ONNX output shape {got.shape} != PyTorch {tuple(expected.shape)} for {h}x{w}')
        worst = max(worst, float((torch.from_numpy(got) - expected).abs().max()))
    return worst


def check_sizes(net: HAT) -> list[tuple[int, int]]:
    """A few sizes the check runs: the minimum, window multiples and sizes that need padding."""
    side, ws = min_side(net), net.window_size
    return [(side, side), (side + ws, 3 * ws + 5), (2 * side + 1, side + ws - 3)]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m hat.weights.export', description=__doc__.split('\n\n')[0])
    parser.add_argument('--weights', type=Path, required=True,
                        help='HAT checkpoint (.pth or .safetensors: params_ema, params or a bare state_dict)')
    parser.add_argument('--output', type=Path, required=True, help='ONNX file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset, >= {MIN_OPSET}')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output file')
    parser.add_argument('--img-range', type=float, default=None,
                        help='img_range the checkpoint was trained with (default: 1, as published)')
    parser.add_argument('--no-check', action='store_true', help='skip the onnxruntime comparison')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status (0 done, 1 export or check failed, 2 bad arguments or files).
    Errors are one line on stderr; ``--debug`` shows their traceback instead."""
    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as error:  # a path, a checkpoint or a value the user gave
        if args.debug:
            raise
        print(f'error: {error}', file=sys.stderr)
        return 2
    except Exception as error:
        if args.debug:
            raise
        print(f'error: export failed: {type(error).__name__}: {str(error).strip().splitlines()[0]} '
              f'(rerun with --debug for the traceback)', file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    """Export and check as ``args`` say; user mistakes raise ValueError or OSError."""
    if args.opset < MIN_OPSET:
        raise ValueError(f'--opset {args.opset} is too old; use {MIN_OPSET} or newer')
    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f'{args.output} already exists; pass --overwrite to replace it')
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        print('error: ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript',
              file=sys.stderr)
        return 2
    if not args.output.parent.is_dir():
        raise FileNotFoundError(f'the folder of --output {str(args.output)!r} does not exist; create it first')
    overrides = {} if args.img_range is None else {'img_range': args.img_range}
    net = load_hat(args.weights, **overrides)
    export_onnx(net, args.output, args.opset, args.overwrite)
    print(f'wrote {args.output} ({os.path.getsize(args.output) / 2 ** 20:.1f} MiB, opset {args.opset}, '
          f'inputs of at least {min_side(net)}x{min_side(net)})')
    if args.no_check:
        return 0
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print('onnxruntime is not installed: skipped the comparison with PyTorch (pip install onnxruntime)')
        return 0
    diff = check_onnx(args.output, net, check_sizes(net))
    print(f'onnxruntime vs PyTorch: max abs difference {diff:.2e} (tolerance {TOLERANCE:g})')
    if diff > TOLERANCE:
        print(f'error: the exported model differs from PyTorch by {diff:.2e} > {TOLERANCE:g}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
