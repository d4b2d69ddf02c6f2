"""Distributed training with real torchrun: two CPU processes (gloo) train together; only rank 0 writes."""
from __future__ import annotations

import datetime
import math
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_support import command, subprocess_env, tiny_options, train_log, write_options, write_photos
from test_train_switches import build, forward_batch_sizes, photo_batch, train_steps
from torch.nn.parallel import DistributedDataParallel

from hat.training import basicsr_compat
from hat.training.basicsr_compat import init_dist


def torchrun(tmp_path, opt: dict) -> dict[int, str]:
    """Train ``opt`` with ``torchrun --nproc_per_node=2`` on CPU (gloo); returns each rank's stdout."""
    yml = write_options(opt, tmp_path / f'{opt["name"]}.yml')
    logs = tmp_path / f'torchrun_logs_{opt["name"]}'
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                f'--log-dir={logs}', '--redirects=3', '--no-python']
    entry = command('train', tmp_path, '-opt', str(yml), '--launcher', 'pytorch')
    result = subprocess.run(launcher + entry, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    rank_out = {int(p.parent.name): p.read_text() for p in logs.rglob('stdout.log')}
    rank_err = {int(p.parent.name): p.read_text()[-3000:] for p in logs.rglob('stderr.log')}
    assert result.returncode == 0, f'{result.stderr[-3000:]}\n{rank_out}\n{rank_err}'
    assert set(rank_out) == {0, 1}
    for rank in (0, 1):
        assert f'[hat] distributed rank {rank} of 2: backend gloo, cpu' in rank_out[rank]
    return rank_out


#: The two runs: validation without EMA (the DDP-wrapped network) at a step that is not the last one, and with a
#: warmed-up EMA, gradient accumulation (no all-reduce on the first micro-batch: DDP's no_sync) and clipping.
DDP_RUNS = {
    'no_ema': dict(total_iter=4, val_freq=2, train=dict(ema_decay=0), validated_at=[2, 4]),
    'ema_accum': dict(total_iter=4, val_freq=3, train=dict(ema_decay=0.999, ema_power=0.75, accum_iter=2,
                                                         grad_clip=0.5), validated_at=[3]),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', DDP_RUNS)
def test_torchrun_two_cpu_processes_train_and_validate_with_gloo(tmp_path, name):
    run = DDP_RUNS[name]
    train_dir = write_photos(tmp_path / 'hr')
    val_dir = write_photos(tmp_path / 'val', size=40, names=('rocket', 'chelsea'))
    opt = tiny_options(name, train_dir, val_dir, total_iter=run['total_iter'], train=run['train'],
                       logger=dict(save_checkpoint_freq=2))
    opt['val'].update(val_freq=run['val_freq'], save_img=True)
    rank_out = torchrun(tmp_path, opt)
    assert 'Saving models and training states' not in rank_out[1]
    assert 'Validation' not in rank_out[1]

    log = train_log(tmp_path, name)
    assert 'world_size: 2' in log and 'End of training' in log
    losses = [float(v) for v in re.findall(r'l_pix: ([-+.\deE]+)', log)]
    assert len(losses) == run['total_iter'] and all(math.isfinite(v) for v in losses)
    if 'grad_clip' in run['train']:
        assert 'Gradient accumulation: 2 micro-batches per optimizer step' in log
        assert len(re.findall(r'grad_norm: ([-+.\deE]+)', log)) == run['total_iter']
    psnrs = [float(v) for v in re.findall(r'# psnr: ([-+.\deE]+)', log)]
    assert len(psnrs) == len(run['validated_at']) + 1 and all(math.isfinite(v) for v in psnrs)  # + the final one
    assert log.index('End of training') > log.index('Validation held_out')  # training went on after validating

    exp = tmp_path / 'experiments' / name
    # BasicSR labels the validation after training with the iteration counter past the loop's end (> total_iter).
    final = max(int(p.stem.split('_')[-1]) for p in exp.glob('visualization/*/*.png'))
    assert final > run['total_iter']
    images = [f'visualization/{img}/{img}_{it}.png' for img in ('rocket', 'chelsea')
              for it in run['validated_at'] + [final]]
    metrics = [f'metrics/metrics_held_out_{it}.{ext}' for it in run['validated_at'] + [final]
               for ext in ('csv', 'json')]
    written = sorted(str(p.relative_to(exp)) for p in exp.rglob('*') if p.is_file())
    assert written == sorted([log_name.name for log_name in exp.glob('train_*.log')] + images + metrics + [
        f'{name}.yml', 'models/net_g_2.pth', 'models/net_g_4.pth', 'models/net_g_latest.pth',
        'training_states/2.state', 'training_states/4.state'])
    weights = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert not any(k.startswith('module.') for k in weights['params'])


@pytest.fixture
def process_group():
    """A one-process gloo group, enough to wrap networks in DDP in this process."""
    port = _free_port()
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def realhat_gan_options(root) -> dict:
    """The Real-HAT GAN recipe on a tiny HAT without EMA, as a distributed run on CPU."""
    from test_realhat import GAN_YML, as_parsed, tiny

    opt = as_parsed(tiny(GAN_YML, {'hr': str(root), 'meta_info': str(root / 'meta_info.txt'), 'lr': str(root)}), root)
    opt['path']['pretrain_network_g'] = None
    opt['train']['ema_decay'] = 0
    opt['dist'] = True
    return opt


@pytest.mark.parametrize('model_type', ['HATModel', 'RealHATGANModel'])
def test_inference_runs_the_bare_network_never_the_ddp_wrapper(tmp_path, process_group, monkeypatch, model_type):
    from basicsr.models import build_model

    model = build(tmp_path, dist=True, ema_decay=0) if model_type == 'HATModel' else build_model(
        realhat_gan_options(tmp_path))
    nets = [model.net_g] + ([model.net_d] if hasattr(model, 'net_d') else [])
    assert all(isinstance(net, DistributedDataParallel) for net in nets) and not hasattr(model, 'net_g_ema')

    def refuse(self, *args, **kwargs):
        raise AssertionError('DDP forward at inference: a collective that only the validating rank reaches')

    monkeypatch.setattr(DistributedDataParallel, 'forward', refuse)
    model.is_train = False  # as BasicSR's validation does for the Real-HAT models
    lq = photo_batch()['lq'][:1]
    scale = model.opt['scale']
    for tile in (None, {'tile_size': 8, 'tile_pad': 4}):
        model.opt['tile'] = tile
        model.feed_data({'lq': lq})
        model.test()
        assert model.output.shape == (1, 3, lq.shape[2] * scale, lq.shape[3] * scale)
    assert model.net_g.module.training  # back in training mode for the next step


def test_ddp_all_reduces_once_per_optimizer_step(tmp_path, process_group):
    all_reduces = {}
    for accum_iter in (1, 4):
        model = build(tmp_path, dist=True, accum_iter=accum_iter)
        assert isinstance(model.net_g, DistributedDataParallel)
        calls: list[int] = []

        def count(state, bucket):
            state.append(bucket.index())
            future = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future

        model.net_g.register_comm_hook(calls, count)
        sizes = forward_batch_sizes(model)
        train_steps(model, photo_batch(), steps=1)
        assert sizes == [8 // accum_iter] * accum_iter
        all_reduces[accum_iter] = len(calls)
    assert all_reduces[4] == all_reduces[1] > 0  # no all-reduce in the backward of the first three micro-batches


def test_local_rank_spellings_reach_basicsr_as_local_rank(monkeypatch):
    for spelling, rank in (['--local-rank=1'], 1), (['--local-rank', '2'], 2), (['--local_rank=3'], 3):
        monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', 'x.yml', *spelling])
        assert basicsr_compat._arguments().local_rank == rank


def test_pytorch_launcher_without_torchrun_says_how_to_start(monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match='torchrun --nproc_per_node'):
        init_dist('pytorch', {})


def test_dist_params_and_cpu_pick_the_backend(monkeypatch, capsys):
    port = _free_port()
    for name, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=str(port)).items():
        monkeypatch.setenv(name, value)
    init_dist('pytorch', {'backend': 'nccl', 'port': 29500}, num_gpu=0)
    try:
        assert torch.distributed.get_backend() == 'gloo'  # NCCL asked for, but this run is on the CPU
        assert '[hat] distributed rank 0 of 1: backend gloo, cpu' in capsys.readouterr().out
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_wait_long_enough_for_rank_0_to_validate(monkeypatch):
    """NCCL's 10-minute watchdog would kill a run while rank 0 validates alone: dist_params.timeout, 120 by default."""
    seen = {}
    monkeypatch.setattr(torch.distributed, 'init_process_group', lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(torch.distributed, 'get_rank', lambda: 0)
    monkeypatch.setattr(torch.distributed, 'get_world_size', lambda: 1)
    for name, value in dict(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT='29500').items():
        monkeypatch.setenv(name, value)
    init_dist('pytorch', {'backend': 'gloo'}, num_gpu=0)
    assert seen['timeout'] == datetime.timedelta(minutes=120)
    init_dist('pytorch', {'backend': 'gloo', 'timeout': 30}, num_gpu=0)
    assert seen['timeout'] == datetime.timedelta(minutes=30)
    with pytest.raises(basicsr_compat.LaunchError, match="dist_params: timeout is 'long'"):
        init_dist('pytorch', {'timeout': 'long'}, num_gpu=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


#: hat/train.py's main in a process that first registers tests/rank_faults.py's RankFaultModel.
FAULTY_TRAIN = ('import sys; sys.path.insert(0, sys.argv.pop(1)); import hat, rank_faults; from hat.train import main; '
                'main(sys.argv.pop(1))')


@pytest.mark.slow
@pytest.mark.parametrize('launcher, moment', [('torchrun', 'startup'), ('torchrun', 'validation'),
                                              ('slurm', 'validation')])
def test_an_exception_on_rank_1_ends_every_rank_with_its_message(tmp_path, launcher, moment):
    train_dir = write_photos(tmp_path / 'hr')
    val_dir = write_photos(tmp_path / 'val', size=40, names=('rocket',))
    opt = tiny_options('faulty', train_dir, val_dir, total_iter=6, model_type='RankFaultModel')
    opt['val'].update(val_freq=2)
    yml = write_options(opt, tmp_path / 'faulty.yml')
    entry = [sys.executable, '-c', FAULTY_TRAIN, str(Path(__file__).parent), str(tmp_path), '-opt', str(yml)]
    env = {**subprocess_env(), 'HAT_TEST_FAULT': f'1:{moment}'}
    if launcher == 'torchrun':
        logs = tmp_path / 'logs'
        result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                                 f'--log-dir={logs}', '--redirects=3', '--no-python', *entry, '--launcher', 'pytorch'],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode != 0
        errors = {int(p.parent.name): p.read_text() for p in logs.rglob('stderr.log')}
    else:  # as srun starts the tasks: each with its SLURM_PROCID, nobody ends the others
        env.update(SLURM_NTASKS='2', SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()))
        ranks = [subprocess.Popen([*entry, '--launcher', 'slurm'], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                                  env={**env, 'SLURM_PROCID': str(r), 'SLURM_LOCALID': str(r)}) for r in (0, 1)]
        try:
            errors = {r: p.communicate(timeout=300)[1] for r, p in enumerate(ranks)}
        finally:
            for p in ranks:
                p.kill()
        assert all(p.returncode != 0 for p in ranks)
    message = f'RuntimeError: injected failure at {"start-up" if moment == "startup" else "a validation"} on rank 1'
    assert message in errors[1]
    assert f'hat/train.py: error: rank 1 failed: {message}' in errors[0], errors[0][-3000:]
    assert 'Traceback' not in errors[0]
