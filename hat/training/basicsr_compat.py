"""What basicsr 1.4.2 needs on today's PyTorch stack, from our side (no edited site-packages, no vendoring).

- ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17, imported by
  ``basicsr/data/degradations.py``): a stand-in module, registered at ``import hat``.
- :func:`parse_options`: BasicSR's option parsing with the file read once, ``--local-rank`` as
  torchrun spells it, and the file's ``dist_params`` and ``num_gpu`` handed to :func:`init_dist`
  for every launcher; in ``hat/train.py`` / ``hat/test.py`` also pre-flight and the experiment lock.
- :func:`init_dist`: no unconditional ``torch.cuda.set_device``, no hard-coded NCCL (gloo on CPU).

:mod:`hat.training.basicsr_patches` lists where these (and resume, :mod:`hat.training.resume`) replace
BasicSR's functions, and undoes it; :func:`patch_basicsr` installs them for scripts of their own.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import types
from typing import Any, Optional


class LaunchError(RuntimeError):
    """A distributed launcher asked for without what it needs (torchrun's environment, a known launcher)."""


def install_functional_tensor_shim() -> None:
    """Register ``torchvision.transforms.functional_tensor`` if torchvision no longer has it."""
    with contextlib.suppress(ImportError):  # also finds a stand-in registered before
        import torchvision.transforms.functional_tensor  # noqa: F401
        return
    from torchvision.transforms import functional

    shim = types.ModuleType('torchvision.transforms.functional_tensor')
    shim.__doc__ = 'Stand-in registered by hat.training.basicsr_compat for basicsr 1.4.2.'
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[shim.__name__] = shim


def _arguments() -> Any:
    """BasicSR's command line (``--local-rank`` accepted as ``--local_rank``)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument('-opt', type=str, required=True, help='Path to option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true')
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='Force to update yml files. Examples: train:ema_decay=0.999')
    return parser.parse_args()


def _force(opt: dict, entries: list[str], source: str) -> None:
    """BasicSR's ``--force_yml section:key=value`` (no new sections), refusing in one line what it cannot apply."""
    from basicsr.utils.options import _postprocess_yml_value

    from hat.training.preflight import OptionError

    for entry in entries:
        try:
            keys, value = entry.split('=')
            *sections, last = keys.strip().split(':')
            functools.reduce(lambda section, key: section[key], sections, opt)[last] = _postprocess_yml_value(
                value.strip())
        except (KeyError, TypeError, ValueError, SyntaxError, NameError) as error:
            raise OptionError(source, [f'--force_yml: cannot apply it ({type(error).__name__}: {error}); write '
                                       'section:key=value for keys the file has, e.g. train:total_iter=1000']) from None


def parse_options(root_path: str, is_train: bool = True, *, run: Any) -> tuple[dict, Any]:
    """basicsr.utils.options.parse_options, reading the option file once and starting torch.distributed with its
    ``dist_params``; in a checked ``run`` (:class:`hat.training.basicsr_patches.Run`) also pre-flight and lock."""
    import random

    import torch
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info

    from hat.training import preflight

    args = _arguments()
    opt = preflight.read_option_file(args.opt)
    if run.checked and preflight.parse_blockers(opt, is_train, args.debug):
        raise preflight.OptionError(args.opt, preflight.find_problems(opt, is_train) or
                                    ['BasicSR cannot parse these options'])
    opt['dist'] = args.launcher != 'none'
    if opt['dist']:
        init_dist(args.launcher, dict(opt.get('dist_params') or {}), opt.get('num_gpu', 'auto'))
        from hat.training.rank_failures import FellowRanks

        run.ranks = run.stack.enter_context(contextlib.closing(FellowRanks.of_process_group(run.script)))
    else:
        print('Disable distributed.', flush=True)
    opt['rank'], opt['world_size'] = get_dist_info()
    if opt.get('manual_seed') is None:
        opt['manual_seed'] = random.randint(1, 10000)
    set_random_seed(opt['manual_seed'] + opt['rank'])
    _force(opt, args.force_yml or [], args.opt)
    opt['auto_resume'], opt['is_train'] = args.auto_resume, is_train
    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']
    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = os.path.expanduser(dataset[key])
    for key, value in opt['path'].items():
        if value is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = os.path.expanduser(value)
    kind = 'experiments' if is_train else 'results'
    folder = os.path.join(root_path, kind, opt['name'])
    opt['path'].update({'experiments_root' if is_train else 'results_root': folder, 'log': folder,
                        'visualization': os.path.join(folder, 'visualization')})
    if is_train:
        opt['path'].update({key: os.path.join(folder, key) for key in ('models', 'training_states')})
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger'].update(print_freq=1, save_checkpoint_freq=8)
    if run.checked:
        _check_and_lock(opt, is_train, args.opt, root_path, kind, run)
    return opt, args


def _check_and_lock(opt: dict, is_train: bool, source: str, root_path: str, kind: str, run: Any) -> None:
    """Pre-flight and, on rank 0, the experiment lock; in a distributed run no rank goes on before all have."""
    from hat.training.experiment_lock import acquire, lock_path
    from hat.training.preflight import check

    check(opt, is_train, source)
    if opt['rank'] == 0:
        run.stack.enter_context(acquire(lock_path(root_path, kind, opt['name']),
                                        f'{"experiment" if is_train else "test"} {opt["name"]!r}'))
    if opt['dist']:
        import torch.distributed as dist

        dist.barrier()  # a rank that refused has told the others (rank_failures), which end here


def _export_slurm_env(port: Optional[int]) -> None:
    """Translate SLURM's variables into the ones ``init_process_group`` reads."""
    import subprocess

    env = os.environ
    env['RANK'] = env['SLURM_PROCID']
    env['WORLD_SIZE'] = env['SLURM_NTASKS']
    env.setdefault('LOCAL_RANK', env.get('SLURM_LOCALID', '0'))
    env['MASTER_PORT'] = str(port) if port is not None else env.get('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in env:
        nodes = env['SLURM_NODELIST']
        hosts = subprocess.run(['scontrol', 'show', 'hostnames', nodes], capture_output=True, text=True).stdout
        env['MASTER_ADDR'] = hosts.split()[0] if hosts.strip() else nodes.split(',')[0]


#: Minutes a rank waits in a collective before giving up. Validation runs on rank 0 alone while the other
#: ranks wait in their next step, so NCCL's 10-minute default would kill long validations (HAT-L on Urban100).
COLLECTIVE_TIMEOUT_MINUTES = 120


def collective_timeout(minutes: Any = None) -> Any:
    """``dist_params: timeout`` (minutes, default ``COLLECTIVE_TIMEOUT_MINUTES``) as the timedelta torch takes."""
    from datetime import timedelta

    if isinstance(minutes, timedelta):
        return minutes
    minutes = COLLECTIVE_TIMEOUT_MINUTES if minutes is None else minutes
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes <= 0:
        raise LaunchError(f'dist_params: timeout is {minutes!r}; write the minutes a rank may wait for the others, '
                          f'e.g. {COLLECTIVE_TIMEOUT_MINUTES}')
    return timedelta(minutes=minutes)


def init_dist(launcher: str, params: dict, num_gpu: Any = 'auto') -> None:
    """Start ``torch.distributed`` for torchrun (``pytorch``) or ``slurm`` with the option file's ``dist_params``
    and ``num_gpu``: NCCL on GPUs, gloo on CPU."""
    import torch
    import torch.distributed as dist

    params = dict(params)
    backend = params.pop('backend', None)
    port = params.pop('port', None)
    params['timeout'] = collective_timeout(params.get('timeout'))
    if launcher == 'slurm':
        _export_slurm_env(port)
    elif launcher != 'pytorch':
        raise LaunchError(f'unknown launcher {launcher!r}; use none, pytorch (torchrun) or slurm')
    missing = [v for v in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if v not in os.environ]
    if missing:
        raise LaunchError(f'--launcher {launcher} needs the environment variables {missing}; start the run with '
                           '`torchrun --nproc_per_node=N hat/train.py -opt ... --launcher pytorch`')
    use_gpu = torch.cuda.is_available() and num_gpu != 0
    if use_gpu:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
        backend = backend or 'nccl'
    elif backend in (None, 'nccl'):
        backend = 'gloo'
    dist.init_process_group(backend=backend, **params)
    device = f'cuda:{torch.cuda.current_device()}' if use_gpu else 'cpu'
    print(f'[hat] distributed rank {dist.get_rank()} of {dist.get_world_size()}: backend {backend}, {device}',
          flush=True)


def patch_basicsr() -> Any:
    """Make basicsr 1.4.2's train/test pipelines work on today's stack (CPU resume, gloo/torchrun, ``--local-rank``)
    for scripts that call them themselves: for the rest of the process, or for a ``with`` block."""
    from hat.training.basicsr_patches import Run, basicsr_substitutions

    return basicsr_substitutions(Run())
