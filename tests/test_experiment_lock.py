"""One run per experiment: a second hat/train.py with the same name is refused while the first runs (its folder
is not archived), a lock left by a killed run is taken over, and the lock file goes when the run ends."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from original_options import make_original_layout, original_train_yaml
from test_train_support import command, subprocess_env

from hat.training.experiment_lock import ExperimentLockedError, acquire, lock_path


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_second_holder_is_refused_with_the_owner_named(tmp_path):
    path = lock_path(str(tmp_path), 'experiments', 'x')
    with acquire(path, "experiment 'x'"):
        owner = json.loads(Path(path).read_text())
        assert owner['pid'] == os.getpid() and owner['host'] == socket.gethostname()
        with pytest.raises(ExperimentLockedError) as refused:
            acquire(path, "experiment 'x'")
        message = str(refused.value)
        assert f'pid {os.getpid()} on host {socket.gethostname()} since ' in message
        assert "experiment 'x' is in use by another run" in message and 'another `name`' in message
    assert not (tmp_path / 'experiments').exists(), 'the lock should leave no folder it created behind'


def test_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    path = Path(lock_path(str(tmp_path), 'results', 'y'))
    path.parent.mkdir(parents=True)
    pid = dead_pid()
    path.write_text(json.dumps(dict(pid=pid, host=socket.gethostname(), since=time.time() - 60, command='old')))
    lock = acquire(str(path), "test 'y'")
    try:
        assert json.loads(path.read_text())['pid'] == os.getpid()
        assert f'taking over the stale lock of test \'y\': its owner (pid {pid} on host' in capsys.readouterr().err
    finally:
        lock.release()
    assert not path.exists()


@pytest.mark.slow
def test_two_trainings_of_one_experiment(tmp_path):
    make_original_layout(tmp_path)
    name = 'train_HAT_SRx2_from_scratch'
    yml = tmp_path / f'{name}.yml'
    yml.write_text(original_train_yaml(name, 2, total_iter='100000').replace('use_tb_logger: true',
                                                                             'use_tb_logger: false'))
    experiments = tmp_path / 'experiments'
    first = subprocess.Popen(command('train', tmp_path, '-opt', str(yml)), cwd=tmp_path, env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((experiments / name).glob('train_*.log')):
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.monotonic() < deadline, 'the first run did not start within 240 s'
            time.sleep(0.1)
        before = sorted(p.name for p in experiments.iterdir())
        second = subprocess.run(command('train', tmp_path, '-opt', str(yml), '--auto_resume'), cwd=tmp_path,
                                env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert 'Traceback' not in second.stderr
        assert f"experiment '{name}' is in use by another run: pid {first.pid} on host {socket.gethostname()}" \
            in second.stderr
        assert first.poll() is None, 'the first run should still be training'
        assert sorted(p.name for p in experiments.iterdir()) == before, 'the running experiment was moved'
    finally:
        first.kill()
        first.wait()

    assert (experiments / '.locks' / f'{name}.lock').is_file(), 'a killed run cannot remove its lock file'
    third = subprocess.run(command('train', tmp_path, '-opt', str(yml), '--force_yml', 'train:total_iter=1'),
                           cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f'taking over the stale lock of experiment \'{name}\': its owner (pid {first.pid}' in third.stderr
    assert not (experiments / '.locks').exists()
    assert len(list(experiments.glob(f'{name}_archived_*'))) == 1  # the killed run's folder, archived as BasicSR does


@pytest.mark.slow
def test_torchrun_ranks_all_stop_when_rank_0_finds_the_experiment_locked(tmp_path):
    make_original_layout(tmp_path)
    name = 'train_HAT_SRx2_from_scratch'
    yml = tmp_path / f'{name}.yml'
    yml.write_text(original_train_yaml(name, 2))
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                f'--log-dir={tmp_path / "torchrun_logs"}', '--redirects=3', '--no-python']
    with acquire(lock_path(str(tmp_path), 'experiments', name), 'the test'):
        result = subprocess.run(torchrun + command('train', tmp_path, '-opt', str(yml), '--launcher', 'pytorch',
                                                      '--force_yml', 'datasets:train:dataset_enlarge_ratio=8'),
                                cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    errors = {int(p.parent.name): p.read_text() for p in (tmp_path / 'torchrun_logs').rglob('stderr.log')}
    assert result.returncode != 0 and set(errors) == {0, 1}
    assert f'is in use by another run: pid {os.getpid()}' in errors[0]
    assert 'rank 0 refused to start' in errors[1]
    assert not (tmp_path / 'experiments' / name).exists()


#: Takes and releases the lock of experiment argv[2] under root argv[1], argv[3] times; exits 0 if never refused.
LOCK_LOOP = """
import sys
from hat.training.experiment_lock import acquire, lock_path
root, name, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(times):
    acquire(lock_path(root, 'experiments', name), name).release()
"""


def test_experiments_finishing_at_the_same_moment_never_refuse_each_other(tmp_path):
    """Each release removes the then empty .locks folder while the other process may be about to open its lock."""
    processes = [subprocess.Popen([sys.executable, '-c', LOCK_LOOP, str(tmp_path), name, '300'], env=subprocess_env(),
                                  stderr=subprocess.PIPE, text=True) for name in ('a', 'b', 'c')]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], '\n'.join(errors)[-3000:]
    assert not (tmp_path / 'experiments' / '.locks').exists()


#: Takes the lock, forks a child that outlives it (as DataLoader workers do), says so and waits to be killed.
LOCK_AND_FORK = """
import multiprocessing, sys, time
from hat.training.experiment_lock import acquire
lock = acquire(sys.argv[1], 'the test')
child = multiprocessing.get_context('fork').Process(target=time.sleep, args=(120,), daemon=False)
child.start()
print(child.pid, flush=True)
time.sleep(120)
"""


def test_lock_of_a_killed_run_is_free_at_once_while_its_workers_live(tmp_path):
    path = lock_path(str(tmp_path), 'experiments', 'z')
    owner = subprocess.Popen([sys.executable, '-c', LOCK_AND_FORK, path], env=subprocess_env(),
                             stdout=subprocess.PIPE, text=True)
    worker = int(owner.stdout.readline())
    try:
        owner.kill()
        owner.wait()
        assert os.path.exists(f'/proc/{worker}'), 'the worker should still be alive'
        assert not any(os.path.realpath(f'/proc/{worker}/fd/{fd}') == os.path.realpath(path)
                       for fd in os.listdir(f'/proc/{worker}/fd')), 'the worker inherited the lock descriptor'
        acquire(path, 'the next run').release()
    finally:
        os.kill(worker, 9)
