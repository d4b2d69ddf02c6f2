"""Learning, not just running: the demo recipe, shortened, trains a tiny HAT that beats bicubic upsampling
(PSNR-Y) on held-out photos."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import yaml
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize
from test_train_support import REPO_ROOT, run, train_log, write_options

from hat.data import HROnlyDataset

DEMO = REPO_ROOT / 'options' / 'train' / 'HAT-tiny_SRx2_demo.yml'


def bicubic_psnr(val_dir) -> float:
    """Mean PSNR-Y of MATLAB bicubic upsampling (the SR papers' "Bicubic") of the validation photos' LR."""
    dataset = HROnlyDataset(dict(name='val', dataroot_gt=str(val_dir), io_backend=dict(type='disk'), scale=2,
                                 phase='val'))
    scores = []
    for item in (dataset[i] for i in range(len(dataset))):
        up = torch.from_numpy(imresize(item['lq'].permute(1, 2, 0).numpy(), 2)).permute(2, 0, 1)
        scores.append(calculate_psnr(tensor2img(up), tensor2img(item['gt']), 2, test_y_channel=True))
    return float(np.mean(scores))


@pytest.mark.slow
def test_short_demo_training_beats_bicubic_on_held_out_photos(tmp_path):
    opt = yaml.safe_load(DEMO.read_text())
    for phase in ('train', 'val'):
        opt['datasets'][phase]['dataroot_gt'] = str(REPO_ROOT / opt['datasets'][phase]['dataroot_gt'])
    opt['train']['total_iter'] = 400
    opt['train']['scheduler']['milestones'] = [260, 330]
    opt['val']['val_freq'] = 10 ** 6  # validate once, after training
    opt['logger']['save_checkpoint_freq'] = 10 ** 6
    yml = write_options(opt, tmp_path / 'learn.yml')
    run('train', tmp_path, '-opt', str(yml), timeout=900)

    log = train_log(tmp_path, opt['name'])
    learned = float(re.findall(r'# psnr: (\d+\.\d+)', log)[-1])
    baseline = bicubic_psnr(opt['datasets']['val']['dataroot_gt'])
    assert learned > baseline + 0.1, f'tiny HAT {learned:.3f} dB vs bicubic {baseline:.3f} dB'
