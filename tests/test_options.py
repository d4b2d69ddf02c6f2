"""Every option file parses and names registered classes; networks build with the published layouts; the published
recipes carry the published hyper-parameters; test files match the published checkpoints."""
from __future__ import annotations

import json
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
from conftest import REFERENCE_DIR, REPO_ROOT
from oracles import PUBLISHED_NUM_PARAMS

from hat.archs.hat_presets import PRESETS

OPTION_FILES = sorted((REPO_ROOT / 'options').glob('*/*.yml'))
REFERENCE = json.loads((REFERENCE_DIR / 'hat_official_state_dicts.json').read_text())

FROM_SCRATCH = dict(lr=2e-4, total_iter=500000, milestones=[250000, 400000, 450000, 475000])
FINETUNE_FROM_X2 = dict(lr=1e-4, total_iter=250000, milestones=[125000, 200000, 225000, 240000])
IMAGENET = dict(lr=2e-4, total_iter=800000, milestones=[300000, 500000, 650000, 700000, 750000])
FINETUNE_FROM_IMAGENET = dict(lr=1e-5, total_iter=250000, milestones=[125000, 200000, 225000, 240000])

#: Published training recipes: file stem -> (variant, schedule, stage it starts from).
RECIPES = {
    **{f'{f}_SRx{s}': (f'{f}_SRx{s}', FROM_SCRATCH, None) for f in ('HAT-S', 'HAT') for s in (2, 3)},
    **{f'{f}_SRx4': (f'{f}_SRx4', FINETUNE_FROM_X2, f'{f}_SRx2') for f in ('HAT-S', 'HAT')},
    **{f'{f}_SRx{s}_ImageNet_from_scratch': (f'{f}_SRx{s}', IMAGENET, None)
       for f in ('HAT', 'HAT-L') for s in (2, 3, 4)},
    **{f'{f}_SRx{s}_ImageNet-pretrain': (f'{f}_SRx{s}', FINETUNE_FROM_IMAGENET, f'{f}_SRx{s}_ImageNet_from_scratch')
       for f in ('HAT', 'HAT-L') for s in (2, 3, 4)},
}
#: Published checkpoints with a test file: file stem -> variant.
CHECKPOINTS = {**{f'{f}_SRx{s}': f'{f}_SRx{s}' for f in ('HAT-S', 'HAT') for s in (2, 3, 4)},
               **{f'{f}_SRx{s}_ImageNet-pretrain': f'{f}_SRx{s}' for f in ('HAT', 'HAT-L') for s in (2, 3, 4)}}
TEST_SETS = {'Set5', 'Set14', 'BSD100', 'Urban100', 'Manga109'}


def registered(registry, name: str) -> bool:
    """Whether ``registry.get`` finds ``name`` (BasicSR also files its own classes as ``<name>_basicsr``)."""
    try:
        return registry.get(name) is not None
    except KeyError:
        return False


def load(path: Path) -> dict:
    """Parse as BasicSR does (ordered YAML with ``!!float``)."""
    with open(path, encoding='utf-8') as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


@contextmanager
def skipped_random_init():
    """Build networks with zeros instead of random weights (the layout is what is checked), on one thread."""
    names = ('uniform_', 'normal_')
    saved, threads = {n: getattr(torch.Tensor, n) for n in names}, torch.get_num_threads()
    for n in names:
        setattr(torch.Tensor, n, lambda self, *args, **kwargs: self.zero_())
    torch.set_num_threads(1)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)
        torch.set_num_threads(threads)


@cache
def built_layout(network_yaml: str) -> tuple[int, dict]:
    """(parameter count, {key: shape}) of a network option section, built once per distinct section."""
    with skipped_random_init():
        net = build_network(yaml.safe_load(network_yaml))
    return sum(p.numel() for p in net.parameters()), {k: list(v.shape) for k, v in net.state_dict().items()}


def layout(opt: dict) -> tuple[int, dict]:
    return built_layout(yaml.safe_dump(json.loads(json.dumps(opt['network_g'])), sort_keys=True))


def test_every_recipe_and_checkpoint_has_a_file():
    stems = {(p.parent.name, p.stem) for p in OPTION_FILES}
    assert {('train', s) for s in RECIPES} <= stems
    assert {('test', s) for s in CHECKPOINTS} | {('test', 'HAT_tile_example')} <= stems


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_option_file_parses_and_builds(path):
    opt = load(path)
    assert registered(MODEL_REGISTRY, opt['model_type'])
    for section in opt['datasets'].values():
        assert registered(DATASET_REGISTRY, section['type']), section['type']
    for key in [k for k in opt if k.startswith('network_')]:
        assert registered(ARCH_REGISTRY, opt[key]['type'])
        if opt[key]['type'] == 'HAT':
            assert opt[key]['upscale'] == opt['scale']
            count, _ = layout(opt)
            assert count > 0
        else:
            with skipped_random_init():
                build_network(dict(opt[key]))
    for name, metric in opt.get('val', {}).get('metrics', {}).items():
        assert registered(METRIC_REGISTRY, metric['type']), name
    for key, section in opt.get('train', {}).items():
        if key.endswith('_opt') and section:
            assert registered(LOSS_REGISTRY, section['type']), key


