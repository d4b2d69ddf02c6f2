"""Helpers for the training tests: tiny option files, photo folders and the training command in a tmp root.

Every run writes ``experiments/`` and ``results/`` under a root the test owns (``hat.train.main``
takes the root), never under the repository.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_PHOTOS = REPO_ROOT / 'demo' / 'photos'

#: Tiny HAT for training runs (see conftest.TINY_CONFIG); ``img_size`` is set per run.
TINY_NETWORK = dict(type='HAT', in_chans=3, img_size=16, embed_dim=24, depths=[2, 2], num_heads=[3, 3],
                    window_size=8, compress_ratio=3, squeeze_factor=6, conv_scale=0.01, overlap_ratio=0.5,
                    mlp_ratio=2, upscale=2, img_range=1.0, upsampler='pixelshuffle', resi_connection='1conv')


def write_photos(folder: Path, size: int = 96, names: tuple[str, ...] = ('astronaut', 'coffee')) -> Path:
    """Centre crops of scikit-image sample photos as PNG files in ``folder``."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = getattr(data, name)()
        h, w = image.shape[:2]
        crop = image[(h - size) // 2:(h + size) // 2, (w - size) // 2:(w + size) // 2, :3]
        cv2.imwrite(str(folder / f'{name}.png'), np.ascontiguousarray(crop[..., ::-1]))
    return folder


def tiny_options(name: str, train_dir: Path, val_dir: Optional[Path], scale: int = 2, total_iter: int = 4,
                 **sections: Any) -> dict:
    """Options for a tiny CPU run on HR folders (LR made on the fly), overridable section by section."""
    gt_size = 16 * scale
    opt = dict(
        name=name, model_type='HATModel', scale=scale, num_gpu=0, manual_seed=0,
        datasets=dict(train=dict(name='photos', type='HROnlyDataset', dataroot_gt=str(train_dir),
                                 io_backend=dict(type='disk'), gt_size=gt_size, use_hflip=True, use_rot=True,
                                 use_shuffle=True, num_worker_per_gpu=0, batch_size_per_gpu=2,
                                 dataset_enlarge_ratio=10, prefetch_mode=None)),
        network_g={**TINY_NETWORK, 'upscale': scale, 'img_size': gt_size // scale},
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(ema_decay=0.999, optim_g=dict(type='Adam', lr=1e-3, weight_decay=0, betas=[0.9, 0.99]),
                   scheduler=dict(type='MultiStepLR', milestones=[10 ** 6], gamma=0.5), total_iter=total_iter,
                   warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
        logger=dict(print_freq=1, save_checkpoint_freq=total_iter, use_tb_logger=False),
    )
    if val_dir is not None:
        opt['datasets']['val'] = dict(name='held_out', type='HROnlyDataset', dataroot_gt=str(val_dir),
                                      io_backend=dict(type='disk'))
        metric = dict(crop_border=scale, test_y_channel=True)
        opt['val'] = dict(val_freq=10 ** 6, save_img=False, metrics=dict(
            psnr=dict(type='calculate_psnr', **metric), ssim=dict(type='calculate_ssim', **metric)))
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(opt.get(key), dict):
            opt[key] = {**opt[key], **copy.deepcopy(value)}
        else:
            opt[key] = value
    return opt


def write_options(opt: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def command(script: str, root: Path, *args: str) -> list[str]:
    """``python -c`` running ``hat.train.main`` / ``hat.test.main`` with ``root`` as the project root."""
    code = f'import sys; from hat.{script} import main; main(sys.argv.pop(1))'
    return [sys.executable, '-c', code, str(root), *args]


def subprocess_env(threads: int = 1) -> dict:
    """Environment for training subprocesses: one thread each (the test machine is small and shared)."""
    return {**os.environ, 'OMP_NUM_THREADS': str(threads), 'PYTHONUNBUFFERED': '1'}


def run(script: str, root: Path, *args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """Run the train/test command to completion; fail the test with its output if it fails and ``check``."""
    result = subprocess.run(command(script, root, *args), cwd=root, env=subprocess_env(), capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f'{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n'
                             f'{result.stderr[-5000:]}')
    return result


def train_log(root: Path, name: str) -> str:
    """The text of the (single) training log of experiment ``name``."""
    logs = sorted((root / 'experiments' / name).glob('train_*.log'))
    assert len(logs) == 1, logs
    return logs[0].read_text()
