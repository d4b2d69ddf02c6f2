"""HATModel: any-size and tiled inference from options, atomic checkpoints, safe and explained weight loading."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_CONFIG, load_synth_weights, sample_photo, to_tensor

import hat.models.hat_model as hat_model
from hat.inference.tiling import TileOutOfMemoryError
from hat.models.hat_model import HATModel
from hat.weights.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.torch_threads


def model_options(tmp_path, is_train=False, **path):
    """Options for a HATModel on CPU around the tiny network of conftest."""
    opt = dict(name='unit', model_type='HATModel', scale=2, num_gpu=0, dist=False, rank=0, world_size=1,
               is_train=is_train, network_g=dict(type='HAT', **TINY_CONFIG),
               path={'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
                     'training_states': str(tmp_path), **path})
    if is_train:
        opt['train'] = dict(ema_decay=0.999, optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                            scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                            pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'))
    return opt


def synth_model(tmp_path, **opt):
    model = HATModel({**model_options(tmp_path), **opt})
    weights = load_synth_weights().synth_state_dict(model.net_g.state_dict(), seed=3)
    model.net_g.load_state_dict(weights)
    return model


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / torch.mean((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).item())


@pytest.fixture(scope='module')
def photo():
    return to_tensor(sample_photo('coffee')[100:173, 200:301])  # 73 x 101: not a multiple of the window


def test_any_size_and_tiles_from_options_match_whole_image(tmp_path, photo):
    whole = synth_model(tmp_path)
    whole.feed_data({'lq': photo})
    whole.test()
    assert whole.output.shape == (1, 3, 146, 202)
    tiled = synth_model(tmp_path, tile=dict(tile_size=37, tile_pad=32))  # any size, not only window multiples
    tiled.feed_data({'lq': photo})
    tiled.test()
    assert tiled.output.shape == whole.output.shape
    assert psnr(tiled.output, whole.output) >= 50
    assert not torch.equal(tiled.output, whole.output)  # it did run tile by tile


def test_tile_that_does_not_fit_gives_a_clear_error(tmp_path, photo, monkeypatch):
    model = synth_model(tmp_path, tile=dict(tile_size=64, tile_pad=16))
    forward = model.net_g.forward

    def limited(x):
        if x.shape[-1] * x.shape[-2] > 40 * 40:
            raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return forward(x)

    monkeypatch.setattr(model.net_g, 'forward', limited)
    model.feed_data({'lq': photo})
    with pytest.raises(TileOutOfMemoryError, match='smaller tile_size'):
        model.test()


def test_checkpoints_are_written_atomically_and_load_with_weights_only(tmp_path, monkeypatch):
    model = HATModel(model_options(tmp_path, is_train=True))
    model.save(epoch=0, current_iter=5)
    saved = torch.load(tmp_path / 'net_g_5.pth', weights_only=True)
    assert set(saved) == {'params', 'params_ema'}
    state = torch.load(tmp_path / '5.state', weights_only=True)
    assert state['iter'] == 5 and len(state['optimizers']) == 1 and len(state['schedulers']) == 1
    before = (tmp_path / 'net_g_5.pth').read_bytes()

    def crash_midway(obj, f):
        f.write(b'half a checkpoint')
        raise OSError('No space left on device')

    monkeypatch.setattr(hat_model.torch, 'save', crash_midway)
    with pytest.raises(OSError, match='No space left'):
        model.save(epoch=0, current_iter=5)
    assert (tmp_path / 'net_g_5.pth').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['5.state', 'net_g_5.pth']


def test_pretrained_weights_load_with_fallback_and_clear_errors(tmp_path):
    source = synth_model(tmp_path)
    only_params = tmp_path / 'only_params.pth'
    torch.save({'params': source.net_g.state_dict()}, only_params)
    loaded = HATModel(model_options(tmp_path, pretrain_network_g=str(only_params), param_key_g='params_ema'))
    for key, value in source.net_g.state_dict().items():
        assert torch.equal(loaded.net_g.state_dict()[key], value)

    with pytest.raises(FileNotFoundError, match='pretrain_network_g'):
        HATModel(model_options(tmp_path, pretrain_network_g=str(tmp_path / 'missing.pth')))

    x3 = hat_model.HAT(**{**TINY_CONFIG, 'upscale': 3})
    other = tmp_path / 'x3.pth'
    torch.save({'params_ema': x3.state_dict()}, other)
    with pytest.raises(CheckpointError, match='another HAT variant'):
        HATModel(model_options(tmp_path, pretrain_network_g=str(other)))

    pickled = tmp_path / 'code.pth'
    torch.save({'params': source.net_g.state_dict(), 'hook': print}, pickled)
    with pytest.raises(CheckpointError, match='weights_only'):
        HATModel(model_options(tmp_path, pretrain_network_g=str(pickled)))
