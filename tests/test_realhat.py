"""Real-HAT: Real-ESRGAN degradations on the model's device, the pair pool, and both training stages end to end."""
from __future__ import annotations

import copy
import random
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from hat.scripts import make_lmdb, make_meta_info
from tests.conftest import REPO_ROOT, TINY_CONFIG, sample_photo, to_tensor

MSE_YML = REPO_ROOT / 'options/train/train_Real_HAT_SRx4_mse_model.yml'
GAN_YML = REPO_ROOT / 'options/train/train_Real_HAT_GAN_SRx4_finetune_from_mse_model.yml'
TEST_YML = REPO_ROOT / 'options/test/HAT_GAN_Real_SRx4.yml'
HR_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket')
#: Real low-resolution inputs for validation/testing, with sizes that are not window multiples.
LR_PHOTOS = {'camera': (44, 60), 'coffee': (50, 75)}
GT_SIZE, BATCH, ITERS = 64, 2, 3  # the pair pool (2 batches) is full from iteration 3 on
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def write_png(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope='module')
def photos(tmp_path_factory) -> dict:
    """HR sample photos with a meta_info file, and small real LR photos without any ground truth."""
    root = tmp_path_factory.mktemp('realhat_data')
    hr, lr = root / 'hr', root / 'lr'
    hr.mkdir()
    lr.mkdir()
    for name in HR_PHOTOS:
        write_png(hr / f'{name}.png', sample_photo(name))
    make_meta_info.main(['--input', str(hr), '--meta-info', str(root / 'meta_info.txt')])
    for name, (h, w) in LR_PHOTOS.items():
        write_png(lr / f'{name}.png', cv2.resize(sample_photo(name), (w, h), interpolation=cv2.INTER_AREA))
    return {'hr': str(hr), 'meta_info': str(root / 'meta_info.txt'), 'lr': str(lr)}


def tiny(published: Path, photos: dict, gt_size: int = GT_SIZE) -> dict:
    """A published Real-HAT recipe, unchanged but for a tiny HAT, tiny crops, a few iterations and CPU."""
    opt = yaml.safe_load(published.read_text())
    opt.update(num_gpu=0, gt_size=gt_size, queue_size=2 * BATCH)
    opt['network_g'] = dict(TINY_CONFIG, type='HAT', upscale=4)
    if 'network_d' in opt:
        opt['network_d']['num_feat'] = 8
    train = opt['datasets']['train']
    train.update(dataroot_gt=photos['hr'], meta_info=photos['meta_info'], gt_size=gt_size, batch_size_per_gpu=BATCH,
                 num_worker_per_gpu=0)
    opt['datasets']['val'] = {'name': 'real_lr', 'type': 'SingleImageDataset', 'dataroot_lq': photos['lr'],
                              'io_backend': {'type': 'disk'}}
    opt['val'] = {'val_freq': ITERS, 'save_img': True}
    opt['tile'] = {'tile_size': 24, 'tile_pad': 8}
    opt['train'].update(total_iter=ITERS)
    opt['train']['scheduler']['milestones'] = [ITERS]
    if 'perceptual_opt' in opt['train']:
        opt['train']['perceptual_opt'].update(vgg_weights_path=None, vgg_random_init=True)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=ITERS, use_tb_logger=False)
    return opt


def as_parsed(opt: dict, root: Path) -> dict:
    """What BasicSR's option parser adds for a single-process training run rooted at ``root``."""
    opt = copy.deepcopy(opt)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    for phase, ds in opt['datasets'].items():
        ds.update(phase=phase.split('_')[0], scale=opt['scale'])
    experiments = root / 'experiments' / opt['name']
    opt['path'].update(experiments_root=str(experiments), models=str(experiments / 'models'), log=str(experiments),
                       training_states=str(experiments / 'training_states'),
                       visualization=str(experiments / 'visualization'))
    return opt


def build(opt: dict, root: Path):
    from basicsr.models import build_model

    return build_model(as_parsed(opt, root))


def first_batch(opt: dict) -> dict:
    from basicsr.data import build_dataset

    dataset = build_dataset(as_parsed(opt, Path('.'))['datasets']['train'])
    return next(iter(torch.utils.data.DataLoader(dataset, batch_size=BATCH)))


