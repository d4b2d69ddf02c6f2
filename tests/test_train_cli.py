"""hat/train.py and hat/test.py end to end on CPU: train, validate, save, test, archive, and refuse bad data."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from test_train_support import REPO_ROOT, run, tiny_options, train_log, write_options, write_photos

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One tiny CPU run (4 iterations, validation at the end) in a tmp root with an older run of the same name."""
    root = tmp_path_factory.mktemp('root')
    train_dir, val_dir = write_photos(root / 'hr'), write_photos(root / 'val', 64, ('chelsea',))
    old = root / 'experiments' / 'tiny' / 'keep.txt'
    old.parent.mkdir(parents=True)
    old.write_text('an earlier run')
    yml = write_options(tiny_options('tiny', train_dir, val_dir), root / 'tiny.yml')
    result = run('train', root, '-opt', str(yml), '--local-rank=0', '--force_yml', 'train:ema_decay=0.99')
    return root, yml, result


def test_training_on_cpu_saves_models_states_and_validates(trained):
    root, _, _ = trained
    exp = root / 'experiments' / 'tiny'
    log = train_log(root, 'tiny')
    assert 'End of training' in log
    assert re.search(r'# psnr: \d+\.\d+', log) and re.search(r'# ssim: 0\.\d+', log)
    assert 'ema_decay: 0.99\n' in log  # --force_yml applied
    for name in ('net_g_4.pth', 'net_g_latest.pth'):
        weights = torch.load(exp / 'models' / name, weights_only=True)
        assert set(weights) == {'params', 'params_ema'}
        assert all(torch.isfinite(v).all() for v in weights['params'].values())
    state = torch.load(exp / 'training_states' / '4.state', weights_only=True)
    assert state['iter'] == 4 and len(state['optimizers']) == 1
    assert not list(exp.rglob('*.tmp')), 'temporary checkpoint files left behind'


def test_existing_experiment_folder_is_archived_not_deleted(trained):
    root, _, result = trained
    archived = list((root / 'experiments').glob('tiny_archived_*'))
    assert len(archived) == 1
    assert (archived[0] / 'keep.txt').read_text() == 'an earlier run'
    assert 'Rename it to' in result.stdout


def test_test_command_reports_psnr_ssim_for_trained_weights(trained):
    root, _, _ = trained
    val_dir = root / 'val'
    opt = tiny_options('tiny_test', root / 'hr', None)
    test_opt = dict(name='tiny_test', model_type='HATModel', scale=2, num_gpu=0, manual_seed=0,
                    tile=dict(tile_size=20, tile_pad=8),
                    datasets=dict(test_1=dict(name='held_out', type='HROnlyDataset', dataroot_gt=str(val_dir),
                                              io_backend=dict(type='disk'))),
                    network_g=opt['network_g'],
                    path=dict(pretrain_network_g=str(root / 'experiments/tiny/models/net_g_latest.pth'),
                              param_key_g='params_ema', strict_load_g=True),
                    val=dict(save_img=True, suffix=None,
                             metrics=dict(psnr=dict(type='calculate_psnr', crop_border=2, test_y_channel=True))))
    yml = write_options(test_opt, root / 'tiny_test.yml')
    run('test', root, '-opt', str(yml))
    logs = list((root / 'results' / 'tiny_test').glob('test_*.log'))
    assert len(logs) == 1 and re.search(r'# psnr: \d+\.\d+', logs[0].read_text())
    assert (root / 'results/tiny_test/visualization/held_out/chelsea_tiny_test.png').is_file()


def test_test_command_without_a_val_section_saves_the_images(trained):
    """BasicSR's test pipeline indexes opt['val'] (KeyError); ours defaults to `val: {save_img: true}` (README)."""
    root, _, _ = trained
    opt = tiny_options('no_val', root / 'hr', None)
    test_opt = dict(name='no_val', model_type='HATModel', scale=2, num_gpu=0,
                    datasets=dict(test_1=dict(name='held_out', type='HROnlyDataset', dataroot_gt=str(root / 'val'),
                                              io_backend=dict(type='disk'))),
                    network_g=opt['network_g'],
                    path=dict(pretrain_network_g=str(root / 'experiments/tiny/models/net_g_latest.pth')))
    run('test', root, '-opt', str(write_options(test_opt, root / 'no_val.yml')))
    assert (root / 'results/no_val/visualization/held_out/chelsea_no_val.png').is_file()


def test_missing_dataset_folder_fails_before_creating_the_experiment(tmp_path):
    yml = write_options(tiny_options('broken', tmp_path / 'no_such_folder', None), tmp_path / 'broken.yml')
    result = run('train', tmp_path, '-opt', str(yml), check=False, timeout=120)
    assert result.returncode != 0
    assert 'no_such_folder' in result.stderr and 'does not exist' in result.stderr
    assert not (tmp_path / 'experiments').exists()


def test_train_script_runs_as_a_file_and_documents_the_basicsr_flags(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / 'hat' / 'train.py'), '--help'], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for flag in ('-opt', '--launcher', '--auto_resume', '--debug', '--force_yml', '--local_rank'):
        assert flag in result.stdout
