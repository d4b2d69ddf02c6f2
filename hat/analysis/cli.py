"""The ``hat-lam`` command (``python -m hat.analysis``): LAM maps and diffusion indices of SR networks.

    hat-lam -m HAT_SRx4.pth -m swinir.yml -i butterfly.png --at 110 150 -o lam/ --json
    hat-lam --features -m HAT_SRx4.pth -m swinir.yml -i butterfly.png -o features/

IMAGE is the HR image (downscaled with PIL's bicubic, as LAM's reference does) unless ``--lr``
says it is already the network input. ``--at X Y`` is the window's top-left corner in HR pixels
(X the column). Per network it writes ``<image>_<model>_lam_x<X>_y<Y>.png`` (image with window,
heat map, blend, DI) and ``.npy`` (the normalised map, float32, LR size); several networks add
``<image>_lam_x<X>_y<Y>.png``, a row per network. ``--features`` writes instead, per network,
``<image>_<model>_features.png``: each residual group's mean absolute activation, captioned with
its window-border blockiness. Everything is checked and computed before the first file is
written; an existing file is replaced only with ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from hat.analysis.features import group_features, window_size_of
from hat.analysis.figures import Row, grid_figure, lam_figure
from hat.analysis.lam import (
    FOLD,
    KERNEL_SIZE,
    SIGMA,
    WINDOW,
    AttributionError,
    LAMResult,
    check_path_size,
    check_window,
    local_attribution_map,
)
from hat.analysis.networks import Network, load_network
from hat.inference.image_io import read_image, write_image
from hat.inference.upscale_cli import check_writable
from hat.inference.upscaler import resolve_device
from hat.weights.atomic_io import atomic_write

EXIT_OK, EXIT_USAGE = 0, 2


@dataclass
class Prepared:
    """The image as the analysis needs it: the HR picture for figures (None with ``--lr``) and the LR input."""

    hr: Optional[np.ndarray]
    lr: np.ndarray


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='hat-lam', description='Local Attribution Maps (LAM) and diffusion index (DI) of SR networks.')
    parser.add_argument('-m', '--model', action='append', required=True, metavar='MODEL',
                        help='[LABEL=]FILE: a HAT weight file, a BasicSR option file (network_g + '
                             'path.pretrain_network_g) or a file spandrel loads; repeat to compare networks')
    parser.add_argument('-i', '--image', required=True, help='the HR image (or the LR input with --lr)')
    parser.add_argument('--at', nargs=2, type=int, metavar=('X', 'Y'),
                        help='top-left corner of the window in HR pixels: X column, Y row')
    parser.add_argument('--window', type=int, default=WINDOW, help=f'window side in HR pixels (default {WINDOW})')
    parser.add_argument('--fold', type=int, default=FOLD, help=f'path steps (default {FOLD})')
    parser.add_argument('--sigma', type=float, default=SIGMA, help=f'blur sigma at the path start (default {SIGMA})')
    parser.add_argument('--kernel', type=int, default=KERNEL_SIZE,
                        help=f'blur kernel side (default {KERNEL_SIZE})')
    parser.add_argument('--lr', action='store_true', help='IMAGE is already the low-resolution input')
    parser.add_argument('-o', '--output', required=True, help='output folder (created when the results are ready)')
    parser.add_argument('--json', action='store_true', help='print one JSON object per network')
    parser.add_argument('--features', action='store_true',
                        help='save per-group feature maps and window-border blockiness instead of LAM')
    parser.add_argument('--batch', type=int, default=None,
                        help='path steps per pass (default: as many as fit in the memory available)')
    parser.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available)')
    parser.add_argument('--overwrite', action='store_true', help='replace output files that exist')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values that cannot work, before anything is loaded."""
    if not args.features and args.at is None:
        raise AttributionError('--at X Y is required: the top-left corner of the window in HR pixels')
    for name, value in (('--window', args.window), ('--fold', args.fold), ('--kernel', args.kernel)):
        if value < 1:
            raise AttributionError(f'{name} must be at least 1, got {value}')
    if args.batch is not None and args.batch < 1:
        raise AttributionError(f'--batch must be at least 1, got {args.batch}')
    if not args.sigma >= 0:
        raise AttributionError(f'--sigma must be >= 0, got {args.sigma}')
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise AttributionError(f'output {args.output!r} exists and is not a folder')


