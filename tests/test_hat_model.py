"""HATModel: validation through hat-upscale's engine (same pixels, planned tiles, out-of-memory halving),
atomic checkpoints, safe and explained weight loading."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, load_synth_weights, sample_photo, to_tensor

import hat.models.hat_model as hat_model
from hat.archs.banded import BAND_TOKENS
from hat.inference import plan
from hat.inference.plan import TileOutOfMemoryError
from hat.inference.upscaler import Upscaler
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


def validate(model: HATModel, lq: torch.Tensor) -> np.ndarray:
    """``model.test()`` on ``lq``, as the HWC float image in [0, 1] that validation saves and measures."""
    model.feed_data({'lq': lq})
    model.test()
    return model.output[0].clamp(0, 1).permute(1, 2, 0).numpy()


def record_input_sizes(model: HATModel, limit: int = 0) -> list[tuple[int, int]]:
    """Record the input size of every network pass of ``model``; inputs over ``limit`` pixels (if set)
    raise PyTorch's out-of-memory error, as a GPU with little memory would."""
    forward, sizes = model.net_g.forward, []

    def recording(x):
        sizes.append(tuple(x.shape[-2:]))
        if limit and x.shape[-1] * x.shape[-2] > limit:
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return forward(x)

    model.net_g.forward = recording
    return sizes


@pytest.mark.parametrize('tile', [None, dict(tile_size=37, tile_pad=32), dict(tile_size=16, tile_pad=8)],
                         ids=['auto', 'tile37', 'tile16'])
def test_validation_gives_the_pixels_of_hat_upscale(tmp_path, photo, tile):
    model = synth_model(tmp_path, **({'tile': tile} if tile else {}))
    tiles = dict(tile=tile['tile_size'], tile_pad=tile['tile_pad']) if tile else {}
    upscaled = Upscaler(model.net_g, precision='fp32', **tiles).upscale(photo[0].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(validate(model, photo), upscaled)


def test_validation_plans_tiles_against_free_memory(tmp_path, photo, monkeypatch):
    model = synth_model(tmp_path)
    whole = validate(model, photo)
    sizes = record_input_sizes(model)
    # Room for the blended result and a 73x96 input: 16px tiles with 32px of context (tile_pad's default).
    budget = plan.TilePlan(model.net_g, model.device).tile_bytes(73, 96) + (3 + 1) * 146 * 202 * 4
    monkeypatch.setattr('hat.inference.plan.memory_budget', lambda device: budget)
    tiled = validate(model, photo)
    assert len(sizes) == 5 * 7 and max(w for _, w in sizes) <= 96
    assert psnr(torch.from_numpy(tiled), torch.from_numpy(whole)) >= 50


def test_out_of_memory_in_validation_halves_the_tile(tmp_path, photo):
    model = synth_model(tmp_path, tile=dict(tile_size=64, tile_pad=16))
    whole = validate(synth_model(tmp_path), photo)
    sizes = record_input_sizes(model, limit=40 * 40)
    with pytest.warns(UserWarning, match='out of memory with 64px tiles on cpu; retrying with 32px'):
        tiled = validate(model, photo)
    assert max(h * w for h, w in sizes) > 40 * 40 >= sizes[-1][0] * sizes[-1][1]
    assert psnr(torch.from_numpy(tiled), torch.from_numpy(whole)) >= 40

    record_input_sizes(model, limit=1)
    with pytest.raises(TileOutOfMemoryError, match='even a 8px tile does not fit.*tile_size'), \
            pytest.warns(UserWarning, match='retrying'):
        validate(model, photo)


def test_validation_chooses_banded_inference_and_gives_the_network_back_as_it_was(tmp_path, photo):
    model = synth_model(tmp_path)
    model.net_g.set_banded(None)  # whole image, as training needs it
    model.net_g.train()
    seen = []
    model.net_g.register_forward_pre_hook(lambda net, args: seen.append((net.band_tokens, net.training)))
    validate(model, photo)
    assert seen == [(BAND_TOKENS, False)]
    assert model.net_g.band_tokens is None and model.net_g.training


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
