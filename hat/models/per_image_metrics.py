"""Validation that keeps every image's metrics: BasicSR's numbers, plus per-image CSV/JSON files and a page.

For each dataset it writes ``metrics_<dataset>.csv`` and ``.json`` (see ``hat.report.per_image``): in a
test run into ``results/<name>/`` beside the log, with ``index.html`` (``hat.report.html_page``); while
training into ``experiments/<name>/metrics/`` as ``metrics_<dataset>_<iter>``. The averages it logs are
BasicSR's (the same ``calculate_metric`` calls, summed in the same order), and ``val.tb_images: N`` logs
N validation crops to TensorBoard (``hat.models.tb_images``).
"""
from __future__ import annotations

import os
from os import path as osp
from pathlib import Path
from typing import Any, Optional

import cv2
import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img
from tqdm import tqdm

from hat.models.tb_images import ValidationImages
from hat.report.per_image import averages, file_stem, write_per_image
from hat.weights.atomic_io import OutputExistsError, write_bytes_atomic


class PerImageValidation:
    """Mixin for SRModel subclasses: ``nondist_validation`` that also records and writes per-image metrics."""

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img: bool) -> None:
        """Test every image as SRModel does (same saved images, same logged averages) and keep each one's numbers."""
        dataset_name = dataloader.dataset.opt['name']
        metric_opts = self.opt['val'].get('metrics') or {}
        folder, stem = self._per_image_target(dataset_name, current_iter)
        if not self.opt['is_train'] and (folder / f'{stem}.json').exists():
            raise OutputExistsError(f'{folder / stem}.json exists: two test datasets are named {dataset_name!r}; '
                                    'give each its own name')
        if metric_opts:
            self._initialize_best_metric_results(dataset_name)
        tb_images = ValidationImages(int(self.opt['val'].get('tb_images') or 0), tb_logger, dataset_name,
                                     current_iter, self.opt['scale'])
        rows = []
        for val_data in tqdm(dataloader, unit='image', disable=not self.opt['val'].get('pbar', False)):
            rows.append(self._validate_one(val_data, dataset_name, current_iter, save_img, metric_opts, tb_images))
        self.metric_results = averages(rows, list(metric_opts))
        if metric_opts:
            for name, value in self.metric_results.items():
                self._update_best_metric_result(dataset_name, name, value, current_iter)
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        self._write_per_image(folder, stem, dataset_name, current_iter, metric_opts, rows)

    def _validate_one(self, val_data: dict, dataset_name: str, current_iter: Any, save_img: bool,
                      metric_opts: dict, tb_images: ValidationImages) -> dict:
        """Super-resolve one image, save it if asked, and return its row (name, size, metrics, file paths)."""
        lq_path = _first(val_data.get('lq_path'))
        name = osp.splitext(osp.basename(lq_path))[0]
        self.feed_data(val_data)
        self.test()
        visuals = self.get_current_visuals()
        tb_images.add(name, visuals)
        metric_data = {'img': tensor2img([visuals['result']])}
        if 'gt' in visuals:
            metric_data['img2'] = tensor2img([visuals['gt']])
            del self.gt
        del self.lq, self.output
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        sr_path = self._save_validation_image(metric_data['img'], name, dataset_name, current_iter) if save_img \
            else None
        height, width = metric_data['img'].shape[:2]
        row = {'image': name, 'width': width, 'height': height}
        row.update({metric: float(calculate_metric(metric_data, opt)) for metric, opt in metric_opts.items()})
        row.update(sr_path=sr_path, gt_path=_first(val_data.get('gt_path')), lq_path=lq_path)
        return row

    def _save_validation_image(self, image, name: str, dataset_name: str, current_iter: Any) -> str:
        """Write the SR image where SRModel writes it, atomically; returns its path."""
        root = self.opt['path']['visualization']
        if self.opt['is_train']:
            path = osp.join(root, name, f'{name}_{current_iter}.png')
        else:
            path = osp.join(root, dataset_name, f'{name}_{self.opt["val"].get("suffix") or self.opt["name"]}.png')
        ok, encoded = cv2.imencode('.png', image)
        if not ok:
            raise OSError(f'could not encode the SR image of {name} as PNG')
        write_bytes_atomic(Path(path), encoded.tobytes(), overwrite=True)
        return path

    def _per_image_target(self, dataset_name: str, current_iter: Any) -> tuple[Path, str]:
        """(folder, file stem) of this pass's per-image files: the results folder, or ``metrics/`` while training."""
        if self.opt['is_train']:
            return Path(self.opt['path']['experiments_root']) / 'metrics', file_stem(dataset_name, current_iter)
        return Path(self.opt['path']['results_root']), file_stem(dataset_name)

    def _write_per_image(self, folder: Path, stem: str, dataset_name: str, current_iter: Any, metric_opts: dict,
                         rows: list[dict]) -> None:
        """Write the pass's CSV/JSON (paths relative to ``folder``) and, in a test run, the run's index.html."""
        from hat.report.html_page import write_index

        for row in rows:
            for key in ('sr_path', 'gt_path', 'lq_path'):
                row[key] = _relative(row[key], folder)
        record = {'run': self.opt['name'], 'dataset': dataset_name, 'iter': current_iter, 'scale': self.opt['scale'],
                  'metrics': {name: dict(opt) for name, opt in metric_opts.items()},
                  'average': dict(self.metric_results), 'images': rows}
        folder.mkdir(parents=True, exist_ok=True)
        write_per_image(folder, stem, record, overwrite=self.opt['is_train'])
        if not self.opt['is_train']:
            write_index(folder)


def _first(value: Any) -> Optional[str]:
    """The one path of a batch of one (the dataloader gives lists), or None."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def _relative(path: Optional[str], folder: Path) -> Optional[str]:
    """``path`` relative to ``folder`` with '/' separators, so a results folder moved with its data still works."""
    if path is None:
        return None
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