def rgb8(image: np.ndarray) -> np.ndarray:
    """Any image ``read_image`` returns as HWC uint8 RGB (gray repeated, alpha dropped, 16 bits rounded)."""
    if image.dtype == np.uint16:
        image = ((image.astype(np.float32) / 257.0) + 0.5).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] in (2, 4):
        image = image[..., :-1]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def prepare(image: np.ndarray, scale: int, is_lr: bool) -> Prepared:
    """The LR input in [0, 1]: the image itself with ``--lr``, else the HR cropped to a multiple of the scale
    and downscaled with PIL's bicubic, as the LAM reference does."""
    if is_lr:
        return Prepared(hr=None, lr=image.astype(np.float32) / 255.0)
    h, w = image.shape[:2]
    if h < scale or w < scale:
        raise AttributionError(f'the image is {w}x{h}, smaller than one x{scale} LR pixel')
    hr = image[:h - h % scale, :w - w % scale]
    lr = Image.fromarray(hr).resize((hr.shape[1] // scale, hr.shape[0] // scale), Image.BICUBIC)
    return Prepared(hr=np.ascontiguousarray(hr), lr=np.asarray(lr, dtype=np.float32) / 255.0)


def check_networks(networks: Sequence[Network], prepared: Prepared, args: argparse.Namespace) -> None:
    """Refuse networks of different scales, labels that would share files, images below a network's minimum
    or too small for the blur kernel, and windows outside the SR image."""
    scales = {net.scale for net in networks}
    if len(scales) > 1:
        listing = ', '.join(f'{net.label} x{net.scale}' for net in networks)
        raise AttributionError(f'the networks have different scales ({listing}); compare networks of one scale '
                               f'per call')
    labels = [net.label for net in networks]
    if len(set(labels)) < len(labels):
        raise AttributionError(f'two models have the same label ({", ".join(labels)}); name them LABEL=FILE')
    h, w = prepared.lr.shape[:2]
    for net in networks:
        if min(h, w) < net.min_size:
            raise AttributionError(f'the LR image is {w}x{h}, smaller than {net.label} accepts '
                                   f'({net.min_size} pixels a side); use a larger image')
    if args.features:
        for net in networks:
            window = window_size_of(net.module)
            if min(h, w) <= window:
                raise AttributionError(f'the LR image is {w}x{h}: window borders of {net.label} need both sides '
                                       f'above its window size {window}; use a larger image')
        return
    check_path_size(h, w, args.kernel)
    scale = networks[0].scale
    check_window(args.at[0], args.at[1], args.window, h * scale, w * scale)


def output_paths(args: argparse.Namespace, networks: Sequence[Network]) -> dict[str, dict[str, Path]]:
    """Every file the call writes, by network label (``''`` for the comparison figure)."""
    out, stem = Path(args.output), Path(args.image).stem
    if args.features:
        return {net.label: {'figure': out / f'{stem}_{net.label}_features.png'} for net in networks}
    where = f'x{args.at[0]}_y{args.at[1]}'
    paths = {net.label: {'figure': out / f'{stem}_{net.label}_lam_{where}.png',
                         'map': out / f'{stem}_{net.label}_lam_{where}.npy'} for net in networks}
    if len(networks) > 1:
        paths[''] = {'figure': out / f'{stem}_lam_{where}.png'}
    return paths


def check_outputs(paths: dict[str, dict[str, Path]], overwrite: bool, output: Path) -> None:
    """Refuse existing outputs (without ``--overwrite``) and an output folder that cannot be written."""
    if not overwrite:
        existing = [str(p) for files in paths.values() for p in files.values() if p.exists()]
        if existing:
            raise AttributionError(f'{existing[0]} already exists; pass --overwrite to replace it or choose '
                                   f'another --output')
    check_writable(output)


def run_lam(networks: Sequence[Network], prepared: Prepared, args: argparse.Namespace) -> list[LAMResult]:
    """LAM of every network, a progress bar over the path steps on a terminal."""
    results = []
    for net in networks:
        with tqdm(total=args.fold, desc=f'LAM {net.label}'[:30], unit='step', file=sys.stderr, disable=None,
                  leave=False) as bar:
            results.append(local_attribution_map(
                net.module, prepared.lr, args.at[0], args.at[1], window=args.window, fold=args.fold,
                sigma=args.sigma, kernel_size=args.kernel, batch_size=args.batch, on_steps=bar.update))
    return results


def sr_picture(result: LAMResult) -> np.ndarray:
    """A network's SR output as HWC uint8 RGB (the picture of ``--lr`` figures)."""
    pixels = np.clip(result.sr.transpose(1, 2, 0), 0.0, 1.0)
    return rgb8(np.rint(pixels * 255.0).astype(np.uint8))


def save_npy(path: Path, array: np.ndarray, overwrite: bool) -> None:
    """``array`` as a ``.npy`` file, written atomically."""
    atomic_write(path, lambda handle: np.save(handle, array), overwrite)


def write_lam(networks, results, prepared: Prepared, paths, args) -> list[dict]:
    """Write every figure and map; returns one JSON-ready record per network."""
    Path(args.output).mkdir(parents=True, exist_ok=True)
    x, y = args.at
    rows, records = [], []
    for net, result in zip(networks, results):
        picture = prepared.hr if prepared.hr is not None else sr_picture(result)
        row = Row(label=net.label, image=picture, map=result.map, x=x, y=y, window=args.window, di=result.di)
        rows.append(row)
        files = paths[net.label]
        write_image(files['figure'], lam_figure([row]), overwrite=args.overwrite)
        save_npy(files['map'], result.map, args.overwrite)
        records.append({'model': net.label, 'source': net.source, 'kind': net.kind, 'image': args.image, 'x': x,
                        'y': y, 'window': args.window, 'fold': args.fold, 'sigma': args.sigma, 'kernel': args.kernel,
                        'scale': net.scale, 'di': round(result.di, 4), 'seconds': round(result.seconds, 3),
                        'batch': result.batch_size, 'map': str(files['map']), 'figure': str(files['figure'])})
    if '' in paths:
        write_image(paths['']['figure'], lam_figure(rows), overwrite=args.overwrite)
        for record in records:
            record['comparison'] = str(paths['']['figure'])
    return records


def run_features(networks, prepared: Prepared, paths, args) -> list[dict]:
    """Compute every network's group features, then write one grid figure each; returns the records."""
    summaries = []
    for net in networks:
        first = next(iter(net.module.parameters()))
        lr = torch.from_numpy(prepared.lr.transpose(2, 0, 1).copy())[None].to(first.device, first.dtype)
        summaries.append(group_features(net.module, lr))
    Path(args.output).mkdir(parents=True, exist_ok=True)
    records = []
    for net, groups in zip(networks, summaries):
        figure = paths[net.label]['figure']
        captions = [f'{g.name}  blockiness {g.blockiness:.3f}' for g in groups]
        write_image(figure, grid_figure([g.activation for g in groups], captions, columns=min(len(groups), 4)),
                    overwrite=args.overwrite)
        records.append({'model': net.label, 'source': net.source, 'kind': net.kind, 'image': args.image,
                        'window': window_size_of(net.module), 'figure': str(figure),
                        'groups': [{'name': g.name, 'blockiness': round(g.blockiness, 4)} for g in groups]})
    return records


def report(records: list[dict], as_json: bool, features: bool) -> None:
    """Print the results: one JSON object a line, or one human line per network."""
    for record in records:
        if as_json:
            print(json.dumps(record))
        elif features:
            scores = ', '.join(f'{g["blockiness"]:.3f}' for g in record['groups'])
            print(f'{record["model"]}: window-border blockiness per group {scores} -> {record["figure"]}')
        else:
            print(f'{record["model"]}: DI {record["di"]:.2f} ({record["fold"]} steps in {record["seconds"]:.1f} s, '
                  f'{record["batch"]} a pass) -> {record["figure"]}, {record["map"]}')


def run(args: argparse.Namespace) -> int:
    """Check everything, compute, then write; see the module docstring."""
    check_arguments(args)
    device = resolve_device(args.device)
    picture = rgb8(read_image(args.image))
    networks = [load_network(spec, device) for spec in args.model]
    prepared = prepare(picture, networks[0].scale, args.lr)
    check_networks(networks, prepared, args)
    paths = output_paths(args, networks)
    check_outputs(paths, args.overwrite, Path(args.output))
    if args.features:
        records = run_features(networks, prepared, paths, args)
    else:
        records = write_lam(networks, run_lam(networks, prepared, args), prepared, paths, args)
    report(records, args.json, args.features)
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``hat-lam``; returns the exit status (2 for refused arguments or inputs)."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print('hat-lam: interrupted; nothing was written for the network in progress', file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        print(f'hat-lam: error: {error}', file=sys.stderr)
        return EXIT_USAGE
