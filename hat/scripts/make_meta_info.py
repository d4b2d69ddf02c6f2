"""Write a BasicSR meta_info file listing the images of HR folders, one relative path a line.

    python -m hat.scripts.make_meta_info --input datasets/DF2K/DF2K_HR_sub --meta-info datasets/DF2K/meta_info.txt

Datasets then read ``dataroot_gt`` + each line (``meta_info_file`` option), which saves
scanning large folders (ImageNet) at every start. ``--root`` makes paths relative to a
common folder when listing several inputs; ``--min-size`` leaves out images whose shorter
side is smaller (e.g. smaller than ``gt_size``). The list is never written into an input
folder or to a name with an image extension, so no input can be replaced, ``--overwrite`` or not.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from tqdm import tqdm

from hat.data.image_lists import header_size, is_image_file, list_image_folder
from hat.weights.atomic_io import atomic_write_text


def refuse_target(meta_info: str, inputs: Sequence[str]) -> str | None:
    """Why ``meta_info`` must not be written (an image name, or a path inside an input folder), or None."""
    if is_image_file(meta_info):
        return f'--meta-info {meta_info!r} has an image extension; a meta_info file is text (e.g. meta_info.txt)'
    target = os.path.realpath(meta_info)
    for folder in inputs:
        real = os.path.realpath(folder)
        if os.path.commonpath([target, real]) == real:
            return (f'--meta-info {meta_info!r} is inside --input {folder!r}; write it outside the image folders '
                    '(e.g. next to them), so that nothing in the inputs is ever replaced')
    return None


def collect(inputs: Sequence[str], roots: Sequence[str], min_size: int = 0) -> list[str]:
    """Image paths under each input, relative to its root, sorted per input; small ones left out."""
    lines = []
    for folder, root in zip(inputs, roots):
        names = list_image_folder(folder, '--input')
        paths = [os.path.join(folder, n) for n in names]
        if min_size:
            with tqdm(paths, desc=f'sizes in {folder}', unit='image') as bar:
                paths = [p for p in bar if min(header_size(p)) >= min_size]
        lines += [os.path.relpath(p, root).replace(os.sep, '/') for p in paths]
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog='python -m hat.scripts.make_meta_info', description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', nargs='+', required=True, help='HR image folder(s), scanned recursively')
    parser.add_argument('--root', nargs='+', help='folder each input is listed relative to (default: the input)')
    parser.add_argument('--meta-info', required=True, help='meta_info file to write')
    parser.add_argument('--min-size', type=int, default=0, help='leave out images with a shorter side below this')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing meta_info file')
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    args = parser.parse_args(argv)
    roots = args.root or args.input
    if len(roots) != len(args.input):
        parser.error(f'give one --root per --input ({len(args.input)} inputs, {len(roots)} roots)')
    refusal = refuse_target(args.meta_info, args.input)
    if refusal:
        parser.error(refusal)
    if os.path.isdir(args.meta_info):
        parser.error(f'--meta-info {args.meta_info!r} is a folder; give the path of the file to write')
    if os.path.exists(args.meta_info) and not args.overwrite:
        parser.error(f'--meta-info {args.meta_info!r} exists; pass --overwrite to replace it')
    try:
        lines = collect(args.input, roots, args.min_size)
    except (OSError, ValueError) as error:
        if args.debug:
            raise
        parser.error(str(error))
    if not lines:
        parser.error(f'no image has a shorter side of at least {args.min_size} pixels')
    os.makedirs(os.path.dirname(os.path.abspath(args.meta_info)), exist_ok=True)
    atomic_write_text(args.meta_info, ''.join(f'{line}\n' for line in lines))
    print(f'wrote {len(lines)} images to {args.meta_info}', file=sys.stderr)


if __name__ == '__main__':
    main()
