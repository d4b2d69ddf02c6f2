"""Checks of an option file's datasets, run before BasicSR creates the experiment folder.

BasicSR fails on bad data with bare asserts deep in a data-loader worker, or at the first validation after
archiving the previous experiment; these name the dataset, the problem and the fix, as ``datasets`` problems.
"""
from __future__ import annotations

import math
import os
from typing import Optional

from hat.data.bad_images import dataset_files, file_problems, make_dataset, policy_of
from hat.data.image_lists import header_size, list_image_folder, read_lmdb_meta, read_meta_info
from hat.data.realhat_dataset import gt_paths
from hat.problems import Problem, ProblemsError

#: Dataset types that read HR images only and make their LR themselves.
HR_ONLY_TYPES = ('HROnlyDataset', 'ImageNetPairedDataset')

#: Real-ESRGAN dataset types (HR only; ``RealESRGANDataset`` is built as ``RealHATDataset``).
REAL_ESRGAN_TYPES = ('RealESRGANDataset', 'RealHATDataset')

#: How many offending files an error message names.
SHOWN = 5


def _pair_names(ds: dict, name: str) -> tuple[list[str], list[str]]:
    """Relative HR names and the LR names that must match them (``filename_tmpl`` applied)."""
    tmpl = ds.get('filename_tmpl', '{}')
    gt_dir, lq_dir = ds['dataroot_gt'], ds['dataroot_lq']
    if ds.get('meta_info_file'):
        gt_names = read_meta_info(ds['meta_info_file'], f'{name} meta_info_file')
        lq_names = [tmpl.format(os.path.splitext(n)[0]) + os.path.splitext(n)[1] for n in gt_names]
        for folder, names, key in ((gt_dir, gt_names, 'dataroot_gt'), (lq_dir, lq_names, 'dataroot_lq')):
            if not os.path.isdir(folder):
                raise FileNotFoundError(f'{name} {key}: folder {folder!r} does not exist')
            missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
            if missing:
                raise FileNotFoundError(f'{name}: {len(missing)} images listed in {ds["meta_info_file"]!r} are not in '
                                        f'{key} {folder!r}, e.g. {missing[:SHOWN]}')
        return gt_names, lq_names
    gt_names = list_image_folder(gt_dir, f'{name} dataroot_gt', recursive=False)
    lq_found = set(list_image_folder(lq_dir, f'{name} dataroot_lq', recursive=False))
    if len(gt_names) != len(lq_found):
        raise ValueError(f'{name}: dataroot_gt {gt_dir!r} has {len(gt_names)} images but dataroot_lq {lq_dir!r} has '
                         f'{len(lq_found)}; every HR image needs exactly one LR image')
    lq_names = [tmpl.format(os.path.splitext(n)[0]) + os.path.splitext(n)[1] for n in gt_names]
    unmatched = [(g, q) for g, q in zip(gt_names, lq_names) if q not in lq_found]
    if unmatched:
        raise ValueError(f'{name}: {len(unmatched)} HR images have no LR image of the expected name in {lq_dir!r} '
                         f'(filename_tmpl {tmpl!r}), e.g. ' + ', '.join(f'{g} -> {q}' for g, q in unmatched[:SHOWN]))
    return gt_names, lq_names


def _check_sizes(pairs: list[tuple[str, Optional[tuple], Optional[tuple]]], scale: int, name: str) -> None:
    """Every HR (h, w) must be exactly ``scale`` times its LR (h, w)."""
    wrong = [f'{key}: HR {gt[0]}x{gt[1]} vs LR {lq[0]}x{lq[1]}' for key, gt, lq in pairs
             if gt and lq and (gt[0], gt[1]) != (lq[0] * scale, lq[1] * scale)]
    if wrong:
        raise ValueError(f'{name}: {len(wrong)} LR images are not exactly HR size / {scale}, e.g. {wrong[:SHOWN]}. '
                         f'Crop HR images to a multiple of {scale} before making LR (BasicSR\'s GTmod12 folders) '
                         'or fix the scale')


