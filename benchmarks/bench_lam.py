"""Benchmark ``hat-lam``'s attribution against the LAM reference formulation, in one process.

Ours: ``hat.analysis.local_attribution_map`` on this project's HAT (path steps batched as the
memory allows, input-only gradients, fused attention). Reference: ``lam_reference.reference_lam``
(NumPy/OpenCV path, one step at a time with batch 1, weights requiring gradients) on
``original_hat.OriginalHAT`` (the authors' formulation of the network), same weights. The LR input
is a real photo (scikit-image's astronaut, cropped, bicubic-downscaled with PIL as LAM does); the
window is at the SR image's centre. Prints both times, the speed-up, the largest difference of
the normalised maps and of the diffusion indices, and the machine. ``--clock process`` times CPU
seconds of this process instead of wall seconds: with one thread on a shared machine it is what
the computation costs, whatever else runs beside it.

    python benchmarks/bench_lam.py --model HAT_SRx4 --size 64 --fold 50 --threads 2
    python benchmarks/bench_lam.py --model HAT_SRx4 --fold 6 --threads 1 --clock process
    python benchmarks/bench_lam.py --device cuda --fold 50
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from bench_env import describe, header
from lam_reference import reference_lam
from original_hat import OriginalHAT
from PIL import Image

import hat  # noqa: F401  (registers HAT)
from hat.analysis import local_attribution_map
from hat.archs.hat_arch import HAT
from hat.archs.hat_presets import preset_config


def photo_lr(size: int, scale: int) -> np.ndarray:
    """A ``(3, size, size)`` float32 LR crop of a real photo, downscaled with PIL's bicubic."""
    from skimage import data

    hr = data.astronaut()[40:40 + size * scale, 120:120 + size * scale]
    lr = Image.fromarray(np.ascontiguousarray(hr)).resize((size, size), Image.BICUBIC)
    return np.asarray(lr, dtype=np.float32).transpose(2, 0, 1) / 255.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='HAT_SRx4', help='HAT preset (default HAT_SRx4)')
    parser.add_argument('--size', type=int, default=64, help='LR side (default 64)')
    parser.add_argument('--fold', type=int, default=50, help='path steps (default 50)')
    parser.add_argument('--window', type=int, default=16)
    parser.add_argument('--batch', type=int, default=None, help='our steps per pass (default: from memory)')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--clock', choices=('wall', 'process'), default='wall',
                        help='wall seconds (default) or CPU seconds of this process (CPU runs on a busy machine)')
    parser.add_argument('--json', default=None, help='write the results here as JSON')
    parser.add_argument('--markdown', default=None, help='write the result here as a markdown table row')
    return parser.parse_args(argv)


def markdown(summary: dict) -> str:
    """The result as the table docs/benchmarks.md takes."""
    env = summary['environment']
    device = env.get('gpu') or env.get('cpu') or summary['device']
    return ('| network | LR | fold | device | clock | reference s | ours s (steps a pass) | speed-up '
            '| max map diff | DI diff |\n'
            '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
            f'| {summary["model"]} | {summary["size"]}x{summary["size"]} | {summary["fold"]} | {device} | '
            f'{summary["clock"]} | {summary["reference_seconds"]:.2f} | {summary["ours_seconds"]:.2f} '
            f'({summary["batch"]}) | {summary["speedup"]:.2f}x | {summary["max_abs_map_difference"]:.1e} | '
            f'{summary["di_difference"]:.4f} |\n')


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = describe(device, args.threads)
    print(header(info))

    torch.manual_seed(0)
    config = preset_config(args.model)
    ours = HAT(**config).eval().to(device)
    original = OriginalHAT(**config).eval()
    original.load_state_dict(ours.state_dict())
    scale = config['upscale']
    lr = photo_lr(args.size, scale)
    x = y = (args.size * scale - args.window) // 2

    with torch.no_grad():  # warm-up: allocator, oneDNN/cuDNN kernels
        ours(torch.from_numpy(lr)[None].to(device))
        original.to(device)(torch.from_numpy(lr)[None].to(device))
    clock = time.process_time if args.clock == 'process' else time.perf_counter
    start = clock()
    result = local_attribution_map(ours, lr.transpose(1, 2, 0), x, y, window=args.window, fold=args.fold,
                                   batch_size=args.batch)
    ours_seconds = clock() - start
    print(f'ours:      {ours_seconds:8.2f} s  DI {result.di:.4f}  ({result.batch_size} steps a pass)', flush=True)
    start = clock()
    ref_map, ref_di, _ = reference_lam(original, lr, x, y, window=args.window, fold=args.fold, device=args.device)
    ref_seconds = clock() - start
    print(f'reference: {ref_seconds:8.2f} s  DI {ref_di:.4f}', flush=True)
    summary = {
        'model': args.model, 'size': args.size, 'fold': args.fold, 'window': args.window, 'x': x, 'y': y,
        'device': str(device), 'clock': args.clock, 'ours_seconds': ours_seconds, 'reference_seconds': ref_seconds,
        'speedup': ref_seconds / ours_seconds,
        'batch': result.batch_size, 'max_abs_map_difference': float(np.abs(result.map - ref_map).max()),
        'di': result.di, 'reference_di': ref_di, 'di_difference': abs(result.di - ref_di), 'environment': info,
    }
    print(f'{args.clock} clock: '
          f'speed-up {summary["speedup"]:.2f}x; max |map - reference map| {summary["max_abs_map_difference"]:.2e}; '
          f'|DI - reference DI| {summary["di_difference"]:.4f}')
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(summary))
    parity = summary['max_abs_map_difference'] <= 1e-3 and summary['di_difference'] <= 0.05
    if not parity:
        print('PARITY FAILED: the map or the DI differs from the reference beyond 1e-3 / 0.05', file=sys.stderr)
    return 0 if parity else 1


if __name__ == '__main__':
    sys.exit(main())
