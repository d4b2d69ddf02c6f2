"""make_lmdb cuts sub-images, makes bicubic LR and LMDBs with meta_info; training reads them; make_meta_info lists
HR folders."""
from __future__ import annotations

import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest
import torch
from test_train_support import run, tiny_options, train_log, write_options, write_photos

from hat.data import HROnlyDataset
from hat.data.checks import dataset_problems
from hat.data.hr_only_dataset import bicubic_lr, modcrop
from hat.scripts import make_lmdb, make_meta_info
from hat.scripts.make_lmdb import crop_starts

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """Two 200x200 photos cut into 96-pixel sub-images every 48 pixels, with x2 and x3 LR, by the real command."""
    root = tmp_path_factory.mktemp('lmdb')
    hr = write_photos(root / 'HR', 200, ('astronaut', 'coffee'))
    args = ['--input', str(hr), '--output', str(root / 'out'), '--name', 'photos', '--scale', '2', '3',
            '--crop-size', '96', '--step', '48', '--workers', '2']
    result = subprocess.run([sys.executable, '-m', 'hat.scripts.make_lmdb', *args], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return root, hr, args, result


def test_sub_images_follow_extract_subimages_and_lr_is_exact(prepared):
    root, hr, _, result = prepared
    out = root / 'out'
    assert crop_starts(198, 96, 48, 0) == [0, 48, 96, 102]  # 200 cropped to a multiple of 6, last crop flush
    names = sorted(p.name for p in (out / 'photos_HR_sub').iterdir())
    assert len(names) == 2 * 16 and names[0] == 'astronaut_s001.png'
    image = modcrop(cv2.imread(str(hr / 'coffee.png')), 6)
    whole_lr = {s: (bicubic_lr(image.astype(np.float32) / 255, s) * 255).round().astype(np.uint8) for s in (2, 3)}
    for index, (y, x) in [(1, (0, 0)), (6, (48, 48)), (16, (102, 102))]:
        name = f'coffee_s{index:03d}.png'
        assert np.array_equal(cv2.imread(str(out / 'photos_HR_sub' / name)), image[y:y + 96, x:x + 96])
        for s in (2, 3):
            lr = cv2.imread(str(out / f'photos_bicx{s}_sub' / name))
            assert lr.shape == (96 // s, 96 // s, 3)
            assert np.array_equal(lr, whole_lr[s][y // s:y // s + 96 // s, x // s:x // s + 96 // s])
    assert 'cut sub-images' in result.stderr  # the progress bar


def test_lmdbs_hold_every_sub_image_with_meta_info(prepared):
    out = prepared[0] / 'out'
    for folder, size in (('photos_HR_sub', 96), ('photos_bicx2_sub', 48), ('photos_bicx3_sub', 32)):
        lines = (out / f'{folder}.lmdb' / 'meta_info.txt').read_text().splitlines()
        assert len(lines) == 32 and lines[0] == f'astronaut_s001.png ({size},{size},3) 1'
        with lmdb.open(str(out / f'{folder}.lmdb'), readonly=True, lock=False) as env, env.begin() as txn:
            png = np.frombuffer(txn.get(b'coffee_s006'), np.uint8)
            stored = cv2.imread(str(out / folder / 'coffee_s006.png'))
            assert np.array_equal(cv2.imdecode(png, cv2.IMREAD_COLOR), stored)
    assert not list(out.glob('*partial*'))


def test_existing_outputs_are_never_overwritten(prepared, capsys):
    _, _, args, _ = prepared
    with pytest.raises(SystemExit):
        make_lmdb.main(args)
    assert 'nothing is overwritten' in capsys.readouterr().err


def test_training_reads_paired_lmdbs(prepared):
    root = prepared[0]
    out = root / 'out'
    lmdb_pairs = dict(type='PairedImageDataset', dataroot_gt=str(out / 'photos_HR_sub.lmdb'),
                      dataroot_lq=str(out / 'photos_bicx2_sub.lmdb'), io_backend=dict(type='lmdb'))
    opt = tiny_options('from_lmdb', out, None, total_iter=3)
    opt['datasets']['train'].update(lmdb_pairs)
    yml = write_options(opt, root / 'from_lmdb.yml')
    run('train', root, '-opt', str(yml))
    log = train_log(root, 'from_lmdb')
    assert 'Number of train images: 32' in log and 'End of training' in log
    weights = torch.load(root / 'experiments/from_lmdb/models/net_g_latest.pth', weights_only=True)
    assert all(torch.isfinite(v).all() for v in weights['params'].values())


def test_hr_only_dataset_reads_an_lmdb_and_mismatched_lmdbs_are_refused(prepared):
    out = prepared[0] / 'out'
    dataset = HROnlyDataset(dict(name='hr', dataroot_gt=str(out / 'photos_HR_sub.lmdb'), io_backend=dict(type='lmdb'),
                                 gt_size=48, use_hflip=True, use_rot=True, scale=3, phase='train'))
    assert len(dataset) == 32 and dataset[5]['lq'].shape == (3, 16, 16)
    pairs = dict(name='pairs', type='PairedImageDataset', dataroot_gt=str(out / 'photos_HR_sub.lmdb'),
                 dataroot_lq=str(out / 'photos_bicx3_sub.lmdb'), io_backend=dict(type='lmdb'), scale=2, phase='val')
    (problem,) = dataset_problems(dict(datasets=dict(val=pairs)))
    assert 'not exactly HR size / 2' in problem.text


def test_make_meta_info_lists_relative_paths(tmp_path, capsys):
    write_photos(tmp_path / 'data' / 'a', 64, ('astronaut',))
    write_photos(tmp_path / 'data' / 'b', 32, ('coffee',))
    meta = tmp_path / 'meta_info.txt'
    args = ['--input', str(tmp_path / 'data'), '--meta-info', str(meta)]
    command = [sys.executable, '-m', 'hat.scripts.make_meta_info', *args]
    assert subprocess.run(command, capture_output=True, timeout=120).returncode == 0
    assert meta.read_text() == 'a/astronaut.png\nb/coffee.png\n'
    with pytest.raises(SystemExit):
        make_meta_info.main(args + ['--min-size', '48'])
    assert '--overwrite' in capsys.readouterr().err
    make_meta_info.main(args + ['--min-size', '48', '--overwrite'])
    assert meta.read_text() == 'a/astronaut.png\n'
    dataset = HROnlyDataset(dict(name='hr', dataroot_gt=str(tmp_path / 'data'), meta_info_file=str(meta),
                                 io_backend=dict(type='disk'), scale=2, phase='val'))
    assert dataset[0]['gt'].shape == (3, 64, 64)
