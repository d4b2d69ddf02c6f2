"""Workarounds for basicsr 1.4.2 on today's PyTorch stack, applied from our side.

basicsr 1.4.2 (the last PyPI release) predates several torch/torchvision changes and was
written for GPUs only. Rather than editing site-packages or vendoring BasicSR, this module
provides replacements for the few functions that break. ``import hat`` installs only the
first item below (it adds a module and changes nothing); the others change how BasicSR's
pipelines behave, so they are installed only while ``hat/train.py`` / ``hat/test.py`` run,
or where a script asks for them with :func:`patch_basicsr`.

- ``torchvision.transforms.functional_tensor`` was removed in torchvision 0.17, but
  ``basicsr/data/degradations.py`` imports ``rgb_to_grayscale`` from it. We register a
  module of that name that re-exports the public function (at ``import hat``).
- Option parsing (``basicsr.train``/``basicsr.test``/``basicsr.utils.options``
  ``parse_options``): accepts ``--local-rank`` (what ``torch.distributed.launch`` passes)
  besides ``--local_rank``, and hands the option file's ``dist_params`` and ``num_gpu`` to
  the distributed start-up below.
- Distributed start-up (``basicsr.utils.options.init_dist``): basicsr calls
  ``torch.cuda.set_device`` and hard-codes NCCL. Ours uses ``dist_params.backend`` (NCCL by
  default) and the ``LOCAL_RANK`` GPU when the run uses GPUs, gloo on CPU (``num_gpu: 0`` or
  no CUDA).
- Resume (``basicsr.train.load_resume_state``): basicsr calls
  ``torch.cuda.current_device()`` (fails on CPU), looks for states relative to the working
  directory instead of the experiment folder, takes the newest state even if it is
  truncated, and loads it with pickle. Ours loads with ``weights_only=True`` onto the CPU
  and, with ``--auto_resume``, takes the newest state whose files all load; it also removes
  the temp files of checkpoint writes a crash interrupted.
"""
from __future__ import annotations

import os
import re
import sys
import types
from typing import Any, Optional


class LaunchError(RuntimeError):
    """A distributed launcher asked for without what it needs (torchrun's environment, a known launcher)."""


#: What the option file asks of ``torch.distributed``, read before basicsr starts it.
_DIST_REQUEST: dict[str, Any] = {'dist_params': {}, 'num_gpu': 'auto'}


def install_functional_tensor_shim() -> None:
    """Register ``torchvision.transforms.functional_tensor`` if torchvision no longer has it."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    shim = types.ModuleType(name)
    shim.__doc__ = 'Stand-in registered by hat.training.basicsr_compat for basicsr 1.4.2.'
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = shim


def normalise_local_rank(argv: list[str]) -> list[str]:
    """Spell ``--local-rank`` (torch.distributed.launch) the way basicsr's parser knows it."""
    return [re.sub(r'^--local-rank(?==|$)', '--local_rank', arg) for arg in argv]


def option_file(argv: list[str]) -> Optional[str]:
    """The ``-opt`` argument of a BasicSR command line, if any."""
    for i, arg in enumerate(argv):
        if arg == '-opt' and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith('-opt='):
            return arg[len('-opt='):]
    return None


def _wrap_parse_options(original):
    def parse_options(root_path, is_train=True):
        import yaml

        argv = sys.argv[:]
        sys.argv[:] = normalise_local_rank(argv)
        try:
            path = option_file(sys.argv)
            if path and os.path.isfile(path):
                with open(path, encoding='utf-8') as f:
                    raw = yaml.safe_load(f) or {}
                if isinstance(raw, dict):
                    _DIST_REQUEST.update(dist_params=dict(raw.get('dist_params') or {}),
                                         num_gpu=raw.get('num_gpu', 'auto'))
            return original(root_path, is_train)
        finally:
            sys.argv[:] = argv

    parse_options.__doc__ = original.__doc__
    parse_options._hat_original = original
    return parse_options


def _export_slurm_env(port: Optional[int]) -> None:
    """Translate SLURM's variables into the ones ``init_process_group`` reads."""
    import subprocess

    env = os.environ
    env['RANK'] = env['SLURM_PROCID']
    env['WORLD_SIZE'] = env['SLURM_NTASKS']
    env.setdefault('LOCAL_RANK', env.get('SLURM_LOCALID', '0'))
    if port is not None:
        env['MASTER_PORT'] = str(port)
    env.setdefault('MASTER_PORT', '29500')
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


def init_dist(launcher: str, backend: Optional[str] = None, **kwargs: Any) -> None:
    """Start ``torch.distributed`` for torchrun (``pytorch``) or ``slurm``: NCCL on GPUs, gloo on CPU."""
    import torch
    import torch.distributed as dist

    params = {**_DIST_REQUEST['dist_params'], **kwargs}
    backend = backend or params.pop('backend', None)
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
    use_gpu = torch.cuda.is_available() and _DIST_REQUEST['num_gpu'] != 0
    if use_gpu:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
        backend = backend or 'nccl'
    elif backend in (None, 'nccl'):
        backend = 'gloo'
    dist.init_process_group(backend=backend, **params)
    device = f'cuda:{torch.cuda.current_device()}' if use_gpu else 'cpu'
    print(f'[hat] distributed rank {dist.get_rank()} of {dist.get_world_size()}: backend {backend}, {device}',
          flush=True)


