"""Distributed training with real torchrun: two CPU processes (gloo) train together; only rank 0 writes."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
from test_train_support import command, subprocess_env, tiny_options, train_log, write_options, write_photos

pytestmark = pytest.mark.slow


def test_torchrun_two_cpu_processes_train_with_gloo(tmp_path):
    train_dir = write_photos(tmp_path / 'hr')
    opt = tiny_options('ddp', train_dir, None, total_iter=4, logger=dict(save_checkpoint_freq=2))
    yml = write_options(opt, tmp_path / 'ddp.yml')
    logs = tmp_path / 'torchrun_logs'
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                f'--log-dir={logs}', '--redirects=3', '--no-python']
    entry = command('train', tmp_path, '-opt', str(yml), '--launcher', 'pytorch')
    result = subprocess.run(torchrun + entry, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                            timeout=300)
    rank_out = {int(p.parent.name): p.read_text() for p in logs.rglob('stdout.log')}
    assert result.returncode == 0, f'{result.stderr[-4000:]}\n{rank_out}'

    assert set(rank_out) == {0, 1}
    for rank in (0, 1):
        assert f'[hat] distributed rank {rank} of 2: backend gloo, cpu' in rank_out[rank]
    assert 'Saving models and training states' not in rank_out[1]

    log = train_log(tmp_path, 'ddp')
    assert 'world_size: 2' in log and 'End of training' in log
    losses = [float(v) for v in re.findall(r'l_pix: ([-+.\deE]+)', log)]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)

    exp = tmp_path / 'experiments' / 'ddp'
    written = sorted(str(p.relative_to(exp)) for p in exp.rglob('*') if p.is_file())
    assert written == sorted([log_name.name for log_name in exp.glob('train_*.log')] + [
        'ddp.yml', 'models/net_g_2.pth', 'models/net_g_4.pth', 'models/net_g_latest.pth',
        'training_states/2.state', 'training_states/4.state'])
    weights = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert not any(k.startswith('module.') for k in weights['params'])
