"""Cut HR images into sub-images, make their bicubic LR, and pack both into LMDBs with meta_info.

    python -m hat.scripts.make_lmdb --input datasets/DIV2K/DIV2K_train_HR datasets/Flickr2K/Flickr2K_HR \\
        --output datasets/DF2K --name DF2K --scale 2 3 4

writes, under ``--output``: ``DF2K_HR_sub/`` and ``DF2K_bicx{2,3,4}_sub/`` (PNG sub-images, the
folders the training recipes read) and ``DF2K_HR_sub.lmdb``, ``DF2K_bicx{2,3,4}_sub.lmdb``
(for ``io_backend: {type: lmdb}``). Sub-images are cut as BasicSR's extract_subimages does
(``--crop-size``, ``--step``, ``--thresh-size``; ``--crop-size 0`` keeps whole images). LR
is MATLAB bicubic of the whole HR image (cropped to a multiple of every scale), so LR
sub-images are exactly HR sub-images / scale. Each output is built under a temporary
name and renamed when complete; existing outputs are never overwritten.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import reduce
from typing import Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from hat.data.hr_only_dataset import bicubic_lr, modcrop
from hat.data.image_lists import list_image_folder


def crop_starts(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """Start offsets along one side, as BasicSR's extract_subimages: every ``step``, plus a last crop flush with
    the end when more than ``thresh`` pixels would be left over."""
    if crop == 0:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    if starts and length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def cut_image(path: str, folders: dict, crop: int, step: int, thresh: int, compress: int) -> int:
    """Write the HR sub-images of ``path`` and their LR (``folders``: scale -> folder, 1 for HR); returns a count."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f'cannot read image {path!r}')
    image = modcrop(image, reduce(math.lcm, folders))
    lrs = {s: (bicubic_lr(image.astype(np.float32) / 255, s) * 255).round().astype(np.uint8)
           for s in folders if s != 1}
    stem = os.path.splitext(os.path.basename(path))[0]
    h, w = image.shape[:2]
    starts = [(y, x) for y in crop_starts(h, crop, step, thresh) for x in crop_starts(w, crop, step, thresh)]
    for index, (y, x) in enumerate(starts, 1):
        name = f'{stem}_s{index:03d}.png' if crop else f'{stem}.png'
        for s, folder in folders.items():
            source, size = (image, crop or h) if s == 1 else (lrs[s], (crop or h) // s)
            width = (crop or w) // s
            tile = source[y // s:y // s + size, x // s:x // s + width]
            cv2.imwrite(os.path.join(folder, name), tile, [cv2.IMWRITE_PNG_COMPRESSION, compress])
    return len(starts)


def _cut_job(args: tuple) -> int:
    return cut_image(*args)


def make_lmdb(folder: str, lmdb_path: str) -> None:
    """Pack the PNGs of ``folder`` into ``lmdb_path`` (keys: file names without extension) via BasicSR."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    names = sorted(n for n in os.listdir(folder) if n.endswith('.png'))
    raw_bytes = 0
    for name in names:
        with open(os.path.join(folder, name), 'rb') as f:
            f.seek(16)
            w, h = int.from_bytes(f.read(4), 'big'), int.from_bytes(f.read(4), 'big')
        raw_bytes += h * w * 3
    partial = f'{lmdb_path[:-len(".lmdb")]}.partial.lmdb'
    if os.path.exists(partial):
        shutil.rmtree(partial)  # our own leftover from an interrupted run
    make_lmdb_from_imgs(folder, partial, names, [os.path.splitext(n)[0] for n in names],
                        map_size=int(raw_bytes * 1.5) + (64 << 20))
    os.replace(partial, lmdb_path)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', nargs='+', required=True, help='folder(s) of HR images')
    parser.add_argument('--output', required=True, help='folder for the sub-image folders and LMDBs')
    parser.add_argument('--name', required=True, help='prefix of the outputs, e.g. DF2K')
    parser.add_argument('--scale', type=int, nargs='*', default=[2, 3, 4], help='LR scales to make (none: HR only)')
    parser.add_argument('--crop-size', type=int, default=480, help='HR sub-image size; 0 keeps whole images')
    parser.add_argument('--step', type=int, default=240, help='HR stride between sub-images')
    parser.add_argument('--thresh-size', type=int, default=0, help='a leftover wider than this gets one more crop')
    parser.add_argument('--compress-level', type=int, default=3, help='PNG compression of the sub-images')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1), help='processes cutting images')
    parser.add_argument('--no-lmdb', action='store_true', help='write the sub-image folders only')
    args = parser.parse_args(argv)

    scales = sorted(set(args.scale))
    multiple = reduce(math.lcm, scales, 1)
    if args.crop_size % multiple or (args.crop_size and args.step % multiple):
        parser.error(f'--crop-size and --step must be multiples of {multiple} (every scale in {scales})')
    if args.crop_size and args.step <= 0:
        parser.error('--step must be positive')
    suffix = '_sub' if args.crop_size else ''
    finals = {1: os.path.join(args.output, f'{args.name}_HR{suffix}')}
    finals.update({s: os.path.join(args.output, f'{args.name}_bicx{s}{suffix}') for s in scales})
    outputs = list(finals.values()) + ([] if args.no_lmdb else [f'{p}.lmdb' for p in finals.values()])
    existing = [p for p in outputs if os.path.exists(p)]
    if existing:
        parser.error(f'{existing} exist; move them away or choose another --output/--name (nothing is overwritten)')
    paths = [os.path.join(folder, n) for folder in args.input for n in list_image_folder(folder, f'--input {folder}')]
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(stems)) != len(stems):
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        parser.error(f'image names repeat across inputs, e.g. {dupes[:5]}; sub-image names would collide')

    partials = {s: f'{p}.partial' for s, p in finals.items()}
    for folder in partials.values():
        shutil.rmtree(folder, ignore_errors=True)  # our own leftover from an interrupted run
        os.makedirs(folder)
    jobs = [(p, partials, args.crop_size, args.step, args.thresh_size, args.compress_level) for p in paths]
    counts = []
    with tqdm(total=len(jobs), desc='cut sub-images', unit='image') as bar, \
            ProcessPoolExecutor(max(args.workers, 1)) as pool:
        results = pool.map(_cut_job, jobs, chunksize=4) if args.workers > 1 else map(_cut_job, jobs)
        for count in results:
            counts.append(count)
            bar.update()
    for s, folder in partials.items():
        os.replace(folder, finals[s])
    print(f'{sum(counts)} sub-images from {len(paths)} images in {sorted(finals.values())}', file=sys.stderr)
    if not args.no_lmdb:
        for folder in finals.values():
            make_lmdb(folder, f'{folder}.lmdb')


if __name__ == '__main__':
    main()