def check_paired_dataset(ds: dict, name: str) -> int:
    """HR/LR folders, meta_info or LMDBs exist, hold the same names, and LR is exactly HR / scale; returns the count."""
    scale = int(ds['scale'])
    if ds['io_backend']['type'] == 'lmdb':
        gt_meta = read_lmdb_meta(ds['dataroot_gt'], f'{name} dataroot_gt')
        lq_meta = read_lmdb_meta(ds['dataroot_lq'], f'{name} dataroot_lq')
        if set(gt_meta) != set(lq_meta):
            only = sorted(set(gt_meta) ^ set(lq_meta))
            raise ValueError(f'{name}: the HR and LR LMDBs hold different keys ({len(gt_meta)} vs {len(lq_meta)} '
                             f'images), e.g. {only[:SHOWN]}; build both with the same make_lmdb run')
        _check_sizes([(k, gt_meta[k], lq_meta[k]) for k in gt_meta], scale, name)
        return len(gt_meta)
    gt_names, lq_names = _pair_names(ds, name)
    _check_sizes([(g, header_size(os.path.join(ds['dataroot_gt'], g)), header_size(os.path.join(ds['dataroot_lq'], q)))
                  for g, q in zip(gt_names, lq_names)], scale, name)
    return len(gt_names)


def _size(ds: dict, label: str) -> Optional[int]:
    """How many images the dataset has (None if it names no data to count); raises naming what is wrong."""
    from basicsr.utils.registry import DATASET_REGISTRY

    if ds.get('type') in REAL_ESRGAN_TYPES + HR_ONLY_TYPES:
        try:
            return len(gt_paths(ds) if ds['type'] in REAL_ESRGAN_TYPES else DATASET_REGISTRY.get(ds['type'])(dict(ds)))
        except (OSError, ValueError) as error:
            raise ValueError(f'{label}: {error}') from error
    if ds.get('dataroot_gt') and ds.get('dataroot_lq') and ds.get('scale'):
        return check_paired_dataset(ds, label)
    for key in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
        if ds.get(key) and not os.path.exists(ds[key]):
            raise FileNotFoundError(f'{label} {key}: {ds[key]!r} does not exist')
    return None


def _undecodable(ds: dict, label: str) -> list[Problem]:
    """Decode every image of a (validation or test) dataset: a bad one stops the run before it starts."""
    dataset = make_dataset(ds)
    bad = file_problems(dataset, dataset_files(dataset))
    shown = '; '.join(f'{file} {problem}' for file, problem in bad[:SHOWN])
    return [Problem('datasets', f'{label}: {len(bad)} of its images cannot be used: {shown}. Replace or remove them '
                                '(validation and test sets are never skipped over)')] if bad else []


def check_dataset(ds: dict, label: str, world_size: int) -> list[Problem]:
    """Every problem of one dataset section (after BasicSR filled in ``phase`` and ``scale``); ``label`` names it."""
    scale, problems = ds.get('scale'), []
    try:
        policy_of(ds)
    except ProblemsError as error:
        problems += error.problems
    if ds.get('phase') == 'train' and ds.get('gt_size') and scale and int(ds['gt_size']) % int(scale) and (
            ds.get('type') not in REAL_ESRGAN_TYPES):
        return problems + [Problem('datasets', f'{label}: gt_size {ds["gt_size"]} is not a multiple of scale {scale}')]
    try:
        size = _size(ds, label)
        problems += _undecodable(ds, label) if not problems and ds.get('phase') in ('val', 'test') else []
    except (OSError, ValueError) as error:
        return problems + [Problem('datasets', str(error))]
    # BasicSR drops incomplete batches: a training set too small for one batch per process trains nothing
    ratio, batch = ds.get('dataset_enlarge_ratio', 1), ds.get('batch_size_per_gpu')
    per_process = math.ceil(size * ratio / world_size) if size is not None else None
    if ds.get('phase') == 'train' and batch and per_process is not None and per_process < batch:
        problems.append(Problem('datasets', f'{label}: {size} images x dataset_enlarge_ratio {ratio} over '
                                            f'{world_size} process(es) give {per_process} per process, fewer than '
                                            f'batch_size_per_gpu {batch}: not one batch would be trained; raise '
                                            'dataset_enlarge_ratio'))
    return problems


def dataset_problems(opt: dict) -> list[Problem]:
    """Every problem of every dataset section (validation and test images decoded), each a ``datasets`` problem."""
    return [problem for phase, ds in opt.get('datasets', {}).items()
            for problem in check_dataset(ds, f'{phase} ({ds.get("name", "unnamed")})', opt.get('world_size', 1))]
