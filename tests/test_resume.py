"""Crash-safe resume: a training run SIGKILLed at a random moment resumes with --auto_resume and finishes;
auto-resume skips broken states; resume works on CPU and loads with weights_only."""
from __future__ import annotations

import random
import re
import subprocess
import time

import pytest
import torch
from test_train_support import command, run, subprocess_env, tiny_options, write_options, write_photos

from hat import HAT
from hat.training.basicsr_compat import load_resume_state, newest_valid_state

TOTAL_ITER = 60


@pytest.mark.slow
def test_run_killed_at_random_moment_resumes_to_total_iter(tmp_path):
    train_dir = write_photos(tmp_path / 'hr')
    opt = tiny_options('killed', train_dir, None, total_iter=TOTAL_ITER, logger=dict(save_checkpoint_freq=3))
    yml = write_options(opt, tmp_path / 'killed.yml')
    states = tmp_path / 'experiments' / 'killed' / 'training_states'

    process = subprocess.Popen(command('train', tmp_path, '-opt', str(yml)), cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        checkpoints, delay = random.randint(1, 6), random.uniform(0, 0.3)  # the kill: after 1-6 checkpoints
        deadline = time.monotonic() + 240
        while not (states.is_dir() and len(list(states.glob('*.state'))) >= checkpoints):
            assert process.poll() is None, 'training ended before the kill'
            assert time.monotonic() < deadline, f'fewer than {checkpoints} checkpoints within 240 s'
            time.sleep(0.01)
        time.sleep(delay)
        process.kill()
    finally:
        process.kill()
        process.wait()
    killed_at = sorted(int(p.stem) for p in states.glob('*.state'))
    assert process.returncode == -9, f'training finished before the kill ({checkpoints} states + {delay:.2f} s)'

    run('train', tmp_path, '-opt', str(yml), '--auto_resume')
    logs = sorted((tmp_path / 'experiments' / 'killed').glob('train_*.log'))
    assert len(logs) == 2, 'the resumed run should log next to the first one'
    text = logs[-1].read_text()
    resumed = re.search(r'Resuming training from epoch: \d+, iter: (\d+)', text)
    assert resumed and int(resumed[1]) in killed_at, (killed_at, checkpoints, delay)
    assert 'End of training' in text
    assert (states / f'{TOTAL_ITER}.state').is_file()
    weights = torch.load(tmp_path / 'experiments/killed/models/net_g_latest.pth', weights_only=True)
    net = HAT(**{k: v for k, v in opt['network_g'].items() if k != 'type'})
    net.load_state_dict(weights['params_ema'], strict=True)
    assert not list((tmp_path / 'experiments').rglob('*.tmp'))


def _experiment(tmp_path):
    models, states = tmp_path / 'models', tmp_path / 'training_states'
    models.mkdir()
    states.mkdir()
    opt = dict(name='exp', auto_resume=True, network_g=dict(type='HAT'),
               path=dict(models=str(models), training_states=str(states), resume_state=None))
    return opt, models, states


def _save_iteration(models, states, it):
    torch.save({'params': {'w': torch.ones(2)}}, models / f'net_g_{it}.pth')
    torch.save({'epoch': 0, 'iter': it, 'optimizers': [], 'schedulers': []}, states / f'{it}.state')


def test_auto_resume_takes_newest_state_whose_files_all_load(tmp_path):
    opt, models, states = _experiment(tmp_path)
    for it in (2, 4, 6, 8):
        _save_iteration(models, states, it)
    (states / '8.state').write_bytes((states / '8.state').read_bytes()[:50])  # truncated by a crash
    (models / 'net_g_6.pth').unlink()  # its network file is gone
    (models / '.net_g_10.pth.k2x_9q.tmp').write_bytes(b'half a file')  # a write the crash cut short
    assert newest_valid_state(opt) == str(states / '4.state')

    state = load_resume_state(opt)
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_8.pth']
    assert state['iter'] == 4
    assert opt['path']['pretrain_network_g'] == str(models / 'net_g_4.pth')


def test_resume_from_a_broken_state_file_says_so(tmp_path):
    opt, models, states = _experiment(tmp_path)
    (states / '3.state').write_bytes(b'not a checkpoint')
    opt.update(auto_resume=False)
    opt['path']['resume_state'] = str(states / '3.state')
    with pytest.raises(ValueError, match='does not load'):
        load_resume_state(opt)
    opt['path']['resume_state'] = str(states / '5.state')
    with pytest.raises(FileNotFoundError, match='resume_state'):
        load_resume_state(opt)


def test_resume_state_refuses_pickled_code(tmp_path):
    opt, models, states = _experiment(tmp_path)
    _save_iteration(models, states, 2)
    torch.save({'epoch': 0, 'iter': 4, 'optimizers': [], 'schedulers': [], 'hook': print}, states / '4.state')
    torch.save({'params': {'w': torch.ones(2)}}, models / 'net_g_4.pth')
    assert newest_valid_state(opt) == str(states / '2.state')
