"""``hat-upscale`` / ``python -m hat.upscale``: super-resolve image files with a HAT checkpoint.

    hat-upscale -i photos/ -o photos_x4/ -m HAT-S_SRx4.pth --tile auto

INPUT is a file, a folder (``--recursive`` for subfolders) or a glob. Outputs keep the
input's relative path and name (plus ``--suffix``) under OUTDIR. Nothing is destroyed:
writing into an input's own folder needs ``--suffix``, every output is written atomically,
and an existing output is only replaced with ``--overwrite`` (``--skip-existing`` skips it).
Exit status: 0 all done or skipped, 1 some images failed, 2 bad arguments or checkpoint.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from hat.atomic_io import OutputExistsError
from hat.image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    fit_to_format,
    is_image_path,
    read_image,
    write_image,
)
from hat.upscaler import Upscaler

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

OUTPUT_EXTENSIONS = ('png', 'jpg', 'webp', 'same')


class UsageError(ValueError):
    """Arguments that cannot work together; reported before any image is touched."""


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
    failed: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0


def parse_tile(value: str):
    """``--tile``: a positive number of pixels or ``auto``."""
    if value == 'auto':
        return 'auto'
    try:
        tile = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'auto', got {value!r}") from None
    if tile < 1:
        raise argparse.ArgumentTypeError(f'tile must be a positive number of pixels, got {tile}')
    return tile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='hat-upscale', description='Super-resolve images with a HAT checkpoint (the variant is read from it).')
    parser.add_argument('-i', '--input', required=True, help='image file, folder or glob pattern')
    parser.add_argument('-o', '--output', required=True, help='output folder (created if missing)')
    parser.add_argument('-m', '--model', required=True, help='HAT checkpoint (.pth; params_ema, params or bare)')
    parser.add_argument('--tile', type=parse_tile, default=None,
                        help="tile size in input pixels, or 'auto' for the largest that fits in memory "
                             '(default: whole image)')
    parser.add_argument('--tile-pad', type=int, default=32, help='context pixels around each tile (default 32)')
    parser.add_argument('--precision', choices=('fp32', 'fp16', 'bf16'), default='fp32',
                        help='fp16 needs CUDA; bf16 works on CUDA and CPU (default fp32)')
    parser.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available)')
    parser.add_argument('--tta', action='store_true', help='x8 self-ensemble (flips/transposes): 8x slower')
    parser.add_argument('--suffix', default='', help="added to output names, e.g. '_x4' (required to write "
                                                     'into an input folder)')
    parser.add_argument('--ext', choices=OUTPUT_EXTENSIONS, default='png',
                        help="output format; 'same' keeps each input's (default png)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument('--skip-existing', action='store_true', help='skip images whose output exists')
    existing.add_argument('--overwrite', action='store_true', help='replace outputs that exist')
    parser.add_argument('--recursive', action='store_true', help='include subfolders (and ** in globs)')
    parser.add_argument('--config', default=None,
                        help='BasicSR options YAML whose network_g overrides what weights cannot tell '
                             '(img_range, conv_scale, ...)')
    return parser


# ----------------------------------------------------------------------------- inputs
def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


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
        raise UsageError(f'no images found in {spec!r} (looked for {", ".join(sorted(IMAGE_EXTENSIONS))}'
                         f'{"" if recursive else "; add --recursive for subfolders"})')
    return root, images, others


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading components without wildcards."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
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


# ----------------------------------------------------------------------------- running
def _say(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def process(job: Job, upscaler: Upscaler, overwrite: bool) -> float:
    """Upscale one image and write it; returns its input megapixels. Raises on any failure."""
    image = read_image(job.source)
    h, w = image.shape[:2]
    passes = upscaler.count_passes(h, w)
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


def _failure(job: Job, problem: str) -> str:
    """``problem`` prefixed with the image's path unless it already names it."""
    return problem if str(job.source) in problem else f'{job.source}: {problem}'


def run(args: argparse.Namespace) -> int:
    """Upscale every input of ``args``; per-image failures are reported and counted, not raised."""
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f'output {str(outdir)!r} exists and is not a folder')
    if args.tile_pad < 0:
        raise UsageError(f'--tile-pad must be >= 0, got {args.tile_pad}')
    root, images, others = collect_inputs(args.input, args.recursive, outdir)
    jobs = plan_jobs(images, root, outdir, args.suffix, args.ext)
    upscaler = Upscaler(args.model, device=args.device, precision=args.precision, tile=args.tile,
                        tile_pad=args.tile_pad, tta=args.tta, config=args.config)
    _say(f'hat-upscale: HAT x{upscaler.scale} ({upscaler.in_chans}-channel) on {upscaler.device}, '
         f'{args.precision}, tile {args.tile or "off"}{", TTA x8" if args.tta else ""}: '
         f'{len(jobs)} image(s) -> {outdir}')

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
                    megapixels = process(job, upscaler, args.overwrite)
                except (ImageReadError, OutputExistsError) as error:
                    problem = str(error)
                except Exception as error:  # any one image's failure must not end the run
                    problem = f'{type(error).__name__}: {error}'
                else:
                    summary.done += 1
                    summary.megapixels += megapixels
                    summary.seconds += time.perf_counter() - start
                    continue
            summary.failed += 1
            failures.append(_failure(job, problem))
            _say(f'failed: {failures[-1]}')
    rate = summary.megapixels / summary.seconds if summary.seconds else 0.0
    print(f'hat-upscale: {summary.done} done, {summary.skipped} skipped, {summary.failed} failed; '
          f'{summary.megapixels:.3g} input megapixels in {summary.seconds:.1f} s = {rate:.3g} megapixels/s')
    for failure in failures:
        print(f'  failed: {failure}', file=sys.stderr)
    return EXIT_FAILED if summary.failed else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``hat-upscale``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print('hat-upscale: interrupted (outputs written so far are complete)', file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, ValueError, FileNotFoundError) as error:
        print(f'hat-upscale: error: {error}', file=sys.stderr)
        return EXIT_USAGE


if __name__ == '__main__':
    sys.exit(main())
