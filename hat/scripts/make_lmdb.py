"""Cut HR images into sub-images, make their bicubic LR, and pack both into LMDBs with meta_info.

    python -m hat.scripts.make_lmdb --input datasets/DIV2K/DIV2K_train_HR datasets/Flickr2K/Flickr2K_HR \\
        --output datasets/DF2K --name DF2K --scale 2 3 4

writes, under ``--output``: ``DF2K_HR_sub/`` and ``DF2K_bicx{2,3,4}_sub/`` (PNG sub-images, the
folders the training recipes read) and ``DF2K_HR_sub.lmdb``, ``DF2K_bicx{2,3,4}_sub.lmdb``
(for ``io_backend: {type: lmdb}``). Sub-images are cut as BasicSR's extract_subimages does
(``--crop-size``, ``--step``, ``--thresh-size``; ``--crop-size 0`` keeps whole images). LR
is MATLAB bicubic of the whole HR image (cropped to a multiple of every scale), so LR
sub-images are exactly HR sub-images / scale. Image sizes are read from the headers first, so
a crop larger than every image or an unreadable image is refused before anything is written.
All outputs are built under temporary names and renamed together when complete; a failure
(a corrupt image, named) removes them. Existing outputs are never overwritten.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial, reduce
from typing import Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from hat.data.hr_only_dataset import bicubic_lr, modcrop
from hat.data.image_lists import header_size, list_image_folder


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
        raise OSError(f'cannot read image {path!r} (corrupt or truncated)')
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
            if not cv2.imwrite(os.path.join(folder, name), tile, [cv2.IMWRITE_PNG_COMPRESSION, compress]):
                raise OSError(f'cannot write {os.path.join(folder, name)!r} (disk full or not writable?)')
    return len(starts)


def pack_lmdb(folder: str, lmdb_path: str) -> None:
    """Pack the PNGs of ``folder`` into a new LMDB at ``lmdb_path`` (keys: file names without extension) via
    BasicSR, with its meta_info.txt."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    names = sorted(n for n in os.listdir(folder) if n.endswith('.png'))
    raw_bytes = sum(3 * math.prod(header_size(os.path.join(folder, name))) for name in names)
    make_lmdb_from_imgs(folder, lmdb_path, names, [os.path.splitext(n)[0] for n in names],
                        map_size=int(raw_bytes * 1.5) + (64 << 20))


def sub_image_counts(paths: list[str], multiple: int, crop: int, step: int, thresh: int) -> dict[str, int]:
    """How many sub-images each image gives (from its header), as :func:`cut_image` cuts them."""
    counts = {}
    with tqdm(paths, desc='read sizes', unit='image', file=sys.stderr) as bar:
        for path in bar:
            h, w = header_size(path)
            h, w = h - h % multiple, w - w % multiple
            counts[path] = len(crop_starts(h, crop, step, thresh)) * len(crop_starts(w, crop, step, thresh))
    return counts


def build(paths: list[str], partials: dict[int, str], args: argparse.Namespace) -> int:
    """Cut every image into ``partials`` and pack each folder into ``<folder>.lmdb``; returns the sub-image count."""
    for folder in partials.values():
        os.makedirs(folder)
    cut = partial(cut_image, folders=partials, crop=args.crop_size, step=args.step, thresh=args.thresh_size,
                  compress=args.compress_level)
    total = 0
    with tqdm(total=len(paths), desc='cut sub-images', unit='image') as bar, \
            ProcessPoolExecutor(max(args.workers, 1)) as pool:
        results = pool.map(cut, paths, chunksize=4) if args.workers > 1 else map(cut, paths)
        for count in results:
            total += count
            bar.update()
    if not args.no_lmdb:
        for folder in partials.values():
            pack_lmdb(folder, f'{folder}.lmdb')
    return total


def remove_partials(partials: dict[int, str]) -> None:
    """Delete the temporary sub-image folders and LMDBs of a run."""
    for folder in partials.values():
        for path in (folder, f'{folder}.lmdb'):
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m hat.scripts.make_lmdb', description=__doc__.split('\n\n')[0])
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
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    args = parser.parse_args(argv)

    scales = sorted(set(args.scale))
    if any(s < 1 for s in scales) or args.crop_size < 0:
        parser.error('--scale and --crop-size must be positive')
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
    try:
        paths = [os.path.join(folder, n) for folder in args.input for n in list_image_folder(folder, '--input')]
        counts = sub_image_counts(paths, multiple, args.crop_size, args.step, args.thresh_size)
    except (OSError, ValueError) as error:
        if args.debug:
            raise
        parser.error(f'{error}; replace or remove it (`python -m hat.scripts.check_data` lists every bad image)'
                     if str(error).startswith('cannot read') else str(error))
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(set(stems)) != len(stems):
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        parser.error(f'image names repeat across inputs, e.g. {dupes[:5]}; sub-image names would collide')
    if not sum(counts.values()):
        parser.error(f'--crop-size {args.crop_size} is larger than every image (after cropping to a multiple of '
                     f'{multiple}); use a smaller --crop-size, or 0 to keep whole images')
    small = [p for p, n in counts.items() if not n]
    if small:
        print(f'note: {len(small)} image(s) smaller than --crop-size {args.crop_size} give no sub-images, e.g. '
              f'{small[:3]}', file=sys.stderr)

    partials = {s: f'{p}.partial' for s, p in finals.items()}
    made_output = not os.path.isdir(args.output)
    remove_partials(partials)  # our own leftovers from a run killed before it could clean up
    try:
        total = build(paths, partials, args)
    except BaseException as error:
        remove_partials(partials)
        if made_output and os.path.isdir(args.output) and not os.listdir(args.output):
            os.rmdir(args.output)
        if args.debug or not isinstance(error, OSError):
            raise
        sys.exit(f'{parser.prog}: error: {error}; replace or remove it, then run again (nothing was written)')
    for s, folder in partials.items():
        os.replace(folder, finals[s])
        if not args.no_lmdb:
            os.replace(f'{folder}.lmdb', f'{finals[s]}.lmdb')
    print(f'{total} sub-images from {len(paths)} images in {sorted(finals.values())}', file=sys.stderr)


if __name__ == '__main__':
    main()
