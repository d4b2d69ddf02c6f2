"""The bicubic baseline of SR papers: MATLAB-bicubic upscaling of each test image's LR input, and its scores."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hat.report import ReportError


def read_bgr(path: Path, what: str) -> np.ndarray:
    """An 8-bit BGR image as BasicSR reads it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ReportError(f'{what} {path} is missing or not an image')
    return image


def ground_truth(row: dict, folder: Path) -> np.ndarray:
    """The row's ground truth cropped to the SR size, as the datasets crop it to a multiple of the scale."""
    if not row.get('gt_path'):
        raise ReportError(f'{row["image"]} has no ground truth in {folder}')
    image = read_bgr(Path(folder) / row['gt_path'], 'ground truth')
    if image.shape[0] < row['height'] or image.shape[1] < row['width']:
        raise ReportError(f'the ground truth of {row["image"]} is {image.shape[1]}x{image.shape[0]}, smaller than '
                          f'its {row["width"]}x{row["height"]} SR image')
    return np.ascontiguousarray(image[:row['height'], :row['width']])


def bicubic_upscale(gt: np.ndarray, row: dict, folder: Path, scale: int) -> np.ndarray:
    """MATLAB-bicubic upscaling of the LR input: the LR file if the dataset had one, else the LR BasicSR made."""
    from basicsr.utils.matlab_functions import imresize

    from hat.data.hr_only_dataset import bicubic_lr

    lq_path, gt_path = row.get('lq_path'), row.get('gt_path')
    if lq_path and lq_path != gt_path:
        lr = read_bgr(Path(folder) / lq_path, 'LR image').astype(np.float32) / 255
    else:
        lr = bicubic_lr(gt.astype(np.float32) / 255, scale)
    upscaled = (np.clip(imresize(lr, scale), 0, 1) * 255).round().astype(np.uint8)
    if upscaled.shape != gt.shape:
        raise ReportError(f'the LR image of {row["image"]} upscaled x{scale} is {upscaled.shape[1]}x'
                          f'{upscaled.shape[0]}, not the ground truth\'s {gt.shape[1]}x{gt.shape[0]}')
    return upscaled


def bicubic_averages(record: dict, folder: Path) -> dict[str, float]:
    """Bicubic's average of each metric of a per-image record, scored and averaged as BasicSR does."""
    from basicsr.metrics import calculate_metric

    from hat.report.per_image import averages

    rows = []
    for row in record['images']:
        gt = ground_truth(row, folder)
        data = {'img': bicubic_upscale(gt, row, folder, int(record.get('scale') or 1)), 'img2': gt}
        rows.append({name: float(calculate_metric(data, opt)) for name, opt in record['metrics'].items()})
    return averages(rows, list(record['metrics']))