@pytest.mark.parametrize('stem', sorted(RECIPES))
def test_published_recipe(stem):
    variant, schedule, start = RECIPES[stem]
    opt = load(REPO_ROOT / 'options' / 'train' / f'{stem}.yml')
    scale = opt['scale']
    train, data = opt['train'], opt['datasets']['train']
    assert opt['name'] == stem and opt['model_type'] == 'HATModel'
    assert {k: v for k, v in opt['network_g'].items() if k != 'type'} == PRESETS[variant]
    assert layout(opt)[0] == PUBLISHED_NUM_PARAMS[variant]
    assert train['optim_g'] == dict(type='Adam', lr=schedule['lr'], weight_decay=0, betas=[0.9, 0.99])
    assert train['scheduler'] == dict(type='MultiStepLR', milestones=schedule['milestones'], gamma=0.5)
    assert train['total_iter'] == schedule['total_iter'] and train['ema_decay'] == 0.999
    assert train['pixel_opt']['type'] == 'L1Loss' and train['pixel_opt']['loss_weight'] == 1.0
    assert data['batch_size_per_gpu'] == 4 and data['gt_size'] == 64 * scale
    assert data['use_hflip'] and data['use_rot']
    if 'ImageNet_from_scratch' in stem:
        assert data['type'] == 'HROnlyDataset' and 'imagenet' in data['dataroot_gt']
    else:
        assert data['type'] == 'PairedImageDataset' and 'DF2K' in data['dataroot_gt']
        assert data['dataroot_lq'].endswith(f'x{scale}_sub')
    pretrained = opt['path']['pretrain_network_g']
    if start is None:
        assert pretrained is None
    else:
        assert pretrained == f'experiments/{start}/models/net_g_latest.pth'
        assert opt['path']['param_key_g'] == 'params_ema'
        assert opt['path']['strict_load_g'] is (load(REPO_ROOT / 'options/train' / f'{start}.yml')['scale'] == scale)
    for metric in opt['val']['metrics'].values():
        assert metric['crop_border'] == scale and metric['test_y_channel'] is True


@pytest.mark.parametrize('stem', sorted(CHECKPOINTS) + ['HAT_tile_example'])
def test_test_file_matches_published_checkpoint(stem):
    opt = load(REPO_ROOT / 'options' / 'test' / f'{stem}.yml')
    checkpoint = 'HAT_SRx4_ImageNet-pretrain' if stem == 'HAT_tile_example' else stem
    reference = REFERENCE[CHECKPOINTS[checkpoint]]
    scale = opt['scale']
    assert opt['path']['pretrain_network_g'] == f'experiments/pretrained_models/{checkpoint}.pth'
    assert opt['path']['param_key_g'] == 'params_ema' and opt['path']['strict_load_g'] is True
    count, shapes = layout(opt)
    assert count == reference['num_params']
    assert shapes == {k: shape for k, (shape, _) in reference['state_dict'].items()}
    names = {d['name'] for d in opt['datasets'].values()}
    for section in opt['datasets'].values():
        assert section['dataroot_gt'].endswith('/GTmod12') and section['dataroot_lq'].endswith(f'/LRbicx{scale}')
    for metric in opt['val']['metrics'].values():
        assert metric['crop_border'] == scale and metric['test_y_channel'] is True
    if stem == 'HAT_tile_example':
        assert opt['tile'] == dict(tile_size=256, tile_pad=32)
    else:
        assert names == TEST_SETS


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_option_file_passes_the_pre_flight_checks(path, monkeypatch):
    """Our own files are not refused by hat/train.py's and hat/test.py's checks (published weights aside; a file
    made for one GPU, `num_gpu: 1`, is refused exactly where there is no GPU)."""
    from hat.training.preflight import find_problems

    monkeypatch.chdir(REPO_ROOT)
    with skipped_random_init():
        problems = find_problems(load(path), is_train=path.parent.name == 'train')
    pretrained = load(path)['path'].get('pretrain_network_g')
    expected = [f"path.pretrain_network_g: '{pretrained}' does not exist"]
    if load(path)['num_gpu'] == 1 and not torch.cuda.is_available():
        expected.append('num_gpu: 1 asks for a GPU, but CUDA is not available')
    assert [p for p in map(str, problems) if not p.startswith(tuple(expected))] == []
