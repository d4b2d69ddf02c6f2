"""The ``hat-upscale`` command line (also ``python -m hat.inference.upscale_cli``); the engine is ``Upscaler``.

    hat-upscale -i photos/ -o photos_x4/ -m HAT-S_SRx4.pth
    hat-upscale -i photo.jpg -o photo_x4.png -m HAT-S_SRx4.pth

INPUT is a file, a folder or a glob; outputs keep each input's relative path under OUTPUT. Nothing is
destroyed: outputs are written atomically, never into an input's folder without ``--suffix``, never over a
file without ``--overwrite``. Exit status: 0 all done or skipped, 1 some images failed, 2 bad arguments or
checkpoint, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). docs/upscale.md tells the rest.
"""
from __future__ import annotations

import argparse
import glob
import itertools
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from hat.inference.image_io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    STILL_ONLY_EXTENSIONS,
    ImageReadError,
    fit_to_format,
    is_image_path,
    read_image,
    write_image,
)
from hat.inference.plan import NotEnoughMemoryError, TileOutOfMemoryError
from hat.inference.precision import PRECISIONS
from hat.inference.upscaler import NonFiniteOutputError, Upscaler
from hat.weights.atomic_io import OutputExistsError, remove_stale_temp_files

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 128 + signal.SIGTERM

OUTPUT_EXTENSIONS = ('png', 'jpg', 'webp', 'same')

#: Per-image failures whose message says everything (no exception type prefixed).
_CLEAR_FAILURES = (ImageReadError, OutputExistsError, NotEnoughMemoryError, TileOutOfMemoryError,
                   NonFiniteOutputError)


class UsageError(ValueError):
    """Arguments that cannot work together; reported before any image is touched."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like Ctrl-C so temp files are removed and outputs stay complete."""


@dataclass
class Job:
    """One input image and where its result goes."""

    source: Path
    target: Path
    problem: Optional[str] = None


@dataclass
class Summary:
    """Counts and timing for the final report."""

    done: int = 0
    skipped: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0


def parse_tile(value: str):
    """``--tile``: a positive number of pixels, ``auto`` or ``off`` (whole image, unplanned: None)."""
    if value in ('auto', 'off'):
        return None if value == 'off' else 'auto'
    try:
        tile = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels, 'auto' or 'off', got {value!r}") from None
    if tile < 1:
        raise argparse.ArgumentTypeError(f'tile must be a positive number of pixels, got {tile}')
    return tile


def parse_megapixels(value: str) -> float:
    """``--max-megapixels``: a positive number."""
    try:
        megapixels = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number of megapixels, got {value!r}') from None
    if not megapixels > 0:
        raise argparse.ArgumentTypeError(f'must be a positive number of megapixels, got {value}')
    return megapixels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='hat-upscale', description='Super-resolve images with a HAT checkpoint (the variant is read from it).')
    parser.add_argument('-i', '--input', required=True, help='image file, folder or glob pattern')
    parser.add_argument('-o', '--output', required=True,
                        help='output folder (created if missing), or the output file when INPUT is one file and '
                             'OUTPUT has an image extension (e.g. result.png)')
    parser.add_argument('-m', '--model', required=True,
                        help='HAT checkpoint (.pth or .safetensors; params_ema, params or bare)')
    parser.add_argument('--tile', type=parse_tile, default='auto',
                        help="tile size in input pixels; 'auto' (default): the whole image when it fits in the "
                             "memory available (container and ulimit included), else the largest tile that does; "
                             "'off': the whole image whatever the memory")
    parser.add_argument('--tile-pad', type=int, default=32, help='context pixels around each tile (default 32)')
    parser.add_argument('--precision', choices=('auto', *PRECISIONS), default='auto',
                        help='auto (default): bf16 where the CPU or GPU computes it natively, else fp32; fp16 needs '
                             'CUDA; bf16 works on CUDA and CPU')
    parser.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available)')
    parser.add_argument('--tta', action='store_true', help='x8 self-ensemble (flips/transposes): 8x slower')
    parser.add_argument('--suffix', default='', help="added to output names, e.g. '_x4' (required to write "
                                                     'into an input folder)')
    parser.add_argument('--ext', choices=OUTPUT_EXTENSIONS, default=None,
                        help="output format in an output folder; 'same' keeps each input's (default png)")
    parser.add_argument('--max-megapixels', type=parse_megapixels, default=DEFAULT_MAX_PIXELS / 1e6,
                        help=f'refuse larger images, read from their header before decoding (default '
                             f'{DEFAULT_MAX_PIXELS / 1e6:g}; guards against decompression bombs)')
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument('--skip-existing', action='store_true', help='skip images whose output exists')
    existing.add_argument('--overwrite', action='store_true', help='replace outputs that exist')
    parser.add_argument('--recursive', action='store_true', help='include subfolders (and ** in globs)')
    parser.add_argument('--config', default=None,
                        help='BasicSR options YAML whose network_g overrides what weights cannot tell '
                             '(img_range, conv_scale, ...)')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')
    return parser