def _loads(path: str) -> Any:
    """``torch.load`` with ``weights_only=True`` onto the CPU; ``None`` if the file is missing or unreadable."""
    import torch

    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception:
        return None


def newest_valid_state(opt: dict) -> Optional[str]:
    """The newest ``<iter>.state`` of this experiment that loads and whose network files load too."""
    states_dir, models_dir = opt['path']['training_states'], opt['path']['models']
    if not os.path.isdir(states_dir):
        return None
    ignored = opt['path'].get('ignore_resume_networks') or []
    labels = [key[len('network_'):] for key in opt if key.startswith('network_') and key not in ignored]
    iters = sorted((int(name[:-len('.state')]) for name in os.listdir(states_dir)
                    if re.fullmatch(r'\d+\.state', name)), reverse=True)
    from hat.weights.checkpoint import network_files, readable

    for it in iters:
        path = os.path.join(states_dir, f'{it}.state')
        state = _loads(path)
        networks = [network_files(models_dir, label, it) for label in labels]  # .pth or .safetensors
        if isinstance(state, dict) and state.get('iter') == it and all(
                files and all(readable(p) for p in files) for files in networks):
            return path
        print(f'[hat] skipping training state {path}: it or its network files do not load', file=sys.stderr)
    return None


def remove_partial_checkpoints(opt: dict) -> None:
    """Delete the temp files of checkpoint writes cut short by a crash (see ``hat.weights.atomic_io``)."""
    from hat.weights.atomic_io import remove_stale_temp_files

    for folder in (opt['path']['models'], opt['path']['training_states']):
        for name in remove_stale_temp_files(folder, ('.pth', '.state', '.safetensors')):
            print(f'[hat] removed {name}, a checkpoint write interrupted by a crash', file=sys.stderr)


def load_resume_state(opt: dict) -> Optional[dict]:
    """basicsr.train.load_resume_state for CPU and GPU, with weights_only loading and a validity check."""
    from basicsr.utils.misc import check_resume

    remove_partial_checkpoints(opt)
    if opt['auto_resume']:
        path = newest_valid_state(opt)
        if path is not None:
            opt['path']['resume_state'] = path
    path = opt['path'].get('resume_state')
    if not path:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f'path: resume_state {path!r} does not exist; fix it or use --auto_resume')
    state = _loads(path)
    if not isinstance(state, dict) or 'iter' not in state:
        raise ValueError(f'training state {path!r} does not load (truncated or not a BasicSR .state file); '
                         'pick an older one or use --auto_resume, which skips broken states')
    check_resume(opt, state['iter'])
    _prefer_existing_network_files(opt, state['iter'])
    return state


def _prefer_existing_network_files(opt: dict, it: int) -> None:
    """check_resume points ``pretrain_network_*`` at ``net_*_<iter>.pth``; take the .safetensors that exists instead."""
    from hat.weights.checkpoint import find_network_file

    for key, path in opt['path'].items():
        if key.startswith('pretrain_network_') and path and not os.path.isfile(path):
            found = find_network_file(opt['path']['models'], key[len('pretrain_network_'):], it)
            opt['path'][key] = found or path


class BasicsrPatch:
    """The replacements :func:`patch_basicsr` installed; ``restore()`` (or leaving a ``with`` block) undoes them."""

    def __init__(self) -> None:
        import basicsr.test
        import basicsr.train
        import basicsr.utils.options

        options = basicsr.utils.options
        self._saved = [(options, 'init_dist', options.init_dist),
                       (basicsr.train, 'load_resume_state', basicsr.train.load_resume_state)]
        self._saved += [(module, 'parse_options', module.parse_options)
                        for module in (options, basicsr.train, basicsr.test)]
        options.init_dist = init_dist
        basicsr.train.load_resume_state = load_resume_state
        for module in (options, basicsr.train, basicsr.test):
            if not hasattr(module.parse_options, '_hat_original'):
                module.parse_options = _wrap_parse_options(module.parse_options)

    def restore(self) -> None:
        """Put back what basicsr's modules held before this patch (safe to call more than once)."""
        for module, name, value in reversed(self._saved):
            setattr(module, name, value)
        self._saved = []

    def __enter__(self) -> BasicsrPatch:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.restore()


def patch_basicsr() -> BasicsrPatch:
    """Make basicsr 1.4.2's train/test pipelines work on today's stack: CPU resume, gloo/torchrun, ``--local-rank``.

    ``hat/train.py`` and ``hat/test.py`` do this for their run only. Scripts that call
    ``basicsr.train.train_pipeline`` themselves call it first, for the rest of the process::

        hat.training.basicsr_compat.patch_basicsr()

    or for one block: ``with hat.training.basicsr_compat.patch_basicsr(): train_pipeline(root)``.
    """
    return BasicsrPatch()
