"""Training switches on a tiny HAT: gradient accumulation (with AMP, DDP, resume), clipping, EMA warm-up, bad values."""
from __future__ import annotations

import copy
import re
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_CONFIG, sample_photo, to_tensor

from hat.models.hat_model import HATModel
from hat.models.train_switches import TrainSwitches
from hat.problems import ProblemsError

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.torch_threads


def options(tmp_path, batch: int = 8, dist: bool = False, **train) -> dict:
    """A training HATModel on CPU around the tiny HAT, with ``train`` switches on top of a short Adam recipe."""
    return dict(
        name='switches', model_type='HATModel', scale=2, num_gpu=0, dist=dist, rank=0, world_size=1, is_train=True,
        network_g=dict(type='HAT', **TINY_CONFIG, drop_path_rate=0.0),  # no stochastic depth: deterministic
        datasets=dict(train=dict(batch_size_per_gpu=batch)),
        path={'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
              'training_states': str(tmp_path)},
        train=dict(dict(ema_decay=0.999, optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.99]),
                        scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                        pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')), **train),
    )


def build(tmp_path, **kwargs) -> HATModel:
    torch.manual_seed(0)  # the same initial weights for every model
    return HATModel(options(tmp_path, **kwargs))


@cache
def photo_batch() -> dict:
    """Eight 32x32 HR crops of two photos and their bicubic LR."""
    photos = [to_tensor(sample_photo(name)) for name in ('astronaut', 'coffee')]
    gt = torch.cat([photo[..., 60 + 37 * i:92 + 37 * i, 100 + 23 * i:132 + 23 * i] for photo in photos
                    for i in range(4)])
    lq = F.interpolate(gt, scale_factor=0.5, mode='bicubic', antialias=True).clamp(0, 1)
    return {'lq': lq, 'gt': gt}


@pytest.fixture
def batch() -> dict:
    return photo_batch()


def forward_batch_sizes(model: HATModel) -> list[int]:
    """Record the batch size of every forward of the (bare) generator."""
    sizes: list[int] = []
    model.get_bare_model(model.net_g).register_forward_hook(lambda module, args, output: sizes.append(len(args[0])))
    return sizes


def train_steps(model: HATModel, batch: dict, steps: int = 2) -> None:
    for step in range(1, steps + 1):
        model.feed_data(batch)
        model.optimize_parameters(step)


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def gradient(model: HATModel) -> torch.Tensor:
    """The generator's gradient left by the last step (unscaled: GradScaler.step unscales it in place)."""
    return torch.cat([p.grad.flatten() for p in model.net_g.parameters()])


def in_float64(batch: dict, *models: HATModel) -> dict:
    """Put ``models`` (generator and EMA) and ``batch`` in float64, for comparing two ways of summing the same
    gradient: they then differ by float64 rounding, not by float32's, which Adam's first steps (about lr times the
    gradient's sign) amplify for parameters with gradients near zero, close to any fixed float32 bound."""
    for model in models:
        model.net_g.double()
        model.net_g_ema.double()
    return {key: value.double() for key, value in batch.items()}


def test_one_step_of_batch_8_and_two_accumulated_micro_batches_of_4_give_the_same_weights(tmp_path, batch):
    whole, accumulated = build(tmp_path), build(tmp_path, accum_iter=2)
    batch = in_float64(batch, whole, accumulated)
    sizes = forward_batch_sizes(accumulated)
    train_steps(whole, batch)
    train_steps(accumulated, batch)
    assert sizes == [4, 4, 4, 4]  # two optimizer steps of two micro-batches each
    assert accumulated.output.shape == batch['gt'].shape
    assert max_difference(whole.net_g, build(tmp_path).net_g) > 1e-4  # the weights did move...
    assert max_difference(whole.net_g, accumulated.net_g) < 1e-12  # ... and the same way (float64 rounding: 1e-15)
    assert max_difference(whole.net_g_ema, accumulated.net_g_ema) < 1e-12
    assert whole.log_dict['l_pix'] == pytest.approx(accumulated.log_dict['l_pix'], rel=1e-12)


@pytest.mark.parametrize('amp_dtype,tolerance', [('bf16', 1e-2), ('fp16', 2e-3)])
def test_accumulation_under_amp_gives_the_gradient_of_one_batch(tmp_path, batch, amp_dtype, tolerance):
    """Adam's first step is about lr * sign(gradient), so half-precision noise is compared on the gradient."""
    amp = dict(use_amp=True, amp_dtype=amp_dtype)
    whole, accumulated = build(tmp_path, **amp), build(tmp_path, accum_iter=2, **amp)
    sizes = forward_batch_sizes(accumulated)
    train_steps(whole, batch, steps=1)
    train_steps(accumulated, batch, steps=1)
    assert sizes == [4, 4]
    error = (gradient(whole) - gradient(accumulated)).norm() / gradient(whole).norm()
    assert error < tolerance  # summing the micro-batches unweighted, or dropping one, gives 0.5 or more
    assert whole.log_dict['l_pix'] == pytest.approx(accumulated.log_dict['l_pix'], rel=1e-2)


