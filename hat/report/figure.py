"""``python -m hat.report.figure RUN [RUN ...] --image NAME``: the zoomed-crop comparison figure of SR papers.

For each box: the ground truth with the box drawn, then the box's crop from bicubic, from each run and
from the ground truth, enlarged with nearest-neighbour pixels and labelled with the method and the crop's
PSNR against the ground truth (Y channel unless the runs' PSNR metric says RGB). The runs must have saved
their images (``val.save_img: true``).

Automatic boxes (no ``--box``): squares of side ``--box-size`` (default a sixth of the shorter image side)
on a grid of a quarter side's stride; the box is the one where the crop PSNR of the methods differs most
(highest minus lowest over the runs, or over bicubic and the run when there is one run); each further box
is the next best that does not overlap those chosen.
"""
from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hat.report import ReportError
from hat.report.bicubic import bicubic_upscale, read_bgr
from hat.report.bicubic import ground_truth as load_ground_truth
from hat.report.per_image import read_run
from hat.weights.atomic_io import OutputExistsError, atomic_write_bytes

#: Space between panels and around labels, as a fraction of the figure width.
GAP_FRACTION = 0.008
BOX_COLOUR = (230, 20, 20)

Box = tuple[int, int, int, int]  # x, y, width, height in ground-truth pixels


@dataclass
class Method:
    """One column of crops: a label and its full-size BGR image."""

    label: str
    image: np.ndarray


