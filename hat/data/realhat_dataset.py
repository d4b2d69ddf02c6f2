"""Real-ESRGAN's training dataset with the image list the original HAT recipes give it.

basicsr's ``RealESRGANDataset`` stops with a KeyError without ``meta_info``; the original HAT recipes
name it ``meta_info_file``. ``RealHATDataset`` takes either key, else lists ``dataroot_gt`` itself (not
its sub-folders, as the original did); an LMDB lists its own meta_info.txt. The rest (crop, kernels) is
basicsr's. ``hat/train.py`` builds it for ``type: RealESRGANDataset`` (see :mod:`hat.data.bad_images`);
other programs that ``import hat`` keep basicsr's.
"""
from __future__ import annotations

import os

from basicsr.data.realesrgan_dataset import RealESRGANDataset
from basicsr.utils.registry import DATASET_REGISTRY

from hat.data.image_lists import list_image_folder, read_lmdb_meta, read_meta_info


def meta_info_option(opt: dict, name: str) -> str | None:
    """The meta_info file named by ``meta_info`` (basicsr) or ``meta_info_file`` (the original HAT), if any."""
    given = {key: opt[key] for key in ('meta_info', 'meta_info_file') if opt.get(key)}
    if len(set(given.values())) > 1:
        raise ValueError(f'{name}: meta_info {given["meta_info"]!r} and meta_info_file {given["meta_info_file"]!r} '
                         'name different files; keep one of the two options')
    return next(iter(given.values()), None)


def gt_paths(opt: dict) -> list[str]:
    """The HR images of a dataset section: LMDB keys, or paths from its meta_info file or its folder."""
    name = f'dataset {opt.get("name", "unnamed")}'
    folder = opt['dataroot_gt']
    if opt['io_backend']['type'] == 'lmdb':
        return list(read_lmdb_meta(folder, f'{name} dataroot_gt'))
    meta_info = meta_info_option(opt, name)
    if meta_info:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'{name} dataroot_gt: folder {folder!r} does not exist')
        return [os.path.join(folder, p) for p in read_meta_info(meta_info, f'{name} meta_info_file')]
    return [os.path.join(folder, p) for p in list_image_folder(folder, f'{name} dataroot_gt', recursive=False)]


@DATASET_REGISTRY.register()
class RealHATDataset(RealESRGANDataset):
    """basicsr's ``RealESRGANDataset`` that accepts ``meta_info`` or ``meta_info_file``, or lists ``dataroot_gt``."""

    def __init__(self, opt: dict):
        paths = gt_paths(opt)
        # basicsr's constructor reads the kernel options; its own listing (of an empty file) is replaced.
        super().__init__({**opt, 'meta_info': os.devnull, 'io_backend': dict(opt['io_backend'])})
        self.opt = opt
        self.paths = paths
