"""Option files written the way the original HAT release writes them, on tiny local data.

Key names, order, values and relative paths follow the original's ``options/test/*.yml`` and
``options/train/train_*.yml``; only ``network_g`` is a tiny HAT (so the tests run in seconds),
and :func:`make_original_layout` creates the ``datasets/`` and
``experiments/pretrained_models/`` folders those relative paths expect under a temp root.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from hat import HAT

#: The original's 15 test files: stem -> (name, scale, kind). Kinds: ``paired`` (Set5 ... Manga109 with
#: PSNR/SSIM), ``tile`` (paired, tile 256/32), ``lr_only`` (SingleImageDataset), ``real`` (tile 512/32, no val).
ORIGINAL_TEST_FILES = {
    **{f'{f}_SRx{s}': (f'{f}_SRx{s}', s, 'paired') for f in ('HAT-S', 'HAT') for s in (2, 3, 4)},
    **{f'{f}_SRx{s}_ImageNet-pretrain': (f'{f}_SRx{s}_ImageNet-pretrain', s, 'paired')
       for f in ('HAT', 'HAT-L') for s in (2, 3, 4)},
    'HAT_SRx4_ImageNet-LR': ('HAT_SRx4_ImageNet-LR', 4, 'lr_only'),
    'HAT_GAN_Real_SRx4': ('HAT_GAN_Real_SRx4', 4, 'real'),
    'HAT_tile_example': ('HAT_SRx4_ImageNet-pretrain', 4, 'tile'),
}

#: The original's checkpoint file for each test file.
CHECKPOINT_OF = {stem: ('HAT_SRx4_ImageNet-pretrain' if stem in ('HAT_SRx4_ImageNet-LR', 'HAT_tile_example') else
                        'Real_HAT_GAN_SRx4' if stem == 'HAT_GAN_Real_SRx4' else stem) for stem in ORIGINAL_TEST_FILES}

#: The original's benchmark folders (``datasets/<folder>/GTmod<s>``, ``LRbicx<s>``) by dataset name.
BENCHMARKS = {'Set5': 'Set5', 'Set14': 'Set14', 'Urban100': 'urban100', 'BSDS100': 'BSDS100', 'Manga109': 'manga109'}

TINY_NETWORK_G = """network_g:
  type: HAT
  upscale: {scale}
  in_chans: 3
  img_size: 64
  window_size: 8
  compress_ratio: 3
  squeeze_factor: 6
  conv_scale: 0.01
  overlap_ratio: 0.5
  img_range: 1.
  depths: [2, 2]
  embed_dim: 24
  num_heads: [3, 3]
  mlp_ratio: 2
  upsampler: 'pixelshuffle'
  resi_connection: '1conv'
