"""Pre-flight validation of an option file, before BasicSR creates, archives or writes anything.

BasicSR reads most options only when it needs them: a mistake (``lr: 2e-4``, which YAML reads
as a string, ``num_gpu: 1`` without a GPU, weights of another variant) stops a run after it
has moved the previous experiment folder aside and created a new one. ``hat/train.py`` and
``hat/test.py`` run :func:`check` between parsing the options and BasicSR's first write; it
reports every problem it finds, one line each naming the key, the value and the fix.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Any, Optional

#: BasicSR's learning-rate schedulers by option name (``SRModel.setup_schedulers``).
SCHEDULERS = {'MultiStepLR': 'MultiStepRestartLR', 'MultiStepRestartLR': 'MultiStepRestartLR',
              'CosineAnnealingRestartLR': 'CosineAnnealingRestartLR'}

#: BasicSR's storage back-ends (``basicsr.utils.FileClient``).
IO_BACKENDS = ('disk', 'lmdb', 'memcached')

#: Keys whose values are text even when they look like numbers (names, paths, templates).
TEXT_KEYS = re.compile(r'name|root|path|file|type|tmpl|suffix|pretrain|resume|project|param_key|backend|mode')


class OptionError(ValueError):
    """Problems that make an option file unusable; ``problems`` holds one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, list(problems)
        count = f'{len(problems)} problem{"s" if len(problems) != 1 else ""}'
        super().__init__(f'{source}: {count}, nothing was written:\n' + '\n'.join(f'  {p}' for p in problems))


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _number_text(value: Any) -> bool:
    """A string that reads as a number: what YAML makes of ``2e-4`` (no dot) or a quoted number."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in ('nan', 'inf', '-inf', '+inf', 'infinity')


def _as_float_text(text: str) -> str:
    """How to write ``text`` so that YAML reads a float: ``2e-4`` -> ``2.0e-4``."""
    mantissa, _, exponent = text.strip().lower().partition('e')
    if exponent and '.' not in mantissa:
        return f'{mantissa}.0e{exponent}'
    return text.strip()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    """An integer, or a float without fraction (``!!float 5e3``, as BasicSR's files write iteration counts)."""
    return _is_number(value) and float(value).is_integer()


class _Checker:
    """Collects problems of one option dict."""

    def __init__(self, opt: dict, is_train: bool) -> None:
        self.opt, self.is_train, self.problems = opt, is_train, []

    def add(self, key: str, text: str) -> None:
        self.problems.append(f'{key}: {text}')

    # ------------------------------------------------------------------ generic value checks

    def scan_number_text(self, value: Any, key: str) -> None:
        """Report strings that read as numbers anywhere except names and paths."""
        if isinstance(value, dict):
            for k, v in value.items():
                if not TEXT_KEYS.search(str(k)):
                    self.scan_number_text(v, f'{key}.{k}' if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.scan_number_text(v, f'{key}[{i}]')
        elif _number_text(value):
            self.add(key, f'{value!r} is text, not a number (YAML reads a float only with a dot, or a quoted '
                          f'number as text); write {_as_float_text(value)}')

    def given(self, parent: dict, name: str, key: str, required: bool, fix: str) -> bool:
        """Whether ``parent[name]`` is there to check: a missing required value is reported, and a number
        written as text was already reported by ``scan_number_text``."""
        if name not in parent or parent[name] is None:
            if required:
                self.add(key, f'missing; {fix}')
            return False
        return not _number_text(parent[name])

    def section(self, parent: dict, name: str, key: str, required: bool, fix: str) -> Optional[dict]:
        """``parent[name]`` if it is a mapping; reports it missing (if ``required``) or of the wrong kind."""
        if not self.given(parent, name, key, required, fix):
            return None
        if not isinstance(parent[name], dict):
            self.add(key, f'{_show(parent[name])} is not a section of options; {fix}')
            return None
        return parent[name]

    def count(self, parent: dict, name: str, key: str, minimum: int = 1, required: bool = False,
              fix: str = '') -> None:
        """``parent[name]`` must be a whole number >= ``minimum``."""
        if not self.given(parent, name, key, required, fix or f'add a whole number >= {minimum}'):
            return
        value = parent[name]
        if not _is_count(value) or value < minimum:
            self.add(key, f'{_show(value)} is not a whole number >= {minimum}; '
                          f'{fix or f"write a whole number such as {max(minimum, 1) * 4}"}')

    def number(self, parent: dict, name: str, key: str, low: float, high: Optional[float] = None,
               required: bool = False, fix: str = '') -> None:
        """``parent[name]`` must be a number in (low, high) (``low`` excluded, ``high`` excluded)."""
        if not self.given(parent, name, key, required, fix):
            return
        value = parent[name]
        if not _is_number(value) or value <= low or (high is not None and value >= high):
            bounds = f'above {low}' + (f' and below {high}' if high is not None else '')
            self.add(key, f'{_show(value)} is not a number {bounds}; {fix or "fix the value"}')

    def boolean(self, parent: dict, name: str, key: str) -> None:
        if name in parent and parent[name] is not None and not isinstance(parent[name], bool):
            self.add(key, f'{_show(parent[name])} is not true or false; write true or false (unquoted)')

    def registered(self, registry: Any, name: Any, key: str, what: str) -> bool:
        """``name`` (the value at ``key``) names a class in ``registry``."""
        if not isinstance(name, str) or not name:
            self.add(key, f'{"missing" if name is None else _show(name)}; name the {what} (a class registered in '
                          f'BasicSR\'s {registry._name} registry)')
            return False
        if _lookup(registry, name) is not None:
            return True
        known = sorted(k for k in registry if not k.endswith('_basicsr'))
        self.add(key, f'{name!r} is not a known {what}; use one of {known}')
        return False

    # ------------------------------------------------------------------ sections

    def check_general(self) -> None:
        from basicsr.utils.registry import MODEL_REGISTRY

        opt = self.opt
        name = opt.get('name')
        if not isinstance(name, str) or not name.strip():
            self.add('name', f'{"missing" if name is None else _show(name) + " is not a name"}; add `name: <experiment '
                             'name>`, the folder under experiments/ (training) or results/ (testing)')
        elif '/' in name or os.sep in name or name in ('.', '..'):
            self.add('name', f'{name!r} is a path, not a folder name; use a plain name without "/"')
        model = opt.get('model_type')
        if model is None:
            self.add('model_type', 'missing; add `model_type: HATModel`')
        else:
            self.registered(MODEL_REGISTRY, model, 'model_type', 'model')
        scale = opt.get('scale')
        if scale is None:
            self.add('scale', 'missing; add the upscaling factor, e.g. `scale: 4`')
        elif not _number_text(scale) and (not isinstance(scale, int) or isinstance(scale, bool) or scale < 1):
            self.add('scale', f'{_show(scale)} is not a whole number >= 1; write e.g. `scale: 4`')
        seed = opt.get('manual_seed')
        if seed is not None and not _number_text(seed) and (not isinstance(seed, int) or isinstance(seed, bool)):
            self.add('manual_seed', f'{_show(seed)} is not a whole number; write e.g. `manual_seed: 0`')
        tile = self.section(opt, 'tile', 'tile', False, 'write `tile: {tile_size: 256, tile_pad: 32}` or remove it')
        if tile is not None:
            self.count(tile, 'tile_size', 'tile.tile_size', 1, required=True, fix='add e.g. `tile_size: 256`')
            self.count(tile, 'tile_pad', 'tile.tile_pad', 0)

    def check_devices(self) -> None:
        """``num_gpu`` and the CUDA prefetcher against the GPUs this machine has."""
        import torch

        value = self.opt.get('num_gpu')
        if value is None:
            self.add('num_gpu', 'missing; add `num_gpu: auto` (every visible GPU, else the CPU) or `num_gpu: 0` (CPU)')
            return
        if value == 'auto':
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self.add('num_gpu', f'{_show(value)} is neither a number of GPUs nor auto; write `num_gpu: auto` or '
                                '`num_gpu: 0` for the CPU')
            return
        if value > 0 and not torch.cuda.is_available():
            self.add('num_gpu', f'{value} asks for {"a GPU" if value == 1 else f"{value} GPUs"}, but CUDA is not '
                                f'available here (torch {torch.__version__}); set `num_gpu: 0` to run on the CPU, or '
                                '`num_gpu: auto` (the GPUs if there are any, else the CPU)')
        for phase, ds in (self.opt.get('datasets') or {}).items():
            if isinstance(ds, dict) and ds.get('prefetch_mode') == 'cuda' and (value == 0 or
                                                                              not torch.cuda.is_available()):
                self.add(f'datasets.{phase}.prefetch_mode', "'cuda' needs a GPU; write `prefetch_mode: ~` (or cpu)")

    def check_datasets(self) -> None:
        from basicsr.utils.registry import DATASET_REGISTRY

        datasets = self.section(self.opt, 'datasets', 'datasets', True,
                                'add a `datasets:` section (`train:` and `val:` for training, `test_1:` ... for '
                                'testing)')
        if datasets is None:
            return
        if not datasets:
            self.add('datasets', 'is empty; add at least one dataset')
        if self.is_train and 'train' not in datasets:
            self.add('datasets.train', 'missing; training needs a `train:` dataset')
        for phase, ds in datasets.items():
            key = f'datasets.{phase}'
            if self.is_train and phase != 'train' and not str(phase).startswith('val'):
                self.add(key, f'{phase!r} is not a phase BasicSR trains with; name it `train` or `val...`')
            if not isinstance(ds, dict):
                self.add(key, f'{_show(ds)} is not a dataset section; write its `name`, `type`, data paths and '
                              '`io_backend`')
                continue
            self.registered(DATASET_REGISTRY, ds.get('type'), f'{key}.type', 'dataset')
            if not isinstance(ds.get('name'), str) or not ds['name']:
                self.add(f'{key}.name', f'{"missing" if ds.get("name") is None else _show(ds["name"])}; '
                                        'add `name: <dataset name>` (used in logs and result folders)')
            backend = self.section(ds, 'io_backend', f'{key}.io_backend', True, 'add `io_backend: {type: disk}`')
            if backend is not None and backend.get('type') not in IO_BACKENDS:
                self.add(f'{key}.io_backend.type', f'{_show(backend.get("type"))} is not one of {list(IO_BACKENDS)}; '
                                                   'write `type: disk` (folders) or `type: lmdb`')
            if phase == 'train':
                self.count(ds, 'batch_size_per_gpu', f'{key}.batch_size_per_gpu', 1, required=True,
                           fix='write a whole number such as 4')
                self.count(ds, 'num_worker_per_gpu', f'{key}.num_worker_per_gpu', 0)
                self.count(ds, 'gt_size', f'{key}.gt_size', 1)
                self.number(ds, 'dataset_enlarge_ratio', f'{key}.dataset_enlarge_ratio', 0)
                for flag in ('use_hflip', 'use_rot', 'use_shuffle'):
                    self.boolean(ds, flag, f'{key}.{flag}')
                if ds.get('prefetch_mode') not in (None, 'cpu', 'cuda'):
                    self.add(f'{key}.prefetch_mode', f'{_show(ds["prefetch_mode"])} is not ~, cpu or cuda; write '
                                                     '`prefetch_mode: ~`')

    def check_networks(self) -> dict[str, Any]:
        """Every ``network_*`` section names a registered class and builds; returns the built networks by label."""
        import torch
        from basicsr.utils.registry import ARCH_REGISTRY

        labels = [k[len('network_'):] for k in self.opt if k.startswith('network_')]
        if 'g' not in labels:
            self.add('network_g', 'missing; add the network section (`type: HAT`, `upscale: <scale>`, ... as in '
                                  'options/train/HAT_SRx4.yml)')
        built = {}
        for label in labels:
            key = f'network_{label}'
            section = self.section(self.opt, key, key, True, 'write the network section (`type: HAT`, ...)')
            if section is None or not self.registered(ARCH_REGISTRY, section.get('type'), f'{key}.type', 'network'):
                continue
            kwargs = {k: v for k, v in section.items() if k != 'type'}
            if any(_number_text(v) for v in kwargs.values()):
                continue  # reported by scan_number_text; building would only repeat it less clearly
            cls = ARCH_REGISTRY.get(section['type'])
            try:
                with torch.random.fork_rng(devices=[]), torch.no_grad():
                    built[label] = cls(**kwargs)
            except TypeError as error:
                unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
                if unknown:
                    self.add(f'{key}.{unknown[1]}', f'{_show(kwargs[unknown[1]])} is not an option of '
                                                    f'{section["type"]}; remove it or fix its spelling')
                else:
                    self.add(key, f'{section["type"]} cannot be built from these options: {error}')
            except (ValueError, AssertionError, KeyError, RuntimeError, ZeroDivisionError) as error:
                self.add(key, f'{section["type"]} cannot be built from these options: {error}')
        scale = self.opt.get('scale')
        upscale = getattr(built.get('g'), 'upscale', None)
        if upscale is None and isinstance(self.opt.get('network_g'), dict):
            upscale = self.opt['network_g'].get('upscale')
        if isinstance(scale, int) and isinstance(upscale, int) and scale != upscale:
            self.add('network_g.upscale', f'{upscale} differs from scale: {scale}; a network that upscales x{upscale} '
                                          f'cannot train or test at x{scale}: make them equal')
        return built

    def check_pretrained(self, built: dict[str, Any]) -> None:
        """``path.pretrain_network_*`` exists, reads with ``weights_only=True`` and fits its network."""
        path = self.section(self.opt, 'path', 'path', True, 'add a `path:` section (`pretrain_network_g: ~` to '
                                                            'train from scratch)')
        if path is None:
            return
        if self.is_train and path.get('resume_state') and not os.path.isfile(str(path['resume_state'])):
            self.add('path.resume_state', f'{path["resume_state"]!r} does not exist; fix the path, use '
                                          '--auto_resume, or set `resume_state: ~`')
        resuming = self.is_train and (path.get('resume_state') or (self.opt.get('auto_resume') and _has_states(path)))
        for key, file in path.items():
            if not str(key).startswith('pretrain_network_') or not file:
                continue
            label = key[len('pretrain_network_'):]
            self.boolean(path, f'strict_load_{label}', f'path.strict_load_{label}')
            if resuming:
                continue
            if not os.path.isfile(str(file)):
                self.add(f'path.{key}', f'{str(file)!r} does not exist; fix the path (train the stage it comes from '
                                        'first) or write `~` to start from random weights')
            elif label in built:
                strict = path.get(f'strict_load_{label}', True)
                self.check_fit(built[label], str(file), label, path.get(f'param_key_{label}', 'params'),
                               strict is not False)

    def check_fit(self, net: Any, file: str, label: str, param_key: Optional[str], strict: bool) -> None:
        """Load ``file`` into ``net`` as the model will (``param_key`` falling back like BasicSR)."""
        from hat.archs.hat_arch import HAT
        from hat.weights.checkpoint import CheckpointError, infer_config, load_weights, read_network

        key = f'path.pretrain_network_{label}'
        try:
            state_dict = read_network(file, param_key).state_dict
        except (CheckpointError, OSError) as error:
            self.add(key, f'{error}')
            return
        if not strict:
            return  # BasicSR skips missing, unexpected and differently shaped keys (and logs them)
        try:
            if isinstance(net, HAT):
                load_weights(net, state_dict)
            else:
                net.load_state_dict(state_dict, strict=True)
        except (CheckpointError, RuntimeError) as error:
            try:
                their_scale = infer_config(state_dict)['upscale'] if isinstance(net, HAT) else None
            except CheckpointError:
                their_scale = None
            if their_scale is not None and their_scale != net.upscale:
                self.add(key, f'{file!r} holds a x{their_scale} network, network_{label} is x{net.upscale}, and '
                              f'strict_load_{label}: true cannot load it; set `strict_load_{label}: false` to '
                              f'fine-tune across scales (the layers x{net.upscale} adds start from random weights)')
            else:
                self.add(key, f'{file!r} does not fit network_{label}: {error}')

    def check_train(self) -> None:
        import torch
        from basicsr.utils.registry import LOSS_REGISTRY, MODEL_REGISTRY

        train = self.section(self.opt, 'train', 'train', True, 'add the `train:` section (optim_g, scheduler, '
                                                               'total_iter, pixel_opt)')
        if train is not None:
            self.count(train, 'total_iter', 'train.total_iter', 1, required=True,
                       fix='write the number of iterations, e.g. `total_iter: 500000`')
            warmup = train.get('warmup_iter')
            if warmup is not None and not _number_text(warmup) and not _is_count(warmup):
                self.add('train.warmup_iter', f'{_show(train["warmup_iter"])} is not a whole number; write -1 for no '
                                              'warm-up')
            if train.get('ema_decay') not in (None, 0):
                self.number(train, 'ema_decay', 'train.ema_decay', 0, 1, fix='write e.g. 0.999, or 0 for no EMA')
            model = self.opt.get('model_type')
            model_cls = _lookup(MODEL_REGISTRY, model)
            optimizers = [k for k in train if str(k).startswith('optim_')]
            if 'optim_g' not in optimizers:
                self.add('train.optim_g', 'missing; add e.g. `optim_g: {type: Adam, lr: 2.0e-4, betas: [0.9, 0.99]}`')
            for name in optimizers:
                key = f'train.{name}'
                section = self.section(train, name, key, True, 'write `{type: Adam, lr: 2.0e-4}`')
                if section is None:
                    continue
                self.number(section, 'lr', f'{key}.lr', 0, required=True, fix='write the learning rate, e.g. 2.0e-4')
                if model_cls is None or any(_number_text(v) for v in section.values()):
                    continue
                if not _is_number(section.get('lr')) or section['lr'] <= 0:
                    continue
                kwargs = {k: v for k, v in section.items() if k != 'type'}
                try:
                    model_cls.get_optimizer(None, section.get('type'), [torch.nn.Parameter(torch.zeros(1))], **kwargs)
                except NotImplementedError:
                    self.add(f'{key}.type', f'{_show(section.get("type"))} is not an optimizer {model_cls.__name__} '
                                            'supports; write `type: Adam`')
                except (TypeError, ValueError) as error:
                    self.add(key, f'the optimizer does not accept these options: {error}')
            self.check_scheduler(train)
            self.check_switches()
            losses = [k for k, v in train.items() if str(k).endswith('_opt') and v is not None]
            if not losses:
                self.add('train.pixel_opt', 'missing, and no other loss is set; add e.g. `pixel_opt: {type: L1Loss, '
                                            'loss_weight: 1.0, reduction: mean}`')
            for name in losses:
                section = self.section(train, name, f'train.{name}', True, 'write `{type: L1Loss, loss_weight: 1.0}`')
                if section is not None and self.registered(LOSS_REGISTRY, section.get('type'), f'train.{name}.type',
                                                           'loss'):
                    self.number(section, 'loss_weight', f'train.{name}.loss_weight', -float('inf'))
        logger = self.section(self.opt, 'logger', 'logger', True, 'add `logger: {print_freq: 100, '
                                                                  'save_checkpoint_freq: 5000, use_tb_logger: false}`')
        if logger is not None:
            self.count(logger, 'print_freq', 'logger.print_freq', 1, required=True, fix='write e.g. 100')
            self.count(logger, 'save_checkpoint_freq', 'logger.save_checkpoint_freq', 1, required=True,
                       fix='write e.g. 5000')
            self.boolean(logger, 'use_tb_logger', 'logger.use_tb_logger')
            name = str(self.opt.get('name'))
            if logger.get('use_tb_logger') is True and 'debug' not in name and not _importable('tensorboard'):
                self.add('logger.use_tb_logger', 'true, but the tensorboard package is not installed; '
                                                 '`pip install tensorboard` or write `use_tb_logger: false`')
            wandb = logger.get('wandb')
            if isinstance(wandb, dict) and wandb.get('project') and 'debug' not in name and not _importable('wandb'):
                self.add('logger.wandb.project', f'{wandb["project"]!r} is set, but the wandb package is not '
                                                 'installed; `pip install wandb` or write `project: ~`')

    def check_switches(self) -> None:
        """The training switches (accum_iter, grad_clip, ema_power, use_amp, amp_dtype) and the network file format."""
        from hat.models.train_switches import check_train_switches
        from hat.weights.checkpoint import network_format

        for check in (check_train_switches, network_format):
            try:
                check(self.opt)
            except ValueError as error:
                key, _, text = str(error).partition(': ')
                self.add(key, text)

    def check_scheduler(self, train: dict) -> None:
        import torch
        from basicsr.models import lr_scheduler

        section = self.section(train, 'scheduler', 'train.scheduler', True,
                               'add e.g. `scheduler: {type: MultiStepLR, milestones: [250000, 400000], gamma: 0.5}`')
        if section is None:
            return
        kind = section.get('type')
        if kind not in SCHEDULERS:
            self.add('train.scheduler.type', f'{_show(kind)} is not one of {sorted(SCHEDULERS)}; write '
                                             '`type: MultiStepLR`')
            return
        kwargs = {k: v for k, v in section.items() if k != 'type'}
        if any(_number_text(v) for v in kwargs.values()):
            return
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        try:
            getattr(lr_scheduler, SCHEDULERS[kind])(optimizer, **kwargs)
        except (TypeError, ValueError, AssertionError) as error:
            self.add('train.scheduler', f'{kind} does not accept these options: {error}')

    def check_val(self) -> None:
        from basicsr.utils.registry import METRIC_REGISTRY

        val = self.section(self.opt, 'val', 'val', not self.is_train,
                           'add `val: {save_img: true}` (and `metrics:` to score PSNR/SSIM)')
        if val is None:
            return
        if self.is_train:
            self.count(val, 'val_freq', 'val.val_freq', 1, required=True, fix='write e.g. `val_freq: 5000`')
        self.boolean(val, 'save_img', 'val.save_img')
        self.count(val, 'tb_images', 'val.tb_images', 0, fix='write e.g. `tb_images: 4` (0 or no key: off)')
        metrics = self.section(val, 'metrics', 'val.metrics', False, 'write `metrics: {psnr: {type: calculate_psnr, '
                                                                     'crop_border: 4}}` or remove it')
        for name, metric in (metrics or {}).items():
            key = f'val.metrics.{name}'
            if not isinstance(metric, dict):
                self.add(key, f'{_show(metric)} is not a metric section; write `{{type: calculate_psnr, '
                              'crop_border: 4}`')
                continue
            self.registered(METRIC_REGISTRY, metric.get('type'), f'{key}.type', 'metric')
            self.count(metric, 'crop_border', f'{key}.crop_border', 0)
            self.boolean(metric, 'test_y_channel', f'{key}.test_y_channel')

    def run(self) -> list[str]:
        self.scan_number_text(self.opt, '')
        self.check_general()
        self.check_devices()
        self.check_datasets()
        built = self.check_networks()
        self.check_pretrained(built)
        if self.is_train:
            self.check_train()
        self.check_val()
        return self.problems


def _lookup(registry: Any, name: Any) -> Any:
    """The class ``registry.get`` returns for ``name`` (BasicSR files its own under ``<name>_basicsr`` too), or None."""
    if not isinstance(name, str):
        return None
    for key in (name, f'{name}_basicsr'):
        if key in registry:
            return registry.get(key)
    return None


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _has_states(path: dict) -> bool:
    folder = path.get('training_states')
    return bool(folder) and os.path.isdir(folder) and any(n.endswith('.state') for n in os.listdir(folder))


def find_problems(opt: Any, is_train: bool) -> list[str]:
    """Every problem of ``opt`` (a parsed option dict, or the raw YAML when BasicSR cannot parse it), one line each."""
    if not isinstance(opt, dict):
        return [f'the file holds {_show(opt)} instead of options (`name: ...`, `model_type: ...`, ...)']
    return _Checker(opt, is_train).run()


def parse_blockers(raw: Any, is_train: bool, debug: bool) -> bool:
    """Whether BasicSR's ``parse_options`` would fail on ``raw`` with a bare KeyError/TypeError."""
    if not isinstance(raw, dict) or 'num_gpu' not in raw:
        return True
    if (is_train or debug) and not isinstance(raw.get('name'), str):
        return True
    datasets, path = raw.get('datasets'), raw.get('path')
    if not isinstance(datasets, dict) or not all(isinstance(d, dict) for d in datasets.values()):
        return True
    if not isinstance(path, dict):
        return True
    return is_train and debug and not isinstance(raw.get('logger'), dict)


def read_option_file(path: str) -> Any:
    """The option file parsed as BasicSR parses it (ordered YAML); unreadable files raise :class:`OptionError`."""
    import yaml
    from basicsr.utils.options import ordered_yaml

    if not os.path.isfile(path):
        raise OptionError(path, [f'-opt: {path!r} is not a file; pass the path of an option file (.yml)'])
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.load(f, Loader=ordered_yaml()[0])
    except UnicodeDecodeError:
        raise OptionError(path, [f'-opt: {path!r} is not a text file; pass an option file (.yml)']) from None
    except yaml.YAMLError as error:
        where = getattr(error, 'problem_mark', None)
        line = f' at line {where.line + 1}' if where is not None else ''
        raise OptionError(path, [f'-opt: not valid YAML{line}: {getattr(error, "problem", None) or error}']) from None


def fill_defaults(opt: dict, is_train: bool) -> None:
    """Fill what BasicSR reads without a default: ``val`` for testing (save the images) and ``val.suffix``.

    The original release's ``HAT_GAN_Real_SRx4.yml`` has no ``val`` section, which
    ``basicsr.test`` indexes; a training ``val`` without ``suffix`` fails at the first saved image.
    """
    if not is_train and 'val' not in opt:
        opt['val'] = {'save_img': True}
    if isinstance(opt.get('val'), dict):
        opt['val'].setdefault('suffix', None)


def check(opt: dict, is_train: bool, source: str) -> None:
    """Raise :class:`OptionError` listing every problem of the parsed ``opt``, dataset checks included."""
    from hat.data.checks import check_options

    fill_defaults(opt, is_train)
    problems = find_problems(opt, is_train)
    if not any(p.startswith(('datasets', 'path:', 'scale')) for p in problems):
        # hat.data.checks stops at its first problem; pretrained files are checked above, in more depth.
        path = {k: v for k, v in opt['path'].items() if not str(k).startswith('pretrain_network')}
        try:
            check_options({**opt, 'path': path})
        except (OSError, ValueError) as error:
            problems.append(str(error))
    if problems:
        raise OptionError(source, problems)


def debug_requested(argv: Optional[list[str]] = None) -> bool:
    """Whether the command line has BasicSR's ``--debug`` (which also shows tracebacks of refused runs)."""
    return '--debug' in (sys.argv if argv is None else argv)
