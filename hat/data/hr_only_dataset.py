"""HR-only dataset: LR made on the fly by MATLAB-style bicubic, for HAT's same-task pre-training on ImageNet."""
from __future__ import annotations

import os
import random

import cv2
import numpy as np
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data
from torchvision.transforms.functional import normalize

from hat.data.image_lists import list_image_folder, read_lmdb_meta, read_meta_info

#: HR context (in LR pixels) kept around a training crop before downscaling. MATLAB's
#: bicubic reads 2 LR pixels to each side, so the crop's LR equals that of the whole image.
CONTEXT_LR_PIXELS = 3


def bicubic_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(hr, 1/scale)`` of an HWC float image in [0, 1], stored as 8-bit like DIV2K's LR files."""
    lr = imresize(hr, 1 / scale)
    return (np.clip(lr, 0, 1) * 255).round().astype(np.float32) / 255


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom/right so height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def random_pair(hr: np.ndarray, gt_size: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """A random ``gt_size`` HR crop on the ``scale`` grid and its bicubic LR (``gt_size // scale``)."""
    h, w = hr.shape[:2]
    top = scale * random.randint(0, (h - gt_size) // scale)
    left = scale * random.randint(0, (w - gt_size) // scale)
    margin = CONTEXT_LR_PIXELS * scale
    y0, x0 = max(top - margin, 0), max(left - margin, 0)
    region = hr[y0:min(top + gt_size + margin, h), x0:min(left + gt_size + margin, w)]
    lr_size, ly, lx = gt_size // scale, (top - y0) // scale, (left - x0) // scale
    lr = bicubic_lr(region, scale)[ly:ly + lr_size, lx:lx + lr_size]
    return hr[top:top + gt_size, left:left + gt_size], lr


@DATASET_REGISTRY.register()
class HROnlyDataset(data.Dataset):
    """HR images from a folder (recursive), a meta_info file, or an LMDB; LR = bicubic HR / scale. Options in
    docs/training.md ("ImageNet pre-training"); images smaller than ``gt_size`` are enlarged, as the original does."""

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = opt
        self.scale = int(opt['scale'])
        self.io_backend_opt = dict(opt['io_backend'])
        self.file_client = None
        self.mean, self.std = opt.get('mean'), opt.get('std')
        name = opt.get('name', 'dataset')
        folder = opt['dataroot_gt']
        if opt['phase'] == 'train':
            self.gt_size = int(opt['gt_size'])
            if self.gt_size % self.scale:
                raise ValueError(f'{name}: gt_size {self.gt_size} is not a multiple of scale {self.scale}; '
                                 f'use e.g. {self.gt_size - self.gt_size % self.scale or self.scale}')
        if self.io_backend_opt['type'] == 'lmdb':
            self.io_backend_opt.update(db_paths=[folder], client_keys=['gt'])
            self.paths = list(read_lmdb_meta(folder, f'{name} dataroot_gt'))
        elif opt.get('meta_info_file'):
            if not os.path.isdir(folder):
                raise FileNotFoundError(f'{name} dataroot_gt: folder {folder!r} does not exist')
            self.paths = [os.path.join(folder, p) for p in read_meta_info(opt['meta_info_file'])]
        else:
            self.paths = [os.path.join(folder, p) for p in list_image_folder(folder, f'{name} dataroot_gt')]

    def _read_hr(self, path: str) -> np.ndarray:
        if self.file_client is None:
            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        try:
            img = imfrombytes(self.file_client.get(path, 'gt'), float32=True)
        except (OSError, cv2.error) as error:
            raise OSError(f'{self.opt.get("name")}: cannot read HR image {path!r}: {error}') from error
        if img is None:
            raise OSError(f'{self.opt.get("name")}: {path!r} is not a readable image')
        return img

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        hr = self._read_hr(path)
        if self.opt['phase'] == 'train':
            h, w = hr.shape[:2]
            if h < self.gt_size or w < self.gt_size:
                hr = cv2.resize(hr, (max(w, self.gt_size), max(h, self.gt_size)), interpolation=cv2.INTER_CUBIC)
            gt, lq = random_pair(modcrop(hr, self.scale), self.gt_size, self.scale)
            gt, lq = augment([np.ascontiguousarray(gt), np.ascontiguousarray(lq)],  # cv2 flips in place
                             self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        else:
            gt = modcrop(hr, self.scale)
            lq = bicubic_lr(gt, self.scale)
        gt, lq = img2tensor([np.ascontiguousarray(gt), lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize(lq, self.mean, self.std, inplace=True)
            normalize(gt, self.mean, self.std, inplace=True)
        return {'lq': lq, 'gt': gt, 'lq_path': path, 'gt_path': path}

    def __len__(self) -> int:
        return len(self.paths)


@DATASET_REGISTRY.register()
class ImageNetPairedDataset(HROnlyDataset):
    """The original release's name for :class:`HROnlyDataset` (same behaviour), so its option files work."""