"""


def tiny_hat(scale: int) -> HAT:
    return HAT(in_chans=3, img_size=64, window_size=8, compress_ratio=3, squeeze_factor=6, conv_scale=0.01,
               overlap_ratio=0.5, img_range=1., depths=[2, 2], embed_dim=24, num_heads=[3, 3], mlp_ratio=2,
               upsampler='pixelshuffle', resi_connection='1conv', upscale=scale)


def save_weights(scale: int, path: Path) -> Path:
    """A tiny HAT's weights in BasicSR's layout (``params`` and ``params_ema``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(scale)
    state = tiny_hat(scale).state_dict()
    torch.save({'params': state, 'params_ema': state}, path)
    return path


def _photo(size: int) -> np.ndarray:
    from skimage import data

    image = data.astronaut()
    return np.ascontiguousarray(image[100:100 + size, 150:150 + size, ::-1])


def make_original_layout(root: Path) -> None:
    """``datasets/`` (one 48x48 HR photo and its LR per benchmark and scale, ``input_dir/``) and the
    original test files' ``experiments/pretrained_models/*.pth`` (tiny HATs), under ``root``."""
    hr = _photo(48)
    for folder in BENCHMARKS.values():
        for scale in (2, 3, 4):
            for sub, image in ((f'GTmod{scale}', hr), (f'LRbicx{scale}', cv2.resize(
                    hr, (48 // scale, 48 // scale), interpolation=cv2.INTER_AREA))):
                (root / 'datasets' / folder / sub).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / 'datasets' / folder / sub / 'baboon.png'), image)
    (root / 'input_dir').mkdir(exist_ok=True)
    cv2.imwrite(str(root / 'input_dir' / 'photo.png'), _photo(24))
    for stem, (_, scale, _) in ORIGINAL_TEST_FILES.items():
        save_weights(scale, root / 'experiments' / 'pretrained_models' / f'{CHECKPOINT_OF[stem]}.pth')


def _paired(index: int, name: str, scale: int) -> str:
    folder = BENCHMARKS[name]
    return (f'  test_{index}:\n    name: {name}\n    type: PairedImageDataset\n'
            f'    dataroot_gt: ./datasets/{folder}/GTmod{scale}\n    dataroot_lq: ./datasets/{folder}/LRbicx{scale}\n'
            '    io_backend:\n      type: disk\n\n')


def original_test_yaml(stem: str, num_gpu: str = '1') -> str:
    """The original's ``options/test/<stem>.yml`` with a tiny ``network_g`` (and ``num_gpu`` as given)."""
    name, scale, kind = ORIGINAL_TEST_FILES[stem]
    text = f'name: {name}\nmodel_type: HATModel\nscale: {scale}\nnum_gpu: {num_gpu}  # set num_gpu: 0 for cpu mode\n'
    text += 'manual_seed: 0\n\n'
    if kind in ('tile', 'real'):
        text += f'tile: # use the tile mode for limited GPU memory when testing.\n  tile_size: ' \
                f'{256 if kind == "tile" else 512}\n  tile_pad: 32\n\n'
    text += 'datasets:\n'
    if kind in ('lr_only', 'real'):
        text += ('  test_1:  # the 1st test dataset\n    name: custom\n    type: SingleImageDataset\n'
                 '    dataroot_lq: input_dir\n    io_backend:\n      type: disk\n\n')
    else:
        sets = ['Set5', 'Set14', 'Urban100', 'BSDS100', 'Manga109'] if stem.endswith(f'SRx{scale}') else ['Set5']
        sets = ['Set5', 'Urban100'] if kind == 'tile' or stem == 'HAT_SRx4' else sets
        text += ''.join(_paired(i + 1, n, scale) for i, n in enumerate(sets))
    text += '# network structures\n' + TINY_NETWORK_G.format(scale=scale) + '\n\n# path\npath:\n'
    text += (f'  pretrain_network_g: ./experiments/pretrained_models/{CHECKPOINT_OF[stem]}.pth\n'
             "  strict_load_g: true\n  param_key_g: 'params_ema'\n")
    if kind != 'real':
        text += ('\n# validation settings\nval:\n  save_img: true\n'
                 '  suffix: ~  # add suffix to saved images, if None, use exp name\n')
    if kind in ('paired', 'tile'):
        text += '\n  metrics:\n' + ''.join(
            f'    {m}:\n      type: calculate_{m}\n      crop_border: {scale}\n      test_y_channel: true\n'
            for m in ('psnr', 'ssim'))
    return text


def original_train_yaml(name: str, scale: int, pretrain: str = '~', strict: str = 'true', lr: str = '!!float 2e-4',
                        total_iter: str = '500000') -> str:
    """The original's ``options/train/train_HAT_SRx<s>_*.yml`` on the tiny benchmark folders, tiny ``network_g``."""
    return f"""# general settings
name: {name}
model_type: HATModel
scale: {scale}
num_gpu: auto
manual_seed: 0

# dataset and data loader settings
datasets:
  train:
    name: DF2K
    type: PairedImageDataset
    dataroot_gt: datasets/Set5/GTmod{scale}
    dataroot_lq: datasets/Set5/LRbicx{scale}
    io_backend:
      type: disk

    gt_size: {8 * scale}
    use_hflip: true
    use_rot: true

    # data loader
    use_shuffle: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 4
    dataset_enlarge_ratio: 4
    prefetch_mode: ~

  val_1:
    name: Set5
    type: PairedImageDataset
    dataroot_gt: ./datasets/Set5/GTmod{scale}
    dataroot_lq: ./datasets/Set5/LRbicx{scale}
    io_backend:
      type: disk

# network structures
{TINY_NETWORK_G.format(scale=scale)}
# path
path:
  pretrain_network_g: {pretrain}
  param_key_g: 'params_ema'
  strict_load_g: {strict}
  resume_state: ~

# training settings
train:
  ema_decay: 0.999
  optim_g:
    type: Adam
    lr: {lr}
    weight_decay: 0
    betas: [0.9, 0.99]

  scheduler:
    type: MultiStepLR
    milestones: [250000, 400000, 450000, 475000]
    gamma: 0.5

  total_iter: {total_iter}
  warmup_iter: -1  # no warm up

  # losses
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean

# validation settings
val:
  val_freq: !!float 5e3
  save_img: false
  pbar: False

  metrics:
    psnr:
      type: calculate_psnr
      crop_border: {scale}
      test_y_channel: true
      better: higher  # the higher, the better. Default: higher
    ssim:
      type: calculate_ssim
      crop_border: {scale}
      test_y_channel: true
      better: higher  # the higher, the better. Default: higher

# logging settings
logger:
  print_freq: 100
  save_checkpoint_freq: !!float 5e3
  use_tb_logger: true
  wandb:
    project: ~
    resume_id: ~

# dist training settings
dist_params:
  backend: nccl
  port: 29500
"""
