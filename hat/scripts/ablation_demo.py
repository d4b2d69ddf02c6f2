"""The paper's ablation in miniature: train tiny HAT variants side by side on the bundled photos.

    python -m hat.scripts.ablation_demo                                   # published, w/o OCAB, w/o CAB, w/o both
    python -m hat.scripts.ablation_demo --variants published wo_CA overlap_0 --iters 500

Each variant is the tiny x2 demo network (options/train/HAT-tiny_SRx2_demo.yml) with one of the paper's
switches flipped, trained from the same seed on the same crops with that recipe's settings (L1, Adam,
step schedule scaled to ``--iters``), then validated on demo/photos/val. Prints one table: variant,
parameters, PSNR-Y on the held-out photos, seconds. Writes nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import hat  # noqa: F401  (makes basicsr importable and registers HAT)

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE = REPO_ROOT / 'options' / 'train' / 'HAT-tiny_SRx2_demo.yml'

#: Variant name -> the network_g keys it changes (the paper's ablation switches).
VARIANTS: dict[str, dict[str, Any]] = {
    'published': {},
    'wo_OCAB': {'use_ocab': False},
    'wo_CAB': {'use_cab': False},
    'wo_OCAB_CAB': {'use_ocab': False, 'use_cab': False},
    'wo_CA': {'use_channel_attention': False},
    'conv_scale_0': {'conv_scale': 0.0},
    'conv_scale_0.1': {'conv_scale': 0.1},
    'conv_scale_1': {'conv_scale': 1.0},
    'overlap_0': {'overlap_ratio': 0.0},
    'overlap_0.25': {'overlap_ratio': 0.25},
    'overlap_0.75': {'overlap_ratio': 0.75},
    'window_16': {'window_size': 16},
}
DEFAULT_VARIANTS = ('published', 'wo_OCAB', 'wo_CAB', 'wo_OCAB_CAB')


def read_recipe(photos: Path) -> dict[str, Any]:
    """The demo recipe's options, its datasets pointed at ``photos`` (``train/`` and ``val/``)."""
    from hat.training.preflight import read_option_file

    opt = read_option_file(str(RECIPE))
    for phase in ('train', 'val'):
        opt['datasets'][phase].update(phase=phase, scale=opt['scale'], dataroot_gt=str(photos / phase))
    return opt


def train_variant(opt: dict[str, Any], changes: dict[str, Any], iters: int, seed: int):
    """The recipe's network with ``changes``, trained ``iters`` iterations on the recipe's training crops."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from hat.archs.hat_arch import HAT
    from hat.data.hr_only_dataset import HROnlyDataset

    network = {k: v for k, v in opt['network_g'].items() if k != 'type'}
    torch.manual_seed(seed)
    model = HAT(**{**network, **changes}).train()
    train_opt, data_opt = opt['train'], opt['datasets']['train']
    optimizer = torch.optim.Adam(model.parameters(), lr=train_opt['optim_g']['lr'],
                                 betas=tuple(train_opt['optim_g']['betas']))
    total = train_opt['total_iter']
    milestones = [round(m * iters / total) for m in train_opt['scheduler']['milestones']]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, train_opt['scheduler']['gamma'])
    dataset, batch = HROnlyDataset(data_opt), data_opt['batch_size_per_gpu']
    crops = RandomSampler(dataset, replacement=True, num_samples=batch * iters,
                          generator=torch.Generator().manual_seed(seed))
    for pair in DataLoader(dataset, batch_size=batch, sampler=crops):
        optimizer.zero_grad()
        torch.nn.functional.l1_loss(model(pair['lq']), pair['gt']).backward()
        optimizer.step()
        scheduler.step()
    return model.eval()


def validate(model, opt: dict[str, Any]) -> float:
    """Mean PSNR-Y (borders of ``scale`` cropped) of ``model`` on the recipe's validation photos
    (``model=None``: MATLAB bicubic upsampling)."""
    import torch
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img
    from basicsr.utils.matlab_functions import imresize

    from hat.data.hr_only_dataset import HROnlyDataset

    scores = []
    for item in HROnlyDataset(opt['datasets']['val']):
        lq = item['lq'][None]
        with torch.no_grad():
            out = imresize(lq[0], opt['scale'])[None] if model is None else model(lq)
        scores.append(calculate_psnr(tensor2img(out.clamp(0, 1)), tensor2img(item['gt'][None]),
                                     crop_border=opt['scale'], test_y_channel=True))
    return sum(scores) / len(scores)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--variants', nargs='+', default=list(DEFAULT_VARIANTS), metavar='NAME',
                        help=f'variants to train, of: {", ".join(VARIANTS)} (default: %(default)s)')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations per variant (default: the recipe\'s total_iter)')
    parser.add_argument('--seed', type=int, default=0, help='seed shared by every variant (default: 0)')
    parser.add_argument('--photos', type=Path, default=REPO_ROOT / 'demo' / 'photos',
                        help='folder with train/ and val/ photos (default: the bundled demo/photos)')
    return parser.parse_args(argv)


def problem(args: argparse.Namespace) -> Optional[str]:
    """One line saying what is wrong with the arguments, or None."""
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        return f'unknown variant {unknown[0]!r}; choose from: {", ".join(VARIANTS)}'
    if args.iters is not None and args.iters < 1:
        return f'--iters must be a positive number of iterations, got {args.iters}'
    for phase in ('train', 'val'):
        if not (args.photos / phase).is_dir():
            return f'{args.photos / phase} is not a folder; pass --photos with train/ and val/ photo folders'
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    message = problem(args)
    if message:
        print(f'ablation_demo: {message}', file=sys.stderr)
        return 2
    opt = read_recipe(args.photos)
    iters = args.iters or opt['train']['total_iter']
    rows = [('bicubic', None, validate(None, opt), None)]
    for name in dict.fromkeys(args.variants):
        print(f'training {name} ({iters} iterations)...', file=sys.stderr, flush=True)
        start = time.perf_counter()
        model = train_variant(opt, VARIANTS[name], iters, args.seed)
        psnr = validate(model, opt)
        rows.append((name, sum(p.numel() for p in model.parameters()), psnr, time.perf_counter() - start))
    print(f'{"variant":<16}{"parameters":>12}{"PSNR-Y (dB)":>13}{"seconds":>9}')
    for name, params, psnr, seconds in rows:
        params, seconds = ('-', '-') if params is None else (f'{params:,}', f'{seconds:.1f}')
        print(f'{name:<16}{params:>12}{psnr:>13.2f}{seconds:>9}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