# ----------------------------------------------------------------------------- inputs
def _is_within(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def collect_inputs(spec: str, recursive: bool, exclude: Path) -> tuple[Path, list[Path], list[Path]]:
    """Expand INPUT into (root, image files, other files); files under ``exclude`` (the output
    folder) are left out when it lies inside the input folder."""
    path = Path(spec)
    if path.is_file():
        return path.parent, [path], []
    if path.is_dir():
        root = path
        candidates = sorted(p for p in (path.rglob('*') if recursive else path.iterdir()) if p.is_file())
    elif glob.has_magic(spec):
        root = _glob_root(spec)
        candidates = sorted(Path(p) for p in glob.glob(spec, recursive=recursive) if os.path.isfile(p))
    else:
        raise UsageError(f'input {spec!r} does not exist (expected an image file, a folder or a glob pattern)')
    if exclude.resolve() != root.resolve() and _is_within(exclude, root):
        # An output folder inside the input folder: earlier results are not inputs.
        candidates = [p for p in candidates if not _is_within(p, exclude)]
    images = [p for p in candidates if is_image_path(p)]
    others = [p for p in candidates if not is_image_path(p)]
    if not images:
        looked_for = ', '.join(sorted({*IMAGE_EXTENSIONS, *STILL_ONLY_EXTENSIONS}))
        raise UsageError(f'no images found in {spec!r} (looked for {looked_for}'
                         f'{"" if recursive else "; add --recursive for subfolders"})')
    return root, images, others


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading components without wildcards."""
    parts = list(itertools.takewhile(lambda part: not glob.has_magic(part), Path(pattern).parts))
    return Path(*parts) if parts else Path('.')


def plan_jobs(images: list[Path], root: Path, outdir: Path, suffix: str, ext: str) -> list[Job]:
    """Map each image to its output; refuse the input folder without a suffix, flag collisions."""
    inputs = {p.resolve() for p in images}
    claimed: dict[Path, Path] = {}
    jobs = []
    for source in images:
        relative = source.relative_to(root) if _is_within(source, root) else Path(source.name)
        out_ext = source.suffix if ext == 'same' else f'.{ext}'
        target = outdir / relative.parent / f'{source.stem}{suffix}{out_ext}'
        if not suffix and target.parent.resolve() == source.parent.resolve():
            raise UsageError(f'refusing to write into the input folder {str(source.parent)!r}: outputs could '
                             f'replace or mix with the inputs. Choose another --output folder or add a '
                             f'--suffix (e.g. --suffix _x4)')
        job = Job(source, target)
        resolved = target.resolve()
        if resolved in inputs:
            job.problem = f'its output {target} is one of the input images; use another --suffix or --output'
        elif resolved in claimed:
            job.problem = f'its output {target} is also the output of {claimed[resolved]}; rename one of them'
        else:
            claimed[resolved] = source
        jobs.append(job)
    return jobs


def output_file_job(spec: str, images: list[Path], output: Path, args: argparse.Namespace) -> Optional[Job]:
    """The one job when OUTPUT names a file (an image extension, not an existing folder); None for a folder."""
    if output.is_dir() or not is_image_path(output):
        return None
    if not (len(images) == 1 and Path(spec).is_file()):
        raise UsageError(f'output {str(output)!r} has an image extension, so it names one file, but the input '
                         f'{spec!r} is a folder or pattern ({len(images)} image(s)); give an output folder')
    if output.suffix.lower() in STILL_ONLY_EXTENSIONS:
        raise UsageError(f'cannot write {output.suffix} files; name the output .png, .jpg, .webp or .tif')
    if args.suffix or args.ext is not None:
        raise UsageError(f'--suffix and --ext apply to an output folder; the output file {str(output)!r} '
                         f'is written as named, in the format of its extension')
    job = Job(images[0], output)
    if output.resolve() == images[0].resolve():
        job.problem = f'its output {output} is the input image itself; name another output file'
    return job


def check_writable(folder: Path) -> None:
    """Refuse an output ``folder`` that cannot be created or written, before any image is computed; creates
    nothing that stays (a probe file in the deepest folder that exists is made and removed)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f'cannot create the output folder {str(folder)!r}: {str(existing)!r} is a file')
    try:
        fd, probe = tempfile.mkstemp(prefix='.hat-upscale-probe.', suffix='.tmp', dir=existing)
    except OSError as error:
        what = 'write into' if existing == folder else f'create {str(folder)!r} in'
        raise UsageError(f'cannot {what} {str(existing)!r}: {error.strerror or error}; choose another '
                         f'--output') from None
    os.close(fd)
    os.unlink(probe)