def reseed(seed: int = 0) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * np.log10(1 / (a - b).square().mean().item())


def high_frequency_energy(images: torch.Tensor) -> float:
    laplacian = torch.tensor([[0., 1., 0.], [1., -4., 1.], [0., 1., 0.]]).expand(3, 1, 3, 3)
    return F.conv2d(images, laplacian.to(images), groups=3).square().mean().item()


@pytest.fixture(scope='module')
def mse_opt(photos) -> dict:
    return tiny(MSE_YML, photos)


@pytest.fixture(scope='module')
def batch(mse_opt) -> dict:
    reseed()
    return first_batch(mse_opt)


def test_simulated_jpeg_can_be_blurred_next():
    from basicsr.utils.img_process_util import filter2D

    from hat.models.realhat_model import ContiguousDiffJPEG

    photo = to_tensor(sample_photo('astronaut')[:64, :64]).repeat(2, 1, 1, 1)
    jpeg = ContiguousDiffJPEG(differentiable=False)(photo, quality=torch.tensor([30.0, 95.0]))
    assert jpeg.is_contiguous()
    assert psnr(jpeg[0], photo[0]) < psnr(jpeg[1], photo[1])  # quality 30 loses more than 95
    assert filter2D(jpeg, torch.full((2, 5, 5), 1 / 25)).shape == photo.shape


