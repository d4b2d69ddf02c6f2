"""A corrupt image in the data: named, then skipped (with a warning and a count in the log) or stopped at, as the
dataset's ``bad_image`` says; validation images are all decoded before a run starts."""
from __future__ import annotations

import gc
import re
import types
from pathlib import Path

import lmdb
import pytest
from test_atomic_io import open_descriptors
from test_train_support import run, tiny_options, write_options, write_photos
from torch.utils.data import DataLoader, Dataset

from hat.data import bad_images
from hat.data.bad_images import BadImageError, SkipLog, build_dataset, guarded_datasets
from hat.data.checks import dataset_problems
from hat.scripts import make_lmdb


def truncate(path: Path) -> Path:
    """Cut an image file in half: its header still reads, its pixels no longer decode."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """Three real 96x96 photos, one of them truncated."""
    folder = write_photos(tmp_path / 'hr', 96, ('astronaut', 'coffee', 'chelsea'))
    truncate(folder / 'coffee.png')
    return folder


def hr_only(folder: Path, **extra) -> dict:
    return dict(name='photos', type='HROnlyDataset', dataroot_gt=str(folder), io_backend=dict(type='disk'),
                gt_size=32, use_hflip=False, use_rot=False, scale=2, phase='train', **extra)


def test_stop_names_the_file(photos):
    dataset = build_dataset(hr_only(photos, bad_image='stop'))
    index = dataset.paths.index(str(photos / 'coffee.png'))
    with pytest.raises(BadImageError, match=r"train \(photos\): '.*coffee.png' is not a decodable image.*"
                                            r"check_data.*bad_image: skip"):
        dataset[index]


def test_skip_takes_another_sample_and_says_which_file_was_skipped(photos, caplog):
    dataset = build_dataset(hr_only(photos))  # skip is the default for training sets
    index = dataset.paths.index(str(photos / 'coffee.png'))
    for _ in range(5):
        sample = dataset[index]
        assert Path(sample['gt_path']).name in ('astronaut.png', 'chelsea.png')
        assert sample['gt'].shape == (3, 32, 32)
    assert dataset.opt['name'] == 'photos'  # basicsr's loops see the dataset they built


class ForkProbe(Dataset):
    """A guarded dataset's samples, each with whether the skip log's thread was stopped when this worker forked."""

    def __init__(self, dataset, log: SkipLog):
        self.dataset, self.log = dataset, log

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[str, bool]:
        return self.dataset[index]['gt_path'], self.log._thread is None  # the parent's state at the fork


def test_worker_skips_are_logged_with_no_thread_across_the_fork_and_no_descriptor_left_open(photos, monkeypatch):
    """Loader workers are forked processes: the log's reading thread must not run while they fork, and the
    queue's pipes must be closed at the end (descriptors counted in this process before and after)."""
    module = types.SimpleNamespace(build_dataset=None)  # stands in for basicsr.train
    logged: list[str] = []
    monkeypatch.setattr(bad_images, '_emit', logged.append)  # the training log (or stderr)
    before = open_descriptors()
    for _ in range(2):
        with guarded_datasets(module) as log:
            dataset = ForkProbe(module.build_dataset(hr_only(photos, dataset_enlarge_ratio=2)), log)
            samples = [(paths, stopped.tolist()) for _ in range(2)  # no tensor kept: each holds shared memory
                       for paths, stopped in DataLoader(dataset, batch_size=2, num_workers=2)]
        assert len(samples) == 4 and all(all(stopped) for _, stopped in samples)
        assert not any(path.endswith('coffee.png') for paths, _ in samples for path in paths)
        assert sum(log.skips.values()) >= 2  # every epoch reads the bad image at least once
    gc.collect()
    assert open_descriptors() == before
    logged = '\n'.join(logged)
    bad = re.escape(repr(str(photos / 'coffee.png')))
    assert re.search(rf'train \(photos\): skipped {bad}: it is not a decodable image.*1 bad image\(s\) skipped so '
                     'far', logged)
    assert re.search(rf'bad_image: skip: 1 bad image\(s\) skipped \d+ time\(s\) in this run: {bad}', logged)


