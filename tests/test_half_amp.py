"""HATModel mixed-precision training from the options: train: {use_amp, amp_dtype}."""
from __future__ import annotations

import pytest
import torch

from hat.models.hat_model import HATModel
from tests.conftest import TINY_CONFIG, sample_photo, to_tensor


def amp_options(tmp_path, **train):
    return dict(
        name='amp', model_type='HATModel', scale=2, num_gpu=0, dist=False, rank=0, world_size=1, is_train=True,
        network_g=dict(type='HAT', **TINY_CONFIG, drop_path_rate=0.0),
        path={'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
              'training_states': str(tmp_path)},
        train=dict(ema_decay=0, optim_g=dict(type='Adam', lr=2e-3, betas=[0.9, 0.99]),
                   scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                   pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'), **train),
    )


@pytest.fixture(scope='module')
def batch():
    gt = torch.cat([to_tensor(sample_photo('astronaut')[80:128, 160:208]),
                    to_tensor(sample_photo('coffee')[100:148, 200:248])])
    lq = torch.nn.functional.interpolate(gt, scale_factor=0.5, mode='bicubic', antialias=True)
    return {'lq': lq.clamp(0, 1), 'gt': gt}


@pytest.mark.parametrize('amp_dtype,scaled', [('bf16', False), ('fp16', True)])
def test_amp_steps_lower_the_loss_with_float32_weights(tmp_path, batch, amp_dtype, scaled):
    torch.manual_seed(0)
    model = HATModel(amp_options(tmp_path, use_amp=True, amp_dtype=amp_dtype))
    assert model.use_amp and model.grad_scaler.is_enabled() == scaled
    before = {n: p.detach().clone() for n, p in model.net_g.named_parameters()}
    mlp_dtypes = set()
    model.net_g.layers[0].residual_group.blocks[0].mlp.fc1.register_forward_hook(
        lambda module, inputs, output: mlp_dtypes.add(output.dtype))
    losses = []
    for step in range(1, 6):
        model.feed_data(batch)
        model.optimize_parameters(step)
        losses.append(model.log_dict['l_pix'])
    assert mlp_dtypes == {model.amp_dtype}  # the branches really ran in half precision
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.net_g.parameters())
    assert any(not torch.equal(before[n], p) for n, p in model.net_g.named_parameters())
    assert losses[-1] < losses[0]


def test_amp_is_off_by_default(tmp_path, batch):
    model = HATModel(amp_options(tmp_path))
    assert not model.use_amp and not model.grad_scaler.is_enabled()
    model.feed_data(batch)
    model.optimize_parameters(1)
    assert model.output.dtype == torch.float32


@pytest.mark.parametrize('train,message', [
    (dict(use_amp=True, amp_dtype='int8'), "amp_dtype 'int8' is not supported: use bf16 or fp16"),
    (dict(use_amp='yes'), 'use_amp must be true or false'),
])
def test_bad_amp_options_name_the_option(tmp_path, train, message):
    with pytest.raises(ValueError, match=message):
        HATModel(amp_options(tmp_path, **train))
