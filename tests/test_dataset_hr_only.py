"""HROnlyDataset (alias ImageNetPairedDataset): HR from folder / meta_info / LMDB, LR = MATLAB bicubic, exactly
HR / scale, equal to the bicubic of the whole image on the crop; clear errors for bad folders and gt_size."""
from __future__ import annotations

import random

import numpy as np
import pytest
from basicsr.data import build_dataset
from basicsr.utils.matlab_functions import imresize
from conftest import sample_photo
from test_train_support import write_photos

from hat.data import HROnlyDataset, ImageNetPairedDataset
from hat.data.hr_only_dataset import bicubic_lr, modcrop, random_pair


def options(folder, phase='train', scale=3, **extra):
    return {'name': 'hr', 'type': 'HROnlyDataset', 'dataroot_gt': str(folder), 'io_backend': {'type': 'disk'},
            'gt_size': 16 * scale, 'use_hflip': True, 'use_rot': True, 'scale': scale, 'phase': phase, **extra}


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp('hr')
    write_photos(folder / 'a', 100, ('astronaut',))
    write_photos(folder / 'b', 90, ('coffee', 'chelsea'))
    (folder / 'notes.txt').write_text('not an image')
    return folder


def test_training_pairs_have_exact_sizes_and_bicubic_lr(photos):
    dataset = build_dataset(options(photos))
    assert isinstance(dataset, HROnlyDataset) and len(dataset) == 3  # recursive, images only
    random.seed(0)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item['gt'].shape == (3, 48, 48) and item['lq'].shape == (3, 16, 16)
        assert item['lq_path'] == item['gt_path']
        gt = item['gt'].permute(1, 2, 0).numpy()
        # flips/rotations are applied to both alike: LR is still the bicubic of the HR crop inside the border
        inner = np.abs(bicubic_lr(gt, 3) - item['lq'].permute(1, 2, 0).numpy())[3:-3, 3:-3]
        assert inner.max() <= 1.5 / 255


def test_crop_lr_equals_whole_image_bicubic_on_the_scale_grid():
    hr = modcrop(sample_photo('rocket')[100:177, 200:301].astype(np.float32) / 255, 4)
    whole = bicubic_lr(hr, 4)
    assert np.array_equal(whole, (np.clip(imresize(hr, 1 / 4), 0, 1) * 255).round().astype(np.float32) / 255)
    for seed in range(5):
        random.seed(seed)
        gt, lq = random_pair(hr, 32, 4)
        random.seed(seed)
        top, left = 4 * random.randint(0, (hr.shape[0] - 32) // 4), 4 * random.randint(0, (hr.shape[1] - 32) // 4)
        assert np.array_equal(gt, hr[top:top + 32, left:left + 32])
        assert np.array_equal(lq, whole[top // 4:top // 4 + 8, left // 4:left // 4 + 8])


def test_validation_uses_the_whole_image_cropped_to_the_scale(photos):
    dataset = HROnlyDataset(options(photos / 'b', phase='val', scale=4))
    item = dataset[0]
    assert item['gt'].shape == (3, 88, 88) and item['lq'].shape == (3, 22, 22)


def test_meta_info_and_the_original_name(photos, tmp_path):
    meta = tmp_path / 'meta_info.txt'
    meta.write_text('b/coffee.png (90,90,3)\n\na/astronaut.png\n')
    dataset = build_dataset(options(photos, type='ImageNetPairedDataset', meta_info_file=str(meta)))
    assert isinstance(dataset, ImageNetPairedDataset)
    assert [p.split('/')[-1] for p in dataset.paths] == ['coffee.png', 'astronaut.png']
    assert dataset[1]['gt'].shape == (3, 48, 48)


def test_images_smaller_than_gt_size_are_enlarged(tmp_path):
    write_photos(tmp_path, 40, ('astronaut',))
    item = HROnlyDataset(options(tmp_path, scale=4))[0]
    assert item['gt'].shape == (3, 64, 64) and item['lq'].shape == (3, 16, 16)


@pytest.mark.parametrize('case, error, message', [
    ('missing', FileNotFoundError, 'does not exist'),
    ('empty', ValueError, 'contains no images'),
    ('gt_size', ValueError, 'not a multiple of scale'),
    ('meta_info', FileNotFoundError, 'make_meta_info'),
])
def test_clear_errors(tmp_path, case, error, message):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.txt').write_text('no images here')
    opt = {
        'missing': options(tmp_path / 'nowhere'),
        'empty': options(tmp_path / 'empty'),
        'gt_size': {**options(tmp_path / 'empty'), 'gt_size': 50},
        'meta_info': options(tmp_path / 'empty', meta_info_file=str(tmp_path / 'meta.txt')),
    }[case]
    with pytest.raises(error, match=message):
        HROnlyDataset(opt)