def parse_box(text: str) -> Box:
    """``x,y,w,h`` in ground-truth pixels."""
    try:
        x, y, w, h = (int(part) for part in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a box; write x,y,width,height, e.g. 120,80,48,48') \
            from None
    return x, y, w, h


def find_row(folder: Path, dataset: Optional[str], image: str) -> tuple[dict, dict]:
    """The per-image record of ``dataset`` (the only one if None) in run ``folder`` and the row of ``image``."""
    records = {r['dataset']: r for r in read_run(folder).values()}
    if not records:
        raise ReportError(f'{folder} is not a test run with per-image metrics (no metrics_*.json)')
    if dataset is None:
        if len(records) > 1:
            raise ReportError(f'{folder} tested {", ".join(records)}; choose one with --dataset')
        dataset = next(iter(records))
    if dataset not in records:
        raise ReportError(f'{folder} has no dataset {dataset!r} (it has {", ".join(records)})')
    rows = {row['image']: row for row in records[dataset]['images']}
    if image not in rows:
        raise ReportError(f'{folder} has no image {image!r} in {dataset} (it has {", ".join(sorted(rows)[:8])} ...)')
    return records[dataset], rows[image]


def load_methods(folders: Sequence[Path], dataset: Optional[str], image: str) -> tuple[list[Method], bool]:
    """Bicubic, each run and the ground truth as full-size images of one size; and whether PSNR is on Y."""
    methods, ground_truth, record = [], None, None
    for folder in folders:
        record, row = find_row(folder, dataset, image)
        if not row.get('sr_path'):
            raise ReportError(f'{folder} did not save its images; test it again with `val.save_img: true`')
        sr = read_bgr(folder / row['sr_path'], f'the SR image of {Path(folder).name}')
        if ground_truth is None:
            ground_truth, first = load_ground_truth(row, Path(folder)), folder
            methods.append(Method('Bicubic', bicubic_upscale(ground_truth, row, Path(folder), int(record['scale']))))
        if sr.shape != ground_truth.shape:
            raise ReportError(f'{image} of {Path(folder).name} is {sr.shape[1]}x{sr.shape[0]} but the ground truth '
                              f'(from {Path(first).name}) is {ground_truth.shape[1]}x{ground_truth.shape[0]}; '
                              'compare runs of the same scale and dataset')
        methods.append(Method(Path(folder).name, sr))
    methods.append(Method('GT', ground_truth))
    psnr = record['metrics'].get('psnr') or {}
    return methods, bool(psnr.get('test_y_channel', True))


def luma(image: np.ndarray, y_channel: bool) -> np.ndarray:
    """The Y channel (BasicSR's ``bgr2ycbcr``, 0-255) or the BGR image itself, as float64."""
    if not y_channel:
        return image.astype(np.float64)
    from basicsr.utils.color_util import bgr2ycbcr

    return bgr2ycbcr(image.astype(np.float32) / 255, y_only=True).astype(np.float64) * 255


def crop_psnr(image: np.ndarray, ground_truth: np.ndarray, box: Box, y_channel: bool) -> float:
    """PSNR of ``image`` against ``ground_truth`` inside ``box``, computed as BasicSR's calculate_psnr does."""
    from basicsr.metrics import calculate_psnr

    x, y, w, h = box
    return float(calculate_psnr(image[y:y + h, x:x + w], ground_truth[y:y + h, x:x + w], 0, test_y_channel=y_channel))


def check_box(box: Box, shape: tuple[int, ...]) -> None:
    """A box must lie inside the image and be at least 2 pixels each way."""
    x, y, w, h = box
    height, width = shape[:2]
    if w < 2 or h < 2 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise ReportError(f'box {x},{y},{w},{h} is not inside the {width}x{height} image; '
                          'give x,y,width,height with x+width <= width and y+height <= height')


def automatic_boxes(methods: list[Method], y_channel: bool, side: int, count: int) -> list[Box]:
    """The ``count`` non-overlapping squares where the compared methods' crop PSNR spreads most (module doc)."""
    ground_truth = luma(methods[-1].image, y_channel)
    compared = methods[1:-1] if len(methods) > 3 else methods[:-1]
    height, width = ground_truth.shape[:2]
    side = min(side, height, width)
    stride = max(1, side // 4)
    ys, xs = np.arange(0, height - side + 1, stride), np.arange(0, width - side + 1, stride)
    psnrs = []
    for method in compared:
        error = (luma(method.image, y_channel) - ground_truth) ** 2
        if error.ndim == 3:
            error = error.mean(axis=2)
        total = np.pad(error.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        sums = (total[ys[:, None] + side, xs[None] + side] - total[ys[:, None], xs[None] + side]
                - total[ys[:, None] + side, xs[None]] + total[ys[:, None], xs[None]])
        psnrs.append(10 * np.log10(255.0 ** 2 / np.maximum(sums / side ** 2, 1e-10)))
    spread = np.max(psnrs, axis=0) - np.min(psnrs, axis=0)
    boxes: list[Box] = []
    for flat in np.argsort(-spread, axis=None, kind='stable'):
        x, y = int(xs[flat % len(xs)]), int(ys[flat // len(xs)])
        if all(x >= bx + side or bx >= x + side or y >= by + side or by >= y + side for bx, by, _, _ in boxes):
            boxes.append((x, y, side, side))
        if len(boxes) == count:
            break
    return boxes


def _fit_label(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text``, shortened with an ellipsis to fit ``width`` pixels."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + '…'
    return text


def draw_block(methods: list[Method], box: Box, psnrs: list[Optional[float]], width: int,
               font: ImageFont.ImageFont, title: str) -> Image.Image:
    """One box's row: the ground truth with the box, then the labelled crops in one or two rows."""
    gap = max(2, round(width * GAP_FRACTION))
    label_h = round(font.size * 2.8)
    ground_truth = methods[-1].image
    aspect = ground_truth.shape[1] / ground_truth.shape[0]
    x, y, w, h = box
    rows = 1 if len(methods) <= 3 else 2
    columns = -(-len(methods) // rows)
    ratio = h / w
    # width = aspect * (panel height - label) + gap + columns * (tile + gap), with the panel as tall as the crops
    extra = rows * label_h + (rows - 1) * gap - label_h
    tile = int((width - aspect * extra - columns * gap) / (aspect * rows * ratio + columns))
    if tile < 8:
        raise ReportError(f'{len(methods)} crops do not fit a {width}-pixel figure; give a larger --width')
    tile_h = round(tile * ratio)
    block_h = rows * (tile_h + label_h) + (rows - 1) * gap
    panel_h = block_h - label_h
    panel_w = max(1, round(aspect * panel_h))
    canvas = Image.new('RGB', (width, block_h), 'white')
    draw = ImageDraw.Draw(canvas)
    panel = Image.fromarray(ground_truth[..., ::-1]).resize((panel_w, panel_h), Image.LANCZOS)
    canvas.paste(panel, (0, 0))
    zoom = panel_w / ground_truth.shape[1]
    draw.rectangle([round(x * zoom), round(y * zoom), round((x + w) * zoom) - 1, round((y + h) * zoom) - 1],
                   outline=BOX_COLOUR, width=max(2, gap // 2))
    draw.text((panel_w / 2, panel_h + gap), _fit_label(draw, title, font, panel_w), fill='black', font=font,
              anchor='ma')
    left = panel_w + gap
    for k, (method, psnr) in enumerate(zip(methods, psnrs)):
        cx, cy = left + (k % columns) * (tile + gap), (k // columns) * (tile_h + label_h + gap)
        crop = Image.fromarray(method.image[y:y + h, x:x + w, ::-1]).resize((tile, tile_h), Image.NEAREST)
        canvas.paste(crop, (cx, cy))
        lines = [_fit_label(draw, method.label, font, tile)] + ([f'{psnr:.2f} dB'] if psnr is not None else [])
        draw.multiline_text((cx + tile / 2, cy + tile_h + gap // 2), '\n'.join(lines), fill='black', font=font,
                            anchor='ma', align='center', spacing=1)
    return canvas


def draw_figure(methods: list[Method], boxes: list[Box], y_channel: bool, width: int, title: str) -> Image.Image:
    """All boxes' rows stacked, the figure ``width`` pixels wide."""
    font = ImageFont.load_default(size=max(9, width // 60))
    blocks = []
    for box in boxes:
        psnrs = [crop_psnr(m.image, methods[-1].image, box, y_channel) for m in methods[:-1]] + [None]
        blocks.append(draw_block(methods, box, psnrs, width, font, title))
    gap = max(2, round(width * GAP_FRACTION)) * 3
    figure = Image.new('RGB', (width, sum(b.height for b in blocks) + gap * (len(blocks) - 1)), 'white')
    top = 0
    for block in blocks:
        figure.paste(block, (0, top))
        top += block.height + gap
    return figure


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m hat.report.figure', description=(
        'Draw the zoomed-crop comparison of SR papers from test runs that saved their images: the ground truth '
        'with the box, then the crop from bicubic, each run and the ground truth with its PSNR. Without --box '
        'the boxes go where the runs differ most (see docs/results.md).'))
    parser.add_argument('runs', nargs='+', type=Path, metavar='RUN', help='results/<name> folder of a test run')
    parser.add_argument('--image', required=True, help='image name as in the per-image CSV (no extension)')
    parser.add_argument('--dataset', help='dataset name (needed when the runs tested several)')
    parser.add_argument('--box', type=parse_box, action='append', help='x,y,width,height in HR pixels; repeatable')
    parser.add_argument('--boxes', type=int, default=1, help='number of automatic boxes (default 1)')
    parser.add_argument('--box-size', type=int, help='side of automatic boxes (default: a sixth of the shorter side)')
    parser.add_argument('--width', type=int, default=1000, help='figure width in pixels (default 1000)')
    parser.add_argument('-o', '--output', type=Path, required=True, help='PNG file to write')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output file')
    return parser.parse_args(argv)


def make_figure(args: argparse.Namespace) -> tuple[Image.Image, list[Box]]:
    """The figure the arguments ask for, and its boxes."""
    if args.output.suffix.lower() != '.png':
        raise ReportError(f'{args.output} should end in .png')
    if not args.output.parent.is_dir():
        raise ReportError(f'folder {args.output.parent} does not exist; create it first')
    if args.output.exists() and not args.overwrite:
        raise ReportError(f'{args.output} exists; pass --overwrite to replace it')
    if args.boxes < 1 or (args.box_size is not None and args.box_size < 2) or args.width < 100:
        raise ReportError('--boxes must be at least 1, --box-size at least 2 and --width at least 100')
    methods, y_channel = load_methods(args.runs, args.dataset, args.image)
    shape = methods[-1].image.shape
    for box in args.box or []:
        check_box(box, shape)
    side = args.box_size or max(8, min(shape[:2]) // 6)
    boxes = args.box or automatic_boxes(methods, y_channel, side, args.boxes)
    title = f'{args.image} ({args.dataset})' if args.dataset else args.image
    return draw_figure(methods, boxes, y_channel, args.width, title), boxes


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write the figure; 2 with one line on stderr for input it cannot use."""
    args = parse_args(argv)
    try:
        figure, boxes = make_figure(args)
        data = io.BytesIO()
        figure.save(data, format='PNG', optimize=True)
        atomic_write_bytes(args.output, data.getvalue(), overwrite=args.overwrite)
    except (ReportError, OutputExistsError) as error:
        print(f'hat.report.figure: error: {error}', file=sys.stderr)
        return 2
    shown = ' '.join(f'{x},{y},{w},{h}' for x, y, w, h in boxes)
    print(f'{args.output}: {figure.width}x{figure.height}, boxes (x,y,width,height) {shown}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
