"""The original HAT release's Real-HAT recipes name their image list ``meta_info_file``: ``type: RealESRGANDataset``
sections written that way train unchanged (folder, meta_info file or LMDB), while BasicSR's own
``RealESRGANDataset`` stays what it is for other programs."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from test_train_support import run, write_options, write_photos

from hat.data.bad_images import build_dataset
from hat.data.checks import dataset_problems
from hat.scripts import make_lmdb, make_meta_info
from tests.conftest import REPO_ROOT, TINY_CONFIG

#: The train dataset section of the original's train_Real_HAT_SRx4_mse_model.yml and
#: train_Real_HAT_GAN_SRx4_finetune_from_mse_model.yml (the same in both), key for key.
ORIGINAL_SECTION = """
name: DF2K+OST
type: RealESRGANDataset
dataroot_gt: datasets/DFO/DFO_sub
meta_info_file: hat/data/meta_info/meta_info_DFOsub_GT.txt
io_backend:
  type: disk

blur_kernel_size: 21
kernel_list: ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
kernel_prob: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
sinc_prob: 0.1
blur_sigma: [0.2, 3]
betag_range: [0.5, 4]
betap_range: [1, 2]

blur_kernel_size2: 21
kernel_list2: ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
kernel_prob2: [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
sinc_prob2: 0.1
blur_sigma2: [0.2, 1.5]
betag_range2: [0.5, 4]
betap_range2: [1, 2]

final_sinc_prob: 0.8

gt_size: 256
use_hflip: True
use_rot: False

use_shuffle: true
num_worker_per_gpu: 5
batch_size_per_gpu: 4
dataset_enlarge_ratio: 1
prefetch_mode: ~
"""


@pytest.fixture(scope='module')
def dfo(tmp_path_factory) -> dict:
    """A DFO-like sub-image folder and LMDB made by the data scripts, with a meta_info file; a folder below it
    and a text file beside the images that a folder listing must not take."""
    root = tmp_path_factory.mktemp('dfo')
    hr = write_photos(root / 'hr', 192, ('astronaut', 'coffee', 'chelsea'))
    make_lmdb.main(['--input', str(hr), '--output', str(root), '--name', 'DFO', '--scale', '--crop-size', '96',
                    '--step', '96', '--workers', '1'])
    sub = root / 'DFO_HR_sub'
    make_meta_info.main(['--input', str(sub), '--meta-info', str(root / 'meta_info_DFOsub_GT.txt')])
    return {'sub': sub, 'lmdb': root / 'DFO_HR_sub.lmdb', 'meta_info': root / 'meta_info_DFOsub_GT.txt'}


def section(drop: tuple[str, ...] = (), **changes) -> dict:
    """The original's section with only data paths changed (``drop``: keys left out), as BasicSR's parser
    completes it."""
    ds = {**yaml.safe_load(ORIGINAL_SECTION), 'phase': 'train', 'scale': 4, **changes}
    for key in drop:
        del ds[key]
    return ds


def stems(dataset) -> list[str]:
    return [Path(p).stem for p in dataset.paths]


def test_meta_info_file_of_the_original_is_read(dfo):
    listed = dfo['meta_info'].read_text().split()[:5]
    dfo['meta_info'].with_name('five.txt').write_text('\n'.join(listed) + '\n')
    dataset = build_dataset(section(dataroot_gt=str(dfo['sub']), meta_info_file=str(dfo['meta_info'].with_name(
        'five.txt'))))
    assert type(dataset.dataset).__name__ == 'RealHATDataset'
    assert stems(dataset) == [Path(n).stem for n in listed]
    sample = dataset[0]
    assert sample['gt'].shape == (3, 400, 400) and sample['kernel1'].shape == (21, 21)


def test_basicsr_key_meta_info_is_read_and_two_different_lists_are_refused(dfo):
    ds = section(('meta_info_file',), dataroot_gt=str(dfo['sub']), meta_info=str(dfo['meta_info']))
    assert len(build_dataset(ds)) == 12
    with pytest.raises(ValueError, match='meta_info .* and meta_info_file .* name different files; keep one'):
        build_dataset({**ds, 'meta_info_file': str(dfo['sub'] / 'other.txt')})


def test_without_a_list_the_images_directly_in_the_folder_are_taken(dfo, tmp_path):
    folder = tmp_path / 'gt'
    folder.mkdir()
    for name in ('astronaut_s001.png', 'coffee_s004.png'):
        (folder / name).write_bytes((dfo['sub'] / name).read_bytes())
    (folder / 'notes.txt').write_text('not an image')
    (folder / 'deeper').mkdir()
    (folder / 'deeper' / 'chelsea_s002.png').write_bytes((dfo['sub'] / 'chelsea_s002.png').read_bytes())
    ds = section(('meta_info_file',), dataroot_gt=str(folder))
    assert stems(build_dataset(ds)) == ['astronaut_s001', 'coffee_s004']


def test_lmdb_reads_its_own_meta_info(dfo):
    dataset = build_dataset(section(('meta_info_file',), dataroot_gt=str(dfo['lmdb']), io_backend={'type': 'lmdb'}))
    assert dataset.paths[:2] == ['astronaut_s001', 'astronaut_s002'] and len(dataset) == 12
    assert dataset[3]['gt'].shape == (3, 400, 400)


def test_checks_before_the_run_name_a_missing_list(dfo):
    ds = section(dataroot_gt=str(dfo['sub']), meta_info_file=str(dfo['sub'] / 'missing.txt'))
    (problem,) = dataset_problems(dict(datasets=dict(train=ds)))
    assert "missing.txt' does not exist" in problem.text and "meta_info_file" in problem.text


def test_other_programs_keep_basicsrs_dataset_under_its_name():
    from basicsr.data.realesrgan_dataset import RealESRGANDataset
    from basicsr.utils.registry import DATASET_REGISTRY

    assert DATASET_REGISTRY.get('RealESRGANDataset') is RealESRGANDataset
    assert 'RealHATDataset' in DATASET_REGISTRY


@pytest.mark.slow
def test_original_section_trains_through_hat_train(dfo, tmp_path):
    """Our Real-HAT MSE recipe with the original's dataset section (``meta_info_file``), a tiny HAT and CPU."""
    opt = yaml.safe_load((REPO_ROOT / 'options/train/train_Real_HAT_SRx4_mse_model.yml').read_text())
    train = section(('phase', 'scale'), dataroot_gt=str(dfo['sub']), meta_info_file=str(dfo['meta_info']), gt_size=64,
                    num_worker_per_gpu=0, batch_size_per_gpu=2)
    opt.update(num_gpu=0, gt_size=64, queue_size=4, network_g=dict(copy.deepcopy(TINY_CONFIG), type='HAT', upscale=4))
    opt['datasets'] = {'train': train}
    opt['train'].update(total_iter=2)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    yml = write_options(opt, tmp_path / 'real.yml')
    run('train', tmp_path, '-opt', str(yml))
    (log,) = (tmp_path / 'experiments' / opt['name']).glob('train_*.log')
    text = log.read_text()
    assert 'Dataset [RealHATDataset] - DF2K+OST is built.' in text and 'Number of train images: 12' in text
    assert 'End of training' in text