def test_paired_lmdb_value_that_does_not_decode_is_named_with_its_key_and_lmdb(tmp_path):
    make_lmdb.main(['--input', str(write_photos(tmp_path / 'hr', 96)), '--output', str(tmp_path / 'out'), '--name',
                    'p', '--scale', '2', '--crop-size', '48', '--step', '48', '--workers', '1'])
    gt_lmdb = tmp_path / 'out' / 'p_HR_sub.lmdb'
    with lmdb.open(str(gt_lmdb), map_size=1 << 26) as env, env.begin(write=True) as txn:
        txn.put(b'coffee_s002', txn.get(b'coffee_s002')[:300])
    opt = dict(name='pairs', type='PairedImageDataset', dataroot_gt=str(gt_lmdb),
               dataroot_lq=str(tmp_path / 'out' / 'p_bicx2_sub.lmdb'), io_backend=dict(type='lmdb'), gt_size=32,
               use_hflip=False, use_rot=False, scale=2, phase='train', bad_image='stop')
    dataset = build_dataset(opt)
    index = [p['gt_path'] for p in dataset.paths].index('coffee_s002')
    with pytest.raises(BadImageError, match=f"'coffee_s002' in LMDB '{re.escape(str(gt_lmdb))}' is not a decodable"):
        dataset[index]
    assert dataset[index + 1]['lq'].shape == (3, 16, 16)


def test_errors_that_no_bad_file_explains_are_raised_unchanged(tmp_path):
    folder = write_photos(tmp_path / 'hr', 96)
    opt = dict(name='pairs', type='PairedImageDataset', dataroot_gt=str(folder), dataroot_lq=str(folder),
               io_backend=dict(type='disk'), gt_size=64, use_hflip=False, use_rot=False, scale=2, phase='train')
    with pytest.raises(ValueError, match='Scale mismatches'):  # basicsr's own check of the HR/LR sizes
        build_dataset(opt)[0]


def test_bad_image_option_is_checked_and_validation_never_skips(photos):
    (problem,) = dataset_problems(dict(datasets=dict(train=hr_only(photos, bad_image='ignore'))))
    assert "bad_image 'ignore' is not one of skip, stop" in problem.text
    val = {**hr_only(photos), 'phase': 'val', 'bad_image': 'skip'}
    (problem,) = dataset_problems(dict(datasets=dict(val=val)))
    assert 'bad_image: skip is for training sets' in problem.text


def test_a_bad_validation_image_stops_the_run_before_the_experiment_folder_exists(tmp_path):
    val = write_photos(tmp_path / 'val', 64, ('rocket', 'chelsea'))
    truncate(val / 'rocket.png')
    yml = write_options(tiny_options('bad_val', write_photos(tmp_path / 'train'), val), tmp_path / 'bad_val.yml')
    result = run('train', tmp_path, '-opt', str(yml), check=False)
    assert result.returncode != 0
    assert re.search(r"val \(held_out\).*1 of its images cannot be used: '.*rocket.png' is not a decodable",
                     result.stderr)
    assert not (tmp_path / 'experiments').exists()


# ---------------------------------------------- hat/train.py end to end ----------------------------------------------


def training_logs(root: Path, name: str) -> list[str]:
    return [p.read_text() for p in sorted((root / 'experiments' / name).glob('train_*.log'))]


@pytest.mark.slow
def test_training_skips_or_stops_at_a_truncated_png_also_after_resume(tmp_path, photos):
    """Two loader worker processes read the data: their skips reach the training log, named and counted."""
    (photos / 'chelsea.png').unlink()  # one good and one bad image: every other sample is the bad one
    opt = tiny_options('bad_png', photos, None, total_iter=2)
    opt['datasets']['train'].update(num_worker_per_gpu=2, dataset_enlarge_ratio=4)
    yml = write_options(opt, tmp_path / 'skip.yml')

    run('train', tmp_path, '-opt', str(yml))
    (log,) = training_logs(tmp_path, 'bad_png')
    bad = re.escape(repr(str(photos / 'coffee.png')))
    assert re.search(rf'WARNING: datasets: train \(photos\): skipped {bad}: it is not a decodable image.*'
                     r'1 bad image\(s\) skipped so far', log)
    assert re.search(rf'bad_image: skip: 1 bad image\(s\) skipped \d+ time\(s\) in this run: {bad}', log)
    assert 'End of training' in log

    opt['train']['total_iter'] = 4
    resumed = write_options(opt, tmp_path / 'resume.yml')
    run('train', tmp_path, '-opt', str(resumed), '--auto_resume')
    first, second = training_logs(tmp_path, 'bad_png')
    assert 'Resuming training from epoch' in second and re.search(rf'skipped {bad}', second)

    opt['datasets']['train']['bad_image'] = 'stop'
    opt['train']['total_iter'] = 6
    stopping = write_options(opt, tmp_path / 'stop.yml')
    result = run('train', tmp_path, '-opt', str(stopping), '--auto_resume', check=False)
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr  # one line, not the worker's traceback
    assert re.search(rf"^hat/train.py: error: datasets: train \(photos\): {bad} is not a decodable image.*set "
                     'bad_image: skip in this dataset section to train on without it$', result.stderr, re.M)
