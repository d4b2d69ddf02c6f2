"""Helpers for the report tests: real test runs of tiny HAT checkpoints, and run folders made from photos."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch
from test_train_support import TINY_NETWORK, run, write_options

from hat.report.per_image import averages, file_stem, write_per_image

#: The metrics every test run scores, as a paper's table would (Y channel, border of the scale).
METRICS = dict(psnr=dict(type='calculate_psnr', crop_border=2, test_y_channel=True),
               ssim=dict(type='calculate_ssim', crop_border=2, test_y_channel=True))


def tiny_weights(path: Path, seed: int) -> Path:
    """A randomly initialised tiny HAT x2 (seeded) saved as BasicSR's ``{'params': ...}``."""
    from hat.archs.hat_arch import HAT

    torch.manual_seed(seed)
    options = {key: value for key, value in TINY_NETWORK.items() if key != 'type'}
    torch.save({'params': HAT(**options).state_dict()}, path)
    return path


def test_run(root: Path, name: str, weights: Path, datasets: list[tuple[str, Path]], save_img: bool = True) -> Path:
    """Run the real ``hat/test.py`` on HR folders (LR by bicubic) in ``root``; returns ``results/<name>``."""
    opt = dict(name=name, model_type='HATModel', scale=2, num_gpu=0, manual_seed=0,
               datasets={f'test_{i}': dict(name=dataset, type='HROnlyDataset', dataroot_gt=str(folder),
                                            io_backend=dict(type='disk'))
                         for i, (dataset, folder) in enumerate(datasets, 1)},
               network_g=dict(TINY_NETWORK), path=dict(pretrain_network_g=str(weights), strict_load_g=True),
               val=dict(save_img=save_img, suffix=None, metrics=METRICS))
    run('test', root, '-opt', str(write_options(opt, root / f'{name}.yml')))
    return root / 'results' / name


test_run.__test__ = False  # a helper, not a test


def logged_averages(results: Path) -> dict[str, dict[str, str]]:
    """dataset -> metric -> the average as the test log prints it (4 decimals)."""
    (log,) = results.glob('test_*.log')
    found: dict[str, dict[str, str]] = {}
    for block in re.finditer(r'Validation (\S+)\n((?:\t # .*\n)+)', log.read_text()):
        found[block[1]] = dict(re.findall(r'# (\w+): ([-\d.]+)', block[2]))
    return found


def fake_run(folder: Path, dataset: str, images: dict[str, np.ndarray], gt_folder: Path, scale: int = 2,
             psnr: float = 30.0) -> Path:
    """A results folder as a test run leaves it: SR images saved, per-image files naming GT files in ``gt_folder``.

    ``images`` maps image names to SR images (HWC BGR uint8); the GT file of each must exist in ``gt_folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, image) in enumerate(images.items()):
        sr = folder / 'visualization' / dataset / f'{name}_{folder.name}.png'
        sr.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sr), image)
        gt = (gt_folder / f'{name}.png').resolve()
        rows.append(dict(image=name, width=image.shape[1], height=image.shape[0], psnr=psnr + i, ssim=0.8,
                         sr_path=sr.relative_to(folder).as_posix(), gt_path=str(gt), lq_path=str(gt)))
    record = dict(run=folder.name, dataset=dataset, iter=folder.name, scale=scale, metrics=METRICS,
                  average=averages(rows, ['psnr', 'ssim']), images=rows)
    write_per_image(folder, file_stem(dataset), record, overwrite=True)
    return folder


def in_process(main: Callable[[Optional[Sequence[str]]], int], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A command's ``main(args)`` run in this process from ``cwd``, with its exit code, stdout and stderr."""
    stdout, stderr, folder = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(list(args))
    finally:
        os.chdir(folder)
    return subprocess.CompletedProcess(list(args), code, stdout.getvalue(), stderr.getvalue())