def remove_stale_outputs(jobs: list[Job]) -> None:
    """Remove temp files of our own pattern (``.NAME.<random>.tmp``) that a killed run left in the output folders."""
    for folder in sorted({job.target.parent for job in jobs}):
        removed = remove_stale_temp_files(folder, suffixes=IMAGE_EXTENSIONS)
        if removed:
            _say(f'removed {len(removed)} temp file(s) left in {folder} by an interrupted run: {", ".join(removed)}')


# ----------------------------------------------------------------------------- running
def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def process(job: Job, upscaler: Upscaler, overwrite: bool, max_pixels: int) -> float:
    """Upscale one image and write it; returns its input megapixels. Raises on any failure."""
    image = read_image(job.source, max_pixels=max_pixels)
    h, w = image.shape[:2]
    passes = upscaler.engine.count_passes(h, w)
    with warnings.catch_warnings(record=True) as caught, \
            tqdm(total=passes, desc=job.source.name[:30], unit='pass', position=1, leave=False, file=sys.stderr,
                 disable=passes <= 1) as pass_bar:
        warnings.simplefilter('always')
        result = upscaler.upscale(image, on_pass=pass_bar.update)
    for warning in caught:
        _say(f'warning: {job.source}: {warning.message}')
    result, losses = fit_to_format(result, job.target.suffix)
    for loss in losses:
        _say(f'warning: {job.source}: {loss}')
    write_image(job.target, result, overwrite=overwrite)
    return h * w / 1e6


def run(args: argparse.Namespace) -> int:
    """Upscale every input of ``args``; per-image failures are reported and counted, not raised."""
    outdir = Path(args.output)
    if args.tile_pad < 0:
        raise UsageError(f'--tile-pad must be >= 0, got {args.tile_pad}')
    root, images, others = collect_inputs(args.input, args.recursive, outdir)
    file_job = output_file_job(args.input, images, outdir, args)
    if file_job is not None:
        jobs, others, folder = [file_job], [], outdir.parent
    else:
        if outdir.exists() and not outdir.is_dir():
            raise UsageError(f'output {str(outdir)!r} exists and is not a folder')
        jobs, folder = plan_jobs(images, root, outdir, args.suffix, args.ext or 'png'), outdir
    check_writable(folder)
    upscaler = Upscaler(args.model, device=args.device, precision=args.precision, tile=args.tile,
                        tile_pad=args.tile_pad, tta=args.tta, config=args.config)
    _say(f'hat-upscale: HAT x{upscaler.scale} ({upscaler.in_chans}-channel) on {upscaler.device}, '
         f'{upscaler.precision} ({upscaler.precision_reason}), tile {args.tile or "off"}'
         f'{", TTA x8" if args.tta else ""}: {len(jobs)} image(s) -> {outdir}')
    remove_stale_outputs(jobs)
    max_pixels = int(args.max_megapixels * 1e6)

    summary = Summary(skipped=len(others))
    for other in others:
        _say(f'skipped {other}: not an image file (extension {other.suffix or "none"})')
    failures = []
    with tqdm(jobs, desc='images', unit='img', position=0, file=sys.stderr) as bar:
        for job in bar:
            bar.set_postfix_str(job.source.name[:30])
            problem = job.problem
            if problem is None and job.target.exists():
                if args.skip_existing:
                    summary.skipped += 1
                    continue
                if not args.overwrite:
                    problem = f'output {job.target} already exists; pass --overwrite to replace it ' \
                              f'or --skip-existing to keep it'
            if problem is None:
                start = time.perf_counter()
                try:
                    megapixels = process(job, upscaler, args.overwrite, max_pixels)
                except _CLEAR_FAILURES as error:
                    problem = str(error)
                except Exception as error:  # any one image's failure must not end the run
                    if args.debug:
                        traceback.print_exc()
                    problem = f'{type(error).__name__}: {error}'
                else:
                    summary.done += 1
                    summary.megapixels += megapixels
                    summary.seconds += time.perf_counter() - start
                    continue
            failures.append(problem if str(job.source) in problem else f'{job.source}: {problem}')
            _say(f'failed: {failures[-1]}')
    rate = summary.megapixels / summary.seconds if summary.seconds else 0.0
    print(f'hat-upscale: {summary.done} done, {summary.skipped} skipped, {len(failures)} failed; '
          f'{summary.megapixels:.3g} input megapixels in {summary.seconds:.1f} s = {rate:.3g} megapixels/s')
    for failure in failures:
        print(f'  failed: {failure}', file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``hat-upscale``; returns the exit status."""
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        print(f'hat-upscale: {"terminated (SIGTERM)" if terminated else "interrupted"}; outputs written so far '
              f'are complete, the image in progress was not written', file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        print(f'hat-upscale: error: {error}', file=sys.stderr)
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == '__main__':
    sys.exit(main())
