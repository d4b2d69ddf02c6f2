"""options/train/HAT_SRx4_single_gpu.yml: the published HAT_SRx4 recipe on one GPU (accumulation, bf16); it builds."""
from __future__ import annotations

import copy

import pytest
import torch
import yaml
from basicsr.utils.options import ordered_yaml
from conftest import REPO_ROOT

from hat.models.hat_model import HATModel
from hat.models.train_switches import TrainSwitches

SINGLE_GPU = REPO_ROOT / 'options' / 'train' / 'HAT_SRx4_single_gpu.yml'
PUBLISHED = REPO_ROOT / 'options' / 'train' / 'HAT_SRx4.yml'
PUBLISHED_GPUS = 8


def load(path) -> dict:
    with open(path, encoding='utf-8') as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def test_single_gpu_file_is_the_published_recipe_with_the_8_gpu_batch():
    single, published = load(SINGLE_GPU), load(PUBLISHED)
    switches = TrainSwitches.from_options(single)
    data, published_data = single['datasets']['train'], published['datasets']['train']
    assert single['num_gpu'] == 1 and switches.use_amp and switches.amp_dtype == torch.bfloat16
    assert data['batch_size_per_gpu'] == PUBLISHED_GPUS * published_data['batch_size_per_gpu'] == 32
    assert data['batch_size_per_gpu'] // switches.accum_iter == published_data['batch_size_per_gpu']
    # Everything else is the published recipe: network, data, optimizer, schedule, EMA, validation, logging.
    for opt in (single, published):
        for key in ('name', 'num_gpu'):
            opt.pop(key)
        for key in ('batch_size_per_gpu', 'num_worker_per_gpu'):
            opt['datasets']['train'].pop(key)
        for key in ('accum_iter', 'use_amp', 'amp_dtype'):
            opt['train'].pop(key, None)
    assert single == published


def test_single_gpu_file_builds_its_model(tmp_path):
    opt = copy.deepcopy(load(SINGLE_GPU))
    opt.update(num_gpu=0, dist=False, rank=0, world_size=1, is_train=True)  # built on the CPU here
    opt['path'].update(pretrain_network_g=None, models=str(tmp_path), training_states=str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = HATModel(opt)
    finally:
        torch.set_num_threads(threads)
    assert model.switches == TrainSwitches.from_options(load(SINGLE_GPU))
    assert sum(p.numel() for p in model.net_g.parameters()) == pytest.approx(20.8e6, rel=0.01)
    assert model.optimizer_g.param_groups[0]['lr'] == 1e-4
