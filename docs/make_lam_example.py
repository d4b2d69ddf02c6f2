"""Make docs/analysis.md's worked example: a tiny HAT and a tiny SwinIR trained alike, compared with LAM.

Both are x2 networks of the same width, depth, heads and window (embed 24, 2 groups of 2 blocks,
3 heads, window 8), trained from the same seed on the same random 32x32 crops of the bundled
photos in ``demo/photos/train`` (LR made with PIL's bicubic, as LAM makes its inputs) with the
recipe of ``options/train/HAT-tiny_SRx2_demo.yml``: L1 loss, batch 16, Adam 2e-3 (betas 0.9,
0.99), learning rate x0.3 at 60 % and 80 % of the iterations. SwinIR comes from BasicSR's
registry through an option file, as a user's would. Then ``hat-lam`` compares them on the
held-out ``demo/photos/val/chelsea.png`` (LAM figure and per-group feature maps) and prints each
network's validation PSNR against bicubic.

    python docs/make_lam_example.py                      # writes into docs/images/lam_example/
    python docs/make_lam_example.py --iterations 200 --out /tmp/lam_example
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

import hat
from hat.analysis.cli import main as hat_lam
from hat.analysis.cli import rgb8
from hat.inference.image_io import read_image

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / 'demo' / 'photos'
SCALE, CROP, BATCH = 2, 32, 16
COMMON = dict(upscale=SCALE, in_chans=3, img_size=CROP // SCALE, window_size=8, img_range=1.0, depths=[2, 2],
              embed_dim=24, num_heads=[3, 3], mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')
HAT_OPTIONS = dict(type='HAT', compress_ratio=3, squeeze_factor=6, conv_scale=0.01, overlap_ratio=0.5, **COMMON)
SWINIR_OPTIONS = dict(type='SwinIR', **COMMON)
WINDOW_AT = ('92', '96')  # the rim of the cat's left eye in chelsea.png


def downscale(hr: np.ndarray) -> np.ndarray:
    """PIL's bicubic x``SCALE`` downscale of an HWC uint8 image."""
    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // SCALE, h // SCALE), Image.BICUBIC))


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """HWC uint8 images -> a float (b, 3, h, w) batch in [0, 1]."""
    return torch.from_numpy(np.stack(images).astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def crops(photos: list[np.ndarray], iterations: int, seed: int = 0):
    """The same sequence of (LR, HR) batches of random crops, flips and rotations for every network."""
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        pairs = []
        for _ in range(BATCH):
            photo = photos[rng.integers(len(photos))]
            top, left = rng.integers(photo.shape[0] - CROP + 1), rng.integers(photo.shape[1] - CROP + 1)
            hr = np.rot90(photo[top:top + CROP, left:left + CROP], k=int(rng.integers(4)))
            hr = np.ascontiguousarray(hr[:, ::-1] if rng.integers(2) else hr)
            pairs.append((downscale(hr), hr))
        yield to_batch([lr for lr, _ in pairs]), to_batch([hr for _, hr in pairs])


def build(options: dict) -> torch.nn.Module:
    """A network from BasicSR's registry (HAT registered by ``import hat``)."""
    import basicsr.archs  # noqa: F401
    from basicsr.utils.registry import ARCH_REGISTRY

    settings = dict(options)
    return ARCH_REGISTRY.get(settings.pop('type'))(**settings)


def train(options: dict, photos: list[np.ndarray], iterations: int) -> torch.nn.Module:
    """Train one network from seed 0 on the shared crops; prints the loss now and then."""
    torch.manual_seed(0)
    net = build(options).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3, betas=(0.9, 0.99))
    milestones = [int(iterations * 0.6), int(iterations * 0.8)]
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.3)
    start = time.perf_counter()
    for step, (lr, hr) in enumerate(crops(photos, iterations), 1):
        loss = F.l1_loss(net(lr), hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == iterations:
            print(f'{options["type"]}: iteration {step}, L1 {loss.item():.4f}, {time.perf_counter() - start:.0f} s',
                  flush=True)
    return net.eval()


def psnr_y(sr: np.ndarray, hr: np.ndarray) -> float:
    """PSNR on the BT.601 luma of two HWC uint8 images, 2 border pixels cut (x2)."""
    weights = np.array([65.481, 128.553, 24.966]) / 255.0
    y_sr, y_hr = (image.astype(np.float64) @ weights + 16.0 for image in (sr, hr))
    diff = (y_sr - y_hr)[SCALE:-SCALE, SCALE:-SCALE]
    return 10 * np.log10(255.0 ** 2 / np.mean(diff ** 2))


def validate(nets: dict[str, torch.nn.Module]) -> None:
    """Print each network's PSNR-Y on the held-out photos next to bicubic's."""
    for path in sorted((PHOTOS / 'val').glob('*.png')):
        hr = rgb8(read_image(path))
        lr = downscale(hr)
        bicubic = np.asarray(Image.fromarray(lr).resize(hr.shape[1::-1], Image.BICUBIC))
        scores = [f'bicubic {psnr_y(bicubic, hr):.2f}']
        for name, net in nets.items():
            with torch.no_grad():
                sr = net(to_batch([lr]))[0].clamp(0, 1).permute(1, 2, 0).numpy()
            scores.append(f'{name} {psnr_y(np.rint(sr * 255).astype(np.uint8), hr):.2f}')
        print(f'{path.name}: PSNR-Y ' + ', '.join(scores) + ' dB')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iterations', type=int, default=1000)
    parser.add_argument('--fold', default='50')
    parser.add_argument('--out', default=str(ROOT / 'docs' / 'images' / 'lam_example'))
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photos = [rgb8(read_image(path)) for path in sorted((PHOTOS / 'train').glob('*.png'))]
    nets = {'HAT': train(HAT_OPTIONS, photos, args.iterations),
            'SwinIR': train(SWINIR_OPTIONS, photos, args.iterations)}
    validate(nets)
    with tempfile.TemporaryDirectory() as folder:
        hat_file = Path(folder) / 'hat_tiny_x2.pth'
        hat.save_weights(hat_file, nets['HAT'].state_dict())
        swinir_file = Path(folder) / 'swinir_tiny_x2.yml'
        torch.save({'params': nets['SwinIR'].state_dict()}, Path(folder) / 'swinir_tiny_x2.pth')
        swinir_file.write_text(yaml.safe_dump({'network_g': SWINIR_OPTIONS,
                                               'path': {'pretrain_network_g': 'swinir_tiny_x2.pth'}}))
        models = ['-m', f'HAT={hat_file}', '-m', f'SwinIR={swinir_file}']
        image = str(PHOTOS / 'val' / 'chelsea.png')
        status = hat_lam([*models, '-i', image, '--at', *WINDOW_AT, '--fold', args.fold, '-o', args.out,
                          '--overwrite'])
        return status or hat_lam(['--features', *models, '-i', image, '-o', args.out, '--overwrite'])


if __name__ == '__main__':
    sys.exit(main())