def test_degraded_lr_has_the_right_size_on_the_model_device_and_is_not_bicubic(mse_opt, batch, tmp_path):
    model = build(mse_opt, tmp_path)
    reseed()
    model.feed_data(batch)
    assert model.gt.shape == (BATCH, 3, GT_SIZE, GT_SIZE)
    assert model.lq.shape == (BATCH, 3, GT_SIZE // 4, GT_SIZE // 4)
    assert model.lq.device.type == model.gt.device.type == model.queue_lr.device.type == 'cpu'
    tools = [*model.jpeger.parameters(), *model.usm_sharpener.buffers()]
    assert {tensor.device.type for tensor in tools} == {'cpu'}
    assert model.lq.min() >= 0 and model.lq.max() <= 1
    assert torch.equal(model.lq * 255, (model.lq * 255).round())  # quantized like an 8-bit image
    bicubic = F.interpolate(model.gt, scale_factor=0.25, mode='bicubic', antialias=True).clamp(0, 1)
    area = F.interpolate(model.gt, scale_factor=0.25, mode='area')
    assert psnr(area, bicubic) > 35  # two clean downsamplers agree ...
    assert psnr(model.lq, bicubic) < 30  # ... the blur/noise/JPEG/sinc degradations do not


def test_pair_pool_fills_then_returns_earlier_pairs(mse_opt, batch, tmp_path):
    model = build({**mse_opt, 'gt_usm': False}, tmp_path)  # sharpening is tested below; it costs 1-2 s a batch
    reseed()
    for filled in (BATCH, 2 * BATCH):
        model.feed_data(batch)
        assert model.queue_ptr == filled
    pool_before = model.queue_lr.clone()
    model.feed_data(batch)  # the pool is full: this batch goes in, earlier pairs come out
    from_pool = [any(torch.equal(lq, old) for old in pool_before) for lq in model.lq]
    new_in_pool = [not any(torch.equal(lq, old) for old in pool_before) for lq in model.queue_lr]
    assert all(from_pool)
    assert sum(new_in_pool) == BATCH


def test_usm_sharpening_of_the_ground_truth_is_an_option(mse_opt, batch, tmp_path):
    gts = {}
    for usm in (False, True):
        model = build({**mse_opt, 'gt_usm': usm}, tmp_path)
        reseed()  # same kernels, resizes, noise and crop position for both
        model.feed_data(batch)
        gts[usm] = model.gt
    assert not torch.equal(gts[True], gts[False])
    assert high_frequency_energy(gts[True]) > 1.2 * high_frequency_energy(gts[False])


def test_validation_without_ground_truth_forgets_the_training_gt(mse_opt, batch, photos, tmp_path):
    model = build({**mse_opt, 'gt_usm': False}, tmp_path)
    model.feed_data(batch)
    model.is_train = False
    lq = torch.rand(1, 3, 20, 28)
    model.feed_data({'lq': lq, 'lq_path': [str(Path(photos['lr']) / 'camera.png')]})
    model.test()
    assert not hasattr(model, 'gt') and not hasattr(model, 'gt_usm')
    assert model.output.shape == (1, 3, 80, 112)
    assert 'gt' not in model.get_current_visuals()


def test_missing_degradation_option_and_bad_queue_size_are_named(mse_opt, batch, tmp_path):
    opt = {key: value for key, value in mse_opt.items() if key not in ('jpeg_range2', 'gt_usm')}
    with pytest.raises(ValueError, match='jpeg_range2, gt_usm'):
        build(opt, tmp_path)
    model = build({**mse_opt, 'queue_size': 2 * BATCH + 1, 'gt_usm': False}, tmp_path)
    with pytest.raises(ValueError, match=f'queue_size {2 * BATCH + 1} must be a multiple of the batch size {BATCH}'):
        model.feed_data(batch)


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_sub_images_from_the_data_scripts_feed_the_degradation_pipeline(mse_opt, tmp_path, backend):
    make_lmdb.main(['--input', str(Path(mse_opt['datasets']['train']['dataroot_gt'])), '--output', str(tmp_path),
                    '--name', 'DFO', '--scale', '--crop-size', '400', '--step', '200', '--workers', '1'] +
                   ([] if backend == 'lmdb' else ['--no-lmdb']))
    sub = tmp_path / 'DFO_HR_sub'
    opt = copy.deepcopy({**mse_opt, 'gt_usm': False})
    train = opt['datasets']['train']
    if backend == 'lmdb':
        train.update(dataroot_gt=f'{sub}.lmdb', io_backend={'type': 'lmdb'})
        del train['meta_info']  # the LMDB's own meta_info.txt lists its keys
    else:
        make_meta_info.main(['--input', str(sub), '--meta-info', str(tmp_path / 'meta_info_DFOsub_GT.txt')])
        train.update(dataroot_gt=str(sub), meta_info=str(tmp_path / 'meta_info_DFOsub_GT.txt'))
    sub_images = sorted(p.stem for p in sub.glob('*.png'))
    reseed()
    batch = first_batch(opt)
    assert sorted(Path(p).stem for p in batch['gt_path']) == sub_images[:BATCH]
    model = build(opt, tmp_path)
    model.feed_data(batch)
    assert model.lq.shape == (BATCH, 3, GT_SIZE // 4, GT_SIZE // 4)


# ------------------------------------------------ both stages end to end -------------------------------------------


def run_entry_point(script: str, opt: dict, root: Path) -> subprocess.CompletedProcess:
    """``hat/train.py`` or ``hat/test.py``'s main() in a subprocess, with experiments/ and results/ under ``root``."""
    yml = root / f'{opt["name"]}.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    code = f'from hat.{script} import main; main({str(root)!r})'
    result = subprocess.run([sys.executable, '-c', code, '-opt', str(yml)], cwd=root, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def logged_losses(experiment: Path) -> dict[str, list[float]]:
    """Every loss value printed in the experiment's training log, by name."""
    (log,) = experiment.glob('train_*.log')
    losses: dict[str, list[float]] = {}
    for name, value in re.findall(r'\b(l_[a-z_]+): (\S+)', log.read_text()):
        losses.setdefault(name, []).append(float(value))
    return losses


def assert_checkpoints(experiment: Path, labels: tuple[str, ...]) -> None:
    for label in labels:
        for tag in (ITERS, 'latest'):
            state = torch.load(experiment / 'models' / f'{label}_{tag}.pth', map_location='cpu', weights_only=True)
            assert all(torch.isfinite(v).all() for v in state['params'].values())
    assert torch.load(experiment / 'training_states' / f'{ITERS}.state', weights_only=True)['iter'] == ITERS


def assert_validation_images(experiment: Path) -> None:
    for name, (h, w) in LR_PHOTOS.items():
        image = cv2.imread(str(experiment / 'visualization' / name / f'{name}_{ITERS}.png'))
        assert image.shape == (4 * h, 4 * w, 3)


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> Path:
    """Root of the two stages' experiments (stage 1 runs in the first test that needs it)."""
    return tmp_path_factory.mktemp('realhat_runs')


@pytest.fixture(scope='module')
def mse_run(mse_opt, runs) -> Path:
    run_entry_point('train', mse_opt, runs)
    return runs / 'experiments' / mse_opt['name']


@pytest.fixture(scope='module')
def gan_run(photos, runs, mse_run) -> Path:
    opt = tiny(GAN_YML, photos, gt_size=32)  # VGG19 and the discriminator dominate: keep their input small
    run_entry_point('train', opt, runs)  # pretrain_network_g: stage 1's net_g_latest.pth, relative to ``runs``
    return runs / 'experiments' / opt['name']


@pytest.mark.slow
def test_mse_stage_trains_writes_checkpoints_and_saves_validation_images(mse_run):
    losses = logged_losses(mse_run)
    assert len(losses['l_pix']) == ITERS and np.isfinite(losses['l_pix']).all()
    assert_checkpoints(mse_run, ('net_g',))
    assert_validation_images(mse_run)


@pytest.mark.slow
def test_gan_stage_starts_from_the_mse_stage_weights(photos, mse_run, runs, monkeypatch):
    monkeypatch.chdir(runs)  # the recipe names stage 1's weights relative to the working directory
    model = build(tiny(GAN_YML, photos), runs / 'in_process')
    saved = torch.load(mse_run / 'models' / 'net_g_latest.pth', map_location='cpu', weights_only=True)['params_ema']
    for net in (model.net_g, model.net_g_ema):
        state = net.state_dict()
        assert state.keys() == saved.keys()
        assert all(torch.equal(state[key], saved[key]) for key in saved)


@pytest.mark.slow
def test_gan_stage_losses_are_finite_and_checkpoints_written(gan_run):
    losses = logged_losses(gan_run)
    for name in ('l_g_pix', 'l_g_percep', 'l_g_gan', 'l_d_real', 'l_d_fake'):
        assert len(losses[name]) == ITERS and np.isfinite(losses[name]).all(), name
    assert_checkpoints(gan_run, ('net_g', 'net_d'))
    assert_validation_images(gan_run)


@pytest.mark.slow
def test_real_world_test_config_saves_images_without_ground_truth(photos, gan_run, runs):
    opt = yaml.safe_load(TEST_YML.read_text())
    opt.update(num_gpu=0, tile={'tile_size': 24, 'tile_pad': 8}, network_g=dict(TINY_CONFIG, type='HAT', upscale=4))
    opt['datasets']['test_1']['dataroot_lq'] = photos['lr']
    opt['path']['pretrain_network_g'] = str(gan_run / 'models' / 'net_g_latest.pth')
    run_entry_point('test', opt, runs)
    folder = runs / 'results' / opt['name'] / 'visualization' / opt['datasets']['test_1']['name']
    for name, (h, w) in LR_PHOTOS.items():
        image = cv2.imread(str(folder / f'{name}_{opt["name"]}.png'))
        assert image.shape == (4 * h, 4 * w, 3)


# ------------------------------------------------------ CUDA -------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
def test_degradations_pool_and_gan_step_run_on_the_gpu(photos, batch, tmp_path):
    opt = tiny(GAN_YML, photos)
    opt.update(num_gpu=1)
    model = build(opt, tmp_path)
    reseed()
    for step in range(1, 4):
        model.feed_data(batch)
        assert model.lq.is_cuda and model.gt.is_cuda and model.gt_usm.is_cuda
        assert model.queue_lr.is_cuda and model.queue_gt.is_cuda
        assert all(tensor.is_cuda for tensor in (*model.jpeger.parameters(), *model.usm_sharpener.buffers()))
        model.optimize_parameters(step)
        assert all(np.isfinite(value) for value in model.log_dict.values())
    assert model.lq.shape == (BATCH, 3, GT_SIZE // 4, GT_SIZE // 4)


# ---------------------------------------------- GAN step and switches ----------------------------------------------


def gan_model(photos: dict, root: Path, **train):
    """The GAN recipe on a tiny HAT from scratch, with ``train`` switches on top, built with fixed initial weights."""
    opt = tiny(GAN_YML, photos, gt_size=32)
    opt['path']['pretrain_network_g'] = None
    opt['network_g']['drop_path_rate'] = 0.0  # no stochastic depth: the steps compared are deterministic
    opt['train'].update(train)
    reseed()
    return build(opt, root)


def set_pairs(model, gt_size: int = 32) -> None:
    """Real photo crops as the step's GT (sharpened and not) and their bicubic LR, without the degradation pipeline."""
    from basicsr.utils import USMSharp

    gt = torch.cat([to_tensor(sample_photo(name)[100:100 + gt_size, 150:150 + gt_size]) for name in HR_PHOTOS[:BATCH]])
    model.gt, model.gt_usm = gt, USMSharp()(gt)
    model.lq = F.interpolate(gt, scale_factor=0.25, mode='bicubic', antialias=True).clamp(0, 1)


@pytest.mark.parametrize('extra', [{}, dict(ldl_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'))],
                         ids=['recipe', 'with_basicsr_ldl_loss'])
def test_gan_step_with_accumulation_trains_like_basicsr_step_on_the_whole_batch(photos, tmp_path, extra):
    from basicsr.models.realesrgan_model import RealESRGANModel

    ours, theirs = gan_model(photos, tmp_path, accum_iter=BATCH, **extra), gan_model(photos, tmp_path, **extra)
    for model in (ours, theirs):  # LDL's map keeps pixels where the EMA's error is the larger: make the EMA differ
        torch.manual_seed(1)  # from the network, or float noise would decide for every pixel
        for p in model.net_g_ema.parameters():
            p.data.add_(torch.randn_like(p), alpha=0.01)
    for model in (ours, theirs):  # spectral norm's power iteration runs once per D forward (more when accumulating)
        model.net_d.eval()  # but not in eval mode, the only thing eval changes in this discriminator
    sizes = []
    ours.net_g.register_forward_hook(lambda module, args, output: sizes.append(len(args[0])))
    for step in (1, 2):
        for model in (ours, theirs):
            set_pairs(model)
        ours.optimize_parameters(step)
        RealESRGANModel.optimize_parameters(theirs, step)
        assert ours.log_dict.keys() == theirs.log_dict.keys()
        assert ours.log_dict == pytest.approx(theirs.log_dict, rel=1e-4)
        for name in ('net_g', 'net_d'):  # gradients, not weights: Adam's first steps are lr * sign(gradient)
            ours_grad, theirs_grad = (torch.cat([p.grad.flatten() for p in getattr(model, name).parameters()])
                                      for model in (ours, theirs))
            assert (ours_grad - theirs_grad).norm() < 1e-4 * theirs_grad.norm(), name
    assert sizes == [1] * 2 * BATCH  # two steps of BATCH micro-batches of one image


def test_gan_trains_with_amp_accumulation_and_clipping(photos, tmp_path):
    model = gan_model(photos, tmp_path, use_amp=True, amp_dtype='bf16', accum_iter=BATCH, grad_clip=1.0)
    assert model.use_amp
    seen = {'g': [], 'd': []}
    for key, net in (('g', model.net_g.layers[0].residual_group.blocks[0].mlp.fc1), ('d', model.net_d.conv0)):
        net.register_forward_hook(lambda module, args, out, key=key: seen[key].append((len(args[0]), out.dtype)))
    before = {name: copy.deepcopy(getattr(model, name).state_dict()) for name in ('net_g', 'net_d')}
    for step in (1, 2):
        set_pairs(model)
        model.optimize_parameters(step)
        assert all(np.isfinite(value) for value in model.log_dict.values())
    assert set(seen['g']) == {(1, torch.bfloat16)}  # micro-batches of one image, in bfloat16
    assert set(seen['d']) == {(1, torch.bfloat16)}
    assert len(seen['g']) == 2 * BATCH and len(seen['d']) == 3 * 2 * BATCH  # D: G's loss, real, fake
    assert {'grad_norm_g', 'grad_norm_d', 'l_g_gan', 'l_d_real'} <= model.log_dict.keys()
    for name, state in before.items():
        after = getattr(model, name).state_dict()
        assert all(after[key].dtype == value.dtype for key, value in state.items())
        assert any(not torch.equal(after[key], value) for key, value in state.items()), name