def test_uneven_micro_batches_are_weighted_by_their_size(tmp_path, batch):
    whole, accumulated = build(tmp_path, batch=8), build(tmp_path, batch=8, accum_iter=3)  # 3 + 3 + 2 images
    batch = in_float64(batch, whole, accumulated)
    sizes = forward_batch_sizes(accumulated)
    train_steps(whole, batch, steps=1)
    train_steps(accumulated, batch, steps=1)
    assert sizes == [3, 3, 2]
    assert max_difference(whole.net_g, accumulated.net_g) < 1e-12


def test_resume_after_a_kill_during_accumulation_continues_from_a_clean_step(tmp_path, batch):
    reference = build(tmp_path, accum_iter=2)
    train_steps(reference, batch, steps=2)

    first = build(tmp_path, accum_iter=2)
    train_steps(first, batch, steps=1)
    first.save(epoch=0, current_iter=1)
    sizes = forward_batch_sizes(first)

    def kill_in_second_micro_batch(*args):
        if len(sizes) == 1:  # the first micro-batch has run
            raise KeyboardInterrupt('killed')

    first.get_bare_model(first.net_g).register_forward_pre_hook(kill_in_second_micro_batch)
    first.feed_data(batch)
    with pytest.raises(KeyboardInterrupt):  # the second optimizer step dies between its micro-batches
        first.optimize_parameters(2)
    assert sizes == [4]

    resumed = HATModel(options(tmp_path, accum_iter=2) | {
        'path': {**options(tmp_path)['path'], 'pretrain_network_g': str(tmp_path / 'net_g_1.pth')}})
    resumed.resume_training(torch.load(tmp_path / '1.state', weights_only=True))
    resumed.feed_data(batch)
    resumed.optimize_parameters(2)
    assert max_difference(resumed.net_g, reference.net_g) < 1e-6


@pytest.mark.parametrize('amp', [{}, dict(use_amp=True, amp_dtype='fp16')])
def test_gradient_clipping_logs_the_norm_before_clipping(tmp_path, batch, amp):
    free = build(tmp_path)
    train_steps(free, batch, steps=1)
    norm = gradient(free).norm().item()
    assert 'grad_norm' not in free.log_dict

    clipped = build(tmp_path, grad_clip=norm / 10, **amp)
    train_steps(clipped, batch, steps=1)
    assert clipped.log_dict['grad_norm'] == pytest.approx(norm, rel=1e-2 if amp else 1e-5)
    assert gradient(clipped).norm().item() == pytest.approx(norm / 10, rel=1e-3)


def test_ema_warm_up_follows_the_network_in_short_runs(tmp_path, batch):
    switches = TrainSwitches.from_options(options(tmp_path, ema_power=0.75))
    assert switches.ema_decay_at(0.999, 0) == 0  # the EMA starts as a copy of the network
    assert switches.ema_decay_at(0.999, 10) == pytest.approx(1 - 11 ** -0.75)
    assert switches.ema_decay_at(0.999, 20000) == 0.999
    assert TrainSwitches().ema_decay_at(0.999, 10) == 0.999

    share = {}
    for power in (None, 0.75):
        model = build(tmp_path, **({'ema_power': power} if power else {}))
        initial = copy.deepcopy(model.net_g)
        train_steps(model, batch, steps=5)
        share[power] = max_difference(model.net_g_ema, initial) / max_difference(model.net_g, initial)
    assert share[None] < 0.02  # decay 0.999: after 5 steps the EMA is still the initial network
    assert share[0.75] > 0.5


@pytest.mark.parametrize('train,message', [
    (dict(accum_iter=0), 'accum_iter must be a whole number >= 1'),
    (dict(accum_iter=2.5), 'accum_iter must be a whole number >= 1'),
    (dict(accum_iter='4'), 'accum_iter must be a whole number >= 1'),
    (dict(accum_iter=16), 'more than batch_size_per_gpu 8'),
    (dict(grad_clip=-1.0), 'grad_clip must be a positive number'),
    (dict(grad_clip=0), 'grad_clip must be a positive number'),
    (dict(grad_clip='1.0'), 'grad_clip must be a positive number'),
    (dict(ema_power=-0.5), 'ema_power must be a positive number'),
    (dict(ema_power=0.75, ema_decay=0), 'ema_decay is 0'),
    (dict(use_amp='yes'), 'use_amp must be true or false'),
    (dict(use_amp=True, amp_dtype='int8'), "amp_dtype 'int8' is not supported"),
])
def test_bad_switches_are_refused_naming_the_option(tmp_path, train, message):
    with pytest.raises(ProblemsError) as refused:
        TrainSwitches.from_options(options(tmp_path, **train))
    (problem,) = refused.value.problems
    assert problem.key == 'train' and re.search(message, problem.text), problem
    with pytest.raises(ValueError, match=message):
        HATModel(options(tmp_path, **train))


def test_every_bad_switch_is_reported_at_once(tmp_path):
    with pytest.raises(ProblemsError) as refused:
        TrainSwitches.from_options(options(tmp_path, accum_iter=0, grad_clip=-1.0, use_amp='yes', amp_dtype='int8'))
    assert [p.text.split()[0] for p in refused.value.problems] == ['use_amp', 'amp_dtype', 'accum_iter', 'grad_clip']
    assert TrainSwitches.from_options(options(tmp_path, accum_iter=2, grad_clip=1.0, use_amp=True)).accum_iter == 2
