"""Option checks run before training: paired folders/LMDBs with wrong names, counts or sizes, missing or empty
folders, gt_size, and pretrained paths all fail with a message that names the problem."""
from __future__ import annotations

import shutil

import cv2
import pytest
from basicsr.utils.matlab_functions import imresize
from test_train_support import write_photos

from hat.data.checks import check_options


def paired_options(gt, lq, scale=2, phase='train', backend='disk', **extra):
    dataset = {'name': 'pairs', 'type': 'PairedImageDataset', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq),
               'io_backend': {'type': backend}, 'scale': scale, 'phase': phase, 'gt_size': 32, **extra}
    return {'datasets': {phase: dataset}, 'path': {'pretrain_network_g': None}, 'auto_resume': False}


@pytest.fixture()
def pairs(tmp_path):
    """HR photos and their x2 bicubic LR with the same names."""
    gt = write_photos(tmp_path / 'GTmod12', 48, ('astronaut', 'coffee', 'chelsea'))
    lq = tmp_path / 'LRbicx2'
    lq.mkdir()
    for path in gt.iterdir():
        lr = imresize(cv2.imread(str(path)) / 255.0, 0.5)
        cv2.imwrite(str(lq / path.name), (lr.clip(0, 1) * 255).round().astype('uint8'))
    return gt, lq


def test_matching_pairs_pass(pairs):
    check_options(paired_options(*pairs))
    check_options(paired_options(*pairs, phase='val'))


def test_count_mismatch(pairs):
    gt, lq = pairs
    (lq / 'coffee.png').unlink()
    with pytest.raises(ValueError, match='has 3 images but dataroot_lq .* has 2'):
        check_options(paired_options(gt, lq))


def test_name_mismatch(pairs):
    gt, lq = pairs
    (lq / 'coffee.png').rename(lq / 'coffee_x2.png')
    with pytest.raises(ValueError, match=r'coffee.png -> coffee.png'):
        check_options(paired_options(gt, lq))
    with pytest.raises(ValueError, match=r"astronaut.png -> astronaut_x2.png"):
        check_options(paired_options(gt, lq, filename_tmpl='{}_x2'))


def test_lr_not_hr_over_scale(pairs):
    gt, lq = pairs
    shutil.copy(gt / 'chelsea.png', lq / 'chelsea.png')
    with pytest.raises(ValueError, match=r'not exactly HR size / 2.*chelsea.png: HR 48x48 vs LR 48x48'):
        check_options(paired_options(gt, lq, phase='val'))
    with pytest.raises(ValueError, match='HR size / 3'):
        check_options(paired_options(gt, lq, scale=3, phase='val'))


def test_missing_and_empty_folders(pairs, tmp_path):
    gt, lq = pairs
    with pytest.raises(FileNotFoundError, match='dataroot_lq: folder .*nowhere.* does not exist'):
        check_options(paired_options(gt, tmp_path / 'nowhere'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='contains no images'):
        check_options(paired_options(tmp_path / 'empty', lq))


def test_gt_size_must_be_a_multiple_of_scale(pairs):
    with pytest.raises(ValueError, match='gt_size 32 is not a multiple of scale 3'):
        check_options(paired_options(*pairs, scale=3))


def test_meta_info_listing_a_missing_image(pairs, tmp_path):
    meta = tmp_path / 'meta.txt'
    meta.write_text('astronaut.png (48,48,3)\nmissing.png (48,48,3)\n')
    with pytest.raises(FileNotFoundError, match=r"not in dataroot_gt .*\['missing.png'\]"):
        check_options(paired_options(*pairs, meta_info_file=str(meta)))


def test_pretrained_path_that_does_not_exist(pairs, tmp_path):
    opt = paired_options(*pairs)
    opt['path']['pretrain_network_g'] = str(tmp_path / 'experiments/HAT_SRx2/models/net_g_latest.pth')
    with pytest.raises(FileNotFoundError, match='pretrain_network_g .* does not exist'):
        check_options(opt)
    opt['auto_resume'] = True  # resuming takes the experiment's own networks instead
    check_options(opt)


def test_hr_only_dataset_is_checked_by_building_it(tmp_path):
    write_photos(tmp_path / 'hr', 48, ('astronaut',))
    dataset = {'name': 'hr', 'type': 'HROnlyDataset', 'dataroot_gt': str(tmp_path / 'nowhere'),
               'io_backend': {'type': 'disk'}, 'scale': 2, 'phase': 'train', 'gt_size': 32}
    with pytest.raises(FileNotFoundError, match='nowhere'):
        check_options({'datasets': {'train': dataset}, 'path': {}, 'auto_resume': False})


def test_training_set_too_small_for_one_batch_per_process(pairs):
    opt = paired_options(*pairs, batch_size_per_gpu=2)
    opt['world_size'] = 2
    with pytest.raises(ValueError, match='give 2 per process, fewer than batch_size_per_gpu 4.*dataset_enlarge_ratio'):
        check_options({**opt, 'datasets': {'train': {**opt['datasets']['train'], 'batch_size_per_gpu': 4}}})
    check_options(opt)
