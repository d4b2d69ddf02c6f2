"""Crash-safe resume: a training run SIGKILLed at a random moment resumes with --auto_resume and finishes;
auto-resume skips broken states out loud and refuses when none loads; pre-flight checks what a resume loads;
resume works on CPU and loads with weights_only."""
from __future__ import annotations

import random
import re
import shutil
import subprocess
import time

import pytest
import torch
from test_train_support import command, run, subprocess_env, tiny_options, write_options, write_photos

from hat import HAT
from hat.training.resume import ResumeError, load_resume_state, plan_resume

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
    plan = plan_resume(opt)
    assert plan.state_path == str(states / '4.state')
    assert [(p.rsplit('/', 1)[1], why.split(' (')[0]) for p, why in plan.skipped] == [
        ('8.state', 'does not load'), ('6.state', 'has no network file net_g_6.pth')]
    assert 'resuming from iteration 4, not the newest state 8, which loses 4 iterations' in plan.note()

    notes = []
    state = load_resume_state(opt, notes)
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_8.pth']
    assert state['iter'] == 4
    assert opt['path']['pretrain_network_g'] == str(models / 'net_g_4.pth')
    assert notes == [plan.note()]


def test_auto_resume_refuses_when_states_exist_and_none_loads(tmp_path):
    opt, models, states = _experiment(tmp_path)
    for it in (2, 4):
        _save_iteration(models, states, it)
    (states / '4.state').write_bytes(b'')
    (models / 'net_g_2.pth').write_bytes(b'cut')
    opt['path']['resume_state'] = str(states / '2.state')  # --auto_resume decides: the file's state is not taken
    with pytest.raises(ResumeError) as refused:
        load_resume_state(opt)
    message = str(refused.value)
    assert message.startswith('--auto_resume: no training state of experiment') and '\n' not in message
    assert f'{states / "4.state"} does not load' in message and f'{states / "2.state"} has a network file' in message
    assert 'run without --auto_resume' in message


def test_resume_from_a_broken_state_file_says_so(tmp_path):
    opt, models, states = _experiment(tmp_path)
    (states / '3.state').write_bytes(b'not a checkpoint')
    opt.update(auto_resume=False)
    opt['path']['resume_state'] = str(states / '3.state')
    with pytest.raises(ValueError, match='does not load'):
        load_resume_state(opt)
    opt['path']['resume_state'] = str(states / '5.state')
    with pytest.raises(ResumeError, match='resume_state.* does not exist'):
        load_resume_state(opt)


def test_resume_state_refuses_pickled_code(tmp_path):
    opt, models, states = _experiment(tmp_path)
    _save_iteration(models, states, 2)
    torch.save({'epoch': 0, 'iter': 4, 'optimizers': [], 'schedulers': [], 'hook': print}, states / '4.state')
    torch.save({'params': {'w': torch.ones(2)}}, models / 'net_g_4.pth')
    plan = plan_resume(opt)
    assert plan.state_path == str(states / '2.state')
    assert plan.skipped == [(str(states / '4.state'), 'holds objects that weights_only=True refuses to load (code, '
                                                      'not only tensors)')]


def test_auto_resume_without_any_state_takes_the_option_files_resume_state(tmp_path):
    """BasicSR ignores path.resume_state under --auto_resume; ours resumes from it when the experiment has no state."""
    opt, models, states = _experiment(tmp_path)
    other = tmp_path / 'other'
    other.mkdir()
    _save_iteration(other, other, 6)
    opt['path']['models'] = str(other)
    opt['path']['resume_state'] = str(other / '6.state')
    assert load_resume_state(opt)['iter'] == 6


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 4-iteration run with states at 2 and 4 (copied for each test)."""
    root = tmp_path_factory.mktemp('resume')
    yml = write_options(tiny_options('r', write_photos(root / 'hr'), None, logger=dict(save_checkpoint_freq=2)),
                        root / 'r.yml')
    run('train', root, '-opt', str(yml))
    return root


def _copy(trained, tmp_path):
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True, symlinks=True)
    opt = tiny_options('r', tmp_path / 'hr', None, total_iter=6, logger=dict(save_checkpoint_freq=2))
    exp = tmp_path / 'experiments' / 'r'
    return write_options(opt, tmp_path / 'r.yml'), exp


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob('*'))


@pytest.mark.slow
def test_auto_resume_with_no_loadable_state_refuses_and_moves_nothing(trained, tmp_path):
    yml, exp = _copy(trained, tmp_path)
    for state in (exp / 'training_states').glob('*.state'):
        state.write_bytes(state.read_bytes()[:40])  # both states truncated
    before = _tree(tmp_path)
    result = run('train', tmp_path, '-opt', str(yml), '--auto_resume', check=False)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert "--auto_resume: no training state of experiment 'r' can be resumed" in result.stderr
    assert '4.state does not load' in result.stderr and '2.state does not load' in result.stderr
    assert _tree(tmp_path) == before, 'the experiment was moved or written to'


@pytest.mark.slow
def test_auto_resume_past_a_broken_state_says_what_it_loses_in_log_and_terminal(trained, tmp_path):
    yml, exp = _copy(trained, tmp_path)
    (exp / 'models' / 'net_g_4.pth').write_bytes(b'')
    result = run('train', tmp_path, '-opt', str(yml), '--auto_resume')
    line = 'resuming from iteration 2, not the newest state 4, which loses 2 iterations of training'
    assert line in result.stderr
    log = sorted(exp.glob('train_*.log'))[-1].read_text()
    assert line in log and 'Resuming training from epoch: 0, iter: 2' in log and 'End of training' in log


@pytest.mark.slow
def test_preflight_of_a_resumed_run_checks_the_networks_it_will_load(trained, tmp_path):
    yml, exp = _copy(trained, tmp_path)
    opt = tiny_options('r', tmp_path / 'hr', None, total_iter=6)
    opt['network_g']['embed_dim'] = 30  # the options changed since the states were written
    opt['network_g']['num_heads'] = [5, 5]
    yml = write_options(opt, tmp_path / 'r.yml')
    before = _tree(tmp_path)
    result = run('train', tmp_path, '-opt', str(yml), '--auto_resume', check=False)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert f"path.pretrain_network_g: '{exp / 'models' / 'net_g_4.pth'}' does not fit network_g" in result.stderr
    assert _tree(tmp_path) == before
