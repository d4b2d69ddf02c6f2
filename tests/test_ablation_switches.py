"""The paper's ablations as HAT switches: each variant builds, trains, saves and loads its own weights
strictly; a switched-off module has no parameters; the x4 ablation recipes parse, pass pre-flight and build."""
import functools
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.archs import build_network

from hat import HAT, load_hat
from hat.archs.hat_presets import PRESETS
from hat.scripts import ablation_demo
from hat.training import preflight
from hat.weights.checkpoint import save_weights
from tests.conftest import REPO_ROOT, TINY_CONFIG, sample_photo, to_tensor

#: The paper's switches, as the demo command names them.
VARIANTS = ablation_demo.VARIANTS


def keys(**overrides) -> set[str]:
    return set(HAT(**{**TINY_CONFIG, **overrides}).state_dict())


def test_switched_off_modules_have_no_parameters():
    published = keys()
    assert not {k for k in keys(use_cab=False) if '.conv_block.' in k}
    assert published - keys(use_cab=False) == {k for k in published if '.conv_block.' in k}
    assert published - keys(use_ocab=False) == {k for k in published if '.overlap_attn.' in k}
    no_gate = published - keys(use_channel_attention=False)
    assert no_gate == {k for k in published if '.conv_block.cab.3.' in k} and no_gate
    for variant in VARIANTS.values():  # a variant never invents new names
        if 'window_size' not in variant and 'overlap_ratio' not in variant:
            assert keys(**variant) <= published


@pytest.mark.parametrize('name', VARIANTS)
def test_variant_trains_and_reloads_its_own_checkpoint_strictly(name, tmp_path, one_thread):
    config = {**TINY_CONFIG, 'drop_path_rate': 0.0, **VARIANTS[name]}
    torch.manual_seed(0)
    model = HAT(**config)
    hr = to_tensor(sample_photo('astronaut')[96:128, 160:192])
    lr = torch.nn.functional.interpolate(hr, scale_factor=0.5, mode='bicubic', align_corners=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = (model(lr) - hr).abs().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    save_weights(tmp_path / f'{name}.pth', model.state_dict(), config=config)
    loaded = load_hat(tmp_path / f'{name}.pth')  # strict: every key, no extra
    model.eval()
    with torch.no_grad():
        expected = model(lr)
        assert torch.equal(loaded(lr), expected)
    fresh = HAT(**config)
    fresh.load_state_dict(torch.load(tmp_path / f'{name}.pth', weights_only=True)['params'], strict=True)


@functools.cache
def published_x4_shapes() -> dict[str, torch.Size]:
    with torch.device('meta'):
        return {k: v.shape for k, v in HAT(**PRESETS['HAT_SRx4']).state_dict().items()}


ABLATION_FILES = sorted((REPO_ROOT / 'options' / 'train' / 'ablation').glob('*.yml'))
SWITCHES = ('use_ocab', 'use_cab', 'use_channel_attention', 'conv_scale', 'overlap_ratio', 'window_size')


def test_ablation_recipes_cover_the_paper():
    stems = {p.stem.removeprefix('HAT_SRx4_ablation_') for p in ABLATION_FILES}
    assert stems == {'full', 'wo_OCAB', 'wo_CAB', 'wo_OCAB_CAB', 'wo_CA', 'conv_scale_0', 'conv_scale_0.1',
                     'conv_scale_1', 'overlap_0', 'overlap_0.25', 'overlap_0.75', 'window_8'}


@pytest.mark.parametrize('path', ABLATION_FILES, ids=lambda p: p.stem)
def test_ablation_recipe_passes_preflight_and_builds(path: Path):
    opt = preflight.read_option_file(str(path))
    full = preflight.read_option_file(str(path.with_name('HAT_SRx4_ablation_full.yml')))
    preflight.fill_defaults(opt, True)
    assert preflight.find_problems(opt, True) == []
    assert opt['name'] == path.stem
    train = opt['train']
    assert (train['optim_g']['lr'], train['total_iter'], train['scheduler']['milestones']) == \
        (2e-4, 500000, [250000, 400000, 450000, 475000])  # the published from-scratch schedule
    assert opt['path']['pretrain_network_g'] is None
    network = dict(opt['network_g'])
    changed = {k for k in SWITCHES if k in network and network[k] != full['network_g'].get(k)}
    changed |= {k for k in SWITCHES if k not in full['network_g'] and k in network}
    assert bool(changed) == (path.stem != 'HAT_SRx4_ablation_full'), changed
    others = {k: v for k, v in network.items() if k not in SWITCHES}
    assert others == {k: v for k, v in full['network_g'].items() if k not in SWITCHES}
    with torch.device('meta'):
        net = build_network(yaml.safe_load(yaml.safe_dump(network)))
    published = published_x4_shapes()
    own = {k: v.shape for k, v in net.state_dict().items()}
    if path.stem == 'HAT_SRx4_ablation_full':
        assert own == published
    elif not changed & {'window_size', 'overlap_ratio'}:
        assert set(own) < published.keys() or changed <= {'conv_scale'}
