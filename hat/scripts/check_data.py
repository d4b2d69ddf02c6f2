"""Decode every training, validation and test image once and list the ones that cannot be used.

    python -m hat.scripts.check_data -opt options/train/HAT_SRx2.yml       # every dataset of an option file
    python -m hat.scripts.check_data datasets/DF2K/DF2K_HR_sub datasets/DF2K/DF2K_HR_sub.lmdb

Images are read as training reads them (OpenCV, colour), from the files or LMDB keys that the
option file's datasets list (meta_info files included), or from folders (searched
recursively) and LMDBs given on the command line. Prints one line per bad image and exits with
status 1 if there is any, 0 if all decode (2 for a usage mistake). Run it before a long
training run; during one, ``bad_image: skip|stop`` decides what a bad image does.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from typing import Any, Optional, Sequence

from tqdm import tqdm

#: Files handed to a worker process at a time.
CHUNK = 64

_SOURCE: Any = None


class ImageSource:
    """Images of a folder or an LMDB, in the layout the bad-image helpers read (``paths``, ``io_backend_opt``)."""

    def __init__(self, location: str):
        from hat.data.image_lists import list_image_folder, read_lmdb_meta

        if os.path.isfile(os.path.join(location, 'data.mdb')) or location.endswith('.lmdb'):
            self.paths = list(read_lmdb_meta(location, location))
            self.io_backend_opt = {'type': 'lmdb', 'db_paths': [location], 'client_keys': ['gt']}
        else:
            self.paths = [os.path.join(location, n) for n in list_image_folder(location, location)]
            self.io_backend_opt = {'type': 'disk'}

    def __len__(self) -> int:
        return len(self.paths)


def option_sources(option_file: str) -> list[tuple[str, Any]]:
    """(label, dataset) for every dataset section of an option file, built as the training command builds it."""
    import yaml

    import hat  # noqa: F401  (registers HAT's datasets)
    from hat.data.bad_images import make_dataset

    if not os.path.isfile(option_file):
        raise FileNotFoundError(f'-opt: {option_file!r} does not exist')
    try:
        with open(option_file, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f'-opt: {option_file!r} is not a YAML option file ({error})') from error
    if not isinstance(opt, dict) or not isinstance(opt.get('datasets'), dict):
        raise ValueError(f'-opt: {option_file!r} has no datasets section')
    sources = []
    for phase, ds in opt['datasets'].items():
        label = f'datasets: {phase} ({ds.get("name", "unnamed")})'
        try:
            sources.append((label, make_dataset({**ds, 'phase': phase.split('_')[0], 'scale': opt.get('scale', 1)})))
        except KeyError as error:
            raise ValueError(f'{label}: the option {error} is missing') from error
    return sources


def _start(source: Any) -> None:
    global _SOURCE
    _SOURCE = source


def _check(files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    from hat.data.bad_images import file_problems

    return file_problems(_SOURCE, files)


def find_bad(source: Any, workers: int, label: str) -> tuple[int, list[tuple[str, str]]]:
    """(number of images, [(file, problem)]) for one dataset, folder or LMDB."""
    from hat.data.bad_images import dataset_files

    files = dataset_files(source)
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    bad: list[tuple[str, str]] = []
    with tqdm(total=len(files), desc=label, unit='image', file=sys.stderr) as bar, ExitStack() as stack:
        if workers > 1 and len(chunks) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(workers, initializer=_start, initargs=(source,)))
            results = pool.map(_check, chunks)
        else:
            _start(source)
            results = map(_check, chunks)
        for chunk, found in zip(chunks, results):
            bad += found
            bar.update(len(chunk))
    return len(files), bad


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m hat.scripts.check_data', description=__doc__.split('\n\n')[0])
    parser.add_argument('locations', nargs='*', help='image folders (searched recursively) and LMDBs')
    parser.add_argument('-opt', '--opt', dest='option_file', help='option file whose datasets are checked')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1), help='decoding processes')
    parser.add_argument('--debug', action='store_true', help='show tracebacks')
    args = parser.parse_args(argv)
    if not args.locations and not args.option_file:
        parser.error('give -opt OPTION_FILE and/or image folders or LMDBs')
    try:
        sources = option_sources(args.option_file) if args.option_file else []
        sources += [(location, ImageSource(location)) for location in args.locations]
    except (OSError, ValueError) as error:
        if args.debug:
            raise
        parser.error(str(error))
    total_bad = 0
    for label, source in sources:
        count, bad = find_bad(source, args.workers, label)
        for file, problem in bad:
            print(f'{label}: {file} {problem}')
        print(f'{label}: {len(bad)} of {count} images cannot be used' if bad else f'{label}: all {count} images decode',
              file=sys.stderr)
        total_bad += len(bad)
    return 1 if total_bad else 0


if __name__ == '__main__':
    sys.exit(main())
