"""Dataset checks run before training: paired folders/LMDBs with wrong names, counts or sizes, missing or empty
folders, gt_size and batch size each give a ``datasets`` problem naming the dataset; all datasets are checked."""
from __future__ import annotations

import re
import shutil

import cv2
import pytest
from basicsr.utils.matlab_functions import imresize
from test_train_support import write_photos

from hat.data.checks import dataset_problems


def paired_options(gt, lq, scale=2, phase='train', backend='disk', **extra):
    dataset = {'name': 'pairs', 'type': 'PairedImageDataset', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq),
               'io_backend': {'type': backend}, 'scale': scale, 'phase': phase, 'gt_size': 32, **extra}
    return {'datasets': {phase: dataset}}


def lines(opt) -> list[str]:
    """The problem lines of ``opt``'s datasets, each checked to be a ``datasets`` problem."""
    problems = dataset_problems(opt)
    assert all(p.key == 'datasets' for p in problems), problems
    return [str(p) for p in problems]


def only_line(opt) -> str:
    (line,) = lines(opt)
    return line


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
    assert dataset_problems(paired_options(*pairs)) == []
    assert dataset_problems(paired_options(*pairs, phase='val')) == []


def test_count_mismatch(pairs):
    gt, lq = pairs
    (lq / 'coffee.png').unlink()
    assert re.match(r'datasets: train \(pairs\): dataroot_gt .* has 3 images but dataroot_lq .* has 2',
                    only_line(paired_options(gt, lq)))


def test_name_mismatch(pairs):
    gt, lq = pairs
    (lq / 'coffee.png').rename(lq / 'coffee_x2.png')
    assert 'coffee.png -> coffee.png' in only_line(paired_options(gt, lq))
    assert 'astronaut.png -> astronaut_x2.png' in only_line(paired_options(gt, lq, filename_tmpl='{}_x2'))


def test_lr_not_hr_over_scale(pairs):
    gt, lq = pairs
    shutil.copy(gt / 'chelsea.png', lq / 'chelsea.png')
    assert re.search(r'not exactly HR size / 2.*chelsea.png: HR 48x48 vs LR 48x48',
                     only_line(paired_options(gt, lq, phase='val')))
    assert 'HR size / 3' in only_line(paired_options(gt, lq, scale=3, phase='val'))


def test_missing_and_empty_folders(pairs, tmp_path):
    gt, lq = pairs
    missing = only_line(paired_options(gt, tmp_path / 'nowhere'))
    assert re.search('dataroot_lq: folder .*nowhere.* does not exist', missing)
    (tmp_path / 'empty').mkdir()
    assert 'contains no images' in only_line(paired_options(tmp_path / 'empty', lq))


def test_gt_size_must_be_a_multiple_of_scale(pairs):
    line = only_line(paired_options(*pairs, scale=3))
    assert line == 'datasets: train (pairs): gt_size 32 is not a multiple of scale 3'


def test_meta_info_listing_a_missing_image(pairs, tmp_path):
    meta = tmp_path / 'meta.txt'
    meta.write_text('astronaut.png (48,48,3)\nmissing.png (48,48,3)\n')
    line = only_line(paired_options(*pairs, meta_info_file=str(meta)))
    assert re.search(r"not in dataroot_gt .*\['missing.png'\]", line)


def test_hr_only_dataset_is_checked_by_building_it(tmp_path):
    dataset = {'name': 'hr', 'type': 'HROnlyDataset', 'dataroot_gt': str(tmp_path / 'nowhere'),
               'io_backend': {'type': 'disk'}, 'scale': 2, 'phase': 'train', 'gt_size': 32}
    assert re.match(r'datasets: train \(hr\): .*nowhere.* does not exist', only_line({'datasets': {'train': dataset}}))


def test_training_set_too_small_for_one_batch_per_process(pairs):
    opt = paired_options(*pairs, batch_size_per_gpu=2)
    opt['world_size'] = 2
    too_small = {**opt, 'datasets': {'train': {**opt['datasets']['train'], 'batch_size_per_gpu': 4}}}
    assert re.search('give 2 per process, fewer than batch_size_per_gpu 4.*dataset_enlarge_ratio', only_line(too_small))
    assert dataset_problems(opt) == []


def test_every_dataset_and_every_independent_problem_is_reported_at_once(pairs, tmp_path):
    """One run lists the problems of all datasets: a bad policy and a bad gt_size of one, missing folders of another."""
    gt, lq = pairs
    train = {**paired_options(gt, lq, scale=3)['datasets']['train'], 'bad_image': 'ignore'}
    val = paired_options(gt, tmp_path / 'nowhere', phase='val')['datasets']['val']
    found = lines({'datasets': {'train': train, 'val': val}})
    assert len(found) == 3, found
    assert "datasets: train (pairs): bad_image 'ignore' is not one of skip, stop" in found
    assert 'datasets: train (pairs): gt_size 32 is not a multiple of scale 3' in found
    assert re.match(r'datasets: val \(pairs\) dataroot_lq: folder .*nowhere', found[2])
